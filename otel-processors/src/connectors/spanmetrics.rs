//! The `spanmetrics` connector: request, error and duration (RED) metrics from every
//! span, computed before any sampling, with the Collector's metric names and attributes.
//!
//! Per series (a resource and the values of its dimensions) it keeps a call count, a
//! duration histogram (explicit buckets or base-2 exponential) and, when asked, a count
//! of span events; every `metrics_flush_interval` it emits them to the metrics pipelines
//! it feeds:
//! - `<namespace>.calls` (sum, monotonic), `<namespace>.duration` (histogram, unit `ms` or
//!   `s`), `<namespace>.events` (sum, with `events.enabled`); the namespace is
//!   `traces.span.metrics` unless configured, so a Prometheus exporter shows
//!   `traces_span_metrics_calls_total` and `traces_span_metrics_duration_milliseconds_bucket`;
//! - attributes `service.name`, `span.name`, `span.kind` (`SPAN_KIND_SERVER`, ...),
//!   `status.code` (`STATUS_CODE_ERROR`, ...), minus `exclude_dimensions`, then each of
//!   `dimensions` found on the span or its resource (or its `default`).
//!
//! Memory is bounded: the series are capped by `aggregation_cardinality_limit` (spans of
//! new series beyond it go to one `otel.metric.overflow=true` series per resource, and
//! are counted), resources by `resource_metrics_cache_size`, and `metrics_expiration`
//! forgets series no span has updated for that long.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use otel_pipeline_core::connector::{Connector, Downstream};
use otel_pipeline_core::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use otel_pipeline_core::proto::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use otel_pipeline_core::proto::metrics::v1::{
    AggregationTemporality, Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint,
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    exemplar, exponential_histogram_data_point::Buckets, metric, number_data_point,
};
use otel_pipeline_core::proto::resource::v1::Resource;
use otel_pipeline_core::proto::trace::v1::{Span, status::StatusCode};
use otel_pipeline_core::telemetry::{Counter, Gauge, Instrument};
use otel_pipeline_core::{
    Batch, BuildError, ComponentContext, ComponentId, ComponentTelemetry, ConsumeError, Consumer,
    DropReason, Metrics, Traces,
};
use parking_lot::Mutex;
use serde::{Deserialize, Deserializer};
use tokio::time::Instant;

use crate::config::ConfigError;

/// Default explicit buckets, in milliseconds (the Collector's).
pub(super) const DEFAULT_BUCKETS_MS: [f64; 16] = [
    2.0, 4.0, 6.0, 8.0, 10.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1000.0, 1400.0, 2000.0, 5000.0,
    10_000.0, 15_000.0,
];

/// The series limit when the configuration sets none.
pub const DEFAULT_CARDINALITY_LIMIT: usize = 50_000;

const SERIES: Instrument = Instrument::gauge(
    "otelcol_connector_spanmetrics_series",
    "{series}",
    "Series the spanmetrics connector holds (calls and duration share one series).",
);
const OVERFLOW: Instrument = Instrument::counter(
    "otelcol_connector_spanmetrics_overflow_spans",
    "{spans}",
    "Spans counted in the overflow series because the cardinality limit was reached.",
);
const EXPIRED: Instrument = Instrument::counter(
    "otelcol_connector_spanmetrics_expired_series",
    "{series}",
    "Series forgotten: not updated within metrics_expiration, or their resource evicted.",
);

/// One extra dimension: an attribute of the span (or else of its resource).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dimension {
    /// The attribute key.
    pub name: String,
    /// The value when neither the span nor its resource has it; without one the
    /// dimension is left out of that series.
    #[serde(default)]
    pub default: Option<String>,
}

/// `histogram`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistogramConfig {
    /// No duration histogram at all.
    #[serde(default)]
    pub disable: bool,
    /// `ms` (default) or `s`.
    #[serde(default)]
    pub unit: Option<String>,
    /// Explicit buckets (the default kind).
    #[serde(default, deserialize_with = "present")]
    pub explicit: Option<Option<ExplicitConfig>>,
    /// Base-2 exponential buckets.
    #[serde(default, deserialize_with = "present")]
    pub exponential: Option<Option<ExponentialConfig>>,
    /// Dimensions for the histogram only.
    #[serde(default)]
    pub dimensions: Vec<Dimension>,
}

/// `histogram.explicit`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplicitConfig {
    /// Bucket bounds as durations (`2ms`, `1s`).
    #[serde(default, deserialize_with = "durations")]
    pub buckets: Option<Vec<Duration>>,
}

/// `histogram.exponential`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExponentialConfig {
    /// Buckets per sign at most (default 160).
    #[serde(default)]
    pub max_size: Option<usize>,
}

/// `exemplars`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExemplarsConfig {
    /// Attach spans as exemplars of the duration histogram.
    #[serde(default)]
    pub enabled: bool,
    /// At most this many per data point and interval (default 5).
    #[serde(default)]
    pub max_per_data_point: Option<usize>,
}

/// `events`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Emit `<namespace>.events`.
    #[serde(default)]
    pub enabled: bool,
    /// Event attributes added as dimensions of the events metric.
    #[serde(default)]
    pub dimensions: Vec<Dimension>,
}

/// The `spanmetrics` connector's configuration, in the Collector's shape.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanMetricsConfig {
    /// The duration histogram.
    #[serde(default)]
    pub histogram: HistogramConfig,
    /// Dimensions added to every metric.
    #[serde(default)]
    pub dimensions: Vec<Dimension>,
    /// Dimensions for the calls metric only.
    #[serde(default)]
    pub calls_dimensions: Vec<Dimension>,
    /// Default dimensions left out (`status.code`, ...).
    #[serde(default)]
    pub exclude_dimensions: Vec<String>,
    /// Accepted for older configurations; series are bounded by the cardinality limit.
    #[serde(default)]
    pub dimensions_cache_size: Option<usize>,
    /// How many resources are held at most (default 1000); the least recently updated
    /// goes, with its series.
    #[serde(default)]
    pub resource_metrics_cache_size: Option<usize>,
    /// The resource attributes that tell resources apart (default: all).
    #[serde(default)]
    pub resource_metrics_key_attributes: Vec<String>,
    /// `AGGREGATION_TEMPORALITY_CUMULATIVE` (default) or `AGGREGATION_TEMPORALITY_DELTA`.
    #[serde(default)]
    pub aggregation_temporality: Option<String>,
    /// How often metrics are emitted (default 15 s).
    #[serde(default, deserialize_with = "crate::config::opt_duration")]
    pub metrics_flush_interval: Option<Duration>,
    /// Forget a series no span updated for this long (default: never).
    #[serde(default, deserialize_with = "crate::config::opt_duration")]
    pub metrics_expiration: Option<Duration>,
    /// Accepted for older configurations (delta timestamps are kept per series here).
    #[serde(default)]
    pub metric_timestamp_cache_size: Option<usize>,
    /// The most series held (default 50 000; `0`: no limit, as in the Collector).
    #[serde(default)]
    pub aggregation_cardinality_limit: Option<usize>,
    /// Exemplars on the duration histogram.
    #[serde(default)]
    pub exemplars: ExemplarsConfig,
    /// The metric name prefix (default `traces.span.metrics`; `""` for none).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The events metric.
    #[serde(default)]
    pub events: EventsConfig,
    /// Also put the resource's (key) attributes on every data point, so they become
    /// labels without the exporter's resource-to-label conversion.
    #[serde(default)]
    pub add_resource_attributes: bool,
}

/// Present-but-empty (`explicit:`) is `Some(None)`, absent is `None`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

pub(super) fn durations<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<Duration>>, D::Error> {
    let texts = Option::<Vec<String>>::deserialize(d)?;
    texts
        .map(|v| {
            v.iter()
                .map(|t| {
                    otel_pipeline_core::config::parse_duration(t).map_err(serde::de::Error::custom)
                })
                .collect()
        })
        .transpose()
}

#[derive(Debug, Clone)]
enum HistKind {
    None,
    Explicit(Arc<[f64]>),
    Exponential(usize),
}

/// The configuration, checked.
#[derive(Debug, Clone)]
struct Settings {
    calls_name: String,
    duration_name: String,
    events_name: String,
    unit_seconds: bool,
    hist: HistKind,
    defaults: [bool; 4],
    dimensions: Vec<Dimension>,
    calls_dimensions: Vec<Dimension>,
    hist_dimensions: Vec<Dimension>,
    event_dimensions: Option<Vec<Dimension>>,
    key_attributes: Vec<String>,
    resource_cache: usize,
    delta: bool,
    flush_interval: Duration,
    expiration: Option<Duration>,
    limit: usize,
    exemplars: usize,
    add_resource_attributes: bool,
}

const DEFAULT_DIMS: [&str; 4] = ["service.name", "span.name", "span.kind", "status.code"];

impl SpanMetricsConfig {
    fn settings(&self) -> Result<Settings, ConfigError> {
        let ns = self
            .namespace
            .clone()
            .unwrap_or_else(|| "traces.span.metrics".into());
        let name = |n: &str| {
            if ns.is_empty() {
                n.to_string()
            } else {
                format!("{ns}.{n}")
            }
        };
        let unit_seconds = match self.histogram.unit.as_deref() {
            None | Some("ms") => false,
            Some("s") => true,
            Some(other) => {
                return Err(ConfigError::new(
                    "histogram.unit",
                    format!("unknown unit `{other}` (expected ms or s)"),
                ));
            }
        };
        let hist = match (&self.histogram.explicit, &self.histogram.exponential) {
            _ if self.histogram.disable => HistKind::None,
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "histogram",
                    "use either `explicit` or `exponential` buckets, not both",
                ));
            }
            (_, Some(e)) => {
                let max = e.as_ref().and_then(|e| e.max_size).unwrap_or(160);
                if max < 2 {
                    return Err(ConfigError::new(
                        "histogram.exponential.max_size",
                        "must be at least 2",
                    ));
                }
                HistKind::Exponential(max)
            }
            (e, None) => {
                let buckets: Vec<f64> = match e
                    .as_ref()
                    .and_then(|e| e.as_ref())
                    .and_then(|e| e.buckets.as_ref())
                {
                    Some(b) => b
                        .iter()
                        .map(|d| {
                            if unit_seconds {
                                d.as_secs_f64()
                            } else {
                                d.as_secs_f64() * 1000.0
                            }
                        })
                        .collect(),
                    None if unit_seconds => DEFAULT_BUCKETS_MS.iter().map(|b| b / 1000.0).collect(),
                    None => DEFAULT_BUCKETS_MS.to_vec(),
                };
                if buckets.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(ConfigError::new(
                        "histogram.explicit.buckets",
                        "bucket bounds must increase",
                    ));
                }
                HistKind::Explicit(buckets.into())
            }
        };
        for (i, d) in self.exclude_dimensions.iter().enumerate() {
            if !DEFAULT_DIMS.contains(&d.as_str()) {
                return Err(ConfigError::new(
                    format!("exclude_dimensions[{i}]"),
                    format!(
                        "`{d}` is not a default dimension (service.name, span.name, span.kind, status.code)"
                    ),
                ));
            }
        }
        let defaults = DEFAULT_DIMS.map(|d| !self.exclude_dimensions.iter().any(|e| e == d));
        let mut seen: Vec<&str> = DEFAULT_DIMS.to_vec();
        for (list, path) in [
            (&self.dimensions, "dimensions"),
            (&self.calls_dimensions, "calls_dimensions"),
            (&self.histogram.dimensions, "histogram.dimensions"),
        ] {
            for (i, d) in list.iter().enumerate() {
                if d.name.is_empty() {
                    return Err(ConfigError::new(
                        format!("{path}[{i}].name"),
                        "must not be empty",
                    ));
                }
                if path == "dimensions" && seen.contains(&d.name.as_str()) {
                    return Err(ConfigError::new(
                        format!("{path}[{i}].name"),
                        format!("duplicate dimension name {}", d.name),
                    ));
                }
                if path == "dimensions" {
                    seen.push(&d.name);
                }
            }
        }
        let delta = match self.aggregation_temporality.as_deref() {
            None | Some("AGGREGATION_TEMPORALITY_CUMULATIVE") => false,
            Some("AGGREGATION_TEMPORALITY_DELTA") => true,
            Some(other) => {
                return Err(ConfigError::new(
                    "aggregation_temporality",
                    format!(
                        "`{other}`: expected AGGREGATION_TEMPORALITY_CUMULATIVE or AGGREGATION_TEMPORALITY_DELTA"
                    ),
                ));
            }
        };
        let flush_interval = self
            .metrics_flush_interval
            .unwrap_or(Duration::from_secs(15));
        if flush_interval.is_zero() {
            return Err(ConfigError::new(
                "metrics_flush_interval",
                "must be positive",
            ));
        }
        if self.events.enabled && self.events.dimensions.is_empty() {
            return Err(ConfigError::new(
                "events.dimensions",
                "at least one event dimension is needed when events are enabled",
            ));
        }
        let resource_cache = self.resource_metrics_cache_size.unwrap_or(1000);
        if resource_cache == 0 {
            return Err(ConfigError::new(
                "resource_metrics_cache_size",
                "must be positive",
            ));
        }
        Ok(Settings {
            calls_name: name("calls"),
            duration_name: name("duration"),
            events_name: name("events"),
            unit_seconds,
            hist,
            defaults,
            dimensions: self.dimensions.clone(),
            calls_dimensions: self.calls_dimensions.clone(),
            hist_dimensions: self.histogram.dimensions.clone(),
            event_dimensions: self.events.enabled.then(|| self.events.dimensions.clone()),
            key_attributes: self.resource_metrics_key_attributes.clone(),
            resource_cache,
            delta,
            flush_interval,
            expiration: self.metrics_expiration.filter(|d| !d.is_zero()),
            limit: match self.aggregation_cardinality_limit {
                None => DEFAULT_CARDINALITY_LIMIT,
                Some(0) => usize::MAX,
                Some(n) => n,
            },
            exemplars: if self.exemplars.enabled {
                self.exemplars.max_per_data_point.unwrap_or(5)
            } else {
                0
            },
            add_resource_attributes: self.add_resource_attributes,
        })
    }

    /// Check the configuration as the connector will on build.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.settings().map(drop)
    }
}

/// A base-2 exponential histogram that lowers its scale to stay within `max` buckets.
#[derive(Debug, Clone)]
struct Expo {
    scale: i32,
    zero: u64,
    offset: i64,
    counts: Vec<u64>,
}

impl Expo {
    fn new() -> Self {
        Self {
            scale: 20,
            zero: 0,
            offset: 0,
            counts: Vec::new(),
        }
    }

    fn index(v: f64, scale: i32) -> i64 {
        // Upper-inclusive buckets: (base^i, base^(i+1)], base = 2^(2^-scale).
        (v.log2() * 2f64.powi(scale)).ceil() as i64 - 1
    }

    fn record(&mut self, v: f64, max: usize) {
        if v <= 0.0 || !v.is_finite() {
            self.zero += 1;
            return;
        }
        let mut i = Self::index(v, self.scale);
        if self.counts.is_empty() {
            self.offset = i;
            self.counts.push(1);
            return;
        }
        loop {
            let lo = self.offset.min(i);
            let hi = (self.offset + self.counts.len() as i64 - 1).max(i);
            if (hi - lo + 1) as usize <= max || self.scale <= -10 {
                break;
            }
            self.downscale();
            i = Self::index(v, self.scale);
        }
        if i < self.offset {
            let grow = (self.offset - i) as usize;
            let mut counts = vec![0; grow];
            counts.append(&mut self.counts);
            self.counts = counts;
            self.offset = i;
        }
        let at = (i - self.offset) as usize;
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] += 1;
    }

    fn downscale(&mut self) {
        self.scale -= 1;
        let new_offset = self.offset >> 1;
        let mut merged: Vec<u64> = Vec::with_capacity(self.counts.len() / 2 + 1);
        for (j, c) in self.counts.iter().enumerate() {
            let idx = ((self.offset + j as i64) >> 1) - new_offset;
            let idx = idx as usize;
            if idx >= merged.len() {
                merged.resize(idx + 1, 0);
            }
            merged[idx] += c;
        }
        self.offset = new_offset;
        self.counts = merged;
    }
}

#[derive(Debug, Clone)]
enum Hist {
    None,
    Explicit(Vec<u64>),
    Expo(Box<Expo>),
}

#[derive(Debug, Clone)]
struct Series {
    resource: u64,
    attrs: Vec<KeyValue>,
    /// Attributes of the histogram, when it has dimensions of its own.
    hist_attrs: Option<Vec<KeyValue>>,
    calls: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    hist: Hist,
    exemplars: Vec<Exemplar>,
    start: u64,
    touched: Instant,
    dirty: bool,
}

#[derive(Debug, Clone)]
struct EventSeries {
    resource: u64,
    attrs: Vec<KeyValue>,
    count: u64,
    start: u64,
    touched: Instant,
    dirty: bool,
}

#[derive(Debug)]
struct ResourceEntry {
    id: u64,
    attrs: Vec<KeyValue>,
    touched: Instant,
}

#[derive(Debug, Default)]
struct State {
    resources: HashMap<Box<[u8]>, ResourceEntry, ahash::RandomState>,
    series: HashMap<Box<[u8]>, Series, ahash::RandomState>,
    events: HashMap<Box<[u8]>, EventSeries, ahash::RandomState>,
    next_resource: u64,
    /// Series held, not counting overflow series.
    live: usize,
}

pub(super) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "SPAN_KIND_INTERNAL",
        2 => "SPAN_KIND_SERVER",
        3 => "SPAN_KIND_CLIENT",
        4 => "SPAN_KIND_PRODUCER",
        5 => "SPAN_KIND_CONSUMER",
        _ => "SPAN_KIND_UNSPECIFIED",
    }
}

fn status_name(code: i32) -> &'static str {
    match code {
        c if c == StatusCode::Error as i32 => "STATUS_CODE_ERROR",
        c if c == StatusCode::Ok as i32 => "STATUS_CODE_OK",
        _ => "STATUS_CODE_UNSET",
    }
}

/// What a series key is made of, as read from a decoded span or from its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct SpanView<'a> {
    /// The name's bytes (checked UTF-8 where the request was received; read as text only
    /// when a series is made).
    pub(super) name: &'a [u8],
    pub(super) kind: i32,
    pub(super) status: i32,
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) trace_id: &'a [u8],
    pub(super) span_id: &'a [u8],
    pub(super) parent: &'a [u8],
}

impl<'a> SpanView<'a> {
    pub(super) fn of(span: &'a Span) -> Self {
        Self {
            parent: &span.parent_span_id,
            name: span.name.as_bytes(),
            kind: span.kind,
            status: span.status.as_ref().map_or(0, |s| s.code),
            start: span.start_time_unix_nano,
            end: span.end_time_unix_nano,
            trace_id: &span.trace_id,
            span_id: &span.span_id,
        }
    }

    /// Read in place, as prost decodes: the last of a repeated scalar wins, and repeated
    /// `status` messages merge (the last `code` given wins). In the same walk, `out[i]`
    /// gets the value of the first attribute named `keys[i]`, as `span_attr` reads it.
    pub(super) fn read(
        span: &'a [u8],
        keys: &[&str],
        out: &mut [Option<crate::tail_sampling::wire::AnyRef<'a>>],
    ) -> Self {
        // Bit n: some key is n bytes long. An attribute whose key has no such length is
        // skipped on one test.
        let lens = keys
            .iter()
            .filter(|k| k.len() < 128)
            .fold(0u128, |m, k| m | 1 << k.len());
        if let Some(v) = Self::read_in_order(span, keys, lens, out) {
            return v;
        }
        // Fields out of order, repeated or unknown: the general walk, from the start.
        out.iter_mut().for_each(|v| *v = None);
        Self::read_any_order(span, keys, lens, out)
    }

    /// The fast path: the span's fields in the order of their numbers, each at most once
    /// but the repeated ones, as every SDK and the Collector write them. Each field is one
    /// well-predicted compare of its tag byte instead of a decoded tag and a jump on its
    /// wire type. `None` (and `out` left part-filled) for anything else; then
    /// [`SpanView::read_any_order`] reads it as prost would.
    #[inline(always)]
    fn read_in_order(
        span: &'a [u8],
        keys: &[&str],
        lens: u128,
        out: &mut [Option<crate::tail_sampling::wire::AnyRef<'a>>],
    ) -> Option<Self> {
        use otel_pipeline_core::wire::{Wire, fields};
        let mut c = InOrder { b: span };
        let mut v = Self::default();
        if let Some(t) = c.len(0x0a)? {
            v.trace_id = t;
        }
        if let Some(t) = c.len(0x12)? {
            v.span_id = t;
        }
        c.len(0x1a)?; // trace_state
        if let Some(p) = c.len(0x22)? {
            v.parent = p;
        }
        if let Some(n) = c.len(0x2a)? {
            v.name = n;
        }
        if let Some(k) = c.varint(0x30)? {
            v.kind = k as i32;
        }
        if let Some(t) = c.fixed64(0x39) {
            v.start = t;
        }
        if let Some(t) = c.fixed64(0x41) {
            v.end = t;
        }
        while let Some(kv) = c.len(0x4a)? {
            if !keys.is_empty() {
                dimension_attribute(kv, keys, lens, out);
            }
        }
        c.varint(0x50)?; // dropped_attributes_count
        while c.len(0x5a)?.is_some() {} // events
        c.varint(0x60)?; // dropped_events_count
        while c.len(0x6a)?.is_some() {} // links
        c.varint(0x70)?; // dropped_links_count
        if let Some(st) = c.len(0x7a)? {
            for (g, w) in fields(st) {
                if let (3, Wire::Varint(code)) = (g, w) {
                    v.status = code as i32;
                }
            }
        }
        // flags (field 16, fixed32): a two-byte tag and four bytes.
        if let [0x85, 0x01, _, _, _, _, rest @ ..] = c.b {
            c.b = rest;
        }
        c.b.is_empty().then_some(v)
    }

    /// Any order, any repeats: the walk of every field.
    fn read_any_order(
        span: &'a [u8],
        keys: &[&str],
        lens: u128,
        out: &mut [Option<crate::tail_sampling::wire::AnyRef<'a>>],
    ) -> Self {
        use otel_pipeline_core::wire::{Wire, fields};
        let mut v = Self::default();
        for (f, w) in fields(span) {
            match (f, w) {
                (1, Wire::Len(b)) => v.trace_id = b,
                (2, Wire::Len(b)) => v.span_id = b,
                (4, Wire::Len(b)) => v.parent = b,
                (5, Wire::Len(b)) => v.name = b,
                (6, Wire::Varint(k)) => v.kind = k as i32,
                (7, Wire::Fixed64(t)) => v.start = t,
                (8, Wire::Fixed64(t)) => v.end = t,
                (9, Wire::Len(kv)) if !keys.is_empty() => dimension_attribute(kv, keys, lens, out),
                (15, Wire::Len(st)) => {
                    for (g, w) in fields(st) {
                        if let (3, Wire::Varint(c)) = (g, w) {
                            v.status = c as i32;
                        }
                    }
                }
                _ => {}
            }
        }
        v
    }
}

/// A span's fields read in the order of their numbers, one tag byte each.
struct InOrder<'a> {
    b: &'a [u8],
}

impl<'a> InOrder<'a> {
    /// The length-delimited field of tag byte `tag` if it comes next: `Some(None)` if
    /// another field comes next, `None` if its length is malformed.
    #[inline(always)]
    fn len(&mut self, tag: u8) -> Option<Option<&'a [u8]>> {
        let [t, rest @ ..] = self.b else {
            return Some(None);
        };
        if *t != tag {
            return Some(None);
        }
        let (n, m) = otel_pipeline_core::wire::varint(rest)?;
        let body = rest.get(m..m.checked_add(usize::try_from(n).ok()?)?)?;
        self.b = &rest[m + body.len()..];
        Some(Some(body))
    }

    /// The varint field of tag byte `tag` if it comes next (as [`InOrder::len`]).
    #[inline(always)]
    fn varint(&mut self, tag: u8) -> Option<Option<u64>> {
        let [t, rest @ ..] = self.b else {
            return Some(None);
        };
        if *t != tag {
            return Some(None);
        }
        let (n, m) = otel_pipeline_core::wire::varint(rest)?;
        self.b = &rest[m..];
        Some(Some(n))
    }

    /// The fixed64 field of tag byte `tag` if it comes next and is whole.
    #[inline(always)]
    fn fixed64(&mut self, tag: u8) -> Option<u64> {
        match self.b {
            [t, a, b, c, d, e, f, g, h, rest @ ..] if *t == tag => {
                self.b = rest;
                Some(u64::from_le_bytes([*a, *b, *c, *d, *e, *f, *g, *h]))
            }
            _ => None,
        }
    }
}

/// Whether `k` is one of `keys`: length and first byte before the compare call.
#[inline(always)]
fn is_key(keys: &[&str], k: &[u8]) -> bool {
    for d in keys {
        let d = d.as_bytes();
        if d.len() == k.len() && d.first() == k.first() && d == k {
            return true;
        }
    }
    false
}

/// One encoded attribute of a span: `out[i]` gets its value if its key is `keys[i]` and
/// no earlier attribute had that key. Bit n of `lens` is set if a key is n bytes long.
#[inline(always)]
fn dimension_attribute<'a>(
    kv: &'a [u8],
    keys: &[&str],
    lens: u128,
    out: &mut [Option<crate::tail_sampling::wire::AnyRef<'a>>],
) {
    use crate::tail_sampling::wire::{AnyRef, any_value, attribute};
    // Most attributes are encoded as a key, then a value, and nothing else: then the key
    // is compared before the value is read, and an attribute that is no dimension costs a
    // few byte compares.
    if let [0x0a, klen, rest @ ..] = kv
        && *klen < 0x80
        && let Some((k, [0x12, vlen, value @ ..])) = rest.split_at_checked(usize::from(*klen))
        && *vlen < 0x80
        && value.len() == usize::from(*vlen)
        && (lens >> klen & 1 == 0 || !is_key(keys, k))
    {
        return;
    }
    let (key, raw) = attribute(kv);
    for (i, k) in keys.iter().enumerate() {
        if out[i].is_none() && k.as_bytes() == key {
            out[i] = Some(raw.map_or(AnyRef::Other, any_value));
        }
    }
}

/// One resource's part of every series key of its spans.
struct ResourceCx<'a> {
    id: u64,
    service: Option<&'a AnyValue>,
    /// The key's start: the resource's id and, when a dimension, its service name.
    prefix: Vec<u8>,
    /// The resource attributes that are dimensions.
    dims: Vec<Option<&'a AnyValue>>,
}

/// A dimension's value, borrowed from a decoded attribute or read from bytes.
#[derive(Debug, Clone, Copy)]
enum DimVal<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Any(&'a AnyValue),
}

impl DimVal<'_> {
    /// The same key bytes whichever way the value was read.
    fn key(self, out: &mut Vec<u8>) {
        match self {
            Self::Any(a) => key_value(out, Some(a)),
            Self::Str(s) => {
                out.push(1);
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Self::Int(i) => {
                out.push(2);
                out.extend_from_slice(&i.to_le_bytes());
            }
            Self::Bool(b) => out.extend_from_slice(&[3, u8::from(b)]),
            Self::Double(d) => {
                out.push(4);
                out.extend_from_slice(&d.to_bits().to_le_bytes());
            }
        }
    }

    fn to_any(self) -> AnyValue {
        let value = match self {
            Self::Any(a) => return a.clone(),
            Self::Str(s) => any_value::Value::StringValue(s.to_string()),
            Self::Int(i) => any_value::Value::IntValue(i),
            Self::Bool(b) => any_value::Value::BoolValue(b),
            Self::Double(d) => any_value::Value::DoubleValue(d),
        };
        AnyValue { value: Some(value) }
    }
}

/// The suffix of an overflow series' key.
const OVERFLOW_KEY: &[u8] = b"\xffoverflow";

/// The first attribute `key` (as the byte reader and the Collector's maps read it).
pub(super) fn first<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

pub(super) fn string_value(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_string())),
    }
}

pub(super) fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(value),
        ..Default::default()
    }
}

/// Append a value to a key, tagged and length-prefixed so no two values collide.
fn key_value(out: &mut Vec<u8>, v: Option<&AnyValue>) {
    use prost::Message;
    match v.and_then(|v| v.value.as_ref()) {
        None => out.push(0),
        Some(any_value::Value::StringValue(s)) => {
            out.push(1);
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Some(any_value::Value::IntValue(i)) => {
            out.push(2);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Some(any_value::Value::BoolValue(b)) => out.extend_from_slice(&[3, u8::from(*b)]),
        Some(any_value::Value::DoubleValue(d)) => {
            out.push(4);
            out.extend_from_slice(&d.to_bits().to_le_bytes());
        }
        Some(other) => {
            let any = AnyValue {
                value: Some(other.clone()),
            };
            out.push(5);
            out.extend_from_slice(&(any.encoded_len() as u32).to_le_bytes());
            any.encode_raw(out);
        }
    }
}

/// Per resource: its calls points, (unused), and its events points.
type ResourcePoints = (Vec<NumberDataPoint>, Vec<Metric>, Vec<NumberDataPoint>);

/// The consumer a [`SpanMetrics`] connector builds.
#[derive(Debug, Clone)]
pub struct SpanMetricsConsumer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: Settings,
    state: Mutex<State>,
    next: Downstream<Metrics>,
    telemetry: Arc<ComponentTelemetry>,
    series_gauge: Gauge,
    overflow: Counter,
    expired: Counter,
}

impl Inner {
    fn resource_entry(&self, state: &mut State, resource: Option<&Resource>, now: Instant) -> u64 {
        let attrs: &[KeyValue] = resource.map_or(&[], |r| &r.attributes);
        let mut picked: Vec<&KeyValue> = attrs
            .iter()
            .filter(|kv| {
                self.settings.key_attributes.is_empty()
                    || self.settings.key_attributes.contains(&kv.key)
            })
            .collect();
        picked.sort_by(|a, b| a.key.cmp(&b.key));
        picked.dedup_by(|a, b| a.key == b.key);
        let mut key = Vec::with_capacity(64);
        for kv in &picked {
            key.extend_from_slice(&(kv.key.len() as u32).to_le_bytes());
            key.extend_from_slice(kv.key.as_bytes());
            key_value(&mut key, kv.value.as_ref());
        }
        if let Some(e) = state.resources.get_mut(key.as_slice()) {
            e.touched = now;
            return e.id;
        }
        if state.resources.len() >= self.settings.resource_cache {
            // The least recently updated resource goes, with its series.
            if let Some((old_key, old_id)) = state
                .resources
                .iter()
                .min_by_key(|(_, e)| e.touched)
                .map(|(k, e)| (k.clone(), e.id))
            {
                state.resources.remove(&old_key);
                let before = state.series.len();
                state.series.retain(|_, s| s.resource != old_id);
                state.events.retain(|_, s| s.resource != old_id);
                let gone = before - state.series.len();
                self.expired.add(gone as u64);
                state.live = state.live.saturating_sub(gone);
            }
        }
        let id = state.next_resource;
        state.next_resource += 1;
        state.resources.insert(
            key.into_boxed_slice(),
            ResourceEntry {
                id,
                attrs: picked.into_iter().cloned().collect(),
                touched: now,
            },
        );
        id
    }

    /// Append each of `dims`'s values to `key` (and, with `attrs`, to the attributes),
    /// looked up by `find` on the span and then on the resource.
    fn dims<'a>(
        key: &mut Vec<u8>,
        attrs: &mut Option<Vec<KeyValue>>,
        dims: &'a [Dimension],
        offset: usize,
        find: &dyn Fn(usize, &str) -> Option<DimVal<'a>>,
        resource: &[Option<&'a AnyValue>],
    ) {
        for (j, d) in dims.iter().enumerate() {
            let i = offset + j;
            let v = find(i, &d.name)
                .or_else(|| resource.get(i).copied().flatten().map(DimVal::Any))
                .or_else(|| d.default.as_deref().map(DimVal::Str));
            match v {
                Some(v) => {
                    v.key(key);
                    if let Some(out) = attrs.as_mut() {
                        out.push(kv(&d.name, v.to_any()));
                    }
                }
                None => key.push(0),
            }
        }
    }

    /// Each dimension's value on the resource, by the dimension's index.
    fn resource_dims<'a>(&self, resource: &'a [KeyValue]) -> Vec<Option<&'a AnyValue>> {
        let s = &self.settings;
        s.dimensions
            .iter()
            .chain(&s.calls_dimensions)
            .chain(&s.hist_dimensions)
            .map(|d| first(resource, &d.name))
            .collect()
    }

    /// Count every span of `batch`. A batch still in the bytes it arrived as is read in
    /// place (name, kind, status, times, ids and the dimensions' attributes), never
    /// decoded: in a gateway, the tail sampler behind keeps working on bytes too.
    fn record(&self, batch: &Batch<Traces>) {
        let now = Instant::now();
        let now_ns = now_nanos();
        let mut state = self.state.lock();
        let mut key: Vec<u8> = Vec::with_capacity(128);
        let encoded = batch
            .encoded()
            .filter(|_| self.settings.event_dimensions.is_none());
        if let Some(bytes) = encoded
            && self.record_encoded(&mut state, &mut key, bytes, now, now_ns)
        {
            self.series_gauge
                .set((state.series.len() + state.events.len()) as i64);
            return;
        }
        for rs in &batch.data().resource_spans {
            let resource_id = self.resource_entry(&mut state, rs.resource.as_ref(), now);
            let resource_attrs: &[KeyValue] = rs.resource.as_ref().map_or(&[], |r| &r.attributes);
            let res_dims = self.resource_dims(resource_attrs);
            let res = self.resource_cx(resource_id, resource_attrs);
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    let view = SpanView::of(span);
                    let find =
                        |_: usize, name: &str| first(&span.attributes, name).map(DimVal::Any);
                    self.update(&mut state, &mut key, &res, &view, &find, now, now_ns);
                    if let Some(event_dims) = &self.settings.event_dimensions {
                        self.record_events(
                            &mut state,
                            &mut key,
                            resource_id,
                            resource_attrs,
                            &res_dims,
                            span,
                            &view,
                            event_dims,
                            now,
                            now_ns,
                        );
                    }
                }
            }
        }
        self.series_gauge
            .set((state.series.len() + state.events.len()) as i64);
    }

    /// The byte path: `false` if the request holds something only decoding reads right
    /// (a dimension whose value is an array or a map), and then nothing was counted.
    fn record_encoded(
        &self,
        state: &mut State,
        key: &mut Vec<u8>,
        bytes: &[u8],
        now: Instant,
        now_ns: u64,
    ) -> bool {
        use crate::tail_sampling::wire::{AnyRef, decode_span};
        use otel_pipeline_core::wire::{Wire, fields};
        let dims: Vec<&str> = self
            .settings
            .dimensions
            .iter()
            .chain(&self.settings.calls_dimensions)
            .chain(&self.settings.hist_dimensions)
            .map(|d| d.name.as_str())
            .collect();
        let mut values: Vec<Option<AnyRef<'_>>> = vec![None; dims.len()];
        for (f, w) in fields(bytes) {
            let (1, Wire::Len(rs)) = (f, w) else {
                continue;
            };
            // The resource is small: decoded once per resource, as prost merges repeats.
            let mut resource: Option<Resource> = None;
            for (f, w) in fields(rs) {
                if let (1, Wire::Len(r)) = (f, w) {
                    let mut merged = resource.take().unwrap_or_default();
                    if prost::Message::merge(&mut merged, r).is_err() {
                        return false;
                    }
                    resource = Some(merged);
                }
            }
            let resource_id = self.resource_entry(state, resource.as_ref(), now);
            let resource_attrs: &[KeyValue] = resource.as_ref().map_or(&[], |r| &r.attributes);
            let res = self.resource_cx(resource_id, resource_attrs);
            for (fi, w) in fields(rs) {
                let (2, Wire::Len(ss)) = (fi, w) else {
                    continue;
                };
                for (fj, w) in fields(ss) {
                    let (2, Wire::Len(span)) = (fj, w) else {
                        continue;
                    };
                    values.iter_mut().for_each(|v| *v = None);
                    let view = SpanView::read(span, &dims, &mut values);
                    if values.iter().any(|v| matches!(v, Some(AnyRef::Other))) {
                        // An array or map as a dimension: read as decoding reads it.
                        let Some(decoded) = decode_span(span) else {
                            continue;
                        };
                        let view = SpanView::of(&decoded);
                        let find = |_: usize, name: &str| {
                            first(&decoded.attributes, name).map(DimVal::Any)
                        };
                        self.update(state, key, &res, &view, &find, now, now_ns);
                        continue;
                    }
                    let find = |i: usize, _: &str| {
                        values[i].and_then(|v| match v {
                            AnyRef::Str(s) => Some(DimVal::Str(s)),
                            AnyRef::Bool(b) => Some(DimVal::Bool(b)),
                            AnyRef::Int(i) => Some(DimVal::Int(i)),
                            AnyRef::Double(d) => Some(DimVal::Double(d)),
                            AnyRef::Other => None,
                        })
                    };
                    self.update(state, key, &res, &view, &find, now, now_ns);
                }
            }
        }
        true
    }

    /// What every span of one resource shares: read once per resource.
    fn resource_cx<'a>(&self, id: u64, attrs: &'a [KeyValue]) -> ResourceCx<'a> {
        let service = first(attrs, "service.name");
        let mut prefix = id.to_le_bytes().to_vec();
        if self.settings.defaults[0] {
            key_value(&mut prefix, service);
        }
        ResourceCx {
            id,
            service,
            prefix,
            dims: self.resource_dims(attrs),
        }
    }

    /// Count one span.
    #[allow(clippy::too_many_arguments)]
    fn update<'a>(
        &'a self,
        state: &mut State,
        key: &mut Vec<u8>,
        res: &ResourceCx<'a>,
        view: &SpanView<'_>,
        find: &dyn Fn(usize, &str) -> Option<DimVal<'a>>,
        now: Instant,
        now_ns: u64,
    ) {
        let s = &self.settings;
        let (resource_id, service, res_dims) = (res.id, res.service, &res.dims[..]);
        key.clear();
        key.extend_from_slice(&res.prefix);
        if s.defaults[1] {
            key.extend_from_slice(&(view.name.len() as u32).to_le_bytes());
            key.extend_from_slice(view.name);
        }
        if s.defaults[2] {
            key.push(view.kind as u8);
        }
        if s.defaults[3] {
            key.push(view.status as u8);
        }
        let mut none = None;
        let (n1, n2) = (s.dimensions.len(), s.calls_dimensions.len());
        Self::dims(key, &mut none, &s.dimensions, 0, find, res_dims);
        Self::dims(key, &mut none, &s.calls_dimensions, n1, find, res_dims);
        Self::dims(key, &mut none, &s.hist_dimensions, n1 + n2, find, res_dims);
        let value =
            view.end.saturating_sub(view.start) as f64 / if s.unit_seconds { 1e9 } else { 1e6 };
        // One lookup on the hot path: an existing series.
        if let Some(series) = state.series.get_mut(key.as_slice()) {
            Self::count(series, s, view, value, now);
            return;
        }
        if state.live >= s.limit {
            key.truncate(8);
            key.extend_from_slice(OVERFLOW_KEY);
            self.overflow.add(1);
            if let Some(series) = state.series.get_mut(key.as_slice()) {
                Self::count(series, s, view, value, now);
                return;
            }
        }
        let overflow = key.ends_with(OVERFLOW_KEY);
        let mut series = self.new_series(
            resource_id,
            overflow,
            service,
            view,
            find,
            res_dims,
            state,
            now,
            now_ns,
        );
        if !overflow {
            state.live += 1;
        }
        Self::count(&mut series, s, view, value, now);
        state.series.insert(key.clone().into_boxed_slice(), series);
    }

    /// Add one span of duration `value` to `series`.
    fn count(series: &mut Series, s: &Settings, view: &SpanView<'_>, value: f64, now: Instant) {
        series.calls += 1;
        series.count += 1;
        series.sum += value;
        series.min = series.min.min(value);
        series.max = series.max.max(value);
        series.touched = now;
        series.dirty = true;
        match (&mut series.hist, &s.hist) {
            (Hist::Explicit(counts), HistKind::Explicit(bounds)) => {
                let i = bounds.partition_point(|b| *b < value);
                counts[i] += 1;
            }
            (Hist::Expo(e), HistKind::Exponential(max)) => e.record(value, *max),
            _ => {}
        }
        if series.exemplars.len() < s.exemplars && !matches!(s.hist, HistKind::None) {
            series.exemplars.push(Exemplar {
                filtered_attributes: Vec::new(),
                time_unix_nano: view.end,
                span_id: view.span_id.to_vec(),
                trace_id: view.trace_id.to_vec(),
                value: Some(exemplar::Value::AsDouble(value)),
            });
        }
    }

    /// The events metric: one count per event, by the span's dimensions and the event's.
    #[allow(clippy::too_many_arguments)]
    fn record_events<'a>(
        &'a self,
        state: &mut State,
        key: &mut Vec<u8>,
        resource_id: u64,
        resource_attrs: &'a [KeyValue],
        res_dims: &[Option<&'a AnyValue>],
        span: &'a Span,
        view: &SpanView<'_>,
        event_dims: &'a [Dimension],
        now: Instant,
        now_ns: u64,
    ) {
        let find = |_: usize, name: &str| -> Option<DimVal<'a>> {
            first(&span.attributes, name).map(DimVal::Any)
        };
        let base_len = key.len();
        for event in &span.events {
            key.truncate(base_len);
            let mut none = None;
            let event_find = |_: usize, name: &str| -> Option<DimVal<'a>> {
                first(&event.attributes, name).map(DimVal::Any)
            };
            Self::dims(key, &mut none, event_dims, 0, &event_find, &[]);
            if let Some(e) = state.events.get_mut(key.as_slice()) {
                e.count += 1;
                e.touched = now;
                e.dirty = true;
                continue;
            }
            let service = first(resource_attrs, "service.name");
            let mut attrs = Some(self.base_attrs(service, view, resource_id, state));
            let mut scratch = Vec::new();
            Self::dims(
                &mut scratch,
                &mut attrs,
                &self.settings.dimensions,
                0,
                &find,
                res_dims,
            );
            Self::dims(&mut scratch, &mut attrs, event_dims, 0, &event_find, &[]);
            state.events.insert(
                key.clone().into_boxed_slice(),
                EventSeries {
                    resource: resource_id,
                    attrs: attrs.unwrap_or_default(),
                    count: 1,
                    start: now_ns,
                    touched: now,
                    dirty: true,
                },
            );
        }
    }

    fn base_attrs(
        &self,
        service: Option<&AnyValue>,
        view: &SpanView<'_>,
        resource_id: u64,
        state: &State,
    ) -> Vec<KeyValue> {
        let s = &self.settings;
        let mut attrs = Vec::with_capacity(8);
        if s.defaults[0] {
            attrs.push(kv(
                "service.name",
                service.cloned().unwrap_or_else(|| string_value("")),
            ));
        }
        if s.defaults[1] {
            attrs.push(kv(
                "span.name",
                string_value(&String::from_utf8_lossy(view.name)),
            ));
        }
        if s.defaults[2] {
            attrs.push(kv("span.kind", string_value(kind_name(view.kind))));
        }
        if s.defaults[3] {
            attrs.push(kv("status.code", string_value(status_name(view.status))));
        }
        if s.add_resource_attributes
            && let Some(e) = state.resources.values().find(|e| e.id == resource_id)
        {
            for a in &e.attrs {
                if !attrs.iter().any(|x| x.key == a.key) {
                    attrs.push(a.clone());
                }
            }
        }
        attrs
    }

    #[allow(clippy::too_many_arguments)]
    fn new_series<'a>(
        &'a self,
        resource_id: u64,
        overflow: bool,
        service: Option<&AnyValue>,
        view: &SpanView<'_>,
        find: &dyn Fn(usize, &str) -> Option<DimVal<'a>>,
        res_dims: &[Option<&'a AnyValue>],
        state: &State,
        now: Instant,
        now_ns: u64,
    ) -> Series {
        let s = &self.settings;
        let (attrs, hist_attrs) = if overflow {
            let a = vec![kv(
                "otel.metric.overflow",
                AnyValue {
                    value: Some(any_value::Value::BoolValue(true)),
                },
            )];
            (a, None)
        } else {
            let mut base = Some(self.base_attrs(service, view, resource_id, state));
            let mut scratch = Vec::new();
            let (n1, n2) = (s.dimensions.len(), s.calls_dimensions.len());
            Self::dims(&mut scratch, &mut base, &s.dimensions, 0, find, res_dims);
            let base = base.unwrap_or_default();
            let hist_attrs = if s.hist_dimensions.is_empty() {
                None
            } else {
                let mut h = Some(base.clone());
                Self::dims(
                    &mut scratch,
                    &mut h,
                    &s.hist_dimensions,
                    n1 + n2,
                    find,
                    res_dims,
                );
                h
            };
            let mut calls = Some(base);
            Self::dims(
                &mut scratch,
                &mut calls,
                &s.calls_dimensions,
                n1,
                find,
                res_dims,
            );
            (calls.unwrap_or_default(), hist_attrs)
        };
        Series {
            resource: resource_id,
            attrs,
            hist_attrs,
            calls: 0,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            hist: match &s.hist {
                HistKind::None => Hist::None,
                HistKind::Explicit(b) => Hist::Explicit(vec![0; b.len() + 1]),
                HistKind::Exponential(_) => Hist::Expo(Box::new(Expo::new())),
            },
            exemplars: Vec::new(),
            start: now_ns,
            touched: now,
            dirty: true,
        }
    }

    /// What to emit now; resets delta series and forgets expired ones.
    fn collect(&self) -> Option<ExportMetricsServiceRequest> {
        let s = &self.settings;
        let now = Instant::now();
        let now_ns = now_nanos();
        let mut state = self.state.lock();
        if let Some(exp) = s.expiration {
            let before = state.series.len();
            let mut live_gone = 0;
            state.series.retain(|k, x| {
                let keep = now.duration_since(x.touched) < exp;
                if !keep && !k.ends_with(OVERFLOW_KEY) {
                    live_gone += 1;
                }
                keep
            });
            state
                .events
                .retain(|_, x| now.duration_since(x.touched) < exp);
            self.expired.add((before - state.series.len()) as u64);
            state.live = state.live.saturating_sub(live_gone);
        }
        let temporality = if s.delta {
            AggregationTemporality::Delta
        } else {
            AggregationTemporality::Cumulative
        } as i32;
        let mut by_resource: HashMap<u64, ResourcePoints, ahash::RandomState> = HashMap::default();
        let mut hist_points: HashMap<u64, Vec<HistogramDataPoint>, ahash::RandomState> =
            HashMap::default();
        let mut expo_points: HashMap<u64, Vec<ExponentialHistogramDataPoint>, ahash::RandomState> =
            HashMap::default();
        for series in state.series.values_mut() {
            if s.delta && !series.dirty {
                continue;
            }
            let entry = by_resource.entry(series.resource).or_default();
            entry.0.push(NumberDataPoint {
                attributes: series.attrs.clone(),
                start_time_unix_nano: series.start,
                time_unix_nano: now_ns,
                value: Some(number_data_point::Value::AsInt(series.calls as i64)),
                ..Default::default()
            });
            let attrs = series
                .hist_attrs
                .clone()
                .unwrap_or_else(|| series.attrs.clone());
            let (min, max) = if series.count > 0 {
                (Some(series.min), Some(series.max))
            } else {
                (None, None)
            };
            match (&series.hist, &s.hist) {
                (Hist::Explicit(counts), HistKind::Explicit(bounds)) => {
                    hist_points
                        .entry(series.resource)
                        .or_default()
                        .push(HistogramDataPoint {
                            attributes: attrs,
                            start_time_unix_nano: series.start,
                            time_unix_nano: now_ns,
                            count: series.count,
                            sum: Some(series.sum),
                            bucket_counts: counts.clone(),
                            explicit_bounds: bounds.to_vec(),
                            exemplars: std::mem::take(&mut series.exemplars),
                            min,
                            max,
                            ..Default::default()
                        });
                }
                (Hist::Expo(e), _) => {
                    expo_points.entry(series.resource).or_default().push(
                        ExponentialHistogramDataPoint {
                            attributes: attrs,
                            start_time_unix_nano: series.start,
                            time_unix_nano: now_ns,
                            count: series.count,
                            sum: Some(series.sum),
                            scale: e.scale,
                            zero_count: e.zero,
                            positive: Some(Buckets {
                                offset: e.offset as i32,
                                bucket_counts: e.counts.clone(),
                            }),
                            negative: Some(Buckets::default()),
                            exemplars: std::mem::take(&mut series.exemplars),
                            min,
                            max,
                            ..Default::default()
                        },
                    );
                }
                _ => {}
            }
            series.dirty = false;
        }
        for e in state.events.values_mut() {
            if s.delta && !e.dirty {
                continue;
            }
            by_resource
                .entry(e.resource)
                .or_default()
                .2
                .push(NumberDataPoint {
                    attributes: e.attrs.clone(),
                    start_time_unix_nano: e.start,
                    time_unix_nano: now_ns,
                    value: Some(number_data_point::Value::AsInt(e.count as i64)),
                    ..Default::default()
                });
            e.dirty = false;
        }
        for id in hist_points.keys().chain(expo_points.keys()) {
            by_resource.entry(*id).or_default();
        }
        if s.delta {
            // A delta interval starts afresh: its series start now.
            state.series.clear();
            state.events.clear();
            state.live = 0;
        }
        if by_resource.is_empty() {
            return None;
        }
        let unit = if s.unit_seconds { "s" } else { "ms" };
        let mut resource_metrics = Vec::with_capacity(by_resource.len());
        for (id, (calls, _, events)) in by_resource {
            let attrs = state
                .resources
                .values()
                .find(|e| e.id == id)
                .map(|e| e.attrs.clone())
                .unwrap_or_default();
            let mut metrics = Vec::with_capacity(3);
            if !calls.is_empty() {
                metrics.push(Metric {
                    name: s.calls_name.clone(),
                    unit: String::new(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: calls,
                        aggregation_temporality: temporality,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                });
            }
            if let Some(points) = hist_points.remove(&id) {
                metrics.push(Metric {
                    name: s.duration_name.clone(),
                    unit: unit.into(),
                    data: Some(metric::Data::Histogram(Histogram {
                        data_points: points,
                        aggregation_temporality: temporality,
                    })),
                    ..Default::default()
                });
            }
            if let Some(points) = expo_points.remove(&id) {
                metrics.push(Metric {
                    name: s.duration_name.clone(),
                    unit: unit.into(),
                    data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                        data_points: points,
                        aggregation_temporality: temporality,
                    })),
                    ..Default::default()
                });
            }
            if !events.is_empty() {
                metrics.push(Metric {
                    name: s.events_name.clone(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: events,
                        aggregation_temporality: temporality,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                });
            }
            resource_metrics.push(ResourceMetrics {
                resource: Some(Resource {
                    attributes: attrs,
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "spanmetricsconnector".into(),
                        ..Default::default()
                    }),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            });
        }
        self.series_gauge
            .set((state.series.len() + state.events.len()) as i64);
        Some(ExportMetricsServiceRequest { resource_metrics })
    }

    async fn flush(&self) {
        let Some(request) = self.collect() else {
            return;
        };
        let batch = Batch::<Metrics>::new(request);
        let n = batch.item_count();
        match self.next.consume(batch).await {
            Ok(()) => self.telemetry.add_sent(n),
            Err(e) => {
                // Cumulative series are emitted whole again next interval; a delta
                // interval refused is lost, and counted.
                self.telemetry.add_send_failed(n);
                if self.settings.delta {
                    self.telemetry
                        .add_dropped(DropReason::REFUSED_NOT_RETRIED, e.items());
                }
            }
        }
    }
}

impl Consumer<Traces> for SpanMetricsConsumer {
    async fn consume(&self, batch: Batch<Traces>) -> Result<(), ConsumeError<Traces>> {
        self.inner.record(&batch);
        Ok(())
    }
}

impl SpanMetricsConsumer {
    /// Emit what is held now, outside the flush interval (tests, a final flush).
    pub async fn flush(&self) {
        self.inner.flush().await;
    }
}

/// The `spanmetrics` connector (traces to metrics). See the [module docs](self).
///
/// ```
/// use otel_processors::connectors::{SpanMetrics, SpanMetricsConfig};
/// let config: SpanMetricsConfig = otel_processors::from_yaml("spanmetrics", r#"
/// namespace: traces.spanmetrics
/// histogram:
///   explicit:
///     buckets: [5ms, 50ms, 500ms, 5s]
/// dimensions:
///   - name: http.route
///   - name: deployment.environment
///     default: unknown
/// aggregation_cardinality_limit: 2000
/// "#)?;
/// let connector = SpanMetrics::new(config)?;
/// # let _ = connector;
/// # Ok::<(), otel_processors::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct SpanMetrics {
    id: ComponentId,
    settings: Settings,
}

impl SpanMetrics {
    /// The connector for `config`; errors name the setting.
    #[allow(clippy::needless_pass_by_value)]
    pub fn new(config: SpanMetricsConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            id: ComponentId::new("spanmetrics"),
            settings: config.settings()?,
        })
    }

    /// Under another id (`spanmetrics/red`).
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }
}

impl Connector<Traces, Metrics> for SpanMetrics {
    type Consumer = SpanMetricsConsumer;

    fn id(&self) -> ComponentId {
        self.id.clone()
    }

    fn build(
        self,
        next: Downstream<Metrics>,
        ctx: &mut ComponentContext<'_>,
    ) -> Result<SpanMetricsConsumer, BuildError> {
        let telemetry = ctx.telemetry();
        let inner = Arc::new(Inner {
            series_gauge: telemetry.gauge(&SERIES, &[]),
            overflow: telemetry.counter(&OVERFLOW, &[]),
            expired: telemetry.counter(&EXPIRED, &[]),
            settings: self.settings,
            state: Mutex::new(State::default()),
            next,
            telemetry,
        });
        let flusher = Arc::clone(&inner);
        ctx.register_lifecycle(Arc::new(super::Periodic::new(
            inner.settings.flush_interval,
            Arc::new(move || {
                let inner = Arc::clone(&flusher);
                Box::pin(async move { inner.flush().await })
            }),
            None,
        )));
        Ok(SpanMetricsConsumer { inner })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_histogram_stays_within_its_size_and_counts_everything() {
        let mut e = Expo::new();
        for v in [0.001, 0.5, 1.0, 3.0, 1000.0, 1e6, 0.0] {
            e.record(v, 8);
        }
        assert!(e.counts.len() <= 8, "{e:?}");
        assert_eq!(e.counts.iter().sum::<u64>() + e.zero, 7);
        // Every value falls in the bucket that holds it at the final scale.
        let base = 2f64.powf(2f64.powi(-e.scale));
        for v in [0.001, 0.5, 1.0, 3.0, 1000.0, 1e6] {
            let i = Expo::index(v, e.scale);
            assert!(i >= e.offset && i < e.offset + e.counts.len() as i64);
            assert!(
                base.powi(i as i32) < v * (1.0 + 1e-9)
                    && v <= base.powi(i as i32 + 1) * (1.0 + 1e-9)
            );
        }
    }

    fn inner(config: &str) -> Inner {
        use otel_pipeline_core::{ComponentKind, telemetry::ComponentTelemetry as T};
        let c: SpanMetricsConfig = crate::from_yaml("spanmetrics", config).expect("config");
        let telemetry = T::detached(
            ComponentKind::Exporter,
            ComponentId::new("spanmetrics"),
            "spans",
        );
        Inner {
            series_gauge: telemetry.gauge(&SERIES, &[]),
            overflow: telemetry.counter(&OVERFLOW, &[]),
            expired: telemetry.counter(&EXPIRED, &[]),
            settings: c.settings().expect("valid"),
            state: Mutex::new(State::default()),
            next: Downstream::new(Vec::<(String, otel_pipeline_core::BoxConsumer<Metrics>)>::new()),
            telemetry,
        }
    }

    /// The emitted metrics without timestamps, in a stable order.
    fn normalized(mut r: ExportMetricsServiceRequest) -> Vec<String> {
        let mut out = Vec::new();
        for rm in &mut r.resource_metrics {
            for m in rm
                .scope_metrics
                .iter_mut()
                .flat_map(|s| s.metrics.iter_mut())
            {
                let points: Vec<String> = match &mut m.data {
                    Some(metric::Data::Sum(s)) => s
                        .data_points
                        .iter_mut()
                        .map(|p| {
                            (p.start_time_unix_nano, p.time_unix_nano) = (0, 0);
                            format!("{p:?}")
                        })
                        .collect(),
                    Some(metric::Data::Histogram(h)) => h
                        .data_points
                        .iter_mut()
                        .map(|p| {
                            (p.start_time_unix_nano, p.time_unix_nano) = (0, 0);
                            format!("{p:?}")
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                for p in points {
                    out.push(format!("{:?} {} {p}", rm.resource, m.name));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn the_byte_path_counts_exactly_as_the_decoded_path() {
        use otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceRequest;
        use otel_pipeline_core::testing::{SplitMix64, generate_traces};
        use prost::Message;
        let config = "dimensions:\n  - name: http.route\n  - name: tier\n    default: none\n  - name: code\n  - name: host.name\nexemplars: {enabled: true}\n";
        for seed in 0..20u64 {
            let mut req: ExportTraceServiceRequest = generate_traces(20, 5, seed);
            let mut rng = SplitMix64::new(seed);
            for span in req
                .resource_spans
                .iter_mut()
                .flat_map(|r| &mut r.scope_spans)
                .flat_map(|s| &mut s.spans)
            {
                span.name = format!("op-{}", rng.below(4));
                span.kind = rng.below(6) as i32;
                span.status = Some(otel_pipeline_core::proto::trace::v1::Status {
                    code: rng.below(3) as i32,
                    ..Default::default()
                });
                span.attributes.clear();
                if rng.below(2) == 0 {
                    span.attributes.push(kv(
                        "http.route",
                        string_value(&format!("/r{}", rng.below(3))),
                    ));
                }
                if rng.below(2) == 0 {
                    span.attributes.push(kv(
                        "code",
                        AnyValue {
                            value: Some(any_value::Value::IntValue(rng.below(3) as i64)),
                        },
                    ));
                }
                // A repeated key: the first one counts, both ways.
                if rng.below(4) == 0 {
                    span.attributes
                        .push(kv("http.route", string_value("/second")));
                }
            }
            let bytes = req.encode_to_vec();
            let (decoded, encoded) = (inner(config), inner(config));
            decoded.record(&Batch::new(req));
            let batch = Batch::<Traces>::from_encoded(bytes.into()).expect("valid");
            assert!(batch.encoded().is_some());
            encoded.record(&batch);
            let (a, b) = (
                decoded.collect().expect("some"),
                encoded.collect().expect("some"),
            );
            assert_eq!(normalized(a), normalized(b), "seed {seed}");
        }
    }

    /// The in-order fast path reads what the general walk reads, and leaves to it every
    /// span it cannot read: fields shuffled, repeated, of other wire types, or cut.
    #[test]
    fn the_in_order_span_reader_agrees_with_the_general_walk() {
        use crate::tail_sampling::wire::AnyRef;
        use otel_pipeline_core::proto::trace::v1::{Status, span};
        use otel_pipeline_core::testing::SplitMix64;
        use otel_pipeline_core::wire::fields;
        use prost::Message;
        let keys = ["http.route", "code", "tier"];
        let mut rng = SplitMix64::new(29);
        let (mut in_order, mut general, mut found) = (0, 0, 0);
        for round in 0..3000u64 {
            let mut s = Span {
                trace_id: vec![round as u8; 16],
                span_id: vec![7; 8],
                parent_span_id: if rng.below(2) == 0 {
                    vec![]
                } else {
                    vec![3; 8]
                },
                trace_state: if rng.below(3) == 0 {
                    "a=b".into()
                } else {
                    String::new()
                },
                name: format!("op-{}", rng.below(4)),
                kind: rng.below(6) as i32,
                start_time_unix_nano: rng.below(1 << 40),
                end_time_unix_nano: rng.below(1 << 41),
                dropped_attributes_count: rng.below(2) as u32,
                flags: rng.below(2) as u32 * 0x301,
                status: (rng.below(3) > 0).then(|| Status {
                    code: rng.below(3) as i32,
                    message: "m".into(),
                }),
                ..Default::default()
            };
            for _ in 0..rng.below(6) {
                let key = ["http.route", "code", "other", "tier"][rng.below(4) as usize];
                s.attributes
                    .push(kv(key, string_value(&format!("v{}", rng.below(3)))));
            }
            for _ in 0..rng.below(3) {
                s.events.push(span::Event {
                    name: "e".into(),
                    ..Default::default()
                });
                s.links.push(span::Link {
                    span_id: vec![1; 8],
                    ..Default::default()
                });
            }
            let mut bytes = s.encode_to_vec();
            // Most rounds are spans as SDKs write them; the others have their fields
            // reordered, one repeated, or the message cut.
            match rng.below(6) {
                0..=2 => {}
                3 => {
                    let mut raw: Vec<Vec<u8>> = Vec::new();
                    let mut f = fields(&bytes);
                    while let Some((_, _, r)) = f.next_raw() {
                        raw.push(r.to_vec());
                    }
                    let (i, j) = (rng.below(raw.len() as u64), rng.below(raw.len() as u64));
                    raw.swap(i as usize, j as usize);
                    bytes = raw.concat();
                }
                4 => {
                    // The name, a status or an attribute again, at the end.
                    let extra = match rng.below(3) {
                        0 => Span {
                            name: "again".into(),
                            ..Default::default()
                        },
                        1 => Span {
                            status: Some(Status {
                                code: 2,
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        _ => Span {
                            attributes: vec![kv("tier", string_value("late"))],
                            ..Default::default()
                        },
                    };
                    bytes.extend(extra.encode_to_vec());
                }
                _ => bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize),
            }
            let mut fast = vec![None; keys.len()];
            let mut slow: Vec<Option<AnyRef<'_>>> = vec![None; keys.len()];
            let a = SpanView::read(&bytes, &keys, &mut fast);
            let b = SpanView::read_any_order(&bytes, &keys, u128::MAX, &mut slow);
            assert_eq!((a, &fast), (b, &slow), "round {round}: {bytes:?}");
            // And both read what prost decodes, where it decodes.
            if let Ok(d) = Span::decode(&bytes[..]) {
                assert_eq!(a, SpanView::of(&d), "round {round}");
                for (i, k) in keys.iter().enumerate() {
                    let want = first(&d.attributes, k).map(|v| match &v.value {
                        Some(any_value::Value::StringValue(s)) => AnyRef::Str(s),
                        _ => AnyRef::Other,
                    });
                    assert_eq!(fast[i], want, "round {round}, key {k}");
                    found += usize::from(want.is_some());
                }
            }
            let mut probe = vec![None; keys.len()];
            if SpanView::read_in_order(&bytes, &keys, u128::MAX, &mut probe).is_some() {
                in_order += 1;
            } else {
                general += 1;
            }
        }
        // Both paths were taken, the fast one for every span as written.
        assert!(in_order >= 1400 && general >= 300, "{in_order} {general}");
        assert!(found > 1000, "{found} dimensions found");
    }

    #[test]
    fn bad_settings_name_the_key() {
        let c = SpanMetricsConfig {
            exclude_dimensions: vec!["span.nam".into()],
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().path, "exclude_dimensions[0]");
        let c = SpanMetricsConfig {
            aggregation_temporality: Some("DELTA".into()),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().path, "aggregation_temporality");
    }
}

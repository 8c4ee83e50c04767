//! The `prometheus` exporter: serves the metrics that reach it at `GET /metrics`, in the
//! Prometheus text format, named and labelled as the Collector's exporter does.
//!
//! - **Names**: the metric name's words (split on anything but letters and digits) joined
//!   by `_`, then the unit as a word (`ms` -> `milliseconds`, `s` -> `seconds`, `By` ->
//!   `bytes`, `1/s` -> `per_second`, `{requests}` annotations dropped), then `total` for a
//!   monotonic sum and `ratio` for a gauge of unit `1`, unless already there;
//!   `namespace` goes in front. `add_metric_suffixes: false` leaves out unit and type
//!   words. So `traces.span.metrics.duration` in `ms` is
//!   `traces_span_metrics_duration_milliseconds` (`_bucket`, `_sum`, `_count`) and
//!   `traces.span.metrics.calls` is `traces_span_metrics_calls_total`.
//! - **Labels**: data point attributes, with characters outside `[a-zA-Z0-9_]` as `_` and
//!   a `key_` prefix before a leading digit; `otel_scope_name` and `otel_scope_version`;
//!   `job` (`service.namespace/service.name`) and `instance` (`service.instance.id`) from
//!   the resource; `const_labels`; and every resource attribute with
//!   `resource_to_telemetry_conversion.enabled`.
//! - **`target_info`**: one series per resource, with its other attributes as labels.
//! - **Temporality**: cumulative points replace what is held; delta sums and histograms
//!   are added up, so Prometheus sees counters. Non-monotonic delta sums cannot be
//!   counters and are dropped, counted.
//! - **Exponential histograms** become classic ones: one `le` bucket per exponential
//!   bucket (its upper bound), so they keep every count.
//! - **Expiry**: a series not updated for `metric_expiration` (default 5 m) goes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use otel_pipeline_core::config::ConfigError;
use otel_pipeline_core::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use otel_pipeline_core::proto::common::v1::{AnyValue, KeyValue, any_value};
use otel_pipeline_core::proto::metrics::v1::{
    AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint, metric::Data,
    number_data_point,
};
use otel_pipeline_core::serve::{AdminServer, Served};
use otel_pipeline_core::{
    Batch, BoxError, BoxFuture, BuildError, ComponentContext, ComponentId, ComponentTelemetry,
    ConsumeError, Consumer, DropReason, Exporter, Lifecycle, Metrics,
};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::time::Instant;

/// Dropped: a non-monotonic delta sum has no Prometheus form.
const NO_PROMETHEUS_FORM: DropReason = DropReason::new("no_prometheus_form");

/// `resource_to_telemetry_conversion`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceToTelemetry {
    /// Every resource attribute becomes a label of every series.
    #[serde(default)]
    pub enabled: bool,
}

/// The `prometheus` exporter's configuration, in the Collector's shape.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// Where to serve `/metrics`: `host:port` or `:port`.
    pub endpoint: String,
    /// Put in front of every metric name (`namespace_name`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Labels added to every series.
    #[serde(default)]
    pub const_labels: BTreeMap<String, String>,
    /// Write each point's timestamp.
    #[serde(default)]
    pub send_timestamps: bool,
    /// Forget series not updated for this long (default 5 m).
    #[serde(default, deserialize_with = "otel_pipeline_core::config::opt_duration")]
    pub metric_expiration: Option<Duration>,
    /// Accepted: the text format is served (OpenMetrics negotiation is not offered).
    #[serde(default)]
    pub enable_open_metrics: bool,
    /// Unit and type words in names (default true).
    #[serde(default)]
    pub add_metric_suffixes: Option<bool>,
    /// Resource attributes as labels.
    #[serde(default)]
    pub resource_to_telemetry_conversion: ResourceToTelemetry,
}

impl PrometheusConfig {
    /// Check the settings (the endpoint is resolved only when it starts).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (host, port) = self.endpoint.rsplit_once(':').ok_or_else(|| {
            ConfigError::new("endpoint", format!("`{}` is not host:port", self.endpoint))
        })?;
        let _ = host;
        port.parse::<u16>()
            .map_err(|_| ConfigError::new("endpoint", format!("`{port}` is not a port number")))?;
        if let Some(d) = self.metric_expiration
            && d.is_zero()
        {
            return Err(ConfigError::new("metric_expiration", "must be positive"));
        }
        Ok(())
    }
}

/// The `prometheus` exporter (metrics). See the [module docs](self).
///
/// ```
/// use otel_exporters::prometheus::{PrometheusConfig, PrometheusExporter};
/// let exporter = PrometheusExporter::new(PrometheusConfig {
///     endpoint: "127.0.0.1:0".into(),
///     ..Default::default()
/// })?;
/// # let _ = exporter;
/// # Ok::<(), otel_pipeline_core::config::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct PrometheusExporter {
    id: ComponentId,
    config: PrometheusConfig,
}

impl PrometheusExporter {
    /// The exporter for `config`; errors name the setting.
    pub fn new(config: PrometheusConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            id: ComponentId::new("prometheus"),
            config,
        })
    }

    /// Under another id.
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::Summary => "summary",
        }
    }
}

#[derive(Debug, Clone)]
enum Value {
    Number(f64),
    /// `(upper bound, count in the bucket)`, then sum and count.
    Buckets(Vec<(f64, u64)>, f64, u64),
    /// `(quantile, value)`, then sum and count.
    Quantiles(Vec<(f64, f64)>, f64, u64),
}

#[derive(Debug, Clone)]
struct Point {
    value: Value,
    timestamp_ms: i64,
    updated: StdInstant,
}

#[derive(Debug, Default)]
struct Family {
    kind: Option<Kind>,
    help: String,
    series: BTreeMap<String, Point>,
}

#[derive(Debug, Default)]
struct Store {
    families: BTreeMap<String, Family>,
}

/// The metrics served, shared by the consumer and the endpoint.
#[derive(Debug)]
struct Shared {
    config: PrometheusConfig,
    store: Mutex<Store>,
    telemetry: Arc<ComponentTelemetry>,
    addr: Mutex<Option<SocketAddr>>,
}

fn unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

fn per_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The unit without `{annotations}`, as words (`ms` -> `milliseconds`, `1/s` ->
/// `per_second`); an unknown unit is used as its own words.
fn unit_words(unit: &str) -> (Vec<String>, Vec<String>) {
    let mut cleaned = String::new();
    let mut depth = 0;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = (depth - 1i32).max(0),
            c if depth == 0 => cleaned.push(c),
            _ => {}
        }
    }
    let (main, per) = match cleaned.split_once('/') {
        Some((m, p)) => (m.trim().to_string(), p.trim().to_string()),
        None => (cleaned.trim().to_string(), String::new()),
    };
    let main_words = match main.as_str() {
        "" | "1" => Vec::new(),
        m => unit_word(m).map_or_else(|| words(m), |w| vec![w.to_string()]),
    };
    let per_words = match per.as_str() {
        "" => Vec::new(),
        p => {
            let w = per_word(p).map_or_else(|| words(p), |w| vec![w.to_string()]);
            if w.is_empty() {
                w
            } else {
                std::iter::once("per".to_string()).chain(w).collect()
            }
        }
    };
    (main_words, per_words)
}

/// The Prometheus name of a metric.
fn metric_name(name: &str, unit: &str, kind: Kind, suffixes: bool, namespace: &str) -> String {
    let mut w = words(name);
    if suffixes {
        let (main, per) = unit_words(unit);
        for u in main.into_iter().chain(per) {
            if !w.contains(&u) {
                w.push(u);
            }
        }
        if kind == Kind::Counter {
            w.retain(|x| x != "total");
            w.push("total".into());
        }
        if kind == Kind::Gauge && unit == "1" && !w.iter().any(|x| x == "ratio") {
            w.push("ratio".into());
        }
    }
    let mut out = String::new();
    if !namespace.is_empty() {
        out.push_str(&words(namespace).join("_"));
        out.push('_');
    }
    out.push_str(&w.join("_"));
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A label name as Prometheus accepts it.
fn label_name(key: &str) -> String {
    let mut out: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    } else if out.starts_with('_') && !out.starts_with("__") {
        out.insert_str(0, "key");
    }
    out
}

fn value_text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn escape(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Labels as `{a="x",b="y"}` text, sorted; values of keys that sanitize alike are
/// joined with `;`.
fn label_text(labels: &[(String, String)]) -> String {
    let mut merged: BTreeMap<&str, String> = BTreeMap::new();
    for (k, v) in labels {
        merged
            .entry(k.as_str())
            .and_modify(|e| {
                e.push(';');
                e.push_str(v);
            })
            .or_insert_with(|| v.clone());
    }
    let mut out = String::new();
    for (i, (k, v)) in merged.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape(v, &mut out);
        out.push('"');
    }
    out
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .rev()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

fn float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v}")
    }
}

fn explicit_buckets(p: &HistogramDataPoint) -> Vec<(f64, u64)> {
    let mut out: Vec<(f64, u64)> = p
        .explicit_bounds
        .iter()
        .zip(p.bucket_counts.iter())
        .map(|(b, c)| (*b, *c))
        .collect();
    let rest: u64 = p.bucket_counts.iter().skip(p.explicit_bounds.len()).sum();
    out.push((f64::INFINITY, rest));
    out
}

/// An exponential histogram as classic buckets: zero and negative counts under `le=0`,
/// then one bucket per positive bucket, at its upper bound.
fn exponential_buckets(p: &ExponentialHistogramDataPoint) -> Vec<(f64, u64)> {
    let base = 2f64.powf(2f64.powi(-p.scale));
    let negative: u64 = p
        .negative
        .as_ref()
        .map_or(0, |n| n.bucket_counts.iter().sum());
    let mut out = vec![(0.0, p.zero_count + negative)];
    if let Some(pos) = &p.positive {
        for (i, c) in pos.bucket_counts.iter().enumerate() {
            let upper = base.powf(f64::from(pos.offset) + i as f64 + 1.0);
            out.push((upper, *c));
        }
    }
    out.push((f64::INFINITY, 0));
    out
}

impl Shared {
    fn record(&self, request: &ExportMetricsServiceRequest) -> usize {
        let c = &self.config;
        let suffixes = c.add_metric_suffixes.unwrap_or(true);
        let namespace = c.namespace.as_deref().unwrap_or("");
        let now = StdInstant::now();
        let mut dropped = 0;
        let mut store = self.store.lock();
        for rm in &request.resource_metrics {
            let res: &[KeyValue] = rm.resource.as_ref().map_or(&[], |r| &r.attributes);
            let mut base: Vec<(String, String)> = Vec::new();
            let service = attr(res, "service.name").map(value_text);
            let job = match (attr(res, "service.namespace").map(value_text), &service) {
                (Some(ns), Some(s)) => Some(format!("{ns}/{s}")),
                (None, Some(s)) => Some(s.clone()),
                _ => None,
            };
            if let Some(job) = &job {
                base.push(("job".into(), job.clone()));
            }
            let instance = attr(res, "service.instance.id").map(value_text);
            if let Some(i) = &instance {
                base.push(("instance".into(), i.clone()));
            }
            for (k, v) in &c.const_labels {
                base.push((label_name(k), v.clone()));
            }
            let others: Vec<(String, String)> = res
                .iter()
                .filter(|kv| {
                    !matches!(
                        kv.key.as_str(),
                        "service.name" | "service.namespace" | "service.instance.id"
                    )
                })
                .filter_map(|kv| {
                    kv.value
                        .as_ref()
                        .map(|v| (label_name(&kv.key), value_text(v)))
                })
                .collect();
            if c.resource_to_telemetry_conversion.enabled {
                base.extend(others.iter().cloned());
            }
            if !others.is_empty() {
                let mut labels: Vec<(String, String)> = others.clone();
                if let Some(job) = &job {
                    labels.push(("job".into(), job.clone()));
                }
                if let Some(i) = &instance {
                    labels.push(("instance".into(), i.clone()));
                }
                let family = store
                    .families
                    .entry(metric_name(
                        "target_info",
                        "",
                        Kind::Gauge,
                        false,
                        namespace,
                    ))
                    .or_default();
                family.kind.get_or_insert(Kind::Gauge);
                if family.help.is_empty() {
                    family.help = "Target metadata".into();
                }
                family.series.insert(
                    label_text(&labels),
                    Point {
                        value: Value::Number(1.0),
                        timestamp_ms: 0,
                        updated: now,
                    },
                );
            }
            for sm in &rm.scope_metrics {
                let mut scoped = base.clone();
                if let Some(scope) = &sm.scope {
                    if !scope.name.is_empty() {
                        scoped.push(("otel_scope_name".into(), scope.name.clone()));
                    }
                    if !scope.version.is_empty() {
                        scoped.push(("otel_scope_version".into(), scope.version.clone()));
                    }
                }
                for m in &sm.metrics {
                    let Some(data) = &m.data else { continue };
                    let (kind, delta) = match data {
                        Data::Gauge(_) => (Kind::Gauge, false),
                        Data::Sum(s) => {
                            let delta =
                                s.aggregation_temporality == AggregationTemporality::Delta as i32;
                            if s.is_monotonic {
                                (Kind::Counter, delta)
                            } else if delta {
                                dropped += s.data_points.len();
                                continue;
                            } else {
                                (Kind::Gauge, false)
                            }
                        }
                        Data::Histogram(h) => (
                            Kind::Histogram,
                            h.aggregation_temporality == AggregationTemporality::Delta as i32,
                        ),
                        Data::ExponentialHistogram(h) => (
                            Kind::Histogram,
                            h.aggregation_temporality == AggregationTemporality::Delta as i32,
                        ),
                        Data::Summary(_) => (Kind::Summary, false),
                    };
                    let name = metric_name(&m.name, &m.unit, kind, suffixes, namespace);
                    let family = store.families.entry(name).or_default();
                    if *family.kind.get_or_insert(kind) != kind {
                        // One name, two types: the first one seen keeps the name.
                        dropped += 1;
                        continue;
                    }
                    if family.help.is_empty() {
                        family.help = m.description.clone();
                    }
                    let mut put = |attrs: &[KeyValue], time: u64, value: Value| {
                        let mut labels = scoped.clone();
                        labels.extend(attrs.iter().filter_map(|kv| {
                            kv.value
                                .as_ref()
                                .map(|v| (label_name(&kv.key), value_text(v)))
                        }));
                        let key = label_text(&labels);
                        let timestamp_ms = (time / 1_000_000) as i64;
                        match family.series.get_mut(&key) {
                            Some(p) if delta => {
                                p.value = add(&p.value, value);
                                p.timestamp_ms = timestamp_ms;
                                p.updated = now;
                            }
                            _ => {
                                family.series.insert(
                                    key,
                                    Point {
                                        value,
                                        timestamp_ms,
                                        updated: now,
                                    },
                                );
                            }
                        }
                    };
                    match data {
                        Data::Gauge(g) => {
                            for p in &g.data_points {
                                put(
                                    &p.attributes,
                                    p.time_unix_nano,
                                    Value::Number(number(p.value)),
                                );
                            }
                        }
                        Data::Sum(s) => {
                            for p in &s.data_points {
                                put(
                                    &p.attributes,
                                    p.time_unix_nano,
                                    Value::Number(number(p.value)),
                                );
                            }
                        }
                        Data::Histogram(h) => {
                            for p in &h.data_points {
                                put(
                                    &p.attributes,
                                    p.time_unix_nano,
                                    Value::Buckets(
                                        explicit_buckets(p),
                                        p.sum.unwrap_or(0.0),
                                        p.count,
                                    ),
                                );
                            }
                        }
                        Data::ExponentialHistogram(h) => {
                            for p in &h.data_points {
                                put(
                                    &p.attributes,
                                    p.time_unix_nano,
                                    Value::Buckets(
                                        exponential_buckets(p),
                                        p.sum.unwrap_or(0.0),
                                        p.count,
                                    ),
                                );
                            }
                        }
                        Data::Summary(s) => {
                            for p in &s.data_points {
                                put(
                                    &p.attributes,
                                    p.time_unix_nano,
                                    Value::Quantiles(
                                        p.quantile_values
                                            .iter()
                                            .map(|q| (q.quantile, q.value))
                                            .collect(),
                                        p.sum,
                                        p.count,
                                    ),
                                );
                            }
                        }
                    }
                }
            }
        }
        dropped
    }

    fn render(&self) -> String {
        let expiration = self
            .config
            .metric_expiration
            .unwrap_or(Duration::from_secs(300));
        let now = StdInstant::now();
        let mut store = self.store.lock();
        let mut out = String::with_capacity(4096);
        for family in store.families.values_mut() {
            family
                .series
                .retain(|_, p| now.duration_since(p.updated) < expiration);
        }
        store.families.retain(|_, f| !f.series.is_empty());
        let ts = |p: &Point| {
            if self.config.send_timestamps && p.timestamp_ms > 0 {
                format!(" {}", p.timestamp_ms)
            } else {
                String::new()
            }
        };
        for (name, family) in &store.families {
            let kind = family.kind.unwrap_or(Kind::Gauge);
            if !family.help.is_empty() {
                let help = family.help.replace('\\', "\\\\").replace('\n', "\\n");
                let _ = writeln!(out, "# HELP {name} {help}");
            }
            let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
            for (labels, p) in &family.series {
                let with = |extra: &str| -> String {
                    match (labels.is_empty(), extra.is_empty()) {
                        (true, true) => String::new(),
                        (true, false) => format!("{{{extra}}}"),
                        (false, true) => format!("{{{labels}}}"),
                        (false, false) => format!("{{{labels},{extra}}}"),
                    }
                };
                match &p.value {
                    Value::Number(v) => {
                        let _ = writeln!(out, "{name}{} {}{}", with(""), float(*v), ts(p));
                    }
                    Value::Buckets(buckets, sum, count) => {
                        let mut cumulative = 0u64;
                        for (le, c) in buckets {
                            cumulative += c;
                            if le.is_infinite() {
                                continue;
                            }
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {cumulative}{}",
                                with(&format!("le=\"{}\"", float(*le))),
                                ts(p)
                            );
                        }
                        let _ =
                            writeln!(out, "{name}_bucket{} {count}{}", with("le=\"+Inf\""), ts(p));
                        let _ = writeln!(out, "{name}_sum{} {}{}", with(""), float(*sum), ts(p));
                        let _ = writeln!(out, "{name}_count{} {count}{}", with(""), ts(p));
                    }
                    Value::Quantiles(qs, sum, count) => {
                        for (q, v) in qs {
                            let _ = writeln!(
                                out,
                                "{name}{} {}{}",
                                with(&format!("quantile=\"{}\"", float(*q))),
                                float(*v),
                                ts(p)
                            );
                        }
                        let _ = writeln!(out, "{name}_sum{} {}{}", with(""), float(*sum), ts(p));
                        let _ = writeln!(out, "{name}_count{} {count}{}", with(""), ts(p));
                    }
                }
            }
        }
        out
    }
}

fn number(v: Option<number_data_point::Value>) -> f64 {
    match v {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => 0.0,
    }
}

/// A delta point added to what is held.
fn add(held: &Value, delta: Value) -> Value {
    match (held, delta) {
        (Value::Number(a), Value::Number(b)) => Value::Number(a + b),
        (Value::Buckets(a, sa, ca), Value::Buckets(b, sb, cb))
            if a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.0 == y.0) =>
        {
            Value::Buckets(
                a.iter().zip(&b).map(|(x, y)| (x.0, x.1 + y.1)).collect(),
                sa + sb,
                ca + cb,
            )
        }
        // Buckets that changed: the new interval starts the series again.
        (_, d) => d,
    }
}

/// The consumer a [`PrometheusExporter`] builds: it keeps what reaches it for the next
/// scrape.
#[derive(Debug, Clone)]
pub struct PrometheusConsumer {
    shared: Arc<Shared>,
}

impl PrometheusConsumer {
    /// The text a scrape of `/metrics` gets now.
    pub fn render(&self) -> String {
        self.shared.render()
    }

    /// Where it serves, once its pipeline has started.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        *self.shared.addr.lock()
    }
}

impl Consumer<Metrics> for PrometheusConsumer {
    async fn consume(&self, batch: Batch<Metrics>) -> Result<(), ConsumeError<Metrics>> {
        let n = batch.item_count();
        let dropped = self.shared.record(batch.data());
        self.shared
            .telemetry
            .add_dropped(NO_PROMETHEUS_FORM, dropped);
        self.shared.telemetry.add_sent(n.saturating_sub(dropped));
        Ok(())
    }
}

struct Endpoint {
    shared: Arc<Shared>,
    served: Served,
}

impl Lifecycle for Endpoint {
    fn start(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let endpoint = self.shared.config.endpoint.trim().to_string();
            let full = if endpoint.starts_with(':') {
                format!("0.0.0.0{endpoint}")
            } else {
                endpoint.clone()
            };
            let addr: SocketAddr = full
                .to_socket_addrs()
                .map_err(|e| format!("prometheus endpoint `{endpoint}`: {e}"))?
                .next()
                .ok_or_else(|| {
                    format!("prometheus endpoint `{endpoint}` resolves to no address")
                })?;
            let shared = Arc::clone(&self.shared);
            let server = AdminServer::start(addr, move |path| {
                if path == "/metrics" {
                    (
                        200,
                        "text/plain; version=0.0.4; charset=utf-8",
                        shared.render(),
                    )
                } else {
                    (404, "text/plain", "not found\n".to_string())
                }
            })
            .await?;
            tracing::info!(address = %server.addr(), "prometheus exporter serving /metrics");
            *self.shared.addr.lock() = Some(server.addr());
            self.served.set(server);
            Ok(())
        })
    }

    fn shutdown(&self, deadline: Instant) -> BoxFuture<'_, Result<(), BoxError>> {
        self.served.stop(deadline)
    }
}

impl Exporter<Metrics> for PrometheusExporter {
    type Consumer = PrometheusConsumer;

    fn id(&self) -> ComponentId {
        self.id.clone()
    }

    fn build(self, ctx: &mut ComponentContext<'_>) -> Result<PrometheusConsumer, BuildError> {
        self.config
            .validate()
            .map_err(|e| ctx.invalid(e.path, e.message))?;
        let shared = Arc::new(Shared {
            config: self.config,
            store: Mutex::new(Store::default()),
            telemetry: ctx.telemetry(),
            addr: Mutex::new(None),
        });
        ctx.register_lifecycle(Arc::new(Endpoint {
            shared: Arc::clone(&shared),
            served: Served::default(),
        }));
        Ok(PrometheusConsumer { shared })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_collectors_rules() {
        let n = |name, unit, kind| metric_name(name, unit, kind, true, "");
        assert_eq!(
            n("traces.span.metrics.calls", "", Kind::Counter),
            "traces_span_metrics_calls_total"
        );
        assert_eq!(
            n("traces.span.metrics.duration", "ms", Kind::Histogram),
            "traces_span_metrics_duration_milliseconds"
        );
        assert_eq!(
            n("traces_service_graph_request_total", "", Kind::Counter),
            "traces_service_graph_request_total"
        );
        assert_eq!(
            n("traces_service_graph_request_server", "s", Kind::Histogram),
            "traces_service_graph_request_server_seconds"
        );
        assert_eq!(
            n("http.server.request.size", "By", Kind::Histogram),
            "http_server_request_size_bytes"
        );
        assert_eq!(
            n("requests", "{request}/s", Kind::Gauge),
            "requests_per_second"
        );
        assert_eq!(
            n("cpu.utilization", "1", Kind::Gauge),
            "cpu_utilization_ratio"
        );
        assert_eq!(n("2xx", "", Kind::Gauge), "_2xx");
        assert_eq!(
            metric_name("calls", "", Kind::Counter, false, "app"),
            "app_calls"
        );
        assert_eq!(label_name("http.route"), "http_route");
        assert_eq!(label_name("1st"), "key_1st");
        assert_eq!(label_name("_x"), "key_x");
    }
}

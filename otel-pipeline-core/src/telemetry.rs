//! Self-telemetry: what every component accepted, refused, dropped, sent and failed to send.
//!
//! Components count into plain atomics on the hot path (no lock, no allocation). The
//! counts reach the outside world two ways:
//! - [`Telemetry::register_with_meter`] creates observable instruments through the
//!   `opentelemetry` metrics API, so they reach whatever exporter the process uses;
//! - [`Telemetry::snapshot`] and [`Telemetry::render_prometheus`] read them directly, for
//!   tests and for a `/metrics` endpoint.
//!
//! Metric names follow the OpenTelemetry Collector's, so existing dashboards and alerts
//! work: `otelcol_receiver_accepted_spans`, `otelcol_exporter_send_failed_spans`, ...
//! Every data point carries the component id (`receiver="otlp"`) and, for drops, a
//! `reason`.

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;
use parking_lot::{Mutex, RwLock};

use crate::component::{ComponentId, ComponentKind};

/// The registry of every component's counters. Cheap to clone; share one per process.
#[derive(Clone, Default)]
pub struct Telemetry {
    inner: Arc<RwLock<Vec<Arc<ComponentTelemetry>>>>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("components", &self.inner.read().len())
            .finish()
    }
}

/// The counters of one component in one pipeline.
#[derive(Debug)]
pub struct ComponentTelemetry {
    kind: ComponentKind,
    id: ComponentId,
    pipeline: String,
    item: &'static str,
    accepted: AtomicU64,
    refused: AtomicU64,
    rejected: AtomicU64,
    outgoing: AtomicU64,
    sent: AtomicU64,
    send_failed: AtomicU64,
    enqueue_failed: AtomicU64,
    dropped: Mutex<Vec<(&'static str, u64)>>,
    failed_requests: Mutex<Vec<(&'static str, u64)>>,
    dropped_events: Mutex<Vec<(&'static str, u64)>>,
    redacted: AtomicU64,
    custom: Mutex<Vec<Custom>>,
    queue_size: AtomicI64,
    queue_capacity: AtomicI64,
}

/// A component-specific metric (`otelcol_<kind>_<suffix>`), such as the tail sampler's
/// buffered traces.
#[derive(Debug)]
struct Custom {
    suffix: &'static str,
    labels: Vec<(&'static str, String)>,
    value: Arc<AtomicI64>,
}

/// Component-specific metric names that [`Telemetry::register_with_meter`] publishes
/// (counters, then gauges), without the `otelcol_<kind>_` prefix.
pub const CUSTOM_COUNTERS: &[&str] = &[
    "tail_sampling_decisions",
    "tail_sampling_early_decisions",
    "tail_sampling_late_spans",
    "tail_sampling_decision_latency_ns_sum",
    "tail_sampling_decision_latency_count",
];
/// See [`CUSTOM_COUNTERS`].
pub const CUSTOM_GAUGES: &[&str] = &[
    "tail_sampling_traces_buffered",
    "tail_sampling_spans_buffered",
    "tail_sampling_bytes_buffered",
];

/// One counter value, as read by [`Telemetry::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricPoint {
    /// Collector-style metric name, e.g. `otelcol_receiver_accepted_spans`.
    pub name: String,
    /// `receiver`/`processor`/`exporter` = component id, `pipeline`, and `reason` for drops.
    pub attributes: Vec<(&'static str, String)>,
    /// The value.
    pub value: i64,
}

impl MetricPoint {
    /// The value of attribute `key`, if present.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl ComponentTelemetry {
    fn new(kind: ComponentKind, id: ComponentId, pipeline: String, item: &'static str) -> Self {
        Self {
            kind,
            id,
            pipeline,
            item,
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            outgoing: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            send_failed: AtomicU64::new(0),
            enqueue_failed: AtomicU64::new(0),
            dropped: Mutex::new(Vec::new()),
            failed_requests: Mutex::new(Vec::new()),
            dropped_events: Mutex::new(Vec::new()),
            redacted: AtomicU64::new(0),
            custom: Mutex::new(Vec::new()),
            queue_size: AtomicI64::new(0),
            queue_capacity: AtomicI64::new(0),
        }
    }

    /// A free-standing counter set, not registered anywhere; for unit tests of a component.
    pub fn detached(kind: ComponentKind, id: ComponentId, item: &'static str) -> Arc<Self> {
        Arc::new(Self::new(kind, id, String::new(), item))
    }

    /// The component's id.
    pub fn id(&self) -> &ComponentId {
        &self.id
    }

    /// Items taken in: by a receiver from its clients, by a processor from upstream.
    pub fn add_accepted(&self, n: usize) {
        self.accepted.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Items refused with back-pressure (the sender keeps them and may retry).
    pub fn add_refused(&self, n: usize) {
        self.refused.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Items rejected as permanently bad (malformed, invalid).
    pub fn add_rejected(&self, n: usize) {
        self.rejected.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Items a processor passed on downstream.
    pub fn add_outgoing(&self, n: usize) {
        self.outgoing.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Items an exporter delivered.
    pub fn add_sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Items an exporter gave up on.
    pub fn add_send_failed(&self, n: usize) {
        self.send_failed.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Items an exporter could not put in its queue.
    pub fn add_enqueue_failed(&self, n: usize) {
        self.enqueue_failed.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Items dropped on purpose or by necessity; `reason` is a short fixed label such as
    /// `"filtered"`, `"queue_full"`, `"shutdown_deadline"`.
    pub fn add_dropped(&self, reason: &'static str, n: usize) {
        if n > 0 {
            bump(&self.dropped, reason, n as u64);
        }
    }
    /// A request refused before its items could be counted (malformed, oversize, wrong
    /// content type); `reason` is a short fixed label such as `"malformed"`.
    pub fn add_failed_request(&self, reason: &'static str) {
        self.add_failed_requests(reason, 1);
    }

    /// `n` requests (or evaluations) failed for `reason`.
    pub fn add_failed_requests(&self, reason: &'static str, n: usize) {
        if n > 0 {
            bump(&self.failed_requests, reason, n as u64);
        }
    }

    /// Span events dropped for `reason` (events are not pipeline items, so they have their
    /// own counter, `otelcol_<kind>_dropped_span_events`).
    pub fn add_dropped_events(&self, reason: &'static str, n: usize) {
        if n > 0 {
            bump(&self.dropped_events, reason, n as u64);
        }
    }

    /// Register a component-specific metric named `otelcol_<kind>_<suffix>` with extra
    /// `labels`; returns the cell to update. Whether it is a counter or a gauge, and its
    /// publication through a meter, follow [`CUSTOM_COUNTERS`] / [`CUSTOM_GAUGES`].
    pub fn register_metric(
        &self,
        suffix: &'static str,
        labels: Vec<(&'static str, String)>,
    ) -> Arc<AtomicI64> {
        let value = Arc::new(AtomicI64::new(0));
        self.custom.lock().push(Custom {
            suffix,
            labels,
            value: Arc::clone(&value),
        });
        value
    }

    /// Attribute values removed or masked by redaction (`otelcol_<kind>_redacted_attributes`).
    pub fn add_redacted_attributes(&self, n: usize) {
        self.redacted.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Attribute values redacted so far.
    pub fn redacted_attributes(&self) -> u64 {
        self.redacted.load(Ordering::Relaxed)
    }

    /// Span events dropped for `reason` so far.
    pub fn dropped_events(&self, reason: &str) -> u64 {
        self.dropped_events
            .lock()
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, v)| *v)
    }

    /// Requests failed for `reason` so far.
    pub fn failed_requests(&self, reason: &str) -> u64 {
        self.failed_requests
            .lock()
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, v)| *v)
    }

    /// Set the current queue length gauge.
    pub fn set_queue_size(&self, n: usize) {
        self.queue_size.store(n as i64, Ordering::Relaxed);
    }
    /// Set the queue capacity gauge.
    pub fn set_queue_capacity(&self, n: usize) {
        self.queue_capacity.store(n as i64, Ordering::Relaxed);
    }

    /// Items accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
    /// Items refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
    /// Items rejected so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
    /// Items passed downstream so far.
    pub fn outgoing(&self) -> u64 {
        self.outgoing.load(Ordering::Relaxed)
    }
    /// Items sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
    /// Items that failed to send so far.
    pub fn send_failed(&self) -> u64 {
        self.send_failed.load(Ordering::Relaxed)
    }
    /// Items that could not be enqueued so far.
    pub fn enqueue_failed(&self) -> u64 {
        self.enqueue_failed.load(Ordering::Relaxed)
    }
    /// Items dropped for `reason` so far.
    pub fn dropped(&self, reason: &str) -> u64 {
        self.dropped
            .lock()
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, v)| *v)
    }
    /// Items dropped for any reason so far.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.lock().iter().map(|(_, v)| v).sum()
    }
    /// Current queue length.
    pub fn queue_size(&self) -> i64 {
        self.queue_size.load(Ordering::Relaxed)
    }

    /// The counters this kind of component reports, as `(suffix, value)`.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        match self.kind {
            ComponentKind::Receiver => vec![
                ("accepted", self.accepted()),
                ("refused", self.refused()),
                ("rejected", self.rejected()),
            ],
            ComponentKind::Processor => vec![
                ("incoming", self.accepted()),
                ("outgoing", self.outgoing()),
                ("refused", self.refused()),
            ],
            ComponentKind::Exporter => vec![
                ("sent", self.sent()),
                ("send_failed", self.send_failed()),
                ("enqueue_failed", self.enqueue_failed()),
            ],
        }
    }

    fn attributes(&self) -> Vec<(&'static str, String)> {
        vec![
            (self.kind.as_str(), self.id.to_string()),
            ("pipeline", self.pipeline.clone()),
        ]
    }

    fn points(&self, out: &mut Vec<MetricPoint>) {
        let prefix = format!("otelcol_{}", self.kind.as_str());
        for (suffix, value) in self.counters() {
            out.push(MetricPoint {
                name: format!("{prefix}_{suffix}_{}", self.item),
                attributes: self.attributes(),
                value: value as i64,
            });
        }
        let by_reason = [
            (format!("{prefix}_dropped_{}", self.item), &self.dropped),
            (format!("{prefix}_failed_requests"), &self.failed_requests),
            (
                format!("{prefix}_dropped_span_events"),
                &self.dropped_events,
            ),
        ];
        for (name, counts) in by_reason {
            for (reason, value) in counts.lock().iter() {
                let mut attributes = self.attributes();
                attributes.push(("reason", (*reason).to_string()));
                out.push(MetricPoint {
                    name: name.clone(),
                    attributes,
                    value: *value as i64,
                });
            }
        }
        for c in self.custom.lock().iter() {
            let mut attributes = self.attributes();
            attributes.extend(c.labels.iter().cloned());
            out.push(MetricPoint {
                name: format!("{prefix}_{}", c.suffix),
                attributes,
                value: c.value.load(Ordering::Relaxed),
            });
        }
        if self.redacted_attributes() > 0 {
            out.push(MetricPoint {
                name: format!("{prefix}_redacted_attributes"),
                attributes: self.attributes(),
                value: self.redacted_attributes() as i64,
            });
        }
        if self.queue_capacity.load(Ordering::Relaxed) > 0 {
            out.push(MetricPoint {
                name: format!("{prefix}_queue_size"),
                attributes: self.attributes(),
                value: self.queue_size(),
            });
            out.push(MetricPoint {
                name: format!("{prefix}_queue_capacity"),
                attributes: self.attributes(),
                value: self.queue_capacity.load(Ordering::Relaxed),
            });
        }
    }
}

fn bump(counts: &Mutex<Vec<(&'static str, u64)>>, reason: &'static str, n: u64) {
    let mut counts = counts.lock();
    match counts.iter_mut().find(|(r, _)| *r == reason) {
        Some((_, v)) => *v += n,
        None => counts.push((reason, n)),
    }
}

/// Every metric name the registry can produce, for instrument registration.
const KIND_COUNTERS: &[(ComponentKind, &[&str])] = &[
    (
        ComponentKind::Receiver,
        &["accepted", "refused", "rejected", "dropped"],
    ),
    (
        ComponentKind::Processor,
        &["incoming", "outgoing", "refused", "dropped"],
    ),
    (
        ComponentKind::Exporter,
        &["sent", "send_failed", "enqueue_failed", "dropped"],
    ),
];
const ITEMS: &[&str] = &["spans", "metric_points", "log_records"];

impl Telemetry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Create and register the counters of a component.
    pub fn component(
        &self,
        kind: ComponentKind,
        id: ComponentId,
        pipeline: impl Into<String>,
        item: &'static str,
    ) -> Arc<ComponentTelemetry> {
        let c = Arc::new(ComponentTelemetry::new(kind, id, pipeline.into(), item));
        self.inner.write().push(Arc::clone(&c));
        c
    }

    /// Find a component's counters by kind and id (`"otlp"`, `"batch/agent"`), in any
    /// pipeline. When the id is used in several pipelines the first one is returned.
    pub fn find(&self, kind: ComponentKind, id: &str) -> Option<Arc<ComponentTelemetry>> {
        self.inner
            .read()
            .iter()
            .find(|c| c.kind == kind && c.id.to_string() == id)
            .cloned()
    }

    /// Every counter value now.
    pub fn snapshot(&self) -> Vec<MetricPoint> {
        let mut out = Vec::new();
        for c in self.inner.read().iter() {
            c.points(&mut out);
        }
        out
    }

    /// Sum of the values of metric `name` whose attributes include every pair in `filter`.
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> i64 {
        self.snapshot()
            .iter()
            .filter(|p| p.name == name)
            .filter(|p| filter.iter().all(|(k, v)| p.attribute(k) == Some(*v)))
            .map(|p| p.value)
            .sum()
    }

    /// The counters in Prometheus text exposition format.
    pub fn render_prometheus(&self) -> String {
        let mut points = self.snapshot();
        points.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = String::new();
        let mut last = "";
        for p in &points {
            if p.name != last {
                let kind = if p.name.ends_with("_size")
                    || p.name.ends_with("_capacity")
                    || CUSTOM_GAUGES.iter().any(|g| p.name.ends_with(g))
                {
                    "gauge"
                } else {
                    "counter"
                };
                let _ = writeln!(out, "# TYPE {} {kind}", p.name);
                last = &p.name;
            }
            let labels: Vec<String> = p
                .attributes
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            let _ = writeln!(out, "{}{{{}}} {}", p.name, labels.join(","), p.value);
        }
        out
    }

    /// Publish the counters through the `opentelemetry` metrics API as observable
    /// instruments, so they reach whatever metric exporter `meter`'s provider uses.
    /// Components registered later are included: the callbacks read the registry live.
    pub fn register_with_meter(&self, meter: &Meter) {
        for (kind, suffixes) in KIND_COUNTERS {
            for suffix in *suffixes {
                for item in ITEMS {
                    self.observe(
                        meter,
                        format!("otelcol_{}_{suffix}_{item}", kind.as_str()),
                        false,
                    );
                }
            }
            self.observe(
                meter,
                format!("otelcol_{}_failed_requests", kind.as_str()),
                false,
            );
            for gauge in ["queue_size", "queue_capacity"] {
                self.observe(meter, format!("otelcol_{}_{gauge}", kind.as_str()), true);
            }
            for name in CUSTOM_COUNTERS {
                self.observe(meter, format!("otelcol_{}_{name}", kind.as_str()), false);
            }
            for name in CUSTOM_GAUGES {
                self.observe(meter, format!("otelcol_{}_{name}", kind.as_str()), true);
            }
        }
    }

    /// One observable instrument that reports every point named `name`.
    fn observe(&self, meter: &Meter, name: String, gauge: bool) {
        let registry = self.clone();
        let wanted = name.clone();
        let points = move || {
            registry
                .snapshot()
                .into_iter()
                .filter(|p| p.name == wanted)
                .map(|p| {
                    let attrs: Vec<KeyValue> = p
                        .attributes
                        .iter()
                        .map(|(k, v)| KeyValue::new(*k, v.clone()))
                        .collect();
                    (p.value, attrs)
                })
                .collect::<Vec<_>>()
        };
        if gauge {
            meter
                .i64_observable_gauge(name)
                .with_callback(move |observer| {
                    for (value, attrs) in points() {
                        observer.observe(value, &attrs);
                    }
                })
                .build();
        } else {
            meter
                .u64_observable_counter(name)
                .with_callback(move |observer| {
                    for (value, attrs) in points() {
                        observer.observe(value.max(0) as u64, &attrs);
                    }
                })
                .build();
        }
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_counted_by_reason_and_rendered() {
        let t = Telemetry::new();
        let c = t.component(
            ComponentKind::Processor,
            ComponentId::new("filter").with_name("health"),
            "traces",
            "spans",
        );
        c.add_accepted(10);
        c.add_dropped("filtered", 3);
        c.add_dropped("filtered", 2);
        c.add_dropped("malformed", 1);
        c.add_outgoing(4);
        assert_eq!(c.dropped("filtered"), 5);
        assert_eq!(c.dropped_total(), 6);
        assert_eq!(
            t.sum(
                "otelcol_processor_dropped_spans",
                &[("processor", "filter/health")]
            ),
            6
        );
        let text = t.render_prometheus();
        assert!(text.contains(
            "otelcol_processor_dropped_spans{processor=\"filter/health\",pipeline=\"traces\",reason=\"filtered\"} 5"
        ), "{text}");
        assert!(text.contains("# TYPE otelcol_processor_incoming_spans counter"));
    }
}

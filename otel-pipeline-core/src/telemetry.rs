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

use crate::id::{ComponentId, ComponentKind};

type Registry = RwLock<Vec<Arc<ComponentTelemetry>>>;

/// The registry of every component's counters. Cheap to clone; share one per process.
#[derive(Clone, Default)]
pub struct Telemetry {
    inner: Arc<Registry>,
    meter: Arc<MeterSlot>,
}

/// The meter a registry publishes through, once [`Telemetry::register_with_meter`] has
/// set one, and the declared instrument names already published.
#[derive(Default)]
struct MeterSlot {
    state: Mutex<Option<MeterState>>,
}

struct MeterState {
    meter: Meter,
    registry: std::sync::Weak<Registry>,
    published: Vec<&'static str>,
}

impl fmt::Debug for MeterSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.state.lock().is_some() {
            "MeterSlot(set)"
        } else {
            "MeterSlot(unset)"
        })
    }
}

impl MeterSlot {
    fn get(&self) -> Option<Meter> {
        self.state.lock().as_ref().map(|s| s.meter.clone())
    }

    /// Publish a declared counter or gauge through the meter, once per name. Histograms
    /// record into the meter directly (see [`Histogram::record`]).
    fn announce(&self, instrument: &'static Instrument) {
        let mut state = self.state.lock();
        let Some(state) = state.as_mut() else { return };
        if state.published.contains(&instrument.name) {
            return;
        }
        state.published.push(instrument.name);
        let Some(registry) = state.registry.upgrade() else {
            return;
        };
        let registry = Telemetry {
            inner: registry,
            meter: Arc::new(MeterSlot::default()),
        };
        match instrument.kind {
            InstrumentKind::Counter => observe(
                &state.meter,
                &registry,
                instrument.name.to_string(),
                false,
                Some(instrument),
            ),
            InstrumentKind::Gauge => observe(
                &state.meter,
                &registry,
                instrument.name.to_string(),
                true,
                Some(instrument),
            ),
            InstrumentKind::Histogram(_) => {}
        }
    }
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("components", &self.inner.read().len())
            .finish()
    }
}

/// Why items were dropped: the `reason` attribute of `otelcol_<kind>_dropped_<items>`.
///
/// The reasons this workspace's components use are named constants; a component of your
/// own names its reasons with [`DropReason::new`], once, as constants of its own.
///
/// ```
/// use otel_pipeline_core::telemetry::DropReason;
/// const DUPLICATE: DropReason = DropReason::new("duplicate");
/// assert_eq!(DUPLICATE.as_str(), "duplicate");
/// assert_eq!(DropReason::FILTERED.to_string(), "filtered");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropReason(&'static str);

impl DropReason {
    /// A processor's conditions or match properties removed the items.
    pub const FILTERED: Self = Self("filtered");
    /// The component could not deliver the items before the shutdown deadline.
    pub const SHUTDOWN_DEADLINE: Self = Self("shutdown_deadline");
    /// A condition failed to evaluate under `error_mode: propagate`.
    pub const CONDITION_ERROR: Self = Self("condition_error");
    /// The items could not be read (a malformed request or span).
    pub const MALFORMED: Self = Self("malformed");
    /// The batch carried a new metadata combination past the batcher's limit.
    pub const METADATA_CARDINALITY_LIMIT: Self = Self("metadata_cardinality_limit");
    /// The next stage refused, and the component does not retry.
    pub const REFUSED_NOT_RETRIED: Self = Self("refused_not_retried");
    /// The trace router could not hand the spans to any backend in time.
    pub const REROUTE_FAILED: Self = Self("reroute_failed");

    /// A reason of your own: a short, fixed, snake_case label.
    pub const fn new(label: &'static str) -> Self {
        Self(label)
    }

    /// The label, as the `reason` attribute carries it.
    pub const fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The counters of one component in one pipeline.
#[derive(Debug)]
pub struct ComponentTelemetry {
    kind: ComponentKind,
    id: ComponentId,
    /// The component that built this one at run time, if any.
    parent: Option<ComponentId>,
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
    declared: Mutex<Vec<Declared>>,
    /// Set when the registry publishes through a meter, so histograms record into it.
    meter: Arc<MeterSlot>,
    queue_size: AtomicI64,
    queue_capacity: AtomicI64,
}

/// What kind of instrument a component declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstrumentKind {
    /// A monotonic count (`otelcol_loadbalancer_num_resolutions`).
    Counter,
    /// A value that goes up and down (`otelcol_loadbalancer_num_backends`).
    Gauge,
    /// A distribution of whole values in the instrument's unit, with these bucket upper
    /// bounds (inclusive, ascending); values above the last fall in `+Inf`.
    Histogram(&'static [u64]),
}

/// A metric a component declares: its full name, unit, description and kind. Declare it
/// once as a `const` beside the component, then create its cells with
/// [`ComponentTelemetry::counter`], [`ComponentTelemetry::gauge`] or
/// [`ComponentTelemetry::histogram`]. The core publishes whatever is declared, through a
/// meter and in Prometheus text, without knowing the component.
///
/// ```
/// use otel_pipeline_core::telemetry::Instrument;
/// const DEDUPLICATED: Instrument = Instrument::counter(
///     "otelcol_processor_dedup_dropped_spans",
///     "{spans}",
///     "Spans dropped because an identical span was seen within the window.",
/// );
/// assert_eq!(DEDUPLICATED.name, "otelcol_processor_dedup_dropped_spans");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instrument {
    /// The full metric name, as the meter and Prometheus show it.
    pub name: &'static str,
    /// The unit in UCUM form (`ms`, `By`, `{spans}`).
    pub unit: &'static str,
    /// One sentence for `# HELP` and the instrument's description.
    pub description: &'static str,
    /// Counter, gauge or histogram.
    pub kind: InstrumentKind,
}

impl Instrument {
    /// A counter.
    pub const fn counter(
        name: &'static str,
        unit: &'static str,
        description: &'static str,
    ) -> Self {
        Self {
            name,
            unit,
            description,
            kind: InstrumentKind::Counter,
        }
    }

    /// A gauge.
    pub const fn gauge(name: &'static str, unit: &'static str, description: &'static str) -> Self {
        Self {
            name,
            unit,
            description,
            kind: InstrumentKind::Gauge,
        }
    }

    /// A histogram with bucket upper `bounds`.
    pub const fn histogram(
        name: &'static str,
        unit: &'static str,
        description: &'static str,
        bounds: &'static [u64],
    ) -> Self {
        Self {
            name,
            unit,
            description,
            kind: InstrumentKind::Histogram(bounds),
        }
    }
}

/// A counter cell from [`ComponentTelemetry::counter`]. Cheap to clone; lock-free.
#[derive(Debug, Clone)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge cell from [`ComponentTelemetry::gauge`]. Cheap to clone; lock-free.
#[derive(Debug, Clone)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    /// Set the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Add `d` (negative to subtract).
    pub fn add(&self, d: i64) {
        self.0.fetch_add(d, Ordering::Relaxed);
    }

    /// The value now.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram cell from [`ComponentTelemetry::histogram`]: per-bucket counts, sum and
/// count in atomics, and the `opentelemetry` histogram once a meter is attached.
#[derive(Clone)]
pub struct Histogram(Arc<HistogramCells>);

struct HistogramCells {
    bounds: &'static [u64],
    /// One per bound, plus `+Inf`.
    buckets: Vec<AtomicU64>,
    sum: AtomicU64,
    count: AtomicU64,
    otel: std::sync::OnceLock<(opentelemetry::metrics::Histogram<u64>, Vec<KeyValue>)>,
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .field("sum", &self.sum())
            .finish()
    }
}

impl Histogram {
    /// Record one value, in the instrument's unit.
    pub fn record(&self, v: u64) {
        let c = &self.0;
        let i = c.bounds.partition_point(|b| *b < v);
        c.buckets[i].fetch_add(1, Ordering::Relaxed);
        c.sum.fetch_add(v, Ordering::Relaxed);
        c.count.fetch_add(1, Ordering::Relaxed);
        if let Some((h, attrs)) = c.otel.get() {
            h.record(v, attrs);
        }
    }

    /// Values recorded so far.
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    /// Sum of the values recorded so far.
    pub fn sum(&self) -> u64 {
        self.0.sum.load(Ordering::Relaxed)
    }
}

/// A declared instrument's cell, as the registry keeps it.
#[derive(Debug, Clone)]
enum Cell {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

/// One declared series: an instrument, the component's extra labels, and the cell.
#[derive(Debug)]
struct Declared {
    instrument: &'static Instrument,
    labels: Vec<(&'static str, String)>,
    cell: Cell,
}

/// One counter value, as read by [`Telemetry::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricPoint {
    /// Collector-style metric name, e.g. `otelcol_receiver_accepted_spans`.
    pub name: String,
    /// `receiver`/`processor`/`exporter` = component id, `pipeline`, and `reason` for drops.
    pub attributes: Vec<(&'static str, String)>,
    /// The value.
    pub value: i64,
    /// The declared instrument this point belongs to; `None` for the counters every
    /// component keeps.
    pub instrument: Option<&'static Instrument>,
    /// A gauge (a level that goes up and down), not a monotonic counter.
    pub gauge: bool,
}

impl MetricPoint {
    fn declared(
        name: impl Into<String>,
        attributes: Vec<(&'static str, String)>,
        value: i64,
        instrument: &'static Instrument,
    ) -> Self {
        Self {
            name: name.into(),
            attributes,
            value,
            instrument: Some(instrument),
            gauge: matches!(instrument.kind, InstrumentKind::Gauge),
        }
    }

    /// A point of the counters every component keeps.
    fn builtin(name: String, attributes: Vec<(&'static str, String)>, value: i64) -> Self {
        Self {
            name,
            attributes,
            value,
            instrument: None,
            gauge: false,
        }
    }

    /// The metric family: the instrument's name for a histogram's `_bucket`, `_sum` and
    /// `_count` series, else the point's name.
    pub fn family(&self) -> &str {
        self.instrument.map_or(&self.name, |i| i.name)
    }

    /// The value of attribute `key`, if present.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl ComponentTelemetry {
    fn new(
        kind: ComponentKind,
        id: ComponentId,
        pipeline: String,
        item: &'static str,
        meter: Arc<MeterSlot>,
    ) -> Self {
        Self {
            kind,
            id,
            parent: None,
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
            declared: Mutex::new(Vec::new()),
            meter,
            queue_size: AtomicI64::new(0),
            queue_capacity: AtomicI64::new(0),
        }
    }

    /// A free-standing counter set, not registered anywhere; for unit tests of a component.
    pub fn detached(kind: ComponentKind, id: ComponentId, item: &'static str) -> Arc<Self> {
        Arc::new(Self::new(
            kind,
            id,
            String::new(),
            item,
            Arc::new(MeterSlot::default()),
        ))
    }

    /// Receiver, processor, exporter or extension.
    pub fn kind(&self) -> ComponentKind {
        self.kind
    }

    /// The pipeline the component counts for.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// The component that built this one at run time, if any.
    pub fn parent(&self) -> Option<&ComponentId> {
        self.parent.as_ref()
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
    /// Items dropped on purpose or by necessity, for `reason`
    /// ([`DropReason::FILTERED`], [`DropReason::SHUTDOWN_DEADLINE`], ...).
    pub fn add_dropped(&self, reason: DropReason, n: usize) {
        if n > 0 {
            bump(&self.dropped, reason.as_str(), n as u64);
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
    pub fn add_dropped_events(&self, reason: DropReason, n: usize) {
        if n > 0 {
            bump(&self.dropped_events, reason.as_str(), n as u64);
        }
    }

    /// The counter `instrument` for this component, with extra `labels` (the component
    /// id and pipeline are added). Asking twice for the same labels gives the same cell.
    pub fn counter(
        &self,
        instrument: &'static Instrument,
        labels: &[(&'static str, &str)],
    ) -> Counter {
        match self.declare(instrument, labels, || {
            Cell::Counter(Counter(Arc::default()))
        }) {
            Cell::Counter(c) => c,
            _ => Counter(Arc::default()),
        }
    }

    /// The gauge `instrument` for this component, with extra `labels`.
    pub fn gauge(&self, instrument: &'static Instrument, labels: &[(&'static str, &str)]) -> Gauge {
        match self.declare(instrument, labels, || Cell::Gauge(Gauge(Arc::default()))) {
            Cell::Gauge(g) => g,
            _ => Gauge(Arc::default()),
        }
    }

    /// The histogram `instrument` for this component, with extra `labels`. An instrument
    /// declared as another kind gives a histogram with no buckets but `+Inf`.
    pub fn histogram(
        &self,
        instrument: &'static Instrument,
        labels: &[(&'static str, &str)],
    ) -> Histogram {
        let bounds = match instrument.kind {
            InstrumentKind::Histogram(b) => b,
            _ => &[],
        };
        let make = || {
            Cell::Histogram(Histogram(Arc::new(HistogramCells {
                bounds,
                buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                sum: AtomicU64::new(0),
                count: AtomicU64::new(0),
                otel: std::sync::OnceLock::new(),
            })))
        };
        let h = match self.declare(instrument, labels, make) {
            Cell::Histogram(h) => h,
            _ => {
                return Histogram(Arc::new(HistogramCells {
                    bounds: &[],
                    buckets: vec![AtomicU64::new(0)],
                    sum: AtomicU64::new(0),
                    count: AtomicU64::new(0),
                    otel: std::sync::OnceLock::new(),
                }));
            }
        };
        if let Some(meter) = self.meter.get() {
            self.attach_histogram(&meter, instrument, labels, &h);
        }
        h
    }

    fn declare(
        &self,
        instrument: &'static Instrument,
        labels: &[(&'static str, &str)],
        make: impl FnOnce() -> Cell,
    ) -> Cell {
        let mut declared = self.declared.lock();
        if let Some(d) = declared.iter().find(|d| {
            d.instrument.name == instrument.name
                && d.labels.len() == labels.len()
                && d.labels
                    .iter()
                    .zip(labels)
                    .all(|(a, b)| a.0 == b.0 && a.1 == b.1)
        }) {
            return d.cell.clone();
        }
        let cell = make();
        declared.push(Declared {
            instrument,
            labels: labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect(),
            cell: cell.clone(),
        });
        drop(declared);
        self.meter.announce(instrument);
        cell
    }

    fn attach_histogram(
        &self,
        meter: &Meter,
        instrument: &'static Instrument,
        labels: &[(&'static str, &str)],
        h: &Histogram,
    ) {
        let mut attrs: Vec<KeyValue> = self
            .attributes()
            .into_iter()
            .map(|(k, v)| KeyValue::new(k, v))
            .collect();
        attrs.extend(
            labels
                .iter()
                .map(|(k, v)| KeyValue::new(*k, (*v).to_string())),
        );
        let mut builder = meter
            .u64_histogram(instrument.name)
            .with_unit(instrument.unit)
            .with_description(instrument.description);
        if let InstrumentKind::Histogram(bounds) = instrument.kind {
            builder = builder.with_boundaries(bounds.iter().map(|b| *b as f64).collect());
        }
        let _ = h.0.otel.set((builder.build(), attrs));
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
            ComponentKind::Extension => Vec::new(),
        }
    }

    fn attributes(&self) -> Vec<(&'static str, String)> {
        let mut a = vec![
            (self.kind.as_str(), self.id.to_string()),
            ("pipeline", self.pipeline.clone()),
        ];
        if let Some(parent) = &self.parent {
            a.push(("parent", parent.to_string()));
        }
        a
    }

    fn points(&self, out: &mut Vec<MetricPoint>) {
        let prefix = format!("otelcol_{}", self.kind.as_str());
        for (suffix, value) in self.counters() {
            let mut attributes = self.attributes();
            // Processors count items of every signal under one name, told apart by
            // `otel.signal`, as the Collector's processorhelper does.
            let name = if self.kind == ComponentKind::Processor
                && matches!(suffix, "incoming" | "outgoing")
            {
                attributes.push(("otel.signal", signal_of(self.item).to_string()));
                format!("{prefix}_{suffix}_items")
            } else {
                format!("{prefix}_{suffix}_{}", self.item)
            };
            out.push(MetricPoint::builtin(name, attributes, value as i64));
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
                out.push(MetricPoint::builtin(
                    name.clone(),
                    attributes,
                    *value as i64,
                ));
            }
        }
        for d in self.declared.lock().iter() {
            let mut attributes = self.attributes();
            attributes.extend(d.labels.iter().cloned());
            let name = d.instrument.name;
            match &d.cell {
                Cell::Counter(c) => out.push(MetricPoint::declared(
                    name,
                    attributes,
                    c.get() as i64,
                    d.instrument,
                )),
                Cell::Gauge(g) => out.push(MetricPoint::declared(
                    name,
                    attributes,
                    g.get(),
                    d.instrument,
                )),
                Cell::Histogram(h) => {
                    let cells = &h.0;
                    let mut cumulative = 0u64;
                    for (i, bucket) in cells.buckets.iter().enumerate() {
                        cumulative += bucket.load(Ordering::Relaxed);
                        let le = cells
                            .bounds
                            .get(i)
                            .map_or_else(|| "+Inf".to_string(), u64::to_string);
                        let mut a = attributes.clone();
                        a.push(("le", le));
                        out.push(MetricPoint::declared(
                            format!("{name}_bucket"),
                            a,
                            cumulative as i64,
                            d.instrument,
                        ));
                    }
                    out.push(MetricPoint::declared(
                        format!("{name}_sum"),
                        attributes.clone(),
                        h.sum() as i64,
                        d.instrument,
                    ));
                    out.push(MetricPoint::declared(
                        format!("{name}_count"),
                        attributes,
                        h.count() as i64,
                        d.instrument,
                    ));
                }
            }
        }
        if self.redacted_attributes() > 0 {
            out.push(MetricPoint::builtin(
                format!("{prefix}_redacted_attributes"),
                self.attributes(),
                self.redacted_attributes() as i64,
            ));
        }
        if self.queue_capacity.load(Ordering::Relaxed) > 0 {
            for (name, value) in [
                (format!("{prefix}_queue_size"), self.queue_size()),
                (
                    format!("{prefix}_queue_capacity"),
                    self.queue_capacity.load(Ordering::Relaxed),
                ),
            ] {
                out.push(MetricPoint {
                    gauge: true,
                    ..MetricPoint::builtin(name, self.attributes(), value)
                });
            }
        }
    }
}

/// The signal a component's items belong to, as `otel.signal` names it.
fn signal_of(item: &str) -> &'static str {
    match item {
        "spans" => "traces",
        "metric_points" => "metrics",
        "log_records" => "logs",
        _ => "unknown",
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
    // Processors' incoming and outgoing counts are `_items`, registered apart.
    (ComponentKind::Processor, &["refused", "dropped"]),
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

    /// Create and register the counters of a component. A component built again into the
    /// same registry (the same kind, id and pipeline: a collector rebuilt in process after
    /// a configuration change) gets the earlier one's counters, so its counts go on
    /// rather than appearing twice.
    pub fn component(
        &self,
        kind: ComponentKind,
        id: ComponentId,
        pipeline: impl Into<String>,
        item: &'static str,
    ) -> Arc<ComponentTelemetry> {
        let pipeline = pipeline.into();
        let mut inner = self.inner.write();
        if let Some(c) = inner
            .iter()
            .find(|c| c.kind == kind && c.id == id && c.pipeline == pipeline && c.parent.is_none())
        {
            return Arc::clone(c);
        }
        let c = Arc::new(ComponentTelemetry::new(
            kind,
            id,
            pipeline,
            item,
            Arc::clone(&self.meter),
        ));
        inner.push(Arc::clone(&c));
        c
    }

    /// The counters of a component that `parent` built at run time. A child with the same
    /// kind, id, pipeline and parent as an earlier one gets the earlier one's counters, so
    /// children that come and go neither reset their counts nor grow the registry.
    pub fn child_component(
        &self,
        kind: ComponentKind,
        id: ComponentId,
        pipeline: impl Into<String>,
        item: &'static str,
        parent: ComponentId,
    ) -> Arc<ComponentTelemetry> {
        let pipeline = pipeline.into();
        let mut inner = self.inner.write();
        if let Some(c) = inner.iter().find(|c| {
            c.kind == kind
                && c.id == id
                && c.pipeline == pipeline
                && c.parent.as_ref() == Some(&parent)
        }) {
            return Arc::clone(c);
        }
        let mut c = ComponentTelemetry::new(kind, id, pipeline, item, Arc::clone(&self.meter));
        c.parent = Some(parent);
        let c = Arc::new(c);
        inner.push(Arc::clone(&c));
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

    /// Every component registered so far.
    pub fn components(&self) -> Vec<Arc<ComponentTelemetry>> {
        self.inner.read().clone()
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

    /// The counters in Prometheus text exposition format: a `# TYPE` line per metric
    /// family (and `# HELP` for declared instruments), then its series.
    pub fn render_prometheus(&self) -> String {
        let mut points = self.snapshot();
        points.sort_by(|a, b| a.family().cmp(b.family()).then_with(|| a.name.cmp(&b.name)));
        let mut out = String::new();
        let mut last = "";
        for p in &points {
            let histogram = matches!(
                p.instrument.map(|i| i.kind),
                Some(InstrumentKind::Histogram(_))
            );
            // Counters carry `_total`, as Prometheus names them (and the Collector's own
            // Prometheus endpoint does).
            let counter = !p.gauge && !histogram;
            let total = |name: &str| {
                if counter && !name.ends_with("_total") {
                    format!("{name}_total")
                } else {
                    name.to_string()
                }
            };
            if p.family() != last {
                let kind = if histogram {
                    "histogram"
                } else if p.gauge {
                    "gauge"
                } else {
                    "counter"
                };
                let family = total(p.family());
                if let Some(i) = p.instrument {
                    let _ = writeln!(out, "# HELP {family} {}", i.description);
                }
                let _ = writeln!(out, "# TYPE {family} {kind}");
                last = p.family();
            }
            // Prometheus label names have no dots: `otel.signal` is `otel_signal`.
            let labels: Vec<String> = p
                .attributes
                .iter()
                .map(|(k, v)| format!("{}=\"{}\"", k.replace('.', "_"), escape_label(v)))
                .collect();
            let _ = writeln!(
                out,
                "{}{{{}}} {}",
                total(&p.name),
                labels.join(","),
                p.value
            );
        }
        out
    }

    /// The counters as an OTLP metrics request, for pushing them to a backend
    /// (`service.telemetry.metrics.readers: periodic`): counters as cumulative monotonic
    /// sums (named as in Prometheus, without `_total`), gauges as gauges, histograms as
    /// cumulative histograms, under a resource of `resource` and a scope named
    /// `otel-pipeline`. `start_ns` is when counting began.
    ///
    /// ```
    /// use otel_pipeline_core::{ComponentId, ComponentKind, Telemetry};
    /// let telemetry = Telemetry::new();
    /// let c = telemetry.component(ComponentKind::Exporter, ComponentId::new("otlp"), "traces", "spans");
    /// c.add_sent(3);
    /// let request = telemetry.to_otlp(Vec::new(), 1, 2);
    /// let names: Vec<_> = request.resource_metrics[0].scope_metrics[0].metrics.iter().map(|m| m.name.clone()).collect();
    /// assert!(names.iter().any(|n| n == "otelcol_exporter_sent_spans"), "{names:?}");
    /// ```
    pub fn to_otlp(
        &self,
        resource: Vec<crate::proto::common::v1::KeyValue>,
        start_ns: u64,
        now_ns: u64,
    ) -> crate::proto::collector::metrics::v1::ExportMetricsServiceRequest {
        use crate::proto::common::v1::{AnyValue, InstrumentationScope, KeyValue as Kv, any_value};
        use crate::proto::metrics::v1::{
            AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
            ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
        };
        use crate::proto::resource::v1::Resource;
        let attrs = |a: &[(&'static str, String)]| -> Vec<Kv> {
            a.iter()
                .filter(|(k, _)| *k != "le")
                .map(|(k, v)| Kv {
                    key: (*k).to_string(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(v.clone())),
                    }),
                    ..Default::default()
                })
                .collect()
        };
        let cumulative = AggregationTemporality::Cumulative as i32;
        let mut metrics: std::collections::BTreeMap<String, Metric> =
            std::collections::BTreeMap::new();
        // Histograms: `le` buckets (cumulative), sum and count, per attribute set.
        // Per (family, attributes): `le` buckets (cumulative counts), sum, count, attributes.
        type HistogramParts = (Vec<(f64, u64)>, f64, u64, Vec<Kv>);
        let mut histograms: std::collections::BTreeMap<(String, String), HistogramParts> =
            std::collections::BTreeMap::new();
        for p in self.snapshot() {
            let instrument = p.instrument;
            if let Some(i) = instrument.filter(|i| matches!(i.kind, InstrumentKind::Histogram(_))) {
                let kvs = attrs(&p.attributes);
                let key = (i.name.to_string(), format!("{kvs:?}"));
                let entry = histograms
                    .entry(key)
                    .or_insert_with(|| (Vec::new(), 0.0, 0, kvs));
                if p.name.ends_with("_bucket") {
                    let le = p
                        .attribute("le")
                        .map_or(f64::INFINITY, |l| l.parse().unwrap_or(f64::INFINITY));
                    entry.0.push((le, p.value.max(0) as u64));
                } else if p.name.ends_with("_sum") {
                    entry.1 = p.value as f64;
                } else if p.name.ends_with("_count") {
                    entry.2 = p.value.max(0) as u64;
                }
                continue;
            }
            let point = NumberDataPoint {
                attributes: attrs(&p.attributes),
                start_time_unix_nano: start_ns,
                time_unix_nano: now_ns,
                value: Some(number_data_point::Value::AsInt(p.value)),
                ..Default::default()
            };
            let metric = metrics.entry(p.name.clone()).or_insert_with(|| Metric {
                name: p.name.clone(),
                description: instrument
                    .map(|i| i.description.to_string())
                    .unwrap_or_default(),
                unit: instrument.map(|i| i.unit.to_string()).unwrap_or_default(),
                data: Some(if p.gauge {
                    Data::Gauge(Gauge::default())
                } else {
                    Data::Sum(Sum {
                        data_points: Vec::new(),
                        aggregation_temporality: cumulative,
                        is_monotonic: true,
                    })
                }),
                ..Default::default()
            });
            match &mut metric.data {
                Some(Data::Gauge(g)) => g.data_points.push(point),
                Some(Data::Sum(s)) => s.data_points.push(point),
                _ => {}
            }
        }
        for ((name, _), (mut buckets, sum, count, kvs)) in histograms {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut previous = 0u64;
            let mut bounds = Vec::new();
            let mut counts = Vec::new();
            for (le, cumulative_count) in &buckets {
                if le.is_finite() {
                    bounds.push(*le);
                }
                counts.push(cumulative_count.saturating_sub(previous));
                previous = *cumulative_count;
            }
            if buckets.last().is_none_or(|(le, _)| le.is_finite()) {
                counts.push(count.saturating_sub(previous));
            }
            let metric = metrics.entry(name.clone()).or_insert_with(|| Metric {
                name: name.clone(),
                data: Some(Data::Histogram(Histogram {
                    data_points: Vec::new(),
                    aggregation_temporality: cumulative,
                })),
                ..Default::default()
            });
            if let Some(Data::Histogram(h)) = &mut metric.data {
                h.data_points.push(HistogramDataPoint {
                    attributes: kvs,
                    start_time_unix_nano: start_ns,
                    time_unix_nano: now_ns,
                    count,
                    sum: Some(sum),
                    bucket_counts: counts,
                    explicit_bounds: bounds,
                    ..Default::default()
                });
            }
        }
        crate::proto::collector::metrics::v1::ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: resource,
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "otel-pipeline".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    metrics: metrics.into_values().collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    /// Publish the counters through the `opentelemetry` metrics API, so they reach
    /// whatever metric exporter `meter`'s provider uses: the counters every component
    /// keeps as observable instruments, and each declared instrument under its own name,
    /// unit and description (histograms record into a meter histogram from then on).
    /// Components and instruments registered later are included. Call it once.
    pub fn register_with_meter(&self, meter: &Meter) {
        for suffix in ["incoming", "outgoing"] {
            observe(
                meter,
                self,
                format!("otelcol_processor_{suffix}_items"),
                false,
                None,
            );
        }
        for (kind, suffixes) in KIND_COUNTERS {
            for suffix in *suffixes {
                for item in ITEMS {
                    observe(
                        meter,
                        self,
                        format!("otelcol_{}_{suffix}_{item}", kind.as_str()),
                        false,
                        None,
                    );
                }
            }
            observe(
                meter,
                self,
                format!("otelcol_{}_failed_requests", kind.as_str()),
                false,
                None,
            );
            observe(
                meter,
                self,
                format!("otelcol_{}_dropped_span_events", kind.as_str()),
                false,
                None,
            );
            observe(
                meter,
                self,
                format!("otelcol_{}_redacted_attributes", kind.as_str()),
                false,
                None,
            );
            for gauge in ["queue_size", "queue_capacity"] {
                observe(
                    meter,
                    self,
                    format!("otelcol_{}_{gauge}", kind.as_str()),
                    true,
                    None,
                );
            }
        }
        *self.meter.state.lock() = Some(MeterState {
            meter: meter.clone(),
            registry: Arc::downgrade(&self.inner),
            published: Vec::new(),
        });
        let components: Vec<_> = self.inner.read().iter().cloned().collect();
        for c in components {
            let declared: Vec<_> = c
                .declared
                .lock()
                .iter()
                .map(|d| (d.instrument, d.labels.clone(), d.cell.clone()))
                .collect();
            for (instrument, labels, cell) in declared {
                self.meter.announce(instrument);
                if let Cell::Histogram(h) = cell {
                    let labels: Vec<(&'static str, &str)> =
                        labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    c.attach_histogram(meter, instrument, &labels, &h);
                }
            }
        }
    }
}

/// One observable instrument that reports every point named `name`.
fn observe(
    meter: &Meter,
    registry: &Telemetry,
    name: String,
    gauge: bool,
    instrument: Option<&'static Instrument>,
) {
    let registry = registry.clone();
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
    let (unit, description) = instrument.map_or(("", ""), |i| (i.unit, i.description));
    if gauge {
        meter
            .i64_observable_gauge(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |observer| {
                for (value, attrs) in points() {
                    observer.observe(value, &attrs);
                }
            })
            .build();
    } else {
        meter
            .u64_observable_counter(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |observer| {
                for (value, attrs) in points() {
                    observer.observe(value.max(0) as u64, &attrs);
                }
            })
            .build();
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
        c.add_dropped(DropReason::FILTERED, 3);
        c.add_dropped(DropReason::FILTERED, 2);
        c.add_dropped(DropReason::MALFORMED, 1);
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
            "otelcol_processor_dropped_spans_total{processor=\"filter/health\",pipeline=\"traces\",reason=\"filtered\"} 5"
        ), "{text}");
        // As the Collector names them: one `_items` counter for every signal, with
        // `otel.signal` (`otel_signal` in Prometheus), and `_total` on counters.
        assert!(
            text.contains("# TYPE otelcol_processor_incoming_items_total counter"),
            "{text}"
        );
        assert!(text.contains(
            "otelcol_processor_incoming_items_total{processor=\"filter/health\",pipeline=\"traces\",otel_signal=\"traces\"} 10"
        ), "{text}");
        assert_eq!(
            t.sum(
                "otelcol_processor_outgoing_items",
                &[("otel.signal", "traces")]
            ),
            4
        );
    }
}

/// The collector's own logs, on their way to `service.telemetry.logs.processors`.
///
/// An application that wants its logs pushed records them with [`record_log`] (the
/// `collector` example does it from a `tracing` layer); a log push, while one runs, takes
/// them with [`take_logs`](logs::take_logs). Nothing is kept while no push runs. At most [`LOG_FEED_CAP`](logs::LOG_FEED_CAP)
/// records wait; more are dropped and counted ([`dropped_logs`](logs::dropped_logs)), so a logging storm
/// cannot grow memory.
pub mod logs {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use parking_lot::Mutex;

    use crate::proto::logs::v1::LogRecord;

    /// Records that may wait for a push.
    pub const LOG_FEED_CAP: usize = 10_000;

    static FEED: Mutex<VecDeque<LogRecord>> = Mutex::new(VecDeque::new());
    static PUSHES: AtomicUsize = AtomicUsize::new(0);
    static DROPPED: AtomicU64 = AtomicU64::new(0);

    /// Whether a push runs (record only then: building a record costs).
    pub fn wanted() -> bool {
        PUSHES.load(Ordering::Relaxed) > 0
    }

    /// Hand a record to the running pushes; dropped (counted) when none runs or the feed
    /// is full.
    pub fn record_log(record: LogRecord) {
        if !wanted() {
            return;
        }
        let mut feed = FEED.lock();
        if feed.len() >= LOG_FEED_CAP {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        feed.push_back(record);
    }

    /// Take up to `max` waiting records, oldest first.
    pub fn take_logs(max: usize) -> Vec<LogRecord> {
        let mut feed = FEED.lock();
        let n = feed.len().min(max);
        feed.drain(..n).collect()
    }

    /// Records dropped because the feed was full.
    pub fn dropped_logs() -> u64 {
        DROPPED.load(Ordering::Relaxed)
    }

    /// A push starts taking records (`true`) or stops (`false`).
    pub fn set_pushing(on: bool) {
        if on {
            PUSHES.fetch_add(1, Ordering::Relaxed);
        } else if PUSHES.fetch_sub(1, Ordering::Relaxed) == 1 {
            FEED.lock().clear();
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn records_wait_only_while_a_push_runs_and_are_bounded() {
            record_log(LogRecord::default());
            assert!(take_logs(10).is_empty(), "nothing kept without a push");
            set_pushing(true);
            for _ in 0..LOG_FEED_CAP + 5 {
                record_log(LogRecord::default());
            }
            assert_eq!(dropped_logs(), 5);
            assert_eq!(take_logs(3).len(), 3);
            assert_eq!(take_logs(usize::MAX).len(), LOG_FEED_CAP - 3);
            set_pushing(false);
        }
    }
}
pub use logs::record_log;

//! Test support shared by every crate's tests, examples and benches: an in-memory receiver
//! you push batches into, an in-memory exporter that keeps what reaches it (and can be told
//! to refuse), and generators of realistic traces, metrics and logs.

use std::fmt;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::component::{ComponentContext, Exporter, Lifecycle};
use crate::consumer::{BoxFuture, ConsumeError, Consumer};
use crate::id::{BoxError, BuildError, ComponentId};
use crate::signal::{Batch, Signal, Traces};
use crate::telemetry::ComponentTelemetry;

/// Keeps every batch that reaches it; can be switched to refuse or reject.
#[derive(Debug)]
pub struct InMemoryExporter<S: Signal> {
    id: ComponentId,
    store: Arc<Store<S>>,
}

/// Read and steer what an [`InMemoryExporter`] holds. Cheap to clone.
pub struct Exported<S: Signal> {
    store: Arc<Store<S>>,
}

impl<S: Signal> Clone for Exported<S> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
        }
    }
}

struct Store<S: Signal> {
    batches: Mutex<Vec<Batch<S>>>,
    refuse: AtomicBool,
    reject: AtomicBool,
    hang: AtomicBool,
    shut_down: AtomicBool,
    telemetry: OnceLock<Arc<ComponentTelemetry>>,
}

impl<S: Signal> fmt::Debug for Store<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("batches", &self.batches.lock().len())
            .finish_non_exhaustive()
    }
}

impl<S: Signal> fmt::Debug for Exported<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.store.fmt(f)
    }
}

impl<S: Signal> InMemoryExporter<S> {
    /// An exporter with id `memory` and the handle to read what it got.
    pub fn new() -> (Self, Exported<S>) {
        let store = Arc::new(Store {
            batches: Mutex::new(Vec::new()),
            refuse: AtomicBool::new(false),
            reject: AtomicBool::new(false),
            hang: AtomicBool::new(false),
            shut_down: AtomicBool::new(false),
            telemetry: OnceLock::new(),
        });
        (
            Self {
                id: ComponentId::new("memory"),
                store: Arc::clone(&store),
            },
            Exported { store },
        )
    }

    /// Use another id (needed for a second in-memory exporter in one pipeline).
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }
}

impl<S: Signal> Exported<S> {
    /// Copies of the batches received so far.
    pub fn batches(&self) -> Vec<Batch<S>> {
        self.store.batches.lock().clone()
    }

    /// Items (spans, points, records) received so far.
    pub fn item_count(&self) -> usize {
        self.store
            .batches
            .lock()
            .iter()
            .map(Batch::item_count)
            .sum()
    }

    /// Forget what was received.
    pub fn clear(&self) {
        self.store.batches.lock().clear();
    }

    /// While `true`, refuse every batch with a retryable error (a backend under pressure).
    pub fn set_refusing(&self, refuse: bool) {
        self.store.refuse.store(refuse, Ordering::SeqCst);
    }

    /// While `true`, `consume` does not return (a backend that hangs without answering).
    pub fn set_hanging(&self, hang: bool) {
        self.store.hang.store(hang, Ordering::SeqCst);
    }

    /// While `true`, reject every batch permanently (a backend that says the data is bad).
    pub fn set_rejecting(&self, reject: bool) {
        self.store.reject.store(reject, Ordering::SeqCst);
    }

    /// Whether the exporter's shutdown ran.
    pub fn is_shut_down(&self) -> bool {
        self.store.shut_down.load(Ordering::SeqCst)
    }
}

impl Exported<Traces> {
    /// Every span received, flattened.
    pub fn spans(&self) -> Vec<Span> {
        self.store
            .batches
            .lock()
            .iter()
            .flat_map(|b| &b.data().resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| ss.spans.iter().cloned())
            .collect()
    }
}

/// The consumer built by [`InMemoryExporter`].
#[derive(Debug)]
pub struct InMemoryExporterConsumer<S: Signal> {
    store: Arc<Store<S>>,
    telemetry: Arc<ComponentTelemetry>,
}

impl<S: Signal> Exporter<S> for InMemoryExporter<S> {
    type Consumer = InMemoryExporterConsumer<S>;

    fn id(&self) -> ComponentId {
        self.id.clone()
    }

    fn build(self, ctx: &mut ComponentContext<'_>) -> Result<Self::Consumer, BuildError> {
        let telemetry = ctx.telemetry();
        let _ = self.store.telemetry.set(Arc::clone(&telemetry));
        ctx.register_lifecycle(Arc::new(StoreLifecycle(Arc::clone(&self.store))));
        Ok(InMemoryExporterConsumer {
            store: self.store,
            telemetry,
        })
    }
}

struct StoreLifecycle<S: Signal>(Arc<Store<S>>);

impl<S: Signal> Lifecycle for StoreLifecycle<S> {
    fn shutdown(&self, _deadline: Instant) -> BoxFuture<'_, Result<(), BoxError>> {
        self.0.shut_down.store(true, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }
}

impl<S: Signal> Consumer<S> for InMemoryExporterConsumer<S> {
    async fn consume(&self, batch: Batch<S>) -> Result<(), ConsumeError<S>> {
        let n = batch.item_count();
        while self.store.hang.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        if self.store.reject.load(Ordering::SeqCst) {
            self.telemetry.add_send_failed(n);
            return Err(ConsumeError::rejected(
                n,
                "in-memory exporter set to reject",
            ));
        }
        if self.store.refuse.load(Ordering::SeqCst) {
            self.telemetry.add_enqueue_failed(n);
            return Err(ConsumeError::refused(
                batch,
                "in-memory exporter set to refuse",
            ));
        }
        self.store.batches.lock().push(batch);
        self.telemetry.add_sent(n);
        Ok(())
    }
}

/// A small deterministic pseudo-random generator (SplitMix64) for test data, so tests and
/// benches need no `rand` dependency and are reproducible from a seed.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// Generate `traces` traces of `spans_per_trace` spans each, deterministic in `seed`:
/// one resource per batch (`service.name`), a root span and children, realistic HTTP
/// attributes, random W3C-style ids.
pub fn generate_traces(
    traces: usize,
    spans_per_trace: usize,
    seed: u64,
) -> ExportTraceServiceRequest {
    let mut rng = SplitMix64::new(seed);
    let mut spans = Vec::with_capacity(traces * spans_per_trace);
    for _ in 0..traces {
        let trace_id: Vec<u8> =
            [rng.next_u64().to_be_bytes(), rng.next_u64().to_be_bytes()].concat();
        let root_id = rng.next_u64().max(1).to_be_bytes().to_vec();
        let start = 1_700_000_000_000_000_000u64 + rng.below(1_000_000_000);
        for i in 0..spans_per_trace {
            let span_id = if i == 0 {
                root_id.clone()
            } else {
                rng.next_u64().max(1).to_be_bytes().to_vec()
            };
            let duration = 1_000_000 + rng.below(50_000_000);
            spans.push(Span {
                trace_id: trace_id.clone(),
                span_id,
                parent_span_id: if i == 0 { Vec::new() } else { root_id.clone() },
                flags: 0x101,
                name: if i == 0 {
                    "GET /api/orders".into()
                } else {
                    format!("SELECT orders {i}")
                },
                kind: if i == 0 {
                    span::SpanKind::Server
                } else {
                    span::SpanKind::Client
                } as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: start + duration,
                attributes: vec![
                    kv("http.request.method", Value::StringValue("GET".into())),
                    kv("http.route", Value::StringValue("/api/orders".into())),
                    kv("http.response.status_code", Value::IntValue(200)),
                    kv("server.address", Value::StringValue("orders.svc".into())),
                ],
                status: Some(Status::default()),
                ..Default::default()
            });
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue("orders".into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "otel-pipeline.testing".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Generate `metrics` metrics of `points` data points each, deterministic in `seed`: one
/// resource (`service.name`), alternating gauges (`double`) and monotonic cumulative sums
/// (`int`) named `orders.metric.<i>`, each point with an `http.route` attribute.
pub fn generate_metrics(metrics: usize, points: usize, seed: u64) -> ExportMetricsServiceRequest {
    use crate::proto::metrics::v1::{
        AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
        metric::Data, number_data_point,
    };
    let mut rng = SplitMix64::new(seed);
    let list = (0..metrics)
        .map(|i| {
            let data_points: Vec<NumberDataPoint> = (0..points)
                .map(|p| NumberDataPoint {
                    attributes: vec![kv(
                        "http.route",
                        Value::StringValue(format!("/api/{}", p % 4)),
                    )],
                    time_unix_nano: 1_700_000_000_000_000_000u64 + rng.below(1_000_000_000),
                    value: Some(if i % 2 == 0 {
                        number_data_point::Value::AsDouble(rng.below(1000) as f64 / 10.0)
                    } else {
                        number_data_point::Value::AsInt(rng.below(1000) as i64)
                    }),
                    ..Default::default()
                })
                .collect();
            Metric {
                name: format!("orders.metric.{i}"),
                unit: "1".into(),
                data: Some(if i % 2 == 0 {
                    Data::Gauge(Gauge { data_points })
                } else {
                    Data::Sum(Sum {
                        data_points,
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })
                }),
                ..Default::default()
            }
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue("orders".into()))],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "otel-pipeline.testing".into(),
                    ..Default::default()
                }),
                metrics: list,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Generate `records` log records, deterministic in `seed`: one resource
/// (`service.name`), severities cycling through INFO, WARN, ERROR and DEBUG, string bodies
/// `order <n> placed`, and an `http.route` attribute.
pub fn generate_logs(records: usize, seed: u64) -> ExportLogsServiceRequest {
    use crate::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    let mut rng = SplitMix64::new(seed);
    const SEVERITIES: [(i32, &str); 4] = [(9, "INFO"), (13, "WARN"), (17, "ERROR"), (5, "DEBUG")];
    let log_records = (0..records)
        .map(|i| {
            let (number, text) = SEVERITIES[i % SEVERITIES.len()];
            LogRecord {
                time_unix_nano: 1_700_000_000_000_000_000u64 + rng.below(1_000_000_000),
                severity_number: number,
                severity_text: text.into(),
                body: Some(AnyValue {
                    value: Some(Value::StringValue(format!(
                        "order {} placed",
                        rng.below(10_000)
                    ))),
                }),
                attributes: vec![kv("http.route", Value::StringValue("/api/orders".into()))],
                ..Default::default()
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue("orders".into()))],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "otel-pipeline.testing".into(),
                    ..Default::default()
                }),
                log_records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Wait until `condition` holds, checking every 10 ms, for at most `timeout`. Returns
/// whether it held. For tests that wait on background tasks (with tokio's paused clock the
/// wait costs no real time).
pub async fn eventually(timeout: std::time::Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Assert that every pipeline in `telemetry` accounts for every item, once it is quiet
/// (shut down, or nothing in flight):
/// - each processor: items in = items out + items dropped (with their reasons);
/// - each exporter, with the children it built at run time: items sent + failed +
///   dropped = items its pipeline's receivers took (accepted, or rejected downstream)
///   less what its processors dropped. (Items an exporter refused to enqueue went back
///   upstream and are counted there.)
///
/// Panics with the numbers of the first stage that does not balance.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use otel_pipeline_core::Pipeline;
/// use otel_pipeline_core::DirectReceiver;
/// use otel_pipeline_core::testing::{InMemoryExporter, assert_balanced, generate_traces};
/// let (receiver, sender) = DirectReceiver::new();
/// let (exporter, _out) = InMemoryExporter::new();
/// let running = Pipeline::traces().receiver(receiver).exporter(exporter).build().unwrap().start().await.unwrap();
/// sender.send(generate_traces(2, 3, 1)).await.unwrap();
/// let telemetry = running.telemetry().clone();
/// running.shutdown(std::time::Duration::from_secs(1)).await.unwrap();
/// assert_balanced(&telemetry);
/// # }
/// ```
pub fn assert_balanced(telemetry: &crate::Telemetry) {
    use crate::ComponentKind;
    let components = telemetry.components();
    let mut pipelines: Vec<&str> = components.iter().map(|c| c.pipeline()).collect();
    pipelines.sort_unstable();
    pipelines.dedup();
    for pipeline in pipelines {
        let of = |kind: ComponentKind| {
            components.iter().filter(move |c| {
                c.pipeline() == pipeline && c.kind() == kind && c.parent().is_none()
            })
        };
        let taken: u64 = of(ComponentKind::Receiver)
            .map(|r| r.accepted() + r.rejected())
            .sum();
        let mut dropped = 0;
        for p in of(ComponentKind::Processor) {
            let (incoming, outgoing, lost) = (p.accepted(), p.outgoing(), p.dropped_total());
            assert_eq!(
                incoming,
                outgoing + lost,
                "{pipeline}: processor {} took {incoming}, passed on {outgoing}, dropped {lost}",
                p.id()
            );
            dropped += lost;
        }
        // What an exporter refused to enqueue went back upstream, counted there (refused,
        // or dropped by a sender that does not retry): not part of its own account.
        let accounted = |c: &ComponentTelemetry| c.sent() + c.send_failed() + c.dropped_total();
        for e in of(ComponentKind::Exporter) {
            // An exporter that sends through children it built (the trace router's
            // per-gateway exporters) accounts for what they did too.
            let children: u64 = components
                .iter()
                .filter(|c| c.pipeline() == pipeline && c.parent() == Some(e.id()))
                .map(|c| accounted(c))
                .sum();
            let out = accounted(e) + children;
            assert_eq!(
                out,
                taken - dropped,
                "{pipeline}: exporter {} accounted for {out} items; receivers took {taken}, processors dropped {dropped}",
                e.id()
            );
        }
    }
}

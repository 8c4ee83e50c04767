//! Signals as types, and the batch that flows between stages.
//!
//! A batch is the OTLP export request itself (the `opentelemetry-proto` prost message), so
//! a collector never converts between a wire format and a working format. Each signal is a
//! zero-sized marker type; the builder and every component trait are generic over it, which
//! is how the compiler refuses to put a trace processor into a metrics pipeline.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1 as metrics_proto;
use opentelemetry_proto::tonic::metrics::v1::metric::Data as MetricData;
use opentelemetry_proto::tonic::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

mod sealed {
    pub trait Sealed {}
}

/// Which of the three signals, as a value: what [`Signal::KIND`] gives a signal type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignalKind {
    /// Spans.
    Traces,
    /// Metric data points.
    Metrics,
    /// Log records.
    Logs,
}

impl SignalKind {
    /// Every signal, in this order.
    pub const ALL: [SignalKind; 3] = [Self::Traces, Self::Metrics, Self::Logs];

    /// The name as the Collector spells it in pipeline ids (`traces`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Traces => "traces",
            Self::Metrics => "metrics",
            Self::Logs => "logs",
        }
    }

    /// 0, 1 or 2: a place in a per-signal array.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for SignalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One of the three OpenTelemetry signals. Sealed: exactly [`Traces`], [`Metrics`], [`Logs`].
pub trait Signal: sealed::Sealed + Send + Sync + fmt::Debug + 'static {
    /// Which signal this is, as a value.
    const KIND: SignalKind;

    /// The OTLP message that carries one batch of this signal.
    type Data: prost::Message + Default + Clone + PartialEq + Send + Sync + fmt::Debug + 'static;

    /// The signal's name as the Collector spells it in pipeline ids (`traces`, ...).
    const NAME: &'static str;

    /// The unit counted by self-telemetry, as in the Collector's metric names
    /// (`spans`, `metric_points`, `log_records`).
    const ITEM: &'static str;

    /// Number of items (spans, data points, log records) in a batch.
    fn item_count(data: &Self::Data) -> usize;

    /// Append the resources of `from` to `into`: the merged request is what the two
    /// would be on the wire, concatenated.
    fn merge(into: &mut Self::Data, from: Self::Data);

    /// Take the first `n` items out of `data` into a new request. A resource, scope or
    /// (for metrics) metric that the cut crosses is cloned, so both halves keep it.
    ///
    /// ```
    /// use otel_pipeline_core::{Signal, Traces, testing::generate_traces};
    /// let mut data = generate_traces(3, 4, 1);
    /// let front = Traces::split_front(&mut data, 5);
    /// assert_eq!((Traces::item_count(&front), Traces::item_count(&data)), (5, 7));
    /// ```
    fn split_front(data: &mut Self::Data, n: usize) -> Self::Data;
}

/// Take the first `n` items of a resource → scope → items request (traces and logs).
macro_rules! split_front_nested {
    ($data:expr, $n:expr, $resources:ident, $scopes:ident, $items:ident, $Res:ident, $Scope:ident) => {{
        let data = $data;
        let mut out = Vec::new();
        let mut left = $n;
        while left > 0 && !data.$resources.is_empty() {
            let res = &mut data.$resources[0];
            let count: usize = res.$scopes.iter().map(|s| s.$items.len()).sum();
            if count <= left {
                left -= count;
                out.push(data.$resources.remove(0));
                continue;
            }
            let mut part = $Res {
                resource: res.resource.clone(),
                schema_url: res.schema_url.clone(),
                $scopes: Vec::new(),
            };
            while left > 0 {
                let scope = &mut res.$scopes[0];
                if scope.$items.len() <= left {
                    left -= scope.$items.len();
                    part.$scopes.push(res.$scopes.remove(0));
                } else {
                    let rest = scope.$items.split_off(left);
                    part.$scopes.push($Scope {
                        scope: scope.scope.clone(),
                        schema_url: scope.schema_url.clone(),
                        $items: std::mem::replace(&mut scope.$items, rest),
                    });
                    left = 0;
                }
            }
            out.push(part);
        }
        out
    }};
}

/// Number of data points of one metric.
fn point_count(m: &Metric) -> usize {
    match &m.data {
        Some(MetricData::Gauge(g)) => g.data_points.len(),
        Some(MetricData::Sum(s)) => s.data_points.len(),
        Some(MetricData::Histogram(h)) => h.data_points.len(),
        Some(MetricData::ExponentialHistogram(h)) => h.data_points.len(),
        Some(MetricData::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// The first `n` data points of `m` (fewer than it has) as a metric of their own, with
/// the same name, unit, description, metadata and aggregation.
fn split_points(m: &mut Metric, n: usize) -> Metric {
    fn front<T>(points: &mut Vec<T>, n: usize) -> Vec<T> {
        let rest = points.split_off(n);
        std::mem::replace(points, rest)
    }
    let data = match &mut m.data {
        Some(MetricData::Gauge(g)) => Some(MetricData::Gauge(metrics_proto::Gauge {
            data_points: front(&mut g.data_points, n),
        })),
        Some(MetricData::Sum(s)) => Some(MetricData::Sum(metrics_proto::Sum {
            data_points: front(&mut s.data_points, n),
            aggregation_temporality: s.aggregation_temporality,
            is_monotonic: s.is_monotonic,
        })),
        Some(MetricData::Histogram(h)) => Some(MetricData::Histogram(metrics_proto::Histogram {
            data_points: front(&mut h.data_points, n),
            aggregation_temporality: h.aggregation_temporality,
        })),
        Some(MetricData::ExponentialHistogram(h)) => Some(MetricData::ExponentialHistogram(
            metrics_proto::ExponentialHistogram {
                data_points: front(&mut h.data_points, n),
                aggregation_temporality: h.aggregation_temporality,
            },
        )),
        Some(MetricData::Summary(s)) => Some(MetricData::Summary(metrics_proto::Summary {
            data_points: front(&mut s.data_points, n),
        })),
        None => None,
    };
    Metric {
        name: m.name.clone(),
        description: m.description.clone(),
        unit: m.unit.clone(),
        metadata: m.metadata.clone(),
        data,
    }
}

/// The trace signal: batches are [`ExportTraceServiceRequest`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct Traces;

/// The metric signal: batches are [`ExportMetricsServiceRequest`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct Metrics;

/// The log signal: batches are [`ExportLogsServiceRequest`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct Logs;

impl sealed::Sealed for Traces {}
impl sealed::Sealed for Metrics {}
impl sealed::Sealed for Logs {}

impl Signal for Traces {
    type Data = ExportTraceServiceRequest;
    const KIND: SignalKind = SignalKind::Traces;
    const NAME: &'static str = "traces";
    const ITEM: &'static str = "spans";

    fn item_count(data: &Self::Data) -> usize {
        data.resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum()
    }

    fn merge(into: &mut Self::Data, from: Self::Data) {
        into.resource_spans.extend(from.resource_spans);
    }

    fn split_front(data: &mut Self::Data, n: usize) -> Self::Data {
        ExportTraceServiceRequest {
            resource_spans: split_front_nested!(
                data,
                n,
                resource_spans,
                scope_spans,
                spans,
                ResourceSpans,
                ScopeSpans
            ),
        }
    }
}

impl Signal for Metrics {
    type Data = ExportMetricsServiceRequest;
    const KIND: SignalKind = SignalKind::Metrics;
    const NAME: &'static str = "metrics";
    const ITEM: &'static str = "metric_points";

    fn item_count(data: &Self::Data) -> usize {
        data.resource_metrics
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .map(point_count)
            .sum()
    }

    fn merge(into: &mut Self::Data, from: Self::Data) {
        into.resource_metrics.extend(from.resource_metrics);
    }

    fn split_front(data: &mut Self::Data, n: usize) -> Self::Data {
        let mut out = ExportMetricsServiceRequest::default();
        let mut left = n;
        while left > 0 && !data.resource_metrics.is_empty() {
            let rm = &mut data.resource_metrics[0];
            let count: usize = rm
                .scope_metrics
                .iter()
                .flat_map(|sm| &sm.metrics)
                .map(point_count)
                .sum();
            if count <= left {
                left -= count;
                out.resource_metrics.push(data.resource_metrics.remove(0));
                continue;
            }
            let mut part = ResourceMetrics {
                resource: rm.resource.clone(),
                schema_url: rm.schema_url.clone(),
                scope_metrics: Vec::new(),
            };
            while left > 0 {
                let sm = &mut rm.scope_metrics[0];
                let count: usize = sm.metrics.iter().map(point_count).sum();
                if count <= left {
                    left -= count;
                    part.scope_metrics.push(rm.scope_metrics.remove(0));
                    continue;
                }
                let mut scope_part = ScopeMetrics {
                    scope: sm.scope.clone(),
                    schema_url: sm.schema_url.clone(),
                    metrics: Vec::new(),
                };
                while left > 0 {
                    let points = point_count(&sm.metrics[0]);
                    if points <= left {
                        left -= points;
                        scope_part.metrics.push(sm.metrics.remove(0));
                    } else {
                        scope_part
                            .metrics
                            .push(split_points(&mut sm.metrics[0], left));
                        left = 0;
                    }
                }
                part.scope_metrics.push(scope_part);
            }
            out.resource_metrics.push(part);
        }
        out
    }
}

impl Signal for Logs {
    type Data = ExportLogsServiceRequest;
    const KIND: SignalKind = SignalKind::Logs;
    const NAME: &'static str = "logs";
    const ITEM: &'static str = "log_records";

    fn item_count(data: &Self::Data) -> usize {
        data.resource_logs
            .iter()
            .flat_map(|rl| &rl.scope_logs)
            .map(|sl| sl.log_records.len())
            .sum()
    }

    fn merge(into: &mut Self::Data, from: Self::Data) {
        into.resource_logs.extend(from.resource_logs);
    }

    fn split_front(data: &mut Self::Data, n: usize) -> Self::Data {
        ExportLogsServiceRequest {
            resource_logs: split_front_nested!(
                data,
                n,
                resource_logs,
                scope_logs,
                log_records,
                ResourceLogs,
                ScopeLogs
            ),
        }
    }
}

/// Who sent a batch: the peer address and the request metadata a receiver saw.
///
/// Receivers attach it; processors such as `k8sattributes` read it to associate spans with
/// the pod that sent them. Shared behind an `Arc`, so attaching it costs one pointer copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The peer's socket address, when the transport has one.
    pub addr: Option<SocketAddr>,
    /// Request metadata (gRPC metadata or HTTP headers) the receiver chose to keep,
    /// lower-cased keys.
    pub metadata: Vec<(String, String)>,
    /// What the receiver's authenticator established about the client, e.g.
    /// `("subject", "checkout")` and `("scheme", "bearer")`; empty without one. Never a
    /// credential.
    pub auth: Vec<(String, String)>,
}

impl ClientInfo {
    /// The first metadata value for `key` (compared case-insensitively).
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// The authenticator's attribute `key` (`subject`, `scheme`, ...).
    pub fn auth(&self, key: &str) -> Option<&str> {
        self.auth
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One unit of work flowing through a pipeline: the OTLP message plus where it came from.
///
/// ```
/// use otel_pipeline_core::{Batch, Signal, Traces};
/// let batch = Batch::<Traces>::new(Default::default());
/// assert_eq!(batch.item_count(), 0);
/// ```
pub struct Batch<S: Signal> {
    /// The OTLP export request.
    pub data: S::Data,
    /// The client that sent it, when a network receiver produced the batch.
    pub client: Option<Arc<ClientInfo>>,
}

impl<S: Signal> Batch<S> {
    /// A batch with no client information.
    pub fn new(data: S::Data) -> Self {
        Self { data, client: None }
    }

    /// A batch that remembers the client that sent it.
    pub fn with_client(data: S::Data, client: Arc<ClientInfo>) -> Self {
        Self {
            data,
            client: Some(client),
        }
    }

    /// Number of spans, metric points or log records in the batch.
    pub fn item_count(&self) -> usize {
        S::item_count(&self.data)
    }
}

impl<S: Signal> Clone for Batch<S> {
    fn clone(&self) -> Self {
        Self {
            data: self.data.clone(),
            client: self.client.clone(),
        }
    }
}

impl<S: Signal> fmt::Debug for Batch<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("signal", &S::NAME)
            .field("items", &self.item_count())
            .field("client", &self.client)
            .finish()
    }
}

macro_rules! batch_from_data {
    ($($signal:ty => $data:ty),*) => {$(
        impl From<$data> for Batch<$signal> {
            fn from(data: $data) -> Self {
                Self::new(data)
            }
        }
    )*};
}
batch_from_data!(
    Traces => ExportTraceServiceRequest,
    Metrics => ExportMetricsServiceRequest,
    Logs => ExportLogsServiceRequest
);

#[cfg(all(test, feature = "pipeline"))]
mod split_tests {
    use super::*;
    use crate::testing::{generate_logs, generate_metrics, generate_traces};

    #[test]
    fn metrics_split_inside_a_metric_keeps_its_kind_and_name() {
        // Four metrics of three points: gauge, sum, gauge, sum.
        let mut data = generate_metrics(4, 3, 1);
        let whole = data.clone();
        let front = Metrics::split_front(&mut data, 4);
        assert_eq!(Metrics::item_count(&front), 4);
        assert_eq!(Metrics::item_count(&data), 8);
        let front_metrics = &front.resource_metrics[0].scope_metrics[0].metrics;
        let rest_metrics = &data.resource_metrics[0].scope_metrics[0].metrics;
        // The cut crosses the second metric (a monotonic sum): both halves carry it.
        assert_eq!(front_metrics[1].name, rest_metrics[0].name);
        match (&front_metrics[1].data, &rest_metrics[0].data) {
            (Some(MetricData::Sum(a)), Some(MetricData::Sum(b))) => {
                assert!(a.is_monotonic && b.is_monotonic);
                assert_eq!(a.aggregation_temporality, b.aggregation_temporality);
                assert_eq!((a.data_points.len(), b.data_points.len()), (1, 2));
            }
            other => panic!("expected two sums, got {other:?}"),
        }
        assert_eq!(
            front.resource_metrics[0].resource,
            whole.resource_metrics[0].resource
        );
        // Merging the halves back gives every point, in order.
        let mut merged = front;
        Metrics::merge(&mut merged, data);
        assert_eq!(Metrics::item_count(&merged), 12);
    }

    #[test]
    fn split_takes_everything_when_asked_for_more() {
        let mut logs = generate_logs(5, 1);
        let front = Logs::split_front(&mut logs, 50);
        assert_eq!((Logs::item_count(&front), Logs::item_count(&logs)), (5, 0));
        let mut traces = generate_traces(2, 3, 1);
        let front = Traces::split_front(&mut traces, 0);
        assert_eq!(Traces::item_count(&front), 0);
        assert_eq!(Traces::item_count(&traces), 6);
        let mut logs = generate_logs(5, 1);
        let front = Logs::split_front(&mut logs, 2);
        assert_eq!((Logs::item_count(&front), Logs::item_count(&logs)), (2, 3));
        assert_eq!(
            front.resource_logs[0].scope_logs[0].scope,
            logs.resource_logs[0].scope_logs[0].scope
        );
    }
}

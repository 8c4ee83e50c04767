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
use opentelemetry_proto::tonic::metrics::v1::metric::Data as MetricData;

mod sealed {
    pub trait Sealed {}
}

/// One of the three OpenTelemetry signals. Sealed: exactly [`Traces`], [`Metrics`], [`Logs`].
pub trait Signal: sealed::Sealed + Send + Sync + fmt::Debug + 'static {
    /// The OTLP message that carries one batch of this signal.
    type Data: prost::Message + Default + Clone + PartialEq + Send + Sync + fmt::Debug + 'static;

    /// The signal's name as the Collector spells it in pipeline ids (`traces`, ...).
    const NAME: &'static str;

    /// The unit counted by self-telemetry, as in the Collector's metric names
    /// (`spans`, `metric_points`, `log_records`).
    const ITEM: &'static str;

    /// Number of items (spans, data points, log records) in a batch.
    fn item_count(data: &Self::Data) -> usize;
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
    const NAME: &'static str = "traces";
    const ITEM: &'static str = "spans";

    fn item_count(data: &Self::Data) -> usize {
        data.resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum()
    }
}

impl Signal for Metrics {
    type Data = ExportMetricsServiceRequest;
    const NAME: &'static str = "metrics";
    const ITEM: &'static str = "metric_points";

    fn item_count(data: &Self::Data) -> usize {
        data.resource_metrics
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .map(|m| match &m.data {
                Some(MetricData::Gauge(g)) => g.data_points.len(),
                Some(MetricData::Sum(s)) => s.data_points.len(),
                Some(MetricData::Histogram(h)) => h.data_points.len(),
                Some(MetricData::ExponentialHistogram(h)) => h.data_points.len(),
                Some(MetricData::Summary(s)) => s.data_points.len(),
                None => 0,
            })
            .sum()
    }
}

impl Signal for Logs {
    type Data = ExportLogsServiceRequest;
    const NAME: &'static str = "logs";
    const ITEM: &'static str = "log_records";

    fn item_count(data: &Self::Data) -> usize {
        data.resource_logs
            .iter()
            .flat_map(|rl| &rl.scope_logs)
            .map(|sl| sl.log_records.len())
            .sum()
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

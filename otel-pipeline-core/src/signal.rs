//! Signals as types, and the batch that flows between stages.
//!
//! A batch is the OTLP export request itself (the `opentelemetry-proto` prost message), so
//! a collector never converts between a wire format and a working format. Each signal is a
//! zero-sized marker type; the builder and every component trait are generic over it, which
//! is how the compiler refuses to put a trace processor into a metrics pipeline.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use prost::Message as _;

use crate::wire::{self, WireError};

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

/// Whether a request header named `key` carries a credential (`authorization`,
/// `proxy-authorization`, `cookie`, `x-api-key`, or a name with `token`, `secret`,
/// `password`, `api-key`, `apikey` or `session` in it): such values are never printed, and
/// copying them into telemetry needs an explicit opt-in.
///
/// ```
/// use otel_pipeline_core::is_credential_header;
/// assert!(is_credential_header("Authorization"));
/// assert!(is_credential_header("x-goog-iap-jwt-assertion-token"));
/// assert!(!is_credential_header("x-tenant"));
/// ```
pub fn is_credential_header(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    matches!(
        k.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie" | "x-api-key"
    ) || [
        "token", "secret", "password", "api-key", "apikey", "session",
    ]
    .iter()
    .any(|w| k.contains(w))
}

/// Who sent a batch: the peer address and the request metadata a receiver saw.
///
/// Receivers attach it; processors such as `k8sattributes` read it to associate spans with
/// the pod that sent them. Shared behind an `Arc`, so attaching it costs one pointer copy.
/// Its `Debug` masks the values of credential headers ([`is_credential_header`]).
#[derive(Clone, Default, PartialEq, Eq)]
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

impl fmt::Debug for ClientInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let metadata: Vec<(&str, &str)> = self
            .metadata
            .iter()
            .map(|(k, v)| {
                let v = if is_credential_header(k) {
                    "***"
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("ClientInfo")
            .field("addr", &self.addr)
            .field("metadata", &metadata)
            .field("auth", &self.auth)
            .finish()
    }
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
/// The message is held in one of two forms, and a stage sees the same request in
/// either: decoded (the prost types, what [`Batch::data`] and [`Batch::data_mut`] give),
/// or as the protobuf bytes a receiver took in ([`Batch::from_encoded`]; traces only).
/// Bytes are decoded on first use, so a pipeline whose stages never look at spans (an
/// OTLP relay, a trace router, the tail sampler) forwards what it received without
/// decoding and encoding it again, unknown fields included. Stages that read or change
/// spans call [`Batch::data_mut`], and from there the batch is decoded, as before.
///
/// ```
/// use otel_pipeline_core::{Batch, Signal, Traces, testing::generate_traces};
/// let bytes = prost::Message::encode_to_vec(&generate_traces(2, 3, 1));
/// let mut batch = Batch::<Traces>::from_encoded(bytes.into()).unwrap();
/// assert_eq!(batch.item_count(), 6); // counted from the bytes
/// assert!(batch.encoded().is_some());
/// batch.data_mut().resource_spans[0].scope_spans[0].spans.truncate(2); // decoded here
/// assert!(batch.encoded().is_none());
/// assert_eq!(batch.item_count(), 2);
/// ```
pub struct Batch<S: Signal> {
    payload: Payload<S>,
    /// The client that sent it, when a network receiver produced the batch.
    pub client: Option<Arc<ClientInfo>>,
}

/// The request, decoded or as bytes (checked, so they decode).
enum Payload<S: Signal> {
    Decoded(S::Data),
    Encoded {
        bytes: Bytes,
        items: usize,
        /// Filled by a read-only [`Batch::data`]; the bytes stay what is sent.
        decoded: OnceLock<S::Data>,
    },
}

impl<S: Signal> Payload<S> {
    fn encoded(bytes: Bytes, items: usize) -> Self {
        Self::Encoded {
            bytes,
            items,
            decoded: OnceLock::new(),
        }
    }
}

/// Decode bytes that [`wire::check_traces`] (or prost) accepted.
fn decode_checked<D: prost::Message + Default>(bytes: &[u8]) -> D {
    // Checked bytes always decode; an empty request is the only conceivable fallback.
    D::decode(bytes).unwrap_or_default()
}

impl<S: Signal> Batch<S> {
    /// A batch with no client information.
    pub fn new(data: S::Data) -> Self {
        Self {
            payload: Payload::Decoded(data),
            client: None,
        }
    }

    /// A batch that remembers the client that sent it.
    pub fn with_client(data: S::Data, client: Arc<ClientInfo>) -> Self {
        Self {
            payload: Payload::Decoded(data),
            client: Some(client),
        }
    }

    /// A batch from a protobuf-encoded export request, as a receiver took it in.
    ///
    /// Trace requests are checked against the OTLP schema with the rules prost decodes
    /// by (so a batch built here always decodes) and their spans counted, without
    /// decoding them; the bytes are kept and sent on as they are unless a stage asks for
    /// the decoded form. Metric and log requests are decoded here.
    ///
    /// ```
    /// use otel_pipeline_core::{Batch, Traces};
    /// let err = Batch::<Traces>::from_encoded(vec![0x0a, 0x05, 0x01].into()).unwrap_err();
    /// assert!(err.to_string().contains("ExportTraceServiceRequest"), "{err}");
    /// ```
    pub fn from_encoded(bytes: Bytes) -> Result<Self, WireError> {
        let payload = if S::KIND == SignalKind::Traces {
            let items = wire::check_traces(&bytes)?;
            Payload::encoded(bytes, items)
        } else {
            Payload::Decoded(
                S::Data::decode(bytes).map_err(|e| WireError::from_prost(S::NAME, &e))?,
            )
        };
        Ok(Self {
            payload,
            client: None,
        })
    }

    /// The same batch, remembering the client that sent it.
    pub fn with_client_info(mut self, client: Arc<ClientInfo>) -> Self {
        self.client = Some(client);
        self
    }

    /// The OTLP export request, decoded (on first use if the batch holds bytes; the bytes
    /// are still what is sent on).
    pub fn data(&self) -> &S::Data {
        match &self.payload {
            Payload::Decoded(d) => d,
            Payload::Encoded { bytes, decoded, .. } => {
                decoded.get_or_init(|| decode_checked(bytes))
            }
        }
    }

    /// The OTLP export request, to change: decodes the batch if it holds bytes, and from
    /// then on the decoded form is what is sent.
    pub fn data_mut(&mut self) -> &mut S::Data {
        if let Payload::Encoded { bytes, decoded, .. } = &mut self.payload {
            let data = decoded.take().unwrap_or_else(|| decode_checked(bytes));
            self.payload = Payload::Decoded(data);
        }
        match &mut self.payload {
            Payload::Decoded(d) => d,
            Payload::Encoded { .. } => unreachable!("decoded just above"),
        }
    }

    /// The OTLP export request, decoded.
    pub fn into_data(self) -> S::Data {
        match self.payload {
            Payload::Decoded(d) => d,
            Payload::Encoded {
                bytes, mut decoded, ..
            } => decoded.take().unwrap_or_else(|| decode_checked(&bytes)),
        }
    }

    /// The request's protobuf bytes, while the batch still holds them as received (no
    /// stage has asked to change it): what an exporter can send without encoding.
    pub fn encoded(&self) -> Option<&Bytes> {
        match &self.payload {
            Payload::Encoded { bytes, .. } => Some(bytes),
            Payload::Decoded(_) => None,
        }
    }

    /// The request as protobuf bytes: those it holds, or the decoded form encoded.
    pub fn to_bytes(&self) -> Bytes {
        match &self.payload {
            Payload::Encoded { bytes, .. } => bytes.clone(),
            Payload::Decoded(d) => Bytes::from(d.encode_to_vec()),
        }
    }

    /// Size of the request's protobuf encoding.
    pub fn encoded_len(&self) -> usize {
        match &self.payload {
            Payload::Encoded { bytes, .. } => bytes.len(),
            Payload::Decoded(d) => d.encoded_len(),
        }
    }

    /// Whether the request holds nothing at all (not even a resource without items).
    /// Cheap: it does not measure the encoding.
    pub fn is_empty(&self) -> bool {
        match &self.payload {
            Payload::Decoded(d) => *d == S::Data::default(),
            Payload::Encoded { bytes, .. } => bytes.is_empty(),
        }
    }

    /// Number of spans, metric points or log records in the batch.
    pub fn item_count(&self) -> usize {
        match &self.payload {
            Payload::Decoded(d) => S::item_count(d),
            Payload::Encoded { items, .. } => *items,
        }
    }

    /// Append `other`'s resources (this batch's client stays). Two batches of bytes join
    /// as bytes: a protobuf message's repeated field is the concatenation of its
    /// occurrences, so the joined bytes are the merged request. A decoded batch joining
    /// bytes is encoded.
    ///
    /// ```
    /// use otel_pipeline_core::{Batch, Traces, testing::generate_traces};
    /// let enc = |n| prost::Message::encode_to_vec(&generate_traces(n, 2, 1)).into();
    /// let mut a = Batch::<Traces>::from_encoded(enc(2)).unwrap();
    /// a.append(Batch::from_encoded(enc(3)).unwrap());
    /// assert_eq!(a.item_count(), 10);
    /// // One resource each: the joined bytes decode to both.
    /// assert_eq!(a.data().resource_spans.len(), 2);
    /// ```
    pub fn append(&mut self, other: Batch<S>) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            self.payload = other.payload;
            return;
        }
        match (&mut self.payload, other.payload) {
            (Payload::Decoded(a), Payload::Decoded(b)) => S::merge(a, b),
            (payload, other) => {
                let (mut joined, mut items) =
                    match std::mem::replace(payload, Payload::Decoded(S::Data::default())) {
                        Payload::Encoded { bytes, items, .. } => (
                            bytes.try_into_mut().unwrap_or_else(|shared| {
                                let mut m = BytesMut::with_capacity(shared.len() * 2);
                                m.extend_from_slice(&shared);
                                m
                            }),
                            items,
                        ),
                        Payload::Decoded(d) => {
                            let mut m = BytesMut::with_capacity(d.encoded_len() * 2);
                            d.encode_raw(&mut m);
                            (m, S::item_count(&d))
                        }
                    };
                match other {
                    Payload::Encoded {
                        bytes, items: n, ..
                    } => {
                        joined.extend_from_slice(&bytes);
                        items += n;
                    }
                    Payload::Decoded(d) => {
                        items += S::item_count(&d);
                        joined.reserve(d.encoded_len());
                        d.encode_raw(&mut joined);
                    }
                }
                *payload = Payload::encoded(joined.freeze(), items);
            }
        }
    }

    /// Take the first `n` items into a batch of their own (with the same client). Bytes
    /// are cut as bytes: a resource or scope the cut crosses goes to both halves.
    ///
    /// ```
    /// use otel_pipeline_core::{Batch, Traces, testing::generate_traces};
    /// let bytes = prost::Message::encode_to_vec(&generate_traces(3, 4, 1));
    /// let mut batch = Batch::<Traces>::from_encoded(bytes.into()).unwrap();
    /// let front = batch.split_front(5);
    /// assert_eq!((front.item_count(), batch.item_count()), (5, 7));
    /// assert!(front.encoded().is_some() && batch.encoded().is_some());
    /// ```
    pub fn split_front(&mut self, n: usize) -> Batch<S> {
        let client = self.client.clone();
        let total = self.item_count();
        if n >= total {
            let payload =
                std::mem::replace(&mut self.payload, Payload::Decoded(S::Data::default()));
            return Batch { payload, client };
        }
        let payload = match &mut self.payload {
            Payload::Decoded(d) => Payload::Decoded(S::split_front(d, n)),
            Payload::Encoded { bytes, .. } => {
                let (front, rest) = wire::split_front_traces(bytes, n);
                self.payload = Payload::encoded(Bytes::from(rest), total - n);
                Payload::encoded(Bytes::from(front), n)
            }
        };
        Batch { payload, client }
    }
}

impl<S: Signal> Batch<S> {
    /// Cut the whole batch into batches of `size` items (the last may hold fewer), in
    /// order, leaving this one empty. On bytes this is one pass over the request, where
    /// calling [`split_front`](Self::split_front) again and again would walk and copy the
    /// remainder each time.
    ///
    /// ```
    /// use otel_pipeline_core::{Batch, Traces, testing::generate_traces};
    /// let bytes = prost::Message::encode_to_vec(&generate_traces(3, 4, 1));
    /// let mut batch = Batch::<Traces>::from_encoded(bytes.into()).unwrap();
    /// let sizes: Vec<usize> = batch.split_chunks(5).iter().map(|b| b.item_count()).collect();
    /// assert_eq!(sizes, [5, 5, 2]);
    /// assert!(batch.is_empty());
    /// ```
    pub fn split_chunks(&mut self, size: usize) -> Vec<Batch<S>> {
        let size = size.max(1);
        let client = self.client.clone();
        let total = self.item_count();
        if total <= size {
            return vec![self.split_front(total)];
        }
        let payload = std::mem::replace(&mut self.payload, Payload::Decoded(S::Data::default()));
        match payload {
            Payload::Encoded { bytes, .. } => wire::chunk_traces(&bytes, total, size)
                .into_iter()
                .map(|(part, n)| Batch {
                    payload: Payload::encoded(Bytes::from(part), n),
                    client: client.clone(),
                })
                .collect(),
            Payload::Decoded(mut d) => {
                let mut out = Vec::with_capacity(total.div_ceil(size));
                let mut left = total;
                while left > size {
                    out.push(Batch {
                        payload: Payload::Decoded(S::split_front(&mut d, size)),
                        client: client.clone(),
                    });
                    left -= size;
                }
                out.push(Batch {
                    payload: Payload::Decoded(d),
                    client,
                });
                out
            }
        }
    }
}

impl Batch<Traces> {
    /// This batch with its request replaced by `bytes`: a request a stage made from this
    /// batch's checked bytes by cutting whole fields out, appending well-formed ones or
    /// replacing values with well-formed ones (the filter drops spans, `k8sattributes`
    /// appends resource attributes, redaction masks and removes attributes), holding
    /// `items` spans. It is not checked again (that walk would cost as much as the
    /// stage's own), so it must decode as the request it came from did; debug builds
    /// check it. The client stays.
    ///
    /// ```
    /// use otel_pipeline_core::{Batch, Traces, testing::generate_traces};
    /// let full = prost::Message::encode_to_vec(&generate_traces(2, 2, 1));
    /// let batch = Batch::<Traces>::from_encoded(full.into()).unwrap();
    /// let fewer = prost::Message::encode_to_vec(&generate_traces(1, 2, 1));
    /// let batch = batch.with_rewritten_request(fewer.into(), 2);
    /// assert_eq!(batch.item_count(), 2);
    /// ```
    pub fn with_rewritten_request(self, bytes: Bytes, items: usize) -> Self {
        debug_assert_eq!(
            wire::check_traces(&bytes).ok(),
            Some(items),
            "a rewritten request must check, with the spans it says"
        );
        Self {
            payload: Payload::encoded(bytes, items),
            client: self.client,
        }
    }

    /// Split a batch of bytes span by span over `parts` outputs, as bytes: `owner`
    /// gets each span's trace id (asked once per run of spans of one trace) and says
    /// which output it goes to. `None` for a decoded batch (split the decoded request
    /// instead). Returns the outputs that got spans, by index. See [`wire::split_traces`].
    ///
    /// ```
    /// use otel_pipeline_core::{Batch, Traces, testing::generate_traces};
    /// let bytes = prost::Message::encode_to_vec(&generate_traces(4, 5, 1));
    /// let batch = Batch::<Traces>::from_encoded(bytes.into()).unwrap();
    /// let parts = batch.split_encoded(2, |id| usize::from(id[15] & 1)).unwrap();
    /// assert_eq!(parts.iter().map(|(_, b)| b.item_count()).sum::<usize>(), 20);
    /// ```
    pub fn split_encoded(
        &self,
        parts: usize,
        mut owner: impl FnMut(&[u8]) -> usize,
    ) -> Option<Vec<(usize, Batch<Traces>)>> {
        let bytes = self.encoded()?;
        Some(
            wire::split_traces(bytes, parts, |id, _| owner(id))
                .into_iter()
                .map(|(i, part, items)| {
                    (
                        i,
                        Batch {
                            payload: Payload::encoded(Bytes::from(part), items),
                            client: self.client.clone(),
                        },
                    )
                })
                .collect(),
        )
    }
}

impl<S: Signal> Clone for Batch<S> {
    fn clone(&self) -> Self {
        let payload = match &self.payload {
            Payload::Decoded(d) => Payload::Decoded(d.clone()),
            // The bytes are shared; the decoded view is not copied.
            Payload::Encoded { bytes, items, .. } => Payload::encoded(bytes.clone(), *items),
        };
        Self {
            payload,
            client: self.client.clone(),
        }
    }
}

impl<S: Signal> fmt::Debug for Batch<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("signal", &S::NAME)
            .field("items", &self.item_count())
            .field("encoded", &self.encoded().is_some())
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

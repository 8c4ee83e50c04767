//! The `servicegraph` connector: the service dependency graph, as metrics, from pairs of
//! spans across a call (client and server, producer and consumer).
//!
//! A client span (`CLIENT` or `PRODUCER`) and the server span whose parent it is
//! (`SERVER` or `CONSUMER`) make one request on the edge from the client's service to the
//! server's. Each edge emits the Collector's metrics, with attributes `client`, `server`,
//! `connection_type` (empty, `messaging_system`, `database` or `virtual_node`) and each of
//! `dimensions` as `client_<name>` and `server_<name>`:
//! - `traces_service_graph_request_total`, `traces_service_graph_request_failed_total`;
//! - `traces_service_graph_request_server` and `traces_service_graph_request_client`,
//!   duration histograms in seconds (`..._seconds_bucket` in Prometheus).
//!
//! Half-seen requests wait in a store bounded by `store.max_items` for `store.ttl`. When a
//! client half expires and carries one of `virtual_node_peer_attributes` (`peer.service`,
//! `db.name`, `db.system`), the edge goes to a virtual node of that name; a server half
//! with no client comes from the virtual node `user`. Others expire counted, as do
//! halves refused because the store is full. Edges are capped too
//! (`max_edges`, default 10 000).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use otel_pipeline_core::connector::{Connector, Downstream};
use otel_pipeline_core::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline_core::proto::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use otel_pipeline_core::proto::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use otel_pipeline_core::proto::resource::v1::Resource;
use otel_pipeline_core::proto::trace::v1::{span::SpanKind, status::StatusCode};
use otel_pipeline_core::telemetry::{Counter, Gauge, Instrument};
use otel_pipeline_core::{
    Batch, BuildError, ComponentContext, ComponentId, ComponentTelemetry, ConsumeError, Consumer,
    Metrics, Traces,
};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::time::Instant;

use super::spanmetrics::{DEFAULT_BUCKETS_MS, SpanView, first, kv, now_nanos, string_value};
use crate::condition::as_string;
use crate::config::ConfigError;
use crate::tail_sampling::wire::{AnyRef, decode_span};

const EDGES: Instrument = Instrument::gauge(
    "otelcol_connector_servicegraph_edges",
    "{edges}",
    "Edges of the service graph held.",
);
const PENDING: Instrument = Instrument::gauge(
    "otelcol_connector_servicegraph_pending",
    "{spans}",
    "Half-seen requests waiting for their other half.",
);
const EXPIRED: Instrument = Instrument::counter(
    "otelcol_connector_servicegraph_expired_spans",
    "{spans}",
    "Half-seen requests whose other half never came, by what became of them.",
);
const DROPPED: Instrument = Instrument::counter(
    "otelcol_connector_servicegraph_dropped_spans",
    "{spans}",
    "Spans not counted: the store or the edge limit was full.",
);

/// `store`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// How long a half waits for its other half (default 2 s).
    #[serde(default, deserialize_with = "crate::config::opt_duration")]
    pub ttl: Option<Duration>,
    /// Halves held at most (default 1000).
    #[serde(default)]
    pub max_items: Option<usize>,
}

/// The `servicegraph` connector's configuration, in the Collector's shape.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceGraphConfig {
    /// Histogram bounds as durations (default 2 ms to 15 s).
    #[serde(default, deserialize_with = "super::spanmetrics::durations")]
    pub latency_histogram_buckets: Option<Vec<Duration>>,
    /// Span or resource attributes added as `client_<name>` and `server_<name>`.
    #[serde(default)]
    pub dimensions: Vec<String>,
    /// The store of half-seen requests.
    #[serde(default)]
    pub store: StoreConfig,
    /// Accepted for older configurations.
    #[serde(default, deserialize_with = "crate::config::opt_duration")]
    pub cache_loop: Option<Duration>,
    /// How often expired halves are looked for (default 2 s).
    #[serde(default, deserialize_with = "crate::config::opt_duration")]
    pub store_expiration_loop: Option<Duration>,
    /// Attributes of a client span that name the server it called when no server span
    /// comes (default `peer.service`, `db.name`, `db.system`).
    #[serde(default)]
    pub virtual_node_peer_attributes: Option<Vec<String>>,
    /// Add `virtual_node` (`client` or `server`) to edges with a virtual node.
    #[serde(default)]
    pub virtual_node_extra_label: bool,
    /// How often metrics are emitted (default 60 s).
    #[serde(default, deserialize_with = "crate::config::opt_duration")]
    pub metrics_flush_interval: Option<Duration>,
    /// The attribute naming a database, for `database` edges (default `db.name`).
    #[serde(default)]
    pub database_name_attribute: Option<String>,
    /// Edges held at most (default 10 000); requests on new edges beyond are counted
    /// dropped.
    #[serde(default)]
    pub max_edges: Option<usize>,
}

#[derive(Debug, Clone)]
struct Settings {
    bounds: Arc<[f64]>,
    dimensions: Vec<String>,
    ttl: Duration,
    max_items: usize,
    expire_every: Duration,
    peer_attributes: Vec<String>,
    extra_label: bool,
    flush_interval: Duration,
    db_attribute: String,
    max_edges: usize,
}

impl ServiceGraphConfig {
    fn settings(&self) -> Result<Settings, ConfigError> {
        let bounds: Vec<f64> = match &self.latency_histogram_buckets {
            Some(b) => b.iter().map(Duration::as_secs_f64).collect(),
            None => DEFAULT_BUCKETS_MS.iter().map(|b| b / 1000.0).collect(),
        };
        if bounds.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ConfigError::new(
                "latency_histogram_buckets",
                "bucket bounds must increase",
            ));
        }
        let max_items = self.store.max_items.unwrap_or(1000);
        if max_items == 0 {
            return Err(ConfigError::new("store.max_items", "must be positive"));
        }
        let ttl = self.store.ttl.unwrap_or(Duration::from_secs(2));
        if ttl.is_zero() {
            return Err(ConfigError::new("store.ttl", "must be positive"));
        }
        let flush_interval = self
            .metrics_flush_interval
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(60));
        Ok(Settings {
            bounds: bounds.into(),
            dimensions: self.dimensions.clone(),
            ttl,
            max_items,
            expire_every: self
                .store_expiration_loop
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(2)),
            peer_attributes: self
                .virtual_node_peer_attributes
                .clone()
                .unwrap_or_else(|| {
                    vec!["peer.service".into(), "db.name".into(), "db.system".into()]
                }),
            extra_label: self.virtual_node_extra_label,
            flush_interval,
            db_attribute: self
                .database_name_attribute
                .clone()
                .unwrap_or_else(|| "db.name".into()),
            max_edges: self.max_edges.unwrap_or(10_000),
        })
    }

    /// Check the configuration as the connector will on build.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.settings().map(drop)
    }
}

/// One half of a request.
#[derive(Debug, Clone, Default)]
struct Half {
    service: Arc<str>,
    seconds: f64,
    failed: bool,
    /// Each dimension found, by its index in `dimensions`.
    dims: Vec<(usize, AnyValue)>,
    /// Client half: the virtual peer it names, and whether it is a database.
    peer: Option<String>,
    database: Option<String>,
}

#[derive(Debug, Default)]
struct Pending {
    client: Option<Half>,
    server: Option<Half>,
    messaging: bool,
}

/// Bucket counts, count and sum of one duration histogram.
type HistCell = (Vec<u64>, u64, f64);

#[derive(Debug)]
struct Edge {
    attrs: Vec<KeyValue>,
    total: u64,
    failed: u64,
    server: HistCell,
    client: HistCell,
    start: u64,
}

#[derive(Debug, Default)]
struct State {
    pending: HashMap<[u8; 24], Pending, ahash::RandomState>,
    expiry: VecDeque<([u8; 24], Instant)>,
    /// By the edge's key: client, server, connection type, virtual node and dimensions,
    /// each length-prefixed (built in `scratch`, so a request on a known edge allocates
    /// nothing).
    edges: HashMap<Box<[u8]>, Edge, ahash::RandomState>,
    scratch: Vec<u8>,
}

fn key(trace_id: &[u8], span_id: &[u8]) -> Option<[u8; 24]> {
    if trace_id.len() != 16 || span_id.len() != 8 {
        return None;
    }
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(trace_id);
    k[16..].copy_from_slice(span_id);
    Some(k)
}

fn as_text(v: &AnyValue) -> String {
    as_string(v).into_owned()
}

#[derive(Debug)]
struct Inner {
    settings: Settings,
    state: Mutex<State>,
    next: Downstream<Metrics>,
    telemetry: Arc<ComponentTelemetry>,
    edges_gauge: Gauge,
    pending_gauge: Gauge,
    dropped: Counter,
    expired_virtual: Counter,
    expired_unpaired: Counter,
}

/// A span attribute's value as read from bytes (`None` for an array or a map, which only
/// decoding reads right).
fn owned(v: AnyRef<'_>) -> Option<AnyValue> {
    let value = match v {
        AnyRef::Str(s) => any_value::Value::StringValue(s.to_string()),
        AnyRef::Bool(b) => any_value::Value::BoolValue(b),
        AnyRef::Int(i) => any_value::Value::IntValue(i),
        AnyRef::Double(d) => any_value::Value::DoubleValue(d),
        AnyRef::Other => return None,
    };
    Some(AnyValue { value: Some(value) })
}

/// A resource's service name: its last `service.name`, as text ("" when absent).
fn service_of(resource: &[KeyValue]) -> Arc<str> {
    resource
        .iter()
        .rev()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref())
        .map_or_else(|| Arc::from(""), |v| Arc::from(as_string(v)))
}

impl Inner {
    /// The span attributes a half reads, in the order `attr` indexes them: the
    /// dimensions, the peer attributes, the database attribute.
    fn keys(&self) -> Vec<&str> {
        let s = &self.settings;
        s.dimensions
            .iter()
            .chain(&s.peer_attributes)
            .chain(std::iter::once(&s.db_attribute))
            .map(String::as_str)
            .collect()
    }

    /// One half of a request: `attr(i)` is the span's attribute named `keys()[i]`.
    fn half(
        &self,
        view: &SpanView<'_>,
        service: &Arc<str>,
        resource: &[KeyValue],
        client: bool,
        attr: &dyn Fn(usize) -> Option<AnyValue>,
    ) -> Half {
        let s = &self.settings;
        let (nd, np) = (s.dimensions.len(), s.peer_attributes.len());
        let dims = s
            .dimensions
            .iter()
            .enumerate()
            .filter_map(|(i, d)| {
                attr(i)
                    .or_else(|| first(resource, d).cloned())
                    .map(|v| (i, v))
            })
            .collect();
        let peer = client
            .then(|| (nd..nd + np).find_map(|i| attr(i).map(|v| as_text(&v))))
            .flatten();
        let database = client.then(|| attr(nd + np).map(|v| as_text(&v))).flatten();
        Half {
            service: Arc::clone(service),
            seconds: view.end.saturating_sub(view.start) as f64 / 1e9,
            failed: view.status == StatusCode::Error as i32,
            dims,
            peer,
            database,
        }
    }

    fn record(&self, batch: &Batch<Traces>) {
        let now = Instant::now();
        let mut state = self.state.lock();
        let read = batch
            .encoded()
            .is_some_and(|bytes| self.record_encoded(&mut state, bytes, now));
        if !read {
            self.record_decoded(&mut state, batch.data(), now);
        }
        self.expire(&mut state, now);
        self.pending_gauge.set(state.pending.len() as i64);
        self.edges_gauge.set(state.edges.len() as i64);
    }

    fn record_decoded(&self, state: &mut State, data: &ExportTraceServiceRequest, now: Instant) {
        let keys = self.keys();
        for rs in &data.resource_spans {
            let resource: &[KeyValue] = rs.resource.as_ref().map_or(&[], |r| &r.attributes);
            let service = service_of(resource);
            for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                let attr = |i: usize| first(&span.attributes, keys[i]).cloned();
                self.span(state, &SpanView::of(span), &service, resource, &attr, now);
            }
        }
    }

    /// The byte path: each span is read in place, and only its kind, ids, times, status
    /// and the attributes a half reads are looked at. `false` (nothing counted) if a
    /// resource does not decode.
    fn record_encoded(&self, state: &mut State, bytes: &[u8], now: Instant) -> bool {
        use otel_pipeline_core::wire::{Wire, fields};
        // Resources first, so that a failure leaves nothing counted.
        let mut resources = Vec::new();
        for (f, w) in fields(bytes) {
            let (1, Wire::Len(rs)) = (f, w) else {
                continue;
            };
            // Repeated resource fields merge, as prost reads them.
            let mut resource = Resource::default();
            for (f, w) in fields(rs) {
                if let (1, Wire::Len(r)) = (f, w)
                    && prost::Message::merge(&mut resource, r).is_err()
                {
                    return false;
                }
            }
            resources.push((rs, resource));
        }
        let keys = self.keys();
        let mut values: Vec<Option<AnyRef<'_>>> = vec![None; keys.len()];
        for (rs, resource) in &resources {
            let service = service_of(&resource.attributes);
            for (f, w) in fields(rs) {
                let (2, Wire::Len(ss)) = (f, w) else {
                    continue;
                };
                for (f, w) in fields(ss) {
                    let (2, Wire::Len(span)) = (f, w) else {
                        continue;
                    };
                    values.iter_mut().for_each(|v| *v = None);
                    let view = SpanView::read(span, &keys, &mut values);
                    if values.iter().any(|v| matches!(v, Some(AnyRef::Other))) {
                        // An array or map among the attributes read: decode this span.
                        let Some(decoded) = decode_span(span) else {
                            continue;
                        };
                        let attr = |i: usize| first(&decoded.attributes, keys[i]).cloned();
                        let view = SpanView::of(&decoded);
                        self.span(state, &view, &service, &resource.attributes, &attr, now);
                        continue;
                    }
                    let attr = |i: usize| values[i].and_then(owned);
                    self.span(state, &view, &service, &resource.attributes, &attr, now);
                }
            }
        }
        true
    }

    /// One span: a half stored to wait for its other half, or an edge completed.
    fn span(
        &self,
        state: &mut State,
        view: &SpanView<'_>,
        service: &Arc<str>,
        resource: &[KeyValue],
        attr: &dyn Fn(usize) -> Option<AnyValue>,
        now: Instant,
    ) {
        let (k, client, messaging) = match SpanKind::try_from(view.kind) {
            Ok(SpanKind::Client) => (key(view.trace_id, view.span_id), true, false),
            Ok(SpanKind::Producer) => (key(view.trace_id, view.span_id), true, true),
            Ok(SpanKind::Server) => (key(view.trace_id, view.parent), false, false),
            Ok(SpanKind::Consumer) => (key(view.trace_id, view.parent), false, true),
            _ => return,
        };
        let Some(k) = k else {
            // A server span without a parent: a request from outside.
            if !client {
                let half = self.half(view, service, resource, false, attr);
                self.complete(state, None, Some(&half), messaging, Some("client"));
            }
            return;
        };
        use std::collections::hash_map::Entry;
        let full = state.pending.len() >= self.settings.max_items;
        match state.pending.entry(k) {
            Entry::Vacant(_) if full => self.dropped.add(1),
            Entry::Vacant(v) => {
                let half = self.half(view, service, resource, client, attr);
                let (client, server) = if client {
                    (Some(half), None)
                } else {
                    (None, Some(half))
                };
                v.insert(Pending {
                    client,
                    server,
                    messaging,
                });
                state.expiry.push_back((k, now + self.settings.ttl));
            }
            Entry::Occupied(mut o) => {
                let half = self.half(view, service, resource, client, attr);
                let p = o.get_mut();
                p.messaging |= messaging;
                if client {
                    p.client = Some(half);
                } else {
                    p.server = Some(half);
                }
                if p.client.is_some() && p.server.is_some() {
                    let p = o.remove();
                    self.complete(
                        state,
                        p.client.as_ref(),
                        p.server.as_ref(),
                        p.messaging,
                        None,
                    );
                }
            }
        }
    }

    /// Halves whose wait is over: to a virtual node where one is named, else counted.
    fn expire(&self, state: &mut State, now: Instant) {
        while let Some((k, at)) = state.expiry.front().copied() {
            if at > now {
                break;
            }
            state.expiry.pop_front();
            let Some(p) = state.pending.remove(&k) else {
                continue;
            };
            match (p.client, p.server) {
                (Some(c), None) if c.peer.is_some() || c.database.is_some() => {
                    self.expired_virtual.add(1);
                    self.complete(state, Some(&c), None, p.messaging, Some("server"));
                }
                (None, Some(srv)) => {
                    self.expired_virtual.add(1);
                    self.complete(state, None, Some(&srv), p.messaging, Some("client"));
                }
                _ => self.expired_unpaired.add(1),
            }
        }
    }

    fn complete(
        &self,
        state: &mut State,
        client: Option<&Half>,
        server: Option<&Half>,
        messaging: bool,
        virtual_node: Option<&'static str>,
    ) {
        let s = &self.settings;
        let client_name = client.map_or("user", |c| &c.service);
        let server_name = match (server, client) {
            (Some(srv), _) => &srv.service,
            (None, Some(c)) => c.database.as_deref().or(c.peer.as_deref()).unwrap_or(""),
            (None, None) => return,
        };
        let connection_type = if messaging {
            "messaging_system"
        } else if server.is_none() && client.is_some_and(|c| c.database.is_some()) {
            "database"
        } else if virtual_node.is_some() {
            "virtual_node"
        } else {
            ""
        };
        let virtual_node = virtual_node.filter(|_| s.extra_label);
        let sides = [("client_", client), ("server_", server)];
        let mut key = std::mem::take(&mut state.scratch);
        key.clear();
        let part = |key: &mut Vec<u8>, b: &str| {
            key.extend_from_slice(&(b.len() as u32).to_le_bytes());
            key.extend_from_slice(b.as_bytes());
        };
        part(&mut key, client_name);
        part(&mut key, server_name);
        part(&mut key, connection_type);
        key.push(u8::from(virtual_node.is_some()));
        part(&mut key, virtual_node.unwrap_or(""));
        for (prefix, half) in sides {
            for (i, v) in half.iter().flat_map(|h| &h.dims) {
                key.push(prefix.as_bytes()[0]);
                part(&mut key, &s.dimensions[*i]);
                part(&mut key, &as_string(v));
            }
        }
        if let Some(edge) = state.edges.get_mut(key.as_slice()) {
            Self::count(edge, &s.bounds, client, server);
        } else if state.edges.len() >= s.max_edges {
            self.dropped.add(1);
        } else {
            let mut attrs = vec![
                kv("client", string_value(client_name)),
                kv("server", string_value(server_name)),
                kv("connection_type", string_value(connection_type)),
            ];
            if let Some(v) = virtual_node {
                attrs.push(kv("virtual_node", string_value(v)));
            }
            for (prefix, half) in sides {
                for (i, v) in half.iter().flat_map(|h| &h.dims) {
                    let name = format!("{prefix}{}", s.dimensions[*i]);
                    attrs.push(kv(&name, string_value(&as_string(v))));
                }
            }
            let n = s.bounds.len() + 1;
            let mut edge = Edge {
                attrs,
                total: 0,
                failed: 0,
                server: (vec![0; n], 0, 0.0),
                client: (vec![0; n], 0, 0.0),
                start: now_nanos(),
            };
            Self::count(&mut edge, &s.bounds, client, server);
            state.edges.insert(key.as_slice().into(), edge);
        }
        state.scratch = key;
    }

    /// One request on `edge`.
    fn count(edge: &mut Edge, bounds: &[f64], client: Option<&Half>, server: Option<&Half>) {
        edge.total += 1;
        if client.is_some_and(|c| c.failed) || server.is_some_and(|h| h.failed) {
            edge.failed += 1;
        }
        for (half, hist) in [(server, &mut edge.server), (client, &mut edge.client)] {
            if let Some(h) = half {
                let i = bounds.partition_point(|b| *b < h.seconds);
                hist.0[i] += 1;
                hist.1 += 1;
                hist.2 += h.seconds;
            }
        }
    }

    fn collect(&self) -> Option<ExportMetricsServiceRequest> {
        let now = Instant::now();
        let now_ns = now_nanos();
        let mut state = self.state.lock();
        self.expire(&mut state, now);
        self.pending_gauge.set(state.pending.len() as i64);
        if state.edges.is_empty() {
            return None;
        }
        let cumulative = AggregationTemporality::Cumulative as i32;
        let sum = |name: &str, f: &dyn Fn(&Edge) -> u64| Metric {
            name: name.into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: state
                    .edges
                    .values()
                    .map(|e| NumberDataPoint {
                        attributes: e.attrs.clone(),
                        start_time_unix_nano: e.start,
                        time_unix_nano: now_ns,
                        value: Some(number_data_point::Value::AsInt(f(e) as i64)),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: cumulative,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        let hist = |name: &str, f: &dyn Fn(&Edge) -> &HistCell| Metric {
            name: name.into(),
            unit: "s".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: state
                    .edges
                    .values()
                    .filter(|e| f(e).1 > 0)
                    .map(|e| {
                        let h = f(e);
                        HistogramDataPoint {
                            attributes: e.attrs.clone(),
                            start_time_unix_nano: e.start,
                            time_unix_nano: now_ns,
                            count: h.1,
                            sum: Some(h.2),
                            bucket_counts: h.0.clone(),
                            explicit_bounds: self.settings.bounds.to_vec(),
                            ..Default::default()
                        }
                    })
                    .collect(),
                aggregation_temporality: cumulative,
            })),
            ..Default::default()
        };
        let metrics = vec![
            sum("traces_service_graph_request_total", &|e| e.total),
            sum("traces_service_graph_request_failed_total", &|e| e.failed),
            hist("traces_service_graph_request_server", &|e| &e.server),
            hist("traces_service_graph_request_client", &|e| &e.client),
        ];
        Some(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource::default()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "servicegraphconnector".into(),
                        ..Default::default()
                    }),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        })
    }

    async fn flush(&self) {
        let Some(request) = self.collect() else {
            return;
        };
        let batch = Batch::<Metrics>::new(request);
        let n = batch.item_count();
        // Cumulative: what is refused goes out again, whole, next interval.
        match self.next.consume(batch).await {
            Ok(()) => self.telemetry.add_sent(n),
            Err(_) => self.telemetry.add_send_failed(n),
        }
    }
}

/// The consumer a [`ServiceGraph`] connector builds.
#[derive(Debug, Clone)]
pub struct ServiceGraphConsumer {
    inner: Arc<Inner>,
}

impl ServiceGraphConsumer {
    /// Emit the graph now, outside the flush interval.
    pub async fn flush(&self) {
        self.inner.flush().await;
    }
}

impl Consumer<Traces> for ServiceGraphConsumer {
    async fn consume(&self, batch: Batch<Traces>) -> Result<(), ConsumeError<Traces>> {
        self.inner.record(&batch);
        Ok(())
    }
}

/// The `servicegraph` connector (traces to metrics). See the [module docs](self).
#[derive(Debug, Clone)]
pub struct ServiceGraph {
    id: ComponentId,
    settings: Settings,
}

impl ServiceGraph {
    /// The connector for `config`; errors name the setting.
    #[allow(clippy::needless_pass_by_value)]
    pub fn new(config: ServiceGraphConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            id: ComponentId::new("servicegraph"),
            settings: config.settings()?,
        })
    }

    /// Under another id.
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }
}

impl Connector<Traces, Metrics> for ServiceGraph {
    type Consumer = ServiceGraphConsumer;

    fn id(&self) -> ComponentId {
        self.id.clone()
    }

    fn build(
        self,
        next: Downstream<Metrics>,
        ctx: &mut ComponentContext<'_>,
    ) -> Result<ServiceGraphConsumer, BuildError> {
        let t = ctx.telemetry();
        let inner = Arc::new(Inner {
            edges_gauge: t.gauge(&EDGES, &[]),
            pending_gauge: t.gauge(&PENDING, &[]),
            dropped: t.counter(&DROPPED, &[]),
            expired_virtual: t.counter(&EXPIRED, &[("outcome", "virtual_node")]),
            expired_unpaired: t.counter(&EXPIRED, &[("outcome", "unpaired")]),
            settings: self.settings,
            state: Mutex::new(State::default()),
            next,
            telemetry: t,
        });
        let (flusher, expirer) = (Arc::clone(&inner), Arc::clone(&inner));
        ctx.register_lifecycle(Arc::new(super::Periodic::new(
            inner.settings.flush_interval,
            Arc::new(move || {
                let inner = Arc::clone(&flusher);
                Box::pin(async move { inner.flush().await })
            }),
            Some((
                inner.settings.expire_every,
                Arc::new(move || {
                    let mut state = expirer.state.lock();
                    expirer.expire(&mut state, Instant::now());
                    expirer.pending_gauge.set(state.pending.len() as i64);
                }),
            )),
        )));
        Ok(ServiceGraphConsumer { inner })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otel_pipeline_core::proto::resource::v1::Resource;
    use otel_pipeline_core::proto::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
    use otel_pipeline_core::testing::SplitMix64;
    use prost::Message;

    fn inner(config: &str) -> Inner {
        use otel_pipeline_core::{ComponentKind, telemetry::ComponentTelemetry as T};
        let c: ServiceGraphConfig = crate::from_yaml("servicegraph", config).expect("config");
        let t = T::detached(
            ComponentKind::Exporter,
            ComponentId::new("servicegraph"),
            "spans",
        );
        Inner {
            edges_gauge: t.gauge(&EDGES, &[]),
            pending_gauge: t.gauge(&PENDING, &[]),
            dropped: t.counter(&DROPPED, &[]),
            expired_virtual: t.counter(&EXPIRED, &[("outcome", "virtual_node")]),
            expired_unpaired: t.counter(&EXPIRED, &[("outcome", "unpaired")]),
            settings: c.settings().expect("valid"),
            state: Mutex::new(State::default()),
            next: Downstream::new(Vec::<(String, otel_pipeline_core::BoxConsumer<Metrics>)>::new()),
            telemetry: t,
        }
    }

    /// Every data point with its metric's name, without timestamps, sorted.
    fn points(inner: &Inner) -> Vec<String> {
        // Halves still waiting expire: virtual nodes and unpaired counts too.
        {
            let mut state = inner.state.lock();
            inner.expire(&mut state, Instant::now() + Duration::from_secs(3600));
        }
        let mut out = Vec::new();
        let r = inner.collect().expect("edges");
        for m in r
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
        {
            match &m.data {
                Some(metric::Data::Sum(s)) => {
                    for p in &s.data_points {
                        let mut p = p.clone();
                        (p.start_time_unix_nano, p.time_unix_nano) = (0, 0);
                        out.push(format!("{} {p:?}", m.name));
                    }
                }
                Some(metric::Data::Histogram(h)) => {
                    for p in &h.data_points {
                        let mut p = p.clone();
                        (p.start_time_unix_nano, p.time_unix_nano) = (0, 0);
                        out.push(format!("{} {p:?}", m.name));
                    }
                }
                _ => {}
            }
        }
        out.sort();
        out
    }

    fn text(k: &str, v: &str) -> KeyValue {
        kv(k, string_value(v))
    }

    /// Requests of several services calling each other, databases and peers, with
    /// attributes the byte path reads and one it leaves to decoding (an array).
    fn request(rng: &mut SplitMix64) -> ExportTraceServiceRequest {
        let services = ["front", "orders", "stock"];
        let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); services.len()];
        for t in 0..30u64 {
            let trace_id = [t as u8 + 1; 16].to_vec();
            let (from, to) = (rng.below(3) as usize, rng.below(3) as usize);
            let client_id = [1, 2, 3, 4, 5, 6, 7, t as u8].to_vec();
            let mut client = Span {
                trace_id: trace_id.clone(),
                span_id: client_id.clone(),
                kind: if rng.below(4) == 0 { 4 } else { 3 }, // PRODUCER or CLIENT
                start_time_unix_nano: 1_000,
                end_time_unix_nano: 1_000 + rng.below(3_000_000_000),
                status: (rng.below(5) == 0).then(|| Status {
                    code: 2,
                    ..Default::default()
                }),
                ..Default::default()
            };
            match rng.below(5) {
                0 => client.attributes.push(text("db.name", "pg")),
                1 => client.attributes.push(text("peer.service", "billing")),
                2 => client.attributes.push(kv(
                    "tier",
                    AnyValue {
                        value: Some(any_value::Value::ArrayValue(Default::default())),
                    },
                )),
                _ => client.attributes.push(text("tier", "gold")),
            }
            client.attributes.push(text("noise", "x"));
            by_service[from].push(client);
            // Most calls are answered by a server span; some never are.
            if rng.below(4) > 0 {
                let server = Span {
                    trace_id,
                    span_id: [9; 8].to_vec(),
                    parent_span_id: client_id,
                    kind: 2 + 3 * u8::from(rng.below(4) == 0) as i32, // SERVER or CONSUMER
                    start_time_unix_nano: 2_000,
                    end_time_unix_nano: 2_000 + rng.below(2_000_000_000),
                    attributes: vec![
                        text("tier", "silver"),
                        kv(
                            "code",
                            AnyValue {
                                value: Some(any_value::Value::IntValue(7)),
                            },
                        ),
                    ],
                    ..Default::default()
                };
                by_service[to].push(server);
            }
            // A root server span and an internal span.
            by_service[to].push(Span {
                trace_id: [t as u8 + 100; 16].to_vec(),
                span_id: [8; 8].to_vec(),
                kind: 2,
                ..Default::default()
            });
            by_service[to].push(Span {
                kind: 1,
                ..Default::default()
            });
        }
        ExportTraceServiceRequest {
            resource_spans: by_service
                .into_iter()
                .zip(services)
                .map(|(spans, name)| ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![text("service.name", name), text("region", "eu")],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn the_byte_path_builds_the_same_graph_as_the_decoded_path() {
        let config = "dimensions: [tier, code, region]\nvirtual_node_extra_label: true\nstore: {max_items: 50}\n";
        for seed in 0..10u64 {
            let mut rng = SplitMix64::new(seed);
            let (decoded, encoded) = (inner(config), inner(config));
            for _ in 0..3 {
                let req = request(&mut rng);
                let bytes = req.encode_to_vec();
                decoded.record(&Batch::new(req));
                // The byte path itself (`record` takes it for a received batch).
                let mut state = encoded.state.lock();
                assert!(encoded.record_encoded(&mut state, &bytes, Instant::now()));
            }
            let (a, b) = (points(&decoded), points(&encoded));
            assert!(a.len() > 10, "{a:?}");
            assert_eq!(a, b, "seed {seed}");
            assert_eq!(decoded.dropped.get(), encoded.dropped.get());
        }
    }
}

//! `loadbalancing` for logs and metrics: each item goes to the endpoint its routing key
//! hashes to, over the same resolvers and rendezvous hashing as the trace router.
//!
//! Routing keys, as the Collector has them:
//! - logs: `traceID` (default; a record without a trace id goes by its resource) and
//!   `service`, and `resource`;
//! - metrics: `service` (default), `resource`, `metric` (resource and metric name) and
//!   `streamID` (resource, scope, metric name and the data point's attributes).
//!
//! Each endpoint has its own [`OtlpExporter`] (retry, sending queue, self-telemetry),
//! made and drained as the resolver's set changes. What an endpoint refuses is refused
//! to the caller, part by part, to be retried and routed again. The trace router's
//! grace table, health ejection and hand-back of an ejected endpoint's queue are for
//! traces; here an endpoint that leaves drains its queue before it goes.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use otel_pipeline_core::otlp::WireSignal;
use otel_pipeline_core::proto::collector::logs::v1::ExportLogsServiceRequest;
use otel_pipeline_core::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use otel_pipeline_core::proto::common::v1::KeyValue;
use otel_pipeline_core::proto::metrics::v1::{Metric, metric::Data};
use otel_pipeline_core::proto::resource::v1::Resource;
use otel_pipeline_core::{
    Batch, BoxError, BoxFuture, BuildError, Child, Children, ComponentContext, ComponentId,
    ConsumeError, Consumer, Exporter, Lifecycle, Logs, Metrics,
};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Rendezvous, Resolver, ResolverUpdates, RoutingKey, TraceRouterConfig, key_hash};
use crate::otlp::{OtlpExporter, OtlpExporterConsumer, with_scheme};

/// The signals [`KeyRouter`] routes, and how each splits a request by key: logs by
/// `traceID` (default; a record without one goes by its resource), `service` or
/// `resource`; metrics by `service` (default), `resource`, `metric` (resource and metric
/// name) or `streamID` (resource, scope, metric name and data point attributes).
pub trait KeyRouted: WireSignal {
    /// The routing key when the configuration gives none.
    const DEFAULT_KEY: RoutingKey;
    /// Whether `key` applies to this signal; else what to say.
    fn check(key: &RoutingKey) -> Result<(), String>;
    /// Split `data`: `owner` maps a key's hash to an endpoint index in `0..n`.
    fn split(
        data: Self::Data,
        key: &RoutingKey,
        n: usize,
        owner: &dyn Fn(u64) -> usize,
    ) -> Vec<(usize, Self::Data)>;
}

fn resource_key(resource: Option<&Resource>) -> Vec<u8> {
    let mut attrs: Vec<String> = resource
        .map(|r| {
            r.attributes
                .iter()
                .map(|kv| format!("{}={}", kv.key, super::value_text(kv.value.as_ref())))
                .collect()
        })
        .unwrap_or_default();
    attrs.sort();
    attrs.join("\u{1f}").into_bytes()
}

fn service_key(resource: Option<&Resource>) -> Vec<u8> {
    super::attr(resource, "service.name").into_bytes()
}

fn attrs_key(attrs: &[KeyValue]) -> String {
    let mut parts: Vec<String> = attrs
        .iter()
        .map(|kv| format!("{}={}", kv.key, super::value_text(kv.value.as_ref())))
        .collect();
    parts.sort();
    parts.join("\u{1f}")
}

/// `n` empty requests made by `empty`, filled by `place`, the empty ones left out.
fn parts<D>(
    n: usize,
    empty: impl Fn() -> D,
    is_empty: impl Fn(&D) -> bool,
    place: impl FnOnce(&mut Vec<D>),
) -> Vec<(usize, D)> {
    let mut out: Vec<D> = (0..n).map(|_| empty()).collect();
    place(&mut out);
    out.into_iter()
        .enumerate()
        .filter(|(_, d)| !is_empty(d))
        .collect()
}

impl KeyRouted for Logs {
    const DEFAULT_KEY: RoutingKey = RoutingKey::TraceId;

    fn check(key: &RoutingKey) -> Result<(), String> {
        match key {
            RoutingKey::TraceId | RoutingKey::Service | RoutingKey::Resource => Ok(()),
            _ => Err("logs route by traceID, service or resource".into()),
        }
    }

    fn split(
        data: ExportLogsServiceRequest,
        key: &RoutingKey,
        n: usize,
        owner: &dyn Fn(u64) -> usize,
    ) -> Vec<(usize, ExportLogsServiceRequest)> {
        parts(
            n,
            ExportLogsServiceRequest::default,
            |d| d.resource_logs.is_empty(),
            |out| {
                for mut rl in data.resource_logs {
                    let resource = rl.resource.as_ref();
                    let whole = match key {
                        RoutingKey::Service => Some(owner(key_hash(&service_key(resource)))),
                        RoutingKey::Resource => Some(owner(key_hash(&resource_key(resource)))),
                        _ => None,
                    };
                    if let Some(i) = whole {
                        out[i].resource_logs.push(rl);
                        continue;
                    }
                    // By trace id, record by record; no trace id: by resource.
                    let fallback = owner(key_hash(&resource_key(resource)));
                    let scopes = std::mem::take(&mut rl.scope_logs);
                    let mut per: BTreeMap<
                        usize,
                        otel_pipeline_core::proto::logs::v1::ResourceLogs,
                    > = BTreeMap::new();
                    for mut sl in scopes {
                        let records = std::mem::take(&mut sl.log_records);
                        let mut by: BTreeMap<usize, Vec<_>> = BTreeMap::new();
                        for r in records {
                            let i = if r.trace_id.iter().any(|b| *b != 0) {
                                owner(key_hash(&r.trace_id))
                            } else {
                                fallback
                            };
                            by.entry(i).or_default().push(r);
                        }
                        for (i, records) in by {
                            let mut s = sl.clone();
                            s.log_records = records;
                            per.entry(i)
                                .or_insert_with(|| {
                                    let mut g = rl.clone();
                                    g.scope_logs.clear();
                                    g
                                })
                                .scope_logs
                                .push(s);
                        }
                    }
                    for (i, g) in per {
                        out[i].resource_logs.push(g);
                    }
                }
            },
        )
    }
}

impl KeyRouted for Metrics {
    const DEFAULT_KEY: RoutingKey = RoutingKey::Service;

    fn check(key: &RoutingKey) -> Result<(), String> {
        match key {
            RoutingKey::Service
            | RoutingKey::Resource
            | RoutingKey::Metric
            | RoutingKey::StreamId => Ok(()),
            _ => Err("metrics route by service, resource, metric or streamID".into()),
        }
    }

    fn split(
        data: ExportMetricsServiceRequest,
        key: &RoutingKey,
        n: usize,
        owner: &dyn Fn(u64) -> usize,
    ) -> Vec<(usize, ExportMetricsServiceRequest)> {
        parts(
            n,
            ExportMetricsServiceRequest::default,
            |d| d.resource_metrics.is_empty(),
            |out| {
                for mut rm in data.resource_metrics {
                    let resource = rm.resource.as_ref();
                    match key {
                        RoutingKey::Metric | RoutingKey::StreamId => {}
                        RoutingKey::Resource => {
                            let i = owner(key_hash(&resource_key(resource)));
                            out[i].resource_metrics.push(rm);
                            continue;
                        }
                        _ => {
                            let i = owner(key_hash(&service_key(resource)));
                            out[i].resource_metrics.push(rm);
                            continue;
                        }
                    }
                    let rkey = String::from_utf8_lossy(&resource_key(resource)).into_owned();
                    let scopes = std::mem::take(&mut rm.scope_metrics);
                    let mut per: BTreeMap<
                        usize,
                        otel_pipeline_core::proto::metrics::v1::ResourceMetrics,
                    > = BTreeMap::new();
                    for mut sm in scopes {
                        let scope_name = sm
                            .scope
                            .as_ref()
                            .map(|s| s.name.clone())
                            .unwrap_or_default();
                        let metrics = std::mem::take(&mut sm.metrics);
                        let mut by: BTreeMap<usize, Vec<Metric>> = BTreeMap::new();
                        for m in metrics {
                            if matches!(key, RoutingKey::Metric) {
                                let i =
                                    owner(key_hash(format!("{rkey}\u{1e}{}", m.name).as_bytes()));
                                by.entry(i).or_default().push(m);
                                continue;
                            }
                            // streamID: each data point by its own stream.
                            let stream = |attrs: &[KeyValue]| {
                                owner(key_hash(
                                    format!(
                                        "{rkey}\u{1e}{scope_name}\u{1e}{}\u{1e}{}",
                                        m.name,
                                        attrs_key(attrs)
                                    )
                                    .as_bytes(),
                                ))
                            };
                            let mut split: BTreeMap<usize, Metric> = BTreeMap::new();
                            macro_rules! by_point {
                                ($variant:ident, $d:expr) => {{
                                    for p in std::mem::take(&mut $d.data_points) {
                                        let i = stream(&p.attributes);
                                        let entry = split.entry(i).or_insert_with(|| {
                                            let mut c = m.clone();
                                            if let Some(Data::$variant(x)) = &mut c.data {
                                                x.data_points.clear();
                                            }
                                            c
                                        });
                                        if let Some(Data::$variant(x)) = &mut entry.data {
                                            x.data_points.push(p);
                                        }
                                    }
                                }};
                            }
                            let mut m2 = m.clone();
                            match &mut m2.data {
                                Some(Data::Gauge(g)) => by_point!(Gauge, g),
                                Some(Data::Sum(s)) => by_point!(Sum, s),
                                Some(Data::Histogram(h)) => by_point!(Histogram, h),
                                Some(Data::ExponentialHistogram(h)) => {
                                    by_point!(ExponentialHistogram, h)
                                }
                                Some(Data::Summary(s)) => by_point!(Summary, s),
                                None => {
                                    split.insert(stream(&[]), m.clone());
                                }
                            }
                            for (i, part) in split {
                                by.entry(i).or_default().push(part);
                            }
                        }
                        for (i, metrics) in by {
                            let mut s = sm.clone();
                            s.metrics = metrics;
                            per.entry(i)
                                .or_insert_with(|| {
                                    let mut g = rm.clone();
                                    g.scope_metrics.clear();
                                    g
                                })
                                .scope_metrics
                                .push(s);
                        }
                    }
                    for (i, g) in per {
                        out[i].resource_metrics.push(g);
                    }
                }
            },
        )
    }
}

/// The `loadbalancing` exporter for logs or metrics: each item goes to the endpoint its
/// routing key hashes to (see [`KeyRouted`] for the keys of each signal), over the trace
/// router's resolvers and rendezvous hashing, with one OTLP exporter per endpoint. What
/// an endpoint refuses is refused to the caller, to be retried and routed again; an
/// endpoint that leaves drains its queue before it goes.
///
/// ```
/// use otel_exporters::loadbalancing::{KeyRouter, RoutingKey, TraceRouterConfig};
/// use otel_pipeline_core::Metrics;
/// let config = TraceRouterConfig::from_yaml(
///     "exporters.loadbalancing",
///     "protocol: { otlp: { tls: { insecure: true } } }\nresolver: { static: { hostnames: [gw-0:4317, gw-1:4317] } }",
/// )?;
/// let router = KeyRouter::<Metrics>::new(config, Some(RoutingKey::StreamId));
/// # let _ = router;
/// # Ok::<(), otel_pipeline_core::config::ConfigError>(())
/// ```
pub struct KeyRouter<S> {
    id: ComponentId,
    config: TraceRouterConfig,
    key: RoutingKey,
    resolver: Option<Arc<dyn Resolver>>,
    _signal: PhantomData<fn() -> S>,
}

impl<S> fmt::Debug for KeyRouter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRouter")
            .field("id", &self.id)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl<S: KeyRouted> KeyRouter<S> {
    /// A router for `config`; `key` is the routing key (`None`: the signal's default).
    pub fn new(config: TraceRouterConfig, key: Option<RoutingKey>) -> Self {
        Self {
            id: ComponentId::new("loadbalancing"),
            config,
            key: key.unwrap_or(S::DEFAULT_KEY),
            resolver: None,
            _signal: PhantomData,
        }
    }

    /// Use another id.
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }

    /// Take endpoints from `resolver` instead of `config.resolver`.
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }
}

struct Endpoint<S: KeyRouted> {
    name: String,
    child: Child<OtlpExporterConsumer<S>>,
}

struct Set<S: KeyRouted> {
    ring: Rendezvous,
    endpoints: Vec<Arc<Endpoint<S>>>,
}

struct KeyInner<S: KeyRouted> {
    id: ComponentId,
    config: TraceRouterConfig,
    key: RoutingKey,
    resolver: Arc<dyn Resolver>,
    children: Children,
    set: RwLock<Arc<Set<S>>>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    telemetry: Arc<otel_pipeline_core::ComponentTelemetry>,
}

impl<S: KeyRouted> KeyInner<S> {
    /// Make the set `names`: new endpoints get a started exporter, gone ones drain.
    async fn apply(&self, names: Vec<String>, deadline: Duration) {
        let current = Arc::clone(&self.set.read());
        let mut endpoints = Vec::with_capacity(names.len());
        for name in &names {
            if let Some(e) = current.endpoints.iter().find(|e| &e.name == name) {
                endpoints.push(Arc::clone(e));
                continue;
            }
            let mut config = self.config.otlp.clone();
            config.endpoint = with_scheme(name, self.config.insecure);
            let exporter = OtlpExporter::<S>::new(config)
                .with_id(ComponentId::new("otlp").with_name(name.clone()));
            match self.children.exporter::<S, _>(exporter) {
                Ok(child) => {
                    if let Err(e) = child.start().await {
                        tracing::warn!(exporter = %self.id, endpoint = %name, "endpoint did not start: {e}");
                        continue;
                    }
                    endpoints.push(Arc::new(Endpoint {
                        name: name.clone(),
                        child,
                    }));
                }
                Err(e) => tracing::warn!(exporter = %self.id, endpoint = %name, "endpoint: {e}"),
            }
        }
        let ring = Rendezvous::new(endpoints.iter().map(|e| e.name.clone()));
        let gone: Vec<Arc<Endpoint<S>>> = current
            .endpoints
            .iter()
            .filter(|e| !names.contains(&e.name))
            .cloned()
            .collect();
        *self.set.write() = Arc::new(Set { ring, endpoints });
        for e in gone {
            let _ = e.child.shutdown(Instant::now() + deadline).await;
        }
    }
}

/// The consumer a [`KeyRouter`] builds.
pub struct KeyRouterConsumer<S: KeyRouted> {
    inner: Arc<KeyInner<S>>,
}

impl<S: KeyRouted> fmt::Debug for KeyRouterConsumer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRouterConsumer")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

impl<S: KeyRouted> KeyRouterConsumer<S> {
    /// The endpoints routed to now.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner
            .set
            .read()
            .endpoints
            .iter()
            .map(|e| e.name.clone())
            .collect()
    }
}

impl<S: KeyRouted> Consumer<S> for KeyRouterConsumer<S> {
    async fn consume(&self, batch: Batch<S>) -> Result<(), ConsumeError<S>> {
        let set = Arc::clone(&self.inner.set.read());
        if set.endpoints.is_empty() {
            return Err(ConsumeError::refused(batch, "no endpoint to route to yet"));
        }
        let client = batch.client.clone();
        let n = set.endpoints.len();
        let parts = S::split(batch.into_data(), &self.inner.key, n, &|h| {
            set.ring.owner(h)
        });
        let mut refused: Option<Batch<S>> = None;
        let mut rejected = None;
        for (i, data) in parts {
            let mut part = Batch::<S>::new(data);
            part.client.clone_from(&client);
            let items = part.item_count();
            match set.endpoints[i].child.consumer().consume(part).await {
                Ok(()) => self.inner.telemetry.add_sent(items),
                Err(ConsumeError::Refused(r)) => match &mut refused {
                    Some(b) => b.append(r.batch),
                    None => refused = Some(r.batch),
                },
                Err(e) => rejected = Some(e),
            }
        }
        match (refused, rejected) {
            (Some(b), _) => Err(ConsumeError::refused(b, "an endpoint refused its part")),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(()),
        }
    }
}

struct KeyLifecycle<S: KeyRouted>(Arc<KeyInner<S>>, ResolverMetrics);

#[derive(Clone)]
struct ResolverMetrics {
    ok: otel_pipeline_core::telemetry::Counter,
    failed: otel_pipeline_core::telemetry::Counter,
}

impl<S: KeyRouted> Lifecycle for KeyLifecycle<S> {
    fn start(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let inner = Arc::clone(&self.0);
            let (tx, mut rx) = watch::channel(None);
            let failures = Arc::new(tokio::sync::Notify::new());
            let updates = ResolverUpdates {
                tx,
                succeeded: self.1.ok.clone(),
                failed: self.1.failed.clone(),
                failures: Arc::clone(&failures),
            };
            let resolver = Arc::clone(&inner.resolver);
            let mut stop = inner.stop.subscribe();
            let resolving = tokio::spawn(async move {
                tokio::select! {
                    _ = resolver.run(updates) => {}
                    _ = super::stopped(&mut stop) => {}
                }
            });
            // The first answer, if it comes soon, before data flows.
            let first = tokio::time::timeout(Duration::from_secs(5), async {
                tokio::select! {
                    r = rx.wait_for(Option::is_some) => r.ok().and_then(|v| v.clone()),
                    _ = failures.notified() => None,
                }
            })
            .await
            .ok()
            .flatten();
            if let Some(set) = first {
                inner.apply(set, inner.config.drain_timeout).await;
            }
            let mut stop = inner.stop.subscribe();
            let follower = Arc::clone(&inner);
            let membership = tokio::spawn(async move {
                loop {
                    tokio::select! {
                        changed = rx.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            let set = rx.borrow_and_update().clone();
                            if let Some(set) = set {
                                follower.apply(set, follower.config.drain_timeout).await;
                            }
                        }
                        _ = super::stopped(&mut stop) => return,
                    }
                }
            });
            inner.tasks.lock().extend([resolving, membership]);
            Ok(())
        })
    }

    fn shutdown(&self, deadline: Instant) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let inner = &self.0;
            let _ = inner.stop.send(true);
            let tasks = std::mem::take(&mut *inner.tasks.lock());
            for t in tasks {
                let _ = tokio::time::timeout_at(deadline, t).await;
            }
            let set = std::mem::replace(
                &mut *inner.set.write(),
                Arc::new(Set {
                    ring: Rendezvous::new(Vec::<String>::new()),
                    endpoints: Vec::new(),
                }),
            );
            let mut failures = Vec::new();
            for e in &set.endpoints {
                if let Err(err) = e.child.shutdown(deadline).await {
                    failures.push(format!("{}: {err}", e.name));
                }
            }
            if failures.is_empty() {
                Ok(())
            } else {
                Err(failures.join("; ").into())
            }
        })
    }
}

impl<S: KeyRouted> Exporter<S> for KeyRouter<S> {
    type Consumer = KeyRouterConsumer<S>;

    fn id(&self) -> ComponentId {
        self.id.clone()
    }

    fn build(self, ctx: &mut ComponentContext<'_>) -> Result<KeyRouterConsumer<S>, BuildError> {
        S::check(&self.key).map_err(|m| ctx.invalid("routing_key", m))?;
        let resolver = super::resolver_of(&self.config, self.resolver, ctx)?;
        let telemetry = ctx.telemetry();
        let kind = resolver.kind();
        let metrics = ResolverMetrics {
            ok: telemetry.counter(
                &super::instruments::NUM_RESOLUTIONS,
                &[("resolver", kind), ("success", "true")],
            ),
            failed: telemetry.counter(
                &super::instruments::NUM_RESOLUTIONS,
                &[("resolver", kind), ("success", "false")],
            ),
        };
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(KeyInner {
            id: self.id,
            config: self.config,
            key: self.key,
            resolver,
            children: ctx.children(),
            set: RwLock::new(Arc::new(Set {
                ring: Rendezvous::new(Vec::<String>::new()),
                endpoints: Vec::new(),
            })),
            stop,
            tasks: Mutex::new(Vec::new()),
            telemetry,
        });
        ctx.register_lifecycle(Arc::new(KeyLifecycle(Arc::clone(&inner), metrics)));
        Ok(KeyRouterConsumer { inner })
    }
}

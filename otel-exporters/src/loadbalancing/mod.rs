//! The trace router (`loadbalancing`): every span of a trace reaches the same endpoint,
//! while endpoints come, go and fail.
//!
//! The agent tier puts it last in its pipeline, in front of the gateway replicas that
//! tail-sample. It owns one [`OtlpExporter`] per endpoint (each with its own retry,
//! sending queue and self-telemetry, built at run time through the core's
//! [`Children`]), splits every batch by routing key, and sends each part to the endpoint
//! that owns it.
//!
//! # Guarantees
//! - **One owner.** Owners come from rendezvous hashing of the trace id over the current
//!   set ([`Rendezvous`]): a pure function of the set, so every agent agrees. A part
//!   never reaches an endpoint that does not own it. Splitting keeps the resource and
//!   scope structure and copies each resource at most once per endpoint and batch.
//! - **No split traces on changes.** When the set changes, a trace that has already sent
//!   spans to an endpoint keeps going there for `grace_period`, through a bounded table
//!   of recent trace ids. New traces use the new set at once.
//! - **Nothing lost when an endpoint leaves.** Its exporter is withdrawn: the batches in
//!   its queue, and the one it may be retrying, are routed again to their new owners,
//!   never dropped and never sent to it. Then its exporter is shut down.
//! - **Failing endpoints step aside.** An endpoint whose attempts fail
//!   `health.failure_threshold` times in a row is ejected: its keys move to their next
//!   owner, its batches go there too, and it is probed with an empty request every
//!   `health.probe_interval` until it answers, when it returns.
//!
//! What cannot be delivered is counted with a reason (`reroute_failed`,
//! `shutdown_deadline`), never dropped silently.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use otel_exporters::loadbalancing::{TraceRouter, TraceRouterConfig};
//! use otel_pipeline_core::{Pipeline, DirectReceiver};
//!
//! let config = TraceRouterConfig::from_yaml(
//!     "exporters.loadbalancing",
//!     "protocol: { otlp: { tls: { insecure: true } } }\n\
//!      resolver: { static: { hostnames: [gw-0:4317, gw-1:4317, gw-2:4317] } }",
//! )?;
//! let (receiver, _sender) = DirectReceiver::new();
//! let built = Pipeline::traces().receiver(receiver).exporter(TraceRouter::new(config)).build()?;
//! # drop(built); Ok(()) }
//! ```

mod config;
mod grace;
mod hash;
mod keyed;
mod resolver;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

pub use config::{HealthConfig, ResolverConfig, RoutingKey, TraceRouterConfig};
pub use hash::{Rendezvous, key_hash};
pub use keyed::{KeyRouted, KeyRouter, KeyRouterConsumer};
pub use resolver::{DnsLookup, DnsResolver, Resolver, ResolverUpdates, StaticResolver};

use otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline_core::proto::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use otel_pipeline_core::proto::resource::v1::Resource;
use otel_pipeline_core::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
use otel_pipeline_core::telemetry::{Counter, Gauge, Histogram};
use otel_pipeline_core::{
    Batch, BoxError, BoxFuture, BuildError, Child, Children, ComponentContext, ComponentId,
    ComponentTelemetry, ConsumeError, Consumer, Exporter, Lifecycle, Telemetry, Traces,
};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::otlp::{AttemptOutcome, OtlpExporter, OtlpExporterConsumer, SenderHooks, with_scheme};
use grace::{GraceTable, Route};

/// The router's own instruments, under the Collector's `loadbalancing` names where it
/// has them.
mod instruments {
    use otel_pipeline_core::telemetry::Instrument;

    pub(super) const NUM_BACKENDS: Instrument = Instrument::gauge(
        "otelcol_loadbalancer_num_backends",
        "{backends}",
        "Endpoints the router sends to now (resolved and not ejected).",
    );
    pub(super) const NUM_BACKEND_UPDATES: Instrument = Instrument::counter(
        "otelcol_loadbalancer_num_backend_updates",
        "{updates}",
        "Times the set of endpoints changed.",
    );
    pub(super) const NUM_RESOLUTIONS: Instrument = Instrument::counter(
        "otelcol_loadbalancer_num_resolutions",
        "{resolutions}",
        "Resolutions of the endpoint set, by success.",
    );
    pub(super) const BACKEND_OUTCOME: Instrument = Instrument::counter(
        "otelcol_loadbalancer_backend_outcome",
        "{requests}",
        "Export attempts per endpoint, by success.",
    );
    pub(super) const BACKEND_LATENCY: Instrument = Instrument::histogram(
        "otelcol_loadbalancer_backend_latency",
        "ms",
        "Time of each export attempt per endpoint.",
        &[1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000],
    );
    pub(super) const ROUTED: Instrument = Instrument::counter(
        "otelcol_loadbalancer_routed_spans",
        "{spans}",
        "Spans handed to each endpoint's exporter.",
    );
    pub(super) const REROUTED: Instrument = Instrument::counter(
        "otelcol_loadbalancer_rerouted_spans",
        "{spans}",
        "Spans an endpoint gave back (removed, ejected, or out of retries) and sent to their next owner.",
    );
    pub(super) const EJECTIONS: Instrument = Instrument::counter(
        "otelcol_loadbalancer_ejections",
        "{ejections}",
        "Endpoints taken out of the set after repeated failures.",
    );
    pub(super) const RETURNS: Instrument = Instrument::counter(
        "otelcol_loadbalancer_returns",
        "{returns}",
        "Ejected endpoints that answered a probe and came back.",
    );
    pub(super) const GRACE_PINNED: Instrument = Instrument::counter(
        "otelcol_loadbalancer_grace_pinned_spans",
        "{spans}",
        "Spans sent to their trace's earlier endpoint during a grace period.",
    );
    pub(super) const GRACE_ENTRIES: Instrument = Instrument::gauge(
        "otelcol_loadbalancer_grace_table_entries",
        "{traces}",
        "Trace ids the grace table holds.",
    );
    pub(super) const GRACE_FULL: Instrument = Instrument::counter(
        "otelcol_loadbalancer_grace_table_full",
        "{traces}",
        "Traces not remembered because the grace table was full.",
    );
}

/// The trace router: an [`Exporter`] of traces. See the [module docs](self).
#[derive(Debug)]
pub struct TraceRouter {
    id: ComponentId,
    config: TraceRouterConfig,
    resolver: Option<Arc<dyn Resolver>>,
}

impl TraceRouter {
    /// A router with id `loadbalancing`, resolving endpoints as `config.resolver` says.
    pub fn new(config: TraceRouterConfig) -> Self {
        Self {
            id: ComponentId::new("loadbalancing"),
            config,
            resolver: None,
        }
    }

    /// Use another id.
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }

    /// Take endpoints from `resolver` instead of `config.resolver` (the Kubernetes
    /// resolver from `otel-k8s`, a DNS resolver with its own lookup, or a user's own).
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }
}

impl Exporter<Traces> for TraceRouter {
    type Consumer = TraceRouterConsumer;

    fn id(&self) -> ComponentId {
        self.id.clone()
    }

    fn build(self, ctx: &mut ComponentContext<'_>) -> Result<TraceRouterConsumer, BuildError> {
        let config = self.config;
        if matches!(
            config.routing_key,
            RoutingKey::Metric | RoutingKey::StreamId
        ) {
            return Err(ctx.invalid(
                "routing_key",
                "traces route by traceID, service, resource or attributes",
            ));
        }
        let resolver = resolver_of(&config, self.resolver, ctx)?;
        if config.grace_period.as_secs() > u64::from(u32::MAX) {
            return Err(ctx.invalid("grace_period", "too long"));
        }
        if config.drain_timeout.is_zero() {
            return Err(ctx.invalid("drain_timeout", "must be positive"));
        }
        // Check the per-endpoint exporter settings now, on a throwaway copy, so a bad
        // `protocol.otlp` fails the build rather than every endpoint at run time.
        let probe = Children::detached(Telemetry::new(), ctx.pipeline(), self.id.clone());
        let mut sample = config.otlp.clone();
        sample.endpoint = with_scheme("127.0.0.1:4317", config.insecure);
        probe
            .exporter::<Traces, _>(OtlpExporter::<Traces>::new(sample))
            .map_err(|e| match e {
                BuildError::InvalidConfig { path, message, .. } => {
                    ctx.invalid(format!("protocol.otlp.{path}"), message)
                }
                other => other,
            })?;

        let telemetry = ctx.telemetry();
        let kind = resolver.kind();
        let t = &telemetry;
        let metrics = RouterMetrics {
            backends: t.gauge(&instruments::NUM_BACKENDS, &[("resolver", kind)]),
            updates: t.counter(&instruments::NUM_BACKEND_UPDATES, &[("resolver", kind)]),
            resolved_ok: t.counter(
                &instruments::NUM_RESOLUTIONS,
                &[("resolver", kind), ("success", "true")],
            ),
            resolved_failed: t.counter(
                &instruments::NUM_RESOLUTIONS,
                &[("resolver", kind), ("success", "false")],
            ),
            grace_pinned: t.counter(&instruments::GRACE_PINNED, &[]),
            grace_entries: t.gauge(&instruments::GRACE_ENTRIES, &[]),
            grace_full: t.counter(&instruments::GRACE_FULL, &[]),
        };
        let (stop_tx, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            grace: Mutex::new(GraceTable::new(
                config.grace_table_size,
                config.grace_period.as_secs().max(1) as u32,
            )),
            config,
            resolver,
            children: ctx.children(),
            ring: RwLock::new(Arc::new(Ring::default())),
            backends: tokio::sync::Mutex::new(Membership::default()),
            next_uid: AtomicU32::new(1),
            origin: Instant::now(),
            last_change: AtomicU64::new(u64::MAX),
            drains: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            stop: stop_tx,
            eject_tx: Mutex::new(None),
            metrics,
            telemetry: Arc::clone(&telemetry),
        });
        ctx.register_lifecycle(Arc::new(RouterLifecycle(Arc::clone(&inner))));
        Ok(TraceRouterConsumer { inner })
    }
}

/// The resolver `config.resolver` names, or `custom` (a Kubernetes resolver).
fn resolver_of(
    config: &TraceRouterConfig,
    custom: Option<Arc<dyn Resolver>>,
    ctx: &ComponentContext<'_>,
) -> Result<Arc<dyn Resolver>, BuildError> {
    let resolver: Arc<dyn Resolver> = match (custom, &config.resolver) {
        (Some(r), _) => r,
        (None, ResolverConfig::Static { hostnames }) => {
            if hostnames.is_empty() {
                return Err(ctx.invalid("resolver.static.hostnames", "needs at least one endpoint"));
            }
            for (i, h) in hostnames.iter().enumerate() {
                config::check_endpoint(h)
                    .map_err(|m| ctx.invalid(format!("resolver.static.hostnames[{i}]"), m))?;
            }
            Arc::new(StaticResolver::new(hostnames.clone()))
        }
        (
            None,
            ResolverConfig::Dns {
                hostname,
                port,
                interval,
                timeout,
            },
        ) => Arc::new(DnsResolver::new(
            hostname.clone(),
            *port,
            *interval,
            *timeout,
        )),
        (None, ResolverConfig::K8s { .. }) => {
            return Err(ctx.invalid(
                "resolver.k8s",
                "needs the Kubernetes resolver from otel-k8s, passed with TraceRouter::with_resolver",
            ));
        }
    };
    Ok(resolver)
}

/// How many times the router routes spans again when their endpoint left the set while
/// it sent them.
const ROUTE_ROUNDS: usize = 4;

#[derive(Debug)]
struct RouterMetrics {
    backends: Gauge,
    updates: Counter,
    resolved_ok: Counter,
    resolved_failed: Counter,
    grace_pinned: Counter,
    grace_entries: Gauge,
    grace_full: Counter,
}

/// One endpoint: its exporter, health and counters.
struct Backend {
    uid: u32,
    endpoint: String,
    child: Child<OtlpExporterConsumer<Traces>>,
    withdraw: watch::Sender<bool>,
    routed: Counter,
    rerouted: Counter,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("endpoint", &self.endpoint)
            .field("uid", &self.uid)
            .finish_non_exhaustive()
    }
}

/// Consecutive failures of one endpoint, fed by its exporter's attempts.
#[derive(Debug, Default)]
struct BackendHealth {
    failures: AtomicU32,
    reported: AtomicBool,
}

/// The set being routed to: endpoints sorted as [`Rendezvous`] sorts them.
#[derive(Debug, Default)]
struct Ring {
    set: Rendezvous,
    backends: Vec<Arc<Backend>>,
}

impl Ring {
    fn index_of_uid(&self, uid: u32) -> Option<usize> {
        self.backends.iter().position(|b| b.uid == uid)
    }
}

/// What the membership task owns: the resolved set, the backends built for it, and the
/// ejected endpoints with their next probe.
#[derive(Debug, Default)]
struct Membership {
    resolved: Vec<String>,
    live: BTreeMap<String, Arc<Backend>>,
    ejected: BTreeMap<String, Instant>,
}

struct Inner {
    config: TraceRouterConfig,
    resolver: Arc<dyn Resolver>,
    children: Children,
    ring: RwLock<Arc<Ring>>,
    grace: Mutex<GraceTable>,
    backends: tokio::sync::Mutex<Membership>,
    next_uid: AtomicU32,
    origin: Instant,
    /// Second (since `origin`) of the last change of the set; `u64::MAX` before any.
    last_change: AtomicU64,
    drains: Mutex<Vec<JoinHandle<()>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stopping: AtomicBool,
    stop: watch::Sender<bool>,
    eject_tx: Mutex<Option<mpsc::UnboundedSender<String>>>,
    metrics: RouterMetrics,
    telemetry: Arc<ComponentTelemetry>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceRouter")
            .field("resolver", &self.resolver)
            .field("endpoints", &self.ring.read().set.names())
            .finish_non_exhaustive()
    }
}

/// The consumer a [`TraceRouter`] builds.
#[derive(Debug, Clone)]
pub struct TraceRouterConsumer {
    inner: Arc<Inner>,
}

impl TraceRouterConsumer {
    /// The endpoints routed to now, sorted.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.ring.read().set.names().to_vec()
    }
}

impl Consumer<Traces> for TraceRouterConsumer {
    async fn consume(&self, batch: Batch<Traces>) -> Result<(), ConsumeError<Traces>> {
        self.inner.route(batch).await
    }
}

impl Inner {
    fn now_s(&self) -> u32 {
        self.origin.elapsed().as_secs().min(u64::from(u32::MAX)) as u32
    }

    fn ring(&self) -> Arc<Ring> {
        Arc::clone(&self.ring.read())
    }

    /// Route `batch` to its endpoints: parts that endpoints refuse (full queues) come
    /// back to the caller as one refusal. Spans an endpoint refuses because it left the set
    /// meanwhile are routed again, at most `ROUTE_ROUNDS` times; what is still refused
    /// then goes back to the caller as a refusal. Every span is delivered, rejected
    /// (counted by the endpoint) or refused: none leaves uncounted.
    async fn route(&self, batch: Batch<Traces>) -> Result<(), ConsumeError<Traces>> {
        let client = batch.client.clone();
        let mut batch = batch;
        let mut rejected = 0usize;
        let mut reasons = String::new();
        for _round in 0..ROUTE_ROUNDS {
            let ring = self.ring();
            if ring.backends.is_empty() {
                self.telemetry.add_enqueue_failed(batch.item_count());
                return Err(ConsumeError::refused(
                    batch,
                    "trace router has no endpoints (none resolved, or all ejected)",
                ));
            }
            let parts = self.split(batch, &ring, None);
            let Sent {
                refused,
                retry_after,
                left: again,
                rejected: r,
                reason,
            } = self.send_parts(&ring, parts, &client, false).await;
            if r > 0 {
                rejected += r;
                reasons = reason;
            }
            if refused.item_count() == 0 {
                break;
            }
            if !again {
                self.telemetry.add_enqueue_failed(refused.item_count());
                let mut refused = refused;
                refused.client = client;
                let mut e = ConsumeError::refused(refused, "an endpoint's sending queue is full");
                if let ConsumeError::Refused(r) = &mut e {
                    r.retry_after = retry_after;
                }
                return Err(e);
            }
            batch = refused;
            batch.client = client.clone();
            if _round + 1 == ROUTE_ROUNDS {
                // The set kept changing under every round: nothing may leave uncounted, so
                // what is left goes back to the caller, which retries it (back-pressure).
                self.telemetry.add_enqueue_failed(batch.item_count());
                let mut e = ConsumeError::refused(
                    batch,
                    "the trace router's endpoints kept changing while it routed",
                );
                if let ConsumeError::Refused(r) = &mut e {
                    r.retry_after = Some(Duration::from_millis(100));
                }
                return Err(e);
            }
        }
        if rejected > 0 {
            return Err(ConsumeError::rejected(rejected, reasons));
        }
        Ok(())
    }

    /// Hand each part to its endpoint's exporter. Returns what was refused (merged), the
    /// earliest `retry_after` of a refusal from an endpoint still in the set, whether an
    /// endpoint that has left refused (route again at once), and the rejected items.
    async fn send_parts(
        &self,
        ring: &Ring,
        parts: Vec<(usize, Batch<Traces>)>,
        client: &Option<Arc<otel_pipeline_core::ClientInfo>>,
        rerouted: bool,
    ) -> Sent {
        let mut sent = Sent::default();
        for (i, mut batch) in parts {
            let backend = &ring.backends[i];
            let n = batch.item_count() as u64;
            batch.client.clone_from(client);
            match backend.child.consumer().consume(batch).await {
                Ok(()) => {
                    backend.routed.add(n);
                    if rerouted {
                        backend.rerouted.add(n);
                    }
                }
                Err(ConsumeError::Refused(r)) => {
                    if self.is_current(backend) {
                        sent.retry_after = sent.retry_after.or(r.retry_after);
                    } else {
                        sent.left = true;
                    }
                    sent.refused.append(r.batch);
                }
                // Counted by the endpoint that rejected it.
                Err(ConsumeError::Rejected(r)) => {
                    sent.rejected += r.items;
                    sent.reason = r.reason.into_owned();
                }
            }
        }
        sent
    }

    fn is_current(&self, backend: &Backend) -> bool {
        self.ring
            .read()
            .backends
            .iter()
            .any(|b| b.uid == backend.uid)
    }

    /// Send a batch an endpoint gave back to the owners its keys have without it,
    /// retrying refusals until `drain_timeout` (or the shutdown deadline), then counting
    /// what is left as dropped with reason `reroute_failed`.
    async fn reroute(&self, batch: Batch<Traces>, from: &str) {
        let client = batch.client.clone();
        let mut data = batch;
        let give_up = Instant::now() + self.config.drain_timeout;
        let mut backoff = Duration::from_millis(20);
        loop {
            let ring = self.ring();
            let exclude = ring.set.names().iter().position(|n| n == from);
            let usable = ring.backends.len() - usize::from(exclude.is_some());
            if usable > 0 {
                let parts = self.split(data, &ring, exclude);
                let refused = self.send_parts(&ring, parts, &client, true).await.refused;
                if refused.item_count() == 0 {
                    return;
                }
                data = refused;
            }
            let stopping = self.stopping.load(Ordering::Acquire);
            if stopping || Instant::now() + backoff >= give_up {
                let n = data.item_count();
                let reason = if stopping {
                    otel_pipeline_core::DropReason::SHUTDOWN_DEADLINE
                } else {
                    otel_pipeline_core::DropReason::REROUTE_FAILED
                };
                self.telemetry.add_dropped(reason, n);
                tracing::warn!(
                    spans = n,
                    endpoint = from,
                    reason = reason.as_str(),
                    "trace router: could not route spans again"
                );
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Split `batch` by owner over `ring` (without the endpoint at `exclude`). Routing by
    /// trace id cuts a batch of bytes as bytes (ADR 005); the other keys decode it.
    fn split(
        &self,
        batch: Batch<Traces>,
        ring: &Ring,
        exclude: Option<usize>,
    ) -> Vec<(usize, Batch<Traces>)> {
        let n = ring.backends.len();
        if n == 1 && exclude.is_none() {
            return vec![(0, batch)];
        }
        let owner_of = |h: u64| match exclude {
            None => ring.set.owner(h),
            Some(x) => ring.set.owner_among(h, |i| i != x).unwrap_or(0),
        };
        match &self.config.routing_key {
            RoutingKey::TraceId => {
                let grace_on = !self.config.grace_period.is_zero() && exclude.is_none();
                if !grace_on {
                    return split_by_trace_id_of(batch, n, |id| owner_of(key_hash(id)));
                }
                let now = self.now_s();
                let changed = self.last_change.load(Ordering::Acquire);
                let pinning = changed != u64::MAX
                    && u64::from(now) <= changed + self.config.grace_period.as_secs();
                let mut grace = self.grace.lock();
                let pinned_before = grace.pinned;
                let full_before = grace.full;
                let mut owner = |id: &[u8]| {
                    let h = key_hash(id);
                    let owner = owner_of(h);
                    let uid = ring.backends[owner].uid;
                    match grace.route(h, now, uid, pinning, |u| ring.index_of_uid(u).is_some()) {
                        Route::Owner => owner,
                        Route::Pinned(u) => ring.index_of_uid(u).unwrap_or(owner),
                    }
                };
                let parts = split_by_trace_id_of(batch, n, &mut owner);
                self.metrics.grace_pinned.add(grace.pinned - pinned_before);
                self.metrics.grace_full.add(grace.full - full_before);
                self.metrics.grace_entries.set(grace.len() as i64);
                parts
            }
            // Refused when the router is built: metrics keys.
            RoutingKey::Service | RoutingKey::Metric | RoutingKey::StreamId => {
                let client = batch.client.clone();
                let parts = split_resources(batch.into_data(), n, |r| {
                    owner_of(key_hash(attr(r, "service.name").as_bytes()))
                });
                with_client(parts, &client)
            }
            RoutingKey::Resource => {
                let client = batch.client.clone();
                let parts = split_resources(batch.into_data(), n, |r| {
                    let mut attrs: Vec<String> = r
                        .map(|r| {
                            r.attributes
                                .iter()
                                .map(|kv| format!("{}={}", kv.key, value_text(kv.value.as_ref())))
                                .collect()
                        })
                        .unwrap_or_default();
                    attrs.sort();
                    owner_of(key_hash(attrs.join("\u{1f}").as_bytes()))
                });
                with_client(parts, &client)
            }
            RoutingKey::Attributes(names) => {
                let client = batch.client.clone();
                let parts = split_spans(batch.into_data(), n, |resource, scope, span| {
                    let mut key = String::new();
                    for name in names {
                        let found = find(&span.attributes, name)
                            .or_else(|| scope.and_then(|s| find(&s.attributes, name)))
                            .or_else(|| resource.and_then(|r| find(&r.attributes, name)));
                        if let Some(v) = found {
                            key.push_str(&value_text(Some(v)));
                            key.push('\u{1f}');
                        }
                    }
                    if key.is_empty() {
                        owner_of(key_hash(&span.trace_id))
                    } else {
                        owner_of(key_hash(key.as_bytes()))
                    }
                });
                with_client(parts, &client)
            }
        }
    }

    /// The persistent queue's subdirectory for `endpoint`: the router's own name, then
    /// the endpoint.
    fn queue_owner(&self, endpoint: &str) -> Option<String> {
        self.config
            .otlp
            .queue
            .storage
            .as_ref()
            .map(|s| format!("{}_{endpoint}", s.owner))
    }

    /// With persistent queues: the queue directories of endpoints no longer in the set
    /// (a restart after the gateways moved: new pod addresses) are each opened by an
    /// exporter withdrawn from the start, which hands what it replays back to the router,
    /// to go to the endpoints that own those traces now. Directories that hold nothing
    /// are removed.
    async fn adopt_orphans(self: &Arc<Self>, live: &[String]) {
        let Some(storage) = self.config.otlp.queue.storage.clone() else {
            return;
        };
        let mine: Vec<std::path::PathBuf> = live
            .iter()
            .filter_map(|e| self.queue_owner(e))
            .map(|o| storage.storage.owner_dir(&o))
            .collect();
        let prefix = storage
            .storage
            .owner_dir(&format!("{}_", storage.owner))
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Ok(entries) = std::fs::read_dir(&storage.storage.directory) else {
            return;
        };
        let mut orphans: Vec<std::path::PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                    && !mine.contains(p)
            })
            .collect();
        orphans.sort();
        for dir in orphans {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let empty = otel_pipeline_core::storage::inspect(&dir, 256 << 20)
                .is_ok_and(|r| r.held() == 0 && r.corrupt() == 0);
            if empty {
                // Nothing to send; another process would hold its lock while it runs.
                if let Ok(lock) = std::fs::File::open(dir.join("LOCK"))
                    && lock.try_lock().is_ok()
                {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                continue;
            }
            match self
                .add_backend_as("orphaned-queue", Some(name.clone()), true)
                .await
            {
                Ok(b) => {
                    tracing::info!(queue = %name, "trace router: re-routing what a departed endpoint's persistent queue held");
                    self.retire(b);
                }
                Err(e) => {
                    tracing::warn!(queue = %name, error = %e, "trace router: could not open a departed endpoint's persistent queue");
                }
            }
        }
    }

    /// Build, start and add an endpoint's exporter.
    async fn add_backend(self: &Arc<Self>, endpoint: &str) -> Result<Arc<Backend>, BoxError> {
        self.add_backend_as(endpoint, self.queue_owner(endpoint), false)
            .await
    }

    /// Build and start an exporter for `endpoint` whose persistent queue (if any) lives
    /// under `owner`; `withdrawn_now`: hand everything back from the start.
    async fn add_backend_as(
        self: &Arc<Self>,
        endpoint: &str,
        owner: Option<String>,
        withdrawn_now: bool,
    ) -> Result<Arc<Backend>, BoxError> {
        let mut config = self.config.otlp.clone();
        config.endpoint = with_scheme(endpoint, self.config.insecure);
        if let (Some(storage), Some(owner)) = (&mut config.queue.storage, owner) {
            storage.owner = owner;
        }
        let (withdraw, withdrawn) = watch::channel(withdrawn_now);
        let health = Arc::new(BackendHealth::default());
        let t = &self.telemetry;
        let ok = t.counter(
            &instruments::BACKEND_OUTCOME,
            &[("endpoint", endpoint), ("success", "true")],
        );
        let failed = t.counter(
            &instruments::BACKEND_OUTCOME,
            &[("endpoint", endpoint), ("success", "false")],
        );
        let latency: Histogram =
            t.histogram(&instruments::BACKEND_LATENCY, &[("endpoint", endpoint)]);
        let threshold = self.config.health.failure_threshold;
        let observe = {
            let health = Arc::clone(&health);
            let endpoint = endpoint.to_string();
            let eject = self.eject_tx.lock().clone();
            Arc::new(move |outcome: AttemptOutcome, took: Duration| {
                latency.record(took.as_millis().min(u128::from(u64::MAX)) as u64);
                match outcome {
                    AttemptOutcome::Sent => {
                        ok.add(1);
                        health.failures.store(0, Ordering::Relaxed);
                    }
                    // The endpoint answered: it is alive, the data was bad.
                    AttemptOutcome::Permanent => {
                        failed.add(1);
                        health.failures.store(0, Ordering::Relaxed);
                    }
                    AttemptOutcome::Retryable => {
                        failed.add(1);
                        let n = health.failures.fetch_add(1, Ordering::Relaxed) + 1;
                        if threshold > 0
                            && n >= threshold
                            && !health.reported.swap(true, Ordering::AcqRel)
                            && let Some(tx) = &eject
                        {
                            let _ = tx.send(endpoint.clone());
                        }
                    }
                }
            }) as Arc<_>
        };
        let hand_back = {
            let weak: Weak<Inner> = Arc::downgrade(self);
            let endpoint = endpoint.to_string();
            Arc::new(move |batch: Batch<Traces>| {
                let weak = weak.clone();
                let endpoint = endpoint.clone();
                Box::pin(async move {
                    if let Some(inner) = weak.upgrade() {
                        inner.reroute(batch, &endpoint).await;
                    }
                }) as BoxFuture<'static, ()>
            }) as Arc<_>
        };
        let mut exporter = OtlpExporter::<Traces>::new(config)
            .with_id(ComponentId::new("otlp").with_name(endpoint.to_string()));
        exporter.hooks = SenderHooks {
            observe: Some(observe),
            hand_back: Some(hand_back),
            withdrawn: Some(withdrawn),
        };
        let child = self.children.exporter::<Traces, _>(exporter)?;
        child.start().await?;
        Ok(Arc::new(Backend {
            uid: self.next_uid.fetch_add(1, Ordering::Relaxed),
            endpoint: endpoint.to_string(),
            routed: t.counter(&instruments::ROUTED, &[("endpoint", endpoint)]),
            rerouted: t.counter(&instruments::REROUTED, &[("endpoint", endpoint)]),
            child,
            withdraw,
        }))
    }

    /// Withdraw a backend: what it holds goes to the new owners, then it shuts down.
    fn retire(&self, backend: Arc<Backend>) {
        let _ = backend.withdraw.send(true);
        let deadline = Instant::now() + self.config.drain_timeout;
        let task = tokio::spawn(async move {
            if let Err(e) = backend.child.shutdown(deadline).await {
                tracing::warn!(endpoint = %backend.endpoint, error = %e, "trace router: endpoint did not drain cleanly");
            }
        });
        let mut drains = self.drains.lock();
        drains.retain(|t| !t.is_finished());
        drains.push(task);
    }

    /// Make the ring match the resolved set minus the ejected endpoints.
    async fn reconcile(self: &Arc<Self>, m: &mut Membership) {
        let excluded = |e: &str| {
            self.config
                .exclude_endpoints
                .iter()
                .any(|x| config::bare_endpoint(x) == config::bare_endpoint(e))
        };
        let wanted: Vec<String> = m
            .resolved
            .iter()
            .filter(|e| !m.ejected.contains_key(*e) && !excluded(e))
            .cloned()
            .collect();
        let gone: Vec<String> = m
            .live
            .keys()
            .filter(|e| !wanted.contains(e))
            .cloned()
            .collect();
        let mut changed = false;
        for endpoint in &wanted {
            if m.live.contains_key(endpoint) {
                continue;
            }
            match self.add_backend(endpoint).await {
                Ok(b) => {
                    m.live.insert(endpoint.clone(), b);
                    changed = true;
                }
                Err(e) => {
                    tracing::warn!(endpoint = %endpoint, error = %e, "trace router: could not build an exporter for the endpoint");
                }
            }
        }
        let mut retired = Vec::new();
        for endpoint in gone {
            if let Some(b) = m.live.remove(&endpoint) {
                retired.push(b);
                changed = true;
            }
        }
        if !changed {
            return;
        }
        let set = Rendezvous::new(m.live.keys());
        let backends = set
            .names()
            .iter()
            .filter_map(|n| m.live.get(n).cloned())
            .collect();
        let ring = Arc::new(Ring { set, backends });
        if !retired.is_empty() && !ring.backends.is_empty() {
            let gone: Vec<u32> = retired.iter().map(|b| b.uid).collect();
            self.grace
                .lock()
                .repoint(&gone, |h| ring.backends[ring.set.owner(h)].uid);
        }
        *self.ring.write() = ring;
        self.last_change
            .store(u64::from(self.now_s()), Ordering::Release);
        self.metrics.updates.add(1);
        self.metrics.backends.set(m.live.len() as i64);
        tracing::info!(endpoints = ?m.live.keys().collect::<Vec<_>>(), "trace router: endpoint set changed");
        // Withdraw only once the new ring is in place, so what they give back finds
        // its new owners.
        for b in retired {
            self.retire(b);
        }
    }

    /// The membership task: follows the resolver, ejects failing endpoints and probes
    /// them back in.
    async fn run_membership(
        self: Arc<Self>,
        mut resolved: watch::Receiver<Option<Vec<String>>>,
        mut ejections: mpsc::UnboundedReceiver<String>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut probe = tokio::time::interval(
            self.config
                .health
                .probe_interval
                .min(Duration::from_secs(1)),
        );
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => return,
                changed = resolved.changed() => {
                    if changed.is_err() { return; }
                    let set = resolved.borrow_and_update().clone();
                    if let Some(set) = set {
                        let mut m = self.backends.lock().await;
                        m.resolved = set;
                        let Membership { resolved, ejected, .. } = &mut *m;
                        ejected.retain(|e, _| resolved.contains(e));
                        self.reconcile(&mut m).await;
                    }
                }
                Some(endpoint) = ejections.recv() => {
                    let mut m = self.backends.lock().await;
                    if m.live.contains_key(&endpoint) && !m.ejected.contains_key(&endpoint) {
                        m.ejected.insert(endpoint.clone(), Instant::now() + self.config.health.probe_interval);
                        self.telemetry.counter(&instruments::EJECTIONS, &[("endpoint", &endpoint)]).add(1);
                        tracing::warn!(endpoint = %endpoint, "trace router: endpoint ejected after repeated failures");
                        self.reconcile(&mut m).await;
                    }
                }
                _ = probe.tick() => {
                    let due: Vec<String> = {
                        let m = self.backends.lock().await;
                        m.ejected.iter().filter(|(_, at)| **at <= Instant::now()).map(|(e, _)| e.clone()).collect()
                    };
                    for endpoint in due {
                        let healthy = self.probe(&endpoint).await;
                        let mut m = self.backends.lock().await;
                        if healthy {
                            m.ejected.remove(&endpoint);
                            self.telemetry.counter(&instruments::RETURNS, &[("endpoint", &endpoint)]).add(1);
                            tracing::info!(endpoint = %endpoint, "trace router: ejected endpoint answered a probe and returns");
                            self.reconcile(&mut m).await;
                        } else if let Some(at) = m.ejected.get_mut(&endpoint) {
                            *at = Instant::now() + self.config.health.probe_interval;
                        }
                    }
                }
            }
        }
    }

    /// Send an empty request to `endpoint`: does it answer?
    async fn probe(&self, endpoint: &str) -> bool {
        let mut config = self.config.otlp.clone();
        config.endpoint = with_scheme(endpoint, self.config.insecure);
        config.queue.enabled = false;
        config.retry.enabled = false;
        let children = Children::detached(Telemetry::new(), "probe", ComponentId::new("probe"));
        let Ok(child) = children.exporter::<Traces, _>(OtlpExporter::<Traces>::new(config)) else {
            return false;
        };
        if child.start().await.is_err() {
            return false;
        }
        let healthy = child
            .consumer()
            .consume(Batch::new(ExportTraceServiceRequest::default()))
            .await
            .is_ok();
        let _ = child
            .shutdown(Instant::now() + Duration::from_secs(1))
            .await;
        healthy
    }
}

struct RouterLifecycle(Arc<Inner>);

impl Lifecycle for RouterLifecycle {
    fn start(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let inner = &self.0;
            let (tx, rx) = watch::channel(None);
            let failures = Arc::new(tokio::sync::Notify::new());
            let updates = ResolverUpdates {
                tx,
                succeeded: inner.metrics.resolved_ok.clone(),
                failed: inner.metrics.resolved_failed.clone(),
                failures: Arc::clone(&failures),
            };
            let (eject_tx, eject_rx) = mpsc::unbounded_channel();
            *inner.eject_tx.lock() = Some(eject_tx);
            let resolver = Arc::clone(&inner.resolver);
            let mut stop = inner.stop.subscribe();
            let resolving = tokio::spawn(async move {
                tokio::select! {
                    _ = resolver.run(updates) => {}
                    _ = stopped(&mut stop) => {}
                }
            });
            // Apply the first answer before data flows, if it comes soon; a failed first
            // resolution ends the wait (the membership task applies later answers).
            let mut first = rx.clone();
            let initial = tokio::time::timeout(Duration::from_secs(5), async {
                tokio::select! {
                    r = first.wait_for(Option::is_some) => r.ok().and_then(|v| v.clone()),
                    _ = failures.notified() => None,
                }
            })
            .await
            .ok()
            .flatten();
            if let Some(set) = initial {
                let mut m = inner.backends.lock().await;
                m.resolved = set;
                inner.reconcile(&mut m).await;
                let live: Vec<String> = m.live.keys().cloned().collect();
                drop(m);
                inner.adopt_orphans(&live).await;
            }
            let membership = tokio::spawn(Arc::clone(inner).run_membership(
                rx,
                eject_rx,
                inner.stop.subscribe(),
            ));
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
            // Endpoints still in the set drain to themselves; removed ones finish
            // handing back what they held (to endpoints that are still running).
            let drains = std::mem::take(&mut *inner.drains.lock());
            for d in drains {
                if tokio::time::timeout_at(deadline, d).await.is_err() {
                    break;
                }
            }
            inner.stopping.store(true, Ordering::Release);
            let live: Vec<Arc<Backend>> = {
                let mut m = inner.backends.lock().await;
                std::mem::take(&mut m.live).into_values().collect()
            };
            *inner.ring.write() = Arc::new(Ring::default());
            let mut failures = Vec::new();
            for b in live {
                if let Err(e) = b.child.shutdown(deadline).await {
                    failures.push(format!("{}: {e}", b.endpoint));
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

/// What [`Inner::send_parts`] could not place.
struct Sent {
    refused: Batch<Traces>,
    retry_after: Option<Duration>,
    left: bool,
    rejected: usize,
    reason: String,
}

impl Default for Sent {
    fn default() -> Self {
        Self {
            refused: Batch::new(ExportTraceServiceRequest::default()),
            retry_after: None,
            left: false,
            rejected: 0,
            reason: String::new(),
        }
    }
}

/// Split `batch` over `n` endpoints by the owner of each span's trace id: as bytes when
/// it holds them (ADR 005), decoded otherwise.
fn split_by_trace_id_of(
    batch: Batch<Traces>,
    n: usize,
    mut owner: impl FnMut(&[u8]) -> usize,
) -> Vec<(usize, Batch<Traces>)> {
    if let Some(parts) = batch.split_encoded(n, &mut owner) {
        return parts;
    }
    let client = batch.client.clone();
    let parts = split_spans(batch.into_data(), n, |_, _, span| owner(&span.trace_id));
    with_client(parts, &client)
}

/// Decoded parts as batches, each with the client of the batch they came from.
fn with_client(
    parts: Vec<(usize, ExportTraceServiceRequest)>,
    client: &Option<Arc<otel_pipeline_core::ClientInfo>>,
) -> Vec<(usize, Batch<Traces>)> {
    parts
        .into_iter()
        .map(|(i, data)| {
            let mut part = Batch::new(data);
            part.client.clone_from(client);
            (i, part)
        })
        .collect()
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

fn attr(resource: Option<&Resource>, key: &str) -> String {
    resource
        .and_then(|r| find(&r.attributes, key))
        .map(|v| value_text(Some(v)))
        .unwrap_or_default()
}

fn value_text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// Split span by span: `owner` says where each span goes. Resources and scopes are
/// cloned once per endpoint that gets spans of them; spans are moved, never cloned.
fn split_spans(
    data: ExportTraceServiceRequest,
    n: usize,
    mut owner: impl FnMut(Option<&Resource>, Option<&InstrumentationScope>, &Span) -> usize,
) -> Vec<(usize, ExportTraceServiceRequest)> {
    let mut out: Vec<ExportTraceServiceRequest> = (0..n).map(|_| Default::default()).collect();
    let mut owners: Vec<u32> = Vec::new();
    let mut sizes = vec![0usize; n];
    for rs in data.resource_spans {
        let ResourceSpans {
            resource,
            scope_spans,
            schema_url,
        } = rs;
        // Which endpoints already have this resource (the last entry of their list).
        let mut has_resource = vec![false; n];
        for ss in scope_spans {
            let ScopeSpans {
                scope,
                spans,
                schema_url: scope_schema,
            } = ss;
            owners.clear();
            sizes.iter_mut().for_each(|s| *s = 0);
            let mut last: Option<(&[u8], usize)> = None;
            for span in &spans {
                let o = match last {
                    Some((id, o)) if id == span.trace_id.as_slice() => o,
                    _ => {
                        let o = owner(resource.as_ref(), scope.as_ref(), span).min(n - 1);
                        last = Some((&span.trace_id, o));
                        o
                    }
                };
                owners.push(o as u32);
                sizes[o] += 1;
            }
            let mut scopes: Vec<Option<Vec<Span>>> = sizes
                .iter()
                .map(|&s| (s > 0).then(|| Vec::with_capacity(s)))
                .collect();
            for (span, &o) in spans.into_iter().zip(&owners) {
                if let Some(v) = &mut scopes[o as usize] {
                    v.push(span);
                }
            }
            for (e, spans) in scopes.into_iter().enumerate() {
                let Some(spans) = spans else { continue };
                if !has_resource[e] {
                    out[e].resource_spans.push(ResourceSpans {
                        resource: resource.clone(),
                        scope_spans: Vec::new(),
                        schema_url: schema_url.clone(),
                    });
                    has_resource[e] = true;
                }
                if let Some(r) = out[e].resource_spans.last_mut() {
                    r.scope_spans.push(ScopeSpans {
                        scope: scope.clone(),
                        spans,
                        schema_url: scope_schema.clone(),
                    });
                }
            }
        }
    }
    out.into_iter()
        .enumerate()
        .filter(|(_, d)| !d.resource_spans.is_empty())
        .collect()
}

/// Split resource by resource: every span of a resource goes where `owner` says.
fn split_resources(
    data: ExportTraceServiceRequest,
    n: usize,
    mut owner: impl FnMut(Option<&Resource>) -> usize,
) -> Vec<(usize, ExportTraceServiceRequest)> {
    let mut out: Vec<ExportTraceServiceRequest> = (0..n).map(|_| Default::default()).collect();
    for rs in data.resource_spans {
        let o = owner(rs.resource.as_ref()).min(n - 1);
        out[o].resource_spans.push(rs);
    }
    out.into_iter()
        .enumerate()
        .filter(|(_, d)| !d.resource_spans.is_empty())
        .collect()
}

/// Split a request over `endpoints` by trace id, as the router does with no grace
/// table: for benches and for checking a routing decision offline. Returns, per part,
/// the index into `endpoints.names()` and the part.
pub fn split_by_trace_id(
    data: ExportTraceServiceRequest,
    endpoints: &Rendezvous,
) -> Vec<(usize, ExportTraceServiceRequest)> {
    if endpoints.is_empty() {
        return Vec::new();
    }
    split_spans(data, endpoints.len(), |_, _, span| {
        endpoints.owner(key_hash(&span.trace_id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use otel_pipeline_core::Signal;
    use otel_pipeline_core::testing::generate_traces;

    fn count(data: &ExportTraceServiceRequest) -> usize {
        Traces::item_count(data)
    }

    /// Several resources, spans of many traces interleaved within each scope.
    fn interleaved(seed: u64) -> ExportTraceServiceRequest {
        let mut rng = otel_pipeline_core::testing::SplitMix64::new(seed);
        let mut out = ExportTraceServiceRequest::default();
        for k in 0..3 {
            let mut part = generate_traces(20, 4, seed * 10 + k);
            for rs in &mut part.resource_spans {
                rs.resource = Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!("svc-{k}"))),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                });
                for ss in &mut rs.scope_spans {
                    for i in (1..ss.spans.len()).rev() {
                        let j = rng.below(i as u64 + 1) as usize;
                        ss.spans.swap(i, j);
                    }
                }
            }
            Traces::merge(&mut out, part);
        }
        out
    }

    #[test]
    fn the_byte_split_sends_what_the_decoded_split_sends() {
        use prost::Message as _;
        for seed in 0..10 {
            let data = interleaved(seed);
            let set = Rendezvous::new(["a:1", "b:1", "c:1"]);
            let decoded = split_by_trace_id(data.clone(), &set);
            let batch = Batch::<Traces>::from_encoded(data.encode_to_vec().into()).expect("valid");
            let bytes = batch
                .split_encoded(set.len(), |id| set.owner(key_hash(id)))
                .expect("a batch of bytes splits as bytes");
            assert_eq!(decoded.len(), bytes.len(), "seed {seed}: same endpoints");
            for ((i, d), (j, b)) in decoded.iter().zip(&bytes) {
                assert_eq!(i, j);
                assert_eq!(
                    b.item_count(),
                    count(d),
                    "seed {seed}: counted from the bytes"
                );
                assert_eq!(
                    b.data(),
                    d,
                    "seed {seed}: endpoint {i} gets the same request"
                );
            }
        }
    }

    #[test]
    fn split_keeps_structure_and_moves_every_span_once() {
        let data = generate_traces(50, 7, 3);
        let total = count(&data);
        let set = Rendezvous::new(["a:1", "b:1", "c:1", "d:1"]);
        let parts = split_by_trace_id(data.clone(), &set);
        assert_eq!(parts.iter().map(|(_, p)| count(p)).sum::<usize>(), total);
        for (i, part) in &parts {
            for rs in &part.resource_spans {
                let original = data
                    .resource_spans
                    .iter()
                    .find(|r| r.resource == rs.resource)
                    .expect("resource kept");
                for ss in &rs.scope_spans {
                    assert!(original.scope_spans.iter().any(|o| o.scope == ss.scope));
                    for span in &ss.spans {
                        assert_eq!(set.owner(key_hash(&span.trace_id)), *i);
                    }
                }
            }
            // One copy of each resource per endpoint.
            let mut seen = Vec::new();
            for rs in &part.resource_spans {
                assert!(!seen.contains(&&rs.resource));
                seen.push(&rs.resource);
            }
        }
    }
}

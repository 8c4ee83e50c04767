//! The `k8sattributes` processor: find each batch's pod and add its metadata to the
//! resource.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use otel_pipeline_core::proto::common::v1::{AnyValue, KeyValue, any_value};
use otel_pipeline_core::proto::resource::v1::Resource;
use otel_pipeline_core::telemetry::{Counter, Gauge, Instrument};
use otel_pipeline_core::{
    Batch, BoxError, BoxFuture, BuildError, ComponentContext, ComponentId, ConsumeError, Consumer,
    Lifecycle, Processor, Traces,
};
use parking_lot::Mutex;
use regex::Regex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cache::{Keep, PodMetadataCache, PodRecord};
use crate::config::{AuthType, From, K8sAttributesConfig, METADATA};

mod instruments {
    use super::Instrument;
    pub(super) const PODS: Instrument = Instrument::gauge(
        "otelcol_processor_k8sattributes_pods",
        "{pods}",
        "Pods held in the metadata cache (deleted ones within their grace included).",
    );
    pub(super) const WATCH_RESTARTS: Instrument = Instrument::counter(
        "otelcol_processor_k8sattributes_watch_restarts",
        "{restarts}",
        "Times a watch of the API server failed and was retried with backoff.",
    );
    pub(super) const SYNCS: Instrument = Instrument::counter(
        "otelcol_processor_k8sattributes_relists",
        "{lists}",
        "Full lists of the watched pods (the first sync, and re-lists such as after 410 Gone).",
    );
    pub(super) const LOOKUPS: Instrument = Instrument::counter(
        "otelcol_processor_k8sattributes_lookups",
        "{batches}",
        "Resource lookups by association rule and result (hit, or miss when no rule found a pod).",
    );
    pub(super) const HELD: Instrument = Instrument::counter(
        "otelcol_processor_k8sattributes_held_spans",
        "{spans}",
        "Spans held because their pod was not in the cache yet (the start-up race).",
    );
    pub(super) const RELEASED: Instrument = Instrument::counter(
        "otelcol_processor_k8sattributes_released_spans",
        "{spans}",
        "Held spans passed on: enriched when the pod arrived, unenriched when it did not in time, or at once when the hold was full (overflow).",
    );
    pub(super) const OWNER_LOOKUPS: Instrument = Instrument::counter(
        "otelcol_processor_k8sattributes_replicaset_lookups",
        "{requests}",
        "ReplicaSets fetched from the API server to find their Deployment, by result.",
    );
}

/// The `k8sattributes` processor. See [`K8sAttributesConfig`].
#[derive(Clone)]
pub struct K8sAttributes {
    id: ComponentId,
    config: K8sAttributesConfig,
    client: Option<kube::Client>,
}

impl std::fmt::Debug for K8sAttributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("K8sAttributes")
            .field("id", &self.id)
            .field("config", &self.config)
            .field("client", &self.client.is_some())
            .finish()
    }
}

impl K8sAttributes {
    /// A processor with id `k8sattributes`.
    pub fn new(config: K8sAttributesConfig) -> Self {
        Self {
            id: ComponentId::new("k8sattributes"),
            config,
            client: None,
        }
    }

    /// Use another id.
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }

    /// Use this client instead of one made from `auth_type` (tests, custom auth).
    pub fn with_client(mut self, client: kube::Client) -> Self {
        self.client = Some(client);
        self
    }
}

enum Source {
    Attribute(String),
    Connection,
}

struct Extract {
    tag: Option<String>,
    key: Option<String>,
    regex: Option<Regex>,
    from: From,
    label: bool,
}

/// A namespace's labels and annotations.
type NamespaceMeta = (BTreeMap<String, String>, BTreeMap<String, String>);

/// Labels and annotations of nodes or namespaces by name, following a metadata watch.
/// A re-list (`Init` .. `InitDone`, at the start and after a watch restarts or gets `410
/// Gone`) replaces the table with what it listed when it ends, so an object deleted while
/// the watch was down goes too; until then the previous table serves.
#[derive(Debug, Default)]
struct MetaTable {
    live: HashMap<String, NamespaceMeta>,
    relist: Option<HashMap<String, NamespaceMeta>>,
}

impl MetaTable {
    fn get(&self, name: &str) -> Option<&NamespaceMeta> {
        self.live.get(name)
    }

    /// Apply one watch event; true when it ends a re-list.
    fn on_event<T: kube::Resource>(&mut self, event: Event<T>) -> bool {
        let meta = |o: &T| {
            let m = o.meta();
            Some((
                m.name.clone()?,
                (
                    m.labels.clone().unwrap_or_default(),
                    m.annotations.clone().unwrap_or_default(),
                ),
            ))
        };
        match event {
            Event::Init => self.relist = Some(HashMap::new()),
            Event::InitApply(o) => {
                if let Some((name, m)) = meta(&o) {
                    match self.relist.as_mut() {
                        Some(listed) => listed.insert(name, m),
                        None => self.live.insert(name, m),
                    };
                }
            }
            Event::InitDone => {
                if let Some(listed) = self.relist.take() {
                    self.live = listed;
                }
                return true;
            }
            Event::Apply(o) => {
                if let Some((name, m)) = meta(&o) {
                    self.live.insert(name, m);
                }
            }
            Event::Delete(o) => {
                if let Some(name) = &o.meta().name {
                    self.live.remove(name);
                }
            }
        }
        false
    }
}

/// Follow a node or namespace metadata watch into the table `table` picks from `shared`.
fn follow_metadata<T>(
    api: Api<T>,
    cfg: watcher::Config,
    shared: Arc<Shared>,
    table: fn(&Shared) -> &Mutex<MetaTable>,
    synced: Arc<SyncCountdown>,
    what: &'static str,
) -> JoinHandle<()>
where
    T: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    T::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    tokio::spawn(async move {
        let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
        let mut first = true;
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    if table(&shared).lock().on_event(event) && std::mem::take(&mut first) {
                        synced.synced();
                    }
                }
                Err(e) => {
                    shared.restarts.add(1);
                    tracing::warn!(error = %e, "k8sattributes: {what} watch failed; retrying");
                }
            }
        }
    })
}

/// ReplicaSet UIDs and their Deployment (None: not owned by one), with insertion order for
/// the bound.
type OwnerCache = (HashMap<String, Option<Arc<str>>>, VecDeque<String>);

struct Shared {
    cache: PodMetadataCache,
    namespaces: Mutex<MetaTable>,
    /// Node labels and annotations, when an extraction reads `from: node`.
    nodes: Mutex<MetaTable>,
    /// The kube-system namespace's UID, for `k8s.cluster.uid`.
    cluster_uid: OnceLock<String>,
    rules: Vec<(String, Vec<Source>)>,
    metadata: Vec<&'static str>,
    extracts: Vec<Extract>,
    passthrough: bool,
    client: OnceLock<kube::Client>,
    /// ReplicaSet UID -> its Deployment's name (None: not owned by one), bounded.
    owners: Mutex<OwnerCache>,
    owners_cap: usize,
    pods: Gauge,
    restarts: Counter,
    relists: Counter,
    lookups: Vec<(Counter, Counter)>,
    misses: Counter,
    owner_ok: Counter,
    owner_failed: Counter,
}

/// The consumer the processor builds.
pub struct K8sAttributesConsumer<N> {
    shared: Arc<Shared>,
    hold: Arc<Hold>,
    next: Arc<N>,
}

impl<N> std::fmt::Debug for K8sAttributesConsumer<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("K8sAttributesConsumer")
            .finish_non_exhaustive()
    }
}

impl Processor<Traces> for K8sAttributes {
    type Consumer<N: Consumer<Traces>> = K8sAttributesConsumer<N>;

    fn id(&self) -> ComponentId {
        self.id.clone()
    }

    fn build<N: Consumer<Traces>>(
        self,
        next: N,
        ctx: &mut ComponentContext<'_>,
    ) -> Result<Self::Consumer<N>, BuildError> {
        let c = &self.config;
        let mut metadata = Vec::new();
        for (i, m) in c.extract.metadata.iter().enumerate() {
            match METADATA.iter().find(|k| **k == m.as_str()) {
                Some(k) => metadata.push(*k),
                None => {
                    return Err(ctx.invalid(
                        format!("extract.metadata[{i}]"),
                        format!("unknown metadata `{m}`"),
                    ));
                }
            }
        }
        let mut keep = Keep::default();
        let mut extracts = Vec::new();
        for (section, list, label) in [
            ("labels", &c.extract.labels, true),
            ("annotations", &c.extract.annotations, false),
        ] {
            for (i, f) in list.iter().enumerate() {
                let path = format!("extract.{section}[{i}]");
                let regex = match (&f.key, &f.key_regex) {
                    (Some(_), None) => None,
                    (None, Some(r)) => Some(
                        Regex::new(&format!("^(?:{r})$"))
                            .map_err(|e| ctx.invalid(format!("{path}.key_regex"), e.to_string()))?,
                    ),
                    _ => {
                        return Err(ctx.invalid(&path, "give exactly one of `key` and `key_regex`"));
                    }
                };
                if f.from == From::Pod {
                    match (&f.key, label) {
                        (Some(k), true) => drop(keep.labels.insert(k.clone())),
                        (Some(k), false) => drop(keep.annotations.insert(k.clone())),
                        (None, true) => keep.all_labels = true,
                        (None, false) => keep.all_annotations = true,
                    }
                }
                extracts.push(Extract {
                    tag: f.tag_name.clone(),
                    key: f.key.clone(),
                    regex,
                    from: f.from,
                    label,
                });
            }
        }
        // service.name / service.version read these labels and annotations.
        for k in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/version",
            "app.kubernetes.io/part-of",
            "app.kubernetes.io/instance",
        ] {
            keep.labels.insert(k.into());
        }
        for k in [
            "resource.opentelemetry.io/service.name",
            "resource.opentelemetry.io/service.version",
            "resource.opentelemetry.io/service.namespace",
        ] {
            keep.annotations.insert(k.into());
        }
        let associations = if c.pod_association.is_empty() {
            vec![
                crate::config::AssociationConfig {
                    sources: vec![crate::config::SourceConfig {
                        from: "resource_attribute".into(),
                        name: Some("k8s.pod.ip".into()),
                    }],
                },
                crate::config::AssociationConfig {
                    sources: vec![crate::config::SourceConfig {
                        from: "connection".into(),
                        name: None,
                    }],
                },
            ]
        } else {
            c.pod_association.clone()
        };
        let mut rules = Vec::new();
        for (i, rule) in associations.iter().enumerate() {
            let mut sources = Vec::new();
            let mut label = Vec::new();
            for (j, s) in rule.sources.iter().enumerate() {
                let path = format!("pod_association[{i}].sources[{j}]");
                match (s.from.as_str(), &s.name) {
                    ("connection", _) => {
                        sources.push(Source::Connection);
                        label.push("connection".to_string());
                    }
                    ("resource_attribute", Some(n))
                        if ["k8s.pod.ip", "k8s.pod.uid", "container.id", "host.name"]
                            .contains(&n.as_str()) =>
                    {
                        sources.push(Source::Attribute(n.clone()));
                        label.push(n.clone());
                    }
                    ("resource_attribute", Some(n)) => {
                        return Err(ctx.invalid(format!("{path}.name"), format!("`{n}`: associate by k8s.pod.ip, k8s.pod.uid, container.id or host.name")));
                    }
                    ("resource_attribute", None) => {
                        return Err(ctx.invalid(format!("{path}.name"), "missing"));
                    }
                    (other, _) => {
                        return Err(ctx.invalid(
                            format!("{path}.from"),
                            format!("`{other}`: expected resource_attribute or connection"),
                        ));
                    }
                }
            }
            if sources.is_empty() {
                return Err(ctx.invalid(
                    format!("pod_association[{i}].sources"),
                    "needs at least one source",
                ));
            }
            rules.push((label.join("+"), sources));
        }
        if c.auth_type == AuthType::None && self.client.is_none() && !c.passthrough {
            return Err(ctx.invalid(
                "auth_type",
                "`none` needs a client given in code (K8sAttributes::with_client)",
            ));
        }
        let t = ctx.telemetry();
        let lookups = rules
            .iter()
            .map(|(name, _)| {
                (
                    t.counter(&instruments::LOOKUPS, &[("rule", name), ("result", "hit")]),
                    t.counter(
                        &instruments::LOOKUPS,
                        &[("rule", name), ("result", "skipped")],
                    ),
                )
            })
            .collect();
        let shared = Arc::new(Shared {
            cache: PodMetadataCache::new(
                keep,
                c.deleted_pod_grace.unwrap_or(Duration::from_secs(120)),
            ),
            namespaces: Mutex::default(),
            nodes: Mutex::default(),
            cluster_uid: OnceLock::new(),
            rules,
            metadata,
            extracts,
            passthrough: c.passthrough,
            client: OnceLock::new(),
            owners: Mutex::default(),
            owners_cap: c.replicaset_cache_size.unwrap_or(1000).max(1),
            pods: t.gauge(&instruments::PODS, &[]),
            restarts: t.counter(&instruments::WATCH_RESTARTS, &[]),
            relists: t.counter(&instruments::SYNCS, &[]),
            lookups,
            misses: t.counter(
                &instruments::LOOKUPS,
                &[("rule", "none"), ("result", "miss")],
            ),
            owner_ok: t.counter(&instruments::OWNER_LOOKUPS, &[("result", "ok")]),
            owner_failed: t.counter(&instruments::OWNER_LOOKUPS, &[("result", "failed")]),
        });
        if let Some(client) = self.client.clone() {
            let _ = shared.client.set(client);
        }
        // Readiness waits for the first full list of pods (not in passthrough).
        let synced =
            (!self.config.passthrough).then(|| ctx.readiness_gate("first sync of the pod cache"));
        ctx.register_lifecycle(Arc::new(Watches {
            shared: Arc::clone(&shared),
            config: self.config.clone(),
            synced,
            tasks: Mutex::new(Vec::new()),
        }));
        let hold = Arc::new(Hold {
            queue: Mutex::default(),
            spans: std::sync::atomic::AtomicUsize::new(0),
            max_spans: self.config.hold_max_spans.unwrap_or(10_000),
            wait: if self.config.passthrough {
                Duration::ZERO
            } else {
                self.config
                    .hold_unknown_for
                    .unwrap_or(Duration::from_secs(2))
            },
            held: t.counter(&instruments::HELD, &[]),
            enriched: t.counter(&instruments::RELEASED, &[("result", "enriched")]),
            unenriched: t.counter(&instruments::RELEASED, &[("result", "unenriched")]),
            overflow: t.counter(&instruments::RELEASED, &[("result", "overflow")]),
        });
        let next = Arc::new(next);
        let (stop, _) = tokio::sync::watch::channel(false);
        // Registered after the watches, so it shuts down first: held spans go on while the
        // cache is still there to enrich them.
        ctx.register_lifecycle(Arc::new(Releaser {
            shared: Arc::clone(&shared),
            hold: Arc::clone(&hold),
            next: Arc::clone(&next),
            deadline: Arc::default(),
            stop,
            task: Mutex::new(None),
            telemetry: Arc::clone(&t),
        }));
        Ok(K8sAttributesConsumer { shared, hold, next })
    }
}

/// Opens the readiness gate once every watch has had its first full list.
struct SyncCountdown {
    left: std::sync::atomic::AtomicUsize,
    gate: Option<otel_pipeline_core::ReadinessGate>,
}

impl SyncCountdown {
    /// One watch synced (call once per watch).
    fn synced(&self) {
        use std::sync::atomic::Ordering;
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(g) = &self.gate
        {
            g.open();
        }
    }
}

struct Watches {
    shared: Arc<Shared>,
    config: K8sAttributesConfig,
    synced: Option<otel_pipeline_core::ReadinessGate>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Watches {
    async fn client(&self) -> Result<kube::Client, BoxError> {
        if let Some(c) = self.shared.client.get() {
            return Ok(c.clone());
        }
        let config = match self.config.auth_type {
            AuthType::ServiceAccount => kube::Config::incluster()?,
            AuthType::KubeConfig => kube::Config::infer().await?,
            AuthType::None => return Err("auth_type none needs a client given in code".into()),
        };
        let client = kube::Client::try_from(config)?;
        let _ = self.shared.client.set(client.clone());
        Ok(client)
    }

    fn selectors(&self) -> watcher::Config {
        let f = &self.config.filter;
        let mut fields = Vec::new();
        let node = f.node.clone().or_else(|| {
            f.node_from_env_var
                .as_ref()
                .and_then(|v| std::env::var(v).ok())
                .filter(|n| !n.is_empty())
        });
        if let Some(node) = node {
            fields.push(format!("spec.nodeName={node}"));
        }
        let term = |s: &crate::config::SelectorConfig| {
            let op = if s.op.as_deref() == Some("not-equals") {
                "!="
            } else {
                "="
            };
            format!("{}{op}{}", s.key, s.value)
        };
        fields.extend(f.fields.iter().map(term));
        let labels: Vec<String> = f.labels.iter().map(term).collect();
        let mut cfg = watcher::Config::default();
        if !fields.is_empty() {
            cfg = cfg.fields(&fields.join(","));
        }
        if !labels.is_empty() {
            cfg = cfg.labels(&labels.join(","));
        }
        cfg
    }
}

impl Lifecycle for Watches {
    fn start(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            if self.shared.passthrough {
                return Ok(());
            }
            let client = self.client().await?;
            if self.shared.metadata.contains(&"k8s.cluster.uid") {
                // The Collector's definition: the kube-system namespace's UID.
                let namespaces: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
                match namespaces.get_metadata("kube-system").await {
                    Ok(ns) => {
                        if let Some(uid) = ns.metadata.uid {
                            let _ = self.shared.cluster_uid.set(uid);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "k8sattributes: cannot read kube-system for k8s.cluster.uid")
                    }
                }
            }
            let pods: Api<Pod> = match &self.config.filter.namespace {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            };
            let watches = 1
                + usize::from(self.shared.extracts.iter().any(|e| e.from == From::Node))
                + usize::from(
                    self.shared
                        .extracts
                        .iter()
                        .any(|e| e.from == From::Namespace),
                );
            let countdown = Arc::new(SyncCountdown {
                left: std::sync::atomic::AtomicUsize::new(watches),
                gate: self.synced.clone(),
            });
            let shared = Arc::clone(&self.shared);
            let synced = Arc::clone(&countdown);
            let cfg = self.selectors();
            let mut tasks = self.tasks.lock();
            tasks.push(tokio::spawn(async move {
                let mut stream = watcher::watcher(pods, cfg).default_backoff().boxed();
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                let mut listed: Option<HashSet<String>> = None;
                let mut first = true;
                loop {
                    tokio::select! {
                        event = stream.next() => match event {
                            None => return,
                            Some(Err(e)) => {
                                shared.restarts.add(1);
                                tracing::warn!(error = %e, "k8sattributes: pod watch failed; retrying with backoff, keeping the cache");
                            }
                            Some(Ok(Event::Init)) => listed = Some(HashSet::new()),
                            Some(Ok(Event::InitApply(p))) => {
                                if let (Some(set), Some(uid)) = (listed.as_mut(), p.metadata.uid.clone()) {
                                    set.insert(uid);
                                }
                                shared.cache.apply(&p);
                            }
                            Some(Ok(Event::InitDone)) => {
                                shared.relists.add(1);
                                if std::mem::take(&mut first) {
                                    synced.synced();
                                }
                                if let Some(set) = listed.take() {
                                    shared.cache.forget_all_but(&set, Instant::now());
                                }
                            }
                            Some(Ok(Event::Apply(p))) => shared.cache.apply(&p),
                            Some(Ok(Event::Delete(p))) => shared.cache.delete(&p, Instant::now()),
                        },
                        _ = tick.tick() => shared.cache.expire(Instant::now()),
                    }
                    shared.pods.set(shared.cache.len() as i64);
                }
            }));
            if self.shared.extracts.iter().any(|e| e.from == From::Node) {
                // Metadata only, and on an agent only its own node.
                let nodes: Api<PartialObjectMeta<k8s_openapi::api::core::v1::Node>> =
                    Api::all(client.clone());
                let node = self.config.filter.node.clone().or_else(|| {
                    self.config
                        .filter
                        .node_from_env_var
                        .as_ref()
                        .and_then(|v| std::env::var(v).ok())
                        .filter(|n| !n.is_empty())
                });
                let cfg = match &node {
                    Some(n) => watcher::Config::default().fields(&format!("metadata.name={n}")),
                    None => watcher::Config::default(),
                };
                tasks.push(follow_metadata(
                    nodes,
                    cfg,
                    Arc::clone(&self.shared),
                    |s| &s.nodes,
                    Arc::clone(&countdown),
                    "node",
                ));
            }
            if self
                .shared
                .extracts
                .iter()
                .any(|e| e.from == From::Namespace)
            {
                // Metadata only: labels and annotations are all a namespace gives.
                let namespaces: Api<PartialObjectMeta<Namespace>> = Api::all(client);
                tasks.push(follow_metadata(
                    namespaces,
                    watcher::Config::default(),
                    Arc::clone(&self.shared),
                    |s| &s.namespaces,
                    Arc::clone(&countdown),
                    "namespace",
                ));
            }
            Ok(())
        })
    }

    fn shutdown(&self, _deadline: Instant) -> BoxFuture<'_, Result<(), BoxError>> {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        Box::pin(async { Ok(()) })
    }
}

/// A resource attribute's string value.
fn attribute<'a>(resource: Option<&'a Resource>, name: &str) -> Option<&'a str> {
    resource
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == name))
        .and_then(|kv| text_of(kv.value.as_ref()))
}

fn text_of(v: Option<&AnyValue>) -> Option<&str> {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn set_absent(attrs: &mut Vec<KeyValue>, key: &str, value: &str) {
    if attrs.iter().any(|kv| kv.key == key) || value.is_empty() {
        return;
    }
    attrs.push(KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    });
}

/// What enrichment found for one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// Its pod, or passthrough.
    Done,
    /// It names a pod (an IP, a UID, a connection) that the cache does not know (yet).
    Unknown,
    /// Nothing to associate it by.
    NoKey,
}

impl Shared {
    /// Whether some rule has a value for every one of its sources.
    fn has_key(&self, resource: Option<&Resource>, peer: Option<IpAddr>) -> bool {
        self.keyed_rule(resource, peer).is_some()
    }

    /// The first rule whose sources all have a value here, as the Collector picks it
    /// (`extractPodID`): later rules are not tried, whatever the cache holds.
    fn keyed_rule(&self, resource: Option<&Resource>, peer: Option<IpAddr>) -> Option<usize> {
        self.rules.iter().position(|(_, sources)| {
            sources.iter().all(|s| match s {
                Source::Connection => peer.is_some(),
                Source::Attribute(n) => attribute(resource, n).is_some_and(|v| !v.is_empty()),
            })
        })
    }

    /// The pod of a resource: the first rule whose sources all have values names it, and
    /// every source must find the same pod. A pod the cache does not know is a miss, never
    /// a reason to try the next rule: falling through to the connection would label a
    /// new pod's spans with whatever sent them (a sidecar, a proxy, a node agent).
    fn associate(
        &self,
        resource: Option<&Resource>,
        peer: Option<IpAddr>,
    ) -> Option<(usize, Arc<PodRecord>)> {
        let i = self.keyed_rule(resource, peer)?;
        let mut found: Option<Arc<PodRecord>> = None;
        for s in &self.rules[i].1 {
            let pod = match s {
                Source::Connection => peer.and_then(|ip| self.cache.by_ip(ip)),
                Source::Attribute(n) => match (n.as_str(), attribute(resource, n)) {
                    ("k8s.pod.ip" | "host.name", Some(v)) => {
                        v.parse().ok().and_then(|ip| self.cache.by_ip(ip))
                    }
                    ("k8s.pod.uid", Some(v)) => self.cache.by_uid(v),
                    ("container.id", Some(v)) => self.cache.by_container_id(v),
                    _ => None,
                },
            }?;
            match &found {
                None => found = Some(pod),
                Some(f) if f.uid() == pod.uid() => {}
                Some(_) => return None,
            }
        }
        found.map(|p| (i, p))
    }

    /// The Deployment that owns ReplicaSet `name` (uid `uid`) in `namespace`, fetched
    /// metadata-only on first need and remembered.
    async fn deployment_of(&self, namespace: &str, name: &str, uid: &str) -> Option<Arc<str>> {
        if let Some(hit) = self.owners.lock().0.get(uid) {
            return hit.clone();
        }
        let client = self.client.get()?.clone();
        let api: Api<ReplicaSet> = Api::namespaced(client, namespace);
        let found = match api.get_metadata(name).await {
            Ok(rs) => {
                self.owner_ok.add(1);
                rs.metadata
                    .owner_references
                    .unwrap_or_default()
                    .into_iter()
                    .find(|o| o.kind == "Deployment")
                    .map(|o| Arc::<str>::from(o.name))
            }
            Err(e) => {
                self.owner_failed.add(1);
                tracing::debug!(error = %e, replicaset = name, "k8sattributes: ReplicaSet lookup failed");
                return None;
            }
        };
        let mut owners = self.owners.lock();
        if owners.0.len() >= self.owners_cap
            && let Some(old) = owners.1.pop_front()
        {
            owners.0.remove(&old);
        }
        owners.0.insert(uid.to_string(), found.clone());
        owners.1.push_back(uid.to_string());
        found
    }

    async fn enrich(&self, resource: &mut Resource, peer: Option<IpAddr>) -> Found {
        if self.passthrough {
            if let Some(ip) = peer {
                set_absent(&mut resource.attributes, "k8s.pod.ip", &ip.to_string());
            }
            return Found::Done;
        }
        let Some((rule, pod)) = self.associate(Some(resource), peer) else {
            return if self.has_key(Some(resource), peer) {
                Found::Unknown
            } else {
                Found::NoKey
            };
        };
        self.lookups[rule].0.add(1);
        let deployment = match pod.owner() {
            Some(o)
                if &*o.kind == "ReplicaSet"
                    && self
                        .metadata
                        .iter()
                        .any(|m| *m == "k8s.deployment.name" || *m == "service.name") =>
            {
                self.deployment_of(pod.namespace(), &o.name, &o.uid).await
            }
            _ => None,
        };
        let attrs = &mut resource.attributes;
        let owner_named = |kind: &str| {
            pod.owner()
                .filter(|o| &*o.kind == kind)
                .map(|o| o.name.to_string())
        };
        // Container attributes only when the pod has one container: which one a span
        // came from is otherwise unknown.
        let (container, container_id) = match pod.containers().next() {
            Some((c, id)) if pod.containers().len() == 1 => (Some(c), id),
            _ => (None, None),
        };
        for m in &self.metadata {
            let value: Option<String> = match *m {
                "k8s.pod.name" | "k8s.pod.hostname" => Some(pod.name().to_string()),
                "k8s.pod.uid" => Some(pod.uid().to_string()),
                "k8s.pod.ip" => pod.ips().first().map(IpAddr::to_string),
                "k8s.pod.start_time" => pod.start_time(),
                "k8s.namespace.name" => Some(pod.namespace().to_string()),
                "k8s.node.name" => pod.node().map(str::to_string),
                "k8s.replicaset.name" => owner_named("ReplicaSet"),
                "k8s.replicaset.uid" => pod
                    .owner()
                    .filter(|o| &*o.kind == "ReplicaSet")
                    .map(|o| o.uid.to_string()),
                "k8s.deployment.name" => deployment.as_ref().map(|d| d.to_string()),
                "k8s.statefulset.name" => owner_named("StatefulSet"),
                "k8s.daemonset.name" => owner_named("DaemonSet"),
                "k8s.job.name" => owner_named("Job"),
                // A CronJob's Job is named <cronjob>-<schedule time>.
                "k8s.cronjob.name" => owner_named("Job").and_then(|j| {
                    j.rsplit_once('-')
                        .map(|(c, t)| (c.to_string(), t.chars().all(|ch| ch.is_ascii_digit())))
                        .filter(|(_, digits)| *digits)
                        .map(|(c, _)| c)
                }),
                "k8s.container.name" => container.map(|c| c.name.to_string()),
                "container.image.name" => container.map(|c| c.image_name.to_string()),
                "container.image.tag" => container.map(|c| c.image_tag.to_string()),
                "container.id" => container_id.map(ToString::to_string),
                "service.name" => pod
                    .annotation("resource.opentelemetry.io/service.name")
                    .map(str::to_string)
                    .or_else(|| pod.label("app.kubernetes.io/name").map(str::to_string))
                    .or_else(|| deployment.as_ref().map(|d| d.to_string()))
                    .or_else(|| owner_named("StatefulSet"))
                    .or_else(|| owner_named("DaemonSet"))
                    .or_else(|| owner_named("Job"))
                    .or_else(|| container.map(|c| c.name.to_string())),
                "service.version" => pod
                    .annotation("resource.opentelemetry.io/service.version")
                    .map(str::to_string)
                    .or_else(|| pod.label("app.kubernetes.io/version").map(str::to_string))
                    .or_else(|| {
                        container
                            .map(|c| c.image_tag.to_string())
                            .filter(|t| t != "latest")
                    }),
                "service.namespace" => Some(pod.namespace().to_string()),
                "k8s.cluster.uid" => self.cluster_uid.get().cloned(),
                "service.instance.id" => Some(format!(
                    "{}.{}.{}",
                    pod.namespace(),
                    pod.name(),
                    container.map_or("", |c| &c.name)
                )),
                _ => None,
            };
            if let Some(v) = value {
                set_absent(attrs, m, &v);
            }
        }
        if self.extracts.is_empty() {
            return Found::Done;
        }
        let namespaces = self.namespaces.lock();
        let nodes = self.nodes.lock();
        for e in &self.extracts {
            let pairs: Vec<(&str, &str)> = match e.from {
                From::Pod => {
                    let list = if e.label {
                        pod.labels()
                    } else {
                        pod.annotations()
                    };
                    list.iter().map(|(k, v)| (&**k, &**v)).collect()
                }
                From::Namespace => match namespaces.get(pod.namespace()) {
                    Some((labels, annotations)) => (if e.label { labels } else { annotations })
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect(),
                    None => Vec::new(),
                },
                From::Node => match pod.node().and_then(|n| nodes.get(n)) {
                    Some((labels, annotations)) => (if e.label { labels } else { annotations })
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect(),
                    None => Vec::new(),
                },
            };
            let scope = match (e.from, e.label) {
                (From::Namespace, true) => "k8s.namespace.labels",
                (From::Namespace, false) => "k8s.namespace.annotations",
                (From::Node, true) => "k8s.node.labels",
                (From::Node, false) => "k8s.node.annotations",
                (_, true) => "k8s.pod.labels",
                (_, false) => "k8s.pod.annotations",
            };
            for (k, v) in pairs {
                let tag = match (&e.key, &e.regex) {
                    (Some(key), _) if key == k => {
                        e.tag.clone().unwrap_or_else(|| format!("{scope}.{k}"))
                    }
                    (None, Some(re)) => match re.captures(k) {
                        Some(caps) => match &e.tag {
                            Some(t) => {
                                let mut out = String::new();
                                caps.expand(t, &mut out);
                                out
                            }
                            None => format!("{scope}.{k}"),
                        },
                        None => continue,
                    },
                    _ => continue,
                };
                set_absent(attrs, &tag, v);
            }
        }
        Found::Done
    }

    /// Enrich a request still in its bytes: each resource is decoded (a few attributes),
    /// and what enrichment adds is appended to the resource message (repeated fields
    /// may come in any number of runs), so no span is decoded or encoded: spans, scopes
    /// and the rest are copied as they are. Returns the new bytes (`None`: nothing was
    /// added) and how many resources name a pod the cache does not know; `None` overall
    /// for a request this path leaves to the decoded one (a resource given twice, which
    /// prost merges).
    async fn enrich_encoded(
        &self,
        bytes: &[u8],
        peer: Option<IpAddr>,
    ) -> Option<(Option<Vec<u8>>, usize)> {
        use otel_pipeline_core::wire::{
            Wire, close_len_field, fields, open_len_field, put_len_header,
        };
        use prost::Message;
        // Room for a few attributes per resource, so the request is written once.
        let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 16 + 1024);
        let mut changed = false;
        let mut unknown = 0;
        let mut top = fields(bytes);
        while let Some((field, wire, raw)) = top.next_raw() {
            let (1, Wire::Len(rs)) = (field, wire) else {
                out.extend_from_slice(raw);
                continue;
            };
            let mut resource_bytes: Option<&[u8]> = None;
            let mut inner = fields(rs);
            for (f, w) in inner.by_ref() {
                if f == 1 {
                    match w {
                        Wire::Len(b) if resource_bytes.is_none() => resource_bytes = Some(b),
                        _ => return None,
                    }
                }
            }
            if !inner.finished() {
                return None;
            }
            let old = resource_bytes.unwrap_or_default();
            let mut resource = Resource::decode(old).ok()?;
            let before = resource.attributes.len();
            match self.enrich(&mut resource, peer).await {
                Found::Unknown => unknown += 1,
                Found::NoKey => self.misses.add(1),
                Found::Done => {}
            }
            if resource.attributes.len() == before {
                out.extend_from_slice(raw);
                continue;
            }
            changed = true;
            let mut added = Vec::new();
            for kv in &resource.attributes[before..] {
                put_len_header(&mut added, 1, kv.encoded_len());
                kv.encode_raw(&mut added);
            }
            // Written straight into the new request: the resource with the attributes
            // appended, then the rest of the message as it was.
            let open = open_len_field(&mut out, 1, rs.len() + added.len());
            put_len_header(&mut out, 1, old.len() + added.len());
            out.extend_from_slice(old);
            out.extend_from_slice(&added);
            let mut rest = fields(rs);
            while let Some((f, _, raw)) = rest.next_raw() {
                if f != 1 {
                    out.extend_from_slice(raw);
                }
            }
            close_len_field(&mut out, open);
        }
        if !top.finished() {
            return None;
        }
        Some((changed.then_some(out), unknown))
    }

    /// Enrich every resource of a batch; how many name a pod the cache does not know.
    /// A batch still in its bytes stays in its bytes (`enrich_encoded`).
    async fn enrich_batch(&self, batch: &mut Batch<Traces>) -> usize {
        let peer = batch.client.as_ref().and_then(|c| c.addr).map(|a| a.ip());
        if let Some(bytes) = batch.encoded().cloned()
            && let Some((new, unknown)) = self.enrich_encoded(&bytes, peer).await
        {
            if let Some(new) = new {
                // Well-formed attributes appended to resources of a checked request.
                let items = batch.item_count();
                let whole = std::mem::replace(batch, Batch::new(Default::default()));
                *batch = whole.with_rewritten_request(new.into(), items);
            }
            return unknown;
        }
        self.enrich_decoded(batch, peer).await
    }

    async fn enrich_decoded(&self, batch: &mut Batch<Traces>, peer: Option<IpAddr>) -> usize {
        let mut unknown = 0;
        for rs in &mut batch.data_mut().resource_spans {
            let resource = rs.resource.get_or_insert_with(Resource::default);
            match self.enrich(resource, peer).await {
                Found::Unknown => unknown += 1,
                // Nothing to associate it by: it can never resolve.
                Found::NoKey => self.misses.add(1),
                Found::Done => {}
            }
        }
        unknown
    }
}

/// Batches held for their pods' metadata, bounded by span count and time.
struct Hold {
    queue: Mutex<VecDeque<(Instant, Batch<Traces>)>>,
    spans: std::sync::atomic::AtomicUsize,
    max_spans: usize,
    wait: Duration,
    held: Counter,
    enriched: Counter,
    unenriched: Counter,
    overflow: Counter,
}

impl Hold {
    /// Hold `batch` until `wait` from now, or give it back when the hold is full.
    fn try_hold(&self, batch: Batch<Traces>) -> Result<(), Batch<Traces>> {
        use std::sync::atomic::Ordering;
        let n = batch.item_count();
        if self.wait.is_zero() {
            return Err(batch);
        }
        let now_held = self.spans.fetch_add(n, Ordering::AcqRel) + n;
        if now_held > self.max_spans {
            self.spans.fetch_sub(n, Ordering::AcqRel);
            self.overflow.add(n as u64);
            return Err(batch);
        }
        self.held.add(n as u64);
        self.queue
            .lock()
            .push_back((Instant::now() + self.wait, batch));
        Ok(())
    }
}

impl<N: Consumer<Traces>> Consumer<Traces> for K8sAttributesConsumer<N> {
    async fn consume(&self, mut batch: Batch<Traces>) -> Result<(), ConsumeError<Traces>> {
        let unknown = self.shared.enrich_batch(&mut batch).await;
        if unknown > 0 {
            match self.hold.try_hold(batch) {
                Ok(()) => return Ok(()),
                Err(b) => {
                    self.shared.misses.add(unknown as u64);
                    batch = b;
                }
            }
        }
        self.next.consume(batch).await
    }
}

/// Releases held batches: enriched as soon as their pods arrive, unenriched at their
/// deadline, and everything at shutdown.
struct Releaser<N> {
    shared: Arc<Shared>,
    hold: Arc<Hold>,
    next: Arc<N>,
    deadline: Arc<Mutex<Option<Instant>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    telemetry: Arc<otel_pipeline_core::ComponentTelemetry>,
}

impl<N: Consumer<Traces>> Releaser<N> {
    async fn release_due(
        shared: &Shared,
        hold: &Hold,
        next: &N,
        deadline: &Mutex<Option<Instant>>,
        telemetry: &otel_pipeline_core::ComponentTelemetry,
        all: bool,
    ) {
        use std::sync::atomic::Ordering;
        let items: Vec<(Instant, Batch<Traces>)> = hold.queue.lock().drain(..).collect();
        let redelivery = otel_pipeline_core::queue::Redelivery {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(1),
        };
        let now = Instant::now();
        for (due, mut batch) in items {
            let unknown = shared.enrich_batch(&mut batch).await;
            let n = batch.item_count();
            if unknown > 0 && now < due && !all {
                hold.queue.lock().push_back((due, batch));
                continue;
            }
            if unknown > 0 {
                shared.misses.add(unknown as u64);
                hold.unenriched.add(n as u64);
            } else {
                hold.enriched.add(n as u64);
            }
            hold.spans.fetch_sub(n, Ordering::AcqRel);
            redelivery.deliver(next, batch, deadline, telemetry).await;
        }
    }
}

impl<N: Consumer<Traces>> Lifecycle for Releaser<N> {
    fn start(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        let shared = Arc::clone(&self.shared);
        let hold = Arc::clone(&self.hold);
        let next = Arc::clone(&self.next);
        let deadline = Arc::clone(&self.deadline);
        let telemetry = Arc::clone(&self.telemetry);
        let mut stop = self.stop.subscribe();
        *self.task.lock() = Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                Self::release_due(&shared, &hold, &*next, &deadline, &telemetry, false).await;
            }
        }));
        Box::pin(async { Ok(()) })
    }

    fn shutdown(&self, deadline: Instant) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            *self.deadline.lock() = Some(deadline);
            let _ = self.stop.send(true);
            let task = self.task.lock().take();
            if let Some(t) = task {
                let _ = tokio::time::timeout_at(deadline, t).await;
            }
            // What is still held goes on now, enriched if its pod has arrived.
            Self::release_due(
                &self.shared,
                &self.hold,
                &*self.next,
                &self.deadline,
                &self.telemetry,
                true,
            )
            .await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str, team: &str) -> PartialObjectMeta<Namespace> {
        let mut o = PartialObjectMeta::<Namespace>::default();
        o.metadata.name = Some(name.into());
        o.metadata.labels = Some([("team".to_string(), team.to_string())].into());
        o
    }

    /// A namespace deleted while the watch was down is gone after the re-list; until the
    /// re-list ends, the previous table serves.
    #[test]
    fn a_relist_prunes_what_it_did_not_list() {
        let mut t = MetaTable::default();
        t.on_event(Event::<PartialObjectMeta<Namespace>>::Init);
        t.on_event(Event::InitApply(ns("shop", "a")));
        t.on_event(Event::InitApply(ns("gone", "b")));
        assert!(t.on_event(Event::<PartialObjectMeta<Namespace>>::InitDone));
        assert!(t.get("gone").is_some());
        t.on_event(Event::Apply(ns("late", "c")));
        // The watch restarts; `gone` was deleted meanwhile; `shop` changed.
        t.on_event(Event::<PartialObjectMeta<Namespace>>::Init);
        t.on_event(Event::InitApply(ns("shop", "z")));
        assert!(
            t.get("gone").is_some(),
            "the old table serves during the re-list"
        );
        t.on_event(Event::InitApply(ns("late", "c")));
        assert!(t.on_event(Event::<PartialObjectMeta<Namespace>>::InitDone));
        assert!(t.get("gone").is_none());
        assert_eq!(t.get("shop").unwrap().0["team"], "z");
        assert!(t.get("late").is_some());
        t.on_event(Event::Delete(ns("late", "c")));
        assert!(t.get("late").is_none());
    }
}

//! What a component type gives the loader: the sections it reads, the factory traits, and
//! what an extension sees of the collector. A leaf of `collector`: the registry, the
//! authenticators and the loader import it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::boxed::{BoxExporter, BoxProcessor, BoxReceiver};
use crate::config::{ConfigError, Location, Node};
use crate::connector::{BoxConnector, Downstream, SharedConnector, SharedConnectorExporter};
use crate::consumer::BoxConsumer;
use crate::consumer::BoxFuture;
use crate::health::{Health, ReadinessGate};
use crate::id::{BoxError, ComponentId};
use crate::signal::{Logs, Metrics, Signal, SignalKind, Traces};
use crate::telemetry::Telemetry;

/// One component's configuration section, with where it sits in the user's files.
///
/// A factory reads it with [`Section::deserialize`]; errors name the path below the
/// section and the file, line and column.
pub struct Section<'a> {
    pub(crate) id: ComponentId,
    pub(crate) path: String,
    pub(crate) node: Option<&'a Node>,
    pub(crate) index: &'a BTreeMap<String, Location>,
    /// The whole configuration, for sections that name another component.
    pub(crate) root: Option<&'a Node>,
    /// Where a component that can take a new configuration in place says so: set while
    /// the collector builds the components it runs, `None` otherwise.
    pub(crate) reloads: Option<&'a ReloadSink>,
    /// The exporter types, for sections that build an exporter they name
    /// ([`Section::exporter`]); `None` where nothing is built (a reload's check).
    pub(crate) exporters: Option<&'a ExporterFactories>,
}

impl fmt::Debug for Section<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Section")
            .field("id", &self.id)
            .field("path", &self.path)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// The exporter types by name, as the registry holds them.
pub(crate) type ExporterFactories = BTreeMap<&'static str, Arc<dyn ExporterFactory>>;

/// The components of a built collector that can take a new configuration in place.
pub(crate) type ReloadSink = parking_lot::Mutex<Vec<Reloadable>>;

/// One component that takes new configurations in place: where its section is
/// (`processors`, its id) and how it takes it.
pub(crate) struct Reloadable {
    pub(crate) section: String,
    pub(crate) id: ComponentId,
    pub(crate) reload: Arc<dyn Reload>,
}

impl fmt::Debug for Reloadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.section, self.id)
    }
}

/// A component that takes a new configuration while it runs, without a restart (the tail
/// sampler's policies). Its factory registers one with [`Section::on_reload`].
pub trait Reload: Send + Sync {
    /// Check the component's new section, changing nothing: errors name the setting, as at
    /// start-up.
    fn check(&self, section: &Section<'_>) -> Result<(), ConfigError>;
    /// Take the new section (already checked).
    fn apply(&self, section: &Section<'_>) -> Result<(), ConfigError>;
    /// Whether the new section also changes what cannot change in place (a batch
    /// processor's `metadata_keys`), so the collector must be rebuilt for all of it to
    /// apply. By default, nothing.
    fn needs_restart(&self, _section: &Section<'_>) -> bool {
        false
    }
    /// The keys of its section that the component takes in place. A change to any other
    /// key of the section is listed in [`Reloaded::restart_needed`](super::Reloaded), so
    /// a reload never says "applied" while old values keep running. `None` (the default):
    /// the component takes its whole section in place.
    fn in_place_keys(&self) -> Option<&'static [&'static str]> {
        None
    }
}

impl<'a> Section<'a> {
    /// The component's id (`otlp/backend`).
    pub fn id(&self) -> &ComponentId {
        &self.id
    }

    /// The section of another component this one names at `subpath`, such as the extension
    /// in a receiver's `auth.authenticator: bearertokenauth/server`. `kind` is the
    /// top-level key it lives under (`extensions`). An id that is not defined there is an
    /// error at `subpath`.
    pub fn referenced(
        &self,
        kind: &str,
        id: &str,
        subpath: &str,
    ) -> Result<Section<'a>, ConfigError> {
        let parsed: ComponentId = id
            .parse()
            .map_err(|e: crate::BuildError| self.error(subpath, e.to_string()))?;
        let node = self
            .root
            .and_then(|r| r.get(kind))
            .and_then(|s| s.get(id))
            .ok_or_else(|| self.error(subpath, format!("`{id}` is not defined under {kind}")))?;
        Ok(Section {
            id: parsed,
            path: format!("{kind}.{id}"),
            node: Some(node),
            index: self.index,
            root: self.root,
            reloads: None,
            exporters: self.exporters,
        })
    }

    /// Build the exporter another component names at `subpath`, such as the tail
    /// sampler's `handoff.exporter: loadbalancing/peers`: the exporter's own section
    /// (under `exporters`) is read by its type's factory, and its errors point there. The
    /// exporter need not be in any pipeline; the caller owns what is built.
    pub fn exporter<S: CollectorSignal>(
        &self,
        id: &str,
        subpath: &str,
    ) -> Result<BoxExporter<S>, ConfigError> {
        let section = self.referenced("exporters", id, subpath)?;
        let factories = self.exporters.ok_or_else(|| {
            self.error(
                subpath,
                "the exporter it names is built only when the collector is built",
            )
        })?;
        let factory = factories.get(section.id.kind()).ok_or_else(|| {
            self.error(
                subpath,
                format!("`{id}`: no exporter type `{}` is known", section.id.kind()),
            )
        })?;
        if section
            .value()
            .get("sending_queue")
            .and_then(|q| q.get("batch"))
            .is_some()
        {
            return Err(section.error(
                "sending_queue.batch",
                format!(
                    "an exporter named by `{}` sends as it is given; batch where it is in a pipeline",
                    self.path
                ),
            ));
        }
        match S::exporter(factory.as_ref(), &section) {
            Some(Ok(e)) => Ok(e),
            Some(Err(e)) => Err(section.place(e)),
            None => Err(self.error(
                subpath,
                format!("exporter `{id}` does not take {}", S::PIPELINE),
            )),
        }
    }

    /// Say that the component built from this section takes new configurations in place
    /// (`RunningCollector::reload` hands it its new section). Does nothing where no
    /// collector will run it (`--validate`, a component defined but not in a pipeline).
    pub fn on_reload(&self, reload: Arc<dyn Reload>) {
        if let Some(sink) = self.reloads {
            let section = self.path.split('.').next().unwrap_or_default().to_string();
            sink.lock().push(Reloadable {
                section,
                id: self.id.clone(),
                reload,
            });
        }
    }

    /// Where the section is: `exporters.otlp/backend`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether the section is empty (`batch:` with nothing under it).
    pub fn is_empty(&self) -> bool {
        self.node.is_none_or(|n| n.is_null())
    }

    /// The section as a plain YAML value (`null` when empty).
    pub fn value(&self) -> serde_yaml_ng::Value {
        self.node.map_or(serde_yaml_ng::Value::Null, Node::to_value)
    }

    /// Deserialize the section into `T`; an empty section deserializes from `{}`.
    /// Errors name the path, and the line and column in the user's file.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let value = match self.value() {
            serde_yaml_ng::Value::Null => serde_yaml_ng::Value::Mapping(Default::default()),
            v => v,
        };
        serde_path_to_error::deserialize(value).map_err(|e| {
            let inner = e.path().to_string();
            let sub = if inner == "." { String::new() } else { inner };
            let message = e.into_inner().to_string();
            self.error(&sub, strip_location(&message))
        })
    }

    /// An error at `subpath` below the section (`""` for the section itself), placed at
    /// the closest point of the user's file.
    pub fn error(&self, subpath: &str, message: impl Into<String>) -> ConfigError {
        let path = if subpath.is_empty() {
            self.path.clone()
        } else {
            format!("{}.{subpath}", self.path)
        };
        let err = ConfigError::new(path.clone(), message);
        match locate(self.index, &path) {
            Some(at) => err.at(at),
            None => err,
        }
    }

    /// Turn an error from a component's own validation (its path relative to the section,
    /// or already absolute) into one placed in the file.
    pub fn place(&self, err: ConfigError) -> ConfigError {
        if err.location.is_some() {
            return err;
        }
        let sub = err
            .path
            .strip_prefix(&self.path)
            .map(|p| p.trim_start_matches('.').to_string())
            .unwrap_or(err.path.clone());
        self.error(&sub, err.message)
    }
}

/// serde_yaml_ng appends "at line L column C" of its own re-serialized copy; that place
/// means nothing to the user, whose file is placed instead.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The place of `path`, or of its closest ancestor that has one.
pub(crate) fn locate(index: &BTreeMap<String, Location>, path: &str) -> Option<Location> {
    let mut p = path;
    loop {
        if let Some(at) = index.get(p) {
            return Some(at.clone());
        }
        let cut = p.rfind(['.', '['])?;
        p = &p[..cut];
    }
}

/// Signals the loader wires: traces, metrics, logs.
pub trait CollectorSignal: Signal {
    /// `traces`, `metrics`, `logs`.
    const PIPELINE: &'static str;
    /// This signal's part of a receiver instance.
    fn receiver(instance: &mut dyn ReceiverInstance) -> Option<BoxReceiver<Self>>;
    /// This signal's processor from a factory, or `None` if it has none for the signal.
    fn processor(
        factory: &dyn ProcessorFactory,
        section: &Section<'_>,
    ) -> Option<Result<BoxProcessor<Self>, ConfigError>>;
    /// This signal's batching stage for `sending_queue.batch`.
    #[doc(hidden)]
    fn queue_batcher(
        factory: &dyn super::queue_batch::QueueBatcherFactory,
        batch: &super::queue_batch::QueueBatch,
    ) -> BoxProcessor<Self>
    where
        Self: Sized;
    /// This signal's exporter from a factory, or `None`.
    fn exporter(
        factory: &dyn ExporterFactory,
        section: &Section<'_>,
    ) -> Option<Result<BoxExporter<Self>, ConfigError>>;
    /// A connector from this signal, shared by the pipelines that export to it, feeding
    /// `heads`; `None` if `connector` does not start from this signal.
    #[doc(hidden)]
    fn shared_connector(connector: AnyConnector, heads: &AnyDownstream) -> Option<AnyShared>;
    /// This signal's exporter of a shared connector.
    #[doc(hidden)]
    fn shared_exporter(shared: &AnyShared) -> Option<SharedConnectorExporter<Self>>
    where
        Self: Sized;
    /// The pipeline head as the loader keeps it.
    #[doc(hidden)]
    fn head(consumer: BoxConsumer<Self>) -> AnyHead
    where
        Self: Sized;
}

/// A pipeline's head, of any signal.
#[doc(hidden)]
#[derive(Clone)]
pub enum AnyHead {
    /// Traces.
    Traces(BoxConsumer<Traces>),
    /// Metrics.
    Metrics(BoxConsumer<Metrics>),
    /// Logs.
    Logs(BoxConsumer<Logs>),
}

/// The pipelines a connector feeds, of one signal.
#[doc(hidden)]
pub enum AnyDownstream {
    /// Traces pipelines.
    Traces(Downstream<Traces>),
    /// Metrics pipelines.
    Metrics(Downstream<Metrics>),
    /// Logs pipelines.
    Logs(Downstream<Logs>),
}

/// A connector instance shared by the pipelines of one signal that export to it.
#[doc(hidden)]
pub enum AnyShared {
    /// From traces.
    Traces(SharedConnector<Traces>),
    /// From metrics.
    Metrics(SharedConnector<Metrics>),
    /// From logs.
    Logs(SharedConnector<Logs>),
}

/// A connector between two signals, as a [`ConnectorFactory`] makes it.
#[allow(missing_docs)]
pub enum AnyConnector {
    TracesToTraces(BoxConnector<Traces, Traces>),
    TracesToMetrics(BoxConnector<Traces, Metrics>),
    TracesToLogs(BoxConnector<Traces, Logs>),
    MetricsToTraces(BoxConnector<Metrics, Traces>),
    MetricsToMetrics(BoxConnector<Metrics, Metrics>),
    MetricsToLogs(BoxConnector<Metrics, Logs>),
    LogsToTraces(BoxConnector<Logs, Traces>),
    LogsToMetrics(BoxConnector<Logs, Metrics>),
    LogsToLogs(BoxConnector<Logs, Logs>),
}

macro_rules! opaque_debug {
    ($($t:ident),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(stringify!($t))
            }
        }
    )*};
}
opaque_debug!(AnyConnector, AnyHead, AnyDownstream, AnyShared);

/// Makes connectors of one type (`spanmetrics`): the exporter of pipelines of one signal
/// that is the receiver of pipelines of another (or the same). The loader makes one
/// instance per connector id and pair of signals, shared by every pipeline that exports
/// to it, and refuses a configuration whose connectors join pipelines in a cycle.
pub trait ConnectorFactory: Send + Sync {
    /// The type in `connectors:` (`forward`).
    fn kind(&self) -> &'static str;
    /// Whether it connects pipelines of `from` to pipelines of `to`.
    fn supports(&self, from: SignalKind, to: SignalKind) -> bool;
    /// Check the section and make the connector from `from` to `to`; `None` if the pair
    /// is not supported.
    fn create(
        &self,
        section: &Section<'_>,
        from: SignalKind,
        to: SignalKind,
    ) -> Option<Result<AnyConnector, ConfigError>>;
}

macro_rules! collector_signal {
    ($signal:ident, $name:literal, $method:ident, $to_t:ident, $to_m:ident, $to_l:ident) => {
        impl CollectorSignal for $signal {
            const PIPELINE: &'static str = $name;
            fn receiver(instance: &mut dyn ReceiverInstance) -> Option<BoxReceiver<Self>> {
                instance.$method()
            }
            fn processor(
                factory: &dyn ProcessorFactory,
                section: &Section<'_>,
            ) -> Option<Result<BoxProcessor<Self>, ConfigError>> {
                factory.$method(section)
            }
            fn exporter(
                factory: &dyn ExporterFactory,
                section: &Section<'_>,
            ) -> Option<Result<BoxExporter<Self>, ConfigError>> {
                factory.$method(section)
            }
            fn queue_batcher(
                factory: &dyn super::queue_batch::QueueBatcherFactory,
                batch: &super::queue_batch::QueueBatch,
            ) -> BoxProcessor<Self> {
                factory.$method(batch)
            }
            fn shared_connector(
                connector: AnyConnector,
                heads: &AnyDownstream,
            ) -> Option<AnyShared> {
                let shared = match (connector, heads) {
                    (AnyConnector::$to_t(c), AnyDownstream::Traces(d)) => {
                        SharedConnector::new(c, d.clone())
                    }
                    (AnyConnector::$to_m(c), AnyDownstream::Metrics(d)) => {
                        SharedConnector::new(c, d.clone())
                    }
                    (AnyConnector::$to_l(c), AnyDownstream::Logs(d)) => {
                        SharedConnector::new(c, d.clone())
                    }
                    _ => return None,
                };
                Some(AnyShared::$signal(shared))
            }
            fn shared_exporter(shared: &AnyShared) -> Option<SharedConnectorExporter<Self>> {
                match shared {
                    AnyShared::$signal(s) => Some(s.exporter()),
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }
            fn head(consumer: BoxConsumer<Self>) -> AnyHead {
                AnyHead::$signal(consumer)
            }
        }
    };
}
collector_signal!(
    Traces,
    "traces",
    traces,
    TracesToTraces,
    TracesToMetrics,
    TracesToLogs
);
collector_signal!(
    Metrics,
    "metrics",
    metrics,
    MetricsToTraces,
    MetricsToMetrics,
    MetricsToLogs
);
collector_signal!(Logs, "logs", logs, LogsToTraces, LogsToMetrics, LogsToLogs);

/// Makes receivers of one type (`otlp`). A receiver instance serves every signal it
/// supports through one set of listeners, so one instance is made per receiver id and
/// its parts go to the pipelines that use it.
pub trait ReceiverFactory: Send + Sync {
    /// The type in `receivers:` (`otlp`).
    fn kind(&self) -> &'static str;
    /// Check the section and make the instance. Do not bind sockets here.
    fn create(&self, section: &Section<'_>) -> Result<Box<dyn ReceiverInstance>, ConfigError>;
}

/// One configured receiver; each signal's part can be taken once.
pub trait ReceiverInstance: Send {
    /// The traces part, if the receiver takes traces.
    fn traces(&mut self) -> Option<BoxReceiver<Traces>> {
        None
    }
    /// The metrics part.
    fn metrics(&mut self) -> Option<BoxReceiver<Metrics>> {
        None
    }
    /// The logs part.
    fn logs(&mut self) -> Option<BoxReceiver<Logs>> {
        None
    }
}

/// Makes processors of one type. Return `None` for a signal the processor does not
/// handle; the loader then says so.
pub trait ProcessorFactory: Send + Sync {
    /// The type in `processors:` (`batch`).
    fn kind(&self) -> &'static str;
    /// For a traces pipeline.
    fn traces(&self, _section: &Section<'_>) -> Option<Result<BoxProcessor<Traces>, ConfigError>> {
        None
    }
    /// For a metrics pipeline.
    fn metrics(
        &self,
        _section: &Section<'_>,
    ) -> Option<Result<BoxProcessor<Metrics>, ConfigError>> {
        None
    }
    /// For a logs pipeline.
    fn logs(&self, _section: &Section<'_>) -> Option<Result<BoxProcessor<Logs>, ConfigError>> {
        None
    }
}

/// Makes exporters of one type.
pub trait ExporterFactory: Send + Sync {
    /// The type in `exporters:` (`otlp`).
    fn kind(&self) -> &'static str;
    /// For a traces pipeline.
    fn traces(&self, _section: &Section<'_>) -> Option<Result<BoxExporter<Traces>, ConfigError>> {
        None
    }
    /// For a metrics pipeline.
    fn metrics(&self, _section: &Section<'_>) -> Option<Result<BoxExporter<Metrics>, ConfigError>> {
        None
    }
    /// For a logs pipeline.
    fn logs(&self, _section: &Section<'_>) -> Option<Result<BoxExporter<Logs>, ConfigError>> {
        None
    }
}

/// What an extension sees of the collector while it runs.
#[derive(Debug, Clone)]
pub struct Host {
    /// Ready only once every pipeline has started (and every readiness gate is open),
    /// not ready while draining.
    pub health: CollectorHealth,
    /// The collector's self-telemetry.
    pub telemetry: Telemetry,
}

/// The collector's readiness: its pipelines' health plus any gates components hold
/// closed (a Kubernetes cache before its first sync, for one).
#[derive(Debug, Clone, Default)]
pub struct CollectorHealth {
    inner: Arc<parking_lot::RwLock<HealthInner>>,
}

#[derive(Debug, Default)]
struct HealthInner {
    pipelines: Vec<Health>,
    started: bool,
    draining: bool,
    gates: Vec<(String, ReadinessGate)>,
}

impl CollectorHealth {
    pub(crate) fn set_pipelines(&self, pipelines: Vec<Health>) {
        let mut h = self.inner.write();
        h.pipelines = pipelines;
        h.started = true;
    }

    pub(crate) fn set_draining(&self) {
        self.inner.write().draining = true;
    }

    /// A gate that holds readiness closed until [`ReadinessGate::open`]; named in
    /// [`CollectorHealth::waiting_for`].
    pub fn gate(&self, name: impl Into<String>) -> ReadinessGate {
        let gate = ReadinessGate::closed();
        self.inner.write().gates.push((name.into(), gate.clone()));
        gate
    }

    /// Whether the collector serves: started, every pipeline ready, every gate open, not
    /// draining.
    pub fn is_ready(&self) -> bool {
        let h = self.inner.read();
        h.started
            && !h.draining
            && h.pipelines.iter().all(Health::is_ready)
            && h.gates.iter().all(|(_, g)| g.is_open())
    }

    /// Whether the process is alive (not every pipeline stopped).
    pub fn is_live(&self) -> bool {
        let h = self.inner.read();
        !h.started || h.pipelines.iter().any(Health::is_live)
    }

    /// What readiness waits for: `starting`, `draining`, or the names of closed gates.
    pub fn waiting_for(&self) -> Vec<String> {
        let h = self.inner.read();
        let mut out = Vec::new();
        if !h.started {
            out.push("starting".to_string());
        }
        if h.draining {
            out.push("draining".to_string());
        }
        out.extend(
            h.gates
                .iter()
                .filter(|(_, g)| !g.is_open())
                .map(|(n, _)| n.clone()),
        );
        out.extend(h.pipelines.iter().flat_map(Health::waiting_for));
        out
    }
}

/// A running extension (`health_check`).
pub trait Extension: Send + Sync {
    /// Start (bind listeners); the collector starts extensions before its pipelines.
    fn start(&self, host: Host) -> BoxFuture<'_, Result<(), BoxError>>;
    /// Stop by `deadline`; extensions stop after the pipelines.
    fn shutdown(&self, deadline: Instant) -> BoxFuture<'_, Result<(), BoxError>>;
    /// The address it listens on, once started (for one that serves), so a port `0` in
    /// the configuration can be found.
    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        None
    }
}

/// Serves the collector's self-metrics where `service.telemetry.metrics` asks (its
/// `address`, or a `pull` reader's Prometheus `host` and `port`). The core has no HTTP
/// server: the crate that has one registers it (`otel-receivers` does, in
/// `default_registry`), so [`Collector::start`](super::Collector::start) serves what the
/// configuration asks for, as the Collector does.
pub trait MetricsEndpointFactory: Send + Sync {
    /// The endpoint for `address` (`host:port`, `:port`); an error says what is wrong
    /// with the address.
    fn create(&self, address: &str) -> Result<Box<dyn Extension>, String>;
}

/// A `periodic` reader of `service.telemetry.metrics.readers`: the collector's own
/// metrics pushed over OTLP. `Debug` leaves out header values (they may hold tokens).
#[derive(Clone, PartialEq, Eq)]
pub struct MetricsPush {
    /// `exporter.otlp.endpoint` (for HTTP, `/v1/metrics` is appended unless it has a path).
    pub endpoint: String,
    /// `exporter.otlp.protocol`: `grpc`, `http/protobuf` (the default, as upstream) or
    /// `http/json`.
    pub protocol: String,
    /// `interval` (milliseconds, or a duration): default 60 s.
    pub interval: Duration,
    /// `timeout`: default 30 s.
    pub timeout: Duration,
    /// `exporter.otlp.headers`.
    pub headers: Vec<(String, String)>,
    /// `exporter.otlp.insecure`: plain text to a bare `host:port`.
    pub insecure: bool,
}

impl fmt::Debug for MetricsPush {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsPush")
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// Pushes the collector's own metrics where a `periodic` reader of
/// `service.telemetry.metrics.readers` asks. The core has no OTLP client: the crate that
/// has one registers this (`otel-exporters` does, in its `register`).
pub trait TelemetryPushFactory: Send + Sync {
    /// A running push for `push`, with `resource` (`service.telemetry.resource`) on what
    /// it sends; started and stopped like an extension, it reads the collector's
    /// telemetry from the [`Host`].
    fn metrics(
        &self,
        push: &MetricsPush,
        resource: &[(String, String)],
    ) -> Result<Box<dyn Extension>, String>;

    /// A running push of the collector's own logs (what [`crate::telemetry::record_log`]
    /// collects) every `push.interval`. By default: not supported.
    fn logs(
        &self,
        _push: &MetricsPush,
        _resource: &[(String, String)],
    ) -> Result<Box<dyn Extension>, String> {
        Err("this build cannot push the collector's logs".into())
    }
}

/// Makes extensions of one type.
pub trait ExtensionFactory: Send + Sync {
    /// The type in `extensions:` (`health_check`).
    fn kind(&self) -> &'static str;
    /// Check the section and make the extension.
    fn create(&self, section: &Section<'_>) -> Result<Box<dyn Extension>, ConfigError>;
}

/// Extensions the Collector has that do nothing useful here; accepted with a warning.
pub(crate) const ACCEPTED_EXTENSIONS: [&str; 2] = ["pprof", "zpages"];

/// `pprof` and `zpages`: accepted so configurations load, and do nothing.
pub(crate) struct NoopExtension(pub(crate) &'static str);

impl ExtensionFactory for NoopExtension {
    fn kind(&self) -> &'static str {
        self.0
    }
    fn create(&self, _section: &Section<'_>) -> Result<Box<dyn Extension>, ConfigError> {
        Ok(Box::new(Noop))
    }
}

pub(crate) struct Noop;

impl Extension for Noop {
    fn start(&self, _host: Host) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async { Ok(()) })
    }
    fn shutdown(&self, _deadline: Instant) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async { Ok(()) })
    }
}

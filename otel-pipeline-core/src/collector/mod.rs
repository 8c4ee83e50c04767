//! The Collector's YAML, loaded and running (feature `config`).
//!
//! [`CollectorConfig::load`] reads one or more YAML files in the OpenTelemetry
//! Collector's shape (`receivers`, `processors`, `exporters`, `extensions`,
//! `service.pipelines.<signal>[/name]`), merged in order, with `${env:NAME}` substitution.
//! Every mistake is an error that names its path and its file, line and column: unknown
//! keys, unknown component types, components used but not defined, and bad values.
//! [`CollectorConfig::build`] builds every component through the factories of a
//! [`Registry`], and [`Collector::start`] runs them: extensions, then each pipeline's
//! exporters and processors, then the receivers, one instance per receiver id shared by
//! every pipeline that names it.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use otel_pipeline_core::collector::{CollectorConfig, ConfigFile, Registry};
//! let registry = Registry::new(); // add each crate's factories: otel_receivers::register(&mut registry), ...
//! let err = CollectorConfig::load(
//!     &[ConfigFile::new("collector.yaml", "service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n")],
//!     |_| None,
//!     &registry,
//! )
//! .unwrap_err();
//! assert!(err.to_string().contains("collector.yaml:4:19: service.pipelines.traces.receivers[0]"), "{err}");
//! # Ok(()) }
//! ```

pub mod auth;
mod factory;
mod queue_batch;
mod registry;

pub use factory::Reload;
pub use factory::{
    AnyConnector, CollectorHealth, CollectorSignal, ConnectorFactory, ExporterFactory, Extension,
    ExtensionFactory, Host, MetricsEndpointFactory, MetricsPush, ProcessorFactory, ReceiverFactory,
    ReceiverInstance, Section, TelemetryPushFactory,
};
#[doc(hidden)]
pub use factory::{AnyDownstream, AnyHead, AnyShared};
pub use queue_batch::{QueueBatch, QueueBatcherFactory};
pub use registry::Registry;

use factory::{ACCEPTED_EXTENSIONS, ReloadSink, Reloadable};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::boxed::{BoxExporter, BoxProcessor, FanOutAll, ReceiverGroup};
use crate::builder::{BuiltPipeline, NoReceivers, Pipeline};
use crate::config::{ConfigError, Location, Node, NodeValue};
use crate::consumer::BoxConsumer;
use crate::id::{ComponentId, ComponentKind};
use crate::id::{ShutdownError, StartError};
use crate::runtime::RunningPipeline;
use crate::signal::{Logs, Metrics, SignalKind, Traces};
use crate::telemetry::Telemetry;

/// Component types of the Collector and its contrib distribution that this build does
/// not include: named in a clear error rather than "unknown".
const COLLECTOR_TYPES: &[(&str, &[&str])] = &[
    (
        "receiver",
        &[
            "jaeger",
            "zipkin",
            "prometheus",
            "kafka",
            "filelog",
            "hostmetrics",
            "k8s_cluster",
            "k8s_events",
            "k8sobjects",
            "kubeletstats",
            "journald",
            "syslog",
            "fluentforward",
            "opencensus",
            "statsd",
            "carbon",
            "receiver_creator",
            "awsxray",
            "otlpjsonfile",
            "prometheus_simple",
            "httpcheck",
            "docker_stats",
            "redis",
            "postgresql",
            "mysql",
        ],
    ),
    (
        "processor",
        &[
            // k8sattributes comes from otel-k8s; without it, this list names it.
            "k8sattributes",
            "resourcedetection",
            "resource",
            "transform",
            "probabilistic_sampler",
            "groupbytrace",
            "groupbyattrs",
            "span",
            "routing",
            "cumulativetodelta",
            "deltatocumulative",
            "metricstransform",
            "metricsgeneration",
            "servicegraph",
            "spanmetrics",
            "logdedup",
            "interval",
            "sumologic",
            "remotetap",
            "schema",
            "experimental_metricsgeneration",
            "redaction_v2",
        ],
    ),
    (
        "exporter",
        &[
            "otlp_grpc",
            "kafka",
            "prometheusremotewrite",
            "zipkin",
            "jaeger",
            "logging",
            "loki",
            "elasticsearch",
            "awsxray",
            "awsemf",
            "datadog",
            "splunk_hec",
            "clickhouse",
            "googlecloud",
            "azuremonitor",
            "influxdb",
            "sapm",
            "signalfx",
            "opencensus",
        ],
    ),
    (
        "connector",
        &[
            "count",
            "datadog",
            "elasticapm",
            "exceptions",
            "failover",
            "grafanacloud",
            "otlpjson",
            "roundrobin",
            "signozmeter",
            "sum",
        ],
    ),
    (
        "extension",
        &[
            "file_storage",
            "oauth2client",
            "bearertokenauth",
            "basicauth",
            "memory_ballast",
            "k8s_observer",
            "docker_observer",
            "host_observer",
            "oidc",
            "sigv4auth",
            "ballast",
            "db_storage",
            "jaegerremotesampling",
            "opamp",
            "http_forwarder",
            "k8s_leader_elector",
            "oauth2client",
        ],
    ),
];

/// One configuration file: a name for errors (its path) and its text. `Debug` shows the
/// name and size only: the text may hold credentials.
#[derive(Clone)]
pub struct ConfigFile {
    /// Shown in errors: `agent.yaml:12:7: ...`.
    pub name: String,
    /// The YAML.
    pub text: String,
}

impl fmt::Debug for ConfigFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigFile")
            .field("name", &self.name)
            .field("bytes", &self.text.len())
            .finish()
    }
}

impl ConfigFile {
    /// A file named `name` holding `text`.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            text: text.into(),
        }
    }

    /// Read `path`.
    pub fn read(path: impl AsRef<std::path::Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("reading {}: {e}", path.display())))?;
        Ok(Self::new(path.display().to_string(), text))
    }
}

/// Everything wrong with a configuration, each with its path and place. Its `Debug` is
/// its `Display` text, one `file:line:col: path: message` a line, so `?` from `main`
/// prints what the docs show.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    /// The errors, in file order.
    pub errors: Vec<ConfigError>,
}

crate::id::readable_debug!(LoadError, |s, f| f
    .debug_struct("LoadError")
    .field("errors", &s.errors)
    .finish());

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<ConfigError> for LoadError {
    fn from(e: ConfigError) -> Self {
        Self { errors: vec![e] }
    }
}

/// One `service.pipelines` entry.
#[derive(Debug, Clone)]
struct PipelineSpec {
    name: String,
    signal: SignalKind,
    receivers: Vec<ComponentId>,
    processors: Vec<ComponentId>,
    exporters: Vec<ComponentId>,
}

/// `service.telemetry`, as far as it applies here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTelemetry {
    /// Where to serve self-metrics as Prometheus text (`None`: level `none`). Default
    /// `localhost:8888`, the Collector's.
    pub metrics_address: Option<String>,
    /// `service.telemetry.logs.level`: `debug`, `info` (default), `warn`, `error`.
    pub log_level: String,
    /// `service.telemetry.metrics.readers` that push: self-metrics sent over OTLP every
    /// interval.
    pub metric_pushes: Vec<MetricsPush>,
    /// `service.telemetry.logs.processors`: the collector's own logs (what the
    /// application records with [`crate::telemetry::record_log`]) sent over OTLP.
    pub log_pushes: Vec<MetricsPush>,
    /// `service.telemetry.resource`: attributes of the collector's own telemetry.
    pub resource: Vec<(String, String)>,
}

/// A loaded and validated configuration. See the [module docs](self). `Debug` shows the
/// pipelines and extensions, not the settings (they may hold credentials).
pub struct CollectorConfig {
    root: Node,
    index: BTreeMap<String, Location>,
    pipelines: Vec<PipelineSpec>,
    extensions: Vec<ComponentId>,
    telemetry: ServiceTelemetry,
    warnings: Vec<String>,
}

impl fmt::Debug for CollectorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollectorConfig")
            .field("pipelines", &self.pipeline_names().collect::<Vec<_>>())
            .field("extensions", &self.extensions)
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

impl CollectorConfig {
    /// Load `files` merged in order, replacing `${env:NAME}` with `env(NAME)`, and check
    /// everything the [`Registry`] can check without starting anything: the document's
    /// shape, every component's configuration, and every reference.
    pub fn load(
        files: &[ConfigFile],
        env: impl Fn(&str) -> Option<String>,
        registry: &Registry,
    ) -> Result<Self, LoadError> {
        if files.is_empty() {
            return Err(ConfigError::new("", "no configuration given").into());
        }
        let mut root: Option<Node> = None;
        for file in files {
            let node = crate::config::parse(&file.name, &file.text, &env)?;
            if !matches!(node.value, NodeValue::Map(_)) {
                return Err(ConfigError::new("", "the configuration must be a mapping")
                    .at(node.at)
                    .into());
            }
            match &mut root {
                None => root = Some(node),
                Some(r) => crate::config::merge(r, node),
            }
        }
        let root = root.unwrap_or_else(|| unreachable_root(files));
        let mut index = BTreeMap::new();
        root.index("", &mut index);
        let mut config = Self {
            root,
            index,
            pipelines: Vec::new(),
            extensions: Vec::new(),
            telemetry: ServiceTelemetry {
                metrics_address: Some("localhost:8888".into()),
                log_level: "info".into(),
                metric_pushes: Vec::new(),
                log_pushes: Vec::new(),
                resource: Vec::new(),
            },
            warnings: Vec::new(),
        };
        let mut errors = Vec::new();
        config.check_shape(registry, &mut errors);
        if errors.is_empty() {
            // Building checks every component's own configuration. Some components need
            // a tokio runtime to be built (lazy connections); lend one when the caller
            // has none, so loading works from plain code too.
            let lent = match tokio::runtime::Handle::try_current() {
                Ok(_) => None,
                Err(_) => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok(),
            };
            let _entered = lent.as_ref().map(tokio::runtime::Runtime::enter);
            // Everything but what depends on this host at this moment (whether a port is
            // free): `--validate` runs where the collector may already be running.
            // [`CollectorConfig::check_host`] checks the rest.
            if let Err(e) = config.build_inner(registry, Telemetry::new(), false, None) {
                errors.extend(e.errors);
            }
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(LoadError { errors })
        }
    }

    /// Warnings worth logging (components accepted that do nothing here).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The pipelines' names (`traces`, `traces/agent`).
    pub fn pipeline_names(&self) -> impl Iterator<Item = &str> {
        self.pipelines.iter().map(|p| p.name.as_str())
    }

    /// `service.telemetry`.
    pub fn service_telemetry(&self) -> &ServiceTelemetry {
        &self.telemetry
    }

    fn err(&self, path: &str, message: impl Into<String>) -> ConfigError {
        let e = ConfigError::new(path, message);
        match factory::locate(&self.index, path) {
            Some(at) => e.at(at),
            None => e,
        }
    }

    fn check_shape(&mut self, registry: &Registry, errors: &mut Vec<ConfigError>) {
        for (key, at, _) in self.root.entries() {
            if !matches!(
                key.as_str(),
                "receivers" | "processors" | "exporters" | "extensions" | "connectors" | "service"
            ) {
                errors.push(
                    ConfigError::new(key.clone(), "unknown top-level key (expected receivers, processors, exporters, extensions, connectors or service)")
                        .at(at.clone()),
                );
            }
        }
        if let Some(node) = self.root.get("connectors") {
            if !node.is_null() && !matches!(node.value, NodeValue::Map(_)) {
                errors.push(self.err(
                    "connectors",
                    "must be a mapping of component ids to their settings",
                ));
            }
            for (id, _, _) in node.entries() {
                let path = format!("connectors.{id}");
                match id.parse::<ComponentId>() {
                    Err(e) => errors.push(self.err(&path, e.to_string())),
                    Ok(cid) => {
                        if !registry.connectors.contains_key(cid.kind()) {
                            errors.push(self.err(&path, unknown_connector(registry, cid.kind())));
                        }
                        for section in ["receivers", "exporters"] {
                            if self.root.get(section).is_some_and(|s| s.get(id).is_some()) {
                                errors.push(self.err(
                                    &path,
                                    format!("`{id}` is defined both under {section} and under connectors: pipelines could not tell which one they name"),
                                ));
                            }
                        }
                    }
                }
            }
        }
        // Every defined component: a valid id of a known type.
        for (section, kind) in [
            ("receivers", ComponentKind::Receiver),
            ("processors", ComponentKind::Processor),
            ("exporters", ComponentKind::Exporter),
            ("extensions", ComponentKind::Extension),
        ] {
            let Some(node) = self.root.get(section) else {
                continue;
            };
            if !node.is_null() && !matches!(node.value, NodeValue::Map(_)) {
                errors.push(self.err(
                    section,
                    "must be a mapping of component ids to their settings",
                ));
                continue;
            }
            for (id, _, _) in node.entries() {
                let path = format!("{section}.{id}");
                match id.parse::<ComponentId>() {
                    Err(e) => errors.push(self.err(&path, e.to_string())),
                    Ok(cid) => {
                        if let Err(e) = known(registry, kind, cid.kind()) {
                            errors.push(self.err(&path, e));
                        } else if kind == ComponentKind::Extension
                            && ACCEPTED_EXTENSIONS.contains(&cid.kind())
                        {
                            self.warnings.push(format!(
                                "extensions.{id}: accepted, but it does nothing in this collector"
                            ));
                        }
                    }
                }
            }
        }
        let Some(service) = self.root.get("service").cloned() else {
            errors.push(ConfigError::new(
                "service",
                "missing: a configuration needs service.pipelines",
            ));
            return;
        };
        for (key, at, _) in service.entries() {
            if !matches!(key.as_str(), "pipelines" | "extensions" | "telemetry") {
                errors.push(
                    ConfigError::new(
                        format!("service.{key}"),
                        "unknown key (expected pipelines, extensions or telemetry)",
                    )
                    .at(at.clone()),
                );
            }
        }
        if let Some(ext) = service.get("extensions") {
            match &ext.value {
                NodeValue::Seq(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let path = format!("service.extensions[{i}]");
                        match self.reference(item, "extensions", &path) {
                            Ok(id) => self.extensions.push(id),
                            Err(e) => errors.push(e),
                        }
                    }
                }
                NodeValue::Null => {}
                _ => errors.push(self.err("service.extensions", "must be a list of extension ids")),
            }
        }
        if let Some(t) = service.get("telemetry") {
            self.check_telemetry(t, errors);
        }
        let Some(pipelines) = service.get("pipelines") else {
            errors.push(self.err("service", "missing `pipelines`"));
            return;
        };
        if pipelines.entries().is_empty() {
            errors.push(self.err("service.pipelines", "needs at least one pipeline"));
        }
        for (name, at, spec) in pipelines.entries() {
            let path = format!("service.pipelines.{name}");
            let signal = match name.split('/').next().unwrap_or_default() {
                "traces" => SignalKind::Traces,
                "metrics" => SignalKind::Metrics,
                "logs" => SignalKind::Logs,
                other => {
                    errors.push(
                        ConfigError::new(path, format!("unknown signal `{other}` (expected traces, metrics or logs, optionally /name)"))
                            .at(at.clone()),
                    );
                    continue;
                }
            };
            if name.ends_with('/') {
                errors.push(
                    ConfigError::new(path, "a pipeline name after `/` must not be empty")
                        .at(at.clone()),
                );
                continue;
            }
            let mut lists: BTreeMap<&str, Vec<ComponentId>> = BTreeMap::new();
            let mut listed: BTreeMap<&str, usize> = BTreeMap::new();
            for (key, key_at, value) in spec.entries() {
                let (section, required) = match key.as_str() {
                    "receivers" => ("receivers", true),
                    "processors" => ("processors", false),
                    "exporters" => ("exporters", true),
                    _ => {
                        errors.push(
                            ConfigError::new(
                                format!("{path}.{key}"),
                                "unknown key (expected receivers, processors or exporters)",
                            )
                            .at(key_at.clone()),
                        );
                        continue;
                    }
                };
                let _ = required;
                let items: &[Node] = match &value.value {
                    NodeValue::Seq(items) => items,
                    NodeValue::Null => &[],
                    _ => {
                        errors.push(
                            self.err(&format!("{path}.{key}"), "must be a list of component ids"),
                        );
                        continue;
                    }
                };
                listed.insert(section, items.len());
                let mut ids = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}.{key}[{i}]");
                    match self.reference(item, section, &item_path) {
                        Ok(id) if ids.contains(&id) => errors.push(
                            ConfigError::new(item_path, format!("`{id}` is listed twice"))
                                .at(item.at.clone()),
                        ),
                        Ok(id) => ids.push(id),
                        Err(e) => errors.push(e),
                    }
                }
                lists.insert(section, ids);
            }
            for required in ["receivers", "exporters"] {
                if listed.get(required).is_none_or(|n| *n == 0) {
                    errors.push(
                        ConfigError::new(
                            format!("{path}.{required}"),
                            format!("a pipeline needs at least one of its {required}"),
                        )
                        .at(at.clone()),
                    );
                }
            }
            self.pipelines.push(PipelineSpec {
                name: name.clone(),
                signal,
                receivers: lists.remove("receivers").unwrap_or_default(),
                processors: lists.remove("processors").unwrap_or_default(),
                exporters: lists.remove("exporters").unwrap_or_default(),
            });
        }
        if errors.is_empty() {
            self.check_connectors(registry, errors);
        }
    }

    /// A component id in a list, which must be defined in `section`.
    fn reference(
        &self,
        item: &Node,
        section: &str,
        path: &str,
    ) -> Result<ComponentId, ConfigError> {
        let NodeValue::String(text) = &item.value else {
            return Err(ConfigError::new(path, "expected a component id").at(item.at.clone()));
        };
        let id: ComponentId = text.parse().map_err(|e: crate::id::BuildError| {
            ConfigError::new(path, e.to_string()).at(item.at.clone())
        })?;
        let defined = self
            .root
            .get(section)
            .is_some_and(|s| s.get(text).is_some())
            || (matches!(section, "receivers" | "exporters") && self.is_connector(text));
        if !defined {
            let singular = section.trim_end_matches('s');
            let or_connectors = if matches!(section, "receivers" | "exporters") {
                " or `connectors`"
            } else {
                ""
            };
            return Err(ConfigError::new(
                path,
                format!("{singular} `{text}` is used here but not defined under `{section}`{or_connectors}"),
            )
            .at(item.at.clone()));
        }
        Ok(id)
    }

    /// Whether `id` is defined under `connectors`.
    fn is_connector(&self, id: &str) -> bool {
        self.root
            .get("connectors")
            .is_some_and(|s| s.get(id).is_some())
    }

    /// Connectors as the Collector checks them: each one used is an exporter of some
    /// pipeline and a receiver of another it can feed, and connectors join no pipelines
    /// in a cycle. Then orders the pipelines so each comes after every pipeline it feeds
    /// through a connector: built and started first, stopped last.
    fn check_connectors(&mut self, registry: &Registry, errors: &mut Vec<ConfigError>) {
        let supports = |id: &ComponentId, from: SignalKind, to: SignalKind| {
            registry
                .connectors
                .get(id.kind())
                .is_some_and(|f| f.supports(from, to))
        };
        for (a, spec) in self.pipelines.iter().enumerate() {
            for (i, id) in spec.exporters.iter().enumerate() {
                if !self.is_connector(&id.to_string())
                    || !registry.connectors.contains_key(id.kind())
                {
                    continue;
                }
                let feeds = self
                    .pipelines
                    .iter()
                    .any(|b| b.receivers.contains(id) && supports(id, spec.signal, b.signal));
                if !feeds {
                    errors.push(self.err(
                        &format!("service.pipelines.{}.exporters[{i}]", spec.name),
                        format!(
                            "connector `{id}` is an exporter of this {} pipeline but the receiver of no pipeline it can feed from {}",
                            signal_name(spec.signal),
                            signal_name(spec.signal)
                        ),
                    ));
                }
                let _ = a;
            }
            for (i, id) in spec.receivers.iter().enumerate() {
                if !self.is_connector(&id.to_string())
                    || !registry.connectors.contains_key(id.kind())
                {
                    continue;
                }
                let fed = self
                    .pipelines
                    .iter()
                    .any(|b| b.exporters.contains(id) && supports(id, b.signal, spec.signal));
                if !fed {
                    errors.push(self.err(
                        &format!("service.pipelines.{}.receivers[{i}]", spec.name),
                        format!(
                            "connector `{id}` is a receiver of this {} pipeline but the exporter of no pipeline it can take {} from",
                            signal_name(spec.signal),
                            signal_name(spec.signal)
                        ),
                    ));
                }
            }
        }
        if !errors.is_empty() {
            return;
        }
        // Edges: pipeline a feeds pipeline b through connector c.
        let n = self.pipelines.len();
        let mut feeds: Vec<Vec<(usize, ComponentId)>> = vec![Vec::new(); n];
        for (a, pa) in self.pipelines.iter().enumerate() {
            for c in pa
                .exporters
                .iter()
                .filter(|c| self.is_connector(&c.to_string()))
            {
                for (b, pb) in self.pipelines.iter().enumerate() {
                    if pb.receivers.contains(c) && supports(c, pa.signal, pb.signal) {
                        feeds[a].push((b, c.clone()));
                    }
                }
            }
        }
        // Depth-first: a pipeline goes after everything it feeds; a pipeline met again
        // while its own feeds are being placed closes a cycle.
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        fn visit(
            a: usize,
            feeds: &[Vec<(usize, ComponentId)>],
            marks: &mut [Mark],
            path: &mut Vec<(usize, Option<ComponentId>)>,
            order: &mut Vec<usize>,
        ) -> Result<(), Vec<(usize, Option<ComponentId>)>> {
            marks[a] = Mark::Open;
            for (b, c) in &feeds[a] {
                match marks[*b] {
                    Mark::Done => {}
                    Mark::Open => {
                        let start = path.iter().position(|(p, _)| p == b).unwrap_or(0);
                        let mut cycle = path[start..].to_vec();
                        if let Some(last) = cycle.last_mut() {
                            last.1 = Some(c.clone());
                        } else {
                            cycle.push((a, Some(c.clone())));
                        }
                        cycle.push((*b, None));
                        return Err(cycle);
                    }
                    Mark::New => {
                        if let Some(last) = path.last_mut() {
                            last.1 = Some(c.clone());
                        }
                        path.push((*b, None));
                        visit(*b, feeds, marks, path, order)?;
                        path.pop();
                    }
                }
            }
            marks[a] = Mark::Done;
            order.push(a);
            Ok(())
        }
        let mut marks = vec![Mark::New; n];
        let mut order = Vec::with_capacity(n);
        for a in 0..n {
            if marks[a] == Mark::New {
                let mut path = vec![(a, None)];
                if let Err(cycle) = visit(a, &feeds, &mut marks, &mut path, &mut order) {
                    let text: Vec<String> = cycle
                        .iter()
                        .map(|(p, c)| match c {
                            Some(c) => format!("{} -> {c} ->", self.pipelines[*p].name),
                            None => self.pipelines[*p].name.clone(),
                        })
                        .collect();
                    errors.push(self.err(
                        "service.pipelines",
                        format!("connectors join pipelines in a cycle: {}", text.join(" ")),
                    ));
                    return;
                }
            }
        }
        let mut slots: Vec<Option<PipelineSpec>> = std::mem::take(&mut self.pipelines)
            .into_iter()
            .map(Some)
            .collect();
        self.pipelines = order.into_iter().filter_map(|i| slots[i].take()).collect();
    }

    fn check_telemetry(&mut self, t: &Node, errors: &mut Vec<ConfigError>) {
        for (key, at, value) in t.entries() {
            let path = format!("service.telemetry.{key}");
            match key.as_str() {
                "metrics" => {
                    let mut level_none = false;
                    for (k, k_at, v) in value.entries() {
                        let p = format!("{path}.{k}");
                        match (k.as_str(), &v.value) {
                            ("address", NodeValue::String(a)) => {
                                self.telemetry.metrics_address = Some(a.clone())
                            }
                            ("level", NodeValue::String(l)) => match l.as_str() {
                                "none" => level_none = true,
                                "basic" | "normal" | "detailed" => {}
                                _ => errors.push(
                                    ConfigError::new(p, "expected none, basic, normal or detailed")
                                        .at(v.at.clone()),
                                ),
                            },
                            ("readers", NodeValue::Seq(readers)) => {
                                // Readers replace the default pull endpoint (as upstream):
                                // only a pull reader in the list serves one.
                                self.telemetry.metrics_address = None;
                                for (i, r) in readers.iter().enumerate() {
                                    if let Some(periodic) = r.get("periodic") {
                                        match self.periodic_reader(
                                            periodic,
                                            &format!("{p}[{i}].periodic"),
                                        ) {
                                            Ok(push) => self.telemetry.metric_pushes.push(push),
                                            Err(e) => errors.push(e),
                                        }
                                        continue;
                                    }
                                    let prom = r
                                        .get("pull")
                                        .and_then(|p| p.get("exporter"))
                                        .and_then(|e| e.get("prometheus"));
                                    match prom {
                                        Some(p) => {
                                            let host = match p.get("host").map(|h| &h.value) {
                                                Some(NodeValue::String(h)) => h.clone(),
                                                _ => "localhost".into(),
                                            };
                                            let port = match p.get("port").map(|h| &h.value) {
                                                Some(NodeValue::Int(port)) => *port,
                                                _ => 8888,
                                            };
                                            self.telemetry.metrics_address = Some(format!("{host}:{port}"));
                                        }
                                        None => errors.push(self.err(
                                            &format!("{p}[{i}]"),
                                            "expected a pull reader with a prometheus exporter, or a periodic reader with an otlp exporter",
                                        )),
                                    }
                                }
                            }
                            _ => errors.push(
                                ConfigError::new(
                                    p,
                                    "unknown or invalid key (expected address, level or readers)",
                                )
                                .at(k_at.clone()),
                            ),
                        }
                    }
                    if level_none {
                        self.telemetry.metrics_address = None;
                    }
                }
                "logs" => {
                    for (k, k_at, v) in value.entries() {
                        let p = format!("{path}.{k}");
                        match k.as_str() {
                            "level" => match &v.value {
                                NodeValue::String(l)
                                    if matches!(
                                        l.to_ascii_lowercase().as_str(),
                                        "debug"
                                            | "info"
                                            | "warn"
                                            | "error"
                                            | "dpanic"
                                            | "panic"
                                            | "fatal"
                                    ) =>
                                {
                                    self.telemetry.log_level = l.to_ascii_lowercase();
                                }
                                _ => errors.push(
                                    ConfigError::new(p, "expected debug, info, warn or error")
                                        .at(v.at.clone()),
                                ),
                            },
                            "encoding" | "development" | "output_paths" | "error_output_paths"
                            | "disable_caller" | "disable_stacktrace" | "initial_fields"
                            | "sampling" => {}
                            "processors" => match &v.value {
                                NodeValue::Seq(items) => {
                                    for (i, item) in items.iter().enumerate() {
                                        match self.log_processor(item, &format!("{p}[{i}]")) {
                                            Ok(push) => self.telemetry.log_pushes.push(push),
                                            Err(e) => errors.push(e),
                                        }
                                    }
                                }
                                _ => errors.push(
                                    ConfigError::new(p, "expected a list of processors")
                                        .at(v.at.clone()),
                                ),
                            },
                            _ => errors.push(ConfigError::new(p, "unknown key").at(k_at.clone())),
                        }
                    }
                }
                "resource" => {
                    for (k, _, v) in value.entries() {
                        // The declarative form: `attributes: [{name, value}]`.
                        if let ("attributes", NodeValue::Seq(items)) = (k.as_str(), &v.value) {
                            for (i, item) in items.iter().enumerate() {
                                let text = |key: &str| match item.get(key).map(|n| &n.value) {
                                    Some(NodeValue::String(s)) => Some(s.clone()),
                                    Some(NodeValue::Int(i)) => Some(i.to_string()),
                                    Some(NodeValue::Bool(b)) => Some(b.to_string()),
                                    _ => None,
                                };
                                match (text("name"), text("value")) {
                                    (Some(n), Some(v)) => self.telemetry.resource.push((n, v)),
                                    _ => errors.push(self.err(
                                        &format!("{path}.attributes[{i}]"),
                                        "each attribute needs a name and a value",
                                    )),
                                }
                            }
                            continue;
                        }
                        if matches!(k.as_str(), "schema_url" | "detection" | "attributes_list") {
                            continue;
                        }
                        match &v.value {
                            NodeValue::String(text) => {
                                self.telemetry.resource.push((k.clone(), text.clone()))
                            }
                            NodeValue::Int(i) => {
                                self.telemetry.resource.push((k.clone(), i.to_string()))
                            }
                            NodeValue::Bool(b) => {
                                self.telemetry.resource.push((k.clone(), b.to_string()))
                            }
                            NodeValue::Null => {}
                            _ => errors.push(self.err(&format!("{path}.{k}"), "expected a string")),
                        }
                    }
                }
                "traces" => {}
                _ => errors.push(
                    ConfigError::new(
                        path,
                        "unknown key (expected metrics, logs, resource or traces)",
                    )
                    .at(at.clone()),
                ),
            }
        }
    }

    /// A time in the configuration schema's form: milliseconds, or a duration.
    fn millis(&self, v: &Node, at: &str) -> Result<Duration, ConfigError> {
        match &v.value {
            NodeValue::Int(i) if *i > 0 => Ok(Duration::from_millis(*i as u64)),
            NodeValue::String(t) => crate::config::parse_duration(t).map_err(|m| self.err(at, m)),
            _ => Err(self.err(at, "expected milliseconds or a duration")),
        }
    }

    /// A `periodic` reader with an `otlp` exporter (as the Collector's configuration
    /// schema writes it).
    fn periodic_reader(&self, node: &Node, path: &str) -> Result<MetricsPush, ConfigError> {
        let ms = |v: &Node, key: &str| self.millis(v, &format!("{path}.{key}"));
        let mut push = MetricsPush {
            endpoint: String::new(),
            protocol: "http/protobuf".into(),
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
            headers: Vec::new(),
            insecure: false,
        };
        let mut otlp = None;
        for (k, k_at, v) in node.entries() {
            match k.as_str() {
                "interval" => push.interval = ms(v, "interval")?,
                "timeout" => push.timeout = ms(v, "timeout")?,
                "exporter" => {
                    for (e, e_at, ev) in v.entries() {
                        if e == "otlp" {
                            otlp = Some(ev);
                        } else {
                            return Err(ConfigError::new(
                                format!("{path}.exporter.{e}"),
                                "only an otlp exporter pushes self-metrics here (prometheus is a pull reader)",
                            )
                            .at(e_at.clone()));
                        }
                    }
                }
                "producers" | "cardinality_limits" => {}
                _ => {
                    return Err(ConfigError::new(
                        format!("{path}.{k}"),
                        "unknown key (expected interval, timeout or exporter)",
                    )
                    .at(k_at.clone()));
                }
            }
        }
        let otlp =
            otlp.ok_or_else(|| self.err(&format!("{path}.exporter"), "needs an otlp exporter"))?;
        self.otlp_push_exporter(otlp, &format!("{path}.exporter.otlp"), &mut push)?;
        Ok(push)
    }

    /// A `batch` (or `simple`) log processor of `service.telemetry.logs.processors` with
    /// an `otlp` exporter: the collector's own logs pushed over OTLP.
    fn log_processor(&self, node: &Node, path: &str) -> Result<MetricsPush, ConfigError> {
        let (kind, body) = match (node.get("batch"), node.get("simple")) {
            (Some(b), _) => ("batch", b),
            (None, Some(s)) => ("simple", s),
            _ => return Err(self.err(path, "expected a batch or simple processor")),
        };
        let at = format!("{path}.{kind}");
        let ms = |v: &Node, key: &str| self.millis(v, &format!("{at}.{key}"));
        let mut push = MetricsPush {
            endpoint: String::new(),
            protocol: "http/protobuf".into(),
            // The OpenTelemetry SDK's batch processor: every second (a simple one: at once,
            // here at most every 200 ms).
            interval: if kind == "batch" {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(200)
            },
            timeout: Duration::from_secs(30),
            headers: Vec::new(),
            insecure: false,
        };
        let mut otlp = None;
        for (k, k_at, v) in body.entries() {
            match k.as_str() {
                "schedule_delay" => push.interval = ms(v, "schedule_delay")?,
                "export_timeout" => push.timeout = ms(v, "export_timeout")?,
                "max_queue_size" | "max_export_batch_size" => {}
                "exporter" => {
                    for (e, e_at, ev) in v.entries() {
                        if e == "otlp" {
                            otlp = Some(ev);
                        } else {
                            return Err(ConfigError::new(
                                format!("{at}.exporter.{e}"),
                                "only an otlp exporter pushes the collector's logs here",
                            )
                            .at(e_at.clone()));
                        }
                    }
                }
                _ => {
                    return Err(ConfigError::new(
                        format!("{at}.{k}"),
                        "unknown key (expected exporter, schedule_delay, export_timeout, max_queue_size or max_export_batch_size)",
                    )
                    .at(k_at.clone()));
                }
            }
        }
        let otlp =
            otlp.ok_or_else(|| self.err(&format!("{at}.exporter"), "needs an otlp exporter"))?;
        self.otlp_push_exporter(otlp, &format!("{at}.exporter.otlp"), &mut push)?;
        Ok(push)
    }

    /// The `otlp` exporter of a telemetry reader or log processor.
    fn otlp_push_exporter(
        &self,
        otlp: &Node,
        at: &str,
        push: &mut MetricsPush,
    ) -> Result<(), ConfigError> {
        for (k, k_at, v) in otlp.entries() {
            let text = match &v.value {
                NodeValue::String(t) => Some(t.clone()),
                _ => None,
            };
            match (k.as_str(), text) {
                ("endpoint", Some(t)) => push.endpoint = t,
                ("protocol", Some(t))
                    if matches!(t.as_str(), "grpc" | "http/protobuf" | "http/json") =>
                {
                    push.protocol = t;
                }
                ("protocol", _) => {
                    return Err(ConfigError::new(
                        format!("{at}.protocol"),
                        "expected grpc, http/protobuf or http/json",
                    )
                    .at(v.at.clone()));
                }
                ("insecure", _) => push.insecure = matches!(v.value, NodeValue::Bool(true)),
                ("headers", _) => match &v.value {
                    NodeValue::Map(_) => {
                        for (h, _, hv) in v.entries() {
                            if let NodeValue::String(hv) = &hv.value {
                                push.headers.push((h.clone(), hv.clone()));
                            }
                        }
                    }
                    NodeValue::Seq(items) => {
                        for item in items {
                            let name = item.get("name").and_then(|n| match &n.value {
                                NodeValue::String(s) => Some(s.clone()),
                                _ => None,
                            });
                            let value = item.get("value").and_then(|n| match &n.value {
                                NodeValue::String(s) => Some(s.clone()),
                                _ => None,
                            });
                            match (name, value) {
                                (Some(n), Some(v)) => push.headers.push((n, v)),
                                _ => {
                                    return Err(ConfigError::new(
                                        format!("{at}.headers"),
                                        "each header needs a name and a value",
                                    )
                                    .at(item.at.clone()));
                                }
                            }
                        }
                    }
                    _ => {
                        return Err(ConfigError::new(
                            format!("{at}.headers"),
                            "expected a mapping or a list of name and value",
                        )
                        .at(v.at.clone()));
                    }
                },
                (
                    "compression"
                    | "temporality_preference"
                    | "default_histogram_aggregation"
                    | "timeout"
                    | "certificate"
                    | "client_certificate"
                    | "client_key",
                    _,
                ) => {}
                _ => {
                    return Err(ConfigError::new(
                        format!("{at}.{k}"),
                        "unknown key (expected endpoint, protocol, headers or insecure)",
                    )
                    .at(k_at.clone()));
                }
            }
        }
        if push.endpoint.is_empty() {
            return Err(self.err(&format!("{at}.endpoint"), "missing: where to push"));
        }
        Ok(())
    }

    fn section<'a>(&'a self, section: &str, id: &'a ComponentId) -> Section<'a> {
        let key = id.to_string();
        Section {
            id: id.clone(),
            path: format!("{section}.{key}"),
            node: self.root.get(section).and_then(|s| s.get(&key)),
            index: &self.index,
            root: Some(&self.root),
            reloads: None,
            exporters: None,
        }
    }

    /// Build every component (counting into `telemetry`), ready to start. Receivers check
    /// here what they can before they start (certificate files, listen addresses taken),
    /// and an error points into the user's file.
    pub fn build(&self, registry: &Registry, telemetry: Telemetry) -> Result<Collector, LoadError> {
        self.build_inner(registry, telemetry, true, None)
    }

    /// What [`load`](Self::load) leaves out because it depends on this host at this
    /// moment: whether receivers' certificate files can be read and their ports are free.
    /// `collector --validate` shows these as warnings, since validate often runs off the
    /// target host or beside a running collector; `--validate --strict` and
    /// [`build`](Self::build) make them errors.
    pub fn check_host(&self, registry: &Registry) -> Vec<ConfigError> {
        let mut found = Vec::new();
        let _ = self.build_inner(registry, Telemetry::new(), false, Some(&mut found));
        found
    }

    /// `to_run`: the components are built to run (receivers' checks of this host, their
    /// certificate files and ports, are errors; reloadable components say so). Otherwise
    /// they are built only to check the configuration, and the host checks run only when
    /// `host_checks` is given, which collects their failures.
    fn build_inner(
        &self,
        registry: &Registry,
        telemetry: Telemetry,
        to_run: bool,
        mut host_checks: Option<&mut Vec<ConfigError>>,
    ) -> Result<Collector, LoadError> {
        let sink = ReloadSink::default();
        let reloads = to_run.then_some(&sink);
        let mut errors = Vec::new();
        let mut pipelines = Vec::new();
        // Pipelines are in order: each after those it feeds through a connector, whose
        // heads are then known.
        let mut links = Links::default();
        for spec in &self.pipelines {
            let built = match spec.signal {
                SignalKind::Traces => self
                    .build_pipeline::<Traces>(registry, spec, &telemetry, reloads, &mut links)
                    .map(AnyBuilt::Traces),
                SignalKind::Metrics => self
                    .build_pipeline::<Metrics>(registry, spec, &telemetry, reloads, &mut links)
                    .map(AnyBuilt::Metrics),
                SignalKind::Logs => self
                    .build_pipeline::<Logs>(registry, spec, &telemetry, reloads, &mut links)
                    .map(AnyBuilt::Logs),
            };
            match built {
                Ok(b) => pipelines.push(b),
                Err(e) => errors.extend(e),
            }
        }
        // Connectors defined but in no pipeline are still checked.
        if let Some(node) = self.root.get("connectors") {
            for (key, _, _) in node.entries() {
                let Ok(id) = key.parse::<ComponentId>() else {
                    continue;
                };
                let used = self.pipelines.iter().any(|p| p.exporters.contains(&id));
                let Some(factory) = registry.connectors.get(id.kind()) else {
                    continue;
                };
                if used {
                    continue;
                }
                let section = self.section("connectors", &id);
                let pair = SignalKind::ALL
                    .into_iter()
                    .flat_map(|a| SignalKind::ALL.into_iter().map(move |b| (a, b)))
                    .find(|(a, b)| factory.supports(*a, *b));
                if let Some((a, b)) = pair
                    && let Some(Err(e)) = factory.create(&section, a, b)
                {
                    errors.push(section.place(e));
                }
            }
        }
        // One instance per receiver id, with the pipelines each signal feeds.
        let mut receivers = Vec::new();
        let mut used: Vec<&ComponentId> = Vec::new();
        for spec in &self.pipelines {
            for id in &spec.receivers {
                if !used.contains(&id) && !self.is_connector(&id.to_string()) {
                    used.push(id);
                }
            }
        }
        for id in used {
            let section = self.section("receivers", id);
            let Some(factory) = registry.receivers.get(id.kind()) else {
                continue;
            };
            match factory.create(&section) {
                Ok(instance) => receivers.push((id.clone(), instance)),
                Err(e) => errors.push(section.place(e)),
            }
        }
        // Defined but unused components are still checked, as the Collector does.
        for (section_name, _) in [("receivers", ()), ("processors", ()), ("exporters", ())] {
            let Some(section_node) = self.root.get(section_name) else {
                continue;
            };
            for (key, _, _) in section_node.entries() {
                let Ok(id) = key.parse::<ComponentId>() else {
                    continue;
                };
                let in_use = self.pipelines.iter().any(|p| match section_name {
                    "receivers" => p.receivers.contains(&id),
                    "processors" => p.processors.contains(&id),
                    _ => p.exporters.contains(&id),
                });
                if in_use {
                    continue;
                }
                let mut section = self.section(section_name, &id);
                section.exporters = Some(&registry.exporters);
                let result = match section_name {
                    "receivers" => registry
                        .receivers
                        .get(id.kind())
                        .map(|f| f.create(&section).map(drop)),
                    "processors" => registry.processors.get(id.kind()).map(|f| {
                        f.traces(&section)
                            .map(|r| r.map(drop))
                            .or_else(|| f.metrics(&section).map(|r| r.map(drop)))
                            .or_else(|| f.logs(&section).map(|r| r.map(drop)))
                            .unwrap_or(Ok(()))
                    }),
                    _ => registry.exporters.get(id.kind()).map(|f| {
                        f.traces(&section)
                            .map(|r| r.map(drop))
                            .or_else(|| f.metrics(&section).map(|r| r.map(drop)))
                            .or_else(|| f.logs(&section).map(|r| r.map(drop)))
                            .unwrap_or(Ok(()))
                    }),
                };
                if let Some(Err(e)) = result {
                    errors.push(section.place(e));
                }
            }
        }
        let mut extensions = Vec::new();
        if let Some(ext) = self.root.get("extensions") {
            for (key, _, _) in ext.entries() {
                let Ok(id) = key.parse::<ComponentId>() else {
                    continue;
                };
                let section = self.section("extensions", &id);
                let Some(factory) = registry.extensions.get(id.kind()) else {
                    continue;
                };
                match factory.create(&section) {
                    Ok(e) if self.extensions.contains(&id) => extensions.push((id, e)),
                    Ok(_) => {}
                    Err(e) => errors.push(section.place(e)),
                }
            }
        }
        // The self-metrics endpoint the configuration asks for, served like an extension
        // (started first, stopped last).
        if let (Some(address), Some(factory)) =
            (&self.telemetry.metrics_address, &registry.metrics_endpoint)
        {
            match factory.create(address) {
                Ok(e) => extensions.insert(0, (ComponentId::new(METRICS_ENDPOINT), e)),
                Err(m) => errors.push(self.err("service.telemetry.metrics", m)),
            }
        }
        // Periodic readers: self-metrics pushed over OTLP, run like extensions.
        for (i, push) in self.telemetry.metric_pushes.iter().enumerate() {
            let path = format!("service.telemetry.metrics.readers[{i}]");
            match &registry.telemetry_push {
                Some(factory) => match factory.metrics(push, &self.telemetry.resource) {
                    Ok(e) => extensions.insert(
                        0,
                        (ComponentId::new(METRICS_PUSH).with_name(i.to_string()), e),
                    ),
                    Err(m) => errors.push(self.err(&path, m)),
                },
                None => errors.push(self.err(
                    &path,
                    "this build has no OTLP exporter to push self-metrics with",
                )),
            }
        }
        for (i, push) in self.telemetry.log_pushes.iter().enumerate() {
            let path = format!("service.telemetry.logs.processors[{i}]");
            match registry
                .telemetry_push
                .as_ref()
                .map(|f| f.logs(push, &self.telemetry.resource))
            {
                Some(Ok(e)) => {
                    extensions.insert(0, (ComponentId::new(LOGS_PUSH).with_name(i.to_string()), e))
                }
                Some(Err(m)) => errors.push(self.err(&path, m)),
                None => errors.push(self.err(
                    &path,
                    "this build has no OTLP exporter to push the collector's logs with",
                )),
            }
        }
        if !errors.is_empty() {
            return Err(LoadError { errors });
        }
        // Receivers must offer every signal of the pipelines that name them.
        let mut plans = Vec::new();
        for (id, mut instance) in receivers {
            let mut plan = ReceiverPlan {
                id: id.clone(),
                traces: None,
                metrics: None,
                logs: None,
                feeds: Vec::new(),
            };
            for (i, spec) in self.pipelines.iter().enumerate() {
                if !spec.receivers.contains(&id) {
                    continue;
                }
                plan.feeds.push(i);
                let ok = match spec.signal {
                    SignalKind::Traces => {
                        plan.traces.is_some() || {
                            plan.traces = instance.traces();
                            plan.traces.is_some()
                        }
                    }
                    SignalKind::Metrics => {
                        plan.metrics.is_some() || {
                            plan.metrics = instance.metrics();
                            plan.metrics.is_some()
                        }
                    }
                    SignalKind::Logs => {
                        plan.logs.is_some() || {
                            plan.logs = instance.logs();
                            plan.logs.is_some()
                        }
                    }
                };
                if !ok {
                    let j = spec.receivers.iter().position(|r| *r == id).unwrap_or(0);
                    errors.push(self.err(
                        &format!("service.pipelines.{}.receivers[{j}]", spec.name),
                        format!("receiver `{id}` does not take {}", signal_name(spec.signal)),
                    ));
                }
            }
            // What the receiver can check before it starts (certificate files, ports):
            // its parts share one configuration, so one check covers them.
            let checked = match (&plan.traces, &plan.metrics, &plan.logs) {
                _ if !to_run && host_checks.is_none() => None,
                (Some(r), _, _) => Some(r.validate_boxed()),
                (_, Some(r), _) => Some(r.validate_boxed()),
                (_, _, Some(r)) => Some(r.validate_boxed()),
                _ => None,
            };
            if let Some(Err(e)) = checked {
                let err = match e {
                    crate::id::BuildError::InvalidConfig { path, message, .. } => {
                        self.err(&format!("receivers.{id}.{path}"), message)
                    }
                    other => self.err(&format!("receivers.{id}"), other.to_string()),
                };
                match host_checks.as_deref_mut() {
                    Some(found) if !to_run => found.push(err),
                    _ => errors.push(err),
                }
            }
            plans.push(plan);
        }
        if !errors.is_empty() {
            return Err(LoadError { errors });
        }
        Ok(Collector {
            pipelines,
            names: self
                .pipelines
                .iter()
                .map(|p| (p.name.clone(), p.signal))
                .collect(),
            receivers: plans,
            extensions,
            telemetry,
            health: CollectorHealth::default(),
            reloads: sink.into_inner(),
            source: self.root.to_value(),
        })
    }

    /// Build a pipeline's `section` list (`processors`, `exporters`) for signal `S`
    /// through each type's factory; errors are placed in the user's file.
    #[allow(clippy::too_many_arguments)]
    fn components<S: CollectorSignal, T, M>(
        &self,
        spec: &PipelineSpec,
        reloads: Option<&ReloadSink>,
        registry: &Registry,
        section: &str,
        ids: &[ComponentId],
        factory: impl Fn(&str) -> Option<M>,
        lacks: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Vec<T>
    where
        M: Fn(&Section<'_>) -> Option<Result<T, ConfigError>>,
    {
        let mut out = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let mut place = self.section(section, id);
            place.reloads = reloads;
            place.exporters = Some(&registry.exporters);
            // An unknown type was reported while checking the document's shape.
            let Some(make) = factory(id.kind()) else {
                continue;
            };
            match make(&place) {
                Some(Ok(c)) => out.push(c),
                Some(Err(e)) => errors.push(place.place(e)),
                None => errors.push(self.err(
                    &format!("service.pipelines.{}.{section}[{i}]", spec.name),
                    format!(
                        "{} `{id}` {lacks} {}",
                        section.trim_end_matches('s'),
                        S::PIPELINE
                    ),
                )),
            }
        }
        out
    }

    fn build_pipeline<S: CollectorSignal>(
        &self,
        registry: &Registry,
        spec: &PipelineSpec,
        telemetry: &Telemetry,
        reloads: Option<&ReloadSink>,
        links: &mut Links,
    ) -> Result<BuiltDyn<S>, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let processors: Vec<BoxProcessor<S>> = self.components::<S, _, _>(
            spec,
            reloads,
            registry,
            "processors",
            &spec.processors,
            |id| {
                registry
                    .processors
                    .get(id)
                    .map(|f| move |s: &Section<'_>| S::processor(&**f, s))
            },
            "does not handle",
            &mut errors,
        );
        let (connectors, plain): (Vec<ComponentId>, Vec<ComponentId>) = spec
            .exporters
            .iter()
            .cloned()
            .partition(|id| self.is_connector(&id.to_string()));
        let mut exporters: Vec<BoxExporter<S>> = self.components::<S, _, _>(
            spec,
            reloads,
            registry,
            "exporters",
            &plain,
            |id| {
                registry.exporters.get(id).map(|f| {
                    move |s: &Section<'_>| {
                        S::exporter(&**f, s)
                            .map(|built| built.and_then(|x| queue_batched::<S>(registry, s, x)))
                    }
                })
            },
            "does not send",
            &mut errors,
        );
        for id in connectors {
            match self.connector_exporter::<S>(registry, id, links) {
                Ok(Some(e)) => exporters.push(e),
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let built = Pipeline::new_for::<S>()
            .named(spec.name.clone())
            .telemetry(telemetry.clone())
            .processors(processors)
            .exporters(exporters)
            .build()
            .map_err(|e| vec![self.build_error(&e)])?;
        links
            .heads
            .push((spec.name.clone(), S::head((*built.consumer()).clone())));
        Ok(built)
    }

    /// The exporter of connector `id` for a pipeline of signal `S`: one instance per pair
    /// of signals it joins, shared with every other pipeline of `S` that exports to it,
    /// feeding the (already built) pipelines that name it as a receiver.
    fn connector_exporter<S: CollectorSignal>(
        &self,
        registry: &Registry,
        id: ComponentId,
        links: &mut Links,
    ) -> Result<Option<BoxExporter<S>>, ConfigError> {
        let Some(factory) = registry.connectors.get(id.kind()) else {
            return Ok(None);
        };
        let section = self.section("connectors", &id);
        let mut parts = Vec::new();
        for to in SignalKind::ALL {
            if !factory.supports(S::KIND, to) {
                continue;
            }
            let key = (id.to_string(), S::KIND.index(), to.index());
            if !links.shared.contains_key(&key) {
                let fed: Vec<&str> = self
                    .pipelines
                    .iter()
                    .filter(|p| p.signal == to && p.receivers.contains(&id))
                    .map(|p| p.name.as_str())
                    .collect();
                if fed.is_empty() {
                    continue;
                }
                let downstream = links.downstream(to, &fed);
                let connector = match factory.create(&section, S::KIND, to) {
                    Some(Ok(c)) => c,
                    Some(Err(e)) => return Err(section.place(e)),
                    None => continue,
                };
                let shared = S::shared_connector(connector, &downstream).ok_or_else(|| {
                    section.error(
                        "",
                        format!(
                            "the `{}` factory made a connector of other signals than {} to {}",
                            id.kind(),
                            S::KIND,
                            to
                        ),
                    )
                })?;
                links.shared.insert(key.clone(), shared);
            }
            if let Some(e) = links.shared.get(&key).and_then(S::shared_exporter) {
                parts.push(e);
            }
        }
        Ok(match parts.len() {
            0 => None,
            1 => parts.pop().map(|p| Box::new(p) as BoxExporter<S>),
            _ => Some(Box::new(crate::connector::ExporterPair { id, parts })),
        })
    }

    /// Place a component's build error under its section.
    fn build_error(&self, e: &crate::id::BuildError) -> ConfigError {
        match e {
            crate::id::BuildError::InvalidConfig {
                component,
                path,
                message,
            } => {
                let base = ["processors", "exporters", "receivers"]
                    .into_iter()
                    .find(|s| {
                        self.root
                            .get(s)
                            .is_some_and(|n| n.get(&component.to_string()).is_some())
                    })
                    .map_or_else(|| component.to_string(), |s| format!("{s}.{component}"));
                self.err(&format!("{base}.{path}"), message.clone())
            }
            _ => ConfigError::new("service.pipelines", e.to_string()),
        }
    }
}

fn unreachable_root(files: &[ConfigFile]) -> Node {
    Node {
        value: NodeValue::Map(Vec::new()),
        at: Location {
            file: Arc::from(files.first().map_or("", |f| f.name.as_str())),
            line: 1,
            column: 1,
        },
    }
}

fn signal_name(s: SignalKind) -> &'static str {
    match s {
        SignalKind::Traces => "traces",
        SignalKind::Metrics => "metrics",
        SignalKind::Logs => "logs",
    }
}

/// What to say of a connector type the registry does not have.
fn unknown_connector(registry: &Registry, kind: &str) -> String {
    let collectors = COLLECTOR_TYPES
        .iter()
        .find(|(r, _)| *r == "connector")
        .is_some_and(|(_, kinds)| kinds.contains(&kind));
    if collectors {
        format!(
            "`{kind}` is a connector of the OpenTelemetry Collector that this build does not include"
        )
    } else {
        let known: Vec<&str> = registry.connector_kinds().collect();
        format!(
            "unknown connector type `{kind}` (known: {})",
            known.join(", ")
        )
    }
}

/// Whether `kind` is a known type of `role`; else a message that says what it is.
fn known(registry: &Registry, role: ComponentKind, kind: &str) -> Result<(), String> {
    let (have, role_name) = match role {
        ComponentKind::Receiver => (registry.receivers.contains_key(kind), "receiver"),
        ComponentKind::Processor => (registry.processors.contains_key(kind), "processor"),
        ComponentKind::Exporter => (registry.exporters.contains_key(kind), "exporter"),
        ComponentKind::Extension => (registry.extensions.contains_key(kind), "extension"),
    };
    if have {
        return Ok(());
    }
    // The Collector's current snake_case names too (`resource_detection`).
    let joined = kind.replace('_', "");
    let collectors = COLLECTOR_TYPES
        .iter()
        .find(|(r, _)| *r == role_name)
        .is_some_and(|(_, kinds)| kinds.contains(&kind) || kinds.contains(&joined.as_str()));
    if collectors {
        let article = if role_name.starts_with('e') {
            "an"
        } else {
            "a"
        };
        Err(format!(
            "`{kind}` is {article} {role_name} of the OpenTelemetry Collector that this build does not include"
        ))
    } else {
        let known: Vec<&str> = match role {
            ComponentKind::Receiver => registry.receiver_kinds().collect(),
            ComponentKind::Processor => registry.processor_kinds().collect(),
            ComponentKind::Exporter => registry.exporter_kinds().collect(),
            ComponentKind::Extension => registry.extension_kinds().collect(),
        };
        Err(format!(
            "unknown {role_name} type `{kind}` (known: {})",
            known.join(", ")
        ))
    }
}

type BuiltDyn<S> = BuiltPipeline<S, NoReceivers, BoxConsumer<S>>;

/// What connectors join while the pipelines are built: the heads of the pipelines built
/// so far, and the connector instances, one per connector id and pair of signals.
#[derive(Default)]
struct Links {
    heads: Vec<(String, AnyHead)>,
    shared: BTreeMap<(String, usize, usize), AnyShared>,
}

impl Links {
    /// The heads of pipelines `names` (all of signal `to`).
    fn downstream(&self, to: SignalKind, names: &[&str]) -> AnyDownstream {
        let pick = |name: &&str| self.heads.iter().find(|(n, _)| n == name).map(|(_, h)| h);
        macro_rules! collect {
            ($kind:ident) => {
                AnyDownstream::$kind(crate::connector::Downstream::new(names.iter().filter_map(
                    |n| match pick(n) {
                        Some(AnyHead::$kind(c)) => Some((n.to_string(), c.clone())),
                        _ => None,
                    },
                )))
            };
        }
        match to {
            SignalKind::Traces => collect!(Traces),
            SignalKind::Metrics => collect!(Metrics),
            SignalKind::Logs => collect!(Logs),
        }
    }
}

enum AnyBuilt {
    Traces(BuiltDyn<Traces>),
    Metrics(BuiltDyn<Metrics>),
    Logs(BuiltDyn<Logs>),
}

struct ReceiverPlan {
    id: ComponentId,
    traces: Option<crate::boxed::BoxReceiver<Traces>>,
    metrics: Option<crate::boxed::BoxReceiver<Metrics>>,
    logs: Option<crate::boxed::BoxReceiver<Logs>>,
    /// Indexes of the pipelines this receiver feeds.
    feeds: Vec<usize>,
}

/// A built collector, ready to start.
pub struct Collector {
    pipelines: Vec<AnyBuilt>,
    names: Vec<(String, SignalKind)>,
    receivers: Vec<ReceiverPlan>,
    extensions: Vec<(ComponentId, Box<dyn Extension>)>,
    telemetry: Telemetry,
    health: CollectorHealth,
    reloads: Vec<Reloadable>,
    /// The configuration it was built from, to tell what a reload changes.
    source: serde_yaml_ng::Value,
}

impl fmt::Debug for Collector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collector")
            .field("pipelines", &self.names)
            .field(
                "receivers",
                &self
                    .receivers
                    .iter()
                    .map(|r| r.id.to_string())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Collector {
    /// The readiness that a `health_check` endpoint serves; components may add gates to
    /// it before [`Collector::start`].
    pub fn health(&self) -> &CollectorHealth {
        &self.health
    }

    /// Start extensions, then every pipeline (exporters, then processors), then the
    /// receivers. On failure, what started is stopped again.
    pub async fn start(self) -> Result<RunningCollector, StartError> {
        let host = Host {
            health: self.health.clone(),
            telemetry: self.telemetry.clone(),
        };
        let mut extensions = Vec::new();
        for (id, ext) in self.extensions {
            if let Err(e) = ext.start(host.clone()).await {
                stop_extensions(&extensions, Instant::now() + Duration::from_secs(5)).await;
                return Err(StartError::from_boxed(id, e));
            }
            extensions.push((id, ext));
        }
        let mut running = Vec::new();
        let mut heads: Vec<AnyHead> = Vec::new();
        for built in self.pipelines {
            let started = match built {
                AnyBuilt::Traces(b) => {
                    heads.push(AnyHead::Traces((*b.consumer()).clone()));
                    b.start().await
                }
                AnyBuilt::Metrics(b) => {
                    heads.push(AnyHead::Metrics((*b.consumer()).clone()));
                    b.start().await
                }
                AnyBuilt::Logs(b) => {
                    heads.push(AnyHead::Logs((*b.consumer()).clone()));
                    b.start().await
                }
            };
            match started {
                Ok(r) => running.push(r),
                Err(e) => {
                    let deadline = Instant::now() + Duration::from_secs(5);
                    for r in running {
                        let _ = r
                            .shutdown(deadline.saturating_duration_since(Instant::now()))
                            .await;
                    }
                    stop_extensions(&extensions, deadline).await;
                    return Err(e);
                }
            }
        }
        let mut group = ReceiverGroup::new(self.telemetry.clone());
        for plan in self.receivers {
            let result = start_receiver(&mut group, plan, &heads, &self.names).await;
            if let Err(e) = result {
                let deadline = Instant::now() + Duration::from_secs(5);
                let _ = group.shutdown(deadline).await;
                for r in running {
                    let _ = r
                        .shutdown(deadline.saturating_duration_since(Instant::now()))
                        .await;
                }
                stop_extensions(&extensions, deadline).await;
                return Err(e);
            }
        }
        self.health
            .set_pipelines(running.iter().map(|r| r.health().clone()).collect());
        Ok(RunningCollector {
            pipelines: running,
            receivers: Some(group),
            extensions,
            telemetry: self.telemetry,
            health: self.health,
            reloads: self.reloads,
            source: self.source,
        })
    }
}

async fn start_receiver(
    group: &mut ReceiverGroup,
    plan: ReceiverPlan,
    heads: &[AnyHead],
    names: &[(String, SignalKind)],
) -> Result<(), StartError> {
    let pick = |signal: SignalKind| -> (Vec<usize>, String) {
        let feeds: Vec<usize> = plan
            .feeds
            .iter()
            .copied()
            .filter(|i| names[*i].1 == signal)
            .collect();
        let label = match feeds.as_slice() {
            [one] => names[*one].0.clone(),
            _ => signal_name(signal).to_string(),
        };
        (feeds, label)
    };
    // Each signal part of the receiver fans out to the heads of that signal's pipelines.
    async fn part<S: crate::signal::Signal>(
        group: &mut ReceiverGroup,
        receiver: crate::boxed::BoxReceiver<S>,
        heads: Vec<BoxConsumer<S>>,
        label: &str,
    ) -> Result<(), StartError> {
        group
            .start(receiver, BoxConsumer::new(FanOutAll::new(heads)), label)
            .await
    }
    let heads_of = |signal: SignalKind| {
        let (feeds, label) = pick(signal);
        (
            feeds.into_iter().map(|i| &heads[i]).collect::<Vec<_>>(),
            label,
        )
    };
    // The same for each signal: its part of the receiver, its pipelines' heads.
    macro_rules! start_part {
        ($part:expr, $kind:ident) => {
            if let Some(r) = $part {
                let (hs, label) = heads_of(SignalKind::$kind);
                let hs = hs
                    .into_iter()
                    .filter_map(|h| match h {
                        AnyHead::$kind(c) => Some(c.clone()),
                        _ => None,
                    })
                    .collect();
                part(group, r, hs, &label).await?;
            }
        };
    }
    start_part!(plan.traces, Traces);
    start_part!(plan.metrics, Metrics);
    start_part!(plan.logs, Logs);
    Ok(())
}

async fn stop_extensions(
    extensions: &[(ComponentId, Box<dyn Extension>)],
    deadline: Instant,
) -> Vec<(ComponentId, String)> {
    let mut failures = Vec::new();
    for (id, ext) in extensions.iter().rev() {
        match tokio::time::timeout_at(deadline, ext.shutdown(deadline)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push((id.clone(), e.to_string())),
            Err(_) => failures.push((id.clone(), "did not stop before the deadline".into())),
        }
    }
    failures
}

/// A component's section without the keys it takes in place (null and empty alike).
fn without_keys(section: Option<&serde_yaml_ng::Value>, keys: &[&str]) -> serde_yaml_ng::Value {
    match section {
        Some(serde_yaml_ng::Value::Mapping(m)) => serde_yaml_ng::Value::Mapping(
            m.iter()
                .filter(|(k, _)| k.as_str().is_none_or(|k| !keys.contains(&k)))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        Some(serde_yaml_ng::Value::Null) | None => {
            serde_yaml_ng::Value::Mapping(serde_yaml_ng::Mapping::new())
        }
        Some(other) => other.clone(),
    }
}

/// The id the self-metrics endpoint runs under, among the extensions.
const METRICS_ENDPOINT: &str = "service.telemetry.metrics";

/// The id periodic readers run under (`.../0`, `.../1`), among the extensions.
const METRICS_PUSH: &str = "service.telemetry.metrics.readers";
/// The id log processors run under.
const LOGS_PUSH: &str = "service.telemetry.logs.processors";

/// A running collector. Stop it with [`RunningCollector::shutdown`].
pub struct RunningCollector {
    pipelines: Vec<RunningPipeline>,
    receivers: Option<ReceiverGroup>,
    extensions: Vec<(ComponentId, Box<dyn Extension>)>,
    telemetry: Telemetry,
    health: CollectorHealth,
    reloads: Vec<Reloadable>,
    source: serde_yaml_ng::Value,
}

impl fmt::Debug for RunningCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningCollector")
            .field(
                "pipelines",
                &self
                    .pipelines
                    .iter()
                    .map(|p| p.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .field("ready", &self.health.is_ready())
            .finish_non_exhaustive()
    }
}

/// What [`RunningCollector::reload`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// The components that took their new sections (`processors.tail_sampling`), once per
    /// pipeline that runs them.
    pub applied: Vec<String>,
    /// What changed that the running components cannot take in place (`receivers.otlp`,
    /// `exporters.otlp/backend`, `service`, a batch processor's `metadata_keys`): the
    /// collector must be rebuilt from the new configuration for these to apply. The
    /// `collector` example then restarts it in process, draining first, so nothing it
    /// accepted is lost.
    pub restart_needed: Vec<String>,
}

impl RunningCollector {
    /// Hand each component that can change in place (the tail sampler's policies, filter
    /// conditions, attributes and redaction rules) its
    /// section of `config`, a configuration loaded again from the user's files. Every new
    /// section is checked first: on any error nothing changes, and the error names the
    /// setting and its line, as at start-up. Buffered data stays; nothing restarts. The
    /// other components keep the configuration they started with until a restart.
    pub fn reload(&self, config: &CollectorConfig) -> Result<Reloaded, LoadError> {
        let mut errors = Vec::new();
        let sections: Vec<Section<'_>> = self
            .reloads
            .iter()
            .map(|r| config.section(&r.section, &r.id))
            .collect();
        for (r, section) in self.reloads.iter().zip(&sections) {
            // A component gone from the file goes with the rebuild (below).
            if section.node.is_none() {
                continue;
            }
            if let Err(e) = r.reload.check(section) {
                errors.push(section.place(e));
            }
        }
        if !errors.is_empty() {
            return Err(LoadError { errors });
        }
        let mut applied = Vec::new();
        let mut restart_needed = Vec::new();
        for (r, section) in self.reloads.iter().zip(&sections) {
            if section.node.is_none() {
                let path = format!("{}.{}", r.section, r.id);
                if !restart_needed.contains(&path) {
                    restart_needed.push(path);
                }
                continue;
            }
            r.reload.apply(section).map_err(|e| LoadError {
                errors: vec![section.place(e)],
            })?;
            applied.push(section.path().to_string());
            let beyond = r.reload.in_place_keys().is_some_and(|keys| {
                let old = self
                    .source
                    .get(r.section.as_str())
                    .and_then(|m| m.get(r.id.to_string().as_str()));
                let new = section.node.map(|n| n.to_value());
                without_keys(old, keys) != without_keys(new.as_ref(), keys)
            });
            if (beyond || r.reload.needs_restart(section))
                && !restart_needed.contains(&section.path)
            {
                restart_needed.push(section.path.clone());
            }
        }
        // Everything else that differs from what runs needs a rebuild.
        let new = config.root.to_value();
        let in_place = |path: &str| {
            self.reloads
                .iter()
                .any(|r| format!("{}.{}", r.section, r.id) == path)
        };
        for kind in [
            "receivers",
            "processors",
            "exporters",
            "extensions",
            "connectors",
        ] {
            let (old_s, new_s) = (self.source.get(kind), new.get(kind));
            let mut ids: Vec<String> = Vec::new();
            for m in [old_s, new_s].into_iter().flatten() {
                if let Some(map) = m.as_mapping() {
                    for k in map.keys() {
                        if let Some(k) = k.as_str()
                            && !ids.iter().any(|i| i == k)
                        {
                            ids.push(k.to_string());
                        }
                    }
                }
            }
            for id in ids {
                let path = format!("{kind}.{id}");
                let before = old_s.and_then(|m| m.get(id.as_str()));
                let after = new_s.and_then(|m| m.get(id.as_str()));
                if before != after && !in_place(&path) && !restart_needed.contains(&path) {
                    restart_needed.push(path);
                }
            }
        }
        if self.source.get("service") != new.get("service") {
            restart_needed.push("service".to_string());
        }
        Ok(Reloaded {
            applied,
            restart_needed,
        })
    }

    /// Where the self-metrics are served (`GET /metrics`, Prometheus text), as
    /// `service.telemetry.metrics` asked; `None` when it asked for none (`level: none`) or
    /// the registry has no endpoint.
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.extensions
            .iter()
            .find(|(id, _)| id.kind() == METRICS_ENDPOINT)
            .and_then(|(_, e)| e.local_addr())
    }

    /// Where extension `id` listens (`health_check`), once started.
    pub fn extension_address(&self, id: &str) -> Option<std::net::SocketAddr> {
        self.extensions
            .iter()
            .find(|(e, _)| e.to_string() == id)
            .and_then(|(_, e)| e.local_addr())
    }

    /// Readiness, as the `health_check` extension serves it.
    pub fn health(&self) -> &CollectorHealth {
        &self.health
    }

    /// The self-telemetry every component counts into.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Stop accepting (readiness goes false at once), let every pipeline flush and drain,
    /// then stop the extensions, all within `timeout`.
    pub async fn shutdown(mut self, timeout: Duration) -> Result<(), ShutdownError> {
        let deadline = Instant::now() + timeout;
        self.health.set_draining();
        let mut failures = Vec::new();
        if let Some(group) = self.receivers.take()
            && let Err(e) = group.shutdown(deadline).await
        {
            failures.extend(e.failures);
        }
        // Pipelines stop in the reverse of their start: a pipeline that feeds others
        // through a connector flushes into them before they stop.
        for p in self.pipelines.into_iter().rev() {
            if let Err(e) = p
                .shutdown(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                failures.extend(e.failures);
            }
        }
        failures.extend(stop_extensions(&self.extensions, deadline).await);
        ShutdownError::from_failures(failures)
    }
}

/// `sending_queue.batch` as the Collector's exporter helper reads it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueBatchYaml {
    #[serde(default, deserialize_with = "crate::config::opt_duration")]
    flush_timeout: Option<Duration>,
    #[serde(default)]
    min_size: Option<i64>,
    #[serde(default)]
    max_size: Option<i64>,
    #[serde(default)]
    sizer: Option<String>,
    #[serde(default)]
    partition: Option<PartitionYaml>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionYaml {
    #[serde(default)]
    metadata_keys: Vec<String>,
}

/// The settings of an exporter section's `sending_queue.batch`, checked as the Collector
/// checks them; `None` when it has none.
fn queue_batch_of(section: &Section<'_>) -> Result<Option<QueueBatch>, ConfigError> {
    use serde_yaml_ng::Value;
    let value = section.value();
    let Some(queue) = value.get("sending_queue") else {
        return Ok(None);
    };
    let Some(batch) = queue.get("batch") else {
        return Ok(None);
    };
    let err = |sub: &str, m: String| section.error(&format!("sending_queue.batch{sub}"), m);
    // `batch:` with nothing under it takes the defaults, as `batch: {}`.
    let batch = match batch {
        Value::Null => Value::Mapping(Default::default()),
        b => b.clone(),
    };
    let y: QueueBatchYaml = serde_path_to_error::deserialize(batch).map_err(|e| {
        let inner = e.path().to_string();
        let sub = if inner == "." {
            String::new()
        } else {
            format!(".{inner}")
        };
        err(&sub, e.into_inner().to_string())
    })?;
    let queue_sizer = queue.get("sizer").and_then(Value::as_str);
    // Without its own sizer the batch takes the queue's, and `items` when neither says.
    let sizer = y.sizer.as_deref().or(queue_sizer).unwrap_or("items");
    match sizer {
        "items" => {}
        "bytes" => {
            return Err(err(
                ".sizer",
                "batches are sized in items here; `bytes` is not supported (use `items`)".into(),
            ));
        }
        other => {
            return Err(err(
                ".sizer",
                format!(
                    "`batch` supports only `items` or `bytes` sizer, found `{other}` (set `batch.sizer: items`)"
                ),
            ));
        }
    }
    let d = QueueBatch::default();
    let flush_timeout = y.flush_timeout.unwrap_or(d.flush_timeout);
    if flush_timeout.is_zero() {
        return Err(err(".flush_timeout", "must be positive".into()));
    }
    let size = |key: &str, v: Option<i64>, default: usize| match v {
        None => Ok(default),
        Some(n) => {
            usize::try_from(n).map_err(|_| err(key, format!("must be non-negative, found {n}")))
        }
    };
    let min_size = size(".min_size", y.min_size, d.min_size)?;
    let max_size = size(".max_size", y.max_size, d.max_size)?;
    if max_size > 0 && max_size < min_size {
        return Err(err(
            ".max_size",
            format!("`max_size` ({max_size}) must be greater or equal to `min_size` ({min_size})"),
        ));
    }
    if queue_sizer == Some("items")
        && let Some(q) = queue.get("queue_size").and_then(Value::as_u64)
        && min_size as u64 > q
    {
        return Err(err(
            ".min_size",
            format!("`min_size` ({min_size}) must be less than or equal to `queue_size` ({q})"),
        ));
    }
    let metadata_keys = y.partition.map(|p| p.metadata_keys).unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    for k in &metadata_keys {
        if !seen.insert(k.to_ascii_lowercase()) {
            return Err(err(
                ".partition.metadata_keys",
                format!(
                    "duplicate entry in metadata_keys: {:?} (case-insensitive)",
                    k.to_ascii_lowercase()
                ),
            ));
        }
    }
    if queue.get("wait_for_result").and_then(Value::as_bool) == Some(true) {
        return Err(section.error(
            "sending_queue.wait_for_result",
            "waiting for the export's result is not supported together with `batch` here; drop one of them",
        ));
    }
    Ok(Some(QueueBatch {
        flush_timeout,
        min_size,
        max_size,
        metadata_keys,
    }))
}

/// The exporter built from `section`, with the batching stage of its
/// `sending_queue.batch` in front when it has one.
fn queue_batched<S: CollectorSignal>(
    registry: &Registry,
    section: &Section<'_>,
    exporter: BoxExporter<S>,
) -> Result<BoxExporter<S>, ConfigError> {
    let Some(batch) = queue_batch_of(section)? else {
        return Ok(exporter);
    };
    let Some(batcher) = &registry.queue_batcher else {
        return Err(section.error(
            "sending_queue.batch",
            "this build has no batcher for exporters (register the processors crate's)",
        ));
    };
    Ok(Box::new(queue_batch::Fronted {
        front: S::queue_batcher(&**batcher, &batch),
        exporter,
    }))
}

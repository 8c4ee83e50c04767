//! This crate's exporters for the YAML loader: `otlp`, `otlphttp`, `debug`, `nop`, `file`,
//! `loadbalancing`, `zipkin` and `jaeger` (traces) and `prometheus` (metrics), each
//! configured by its Collector section.
//!
//! ```
//! let mut registry = otel_pipeline_core::collector::Registry::new();
//! otel_exporters::collector::register(&mut registry);
//! assert!(registry.exporter_kinds().eq([
//!     "debug", "file", "jaeger", "loadbalancing", "nop", "otlp", "otlphttp", "prometheus", "zipkin",
//! ]));
//! ```

use otel_pipeline_core::boxed::BoxExporter;
use otel_pipeline_core::collector::{ExporterFactory, Registry, Section, auth};
use otel_pipeline_core::config::ConfigError;
use otel_pipeline_core::{Exporter, Logs, Metrics, Traces};
use serde::Deserialize;

use crate::loadbalancing::{TraceRouter, TraceRouterConfig};
use crate::otlp::{OtlpExporter, OtlpExporterYaml};
use crate::{DebugExporter, NopExporter, Verbosity};

/// Add this crate's exporters to `registry`.
pub fn register(registry: &mut Registry) {
    registry
        .exporter(OtlpFactory { http: false })
        .exporter(OtlpFactory { http: true })
        .exporter(EverySignal("debug", debug_exporter))
        .exporter(EverySignal("file", |s| {
            let c: crate::file::FileExporterConfig = s.deserialize()?;
            let e = crate::file::FileExporter::new(c).map_err(|e| s.error(&e.path, e.message))?;
            Ok(e.with_id(s.id().clone()))
        }))
        .exporter(EverySignal("nop", |s| {
            let _: NopYaml = s.deserialize()?;
            Ok(NopExporter::new().with_id(s.id().clone()))
        }))
        .exporter(ForeignFactory("zipkin"))
        .exporter(ForeignFactory("jaeger"))
        .exporter(LoadBalancingFactory)
        .exporter(PrometheusFactory)
        // `service.telemetry.metrics.readers: periodic`, over OTLP.
        .telemetry_push(crate::push::OtlpTelemetryPush);
}

/// `prometheus`: metrics only.
struct PrometheusFactory;

impl ExporterFactory for PrometheusFactory {
    fn kind(&self) -> &'static str {
        "prometheus"
    }

    fn metrics(&self, section: &Section<'_>) -> Option<Result<BoxExporter<Metrics>, ConfigError>> {
        Some((|| {
            let c: crate::prometheus::PrometheusConfig = section.deserialize()?;
            let e = crate::prometheus::PrometheusExporter::new(c)
                .map_err(|e| section.error(&e.path, e.message))?;
            Ok(Box::new(e.with_id(section.id().clone())) as BoxExporter<Metrics>)
        })())
    }
}

/// `nop:` takes no settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NopYaml {}

/// An exporter type that serves every signal with one configuration.
struct EverySignal<E>(&'static str, fn(&Section<'_>) -> Result<E, ConfigError>);

impl<E> ExporterFactory for EverySignal<E>
where
    E: Exporter<Traces> + Exporter<Metrics> + Exporter<Logs> + Send + Sync + 'static,
{
    fn kind(&self) -> &'static str {
        self.0
    }

    fn traces(&self, section: &Section<'_>) -> Option<Result<BoxExporter<Traces>, ConfigError>> {
        Some((self.1)(section).map(|e| Box::new(e) as BoxExporter<Traces>))
    }

    fn metrics(&self, section: &Section<'_>) -> Option<Result<BoxExporter<Metrics>, ConfigError>> {
        Some((self.1)(section).map(|e| Box::new(e) as BoxExporter<Metrics>))
    }

    fn logs(&self, section: &Section<'_>) -> Option<Result<BoxExporter<Logs>, ConfigError>> {
        Some((self.1)(section).map(|e| Box::new(e) as BoxExporter<Logs>))
    }
}

struct OtlpFactory {
    http: bool,
}

impl OtlpFactory {
    fn config(
        &self,
        section: &Section<'_>,
        signal: &str,
    ) -> Result<crate::OtlpExporterConfig, ConfigError> {
        let yaml: OtlpExporterYaml = section.deserialize()?;
        if let Some((key, m)) = yaml.tls_error() {
            return Err(section.error(&key, m));
        }
        if let Some(key) = yaml.zipkin_only_key() {
            return Err(section.error(key, "only the zipkin exporter reads this"));
        }
        let mut config = if self.http {
            yaml.to_http_config(signal)
                .map_err(|(key, m)| section.error(&key, m))?
        } else {
            if let Some(key) = yaml.http_only_key() {
                return Err(section.error(key, "only the otlphttp exporter reads this"));
            }
            yaml.to_config()
        };
        if let Some(a) = yaml.authenticator() {
            apply_auth(section, a, "auth.authenticator", &mut config)?;
        }
        queue_storage(section, &yaml, signal, &mut config)?;
        Ok(config)
    }
}

/// The `file_storage` extension `sending_queue.storage` names, for the queue of this
/// exporter and signal.
fn queue_storage(
    section: &Section<'_>,
    yaml: &OtlpExporterYaml,
    signal: &str,
    config: &mut crate::OtlpExporterConfig,
) -> Result<(), ConfigError> {
    let Some(id) = yaml.queue_storage() else {
        return Ok(());
    };
    if yaml.waits_for_result() {
        return Err(section.error(
            "sending_queue.wait_for_result",
            "`wait_for_result` is not supported with a persistent queue configured with `storage`",
        ));
    }
    if !config.queue.enabled {
        return Err(section.error(
            "sending_queue.storage",
            "a persistent queue needs the queue enabled",
        ));
    }
    let storage = otel_pipeline_core::storage::FileStorageConfig::referenced(
        section,
        id,
        "sending_queue.storage",
    )?;
    config.queue.storage = Some(crate::QueueStorage {
        storage,
        owner: format!("exporter_{}_{signal}", section.id()),
    });
    Ok(())
}

/// `zipkin` (Zipkin v2 JSON or protobuf over HTTP) and `jaeger` (gRPC `api_v2`, removed
/// from the Collector in 2023 and still in configurations people run): the OTLP
/// exporter's settings, queue and retries, sending traces in that format.
struct ForeignFactory(&'static str);

impl ExporterFactory for ForeignFactory {
    fn kind(&self) -> &'static str {
        self.0
    }

    fn traces(&self, section: &Section<'_>) -> Option<Result<BoxExporter<Traces>, ConfigError>> {
        Some((|| {
            let yaml: OtlpExporterYaml = section.deserialize()?;
            if let Some((key, m)) = yaml.tls_error() {
                return Err(section.error(&key, m));
            }
            let mut config = if self.0 == "zipkin" {
                yaml.to_zipkin_config()
            } else {
                yaml.to_jaeger_config()
            }
            .map_err(|(key, m)| section.error(&key, m))?;
            if let Some(a) = yaml.authenticator() {
                config
                    .headers
                    .push(auth_header(section, a, "auth.authenticator")?);
            }
            queue_storage(section, &yaml, "traces", &mut config)?;
            Ok(
                Box::new(OtlpExporter::<Traces>::new(config).with_id(section.id().clone()))
                    as BoxExporter<Traces>,
            )
        })())
    }
}

/// What the authenticator an exporter names adds to its requests: a fixed credential
/// header, or per-request rules (`headers_setter`).
fn apply_auth(
    section: &Section<'_>,
    authenticator: &str,
    subpath: &str,
    config: &mut crate::OtlpExporterConfig,
) -> Result<(), ConfigError> {
    match auth::referenced(section, authenticator, subpath)? {
        auth::AuthExtension::HeadersSetter { headers } => config.header_rules.extend(headers),
        _ => config
            .headers
            .push(auth_header(section, authenticator, subpath)?),
    }
    Ok(())
}

/// The header an exporter sends for the authenticator extension its section names at
/// `subpath` (`bearertokenauth` with a token, `basicauth` with `client_auth`).
fn auth_header(
    section: &Section<'_>,
    authenticator: &str,
    subpath: &str,
) -> Result<(String, String), ConfigError> {
    let ext = auth::referenced(section, authenticator, subpath)?;
    auth::client_header(&ext).map_err(|m| section.error(subpath, m))
}

/// The `loadbalancing` section as a [`TraceRouterConfig`], with the credentials of the
/// authenticator that `protocol.otlp.auth.authenticator` names, for every gateway.
pub fn trace_router_config(section: &Section<'_>) -> Result<TraceRouterConfig, ConfigError> {
    let mut config = TraceRouterConfig::from_value(section.path(), section.value())
        .map_err(|e| section.place(e))?;
    let value = section.value();
    let named = value
        .get("protocol")
        .and_then(|p| p.get("otlp"))
        .and_then(|o| o.get("auth"))
        .and_then(|a| a.get("authenticator"))
        .and_then(|a| a.as_str());
    if let Some(a) = named {
        apply_auth(
            section,
            a,
            "protocol.otlp.auth.authenticator",
            &mut config.otlp,
        )?;
    }
    // `sending_queue.storage`, at the top (the Collector's place) or under
    // `protocol.otlp`: each endpoint's queue gets its own subdirectory.
    let storage = value
        .get("sending_queue")
        .and_then(|q| q.get("storage"))
        .map(|s| ("sending_queue.storage", s))
        .or_else(|| {
            value
                .get("protocol")
                .and_then(|p| p.get("otlp"))
                .and_then(|o| o.get("sending_queue"))
                .and_then(|q| q.get("storage"))
                .map(|s| ("protocol.otlp.sending_queue.storage", s))
        });
    if let Some((subpath, id)) = storage {
        let id = id
            .as_str()
            .ok_or_else(|| section.error(subpath, "name a file_storage extension"))?;
        if !config.otlp.queue.enabled {
            return Err(section.error(subpath, "a persistent queue needs the queue enabled"));
        }
        let storage =
            otel_pipeline_core::storage::FileStorageConfig::referenced(section, id, subpath)?;
        config.otlp.queue.storage = Some(crate::QueueStorage {
            storage,
            owner: format!("exporter_{}_traces", section.id()),
        });
    }
    Ok(config)
}

impl ExporterFactory for OtlpFactory {
    fn kind(&self) -> &'static str {
        if self.http { "otlphttp" } else { "otlp" }
    }

    fn traces(&self, section: &Section<'_>) -> Option<Result<BoxExporter<Traces>, ConfigError>> {
        Some(self.config(section, "traces").map(|c| {
            Box::new(OtlpExporter::<Traces>::new(c).with_id(section.id().clone()))
                as BoxExporter<Traces>
        }))
    }

    fn metrics(&self, section: &Section<'_>) -> Option<Result<BoxExporter<Metrics>, ConfigError>> {
        Some(self.config(section, "metrics").map(|c| {
            Box::new(OtlpExporter::<Metrics>::new(c).with_id(section.id().clone()))
                as BoxExporter<Metrics>
        }))
    }

    fn logs(&self, section: &Section<'_>) -> Option<Result<BoxExporter<Logs>, ConfigError>> {
        Some(self.config(section, "logs").map(|c| {
            Box::new(OtlpExporter::<Logs>::new(c).with_id(section.id().clone()))
                as BoxExporter<Logs>
        }))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DebugYaml {
    #[serde(default)]
    verbosity: Option<String>,
    /// The `logging` exporter's key, removed upstream: read as a verbosity (older
    /// configurations spell it `logLevel`, which the Collector's case-blind keys took).
    #[serde(default, alias = "logLevel")]
    loglevel: Option<String>,
    #[serde(default, rename = "sampling_initial")]
    _sampling_initial: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "sampling_thereafter")]
    _sampling_thereafter: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "use_internal_logger")]
    _use_internal_logger: Option<serde::de::IgnoredAny>,
}

fn debug_exporter(section: &Section<'_>) -> Result<DebugExporter, ConfigError> {
    let yaml: DebugYaml = section.deserialize()?;
    if yaml.verbosity.is_some() && yaml.loglevel.is_some() {
        return Err(section.error("loglevel", "give verbosity or the older loglevel, not both"));
    }
    // The Collector's deprecation of `logging`: `loglevel: debug` was `detailed` output,
    // `info` was `normal`, the rest `basic`.
    let from_loglevel = yaml.loglevel.as_deref().map(|level| {
        tracing::warn!(
            exporter = %section.id(),
            "`loglevel` is the `logging` exporter's old key; use `verbosity`"
        );
        match level.to_ascii_lowercase().as_str() {
            "debug" => "detailed",
            "info" => "normal",
            _ => "basic",
        }
    });
    let verbosity = match yaml.verbosity.as_deref().or(from_loglevel) {
        None | Some("basic") => Verbosity::Basic,
        Some("normal") => Verbosity::Normal,
        Some("detailed") => Verbosity::Detailed,
        Some(other) => {
            return Err(section.error(
                "verbosity",
                format!("`{other}`: expected basic, normal or detailed"),
            ));
        }
    };
    Ok(DebugExporter::new(verbosity).with_id(section.id().clone()))
}

struct LoadBalancingFactory;

impl ExporterFactory for LoadBalancingFactory {
    fn kind(&self) -> &'static str {
        "loadbalancing"
    }

    fn traces(&self, section: &Section<'_>) -> Option<Result<BoxExporter<Traces>, ConfigError>> {
        Some(trace_router_config(section).map(|c| {
            Box::new(TraceRouter::new(c).with_id(section.id().clone())) as BoxExporter<Traces>
        }))
    }

    fn metrics(&self, section: &Section<'_>) -> Option<Result<BoxExporter<Metrics>, ConfigError>> {
        Some(key_router::<Metrics>(section, None))
    }

    fn logs(&self, section: &Section<'_>) -> Option<Result<BoxExporter<Logs>, ConfigError>> {
        Some(key_router::<Logs>(section, None))
    }
}

/// The `loadbalancing` exporter of a logs or metrics pipeline, from its section: the
/// trace router's settings, routed by the signal's keys (`resolver`: a Kubernetes
/// resolver, where the section asks for one and the caller has it).
pub fn key_router<S: crate::loadbalancing::KeyRouted>(
    section: &Section<'_>,
    resolver: Option<std::sync::Arc<dyn crate::loadbalancing::Resolver>>,
) -> Result<BoxExporter<S>, ConfigError> {
    let config = trace_router_config(section)?;
    let key = section
        .value()
        .get("routing_key")
        .is_some()
        .then(|| config.routing_key.clone());
    if let Some(k) = &key {
        S::check(k).map_err(|m| section.error("routing_key", m))?;
    }
    let mut router =
        crate::loadbalancing::KeyRouter::<S>::new(config, key).with_id(section.id().clone());
    if let Some(r) = resolver {
        router = router.with_resolver(r);
    }
    Ok(Box::new(router))
}

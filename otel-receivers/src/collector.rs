//! This crate's components for the YAML loader: the `otlp` receiver, the `health_check`
//! extension, and the self-metrics endpoint (`service.telemetry.metrics`).
//!
//! ```
//! let mut registry = otel_pipeline_core::collector::Registry::new();
//! otel_receivers::collector::register(&mut registry);
//! assert!(registry.receiver_kinds().any(|k| k == "otlp"));
//! assert!(registry.extension_kinds().any(|k| k == "health_check"));
//! ```

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use otel_pipeline_core::boxed::BoxReceiver;
use otel_pipeline_core::collector::{
    CollectorHealth, Extension, ExtensionFactory, Host, MetricsEndpointFactory, ReceiverFactory,
    ReceiverInstance, Registry, Section,
};
use otel_pipeline_core::config::ConfigError;
use otel_pipeline_core::serve::{AdminServer, Served};
use otel_pipeline_core::{BoxError, BoxFuture, Logs, Metrics, Telemetry, Traces};
use serde::Deserialize;
use tokio::time::Instant;

use otel_pipeline_core::collector::auth::AuthExtension;

use crate::{
    Authenticator, BasicAuth, BearerTokens, OtlpConfig, OtlpReceiver, Secret, TlsFiles,
    ZipkinReceiver,
};

/// A receiver's authenticator from the extension its `auth.authenticator` names.
fn authenticator(ext: &AuthExtension) -> Result<Authenticator, String> {
    match ext {
        AuthExtension::HeadersSetter { .. } => Err(
            "headers_setter sets headers on exporters' requests; it cannot authenticate a receiver"
                .into(),
        ),
        AuthExtension::Bearer {
            scheme,
            header,
            tokens,
            filename,
        } => {
            let name = http::HeaderName::from_bytes(header.to_ascii_lowercase().as_bytes())
                .map_err(|e| format!("header `{header}`: {e}"))?;
            let mut b =
                BearerTokens::new(tokens.iter().map(Secret::new)).with_header(name, scheme.clone());
            if let Some(f) = filename {
                b = b.with_file(f)?;
            }
            Ok(Authenticator::Bearer(Arc::new(b)))
        }
        AuthExtension::Basic {
            htpasswd_file,
            htpasswd_inline,
            ..
        } => Ok(Authenticator::Basic(Arc::new(BasicAuth::new(
            htpasswd_inline,
            htpasswd_file.clone(),
        )?))),
    }
}

/// Add this crate's receivers and extensions to `registry`.
pub fn register(registry: &mut Registry) {
    registry.receiver(OtlpFactory);
    registry.receiver(ZipkinFactory);
    registry.receiver(JaegerFactory);
    registry.extension(HealthCheckFactory);
    registry.metrics_endpoint(PrometheusEndpoint);
}

/// `service.telemetry.metrics`: the self-metrics as Prometheus text at `GET /metrics`,
/// served by the collector itself (an embedded one too), started before its pipelines
/// and stopped after them.
struct PrometheusEndpoint;

impl MetricsEndpointFactory for PrometheusEndpoint {
    fn create(&self, address: &str) -> Result<Box<dyn Extension>, String> {
        Ok(Box::new(MetricsEndpoint {
            addr: listen_address(address)?,
            server: Served::default(),
        }))
    }
}

struct MetricsEndpoint {
    addr: SocketAddr,
    server: Served,
}

impl Extension for MetricsEndpoint {
    fn start(&self, host: Host) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let server = serve_metrics(self.addr, host.telemetry)
                .await
                .map_err(|e| format!("service.telemetry.metrics: {e}"))?;
            tracing::info!(address = %server.local_addr(), "serving self-metrics at /metrics");
            self.server.set(server.0);
            Ok(())
        })
    }

    fn shutdown(&self, deadline: Instant) -> BoxFuture<'_, Result<(), BoxError>> {
        self.server.stop(deadline)
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        self.server.addr()
    }
}

/// Resolve a Collector listen address: `host:port`, `:port` (every interface).
pub fn listen_address(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_string()
    };
    full.to_socket_addrs()
        .map_err(|e| format!("`{text}` is not a listen address (host:port): {e}"))?
        .next()
        .ok_or_else(|| format!("`{text}` resolves to no address"))
}

/// A listen address for a receiver: resolved when its host resolves here; otherwise (a
/// name only the target host or its network knows, such as a docker-compose service)
/// every interface on its port, with the failure kept for the host checks, so
/// `--validate` warns and the collector refuses to start instead of listening elsewhere.
fn listen_or_defer(
    text: &str,
    at: String,
    unresolved: &mut Vec<(String, String)>,
) -> Result<SocketAddr, String> {
    match listen_address(text) {
        Ok(a) => Ok(a),
        Err(e) => {
            let port = text
                .trim()
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .ok_or(e.clone())?;
            unresolved.push((at, e));
            Ok(SocketAddr::from(([0, 0, 0, 0], port)))
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OtlpYaml {
    #[serde(default)]
    protocols: Option<ProtocolsYaml>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProtocolsYaml {
    #[serde(default, deserialize_with = "present")]
    grpc: Option<Option<ServerYaml>>,
    #[serde(default, deserialize_with = "present")]
    http: Option<Option<ServerYaml>>,
}

/// A key that is present but empty (`grpc:`) is `Some(None)`: enabled with defaults.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<ServerYaml>>, D::Error> {
    Ok(Some(Option::<ServerYaml>::deserialize(d)?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerYaml {
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    max_recv_msg_size_mib: Option<u64>,
    /// HTTP's name for the same limit, in bytes.
    #[serde(default)]
    max_request_body_size: Option<u64>,
    #[serde(default)]
    include_metadata: Option<bool>,
    #[serde(default)]
    tls: Option<TlsYaml>,
    #[serde(default)]
    auth: Option<AuthRefYaml>,
    #[serde(default)]
    max_concurrent_streams: Option<u32>,
    #[serde(default)]
    keepalive: Option<KeepaliveYaml>,
    /// HTTP: the time to read a request's headers.
    #[serde(default, deserialize_with = "otel_pipeline_core::config::opt_duration")]
    read_header_timeout: Option<Duration>,
    /// HTTP: the time to read a whole request.
    #[serde(default, deserialize_with = "otel_pipeline_core::config::opt_duration")]
    read_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "otel_pipeline_core::config::opt_duration")]
    idle_timeout: Option<Duration>,
    /// Ours: open connections across both listeners.
    #[serde(default)]
    max_connections: Option<usize>,
    /// Ours: request bytes all requests in progress may hold, in MiB.
    #[serde(default)]
    max_in_flight_mib: Option<u64>,
    /// Ours: spans, data points or log records one request may carry.
    #[serde(default)]
    max_items_per_request: Option<usize>,
    // Accepted so Collector configs load; the server's own settings apply.
    #[serde(default, rename = "read_buffer_size")]
    _read_buffer_size: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "write_buffer_size")]
    _write_buffer_size: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "write_timeout")]
    _write_timeout: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "keep_alives_enabled")]
    _keep_alives_enabled: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "response_headers")]
    _response_headers: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "compression_algorithms")]
    _compression_algorithms: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    cors: Option<CorsYaml>,
    /// The keys `cors` had before the Collector grouped them (v0.40); still in
    /// configurations people run.
    #[serde(default)]
    cors_allowed_origins: Option<Vec<String>>,
    #[serde(default)]
    cors_allowed_headers: Option<Vec<String>>,
    #[serde(default)]
    transport: Option<String>,
    /// The `zipkin` receiver's: type tags that read as numbers or booleans.
    #[serde(default)]
    parse_string_tags: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CorsYaml {
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default)]
    allowed_headers: Vec<String>,
    #[serde(default)]
    max_age: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthRefYaml {
    authenticator: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeepaliveYaml {
    #[serde(default)]
    server_parameters: Option<ServerParametersYaml>,
    // Client-behaviour policing; the HTTP/2 server's defaults apply.
    #[serde(default, rename = "enforcement_policy")]
    _enforcement_policy: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerParametersYaml {
    #[serde(default, deserialize_with = "otel_pipeline_core::config::opt_duration")]
    max_connection_idle: Option<Duration>,
    #[serde(default, deserialize_with = "otel_pipeline_core::config::opt_duration")]
    time: Option<Duration>,
    #[serde(default, deserialize_with = "otel_pipeline_core::config::opt_duration")]
    timeout: Option<Duration>,
    #[serde(default, rename = "max_connection_age")]
    _max_connection_age: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "max_connection_age_grace")]
    _max_connection_age_grace: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct TlsYaml {
    cert_file: std::path::PathBuf,
    key_file: std::path::PathBuf,
    /// Mutual TLS: the CA client certificates must chain to.
    #[serde(default)]
    client_ca_file: Option<std::path::PathBuf>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
}

struct OtlpFactory;

impl ReceiverFactory for OtlpFactory {
    fn kind(&self) -> &'static str {
        "otlp"
    }

    fn create(&self, section: &Section<'_>) -> Result<Box<dyn ReceiverInstance>, ConfigError> {
        let yaml: OtlpYaml = section.deserialize()?;
        let protocols = yaml.protocols.unwrap_or_default();
        if protocols.grpc.is_none() && protocols.http.is_none() {
            return Err(section.error("protocols", "enable at least one of grpc and http"));
        }
        let mut config = OtlpConfig {
            grpc: None,
            http: None,
            ..OtlpConfig::default()
        };
        let mut tls: Option<TlsFiles> = None;
        let mut auth: Option<(String, Authenticator)> = None;
        let mut unresolved = Vec::new();
        for (name, server, default_port) in [
            ("grpc", protocols.grpc, 4317u16),
            ("http", protocols.http, 4318),
        ] {
            let Some(server) = server else { continue };
            let at = format!("protocols.{name}");
            let addr = apply_server(
                section,
                &at,
                server.unwrap_or_default(),
                default_port,
                &mut config,
                &mut tls,
                &mut auth,
                &mut unresolved,
            )?;
            if name == "grpc" {
                config.grpc = Some(addr);
            } else {
                config.http = Some(addr);
            }
        }
        config.tls = tls;
        config.auth = auth.map(|(_, a)| a);
        let receiver = OtlpReceiver::new(config)
            .with_id(section.id().clone())
            .with_unresolved(unresolved);
        Ok(Box::new(OtlpInstance(receiver)))
    }
}

/// Apply one server's settings (a protocol of the `otlp` receiver, or the `zipkin` and
/// `jaeger` receivers' servers) to `config`; `prefix` is where the settings sit in the
/// section (`protocols.grpc`, or `""` for a receiver that is one server). Returns the
/// listen address. TLS and authentication must agree across a receiver's servers.
#[allow(clippy::too_many_arguments)]
fn apply_server(
    section: &Section<'_>,
    prefix: &str,
    server: ServerYaml,
    default_port: u16,
    config: &mut OtlpConfig,
    tls: &mut Option<TlsFiles>,
    auth: &mut Option<(String, Authenticator)>,
    unresolved: &mut Vec<(String, String)>,
) -> Result<SocketAddr, ConfigError> {
    let at = |key: &str| {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        }
    };
    let legacy = server.cors_allowed_origins.is_some() || server.cors_allowed_headers.is_some();
    if (legacy || server.cors.is_some()) && prefix.ends_with("grpc") {
        return Err(section.error(&at("cors"), "CORS is for HTTP servers; gRPC has none"));
    }
    if let Some(c) = server.cors {
        if legacy {
            return Err(section.error(
                &at("cors_allowed_origins"),
                "give `cors` or the older `cors_allowed_origins`/`cors_allowed_headers`, not both",
            ));
        }
        config.cors = Some(crate::otlp::Cors {
            allowed_origins: c.allowed_origins,
            allowed_headers: c.allowed_headers,
            max_age: c.max_age,
        });
    } else if legacy {
        config.cors = Some(crate::otlp::Cors {
            allowed_origins: server.cors_allowed_origins.unwrap_or_default(),
            allowed_headers: server.cors_allowed_headers.unwrap_or_default(),
            max_age: None,
        });
    }
    if server.parse_string_tags.is_some() && section.id().kind() != "zipkin" {
        return Err(section.error(
            &at("parse_string_tags"),
            "unknown field: it is a setting of the zipkin receiver",
        ));
    }
    let endpoint = server
        .endpoint
        .clone()
        .unwrap_or_else(|| format!("localhost:{default_port}"));
    let addr = listen_or_defer(&endpoint, at("endpoint"), unresolved)
        .map_err(|m| section.error(&at("endpoint"), m))?;
    if let Some(mib) = server.max_recv_msg_size_mib {
        if mib == 0 {
            return Err(section.error(&at("max_recv_msg_size_mib"), "must be positive"));
        }
        config.max_request_bytes = (mib as usize) << 20;
        config.max_decompressed_bytes = config.max_decompressed_bytes.max(config.max_request_bytes);
    }
    if let Some(bytes) = server.max_request_body_size {
        if bytes == 0 {
            return Err(section.error(&at("max_request_body_size"), "must be positive"));
        }
        config.max_request_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        config.max_decompressed_bytes = config.max_decompressed_bytes.max(config.max_request_bytes);
    }
    if server.include_metadata == Some(true) {
        config.include_metadata = true;
    }
    let positive = |d: Option<Duration>, key: &str| match d {
        Some(d) if d.is_zero() => Err(section.error(&at(key), "must be positive")),
        d => Ok(d),
    };
    let limits = &mut config.limits;
    if let Some(n) = server.max_concurrent_streams.filter(|n| *n > 0) {
        limits.max_concurrent_streams = n;
    }
    if let Some(p) = server.keepalive.and_then(|k| k.server_parameters) {
        if let Some(d) = positive(
            p.max_connection_idle,
            "keepalive.server_parameters.max_connection_idle",
        )? {
            limits.idle_timeout = d;
        }
        if let Some(d) = positive(p.time, "keepalive.server_parameters.time")? {
            limits.http2_keepalive_interval = Some(d);
        }
        if let Some(d) = positive(p.timeout, "keepalive.server_parameters.timeout")? {
            limits.http2_keepalive_timeout = d;
        }
    }
    if let Some(d) = positive(server.read_header_timeout, "read_header_timeout")? {
        limits.header_read_timeout = d;
    }
    if let Some(d) = positive(server.read_timeout, "read_timeout")? {
        limits.body_read_timeout = d;
    }
    if let Some(d) = positive(server.idle_timeout, "idle_timeout")? {
        limits.idle_timeout = d;
    }
    match server.max_connections {
        Some(0) => return Err(section.error(&at("max_connections"), "must be positive")),
        Some(n) => limits.max_connections = n,
        None => {}
    }
    match server.max_items_per_request {
        Some(0) => {
            return Err(section.error(&at("max_items_per_request"), "must be positive"));
        }
        Some(n) => limits.max_items_per_request = n,
        None => {}
    }
    match server.max_in_flight_mib {
        Some(0) => return Err(section.error(&at("max_in_flight_mib"), "must be positive")),
        Some(n) => limits.max_in_flight_bytes = usize::try_from(n << 20).unwrap_or(usize::MAX),
        None => {}
    }
    if let Some(a) = &server.auth {
        let ext = otel_pipeline_core::collector::auth::referenced(
            section,
            &a.authenticator,
            &at("auth.authenticator"),
        )?;
        let built = authenticator(&ext).map_err(|m| section.error(&at("auth.authenticator"), m))?;
        match &*auth {
            Some((id, _)) if *id != a.authenticator => {
                return Err(section.error(
                    &at("auth.authenticator"),
                    "grpc and http must use the same authenticator in this receiver",
                ));
            }
            Some(_) => {}
            None => *auth = Some((a.authenticator.clone(), built)),
        }
    }
    if let Some(t) = server.tls {
        let version = |key: &str, v: Option<String>| {
            v.map(|v| {
                v.parse()
                    .map_err(|e: String| section.error(&at(&format!("tls.{key}")), e))
            })
            .transpose()
        };
        let files = TlsFiles {
            cert_file: t.cert_file,
            key_file: t.key_file,
            client_ca_file: t.client_ca_file,
            client_names: Vec::new(),
            min_version: version("min_version", t.min_version)?,
            max_version: version("max_version", t.max_version)?,
        };
        match &*tls {
            Some(existing) if *existing != files => {
                return Err(section.error(
                    &at("tls"),
                    "grpc and http must use the same certificate in this receiver",
                ));
            }
            _ => *tls = Some(files),
        }
    }
    if server.transport.as_deref().is_some_and(|t| t != "tcp") {
        return Err(section.error(&at("transport"), "only tcp is supported"));
    }
    Ok(addr)
}

/// The `zipkin` receiver: one HTTP server (`endpoint`, default `localhost:9411`, with
/// the OTLP HTTP server's settings) and `parse_string_tags`.
struct ZipkinFactory;

impl ReceiverFactory for ZipkinFactory {
    fn kind(&self) -> &'static str {
        "zipkin"
    }

    fn create(&self, section: &Section<'_>) -> Result<Box<dyn ReceiverInstance>, ConfigError> {
        let server: ServerYaml = section.deserialize()?;
        let parse = server.parse_string_tags.unwrap_or(false);
        let mut config = OtlpConfig {
            grpc: None,
            http: None,
            ..OtlpConfig::default()
        };
        let (mut tls, mut auth, mut unresolved) = (None, None, Vec::new());
        let addr = apply_server(
            section,
            "",
            server,
            9411,
            &mut config,
            &mut tls,
            &mut auth,
            &mut unresolved,
        )?;
        config.http = Some(addr);
        config.tls = tls;
        config.auth = auth.map(|(_, a)| a);
        let receiver = ZipkinReceiver::with_server(config)
            .parse_string_tags(parse)
            .with_id(section.id().clone())
            .with_unresolved(unresolved);
        Ok(Box::new(ZipkinInstance(receiver)))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JaegerYaml {
    #[serde(default)]
    protocols: Option<JaegerProtocolsYaml>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JaegerProtocolsYaml {
    #[serde(default, deserialize_with = "present")]
    grpc: Option<Option<ServerYaml>>,
    #[serde(default, deserialize_with = "present")]
    thrift_http: Option<Option<ServerYaml>>,
    #[serde(default, deserialize_with = "present_udp")]
    thrift_compact: Option<Option<UdpYaml>>,
    #[serde(default, deserialize_with = "present_udp")]
    thrift_binary: Option<Option<UdpYaml>>,
}

fn present_udp<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<UdpYaml>>, D::Error> {
    Ok(Some(Option::<UdpYaml>::deserialize(d)?))
}

/// An agent (UDP) protocol of the `jaeger` receiver.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UdpYaml {
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    queue_size: Option<usize>,
    #[serde(default)]
    max_packet_size: Option<usize>,
    #[serde(default)]
    workers: Option<usize>,
    /// The socket's receive buffer: the operating system's default applies here.
    #[serde(default, rename = "socket_buffer_size")]
    _socket_buffer_size: Option<serde::de::IgnoredAny>,
}

/// The `jaeger` receiver: `protocols.grpc` (14250), `thrift_http` (14268), and the
/// agent's UDP `thrift_compact` (6831) and `thrift_binary` (6832).
struct JaegerFactory;

impl ReceiverFactory for JaegerFactory {
    fn kind(&self) -> &'static str {
        "jaeger"
    }

    fn create(&self, section: &Section<'_>) -> Result<Box<dyn ReceiverInstance>, ConfigError> {
        let yaml: JaegerYaml = section.deserialize()?;
        let p = yaml.protocols.unwrap_or_default();
        if p.grpc.is_none()
            && p.thrift_http.is_none()
            && p.thrift_compact.is_none()
            && p.thrift_binary.is_none()
        {
            return Err(section.error(
                "protocols",
                "enable at least one of grpc, thrift_http, thrift_compact and thrift_binary",
            ));
        }
        let mut config = crate::JaegerConfig {
            server: OtlpConfig {
                grpc: None,
                http: None,
                ..OtlpConfig::default()
            },
            ..crate::JaegerConfig::default()
        };
        let (mut tls, mut auth, mut unresolved) = (None, None, Vec::new());
        for (name, server, port) in [
            ("grpc", p.grpc, 14250u16),
            ("thrift_http", p.thrift_http, 14268),
        ] {
            let Some(server) = server else { continue };
            let addr = apply_server(
                section,
                &format!("protocols.{name}"),
                server.unwrap_or_default(),
                port,
                &mut config.server,
                &mut tls,
                &mut auth,
                &mut unresolved,
            )?;
            if name == "grpc" {
                config.grpc = Some(addr);
            } else {
                config.thrift_http = Some(addr);
            }
        }
        config.server.tls = tls;
        config.server.auth = auth.map(|(_, a)| a);
        for (name, udp, port) in [
            ("thrift_compact", p.thrift_compact, 6831u16),
            ("thrift_binary", p.thrift_binary, 6832),
        ] {
            let Some(udp) = udp else { continue };
            let udp = udp.unwrap_or_default();
            let at = |key: &str| format!("protocols.{name}.{key}");
            let endpoint = udp.endpoint.unwrap_or_else(|| format!("localhost:{port}"));
            let addr = listen_or_defer(&endpoint, at("endpoint"), &mut unresolved)
                .map_err(|m| section.error(&at("endpoint"), m))?;
            for (key, v, field) in [
                ("queue_size", udp.queue_size, &mut config.udp.queue_size),
                (
                    "max_packet_size",
                    udp.max_packet_size,
                    &mut config.udp.max_packet_size,
                ),
                ("workers", udp.workers, &mut config.udp.workers),
            ] {
                match v {
                    Some(0) => return Err(section.error(&at(key), "must be positive")),
                    Some(n) => *field = n,
                    None => {}
                }
            }
            if name == "thrift_compact" {
                config.thrift_compact = Some(addr);
            } else {
                config.thrift_binary = Some(addr);
            }
        }
        let receiver = crate::JaegerReceiver::new(config)
            .with_id(section.id().clone())
            .with_unresolved(unresolved);
        Ok(Box::new(JaegerInstance(receiver)))
    }
}

struct JaegerInstance(crate::JaegerReceiver);

impl ReceiverInstance for JaegerInstance {
    fn traces(&mut self) -> Option<BoxReceiver<Traces>> {
        Some(Box::new(self.0.traces()))
    }
}

struct ZipkinInstance(ZipkinReceiver);

impl ReceiverInstance for ZipkinInstance {
    fn traces(&mut self) -> Option<BoxReceiver<Traces>> {
        Some(Box::new(self.0.traces()))
    }
}

struct OtlpInstance(OtlpReceiver);

impl ReceiverInstance for OtlpInstance {
    fn traces(&mut self) -> Option<BoxReceiver<Traces>> {
        Some(Box::new(self.0.traces()))
    }
    fn metrics(&mut self) -> Option<BoxReceiver<Metrics>> {
        Some(Box::new(self.0.metrics()))
    }
    fn logs(&mut self) -> Option<BoxReceiver<Logs>> {
        Some(Box::new(self.0.logs()))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthCheckYaml {
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    path: Option<String>,
    // The Collector's deprecated pipeline check; readiness here always covers pipelines.
    #[serde(default, rename = "check_collector_pipeline")]
    _check_collector_pipeline: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    response_body: Option<ResponseBodyYaml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseBodyYaml {
    healthy: Option<String>,
    unhealthy: Option<String>,
}

struct HealthCheckFactory;

impl ExtensionFactory for HealthCheckFactory {
    fn kind(&self) -> &'static str {
        "health_check"
    }

    fn create(&self, section: &Section<'_>) -> Result<Box<dyn Extension>, ConfigError> {
        let yaml: HealthCheckYaml = section.deserialize()?;
        let endpoint = yaml.endpoint.unwrap_or_else(|| "localhost:13133".into());
        let addr = listen_address(&endpoint).map_err(|m| section.error("endpoint", m))?;
        let path = yaml.path.unwrap_or_else(|| "/".into());
        if !path.starts_with('/') {
            return Err(section.error("path", "must start with `/`"));
        }
        let (healthy, unhealthy) = match yaml.response_body {
            Some(b) => (b.healthy, b.unhealthy),
            None => (None, None),
        };
        Ok(Box::new(HealthCheck {
            addr,
            path,
            healthy,
            unhealthy,
            server: Served::default(),
        }))
    }
}

/// The `health_check` extension: `GET <path>` answers 200 while the collector is ready
/// and 503 otherwise (starting, waiting for a gate such as a first Kubernetes sync, or
/// draining).
struct HealthCheck {
    addr: SocketAddr,
    path: String,
    healthy: Option<String>,
    unhealthy: Option<String>,
    server: Served,
}

impl Extension for HealthCheck {
    fn start(&self, host: Host) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let health = host.health;
            let path = self.path.clone();
            let since = SystemTime::now();
            let (healthy, unhealthy) = (self.healthy.clone(), self.unhealthy.clone());
            let server = AdminServer::start(self.addr, move |req_path| {
                if req_path != path {
                    return (404, "text/plain", "not found\n".to_string());
                }
                health_answer(&health, since, healthy.as_deref(), unhealthy.as_deref())
            })
            .await?;
            self.server.set(server);
            Ok(())
        })
    }

    fn shutdown(&self, deadline: Instant) -> BoxFuture<'_, Result<(), BoxError>> {
        self.server.stop(deadline)
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        self.server.addr()
    }
}

fn health_answer(
    health: &CollectorHealth,
    since: SystemTime,
    healthy: Option<&str>,
    unhealthy: Option<&str>,
) -> (u16, &'static str, String) {
    let up = since.elapsed().unwrap_or_default();
    if health.is_ready() {
        let body = healthy.map_or_else(
            || {
                format!(
                    "{{\"status\":\"Server available\",\"uptime\":\"{:.3}s\"}}\n",
                    up.as_secs_f64()
                )
            },
            str::to_string,
        );
        (200, "application/json", body)
    } else {
        let waiting = health.waiting_for().join(", ");
        let body = unhealthy.map_or_else(
            || format!("{{\"status\":\"Server not available\",\"waiting_for\":\"{waiting}\"}}\n"),
            str::to_string,
        );
        (503, "application/json", body)
    }
}

/// Serve the self-metrics as Prometheus text at `GET /metrics` on `addr` until stopped.
pub async fn serve_metrics(
    addr: SocketAddr,
    telemetry: Telemetry,
) -> Result<MetricsServer, BoxError> {
    let server = AdminServer::start(addr, move |path| {
        if path == "/metrics" {
            (
                200,
                "text/plain; version=0.0.4",
                telemetry.render_prometheus(),
            )
        } else {
            (404, "text/plain", "not found\n".to_string())
        }
    })
    .await?;
    Ok(MetricsServer(server))
}

/// The self-metrics endpoint started by [`serve_metrics`].
#[derive(Debug)]
pub struct MetricsServer(AdminServer);

impl MetricsServer {
    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.0.addr()
    }

    /// Stop serving by `deadline`.
    pub async fn stop(self, deadline: Instant) {
        self.0.stop(deadline).await;
    }
}

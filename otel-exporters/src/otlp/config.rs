//! The OTLP exporter's configuration in the Collector's `otlp` exporter shape.
//!
//! ```yaml
//! exporters:
//!   otlp/backend:
//!     endpoint: backend:4317        # no scheme: TLS unless tls.insecure is true
//!     tls: { insecure: true }
//!     compression: gzip             # gzip (default), zstd or none
//!     headers: { x-api-key: "..." }
//!     timeout: 5s
//!     retry_on_failure: { enabled: true, initial_interval: 5s, max_interval: 30s, max_elapsed_time: 300s }
//!     sending_queue: { enabled: true, num_consumers: 10, queue_size: 1000 }  # requests, as the Collector counts them
//! ```
//!
//! `protocol` (ours: `grpc`, `http/protobuf`, `http/json`) picks the transport; the
//! Collector spells that as a separate `otlphttp` exporter.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{
    ClientTls, Compression, OtlpExporterConfig, Protocol, RetryConfig, SendingQueueConfig,
};

/// The YAML form of [`OtlpExporterConfig`]; unknown keys are refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OtlpExporterYaml {
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    protocol: Option<ProtocolYaml>,
    #[serde(default)]
    compression: Option<CompressionYaml>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "otel_pipeline_core::config::opt_duration")]
    timeout: Option<Duration>,
    #[serde(default)]
    tls: TlsYaml,
    /// The key `tls.insecure` had before the Collector grouped the TLS settings; still
    /// in configurations people run, and read as `tls.insecure`.
    #[serde(default)]
    insecure: Option<bool>,
    #[serde(default)]
    retry_on_failure: Option<RetryYaml>,
    #[serde(default)]
    sending_queue: Option<QueueYaml>,
    /// `auth.authenticator`: the extension whose credentials every request carries.
    #[serde(default)]
    auth: Option<AuthRefYaml>,
    // otlphttp only: the body encoding and per-signal URLs.
    #[serde(default)]
    encoding: Option<EncodingYaml>,
    #[serde(default)]
    traces_endpoint: Option<String>,
    #[serde(default)]
    metrics_endpoint: Option<String>,
    #[serde(default)]
    logs_endpoint: Option<String>,
    // zipkin only: the body format and the name of resources without a service.
    #[serde(default)]
    format: Option<EncodingYaml>,
    #[serde(default)]
    default_service_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthRefYaml {
    authenticator: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum EncodingYaml {
    Proto,
    Json,
}

#[derive(Debug, Clone, Copy, Deserialize)]
enum ProtocolYaml {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "http/json")]
    HttpJson,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum CompressionYaml {
    Gzip,
    Zstd,
    None,
    #[serde(rename = "")]
    Empty,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsYaml {
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    ca_file: Option<std::path::PathBuf>,
    /// Mutual TLS: the client certificate and key.
    #[serde(default)]
    cert_file: Option<std::path::PathBuf>,
    #[serde(default)]
    key_file: Option<std::path::PathBuf>,
    #[serde(default)]
    insecure_skip_verify: bool,
    #[serde(default)]
    server_name_override: Option<String>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
    /// Certificate files are read when the exporter is built; a configuration reload
    /// (SIGHUP or a file change) reads them again.
    #[serde(default, rename = "reload_interval")]
    _reload_interval: Option<serde::de::IgnoredAny>,
    /// Read as the system roots, which rustls uses when no `ca_file` is given.
    #[serde(default, rename = "include_system_ca_certs_pool")]
    _include_system_ca_certs_pool: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    ca_pem: Option<String>,
    #[serde(default)]
    cert_pem: Option<String>,
    #[serde(default)]
    key_pem: Option<String>,
    #[serde(default)]
    cipher_suites: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryYaml {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "otel_pipeline_core::config::opt_duration")]
    initial_interval: Option<Duration>,
    #[serde(default, deserialize_with = "otel_pipeline_core::config::opt_duration")]
    max_interval: Option<Duration>,
    #[serde(default, deserialize_with = "otel_pipeline_core::config::opt_duration")]
    max_elapsed_time: Option<Duration>,
    #[serde(default)]
    multiplier: Option<f64>,
    #[serde(default)]
    randomization_factor: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueueYaml {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    num_consumers: Option<usize>,
    #[serde(default)]
    queue_size: Option<usize>,
    #[serde(default)]
    max_bytes: Option<usize>,
    #[serde(default, alias = "blocking")]
    block_on_overflow: Option<bool>,
    /// What `queue_size` counts: `requests` (the Collector's default: requests, however
    /// many items each holds), `items`, or `bytes` (read as `max_bytes`). Whatever it
    /// counts, the queue also keeps its memory bounds (100 000 items and 64 MiB unless
    /// `queue_size` under `items` or `max_bytes` say otherwise).
    #[serde(default)]
    sizer: Option<Sizer>,
    /// The `file_storage` extension that makes the queue persistent.
    #[serde(default)]
    storage: Option<String>,
    /// Batching in front of the queue: read by the collector's loader, which puts the
    /// batch processor in front of the exporter.
    #[serde(default, rename = "batch")]
    _batch: Option<serde::de::IgnoredAny>,
    /// The caller waits for the export's result: the queue is then off (each request is
    /// sent, and retried, on the caller's task).
    #[serde(default)]
    wait_for_result: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Sizer {
    Items,
    Requests,
    Bytes,
}

impl OtlpExporterYaml {
    /// Whether `sending_queue.batch` is given.
    pub(crate) fn queue_batches(&self) -> bool {
        self.sending_queue
            .as_ref()
            .is_some_and(|q| q._batch.is_some())
    }

    /// Whether `sending_queue.wait_for_result` is on.
    pub(crate) fn waits_for_result(&self) -> bool {
        self.sending_queue
            .as_ref()
            .is_some_and(|q| q.wait_for_result == Some(true))
    }

    /// The storage extension `sending_queue.storage` names.
    pub(crate) fn queue_storage(&self) -> Option<&str> {
        self.sending_queue
            .as_ref()
            .and_then(|q| q.storage.as_deref())
    }

    /// The `otlphttp` exporter's reading: HTTP, protobuf or JSON by `encoding`, and the
    /// signal's own URL when given (`traces_endpoint`). `signal` is `traces`, `metrics`
    /// or `logs`.
    pub(crate) fn to_http_config(
        &self,
        signal: &str,
    ) -> Result<OtlpExporterConfig, (String, String)> {
        if self.protocol.is_some() {
            return Err((
                "protocol".into(),
                "otlphttp is always HTTP; use `encoding: proto|json`".into(),
            ));
        }
        let mut c = self.to_config();
        c.protocol = match self.encoding {
            Some(EncodingYaml::Json) => Protocol::HttpJson,
            _ => Protocol::HttpProtobuf,
        };
        let own = match signal {
            "traces" => &self.traces_endpoint,
            "metrics" => &self.metrics_endpoint,
            _ => &self.logs_endpoint,
        };
        match (own, &self.endpoint) {
            (Some(url), _) => c.endpoint = with_scheme(url, self.insecure()),
            (None, Some(_)) => {}
            (None, None) => {
                return Err((
                    "endpoint".into(),
                    format!("give `endpoint` or `{signal}_endpoint`"),
                ));
            }
        }
        Ok(c)
    }

    /// Keys that only `otlphttp` reads, if any is set.
    pub(crate) fn http_only_key(&self) -> Option<&'static str> {
        if self.encoding.is_some() {
            Some("encoding")
        } else if self.traces_endpoint.is_some() {
            Some("traces_endpoint")
        } else if self.metrics_endpoint.is_some() {
            Some("metrics_endpoint")
        } else if self.logs_endpoint.is_some() {
            Some("logs_endpoint")
        } else {
            None
        }
    }

    /// A key only the `zipkin` exporter reads, if set.
    pub(crate) fn zipkin_only_key(&self) -> Option<&'static str> {
        if self.format.is_some() {
            Some("format")
        } else if self.default_service_name.is_some() {
            Some("default_service_name")
        } else {
            None
        }
    }

    /// The `zipkin` exporter's settings: the endpoint is the full URL, `format` is
    /// `json` (default) or `proto`, nothing is compressed unless asked.
    pub(crate) fn to_zipkin_config(&self) -> Result<OtlpExporterConfig, (String, String)> {
        if let Some(key) = self.otlp_only_key() {
            return Err((key.into(), "the zipkin exporter does not read this".into()));
        }
        let Some(endpoint) = &self.endpoint else {
            return Err((
                "endpoint".into(),
                "give the Zipkin URL (http://zipkin:9411/api/v2/spans)".into(),
            ));
        };
        let mut c = self.to_config();
        c.endpoint = with_scheme(endpoint, self.insecure());
        c.protocol = match self.format {
            Some(EncodingYaml::Proto) => Protocol::ZipkinProto,
            _ => Protocol::ZipkinJson,
        };
        if self.compression.is_none() {
            c.compression = Compression::None;
        }
        c.default_service_name
            .clone_from(&self.default_service_name);
        Ok(c)
    }

    /// The `jaeger` exporter's settings: gRPC `api_v2` to `endpoint` (`host:14250`),
    /// nothing compressed unless asked.
    pub(crate) fn to_jaeger_config(&self) -> Result<OtlpExporterConfig, (String, String)> {
        if let Some(key) = self.otlp_only_key().or_else(|| self.zipkin_only_key()) {
            return Err((key.into(), "the jaeger exporter does not read this".into()));
        }
        if self.endpoint.is_none() {
            return Err((
                "endpoint".into(),
                "give the Jaeger collector's host:14250".into(),
            ));
        }
        let mut c = self.to_config();
        c.protocol = Protocol::JaegerGrpc;
        if self.compression.is_none() {
            c.compression = Compression::None;
        }
        Ok(c)
    }

    /// A key of the OTLP exporters that the Zipkin and Jaeger ones do not read.
    fn otlp_only_key(&self) -> Option<&'static str> {
        if self.protocol.is_some() {
            Some("protocol")
        } else if self.encoding.is_some() {
            Some("encoding")
        } else if self.traces_endpoint.is_some() {
            Some("traces_endpoint")
        } else if self.metrics_endpoint.is_some() {
            Some("metrics_endpoint")
        } else if self.logs_endpoint.is_some() {
            Some("logs_endpoint")
        } else {
            None
        }
    }

    /// A TLS setting that cannot be honoured, with its key: a version rustls lacks, or
    /// inline PEM and cipher suites (which this exporter does not take; give files).
    pub(crate) fn tls_error(&self) -> Option<(String, String)> {
        for (key, v) in [
            ("tls.min_version", &self.tls.min_version),
            ("tls.max_version", &self.tls.max_version),
        ] {
            if let Some(Err(e)) = v.as_deref().map(str::parse::<crate::TlsVersion>) {
                return Some((key.into(), e));
            }
        }
        for (key, set) in [
            ("tls.ca_pem", self.tls.ca_pem.is_some()),
            ("tls.cert_pem", self.tls.cert_pem.is_some()),
            ("tls.key_pem", self.tls.key_pem.is_some()),
        ] {
            if set {
                return Some((
                    key.into(),
                    "inline PEM is not read by this exporter: put it in a file and use the `_file` key".into(),
                ));
            }
        }
        if self.tls.cipher_suites.is_some() {
            return Some((
                "tls.cipher_suites".into(),
                "not configurable here: rustls offers only its safe default suites".into(),
            ));
        }
        None
    }

    /// Whether the endpoint is plaintext when it names no scheme.
    pub(crate) fn insecure(&self) -> bool {
        self.tls.insecure || self.insecure == Some(true)
    }

    /// The exporter settings, with `endpoint` given a scheme (`http://` when
    /// `tls.insecure`, else `https://`, as the Collector reads a bare `host:port`).
    /// The extension named in `auth.authenticator`, if any.
    pub(crate) fn authenticator(&self) -> Option<&str> {
        self.auth.as_ref().map(|a| a.authenticator.as_str())
    }

    /// `retry_on_failure` and `sending_queue` from the enclosing section (the
    /// loadbalancing exporter's own), where this section sets none.
    pub(crate) fn with_outer(mut self, retry: Option<RetryYaml>, queue: Option<QueueYaml>) -> Self {
        if self.retry_on_failure.is_none() {
            self.retry_on_failure = retry;
        }
        if self.sending_queue.is_none() {
            self.sending_queue = queue;
        }
        self
    }

    pub(crate) fn to_config(&self) -> OtlpExporterConfig {
        let mut c = OtlpExporterConfig::default();
        if let Some(endpoint) = &self.endpoint {
            c.endpoint = with_scheme(endpoint, self.insecure());
        }
        c.protocol = match self.protocol {
            None | Some(ProtocolYaml::Grpc) => Protocol::Grpc,
            Some(ProtocolYaml::HttpProtobuf) => Protocol::HttpProtobuf,
            Some(ProtocolYaml::HttpJson) => Protocol::HttpJson,
        };
        c.compression = match self.compression {
            None | Some(CompressionYaml::Gzip) => Compression::Gzip,
            Some(CompressionYaml::Zstd) => Compression::Zstd,
            Some(CompressionYaml::None | CompressionYaml::Empty) => Compression::None,
        };
        c.headers = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(t) = self.timeout {
            c.timeout = t;
        }
        c.tls = ClientTls {
            ca_file: self.tls.ca_file.clone(),
            cert_file: self.tls.cert_file.clone(),
            key_file: self.tls.key_file.clone(),
            insecure_skip_verify: self.tls.insecure_skip_verify,
            server_name_override: self.tls.server_name_override.clone(),
            // Checked by `tls_error` first.
            min_version: self.tls.min_version.as_deref().and_then(|v| v.parse().ok()),
            max_version: self.tls.max_version.as_deref().and_then(|v| v.parse().ok()),
        };
        if let Some(r) = &self.retry_on_failure {
            let d = RetryConfig::default();
            c.retry = RetryConfig {
                enabled: r.enabled.unwrap_or(d.enabled),
                initial_interval: r.initial_interval.unwrap_or(d.initial_interval),
                max_interval: r.max_interval.unwrap_or(d.max_interval),
                // The Collector reads 0 as "no limit".
                max_elapsed: match r.max_elapsed_time {
                    Some(Duration::ZERO) => Duration::MAX,
                    Some(t) => t,
                    None => d.max_elapsed,
                },
                multiplier: r.multiplier.unwrap_or(d.multiplier),
                randomization: r.randomization_factor.unwrap_or(d.randomization),
            };
        }
        if let Some(q) = &self.sending_queue {
            let d = SendingQueueConfig::default();
            c.queue = SendingQueueConfig {
                // Waiting for the result is sending on the caller's task.
                enabled: q.enabled.unwrap_or(d.enabled) && q.wait_for_result != Some(true),
                num_consumers: q.num_consumers.unwrap_or(d.num_consumers),
                max_items: match (q.sizer, q.queue_size) {
                    (Some(Sizer::Items), Some(n)) => n,
                    _ => d.max_items,
                },
                max_requests: match (q.sizer, q.queue_size) {
                    (None | Some(Sizer::Requests), Some(n)) => Some(n),
                    _ => d.max_requests,
                },
                // `max_bytes: 0` lifts the byte bound (items only).
                max_bytes: match (q.max_bytes, q.sizer, q.queue_size) {
                    (Some(0), _, _) => None,
                    (Some(n), _, _) => Some(n),
                    (None, Some(Sizer::Bytes), Some(n)) => Some(n),
                    (None, _, _) => d.max_bytes,
                },
                block_on_overflow: q.block_on_overflow.unwrap_or(d.block_on_overflow),
                // Resolved by the factory, which sees the extension it names.
                storage: None,
            };
        }
        c
    }
}

/// `host:port` as a URI: `http://` when `insecure`, else `https://`; a URI with a
/// scheme is kept as it is.
pub(crate) fn with_scheme(endpoint: &str, insecure: bool) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else if insecure {
        format!("http://{endpoint}")
    } else {
        format!("https://{endpoint}")
    }
}

impl<'de> Deserialize<'de> for OtlpExporterConfig {
    /// The Collector's `otlp` exporter section: `endpoint` (a bare `host:port` is TLS
    /// unless `tls.insecure`), `protocol`, `compression`, `headers`, `timeout`,
    /// `tls.ca_file`, `retry_on_failure` and `sending_queue`. Unknown keys are refused.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        OtlpExporterYaml::deserialize(d).map(|y| y.to_config())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otel_pipeline_core::config::from_yaml;

    #[test]
    fn collector_shape_loads_and_typos_name_the_path() {
        let c: OtlpExporterConfig = from_yaml(
            "exporters.otlp",
            "endpoint: gw:4317\ntls: {insecure: true}\ncompression: none\ntimeout: 2s\n\
             retry_on_failure: {max_elapsed_time: 0s}\nsending_queue: {queue_size: 50}",
        )
        .unwrap();
        assert_eq!(c.endpoint, "http://gw:4317");
        assert_eq!(c.compression, Compression::None);
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(c.retry.max_elapsed, Duration::MAX);
        // `queue_size` counts requests unless `sizer` says otherwise, as the Collector's.
        assert_eq!(c.queue.max_requests, Some(50));
        assert_eq!(c.queue.max_items, 100_000);
        let items: OtlpExporterConfig = from_yaml(
            "e",
            "endpoint: gw:4317\nsending_queue: {queue_size: 70, sizer: items}",
        )
        .unwrap();
        assert_eq!(
            (items.queue.max_items, items.queue.max_requests),
            (70, None)
        );
        let bytes: OtlpExporterConfig = from_yaml(
            "e",
            "endpoint: gw:4317\nsending_queue: {queue_size: 4096, sizer: bytes}",
        )
        .unwrap();
        assert_eq!(
            (bytes.queue.max_bytes, bytes.queue.max_requests),
            (Some(4096), None)
        );
        // Waiting for the result: each request is sent on the caller's task.
        let waits: OtlpExporterConfig = from_yaml(
            "e",
            "endpoint: gw:4317\nsending_queue: {wait_for_result: true}",
        )
        .unwrap();
        assert!(!waits.queue.enabled);
        let secure: OtlpExporterConfig = from_yaml("e", "endpoint: gw:4317").unwrap();
        assert_eq!(secure.endpoint, "https://gw:4317");
        let err = from_yaml::<OtlpExporterConfig>(
            "exporters.otlp",
            "retry_on_failure: {enabled: true, max_intervall: 1s}",
        )
        .unwrap_err();
        assert!(
            err.path.starts_with("exporters.otlp.retry_on_failure"),
            "{err}"
        );
        assert!(err.message.contains("max_intervall"), "{err}");
        let err =
            from_yaml::<OtlpExporterConfig>("exporters.otlp", "compression: brotli").unwrap_err();
        assert_eq!(err.path, "exporters.otlp.compression", "{err}");
        let zstd: OtlpExporterConfig =
            from_yaml("exporters.otlp", "compression: zstd").expect("zstd loads");
        assert_eq!(zstd.compression, Compression::Zstd);
    }
}

//! The trace router's configuration, in the Collector's `loadbalancing` exporter shape.
//!
//! ```yaml
//! exporters:
//!   loadbalancing:
//!     routing_key: traceID            # traceID (default), service, resource, attributes
//!     protocol:
//!       otlp:                         # each endpoint's OTLP exporter (endpoint is ignored)
//!         tls: { insecure: true }
//!         timeout: 1s
//!     resolver:
//!       dns: { hostname: otel-gateway-headless.observability, port: 4317 }
//!     # ours, with their defaults:
//!     grace_period: 30s               # in-flight traces keep their endpoint this long
//!     grace_table_size: 200000        # most trace ids remembered for that
//!     health: { failure_threshold: 5, probe_interval: 10s }
//!     drain_timeout: 30s              # how long a removed endpoint's queue may take
//!     exclude_endpoints: []           # resolved endpoints never used (a gateway's own)
//! ```

use std::time::Duration;

use otel_pipeline_core::config::{ConfigError, from_yaml};
use serde::Deserialize;

use crate::otlp::OtlpExporterYaml;

/// What decides which endpoint a span goes to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RoutingKey {
    /// The span's trace id: every span of a trace reaches one endpoint (the default).
    #[default]
    TraceId,
    /// The resource's `service.name`: every span of a service reaches one endpoint.
    Service,
    /// All the resource's attributes.
    Resource,
    /// The values of these attributes, looked up on the span, then its scope, then its
    /// resource; a span with none of them is routed by trace id.
    Attributes(Vec<String>),
    /// Metrics: the resource and the metric's name.
    Metric,
    /// Metrics: the resource, scope, metric name and data point attributes (each stream
    /// to one endpoint).
    StreamId,
}

/// Where the endpoints come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ResolverConfig {
    /// A fixed list of `host:port`.
    Static {
        /// The endpoints.
        hostnames: Vec<String>,
    },
    /// The addresses a DNS name resolves to, looked up every `interval`.
    Dns {
        /// The name to resolve (a headless Service's name in Kubernetes).
        hostname: String,
        /// The port of every endpoint (default 4317).
        port: u16,
        /// How often to resolve (default 5 s).
        interval: Duration,
        /// How long one resolution may take (default 1 s).
        timeout: Duration,
    },
    /// The ready endpoints of a Kubernetes Service, from its EndpointSlices. Implemented
    /// by the `otel-k8s` crate, which passes a [`super::Resolver`] to
    /// [`super::TraceRouter::with_resolver`].
    K8s {
        /// `name.namespace` (or `name` in the pod's namespace).
        service: String,
        /// The ports to send to on each endpoint (default `[4317]`).
        ports: Vec<u16>,
        /// How long one resolution may take (default 1 s).
        timeout: Duration,
    },
}

/// Taking a failing endpoint out of the set, and back in.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Consecutive failed attempts (connection refused, timeouts, 429/503, ...) that take an
    /// endpoint out of the set (default 5; 0 never ejects).
    pub failure_threshold: u32,
    /// How often an ejected endpoint is probed with an empty request (default 10 s).
    pub probe_interval: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            probe_interval: Duration::from_secs(10),
        }
    }
}

/// Settings of the [`super::TraceRouter`].
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRouterConfig {
    /// What to route by (default: trace id).
    pub routing_key: RoutingKey,
    /// Each endpoint's OTLP exporter; its `endpoint` is replaced by the endpoint's.
    pub otlp: crate::otlp::OtlpExporterConfig,
    /// Whether a resolved `host:port` is reached over plaintext (`http://`) rather than TLS.
    pub insecure: bool,
    /// Where the endpoints come from.
    pub resolver: ResolverConfig,
    /// How long a trace already sent to an endpoint keeps going there after the set
    /// changes (default 30 s; zero turns the grace table off).
    pub grace_period: Duration,
    /// Most trace ids the grace table remembers (default 200 000, about 8 MiB).
    pub grace_table_size: usize,
    /// Ejection and probing of failing endpoints.
    pub health: HealthConfig,
    /// How long a removed or ejected endpoint's queue may take to hand its batches to
    /// their new owners (default 30 s).
    pub drain_timeout: Duration,
    /// Resolved endpoints never routed to (`exclude_endpoints`): a gateway that hands its
    /// buffered traces to its peers names itself here (`${env:POD_IP}:4317`), so the
    /// peers' set is the resolver's minus itself, as the agents will see it once it has
    /// gone. Compared without an `http://` or `https://` prefix.
    pub exclude_endpoints: Vec<String>,
}

impl Default for TraceRouterConfig {
    fn default() -> Self {
        Self {
            routing_key: RoutingKey::TraceId,
            otlp: crate::otlp::OtlpExporterConfig::default(),
            insecure: true,
            resolver: ResolverConfig::Static {
                hostnames: Vec::new(),
            },
            grace_period: Duration::from_secs(30),
            grace_table_size: 200_000,
            health: HealthConfig::default(),
            drain_timeout: Duration::from_secs(30),
            exclude_endpoints: Vec::new(),
        }
    }
}

impl TraceRouterConfig {
    /// Load the `loadbalancing` section at `path` (for error messages, e.g.
    /// `exporters.loadbalancing`) from its YAML text. Unknown keys and bad values are
    /// errors that name the path.
    ///
    /// ```
    /// use otel_exporters::loadbalancing::TraceRouterConfig;
    /// let err = TraceRouterConfig::from_yaml(
    ///     "exporters.loadbalancing",
    ///     "resolver: { dns: { hostname: gw, interval: soon } }",
    /// ).unwrap_err();
    /// assert_eq!(err.path, "exporters.loadbalancing.resolver.dns.interval");
    /// ```
    pub fn from_yaml(path: &str, yaml: &str) -> Result<Self, ConfigError> {
        let raw: Raw = from_yaml(path, if yaml.trim().is_empty() { "{}" } else { yaml })?;
        raw.into_config(path)
    }
}

impl TraceRouterConfig {
    /// Load the section at `path` from an already parsed YAML value (the loader's way).
    pub fn from_value(path: &str, value: serde_yaml_ng::Value) -> Result<Self, ConfigError> {
        let value = match value {
            serde_yaml_ng::Value::Null => serde_yaml_ng::Value::Mapping(Default::default()),
            v => v,
        };
        let raw: Raw = serde_path_to_error::deserialize(value).map_err(|e| {
            let inner = e.path().to_string();
            let p = if inner == "." {
                path.to_string()
            } else {
                format!("{path}.{inner}")
            };
            ConfigError::new(p, e.into_inner().to_string())
        })?;
        raw.into_config(path)
    }
}

impl<'de> Deserialize<'de> for TraceRouterConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Raw::deserialize(d)?
            .into_config("")
            .map_err(|e| serde::de::Error::custom(format!("{}: {}", e.path, e.message)))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    routing_key: Option<String>,
    #[serde(default)]
    routing_attributes: Vec<String>,
    #[serde(default)]
    protocol: Option<ProtocolRaw>,
    #[serde(default)]
    resolver: Option<ResolverRaw>,
    #[serde(default, deserialize_with = "otel_pipeline_core::config::opt_duration")]
    grace_period: Option<Duration>,
    #[serde(default)]
    grace_table_size: Option<usize>,
    #[serde(default)]
    health: Option<HealthRaw>,
    #[serde(default, deserialize_with = "otel_pipeline_core::config::opt_duration")]
    drain_timeout: Option<Duration>,
    #[serde(default)]
    exclude_endpoints: Vec<String>,
    // The Collector's exporter-level settings: accepted, and applied to each endpoint's
    // exporter where `protocol.otlp` does not set them.
    #[serde(default, deserialize_with = "otel_pipeline_core::config::opt_duration")]
    timeout: Option<Duration>,
    #[serde(default)]
    retry_on_failure: Option<crate::otlp::RetryYaml>,
    #[serde(default)]
    sending_queue: Option<crate::otlp::QueueYaml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProtocolRaw {
    #[serde(default)]
    otlp: Option<OtlpExporterYaml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolverRaw {
    #[serde(default, rename = "static")]
    static_: Option<StaticRaw>,
    #[serde(default)]
    dns: Option<DnsRaw>,
    #[serde(default)]
    k8s: Option<K8sRaw>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StaticRaw {
    hostnames: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DnsRaw {
    hostname: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default, deserialize_with = "otel_pipeline_core::config::opt_duration")]
    interval: Option<Duration>,
    #[serde(default, deserialize_with = "otel_pipeline_core::config::opt_duration")]
    timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct K8sRaw {
    service: String,
    #[serde(default)]
    ports: Option<Vec<u16>>,
    #[serde(default, deserialize_with = "otel_pipeline_core::config::opt_duration")]
    timeout: Option<Duration>,
    #[serde(default)]
    return_hostnames: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthRaw {
    #[serde(default)]
    failure_threshold: Option<u32>,
    #[serde(default, deserialize_with = "otel_pipeline_core::config::opt_duration")]
    probe_interval: Option<Duration>,
}

fn at(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Raw {
    fn into_config(self, path: &str) -> Result<TraceRouterConfig, ConfigError> {
        let d = TraceRouterConfig::default();
        let routing_key = match self.routing_key.as_deref() {
            None | Some("traceID") => RoutingKey::TraceId,
            Some("service") => RoutingKey::Service,
            Some("resource") => RoutingKey::Resource,
            Some("metric") => RoutingKey::Metric,
            Some("streamID") => RoutingKey::StreamId,
            Some("attributes") => {
                if self.routing_attributes.is_empty() {
                    return Err(ConfigError::new(
                        at(path, "routing_attributes"),
                        "routing_key `attributes` needs at least one attribute name",
                    ));
                }
                RoutingKey::Attributes(self.routing_attributes.clone())
            }
            Some(other) => {
                return Err(ConfigError::new(
                    at(path, "routing_key"),
                    format!(
                        "unknown routing key `{other}` (traceID, service, resource or attributes; metrics also metric and streamID)"
                    ),
                ));
            }
        };
        if !self.routing_attributes.is_empty() && !matches!(routing_key, RoutingKey::Attributes(_))
        {
            return Err(ConfigError::new(
                at(path, "routing_attributes"),
                "only used with routing_key: attributes",
            ));
        }
        // The Collector wraps the whole router in one queue and retry; here every endpoint
        // has its own, and these settings apply to each where `protocol.otlp` has none.
        let inner = self.protocol.and_then(|p| p.otlp).unwrap_or_default();
        if inner.queue_batches() {
            return Err(ConfigError::new(
                at(path, "protocol.otlp.sending_queue.batch"),
                "batching goes in the loadbalancing exporter's own `sending_queue` (at its top level), which batches before routing",
            ));
        }
        let otlp_raw = inner.with_outer(self.retry_on_failure, self.sending_queue);
        let insecure = otlp_raw.insecure();
        if let Some((key, m)) = otlp_raw.tls_error() {
            return Err(ConfigError::new(
                at(path, &format!("protocol.otlp.{key}")),
                m,
            ));
        }
        if let Some(key) = otlp_raw.zipkin_only_key() {
            return Err(ConfigError::new(
                at(path, &format!("protocol.otlp.{key}")),
                "only the zipkin exporter reads this",
            ));
        }
        let mut otlp = otlp_raw.to_config();
        if let Some(t) = self.timeout {
            otlp.timeout = t;
        }
        let resolver_path = at(path, "resolver");
        let resolver = match self.resolver {
            None => {
                return Err(ConfigError::new(
                    resolver_path,
                    "missing: give one of static, dns or k8s",
                ));
            }
            Some(r) => {
                let given = [r.static_.is_some(), r.dns.is_some(), r.k8s.is_some()]
                    .iter()
                    .filter(|g| **g)
                    .count();
                if given != 1 {
                    return Err(ConfigError::new(
                        resolver_path,
                        "give exactly one of static, dns or k8s",
                    ));
                }
                if let Some(s) = r.static_ {
                    for (i, h) in s.hostnames.iter().enumerate() {
                        check_endpoint(h).map_err(|m| {
                            ConfigError::new(format!("{resolver_path}.static.hostnames[{i}]"), m)
                        })?;
                    }
                    if s.hostnames.is_empty() {
                        return Err(ConfigError::new(
                            format!("{resolver_path}.static.hostnames"),
                            "needs at least one endpoint",
                        ));
                    }
                    ResolverConfig::Static {
                        hostnames: s.hostnames,
                    }
                } else if let Some(dns) = r.dns {
                    let p = format!("{resolver_path}.dns");
                    if dns.hostname.trim().is_empty() {
                        return Err(ConfigError::new(
                            format!("{p}.hostname"),
                            "must not be empty",
                        ));
                    }
                    if dns.port == Some(0) {
                        return Err(ConfigError::new(format!("{p}.port"), "must be 1-65535"));
                    }
                    let interval = dns.interval.unwrap_or(Duration::from_secs(5));
                    if interval.is_zero() {
                        return Err(ConfigError::new(
                            format!("{p}.interval"),
                            "must be positive",
                        ));
                    }
                    let timeout = dns.timeout.unwrap_or(Duration::from_secs(1));
                    if timeout.is_zero() {
                        return Err(ConfigError::new(format!("{p}.timeout"), "must be positive"));
                    }
                    ResolverConfig::Dns {
                        hostname: dns.hostname,
                        port: dns.port.unwrap_or(4317),
                        interval,
                        timeout,
                    }
                } else if let Some(k) = r.k8s {
                    let p = format!("{resolver_path}.k8s");
                    if k.service.trim().is_empty() {
                        return Err(ConfigError::new(
                            format!("{p}.service"),
                            "must not be empty",
                        ));
                    }
                    let ports = k.ports.unwrap_or_else(|| vec![4317]);
                    if ports.is_empty() || ports.contains(&0) {
                        return Err(ConfigError::new(
                            format!("{p}.ports"),
                            "needs one or more ports of 1-65535",
                        ));
                    }
                    let _ = k.return_hostnames;
                    ResolverConfig::K8s {
                        service: k.service,
                        ports,
                        timeout: k.timeout.unwrap_or(Duration::from_secs(1)),
                    }
                } else {
                    return Err(ConfigError::new(
                        resolver_path,
                        "give one of static, dns or k8s",
                    ));
                }
            }
        };
        let health = match self.health {
            None => d.health,
            Some(h) => {
                let probe_interval = h.probe_interval.unwrap_or(d.health.probe_interval);
                if probe_interval.is_zero() {
                    return Err(ConfigError::new(
                        at(path, "health.probe_interval"),
                        "must be positive",
                    ));
                }
                HealthConfig {
                    failure_threshold: h.failure_threshold.unwrap_or(d.health.failure_threshold),
                    probe_interval,
                }
            }
        };
        let grace_table_size = self.grace_table_size.unwrap_or(d.grace_table_size);
        let grace_period = self.grace_period.unwrap_or(d.grace_period);
        if !grace_period.is_zero() && grace_table_size == 0 {
            return Err(ConfigError::new(
                at(path, "grace_table_size"),
                "must be positive while grace_period is set (use grace_period: 0s to turn it off)",
            ));
        }
        for (i, e) in self.exclude_endpoints.iter().enumerate() {
            check_endpoint(e).map_err(|m| {
                ConfigError::new(format!("{}[{i}]", at(path, "exclude_endpoints")), m)
            })?;
        }
        let drain_timeout = self.drain_timeout.unwrap_or(d.drain_timeout);
        if drain_timeout.is_zero() {
            return Err(ConfigError::new(
                at(path, "drain_timeout"),
                "must be positive",
            ));
        }
        Ok(TraceRouterConfig {
            routing_key,
            otlp,
            insecure,
            resolver,
            grace_period,
            grace_table_size,
            health,
            drain_timeout,
            exclude_endpoints: self.exclude_endpoints,
        })
    }
}

/// An endpoint without its scheme, as resolved sets are compared.
pub(crate) fn bare_endpoint(endpoint: &str) -> &str {
    endpoint
        .split_once("://")
        .map_or(endpoint, |(_, r)| r)
        .trim_end_matches('/')
}

/// A resolved endpoint: `host:port`, or a URI with a scheme.
pub(crate) fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let uri: Result<http::Uri, _> = format!("http://{rest}").parse();
    match uri {
        Ok(u) if u.host().is_some_and(|h| !h.is_empty()) => Ok(()),
        _ => Err(format!("`{endpoint}` is not host:port")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_collectors_shape_loads() {
        let c = TraceRouterConfig::from_yaml(
            "exporters.loadbalancing",
            r#"
routing_key: traceID
protocol:
  otlp:
    timeout: 1s
    tls: { insecure: true }
resolver:
  static:
    hostnames: [gw-0:4317, gw-1:4317]
"#,
        )
        .unwrap();
        assert_eq!(c.routing_key, RoutingKey::TraceId);
        assert!(c.insecure);
        assert_eq!(c.otlp.timeout, Duration::from_secs(1));
        assert_eq!(
            c.resolver,
            ResolverConfig::Static {
                hostnames: vec!["gw-0:4317".into(), "gw-1:4317".into()]
            }
        );
        let k8s = TraceRouterConfig::from_yaml(
            "lb",
            "routing_key: attributes\nrouting_attributes: [tenant]\nresolver: {k8s: {service: gw.obs, ports: [4317, 4318]}}",
        )
        .unwrap();
        assert_eq!(
            k8s.routing_key,
            RoutingKey::Attributes(vec!["tenant".into()])
        );
        assert!(
            matches!(k8s.resolver, ResolverConfig::K8s { ref ports, .. } if ports == &[4317, 4318])
        );
    }

    #[test]
    fn mistakes_name_their_path() {
        let cases = [
            (
                "resolver: {static: {hostnames: [a]}}\nrouting_kee: traceID",
                "lb.routing_kee",
            ),
            (
                "routing_key: spanID\nresolver: {static: {hostnames: [a]}}",
                "lb.routing_key",
            ),
            (
                "routing_key: attributes\nresolver: {static: {hostnames: [a]}}",
                "lb.routing_attributes",
            ),
            (
                "protocol: {otlp: {timeout: fast}}\nresolver: {static: {hostnames: [a]}}",
                "lb.protocol.otlp.timeout",
            ),
            ("resolver: {}", "lb.resolver"),
            ("", "lb.resolver"),
            (
                "resolver: {static: {hostnames: [a], extra: 1}}",
                "lb.resolver.static.extra",
            ),
            (
                "resolver: {static: {hostnames: ['a:4317', ':x']}}",
                "lb.resolver.static.hostnames[1]",
            ),
            (
                "resolver: {dns: {hostname: gw, port: 0}}",
                "lb.resolver.dns.port",
            ),
            (
                "resolver: {dns: {hostname: gw, port: 70000}}",
                "lb.resolver.dns.port",
            ),
            (
                "resolver: {k8s: {service: gw, ports: []}}",
                "lb.resolver.k8s.ports",
            ),
            (
                "resolver: {static: {hostnames: [a]}, dns: {hostname: b}}",
                "lb.resolver",
            ),
            (
                "resolver: {static: {hostnames: [a]}}\nhealth: {probe_interval: 0s}",
                "lb.health.probe_interval",
            ),
        ];
        for (yaml, path) in cases {
            let err = TraceRouterConfig::from_yaml("lb", yaml).unwrap_err();
            assert_eq!(err.path, path, "{yaml}: {err}");
        }
    }
}

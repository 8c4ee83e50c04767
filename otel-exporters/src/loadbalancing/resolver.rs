//! Where the router's endpoints come from: the [`Resolver`] trait and the static and DNS
//! resolvers. The Kubernetes resolver lives in `otel-k8s` and plugs into the same trait.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use otel_pipeline_core::BoxFuture;
use otel_pipeline_core::telemetry::Counter;
use tokio::sync::watch;

/// A source of endpoints (`host:port`, or URIs with a scheme) for the trace router.
///
/// The router calls [`Resolver::run`] once when it starts and drops the future when it
/// stops. The resolver publishes every set it learns through [`ResolverUpdates`]; the
/// router applies a set only when it differs from the last one. A resolver that fails
/// says so with [`ResolverUpdates::failed`], and the router keeps the last good set.
///
/// ```
/// use std::sync::Arc;
/// use otel_exporters::loadbalancing::{Resolver, ResolverUpdates};
/// use otel_pipeline_core::BoxFuture;
///
/// /// Endpoints read from somewhere of the user's choosing.
/// #[derive(Debug)]
/// struct Fixed(Vec<String>);
///
/// impl Resolver for Fixed {
///     fn kind(&self) -> &'static str { "fixed" }
///     fn run(self: Arc<Self>, updates: ResolverUpdates) -> BoxFuture<'static, ()> {
///         Box::pin(async move {
///             updates.publish(self.0.clone());
///             std::future::pending::<()>().await
///         })
///     }
/// }
/// ```
pub trait Resolver: Send + Sync + fmt::Debug + 'static {
    /// `static`, `dns`, `k8s`, ...: the `resolver` attribute of the router's metrics.
    fn kind(&self) -> &'static str;

    /// Resolve for as long as the future is polled, publishing to `updates`.
    fn run(self: Arc<Self>, updates: ResolverUpdates) -> BoxFuture<'static, ()>;
}

/// Where a [`Resolver`] publishes what it finds.
#[derive(Debug, Clone)]
pub struct ResolverUpdates {
    pub(crate) tx: watch::Sender<Option<Vec<String>>>,
    pub(crate) succeeded: Counter,
    pub(crate) failed: Counter,
    /// Woken at each failure, so the router's start stops waiting for a first answer
    /// that is not coming (no cluster, no DNS name).
    pub(crate) failures: Arc<tokio::sync::Notify>,
}

impl ResolverUpdates {
    /// A resolution succeeded with `endpoints` (order and duplicates do not matter). An
    /// empty set is applied too: the router then refuses data until endpoints return.
    pub fn publish(&self, endpoints: impl IntoIterator<Item = String>) {
        self.succeeded.add(1);
        let mut set: Vec<String> = endpoints.into_iter().collect();
        set.sort();
        set.dedup();
        self.tx.send_if_modified(|current| {
            if current.as_ref() == Some(&set) {
                false
            } else {
                *current = Some(set);
                true
            }
        });
    }

    /// A resolution failed: counted, and the last good set stays in force.
    pub fn failed(&self, reason: &str) {
        self.failed.add(1);
        self.failures.notify_one();
        tracing::warn!(
            reason,
            "trace router: endpoint resolution failed; keeping the last set"
        );
    }
}

/// A fixed list of endpoints (`resolver.static.hostnames`).
#[derive(Debug, Clone)]
pub struct StaticResolver {
    endpoints: Vec<String>,
}

impl StaticResolver {
    /// The resolver of `endpoints`.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
        }
    }
}

impl Resolver for StaticResolver {
    fn kind(&self) -> &'static str {
        "static"
    }

    fn run(self: Arc<Self>, updates: ResolverUpdates) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            updates.publish(self.endpoints.clone());
            std::future::pending::<()>().await;
        })
    }
}

/// Looks a name up: the system resolver by default, anything in tests.
pub type DnsLookup =
    Arc<dyn Fn(String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> + Send + Sync>;

/// The addresses a DNS name resolves to (`resolver.dns`), each with one port, looked up
/// every `interval`. A failed or timed-out lookup keeps the last good set; an answer with
/// no addresses is a failure too, since a DNS blip must not empty the router.
#[derive(Clone)]
pub struct DnsResolver {
    hostname: String,
    port: u16,
    interval: Duration,
    timeout: Duration,
    lookup: DnsLookup,
}

impl fmt::Debug for DnsResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsResolver")
            .field("hostname", &self.hostname)
            .field("port", &self.port)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl DnsResolver {
    /// Resolve `hostname` with the system resolver every `interval`.
    pub fn new(
        hostname: impl Into<String>,
        port: u16,
        interval: Duration,
        timeout: Duration,
    ) -> Self {
        Self {
            hostname: hostname.into(),
            port,
            interval,
            timeout,
            lookup: Arc::new(|name: String| {
                Box::pin(async move {
                    let addrs = tokio::net::lookup_host((name.as_str(), 0)).await?;
                    Ok(addrs.map(|a| a.ip()).collect())
                })
            }),
        }
    }

    /// Use `lookup` instead of the system resolver.
    pub fn with_lookup(mut self, lookup: DnsLookup) -> Self {
        self.lookup = lookup;
        self
    }
}

impl Resolver for DnsResolver {
    fn kind(&self) -> &'static str {
        "dns"
    }

    fn run(self: Arc<Self>, updates: ResolverUpdates) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut tick = tokio::time::interval(self.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match tokio::time::timeout(self.timeout, (self.lookup)(self.hostname.clone())).await
                {
                    Err(_) => updates.failed("timed out"),
                    Ok(Err(e)) => updates.failed(&e.to_string()),
                    Ok(Ok(ips)) if ips.is_empty() => updates.failed("no addresses"),
                    Ok(Ok(ips)) => updates.publish(ips.into_iter().map(|ip| match ip {
                        IpAddr::V4(v4) => format!("{v4}:{}", self.port),
                        IpAddr::V6(v6) => format!("[{v6}]:{}", self.port),
                    })),
                }
            }
        })
    }
}

//! The OTLP exporter: gRPC or HTTP (protobuf or JSON), gzip, headers, per-attempt timeout,
//! retry with exponential backoff and jitter, and a bounded sending queue.
//!
//! # Failure handling
//! - **Retryable** answers are retried with exponential backoff and jitter until
//!   `retry.max_elapsed`: gRPC `UNAVAILABLE`, `CANCELLED`, `DEADLINE_EXCEEDED`, `ABORTED`,
//!   `OUT_OF_RANGE`, `DATA_LOSS`, and `RESOURCE_EXHAUSTED` when the server sent `RetryInfo`;
//!   HTTP 429, 502, 503, 504; connection errors and timeouts. A server's `RetryInfo` or
//!   `Retry-After` lengthens the computed wait (the longer of the two, at most `max_interval`)
//!   (a huge value cannot stall or overflow a worker; `0` cannot make it spin).
//! - **Permanent** answers are not retried: the items are counted in
//!   `otelcol_exporter_send_failed_*` and dropped.
//! - A **partial success** counts the items the server rejected as send-failed, the rest as
//!   sent.
//! - With the sending queue **off**, `consume` sends and answers for it: a retryable
//!   failure it gives up on (retries off or exhausted) goes back to the caller as a
//!   refusal, with the batch, so the caller (a receiver, a router, the tail sampler's
//!   hand-off) can push back or send it elsewhere; permanent failures are counted and
//!   rejected as above.
//! - With the **sending queue** on (the default), `consume` only enqueues: the queue's
//!   workers send. When it is full it refuses (back-pressure to the receiver) or blocks,
//!   as configured; refusals count in `otelcol_exporter_enqueue_failed_*`. On shutdown the
//!   queue drains until the deadline; what cannot be sent by then is counted as dropped
//!   with reason `shutdown_deadline`.

mod config;
mod queue;

pub use queue::EncodedQueue;

pub(crate) use config::{OtlpExporterYaml, QueueYaml, RetryYaml, with_scheme};

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use otel_pipeline_core::otlp::{OtlpSignal, WireSignal};
use otel_pipeline_core::{
    Batch, BoxError, BuildError, ComponentContext, ComponentId, ComponentTelemetry, ConsumeError,
    Consumer, DropReason, Exporter, Lifecycle, Signal,
};
use parking_lot::Mutex;
use tokio::time::Instant;
use tonic_types::StatusExt;

/// Wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// OTLP/gRPC (default).
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies.
    HttpJson,
    /// Zipkin v2 JSON over HTTP (the `zipkin` exporter's default format): traces only.
    /// The endpoint is the full URL (`http://zipkin:9411/api/v2/spans`); a bare host gets
    /// `/api/v2/spans`.
    ZipkinJson,
    /// Zipkin v2 protobuf over HTTP (`format: proto`): traces only.
    ZipkinProto,
    /// Jaeger's gRPC `api_v2` `PostSpans` (the `jaeger` exporter): traces only.
    JaegerGrpc,
}

impl Protocol {
    /// A trace format other than OTLP: requests are queued as OTLP and translated when
    /// sent (see `foreign`), so retries, hand-back and re-routing work as for OTLP.
    fn is_foreign(self) -> bool {
        matches!(
            self,
            Self::ZipkinJson | Self::ZipkinProto | Self::JaegerGrpc
        )
    }
}

/// Request compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// None.
    None,
    /// gzip (default, as the Collector's).
    #[default]
    Gzip,
    /// zstd (level 1: about gzip's ratio on OTLP for a fraction of its CPU).
    Zstd,
}

/// Retry settings (defaults as the Collector's `retry_on_failure`).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Retry at all (default true).
    pub enabled: bool,
    /// First wait (default 5 s).
    pub initial_interval: Duration,
    /// Longest wait (default 30 s).
    pub max_interval: Duration,
    /// Give up after this long since the first attempt (default 300 s).
    pub max_elapsed: Duration,
    /// Each wait is multiplied by this (default 1.5).
    pub multiplier: f64,
    /// Each wait varies randomly by up to this fraction either way (default 0.5).
    pub randomization: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(300),
            multiplier: 1.5,
            randomization: 0.5,
        }
    }
}

/// What a shutdown give-up says when a persistent queue keeps the request on disk for
/// the next start.
const KEPT_ON_DISK: &str = "kept on disk for the next start";

/// The sending queue's default byte bound: 64 MiB of encoded requests.
pub const DEFAULT_QUEUE_BYTES: usize = 64 << 20;

/// Sending-queue settings (the Collector's `sending_queue`).
#[derive(Debug, Clone, PartialEq)]
pub struct SendingQueueConfig {
    /// Use a queue (default true). Off, `consume` sends and retries inline.
    pub enabled: bool,
    /// Concurrent senders (default 10).
    pub num_consumers: usize,
    /// Most items queued (default 100 000).
    pub max_items: usize,
    /// Most requests queued, however many items each holds (`sending_queue.queue_size`
    /// under the Collector's default `sizer: requests`); `None` (the default): bounded by
    /// items and bytes only.
    pub max_requests: Option<usize>,
    /// Most bytes queued (default 64 MiB: memory stays bounded when the backend is slower
    /// than intake, whatever the batches' sizes; `None` bounds by items only). The queue
    /// holds each request as it will be sent (protobuf, or JSON; compressed for HTTP), so
    /// this is the memory it takes. Past it the queue refuses, and the refusal reaches the
    /// client as back-pressure.
    pub max_bytes: Option<usize>,
    /// When full, wait for room instead of refusing (default false: refuse).
    pub block_on_overflow: bool,
    /// Keep every queued request on disk too (`sending_queue.storage`, a `file_storage`
    /// extension): a request is written (and synced as the extension's `fsync` says)
    /// before `consume` answers, removed once the backend took it or it failed for good,
    /// and sent after a restart if it is still there (docs/reliability.md). Requests past
    /// `max_bytes` in memory are held on disk only, up to the storage's own `max_bytes`.
    pub storage: Option<QueueStorage>,
}

/// Where a persistent sending queue keeps its requests.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueStorage {
    /// The `file_storage` extension's settings.
    pub storage: otel_pipeline_core::storage::FileStorageConfig,
    /// The queue's own subdirectory in it: stable across restarts and unique per exporter
    /// and signal (the collector uses `exporter_<type>_<name>_<signal>`).
    pub owner: String,
}

impl Default for SendingQueueConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            num_consumers: 10,
            max_items: 100_000,
            max_requests: None,
            max_bytes: Some(DEFAULT_QUEUE_BYTES),
            block_on_overflow: false,
            storage: None,
        }
    }
}

/// Settings of the OTLP exporter. Its `Debug` output never shows header values, which
/// often are credentials.
///
/// ```
/// use otel_exporters::otlp::OtlpExporterConfig;
/// let c = OtlpExporterConfig {
///     headers: vec![("authorization".into(), "Bearer s3cr3t".into())],
///     ..OtlpExporterConfig::default()
/// };
/// assert!(!format!("{c:?}").contains("s3cr3t"));
/// ```
#[derive(Clone, PartialEq)]
pub struct OtlpExporterConfig {
    /// `http://host:port`. For HTTP, the signal path (`/v1/traces`) is appended unless the
    /// endpoint already has a path. Default `http://localhost:4317`.
    pub endpoint: String,
    /// Wire protocol (default gRPC).
    pub protocol: Protocol,
    /// Compression (default gzip).
    pub compression: Compression,
    /// Extra headers / metadata on every request (e.g. an API key).
    pub headers: Vec<(String, String)>,
    /// Per-attempt timeout (default 10 s).
    pub timeout: Duration,
    /// Retry settings.
    pub retry: RetryConfig,
    /// Queue settings.
    pub queue: SendingQueueConfig,
    /// TLS for `https://` endpoints (needs the `tls` feature): the system's roots, or only
    /// the CA in `ca_file` when given.
    pub tls: ClientTls,
    /// Zipkin and Jaeger: the service name of a resource that has none (the Zipkin
    /// exporter's `default_service_name`). Default `OTLPResourceNoServiceName`, as the
    /// Collector names it.
    pub default_service_name: Option<String>,
    /// Headers set per request from the client that sent its data (the
    /// `headers_setter` extension): a tenant id from a request header the receiver kept,
    /// for example. Applied when a batch is queued, so each request carries its own.
    pub header_rules: Vec<otel_pipeline_core::collector::auth::HeaderRule>,
}

/// TLS settings of the exporter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientTls {
    /// Trust only this CA (PEM) instead of the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// Mutual TLS: the client certificate chain (PEM) to present. Needs `key_file`.
    pub cert_file: Option<std::path::PathBuf>,
    /// Mutual TLS: the client certificate's private key (PEM).
    pub key_file: Option<std::path::PathBuf>,
    /// Accept any server certificate, unchecked (the Collector's `insecure_skip_verify`):
    /// the connection is encrypted but anyone on the path can read it. For tests and
    /// self-signed backends only; a warning is logged when the exporter is built.
    pub insecure_skip_verify: bool,
    /// The name the server's certificate is checked against, instead of the endpoint's
    /// host (the Collector's `server_name_override`).
    pub server_name_override: Option<String>,
    /// The lowest TLS version offered. Default 1.2 (rustls has no 1.0 or 1.1).
    pub min_version: Option<TlsVersion>,
    /// The highest TLS version offered. Default 1.3.
    pub max_version: Option<TlsVersion>,
}

impl ClientTls {
    /// Whether a setting asks for more than tonic's own TLS offers, so gRPC goes through
    /// our rustls connector.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    fn beyond_tonic(&self) -> bool {
        self.insecure_skip_verify
            || self.server_name_override.is_some()
            || self.min_version.is_some()
            || self.max_version.is_some()
    }
}

pub use otel_pipeline_core::config::TlsVersion;

impl std::fmt::Debug for OtlpExporterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, _)| (k.as_str(), "***"))
            .collect();
        f.debug_struct("OtlpExporterConfig")
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field("compression", &self.compression)
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("queue", &self.queue)
            .field("tls", &self.tls)
            .field("default_service_name", &self.default_service_name)
            .field(
                "header_rules",
                &self.header_rules.iter().map(|h| &h.key).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A client certificate chain and key, as PEM.
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
struct ClientIdentity {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// The HTTP connector: TLS-capable when built with `tls`.
#[cfg(feature = "tls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector;

impl Default for OtlpExporterConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://localhost:4317".into(),
            protocol: Protocol::Grpc,
            compression: Compression::Gzip,
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            retry: RetryConfig::default(),
            queue: SendingQueueConfig::default(),
            tls: ClientTls::default(),
            default_service_name: None,
            header_rules: Vec::new(),
        }
    }
}

/// The OTLP exporter for signal `S`.
///
/// ```
/// use otel_pipeline_core::{Pipeline, Traces, DirectReceiver};
/// use otel_exporters::otlp::{OtlpExporter, OtlpExporterConfig, Protocol};
/// let (receiver, _sender) = DirectReceiver::new();
/// let exporter = OtlpExporter::<Traces>::new(OtlpExporterConfig {
///     endpoint: "http://gateway:4318".into(),
///     protocol: Protocol::HttpProtobuf,
///     ..Default::default()
/// });
/// assert!(Pipeline::traces().receiver(receiver).exporter(exporter).build().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct OtlpExporter<S: Signal> {
    id: ComponentId,
    config: OtlpExporterConfig,
    pub(crate) hooks: SenderHooks<S>,
}

/// How one attempt ended, as a [`SenderHooks::observe`] hook sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttemptOutcome {
    /// The endpoint took the request (possibly with a partial rejection).
    Sent,
    /// It failed in a way worth retrying (connection refused, timeout, 503, ...).
    Retryable,
    /// It answered that the data is bad; the endpoint itself is alive.
    Permanent,
}

type ObserveFn = dyn Fn(AttemptOutcome, Duration) + Send + Sync;
type HandBackFn<S> = dyn Fn(Batch<S>) -> otel_pipeline_core::BoxFuture<'static, ()> + Send + Sync;

/// Hooks through which a component that owns OTLP exporters (the trace router) follows
/// every attempt and takes back the batches an endpoint will not deliver.
pub(crate) struct SenderHooks<S: Signal> {
    /// Called after every attempt with its outcome and how long it took.
    pub(crate) observe: Option<Arc<ObserveFn>>,
    /// Takes batches this endpoint gives up on for a retryable reason (retries
    /// exhausted, or the endpoint withdrawn), instead of counting them failed.
    pub(crate) hand_back: Option<Arc<HandBackFn<S>>>,
    /// Becomes true when the owner withdraws the endpoint: what is queued or being
    /// retried goes to `hand_back` at once, and nothing more is sent.
    pub(crate) withdrawn: Option<tokio::sync::watch::Receiver<bool>>,
}

impl<S: Signal> Default for SenderHooks<S> {
    fn default() -> Self {
        Self {
            observe: None,
            hand_back: None,
            withdrawn: None,
        }
    }
}

impl<S: Signal> Clone for SenderHooks<S> {
    fn clone(&self) -> Self {
        Self {
            observe: self.observe.clone(),
            hand_back: self.hand_back.clone(),
            withdrawn: self.withdrawn.clone(),
        }
    }
}

impl<S: Signal> std::fmt::Debug for SenderHooks<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderHooks")
            .field("observe", &self.observe.is_some())
            .field("hand_back", &self.hand_back.is_some())
            .field("withdrawn", &self.withdrawn.is_some())
            .finish()
    }
}

impl<S: Signal> OtlpExporter<S> {
    /// An exporter with id `otlp`.
    pub fn new(config: OtlpExporterConfig) -> Self {
        Self {
            id: ComponentId::new("otlp"),
            config,
            hooks: SenderHooks::default(),
        }
    }

    /// Use another id (`otlp/backend`).
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }
}

enum Transport {
    Grpc(tonic::transport::Channel),
    Http {
        client: Box<Client<Connector, Full<Bytes>>>,
        uri: http::Uri,
    },
}

/// Sends one batch, retrying as configured. The terminal stage behind the queue.
pub struct OtlpSender<S: Signal> {
    transport: Transport,
    hooks: SenderHooks<S>,
    config: OtlpExporterConfig,
    headers: http::HeaderMap,
    telemetry: Arc<ComponentTelemetry>,
    /// Set when shutdown begins, so retries stop at the deadline.
    deadline: Arc<Mutex<Option<Instant>>>,
    jitter: AtomicU64,
    /// Retries and failures are logged at most once per [`LOG_EVERY`] each.
    retry_log: RateLimited,
    failure_log: RateLimited,
    _signal: PhantomData<fn() -> S>,
}

/// How often an exporter logs its retries, and its failures, at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A log line allowed at most once per [`LOG_EVERY`], counting what it held back.
#[derive(Debug, Default)]
struct RateLimited {
    /// When it last logged, in ms after `epoch` (0: never).
    last: AtomicU64,
    /// Events not logged since.
    held_back: AtomicU64,
}

impl RateLimited {
    /// `Some(events held back since the last line)` when a line may be logged now.
    fn allow(&self, epoch: Instant) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let now = (epoch.elapsed().as_millis() as u64).max(1);
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < LOG_EVERY.as_millis() as u64 {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self
            .last
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.held_back.swap(0, Ordering::Relaxed))
    }
}

/// When the process's exporters started counting time for their log limits.
fn log_epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(std::time::Instant::now);
    Instant::from_std(epoch)
}

impl<S: Signal> std::fmt::Debug for OtlpSender<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpSender")
            .field("endpoint", &self.config.endpoint)
            .field("protocol", &self.config.protocol)
            .finish()
    }
}

/// The consumer the exporter builds: the queue in front of the sender, or the sender.
#[derive(Debug)]
pub enum OtlpExporterConsumer<S: Signal> {
    /// Sending through the queue (of encoded requests).
    Queued(EncodedQueue<S>),
    /// Sending inline.
    Direct(Box<OtlpSender<S>>),
}

impl<S: WireSignal> Consumer<S> for OtlpExporterConsumer<S> {
    async fn consume(&self, batch: Batch<S>) -> Result<(), ConsumeError<S>> {
        match self {
            Self::Queued(q) => q.consume(batch).await,
            Self::Direct(s) => s.consume(batch).await,
        }
    }
}

struct DeadlineLifecycle(Arc<Mutex<Option<Instant>>>);

impl Lifecycle for DeadlineLifecycle {
    fn shutdown(
        &self,
        deadline: Instant,
    ) -> otel_pipeline_core::BoxFuture<'_, Result<(), BoxError>> {
        *self.0.lock() = Some(deadline);
        Box::pin(async { Ok(()) })
    }
}

impl<S: WireSignal> Exporter<S> for OtlpExporter<S> {
    type Consumer = OtlpExporterConsumer<S>;

    fn id(&self) -> ComponentId {
        self.id.clone()
    }

    fn build(self, ctx: &mut ComponentContext<'_>) -> Result<Self::Consumer, BuildError> {
        let config = self.config;
        let endpoint: http::Uri = config.endpoint.parse().map_err(|e| {
            ctx.invalid(
                "endpoint",
                format!("`{}` is not a URI: {e}", config.endpoint),
            )
        })?;
        let https = match endpoint.scheme_str() {
            Some("http") => false,
            Some("https") if cfg!(feature = "tls") => true,
            Some("https") => {
                return Err(ctx.invalid(
                    "endpoint",
                    "https:// needs otel-exporters built with its `tls` feature",
                ));
            }
            _ => return Err(ctx.invalid("endpoint", "use http:// or https://")),
        };
        let read = |key: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| ctx.invalid(key, format!("{}: {e}", path.display())))
        };
        let ca_pem = match &config.tls.ca_file {
            Some(path) => Some(read("tls.ca_file", path)?),
            None => None,
        };
        let identity = match (&config.tls.cert_file, &config.tls.key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(ClientIdentity {
                cert: read("tls.cert_file", cert)?,
                key: read("tls.key_file", key)?,
            }),
            _ => {
                return Err(ctx.invalid(
                    "tls",
                    "a client certificate needs both cert_file and key_file",
                ));
            }
        };
        if config.timeout.is_zero() {
            return Err(ctx.invalid("timeout", "must be positive"));
        }
        if config.protocol.is_foreign() && S::KIND != otel_pipeline_core::SignalKind::Traces {
            return Err(ctx.invalid(
                "protocol",
                format!("{:?} carries traces only, not {}", config.protocol, S::NAME),
            ));
        }
        let r = &config.retry;
        if r.enabled
            && (r.initial_interval.is_zero()
                || r.multiplier < 1.0
                || !(0.0..=1.0).contains(&r.randomization))
        {
            return Err(ctx.invalid(
                "retry_on_failure",
                "initial_interval must be positive, multiplier >= 1, randomization_factor in [0, 1]",
            ));
        }
        let mut headers = http::HeaderMap::new();
        for (k, v) in &config.headers {
            let name = http::header::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|e| ctx.invalid(format!("headers.{k}"), e.to_string()))?;
            let value = http::HeaderValue::from_str(v)
                .map_err(|e| ctx.invalid(format!("headers.{k}"), e.to_string()))?;
            headers.insert(name, value);
        }
        let transport = match config.protocol {
            Protocol::Grpc | Protocol::JaegerGrpc => {
                let endpoint = tonic::transport::Endpoint::from_shared(config.endpoint.clone())
                    .map_err(|e| ctx.invalid("endpoint", e.to_string()))?
                    .timeout(config.timeout)
                    .connect_timeout(config.timeout);
                if https && config.tls.insecure_skip_verify {
                    tracing::warn!(
                        endpoint = %config.endpoint,
                        "tls.insecure_skip_verify: the server's certificate is not checked"
                    );
                }
                if https && config.tls.beyond_tonic() {
                    // tonic refuses an https URI without its own TLS: it sees plain http,
                    // and the connector speaks TLS whatever the scheme.
                    let plain = config.endpoint.replacen("https://", "http://", 1);
                    let endpoint = tonic::transport::Endpoint::from_shared(plain)
                        .map_err(|e| ctx.invalid("endpoint", e.to_string()))?
                        .timeout(config.timeout)
                        .connect_timeout(config.timeout);
                    let connector = grpc_connector(
                        ca_pem.as_deref(),
                        identity.as_ref(),
                        &config.tls,
                        config.timeout,
                    )
                    .map_err(|e| ctx.invalid("tls", e))?;
                    Transport::Grpc(endpoint.connect_with_connector_lazy(connector))
                } else {
                    let endpoint = if https {
                        grpc_tls(endpoint, ca_pem.as_deref(), identity.as_ref())
                            .map_err(|e| ctx.invalid("tls", e))?
                    } else {
                        endpoint
                    };
                    Transport::Grpc(endpoint.connect_lazy())
                }
            }
            Protocol::HttpProtobuf
            | Protocol::HttpJson
            | Protocol::ZipkinJson
            | Protocol::ZipkinProto => {
                let path = if config.protocol.is_foreign() {
                    "/api/v2/spans"
                } else {
                    S::HTTP_PATH
                };
                let uri = if endpoint.path() == "/" || endpoint.path().is_empty() {
                    format!("{}{path}", config.endpoint.trim_end_matches('/'))
                        .parse()
                        .map_err(|e| ctx.invalid("endpoint", format!("{e}")))?
                } else {
                    endpoint
                };
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(config.timeout));
                connector.enforce_http(false);
                if https && config.tls.insecure_skip_verify {
                    tracing::warn!(
                        endpoint = %config.endpoint,
                        "tls.insecure_skip_verify: the server's certificate is not checked"
                    );
                }
                let connector =
                    http_connector(connector, ca_pem.as_deref(), identity.as_ref(), &config.tls)
                        .map_err(|e| ctx.invalid("tls", e))?;
                Transport::Http {
                    client: Box::new(Client::builder(TokioExecutor::new()).build(connector)),
                    uri,
                }
            }
        };
        let deadline = Arc::new(Mutex::new(None));
        let sender = OtlpSender::<S> {
            transport,
            hooks: self.hooks,
            headers,
            telemetry: ctx.telemetry(),
            deadline: Arc::clone(&deadline),
            // Seeded from the process's random hash keys, so exporters (and processes) do
            // not retry in lockstep.
            jitter: AtomicU64::new(
                std::hash::BuildHasher::hash_one(
                    &std::collections::hash_map::RandomState::new(),
                    0u64,
                ) | 1,
            ),
            config: config.clone(),
            retry_log: RateLimited::default(),
            failure_log: RateLimited::default(),
            _signal: PhantomData,
        };
        // Lifecycles shut down in reverse order of registration: registering the deadline
        // after the queue makes it run first, so the queue's senders know when to stop
        // retrying while they drain.
        let consumer = if config.queue.enabled {
            let q = &config.queue;
            if q.max_items == 0 || q.max_items > tokio::sync::Semaphore::MAX_PERMITS {
                return Err(ctx.invalid("sending_queue.queue_size", "must be at least 1"));
            }
            if q.max_requests
                .is_some_and(|r| r == 0 || r > tokio::sync::Semaphore::MAX_PERMITS)
            {
                return Err(ctx.invalid("sending_queue.queue_size", "must be at least 1"));
            }
            if q.max_bytes
                .is_some_and(|b| b == 0 || b > tokio::sync::Semaphore::MAX_PERMITS)
            {
                return Err(ctx.invalid("sending_queue.max_bytes", "must be between 1 and 2^61"));
            }
            let (queue, workers) = EncodedQueue::new(sender, q.clone(), ctx.telemetry());
            ctx.register_lifecycle(workers);
            OtlpExporterConsumer::Queued(queue)
        } else {
            OtlpExporterConsumer::Direct(Box::new(sender))
        };
        ctx.register_lifecycle(Arc::new(DeadlineLifecycle(deadline)));
        Ok(consumer)
    }
}

#[cfg(feature = "tls")]
fn grpc_tls(
    endpoint: tonic::transport::Endpoint,
    ca_pem: Option<&[u8]>,
    identity: Option<&ClientIdentity>,
) -> Result<tonic::transport::Endpoint, String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let tls = match ca_pem {
        Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
        None => ClientTlsConfig::new().with_native_roots(),
    };
    let tls = match identity {
        Some(id) => tls.identity(Identity::from_pem(&id.cert, &id.key)),
        None => tls,
    };
    endpoint.tls_config(tls).map_err(|e| e.to_string())
}

#[cfg(not(feature = "tls"))]
fn grpc_tls(
    endpoint: tonic::transport::Endpoint,
    _ca_pem: Option<&[u8]>,
    _identity: Option<&ClientIdentity>,
) -> Result<tonic::transport::Endpoint, String> {
    Ok(endpoint)
}

/// The rustls client settings: roots (the system's, or the CA file), the client
/// certificate, versions, and the unchecked verifier when `insecure_skip_verify`.
#[cfg(feature = "tls")]
fn rustls_config(
    ca_pem: Option<&[u8]>,
    identity: Option<&ClientIdentity>,
    tls: &ClientTls,
) -> Result<tokio_rustls::rustls::ClientConfig, String> {
    use hyper_rustls::ConfigBuilderExt;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let (min, max) = (
        tls.min_version.unwrap_or(TlsVersion::V1_2),
        tls.max_version.unwrap_or(TlsVersion::V1_3),
    );
    if min > max {
        return Err(format!("min_version {min:?} is above max_version {max:?}"));
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::V1_2, &rustls::version::TLS12),
        (TlsVersion::V1_3, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (min..=max).contains(v))
    .map(|(_, p)| p)
    .collect();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| e.to_string())?;
    let builder = match ca_pem {
        None => builder
            .with_native_roots()
            .map_err(|e| format!("system roots: {e}"))?,
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots
                    .add(cert.map_err(|e| format!("CA file: {e}"))?)
                    .map_err(|e| format!("CA file: {e}"))?;
            }
            builder.with_root_certificates(roots)
        }
    };
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let certs = CertificateDer::pem_slice_iter(&id.cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client certificate: {e}"))?;
            let key =
                PrivateKeyDer::from_pem_slice(&id.key).map_err(|e| format!("client key: {e}"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client certificate and key do not fit: {e}"))?
        }
    };
    if tls.insecure_skip_verify {
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(unchecked::Unchecked(provider)));
    }
    Ok(config)
}

/// `insecure_skip_verify`: any certificate is accepted; the handshake's signatures are
/// still checked, so the peer holds the key of the certificate it sent.
#[cfg(feature = "tls")]
mod unchecked {
    use std::sync::Arc;

    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    use tokio_rustls::rustls::client::danger::{
        HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
    };
    use tokio_rustls::rustls::crypto::{
        CryptoProvider, verify_tls12_signature, verify_tls13_signature,
    };
    use tokio_rustls::rustls::{DigitallySignedStruct, Error, SignatureScheme};

    #[derive(Debug)]
    pub(super) struct Unchecked(pub(super) Arc<CryptoProvider>);

    impl ServerCertVerifier for Unchecked {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

/// `always_tls`: speak TLS whatever the URI's scheme says (the gRPC path, which hands
/// the connector an `http://` URI).
#[cfg(feature = "tls")]
fn https_builder(
    config: tokio_rustls::rustls::ClientConfig,
    tls: &ClientTls,
    always_tls: bool,
) -> Result<hyper_rustls::HttpsConnectorBuilder<hyper_rustls::builderstates::WantsProtocols1>, String>
{
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config);
    let builder = if always_tls {
        builder.https_only()
    } else {
        builder.https_or_http()
    };
    Ok(match &tls.server_name_override {
        Some(name) => {
            let name = rustls_pki_types::ServerName::try_from(name.clone())
                .map_err(|e| format!("server_name_override `{name}`: {e}"))?;
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => builder,
    })
}

#[cfg(feature = "tls")]
fn http_connector(
    http: HttpConnector,
    ca_pem: Option<&[u8]>,
    identity: Option<&ClientIdentity>,
    tls: &ClientTls,
) -> Result<Connector, String> {
    let config = rustls_config(ca_pem, identity, tls)?;
    Ok(https_builder(config, tls, false)?
        .enable_http1()
        .wrap_connector(http))
}

/// gRPC over our rustls settings, for what tonic's TLS does not offer.
#[cfg(feature = "tls")]
fn grpc_connector(
    ca_pem: Option<&[u8]>,
    identity: Option<&ClientIdentity>,
    tls: &ClientTls,
    timeout: Duration,
) -> Result<AlwaysTls, String> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeout));
    http.enforce_http(false);
    // hyper-rustls offers `h2` by ALPN itself.
    let config = rustls_config(ca_pem, identity, tls)?;
    Ok(AlwaysTls(
        https_builder(config, tls, true)?
            .enable_http2()
            .wrap_connector(http),
    ))
}

/// Hands the TLS connector `https://` URIs: tonic is given `http://` (it refuses an
/// https URI without TLS of its own), the connection is TLS all the same.
#[cfg(feature = "tls")]
#[derive(Clone)]
struct AlwaysTls(Connector);

#[cfg(feature = "tls")]
impl tower_service::Service<http::Uri> for AlwaysTls {
    type Response = <Connector as tower_service::Service<http::Uri>>::Response;
    type Error = <Connector as tower_service::Service<http::Uri>>::Error;
    type Future = <Connector as tower_service::Service<http::Uri>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let mut parts = uri.clone().into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTPS);
        // A URI that no longer builds goes as it was, and fails as plain http would.
        self.0.call(http::Uri::from_parts(parts).unwrap_or(uri))
    }
}

#[cfg(not(feature = "tls"))]
fn http_connector(
    http: HttpConnector,
    _ca_pem: Option<&[u8]>,
    _identity: Option<&ClientIdentity>,
    _tls: &ClientTls,
) -> Result<Connector, String> {
    Ok(http)
}

#[cfg(not(feature = "tls"))]
fn grpc_connector(
    _ca_pem: Option<&[u8]>,
    _identity: Option<&ClientIdentity>,
    _tls: &ClientTls,
    _timeout: Duration,
) -> Result<HttpConnector, String> {
    Err("TLS needs otel-exporters built with its `tls` feature".into())
}

/// A unary gRPC request for `path` carrying `message` (already compressed as `compression`
/// says) in one length-prefixed frame.
fn grpc_request(
    path: &'static str,
    message: &Bytes,
    compression: Compression,
    timeout: Duration,
    headers: &http::HeaderMap,
) -> Result<http::Request<tonic::body::Body>, String> {
    let len = u32::try_from(message.len())
        .map_err(|_| format!("a {} byte message does not fit a gRPC frame", message.len()))?;
    let mut frame = bytes::BytesMut::with_capacity(5 + message.len());
    frame.extend_from_slice(&[u8::from(compression != Compression::None)]);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(message);
    let mut req = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header("grpc-accept-encoding", "identity")
        .header("grpc-timeout", grpc_timeout(timeout));
    match compression {
        Compression::None => {}
        Compression::Gzip => req = req.header("grpc-encoding", "gzip"),
        Compression::Zstd => req = req.header("grpc-encoding", "zstd"),
    }
    let mut req = req
        .body(tonic::body::Body::new(Full::new(frame.freeze())))
        .map_err(|e| format!("building the request: {e}"))?;
    req.headers_mut().extend(headers.clone());
    Ok(req)
}

/// Per-request headers over the exporter's own: set, or (an empty value, from a
/// `delete` rule) removed.
fn apply_extra(headers: &mut http::HeaderMap, extra: Option<&http::HeaderMap>) {
    for (k, v) in extra.into_iter().flatten() {
        if v.is_empty() {
            headers.remove(k);
        } else {
            headers.insert(k.clone(), v.clone());
        }
    }
}

/// `grpc-timeout`: at most eight digits and a unit, as the gRPC spec writes it.
fn grpc_timeout(timeout: Duration) -> String {
    let ms = timeout.as_millis().max(1);
    if ms < 100_000_000 {
        format!("{ms}m")
    } else {
        format!("{}S", timeout.as_secs().min(99_999_999))
    }
}

/// The response message of a unary call: the first frame of `data` (uncompressed: the
/// request accepts only `identity`).
fn grpc_message<R: prost::Message + Default>(data: &[u8]) -> Result<R, String> {
    if data.is_empty() {
        return Ok(R::default());
    }
    let (head, rest) = data.split_at_checked(5).ok_or("a cut gRPC frame")?;
    if head[0] != 0 {
        return Err("a compressed response, not asked for".into());
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let message = rest.get(..len).ok_or("a cut gRPC frame")?;
    R::decode(message).map_err(|e| format!("decoding the response: {e}"))
}

/// How one attempt went.
enum Attempt {
    Sent {
        rejected: usize,
        message: String,
    },
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
    },
    Permanent {
        reason: String,
    },
}

/// The gRPC code for an HTTP status other than 200, as the gRPC spec maps them.
fn http_to_grpc_code(status: http::StatusCode) -> tonic::Code {
    match status.as_u16() {
        400 => tonic::Code::Internal,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::Unimplemented,
        429 | 502..=504 => tonic::Code::Unavailable,
        _ => tonic::Code::Unknown,
    }
}

impl<S: WireSignal> OtlpSender<S> {
    /// The request body, made once per batch and reused by every attempt: the encoded
    /// (protobuf, or JSON for HTTP) and compressed message.
    /// A batch that still holds the request's bytes as received is sent as it is, not
    /// decoded and encoded again (ADR 005).
    fn encode(&self, batch: &Batch<S>) -> Result<Bytes, String> {
        let raw: Bytes = match (self.config.protocol, batch.encoded()) {
            (Protocol::HttpJson, _) => serde_json::to_vec(batch.data())
                .map_err(|e| format!("encoding JSON: {e}"))?
                .into(),
            (_, Some(bytes)) => bytes.clone(),
            (_, None) => prost::Message::encode_to_vec(batch.data()).into(),
        };
        // A foreign format is queued as OTLP and translated (then compressed) when sent.
        if self.config.protocol.is_foreign() {
            return Ok(raw);
        }
        self.compress(raw)
    }

    /// `raw` compressed as configured.
    fn compress(&self, raw: Bytes) -> Result<Bytes, String> {
        // Compressed once, for gRPC as for HTTP: retries resend these bytes.
        Ok(match self.config.compression {
            Compression::None => raw,
            Compression::Gzip => {
                use std::io::Write;
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(raw.len() / 4),
                    flate2::Compression::fast(),
                );
                enc.write_all(&raw).map_err(|e| format!("gzip: {e}"))?;
                enc.finish().map_err(|e| format!("gzip: {e}"))?.into()
            }
            Compression::Zstd => zstd::bulk::compress(&raw, 1)
                .map_err(|e| format!("zstd: {e}"))?
                .into(),
        })
    }

    async fn attempt(&self, body: &Bytes, extra: Option<&http::HeaderMap>) -> Attempt {
        let (path, content_type) = match self.config.protocol {
            Protocol::Grpc | Protocol::HttpProtobuf => (S::GRPC_PATH, "application/x-protobuf"),
            Protocol::HttpJson => (S::GRPC_PATH, "application/json"),
            Protocol::ZipkinJson => ("", "application/json"),
            Protocol::ZipkinProto => ("", "application/x-protobuf"),
            Protocol::JaegerGrpc => (otel_pipeline_core::foreign::jaeger::POST_SPANS_PATH, ""),
        };
        let translated;
        let body = if self.config.protocol.is_foreign() {
            translated = match self.translate(body) {
                Ok(b) => b,
                Err(reason) => return Attempt::Permanent { reason },
            };
            &translated
        } else {
            body
        };
        match &self.transport {
            Transport::Grpc(channel) => self.attempt_grpc(channel.clone(), path, body, extra).await,
            Transport::Http { client, uri } => {
                self.attempt_http(client, uri, content_type, body, extra)
                    .await
            }
        }
    }

    /// A queued OTLP request in the configured foreign format, compressed.
    fn translate(&self, body: &Bytes) -> Result<Bytes, String> {
        let batch = Batch::<S>::from_encoded(body.clone()).map_err(|e| format!("protobuf: {e}"))?;
        let data: &dyn std::any::Any = batch.data();
        let Some(req) = data.downcast_ref::<otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceRequest>() else {
            return Err(format!("{:?} carries traces only", self.config.protocol));
        };
        let unnamed = self.config.default_service_name.as_deref();
        let raw = match self.config.protocol {
            Protocol::ZipkinJson => crate::foreign::zipkin_json(req, unnamed),
            Protocol::ZipkinProto => crate::foreign::zipkin_proto(req, unnamed),
            _ => prost::Message::encode_to_vec(&crate::foreign::jaeger(req, unnamed)),
        };
        self.compress(raw.into())
    }

    /// One unary gRPC call over the channel, framed here: `body` is the message as the
    /// queue holds it (compressed once, when compression is on), so an attempt neither
    /// encodes nor compresses (tonic's client would compress again on every attempt).
    async fn attempt_grpc(
        &self,
        mut channel: tonic::transport::Channel,
        path: &'static str,
        body: &Bytes,
        extra: Option<&http::HeaderMap>,
    ) -> Attempt {
        use http_body_util::BodyExt;
        use tonic::client::GrpcService;
        // A backend that accepts the connection and never answers the HTTP/2 handshake
        // must not hold the worker: connecting is bounded by the attempt's timeout too.
        let ready = std::future::poll_fn(|cx| channel.poll_ready(cx));
        match tokio::time::timeout(self.config.timeout, ready).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Attempt::Retryable {
                    reason: format!("connecting: {e}"),
                    retry_after: None,
                };
            }
            Err(_) => {
                return Attempt::Retryable {
                    reason: "connecting: timed out".into(),
                    retry_after: None,
                };
            }
        }
        let mut request = match grpc_request(
            path,
            body,
            self.config.compression,
            self.config.timeout,
            &self.headers,
        ) {
            Ok(r) => r,
            Err(reason) => return Attempt::Permanent { reason },
        };
        apply_extra(request.headers_mut(), extra);
        let call = async {
            let response = channel
                .call(request)
                .await
                .map_err(|e| format!("sending: {e}"))?;
            let (parts, body) = response.into_parts();
            let collected = body
                .collect()
                .await
                .map_err(|e| format!("reading the response: {e}"))?;
            Ok::<_, String>((parts, collected))
        };
        let (parts, collected) = match tokio::time::timeout(self.config.timeout, call).await {
            Err(_) => {
                return Attempt::Retryable {
                    reason: "timed out".into(),
                    retry_after: None,
                };
            }
            Ok(Err(reason)) => {
                return Attempt::Retryable {
                    reason,
                    retry_after: None,
                };
            }
            Ok(Ok(r)) => r,
        };
        if parts.status != http::StatusCode::OK {
            return classify_grpc(&tonic::Status::new(
                http_to_grpc_code(parts.status),
                format!("HTTP status {}", parts.status),
            ));
        }
        // The status is in the trailers, or in the headers of a trailers-only response.
        let trailers = collected.trailers().cloned();
        let status = trailers
            .as_ref()
            .and_then(tonic::Status::from_header_map)
            .or_else(|| tonic::Status::from_header_map(&parts.headers));
        match status {
            Some(status) if status.code() != tonic::Code::Ok => classify_grpc(&status),
            None => classify_grpc(&tonic::Status::internal("the response has no grpc-status")),
            Some(_) => {
                let message = collected.to_bytes();
                match grpc_message::<S::Response>(&message) {
                    Ok(response) => sent_from::<S>(&response),
                    // The data was accepted; only the partial-success report is unreadable.
                    Err(_) => Attempt::Sent {
                        rejected: 0,
                        message: String::new(),
                    },
                }
            }
        }
    }

    async fn attempt_http(
        &self,
        client: &Client<Connector, Full<Bytes>>,
        uri: &http::Uri,
        content_type: &'static str,
        body: &Bytes,
        extra: Option<&http::HeaderMap>,
    ) -> Attempt {
        let mut req =
            http::Request::post(uri.clone()).header(http::header::CONTENT_TYPE, content_type);
        match self.config.compression {
            Compression::None => {}
            Compression::Gzip => req = req.header(http::header::CONTENT_ENCODING, "gzip"),
            Compression::Zstd => req = req.header(http::header::CONTENT_ENCODING, "zstd"),
        }
        let mut req = match req.body(Full::new(body.clone())) {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Permanent {
                    reason: format!("building the request: {e}"),
                };
            }
        };
        req.headers_mut().extend(self.headers.clone());
        apply_extra(req.headers_mut(), extra);
        let response = match tokio::time::timeout(self.config.timeout, client.request(req)).await {
            Err(_) => {
                return Attempt::Retryable {
                    reason: "timed out".into(),
                    retry_after: None,
                };
            }
            Ok(Err(e)) => {
                return Attempt::Retryable {
                    reason: format!("sending: {e}"),
                    retry_after: None,
                };
            }
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let is_json = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        let body =
            match tokio::time::timeout(self.config.timeout, response.into_body().collect()).await {
                Ok(Ok(b)) => b.to_bytes(),
                _ => Bytes::new(),
            };
        if status.is_success() {
            let parsed: Option<S::Response> = if body.is_empty() {
                Some(S::Response::default())
            } else if is_json {
                serde_json::from_slice(&body).ok()
            } else {
                prost::Message::decode(body).ok()
            };
            return match parsed {
                Some(r) => sent_from::<S>(&r),
                None => Attempt::Sent {
                    rejected: 0,
                    message: String::new(),
                },
            };
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        let reason = format!("HTTP {status}: {text}");
        match status.as_u16() {
            429 | 502 | 503 | 504 => Attempt::Retryable {
                reason,
                retry_after,
            },
            _ => Attempt::Permanent { reason },
        }
    }

    /// A random factor in `[1 - r, 1 + r]`.
    fn jitter(&self, r: f64) -> f64 {
        let mut x = self.jitter.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.jitter.store(x, Ordering::Relaxed);
        let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
        1.0 - r + 2.0 * r * unit
    }
}

fn sent_from<S: OtlpSignal>(response: &S::Response) -> Attempt {
    match S::rejected(response) {
        Some((n, msg)) if n > 0 => Attempt::Sent {
            rejected: n as usize,
            message: msg.to_string(),
        },
        _ => Attempt::Sent {
            rejected: 0,
            message: String::new(),
        },
    }
}

fn classify_grpc(status: &tonic::Status) -> Attempt {
    use tonic::Code;
    let reason = format!("gRPC {:?}: {}", status.code(), status.message());
    let retry_after = status.get_details_retry_info().and_then(|r| r.retry_delay);
    // A status the client made from a transport failure (a reset, a protocol error, a
    // backend that answered garbage) carries its cause; the backend never answered, so
    // the data was not judged: retry, as for a connection error.
    if std::error::Error::source(status).is_some() {
        return Attempt::Retryable {
            reason,
            retry_after: None,
        };
    }
    match status.code() {
        Code::Unavailable
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::DataLoss => Attempt::Retryable {
            reason,
            retry_after,
        },
        Code::ResourceExhausted if retry_after.is_some() => Attempt::Retryable {
            reason,
            retry_after,
        },
        _ => Attempt::Permanent { reason },
    }
}

impl<S: WireSignal> OtlpSender<S> {
    fn withdrawn(&self) -> bool {
        self.hooks.withdrawn.as_ref().is_some_and(|w| *w.borrow())
    }

    /// Wait `pause`, or less if the endpoint is withdrawn meanwhile.
    async fn pause(&self, pause: Duration) {
        match &self.hooks.withdrawn {
            None => tokio::time::sleep(pause).await,
            Some(w) => {
                let mut w = w.clone();
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = w.wait_for(|gone| *gone) => {}
                }
            }
        }
    }
}

impl<S: WireSignal> Consumer<S> for OtlpSender<S> {
    async fn consume(&self, batch: Batch<S>) -> Result<(), ConsumeError<S>> {
        let n = batch.item_count();
        // Encoded (and for HTTP compressed) once; retries resend the same bytes.
        let body = match self.encode(&batch) {
            Ok(b) => b,
            Err(reason) => {
                self.telemetry.add_send_failed(n);
                return Err(ConsumeError::rejected(n, reason));
            }
        };
        let extra = self.request_headers(batch.client.as_deref());
        drop(batch);
        self.send_direct(body, n, extra).await
    }
}

impl<S: WireSignal> OtlpSender<S> {
    /// The request in `body` (from [`Self::encode`]) decoded again, for an owner that
    /// takes it back (a trace router re-splitting a departing endpoint's batches).
    fn decode_body(&self, body: &Bytes) -> Result<Batch<S>, String> {
        use std::io::Read;
        let raw: Bytes = match (&self.transport, self.config.compression) {
            (_, Compression::None) => body.clone(),
            // Queued uncompressed, as OTLP.
            _ if self.config.protocol.is_foreign() => body.clone(),
            (_, Compression::Gzip) => {
                let mut inflated = Vec::new();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_end(&mut inflated)
                    .map_err(|e| format!("gzip: {e}"))?;
                inflated.into()
            }
            (_, Compression::Zstd) => zstd::stream::decode_all(&body[..])
                .map_err(|e| format!("zstd: {e}"))?
                .into(),
        };
        if self.config.protocol == Protocol::HttpJson {
            serde_json::from_slice(&raw)
                .map(Batch::new)
                .map_err(|e| format!("JSON: {e}"))
        } else {
            // Handed back as bytes: the owner re-splits them without decoding.
            Batch::from_encoded(raw).map_err(|e| format!("protobuf: {e}"))
        }
    }

    /// Give an encoded request back to the owner, decoded; false if there is no owner to
    /// take it (or it no longer decodes, counted as failed).
    async fn hand_back(&self, body: &Bytes, n: usize) -> bool {
        let Some(hand_back) = &self.hooks.hand_back else {
            return false;
        };
        match self.decode_body(body) {
            Ok(batch) => {
                hand_back(batch).await;
                true
            }
            Err(reason) => {
                tracing::warn!(
                    reason,
                    "OTLP exporter: a request to hand back no longer decodes"
                );
                self.telemetry.add_send_failed(n);
                true
            }
        }
    }

    /// Log (rate-limited) that `n` items could not be delivered.
    fn log_failure(&self, n: usize, reason: &str, after: Duration) {
        if let Some(held_back) = self.failure_log.allow(log_epoch()) {
            tracing::error!(
                exporter = %self.telemetry.id(),
                endpoint = %self.config.endpoint,
                items = n,
                reason,
                after = ?after,
                failures_not_logged = held_back,
                "OTLP export failed; the items are dropped (otelcol_exporter_send_failed_*)"
            );
        }
    }

    /// Send an encoded request of `n` items for the queue's workers, retrying as
    /// configured: what the endpoint gives up on (withdrawn, retries exhausted) goes to
    /// `hand_back` when there is one.
    pub(crate) async fn send_encoded(
        &self,
        body: Bytes,
        n: usize,
        extra: Option<Arc<http::HeaderMap>>,
    ) -> Result<(), ConsumeError<S>> {
        self.send(body, n, false, extra).await
    }

    /// The per-request headers of a batch from `client` (the `headers_setter` rules);
    /// `None` when there are no rules. `delete` rules are marked with an empty value.
    pub(crate) fn request_headers(
        &self,
        client: Option<&otel_pipeline_core::ClientInfo>,
    ) -> Option<Arc<http::HeaderMap>> {
        use otel_pipeline_core::collector::auth::HeaderAction;
        if self.config.header_rules.is_empty() {
            return None;
        }
        let mut out = http::HeaderMap::new();
        for rule in &self.config.header_rules {
            let Ok(name) = http::HeaderName::from_bytes(rule.key.to_ascii_lowercase().as_bytes())
            else {
                continue;
            };
            let present = self.headers.contains_key(&name) || out.contains_key(&name);
            let value = match rule.action {
                HeaderAction::Delete => Some(http::HeaderValue::from_static("")),
                HeaderAction::Insert if present => None,
                HeaderAction::Update if !present => None,
                _ => rule
                    .value_for(client)
                    .and_then(|v| http::HeaderValue::from_str(&v).ok()),
            };
            if let Some(v) = value {
                out.insert(name, v);
            }
        }
        Some(Arc::new(out))
    }

    /// Send for a caller waiting on `consume` (no sending queue): what the endpoint gives
    /// up on goes back to that caller, never to `hand_back`. An owner that routes (the
    /// trace router) routes a refusal again itself; handing back from inside its own
    /// call would nest one reroute in another without bound while endpoints keep
    /// changing.
    async fn send_direct(
        &self,
        body: Bytes,
        n: usize,
        extra: Option<Arc<http::HeaderMap>>,
    ) -> Result<(), ConsumeError<S>> {
        self.send(body, n, true, extra).await
    }

    /// Give `body` back to a direct caller as a refusal (it decodes again, as the bytes
    /// were encoded here); one that no longer decodes is counted failed.
    fn refuse_direct(&self, body: &Bytes, n: usize, why: &str) -> ConsumeError<S> {
        match self.decode_body(body) {
            Ok(batch) => {
                ConsumeError::refused(batch, format!("endpoint {}: {why}", self.config.endpoint))
            }
            Err(reason) => {
                self.telemetry.add_send_failed(n);
                ConsumeError::rejected(n, reason)
            }
        }
    }

    async fn send(
        &self,
        body: Bytes,
        n: usize,
        direct: bool,
        extra: Option<Arc<http::HeaderMap>>,
    ) -> Result<(), ConsumeError<S>> {
        let started = Instant::now();
        let mut wait = self.config.retry.initial_interval;
        loop {
            if self.withdrawn() {
                if direct {
                    return Err(self.refuse_direct(&body, n, "withdrawn"));
                }
                if self.hand_back(&body, n).await {
                    return Ok(());
                }
            }
            let attempt_started = Instant::now();
            let attempt = self.attempt(&body, extra.as_deref()).await;
            if let Some(observe) = &self.hooks.observe {
                let outcome = match &attempt {
                    Attempt::Sent { .. } => AttemptOutcome::Sent,
                    Attempt::Retryable { .. } => AttemptOutcome::Retryable,
                    Attempt::Permanent { .. } => AttemptOutcome::Permanent,
                };
                observe(outcome, attempt_started.elapsed());
            }
            let (reason, retry_after) = match attempt {
                Attempt::Sent { rejected, message } => {
                    let rejected = rejected.min(n);
                    self.telemetry.add_sent(n - rejected);
                    if rejected > 0 {
                        self.telemetry.add_send_failed(rejected);
                        return Err(ConsumeError::rejected(
                            rejected,
                            format!("backend rejected {rejected} items: {message}"),
                        ));
                    }
                    return Ok(());
                }
                Attempt::Permanent { reason } => {
                    self.telemetry.add_send_failed(n);
                    self.log_failure(n, &reason, started.elapsed());
                    return Err(ConsumeError::rejected(n, reason));
                }
                Attempt::Retryable {
                    reason,
                    retry_after,
                } => (reason, retry_after),
            };
            let r = &self.config.retry;
            let backoff =
                Duration::from_secs_f64(wait.as_secs_f64() * self.jitter(r.randomization));
            // A server's Retry-After / RetryInfo is honoured within the configured bounds:
            // never a busy loop on 0, never a pause beyond max_interval on a huge value.
            // As the Collector: the longer of the backoff and what the server asked, so a
            // server that keeps answering `Retry-After: 0` still sees the backoff grow.
            let pause = match retry_after {
                Some(asked) => asked
                    .max(backoff)
                    .min(r.max_interval.max(r.initial_interval)),
                None => backoff,
            };
            let shutdown = *self.deadline.lock();
            // Retries off: give up now (a failure, not a shutdown loss).
            if r.enabled
                && shutdown
                    .is_some_and(|d| Instant::now().checked_add(pause).is_none_or(|t| t >= d))
            {
                // A persistent queue keeps the request on disk for the next start.
                if !direct && self.config.queue.storage.is_some() {
                    return Err(ConsumeError::rejected(n, KEPT_ON_DISK));
                }
                self.telemetry.add_dropped(DropReason::SHUTDOWN_DEADLINE, n);
                return Err(ConsumeError::rejected(
                    n,
                    format!("gave up at shutdown: {reason}"),
                ));
            }
            if !r.enabled || started.elapsed().saturating_add(pause) > r.max_elapsed {
                // The owner sends it elsewhere; this endpoint counts nothing for it.
                if !direct && self.hand_back(&body, n).await {
                    return Ok(());
                }
                // A caller waiting on `consume` still holds its client's answer: give the
                // batch back as a refusal (back-pressure it can pass on, or route
                // elsewhere) rather than count it failed here.
                if direct {
                    let mut e = self.refuse_direct(&body, n, &reason);
                    if let ConsumeError::Refused(r) = &mut e {
                        r.retry_after = Some(pause);
                    }
                    return Err(e);
                }
                self.telemetry.add_send_failed(n);
                self.log_failure(n, &reason, started.elapsed());
                return Err(ConsumeError::rejected(
                    n,
                    format!("gave up after {:?}: {reason}", started.elapsed()),
                ));
            }
            if let Some(held_back) = self.retry_log.allow(log_epoch()) {
                tracing::warn!(
                    exporter = %self.telemetry.id(),
                    endpoint = %self.config.endpoint,
                    items = n,
                    reason = %reason,
                    retry_in = ?pause,
                    retries_not_logged = held_back,
                    "OTLP export failed; retrying"
                );
            }
            self.pause(pause).await;
            wait = Duration::from_secs_f64(
                (wait.as_secs_f64() * r.multiplier).min(r.max_interval.as_secs_f64()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// A failing exporter logs at most one line per `LOG_EVERY` of each kind, and the next
    /// line says how many it held back.
    #[test]
    fn failure_logs_are_rate_limited_and_count_what_they_held_back() {
        let limit = super::RateLimited::default();
        let epoch = tokio::time::Instant::now();
        assert_eq!(limit.allow(epoch), Some(0), "the first one is logged");
        for _ in 0..50 {
            assert_eq!(limit.allow(epoch), None);
        }
        // As if LOG_EVERY had passed since the last line.
        let earlier = epoch - super::LOG_EVERY - Duration::from_millis(1);
        assert_eq!(limit.allow(earlier), Some(50));
        assert_eq!(limit.allow(earlier), None);
    }

    use otel_pipeline_core::proto::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceResponse,
    };

    use super::{grpc_message, grpc_timeout};

    #[test]
    fn grpc_timeouts_fit_eight_digits() {
        assert_eq!(grpc_timeout(Duration::from_secs(10)), "10000m");
        assert_eq!(grpc_timeout(Duration::ZERO), "1m");
        assert_eq!(grpc_timeout(Duration::from_secs(200_000)), "200000S");
        assert_eq!(grpc_timeout(Duration::MAX), "99999999S");
    }

    #[test]
    fn a_response_frame_is_read_or_refused_clearly() {
        let response = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 3,
                error_message: "bad".into(),
            }),
        };
        let body = prost::Message::encode_to_vec(&response);
        let mut frame = vec![0];
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&body);
        assert_eq!(
            grpc_message::<ExportTraceServiceResponse>(&frame),
            Ok(response)
        );
        // An empty body is an empty response (nothing rejected).
        assert_eq!(
            grpc_message::<ExportTraceServiceResponse>(&[]),
            Ok(ExportTraceServiceResponse::default())
        );
        assert!(grpc_message::<ExportTraceServiceResponse>(&frame[..4]).is_err());
        assert!(grpc_message::<ExportTraceServiceResponse>(&frame[..frame.len() - 1]).is_err());
        frame[0] = 1;
        assert!(grpc_message::<ExportTraceServiceResponse>(&frame).is_err());
    }
}

//! The OTLP receiver: gRPC (default `0.0.0.0:4317`) and HTTP (default `0.0.0.0:4318`),
//! traces, metrics and logs on the same ports.
//!
//! One [`OtlpReceiver`] serves every signal; each pipeline takes the part for its signal
//! (`otlp.traces()`, `otlp.metrics()`, `otlp.logs()`). The listeners bind when the first of
//! those starts and close when the last one stops; a signal without a pipeline answers
//! `UNIMPLEMENTED` / `404`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use otel_pipeline_core::{Pipeline, testing::InMemoryExporter};
//! use otel_receivers::{OtlpConfig, OtlpReceiver};
//!
//! let otlp = OtlpReceiver::new(OtlpConfig::default());
//! let (exporter, _spans) = InMemoryExporter::new();
//! let running = Pipeline::traces().receiver(otlp.traces()).exporter(exporter).build()?.start().await?;
//! # let _ = running; Ok(()) }
//! ```
//!
//! # Answers
//! | pipeline says | gRPC | HTTP |
//! |---|---|---|
//! | accepted | `OK` | `200` |
//! | rejected N items (bad data) | `OK` with `partial_success.rejected_*` = N | `200` with the same body |
//! | refused (back-pressure) | `RESOURCE_EXHAUSTED` with `RetryInfo` | `429` with `Retry-After` |
//! | malformed payload | `INVALID_ARGUMENT` | `400` with a `google.rpc.Status` body |
//! | too large (wire or decompressed) | `INVALID_ARGUMENT` | `413` |
//! | wrong content type | `INVALID_ARGUMENT` | `415` |
//!
//! Every malformed, oversize or unsupported request is counted in
//! `otelcol_receiver_failed_requests{reason}`; items in
//! `otelcol_receiver_{accepted,refused,rejected}_<items>`.

mod auth;
mod body;
mod grpc;
mod http;
mod server;
mod signal;

pub use auth::{
    AuthError, AuthRequest, Authenticate, Authenticator, BasicAuth, BearerTokens, Secret,
};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use otel_pipeline_core::otlp::WireSignal;
use otel_pipeline_core::{
    Batch, BoxConsumer, BoxError, ClientInfo, ComponentId, ConsumeError, Consumer, Receiver,
    ReceiverContext, RunningReceiver,
};
use parking_lot::Mutex;

use signal::{Sink, Sinks};

/// Settings of the OTLP receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// gRPC listen address; `None` disables gRPC. Default `0.0.0.0:4317`.
    pub grpc: Option<SocketAddr>,
    /// HTTP listen address; `None` disables HTTP. Default `0.0.0.0:4318`.
    pub http: Option<SocketAddr>,
    /// Largest request accepted on the wire (compressed), in bytes. Default 4 MiB.
    pub max_request_bytes: usize,
    /// Largest request after decompression, in bytes. Default 16 MiB.
    pub max_decompressed_bytes: usize,
    /// Keep request headers / gRPC metadata in the batch's [`ClientInfo`] (the
    /// Collector's `include_metadata`). The peer address is always kept. Default off.
    pub include_metadata: bool,
    /// `Retry-After` / `RetryInfo` delay sent with back-pressure when the pipeline gives
    /// none. Default 1 s.
    pub default_retry_after: Duration,
    /// Serve both protocols over TLS with this certificate (needs the `tls` feature).
    /// Default: plain text.
    pub tls: Option<TlsFiles>,
    /// What clients may hold of the receiver: connections, time, memory.
    pub limits: ReceiverLimits,
    /// Who may send: requests without valid credentials are refused before their body is
    /// read. Default: anyone.
    pub auth: Option<Authenticator>,
}

/// Bounds on what clients may hold of a receiver, so that no number of slow, idle or
/// oversized clients exhausts a gateway. Every limit hit is counted (see
/// `docs/security.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiverLimits {
    /// Open connections across both listeners; one more is closed at accept. Default 4096.
    pub max_connections: usize,
    /// Time from opening a connection to its first complete request headers, and on
    /// HTTP/1 for the headers of each request (slowloris). Default 10 s.
    pub header_read_timeout: Duration,
    /// Time to receive a request's whole body once its headers are in. Default 30 s.
    pub body_read_timeout: Duration,
    /// A connection with no request in progress and no bytes moving for this long is
    /// closed. Default 2 min.
    pub idle_timeout: Duration,
    /// HTTP/2 PING interval (`None`: no pings). Default 30 s.
    pub http2_keepalive_interval: Option<Duration>,
    /// A PING not answered within this closes the connection. Default 10 s.
    pub http2_keepalive_timeout: Duration,
    /// Concurrent HTTP/2 streams (gRPC calls) per connection. Default 100.
    pub max_concurrent_streams: u32,
    /// Request header bytes (HTTP/1 buffer, HTTP/2 header list). Default 64 KiB.
    pub max_header_bytes: usize,
    /// Request bytes, as received and as decompressed, that all requests in progress may
    /// hold together. A request that would pass it is refused as back-pressure
    /// (`RESOURCE_EXHAUSTED` with `RetryInfo`, `429` with `Retry-After`). Default 256 MiB.
    pub max_in_flight_bytes: usize,
}

impl Default for ReceiverLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            http2_keepalive_interval: Some(Duration::from_secs(30)),
            http2_keepalive_timeout: Duration::from_secs(10),
            max_concurrent_streams: 100,
            max_header_bytes: 64 << 10,
            max_in_flight_bytes: 256 << 20,
        }
    }
}

/// The server's PEM certificate chain and private key, and for mutual TLS the CA that
/// client certificates must chain to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, PEM.
    pub cert_file: std::path::PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub key_file: std::path::PathBuf,
    /// Mutual TLS: clients must present a certificate issued by this CA (PEM, the
    /// Collector's `client_ca_file`). A request without one gets `UNAUTHENTICATED` / `401`;
    /// a certificate that does not verify fails the handshake. Default: no client
    /// certificates.
    pub client_ca_file: Option<std::path::PathBuf>,
    /// With `client_ca_file`: the client certificate must also be valid for one of these
    /// names (DNS subject alternative names), which becomes the request's `auth.subject`.
    /// Empty: any certificate from the CA.
    pub client_names: Vec<String>,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            grpc: Some(SocketAddr::from(([0, 0, 0, 0], 4317))),
            http: Some(SocketAddr::from(([0, 0, 0, 0], 4318))),
            max_request_bytes: 4 << 20,
            max_decompressed_bytes: 16 << 20,
            include_metadata: false,
            default_retry_after: Duration::from_secs(1),
            tls: None,
            limits: ReceiverLimits::default(),
            auth: None,
        }
    }
}

impl OtlpConfig {
    /// Both protocols on loopback with OS-chosen ports: for tests.
    pub fn loopback() -> Self {
        Self {
            grpc: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            http: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Self::default()
        }
    }
}

/// Addresses the receiver actually bound (useful with port 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BoundAddrs {
    /// The gRPC listener.
    pub grpc: Option<SocketAddr>,
    /// The HTTP listener.
    pub http: Option<SocketAddr>,
}

pub(crate) struct Shared {
    pub(crate) config: OtlpConfig,
    pub(crate) sinks: Sinks,
    /// The in-flight byte budget, once the listeners run.
    pub(crate) budget: std::sync::OnceLock<Arc<server::ByteBudget>>,
    state: tokio::sync::Mutex<ServerState>,
    bound: Mutex<BoundAddrs>,
}

#[derive(Default)]
struct ServerState {
    running: usize,
    server: Option<server::Server>,
}

/// The OTLP receiver. Cheap to clone; all clones share the listeners.
#[derive(Clone)]
pub struct OtlpReceiver {
    id: ComponentId,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for OtlpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpReceiver")
            .field("id", &self.id)
            .field("config", &self.shared.config)
            .finish()
    }
}

impl OtlpReceiver {
    /// A receiver with id `otlp`.
    pub fn new(config: OtlpConfig) -> Self {
        Self {
            id: ComponentId::new("otlp"),
            shared: Arc::new(Shared {
                config,
                sinks: Sinks::default(),
                budget: std::sync::OnceLock::new(),
                state: tokio::sync::Mutex::new(ServerState::default()),
                bound: Mutex::new(BoundAddrs::default()),
            }),
        }
    }

    /// Use another id (`otlp/internal`).
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }

    /// The part that feeds a trace pipeline.
    pub fn traces(&self) -> OtlpSignalReceiver<otel_pipeline_core::Traces> {
        OtlpSignalReceiver::new(self)
    }

    /// The part that feeds a metrics pipeline.
    pub fn metrics(&self) -> OtlpSignalReceiver<otel_pipeline_core::Metrics> {
        OtlpSignalReceiver::new(self)
    }

    /// The part that feeds a logs pipeline.
    pub fn logs(&self) -> OtlpSignalReceiver<otel_pipeline_core::Logs> {
        OtlpSignalReceiver::new(self)
    }

    /// The addresses bound, once a pipeline has started the receiver.
    pub fn local_addrs(&self) -> BoundAddrs {
        *self.shared.bound.lock()
    }
}

/// The part of an [`OtlpReceiver`] that feeds the pipeline of signal `S`.
pub struct OtlpSignalReceiver<S> {
    receiver: OtlpReceiver,
    _signal: std::marker::PhantomData<fn() -> S>,
}

impl<S> std::fmt::Debug for OtlpSignalReceiver<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.receiver.fmt(f)
    }
}

impl<S> OtlpSignalReceiver<S> {
    fn new(receiver: &OtlpReceiver) -> Self {
        Self {
            receiver: receiver.clone(),
            _signal: std::marker::PhantomData,
        }
    }
}

impl<S: WireSignal> Receiver<S> for OtlpSignalReceiver<S> {
    fn id(&self) -> ComponentId {
        self.receiver.id.clone()
    }

    async fn start<C: Consumer<S> + Clone>(
        self,
        consumer: C,
        mut ctx: ReceiverContext,
    ) -> Result<RunningReceiver, BoxError> {
        let shared = Arc::clone(&self.receiver.shared);
        let sink = Sink {
            consumer: BoxConsumer::new(consumer),
            telemetry: Arc::clone(&ctx.telemetry),
        };
        if !shared.sinks.set(sink) {
            return Err(format!("the OTLP receiver already feeds a {} pipeline", S::NAME).into());
        }
        {
            let mut state = shared.state.lock().await;
            if state.server.is_none() {
                let server = server::Server::start(Arc::clone(&shared), &ctx.telemetry).await?;
                *shared.bound.lock() = server.addrs();
                state.server = Some(server);
            }
            state.running += 1;
        }
        let task = tokio::spawn(async move {
            ctx.shutdown.wait().await;
            // This signal's requests stop going to a pipeline that is stopping.
            shared.sinks.clear::<S>();
            let mut state = shared.state.lock().await;
            state.running -= 1;
            let last = state.running == 0;
            if let Some(server) = state.server.take_if(|_| last) {
                server.stop().await;
            }
            Ok(())
        });
        Ok(RunningReceiver::new(task))
    }
}

/// What the pipeline said about one request, in protocol-neutral terms.
pub(crate) enum Outcome {
    Accepted,
    Rejected {
        items: usize,
        message: String,
    },
    Refused {
        retry_after: Duration,
        message: String,
    },
}

/// Push a decoded request into the signal's pipeline and count the result.
pub(crate) async fn deliver<S: WireSignal>(
    shared: &Shared,
    data: S::Data,
    client: Arc<ClientInfo>,
) -> Option<Outcome> {
    let sink = shared.sinks.get::<S>()?;
    let batch = Batch::<S>::with_client(data, client);
    let n = batch.item_count();
    Some(match sink.consumer.consume(batch).await {
        Ok(()) => {
            sink.telemetry.add_accepted(n);
            Outcome::Accepted
        }
        Err(ConsumeError::Refused(r)) => {
            sink.telemetry.add_refused(n);
            Outcome::Refused {
                retry_after: r.retry_after.unwrap_or(shared.config.default_retry_after),
                message: r.reason.into_owned(),
            }
        }
        Err(ConsumeError::Rejected(r)) => {
            sink.telemetry.add_rejected(r.items);
            Outcome::Rejected {
                items: r.items,
                message: r.reason.into_owned(),
            }
        }
    })
}

/// Count a request that failed before decoding, on the signal's counters if it has a
/// pipeline.
pub(crate) fn count_failed<S: WireSignal>(shared: &Shared, reason: &'static str) {
    if let Some(sink) = shared.sinks.get::<S>() {
        sink.telemetry.add_failed_request(reason);
    }
}

/// Build the [`ClientInfo`] of a request.
pub(crate) fn client_info(
    shared: &Shared,
    peer: Option<SocketAddr>,
    headers: &::http::HeaderMap,
) -> Arc<ClientInfo> {
    let metadata = if shared.config.include_metadata {
        headers
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "content-length"
                        | "content-type"
                        | "content-encoding"
                        | "te"
                        | "grpc-encoding"
                        | "grpc-accept-encoding"
                        | "accept-encoding"
                )
            })
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect()
    } else {
        Vec::new()
    };
    Arc::new(ClientInfo {
        addr: peer,
        metadata,
        auth: Vec::new(),
    })
}

/// Who sent a request: mutual TLS's verdict on the connection first, then the configured
/// authenticator on the headers. The identity is what both established; a refusal carries
/// the `WWW-Authenticate` challenge for HTTP.
pub(crate) async fn authenticate(
    shared: &Shared,
    headers: &::http::HeaderMap,
    peer: SocketAddr,
    conn_auth: &server::ConnAuth,
) -> Result<Vec<(String, String)>, (AuthError, String)> {
    let mut identity = Vec::new();
    if let Some(verdict) = conn_auth {
        match &**verdict {
            Ok(attrs) => identity.clone_from(attrs),
            Err(e) => return Err((e.clone(), "Mutual realm=\"otlp\"".to_string())),
        }
    }
    if let Some(auth) = &shared.config.auth {
        match auth.check(&AuthRequest { headers, peer }).await {
            // The authenticator's subject wins over the certificate's.
            Ok(attrs) => {
                identity.retain(|(k, _)| !attrs.iter().any(|(a, _)| a == k));
                identity.extend(attrs);
            }
            Err(e) => return Err((e, auth.challenge().to_string())),
        }
    }
    Ok(identity)
}

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
mod config;
mod conn;
mod grpc;
mod http;
pub(crate) mod http_api {
    //! What other HTTP dialects reuse of the OTLP/HTTP handler.
    pub(crate) use super::conn::{ConnAuth, Peer, ResBody};
    pub(crate) use super::http::{Reply, fail, plain, receive};
    pub(crate) use super::shared::{Outcome, Shared, deliver};
}
pub(crate) mod grpc_api {
    //! What other gRPC services reuse of the OTLP/gRPC handler.
    pub(crate) use super::grpc::{ok_response, read_unary, refuse};
    pub(crate) use tonic::{Code, Status};
    pub(crate) use tonic_types::{ErrorDetails, StatusExt};
}
mod server;
mod shared;

/// Count a traces request that failed before reaching the pipeline.
pub(crate) fn count_failed_traces(shared: &Shared, reason: &'static str) {
    shared::count_failed::<otel_pipeline_core::Traces>(shared, reason);
}
mod signal;

pub use auth::{
    AuthError, AuthRequest, Authenticate, Authenticator, BasicAuth, BearerTokens, Secret,
};
pub use config::{BoundAddrs, Cors, OtlpConfig, ReceiverLimits, TlsFiles};

use std::sync::Arc;

use otel_pipeline_core::otlp::WireSignal;
use otel_pipeline_core::{
    BoxConsumer, BoxError, BuildError, ComponentId, Consumer, Receiver, ReceiverContext,
    RunningReceiver,
};
use parking_lot::Mutex;

pub(crate) use shared::Dialect;
use shared::Shared;
use signal::{Sink, Sinks};

/// The listeners, shared by the pipelines the receiver feeds: started by the first,
/// stopped by the last.
#[derive(Default)]
struct Listeners {
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
    listeners: Arc<Listeners>,
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
        Self::speaking(config, Dialect::Otlp, "otlp")
    }

    /// A receiver whose listeners speak `dialect`, with id `kind`.
    pub(crate) fn speaking(config: OtlpConfig, dialect: Dialect, kind: &'static str) -> Self {
        Self {
            id: ComponentId::new(kind),
            shared: Arc::new(Shared {
                config,
                sinks: Sinks::default(),
                budget: std::sync::OnceLock::new(),
                dialect,
                unresolved: Vec::new(),
            }),
            listeners: Arc::default(),
        }
    }

    /// The settings it was built with.
    pub(crate) fn config(&self) -> &OtlpConfig {
        &self.shared.config
    }

    /// Listen hosts that did not resolve when configured: the host checks and `start`
    /// refuse them.
    pub(crate) fn with_unresolved(mut self, unresolved: Vec<(String, String)>) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.unresolved = unresolved;
        }
        self
    }

    /// What its listeners speak.
    pub(crate) fn dialect(&self) -> &Dialect {
        &self.shared.dialect
    }

    /// Its id.
    pub(crate) fn component_id(&self) -> ComponentId {
        self.id.clone()
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
        *self.listeners.bound.lock()
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

    /// The TLS files load and fit, the two listen addresses differ, and neither is taken
    /// by another process (checked by binding and letting go, unless these listeners
    /// already run for another pipeline).
    fn validate(&self) -> Result<(), BuildError> {
        let invalid = |path: &str, message: String| BuildError::InvalidConfig {
            component: self.receiver.id.clone(),
            path: path.to_string(),
            message,
        };
        let config = &self.receiver.shared.config;
        if let Some((path, why)) = self.receiver.shared.unresolved.first() {
            return Err(invalid(path, why.clone()));
        }
        server::acceptor(&self.receiver.shared).map_err(|e| invalid("tls", e.to_string()))?;
        if let (Some(g), Some(h)) = (config.grpc, config.http)
            && g == h
            && g.port() != 0
        {
            return Err(invalid(
                "protocols.http.endpoint",
                format!("{h} is the gRPC endpoint too: give each protocol its own port"),
            ));
        }
        let running = self
            .receiver
            .listeners
            .state
            .try_lock()
            .map_or(true, |s| s.server.is_some());
        if !running {
            for (path, addr) in [
                ("protocols.grpc.endpoint", config.grpc),
                ("protocols.http.endpoint", config.http),
            ] {
                let Some(addr) = addr.filter(|a| a.port() != 0) else {
                    continue;
                };
                if let Err(e) = std::net::TcpListener::bind(addr) {
                    return Err(invalid(path, format!("cannot listen on {addr}: {e}")));
                }
            }
        }
        Ok(())
    }

    async fn start<C: Consumer<S> + Clone>(
        self,
        consumer: C,
        mut ctx: ReceiverContext,
    ) -> Result<RunningReceiver, BoxError> {
        let shared = Arc::clone(&self.receiver.shared);
        if let Some((path, why)) = shared.unresolved.first() {
            return Err(format!("{}: {path}: {why}", self.receiver.id).into());
        }
        let listeners = Arc::clone(&self.receiver.listeners);
        let sink = Sink {
            consumer: BoxConsumer::new(consumer),
            telemetry: Arc::clone(&ctx.telemetry),
        };
        if !shared.sinks.set(sink) {
            return Err(format!("the OTLP receiver already feeds a {} pipeline", S::NAME).into());
        }
        {
            let mut state = listeners.state.lock().await;
            if state.server.is_none() {
                let server = server::Server::start(Arc::clone(&shared), &ctx.telemetry).await?;
                *listeners.bound.lock() = server.addrs();
                state.server = Some(server);
            }
            state.running += 1;
        }
        let task = tokio::spawn(async move {
            let deadline = ctx.shutdown.wait().await;
            // This signal's requests stop going to a pipeline that is stopping.
            shared.sinks.clear::<S>();
            let mut state = listeners.state.lock().await;
            state.running -= 1;
            let last = state.running == 0;
            if let Some(server) = state.server.take_if(|_| last) {
                server.stop(deadline).await;
            }
            Ok(())
        });
        Ok(RunningReceiver::new(task))
    }
}

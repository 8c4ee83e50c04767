//! The listeners: one accept loop per protocol, hyper connections, graceful stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use otel_pipeline_core::BoxError;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{BoundAddrs, Shared, grpc, http};

/// Response body of both protocols.
pub(crate) type ResBody = UnsyncBoxBody<Bytes, BoxError>;

/// Box a complete body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> ResBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[derive(Clone, Copy, Debug)]
enum Protocol {
    Grpc,
    Http,
}

/// Running listeners.
pub(crate) struct Server {
    addrs: BoundAddrs,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// How long open connections get to finish their requests when the receiver stops.
const DRAIN: Duration = Duration::from_secs(5);

impl Server {
    /// Bind every configured listener, then serve in the background.
    pub(crate) async fn start(shared: Arc<Shared>) -> Result<Self, BoxError> {
        let (stop, stop_rx) = watch::channel(false);
        let mut addrs = BoundAddrs::default();
        let mut listeners = Vec::new();
        if let Some(addr) = shared.config.grpc {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("OTLP/gRPC cannot listen on {addr}: {e}"))?;
            addrs.grpc = Some(l.local_addr()?);
            listeners.push((l, Protocol::Grpc));
        }
        if let Some(addr) = shared.config.http {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("OTLP/HTTP cannot listen on {addr}: {e}"))?;
            addrs.http = Some(l.local_addr()?);
            listeners.push((l, Protocol::Http));
        }
        let tasks = listeners
            .into_iter()
            .map(|(l, p)| tokio::spawn(accept_loop(l, p, Arc::clone(&shared), stop_rx.clone())))
            .collect();
        Ok(Self { addrs, stop, tasks })
    }

    pub(crate) fn addrs(&self) -> BoundAddrs {
        self.addrs
    }

    /// Stop accepting, let open requests finish (up to a few seconds), then return.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    protocol: Protocol,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => Some(accepted),
            _ = stop.wait_for(|s| *s) => None,
        };
        let (stream, peer) = match accepted {
            None => break,
            Some(Ok(conn)) => conn,
            // Out of file descriptors and the like: back off, keep serving.
            Some(Err(_)) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let service = service_fn(move |req| {
            let shared = Arc::clone(&shared);
            async move {
                let response = match protocol {
                    Protocol::Grpc => grpc::handle(shared, req, peer).await,
                    Protocol::Http => http::handle(shared, req, peer).await,
                };
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}

/// Peer address type used by handlers.
pub(crate) type Peer = SocketAddr;

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

/// Turns accepted TCP streams into TLS streams, when TLS is configured.
#[cfg(feature = "tls")]
type Acceptor = Option<tokio_rustls::TlsAcceptor>;
#[cfg(not(feature = "tls"))]
type Acceptor = Option<Arc<std::convert::Infallible>>;

#[cfg(feature = "tls")]
fn acceptor(shared: &Shared) -> Result<Acceptor, BoxError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let Some(files) = &shared.config.tls else {
        return Ok(None);
    };
    let certs = CertificateDer::pem_file_iter(&files.cert_file)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "reading TLS certificates from {}: {e}",
                files.cert_file.display()
            )
        })?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|e| format!("reading the TLS key from {}: {e}", files.key_file.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate and key do not fit: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

#[cfg(not(feature = "tls"))]
fn acceptor(shared: &Shared) -> Result<Acceptor, BoxError> {
    match &shared.config.tls {
        None => Ok(None),
        Some(_) => {
            Err("TLS is configured but otel-receivers was built without its `tls` feature".into())
        }
    }
}

impl Server {
    /// Bind every configured listener, then serve in the background.
    pub(crate) async fn start(shared: Arc<Shared>) -> Result<Self, BoxError> {
        let (stop, stop_rx) = watch::channel(false);
        let tls = acceptor(&shared)?;
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
            .map(|(l, p)| {
                tokio::spawn(accept_loop(
                    l,
                    p,
                    Arc::clone(&shared),
                    stop_rx.clone(),
                    tls.clone(),
                ))
            })
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
    tls: Acceptor,
) {
    let graceful = GracefulShutdown::new();
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
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve(stream, service, watcher).await,
                #[cfg(feature = "tls")]
                Some(acceptor) => {
                    // A client that never finishes its handshake does not hold the slot.
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    if let Ok(Ok(tls_stream)) = handshake.await {
                        serve(tls_stream, service, watcher).await;
                    }
                }
                #[cfg(not(feature = "tls"))]
                Some(never) => match *never {},
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}

/// Serve one connection (plain or TLS) until it closes or shutdown drains it.
async fn serve<I, S>(io: I, service: S, watcher: hyper_util::server::graceful::Watcher)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<ResBody>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    let _ = watcher.watch(conn).await;
}

/// Peer address type used by handlers.
pub(crate) type Peer = SocketAddr;

//! The listeners: one accept loop per protocol, hyper connections, graceful stop.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use otel_pipeline_core::{BoxError, ComponentTelemetry};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

#[cfg(feature = "tls")]
use super::auth::AuthError;
use super::config::{BoundAddrs, ReceiverLimits};
use super::conn::{ByteBudget, ConnAuth, ConnStats, Peer, ResBody};
use super::shared::Shared;
use super::{grpc, http};

#[derive(Clone, Copy, Debug)]
enum Protocol {
    Grpc,
    Http,
}

/// Running listeners.
pub(crate) struct Server {
    addrs: BoundAddrs,
    stop: watch::Sender<Option<tokio::time::Instant>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Turns accepted TCP streams into TLS streams, when TLS is configured.
#[cfg(feature = "tls")]
pub(crate) type Acceptor = Option<tokio_rustls::TlsAcceptor>;
#[cfg(not(feature = "tls"))]
pub(crate) type Acceptor = Option<Arc<std::convert::Infallible>>;

#[cfg(feature = "tls")]
pub(crate) fn acceptor(shared: &Shared) -> Result<Acceptor, BoxError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
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
    use otel_pipeline_core::config::TlsVersion;
    let (min, max) = (
        files.min_version.unwrap_or(TlsVersion::V1_2),
        files.max_version.unwrap_or(TlsVersion::V1_3),
    );
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::V1_2, &rustls::version::TLS12),
        (TlsVersion::V1_3, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (min..=max).contains(v))
    .map(|(_, p)| p)
    .collect();
    if versions.is_empty() {
        return Err(format!("TLS min_version {min:?} is above max_version {max:?}").into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &files.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("reading the client CA from {}: {e}", ca.display()))?
            {
                let cert = cert.map_err(|e| format!("client CA {}: {e}", ca.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("client CA {}: {e}", ca.display()))?;
            }
            // A client without a certificate gets through the handshake and is refused per
            // request (401 / UNAUTHENTICATED, counted); one whose certificate does not
            // verify fails the handshake.
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("client CA {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate and key do not fit: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

#[cfg(feature = "tls")]
fn mtls_identity(shared: &Shared, conn: &tokio_rustls::rustls::ServerConnection) -> ConnAuth {
    let files = shared.config.tls.as_ref()?;
    files.client_ca_file.as_ref()?;
    let result = match conn.peer_certificates().and_then(|c| c.first()) {
        None => Err(AuthError::missing("a client certificate is required")),
        Some(cert) if files.client_names.is_empty() => {
            let _ = cert;
            Ok(vec![("scheme".to_string(), "mtls".to_string())])
        }
        Some(cert) => {
            let matched = webpki::EndEntityCert::try_from(cert).ok().and_then(|ee| {
                files.client_names.iter().find(|name| {
                    rustls_pki_types::ServerName::try_from(name.as_str())
                        .is_ok_and(|n| ee.verify_is_valid_for_subject_name(&n).is_ok())
                })
            });
            match matched {
                Some(name) => Ok(vec![
                    ("subject".to_string(), name.clone()),
                    ("scheme".to_string(), "mtls".to_string()),
                ]),
                None => Err(AuthError::invalid(
                    "the client certificate is not issued for an allowed name",
                )),
            }
        }
    };
    Some(Arc::new(result))
}

#[cfg(not(feature = "tls"))]
pub(crate) fn acceptor(shared: &Shared) -> Result<Acceptor, BoxError> {
    match &shared.config.tls {
        None => Ok(None),
        Some(_) => {
            Err("TLS is configured but otel-receivers was built without its `tls` feature".into())
        }
    }
}

impl Server {
    /// Bind every configured listener, then serve in the background. Connection-level
    /// events are counted on `telemetry`.
    pub(crate) async fn start(
        shared: Arc<Shared>,
        telemetry: &ComponentTelemetry,
    ) -> Result<Self, BoxError> {
        let (stop, stop_rx) = watch::channel(None);
        let tls = acceptor(&shared)?;
        let stats = Arc::new(ConnStats::new(telemetry));
        let limits = &shared.config.limits;
        if limits.max_connections == 0 || limits.max_in_flight_bytes == 0 {
            return Err(
                "limits.max_connections and limits.max_in_flight_bytes must be positive".into(),
            );
        }
        let budget = Arc::new(ByteBudget {
            permits: Arc::new(Semaphore::new(
                limits.max_in_flight_bytes.min(Semaphore::MAX_PERMITS),
            )),
            stats: Arc::clone(&stats),
        });
        shared.budget.set(Arc::clone(&budget)).ok();
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
        // One connection budget for both listeners.
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let udp = match &shared.dialect {
            super::Dialect::Jaeger(udp) => crate::jaeger::start_udp(&shared, udp, &stop_rx).await?,
            _ => Vec::new(),
        };
        let tasks = listeners
            .into_iter()
            .map(|(l, p)| {
                tokio::spawn(accept_loop(
                    l,
                    p,
                    Arc::clone(&shared),
                    stop_rx.clone(),
                    tls.clone(),
                    Arc::clone(&slots),
                    Arc::clone(&stats),
                ))
            })
            .chain(udp)
            .collect();
        Ok(Self { addrs, stop, tasks })
    }

    pub(crate) fn addrs(&self) -> BoundAddrs {
        self.addrs
    }

    /// Stop accepting, let open requests finish until `deadline` (the caller's), then
    /// return.
    pub(crate) async fn stop(self, deadline: tokio::time::Instant) {
        let _ = self.stop.send(Some(deadline));
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// What one connection shares with its watchdog.
#[derive(Default)]
struct Activity {
    /// Milliseconds since the connection opened, at its last read or write.
    last_io_ms: AtomicU64,
    /// Requests whose headers have arrived.
    requests: AtomicU64,
    /// Requests not answered yet.
    in_progress: AtomicU64,
}

/// A connection's stream, noting when bytes move.
struct Tracked<I> {
    io: I,
    opened: Instant,
    activity: Arc<Activity>,
}

impl<I> Tracked<I> {
    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.activity.last_io_ms.store(ms, Ordering::Relaxed);
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Marks a request in progress until dropped.
struct InProgress(Arc<Activity>);

impl InProgress {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.requests.fetch_add(1, Ordering::Relaxed);
        activity.in_progress.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(activity))
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The request handler of one connection.
fn service(
    shared: Arc<Shared>,
    protocol: Protocol,
    peer: Peer,
    activity: &Arc<Activity>,
    conn_auth: ConnAuth,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<ResBody>,
    Error = std::convert::Infallible,
    Future: Send + 'static,
> + Send
+ 'static {
    let activity = Arc::clone(activity);
    service_fn(move |req| {
        let shared = Arc::clone(&shared);
        let conn_auth = conn_auth.clone();
        let guard = InProgress::new(&activity);
        async move {
            let response = match protocol {
                Protocol::Grpc => grpc::handle(shared, req, peer, conn_auth).await,
                Protocol::Http => http::handle(shared, req, peer, conn_auth).await,
            };
            drop(guard);
            Ok::<_, std::convert::Infallible>(response)
        }
    })
}

async fn accept_loop(
    listener: TcpListener,
    protocol: Protocol,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<Option<tokio::time::Instant>>,
    tls: Acceptor,
    slots: Arc<Semaphore>,
    stats: Arc<ConnStats>,
) {
    let max = shared.config.limits.max_connections;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => Some(accepted),
            _ = stop.wait_for(Option::is_some) => None,
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
        // Over the cap: closed at once, before any byte is read.
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            stats.refused_max.add(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let limits = shared.config.limits.clone();
        let stats = Arc::clone(&stats);
        let tls = tls.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            stats.open.add(1);
            let activity = Arc::new(Activity::default());
            let opened = Instant::now();
            match tls {
                None => {
                    let io = Tracked {
                        io: stream,
                        opened,
                        activity: Arc::clone(&activity),
                    };
                    let service = service(shared, protocol, peer, &activity, None);
                    serve(io, service, stop, &activity, &stats, &limits, opened).await;
                }
                #[cfg(feature = "tls")]
                Some(acceptor) => {
                    // A client that never finishes its handshake does not hold the slot.
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(tls_stream)) => {
                            let conn_auth = mtls_identity(&shared, tls_stream.get_ref().1);
                            let service = service(shared, protocol, peer, &activity, conn_auth);
                            let io = Tracked {
                                io: tls_stream,
                                opened,
                                activity: Arc::clone(&activity),
                            };
                            serve(io, service, stop, &activity, &stats, &limits, opened).await;
                        }
                        _ => stats.tls_handshake.add(1),
                    }
                }
                #[cfg(not(feature = "tls"))]
                Some(never) => match *never {},
            }
            stats.open.add(-1);
            drop(slot);
        });
    }
    drop(listener);
    // Wait for open connections to drain (each stops itself by the deadline), bounded by
    // the deadline too.
    let deadline = (*stop.borrow()).unwrap_or_else(tokio::time::Instant::now);
    let _ = tokio::time::timeout_at(deadline, async {
        let _ = slots
            .acquire_many(u32::try_from(max).unwrap_or(u32::MAX))
            .await;
    })
    .await;
}

/// How long an idle connection that was told to close gets to say goodbye (a gRPC
/// GOAWAY, an HTTP/1 close) before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serve one connection (plain or TLS) until it closes, the receiver stops, or a limit
/// closes it: no complete request headers within `header_read_timeout` of opening (both
/// protocols; hyper also enforces it per request on HTTP/1), or no bytes moving and no
/// request in progress for `idle_timeout`.
async fn serve<I, S>(
    io: I,
    service: S,
    mut stop: watch::Receiver<Option<tokio::time::Instant>>,
    activity: &Activity,
    stats: &ConnStats,
    limits: &ReceiverLimits,
    opened: Instant,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<ResBody>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_timeout)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let tick = (limits.idle_timeout.min(limits.header_read_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(tick);
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    count_connection_error(&*e, stats);
                }
                return;
            }
            deadline = stop.wait_for(Option::is_some), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(match deadline {
                    Ok(d) => (*d).unwrap_or_else(tokio::time::Instant::now),
                    Err(_) => tokio::time::Instant::now(),
                });
            }
            _ = ticker.tick() => {
                if let Some(deadline) = closing {
                    if tokio::time::Instant::now() >= deadline {
                        return;
                    }
                    continue;
                }
                if activity.requests.load(Ordering::Relaxed) == 0
                    && opened.elapsed() > limits.header_read_timeout
                {
                    // Slowloris: dropping the connection closes the socket.
                    stats.header_timeout.add(1);
                    return;
                }
                let last = Duration::from_millis(activity.last_io_ms.load(Ordering::Relaxed));
                let idle = opened.elapsed().saturating_sub(last);
                if activity.in_progress.load(Ordering::Relaxed) == 0 && idle > limits.idle_timeout {
                    stats.idle.add(1);
                    conn.as_mut().graceful_shutdown();
                    closing = Some(tokio::time::Instant::now() + IDLE_CLOSE_GRACE);
                }
            }
        }
    }
}

/// Count why hyper ended a connection with an error; a client that simply went away is
/// not counted.
fn count_connection_error(e: &(dyn std::error::Error + 'static), stats: &ConnStats) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<std::io::Error>() {
            return;
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                stats.header_timeout.add(1);
                return;
            }
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                return;
            }
        }
        source = err.source();
    }
    stats.protocol_error.add(1);
}

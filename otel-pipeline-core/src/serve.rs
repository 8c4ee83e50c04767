//! A small HTTP/1 server for pull endpoints (feature `serve`): the health check, the
//! self-metrics and the prometheus exporter's `/metrics`. GET (and HEAD) only, no body
//! read, a bounded time to read the headers and to answer.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::id::BoxError;

type Handler = dyn Fn(&str) -> (u16, &'static str, String) + Send + Sync;

/// A small HTTP/1 server: see the [module docs](self).
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl AdminServer {
    /// Bind `addr` and answer each GET with `handler(path)`: status, content type, body.
    pub async fn start(
        addr: SocketAddr,
        handler: impl Fn(&str) -> (u16, &'static str, String) + Send + Sync + 'static,
    ) -> Result<Self, BoxError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("binding {addr}: {e}"))?;
        let addr = listener.local_addr()?;
        let handler: Arc<Handler> = Arc::new(handler);
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stopped.wait_for(|s| *s) => return,
                };
                let Ok((stream, _)) = accepted else { continue };
                let handler = Arc::clone(&handler);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let handler = Arc::clone(&handler);
                            async move {
                                let (status, content_type, body) = if req.method()
                                    == http::Method::GET
                                    || req.method() == http::Method::HEAD
                                {
                                    handler(req.uri().path())
                                } else {
                                    (405, "text/plain", "use GET\n".to_string())
                                };
                                let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
                                *resp.status_mut() = http::StatusCode::from_u16(status)
                                    .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
                                resp.headers_mut().insert(
                                    http::header::CONTENT_TYPE,
                                    http::HeaderValue::from_static(content_type),
                                );
                                Ok::<_, Infallible>(resp)
                            }
                        },
                    );
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(5))
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
                });
            }
        });
        Ok(Self { addr, stop, task })
    }

    /// Stop serving by `deadline`.
    pub async fn stop(self, deadline: Instant) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            task.abort();
        }
    }
}

impl AdminServer {
    /// The address bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The admin server an extension runs, once started.
#[derive(Debug, Default)]
pub struct Served(Mutex<Option<AdminServer>>);

impl Served {
    /// Keep `server`, once started.
    pub fn set(&self, server: AdminServer) {
        *self.0.lock() = Some(server);
    }

    /// Stop serving by `deadline` (nothing to do if it never started).
    pub fn stop(
        &self,
        deadline: Instant,
    ) -> crate::consumer::BoxFuture<'static, Result<(), BoxError>> {
        let server = self.0.lock().take();
        Box::pin(async move {
            if let Some(s) = server {
                s.stop(deadline).await;
            }
            Ok(())
        })
    }

    /// Where it listens, once started.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.0.lock().as_ref().map(|s| s.addr)
    }
}

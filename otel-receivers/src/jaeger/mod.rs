//! The Jaeger receiver: Jaeger's collector and agent protocols translated to OTLP as the
//! Collector's `jaeger` receiver does.
//!
//! - `grpc`: `jaeger.api_v2.CollectorService/PostSpans` (default port 14250);
//! - `thrift_http`: `POST /api/traces` with a Thrift binary `Batch` (14268);
//! - `thrift_compact` and `thrift_binary`: the agent's UDP `emitBatch` calls (6831 and
//!   6832).
//!
//! gRPC and HTTP run on the OTLP receiver's hardened server (limits, TLS, authentication,
//! compression, counted refusals). UDP has no back-pressure, so each UDP endpoint has its
//! own bounds: packets larger than `max_packet_size` are cut by the socket and fail to
//! parse; packets that find the `queue_size` queue full are dropped; both are counted
//! (`otelcol_receiver_failed_requests{reason}`), never silent.
//!
//! ```no_run
//! use otel_pipeline_core::Pipeline;
//! use otel_receivers::jaeger::{JaegerConfig, JaegerReceiver};
//! # async fn run(exporter: otel_pipeline_core::boxed::BoxExporter<otel_pipeline_core::Traces>) -> Result<(), Box<dyn std::error::Error>> {
//! let jaeger = JaegerReceiver::new(JaegerConfig {
//!     grpc: Some("0.0.0.0:14250".parse()?),
//!     thrift_http: Some("0.0.0.0:14268".parse()?),
//!     thrift_compact: Some("0.0.0.0:6831".parse()?),
//!     ..JaegerConfig::default()
//! });
//! let pipeline = Pipeline::traces()
//!     .receiver(jaeger.traces())
//!     .exporter(exporter)
//!     .build()?
//!     .start()
//!     .await?;
//! # let _ = pipeline; Ok(()) }
//! ```

pub(crate) mod model;
pub(crate) mod thrift;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use hyper::body::Incoming;
use hyper::{Request, Response};
use otel_pipeline_core::{Batch, ClientInfo, ComponentId, Traces};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::otlp::http_api::{ConnAuth, Peer, Reply, ResBody, Shared, fail, plain, receive};
use crate::otlp::{Dialect, OtlpConfig, OtlpReceiver, OtlpSignalReceiver};
use crate::zipkin::TRANSLATION_NOTES;
use model::{JaegerBatch, Notes};
use thrift::Protocol;

/// Where the Jaeger receiver listens; `None` turns a protocol off.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JaegerConfig {
    /// gRPC `api_v2` (the Collector's default `localhost:14250`).
    pub grpc: Option<SocketAddr>,
    /// Thrift over HTTP (`localhost:14268`).
    pub thrift_http: Option<SocketAddr>,
    /// The agent's compact Thrift over UDP (`localhost:6831`).
    pub thrift_compact: Option<SocketAddr>,
    /// The agent's binary Thrift over UDP (`localhost:6832`).
    pub thrift_binary: Option<SocketAddr>,
    /// UDP bounds, for both UDP endpoints.
    pub udp: UdpLimits,
    /// The gRPC and HTTP server's settings (limits, TLS, authentication); its `grpc` and
    /// `http` addresses are replaced by the two above.
    pub server: OtlpConfig,
}

/// Bounds of a UDP endpoint (the Collector's `server` settings of the agent protocols).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpLimits {
    /// Packets waiting to be translated; one more is dropped and counted. Default 1000.
    pub queue_size: usize,
    /// The largest packet read (bytes); a longer one is cut and fails to parse. Default
    /// 65 000.
    pub max_packet_size: usize,
    /// Tasks translating and delivering packets. Default 10.
    pub workers: usize,
}

impl Default for UdpLimits {
    fn default() -> Self {
        Self {
            queue_size: 1000,
            max_packet_size: 65_000,
            workers: 10,
        }
    }
}

/// The Jaeger receiver. Cheap to clone.
#[derive(Clone, Debug)]
pub struct JaegerReceiver(OtlpReceiver);

impl JaegerReceiver {
    /// A receiver for `config`.
    pub fn new(config: JaegerConfig) -> Self {
        let mut udp = Vec::new();
        if let Some(a) = config.thrift_compact {
            udp.push((a, Protocol::Compact));
        }
        if let Some(a) = config.thrift_binary {
            udp.push((a, Protocol::Binary));
        }
        let server = OtlpConfig {
            grpc: config.grpc,
            http: config.thrift_http,
            ..config.server
        };
        Self(OtlpReceiver::speaking(
            server,
            Dialect::Jaeger(Arc::new(UdpEndpoints {
                endpoints: udp,
                limits: config.udp,
                bound: parking_lot::Mutex::default(),
            })),
            "jaeger",
        ))
    }

    /// Use another id (`jaeger/legacy`).
    pub fn with_id(self, id: ComponentId) -> Self {
        Self(self.0.with_id(id))
    }

    /// Listen hosts that did not resolve when configured (from the YAML loader).
    pub(crate) fn with_unresolved(self, unresolved: Vec<(String, String)>) -> Self {
        Self(self.0.with_unresolved(unresolved))
    }

    /// The part that feeds a trace pipeline.
    pub fn traces(&self) -> OtlpSignalReceiver<Traces> {
        self.0.traces()
    }

    /// The addresses bound once started: gRPC, Thrift HTTP, compact UDP, binary UDP.
    pub fn local_addrs(&self) -> JaegerAddrs {
        let tcp = self.0.local_addrs();
        let mut addrs = JaegerAddrs {
            grpc: tcp.grpc,
            thrift_http: tcp.http,
            ..JaegerAddrs::default()
        };
        if let Dialect::Jaeger(udp) = self.0.dialect() {
            for (addr, p) in udp.bound.lock().iter() {
                match p {
                    Protocol::Compact => addrs.thrift_compact = Some(*addr),
                    Protocol::Binary => addrs.thrift_binary = Some(*addr),
                }
            }
        }
        addrs
    }
}

/// The addresses a [`JaegerReceiver`] bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JaegerAddrs {
    /// gRPC.
    pub grpc: Option<SocketAddr>,
    /// Thrift over HTTP.
    pub thrift_http: Option<SocketAddr>,
    /// Compact Thrift over UDP.
    pub thrift_compact: Option<SocketAddr>,
    /// Binary Thrift over UDP.
    pub thrift_binary: Option<SocketAddr>,
}

/// The UDP side of a Jaeger receiver.
#[derive(Debug)]
pub(crate) struct UdpEndpoints {
    endpoints: Vec<(SocketAddr, Protocol)>,
    limits: UdpLimits,
    bound: parking_lot::Mutex<Vec<(SocketAddr, Protocol)>>,
}

impl PartialEq for UdpEndpoints {
    fn eq(&self, other: &Self) -> bool {
        self.endpoints == other.endpoints && self.limits == other.limits
    }
}

/// Translate batches, count what was noticed, and wrap them for the pipeline.
fn translate(
    shared: &Shared,
    batches: Vec<JaegerBatch>,
    format: &'static str,
    client: Arc<ClientInfo>,
) -> Result<Batch<Traces>, String> {
    let mut notes = Notes::default();
    let request = model::to_otlp(batches, &mut notes)?;
    if notes.trace_id_64bit > 0
        && let Some(sink) = shared.sinks.get::<Traces>()
    {
        sink.telemetry
            .counter(
                &TRANSLATION_NOTES,
                &[("format", format), ("note", "trace_id_64bit")],
            )
            .add(notes.trace_id_64bit as u64);
    }
    Ok(Batch::with_client(request, client))
}

/// `POST /api/traces`: one Thrift `Batch`.
pub(crate) async fn handle_http(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: Peer,
    conn_auth: ConnAuth,
) -> Response<ResBody> {
    if req.uri().path() != "/api/traces" {
        return plain(
            StatusCode::NOT_FOUND,
            format!("no Jaeger endpoint at {}", req.uri().path()),
        );
    }
    if req.method() != Method::POST {
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "/api/traces accepts POST only".into(),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    if shared.sinks.get::<Traces>().is_none() {
        return plain(
            StatusCode::NOT_FOUND,
            "this receiver has no traces pipeline".into(),
        );
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let protocol = match content_type.as_str() {
        "application/x-thrift" | "application/vnd.apache.thrift.binary" => Protocol::Binary,
        "application/vnd.apache.thrift.compact" => Protocol::Compact,
        other => {
            return fail::<Traces>(
                &shared,
                Reply::Text,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "unsupported content type {other:?}: use application/x-thrift or \
                     application/vnd.apache.thrift.binary / .compact"
                ),
            );
        }
    };
    let (body, client, _held) =
        match receive::<Traces>(&shared, req, peer, conn_auth, Reply::Text).await {
            Ok(received) => received,
            Err(response) => return response,
        };
    let parsed = thrift::read_struct(&body, protocol).and_then(|b| model::thrift_batch(&b));
    let batch = match parsed.and_then(|b| {
        check_count(&shared, b.spans.len())?;
        translate(&shared, vec![b], "jaeger_thrift_http", client)
    }) {
        Ok(batch) => batch,
        Err(e) => {
            let (status, reason) = if e.contains("more than the limit") {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_many_items")
            } else {
                (StatusCode::BAD_REQUEST, "malformed")
            };
            return fail::<Traces>(
                &shared,
                Reply::Text,
                status,
                reason,
                format!("Jaeger Thrift batch: {e}"),
            );
        }
    };
    crate::zipkin::answer(&shared, batch).await
}

fn check_count(shared: &Shared, n: usize) -> Result<(), String> {
    let most = shared.config.limits.max_items_per_request;
    if n > most {
        return Err(format!(
            "the request carries {n} spans, more than the limit of {most}"
        ));
    }
    Ok(())
}

/// `PostSpans`: one `PostSpansRequest`.
pub(crate) async fn handle_grpc(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: Peer,
    conn_auth: ConnAuth,
) -> Response<ResBody> {
    use crate::otlp::grpc_api::{
        Code, ErrorDetails, Status, StatusExt, ok_response, read_unary, refuse,
    };
    if req.uri().path() != model::POST_SPANS_PATH {
        return refuse::<Traces>(
            &shared,
            None,
            &Status::unimplemented(format!("unknown method {}", req.uri().path())),
        );
    }
    if shared.sinks.get::<Traces>().is_none() {
        return refuse::<Traces>(
            &shared,
            None,
            &Status::unimplemented("this receiver has no traces pipeline"),
        );
    }
    let (message, client, _held) = match read_unary::<Traces>(&shared, req, peer, conn_auth).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    // Spans counted in the bytes before decoding (a batch of empty spans would decode to
    // hundreds of bytes each first).
    let spans_in_bytes = otel_pipeline_core::wire::fields(&message)
        .filter_map(|(f, w)| match (f, w) {
            (1, otel_pipeline_core::wire::Wire::Len(b)) => Some(b),
            _ => None,
        })
        .map(|batch| {
            otel_pipeline_core::wire::fields(batch)
                .filter(|(f, _)| *f == 1)
                .count()
        })
        .sum::<usize>();
    let decoded = check_count(&shared, spans_in_bytes)
        .and_then(|()| {
            <model::PostSpansRequest as prost::Message>::decode(message).map_err(|e| e.to_string())
        })
        .and_then(|r| {
            let b = r.batch.unwrap_or_default();
            check_count(&shared, b.spans.len())?;
            translate(&shared, vec![b], "jaeger_proto", client)
        });
    let batch = match decoded {
        Ok(b) => b,
        Err(e) => {
            let reason = if e.contains("more than the limit") {
                "too_many_items"
            } else {
                "malformed"
            };
            return refuse::<Traces>(
                &shared,
                Some(reason),
                &Status::invalid_argument(format!("Jaeger PostSpans: {e}")),
            );
        }
    };
    use crate::otlp::http_api::{Outcome, deliver};
    match deliver::<Traces>(&shared, batch).await {
        None => refuse::<Traces>(&shared, None, &Status::unimplemented("no traces pipeline")),
        Some(Outcome::Accepted | Outcome::Rejected { .. }) => {
            ok_response(&model::PostSpansResponse {})
        }
        Some(Outcome::Refused {
            retry_after,
            message,
        }) => refuse::<Traces>(
            &shared,
            None,
            &Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
        ),
    }
}

/// Bind the UDP endpoints and serve them until `stop` says so.
pub(crate) async fn start_udp(
    shared: &Arc<Shared>,
    udp: &Arc<UdpEndpoints>,
    stop: &watch::Receiver<Option<tokio::time::Instant>>,
) -> Result<Vec<JoinHandle<()>>, otel_pipeline_core::BoxError> {
    let mut tasks = Vec::new();
    let mut bound = Vec::new();
    for (addr, protocol) in &udp.endpoints {
        let socket = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(|e| format!("Jaeger {protocol:?} Thrift cannot listen on {addr}/udp: {e}"))?;
        bound.push((socket.local_addr()?, *protocol));
        let (tx, rx) = mpsc::channel::<(Bytes, SocketAddr)>(udp.limits.queue_size.max(1));
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..udp.limits.workers.max(1) {
            let rx = Arc::clone(&rx);
            let shared = Arc::clone(shared);
            let protocol = *protocol;
            tasks.push(tokio::spawn(async move {
                loop {
                    let Some((packet, from)) = rx.lock().await.recv().await else {
                        return;
                    };
                    udp_packet(&shared, &packet, from, protocol).await;
                }
            }));
        }
        let mut stop = stop.clone();
        let shared = Arc::clone(shared);
        let max = udp.limits.max_packet_size.max(1);
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; max];
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    got = socket.recv_from(&mut buf) => {
                        let Ok((n, from)) = got else { continue };
                        let packet = Bytes::copy_from_slice(&buf[..n]);
                        if tx.try_send((packet, from)).is_err() {
                            crate::otlp::count_failed_traces(&shared, "queue_full");
                        }
                    }
                }
            }
        }));
    }
    *udp.bound.lock() = bound;
    Ok(tasks)
}

async fn udp_packet(shared: &Arc<Shared>, packet: &[u8], from: SocketAddr, protocol: Protocol) {
    let format = match protocol {
        Protocol::Compact => "jaeger_thrift_compact",
        Protocol::Binary => "jaeger_thrift_binary",
    };
    let parsed =
        thrift::read_message(packet, protocol).and_then(|(name, args)| match name.as_str() {
            "emitBatch" => model::thrift_batch(args.field(1).ok_or("emitBatch without a batch")?),
            "emitZipkinBatch" => Err("emitZipkinBatch (Zipkin v1 Thrift) is not supported".into()),
            other => Err(format!("unknown method {other:?}")),
        });
    let client = Arc::new(ClientInfo {
        addr: Some(from),
        ..ClientInfo::default()
    });
    let batch = match parsed.and_then(|b| {
        check_count(shared, b.spans.len())?;
        translate(shared, vec![b], format, client)
    }) {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(%from, "dropped a Jaeger UDP packet: {e}");
            crate::otlp::count_failed_traces(shared, "malformed");
            return;
        }
    };
    // UDP cannot push back: a refusal is counted by `deliver` and the packet is gone.
    let _ = crate::otlp::http_api::deliver::<Traces>(shared, batch).await;
}

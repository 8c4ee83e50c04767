//! Abuse on loopback, bounded in count and time: slowloris, thousands of idle connections,
//! many slow 4 MiB bodies, gzip bombs over gRPC and HTTP, corrupt gzip, and garbage on the
//! gRPC port. The receiver stays up, the bytes it holds stay under the configured cap, and
//! the counters say what was refused.

// Test helpers unwrap: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use otel_pipeline_core::Telemetry;
use otel_receivers::{OtlpConfig, ReceiverLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

use common::{PROTO, Setup, gzip, http_post, proto_traces};

impl Setup {
    fn telemetry(&self) -> &Telemetry {
        self.running.telemetry()
    }

    /// A declared receiver metric, summed over its series with `attr` = `value`.
    fn metric(&self, name: &str, attr: Option<(&str, &str)>) -> i64 {
        self.telemetry()
            .snapshot()
            .iter()
            .filter(|p| p.name == name)
            .filter(|p| attr.is_none_or(|(k, v)| p.attribute(k) == Some(v)))
            .map(|p| p.value)
            .sum()
    }

    fn failed(&self, reason: &str) -> u64 {
        self.telemetry()
            .find(otel_pipeline_core::ComponentKind::Receiver, "otlp")
            .unwrap()
            .failed_requests(reason)
    }

    /// One good OTLP/HTTP request: the receiver still serves.
    async fn still_serves(&self) {
        let status = http_post(self.http, "/v1/traces", &[PROTO], proto_traces(2))
            .await
            .status;
        assert_eq!(status, 200, "the receiver stopped serving");
    }
}

/// A gzip body that inflates to `n` zero bytes.
fn bomb(n: usize) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..n >> 20 {
        enc.write_all(&zeros).unwrap();
    }
    enc.finish().unwrap()
}

/// A raw unary gRPC call with a framed, possibly compressed message: the `grpc-status`.
async fn grpc_call(addr: SocketAddr, message: &[u8], compressed: bool) -> String {
    grpc_call_encoded(addr, message, compressed.then_some("gzip")).await
}

/// As [`grpc_call`], compressed with `encoding` when given.
async fn grpc_call_encoded(addr: SocketAddr, message: &[u8], encoding: Option<&str>) -> String {
    let compressed = encoding.is_some();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut framed = vec![u8::from(compressed)];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    let mut req = http::Request::post(format!(
        "http://{addr}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers");
    if let Some(encoding) = encoding {
        req = req.header("grpc-encoding", encoding);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(framed))).unwrap())
        .await
        .unwrap();
    let headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    trailers
        .get("grpc-status")
        .or_else(|| headers.get("grpc-status"))
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Whether the server closed `stream` (read returns 0 or an error) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // a 408 or GOAWAY before the close
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_cut_at_the_header_deadline() {
    let s = Setup::new(OtlpConfig {
        limits: ReceiverLimits {
            header_read_timeout: Duration::from_millis(500),
            ..ReceiverLimits::default()
        },
        ..OtlpConfig::loopback()
    })
    .await;
    // Twenty clients on each port, each sending one header byte every 100 ms.
    let request =
        b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\n";
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (addr, bytes): (SocketAddr, &'static [u8]) = if i % 2 == 0 {
            (s.http, request)
        } else {
            (s.grpc, preface)
        };
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let started = Instant::now();
            for b in bytes.iter().cycle() {
                if stream.write_all(&[*b]).await.is_err() {
                    break;
                }
                if started.elapsed() > Duration::from_secs(4) {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Some(started.elapsed())
        }));
    }
    for t in tasks {
        let held = t.await.unwrap().expect("a slow client was never cut off");
        assert!(held < Duration::from_secs(3), "held for {held:?}");
    }
    assert!(
        s.metric(
            "otelcol_receiver_closed_connections",
            Some(("reason", "header_read_timeout"))
        ) >= 40,
        "counted: {}",
        s.metric(
            "otelcol_receiver_closed_connections",
            Some(("reason", "header_read_timeout"))
        )
    );
    s.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_capped_and_closed() {
    let s = Setup::new(OtlpConfig {
        limits: ReceiverLimits {
            max_connections: 200,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_millis(700),
            ..ReceiverLimits::default()
        },
        ..OtlpConfig::loopback()
    })
    .await;
    // 2 000 connections that never send a byte: 200 are held, the rest closed at accept.
    let mut conns = Vec::new();
    for i in 0..2000 {
        let addr = if i % 2 == 0 { s.http } else { s.grpc };
        conns.push(TcpStream::connect(addr).await.unwrap());
    }
    let refused = || {
        s.metric(
            "otelcol_receiver_refused_connections",
            Some(("reason", "max_connections")),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while refused() < 1800 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(refused(), 1800);
    assert!(s.metric("otelcol_receiver_open_connections", None) <= 200);
    // The held ones are closed once idle; then a client gets in again.
    let mut closed = 0;
    for c in conns.iter_mut() {
        if closed_within(c, Duration::from_secs(3)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 2000, "every idle connection was closed");
    assert!(
        s.metric(
            "otelcol_receiver_closed_connections",
            Some(("reason", "idle_timeout"))
        ) >= 200
    );
    drop(conns);
    s.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_big_bodies_stay_within_the_byte_budget() {
    const CAP: usize = 10 << 20;
    let s = Arc::new(
        Setup::new(OtlpConfig {
            max_request_bytes: 5 << 20,
            limits: ReceiverLimits {
                max_in_flight_bytes: CAP,
                body_read_timeout: Duration::from_secs(3),
                ..ReceiverLimits::default()
            },
            ..OtlpConfig::loopback()
        })
        .await,
    );
    // Watch the bytes held while twelve clients upload 4 MiB each, 256 KiB every 20 ms.
    let peak = Arc::new(AtomicI64::new(0));
    let watcher = {
        let (s, peak) = (Arc::clone(&s), Arc::clone(&peak));
        tokio::spawn(async move {
            loop {
                let now = s.metric("otelcol_receiver_in_flight_bytes", None);
                peak.fetch_max(now, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let body = Bytes::from(vec![0x0au8; 4 << 20]);
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (addr, body) = (s.http, body.clone());
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
            let req = http::Request::post("/v1/traces")
                .header("host", addr.to_string())
                .header("content-type", "application/x-protobuf")
                .header("content-length", body.len().to_string())
                .body(ChannelBody(rx))
                .unwrap();
            let feeder = tokio::spawn(async move {
                for chunk in body.chunks(256 << 10) {
                    if tx.send(Bytes::copy_from_slice(chunk)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
            let status = match sender.send_request(req).await {
                Ok(resp) => resp.status().as_u16(),
                Err(_) => 0, // closed mid-upload after the answer
            };
            feeder.abort();
            status
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    watcher.abort();
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        peak as usize <= CAP,
        "held {peak} bytes, over the cap of {CAP}"
    );
    assert!(peak > 0, "the gauge moved");
    // Some were refused as back-pressure (429, retryable); none was lost uncounted.
    let refused = statuses.iter().filter(|s| **s == 429).count() as u64;
    assert!(refused >= 1, "statuses: {statuses:?}");
    assert_eq!(s.failed("in_flight_limit"), refused);
    // The others were read whole (and then refused as malformed zeros) or timed out.
    assert!(
        statuses.iter().all(|s| [400, 408, 429].contains(s)),
        "statuses: {statuses:?}"
    );
    assert_eq!(
        s.metric("otelcol_receiver_in_flight_bytes", None),
        0,
        "all given back"
    );
    s.still_serves().await;
}

/// A request body fed chunk by chunk from a channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bombs_corrupt_gzip_and_garbage_are_refused_and_counted() {
    let s = Setup::new(OtlpConfig {
        max_decompressed_bytes: 8 << 20,
        ..OtlpConfig::loopback()
    })
    .await;
    // 256 MiB of zeros in about 250 KiB of gzip.
    let bomb = bomb(256 << 20);
    assert!(bomb.len() < 1 << 20);

    // HTTP: 413, counted, and not inflated past the limit.
    let status = http_post(
        s.http,
        "/v1/traces",
        &[PROTO, ("content-encoding", "gzip")],
        bomb.clone(),
    )
    .await
    .status;
    assert_eq!(status, 413);
    assert_eq!(s.failed("decompressed_too_large"), 1);
    // gRPC: INVALID_ARGUMENT (permanent: clients must not retry a bomb), counted.
    assert_eq!(grpc_call(s.grpc, &bomb, true).await, "3");
    assert_eq!(s.failed("decompressed_too_large"), 2);
    // Corrupt gzip over gRPC: INVALID_ARGUMENT, counted as malformed (tonic said INTERNAL).
    let mut corrupt = gzip(&proto_traces(5));
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    corrupt.truncate(corrupt.len() - 4);
    assert_eq!(grpc_call(s.grpc, &corrupt, true).await, "3");
    assert_eq!(s.failed("malformed"), 1);
    // Good gzip over gRPC still works.
    assert_eq!(grpc_call(s.grpc, &gzip(&proto_traces(5)), true).await, "0");
    // Garbage on the gRPC port: the connection is closed, counted, the receiver serves on.
    for _ in 0..5 {
        let mut stream = TcpStream::connect(s.grpc).await.unwrap();
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let _ = stream.write_all(&garbage).await;
        assert!(closed_within(&mut stream, Duration::from_secs(3)).await);
    }
    assert!(
        eventually_metric(
            &s,
            "otelcol_receiver_closed_connections",
            ("reason", "protocol_error"),
            5
        )
        .await,
        "garbage counted: {}",
        s.metric(
            "otelcol_receiver_closed_connections",
            Some(("reason", "protocol_error"))
        )
    );
    assert_eq!(s.metric("otelcol_receiver_in_flight_bytes", None), 0);
    s.still_serves().await;
}

/// zstd and deflate (zlib) bodies are read like gzip ones, on both protocols, within the
/// same limits: a zstd bomb is stopped at `max_decompressed_bytes` and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_and_deflate_bodies_are_read_and_their_bombs_refused() {
    let s = Setup::new(OtlpConfig {
        max_decompressed_bytes: 8 << 20,
        ..OtlpConfig::loopback()
    })
    .await;
    let body = proto_traces(5);
    let zstd_body = zstd::bulk::compress(&body, 3).unwrap();
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    zlib.write_all(&body).unwrap();
    let zlib_body = zlib.finish().unwrap();
    for (encoding, bytes) in [("zstd", &zstd_body), ("deflate", &zlib_body)] {
        let r = http_post(
            s.http,
            "/v1/traces",
            &[PROTO, ("content-encoding", encoding)],
            bytes.clone(),
        )
        .await;
        assert_eq!(r.status, 200, "{encoding}");
    }
    assert_eq!(
        grpc_call_encoded(s.grpc, &zstd_body, Some("zstd")).await,
        "0"
    );
    assert_eq!(s.metric("otelcol_receiver_accepted_spans", None), 15);

    // 256 MiB of zeros in a few KiB of zstd: 413 / INVALID_ARGUMENT, counted.
    let zeros = vec![0u8; 256 << 20];
    let bomb = zstd::bulk::compress(&zeros, 3).unwrap();
    drop(zeros);
    assert!(bomb.len() < 1 << 20);
    let r = http_post(
        s.http,
        "/v1/traces",
        &[PROTO, ("content-encoding", "zstd")],
        bomb.clone(),
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(grpc_call_encoded(s.grpc, &bomb, Some("zstd")).await, "3");
    assert_eq!(s.failed("decompressed_too_large"), 2);
    // Corrupt zstd: 400, malformed.
    let mut corrupt = zstd_body.clone();
    corrupt.truncate(corrupt.len() / 2);
    let r = http_post(
        s.http,
        "/v1/traces",
        &[PROTO, ("content-encoding", "zstd")],
        corrupt,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(s.failed("malformed"), 1);
    // An encoding nobody supports: 415 naming the ones we do.
    let r = http_post(
        s.http,
        "/v1/traces",
        &[PROTO, ("content-encoding", "br")],
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 415);
    assert_eq!(s.metric("otelcol_receiver_in_flight_bytes", None), 0);
    s.still_serves().await;
}

async fn eventually_metric(s: &Setup, name: &str, attr: (&str, &str), at_least: i64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if s.metric(name, Some(attr)) >= at_least {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// 8 MiB of empty 2-byte spans is 4 million spans (a few KB gzipped): refused whole as
/// too many items, on both protocols, counted, before any stage pays per span. Under the
/// limit, a request of many small spans is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_millions_of_empty_spans_is_refused_and_counted() {
    let s = Setup::new(OtlpConfig {
        max_request_bytes: 16 << 20,
        max_decompressed_bytes: 16 << 20,
        ..OtlpConfig::loopback()
    })
    .await;
    // ResourceSpans { ScopeSpans { spans: [Span {}, Span {}, ...] } }: each span `12 00`.
    let request = |spans: usize| {
        let mut scope = Vec::with_capacity(spans * 2);
        for _ in 0..spans {
            scope.extend_from_slice(&[0x12, 0x00]);
        }
        let mut rs = Vec::new();
        otel_pipeline_core::wire::put_len_header(&mut rs, 2, scope.len());
        rs.extend_from_slice(&scope);
        let mut req = Vec::new();
        otel_pipeline_core::wire::put_len_header(&mut req, 1, rs.len());
        req.extend_from_slice(&rs);
        req
    };
    let flood = request(4_000_000);
    let zipped = gzip(&flood);
    assert!(zipped.len() < 64 << 10, "{} bytes gzipped", zipped.len());
    let status = http_post(
        s.http,
        "/v1/traces",
        &[PROTO, ("content-encoding", "gzip")],
        zipped.clone(),
    )
    .await
    .status;
    assert_eq!(status, 413);
    assert_eq!(s.failed("too_many_items"), 1);
    assert_eq!(grpc_call(s.grpc, &zipped, true).await, "3");
    assert_eq!(s.failed("too_many_items"), 2);
    assert_eq!(s.metric("otelcol_receiver_in_flight_bytes", None), 0);
    // 50 000 small spans: under the default limit, taken.
    let status = http_post(s.http, "/v1/traces", &[PROTO], request(50_000))
        .await
        .status;
    assert_eq!(status, 200);
    s.still_serves().await;
}

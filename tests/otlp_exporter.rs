//! The OTLP exporter's failure handling against a real receiver on loopback: retryable
//! answers are retried (honouring RetryInfo / Retry-After), permanent ones are counted and
//! not retried; and the receiver hands client address and metadata to the pipeline.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use otel_pipeline::DirectSender;
use otel_pipeline::exporters::otlp::{
    OtlpExporterConfig, Protocol, RetryConfig, SendingQueueConfig,
};
use otel_pipeline::receivers::OtlpConfig;
use otel_pipeline::testing::generate_traces;
use otel_pipeline::{ComponentKind, RunningPipeline, Traces};
use prost::Message;

mod common;
use common::gateway;

async fn agent(endpoint: String, protocol: Protocol) -> (RunningPipeline, DirectSender<Traces>) {
    common::agent(OtlpExporterConfig {
        endpoint,
        protocol,
        retry: RetryConfig {
            initial_interval: Duration::from_millis(20),
            max_interval: Duration::from_millis(100),
            ..RetryConfig::default()
        },
        queue: SendingQueueConfig {
            enabled: false,
            ..SendingQueueConfig::default()
        },
        ..OtlpExporterConfig::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_retried_until_the_backend_takes_the_data() {
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let (gw, otlp, out) = gateway(OtlpConfig {
            default_retry_after: Duration::from_millis(100),
            ..OtlpConfig::loopback()
        })
        .await;
        let addrs = otlp.local_addrs();
        let addr = if protocol == Protocol::Grpc {
            addrs.grpc
        } else {
            addrs.http
        }
        .expect("addr");
        let (agent, sender) = agent(format!("http://{addr}"), protocol).await;
        out.set_refusing(true);
        let recover = {
            let out = out.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(400)).await;
                out.set_refusing(false);
            })
        };
        let started = Instant::now();
        sender
            .send(generate_traces(1, 4, 1))
            .await
            .expect("delivered after retries");
        assert!(
            started.elapsed() >= Duration::from_millis(350),
            "{protocol:?} waited for the backend"
        );
        recover.await.expect("join");
        assert_eq!(out.item_count(), 4);
        let refused = gw
            .telemetry()
            .find(ComponentKind::Receiver, "otlp")
            .expect("receiver")
            .refused();
        assert!(
            refused >= 4,
            "{protocol:?}: the backend refused at least once ({refused})"
        );
        let exporter = agent
            .telemetry()
            .find(ComponentKind::Exporter, "otlp")
            .expect("exporter");
        assert_eq!((exporter.sent(), exporter.send_failed()), (4, 0));
        agent
            .shutdown(Duration::from_secs(2))
            .await
            .expect("agent stops");
        gw.shutdown(Duration::from_secs(2))
            .await
            .expect("gateway stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_are_counted_and_not_retried() {
    let (gw, otlp, _out) = gateway(OtlpConfig::loopback()).await;
    let http = otlp.local_addrs().http.expect("http");
    // A path the receiver does not serve: 404, permanent.
    let (agent1, sender) = agent(format!("http://{http}/v1/nothing"), Protocol::HttpProtobuf).await;
    let started = Instant::now();
    let err = sender
        .send(generate_traces(1, 3, 2))
        .await
        .expect_err("permanent failure");
    assert!(!err.is_retryable());
    assert!(err.reason().contains("404"), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "not retried"
    );
    let exporter = agent1
        .telemetry()
        .find(ComponentKind::Exporter, "otlp")
        .expect("exporter");
    assert_eq!((exporter.sent(), exporter.send_failed()), (0, 3));
    // A partial success counts the rejected items as failed, the rest as sent.
    gw.shutdown(Duration::from_secs(2)).await.expect("stops");
    let (gw, otlp, out) = gateway(OtlpConfig::loopback()).await;
    out.set_rejecting(true);
    let (agent2, sender2) = agent(
        format!("http://{}", otlp.local_addrs().grpc.expect("grpc")),
        Protocol::Grpc,
    )
    .await;
    let err = sender2
        .send(generate_traces(1, 5, 3))
        .await
        .expect_err("rejected by the backend");
    assert!(err.reason().contains("rejected 5"), "{err}");
    let exporter = agent2
        .telemetry()
        .find(ComponentKind::Exporter, "otlp")
        .expect("exporter");
    assert_eq!((exporter.sent(), exporter.send_failed()), (0, 5));
    for p in [agent1, agent2, gw] {
        p.shutdown(Duration::from_secs(2)).await.expect("stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_address_and_metadata_reach_the_pipeline() {
    let (gw, otlp, out) = gateway(OtlpConfig {
        include_metadata: true,
        ..OtlpConfig::loopback()
    })
    .await;
    let addr = otlp.local_addrs().http.expect("http");
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let local = stream.local_addr().expect("local addr");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::post("/v1/traces")
        .header("host", addr.to_string())
        .header("content-type", "application/x-protobuf")
        .header("x-tenant", "acme")
        .body(Full::new(Bytes::from(
            generate_traces(1, 1, 4).encode_to_vec(),
        )))
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await;
    let batch = out.batches().remove(0);
    let client = batch.client.expect("client info");
    assert_eq!(
        client.addr,
        Some(local),
        "the peer address, for k8sattributes' pod association"
    );
    assert_eq!(client.metadata("X-Tenant"), Some("acme"));
    gw.shutdown(Duration::from_secs(2)).await.expect("stops");
}

/// A backend's `Retry-After` is honoured within the retry bounds: `18446744073709551615`
/// (u64::MAX seconds) neither panics a worker nor stalls it, and `0` does not spin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_retry_after_values_are_clamped() {
    use std::sync::atomic::Ordering;
    let (addr, seen, times) = fake_backend(|n| match n {
        0 => b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 18446744073709551615\r\ncontent-length: 0\r\n\r\n",
        1 | 2 => b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0\r\ncontent-length: 0\r\n\r\n",
        _ => b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
    })
    .await;
    let mut config = OtlpExporterConfig {
        endpoint: format!("http://{addr}"),
        protocol: Protocol::HttpProtobuf,
        retry: RetryConfig {
            initial_interval: Duration::from_millis(40),
            max_interval: Duration::from_millis(200),
            max_elapsed: Duration::from_secs(10),
            // No jitter: a wait may then be no shorter than 40 ms (with the default 0.5,
            // a 60 ms wait could be 30 ms, under the bound below, and the test flaked).
            randomization: 0.0,
            ..RetryConfig::default()
        },
        ..OtlpExporterConfig::default()
    };
    config.queue.enabled = false;
    let (running, sender) = common::agent(config).await;
    let started = Instant::now();
    sender
        .send(generate_traces(1, 3, 4))
        .await
        .expect("delivered after the refusals");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "not stalled by a huge Retry-After"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 4);
    let t = times.all();
    for pair in t.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(35),
            "no spin on Retry-After: 0: {:?}",
            pair[1] - pair[0]
        );
    }
    running
        .shutdown(Duration::from_secs(2))
        .await
        .expect("stops");
}

/// A backend that answers every request `429 Retry-After: 0`, for 5 s, with 20 spans'
/// worth of requests and `initial_interval: 100ms`: the wait is the longer of the backoff
/// and `Retry-After` (as in the Collector), so the backoff grows and the backend sees a
/// handful of requests, not hundreds (about 500 when `Retry-After` replaced the backoff).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_keeps_refusing_is_not_hammered() {
    use std::sync::atomic::Ordering;
    let (addr, seen, _) = fake_backend(|_| {
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0\r\ncontent-length: 0\r\n\r\n"
    })
    .await;
    let mut config = OtlpExporterConfig {
        endpoint: format!("http://{addr}"),
        protocol: Protocol::HttpProtobuf,
        retry: RetryConfig {
            initial_interval: Duration::from_millis(100),
            max_elapsed: Duration::from_secs(60),
            ..RetryConfig::default()
        },
        ..OtlpExporterConfig::default()
    };
    config.queue.num_consumers = 4;
    let (running, sender) = common::agent(config).await;
    for seed in 0..20 {
        sender
            .send(generate_traces(1, 1, seed))
            .await
            .expect("queued");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let requests = seen.load(Ordering::SeqCst);
    // 4 workers, each backing off 100 ms, 150 ms, 225 ms, ... (jitter +-50 %): about
    // 8 requests each in 5 s.
    assert!(requests >= 4, "the backend was asked: {requests}");
    assert!(requests <= 60, "hammered: {requests} requests in 5 s");
    let _ = running.shutdown(Duration::from_millis(200)).await;
}

/// An HTTP backend on loopback answering request `n` (from 0) with `answer(n)`: its
/// address, the requests seen, and when each arrived.
async fn fake_backend(
    answer: fn(usize) -> &'static [u8],
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<arrivals::Times>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = std::sync::Arc::new(AtomicUsize::new(0));
    let times = std::sync::Arc::new(arrivals::Times::default());
    let (count, log) = (std::sync::Arc::clone(&seen), std::sync::Arc::clone(&times));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let (count, log) = (std::sync::Arc::clone(&count), std::sync::Arc::clone(&log));
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    // One request per read is enough for these small bodies.
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    log.push(Instant::now());
                    let reply = answer(count.fetch_add(1, Ordering::SeqCst));
                    if s.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen, times)
}

mod arrivals {
    /// Request arrival times.
    #[derive(Default)]
    pub(super) struct Times(std::sync::Mutex<Vec<std::time::Instant>>);
    impl Times {
        pub(super) fn push(&self, t: std::time::Instant) {
            self.0.lock().expect("times").push(t);
        }
        pub(super) fn all(&self) -> Vec<std::time::Instant> {
            self.0.lock().expect("times").clone()
        }
    }
}

/// Every compression the exporter offers, over every protocol, reaches a real receiver
/// whole: gzip, zstd and none, on gRPC, OTLP/HTTP protobuf and OTLP/HTTP JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compression_over_every_protocol_arrives_whole() {
    use otel_pipeline::exporters::otlp::Compression;
    let (backend, otlp, exported) = gateway(OtlpConfig::loopback()).await;
    let addrs = otlp.local_addrs();
    let mut expected = 0;
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        for protocol in [Protocol::Grpc, Protocol::HttpProtobuf, Protocol::HttpJson] {
            let endpoint = match protocol {
                Protocol::Grpc => format!("http://{}", addrs.grpc.unwrap()),
                _ => format!("http://{}", addrs.http.unwrap()),
            };
            let (client, sender) = common::agent(OtlpExporterConfig {
                endpoint,
                protocol,
                compression,
                queue: SendingQueueConfig {
                    enabled: false,
                    ..SendingQueueConfig::default()
                },
                ..OtlpExporterConfig::default()
            })
            .await;
            sender
                .send(generate_traces(3, 4, expected as u64))
                .await
                .unwrap_or_else(|e| panic!("{compression:?} over {protocol:?}: {e}"));
            client.shutdown(Duration::from_secs(5)).await.unwrap();
            expected += 12;
            assert_eq!(
                exported.item_count(),
                expected,
                "{compression:?} over {protocol:?}"
            );
        }
    }
    backend.shutdown(Duration::from_secs(5)).await.unwrap();
}

//! A receiver under the memory limiter answers with back-pressure: HTTP 429 with
//! `Retry-After` and gRPC `RESOURCE_EXHAUSTED`, and recovers when memory falls.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use otel_pipeline::Pipeline;
use otel_pipeline::processors::memory_limiter::{ManualMemory, MemoryLimiter, MemoryLimiterConfig};
use otel_pipeline::receivers::{OtlpConfig, OtlpReceiver};
use otel_pipeline::testing::{InMemoryExporter, generate_traces};
use prost::Message;

async fn post(addr: std::net::SocketAddr, body: Vec<u8>) -> (u16, Option<String>) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::post("/v1/traces")
        .header("host", addr.to_string())
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap_or("").to_string());
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    (status, retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_pushes_back_while_memory_is_high() {
    const MIB: u64 = 1 << 20;
    let probe = ManualMemory::new(10 * MIB, 1024 * MIB);
    let otlp = OtlpReceiver::new(OtlpConfig::loopback());
    let (exporter, exported) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .receiver(otlp.traces())
        .processor(
            MemoryLimiter::new(MemoryLimiterConfig {
                check_interval: Duration::from_millis(50),
                limit_mib: 100,
                spike_limit_mib: 20,
                ..Default::default()
            })
            .with_probe(probe.clone()),
        )
        .exporter(exporter)
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");
    let http = otlp.local_addrs().http.expect("http");
    let body = || generate_traces(1, 3, 1).encode_to_vec();
    assert_eq!(post(http, body()).await.0, 200);

    probe.set_used(90 * MIB); // over the soft limit of 80 MiB
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (status, retry_after) = post(http, body()).await;
    assert_eq!(status, 429);
    assert_eq!(
        retry_after.as_deref(),
        Some("1"),
        "rounded up to whole seconds"
    );

    probe.set_used(50 * MIB);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(post(http, body()).await.0, 200);
    assert_eq!(exported.item_count(), 6);
    running
        .shutdown(Duration::from_secs(5))
        .await
        .expect("stops");
}

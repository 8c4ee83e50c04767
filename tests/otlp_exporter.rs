//! The OTLP exporter's failure handling against a real receiver on loopback: retryable
//! answers are retried (honouring RetryInfo / Retry-After), permanent ones are counted and
//! not retried; and the receiver hands client address and metadata to the pipeline.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use otel_pipeline::exporters::otlp::{
    OtlpExporterConfig, Protocol, RetryConfig, SendingQueueConfig,
};
use otel_pipeline::receivers::OtlpConfig;
use otel_pipeline::testing::{InMemorySender, generate_traces};
use otel_pipeline::{ComponentKind, RunningPipeline, Traces};
use prost::Message;

mod common;
use common::gateway;

async fn agent(endpoint: String, protocol: Protocol) -> (RunningPipeline, InMemorySender<Traces>) {
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

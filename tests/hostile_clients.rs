//! Requests built to cost a gateway far more than their size, sent through a real OTLP
//! receiver to the tail sampler: what the gateway holds because of them stays near their
//! decoded size, and the byte bound counts it. (docs/reliability.md, "Hostile clients".)

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use otel_pipeline::processors::config::from_yaml;
use otel_pipeline::processors::tail_sampling::{TailSampler, TailSamplingConfig};
use otel_pipeline::proto::common::v1::{AnyValue, KeyValue, any_value::Value};
use otel_pipeline::proto::resource::v1::Resource;
use otel_pipeline::proto::trace::v1::Span;
use otel_pipeline::receivers::{OtlpConfig, OtlpReceiver};
use otel_pipeline::testing::{InMemoryExporter, eventually};
use otel_pipeline::{Pipeline, wire};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `POST /v1/traces` with a gzipped protobuf body over plain HTTP/1.1: the status code.
async fn post_gzipped(addr: SocketAddr, body: &[u8]) -> u16 {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(body).expect("gzip");
    let zipped = enc.finish().expect("gzip");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\n\
         content-encoding: gzip\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        zipped.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(&zipped).await.expect("body");
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply).await;
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// One `ResourceSpans` whose resource holds a 1 MiB attribute, with 2 000 scopes of one
/// small span each (2 000 traces): 1.1 MiB, a few KB gzipped. Held once per scope, the
/// resource took 2 GiB; shared, the gateway holds about the request's size, and the
/// sampler's byte gauge counts the resource once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_resource_over_many_scopes_is_held_once() {
    const SCOPES: usize = 2_000;
    let resource = Resource {
        attributes: vec![KeyValue {
            key: "padding".into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue("r".repeat(1 << 20))),
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut rs = Vec::new();
    wire::put_len_header(&mut rs, 1, resource.encoded_len());
    resource.encode(&mut rs).expect("resource");
    for i in 0..SCOPES {
        let span = Span {
            trace_id: (i as u128 + 1).to_be_bytes().to_vec(),
            span_id: vec![1; 8],
            name: "op".into(),
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            ..Default::default()
        };
        let mut scope = Vec::new();
        wire::put_len_header(&mut scope, 2, span.encoded_len());
        span.encode(&mut scope).expect("span");
        wire::put_len_header(&mut rs, 2, scope.len());
        rs.extend_from_slice(&scope);
    }
    let mut request = Vec::new();
    wire::put_len_header(&mut request, 1, rs.len());
    request.extend_from_slice(&rs);
    assert_eq!(wire::check_traces(&request), Ok(SCOPES));

    let config: TailSamplingConfig = from_yaml(
        "processors.tail_sampling",
        "decision_wait: 30s\nmax_buffered_bytes: 536870912\n\
         policies: [{ name: all, type: always_sample }]",
    )
    .expect("config");
    let otlp = OtlpReceiver::new(OtlpConfig::loopback());
    let (exporter, exported) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .receiver(otlp.traces())
        .processor(TailSampler::new(config))
        .exporter(exporter)
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");
    let before = rss();
    let status = post_gzipped(otlp.local_addrs().http.expect("http"), &request).await;
    assert_eq!(status, 200);
    let buffered = |name: &str| running.telemetry().sum(name, &[]);
    assert!(
        eventually(Duration::from_secs(10), || buffered(
            "otelcol_processor_tail_sampling_traces_buffered"
        ) == SCOPES as i64)
        .await,
        "buffered {}",
        buffered("otelcol_processor_tail_sampling_traces_buffered")
    );
    let grown = rss().saturating_sub(before);
    let decoded = request.len() as u64;
    assert!(
        grown < 2 * decoded + (32 << 20),
        "the gateway grew by {grown} bytes for a {decoded}-byte request"
    );
    // The byte bound counts the resource once, and the spans.
    let counted = buffered("otelcol_processor_tail_sampling_bytes_buffered") as u64;
    assert!(
        (1 << 20) < counted && counted < decoded + (1 << 20),
        "bytes_buffered {counted} for a {decoded}-byte request"
    );
    running
        .shutdown(Duration::from_secs(10))
        .await
        .expect("stops");
    // Decided at shutdown: every span leaves, each under the one resource.
    assert_eq!(exported.item_count(), SCOPES);
}

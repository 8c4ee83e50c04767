//! Pass-through (ADR 005) end to end: a relay of OTLP receiver -> batch -> OTLP exporter
//! forwards trace requests as the bytes it received. What reaches the next hop is the
//! clients' requests joined, byte for byte, including fields this OTLP version does not
//! know; and malformed requests are refused at the receiver, counted.

use std::net::SocketAddr;
use std::time::Duration;

use otel_pipeline::exporters::otlp::{OtlpExporter, OtlpExporterConfig, Protocol};
use otel_pipeline::processors::{BatchConfig, BatchProcessor};
use otel_pipeline::proto::common::v1::InstrumentationScope;
use otel_pipeline::proto::trace::v1::Span;
use otel_pipeline::receivers::{OtlpConfig, OtlpReceiver};
use otel_pipeline::testing::eventually;
use otel_pipeline::{Pipeline, Telemetry, Traces};
use prost::Message;

mod common;

fn field(out: &mut Vec<u8>, number: u32, body: &[u8]) {
    otel_pipeline::wire::put_len_header(out, number, body.len());
    out.extend_from_slice(body);
}

/// A trace request whose span, scope and resource carry fields a newer OTLP might add.
fn request_with_unknown_fields(trace: u8, spans: u8) -> Vec<u8> {
    let mut scope_spans = Vec::new();
    let scope = InstrumentationScope {
        name: "future-client".into(),
        ..Default::default()
    };
    field(&mut scope_spans, 1, &scope.encode_to_vec());
    for i in 0..spans {
        let mut span = Span {
            trace_id: vec![trace; 16],
            span_id: vec![i + 1; 8],
            name: format!("op {i}"),
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            ..Default::default()
        }
        .encode_to_vec();
        field(&mut span, 40, b"a span field from the future");
        scope_spans.extend_from_slice(&{
            let mut f = Vec::new();
            field(&mut f, 2, &span);
            f
        });
    }
    field(&mut scope_spans, 9, b"a scope field from the future");
    let mut resource_spans = Vec::new();
    field(&mut resource_spans, 2, &scope_spans);
    field(&mut resource_spans, 7, b"a resource field from the future");
    let mut request = Vec::new();
    field(&mut request, 1, &resource_spans);
    request
}

/// POST `body` as OTLP/HTTP protobuf; the status code.
fn post(addr: SocketAddr, body: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("test setup");
    write!(
        s,
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("test setup");
    s.write_all(body).expect("test setup");
    let mut text = Vec::new();
    let _ = s.read_to_end(&mut text);
    String::from_utf8_lossy(&text)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

async fn relay_forwards_bytes(protocol: Protocol) {
    let (_gw, gw_otlp, exported) = common::gateway(OtlpConfig::loopback()).await;
    let gw = gw_otlp.local_addrs();
    let endpoint = match protocol {
        Protocol::Grpc => format!("http://{}", gw.grpc.expect("test setup")),
        _ => format!("http://{}", gw.http.expect("test setup")),
    };
    let telemetry = Telemetry::new();
    let otlp = OtlpReceiver::new(OtlpConfig::loopback());
    let relay = Pipeline::traces()
        .named("traces/relay")
        .telemetry(telemetry.clone())
        .receiver(otlp.traces())
        .processor(BatchProcessor::new(BatchConfig {
            send_batch_size: 1000,
            timeout: Duration::from_millis(300),
            ..BatchConfig::default()
        }))
        .exporter(OtlpExporter::<Traces>::new(OtlpExporterConfig {
            endpoint,
            protocol,
            ..OtlpExporterConfig::default()
        }))
        .build()
        .expect("relay builds")
        .start()
        .await
        .expect("relay starts");
    let http = otlp.local_addrs().http.expect("test setup");

    let first = request_with_unknown_fields(1, 3);
    let second = request_with_unknown_fields(2, 4);
    let (a, b) = (first.clone(), second.clone());
    let (s1, s2, bad) = tokio::task::spawn_blocking(move || {
        let s1 = post(http, &a);
        let s2 = post(http, &b);
        // A span whose name is not UTF-8: refused here, not forwarded.
        let mut broken = request_with_unknown_fields(3, 1);
        let at = broken
            .windows(4)
            .position(|w| w == b"op 0")
            .expect("test setup");
        broken[at] = 0xff;
        (s1, s2, post(http, &broken))
    })
    .await
    .expect("test setup");
    assert_eq!((s1, s2, bad), (200, 200, 400));

    assert!(eventually(Duration::from_secs(5), || exported.item_count() == 7).await);
    // The batch joined the two requests: what arrived is their bytes end to end.
    let batches = exported.batches();
    let mut arrived = Vec::new();
    for batch in &batches {
        arrived.extend_from_slice(batch.encoded().expect("the gateway got bytes too"));
    }
    let mut sent = first;
    sent.extend_from_slice(&second);
    assert_eq!(arrived, sent, "{protocol:?}: forwarded byte for byte");
    assert_eq!(batches.len(), 1, "joined into one export");
    // Decoded, the joined bytes are both requests' spans.
    assert_eq!(batches[0].data().resource_spans.len(), 2);

    relay
        .shutdown(Duration::from_secs(5))
        .await
        .expect("test setup");
    let text = telemetry.render_prometheus();
    let line = text
        .lines()
        .find(|l| l.starts_with("otelcol_receiver_failed_requests") && l.contains("malformed"))
        .unwrap_or_else(|| panic!("the malformed request is counted:\n{text}"));
    assert!(line.ends_with(" 1"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_relay_forwards_requests_byte_for_byte() {
    relay_forwards_bytes(Protocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_relay_forwards_requests_byte_for_byte() {
    relay_forwards_bytes(Protocol::HttpProtobuf).await;
}

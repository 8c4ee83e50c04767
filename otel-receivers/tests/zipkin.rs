//! The Zipkin receiver over a real socket: v2 JSON, v2 protobuf (gzip), v1 JSON, and
//! each refusal with its status and count.

// Test helpers unwrap: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use otel_pipeline_core::testing::InMemoryExporter;
use otel_pipeline_core::{ComponentKind, ComponentTelemetry, Pipeline};
use otel_receivers::{OtlpConfig, ZipkinReceiver};

mod common;

use common::{JSON, PROTO, gzip, http_post};

const V2: &str = r#"[{
  "traceId": "5af7183fb1d4cf5f463ac35c9f6413ad", "id": "a2fb4a1d1a96d312",
  "name": "get /checkout", "kind": "SERVER", "timestamp": 1700000000000000, "duration": 120000,
  "localEndpoint": {"serviceName": "checkout", "ipv4": "10.1.2.3", "port": 8080},
  "tags": {"http.method": "GET", "error": "payment declined"}
}, {
  "traceId": "463ac35c9f6413ad", "id": "b2fb4a1d1a96d312", "parentId": "a2fb4a1d1a96d312",
  "name": "select", "kind": "CLIENT", "timestamp": 1700000000001000, "duration": 800,
  "localEndpoint": {"serviceName": "checkout"}, "remoteEndpoint": {"serviceName": "postgres"}
}]"#;

const V1: &str = r#"[{
  "traceId": "463ac35c9f6413ad", "id": "48485a3953bb6124", "name": "get",
  "annotations": [
    {"timestamp": 100, "value": "sr", "endpoint": {"serviceName": "api"}},
    {"timestamp": 400, "value": "ss", "endpoint": {"serviceName": "api"}}],
  "binaryAnnotations": [{"key": "http.path", "value": "/v1", "endpoint": {"serviceName": "api"}}]
}]"#;

/// A ListOfSpans with one span, encoded by hand (the receiver's own types are private):
/// trace_id (16 bytes), id (8), kind SERVER, name.
fn proto_span() -> Vec<u8> {
    let mut span = Vec::new();
    span.extend_from_slice(&[0x0a, 16]);
    span.extend_from_slice(&[7; 16]);
    span.extend_from_slice(&[0x1a, 8]);
    span.extend_from_slice(&[9; 8]);
    span.extend_from_slice(&[0x20, 2]);
    span.extend_from_slice(&[0x2a, 2, b'o', b'p']);
    let mut list = vec![0x0a, span.len() as u8];
    list.extend_from_slice(&span);
    list
}

fn receiver_counters(running: &otel_pipeline_core::RunningPipeline) -> Arc<ComponentTelemetry> {
    running
        .telemetry()
        .find(ComponentKind::Receiver, "zipkin")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipkin_spans_arrive_as_otlp_and_bad_ones_are_refused_and_counted() {
    let zipkin = ZipkinReceiver::with_server(OtlpConfig {
        http: Some("127.0.0.1:0".parse().unwrap()),
        max_request_bytes: 64 * 1024,
        ..OtlpConfig::loopback()
    })
    .parse_string_tags(true);
    let (exporter, exported) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .receiver(zipkin.traces())
        .exporter(exporter)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let addr = zipkin.local_addr().unwrap();
    let r = receiver_counters(&running);

    // v2 JSON: 202, two spans, one resource.
    let reply = http_post(addr, "/api/v2/spans", &[JSON], V2.as_bytes().to_vec()).await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    let spans = exported.spans();
    assert_eq!(spans.len(), 2);
    let server = spans.iter().find(|s| s.name == "get /checkout").unwrap();
    let status = server.status.as_ref().unwrap();
    assert_eq!(
        (status.code, status.message.as_str()),
        (2, "payment declined")
    );
    let client = spans.iter().find(|s| s.name == "select").unwrap();
    assert_eq!(&client.trace_id[..8], &[0; 8]);
    assert_eq!(client.parent_span_id, server.span_id);
    let req = exported.batches()[0].data().clone();
    assert_eq!(req.resource_spans.len(), 1);
    let res = req.resource_spans[0].resource.as_ref().unwrap();
    assert_eq!(res.attributes[0].key, "service.name");
    assert_eq!(r.accepted(), 2);
    let notes = running.telemetry().sum(
        "otelcol_receiver_translation_notes",
        &[("note", "trace_id_64bit")],
    );
    assert_eq!(notes, 1);

    // v2 protobuf, gzip.
    exported.clear();
    let reply = http_post(
        addr,
        "/api/v2/spans",
        &[PROTO, ("content-encoding", "gzip")],
        gzip(&proto_span()),
    )
    .await;
    assert_eq!(reply.status, 202);
    let spans = exported.spans();
    assert_eq!((spans[0].name.as_str(), spans[0].kind), ("op", 2));

    // v1 JSON.
    exported.clear();
    let reply = http_post(addr, "/api/v1/spans", &[JSON], V1.as_bytes().to_vec()).await;
    assert_eq!(reply.status, 202);
    let spans = exported.spans();
    assert_eq!(spans[0].kind, 2);
    assert_eq!(
        spans[0].end_time_unix_nano - spans[0].start_time_unix_nano,
        300_000
    );

    // Refusals: each with its status, counted, nothing delivered.
    exported.clear();
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);
    let cases: [Case<'_>; 5] = [
        (
            "/api/v2/spans",
            vec![JSON],
            br#"[{"traceId": "not-hex", "id": "1"}]"#.to_vec(),
            400,
            "malformed",
        ),
        (
            "/api/v2/spans",
            vec![PROTO],
            vec![0xff, 0xff, 0xff],
            400,
            "malformed",
        ),
        (
            "/api/v1/spans",
            vec![("content-type", "application/x-thrift")],
            vec![1, 2, 3],
            415,
            "unsupported_media_type",
        ),
        (
            "/api/v2/spans",
            vec![JSON],
            vec![b' '; 100 * 1024],
            413,
            "too_large",
        ),
        (
            "/api/v2/spans",
            vec![JSON, ("content-encoding", "br")],
            b"[]".to_vec(),
            415,
            "unsupported_encoding",
        ),
    ];
    for (path, headers, body, want, reason) in cases {
        let before = r.failed_requests(reason);
        let reply = http_post(addr, path, &headers, body).await;
        assert_eq!(reply.status, want, "{reason}: {:?}", reply.body);
        assert_eq!(r.failed_requests(reason), before + 1, "{reason}");
    }
    assert!(exported.spans().is_empty());
    let reply = http_post(addr, "/api/v3/spans", &[JSON], b"[]".to_vec()).await;
    assert_eq!(reply.status, 404);

    // Back-pressure: 503 with Retry-After, so Zipkin reporters retry.
    exported.set_refusing(true);
    let reply = http_post(addr, "/api/v2/spans", &[JSON], V2.as_bytes().to_vec()).await;
    assert_eq!(reply.status, 503);
    assert!(reply.headers.contains_key("retry-after"));
    assert_eq!(r.refused(), 2);
    running
        .shutdown(std::time::Duration::from_secs(5))
        .await
        .unwrap();
}

/// More spans than `max_items_per_request`: refused with `413` as soon as the list passes
/// the limit, counted `too_many_items`, in JSON and protobuf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_spans_are_refused_before_they_are_built() {
    let mut config = OtlpConfig {
        http: Some("127.0.0.1:0".parse().unwrap()),
        ..OtlpConfig::loopback()
    };
    config.limits.max_items_per_request = 3;
    let zipkin = ZipkinReceiver::with_server(config);
    let (exporter, exported) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .receiver(zipkin.traces())
        .exporter(exporter)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let addr = zipkin.local_addr().unwrap();
    let r = receiver_counters(&running);
    let json = format!("[{}]", [r#"{"traceId":"1","id":"1"}"#; 4].join(","));
    let reply = http_post(addr, "/api/v2/spans", &[JSON], json.into_bytes()).await;
    assert_eq!(reply.status, 413);
    let proto: Vec<u8> = std::iter::repeat_n(proto_span(), 4).flatten().collect();
    let reply = http_post(addr, "/api/v2/spans", &[PROTO], proto).await;
    assert_eq!(reply.status, 413);
    assert_eq!(r.failed_requests("too_many_items"), 2);
    assert!(exported.spans().is_empty());
    running
        .shutdown(std::time::Duration::from_secs(5))
        .await
        .unwrap();
}

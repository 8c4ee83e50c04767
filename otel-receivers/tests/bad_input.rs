//! Bad input and back-pressure over real sockets: each malformed request gets the right
//! status, is counted, and the receiver keeps serving.

// Test helpers unwrap: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use otel_pipeline_core::testing::InMemoryExporter;
use otel_pipeline_core::{Pipeline, Traces};
use otel_receivers::{OtlpConfig, OtlpReceiver};
use prost::Message;

mod common;

use common::{JSON, PROTO, Setup, gzip, http_post, proto_traces};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bad_input_gets_the_right_status_and_is_counted() {
    let s = Setup::new(OtlpConfig {
        max_request_bytes: 64 * 1024,
        max_decompressed_bytes: 256 * 1024,
        ..OtlpConfig::loopback()
    })
    .await;
    let r = s.receiver();

    // Truncated protobuf.
    let mut truncated = proto_traces(3);
    truncated.truncate(truncated.len() / 2);
    let reply = http_post(s.http, "/v1/traces", &[PROTO], truncated).await;
    assert_eq!(reply.status, 400);
    let status = StatusMsg::decode(reply.body).unwrap();
    assert_eq!(status.code, 3);
    assert!(
        status.message.contains("malformed OTLP traces protobuf"),
        "{}",
        status.message
    );
    assert_eq!(r.failed_requests("malformed"), 1);

    // Wrong content type.
    let reply = http_post(
        s.http,
        "/v1/traces",
        &[("content-type", "text/plain")],
        proto_traces(1),
    )
    .await;
    assert_eq!(reply.status, 415);
    assert_eq!(r.failed_requests("unsupported_media_type"), 1);

    // Invalid JSON: the error comes back as JSON.
    let reply = http_post(
        s.http,
        "/v1/traces",
        &[JSON],
        b"{\"resourceSpans\": [".to_vec(),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.headers["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("malformed OTLP traces JSON")
    );
    assert_eq!(r.failed_requests("malformed"), 2);

    // Oversize body.
    let reply = http_post(s.http, "/v1/traces", &[PROTO], vec![0u8; 100 * 1024]).await;
    assert_eq!(reply.status, 413);
    assert_eq!(r.failed_requests("too_large"), 1);

    // A gzip bomb: 10 MiB of zeros is ~10 KiB compressed, under the wire limit.
    let bomb = gzip(&vec![0u8; 10 << 20]);
    assert!(bomb.len() < 64 * 1024);
    let reply = http_post(
        s.http,
        "/v1/traces",
        &[PROTO, ("content-encoding", "gzip")],
        bomb,
    )
    .await;
    assert_eq!(reply.status, 413);
    assert_eq!(r.failed_requests("decompressed_too_large"), 1);

    // Corrupt gzip.
    let reply = http_post(
        s.http,
        "/v1/traces",
        &[PROTO, ("content-encoding", "gzip")],
        b"not gzip".to_vec(),
    )
    .await;
    assert_eq!(reply.status, 400);

    // Unknown encoding, path, method.
    let reply = http_post(
        s.http,
        "/v1/traces",
        &[PROTO, ("content-encoding", "br")],
        proto_traces(1),
    )
    .await;
    assert_eq!(reply.status, 415);
    assert_eq!(
        http_post(s.http, "/v1/nothing", &[PROTO], vec![])
            .await
            .status,
        404
    );
    assert_eq!(
        http_post(s.http, "/v1/metrics", &[PROTO], vec![])
            .await
            .status,
        404,
        "no metrics pipeline"
    );

    // Nothing bad reached the pipeline, and the receiver still serves.
    assert_eq!(s.exported.item_count(), 0);
    let reply = http_post(
        s.http,
        "/v1/traces",
        &[PROTO, ("content-encoding", "gzip")],
        gzip(&proto_traces(4)),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(s.exported.item_count(), 4);
    assert_eq!(r.accepted(), 4);
    s.running.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_is_accepted_and_answered_in_json() {
    let s = Setup::new(OtlpConfig::loopback()).await;
    let body = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"cart"}}]},
      "scopeSpans":[{"scope":{"name":"lib"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
      "name":"GET /cart","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000",
      "attributes":[{"key":"http.response.status_code","value":{"intValue":"200"}}],"status":{"code":1}}]}]}]}"#;
    let reply = http_post(s.http, "/v1/traces", &[JSON], body.as_bytes().to_vec()).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.headers["content-type"], "application/json");
    let span = &s.exported.spans()[0];
    assert_eq!(
        span.trace_id
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        "5b8efff798038103d269b633813fc60c"
    );
    assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
    assert_eq!(span.kind, 2);
    s.running.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_is_429_with_retry_after_and_rejection_is_partial_success() {
    let s = Setup::new(OtlpConfig::loopback()).await;
    s.exported.set_refusing(true);
    let reply = http_post(s.http, "/v1/traces", &[PROTO], proto_traces(2)).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.headers["retry-after"], "1");
    assert_eq!(s.receiver().refused(), 2);

    s.exported.set_refusing(false);
    s.exported.set_rejecting(true);
    let reply = http_post(s.http, "/v1/traces", &[PROTO], proto_traces(3)).await;
    assert_eq!(reply.status, 200);
    let resp = otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceResponse::decode(
        reply.body,
    )
    .unwrap();
    assert_eq!(resp.partial_success.unwrap().rejected_spans, 3);
    assert_eq!(s.receiver().rejected(), 3);
    s.running.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// `google.rpc.Status` without details.
#[derive(Clone, PartialEq, prost::Message)]
struct StatusMsg {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// A raw gRPC unary call: returns (grpc-status, grpc-message, details bytes).
async fn grpc_call(
    addr: SocketAddr,
    path: &str,
    message: &[u8],
) -> (String, String, Option<Vec<u8>>) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    let req = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(framed)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let get = |k: &str| {
        trailers
            .get(k)
            .or_else(|| headers.get(k))
            .map(|v| v.to_str().unwrap().to_string())
    };
    let details = get("grpc-status-details-bin").map(|b64| b64.into_bytes());
    (
        get("grpc-status").unwrap_or_default(),
        get("grpc-message").unwrap_or_default(),
        details,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_bad_input_and_backpressure() {
    let s = Setup::new(OtlpConfig {
        max_decompressed_bytes: 64 * 1024,
        ..OtlpConfig::loopback()
    })
    .await;
    let path = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    let r = s.receiver();

    // Malformed protobuf: INVALID_ARGUMENT (3), not INTERNAL, and counted.
    let (code, msg, _) = grpc_call(s.grpc, path, &[0x0a, 0xff, 0xff]).await;
    assert_eq!(code, "3", "{msg}");
    assert!(msg.contains("malformed"), "{msg}");
    assert_eq!(r.failed_requests("malformed"), 1);

    // Oversize: INVALID_ARGUMENT (tonic would say OUT_OF_RANGE, which clients retry).
    let (code, _, _) = grpc_call(s.grpc, path, &vec![0u8; 100 * 1024]).await;
    assert_eq!(code, "3");
    assert_eq!(r.failed_requests("too_large"), 1);

    // Unknown method and an unconfigured signal: UNIMPLEMENTED.
    assert_eq!(grpc_call(s.grpc, "/x.Y/Z", &[]).await.0, "12");
    assert_eq!(
        grpc_call(
            s.grpc,
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            &[]
        )
        .await
        .0,
        "12"
    );

    // Back-pressure: RESOURCE_EXHAUSTED (8) with RetryInfo.
    s.exported.set_refusing(true);
    let (code, _, details) = grpc_call(s.grpc, path, &proto_traces(2)).await;
    assert_eq!(code, "8");
    assert!(details.is_some(), "RetryInfo details present");
    s.exported.set_refusing(false);

    // Still serving.
    let (code, _, _) = grpc_call(s.grpc, path, &proto_traces(5)).await;
    assert_eq!(code, "0");
    assert_eq!(s.exported.item_count(), 5);
    s.running.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// One receiver feeding two pipelines: when the traces pipeline stops, traces are no longer
/// delivered to it (404), metrics go on, and a new traces pipeline can start the same
/// receiver again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_pipeline_is_no_longer_fed_and_can_start_again() {
    use otel_pipeline_core::Metrics;
    let otlp = OtlpReceiver::new(OtlpConfig::loopback());
    let start_traces = || async {
        let (exporter, exported) = InMemoryExporter::<Traces>::new();
        let running = Pipeline::traces()
            .receiver(otlp.traces())
            .exporter(exporter)
            .build()
            .unwrap()
            .start()
            .await
            .unwrap();
        (running, exported)
    };
    let (traces, first) = start_traces().await;
    let (metrics_out, _metrics) = InMemoryExporter::<Metrics>::new();
    let metrics = Pipeline::metrics()
        .receiver(otlp.metrics())
        .exporter(metrics_out)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let http = otlp.local_addrs().http.unwrap();
    assert_eq!(
        http_post(http, "/v1/traces", &[PROTO], proto_traces(2))
            .await
            .status,
        200
    );
    assert_eq!(first.item_count(), 2);

    traces.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        http_post(http, "/v1/traces", &[PROTO], proto_traces(2))
            .await
            .status,
        404,
        "a stopped pipeline is not fed"
    );
    assert_eq!(first.item_count(), 2);
    let empty_metrics =
        otel_pipeline_core::proto::collector::metrics::v1::ExportMetricsServiceRequest::default();
    assert_eq!(
        http_post(http, "/v1/metrics", &[PROTO], empty_metrics.encode_to_vec())
            .await
            .status,
        200,
        "the other signal goes on"
    );

    let (again, second) = start_traces().await;
    assert_eq!(
        http_post(http, "/v1/traces", &[PROTO], proto_traces(3))
            .await
            .status,
        200
    );
    assert_eq!(second.item_count(), 3);
    again.shutdown(Duration::from_secs(5)).await.unwrap();
    metrics.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Dropping a running pipeline without `shutdown` stops its receivers: the listeners close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_running_pipeline_closes_its_listeners() {
    let s = Setup::new(OtlpConfig::loopback()).await;
    let (grpc, http) = (s.grpc, s.http);
    assert!(tokio::net::TcpStream::connect(http).await.is_ok());
    drop(s);
    let mut closed = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(http).await.is_err()
            && tokio::net::TcpStream::connect(grpc).await.is_err()
        {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        closed,
        "the listeners still accept after the pipeline was dropped"
    );
}

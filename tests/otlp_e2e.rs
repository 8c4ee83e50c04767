//! OTLP end to end on loopback with real clients:
//! client -> agent (OTLP receiver -> pipeline -> OTLP exporter) -> gateway (OTLP receiver ->
//! in-memory exporter). Every span must arrive intact.

use std::time::Duration;

use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    Tracer, TracerProvider as _,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_otlp::{Protocol as OtlpProtocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use otel_pipeline::exporters::otlp::{OtlpExporterConfig, Protocol, RetryConfig};
use otel_pipeline::proto::common::v1::any_value::Value as PV;
use otel_pipeline::proto::trace::v1::{Span, span::SpanKind as PKind, status::StatusCode};
use otel_pipeline::receivers::{OtlpConfig, OtlpReceiver};
use otel_pipeline::testing::{Exported, eventually};
use otel_pipeline::{ComponentKind, RunningPipeline, Traces};

mod common;

struct Tier {
    running: RunningPipeline,
    otlp: OtlpReceiver,
}

/// The gateway: OTLP in, kept in memory.
async fn gateway() -> (Tier, Exported<Traces>) {
    let (running, otlp, exported) = common::gateway(OtlpConfig::loopback()).await;
    (Tier { running, otlp }, exported)
}

/// The agent: OTLP in, OTLP out to `endpoint` with `protocol`.
async fn agent(endpoint: String, protocol: Protocol) -> Tier {
    let (running, otlp) = common::otlp_agent(OtlpExporterConfig {
        endpoint,
        protocol,
        retry: RetryConfig {
            initial_interval: Duration::from_millis(20),
            max_interval: Duration::from_millis(200),
            ..RetryConfig::default()
        },
        ..OtlpExporterConfig::default()
    })
    .await;
    Tier { running, otlp }
}

fn client_provider(exporter: opentelemetry_otlp::SpanExporter) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(
            Resource::builder_empty()
                .with_attributes([
                    KeyValue::new("service.name", "checkout"),
                    KeyValue::new("deployment.environment", "test"),
                ])
                .build(),
        )
        .build()
}

/// Emit one rich span named `name`.
fn emit(provider: &SdkTracerProvider, name: &'static str) {
    let scope = InstrumentationScope::builder("e2e-client")
        .with_version("1.2.3")
        .build();
    let tracer = provider.tracer_with_scope(scope);
    let linked = SpanContext::new(
        TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").expect("hex"),
        SpanId::from_hex("b7ad6b7169203331").expect("hex"),
        TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    );
    let mut span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.route", "/checkout"),
            KeyValue::new("http.response.status_code", 500i64),
            KeyValue::new("retry", true),
            KeyValue::new("ratio", 0.25),
            KeyValue::new(
                "tags",
                Value::Array(
                    vec!["a", "b"]
                        .into_iter()
                        .map(opentelemetry::StringValue::from)
                        .collect::<Vec<_>>()
                        .into(),
                ),
            ),
        ])
        .with_links(vec![Link::with_context(linked)])
        .start(&tracer);
    span.add_event("retrying", vec![KeyValue::new("attempt", 2i64)]);
    span.set_status(Status::error("payment failed"));
    span.end();
}

fn check_span(span: &Span, name: &str) {
    assert_eq!(span.name, name);
    assert_eq!(span.kind, PKind::Server as i32);
    assert_eq!(span.trace_id.len(), 16);
    assert_eq!(span.span_id.len(), 8);
    let attr = |k: &str| {
        span.attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.clone())
            .and_then(|v| v.value)
    };
    assert_eq!(
        attr("http.route"),
        Some(PV::StringValue("/checkout".into()))
    );
    assert_eq!(attr("http.response.status_code"), Some(PV::IntValue(500)));
    assert_eq!(attr("retry"), Some(PV::BoolValue(true)));
    assert_eq!(attr("ratio"), Some(PV::DoubleValue(0.25)));
    match attr("tags") {
        Some(PV::ArrayValue(a)) => assert_eq!(a.values.len(), 2),
        other => panic!("tags: {other:?}"),
    }
    assert_eq!(span.events.len(), 1);
    assert_eq!(span.events[0].name, "retrying");
    assert_eq!(span.events[0].attributes[0].key, "attempt");
    assert_eq!(span.links.len(), 1);
    assert_eq!(
        span.links[0]
            .trace_id
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        "0af7651916cd43dd8448eb211c80319c"
    );
    let status = span.status.as_ref().expect("status");
    assert_eq!(status.code, StatusCode::Error as i32);
    assert_eq!(status.message, "payment failed");
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano && span.start_time_unix_nano > 0);
}

fn check_batch_context(exported: &Exported<Traces>, name: &str) {
    let batch = exported
        .batches()
        .into_iter()
        .find(|b| {
            b.data().resource_spans.iter().any(|rs| {
                rs.scope_spans
                    .iter()
                    .any(|ss| ss.spans.iter().any(|s| s.name == name))
            })
        })
        .expect("batch with the span");
    let rs = &batch.data().resource_spans[0];
    let resource = rs.resource.as_ref().expect("resource");
    assert!(resource.attributes.iter().any(|a| a.key == "service.name"
        && a.value.as_ref().and_then(|v| v.value.clone())
            == Some(PV::StringValue("checkout".into()))));
    let scope = rs.scope_spans[0].scope.as_ref().expect("scope");
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        ("e2e-client", "1.2.3")
    );
    let span = rs.scope_spans[0]
        .spans
        .iter()
        .find(|s| s.name == name)
        .expect("span");
    check_span(span, name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_otlp_clients_over_grpc_and_http_through_both_exporter_protocols() {
    let (gw, exported) = gateway().await;
    let gw_addrs = gw.otlp.local_addrs();
    // One agent forwards over gRPC, the other over HTTP/protobuf.
    let agent_grpc = agent(
        format!("http://{}", gw_addrs.grpc.expect("grpc")),
        Protocol::Grpc,
    )
    .await;
    let agent_http = agent(
        format!("http://{}", gw_addrs.http.expect("http")),
        Protocol::HttpProtobuf,
    )
    .await;
    let agent_json = agent(
        format!("http://{}", gw_addrs.http.expect("http")),
        Protocol::HttpJson,
    )
    .await;

    let grpc_client = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!(
            "http://{}",
            agent_grpc.otlp.local_addrs().grpc.expect("grpc")
        ))
        .build()
        .expect("gRPC client");
    let http_client = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(OtlpProtocol::HttpBinary)
        .with_endpoint(format!(
            "http://{}/v1/traces",
            agent_http.otlp.local_addrs().http.expect("http")
        ))
        .build()
        .expect("HTTP client");
    let json_client = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!(
            "http://{}",
            agent_json.otlp.local_addrs().grpc.expect("grpc")
        ))
        .build()
        .expect("gRPC client");

    let names = ["via-grpc", "via-http", "via-json"];
    for (client, name) in [grpc_client, http_client, json_client]
        .into_iter()
        .zip(names)
    {
        let provider = client_provider(client);
        emit(&provider, name);
        provider.force_flush().expect("flush");
        provider.shutdown().expect("shutdown");
    }
    assert!(
        eventually(Duration::from_secs(10), || exported.item_count() == 3).await,
        "got {} spans",
        exported.item_count()
    );
    for name in names {
        check_batch_context(&exported, name);
    }
    let t = agent_grpc.running.telemetry().clone();
    assert_eq!(
        t.find(ComponentKind::Receiver, "otlp")
            .expect("receiver")
            .accepted(),
        1
    );
    assert_eq!(
        t.find(ComponentKind::Exporter, "otlp")
            .expect("exporter")
            .sent(),
        1
    );
    for tier in [agent_grpc, agent_http, agent_json, gw] {
        tier.running
            .shutdown(Duration::from_secs(5))
            .await
            .expect("clean shutdown");
    }
}

//! A service samples and redacts in process: opentelemetry_sdk -> SdkBridge -> redaction ->
//! tail sampler -> exporter. Only kept, redacted spans reach the exporter.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, Status, Tracer, TracerProvider as _};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter as _};
use otel_pipeline::processors::attributes::{AttributeRedactor, AttributesConfig};
use otel_pipeline::processors::config::from_yaml;
use otel_pipeline::processors::tail_sampling::{TailSampler, TailSamplingConfig};
use otel_pipeline::proto::common::v1::any_value::Value;
use otel_pipeline::receivers::SdkBridge;
use otel_pipeline::testing::{InMemoryExporter, eventually};
use otel_pipeline::{ComponentKind, Pipeline};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_and_redaction_before_anything_leaves_the_process() {
    let (receiver, bridge) = SdkBridge::new();
    // Before the pipeline starts, the exporter says so instead of losing spans silently.
    let early = bridge.export(Vec::new()).await;
    assert!(early.is_err(), "{early:?}");

    let redact: AttributesConfig = from_yaml(
        "attributes",
        "actions: [{ key: enduser.email, action: delete }]",
    )
    .expect("config");
    let sampler: TailSamplingConfig = from_yaml(
        "tail_sampling",
        "decision_wait: 200ms\npolicies: [{ name: errors, type: status_code, status_code: { status_codes: [ERROR] } }]",
    )
    .expect("config");
    let (exporter, exported) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .receiver(receiver)
        .processor(AttributeRedactor::attributes(redact))
        .processor(TailSampler::new(sampler))
        .exporter(exporter)
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");

    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(bridge)
        .build();
    let tracer = provider.tracer("checkout");
    for i in 0..10 {
        let mut span = tracer.start(format!("request {i}"));
        span.set_attribute(KeyValue::new("enduser.email", "jane@example.com"));
        if i % 5 == 0 {
            span.set_status(Status::error("payment failed"));
        }
        span.end();
    }
    provider.force_flush().expect("flush");
    assert!(
        eventually(Duration::from_secs(5), || exported.item_count() == 2).await,
        "got {}",
        exported.item_count()
    );
    for span in exported.spans() {
        assert!(
            span.attributes.iter().all(|a| a.key != "enduser.email"),
            "redacted before export"
        );
        assert!(matches!(span.status.as_ref().map(|s| s.code), Some(2)));
    }
    let batch = &exported.batches()[0];
    let scope = batch.data().resource_spans[0].scope_spans[0]
        .scope
        .as_ref()
        .expect("scope");
    assert_eq!(scope.name, "checkout");
    let service = batch.data().resource_spans[0]
        .resource
        .as_ref()
        .expect("resource")
        .attributes
        .iter()
        .find(|a| a.key == "service.name");
    assert!(matches!(
        service
            .and_then(|a| a.value.as_ref())
            .and_then(|v| v.value.as_ref()),
        Some(Value::StringValue(_))
    ));
    let t = running.telemetry().clone();
    assert_eq!(
        t.find(ComponentKind::Receiver, "sdk")
            .expect("receiver")
            .accepted(),
        10
    );
    running
        .shutdown(Duration::from_secs(5))
        .await
        .expect("stops");
    provider.shutdown().expect("sdk stops");
}

/// The SDK does not retry a failed export, so spans the pipeline refuses are counted as
/// dropped (`refused_not_retried`), not as refused; and a partial rejection counts only the
/// rejected spans, the rest as accepted. Received = accepted + refused + rejected + dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_counts_what_the_sdk_will_not_retry_as_dropped() {
    let (receiver, bridge) = SdkBridge::new();
    let (exporter, exported) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .receiver(receiver)
        .exporter(exporter)
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(bridge)
        .build();
    let tracer = provider.tracer("bridge-test");
    tracer.in_span("kept", |_| {});
    exported.set_refusing(true);
    tracer.in_span("refused-1", |_| {});
    tracer.in_span("refused-2", |_| {});
    exported.set_refusing(false);
    let r = running
        .telemetry()
        .find(ComponentKind::Receiver, "sdk")
        .expect("receiver");
    assert_eq!(r.accepted(), 1);
    assert_eq!(r.refused(), 0, "the SDK never retries: not a refusal");
    assert_eq!(r.dropped("refused_not_retried"), 2);
    assert_eq!(exported.item_count(), 1);
    let _ = provider.shutdown();
    let telemetry = running.telemetry().clone();
    running
        .shutdown(Duration::from_secs(5))
        .await
        .expect("stops");
    otel_pipeline::testing::assert_balanced(&telemetry);
}

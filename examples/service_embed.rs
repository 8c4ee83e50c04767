//! A service that tail-samples its own traces before they leave the process.
//!
//! The service instruments itself with `opentelemetry_sdk` as usual. Instead of an OTLP
//! exporter, its batch span processor hands spans to [`SdkBridge`], the head of an
//! in-process pipeline: redaction, then the tail sampler (every error and slow trace, 10 %
//! of the rest), then OTLP out. Only what is kept crosses the network.
//!
//! ```text
//! cargo run --example service_embed                      # sends to a local stand-in backend
//! cargo run --example service_embed -- --to http://collector:4317
//! ```
//!
//! Shutdown order matters: the SDK's provider first (its batch processor flushes into the
//! pipeline), then the pipeline (the sampler decides what it still holds, the exporter
//! drains), and the final counts come from `running.telemetry()`.

use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, Status, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use otel_pipeline::exporters::otlp::{OtlpExporter, OtlpExporterConfig};
use otel_pipeline::processors::attributes::{AttributeRedactor, AttributesConfig};
use otel_pipeline::processors::config::from_yaml;
use otel_pipeline::processors::tail_sampling::{TailSampler, TailSamplingConfig};
use otel_pipeline::receivers::{OtlpConfig, OtlpReceiver, SdkBridge};
use otel_pipeline::testing::InMemoryExporter;
use otel_pipeline::{ComponentKind, Pipeline, Traces};

const SAMPLING: &str = r#"
decision_wait: 500ms
policies:
  - { name: errors, type: status_code, status_code: { status_codes: [ERROR] } }
  - { name: slow, type: latency, latency: { threshold_ms: 1000 } }
  - { name: some, type: probabilistic, probabilistic: { sampling_percentage: 10 } }
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = std::env::args().skip_while(|a| a != "--to").nth(1);

    // Without --to, a stand-in backend on loopback shows what arrives.
    let (backend, endpoint, received) = match target {
        Some(url) => (None, url, None),
        None => {
            let otlp = OtlpReceiver::new(OtlpConfig {
                http: None,
                ..OtlpConfig::loopback()
            });
            let (exporter, exported) = InMemoryExporter::new();
            let running = Pipeline::traces()
                .receiver(otlp.traces())
                .exporter(exporter)
                .build()?
                .start()
                .await?;
            let addr = otlp.local_addrs().grpc.ok_or("backend not bound")?;
            (Some(running), format!("http://{addr}"), Some(exported))
        }
    };

    // The in-process pipeline: SDK spans in, redacted and tail-sampled, OTLP out.
    let (receiver, bridge) = SdkBridge::new();
    let redact: AttributesConfig = from_yaml(
        "attributes",
        "actions: [{ key: enduser.email, action: delete }]",
    )?;
    let sampling: TailSamplingConfig = from_yaml("tail_sampling", SAMPLING)?;
    let running = Pipeline::traces()
        .named("traces/in-process")
        .receiver(receiver)
        .processor(AttributeRedactor::attributes(redact))
        .processor(TailSampler::new(sampling))
        .exporter(OtlpExporter::<Traces>::new(OtlpExporterConfig {
            endpoint,
            ..Default::default()
        }))
        .build()?
        .start()
        .await?;

    // The service, instrumented with the SDK as usual; its batch processor exports to the
    // bridge.
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(bridge)
        .with_resource(
            Resource::builder_empty()
                .with_attributes([KeyValue::new("service.name", "checkout")])
                .build(),
        )
        .build();
    let tracer = provider.tracer("checkout");
    let requests = 200;
    for i in 0..requests {
        let start = SystemTime::now();
        let slow = i % 50 == 7;
        let failed = i % 20 == 3;
        let mut root = tracer
            .span_builder("POST /checkout")
            .with_start_time(start)
            .start(&tracer);
        root.set_attribute(KeyValue::new("enduser.email", "jane@example.com"));
        let cx = opentelemetry::Context::current_with_span(root);
        let mut query = tracer
            .span_builder("SELECT cart")
            .with_start_time(start + Duration::from_millis(2))
            .start_with_context(&tracer, &cx);
        if failed {
            query.set_status(Status::error("deadlock detected"));
        }
        query.end_with_timestamp(start + Duration::from_millis(if slow { 1_500 } else { 12 }));
        cx.span()
            .end_with_timestamp(start + Duration::from_millis(if slow { 1_520 } else { 20 }));
        tokio::task::yield_now().await;
    }

    // Shutdown: the SDK first (flushes into the pipeline), then the pipeline.
    tokio::task::spawn_blocking(move || provider.shutdown()).await??;
    let telemetry = running.telemetry().clone();
    running.shutdown(Duration::from_secs(10)).await?;
    if let Some(b) = backend {
        b.shutdown(Duration::from_secs(5)).await?;
    }

    let sampler = telemetry
        .find(ComponentKind::Processor, "tail_sampling")
        .ok_or("no sampler counters")?;
    let kept = telemetry.sum(
        "otelcol_processor_tail_sampling_decisions",
        &[("policy", "(final)"), ("decision", "sampled")],
    );
    let dropped = telemetry.sum(
        "otelcol_processor_tail_sampling_decisions",
        &[("policy", "(final)"), ("decision", "not_sampled")],
    );
    println!("requests handled:           {requests} (2 spans each)");
    println!("spans into the sampler:     {}", sampler.accepted());
    println!("traces kept / dropped:      {kept} / {dropped}");
    println!(
        "spans sent over OTLP:       {}",
        telemetry.sum("otelcol_exporter_sent_spans", &[])
    );
    if let Some(received) = received {
        let spans = received.spans();
        let errors = spans
            .iter()
            .filter(|s| s.status.as_ref().is_some_and(|st| st.code == 2))
            .count();
        let emails = spans
            .iter()
            .filter(|s| s.attributes.iter().any(|a| a.key == "enduser.email"))
            .count();
        println!(
            "spans at the backend:       {} ({errors} errors; e-mails: {emails})",
            spans.len()
        );
        if errors != requests / 20 || emails != 0 {
            return Err("an error trace was lost or an e-mail left the process".into());
        }
    }
    Ok(())
}

//! The main demo: an in-process trace pipeline on embedded defaults.
//!
//! A generator plays the part of instrumented services and pushes traces into an in-memory
//! receiver. A filter drops health checks, a bounded queue decouples the exporters, and two
//! exporters get every batch: the `debug` exporter prints each span, and an in-memory one
//! keeps them so the demo can check nothing was lost. At the end the pipeline shuts down
//! gracefully and prints its self-telemetry in Prometheus format.
//!
//! Run it with `cargo run --example demo`.

use std::time::Duration;

use otel_pipeline::exporters::{DebugExporter, Verbosity};
use otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline::testing::{InMemoryExporter, InMemoryReceiver, generate_traces};
use otel_pipeline::{BoundedQueue, ComponentId, Pipeline, QueueConfig, Traces, Transform};

/// Drop spans of health-check requests (`http.route` = `/healthz`), as an agent would.
fn drop_health_checks(data: &mut ExportTraceServiceRequest) -> usize {
    let mut dropped = 0;
    for rs in &mut data.resource_spans {
        for ss in &mut rs.scope_spans {
            let before = ss.spans.len();
            ss.spans.retain(|span| {
                !span.attributes.iter().any(|kv| {
                    kv.key == "http.route"
                        && matches!(
                            kv.value.as_ref().and_then(|v| v.value.as_ref()),
                            Some(otel_pipeline::proto::common::v1::any_value::Value::StringValue(s)) if s == "/healthz"
                        )
                })
            });
            dropped += before - ss.spans.len();
        }
    }
    dropped
}

/// A batch of health-check spans, like a kubelet probe produces.
fn health_checks(seed: u64) -> ExportTraceServiceRequest {
    let mut batch = generate_traces(2, 1, seed);
    for span in &mut batch.resource_spans[0].scope_spans[0].spans {
        span.name = "GET /healthz".into();
        for kv in &mut span.attributes {
            if kv.key == "http.route" {
                kv.value = Some(otel_pipeline::proto::common::v1::AnyValue {
                    value: Some(
                        otel_pipeline::proto::common::v1::any_value::Value::StringValue(
                            "/healthz".into(),
                        ),
                    ),
                });
            }
        }
    }
    batch
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (receiver, sender) = InMemoryReceiver::new();
    let (kept, exported) = InMemoryExporter::new();

    let running = Pipeline::traces()
        .named("traces/demo")
        .receiver(receiver)
        .processor(
            Transform::<Traces, _>::new("filter", drop_health_checks).drop_reason("filtered"),
        )
        .processor(BoundedQueue::new(QueueConfig::default()))
        .exporter(DebugExporter::new(Verbosity::Normal))
        .exporter(kept.with_id(ComponentId::new("memory").with_name("kept")))
        .build()?
        .start()
        .await?;
    println!("pipeline ready: {}", running.health().is_ready());

    let mut sent = 0;
    for seed in 0..3 {
        let batch = generate_traces(2, 3, seed);
        sent += 6;
        sender.send(batch).await?;
        sender.send(health_checks(100 + seed)).await?;
    }

    let telemetry = running.telemetry().clone();
    running.shutdown(Duration::from_secs(5)).await?;
    println!("\nself-telemetry:\n{}", telemetry.render_prometheus());
    println!(
        "\nsent {sent} application spans plus 6 health checks; exported {} spans",
        exported.item_count()
    );
    assert_eq!(
        exported.item_count(),
        sent,
        "every application span arrives"
    );
    Ok(())
}

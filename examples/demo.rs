//! The main demo: an agent and a gateway in one process, on embedded defaults.
//!
//! A generator plays the part of instrumented services: 120 requests, some of them
//! health checks, some failing, some slow, and every one carrying an `Authorization` header
//! and a customer e-mail in its attributes. The pipeline is what a production team runs:
//!
//! ```text
//! receiver -> filter/health -> attributes/redact -> redaction -> tail_sampling -> debug + memory
//! ```
//!
//! with the processor configs read from `docs/examples/agent.yaml` and `gateway.yaml` and
//! the seed sampling policies (keep errors, keep > 2 s, 5 % of the rest). It prints each kept
//! span, then checks the promises (no health check, no secret, every error and slow trace
//! kept) and prints the self-telemetry.
//!
//! Run it with `cargo run --example demo`.

use std::collections::HashSet;
use std::time::Duration;

use otel_pipeline::exporters::{DebugExporter, Verbosity};
use otel_pipeline::processors::attributes::{AttributeRedactor, AttributesConfig, RedactionConfig};
use otel_pipeline::processors::config::{from_yaml, processor_config};
use otel_pipeline::processors::filter::{FilterConfig, FilterProcessor};
use otel_pipeline::processors::tail_sampling::{TailSampler, TailSamplingConfig};
use otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline::proto::common::v1::{AnyValue, KeyValue, any_value::Value};
use otel_pipeline::proto::trace::v1::Status;
use otel_pipeline::testing::{InMemoryExporter, InMemoryReceiver, SplitMix64, generate_traces};
use otel_pipeline::{ComponentId, Pipeline};

const AGENT: &str = include_str!("../docs/examples/agent.yaml");
const GATEWAY: &str = include_str!("../docs/examples/gateway.yaml");
const SAMPLING: &str = r#"
decision_wait: 500ms
policies:
  - { name: errors, type: status_code, status_code: { status_codes: [ERROR] } }
  - { name: slow, type: latency, latency: { threshold_ms: 2000 } }
  - { name: rest, type: probabilistic, probabilistic: { sampling_percentage: 5 } }
"#;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

#[derive(Default)]
struct Sent {
    health: usize,
    errors: HashSet<Vec<u8>>,
    slow: HashSet<Vec<u8>>,
    other: usize,
}

/// One request of traffic: a trace of 3 spans, shaped by `roll`.
fn request(seed: u64, roll: u64, sent: &mut Sent) -> ExportTraceServiceRequest {
    let mut req = generate_traces(1, 3, seed);
    let spans = &mut req.resource_spans[0].scope_spans[0].spans;
    let trace_id = spans[0].trace_id.clone();
    for span in spans.iter_mut() {
        span.attributes.push(kv(
            "http.request.header.authorization",
            "Bearer eyJhbGciOiJIUzI1NiJ9.demo",
        ));
        span.attributes
            .push(kv("enduser.email", "jane.doe@example.com"));
    }
    match roll {
        0..=14 => {
            spans[0].name = "GET /healthz".into();
            for kv in &mut spans[0].attributes {
                if kv.key == "http.route" {
                    kv.value = Some(AnyValue {
                        value: Some(Value::StringValue("/healthz".into())),
                    });
                }
            }
            sent.health += 1;
        }
        15..=22 => {
            spans[2].status = Some(Status {
                code: 2,
                message: "payment declined".into(),
            });
            sent.errors.insert(trace_id);
        }
        23..=30 => {
            spans[0].end_time_unix_nano = spans[0].start_time_unix_nano + 2_600_000_000;
            sent.slow.insert(trace_id);
        }
        _ => sent.other += 1,
    }
    req
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let filter: FilterConfig = processor_config(AGENT, "filter/health")?;
    let redact: AttributesConfig = processor_config(GATEWAY, "attributes/redact")?;
    let mut redaction: RedactionConfig = processor_config(GATEWAY, "redaction")?;
    redaction.summary = otel_pipeline::processors::attributes::Summary::Silent;
    let sampling: TailSamplingConfig = from_yaml("tail_sampling", SAMPLING)?;

    let (receiver, sender) = InMemoryReceiver::new();
    let (kept, exported) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .named("traces/demo")
        .receiver(receiver)
        .processor(FilterProcessor::new(filter).with_id("filter/health".parse()?))
        .processor(AttributeRedactor::attributes(redact).with_id("attributes/redact".parse()?))
        .processor(AttributeRedactor::redaction(redaction))
        .processor(TailSampler::new(sampling))
        .exporter(DebugExporter::new(Verbosity::Normal))
        .exporter(kept.with_id(ComponentId::new("memory").with_name("kept")))
        .build()?
        .start()
        .await?;
    println!("pipeline ready: {}\n", running.health().is_ready());

    let mut rng = SplitMix64::new(2026);
    let mut sent = Sent::default();
    for seed in 0..120 {
        sender
            .send(request(seed, rng.below(100), &mut sent))
            .await?;
    }
    // Let the sampler's decision wait pass, then shut down gracefully.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let telemetry = running.telemetry().clone();
    running.shutdown(Duration::from_secs(5)).await?;

    let spans = exported.spans();
    let kept_traces: HashSet<Vec<u8>> = spans.iter().map(|s| s.trace_id.clone()).collect();
    let secrets = spans
        .iter()
        .flat_map(|s| &s.attributes)
        .any(|a| a.key == "http.request.header.authorization" || matches!(a.value.as_ref().and_then(|v| v.value.as_ref()), Some(Value::StringValue(v)) if v.contains('@')));
    let health = spans.iter().any(|s| s.name == "GET /healthz");
    println!(
        "\nsent 120 requests: {} health checks, {} errors, {} slow, {} others",
        sent.health,
        sent.errors.len(),
        sent.slow.len(),
        sent.other
    );
    println!("kept {} traces ({} spans)", kept_traces.len(), spans.len());
    println!(
        "  every error trace kept:   {}",
        sent.errors.is_subset(&kept_traces)
    );
    println!(
        "  every slow trace kept:    {}",
        sent.slow.is_subset(&kept_traces)
    );
    println!("  health checks dropped:    {}", !health);
    println!("  secrets removed/masked:   {}", !secrets);
    assert!(
        sent.errors.is_subset(&kept_traces)
            && sent.slow.is_subset(&kept_traces)
            && !health
            && !secrets
    );

    println!("\nself-telemetry (Prometheus text):");
    for line in telemetry
        .render_prometheus()
        .lines()
        .filter(|l| !l.starts_with('#'))
    {
        println!("  {line}");
    }
    Ok(())
}

//! Shared by the tail-sampling benches.

use otel_pipeline::processors::config::from_yaml;
use otel_pipeline::processors::tail_sampling::TailSamplingConfig;
use otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline::proto::common::v1::{AnyValue, KeyValue, any_value::Value};
use otel_pipeline::proto::trace::v1::Status;
use otel_pipeline::testing::{SplitMix64, generate_traces};
use otel_pipeline::{ComponentId, ComponentKind, ComponentTelemetry};

pub(crate) const SEED: &str = r#"
decision_wait: 10s
num_traces: 1000000
policies:
  - { name: errors, type: status_code, status_code: { status_codes: [ERROR] } }
  - { name: slow, type: latency, latency: { threshold_ms: 2000 } }
  - { name: priority, type: string_attribute, string_attribute: { key: sampling.priority, values: [always_on] } }
  - { name: rest, type: probabilistic, probabilistic: { sampling_percentage: 5 } }
"#;

pub(crate) const SPANS_PER_TRACE: usize = 20;

/// `traces` traces of 20 spans with 10 attributes each; 2 % errors, 2 % slow.
pub(crate) fn traces(traces: usize, seed: u64) -> ExportTraceServiceRequest {
    let mut req = generate_traces(traces, SPANS_PER_TRACE, seed);
    let mut rng = SplitMix64::new(seed);
    let kv = |k: String, v: Value| KeyValue {
        key: k,
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    };
    for chunk in req.resource_spans[0].scope_spans[0]
        .spans
        .chunks_mut(SPANS_PER_TRACE)
    {
        let roll = rng.below(100);
        for (i, span) in chunk.iter_mut().enumerate() {
            span.attributes = (0..10)
                .map(|a| {
                    kv(
                        format!("app.attr.{a}"),
                        Value::StringValue(format!("value-{}", rng.below(1000))),
                    )
                })
                .collect();
            if roll < 2 && i == 1 {
                span.status = Some(Status {
                    code: 2,
                    ..Default::default()
                });
            }
            if (2..4).contains(&roll) && i == 0 {
                span.end_time_unix_nano = span.start_time_unix_nano + 2_500_000_000;
            }
        }
    }
    req
}

pub(crate) fn config(shards: usize) -> TailSamplingConfig {
    let mut c: TailSamplingConfig = from_yaml("tail_sampling", SEED).expect("seed config");
    c.shards = shards;
    c
}

pub(crate) fn telemetry() -> std::sync::Arc<ComponentTelemetry> {
    ComponentTelemetry::detached(
        ComponentKind::Processor,
        ComponentId::new("tail_sampling"),
        "spans",
    )
}

/// CPU time used so far by every thread of this process, where Linux tells it
/// (`/proc/self/task/*/schedstat`); else 0, and a pair measured with it says nothing.
/// (Not every bench that shares this file measures CPU time.)
#[allow(dead_code)]
pub(crate) fn cpu_time() -> std::time::Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return std::time::Duration::ZERO;
    };
    let ns: u64 = tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    std::time::Duration::from_nanos(ns)
}

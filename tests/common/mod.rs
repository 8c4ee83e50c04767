//! Pipelines the integration tests build again and again: an OTLP gateway that keeps what
//! it receives, and agents that forward over OTLP.

#![allow(dead_code, unreachable_pub)]

use otel_pipeline::exporters::otlp::{OtlpExporter, OtlpExporterConfig};
use otel_pipeline::receivers::{OtlpConfig, OtlpReceiver};
use otel_pipeline::testing::{Exported, InMemoryExporter};
use otel_pipeline::{DirectReceiver, DirectSender};
use otel_pipeline::{Pipeline, RunningPipeline, Traces};

/// OTLP in (with `config`), kept in memory.
pub async fn gateway(config: OtlpConfig) -> (RunningPipeline, OtlpReceiver, Exported<Traces>) {
    let otlp = OtlpReceiver::new(config);
    let (exporter, exported) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .named("traces/gateway")
        .receiver(otlp.traces())
        .exporter(exporter)
        .build()
        .expect("gateway builds")
        .start()
        .await
        .expect("gateway starts");
    (running, otlp, exported)
}

/// Fed from the test, out over OTLP with `config`.
pub async fn agent(config: OtlpExporterConfig) -> (RunningPipeline, DirectSender<Traces>) {
    let (receiver, sender) = DirectReceiver::new();
    let running = Pipeline::traces()
        .named("traces/agent")
        .receiver(receiver)
        .exporter(OtlpExporter::<Traces>::new(config))
        .build()
        .expect("agent builds")
        .start()
        .await
        .expect("agent starts");
    (running, sender)
}

/// OTLP in on loopback, out over OTLP with `config`.
pub async fn otlp_agent(config: OtlpExporterConfig) -> (RunningPipeline, OtlpReceiver) {
    let otlp = OtlpReceiver::new(OtlpConfig::loopback());
    let running = Pipeline::traces()
        .named("traces/agent")
        .receiver(otlp.traces())
        .exporter(OtlpExporter::<Traces>::new(config))
        .build()
        .expect("agent builds")
        .start()
        .await
        .expect("agent starts");
    (running, otlp)
}

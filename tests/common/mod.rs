//! Pipelines the integration tests build again and again: an OTLP gateway that keeps what
//! it receives, and agents that forward over OTLP.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use otel_pipeline::exporters::otlp::{OtlpExporter, OtlpExporterConfig, RetryConfig};
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

/// Fed from the test, out over OTLP/gRPC to `endpoint`, retrying fast (a collector that
/// restarts or drains refuses for a moment).
pub async fn fast_retry_agent(endpoint: String) -> (RunningPipeline, DirectSender<Traces>) {
    agent(OtlpExporterConfig {
        endpoint,
        retry: RetryConfig {
            initial_interval: Duration::from_millis(20),
            ..RetryConfig::default()
        },
        ..OtlpExporterConfig::default()
    })
    .await
}

/// The `collector` example's binary, which `cargo test` builds with the examples.
pub fn collector_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join("collector"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: `cargo test` builds examples",
        bin.display()
    );
    bin
}

/// Send an HTTP GET and return the status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// An OTLP/gRPC backend on loopback that keeps the logs and metrics it receives.
pub struct LogsMetricsBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its logs pipeline.
    pub logs_pipeline: RunningPipeline,
    /// Its metrics pipeline.
    pub metrics_pipeline: RunningPipeline,
    /// The logs it received.
    pub logs: Exported<otel_pipeline::Logs>,
    /// The metrics it received.
    pub metrics: Exported<otel_pipeline::Metrics>,
}

impl LogsMetricsBackend {
    /// Start one.
    pub async fn start() -> Self {
        let otlp = OtlpReceiver::new(OtlpConfig {
            http: None,
            ..OtlpConfig::loopback()
        });
        let (logs_out, logs) = InMemoryExporter::new();
        let (metrics_out, metrics) = InMemoryExporter::new();
        let logs_pipeline = Pipeline::logs()
            .receiver(otlp.logs())
            .exporter(logs_out)
            .build()
            .expect("builds")
            .start()
            .await
            .expect("starts");
        let metrics_pipeline = Pipeline::metrics()
            .receiver(otlp.metrics())
            .exporter(metrics_out)
            .build()
            .expect("builds")
            .start()
            .await
            .expect("starts");
        Self {
            addr: otlp.local_addrs().grpc.expect("grpc"),
            logs_pipeline,
            metrics_pipeline,
            logs,
            metrics,
        }
    }

    /// Stop both pipelines.
    pub async fn stop(self) {
        self.logs_pipeline
            .shutdown(Duration::from_secs(5))
            .await
            .expect("stops");
        self.metrics_pipeline
            .shutdown(Duration::from_secs(5))
            .await
            .expect("stops");
    }
}

/// Fed from the test, out over OTLP/gRPC to `endpoint`, for any signal.
pub async fn client<S: otel_pipeline::otlp::WireSignal>(
    endpoint: String,
) -> (RunningPipeline, DirectSender<S>) {
    let (receiver, sender) = DirectReceiver::new();
    let running = Pipeline::new_for::<S>()
        .named("client")
        .receiver(receiver)
        .exporter(OtlpExporter::<S>::new(OtlpExporterConfig {
            endpoint,
            ..OtlpExporterConfig::default()
        }))
        .build()
        .expect("client builds")
        .start()
        .await
        .expect("client starts");
    (running, sender)
}

//! Real Jaeger and Zipkin client libraries into a collector built from Collector YAML
//! (`jaeger` receiver with all four protocols, `zipkin` receiver), out over OTLP: every
//! span arrives with its service, kind, parent, attributes and error status.
//!
//! The clients are OpenTelemetry Python's Jaeger Thrift exporter (to the agent's compact
//! UDP port and to the collector's Thrift HTTP endpoint) and py_zipkin (v2 and v1 JSON),
//! from `tests/python/requirements-legacy.txt`, which `.ci/run` installs into
//! `.venv-legacy`. Set `OTEL_PIPELINE_LEGACY_PYTHON` to use another interpreter. Without
//! them (as `build.rs` finds when the tests are built) the test is reported as ignored.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use otel_pipeline::collector::{CollectorConfig, ConfigFile};
use otel_pipeline::proto::common::v1::any_value::Value as PV;
use otel_pipeline::receivers::OtlpConfig;
use otel_pipeline::testing::eventually;

mod common;

fn python() -> PathBuf {
    std::env::var_os("OTEL_PIPELINE_LEGACY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-legacy/bin/python")
        })
}

fn free_tcp() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn free_udp() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(python_legacy),
    ignore = "needs the Jaeger and Zipkin Python clients: run .ci/run, or set OTEL_PIPELINE_LEGACY_PYTHON"
)]
async fn jaeger_and_zipkin_clients_reach_an_otlp_backend_whole() {
    let (gateway, gateway_otlp, exported) = common::gateway(OtlpConfig::loopback()).await;
    let sink = gateway_otlp.local_addrs().grpc.expect("grpc");
    let (grpc, http, compact, binary, zipkin) =
        (free_tcp(), free_tcp(), free_udp(), free_udp(), free_tcp());
    let yaml = format!(
        "receivers:
  jaeger:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{grpc}}}
      thrift_http: {{endpoint: 127.0.0.1:{http}}}
      thrift_compact: {{endpoint: 127.0.0.1:{compact}, queue_size: 100, workers: 2}}
      thrift_binary: {{endpoint: 127.0.0.1:{binary}}}
  zipkin:
    endpoint: 127.0.0.1:{zipkin}
    parse_string_tags: true
exporters:
  otlp:
    endpoint: http://{sink}
    tls: {{insecure: true}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces:
      receivers: [jaeger, zipkin]
      exporters: [otlp]
"
    );
    let registry = otel_pipeline::default_registry();
    let config =
        CollectorConfig::load(&[ConfigFile::new("legacy.yaml", yaml)], |_| None, &registry)
            .expect("the configuration loads");
    let telemetry = otel_pipeline::Telemetry::new();
    let collector = config
        .build(&registry, telemetry.clone())
        .expect("builds")
        .start()
        .await
        .expect("starts");

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/send_legacy.py");
    for (mode, port) in [
        ("jaeger-compact", compact),
        ("jaeger-http", http),
        ("zipkin-v2", zipkin),
        ("zipkin-v1", zipkin),
    ] {
        let out = tokio::task::spawn_blocking({
            let script = script.clone();
            move || {
                Command::new(python())
                    .arg(script)
                    .args([mode, &format!("127.0.0.1:{port}")])
                    .output()
                    .expect("python runs")
            }
        })
        .await
        .expect("joined");
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let service = format!("legacy-{mode}");
        let arrived = eventually(Duration::from_secs(10), || {
            exported
                .batches()
                .iter()
                .flat_map(|b| b.data().resource_spans.clone())
                .filter(|rs| {
                    rs.resource.as_ref().is_some_and(|r| {
                        r.attributes.iter().any(|a| {
                            a.key == "service.name"
                                && a.value.as_ref().and_then(|v| v.value.as_ref())
                                    == Some(&PV::StringValue(service.clone()))
                        })
                    })
                })
                .flat_map(|rs| rs.scope_spans)
                .flat_map(|ss| ss.spans)
                .count()
                >= 2
        })
        .await;
        assert!(arrived, "{mode}: both spans of the trace reach the backend");
        let spans: Vec<_> = exported
            .batches()
            .iter()
            .flat_map(|b| b.data().resource_spans.clone())
            .filter(|rs| {
                rs.resource.as_ref().is_some_and(|r| {
                    r.attributes.iter().any(|a| {
                        a.value.as_ref().and_then(|v| v.value.as_ref())
                            == Some(&PV::StringValue(service.clone()))
                    })
                })
            })
            .flat_map(|rs| rs.scope_spans)
            .flat_map(|ss| ss.spans)
            .collect();
        let parent = spans
            .iter()
            .find(|s| s.name == "checkout")
            .expect("checkout");
        let child = spans.iter().find(|s| s.name == "charge").expect("charge");
        assert_eq!(child.trace_id, parent.trace_id, "{mode}");
        assert_eq!(child.parent_span_id, parent.span_id, "{mode}");
        assert_eq!(parent.kind, 2, "{mode}: SERVER");
        assert_eq!(child.kind, 3, "{mode}: CLIENT");
        let status = child.status.clone().unwrap_or_default();
        assert_eq!(status.code, 2, "{mode}: the failure is an ERROR status");
        assert_eq!(status.message, "card declined", "{mode}");
        let order = child
            .attributes
            .iter()
            .find(|a| a.key == "order.id")
            .and_then(|a| a.value.as_ref()?.value.clone());
        assert_eq!(order, Some(PV::IntValue(42)), "{mode}: typed attribute");
        assert!(child.end_time_unix_nano >= child.start_time_unix_nano);
        assert!(
            child.start_time_unix_nano > 1_600_000_000_000_000_000,
            "{mode}"
        );
    }
    let _ = collector.shutdown(Duration::from_secs(5)).await;
    let _ = gateway.shutdown(Duration::from_secs(5)).await;
    let _ = binary;
    let _ = grpc;
}

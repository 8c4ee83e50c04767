//! Real Jaeger and Zipkin client libraries into a collector built from Collector YAML
//! (`jaeger` receiver with all four protocols, `zipkin` receiver), out over OTLP: every
//! span arrives with its service, kind, parent, attributes and error status.
//!
//! The clients are OpenTelemetry Python's Jaeger Thrift exporter (to the agent's compact
//! UDP port, its agent client speaking binary Thrift to the binary port, and to the
//! collector's Thrift HTTP endpoint) and py_zipkin (v2 and v1 JSON),
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
        ("jaeger-binary", binary),
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
    let _ = grpc;
}

/// A chain through every foreign format and back: OTLP → `jaeger` exporter → `jaeger`
/// receiver (gRPC) → `zipkin` exporter (JSON) → `zipkin` receiver → `zipkin` exporter
/// (protobuf) → `zipkin` receiver → memory. Ids, parents, names, kinds, error status,
/// attributes and events survive every hop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_survive_jaeger_and_zipkin_exporters_and_receivers() {
    use otel_pipeline::exporters::otlp::{OtlpExporter, OtlpExporterConfig, Protocol};
    use otel_pipeline::proto::trace::v1::{Status, status::StatusCode};
    use otel_pipeline::receivers::{JaegerConfig, JaegerReceiver, ZipkinReceiver};
    use otel_pipeline::testing::InMemoryExporter;
    use otel_pipeline::{DirectReceiver, Pipeline, Traces};

    let (memory, exported) = InMemoryExporter::new();
    let zipkin_b =
        ZipkinReceiver::new("127.0.0.1:0".parse().expect("addr")).parse_string_tags(true);
    let last = Pipeline::traces()
        .named("traces/last")
        .receiver(zipkin_b.traces())
        .exporter(memory)
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");
    let zipkin_a =
        ZipkinReceiver::new("127.0.0.1:0".parse().expect("addr")).parse_string_tags(true);
    let to_proto = OtlpExporter::<Traces>::new(OtlpExporterConfig {
        endpoint: format!(
            "http://{}",
            zipkin_b.local_addr().unwrap_or(([0; 4], 0).into())
        ),
        protocol: Protocol::ZipkinProto,
        ..OtlpExporterConfig::default()
    });
    // The receiver binds when its pipeline starts: start the chain from the far end.
    let mid = Pipeline::traces()
        .named("traces/mid")
        .receiver(zipkin_a.traces())
        .exporter(to_proto)
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");
    let jaeger = JaegerReceiver::new(JaegerConfig {
        grpc: Some("127.0.0.1:0".parse().expect("addr")),
        ..JaegerConfig::default()
    });
    let to_json = OtlpExporter::<Traces>::new(OtlpExporterConfig {
        endpoint: format!(
            "http://{}/api/v2/spans",
            zipkin_a.local_addr().expect("zipkin a")
        ),
        protocol: Protocol::ZipkinJson,
        ..OtlpExporterConfig::default()
    });
    let first = Pipeline::traces()
        .named("traces/first")
        .receiver(jaeger.traces())
        .exporter(to_json)
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");
    let (direct, sender) = DirectReceiver::new();
    let to_jaeger = OtlpExporter::<Traces>::new(OtlpExporterConfig {
        endpoint: format!("http://{}", jaeger.local_addrs().grpc.expect("grpc")),
        protocol: Protocol::JaegerGrpc,
        ..OtlpExporterConfig::default()
    });
    let source = Pipeline::traces()
        .named("traces/source")
        .receiver(direct)
        .exporter(to_jaeger)
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");

    let mut request = otel_pipeline::testing::generate_traces(1, 3, 41);
    {
        let spans = &mut request.resource_spans[0].scope_spans[0].spans;
        let root = spans[0].span_id.clone();
        spans[1].parent_span_id = root;
        spans[1].kind = 3;
        spans[1].status = Some(Status {
            code: StatusCode::Error as i32,
            message: "upstream timed out".into(),
        });
    }
    let sent = request.clone();
    sender.send(request).await.expect("sent");
    let arrived = eventually(Duration::from_secs(10), || exported.item_count() >= 3).await;
    assert!(arrived, "three spans come out of the last hop");
    let out = exported.spans();
    for want in &sent.resource_spans[0].scope_spans[0].spans {
        let got = out
            .iter()
            .find(|s| s.span_id == want.span_id)
            .expect("every span arrives");
        assert_eq!(got.trace_id, want.trace_id);
        assert_eq!(got.parent_span_id, want.parent_span_id, "{}", want.name);
        assert_eq!(got.name, want.name);
        assert_eq!(got.kind, want.kind, "{}", want.name);
        assert_eq!(
            got.start_time_unix_nano / 1000,
            want.start_time_unix_nano / 1000
        );
        // Zipkin keeps a start and a duration in microseconds: the end may round by one.
        let end = |s: &otel_pipeline::proto::trace::v1::Span| s.end_time_unix_nano / 1000;
        assert!(end(got).abs_diff(end(want)) <= 1, "{}", want.name);
        assert_eq!(got.events.len(), want.events.len(), "{}", want.name);
        for a in &want.attributes {
            assert!(
                got.attributes.iter().any(|b| b.key == a.key),
                "{}: attribute {} survives",
                want.name,
                a.key
            );
        }
        let code = |s: &otel_pipeline::proto::trace::v1::Span| {
            s.status.as_ref().map(|s| s.code).unwrap_or_default()
        };
        if code(want) == StatusCode::Error as i32 {
            assert_eq!(code(got), StatusCode::Error as i32, "{}", want.name);
            assert_eq!(
                got.status.as_ref().map(|s| s.message.as_str()),
                Some("upstream timed out")
            );
        }
    }
    for p in [source, first, mid, last] {
        let _ = p.shutdown(Duration::from_secs(5)).await;
    }
}

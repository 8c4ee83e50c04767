//! Connectors from Collector YAML: `spanmetrics` and `servicegraph` in front of the tail
//! sampler, served by the `prometheus` exporter; `forward` and `routing` joining
//! pipelines; and the pipeline graph checks (unused sides, cycles, unsupported signals).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use otel_pipeline::collector::{CollectorConfig, ConfigFile, RunningCollector};
use otel_pipeline::exporters::otlp::OtlpExporterConfig;
use otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline::proto::common::v1::{AnyValue, KeyValue, any_value::Value};
use otel_pipeline::proto::resource::v1::Resource;
use otel_pipeline::proto::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span::SpanKind, status::StatusCode,
};
use otel_pipeline::receivers::OtlpConfig;
use otel_pipeline::testing::eventually;
use otel_pipeline::{Telemetry, Traces};

mod common;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn load(yaml: &str) -> Result<CollectorConfig, otel_pipeline::collector::LoadError> {
    CollectorConfig::load(
        &[
            ConfigFile::new("c.yaml", yaml),
            ConfigFile::new(
                "quiet.yaml",
                "service:\n  telemetry:\n    metrics:\n      level: none\n",
            ),
        ],
        |_| None,
        &otel_pipeline::default_registry(),
    )
}

async fn start(yaml: &str) -> RunningCollector {
    load(yaml)
        .unwrap_or_else(|e| panic!("{e}"))
        .build(&otel_pipeline::default_registry(), Telemetry::new())
        .unwrap_or_else(|e| panic!("{e}"))
        .start()
        .await
        .expect("collector starts")
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn span(
    trace: u64,
    id: u64,
    parent: u64,
    name: &str,
    kind: SpanKind,
    ms: u64,
    error: bool,
) -> Span {
    let mut trace_id = [0u8; 16];
    trace_id[8..].copy_from_slice(&trace.to_be_bytes());
    trace_id[0] = 1;
    Span {
        trace_id: trace_id.to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: if parent == 0 {
            Vec::new()
        } else {
            parent.to_be_bytes().to_vec()
        },
        name: name.into(),
        kind: kind as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_000_000_000 + ms * 1_000_000,
        status: Some(Status {
            code: if error {
                StatusCode::Error
            } else {
                StatusCode::Unset
            } as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn resource_spans(service: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", service)],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Trace `t`: a `frontend` server span, its client call, and the `checkout` server span
/// that answers it. Every 4th trace fails in checkout; durations 3, 30 and 300 ms.
fn trace(t: u64) -> Vec<ResourceSpans> {
    let error = t.is_multiple_of(4);
    let ms = [3, 30, 300][(t % 3) as usize];
    let (root, client, server) = (t * 10 + 1, t * 10 + 2, t * 10 + 3);
    vec![
        resource_spans(
            "frontend",
            vec![
                span(t, root, 0, "GET /cart", SpanKind::Server, ms + 2, false),
                span(
                    t,
                    client,
                    root,
                    "POST checkout",
                    SpanKind::Client,
                    ms + 1,
                    error,
                ),
            ],
        ),
        resource_spans(
            "checkout",
            vec![span(
                t,
                server,
                client,
                "PlaceOrder",
                SpanKind::Server,
                ms,
                error,
            )],
        ),
    ]
}

/// The value of each series of `name` in a Prometheus text scrape, by its label text.
fn series(scrape: &str, name: &str) -> HashMap<String, f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match head.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}').to_string()),
                None => (head, String::new()),
            };
            (metric == name).then(|| (labels, value.parse().unwrap_or(f64::NAN)))
        })
        .collect()
}

fn sum_where(scrape: &str, name: &str, needles: &[&str]) -> f64 {
    series(scrape, name)
        .into_iter()
        .filter(|(labels, _)| needles.iter().all(|n| labels.contains(n)))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_metrics_count_every_span_while_the_backend_keeps_only_the_sampled_traces() {
    let (backend, backend_rx, exported) = common::gateway(OtlpConfig::loopback()).await;
    let backend_addr = backend_rx.local_addrs().grpc.expect("backend listens");
    let (grpc, prom) = (free_port(), free_port());
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
processors:
  tail_sampling:
    decision_wait: 300ms
    policies:
      - name: errors
        type: status_code
        status_code: {{status_codes: [ERROR]}}
exporters:
  otlp/backend:
    endpoint: http://{backend_addr}
    tls:
      insecure: true
  prometheus:
    endpoint: 127.0.0.1:{prom}
connectors:
  spanmetrics:
    metrics_flush_interval: 100ms
    histogram:
      explicit:
        buckets: [10ms, 100ms, 1s]
  servicegraph:
    metrics_flush_interval: 100ms
    store:
      ttl: 1s
  forward:
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [spanmetrics, servicegraph, forward]
    traces/sampled:
      receivers: [forward]
      processors: [tail_sampling]
      exporters: [otlp/backend]
    metrics:
      receivers: [spanmetrics, servicegraph]
      exporters: [prometheus]
"#
    );
    let collector = start(&yaml).await;
    let (agent, sender) = common::agent(OtlpExporterConfig {
        endpoint: format!("http://127.0.0.1:{grpc}"),
        ..Default::default()
    })
    .await;
    let traces = 40u64;
    for t in 1..=traces {
        sender
            .send(ExportTraceServiceRequest {
                resource_spans: trace(t),
            })
            .await
            .expect("sent");
    }
    agent
        .shutdown(Duration::from_secs(5))
        .await
        .expect("agent drains");

    let errors = (1..=traces).filter(|t| t.is_multiple_of(4)).count();
    let addr: SocketAddr = format!("127.0.0.1:{prom}").parse().expect("address");
    let calls = "traces_span_metrics_calls_total";
    let mut scrape = String::new();
    let reached = eventually(Duration::from_secs(10), || {
        let Some((200, body)) = common::http_get(addr, "/metrics") else {
            return false;
        };
        scrape = body;
        sum_where(&scrape, calls, &[]) == (3 * traces) as f64
            && sum_where(&scrape, "traces_service_graph_request_total", &[]) == 2.0 * traces as f64
    })
    .await;
    assert!(reached, "metrics never reached every span:\n{scrape}");
    // Request and error counts per service, before any sampling.
    assert_eq!(
        sum_where(
            &scrape,
            calls,
            &[
                "service_name=\"checkout\"",
                "span_kind=\"SPAN_KIND_SERVER\""
            ]
        ),
        traces as f64
    );
    assert_eq!(
        sum_where(
            &scrape,
            calls,
            &[
                "service_name=\"checkout\"",
                "status_code=\"STATUS_CODE_ERROR\""
            ]
        ),
        errors as f64
    );
    assert!(
        scrape.contains("# TYPE traces_span_metrics_calls_total counter"),
        "{scrape}"
    );
    assert!(scrape.contains("# TYPE traces_span_metrics_duration_milliseconds histogram"));
    // Latency buckets: checkout's 3, 30 and 300 ms spans fall at or below 10, 100, 1000.
    let bucket = |le: &str| {
        sum_where(
            &scrape,
            "traces_span_metrics_duration_milliseconds_bucket",
            &["service_name=\"checkout\"", &format!("le=\"{le}\"")],
        )
    };
    let per_third = |r: u64| (1..=traces).filter(|t| t % 3 == r).count() as f64;
    assert_eq!(bucket("10"), per_third(0));
    assert_eq!(bucket("100"), per_third(0) + per_third(1));
    assert_eq!(bucket("1000"), traces as f64);
    assert_eq!(bucket("+Inf"), traces as f64);
    // The service graph: frontend calls checkout, with the failures.
    let edge = ["client=\"frontend\"", "server=\"checkout\""];
    assert_eq!(
        sum_where(&scrape, "traces_service_graph_request_total", &edge),
        traces as f64
    );
    assert_eq!(
        sum_where(&scrape, "traces_service_graph_request_failed_total", &edge),
        errors as f64
    );
    assert_eq!(
        sum_where(
            &scrape,
            "traces_service_graph_request_server_seconds_count",
            &edge
        ),
        traces as f64
    );
    // Root server spans come from the virtual node `user`.
    assert_eq!(
        sum_where(
            &scrape,
            "traces_service_graph_request_total",
            &[
                "client=\"user\"",
                "server=\"frontend\"",
                "connection_type=\"virtual_node\""
            ]
        ),
        traces as f64
    );
    // The resource's service is the job.
    assert!(scrape.contains("job=\"checkout\""), "{scrape}");

    // The backend holds only the sampled share: the error traces, whole.
    let sampled = eventually(Duration::from_secs(10), || {
        exported.item_count() == 3 * errors
    })
    .await;
    assert!(sampled, "backend holds {} spans", exported.item_count());
    assert!(exported.spans().iter().all(|s| {
        let t = u64::from_be_bytes(s.trace_id[8..].try_into().expect("8 bytes"));
        t.is_multiple_of(4)
    }));
    collector
        .shutdown(Duration::from_secs(5))
        .await
        .expect("drains");
    backend
        .shutdown(Duration::from_secs(5))
        .await
        .expect("backend stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_sends_each_resource_to_the_pipeline_of_its_first_matching_route() {
    let (acme, acme_rx, acme_out) = common::gateway(OtlpConfig::loopback()).await;
    let (other, other_rx, other_out) = common::gateway(OtlpConfig::loopback()).await;
    let grpc = free_port();
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
exporters:
  otlp/acme:
    endpoint: http://{}
    tls: {{insecure: true}}
  otlp/other:
    endpoint: http://{}
    tls: {{insecure: true}}
connectors:
  routing:
    default_pipelines: [traces/other]
    table:
      - statement: route() where resource.attributes["service.name"] == "checkout"
        pipelines: [traces/acme]
      - condition: name == "POST checkout"
        context: span
        pipelines: [traces/acme]
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [routing]
    traces/acme:
      receivers: [routing]
      exporters: [otlp/acme]
    traces/other:
      receivers: [routing]
      exporters: [otlp/other]
"#,
        acme_rx.local_addrs().grpc.expect("listens"),
        other_rx.local_addrs().grpc.expect("listens"),
    );
    let collector = start(&yaml).await;
    let (agent, sender) = common::agent(OtlpExporterConfig {
        endpoint: format!("http://127.0.0.1:{grpc}"),
        ..Default::default()
    })
    .await;
    for t in 1..=10 {
        sender
            .send(ExportTraceServiceRequest {
                resource_spans: trace(t),
            })
            .await
            .expect("sent");
    }
    agent
        .shutdown(Duration::from_secs(5))
        .await
        .expect("agent drains");
    // checkout's server span by resource, frontend's client span by its name; the
    // frontend's server span matches nothing and takes the default.
    let done = eventually(Duration::from_secs(10), || {
        acme_out.item_count() == 20 && other_out.item_count() == 10
    })
    .await;
    assert!(
        done,
        "acme {} other {}",
        acme_out.item_count(),
        other_out.item_count()
    );
    let names: Vec<String> = other_out.spans().into_iter().map(|s| s.name).collect();
    assert!(names.iter().all(|n| n == "GET /cart"), "{names:?}");
    collector
        .shutdown(Duration::from_secs(5))
        .await
        .expect("drains");
    acme.shutdown(Duration::from_secs(5)).await.expect("stops");
    other.shutdown(Duration::from_secs(5)).await.expect("stops");
}

const PIPES: &str = "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:0\nexporters:\n  debug:\n";

fn error_text(yaml: &str) -> String {
    load(yaml).expect_err("must not load").to_string()
}

#[test]
fn the_pipeline_graph_is_checked_as_the_collector_checks_it() {
    // A cycle through two forward connectors.
    let cycle = format!(
        "{PIPES}connectors:\n  forward/a:\n  forward/b:\nservice:\n  pipelines:\n    traces/one:\n      receivers: [otlp, forward/b]\n      exporters: [forward/a]\n    traces/two:\n      receivers: [forward/a]\n      exporters: [forward/b]\n"
    );
    let e = error_text(&cycle);
    assert!(e.contains("connectors join pipelines in a cycle"), "{e}");
    assert!(e.contains("traces/one -> forward/a -> traces/two"), "{e}");
    // An exporter side with no receiver side.
    let one_sided = format!(
        "{PIPES}connectors:\n  spanmetrics:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [spanmetrics]\n"
    );
    let e = error_text(&one_sided);
    assert!(e.contains("service.pipelines.traces.exporters[0]"), "{e}");
    assert!(e.contains("receiver of no pipeline it can feed"), "{e}");
    // spanmetrics makes metrics: a traces pipeline cannot take its output.
    let wrong_signal = format!(
        "{PIPES}connectors:\n  spanmetrics:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [spanmetrics]\n    traces/b:\n      receivers: [spanmetrics]\n      exporters: [debug]\n"
    );
    let e = error_text(&wrong_signal);
    assert!(e.contains("service.pipelines.traces/b.receivers[0]"), "{e}");
    // One name under receivers and connectors.
    let ambiguous = format!(
        "receivers:\n  forward:\n{}connectors:\n  forward:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n",
        PIPES.trim_start_matches("receivers:\n")
    );
    assert!(error_text(&ambiguous).contains("defined both under receivers and under connectors"));
    // A connector's own settings are checked, used or not, at their line.
    let bad = format!(
        "{PIPES}connectors:\n  spanmetrics:\n    exclude_dimensions: [span.nam]\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n"
    );
    let e = error_text(&bad);
    assert!(e.contains("c.yaml:10:26"), "{e}");
    assert!(
        e.contains("connectors.spanmetrics.exclude_dimensions[0]"),
        "{e}"
    );
    // A routing table naming a pipeline the connector does not feed.
    let misrouted = format!(
        "{PIPES}connectors:\n  routing:\n    table:\n      - condition: name == \"x\"\n        context: span\n        pipelines: [traces/nowhere]\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [routing]\n    traces/b:\n      receivers: [routing]\n      exporters: [debug]\n"
    );
    let e = error_text(&misrouted);
    assert!(
        e.contains("pipeline `traces/nowhere` does not take this connector"),
        "{e}"
    );
    // A connector type of the Collector this build lacks is named as such.
    let vendor = format!(
        "{PIPES}connectors:\n  datadog/connector:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n"
    );
    assert!(
        error_text(&vendor).contains("`datadog` is a connector of the OpenTelemetry Collector")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spanmetrics_series_stay_within_the_cardinality_limit_and_overflow_is_counted() {
    use otel_pipeline::connector::{Connect, Downstream};
    use otel_pipeline::processors::connectors::{SpanMetrics, SpanMetricsConfig};
    use otel_pipeline::testing::InMemoryExporter;
    use otel_pipeline::{BoxConsumer, ComponentKind, DirectReceiver, Pipeline};

    let telemetry = Telemetry::new();
    let (out, metrics) = InMemoryExporter::new();
    let metrics_pipeline = Pipeline::metrics()
        .named("metrics")
        .telemetry(telemetry.clone())
        .exporter(out)
        .build()
        .expect("builds");
    let head = BoxConsumer::new(metrics_pipeline.consumer());
    let metrics_pipeline = metrics_pipeline.start().await.expect("starts");
    let config: SpanMetricsConfig = otel_pipeline::processors::from_yaml(
        "spanmetrics",
        "aggregation_cardinality_limit: 5\nmetrics_flush_interval: 1h\n",
    )
    .expect("config");
    let (receiver, sender) = DirectReceiver::<Traces>::new();
    let traces = Pipeline::traces()
        .telemetry(telemetry.clone())
        .receiver(receiver)
        .exporter(Connect::new(
            SpanMetrics::new(config).expect("valid"),
            Downstream::single("metrics", head),
        ))
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");
    // 50 distinct span names: 5 series, the rest in the overflow series.
    let spans: Vec<Span> = (0..50u64)
        .map(|i| {
            span(
                i + 1,
                i + 1,
                0,
                &format!("op-{i}"),
                SpanKind::Server,
                5,
                false,
            )
        })
        .collect();
    sender
        .send(ExportTraceServiceRequest {
            resource_spans: vec![resource_spans("svc", spans)],
        })
        .await
        .expect("sent");
    traces
        .shutdown(Duration::from_secs(5))
        .await
        .expect("flushes");
    metrics_pipeline
        .shutdown(Duration::from_secs(5))
        .await
        .expect("stops");
    let t = telemetry
        .find(ComponentKind::Exporter, "spanmetrics")
        .expect("counted");
    assert_eq!(
        telemetry.sum("otelcol_connector_spanmetrics_overflow_spans", &[]),
        45,
        "{:?}",
        t.id()
    );
    let points: Vec<_> = metrics
        .batches()
        .into_iter()
        .flat_map(|b| b.into_data().resource_metrics)
        .flat_map(|rm| rm.scope_metrics)
        .flat_map(|sm| sm.metrics)
        .filter(|m| m.name == "traces.span.metrics.calls")
        .collect();
    let Some(otel_pipeline::proto::metrics::v1::metric::Data::Sum(sum)) = &points[0].data else {
        panic!("calls is a sum");
    };
    assert_eq!(sum.data_points.len(), 6, "5 series and the overflow");
    let overflow = sum
        .data_points
        .iter()
        .find(|p| p.attributes.iter().any(|a| a.key == "otel.metric.overflow"))
        .expect("an overflow series");
    assert_eq!(
        overflow.value,
        Some(otel_pipeline::proto::metrics::v1::number_data_point::Value::AsInt(45))
    );
}

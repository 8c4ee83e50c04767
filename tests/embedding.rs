//! An embedded pipeline or collector, used as a library user would: what happens when it
//! is dropped without `shutdown`, and what a Collector config asks to be served.

use std::time::Duration;

use otel_pipeline::processors::config::from_yaml;
use otel_pipeline::processors::tail_sampling::{TailSampler, TailSamplingConfig};
use otel_pipeline::proto::trace::v1::{Status, status::StatusCode};
use otel_pipeline::testing::{InMemoryExporter, generate_traces};
use otel_pipeline::{DirectReceiver, Pipeline};

/// A tail sampler holding 20 error traces (its decision is 30 s away) is dropped without
/// `shutdown` on a multi-thread runtime: it drains in place, and all 20 reach the exporter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_running_pipeline_drains_what_it_holds() {
    let sampler: TailSamplingConfig = from_yaml(
        "tail_sampling",
        "decision_wait: 30s\npolicies: [{ name: errors, type: status_code, status_code: { status_codes: [ERROR] } }]",
    )
    .expect("config");
    let (receiver, sender) = DirectReceiver::new();
    let (exporter, exported) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .receiver(receiver)
        .processor(TailSampler::new(sampler))
        .exporter(exporter)
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");
    let mut data = generate_traces(20, 2, 9);
    for span in &mut data.resource_spans[0].scope_spans[0].spans {
        span.status = Some(Status {
            code: StatusCode::Error as i32,
            message: "boom".into(),
        });
    }
    sender.send(data).await.expect("accepted");
    assert_eq!(exported.item_count(), 0, "held for the decision");
    drop(running);
    assert_eq!(
        exported.item_count(),
        40,
        "every kept span delivered on drop"
    );
    let traces: std::collections::HashSet<Vec<u8>> =
        exported.spans().into_iter().map(|s| s.trace_id).collect();
    assert_eq!(traces.len(), 20);
}

/// GET `path` from `addr` over plain HTTP/1.1: (status, body).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("response");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A collector embedded from Collector YAML serves what its configuration asks for: the
/// self-metrics at `service.telemetry.metrics.address` and the `health_check` endpoint,
/// with no code of the example's. `level: none` serves none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_collector_serves_its_metrics_and_health_endpoints() {
    use otel_pipeline::collector::{CollectorConfig, ConfigFile};
    let yaml = |metrics: &str| {
        format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: 127.0.0.1:0 }}\n\
             exporters:\n  nop:\n\
             extensions:\n  health_check:\n    endpoint: 127.0.0.1:0\n\
             service:\n  extensions: [health_check]\n  telemetry:\n    metrics: {metrics}\n  \
             pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [nop]\n"
        )
    };
    let registry = otel_pipeline::default_registry();
    let start = async |text: String| {
        CollectorConfig::load(&[ConfigFile::new("c.yaml", text)], |_| None, &registry)
            .expect("loads")
            .build(&registry, otel_pipeline::Telemetry::new())
            .expect("builds")
            .start()
            .await
            .expect("starts")
    };
    let running = start(yaml("{ address: 127.0.0.1:0 }")).await;
    let metrics = running.metrics_address().expect("metrics served");
    let (status, body) = http_get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("otelcol_receiver_accepted_spans"), "{body}");
    let health = running
        .extension_address("health_check")
        .expect("health served");
    let (status, body) = http_get(health, "/").await;
    assert_eq!(status, 200, "{body}");
    running
        .shutdown(Duration::from_secs(5))
        .await
        .expect("stops");
    // The endpoint stops with the collector.
    assert!(tokio::net::TcpStream::connect(metrics).await.is_err());

    let quiet = start(yaml("{ level: none }")).await;
    assert_eq!(quiet.metrics_address(), None);
    quiet.shutdown(Duration::from_secs(5)).await.expect("stops");

    // An address that is not one fails the load, naming the key and its line.
    let err = CollectorConfig::load(
        &[ConfigFile::new("c.yaml", yaml("{ address: 'nowhere' }"))],
        |_| None,
        &registry,
    )
    .expect_err("a bad address");
    let text = err.to_string();
    assert!(text.contains("c.yaml:13"), "{text}");
    assert!(text.contains("service.telemetry.metrics"), "{text}");
}

/// `?` on a load error from `main` prints `Debug`: it reads as the `file:line:col: path:
/// message` text the docs show, not as the structure (`{:#?}` still shows that).
#[test]
fn errors_returned_from_main_read_as_text() {
    use otel_pipeline::collector::{CollectorConfig, ConfigFile};
    let registry = otel_pipeline::default_registry();
    let err = CollectorConfig::load(
        &[ConfigFile::new(
            "c.yaml",
            "processors:\n  batch:\n    timout: 1s\nexporters:\n  nop:\nreceivers:\n  otlp:\n    protocols:\n      grpc:\n\
             service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [nop]\n",
        )],
        |_| None,
        &registry,
    )
    .expect_err("a typo");
    let debug = format!("{err:?}");
    assert_eq!(debug, err.to_string());
    assert_eq!(err.errors.len(), 1, "{debug}");
    assert!(
        debug.starts_with("c.yaml:3:5: processors.batch.timout"),
        "{debug}"
    );
    assert!(format!("{err:#?}").contains("LoadError"));
    let boxed: Box<dyn std::error::Error> = Box::new(err);
    assert!(format!("{boxed:?}").starts_with("c.yaml:3:5"));
}

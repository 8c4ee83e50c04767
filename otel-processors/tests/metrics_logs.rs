//! Metrics and logs through `filter`, `attributes` / `redaction` and `batch`, configured
//! as Collector sections and driven through typed pipelines, with what each drops counted.

// Test helpers unwrap: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use otel_pipeline_core::proto::collector::logs::v1::ExportLogsServiceRequest;
use otel_pipeline_core::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use otel_pipeline_core::proto::common::v1::{AnyValue, KeyValue, KeyValueList, any_value::Value};
use otel_pipeline_core::proto::logs::v1::LogRecord;
use otel_pipeline_core::proto::metrics::v1::{Metric, metric::Data};
use otel_pipeline_core::testing::{
    Exported, InMemoryExporter, eventually, generate_logs, generate_metrics,
};
use otel_pipeline_core::{
    ComponentKind, ComponentTelemetry, Logs, Metrics, Pipeline, Processor, RunningPipeline, Signal,
};
use otel_pipeline_core::{DirectReceiver, DirectSender};
use otel_processors::attributes::{AttributeRedactor, AttributesConfig, RedactionConfig};
use otel_processors::batch::{BatchConfig, BatchProcessor};
use otel_processors::config::from_yaml;
use otel_processors::filter::{FilterConfig, FilterProcessor};

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

fn counters(running: &RunningPipeline, id: &str) -> Arc<ComponentTelemetry> {
    running
        .telemetry()
        .find(ComponentKind::Processor, id)
        .unwrap()
}

/// A pipeline of signal `S`: a direct receiver, `p`, an in-memory exporter.
async fn run<S: Signal, P: Processor<S>>(p: P) -> (RunningPipeline, DirectSender<S>, Exported<S>) {
    let (receiver, sender) = DirectReceiver::new();
    let (exporter, exported) = InMemoryExporter::new();
    let running = Pipeline::new_for::<S>()
        .receiver(receiver)
        .processor(p)
        .exporter(exporter)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    (running, sender, exported)
}

async fn run_logs<P: Processor<Logs>>(
    p: P,
) -> (RunningPipeline, DirectSender<Logs>, Exported<Logs>) {
    run(p).await
}

async fn run_metrics<P: Processor<Metrics>>(
    p: P,
) -> (RunningPipeline, DirectSender<Metrics>, Exported<Metrics>) {
    run(p).await
}

fn records(exported: &Exported<Logs>) -> Vec<LogRecord> {
    exported
        .batches()
        .into_iter()
        .flat_map(|b| b.into_data().resource_logs)
        .flat_map(|rl| rl.scope_logs)
        .flat_map(|sl| sl.log_records)
        .collect()
}

fn metrics_of(exported: &Exported<Metrics>) -> Vec<Metric> {
    exported
        .batches()
        .into_iter()
        .flat_map(|b| b.into_data().resource_metrics)
        .flat_map(|rm| rm.scope_metrics)
        .flat_map(|sm| sm.metrics)
        .collect()
}

fn body(r: &LogRecord) -> String {
    match r.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn filter(id: &str, yaml: &str) -> FilterProcessor {
    let config: FilterConfig = from_yaml(&format!("processors.{id}"), yaml).unwrap();
    FilterProcessor::new(config).with_id(id.parse().unwrap())
}

/// Log records with these (severity number, severity text, body).
fn logs(list: &[(i32, &str, &str)]) -> ExportLogsServiceRequest {
    let mut req = generate_logs(list.len(), 1);
    for (r, (n, t, b)) in req.resource_logs[0].scope_logs[0]
        .log_records
        .iter_mut()
        .zip(list)
    {
        r.severity_number = *n;
        r.severity_text = (*t).into();
        r.body = Some(AnyValue { value: Some(s(b)) });
    }
    req
}

#[tokio::test]
async fn log_record_conditions_drop_and_count_records() {
    let f = filter(
        "filter/logs",
        r#"
logs:
  log_record:
    - 'severity_number < SEVERITY_NUMBER_INFO'
    - 'IsMatch(body, "^GET /healthz")'
    - 'log.attributes["drop"] == true'
"#,
    );
    let (running, sender, out) = run_logs(f).await;
    let mut req = logs(&[
        (5, "DEBUG", "cache warmed"),
        (9, "INFO", "GET /healthz 200"),
        (9, "INFO", "order 7 placed"),
        (17, "ERROR", "payment failed"),
        (13, "WARN", "slow query"),
    ]);
    req.resource_logs[0].scope_logs[0].log_records[4]
        .attributes
        .push(kv("drop", Value::BoolValue(true)));
    sender.send(req).await.unwrap();
    let kept: Vec<String> = records(&out).iter().map(body).collect();
    assert_eq!(kept, ["order 7 placed", "payment failed"]);
    let c = counters(&running, "filter/logs");
    assert_eq!(c.dropped("filtered"), 3);
    assert_eq!((c.accepted(), c.outgoing()), (5, 2));
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn legacy_log_matching_severity_bodies_and_attributes() {
    // Keep INFO and up (and records with no severity), but not ERROR and up.
    let f = filter(
        "filter/sev",
        r#"
logs:
  include:
    severity_number: { min: info, match_undefined: true }
  exclude:
    match_type: regexp
    severity_number: { min: "ERROR" }
"#,
    );
    let (running, sender, out) = run_logs(f).await;
    sender
        .send(logs(&[
            (0, "", "no severity"),
            (5, "DEBUG", "debug"),
            (9, "INFO", "info"),
            (14, "WARN2", "warn2"),
            (17, "ERROR", "error"),
            (24, "FATAL4", "fatal"),
        ]))
        .await
        .unwrap();
    let kept: Vec<String> = records(&out).iter().map(body).collect();
    assert_eq!(kept, ["no severity", "info", "warn2"]);
    assert_eq!(counters(&running, "filter/sev").dropped("filtered"), 3);
    running.shutdown(Duration::from_secs(1)).await.unwrap();

    let f = filter(
        "filter/bodies",
        r#"
logs:
  exclude:
    match_type: regexp
    bodies: ["^GET /(healthz|readyz)"]
    resource_attributes: [{ key: service.name, value: "ord.*" }]
"#,
    );
    let (running, sender, out) = run_logs(f).await;
    sender
        .send(logs(&[
            (9, "INFO", "GET /healthz"),
            (9, "INFO", "GET /api"),
        ]))
        .await
        .unwrap();
    let kept: Vec<String> = records(&out).iter().map(body).collect();
    assert_eq!(kept, ["GET /api"]);
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn resource_conditions_drop_whole_resources() {
    let f = filter(
        "filter/res",
        r#"
logs:
  resource:
    - 'attributes["service.name"] == "orders"'
"#,
    );
    let (running, sender, out) = run_logs(f).await;
    let mut req = generate_logs(4, 1);
    let mut other = generate_logs(2, 2);
    other.resource_logs[0].resource.as_mut().unwrap().attributes =
        vec![kv("service.name", s("checkout"))];
    req.resource_logs.extend(other.resource_logs);
    sender.send(req).await.unwrap();
    assert_eq!(records(&out).len(), 2);
    assert_eq!(counters(&running, "filter/res").dropped("filtered"), 4);
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn metric_and_datapoint_conditions() {
    // generate_metrics: gauges at even indexes, monotonic sums at odd ones; each point's
    // http.route is /api/0 .. /api/3.
    let f = filter(
        "filter/metrics",
        r#"
metrics:
  metric:
    - 'name == "orders.metric.0"'
    - 'type == METRIC_DATA_TYPE_SUM and is_monotonic and HasAttrOnDatapoint("http.route", "/api/9")'
  datapoint:
    - 'attributes["http.route"] == "/api/1" and metric.type == METRIC_DATA_TYPE_GAUGE'
    - 'datapoint.attributes["http.route"] == "/api/3"'
"#,
    );
    let (running, sender, out) = run_metrics(f).await;
    // Four metrics of four points: metric 0 goes whole; gauges lose /api/1 and /api/3,
    // sums lose /api/3.
    sender.send(generate_metrics(4, 4, 1)).await.unwrap();
    let kept = metrics_of(&out);
    let names: Vec<&str> = kept.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        ["orders.metric.1", "orders.metric.2", "orders.metric.3"]
    );
    let points: Vec<usize> = kept
        .iter()
        .map(|m| match &m.data {
            Some(Data::Gauge(g)) => g.data_points.len(),
            Some(Data::Sum(s)) => s.data_points.len(),
            _ => 0,
        })
        .collect();
    assert_eq!(points, [3, 2, 3]);
    let c = counters(&running, "filter/metrics");
    assert_eq!(c.dropped("filtered"), 4 + 1 + 2 + 1);
    assert_eq!((c.accepted(), c.outgoing()), (16, 8));
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn a_metric_whose_points_all_go_is_removed() {
    let f = filter(
        "filter/all",
        r#"
metrics:
  datapoint:
    - 'metric.name == "orders.metric.1"'
"#,
    );
    let (running, sender, out) = run_metrics(f).await;
    sender.send(generate_metrics(2, 3, 1)).await.unwrap();
    let names: Vec<String> = metrics_of(&out).into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["orders.metric.0"]);
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn legacy_metric_names_and_expr_matching() {
    let f = filter(
        "filter/names",
        r#"
metrics:
  include:
    match_type: regexp
    metric_names: ['orders\.metric\.[01]']
    regexp: { cacheenabled: true, cachemaxnumentries: 10 }
"#,
    );
    let (running, sender, out) = run_metrics(f).await;
    sender.send(generate_metrics(4, 2, 1)).await.unwrap();
    let names: Vec<String> = metrics_of(&out).into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["orders.metric.0", "orders.metric.1"]);
    running.shutdown(Duration::from_secs(1)).await.unwrap();

    // expr: a metric matches when any of its points does.
    let f = filter(
        "filter/expr",
        r#"
metrics:
  exclude:
    match_type: expr
    expressions:
      - MetricName == "orders.metric.2" && Label("http.route") == "/api/1"
      - MetricType == "Sum" && !HasLabel("missing") && Label("http.route") == "/api/0"
"#,
    );
    let (running, sender, out) = run_metrics(f).await;
    sender.send(generate_metrics(4, 2, 1)).await.unwrap();
    let names: Vec<String> = metrics_of(&out).into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["orders.metric.0"]);
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[test]
fn bad_metric_and_log_filters_name_the_setting() {
    let err = |yaml: &str| {
        let c: FilterConfig = from_yaml("processors.filter", yaml).unwrap();
        let e = c.compile().unwrap_err();
        format!("{}: {}", e.path, e.message)
    };
    let e = err("logs:\n  log_record: ['name == \"x\"']\n");
    assert!(e.starts_with("logs.log_record[0]"), "{e}");
    assert!(
        e.contains("column 1") && e.contains("not a path of log_record"),
        "{e}"
    );
    let e = err("metrics:\n  datapoint: ['body == \"x\"']\n");
    assert!(e.starts_with("metrics.datapoint[0]"), "{e}");
    let e = err("metrics:\n  metric: ['HasAttrOnDatapoint(\"k\")']\n");
    assert!(e.starts_with("metrics.metric[0]"), "{e}");
    let e = err("logs:\n  log_record: ['HasAttrKeyOnDatapoint(\"k\")']\n");
    assert!(e.contains("metric function"), "{e}");
    let e = err("logs:\n  include:\n    severity_number: { min: LOUD }\n");
    assert!(e.starts_with("logs.include.severity_number.min"), "{e}");
    let e = err("metrics:\n  include:\n    match_type: regexp\n    metric_names: ['(']\n");
    assert!(e.starts_with("metrics.include.metric_names"), "{e}");
    let e =
        err("metrics:\n  include:\n    match_type: expr\n    expressions: ['Label(\"a\") ==']\n");
    assert!(e.starts_with("metrics.include.expressions[0]"), "{e}");
    let e = err("logs:\n  include: { bodies: [a] }\n  log_record: ['body == \"a\"']\n");
    assert!(e.starts_with("logs: use either"), "{e}");
    // The expr spellings belong to `expressions` only.
    let e = err("metrics:\n  datapoint: ['attributes[\"a\"] == \"b\" && true']\n");
    assert!(e.starts_with("metrics.datapoint[0]"), "{e}");
}

/// A string body used as a boolean cannot be decided (a comparison always can).
#[tokio::test]
async fn an_evaluation_error_rejects_the_batch_under_propagate() {
    let f = filter(
        "filter/strict",
        "error_mode: propagate\nlogs:\n  log_record: ['body']\n",
    );
    let (running, sender, out) = run_logs(f).await;
    assert!(sender.send(generate_logs(3, 1)).await.is_err());
    assert!(records(&out).is_empty());
    let c = counters(&running, "filter/strict");
    assert_eq!(c.dropped("condition_error"), 3);
    assert_eq!(c.failed_requests("condition_error"), 1);
    running.shutdown(Duration::from_secs(1)).await.unwrap();

    let f = filter(
        "filter/lenient",
        "error_mode: ignore\nlogs:\n  log_record: ['body']\n",
    );
    let (running, sender, out) = run_logs(f).await;
    sender.send(generate_logs(3, 1)).await.unwrap();
    assert_eq!(records(&out).len(), 3);
    assert_eq!(
        counters(&running, "filter/lenient").failed_requests("condition_error"),
        3
    );
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn redaction_masks_log_bodies_and_attributes() {
    let config: RedactionConfig = from_yaml(
        "processors.redaction",
        r#"
allow_all_keys: true
blocked_values: ['4[0-9]{12}(?:[0-9]{3})?', 'Bearer [A-Za-z0-9.]+']
summary: debug
"#,
    )
    .unwrap();
    let (running, sender, out) = run_logs(AttributeRedactor::redaction(config)).await;
    let mut req = logs(&[
        (9, "INFO", "charged card 4111111111111111 ok"),
        (9, "INFO", "nothing secret"),
    ]);
    let records_in = &mut req.resource_logs[0].scope_logs[0].log_records;
    records_in[0]
        .attributes
        .push(kv("http.request.header.authorization", s("Bearer abc.def")));
    // A structured body: string values inside it are masked too.
    records_in[1].body = Some(AnyValue {
        value: Some(Value::KvlistValue(KeyValueList {
            values: vec![
                kv("card", s("4111111111111111")),
                kv("n", Value::IntValue(4)),
            ],
        })),
    });
    sender.send(req).await.unwrap();
    let got = records(&out);
    assert_eq!(body(&got[0]), "charged card **** ok");
    let auth = got[0]
        .attributes
        .iter()
        .find(|kv| kv.key == "http.request.header.authorization")
        .unwrap();
    assert_eq!(auth.value.as_ref().unwrap().value, Some(s("****")));
    match got[1].body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(Value::KvlistValue(kv)) => {
            assert_eq!(kv.values[0].value.as_ref().unwrap().value, Some(s("****")));
            assert_eq!(
                kv.values[1].value.as_ref().unwrap().value,
                Some(Value::IntValue(4))
            );
        }
        other => panic!("body changed shape: {other:?}"),
    }
    assert_eq!(
        counters(&running, "redaction").redacted_attributes(),
        3,
        "two attribute/body values on the first record, one body value on the second"
    );
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn attributes_on_log_records_and_data_points_with_signal_matching() {
    let config: AttributesConfig = from_yaml(
        "processors.attributes",
        r#"
include:
  match_type: regexp
  log_severity_texts: ["ERROR|WARN"]
actions:
  - { key: alert, value: true, action: insert }
  - { key: http.route, action: hash }
"#,
    )
    .unwrap();
    let (running, sender, out) = run_logs(AttributeRedactor::attributes(config)).await;
    sender
        .send(logs(&[(9, "INFO", "fine"), (17, "ERROR", "broken")]))
        .await
        .unwrap();
    let got = records(&out);
    assert!(!got[0].attributes.iter().any(|kv| kv.key == "alert"));
    assert!(got[1].attributes.iter().any(|kv| kv.key == "alert"));
    running.shutdown(Duration::from_secs(1)).await.unwrap();

    let config: AttributesConfig = from_yaml(
        "processors.attributes",
        r#"
include:
  metric_names: [orders.metric.1]
actions:
  - { key: http.route, action: delete }
"#,
    )
    .unwrap();
    let (running, sender, out) = run_metrics(AttributeRedactor::attributes(config)).await;
    sender.send(generate_metrics(2, 2, 1)).await.unwrap();
    let got = metrics_of(&out);
    let attrs = |m: &Metric| match &m.data {
        Some(Data::Gauge(g)) => g.data_points[0].attributes.len(),
        Some(Data::Sum(s)) => s.data_points[0].attributes.len(),
        _ => usize::MAX,
    };
    assert_eq!((attrs(&got[0]), attrs(&got[1])), (1, 0));
    running.shutdown(Duration::from_secs(1)).await.unwrap();

    // Span properties in a logs pipeline are refused when it is built.
    let config: AttributesConfig = from_yaml(
        "processors.attributes",
        "include: { span_names: [x] }\nactions: [{ key: a, action: delete }]\n",
    )
    .unwrap();
    let err = Pipeline::logs()
        .processor(AttributeRedactor::attributes(config))
        .exporter(InMemoryExporter::new().0)
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("span_names and span_kinds do not apply to log records"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn batch_combines_and_splits_metrics_and_logs() {
    let batch = || {
        BatchProcessor::new(BatchConfig {
            send_batch_size: 10,
            send_batch_max_size: 10,
            timeout: Duration::from_millis(200),
            ..Default::default()
        })
    };
    let (running, sender, out) = run_metrics(batch()).await;
    // 3 + 3 + 3 points wait; the fourth batch crosses 10 and a split inside a metric
    // sends exactly 10.
    for seed in 0..4 {
        sender.send(generate_metrics(1, 3, seed)).await.unwrap();
    }
    assert!(eventually(Duration::from_secs(1), || out.batches().len() == 1).await);
    assert_eq!(out.batches()[0].item_count(), 10);
    // The remaining 2 points go on timeout.
    assert!(eventually(Duration::from_secs(1), || out.item_count() == 12).await);
    running.shutdown(Duration::from_secs(1)).await.unwrap();

    let (running, sender, out) = run_logs(batch()).await;
    for seed in 0..3 {
        sender.send(generate_logs(4, seed)).await.unwrap();
    }
    assert!(eventually(Duration::from_secs(1), || out.item_count() == 12).await);
    let sizes: Vec<usize> = out.batches().iter().map(|b| b.item_count()).collect();
    assert_eq!(sizes, [10, 2]);
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[test]
fn generated_batches_count_as_their_signal_says() {
    let m: ExportMetricsServiceRequest = generate_metrics(3, 5, 1);
    assert_eq!(Metrics::item_count(&m), 15);
    let l: ExportLogsServiceRequest = generate_logs(7, 1);
    assert_eq!(Logs::item_count(&l), 7);
}

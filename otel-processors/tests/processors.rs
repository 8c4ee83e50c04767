//! The processors driven through pipelines, configured the way users configure them:
//! from the example Collector configs in `docs/examples/` and from Rust.

// Test helpers unwrap: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use otel_pipeline_core::ComponentId;
use otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline_core::proto::common::v1::{AnyValue, KeyValue, any_value::Value};
use otel_pipeline_core::proto::trace::v1::span::Event;
use otel_pipeline_core::testing::{Exported, InMemoryExporter, eventually, generate_traces};
use otel_pipeline_core::{
    ComponentKind, ComponentTelemetry, Pipeline, Processor, RunningPipeline, Traces,
};
use otel_pipeline_core::{DirectReceiver, DirectSender};
use otel_processors::attributes::{AttributeRedactor, AttributesConfig, RedactionConfig};
use otel_processors::batch::{BatchConfig, BatchProcessor};
use otel_processors::config::{from_yaml, processor_config};
use otel_processors::filter::{FilterConfig, FilterProcessor};
use otel_processors::memory_limiter::{ManualMemory, MemoryLimiter, MemoryLimiterConfig};
use std::sync::Arc;

const AGENT: &str = include_str!("../../docs/examples/agent.yaml");
const GATEWAY: &str = include_str!("../../docs/examples/gateway.yaml");

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

fn attr<'a>(attrs: &'a [KeyValue], k: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|a| a.key == k)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// One batch with one span per attribute set.
fn spans(sets: Vec<(&str, Vec<KeyValue>)>) -> ExportTraceServiceRequest {
    let mut req = generate_traces(1, sets.len(), 1);
    for (span, (name, attrs)) in req.resource_spans[0].scope_spans[0]
        .spans
        .iter_mut()
        .zip(sets)
    {
        span.name = name.into();
        span.attributes = attrs;
    }
    req
}

async fn run<P: Processor<Traces>>(
    p: P,
) -> (RunningPipeline, DirectSender<Traces>, Exported<Traces>) {
    let (receiver, sender) = DirectReceiver::new();
    let (exporter, exported) = InMemoryExporter::new();
    let running = Pipeline::traces()
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

fn counters(running: &RunningPipeline, id: &str) -> Arc<ComponentTelemetry> {
    running
        .telemetry()
        .find(ComponentKind::Processor, id)
        .unwrap()
}

#[tokio::test]
async fn the_agent_health_check_filter_from_docs() {
    let config: FilterConfig = processor_config(AGENT, "filter/health").unwrap();
    let filter = FilterProcessor::new(config).with_id("filter/health".parse().unwrap());
    let (running, sender, out) = run(filter).await;
    sender
        .send(spans(vec![
            ("GET /healthz", vec![kv("http.route", s("/healthz"))]),
            ("GET /readyz", vec![kv("http.route", s("/readyz"))]),
            ("HEAD /livez", vec![]),
            (
                "GET /",
                vec![kv("user_agent.original", s("kube-probe/1.29"))],
            ),
            (
                "GET /api/orders",
                vec![
                    kv("http.route", s("/api/orders")),
                    kv("user_agent.original", s("curl/8")),
                ],
            ),
            (
                "GET /healthz/deep",
                vec![kv("http.route", s("/healthz/deep"))],
            ),
        ]))
        .await
        .unwrap();
    let names: Vec<String> = out.spans().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["GET /api/orders", "GET /healthz/deep"]);
    let c = counters(&running, "filter/health");
    assert_eq!(c.dropped("filtered"), 4);
    assert_eq!((c.accepted(), c.outgoing()), (6, 2));
    // A batch that is all health checks is not passed on at all.
    sender
        .send(spans(vec![(
            "GET /healthz",
            vec![kv("http.route", s("/healthz"))],
        )]))
        .await
        .unwrap();
    assert_eq!(out.batches().len(), 1);
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn span_events_and_error_modes() {
    let yaml = r#"
error_mode: propagate
traces:
  span: ['attributes["http.response.status_code"] > 499', 'attributes["debug"]']
  spanevent: ['name == "cache.miss"']
"#;
    let (running, sender, out) = run(FilterProcessor::new(
        from_yaml("processors.filter", yaml).unwrap(),
    ))
    .await;
    let mut req = spans(vec![
        (
            "ok",
            vec![kv("http.response.status_code", Value::IntValue(200))],
        ),
        (
            "bad",
            vec![kv("http.response.status_code", Value::IntValue(503))],
        ),
    ]);
    req.resource_spans[0].scope_spans[0].spans[0].events = vec![
        Event {
            name: "cache.miss".into(),
            ..Default::default()
        },
        Event {
            name: "exception".into(),
            ..Default::default()
        },
    ];
    sender.send(req).await.unwrap();
    let kept = out.spans();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        kept[0]
            .events
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        ["exception"]
    );
    let c = counters(&running, "filter");
    assert_eq!(c.dropped_events("filtered"), 1);

    // A string where a number is expected compares false (as in the Collector): kept.
    sender
        .send(spans(vec![(
            "weird",
            vec![kv("http.response.status_code", s("five hundred"))],
        )]))
        .await
        .unwrap();
    assert_eq!(out.spans().len(), 2);
    // A bare path that is not a boolean cannot decide: propagate rejects the batch, counted.
    let err = sender
        .send(spans(vec![("flagged", vec![kv("debug", s("yes"))])]))
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    assert!(err.reason().contains("is not a boolean"), "{err}");
    assert_eq!(c.dropped("condition_error"), 1);
    running.shutdown(Duration::from_secs(1)).await.unwrap();

    // ignore: the span is kept, the error counted.
    let yaml = "error_mode: ignore\ntraces:\n  span: ['attributes[\"debug\"]']\n";
    let (running, sender, out) = run(FilterProcessor::new(
        from_yaml("processors.filter", yaml).unwrap(),
    ))
    .await;
    sender
        .send(spans(vec![("flagged", vec![kv("debug", s("yes"))])]))
        .await
        .unwrap();
    assert_eq!(out.item_count(), 1);
    assert_eq!(
        counters(&running, "filter").failed_requests("condition_error"),
        1
    );
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

/// The Collector delivers B, C and D of these five spans: comparisons on a missing or
/// mistyped value are false, never an error that loses the batch, and `IsMatch` reads the
/// integer 503 as "503".
#[tokio::test]
async fn filter_conditions_on_missing_and_mistyped_values_follow_the_collector() {
    let yaml = r#"
traces:
  span:
    - 'attributes["http.status_code"] >= 500'
    - 'IsMatch(attributes["code"], "^5")'
"#;
    let (running, sender, out) = run(FilterProcessor::new(
        from_yaml("processors.filter", yaml).unwrap(),
    ))
    .await;
    sender
        .send(spans(vec![
            ("A", vec![kv("http.status_code", Value::IntValue(503))]),
            ("B", vec![kv("http.status_code", Value::IntValue(200))]),
            ("C", vec![]),
            ("D", vec![kv("http.status_code", s("503"))]),
            ("E", vec![kv("code", Value::IntValue(503))]),
        ]))
        .await
        .unwrap();
    let names: Vec<String> = out.spans().iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, ["B", "C", "D"]);
    let c = counters(&running, "filter");
    assert_eq!(c.dropped("filtered"), 2);
    assert_eq!(c.dropped("condition_error"), 0);
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

/// `match_type: regexp` reads ints, floats and booleans as text, as the Collector's
/// attribute matcher does; bytes and maps match nothing.
#[tokio::test]
async fn regexp_attribute_matching_reads_numbers_and_booleans_as_text() {
    let yaml = r#"
include: { match_type: regexp, attributes: [{key: code, value: '^5'}] }
actions: [{key: touched, value: yes, action: insert}]
"#;
    let config: AttributesConfig = from_yaml("processors.attributes", yaml).unwrap();
    let (running, sender, out) = run(AttributeRedactor::attributes(config)).await;
    sender
        .send(spans(vec![
            ("int", vec![kv("code", Value::IntValue(503))]),
            ("double", vec![kv("code", Value::DoubleValue(5.5))]),
            ("string", vec![kv("code", s("500"))]),
            ("low", vec![kv("code", Value::IntValue(200))]),
            ("bytes", vec![kv("code", Value::BytesValue(b"5".to_vec()))]),
        ]))
        .await
        .unwrap();
    let got: Vec<bool> = out
        .spans()
        .iter()
        .map(|sp| attr(&sp.attributes, "touched").is_some())
        .collect();
    assert_eq!(got, [true, true, true, false, false]);
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn bad_filter_configs_name_the_key_and_column() {
    let err = from_yaml::<FilterConfig>("processors.filter", "traces:\n  spans: []").unwrap_err();
    assert_eq!(err.path, "processors.filter.traces.spans");
    assert!(err.message.contains("unknown field `spans`"), "{err}");
    let err = from_yaml::<FilterConfig>("processors.filter", "error_mode: loud").unwrap_err();
    assert_eq!(err.path, "processors.filter.error_mode");

    let config: FilterConfig = from_yaml(
        "processors.filter",
        "traces:\n  span:\n    - 'name == \"a\"'\n    - 'attributes[\"x\"] === 1'\n",
    )
    .unwrap();
    let (exporter, _) = InMemoryExporter::new();
    let err = Pipeline::traces()
        .processor(FilterProcessor::new(config))
        .exporter(exporter)
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("filter: invalid `traces.span[1]`: column 19: unexpected character `=`"),
        "{text}"
    );
}

/// The gateway's redaction on a batch as a receiver hands it on (still in its bytes):
/// the byte path (issue 32) gives what the decoded path gives.
#[tokio::test]
async fn the_gateway_redaction_from_docs() {
    gateway_redaction_from_docs(false).await;
    gateway_redaction_from_docs(true).await;
}

async fn gateway_redaction_from_docs(as_bytes: bool) {
    let attributes: AttributesConfig = processor_config(GATEWAY, "attributes/redact").unwrap();
    let redaction: RedactionConfig = processor_config(GATEWAY, "redaction").unwrap();
    let (receiver, sender) = DirectReceiver::new();
    let (exporter, out) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .receiver(receiver)
        .processor(
            AttributeRedactor::attributes(attributes).with_id("attributes/redact".parse().unwrap()),
        )
        .processor(AttributeRedactor::redaction(redaction))
        .exporter(exporter)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let mut req = spans(vec![(
        "POST /pay",
        vec![
            kv("http.request.header.authorization", s("Bearer abc.def")),
            kv("http.request.header.cookie", s("session=42")),
            kv(
                "db.statement",
                s("SELECT * FROM cards WHERE pan = '4111111111111111'"),
            ),
            kv("user.email", s("contact: jane.doe@example.com")),
            kv("note", s("paid with 4111111111111111, token Bearer xyz123")),
            kv("http.route", s("/pay")),
        ],
    )]);
    req.resource_spans[0].scope_spans[0].spans[0].events = vec![Event {
        name: "request".into(),
        attributes: vec![kv(
            "http.request.header.authorization",
            s("Basic Zm9vOmJhcg=="),
        )],
        ..Default::default()
    }];
    if as_bytes {
        let bytes = prost::Message::encode_to_vec(&req);
        let batch = otel_pipeline_core::Batch::from_encoded(bytes.into()).unwrap();
        sender.send_batch(batch).await.unwrap();
        assert!(
            out.batches()[0].encoded().is_some(),
            "handed on in its bytes"
        );
    } else {
        sender.send(req).await.unwrap();
    }
    let span = &out.spans()[0];
    let a = &span.attributes;
    assert_eq!(attr(a, "http.request.header.authorization"), None);
    assert_eq!(attr(a, "http.request.header.cookie"), None);
    let Some(Value::StringValue(hashed)) = attr(a, "db.statement") else {
        panic!("db.statement")
    };
    assert_eq!(hashed.len(), 64, "SHA-256 hex");
    assert!(hashed.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(attr(a, "user.email"), Some(&s("contact: ****")));
    assert_eq!(attr(a, "note"), Some(&s("paid with ****, token ****")));
    assert_eq!(attr(a, "http.route"), Some(&s("/pay")));
    assert_eq!(
        attr(a, "redaction.masked.keys"),
        Some(&s("note,user.email"))
    );
    assert_eq!(attr(a, "redaction.masked.count"), Some(&Value::IntValue(2)));
    assert!(
        span.events[0].attributes.is_empty(),
        "event attributes are redacted too"
    );
    let c = counters(&running, "redaction");
    assert_eq!(c.redacted_attributes(), 2);
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

async fn apply(yaml: &str, attrs: Vec<KeyValue>) -> Vec<KeyValue> {
    let config: AttributesConfig = from_yaml("processors.attributes", yaml).unwrap();
    let (running, sender, out) = run(AttributeRedactor::attributes(config)).await;
    sender.send(spans(vec![("span", attrs)])).await.unwrap();
    running.shutdown(Duration::from_secs(1)).await.unwrap();
    out.spans().remove(0).attributes
}

#[tokio::test]
async fn every_action() {
    let base = || {
        vec![
            kv("a", s("1")),
            kv("b", s("two")),
            kv("url", s("https://shop.example:8443/cart")),
            kv("n", s("42")),
        ]
    };
    let out = apply(
        "actions: [{key: a, value: x, action: insert}, {key: c, value: 3, action: insert}]",
        base(),
    )
    .await;
    assert_eq!(
        (attr(&out, "a"), attr(&out, "c")),
        (Some(&s("1")), Some(&Value::IntValue(3)))
    );
    let out = apply(
        "actions: [{key: a, value: x, action: update}, {key: z, value: x, action: update}]",
        base(),
    )
    .await;
    assert_eq!((attr(&out, "a"), attr(&out, "z")), (Some(&s("x")), None));
    let out = apply("actions: [{key: z, from_attribute: b, action: upsert}, {key: a, value: true, action: upsert}]", base()).await;
    assert_eq!(
        (attr(&out, "z"), attr(&out, "a")),
        (Some(&s("two")), Some(&Value::BoolValue(true)))
    );
    let out = apply(
        "actions: [{key: a, action: delete}, {pattern: '^u', action: delete}]",
        base(),
    )
    .await;
    assert_eq!(
        out.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
        ["b", "n"]
    );
    let out = apply("actions: [{key: b, action: hash}]", base()).await;
    // SHA-256("two")
    assert_eq!(
        attr(&out, "b"),
        Some(&s(
            "3fc4ccfe745870e2c0d99f71f30ff0656c8dedd41cc1d7d3d376b0dbe685e2f3"
        ))
    );
    let out = apply(
        r#"actions: [{key: url, pattern: '^(?P<scheme>\w+)://(?P<host>[^/:]+)', action: extract}]"#,
        base(),
    )
    .await;
    assert_eq!(
        (attr(&out, "scheme"), attr(&out, "host")),
        (Some(&s("https")), Some(&s("shop.example")))
    );
    let out = apply("actions: [{key: n, action: convert, converted_type: int}, {key: b, action: convert, converted_type: int}]", base()).await;
    assert_eq!(attr(&out, "n"), Some(&Value::IntValue(42)));
    assert_eq!(
        attr(&out, "b"),
        Some(&s("two")),
        "an impossible conversion leaves the value"
    );
}

#[tokio::test]
async fn include_exclude_and_targets() {
    let yaml = r#"
include: { match_type: regexp, span_names: ['^GET '], attributes: [{key: tenant, value: '^acme'}] }
exclude: { match_type: strict, services: [billing] }
apply_to: [span, resource]
actions: [{key: touched, value: yes, action: insert}]
"#;
    let config: AttributesConfig = from_yaml("processors.attributes", yaml).unwrap();
    let (running, sender, out) = run(AttributeRedactor::attributes(config)).await;
    sender
        .send(spans(vec![
            ("GET /a", vec![kv("tenant", s("acme-eu"))]),
            ("GET /b", vec![kv("tenant", s("globex"))]),
            ("POST /c", vec![kv("tenant", s("acme"))]),
        ]))
        .await
        .unwrap();
    let got: Vec<bool> = out
        .spans()
        .iter()
        .map(|sp| attr(&sp.attributes, "touched").is_some())
        .collect();
    assert_eq!(got, [true, false, false]);
    let resource = out.batches()[0].data().resource_spans[0]
        .resource
        .clone()
        .unwrap();
    assert!(
        attr(&resource.attributes, "touched").is_some(),
        "resource attributes changed too"
    );
    // The service `orders` is not excluded; a `billing` resource is.
    let mut req = spans(vec![("GET /a", vec![kv("tenant", s("acme"))])]);
    req.resource_spans[0].resource.as_mut().unwrap().attributes =
        vec![kv("service.name", s("billing"))];
    sender.send(req).await.unwrap();
    assert!(attr(&out.spans()[1].attributes, "touched").is_none());
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn bad_attribute_configs_name_the_key() {
    let build = |yaml: &str| {
        let config: AttributesConfig = from_yaml("processors.attributes", yaml).unwrap();
        let (exporter, _) = InMemoryExporter::new();
        Pipeline::traces()
            .processor(AttributeRedactor::attributes(config))
            .exporter(exporter)
            .build()
            .unwrap_err()
            .to_string()
    };
    assert!(build("actions: [{key: a, action: insert}]").contains("`actions[0].value`"));
    assert!(build("actions: [{key: a, pattern: b, action: delete}]").contains("`actions[0].key`"));
    assert!(
        build("actions: [{key: a, pattern: '(x', action: extract}]")
            .contains("`actions[0].pattern`")
    );
    assert!(build("actions: [{key: a, pattern: 'x', action: extract}]").contains("named groups"));
    assert!(
        build("actions: [{key: a, action: convert, converted_type: date}]")
            .contains("`actions[0].converted_type`")
    );
    let err = from_yaml::<AttributesConfig>(
        "processors.attributes",
        "actions: [{key: a, action: smash}]",
    )
    .unwrap_err();
    assert!(
        err.path.starts_with("processors.attributes.actions[0]"),
        "{err}"
    );
    let redaction: RedactionConfig = from_yaml(
        "processors.redaction",
        "blocked_values: ['(']\nallow_all_keys: true",
    )
    .unwrap();
    let (exporter, _) = InMemoryExporter::new();
    let err = Pipeline::traces()
        .processor(AttributeRedactor::redaction(redaction))
        .exporter(exporter)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("`blocked_values[0]`"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn batch_combines_splits_and_flushes() {
    let config: BatchConfig = processor_config(AGENT, "batch").unwrap();
    assert_eq!(config.timeout, Duration::from_millis(200));
    let (running, sender, out) = run(BatchProcessor::new(BatchConfig {
        send_batch_size: 10,
        send_batch_max_size: 15,
        timeout: Duration::from_millis(200),
        ..BatchConfig::default()
    }))
    .await;
    // Combine: three batches of 4 -> one of 12 once 10 are waiting.
    for seed in 0..3 {
        sender.send(generate_traces(1, 4, seed)).await.unwrap();
    }
    assert!(eventually(Duration::from_millis(50), || out.item_count() == 12).await);
    assert_eq!(out.batches().len(), 1);
    assert_eq!(
        out.batches()[0].data().resource_spans.len(),
        3,
        "resource grouping kept"
    );
    // Split: one batch of 40 -> 15 + 15, and 10 wait... then 10 is a full batch too.
    sender.send(generate_traces(2, 20, 9)).await.unwrap();
    assert!(eventually(Duration::from_millis(50), || out.item_count() == 52).await);
    let sizes: Vec<usize> = out.batches().iter().map(|b| b.item_count()).collect();
    assert_eq!(sizes, [12, 15, 15, 10]);
    // Timeout: 3 spans wait 200 ms.
    sender.send(generate_traces(1, 3, 10)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(out.item_count(), 52);
    assert!(eventually(Duration::from_millis(300), || out.item_count() == 55).await);
    // Shutdown flushes what waits.
    sender.send(generate_traces(1, 2, 11)).await.unwrap();
    tokio::task::yield_now().await;
    running.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(out.item_count(), 57);
}

#[tokio::test(start_paused = true)]
async fn batch_retries_a_refusing_next_stage_until_the_deadline() {
    let (running, sender, out) = run(BatchProcessor::new(BatchConfig {
        send_batch_size: 5,
        ..BatchConfig::default()
    }))
    .await;
    out.set_refusing(true);
    sender.send(generate_traces(1, 5, 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    out.set_refusing(false);
    assert!(
        eventually(Duration::from_secs(3), || out.item_count() == 5).await,
        "retried after the refusal"
    );
    out.set_refusing(true);
    sender.send(generate_traces(1, 7, 2)).await.unwrap();
    let telemetry = running.telemetry().clone();
    let err = running.shutdown(Duration::from_secs(2)).await.unwrap_err();
    assert!(err.to_string().contains("batch"), "{err}");
    let c = telemetry.find(ComponentKind::Processor, "batch").unwrap();
    assert_eq!(
        c.dropped("shutdown_deadline"),
        7,
        "what could not be delivered is counted"
    );
}

/// A next stage that hangs: the batch in delivery and the spans still pending are counted
/// as `shutdown_deadline`, and shutdown returns by its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_counts_what_a_hanging_next_stage_holds_at_the_deadline() {
    let (running, sender, out) = run(BatchProcessor::new(BatchConfig {
        send_batch_size: 5,
        timeout: Duration::from_secs(60),
        ..BatchConfig::default()
    }))
    .await;
    out.set_hanging(true);
    sender.send(generate_traces(1, 5, 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    sender.send(generate_traces(1, 3, 2)).await.unwrap();
    let telemetry = running.telemetry().clone();
    let started = std::time::Instant::now();
    let err = running
        .shutdown(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("batch"), "{err}");
    let c = telemetry.find(ComponentKind::Processor, "batch").unwrap();
    assert_eq!(c.dropped("shutdown_deadline"), 8, "every span counted");
    assert_eq!(out.item_count(), 0);
    otel_pipeline_core::testing::assert_balanced(&telemetry);
}

/// A limiter that cannot measure memory would never refuse anything: it fails to build.
#[test]
fn a_memory_limiter_that_cannot_measure_fails_to_build() {
    struct Blind;
    impl otel_processors::memory_limiter::MemoryProbe for Blind {
        fn used_bytes(&self) -> Option<u64> {
            None
        }
        fn total_bytes(&self) -> Option<u64> {
            Some(1 << 30)
        }
    }
    let limiter = MemoryLimiter::new(MemoryLimiterConfig {
        check_interval: Duration::from_secs(1),
        limit_mib: 500,
        ..Default::default()
    })
    .with_probe(Blind);
    let (receiver, _sender) = DirectReceiver::<Traces>::new();
    let (exporter, _out) = InMemoryExporter::new();
    let err = Pipeline::traces()
        .receiver(receiver)
        .processor(limiter)
        .exporter(exporter)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("cannot read"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn memory_limiter_refuses_between_the_thresholds() {
    const MIB: u64 = 1 << 20;
    let probe = ManualMemory::new(100 * MIB, 1000 * MIB);
    let limiter = MemoryLimiter::new(MemoryLimiterConfig {
        check_interval: Duration::from_secs(1),
        limit_mib: 500,
        spike_limit_mib: 100,
        ..Default::default()
    })
    .with_probe(probe.clone());
    let (running, sender, out) = run::<MemoryLimiter>(limiter).await;
    sender.send(generate_traces(1, 2, 1)).await.unwrap();
    // Just below the soft limit (400 MiB): still accepting.
    probe.set_used(399 * MIB);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sender.send(generate_traces(1, 2, 2)).await.unwrap();
    // At the soft limit: refusing, with retry_after = check_interval, batch handed back.
    probe.set_used(400 * MIB);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let err = sender.send(generate_traces(1, 2, 3)).await.unwrap_err();
    assert!(err.is_retryable());
    assert!(err.reason().contains("soft limit"), "{err}");
    match &err {
        otel_pipeline_core::ConsumeError::Refused(r) => {
            assert_eq!(r.retry_after, Some(Duration::from_secs(1)))
        }
        other => panic!("{other:?}"),
    }
    // Past the hard limit: still refusing.
    probe.set_used(600 * MIB);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        sender
            .send(generate_traces(1, 2, 4))
            .await
            .unwrap_err()
            .reason()
            .contains("hard limit")
    );
    // Back under the soft limit: accepting again.
    probe.set_used(350 * MIB);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    sender.send(generate_traces(1, 2, 5)).await.unwrap();
    assert_eq!(out.item_count(), 6, "nothing accepted was lost");
    assert_eq!(counters(&running, "memory_limiter").refused(), 4);
    // Over the limit, then measuring fails: the gate does not stay shut on the stale
    // reading; it opens, and the failed checks are counted.
    probe.set_used(600 * MIB);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(sender.send(generate_traces(1, 2, 6)).await.is_err());
    probe.set_unreadable();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    sender.send(generate_traces(1, 2, 7)).await.unwrap();
    let failures = running
        .telemetry()
        .sum("otelcol_processor_memory_limiter_measure_failures", &[]);
    assert!(failures >= 2, "{failures} failed checks counted");
    // Measuring again: the limits apply again.
    probe.set_used(600 * MIB);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(sender.send(generate_traces(1, 2, 8)).await.is_err());
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

/// Resident memory stays up when the allocator keeps what was freed (glibc does): over a
/// limit the limiter asks for it back before measuring again, at the configured pace, so
/// a drained pipeline takes data again instead of refusing for good.
#[tokio::test(start_paused = true)]
async fn memory_limiter_asks_the_allocator_for_free_memory_back() {
    const MIB: u64 = 1 << 20;
    let probe = ManualMemory::new(100 * MIB, 1000 * MIB);
    let limiter = MemoryLimiter::new(MemoryLimiterConfig {
        check_interval: Duration::from_secs(1),
        limit_mib: 500,
        spike_limit_mib: 100,
        min_gc_interval_when_soft_limited: Some(Duration::from_secs(5)),
        ..Default::default()
    })
    .with_probe(probe.clone());
    let (running, sender, out) = run::<MemoryLimiter>(limiter).await;
    // Over the soft limit with nothing held free: refused, one release asked for.
    probe.set_used(450 * MIB);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(sender.send(generate_traces(1, 2, 1)).await.is_err());
    assert_eq!(probe.releases(), 1);
    // The pipeline drained; the allocator holds 200 MiB free. No release before 5 s
    // have passed since the last: still refused.
    probe.hold_free(200 * MIB);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(sender.send(generate_traces(1, 2, 2)).await.is_err());
    assert_eq!(probe.releases(), 1);
    // At the pace: released, measured again at 250 MiB, accepting.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(probe.releases(), 2);
    sender.send(generate_traces(1, 2, 3)).await.unwrap();
    // Over the hard limit: a release at every check (the default pace there).
    probe.set_used(600 * MIB);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(probe.releases(), 5);
    let releases = running
        .telemetry()
        .sum("otelcol_processor_memory_limiter_releases", &[]);
    assert_eq!(releases, 5);
    assert_eq!(out.item_count(), 2, "what was accepted went on");
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn memory_limiter_configs() {
    let config: MemoryLimiterConfig = processor_config(AGENT, "memory_limiter").unwrap();
    assert_eq!(
        (config.limit_percentage, config.spike_limit_percentage),
        (80, 20)
    );
    let build = |c: MemoryLimiterConfig| {
        let (exporter, _) = InMemoryExporter::<Traces>::new();
        Pipeline::traces()
            .processor(
                MemoryLimiter::new(c)
                    .with_probe(ManualMemory::new(0, 1 << 30))
                    .with_id(ComponentId::new("memory_limiter")),
            )
            .exporter(exporter)
            .build()
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert!(build(config).is_ok());
    assert!(
        build(MemoryLimiterConfig::default())
            .unwrap_err()
            .contains("`limit_mib`")
    );
    assert!(
        build(MemoryLimiterConfig {
            limit_mib: 100,
            spike_limit_mib: 100,
            ..Default::default()
        })
        .unwrap_err()
        .contains("`spike_limit_mib`")
    );
    assert!(
        build(MemoryLimiterConfig {
            limit_mib: 100,
            limit_percentage: 50,
            ..Default::default()
        })
        .unwrap_err()
        .contains("not both")
    );
    let err = from_yaml::<MemoryLimiterConfig>("processors.memory_limiter", "check_interval: soon")
        .unwrap_err();
    assert_eq!(err.path, "processors.memory_limiter.check_interval");
    // The real probe reads this process's memory.
    use otel_processors::memory_limiter::{MemoryProbe, ProcessMemory};
    assert!(ProcessMemory.used_bytes().unwrap() > 0);
    assert!(ProcessMemory.total_bytes().unwrap() > ProcessMemory.used_bytes().unwrap());
}

/// The Collector's older span matching, as its own testdata writes it: `spans`
/// include/exclude in the filter, `span_events` include/exclude, and `resources`,
/// `libraries` and `span_kinds` in a match.
#[tokio::test]
async fn legacy_include_exclude_matching_in_filter_and_attributes() {
    let config: FilterConfig = from_yaml(
        "processors.filter",
        r#"
spans:
  include:
    match_type: regexp
    span_names: ["^GET "]
    resources: [{ key: service.name, value: "check.*" }]
  exclude:
    match_type: strict
    attributes: [{ key: drop, value: yes }]
span_events:
  exclude:
    match_type: regexp
    event_names: ["^debug"]
"#,
    )
    .unwrap();
    let filter = config.compile().unwrap();
    let mut data = spans(vec![
        ("GET /a", vec![]),
        ("GET /b", vec![kv("drop", s("yes"))]),
        ("POST /c", vec![]),
    ]);
    data.resource_spans[0].resource = Some(otel_pipeline_core::proto::resource::v1::Resource {
        attributes: vec![kv("service.name", s("checkout"))],
        ..Default::default()
    });
    let kept = &mut data.resource_spans[0].scope_spans[0].spans;
    kept[0].events = vec![
        Event {
            name: "debug dump".into(),
            ..Default::default()
        },
        Event {
            name: "retry".into(),
            ..Default::default()
        },
    ];
    let out = filter.apply(&mut data).unwrap();
    let names: Vec<&str> = data.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["GET /a"]);
    assert_eq!((out.spans, out.events), (2, 1));
    assert_eq!(
        data.resource_spans[0].scope_spans[0].spans[0].events[0].name,
        "retry"
    );

    // Nothing to match on is refused, as the Collector refuses it; so is mixing styles.
    let empty: FilterConfig = from_yaml("f", "spans: { exclude: { match_type: regexp } }").unwrap();
    assert_eq!(empty.compile().unwrap_err().path, "spans.exclude");
    let mixed: FilterConfig = from_yaml(
        "f",
        "spans: { include: { services: [a] } }\ntraces: { span: ['name == \"x\"'] }",
    )
    .unwrap();
    assert_eq!(mixed.compile().unwrap_err().path, "spans");
    // A logs include with nothing to match on is ignored, as the Collector ignores it.
    let logs: FilterConfig = from_yaml("f", "logs: { include: { match_type: strict } }").unwrap();
    let mut data = otel_pipeline_core::testing::generate_logs(3, 1);
    assert_eq!(
        logs.compile().unwrap().apply_logs(&mut data).unwrap().spans,
        0
    );

    // Attributes: libraries and span kinds select; from_context takes request metadata.
    let config: AttributesConfig = from_yaml(
        "processors.attributes",
        r#"
include:
  match_type: strict
  libraries: [{ name: otel-test }]
  span_kinds: [SPAN_KIND_SERVER]
actions:
  - { key: origin, from_context: metadata.x-origin, action: insert }
  - { key: subject, from_context: auth.subject, action: insert }
"#,
    )
    .unwrap();
    let rules = AttributeRedactor::attributes(config).compile().unwrap();
    let mut data = spans(vec![("GET /a", vec![]), ("call", vec![])]);
    data.resource_spans[0].scope_spans[0].scope = Some(
        otel_pipeline_core::proto::common::v1::InstrumentationScope {
            name: "otel-test".into(),
            ..Default::default()
        },
    );
    data.resource_spans[0].scope_spans[0].spans[0].kind = 2; // server
    data.resource_spans[0].scope_spans[0].spans[1].kind = 3; // client
    let client = otel_pipeline_core::ClientInfo {
        addr: None,
        metadata: vec![("x-origin".into(), "mobile".into())],
        auth: vec![("subject".into(), "checkout".into())],
    };
    rules.apply_with_client(&mut data, Some(&client));
    let out = &data.resource_spans[0].scope_spans[0].spans;
    assert_eq!(attr(&out[0].attributes, "origin"), Some(&s("mobile")));
    assert_eq!(
        attr(&out[0].attributes, "subject"),
        Some(&s("checkout")),
        "the authenticator's subject"
    );
    assert_eq!(
        attr(&out[1].attributes, "origin"),
        None,
        "a client span is not selected"
    );
}

/// An empty `redaction:` section loads, as in the Collector, and removes every attribute.
#[tokio::test]
async fn an_empty_redaction_removes_every_attribute() {
    let config: RedactionConfig = from_yaml("processors.redaction", "{}").unwrap();
    let rules = AttributeRedactor::redaction(config).compile().unwrap();
    let mut data = spans(vec![(
        "GET /a",
        vec![kv("user", s("x")), kv("path", s("/a"))],
    )]);
    rules.apply(&mut data);
    let span = &data.resource_spans[0].scope_spans[0].spans[0];
    assert!(
        span.attributes
            .iter()
            .all(|a| a.key.starts_with("redaction.")),
        "{:?}",
        span.attributes
    );
}

/// `metadata_keys`: one batch per tenant, each keeping its tenant downstream; past
/// `metadata_cardinality_limit` a new tenant is rejected and counted; `timeout: 0` sends
/// at once and `send_batch_size: 0` only on the timeout.
#[tokio::test(start_paused = true)]
async fn batch_by_metadata_with_a_cardinality_limit_and_zero_meanings() {
    let config: BatchConfig = from_yaml(
        "processors.batch",
        "send_batch_size: 0\ntimeout: 100ms\nmetadata_keys: [Tenant]\nmetadata_cardinality_limit: 2",
    )
    .unwrap();
    let (running, sender, out) = run(BatchProcessor::new(config)).await;
    let from = |tenant: &str, seed: u64| {
        otel_pipeline_core::Batch::with_client(
            generate_traces(1, 3, seed),
            Arc::new(otel_pipeline_core::ClientInfo {
                addr: None,
                metadata: vec![("tenant".into(), tenant.into())],
                auth: vec![],
            }),
        )
    };
    sender.send_batch(from("a", 1)).await.unwrap();
    sender.send_batch(from("b", 2)).await.unwrap();
    sender.send_batch(from("a", 3)).await.unwrap();
    let third = sender.send_batch(from("c", 4)).await;
    assert!(
        matches!(third, Err(otel_pipeline_core::ConsumeError::Rejected(_))),
        "{third:?}"
    );
    assert_eq!(
        counters(&running, "batch").dropped("metadata_cardinality_limit"),
        3
    );
    // No size trigger: nothing before the timeout, then one batch per tenant.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(out.item_count(), 0);
    assert!(eventually(Duration::from_millis(200), || out.batches().len() == 2).await);
    let mut tenants: Vec<(String, usize)> = out
        .batches()
        .iter()
        .map(|b| {
            (
                b.client
                    .as_ref()
                    .and_then(|c| c.metadata("tenant"))
                    .unwrap_or("")
                    .to_string(),
                b.item_count(),
            )
        })
        .collect();
    tenants.sort();
    assert_eq!(tenants, [("a".to_string(), 6), ("b".to_string(), 3)]);
    // Once sent, a tenant's slot is free again.
    sender.send_batch(from("c", 5)).await.unwrap();
    running.shutdown(Duration::from_secs(1)).await.unwrap();
    assert_eq!(out.item_count(), 12);

    let config: BatchConfig = from_yaml("processors.batch", "timeout: 0s").unwrap();
    let (running, sender, out) = run(BatchProcessor::new(config)).await;
    sender.send(generate_traces(1, 2, 9)).await.unwrap();
    assert!(
        eventually(Duration::from_millis(5), || out.item_count() == 2).await,
        "sent at once"
    );
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

/// Redaction remembers the values it judged (per thread), so a value repeated across
/// spans is masked from memory: what it gives must be what the patterns give, for values
/// seen once, twice and often, values too long to remember, more distinct values than a
/// memo holds, and two redactions with different patterns on one thread, each with its
/// own answers for the same value.
#[test]
fn repeated_values_are_masked_as_the_patterns_say_and_each_redaction_keeps_its_own() {
    let compile = |patterns: &str| {
        let config: RedactionConfig = from_yaml(
            "processors.redaction",
            &format!("allow_all_keys: true\nsummary: silent\nblocked_values: {patterns}"),
        )
        .unwrap();
        AttributeRedactor::redaction(config).compile().unwrap()
    };
    let digits = compile("['[0-9]+', '[a-f]{4}']");
    let secret = compile("['secret']");
    let (d, hex, sec) = (
        regex::Regex::new("[0-9]+").unwrap(),
        regex::Regex::new("[a-f]{4}").unwrap(),
        regex::Regex::new("secret").unwrap(),
    );
    let expect_digits = |v: &str| {
        hex.replace_all(&d.replace_all(v, "****"), "****")
            .into_owned()
    };
    let expect_secret = |v: &str| sec.replace_all(v, "****").into_owned();
    // Values: a few that repeat often, some seen twice, a long one, 5000 one-offs (more
    // than a memo holds).
    let mut values: Vec<String> = Vec::new();
    for i in 0..6000 {
        values.push(match i % 6 {
            0 => "secret 123".into(),
            1 => "no match here".into(),
            2 => format!("cafe{} secret", i % 40),
            3 => format!("x{}y", i / 2),
            4 => format!("{} {}", "abcdef".repeat(30), i % 3),
            _ => format!("one-off {i} secret"),
        });
    }
    let request = |values: &[String]| {
        let mut req = generate_traces(1, values.len(), 5);
        for (span, v) in req.resource_spans[0].scope_spans[0]
            .spans
            .iter_mut()
            .zip(values)
        {
            span.attributes = vec![kv("v", s(v))];
        }
        req
    };
    let values_of = |req: &ExportTraceServiceRequest| -> Vec<String> {
        req.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|span| match attr(&span.attributes, "v") {
                Some(Value::StringValue(v)) => v.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    // Alternate the two redactions on this thread, three rounds each.
    for _ in 0..3 {
        let mut a = request(&values);
        let masked = digits.apply(&mut a);
        let want: Vec<String> = values.iter().map(|v| expect_digits(v)).collect();
        assert_eq!(values_of(&a), want);
        let changed = values.iter().zip(&want).filter(|(v, w)| v != w).count();
        assert_eq!(masked, changed, "every matching value counted");
        let mut b = request(&values);
        secret.apply(&mut b);
        let want: Vec<String> = values.iter().map(|v| expect_secret(v)).collect();
        assert_eq!(values_of(&b), want);
    }
}

/// More redaction rule sets on one thread than it keeps memos for: each still masks what
/// its own pattern says, round after round, as memos are let go and made again.
#[test]
fn more_rule_sets_than_memos_each_mask_their_own_pattern() {
    let rule_sets: Vec<_> = (0..12)
        .map(|i| {
            let config: RedactionConfig = from_yaml(
                "processors.redaction",
                &format!("allow_all_keys: true\nsummary: silent\nblocked_values: ['w{i}x']"),
            )
            .unwrap();
            AttributeRedactor::redaction(config).compile().unwrap()
        })
        .collect();
    let value: String = (0..12).map(|i| format!("w{i}x ")).collect();
    for _ in 0..4 {
        for (i, rules) in rule_sets.iter().enumerate() {
            let mut req = generate_traces(1, 3, 1);
            for span in &mut req.resource_spans[0].scope_spans[0].spans {
                span.attributes = vec![kv("v", s(&value))];
            }
            assert_eq!(rules.apply(&mut req), 3);
            let want = value.replace(&format!("w{i}x"), "****");
            for span in &req.resource_spans[0].scope_spans[0].spans {
                assert_eq!(attr(&span.attributes, "v"), Some(&s(&want)), "rule set {i}");
            }
        }
    }
}

/// With `include_metadata`, a receiver keeps the `authorization` header: it is never
/// printed (a batch's `Debug` masks it), and `from_context` copies it into spans only
/// with `allow_credentials: true`.
#[tokio::test]
async fn credentials_in_request_metadata_are_never_printed_or_copied_by_default() {
    use otel_pipeline_core::{Batch, ClientInfo};
    let client = Arc::new(ClientInfo {
        addr: None,
        metadata: vec![
            ("authorization".into(), "Bearer s3cr3t".into()),
            ("x-tenant".into(), "acme".into()),
        ],
        auth: vec![],
    });
    let batch = Batch::with_client(spans(vec![("a", vec![])]), Arc::clone(&client));
    let printed = format!("{batch:?} {client:?}");
    assert!(!printed.contains("s3cr3t"), "{printed}");
    assert!(printed.contains("acme"), "{printed}");

    let refused = from_yaml::<AttributesConfig>(
        "processors.attributes",
        "actions: [{ key: auth, from_context: metadata.authorization, action: insert }]",
    )
    .unwrap();
    let (exporter, _) = InMemoryExporter::new();
    let err = Pipeline::traces()
        .processor(AttributeRedactor::attributes(refused))
        .exporter(exporter)
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("allow_credentials"), "{err}");
    assert!(err.contains("from_context"), "{err}");

    let allowed = from_yaml::<AttributesConfig>(
        "processors.attributes",
        "actions: [{ key: auth, from_context: metadata.authorization, action: insert, allow_credentials: true }, { key: tenant, from_context: metadata.x-tenant, action: insert }]",
    )
    .unwrap();
    let (running, sender, out) = run(AttributeRedactor::attributes(allowed)).await;
    sender.send_batch(batch).await.unwrap();
    let span = &out.spans()[0];
    assert_eq!(attr(&span.attributes, "auth"), Some(&s("Bearer s3cr3t")));
    assert_eq!(attr(&span.attributes, "tenant"), Some(&s("acme")));
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

/// A request of 10 000 spans as bytes, cut to `send_batch_max_size: 100`: 100 batches of
/// 100, as bytes, every span once and in order (cut in one pass, not by taking 100 from
/// the front of the rest a hundred times).
#[tokio::test]
async fn a_large_request_is_cut_to_the_maximum_size_in_order() {
    use prost::Message as _;
    let (running, sender, out) = run(BatchProcessor::new(BatchConfig {
        send_batch_size: 100,
        send_batch_max_size: 100,
        timeout: Duration::from_millis(10),
        ..BatchConfig::default()
    }))
    .await;
    let req = generate_traces(1000, 10, 3);
    let want: Vec<Vec<u8>> = req.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(|s| s.span_id.clone())
        .collect();
    let batch = otel_pipeline_core::Batch::<otel_pipeline_core::Traces>::from_encoded(
        req.encode_to_vec().into(),
    )
    .unwrap();
    sender.send_batch(batch).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || out.item_count() == 10_000).await);
    let batches = out.batches();
    assert_eq!(batches.len(), 100);
    assert!(
        batches
            .iter()
            .all(|b| b.item_count() == 100 && b.encoded().is_some())
    );
    let got: Vec<Vec<u8>> = out.spans().into_iter().map(|s| s.span_id).collect();
    assert_eq!(got, want);
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

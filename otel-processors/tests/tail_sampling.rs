//! The tail sampler through its public API, with generated traces. Time is exact and
//! nothing really sleeps: most tests run on tokio's paused clock (the sampler's default
//! clock follows it), and one drives the sampler with a `ManualClock` on a runtime that
//! runs in real time.

// Test helpers unwrap: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use otel_pipeline_core::clock::{ManualClock, SharedClock, TokioClock};
use otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline_core::proto::common::v1::{AnyValue, KeyValue, any_value::Value};
use otel_pipeline_core::proto::resource::v1::Resource;
use otel_pipeline_core::proto::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span::Event};
use otel_pipeline_core::testing::{Exported, InMemoryExporter, SplitMix64};
use otel_pipeline_core::{
    ComponentId, ComponentKind, ComponentTelemetry, Pipeline, RunningPipeline,
};
use otel_pipeline_core::{DirectReceiver, DirectSender};
use otel_processors::config::from_yaml;
use otel_processors::tail_sampling::{TailSampler, TailSamplingConfig, TailSamplingHandle};
use tokio::time::Instant;

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

#[derive(Clone, Copy, Default)]
struct Shape {
    spans: usize,
    error: bool,
    duration_ms: u64,
    priority: bool,
}

/// The spans of trace `id`: a root and children, with the given shape.
fn trace_spans(id: u128, shape: Shape) -> Vec<Span> {
    let tid = id.to_be_bytes().to_vec();
    let root = (id as u64 | 1).to_be_bytes().to_vec();
    (0..shape.spans.max(1))
        .map(|i| {
            let mut attributes = vec![kv("http.route", Value::StringValue("/api".into()))];
            if shape.priority && i == 0 {
                attributes.push(kv(
                    "sampling.priority",
                    Value::StringValue("always_on".into()),
                ));
            }
            Span {
                trace_id: tid.clone(),
                span_id: if i == 0 {
                    root.clone()
                } else {
                    ((id as u64).wrapping_add(i as u64 + 7) | 1)
                        .to_be_bytes()
                        .to_vec()
                },
                parent_span_id: if i == 0 { Vec::new() } else { root.clone() },
                name: format!("op {i}"),
                start_time_unix_nano: 1_000_000_000,
                end_time_unix_nano: 1_000_000_000
                    + if i == 0 {
                        shape.duration_ms * 1_000_000
                    } else {
                        1_000_000
                    },
                status: Some(Status {
                    code: if shape.error && i == shape.spans - 1 {
                        2
                    } else {
                        0
                    },
                    ..Default::default()
                }),
                attributes,
                flags: 0x101,
                ..Default::default()
            }
        })
        .collect()
}

/// `n` plain traces of `spans` spans each, with distinct ids.
fn many_traces(n: u128, spans: usize) -> Vec<Span> {
    (0..n)
        .flat_map(|i| {
            trace_spans(
                (i + 1) << 64 | i,
                Shape {
                    spans,
                    ..Shape::default()
                },
            )
        })
        .collect()
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue("shop".into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

const SEED: &str = r#"
decision_wait: 10s
num_traces: 200000
policies:
  - { name: errors, type: status_code, status_code: { status_codes: [ERROR] } }
  - { name: slow, type: latency, latency: { threshold_ms: 2000 } }
  - { name: priority, type: string_attribute, string_attribute: { key: sampling.priority, values: [always_on] } }
  - { name: rest, type: probabilistic, probabilistic: { sampling_percentage: 5 } }
"#;

struct Setup {
    running: RunningPipeline,
    sender: DirectSender<otel_pipeline_core::Traces>,
    out: Exported<otel_pipeline_core::Traces>,
    handle: TailSamplingHandle,
}

async fn setup(yaml: &str) -> Setup {
    setup_with_clock(yaml, TokioClock::shared()).await
}

async fn setup_with_clock(yaml: &str, clock: SharedClock) -> Setup {
    let config: TailSamplingConfig = from_yaml("processors.tail_sampling", yaml).unwrap();
    let sampler = TailSampler::new(config).with_clock(clock);
    let handle = sampler.handle();
    let (receiver, sender) = DirectReceiver::new();
    let (exporter, out) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .receiver(receiver)
        .processor(sampler)
        .exporter(exporter)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    Setup {
        running,
        sender,
        out,
        handle,
    }
}

fn kept_traces(out: &Exported<otel_pipeline_core::Traces>) -> HashMap<u128, usize> {
    let mut m = HashMap::new();
    for s in out.spans() {
        *m.entry(u128::from_be_bytes(
            s.trace_id.as_slice().try_into().unwrap(),
        ))
        .or_insert(0) += 1;
    }
    m
}

fn counters(running: &RunningPipeline) -> Arc<ComponentTelemetry> {
    running
        .telemetry()
        .find(ComponentKind::Processor, "tail_sampling")
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn seed_policies_over_100k_traces() {
    let s = setup(SEED).await;
    let mut rng = SplitMix64::new(2026);
    let mut must_keep = HashSet::new();
    let mut rest = Vec::new();
    let mut spans_of = HashMap::new();
    const TRACES: u64 = 100_000;
    for wave in 0..10 {
        // Each trace arrives in two batches: the children first, the root later.
        let mut children = Vec::new();
        let mut roots = Vec::new();
        for _ in 0..TRACES / 10 {
            let id = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
            let roll = rng.below(1000);
            let shape = Shape {
                spans: 3,
                error: roll < 20,
                duration_ms: if (20..40).contains(&roll) { 2500 } else { 50 },
                priority: (40..50).contains(&roll),
            };
            if roll < 50 {
                must_keep.insert(id);
            } else {
                rest.push(id);
            }
            let mut spans = trace_spans(id, shape);
            spans_of.insert(id, spans.len());
            roots.push(spans.remove(0));
            children.extend(spans);
        }
        s.sender.send(request(children)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.sender.send(request(roots)).await.unwrap();
        // Decide this wave.
        tokio::time::sleep(Duration::from_secs(11)).await;
        let _ = wave;
    }
    let kept = kept_traces(&s.out);
    for id in &must_keep {
        assert_eq!(
            kept.get(id),
            spans_of.get(id),
            "error/slow/priority trace {id:x} kept whole"
        );
    }
    let kept_rest = rest.iter().filter(|id| kept.contains_key(id)).count();
    let share = kept_rest as f64 / rest.len() as f64;
    assert!(
        (0.04..=0.06).contains(&share),
        "kept {share:.4} of the rest"
    );
    // Whole traces only: every kept trace has all its spans.
    assert!(kept.iter().all(|(id, n)| spans_of.get(id) == Some(n)));
    // Kept only by probability: the threshold is recorded; kept for errors: not.
    for sp in s.out.spans() {
        let id = u128::from_be_bytes(sp.trace_id.as_slice().try_into().unwrap());
        if must_keep.contains(&id) {
            assert!(!sp.trace_state.contains("th:"), "{}", sp.trace_state);
        } else {
            assert_eq!(sp.trace_state, "ot=th:f3333333333333");
        }
    }
    let stats = s.handle.stats();
    assert_eq!(stats.sampled as usize, must_keep.len() + kept_rest);
    assert_eq!((stats.sampled + stats.not_sampled) as u64, TRACES);
    assert_eq!(stats.early_capacity, 0);
    assert_eq!(
        (
            stats.traces_buffered,
            stats.spans_buffered,
            stats.bytes_buffered
        ),
        (0, 0, 0)
    );
    let (errors_sampled, _) = s.handle.policy("errors").unwrap();
    assert!(errors_sampled > 0);
    let c = counters(&s.running);
    let kept_spans: usize = kept.values().sum();
    assert_eq!(
        c.dropped("not_sampled") as usize + kept_spans,
        300_000,
        "every span kept or counted as dropped"
    );
    s.running.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn probabilistic_decisions_agree_across_replicas() {
    let yaml = "decision_wait: 1s\nshards: 2\npolicies: [{ name: p, type: probabilistic, probabilistic: { sampling_percentage: 30 } }]";
    let a = setup(yaml).await;
    let b = setup(&yaml.replace("shards: 2", "shards: 1")).await;
    let mut rng = SplitMix64::new(5);
    let spans: Vec<Span> = (0..2000)
        .flat_map(|_| {
            trace_spans(
                (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64()),
                Shape {
                    spans: 1,
                    ..Shape::default()
                },
            )
        })
        .collect();
    a.sender.send(request(spans.clone())).await.unwrap();
    b.sender.send(request(spans)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ka, kb) = (kept_traces(&a.out), kept_traces(&b.out));
    assert_eq!(
        ka.keys().collect::<HashSet<_>>(),
        kb.keys().collect::<HashSet<_>>()
    );
    assert!((500..700).contains(&ka.len()), "{}", ka.len());
}

#[tokio::test(start_paused = true)]
async fn a_burst_over_num_traces_keeps_every_error_and_counts_early_decisions() {
    let yaml = r#"
decision_wait: 30s
num_traces: 100
shards: 1
policies:
  - { name: errors, type: status_code, status_code: { status_codes: [ERROR] } }
"#;
    let s = setup(yaml).await;
    let mut errors = HashSet::new();
    let mut batch = Vec::new();
    for i in 0..1000u128 {
        let id = (i + 1) << 64 | (i * 7919 + 13);
        let error = i % 10 == 0;
        if error {
            errors.insert(id);
        }
        batch.extend(trace_spans(
            id,
            Shape {
                spans: 2,
                error,
                duration_ms: 10,
                ..Shape::default()
            },
        ));
        if batch.len() >= 100 {
            s.sender
                .send(request(std::mem::take(&mut batch)))
                .await
                .unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let stats = s.handle.stats();
    assert!(stats.traces_buffered <= 100, "{stats:?}");
    assert_eq!(
        stats.early_capacity, 900,
        "every trace decided early is counted"
    );
    tokio::time::sleep(Duration::from_secs(31)).await;
    let kept = kept_traces(&s.out);
    assert_eq!(
        kept.keys().copied().collect::<HashSet<_>>(),
        errors,
        "every error trace kept, nothing else"
    );
    s.running.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn late_spans_follow_the_cached_decision() {
    let yaml = "decision_wait: 5s\npolicies: [{ name: errors, type: status_code, status_code: { status_codes: [ERROR] } }]";
    let s = setup(yaml).await;
    let (kept_id, dropped_id) = (0xaaaa_u128 << 64 | 1, 0xbbbb_u128 << 64 | 2);
    let mut spans = trace_spans(
        kept_id,
        Shape {
            spans: 2,
            error: true,
            ..Shape::default()
        },
    );
    spans.extend(trace_spans(
        dropped_id,
        Shape {
            spans: 2,
            ..Shape::default()
        },
    ));
    s.sender.send(request(spans)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(s.out.item_count(), 2);
    // Late spans, well after the decision.
    let mut late = trace_spans(
        kept_id,
        Shape {
            spans: 1,
            ..Shape::default()
        },
    );
    late.extend(trace_spans(
        dropped_id,
        Shape {
            spans: 1,
            ..Shape::default()
        },
    ));
    for sp in &mut late {
        sp.span_id = vec![9; 8];
        sp.parent_span_id = vec![1; 8];
    }
    let late_kept = late[0].clone();
    s.sender.send(request(late)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        s.out.item_count(),
        3,
        "the late span of the kept trace is forwarded at once"
    );
    // Whole and unchanged, with its resource.
    let last = s.out.batches().pop().unwrap().into_data();
    assert_eq!(last.resource_spans[0].scope_spans[0].spans, vec![late_kept]);
    assert_eq!(
        last.resource_spans[0].resource,
        request(Vec::new()).resource_spans[0].resource
    );
    let stats = s.handle.stats();
    assert_eq!((stats.late_sampled, stats.late_not_sampled), (1, 1));
    assert_eq!(counters(&s.running).dropped("late_not_sampled"), 1);
    s.running.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_root_span_shortens_the_wait() {
    let yaml = "decision_wait: 30s\ndecision_wait_after_root_received: 2s\npolicies: [{ name: all, type: always_sample }]";
    let s = setup(yaml).await;
    let mut spans = trace_spans(
        7 << 64 | 7,
        Shape {
            spans: 3,
            ..Shape::default()
        },
    );
    let root = spans.remove(0);
    s.sender.send(request(spans)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(s.out.item_count(), 0, "no root yet: still waiting");
    let sent_root = Instant::now();
    s.sender.send(request(vec![root])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1990)).await;
    assert_eq!(s.out.item_count(), 0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        s.out.item_count(),
        3,
        "decided 2 s after the root, not 30 s after the first span"
    );
    assert!(sent_root.elapsed() < Duration::from_millis(2100));
    s.running.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Let every task that can make progress do so (one thread: deterministic).
async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

/// The sampler takes time only from its clock: with a `ManualClock` on a runtime running
/// in real time, nothing is decided before the clock passes a trace's deadline however
/// long the test really takes, and what is due is decided as soon as it does.
#[tokio::test(flavor = "current_thread")]
async fn a_manual_clock_drives_the_decisions_exactly() {
    let clock = ManualClock::new();
    let yaml = "decision_wait: 10s\ndecision_wait_after_root_received: 2s\nshards: 2\npolicies: [{ name: all, type: always_sample }]";
    let s = setup_with_clock(yaml, clock.shared()).await;
    let shape = Shape {
        spans: 3,
        ..Shape::default()
    };
    // Trace 1 arrives without its root (due at 10 s), trace 2 whole (due at 2 s).
    let mut first = trace_spans(1 << 64 | 1, shape);
    first.remove(0);
    let second = trace_spans(2 << 64 | 2, shape);
    s.sender.send(request(first)).await.unwrap();
    s.sender.send(request(second)).await.unwrap();
    settle().await;
    assert_eq!(s.handle.stats().traces_buffered, 2);
    clock.advance(Duration::from_millis(1999));
    settle().await;
    assert_eq!(s.out.item_count(), 0, "nothing due before 2 s");
    clock.advance(Duration::from_millis(1));
    settle().await;
    assert_eq!(s.out.item_count(), 3, "the whole trace decided at 2 s");
    // Real time passing does not move the sampler's time.
    tokio::time::sleep(Duration::from_millis(50)).await;
    settle().await;
    assert_eq!(s.out.item_count(), 3);
    clock.advance(Duration::from_millis(7999));
    settle().await;
    assert_eq!(
        s.out.item_count(),
        3,
        "the rootless trace waits the full 10 s"
    );
    clock.advance(Duration::from_millis(1));
    settle().await;
    assert_eq!(s.out.item_count(), 5);
    let stats = s.handle.stats();
    assert_eq!((stats.sampled, stats.traces_buffered), (2, 0));
    s.running.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_decides_and_flushes_what_is_buffered() {
    let yaml = "decision_wait: 60s\npolicies: [{ name: errors, type: status_code, status_code: { status_codes: [ERROR] } }]";
    let s = setup(yaml).await;
    let mut spans = trace_spans(
        1 << 64 | 1,
        Shape {
            spans: 4,
            error: true,
            ..Shape::default()
        },
    );
    spans.extend(trace_spans(
        2 << 64 | 2,
        Shape {
            spans: 4,
            ..Shape::default()
        },
    ));
    s.sender.send(request(spans)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(s.out.item_count(), 0);
    let c = counters(&s.running);
    s.running.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        s.out.item_count(),
        4,
        "the error trace was decided and delivered before shutdown completed"
    );
    assert_eq!(c.dropped("not_sampled"), 4);

    let s = setup(&format!("{yaml}\ndrop_pending_traces_on_shutdown: true")).await;
    s.sender
        .send(request(trace_spans(
            3 << 64 | 3,
            Shape {
                spans: 2,
                error: true,
                ..Shape::default()
            },
        )))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let c = counters(&s.running);
    s.running.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(s.out.item_count(), 0);
    assert_eq!(c.dropped("shutdown"), 2);
}

#[tokio::test(start_paused = true)]
async fn byte_budgets() {
    let span_bytes = prost::Message::encoded_len(
        &trace_spans(
            1,
            Shape {
                spans: 1,
                ..Shape::default()
            },
        )[0],
    );
    // Room for about 10 spans: the rest forces early decisions.
    let yaml = format!(
        "decision_wait: 30s\nshards: 1\nmax_buffered_bytes: {}\nmaximum_trace_size_bytes: {}\npolicies: [{{ name: all, type: always_sample }}]",
        span_bytes * 10,
        span_bytes * 5
    );
    let s = setup(&yaml).await;
    let spans = many_traces(20, 1);
    s.sender.send(request(spans)).await.unwrap();
    // One trace that grows too large.
    s.sender
        .send(request(trace_spans(
            99 << 64 | 99,
            Shape {
                spans: 6,
                ..Shape::default()
            },
        )))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let stats = s.handle.stats();
    assert!(
        stats.bytes_buffered as usize <= span_bytes * 10,
        "{stats:?}"
    );
    assert!(stats.early_capacity >= 10, "{stats:?}");
    assert_eq!(stats.early_too_large, 1);
    s.running.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        s.out.item_count(),
        26,
        "always_sample keeps everything, early or not"
    );
}

/// One trace through a sampler with one policy: kept?
async fn keeps(policy_yaml: &str, spans: Vec<Span>) -> bool {
    let s = setup(&format!(
        "decision_wait: 1s\nshards: 1\npolicies:\n  - {policy_yaml}"
    ))
    .await;
    s.sender.send(request(spans)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = s.out.item_count() > 0;
    s.running.shutdown(Duration::from_secs(1)).await.unwrap();
    kept
}

fn with_attr(mut spans: Vec<Span>, k: &str, v: Value) -> Vec<Span> {
    spans[0].attributes.retain(|a| a.key != k);
    spans[0].attributes.push(kv(k, v));
    spans
}

#[tokio::test(start_paused = true)]
async fn each_policy_type() {
    let t = |shape: Shape| trace_spans(0x1234 << 64 | 0x5678, shape);
    let plain = Shape {
        spans: 2,
        duration_ms: 50,
        ..Shape::default()
    };
    assert!(keeps("{ name: a, type: always_sample }", t(plain)).await);
    let lat =
        "{ name: l, type: latency, latency: { threshold_ms: 100, upper_threshold_ms: 1000 } }";
    assert!(
        keeps(
            lat,
            t(Shape {
                duration_ms: 500,
                ..plain
            })
        )
        .await
    );
    assert!(
        !keeps(
            lat,
            t(Shape {
                duration_ms: 50,
                ..plain
            })
        )
        .await
    );
    assert!(
        !keeps(
            lat,
            t(Shape {
                duration_ms: 5000,
                ..plain
            })
        )
        .await
    );
    let status = "{ name: s, type: status_code, status_code: { status_codes: [ERROR, OK] } }";
    assert!(
        keeps(
            status,
            t(Shape {
                error: true,
                ..plain
            })
        )
        .await
    );
    assert!(!keeps(status, t(plain)).await);
    let num = "{ name: n, type: numeric_attribute, numeric_attribute: { key: http.response.status_code, min_value: 500, max_value: 599 } }";
    assert!(
        keeps(
            num,
            with_attr(t(plain), "http.response.status_code", Value::IntValue(503))
        )
        .await
    );
    assert!(
        !keeps(
            num,
            with_attr(t(plain), "http.response.status_code", Value::IntValue(200))
        )
        .await
    );
    let num_inv = "{ name: n, type: numeric_attribute, numeric_attribute: { key: http.response.status_code, min_value: 500, max_value: 599, invert_match: true } }";
    assert!(
        !keeps(
            num_inv,
            with_attr(t(plain), "http.response.status_code", Value::IntValue(503))
        )
        .await
    );
    assert!(keeps(num_inv, t(plain)).await);
    let re = "{ name: r, type: string_attribute, string_attribute: { key: http.route, values: ['^/ap'], enabled_regex_matching: true } }";
    assert!(keeps(re, t(plain)).await);
    let strict = "{ name: r, type: string_attribute, string_attribute: { key: http.route, values: ['/ap'] } }";
    assert!(!keeps(strict, t(plain)).await);
    let res_attr = "{ name: r, type: string_attribute, string_attribute: { key: service.name, values: [shop] } }";
    assert!(
        keeps(res_attr, t(plain)).await,
        "resource attributes count too"
    );
    let b = "{ name: b, type: boolean_attribute, boolean_attribute: { key: debug, value: true } }";
    assert!(keeps(b, with_attr(t(plain), "debug", Value::BoolValue(true))).await);
    assert!(!keeps(b, with_attr(t(plain), "debug", Value::BoolValue(false))).await);
    let count = "{ name: c, type: span_count, span_count: { min_spans: 3, max_spans: 5 } }";
    assert!(keeps(count, t(Shape { spans: 4, ..plain })).await);
    assert!(!keeps(count, t(Shape { spans: 2, ..plain })).await);
    let ts = "{ name: t, type: trace_state, trace_state: { key: vendor, values: [keep] } }";
    let mut spans = t(plain);
    spans[1].trace_state = "other=1,vendor=keep".into();
    assert!(keeps(ts, spans).await);
    assert!(!keeps(ts, t(plain)).await);
    let flags = "{ name: f, type: trace_flags }";
    assert!(keeps(flags, t(plain)).await);
    let mut unsampled = t(plain);
    for sp in &mut unsampled {
        sp.flags = 0x100;
    }
    assert!(!keeps(flags, unsampled).await);
    let ottl = r#"{ name: o, type: ottl_condition, ottl_condition: { span: ['attributes["http.route"] == "/api" and kind == SPAN_KIND_UNSPECIFIED'] } }"#;
    assert!(keeps(ottl, t(plain)).await);
    let ottl_ev = r#"{ name: o, type: ottl_condition, ottl_condition: { spanevent: ['name == "exception"'] } }"#;
    let mut spans = t(plain);
    spans[1].events.push(Event {
        name: "exception".into(),
        ..Default::default()
    });
    assert!(keeps(ottl_ev, spans).await);
    assert!(!keeps(ottl_ev, t(plain)).await);
    let and = "{ name: a, type: and, and: { and_sub_policy: [ { type: status_code, status_code: { status_codes: [ERROR] } }, { type: span_count, span_count: { min_spans: 2 } } ] } }";
    assert!(
        keeps(
            and,
            t(Shape {
                error: true,
                ..plain
            })
        )
        .await
    );
    assert!(
        !keeps(
            and,
            t(Shape {
                error: true,
                spans: 1,
                ..plain
            })
        )
        .await
    );
    let not = "{ name: n, type: not, not: { not_sub_policy: { type: status_code, status_code: { status_codes: [ERROR] } } } }";
    assert!(keeps(not, t(plain)).await);
    assert!(
        !keeps(
            not,
            t(Shape {
                error: true,
                ..plain
            })
        )
        .await
    );
}

#[tokio::test(start_paused = true)]
async fn drop_wins_and_inverted_matches_veto() {
    let yaml = r#"
decision_wait: 1s
policies:
  - { name: all, type: always_sample }
  - name: no-health
    type: drop
    drop: { drop_sub_policy: [ { type: string_attribute, string_attribute: { key: http.route, values: [/healthz] } } ] }
  - { name: not-internal, type: string_attribute, string_attribute: { key: tenant, values: [internal], invert_match: true } }
"#;
    let s = setup(yaml).await;
    let base = |id: u128| {
        trace_spans(
            id << 64 | id,
            Shape {
                spans: 1,
                ..Shape::default()
            },
        )
    };
    let mut spans = base(1);
    spans.extend(with_attr(
        base(2),
        "http.route",
        Value::StringValue("/healthz".into()),
    ));
    spans.extend(with_attr(
        base(3),
        "tenant",
        Value::StringValue("internal".into()),
    ));
    spans.extend(with_attr(
        base(4),
        "tenant",
        Value::StringValue("acme".into()),
    ));
    s.sender.send(request(spans)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept: HashSet<u128> = kept_traces(&s.out).keys().map(|k| k >> 64).collect();
    assert_eq!(kept, HashSet::from([1, 4]));
    s.running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn rate_limits_and_composite() {
    let rate = "decision_wait: 1s\nshards: 1\npolicies: [{ name: r, type: rate_limiting, rate_limiting: { spans_per_second: 10 } }]";
    let s = setup(rate).await;
    let spans = many_traces(10, 3);
    s.sender.send(request(spans)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        s.out.item_count(),
        9,
        "three traces of 3 spans fit in 10 spans/s"
    );
    s.running.shutdown(Duration::from_secs(1)).await.unwrap();

    let bytes = "decision_wait: 1s\nshards: 1\npolicies: [{ name: b, type: bytes_limiting, bytes_limiting: { bytes_per_second: 1, burst_capacity: 1000000 } }]";
    let s = setup(bytes).await;
    s.sender
        .send(request(trace_spans(
            5 << 64 | 5,
            Shape {
                spans: 2,
                ..Shape::default()
            },
        )))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s.out.item_count(), 2, "within the burst");
    s.running.shutdown(Duration::from_secs(1)).await.unwrap();

    let composite = r#"
decision_wait: 1s
shards: 1
policies:
  - name: composite
    type: composite
    composite:
      max_total_spans_per_second: 10
      policy_order: [errors, everything]
      composite_sub_policy:
        - { name: errors, type: status_code, status_code: { status_codes: [ERROR] } }
        - { name: everything, type: always_sample }
      rate_allocation:
        - { policy: errors, percent: 60 }
        - { policy: everything, percent: 40 }
"#;
    let s = setup(composite).await;
    let mut spans = Vec::new();
    for i in 0..6u128 {
        spans.extend(trace_spans(
            (i + 1) << 64 | i,
            Shape {
                spans: 2,
                error: i < 3,
                ..Shape::default()
            },
        ));
    }
    s.sender.send(request(spans)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // errors: 6 spans/s -> all 3 error traces; everything: 4 spans/s -> 2 of the others.
    let kept = kept_traces(&s.out);
    assert_eq!(kept.len(), 5, "{kept:?}");
    s.running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn invalid_configurations_name_the_setting() {
    let build = |yaml: &str| -> String {
        let config: TailSamplingConfig = match from_yaml("processors.tail_sampling", yaml) {
            Ok(c) => c,
            Err(e) => return e.to_string(),
        };
        let (exporter, _) = InMemoryExporter::new();
        match Pipeline::traces()
            .processor(TailSampler::new(config).with_id(ComponentId::new("tail_sampling")))
            .exporter(exporter)
            .build()
        {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        }
    };
    let cases = [
        ("policies: []", "`policies`"),
        (
            "policies: [{ name: x, type: latency }]",
            "`policies[0].latency`",
        ),
        (
            "policies: [{ name: a, type: always_sample }, { name: x, type: latency, latency: { threshold_ms: 2000, upper_threshold_ms: 10 } }]",
            "`policies[1].latency.upper_threshold_ms`",
        ),
        (
            "policies: [{ name: x, type: probabilistic, probabilistic: { sampling_percentage: 120 } }]",
            "`policies[0].probabilistic.sampling_percentage`",
        ),
        (
            "policies: [{ name: x, type: status_code, status_code: { status_codes: [BAD] } }]",
            "`policies[0].status_code.status_codes[0]`",
        ),
        (
            "policies: [{ name: x, type: string_attribute, string_attribute: { key: k, values: ['('], enabled_regex_matching: true } }]",
            "`policies[0].string_attribute.values[0]`",
        ),
        (
            "policies: [{ name: x, type: ottl_condition, ottl_condition: { span: ['name = 1'] } }]",
            "`policies[0].ottl_condition.span[0]`",
        ),
        (
            "policies: [{ name: x, type: always_sample }, { name: x, type: always_sample }]",
            "used twice",
        ),
        ("policies: [{ type: always_sample }]", "`policies[0].name`"),
        (
            "decision_wait: 0s\npolicies: [{ name: x, type: always_sample }]",
            "`decision_wait`",
        ),
    ];
    for (yaml, want) in cases {
        let got = build(yaml);
        assert!(got.contains(want), "{yaml}\n -> {got}");
    }
    let got = build("policies: [{ name: x, type: latency, latency: { threshold: 5 } }]");
    assert!(
        got.starts_with("processors.tail_sampling.policies[0].latency.threshold"),
        "{got}"
    );
    let got = build("policies: [{ name: x, type: nonsense }]");
    assert!(
        got.starts_with("processors.tail_sampling.policies[0].type"),
        "{got}"
    );
    let got = build("decison_wait: 1s");
    assert!(
        got.starts_with("processors.tail_sampling.decison_wait"),
        "{got}"
    );
}

/// A next stage that hangs at shutdown: what the sampler could not deliver by the deadline
/// (a stuck delivery, and traces still buffered) is counted as `shutdown_deadline`, the
/// buffered gauges go back to zero, and shutdown returns soon after the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_held_at_the_shutdown_deadline_are_counted() {
    let s = setup(
        "decision_wait: 100ms\nnum_traces: 1000\npolicies:\n  - { name: all, type: always_sample }\n",
    )
    .await;
    let c = counters(&s.running);
    let telemetry = s.running.telemetry().clone();
    s.out.set_hanging(true);
    // Five traces are decided and their delivery hangs; three more wait in the shards'
    // queues behind it.
    s.sender.send(request(many_traces(5, 4))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let late: Vec<Span> = many_traces(8, 4).into_iter().skip(20).collect();
    s.sender.send(request(late)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = std::time::Instant::now();
    let result = s.running.shutdown(Duration::from_millis(300)).await;
    assert!(result.is_err(), "a deadline that passed is reported");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(c.dropped("shutdown_deadline"), 32, "every span counted");
    assert_eq!(s.out.item_count(), 0);
    let stats = s.handle.stats();
    assert_eq!(
        (
            stats.traces_buffered,
            stats.spans_buffered,
            stats.bytes_buffered
        ),
        (0, 0, 0)
    );
    otel_pipeline_core::testing::assert_balanced(&telemetry);
}

/// The shards' queues count toward the memory bound: while the shards cannot keep up (here
/// their deliveries hang), batches beyond a sixteenth of `max_buffered_bytes` (at least
/// 1 MiB) are refused as back-pressure instead of queueing without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shard_queues_refuse_past_their_share_of_the_byte_bound() {
    let s = setup(
        "decision_wait: 50ms\nnum_traces: 100000\nmax_buffered_bytes: 16777216\npolicies:\n  - { name: all, type: always_sample }\n",
    )
    .await;
    s.out.set_hanging(true);
    s.sender.send(request(many_traces(4, 4))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // About 120 KiB a request; the shards are stuck in their first delivery.
    let mut accepted = 0usize;
    let mut refused = 0usize;
    for round in 0..60u128 {
        let spans: Vec<Span> = (0..40u128)
            .flat_map(|i| {
                trace_spans(
                    (round * 40 + i + 100) << 64 | i,
                    Shape {
                        spans: 5,
                        ..Shape::default()
                    },
                )
            })
            .collect();
        let req = request(spans);
        let size = prost::Message::encoded_len(&req);
        match s.sender.send(req).await {
            Ok(()) => accepted += size,
            Err(e) => {
                assert!(e.is_retryable(), "back-pressure, not loss: {}", e.reason());
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "nothing refused");
    assert!(
        accepted <= (1 << 20) + 256 * 1024,
        "queued {accepted} bytes"
    );
    s.out.set_hanging(false);
    s.running.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// `memory_held` reports what the buffered spans take as held: packed (the default),
/// well under their OTLP-encoded size (`bytes_buffered`); unpacked, about that size. Once
/// everything is decided only the dictionary is left, within its bound.
#[tokio::test(start_paused = true)]
async fn memory_held_reports_packed_spans_under_their_encoded_size() {
    let yaml = "decision_wait: 5s\nshards: 1\npolicies: [{ name: all, type: always_sample }]";
    let mut held = Vec::new();
    for pack in [true, false] {
        let s = setup(&format!("{yaml}\npack_spans: {pack}")).await;
        let mut rng = SplitMix64::new(3);
        let mut spans = many_traces(500, 10);
        for span in &mut spans {
            span.attributes = (0..8)
                .map(|a| {
                    let v = format!("value-{}", rng.below(20));
                    kv(&format!("app.attr.{a}"), Value::StringValue(v))
                })
                .collect();
        }
        for chunk in spans.chunks(500) {
            s.sender.send(request(chunk.to_vec())).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stats = s.handle.stats();
        assert_eq!(stats.spans_buffered, 5000);
        held.push((stats.memory_held, stats.bytes_buffered));
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(s.out.spans().len(), 5000);
        let after = s.handle.stats();
        assert_eq!(after.spans_buffered, 0);
        assert!(
            (0..8 << 20).contains(&after.memory_held),
            "only the dictionaries are left: {}",
            after.memory_held
        );
        s.running.shutdown(Duration::from_secs(5)).await.unwrap();
    }
    let (packed, encoded) = held[0];
    assert!(
        packed > 0 && packed * 2 < encoded,
        "packed: {packed} of {encoded}"
    );
    let (unpacked, encoded) = held[1];
    assert!(
        unpacked * 10 >= encoded * 9,
        "unpacked: {unpacked} of {encoded}"
    );
}

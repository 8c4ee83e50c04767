//! The sampler's engine driven by hand, without a pipeline or tasks: how kept traces are
//! grouped on the way out, and that the deadline heap stays bounded.

// Test helpers unwrap: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline_core::proto::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use otel_pipeline_core::proto::resource::v1::Resource;
use otel_pipeline_core::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
use otel_pipeline_core::{Batch, ComponentId, ComponentKind, ComponentTelemetry};
use tokio::time::Instant;

use super::{TailSampler, TailSamplingConfig, TailSamplingCore};
use crate::config::from_yaml;

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
}

/// The spans of trace `id`: a root and its children.
fn trace_spans(id: u128, shape: Shape) -> Vec<Span> {
    let root = (id as u64 | 1).to_be_bytes().to_vec();
    (0..shape.spans.max(1))
        .map(|i| Span {
            trace_id: id.to_be_bytes().to_vec(),
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
            end_time_unix_nano: 1_001_000_000,
            ..Default::default()
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

/// A sampler's engine with its own counters.
fn bare_core(yaml: &str) -> TailSamplingCore {
    let config: TailSamplingConfig = from_yaml("processors.tail_sampling", yaml).unwrap();
    let telemetry = ComponentTelemetry::detached(
        ComponentKind::Processor,
        ComponentId::new("tail_sampling"),
        "spans",
    );
    TailSampler::core(config, telemetry).unwrap()
}

/// Kept traces leave grouped by the resource/scope they came with, however their spans
/// interleaved across batches: one `ResourceSpans` per incoming group, every span once.
#[tokio::test(start_paused = true)]
async fn output_groups_spans_by_their_resource_and_scope() {
    let mut core = bare_core("decision_wait: 30s\npolicies: [{ name: all, type: always_sample }]");
    let two = Shape { spans: 2 };
    let (t1, t2, t3) = (
        trace_spans(1 << 64 | 1, two),
        trace_spans(2 << 64 | 2, two),
        trace_spans(3 << 64 | 3, two),
    );
    let with_service = |spans: Vec<Span>, service: &str| {
        let mut req = request(spans);
        req.resource_spans[0].resource.as_mut().unwrap().attributes =
            vec![kv("service.name", Value::StringValue(service.into()))];
        req
    };
    // Batch A: trace 1's root and all of trace 2; batch B: trace 1's child and trace 3.
    let a = with_service(vec![t1[0].clone(), t2[0].clone(), t2[1].clone()], "a");
    let b = with_service(vec![t1[1].clone(), t3[0].clone(), t3[1].clone()], "b");
    let now = Instant::now();
    let (a, b) = (
        core.prepare(Batch::new(a), 1).remove(0),
        core.prepare(Batch::new(b), 1).remove(0),
    );
    core.ingest(&a, now);
    core.ingest(&b, now);
    core.decide_all(now, None);
    let out = core.take_output().unwrap();

    assert_eq!(
        out.resource_spans.len(),
        2,
        "one group per incoming resource/scope"
    );
    let mut seen: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for rs in &out.resource_spans {
        let service = match &rs.resource.as_ref().unwrap().attributes[0].value {
            Some(AnyValue {
                value: Some(Value::StringValue(s)),
            }) => s.clone(),
            other => panic!("unexpected service {other:?}"),
        };
        assert_eq!(rs.scope_spans.len(), 1);
        let ids = rs.scope_spans[0]
            .spans
            .iter()
            .map(|s| s.span_id.clone())
            .collect::<Vec<_>>();
        assert!(
            seen.insert(service, ids).is_none(),
            "a service appears twice"
        );
    }
    let ids = |spans: &[&Span]| {
        let mut v: Vec<Vec<u8>> = spans.iter().map(|s| s.span_id.clone()).collect();
        v.sort();
        v
    };
    let mut got_a = seen["a"].clone();
    got_a.sort();
    let mut got_b = seen["b"].clone();
    got_b.sort();
    assert_eq!(got_a, ids(&[&t1[0], &t2[0], &t2[1]]));
    assert_eq!(got_b, ids(&[&t1[1], &t3[0], &t3[1]]));
    assert!(core.take_output().is_none(), "output is taken once");
}

/// Traces decided early (here: over `num_traces`) leave no entries behind in the deadline
/// heap: it stays within 2 x traces + 1024 per shard, not arrival rate x decision_wait.
#[test]
fn the_deadline_heap_stays_bounded_by_the_traces_held() {
    let mut core = bare_core(
        "decision_wait: 3600s\nnum_traces: 100\nshards: 1\npolicies:\n  - { name: all, type: always_sample }\n",
    );
    let start = Instant::now();
    for round in 0..200u128 {
        let spans: Vec<Span> = (0..50u128)
            .flat_map(|i| trace_spans((round * 50 + i + 1) << 64 | i, Shape { spans: 2 }))
            .collect();
        for part in core.prepare(Batch::new(request(spans)), 1) {
            core.ingest(&part, start);
        }
        let _ = core.take_output();
    }
    // 10 000 traces went through a buffer of 100.
    assert!(
        core.heap_entries() <= 2 * (2 * 100 + 1024),
        "{}",
        core.heap_entries()
    );
}

/// Traces of one service that came in many requests leave under one `ResourceSpans` (and
/// one `ScopeSpans` per distinct scope), not one copy of the resource per request.
#[test]
fn kept_traces_of_one_service_leave_under_one_resource() {
    let mut core = bare_core("decision_wait: 30s\npolicies: [{ name: all, type: always_sample }]");
    let now = Instant::now();
    for i in 0..7u128 {
        let mut req = request(trace_spans((i + 1) << 64 | i, Shape { spans: 3 }));
        // Two scopes, alternating between requests.
        req.resource_spans[0].scope_spans[0].scope = Some(InstrumentationScope {
            name: if i % 2 == 0 { "http" } else { "db" }.into(),
            ..Default::default()
        });
        for part in core.prepare(Batch::new(req), 1) {
            core.ingest(&part, now);
        }
    }
    core.decide_all(now, None);
    let out = core.take_output().unwrap();
    assert_eq!(out.resource_spans.len(), 1, "one resource, not seven");
    let mut scopes: Vec<(&str, usize)> = out.resource_spans[0]
        .scope_spans
        .iter()
        .map(|ss| (ss.scope.as_ref().unwrap().name.as_str(), ss.spans.len()))
        .collect();
    // Traces are decided in no particular order; each scope appears once.
    scopes.sort_unstable();
    assert_eq!(scopes, [("db", 9), ("http", 12)]);
}

/// A request filed from its bytes (pass-through, ADR 005) is sampled exactly as the same
/// request decoded: the same traces kept, with the same spans, resources and scopes.
#[tokio::test(start_paused = true)]
async fn bytes_and_decoded_requests_are_sampled_alike() {
    use prost::Message as _;
    let yaml = "decision_wait: 30s\npolicies:\n\
                - { name: errors, type: status_code, status_code: { status_codes: [ERROR] } }\n\
                - { name: tagged, type: string_attribute, string_attribute: { key: keep, values: [yes] } }\n\
                - { name: slow, type: latency, latency: { threshold_ms: 500 } }";
    let mut spans = Vec::new();
    for t in 1..=40u128 {
        let mut trace = trace_spans(t << 64 | t, Shape { spans: 3 });
        match t % 4 {
            0 => {
                trace[1].status = Some(otel_pipeline_core::proto::trace::v1::Status {
                    code: 2,
                    ..Default::default()
                })
            }
            1 => trace[2].attributes = vec![kv("keep", Value::StringValue("yes".into()))],
            2 => trace[0].end_time_unix_nano += 600_000_000,
            _ => {}
        }
        spans.extend(trace);
    }
    let req = request(spans);
    let now = Instant::now();
    let mut outputs = Vec::new();
    for batch in [
        Batch::new(req.clone()),
        Batch::from_encoded(req.encode_to_vec().into()).unwrap(),
    ] {
        let mut core = bare_core(yaml);
        let part = core.prepare(batch, 1).remove(0);
        core.ingest(&part, now);
        core.decide_all(now, None);
        outputs.push(core.take_output().unwrap());
    }
    let kept = |out: &ExportTraceServiceRequest| {
        let mut ids: Vec<Vec<u8>> = out
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .map(|s| s.trace_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids.len()
    };
    // Errors (10), tagged (10) and slow (10) traces are kept, the other 10 dropped.
    assert_eq!(kept(&outputs[0]), 30);
    // The same spans under the same resource and scope (the order of traces on the way
    // out follows the engine's hash tables, which differ from engine to engine).
    type Placed = (Option<Resource>, Option<InstrumentationScope>, Span);
    let spans = |out: &ExportTraceServiceRequest| {
        let mut all: Vec<Placed> = Vec::new();
        for rs in &out.resource_spans {
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    all.push((rs.resource.clone(), ss.scope.clone(), span.clone()));
                }
            }
        }
        all.sort_by(|a, b| (&a.2.trace_id, &a.2.name).cmp(&(&b.2.trace_id, &b.2.name)));
        all
    };
    assert_eq!(spans(&outputs[0]).len(), 90);
    assert_eq!(
        spans(&outputs[0]),
        spans(&outputs[1]),
        "the byte path keeps what the decoded one keeps"
    );
}

/// Packed spans come back as they went in, whatever the dictionaries went through: more
/// repeated values than one dictionary holds (so a second one starts while traces still
/// use the first), spans of a trace that arrive after that, values too long to enter,
/// values of every kind. The same spans leave with `pack_spans: false`, and once all is
/// decided only the current dictionary is left.
#[tokio::test(start_paused = true)]
async fn packed_spans_come_back_as_they_went_in_across_dictionaries() {
    let traces = 40_000u128;
    let span = |t: u128, i: usize| {
        let mut s = trace_spans(t << 64 | t, Shape { spans: 2 }).remove(i);
        s.attributes = vec![
            // Two traces in a row share these: they enter the dictionary at their second
            // sighting, 40 000 entries in all.
            kv("user.id", Value::StringValue(format!("u-{}", t / 2))),
            kv("session", Value::StringValue(format!("s-{}", t / 2))),
            kv("http.request.method", Value::StringValue("GET".into())),
            kv("count", Value::IntValue(t as i64 % 7)),
            kv("ratio", Value::DoubleValue(0.5)),
            kv("ok", Value::BoolValue(i == 0)),
            kv(
                "long",
                Value::StringValue("x".repeat(200 + (t % 3) as usize)),
            ),
            kv("", Value::StringValue(String::new())),
        ];
        s
    };
    // Each trace's first spans in one batch, its second spans in a later one, after the
    // first dictionary has filled.
    let firsts: Vec<Span> = (1..=traces).map(|t| span(t, 0)).collect();
    let seconds: Vec<Span> = (1..=traces).map(|t| span(t, 1)).collect();
    let mut want: Vec<Span> = firsts.iter().chain(&seconds).cloned().collect();
    want.sort_by(|a, b| (&a.trace_id, &a.span_id).cmp(&(&b.trace_id, &b.span_id)));
    let yaml =
        "decision_wait: 30s\nnum_traces: 100000\npolicies: [{ name: all, type: always_sample }]";
    for pack in [true, false] {
        let mut core = bare_core(&format!("{yaml}\npack_spans: {pack}"));
        let now = Instant::now();
        for chunk in firsts.chunks(5000).chain(seconds.chunks(5000)) {
            let part = core
                .prepare(Batch::new(request(chunk.to_vec())), 1)
                .remove(0);
            core.ingest(&part, now);
            assert!(core.dicts.len() <= 3);
        }
        if pack {
            assert!(core.dicts.len() > 1, "a second dictionary started");
        }
        core.decide_all(now, None);
        assert_eq!(core.dicts.len(), 1);
        let out = core.take_output().unwrap();
        let mut got: Vec<Span> = out
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| ss.spans.clone())
            .collect();
        got.sort_by(|a, b| (&a.trace_id, &a.span_id).cmp(&(&b.trace_id, &b.span_id)));
        assert_eq!(got.len(), want.len(), "pack_spans: {pack}");
        assert!(
            got == want,
            "pack_spans: {pack}: the spans come back as they went in"
        );
    }
}

/// Two clients whose resource encoding and schema URL concatenate to the same bytes stay
/// two resources: group keys are length-prefixed. (Client A's resource encodes to
/// `0x10 0x41` and its URL is `x`; client B has no resource and the URL `\x10Ax`: the
/// plain concatenation merged them, so A's spans left under B's URL or the reverse.)
#[test]
fn resources_whose_bytes_run_into_their_schema_urls_stay_apart() {
    use otel_pipeline_core::proto::resource::v1::Resource;
    use prost::Message as _;
    let mut core = bare_core("decision_wait: 30s\npolicies: [{ name: all, type: always_sample }]");
    let now = Instant::now();
    let a = Resource {
        dropped_attributes_count: 65,
        ..Default::default()
    };
    assert_eq!(a.encode_to_vec(), [0x10, 0x41]);
    let clients = [(Some(a), "x".to_string()), (None, "\u{10}Ax".to_string())];
    for (i, (resource, url)) in clients.into_iter().enumerate() {
        let mut req = request(trace_spans((i as u128 + 1) << 64, Shape { spans: 1 }));
        req.resource_spans[0].resource = resource;
        req.resource_spans[0].schema_url = url;
        for part in core.prepare(Batch::new(req), 1) {
            core.ingest(&part, now);
        }
    }
    core.decide_all(now, None);
    let out = core.take_output().unwrap();
    assert_eq!(out.resource_spans.len(), 2, "two clients, two resources");
    let mut urls: Vec<&str> = out
        .resource_spans
        .iter()
        .map(|r| r.schema_url.as_str())
        .collect();
    urls.sort_unstable();
    assert_eq!(urls, ["\u{10}Ax", "x"]);
}

/// Readers of request bytes give what prost's decode gives: a field given twice keeps
/// its last value (`trace_id`), an attribute's values merge, a resource given twice is
/// merged. Decoded and bytes paths then sample and emit alike.
#[test]
fn repeated_fields_are_read_as_prost_reads_them() {
    use otel_pipeline_core::proto::trace::v1::Span;
    use prost::Message as _;
    // A span with two trace_id fields: 1 then 2.
    let span = Span {
        trace_id: 1u128.to_be_bytes().to_vec(),
        span_id: vec![1; 8],
        name: "x".into(),
        ..Default::default()
    };
    let mut bytes = span.encode_to_vec();
    let second = Span {
        trace_id: 2u128.to_be_bytes().to_vec(),
        ..Default::default()
    };
    bytes.extend(second.encode_to_vec());
    let decoded = Span::decode(&bytes[..]).unwrap();
    assert_eq!(
        otel_pipeline_core::wire::trace_id(&bytes),
        &decoded.trace_id[..]
    );
    assert_eq!(decoded.trace_id, 2u128.to_be_bytes().to_vec());

    // An attribute with two values: "a" then the int 5; prost merges to the int.
    let kv1 = KeyValue {
        key: "k".into(),
        value: Some(otel_pipeline_core::proto::common::v1::AnyValue {
            value: Some(Value::StringValue("a".into())),
        }),
        ..Default::default()
    };
    let mut kv_bytes = kv1.encode_to_vec();
    kv_bytes.extend(
        KeyValue {
            key: String::new(),
            value: Some(otel_pipeline_core::proto::common::v1::AnyValue {
                value: Some(Value::IntValue(5)),
            }),
            ..Default::default()
        }
        .encode_to_vec()
        // Only the value field: drop the empty key (which prost would not write anyway).
        .into_iter()
        .collect::<Vec<u8>>(),
    );
    let merged = KeyValue::decode(&kv_bytes[..]).unwrap();
    let mut span_bytes = Vec::new();
    prost::encoding::bytes::encode(9, &kv_bytes, &mut span_bytes);
    assert_eq!(
        super::wire::span_attr(&span_bytes, "k"),
        Some(super::wire::AnyRef::Int(5))
    );
    assert!(matches!(
        merged.value.and_then(|v| v.value),
        Some(Value::IntValue(5))
    ));
    let fast = super::wire::decode_span(&span_bytes).unwrap();
    assert_eq!(fast, Span::decode(&span_bytes[..]).unwrap());
}

/// A request filed over 64 shards (a large machine) holds about its own size, not nine
/// times it: the byte bound counts what the parts hold, so over-reserving refused data
/// that fit.
#[test]
fn sharding_a_request_holds_about_its_size() {
    use prost::Message as _;
    let core = bare_core("decision_wait: 30s\npolicies: [{ name: all, type: always_sample }]");
    let req = request(
        (0..2_000u128)
            .flat_map(|t| trace_spans((t + 1) << 64 | t, Shape { spans: 2 }))
            .collect(),
    );
    let bytes = req.encode_to_vec();
    let batch = Batch::from_encoded(bytes.clone().into()).unwrap();
    let parts = core.prepare(batch, 64);
    let held_bytes: usize = parts.iter().map(|p| p.bytes.capacity()).sum();
    assert!(
        held_bytes < bytes.len() * 3 / 2,
        "{held_bytes} bytes held for a {}-byte request",
        bytes.len()
    );
}

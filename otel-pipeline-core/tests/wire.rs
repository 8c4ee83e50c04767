//! The promises pass-through makes (ADR 005), checked against prost: bytes the schema
//! check accepts always decode, with the count it gave; joined bytes decode to the
//! merged request; cutting bytes gives what cutting the decoded request gives; fields this
//! OTLP version does not know survive byte for byte.

use otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline_core::proto::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use otel_pipeline_core::proto::resource::v1::Resource;
use otel_pipeline_core::proto::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use otel_pipeline_core::testing::{SplitMix64, generate_traces};
use otel_pipeline_core::{Batch, Signal, Traces, wire};
use prost::Message;

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A request that uses every message of the schema: several resources and scopes, spans
/// of a few traces interleaved, events, links, status, nested arrays and maps.
fn rich_request(seed: u64, resources: usize) -> ExportTraceServiceRequest {
    let mut rng = SplitMix64::new(seed);
    let trace_ids: Vec<Vec<u8>> = (0..5)
        .map(|_| [rng.next_u64().to_be_bytes(), rng.next_u64().to_be_bytes()].concat())
        .collect();
    let resource_spans = (0..resources)
        .map(|r| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", Value::StringValue(format!("svc-{r}"))),
                    kv(
                        "host.tags",
                        Value::ArrayValue(ArrayValue {
                            values: vec![AnyValue {
                                value: Some(Value::KvlistValue(KeyValueList {
                                    values: vec![kv("zone", Value::StringValue("a".into()))],
                                })),
                            }],
                        }),
                    ),
                ],
                dropped_attributes_count: 1,
                ..Default::default()
            }),
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            scope_spans: (0..1 + rng.below(3))
                .map(|s| ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: format!("lib-{s}"),
                        version: "1.0".into(),
                        attributes: vec![kv("lib.flag", Value::BoolValue(true))],
                        dropped_attributes_count: 0,
                    }),
                    schema_url: String::new(),
                    spans: (0..1 + rng.below(6))
                        .map(|i| {
                            let trace = &trace_ids[rng.below(5) as usize];
                            Span {
                                trace_id: trace.clone(),
                                span_id: rng.next_u64().to_be_bytes().to_vec(),
                                parent_span_id: if i == 0 {
                                    Vec::new()
                                } else {
                                    rng.next_u64().to_be_bytes().to_vec()
                                },
                                name: format!("op {i}"),
                                kind: span::SpanKind::Internal as i32,
                                start_time_unix_nano: rng.next_u64(),
                                end_time_unix_nano: rng.next_u64(),
                                flags: 1,
                                attributes: vec![
                                    kv("n", Value::IntValue(rng.next_u64() as i64)),
                                    kv("d", Value::DoubleValue(0.5)),
                                    kv("b", Value::BytesValue(vec![0, 1, 2])),
                                ],
                                events: vec![span::Event {
                                    time_unix_nano: 7,
                                    name: "exception".into(),
                                    attributes: vec![kv(
                                        "exception.message",
                                        Value::StringValue("boom".into()),
                                    )],
                                    dropped_attributes_count: 0,
                                }],
                                links: vec![span::Link {
                                    trace_id: trace_ids[0].clone(),
                                    span_id: vec![9; 8],
                                    trace_state: "ot=th:8".into(),
                                    attributes: Vec::new(),
                                    dropped_attributes_count: 0,
                                    flags: 0x101,
                                }],
                                status: Some(Status {
                                    message: "bad".into(),
                                    code: (i % 3) as i32,
                                }),
                                ..Default::default()
                            }
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

#[test]
fn the_check_accepts_exactly_what_prost_decodes() {
    let mut rng = SplitMix64::new(7);
    let seeds: Vec<Vec<u8>> = (0..8)
        .map(|s| rich_request(s, 1 + s as usize % 3).encode_to_vec())
        .chain([generate_traces(3, 4, 1).encode_to_vec()])
        .collect();
    for seed in &seeds {
        let want = Traces::item_count(
            &ExportTraceServiceRequest::decode(&seed[..]).expect("valid test data"),
        );
        assert_eq!(wire::check_traces(seed), Ok(want));
    }
    let (mut accepted, mut refused) = (0, 0);
    for round in 0..30_000 {
        let mut buf = seeds[round % seeds.len()].clone();
        // One to three mutations: flip a byte, cut the tail, insert or drop a byte.
        for _ in 0..1 + rng.below(3) {
            if buf.is_empty() {
                break;
            }
            let at = rng.below(buf.len() as u64) as usize;
            match rng.below(4) {
                0 => buf[at] ^= 1 << rng.below(8),
                1 => buf.truncate(at),
                2 => buf.insert(at, rng.next_u64() as u8),
                _ => {
                    buf.remove(at);
                }
            }
        }
        let ours = wire::check_traces(&buf);
        let prost = ExportTraceServiceRequest::decode(&buf[..]);
        match (&ours, &prost) {
            (Ok(n), Ok(req)) => {
                assert_eq!(*n, Traces::item_count(req), "round {round}: span count");
                accepted += 1;
            }
            (Err(_), Err(_)) => refused += 1,
            (Ok(_), Err(e)) => panic!("round {round}: checked bytes that prost refuses: {e}"),
            // Stricter than prost only for unknown groups (deprecated; no OTLP client
            // writes them).
            (Err(e), Ok(_)) => assert!(
                e.to_string().contains("unsupported wire type"),
                "round {round}: refused bytes that prost decodes: {e}"
            ),
        }
    }
    // Both outcomes were exercised.
    assert!(
        accepted > 1_000 && refused > 1_000,
        "{accepted} / {refused}"
    );
}

#[test]
fn the_check_names_what_is_wrong() {
    let mut req = generate_traces(1, 1, 3);
    req.resource_spans[0].scope_spans[0].spans[0].name = "xx".into();
    let mut buf = req.encode_to_vec();
    let at = buf
        .windows(2)
        .position(|w| w == b"xx")
        .expect("valid test data");
    buf[at] = 0xff;
    let err = Batch::<Traces>::from_encoded(buf.into()).unwrap_err();
    assert!(err.to_string().contains("Span field 5"), "{err}");
    assert!(err.to_string().contains("UTF-8"), "{err}");

    // A span whose name is sent as a varint: a wire type prost refuses.
    let bad = [0x0a, 6, 0x12, 4, 0x12, 2, 0x28, 1];
    let err = wire::check_traces(&bad).unwrap_err();
    assert!(err.to_string().contains("wrong wire type"), "{err}");
    assert!(ExportTraceServiceRequest::decode(&bad[..]).is_err());

    // Nesting past prost's limit is refused here, not later.
    let mut value = AnyValue {
        value: Some(Value::StringValue("deep".into())),
    };
    for _ in 0..120 {
        value = AnyValue {
            value: Some(Value::ArrayValue(ArrayValue {
                values: vec![value],
            })),
        };
    }
    let mut req = generate_traces(1, 1, 4);
    req.resource_spans[0].scope_spans[0].spans[0].attributes = vec![KeyValue {
        key: "deep".into(),
        value: Some(value),
        ..Default::default()
    }];
    let err = wire::check_traces(&req.encode_to_vec()).unwrap_err();
    assert!(err.to_string().contains("nested deeper"), "{err}");
}

#[test]
fn joined_bytes_decode_as_the_merged_request() {
    let parts: Vec<ExportTraceServiceRequest> = (0..6).map(|s| rich_request(s, 2)).collect();
    let mut joined = Batch::<Traces>::new(Default::default());
    let mut merged = ExportTraceServiceRequest::default();
    for (i, part) in parts.iter().enumerate() {
        // Mixed: most arrive as bytes, one decoded (it is encoded to join them).
        let batch = if i == 3 {
            Batch::new(part.clone())
        } else {
            Batch::from_encoded(part.encode_to_vec().into()).expect("valid test data")
        };
        joined.append(batch);
        Traces::merge(&mut merged, part.clone());
    }
    let bytes = joined.encoded().expect("joined as bytes").clone();
    assert_eq!(joined.item_count(), Traces::item_count(&merged));
    assert_eq!(
        ExportTraceServiceRequest::decode(bytes).expect("valid test data"),
        merged
    );
    assert_eq!(joined.data(), &merged);
}

#[test]
fn cutting_bytes_gives_what_cutting_the_decoded_request_gives() {
    for seed in 0..20 {
        let req = rich_request(seed, 1 + seed as usize % 4);
        let bytes = req.encode_to_vec();
        let total = Traces::item_count(&req);
        for n in [0, 1, total / 3, total / 2, total.saturating_sub(1), total] {
            let (front, rest) = wire::split_front_traces(&bytes, n);
            let mut decoded = req.clone();
            let want_front = Traces::split_front(&mut decoded, n);
            let got_front = ExportTraceServiceRequest::decode(&front[..]).expect("valid test data");
            let got_rest = ExportTraceServiceRequest::decode(&rest[..]).expect("valid test data");
            assert_eq!(got_front, want_front, "seed {seed}, front {n}");
            assert_eq!(got_rest, decoded, "seed {seed}, rest after {n}");
        }
        // Through the batch: counts follow the bytes.
        let mut batch =
            Batch::<Traces>::from_encoded(bytes.clone().into()).expect("valid test data");
        let front = batch.split_front(total / 2);
        assert_eq!(front.item_count(), total / 2);
        assert_eq!(batch.item_count(), total - total / 2);
        assert!(front.encoded().is_some() && batch.encoded().is_some());
    }
}

/// Wire helpers for hand-made unknown fields.
fn field(out: &mut Vec<u8>, number: u32, body: &[u8]) {
    wire::put_len_header(out, number, body.len());
    out.extend_from_slice(body);
}

#[test]
fn unknown_fields_survive_a_split_byte_for_byte() {
    // A span and a scope and resource list carrying fields a newer OTLP might add.
    let span_of = |trace: u8| {
        let mut span = Span {
            trace_id: vec![trace; 16],
            span_id: vec![1; 8],
            name: "op".into(),
            ..Default::default()
        }
        .encode_to_vec();
        field(&mut span, 40, b"future span field");
        span.extend_from_slice(&[0xc8, 0x02, 0x2a]); // field 41, varint 42
        span
    };
    let mut scope_spans = Vec::new();
    field(
        &mut scope_spans,
        1,
        &InstrumentationScope::default().encode_to_vec(),
    );
    field(&mut scope_spans, 2, &span_of(2));
    field(&mut scope_spans, 2, &span_of(3));
    field(&mut scope_spans, 9, b"future scope field");
    let mut resource_spans = Vec::new();
    field(&mut resource_spans, 2, &scope_spans);
    field(&mut resource_spans, 7, b"future resource field");
    let mut request = Vec::new();
    field(&mut request, 1, &resource_spans);

    assert_eq!(wire::check_traces(&request), Ok(2));
    // Even trace (2) to 0, odd (3) to 1.
    let parts = wire::split_traces(&request, 2, |id, _| usize::from(id[0] & 1));
    assert_eq!(parts.len(), 2);
    for (i, part, spans) in &parts {
        assert_eq!(*spans, 1);
        let span = span_of(2 + *i as u8);
        let has = |needle: &[u8]| part.windows(needle.len()).any(|w| w == needle);
        assert!(has(&span), "part {i}: the span byte for byte");
        assert_eq!(wire::check_traces(part), Ok(1));
    }
    // Unknown fields of the scope and resource go out once, not once per part.
    for needle in [&b"future scope field"[..], b"future resource field"] {
        let copies = parts
            .iter()
            .filter(|(_, part, _)| part.windows(needle.len()).any(|w| w == needle))
            .count();
        assert_eq!(copies, 1, "{}", String::from_utf8_lossy(needle));
    }
    // And when nothing needs cutting, the bytes are the request itself.
    let whole = wire::split_traces(&request, 2, |_, _| 1);
    assert_eq!(whole, vec![(1, request.clone(), 2)]);
    let mut batch = Batch::<Traces>::from_encoded(request.clone().into()).expect("valid test data");
    assert_eq!(
        batch
            .split_front(2)
            .encoded()
            .expect("valid test data")
            .as_ref(),
        &request[..]
    );
}

/// A small request with large unknown fields at every level (request, resource, scope),
/// split a hundred spans ten ways, as a trace router would: the outputs together hold
/// each unknown field once. Copied to every part, 3 MiB of unknown fields became 30 MiB.
#[test]
fn a_split_never_multiplies_unknown_fields() {
    let big = vec![b'u'; 1 << 20];
    let mut scope_spans = Vec::new();
    field(
        &mut scope_spans,
        1,
        &InstrumentationScope::default().encode_to_vec(),
    );
    for t in 0..100u8 {
        let span = Span {
            trace_id: vec![t; 16],
            span_id: vec![1; 8],
            name: "op".into(),
            ..Default::default()
        };
        field(&mut scope_spans, 2, &span.encode_to_vec());
    }
    field(&mut scope_spans, 9, &big);
    let mut resource_spans = Vec::new();
    field(&mut resource_spans, 2, &scope_spans);
    field(&mut resource_spans, 7, &big);
    let mut request = Vec::new();
    field(&mut request, 1, &resource_spans);
    field(&mut request, 5, &big);
    assert_eq!(wire::check_traces(&request), Ok(100));
    let parts = wire::split_traces(&request, 10, |id, _| usize::from(id[0]) % 10);
    assert_eq!(parts.len(), 10);
    let total: usize = parts.iter().map(|(_, p, _)| p.len()).sum();
    assert!(
        total < request.len() + 10 * 64,
        "{total} bytes out of a {}-byte request",
        request.len()
    );
    for (_, part, spans) in &parts {
        assert_eq!(wire::check_traces(part), Ok(*spans));
        let decoded = ExportTraceServiceRequest::decode(&part[..]).expect("decodes");
        assert_eq!(decoded.resource_spans[0].scope_spans[0].spans.len(), 10);
    }
}

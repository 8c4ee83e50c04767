//! The attributes processor and redaction with the gateway's config from
//! `docs/examples/gateway.yaml` on spans with 20 attributes, on one core; beside them, a
//! `transform` of five statements on the same spans (issue 30's goal: at least as fast
//! per span as the redaction).
//!
//! `cargo bench --bench attributes`

mod support;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use otel_pipeline::processors::attributes::{AttributeRedactor, AttributesConfig, RedactionConfig};
use otel_pipeline::processors::config::processor_config;

fn bench(c: &mut Criterion) {
    let doc = include_str!("../docs/examples/gateway.yaml");
    let attributes: AttributesConfig = processor_config(doc, "attributes/redact").expect("config");
    let redaction: RedactionConfig = processor_config(doc, "redaction").expect("config");
    let actions = AttributeRedactor::attributes(attributes)
        .compile()
        .expect("compiles");
    let masking = AttributeRedactor::redaction(redaction)
        .compile()
        .expect("compiles");
    let transform: otel_pipeline::processors::TransformConfig = serde_yaml_ng::from_str(
        r#"
error_mode: ignore
trace_statements:
  - context: span
    statements:
      - replace_pattern(name, "\\?.*", "")
      - set(attributes["deployment.environment"], "production") where resource.attributes["service.name"] != nil
      - delete_key(attributes, "http.request.header.authorization")
      - truncate_all(attributes, 256)
      - set(status.code, STATUS_CODE_ERROR) where attributes["http.response.status_code"] >= 500
"#,
    )
    .expect("config");
    let statements = transform.compile().expect("compiles");
    // The statements of real configurations 02, 16 and 17 (`../shared/real-configs`).
    let real: otel_pipeline::processors::TransformConfig = serde_yaml_ng::from_str(
        r#"
error_mode: ignore
trace_statements:
  - context: span
    statements:
      - replace_pattern(name, "\\?.*", "")
      - replace_match(name, "GET /api/products/*", "GET /api/products/{productId}")
      - truncate_all(attributes, 4095)
  - context: span
    conditions:
      - resource.attributes["service.name"] == "ignored-errors" and attributes["http.response.status_code"] == 500 and span.kind == 2
    statements:
      - set(status.code, STATUS_CODE_UNSET)
      - delete_key(attributes, "error.type")
"#,
    )
    .expect("config");
    let real_configs = real.compile().expect("compiles");
    let batch = support::spans_with_20_attributes(1000);
    let mut g = c.benchmark_group("attributes");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("gateway_actions/1000_spans", |b| {
        b.iter_batched_ref(
            || batch.clone(),
            |data| actions.apply(data),
            BatchSize::LargeInput,
        )
    });
    // Side by side for issue 30's goal, each batch decoded from its bytes as a receiver
    // decodes it (a clone has no spare capacity, so every added attribute would move the
    // whole list; prost's decode leaves the room a real pipeline has).
    let bytes = prost::Message::encode_to_vec(&batch);
    let decoded = || {
        <otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest as prost::Message>::decode(
            bytes.as_slice(),
        )
        .expect("decodes")
    };
    g.bench_function("transform_5_statements/1000_spans", |b| {
        b.iter_batched_ref(
            decoded,
            |data| statements.apply(data),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("transform_real_configs_5/1000_spans", |b| {
        b.iter_batched_ref(
            decoded,
            |data| real_configs.apply(data),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("gateway_redaction_decoded/1000_spans", |b| {
        b.iter_batched_ref(decoded, |data| masking.apply(data), BatchSize::LargeInput)
    });
    g.bench_function("gateway_redaction/1000_spans", |b| {
        b.iter_batched_ref(
            || batch.clone(),
            |data| masking.apply(data),
            BatchSize::LargeInput,
        )
    });
    // Issue 32: the same redaction on the request's bytes, as the processor runs it on a
    // batch that reached it undecoded (the bytes are borrowed, the new request is made
    // inside the timing).
    assert!(masking.changes_traces_in_place());
    g.bench_function("gateway_redaction_decode_encode/1000_spans", |b| {
        b.iter(|| {
            let mut data = decoded();
            masking.apply(&mut data);
            prost::Message::encode_to_vec(&data)
        })
    });
    g.bench_function("gateway_redaction_bytes/1000_spans", |b| {
        b.iter(|| masking.apply_encoded(&bytes).expect("in place"))
    });
    // The two above answer most values from the memos, as real traffic lets them for
    // its repeating values, but the bench repeats even its unique ones (URL ids) batch
    // after batch. Here each batch is one of 64 with their own URL ids, tenants and
    // cart sizes, so those are judged afresh, as in real traffic.
    let fresh: Vec<Vec<u8>> = (0..64)
        .map(|seed| {
            prost::Message::encode_to_vec(&support::spans_with_20_attributes_seeded(
                1000,
                100 + seed,
            ))
        })
        .collect();
    let mut turn = 0;
    g.bench_function("gateway_redaction_bytes_fresh_values/1000_spans", |b| {
        b.iter(|| {
            turn = (turn + 1) % fresh.len();
            masking.apply_encoded(&fresh[turn]).expect("in place")
        })
    });
    let mut turn = 0;
    g.bench_function("gateway_redaction_decoded_fresh_values/1000_spans", |b| {
        b.iter_batched_ref(
            || {
                turn = (turn + 1) % fresh.len();
                <otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest as prost::Message>::decode(
                    fresh[turn].as_slice(),
                )
                .expect("decodes")
            },
            |data| masking.apply(data),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("gateway_actions_bytes/1000_spans", |b| {
        b.iter(|| actions.apply_encoded(&bytes).expect("in place"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The attributes processor and redaction with the gateway's config from
//! `docs/examples/gateway.yaml` on spans with 20 attributes, on one core.
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
    g.bench_function("gateway_redaction/1000_spans", |b| {
        b.iter_batched_ref(
            || batch.clone(),
            |data| masking.apply(data),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The filter processor with the agent's health-check config from `docs/examples/agent.yaml`
//! (four conditions, one with a regex) on spans with 20 attributes, on one core.
//!
//! `cargo bench --bench filter`

mod support;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use otel_pipeline::processors::config::processor_config;
use otel_pipeline::processors::filter::FilterConfig;

fn bench(c: &mut Criterion) {
    let config: FilterConfig =
        processor_config(include_str!("../docs/examples/agent.yaml"), "filter/health")
            .expect("config");
    let filter = config.compile().expect("compiles");
    let batch = support::spans_with_20_attributes(1000);
    let mut g = c.benchmark_group("filter");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("agent_health_check/1000_spans", |b| {
        b.iter_batched_ref(
            || batch.clone(),
            |data| filter.apply(data).expect("no evaluation errors"),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

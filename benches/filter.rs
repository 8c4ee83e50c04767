//! The filter processor with the agent's health-check config from `docs/examples/agent.yaml`
//! (four conditions, one with a regex) on spans with 20 attributes, on one core:
//! - `agent_health_check/1000_spans`: on the decoded request (the evaluation alone);
//! - `agent_health_check/decode_filter_encode/1000_spans`: a request as received, decoded,
//!   filtered and encoded again to send (what a batch still in its bytes cost before the
//!   filter read bytes);
//! - `agent_health_check/bytes/1000_spans`: the same request filtered in its bytes.
//!
//! `cargo bench --bench filter`

mod support;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use otel_pipeline::processors::config::processor_config;
use otel_pipeline::processors::filter::FilterConfig;
use otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

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
    let bytes = batch.encode_to_vec();
    g.bench_function("agent_health_check/decode_filter_encode/1000_spans", |b| {
        b.iter(|| {
            let mut data = ExportTraceServiceRequest::decode(&bytes[..]).expect("decodes");
            filter.apply(&mut data).expect("no evaluation errors");
            data.encode_to_vec()
        })
    });
    g.bench_function("agent_health_check/bytes/1000_spans", |b| {
        b.iter(|| {
            filter
                .apply_encoded(&bytes)
                .expect("the agent's conditions read spans in place")
                .expect("no evaluation errors")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

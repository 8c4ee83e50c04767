//! Pass-through (ADR 005) against decoding, side by side in one run, on the load the
//! Rotel harness sends (requests of 5 traces of 20 spans, 10 attributes each), spans per
//! second on one core:
//! - `receive`: what a receiver pays per request: prost's decode (before) against the
//!   schema check that keeps the bytes (now);
//! - `relay`: receive and send on: decode + encode (before) against the check (now; the
//!   exporter sends the bytes as they came);
//! - `join_20`: a batch joining 20 requests: merging decoded requests against appending
//!   bytes (then cutting 1 000 spans off the front, as `send_batch_max_size` does);
//! - `route_3`: the trace router splitting a request over three endpoints: the decoded
//!   split against the byte split;
//! - `tail_prepare`: the tail sampler filing a request's spans for its shards: from
//!   decoded spans (encoding each) against from the request's bytes.
//!
//! `cargo bench --bench passthrough`

use std::hint::black_box;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput};
use otel_pipeline::exporters::loadbalancing::{Rendezvous, key_hash, split_by_trace_id};
use otel_pipeline::processors::tail_sampling::internals::Engine;
use otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline::{Batch, Signal, Traces, wire};
use prost::Message;

#[path = "support/tail.rs"]
mod common;
use common::{config, telemetry, traces};

fn bench(c: &mut Criterion) {
    let request = traces(5, 1);
    let bytes = Bytes::from(request.encode_to_vec());
    let spans = Traces::item_count(&request) as u64;

    let mut g = c.benchmark_group("passthrough");
    g.throughput(Throughput::Elements(spans));
    g.bench_function("receive/decode", |b| {
        b.iter(|| {
            ExportTraceServiceRequest::decode(black_box(&bytes[..])).expect("bench input is valid")
        })
    });
    g.bench_function("receive/check", |b| {
        b.iter(|| {
            Batch::<Traces>::from_encoded(black_box(bytes.clone())).expect("bench input is valid")
        })
    });
    g.bench_function("relay/decode_encode", |b| {
        b.iter(|| {
            let req = ExportTraceServiceRequest::decode(black_box(&bytes[..]))
                .expect("bench input is valid");
            Bytes::from(req.encode_to_vec())
        })
    });
    g.bench_function("relay/check", |b| {
        b.iter(|| {
            let batch = Batch::<Traces>::from_encoded(black_box(bytes.clone()))
                .expect("bench input is valid");
            batch.to_bytes()
        })
    });

    let set = Rendezvous::new(["10.0.0.1:4317", "10.0.0.2:4317", "10.0.0.3:4317"]);
    g.bench_function("route_3/decoded", |b| {
        b.iter_batched(
            || request.clone(),
            |req| split_by_trace_id(req, &set),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("route_3/bytes", |b| {
        b.iter(|| wire::split_traces(black_box(&bytes), 3, |id, _| set.owner(key_hash(id))))
    });

    let engine = Engine::new(config(1), telemetry()).expect("bench input is valid");
    g.bench_function("tail_prepare/decoded", |b| {
        b.iter_batched(
            || Batch::<Traces>::new(request.clone()),
            |batch| engine.prepare(batch),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("tail_prepare/bytes", |b| {
        b.iter(|| {
            engine.prepare(
                Batch::from_encoded(black_box(bytes.clone())).expect("bench input is valid"),
            )
        })
    });

    g.throughput(Throughput::Elements(spans * 20));
    let many: Vec<ExportTraceServiceRequest> = (0..20).map(|s| traces(5, s)).collect();
    let many_bytes: Vec<Bytes> = many.iter().map(|r| r.encode_to_vec().into()).collect();
    g.bench_function("join_20/decoded", |b| {
        b.iter_batched(
            || many.clone(),
            |parts| {
                let mut joined = Batch::<Traces>::new(Default::default());
                for p in parts {
                    joined.append(Batch::new(p));
                }
                joined.split_front(1000)
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("join_20/bytes", |b| {
        b.iter(|| {
            let mut joined = Batch::<Traces>::new(Default::default());
            for p in &many_bytes {
                joined.append(Batch::from_encoded(p.clone()).expect("bench input is valid"));
            }
            joined.split_front(1000)
        })
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    bench(&mut c);
    c.final_summary();
}

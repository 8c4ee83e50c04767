//! Bytes of heap per span buffered by the tail sampler, measured with a counting
//! allocator, against the spans' OTLP-encoded size, with spans packed (the default) and
//! not, on the tail benches' spans (10 attributes with values drawn from 1 000) and on the
//! processor benches' HTTP/DB spans (20 attributes as instrumentation writes them: some
//! constant, some per request). Prints four lines; not a timing.
//!
//! `cargo bench --bench tail_sampling_memory`

use std::alloc::System;
use std::hint::black_box;

use otel_pipeline::processors::tail_sampling::internals::Engine;
use otel_pipeline::{Batch, Signal, Traces};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[path = "support/tail.rs"]
mod common;
mod support;
use common::{config, telemetry, traces};
use otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn memory_report(name: &str, pack_spans: bool, make: impl Fn() -> ExportTraceServiceRequest) {
    let reference = make();
    let spans = Traces::item_count(&reference);
    let encoded: usize = reference.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(prost::Message::encoded_len)
        .sum();
    drop(reference);
    let mut c = config(1);
    c.pack_spans = pack_spans;
    let mut core = Engine::new(c, telemetry()).expect("core");
    let now = tokio::time::Instant::now();
    // Everything allocated from here and still held at the end is the buffer: the request
    // is built inside the region and its spans moved into the sampler, so what the request
    // no longer needs is freed again and nets out.
    let region = Region::new(GLOBAL);
    let input = core.prepare(Batch::new(make()));
    core.ingest(&input, now);
    drop(input);
    let stats = region.change();
    // stats_alloc already folds reallocations into allocated/deallocated.
    let held = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64;
    println!(
        "tail_sampling memory, {name} (pack_spans: {pack_spans}): {:.0} bytes of heap per buffered span (measured), {:.0} bytes per span OTLP-encoded: {:.2}x",
        held as f64 / spans as f64,
        encoded as f64 / spans as f64,
        held as f64 / encoded as f64,
    );
    black_box(&core);
}

fn main() {
    for pack in [true, false] {
        memory_report("tail bench spans", pack, || traces(5000, 1));
    }
    for pack in [true, false] {
        memory_report("HTTP/DB spans", pack, || {
            support::spans_with_20_attributes(100_000)
        });
    }
}

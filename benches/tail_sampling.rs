//! The tail sampler with the seed policies (errors, > 2 s, `sampling.priority`, 5 % of the
//! rest) on realistic traces (20 spans, 10 attributes each):
//! - `tail_sampling/core`: ingest + decision on one core (one shard's engine);
//! - `tail_sampling/pipeline_shards_{1,2}`: the processor end to end with one and two
//!   shards, to see how it scales with cores;
//! - `tail_sampling/floor`: freeing the same spans, which any stage that drops decoded
//!   spans pays;
//! - `tail_sampling/core_threads_{1,2}`: shard engines on one and two threads;
//! - `tail_sampling/machine_ceiling_threads_{1,2}`: pure arithmetic on one and two threads,
//!   the most any work can gain from the second core of the machine the bench runs on.
//!
//! Memory per buffered span is measured by `benches/tail_sampling_memory.rs` (a counting
//! allocator would slow these timings down).
//!
//! `cargo bench --bench tail_sampling`

use std::hint::black_box;

// Decoded spans are allocated by receiver tasks and freed by sampler shards on other
// threads, and freeing a dropped span's ~25 small allocations is most of the work; the
// system allocator is slow at both (see docs/benchmarks.md for the same bench on it).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use otel_pipeline::processors::tail_sampling::{TailSampler, shard_batch};
use otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline::testing::InMemoryReceiver;
use otel_pipeline::{Batch, Pipeline, Signal, Traces};

#[path = "support/tail.rs"]
mod common;
use common::{config, telemetry, traces};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("tail_sampling");
    g.sample_size(20);
    let batch = traces(500, 2);
    let spans = Traces::item_count(&batch) as u64;
    g.throughput(Throughput::Elements(spans));
    // The floor under any sampler that owns decoded spans: freeing them.
    g.bench_function("floor/drop_10k_spans", |b| {
        b.iter_batched(|| batch.clone(), drop, BatchSize::LargeInput)
    });
    g.bench_function("core/ingest_and_decide_10k_spans", |b| {
        let mut core = TailSampler::core(config(1), telemetry()).expect("core");
        // New trace ids every iteration: a repeated id would meet its cached decision and
        // take the (cheaper) late-span path.
        let mut seed = 1000;
        b.iter_batched(
            || {
                seed += 1;
                traces(500, seed)
            },
            |req| {
                let now = tokio::time::Instant::now();
                core.ingest(shard_batch(Batch::new(req), 1).remove(0), now);
                core.decide_all(now, false);
                black_box(core.take_output())
            },
            BatchSize::LargeInput,
        )
    });

    // Shard engines on 1 and 2 threads over the same 40k spans: how the sharded design
    // scales with cores when nothing else competes for them.
    let work: Vec<ExportTraceServiceRequest> = (0..4).map(|i| traces(500, 300 + i)).collect();
    let work_spans: u64 = work.iter().map(|r| Traces::item_count(r) as u64).sum();
    g.throughput(Throughput::Elements(work_spans));
    for threads in [1usize, 2] {
        g.bench_function(format!("core_threads_{threads}/40k_spans"), |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    // Shard outside the timing, as the receivers' tasks would.
                    let mut parts: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
                    for req in work.clone() {
                        for (i, part) in shard_batch(Batch::new(req), threads)
                            .into_iter()
                            .enumerate()
                        {
                            parts[i].push(part);
                        }
                    }
                    let start = Instant::now();
                    std::thread::scope(|scope| {
                        for part in parts {
                            scope.spawn(move || {
                                let mut core =
                                    TailSampler::core(config(1), telemetry()).expect("core");
                                let now = tokio::time::Instant::now();
                                for spans in part {
                                    core.ingest(spans, now);
                                }
                                core.decide_all(now, false);
                                black_box(core.take_output());
                            });
                        }
                    });
                    elapsed += start.elapsed();
                }
                elapsed
            })
        });
    }

    // The machine's own ceiling, measured the same way: the same fixed amount of pure
    // arithmetic (no allocation, no shared memory) split over 1 and 2 threads. On a VM
    // whose two vCPUs are not two whole cores, this is well under 2x, and the sampler's
    // scaling should be read against it.
    g.throughput(Throughput::Elements(work_spans));
    for threads in [1usize, 2] {
        g.bench_function(format!("machine_ceiling_threads_{threads}"), |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    std::thread::scope(|scope| {
                        for t in 0..threads {
                            scope.spawn(move || {
                                let mut x = black_box(t as u64 + 1);
                                for _ in 0..40_000_000 / threads {
                                    x ^= x << 13;
                                    x ^= x >> 7;
                                    x ^= x << 17;
                                }
                                black_box(x)
                            });
                        }
                    });
                    elapsed += start.elapsed();
                }
                elapsed
            })
        });
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let requests: Vec<ExportTraceServiceRequest> = (0..20).map(|i| traces(250, 100 + i)).collect();
    let total: u64 = requests.iter().map(|r| Traces::item_count(r) as u64).sum();
    g.throughput(Throughput::Elements(total));
    for shards in [1, 2] {
        g.bench_function(format!("pipeline_shards_{shards}/100k_spans"), |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let reqs = requests.clone();
                    elapsed += runtime.block_on(async {
                        let (receiver, sender) = InMemoryReceiver::new();
                        let (exporter, _out) = otel_pipeline::testing::InMemoryExporter::new();
                        let running = Pipeline::traces()
                            .receiver(receiver)
                            .processor(TailSampler::new(config(shards)))
                            .exporter(exporter)
                            .build()
                            .expect("builds")
                            .start()
                            .await
                            .expect("starts");
                        let head = Instant::now();
                        // Two producers, as two receiver connections would be.
                        let (a, b): (Vec<_>, Vec<_>) =
                            reqs.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
                        let s2 = sender.clone();
                        let t1 = tokio::spawn(async move {
                            for (_, r) in a {
                                sender.send(r).await.expect("accepted");
                            }
                        });
                        let t2 = tokio::spawn(async move {
                            for (_, r) in b {
                                s2.send(r).await.expect("accepted");
                            }
                        });
                        let _ = t1.await;
                        let _ = t2.await;
                        // Shutdown decides everything buffered.
                        running
                            .shutdown(Duration::from_secs(60))
                            .await
                            .expect("clean");
                        head.elapsed()
                    });
                }
                elapsed
            })
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}

//! The tail sampler with the seed policies (errors, > 2 s, `sampling.priority`, 5 % of the
//! rest) on realistic traces (20 spans, 10 attributes each):
//! - `tail_sampling/core`: ingest + decision on one core (one shard's engine);
//! - `tail_sampling/pipeline_cores_{1,2}`: the processor end to end on one and two
//!   runtime threads, with a copy of each request standing in for a receiver's decoding,
//!   to see how receiving and sampling scale with cores;
//! - `tail_sampling/floor`: freeing the same spans, which any stage that drops decoded
//!   spans pays;
//! - `tail_sampling/core_threads_{1,2}`: shard engines on one and two threads, input built
//!   up front (memory-bound);
//! - `tail_sampling/core_threads_hot_{1,2}`: the same with 500-span requests each handed
//!   over right after it is made, as a receiver does (cache-warm);
//! - `tail_sampling/machine_ceiling_{alu,cache,memory}_threads_{1,2}`: arithmetic, in-cache
//!   and from-memory array work on one and two threads: what the machine the bench runs on
//!   gives a second core, for compute-bound and memory-bound work.
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
use otel_pipeline::DirectReceiver;
use otel_pipeline::processors::tail_sampling::TailSampler;
use otel_pipeline::processors::tail_sampling::internals::Engine;
use otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline::{Batch, Pipeline, Signal, Traces};

#[path = "support/tail.rs"]
mod common;
mod support;
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
    // The engine with spans packed (the default) and not, on the tail benches' spans
    // and on the processor benches' HTTP/DB spans (10-span traces, 20 attributes as
    // instrumentation writes them). New trace ids every iteration: a repeated id would
    // meet its cached decision and take the (cheaper) late-span path.
    let http = support::spans_with_20_attributes(10_000);
    for pack in [true, false] {
        let unpacked = if pack { "" } else { "_unpacked" };
        let mut seed = 1000;
        engine(&mut g, &format!("core{unpacked}"), pack, || {
            seed += 1;
            traces(500, seed)
        });
        let mut seed = 0u16;
        engine(&mut g, &format!("core_http{unpacked}"), pack, || {
            seed = seed.wrapping_add(1);
            let mut req = http.clone();
            for span in &mut req.resource_spans[0].scope_spans[0].spans {
                let [hi, lo] = seed.to_be_bytes();
                span.trace_id[0] ^= hi;
                span.trace_id[1] ^= lo;
            }
            req
        });
    }

    // Shard engines on 1 and 2 threads over the same 40k spans: how the sharded design
    // scales with cores when nothing else competes for them. Each thread builds its share
    // of the requests outside the timing, as a receiver's task decodes them, then prepares
    // (encodes, frees the decoded spans), ingests and decides them.
    let work: Vec<ExportTraceServiceRequest> = (0..4).map(|i| traces(500, 300 + i)).collect();
    let work_spans: u64 = work.iter().map(|r| Traces::item_count(r) as u64).sum();
    g.throughput(Throughput::Elements(work_spans));
    for threads in [1usize, 2] {
        g.bench_function(format!("core_threads_{threads}/40k_spans"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        slowest_of(threads, |t, ready| {
                            let mine: Vec<_> =
                                work.iter().skip(t).step_by(threads).cloned().collect();
                            let mut core = Engine::new(config(1), telemetry()).expect("core");
                            ready.wait();
                            let start = Instant::now();
                            let now = tokio::time::Instant::now();
                            for req in mine {
                                let part = core.prepare(Batch::new(req));
                                core.ingest(&part, now);
                            }
                            core.decide_all(now);
                            black_box(core.take_output());
                            start.elapsed()
                        })
                    })
                    .sum()
            })
        });
    }

    // The same 40k spans in requests of 500 (an SDK's default export batch), each copied
    // just before it is handed over, as a receiver decodes a request and passes it on while
    // it is still in the cache. Only the sampler's part is timed (prepare, ingest, decide).
    let small: Vec<ExportTraceServiceRequest> = (0..80).map(|i| traces(25, 500 + i)).collect();
    for threads in [1usize, 2] {
        g.bench_function(format!("core_threads_hot_{threads}/40k_spans"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        slowest_of(threads, |t, ready| {
                            let mut core = Engine::new(config(1), telemetry()).expect("core");
                            let now = tokio::time::Instant::now();
                            let mut took = Duration::ZERO;
                            ready.wait();
                            for req in small.iter().skip(t).step_by(threads) {
                                let req = req.clone();
                                let start = Instant::now();
                                let part = core.prepare(Batch::new(req));
                                core.ingest(&part, now);
                                took += start.elapsed();
                            }
                            let start = Instant::now();
                            core.decide_all(now);
                            black_box(core.take_output());
                            took + start.elapsed()
                        })
                    })
                    .sum()
            })
        });
    }

    // The machine's own ceilings, measured the same way: a fixed amount of work split over
    // 1 and 2 threads, each on its own data. Pure register arithmetic shows what the cores
    // give; adding one array into another, 256 KiB each per thread (in the core's cache)
    // and 64 MiB each (from memory), shows what the caches and the memory bus give. The
    // sampler touches a lot of memory per span, so read its scaling against these.
    g.throughput(Throughput::Elements(work_spans));
    for threads in [1usize, 2] {
        g.bench_function(format!("machine_ceiling_alu_threads_{threads}"), |b| {
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
    for (name, bytes, passes) in [
        ("cache", 256usize << 10, 4096usize),
        ("memory", 64 << 20, 8),
    ] {
        let n = bytes / 8;
        let mut arrays: Vec<(Vec<u64>, Vec<u64>)> = (0..2)
            .map(|_| ((0..n as u64).collect(), (0..n as u64).collect()))
            .collect();
        for threads in [1usize, 2] {
            g.bench_function(format!("machine_ceiling_{name}_threads_{threads}"), |b| {
                b.iter_custom(|iters| {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        std::thread::scope(|scope| {
                            for (a, b) in arrays.iter_mut().take(threads) {
                                scope.spawn(move || {
                                    for _ in 0..passes / threads {
                                        for (x, y) in a.iter_mut().zip(b.iter()) {
                                            *x = x.wrapping_add(*y);
                                        }
                                        black_box(&a);
                                    }
                                });
                            }
                        });
                        elapsed += start.elapsed();
                    }
                    elapsed
                })
            });
        }
    }

    // The processor end to end on a runtime with one and with two worker threads (and as
    // many shards): two producer tasks, as two receiver connections, copy each 500-span
    // request (standing in for a receiver's decoding; timed) and send it; shutdown decides
    // everything buffered. This is "two cores against one" for receiving and sampling.
    let requests: std::sync::Arc<Vec<ExportTraceServiceRequest>> =
        std::sync::Arc::new((0..200).map(|i| traces(25, 1000 + i)).collect());
    let total: u64 = requests.iter().map(|r| Traces::item_count(r) as u64).sum();
    g.throughput(Throughput::Elements(total));
    for cores in [1usize, 2] {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores)
            .enable_all()
            .build()
            .expect("runtime");
        g.bench_function(format!("pipeline_cores_{cores}/100k_spans"), |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    elapsed += runtime.block_on(async {
                        let (receiver, sender) = DirectReceiver::new();
                        let (exporter, _out) = otel_pipeline::testing::InMemoryExporter::new();
                        let running = Pipeline::traces()
                            .receiver(receiver)
                            .processor(TailSampler::new(config(cores)))
                            .exporter(exporter)
                            .build()
                            .expect("builds")
                            .start()
                            .await
                            .expect("starts");
                        let ready = std::sync::Arc::new(tokio::sync::Barrier::new(3));
                        let producers: Vec<_> = (0..2)
                            .map(|p| {
                                let (sender, ready) = (sender.clone(), ready.clone());
                                let requests = std::sync::Arc::clone(&requests);
                                tokio::spawn(async move {
                                    ready.wait().await;
                                    for r in requests.iter().skip(p).step_by(2) {
                                        sender.send(r.clone()).await.expect("accepted");
                                    }
                                })
                            })
                            .collect();
                        ready.wait().await;
                        let head = Instant::now();
                        for p in producers {
                            p.await.expect("producer");
                        }
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

/// Run `work(thread, ready)` on `threads` threads; each waits on `ready` once its setup is
/// done and reports its own time. Returns the slowest thread's (the work is done when
/// every thread is).
/// `<name>/ingest_and_decide_10k_spans`: one engine prepares, ingests and decides what
/// `make` builds (outside the timing), and hands out what it keeps.
fn engine(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    pack_spans: bool,
    mut make: impl FnMut() -> ExportTraceServiceRequest,
) {
    g.bench_function(format!("{name}/ingest_and_decide_10k_spans"), |b| {
        let mut c = config(1);
        c.pack_spans = pack_spans;
        let mut core = Engine::new(c, telemetry()).expect("core");
        b.iter_batched(
            &mut make,
            |req| {
                let now = tokio::time::Instant::now();
                let part = core.prepare(Batch::new(req));
                core.ingest(&part, now);
                core.decide_all(now);
                black_box(core.take_output())
            },
            BatchSize::LargeInput,
        )
    });
}

fn slowest_of(
    threads: usize,
    work: impl Fn(usize, &std::sync::Barrier) -> Duration + Sync,
) -> Duration {
    let ready = std::sync::Barrier::new(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (work, ready) = (&work, &ready);
                scope.spawn(move || work(t, ready))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("joins"))
            .max()
            .unwrap_or_default()
    })
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}

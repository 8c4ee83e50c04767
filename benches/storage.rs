//! What durability costs (issue 31), side by side in one run:
//! - `storage/gateway/{memory,journal}/100k_spans`: requests as the receiver hands them on
//!   -> the tail sampler (the seed policies, one shard) -> nop; with `journal`, the
//!   sampler journals every request (fsync every second) and its decisions. CPU time of
//!   the whole process (every thread's), as the connectors bench: the goal is the second
//!   at most 1.3x the first.
//! - `storage/queue/{memory,persistent}/100k_spans`: the OTLP exporter's sending queue in
//!   front of a loopback gRPC sink, in memory and on disk (fsync every second, and
//!   `every_write`); wall time, so the throughput is spans per second through the queue
//!   (the goal: at least 200 k spans/s on disk).
//! - `storage/replay/1GiB`: opening a log of 1 GiB of 160 KiB requests and reading every
//!   record back, as a restart does (the goal: under 10 s).
//!
//! `cargo bench --bench storage`

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use otel_pipeline::exporters::NopExporter;
use otel_pipeline::exporters::otlp::{
    OtlpExporter, OtlpExporterConfig, Protocol, QueueStorage, SendingQueueConfig,
};
use otel_pipeline::processors::tail_sampling::TailSampler;
use otel_pipeline::receivers::{OtlpConfig, OtlpReceiver};
use otel_pipeline::storage::{FileStorageConfig, Fsync, LogOptions, SegmentLog, Store};
use otel_pipeline::{Batch, DirectReceiver, Pipeline, Traces};
use prost::Message;

#[path = "support/tail.rs"]
#[allow(dead_code)]
mod common;
use common::{config, cpu_time, traces};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("otel-bench-storage-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn storage(dir: &std::path::Path, fsync: Fsync) -> FileStorageConfig {
    FileStorageConfig {
        directory: dir.to_path_buf(),
        create_directory: true,
        fsync,
        max_bytes: 4 << 30,
        ..FileStorageConfig::default()
    }
}

async fn gateway_once(requests: &[bytes::Bytes], journal: bool) -> Duration {
    let dir = scratch("gateway");
    let mut sampler = TailSampler::new(config(1));
    if journal {
        sampler = sampler.with_storage(
            storage(&dir, Fsync::Interval(Duration::from_secs(1))),
            "processor_tail_sampling",
        );
    }
    let (receiver, sender) = DirectReceiver::<Traces>::new();
    let running = Pipeline::traces()
        .receiver(receiver)
        .processor(sampler)
        .exporter(NopExporter::new())
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");
    let start = cpu_time();
    for r in requests {
        sender
            .send_batch(Batch::from_encoded(r.clone()).expect("valid"))
            .await
            .expect("accepted");
    }
    running
        .shutdown(Duration::from_secs(60))
        .await
        .expect("decides");
    let elapsed = cpu_time().saturating_sub(start);
    let _ = std::fs::remove_dir_all(&dir);
    elapsed
}

async fn queue_once(
    requests: &[bytes::Bytes],
    sink: std::net::SocketAddr,
    fsync: Option<Fsync>,
) -> Duration {
    let dir = scratch("queue");
    let queue = SendingQueueConfig {
        storage: fsync.map(|f| QueueStorage {
            storage: storage(&dir, f),
            owner: "exporter_otlp_traces".into(),
        }),
        ..SendingQueueConfig::default()
    };
    let (receiver, sender) = DirectReceiver::<Traces>::new();
    let running = Pipeline::traces()
        .receiver(receiver)
        .exporter(OtlpExporter::<Traces>::new(OtlpExporterConfig {
            endpoint: format!("http://{sink}"),
            protocol: Protocol::Grpc,
            queue,
            ..OtlpExporterConfig::default()
        }))
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");
    let start = Instant::now();
    for r in requests {
        sender
            .send_batch(Batch::from_encoded(r.clone()).expect("valid"))
            .await
            .expect("accepted");
    }
    running
        .shutdown(Duration::from_secs(60))
        .await
        .expect("drains");
    let elapsed = start.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    elapsed
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // 100 000 spans: 200 requests of 25 traces of 20 spans.
    let requests: Vec<bytes::Bytes> = (0..200)
        .map(|i| bytes::Bytes::from(traces(25, i).encode_to_vec()))
        .collect();
    let mut g = c.benchmark_group("storage");
    g.sample_size(10);
    g.throughput(Throughput::Elements(100_000));
    for (name, journal) in [("memory", false), ("journal", true)] {
        g.bench_function(format!("gateway/{name}/100k_spans"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += rt.block_on(gateway_once(&requests, journal));
                }
                total
            })
        });
    }
    // A sink that takes everything and keeps nothing.
    let sink = rt.block_on(async {
        let otlp = OtlpReceiver::new(OtlpConfig::loopback());
        let running = Pipeline::traces()
            .receiver(otlp.traces())
            .exporter(NopExporter::new())
            .build()
            .expect("builds")
            .start()
            .await
            .expect("starts");
        (running, otlp.local_addrs().grpc.expect("grpc"))
    });
    for (name, fsync) in [
        ("memory", None),
        ("persistent", Some(Fsync::Interval(Duration::from_secs(1)))),
        ("persistent_every_write", Some(Fsync::EveryWrite)),
    ] {
        g.bench_function(format!("queue/{name}/100k_spans"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += rt.block_on(queue_once(&requests, sink.1, fsync));
                }
                total
            })
        });
    }
    g.finish();

    // Replay: 1 GiB of requests written once, then opened and read back.
    let dir = scratch("replay");
    std::fs::create_dir_all(&dir).expect("dir");
    let options = LogOptions {
        fsync: Fsync::Never,
        max_bytes: 2 << 30,
        ..LogOptions::default()
    };
    let record = vec![0x5au8; 160 << 10];
    {
        let log = SegmentLog::open(&dir, options.clone()).expect("log");
        let mut written = 0u64;
        while written < 1 << 30 {
            log.append(1, &[&record]).expect("append");
            written += record.len() as u64;
        }
    }
    let mut g = c.benchmark_group("storage");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(1 << 30));
    g.bench_function("replay/1GiB", |b| {
        b.iter(|| {
            let log = SegmentLog::open(&dir, options.clone()).expect("log");
            let mut bytes = 0usize;
            for (id, _) in log.recovered() {
                bytes += log.read(id).expect("reads back").payload.len();
            }
            assert!(bytes >= 1 << 30);
            log.close().expect("closes");
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
    rt.block_on(sink.0.shutdown(Duration::from_secs(5)))
        .expect("sink stops");
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
}

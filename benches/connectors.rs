//! Connectors on the gateway path, side by side in one run:
//! - `connectors/gateway/tail_sampling_only/100k_spans`: requests as the receiver hands
//!   them on (the bytes received) -> `forward` -> the tail sampler (the seed policies,
//!   one shard) -> nop; shutdown decides every trace;
//! - `connectors/gateway/spanmetrics_then_tail_sampling/100k_spans`: the same with
//!   `spanmetrics` (four dimensions) counting every span beside `forward`, its metrics
//!   into a nop metrics pipeline; the shape of `docs/examples/dashboards.yaml`;
//! - `connectors/gateway/dashboards/100k_spans`: `spanmetrics` and `servicegraph` beside
//!   `forward`, as `docs/examples/dashboards.yaml` has them;
//! - `connectors/{spanmetrics,servicegraph}/{bytes,decoded}/10k_spans`: each connector
//!   alone, on a request still in its bytes and on a decoded one. The `servicegraph`
//!   request pairs half of each trace's spans as clients with the other half as their
//!   servers, so every call completes an edge.
//!
//! The gateway pair reports the process's CPU time (every thread's, from
//! `/proc/self/task/*/schedstat`), not wall time: the goal (issue 29) is in CPU per span,
//! the second at most 1.15x the first, and CPU time is steadier than wall time on a shared
//! machine. Memory per series: `cargo bench --bench connectors_memory`.
//!
//! `cargo bench --bench connectors`

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput};
use otel_pipeline::boxed::BoxExporter;
use otel_pipeline::connector::{Connect, Connector, Downstream};
use otel_pipeline::exporters::NopExporter;
use otel_pipeline::processors::connectors::{
    Forward, ServiceGraph, ServiceGraphConfig, SpanMetrics, SpanMetricsConfig,
};
use otel_pipeline::processors::tail_sampling::TailSampler;
use otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline::{Batch, BoxConsumer, Children, ComponentId, Consumer, DirectReceiver};
use otel_pipeline::{Metrics, Pipeline, Signal, Telemetry, Traces};
use prost::Message;

#[path = "support/tail.rs"]
#[allow(dead_code)]
mod common;
use common::{config, cpu_time, traces};

/// Four dimensions as RED dashboards use them, of few values each. The benches' spans
/// carry none of them (10 `app.attr.*` attributes of 1 000 values each), so every span's
/// attributes are read through to the end and the series stay few:
/// `deployment.environment` takes its default, the others are left out.
const SPANMETRICS: &str = "\
dimensions:
  - name: http.route
  - name: http.request.method
  - name: deployment.environment
    default: prod
  - name: service.version
metrics_flush_interval: 1h
aggregation_cardinality_limit: 2000
";

fn spanmetrics() -> SpanMetrics {
    let c: SpanMetricsConfig =
        otel_pipeline::processors::from_yaml("spanmetrics", SPANMETRICS).expect("config");
    SpanMetrics::new(c).expect("valid")
}

fn servicegraph() -> ServiceGraph {
    let c: ServiceGraphConfig =
        otel_pipeline::processors::from_yaml("servicegraph", "metrics_flush_interval: 1h\n")
            .expect("config");
    ServiceGraph::new(c).expect("valid")
}

/// What runs beside `forward` in front of the tail sampler.
#[derive(Clone, Copy)]
enum Front {
    Nothing,
    SpanMetrics,
    Dashboards,
}

async fn gateway_once(requests: &[bytes::Bytes], front: Front) -> Duration {
    let sampled = Pipeline::traces()
        .named("traces/sampled")
        .processor(TailSampler::new(config(1)))
        .exporter(NopExporter::new())
        .build()
        .expect("builds");
    let sampled_head = BoxConsumer::new(sampled.consumer());
    let sampled = sampled.start().await.expect("starts");
    let metrics = Pipeline::metrics()
        .named("metrics")
        .exporter(NopExporter::new())
        .build()
        .expect("builds");
    let metrics_head = BoxConsumer::new(metrics.consumer());
    let metrics = metrics.start().await.expect("starts");
    let (receiver, sender) = DirectReceiver::<Traces>::new();
    let forward = Connect::new(
        Forward::new(),
        Downstream::single("traces/sampled", sampled_head),
    );
    // Exporters chosen at run time: the same boxed set for every variant.
    let mut exporters: Vec<BoxExporter<Traces>> = vec![Box::new(forward)];
    if !matches!(front, Front::Nothing) {
        exporters.push(Box::new(Connect::new(
            spanmetrics(),
            Downstream::single("metrics", metrics_head.clone()),
        )));
    }
    if matches!(front, Front::Dashboards) {
        exporters.push(Box::new(Connect::new(
            servicegraph(),
            Downstream::single("metrics", metrics_head),
        )));
    }
    let front = Pipeline::traces()
        .receiver(receiver)
        .exporters(exporters)
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
    front
        .shutdown(Duration::from_secs(60))
        .await
        .expect("drains");
    sampled
        .shutdown(Duration::from_secs(60))
        .await
        .expect("decides");
    let elapsed = cpu_time().saturating_sub(start);
    metrics
        .shutdown(Duration::from_secs(5))
        .await
        .expect("stops");
    elapsed
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("connectors");
    g.sample_size(10);
    let requests: Vec<bytes::Bytes> = (0..200u64)
        .map(|i| traces(25, i + 1).encode_to_vec().into())
        .collect();
    g.throughput(Throughput::Elements(100_000));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    for (name, with) in [
        ("gateway/tail_sampling_only/100k_spans", Front::Nothing),
        (
            "gateway/spanmetrics_then_tail_sampling/100k_spans",
            Front::SpanMetrics,
        ),
        ("gateway/dashboards/100k_spans", Front::Dashboards),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| runtime.block_on(gateway_once(&requests, with)))
                    .sum()
            })
        });
    }

    // The ratio the goal is about, robust to a drifting machine: the two paths run in
    // turns, and the median of the turns' ratios is printed.
    let mut ratios: Vec<f64> = (0..15)
        .map(|_| {
            let without = runtime.block_on(gateway_once(&requests, Front::Nothing));
            let with = runtime.block_on(gateway_once(&requests, Front::SpanMetrics));
            with.as_secs_f64() / without.as_secs_f64().max(1e-9)
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "connectors/gateway: CPU per span with spanmetrics / without, in 15 interleaved turns: median {:.2}x (min {:.2}x, max {:.2}x)",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );

    // Each connector alone.
    let request = traces(500, 7);
    g.throughput(Throughput::Elements(Traces::item_count(&request) as u64));
    alone(&mut g, &runtime, "spanmetrics", spanmetrics(), &request);
    // `servicegraph` on spans that pair up: in each trace of 20, spans 1-9 are clients of
    // the root and spans 10-18 the servers they called.
    let mut request = request;
    for chunk in request.resource_spans[0].scope_spans[0]
        .spans
        .chunks_mut(20)
    {
        for i in 10..19 {
            chunk[i].kind = 2; // SERVER
            chunk[i].parent_span_id = chunk[i - 9].span_id.clone();
        }
    }
    alone(&mut g, &runtime, "servicegraph", servicegraph(), &request);
    g.finish();
}

/// `{name}/bytes/10k_spans` and `{name}/decoded/10k_spans`: `connector` alone on
/// `request`, as received (still in its bytes) and decoded; its metrics into a nop
/// pipeline.
fn alone<C: Connector<Traces, Metrics>>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    connector: C,
    request: &ExportTraceServiceRequest,
) {
    let consumer = runtime.block_on(async {
        let children = Children::detached(Telemetry::new(), "traces", ComponentId::new("bench"));
        let metrics = Pipeline::metrics()
            .exporter(NopExporter::new())
            .build()
            .expect("builds");
        let head = BoxConsumer::<Metrics>::new(metrics.consumer());
        children
            .exporter::<Traces, _>(Connect::new(connector, Downstream::single("metrics", head)))
            .expect("builds")
    });
    let bytes: bytes::Bytes = request.encode_to_vec().into();
    let received = Batch::<Traces>::from_encoded(bytes).expect("valid");
    g.bench_function(format!("{name}/bytes/10k_spans"), |b| {
        b.iter_batched(
            // A clone of a received batch shares its bytes: no check, no copy.
            || received.clone(),
            |batch| runtime.block_on(consumer.consumer().consume(batch)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function(format!("{name}/decoded/10k_spans"), |b| {
        b.iter_batched(
            || Batch::<Traces>::new(request.clone()),
            |batch| runtime.block_on(consumer.consumer().consume(batch)),
            BatchSize::LargeInput,
        )
    });
}

criterion::criterion_group!(benches, bench);
criterion::criterion_main!(benches);

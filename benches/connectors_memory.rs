//! Bytes of heap per active `spanmetrics` series (calls, explicit duration histogram of
//! 16 buckets, four dimensions), and per `servicegraph` edge, measured with a counting
//! allocator as series are created by spans with distinct names. Prints lines; not a
//! timing.
//!
//! `cargo bench --bench connectors_memory`

use std::alloc::System;

use otel_pipeline::connector::{Connect, Downstream};
use otel_pipeline::exporters::NopExporter;
use otel_pipeline::processors::connectors::{
    ServiceGraph, ServiceGraphConfig, SpanMetrics, SpanMetricsConfig,
};
use otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline::proto::common::v1::{AnyValue, KeyValue, any_value::Value};
use otel_pipeline::proto::resource::v1::Resource;
use otel_pipeline::proto::trace::v1::{ResourceSpans, ScopeSpans, Span, span::SpanKind};
use otel_pipeline::{Batch, BoxConsumer, Children, ComponentId, Consumer, Metrics, Pipeline};
use otel_pipeline::{Telemetry, Traces};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// `n` server spans of service `svc`, each with its own name (so its own series), and
/// with `client` set a client span in `frontend` as each one's parent.
fn request(n: usize, first: usize, client: bool) -> ExportTraceServiceRequest {
    let span = |i: usize, kind: SpanKind, parent: u64, id: u64| Span {
        trace_id: (i as u128 + 1).to_be_bytes().to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: if parent == 0 {
            Vec::new()
        } else {
            parent.to_be_bytes().to_vec()
        },
        name: format!("GET /api/v1/items/{i}"),
        kind: kind as i32,
        start_time_unix_nano: 1,
        end_time_unix_nano: 1 + 12_000_000,
        attributes: vec![
            kv("http.route", &format!("/api/v1/items/{i}")),
            kv("app.attr.0", "value-1"),
        ],
        ..Default::default()
    };
    let rs = |service: &str, spans: Vec<Span>| ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", service), kv("host.name", "node-1")],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut out = vec![rs(
        "checkout",
        (first..first + n)
            .map(|i| {
                span(
                    i,
                    SpanKind::Server,
                    if client { 2 * i as u64 + 1 } else { 0 },
                    2 * i as u64 + 2,
                )
            })
            .collect(),
    )];
    if client {
        out.push(rs(
            &format!("frontend-{}", first),
            (first..first + n)
                .map(|i| span(i, SpanKind::Client, 0, 2 * i as u64 + 1))
                .collect(),
        ));
    }
    ExportTraceServiceRequest {
        resource_spans: out,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let metrics = Pipeline::metrics()
            .exporter(NopExporter::new())
            .build()
            .expect("builds");
        let head = BoxConsumer::<Metrics>::new(metrics.consumer());
        let children = Children::detached(Telemetry::new(), "traces", ComponentId::new("bench"));
        let c: SpanMetricsConfig = otel_pipeline::processors::from_yaml(
            "spanmetrics",
            "dimensions: [{name: http.route}, {name: app.attr.0}, {name: host.name}, {name: deployment.environment, default: prod}]\naggregation_cardinality_limit: 1000000\n",
        )
        .expect("config");
        let spanmetrics = children
            .exporter::<Traces, _>(Connect::new(
                SpanMetrics::new(c).expect("valid"),
                Downstream::single("metrics", head.clone()),
            ))
            .expect("builds");
        // Warm up (the maps' first allocations), then measure 20 000 new series.
        let consumer = spanmetrics.consumer();
        consumer.consume(Batch::new(request(1000, 0, false))).await.expect("counted");
        let n = 20_000;
        let region = Region::new(GLOBAL);
        for chunk in 0..(n / 1000) {
            consumer
                .consume(Batch::new(request(1000, 1000 + chunk * 1000, false)))
                .await
                .expect("counted");
        }
        let stats = region.change();
        let held = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64;
        println!(
            "spanmetrics memory: {:.0} bytes of heap per active series (calls + 16-bucket histogram, 4 dimensions; {n} series)",
            held as f64 / n as f64
        );

        let sg: ServiceGraphConfig = otel_pipeline::processors::from_yaml(
            "servicegraph",
            "dimensions: [host.name]\nmax_edges: 1000000\nstore: {max_items: 1000000}\n",
        )
        .expect("config");
        let graph = children
            .exporter::<Traces, _>(Connect::new(
                ServiceGraph::new(sg).expect("valid"),
                Downstream::single("metrics", head),
            ))
            .expect("builds");
        let consumer = graph.consumer();
        consumer.consume(Batch::new(request(100, 0, true))).await.expect("counted");
        let edges = 2_000;
        let region = Region::new(GLOBAL);
        // Each request's client service is new: one edge per request of 10 pairs.
        for e in 0..edges {
            consumer
                .consume(Batch::new(request(10, 100 + e * 10, true)))
                .await
                .expect("counted");
        }
        let stats = region.change();
        let held = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64;
        println!(
            "servicegraph memory: {:.0} bytes of heap per edge (two 16-bucket histograms, 1 dimension; {edges} edges)",
            held as f64 / edges as f64
        );
    });
}

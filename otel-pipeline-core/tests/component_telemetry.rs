//! A processor written outside the workspace declares its own instruments; the core
//! publishes them through an `opentelemetry` meter and in Prometheus text without knowing
//! the processor. And a component builds children at run time with their own telemetry
//! and lifecycle.

use std::time::Duration;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use otel_pipeline_core::DirectReceiver;
use otel_pipeline_core::telemetry::{Counter, Gauge, Histogram, Instrument};
use otel_pipeline_core::testing::{InMemoryExporter, generate_traces};
use otel_pipeline_core::{
    Batch, BuildError, Children, ComponentContext, ComponentId, ConsumeError, Consumer, Pipeline,
    Processor, Telemetry, Traces,
};
use tokio::time::Instant;

const SEEN_BATCHES: Instrument = Instrument::counter(
    "acme_processor_seen_batches",
    "{batches}",
    "Batches the span counter has seen.",
);
const LAST_BATCH: Instrument = Instrument::gauge(
    "acme_processor_last_batch_spans",
    "{spans}",
    "Spans in the last batch.",
);
const BATCH_SIZE: Instrument = Instrument::histogram(
    "acme_processor_batch_spans",
    "{spans}",
    "Spans per batch.",
    &[5, 10, 50],
);

/// A user's processor: passes batches on and measures them with its own instruments.
#[derive(Debug)]
struct SpanCounter;

#[derive(Debug)]
struct SpanCounterConsumer<N> {
    next: N,
    seen: Counter,
    last: Gauge,
    sizes: Histogram,
}

impl<N: Consumer<Traces>> Consumer<Traces> for SpanCounterConsumer<N> {
    async fn consume(&self, batch: Batch<Traces>) -> Result<(), ConsumeError<Traces>> {
        let n = batch.item_count() as u64;
        self.seen.add(1);
        self.last.set(n as i64);
        self.sizes.record(n);
        self.next.consume(batch).await
    }
}

impl Processor<Traces> for SpanCounter {
    type Consumer<N: Consumer<Traces>> = SpanCounterConsumer<N>;

    fn id(&self) -> ComponentId {
        ComponentId::new("span_counter")
    }

    fn build<N: Consumer<Traces>>(
        self,
        next: N,
        ctx: &mut ComponentContext<'_>,
    ) -> Result<Self::Consumer<N>, BuildError> {
        let t = ctx.telemetry();
        Ok(SpanCounterConsumer {
            next,
            seen: t.counter(&SEEN_BATCHES, &[]),
            last: t.gauge(&LAST_BATCH, &[("stage", "ingress")]),
            sizes: t.histogram(&BATCH_SIZE, &[]),
        })
    }
}

#[tokio::test]
async fn a_third_party_processor_reports_its_own_instruments() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let telemetry = Telemetry::new();
    telemetry.register_with_meter(&provider.meter("test"));

    let (receiver, sender) = DirectReceiver::new();
    let (sink, exported) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .telemetry(telemetry.clone())
        .receiver(receiver)
        .processor(SpanCounter)
        .exporter(sink)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    sender.send(generate_traces(2, 2, 1)).await.unwrap(); // 4 spans
    sender.send(generate_traces(4, 5, 2)).await.unwrap(); // 20 spans
    running.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(exported.item_count(), 24);

    let text = telemetry.render_prometheus();
    for line in [
        "# HELP acme_processor_seen_batches_total Batches the span counter has seen.",
        "# TYPE acme_processor_seen_batches_total counter",
        "acme_processor_seen_batches_total{processor=\"span_counter\",pipeline=\"traces\"} 2",
        "# TYPE acme_processor_last_batch_spans gauge",
        "acme_processor_last_batch_spans{processor=\"span_counter\",pipeline=\"traces\",stage=\"ingress\"} 20",
        "# TYPE acme_processor_batch_spans histogram",
        "acme_processor_batch_spans_bucket{processor=\"span_counter\",pipeline=\"traces\",le=\"5\"} 1",
        "acme_processor_batch_spans_bucket{processor=\"span_counter\",pipeline=\"traces\",le=\"10\"} 1",
        "acme_processor_batch_spans_bucket{processor=\"span_counter\",pipeline=\"traces\",le=\"50\"} 2",
        "acme_processor_batch_spans_bucket{processor=\"span_counter\",pipeline=\"traces\",le=\"+Inf\"} 2",
        "acme_processor_batch_spans_sum{processor=\"span_counter\",pipeline=\"traces\"} 24",
        "acme_processor_batch_spans_count{processor=\"span_counter\",pipeline=\"traces\"} 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }

    provider.force_flush().unwrap();
    let metrics = exporter.get_finished_metrics().unwrap();
    let mut counter = None;
    let mut gauge = None;
    let mut histogram = None;
    for rm in &metrics {
        for sm in rm.scope_metrics() {
            for m in sm.metrics() {
                match (m.name(), m.data()) {
                    ("acme_processor_seen_batches", AggregatedMetrics::U64(MetricData::Sum(s))) => {
                        assert_eq!(m.unit(), "{batches}");
                        counter = s.data_points().map(|p| p.value()).max();
                    }
                    (
                        "acme_processor_last_batch_spans",
                        AggregatedMetrics::I64(MetricData::Gauge(g)),
                    ) => gauge = g.data_points().map(|p| p.value()).max(),
                    (
                        "acme_processor_batch_spans",
                        AggregatedMetrics::U64(MetricData::Histogram(h)),
                    ) => {
                        let p = h.data_points().next().unwrap();
                        histogram = Some((p.count(), p.sum()));
                    }
                    _ => {}
                }
            }
        }
    }
    assert_eq!(counter, Some(2));
    assert_eq!(gauge, Some(20));
    assert_eq!(histogram, Some((2, 24)));
}

#[tokio::test]
async fn children_built_at_run_time_have_their_own_counters_and_lifecycle() {
    let telemetry = Telemetry::new();
    let children = Children::detached(telemetry.clone(), "traces", ComponentId::new("router"));
    let (exporter, exported) = InMemoryExporter::new();
    let child = children
        .exporter::<Traces, _>(exporter.with_id(ComponentId::new("memory").with_name("a")))
        .unwrap();
    child.start().await.unwrap();
    child
        .consumer()
        .consume(generate_traces(3, 2, 9).into())
        .await
        .unwrap();
    child
        .shutdown(Instant::now() + Duration::from_secs(1))
        .await
        .unwrap();
    assert!(exported.is_shut_down());
    assert_eq!(child.telemetry().sent(), 6);

    // Built again under the same id, the child continues the same counters.
    let (again, _) = InMemoryExporter::new();
    let second = children
        .exporter::<Traces, _>(again.with_id(ComponentId::new("memory").with_name("a")))
        .unwrap();
    second.start().await.unwrap();
    second
        .consumer()
        .consume(generate_traces(1, 4, 10).into())
        .await
        .unwrap();
    assert_eq!(
        telemetry.sum(
            "otelcol_exporter_sent_spans",
            &[("exporter", "memory/a"), ("parent", "router")]
        ),
        10
    );
    let text = telemetry.render_prometheus();
    assert!(
        text.contains(
            "otelcol_exporter_sent_spans_total{exporter=\"memory/a\",pipeline=\"traces\",parent=\"router\"} 10"
        ),
        "{text}"
    );
    assert_eq!(
        telemetry
            .snapshot()
            .iter()
            .filter(|p| p.name == "otelcol_exporter_sent_spans")
            .count(),
        1
    );
}

/// Every counter a component keeps reaches the `opentelemetry` meter, the span events a
/// processor dropped and the attributes it redacted included.
#[test]
fn dropped_span_events_and_redacted_attributes_reach_the_meter() {
    use otel_pipeline_core::ComponentKind;
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let telemetry = Telemetry::new();
    telemetry.register_with_meter(&provider.meter("test"));
    let c = telemetry.component(
        ComponentKind::Processor,
        ComponentId::new("redaction"),
        "traces",
        "spans",
    );
    c.add_dropped_events(otel_pipeline_core::DropReason::FILTERED, 3);
    c.add_redacted_attributes(5);
    provider.force_flush().unwrap();
    let mut seen = std::collections::HashMap::new();
    for rm in &exporter.get_finished_metrics().unwrap() {
        for sm in rm.scope_metrics() {
            for m in sm.metrics() {
                if let AggregatedMetrics::U64(MetricData::Sum(s)) = m.data() {
                    let total: u64 = s.data_points().map(|p| p.value()).sum();
                    seen.insert(m.name().to_string(), total);
                }
            }
        }
    }
    assert_eq!(
        seen.get("otelcol_processor_dropped_span_events"),
        Some(&3),
        "{seen:?}"
    );
    assert_eq!(
        seen.get("otelcol_processor_redacted_attributes"),
        Some(&5),
        "{seen:?}"
    );
}

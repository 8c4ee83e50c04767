//! A pipeline driven through its public API, the way a user wires one: a receiver, two
//! processors, two exporters; back-pressure, shutdown and counters checked end to end.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use otel_pipeline_core::DirectReceiver;
use otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline_core::proto::common::v1::{AnyValue, KeyValue, any_value::Value};
use otel_pipeline_core::testing::{Exported, InMemoryExporter, eventually, generate_traces};
use otel_pipeline_core::{
    BoundedQueue, BoxError, BuildError, ComponentId, ComponentKind, ConsumeError, Consumer,
    HealthState, Pipeline, QueueConfig, Receiver, ReceiverContext, RunningReceiver, Telemetry,
    Traces, Transform, WhenFull,
};

/// Adds `stage.tagged=true` to every span; a stand-in for an enrichment processor.
fn tag(data: &mut ExportTraceServiceRequest) -> usize {
    for rs in &mut data.resource_spans {
        for ss in &mut rs.scope_spans {
            for span in &mut ss.spans {
                span.attributes.push(KeyValue {
                    key: "stage.tagged".into(),
                    value: Some(AnyValue {
                        value: Some(Value::BoolValue(true)),
                    }),
                    ..Default::default()
                });
            }
        }
    }
    0
}

fn span_ids(exported: &Exported<Traces>) -> Vec<Vec<u8>> {
    exported.spans().into_iter().map(|s| s.span_id).collect()
}

fn counter(
    t: &Telemetry,
    kind: ComponentKind,
    id: &str,
) -> Arc<otel_pipeline_core::ComponentTelemetry> {
    t.find(kind, id)
        .unwrap_or_else(|| panic!("no {kind:?} {id}"))
}

#[tokio::test(start_paused = true)]
async fn backpressure_reaches_the_receiver_and_shutdown_loses_nothing() {
    let telemetry = Telemetry::new();
    let (receiver, sender) = DirectReceiver::new();
    let (primary, primary_out) = InMemoryExporter::new();
    let (secondary, secondary_out) = InMemoryExporter::new();
    let queue = BoundedQueue::new(QueueConfig {
        capacity: 15,
        when_full: WhenFull::Refuse,
        ..Default::default()
    });

    let running = Pipeline::traces()
        .telemetry(telemetry.clone())
        .receiver(receiver)
        .processor(Transform::new("tag", tag))
        .processor(queue)
        .exporter(primary.with_id(ComponentId::new("memory").with_name("primary")))
        .exporter(secondary.with_id(ComponentId::new("memory").with_name("secondary")))
        .build()
        .expect("valid pipeline")
        .start()
        .await
        .expect("starts");
    assert_eq!(running.health().state(), HealthState::Ready);

    // Phase 1: everything flows.
    let mut accepted_ids: Vec<Vec<u8>> = Vec::new();
    let mut seed = 0;
    for _ in 0..4 {
        seed += 1;
        let batch = generate_traces(1, 5, seed);
        accepted_ids.extend(
            batch.resource_spans[0].scope_spans[0]
                .spans
                .iter()
                .map(|s| s.span_id.clone()),
        );
        sender.send(batch).await.expect("accepted");
        // Let the queue's worker deliver before the next send.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(eventually(Duration::from_secs(5), || secondary_out.item_count() == 20).await);
    assert_eq!(primary_out.item_count(), 20);
    assert!(
        primary_out
            .spans()
            .iter()
            .all(|s| s.attributes.iter().any(|a| a.key == "stage.tagged"))
    );

    // Phase 2: the secondary backend pushes back. The queue fills, then the receiver is
    // refused and gets its batch back intact.
    secondary_out.set_refusing(true);
    let mut refused = 0;
    for _ in 0..10 {
        seed += 1;
        let batch = generate_traces(1, 5, seed);
        let ids: Vec<Vec<u8>> = batch.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.span_id.clone())
            .collect();
        match sender.send(batch).await {
            Ok(()) => accepted_ids.extend(ids),
            Err(err) => {
                assert!(err.is_retryable(), "{err}");
                assert_eq!(err.items(), 5);
                let back = err.into_batch().expect("refusal hands the batch back");
                assert_eq!(back.data().resource_spans[0].scope_spans[0].spans.len(), 5);
                refused += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refused > 0, "a full queue must refuse");
    let receiver_t = counter(&telemetry, ComponentKind::Receiver, "memory");
    assert_eq!(receiver_t.refused(), 5 * refused);
    assert_eq!(receiver_t.accepted(), accepted_ids.len() as u64);
    assert!(counter(&telemetry, ComponentKind::Exporter, "memory/secondary").enqueue_failed() >= 5);

    // Phase 3: the backend recovers; shutdown drains the queue into both exporters.
    secondary_out.set_refusing(false);
    let health = running.health().clone();
    running
        .shutdown(Duration::from_secs(10))
        .await
        .expect("clean shutdown");
    assert_eq!(health.state(), HealthState::Stopped);
    assert!(primary_out.is_shut_down() && secondary_out.is_shut_down());

    // Nothing lost: each exporter has every accepted span. The secondary has each once;
    // the primary may hold copies from the fan-out's retries (documented behaviour).
    let expected: HashSet<_> = accepted_ids.iter().cloned().collect();
    let secondary_ids = span_ids(&secondary_out);
    assert_eq!(secondary_ids.len(), accepted_ids.len());
    assert_eq!(secondary_ids.into_iter().collect::<HashSet<_>>(), expected);
    assert_eq!(
        span_ids(&primary_out).into_iter().collect::<HashSet<_>>(),
        expected
    );

    // Every counter matches what was sent.
    let n = accepted_ids.len() as u64;
    let tag = counter(&telemetry, ComponentKind::Processor, "tag");
    let queue = counter(&telemetry, ComponentKind::Processor, "queue");
    assert_eq!(tag.accepted(), n);
    assert_eq!(tag.outgoing(), n);
    assert_eq!(tag.refused(), 5 * refused);
    assert_eq!(queue.accepted(), n);
    assert_eq!(queue.outgoing(), n);
    assert_eq!(queue.dropped_total(), 0);
    assert_eq!(queue.queue_size(), 0);
    let secondary_t = counter(&telemetry, ComponentKind::Exporter, "memory/secondary");
    let primary_t = counter(&telemetry, ComponentKind::Exporter, "memory/primary");
    assert_eq!(secondary_t.sent(), n);
    assert_eq!(primary_t.sent(), primary_out.item_count() as u64);
    assert_eq!(
        telemetry.sum("otelcol_receiver_accepted_spans", &[("receiver", "memory")]),
        n as i64
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_deadline_drops_are_counted_and_reported() {
    let (receiver, sender) = DirectReceiver::new();
    let (exporter, out) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .receiver(receiver)
        .processor(BoundedQueue::new(QueueConfig::default()))
        .exporter(exporter)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    out.set_refusing(true);
    for seed in 0..3 {
        sender.send(generate_traces(2, 5, seed)).await.unwrap();
    }
    let telemetry = running.telemetry().clone();
    let err = running
        .shutdown(Duration::from_secs(2))
        .await
        .expect_err("undeliverable data makes shutdown unclean");
    assert_eq!(err.failures.len(), 1, "{err}");
    assert_eq!(err.failures[0].0.to_string(), "queue");
    let queue = counter(&telemetry, ComponentKind::Processor, "queue");
    assert_eq!(queue.dropped("shutdown_deadline"), 30);
    assert_eq!(out.item_count(), 0);
    assert!(err.to_string().contains("dropped 30 items"), "{err}");
}

#[tokio::test]
async fn rejection_is_permanent_and_counted() {
    let (receiver, sender) = DirectReceiver::new();
    let (exporter, out) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .receiver(receiver)
        .exporter(exporter)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    out.set_rejecting(true);
    let err = sender.send(generate_traces(1, 4, 1)).await.unwrap_err();
    assert!(!err.is_retryable());
    assert!(matches!(err, ConsumeError::Rejected(ref r) if r.items == 4));
    let t = running.telemetry().clone();
    assert_eq!(counter(&t, ComponentKind::Receiver, "memory").rejected(), 4);
    assert_eq!(
        counter(&t, ComponentKind::Exporter, "memory").send_failed(),
        4
    );
    running.shutdown(Duration::from_secs(1)).await.unwrap();
    // After shutdown the receiver refuses.
    let err = sender.send(generate_traces(1, 1, 2)).await.unwrap_err();
    assert!(err.reason().contains("stopped"), "{err}");
}

#[tokio::test]
async fn several_receivers_feed_one_chain() {
    let (r1, s1) = DirectReceiver::new();
    let (r2, s2) = DirectReceiver::new();
    let (exporter, out) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .receiver(r1)
        .receiver(r2.with_id(ComponentId::new("memory").with_name("second")))
        .exporter(exporter)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    s1.send(generate_traces(1, 2, 1)).await.unwrap();
    s2.send(generate_traces(1, 3, 2)).await.unwrap();
    assert_eq!(out.item_count(), 5);
    let t = running.telemetry().clone();
    assert_eq!(
        counter(&t, ComponentKind::Receiver, "memory/second").accepted(),
        3
    );
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn duplicate_ids_and_bad_config_fail_the_build() {
    let (a, _) = InMemoryExporter::<Traces>::new();
    let (b, _) = InMemoryExporter::<Traces>::new();
    let err = Pipeline::traces()
        .exporter(a)
        .exporter(b)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::DuplicateId {
                kind: ComponentKind::Exporter,
                ..
            }
        ),
        "{err}"
    );

    let (e, _) = InMemoryExporter::<Traces>::new();
    let err = Pipeline::traces()
        .processor(BoundedQueue::new(QueueConfig {
            capacity: 0,
            ..Default::default()
        }))
        .exporter(e)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "queue: invalid `capacity`: must be at least 1"
    );
}

/// A receiver whose port is taken.
struct FailingReceiver;

impl Receiver<Traces> for FailingReceiver {
    fn id(&self) -> ComponentId {
        ComponentId::new("otlp")
    }

    async fn start<C: Consumer<Traces> + Clone>(
        self,
        _consumer: C,
        _ctx: ReceiverContext,
    ) -> Result<RunningReceiver, BoxError> {
        Err("address 0.0.0.0:4317 already in use".into())
    }
}

#[tokio::test]
async fn a_receiver_that_cannot_start_fails_start_and_stops_the_rest() {
    let (exporter, out) = InMemoryExporter::new();
    let err = Pipeline::traces()
        .receiver(FailingReceiver)
        .exporter(exporter)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.component.to_string(), "otlp");
    assert!(err.to_string().contains("already in use"));
    assert!(out.is_shut_down(), "started stages are shut down again");
}

/// A rejection of part of a batch counts only that part as rejected; the rest is accepted.
#[tokio::test]
async fn a_partial_rejection_counts_only_the_rejected_items() {
    use otel_pipeline_core::DirectReceiver;
    use otel_pipeline_core::testing::generate_traces;
    use otel_pipeline_core::{ComponentKind, ConsumeError};

    /// Rejects two spans of every batch, passes the batch on.
    struct RejectTwo;
    struct RejectTwoConsumer<N>(N);
    impl otel_pipeline_core::Processor<otel_pipeline_core::Traces> for RejectTwo {
        type Consumer<N: otel_pipeline_core::Consumer<otel_pipeline_core::Traces>> =
            RejectTwoConsumer<N>;
        fn id(&self) -> otel_pipeline_core::ComponentId {
            otel_pipeline_core::ComponentId::new("reject_two")
        }
        fn build<N: otel_pipeline_core::Consumer<otel_pipeline_core::Traces>>(
            self,
            next: N,
            _ctx: &mut otel_pipeline_core::ComponentContext<'_>,
        ) -> Result<RejectTwoConsumer<N>, otel_pipeline_core::BuildError> {
            Ok(RejectTwoConsumer(next))
        }
    }
    impl<N: otel_pipeline_core::Consumer<otel_pipeline_core::Traces>>
        otel_pipeline_core::Consumer<otel_pipeline_core::Traces> for RejectTwoConsumer<N>
    {
        async fn consume(
            &self,
            batch: otel_pipeline_core::Batch<otel_pipeline_core::Traces>,
        ) -> Result<(), ConsumeError<otel_pipeline_core::Traces>> {
            self.0.consume(batch).await?;
            Err(ConsumeError::rejected(2, "two spans were bad"))
        }
    }

    let (receiver, sender) = DirectReceiver::new();
    let (exporter, _out) = otel_pipeline_core::testing::InMemoryExporter::new();
    let running = otel_pipeline_core::Pipeline::traces()
        .receiver(receiver)
        .processor(RejectTwo)
        .exporter(exporter)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let _ = sender.send(generate_traces(2, 5, 1)).await; // 10 spans
    let r = running
        .telemetry()
        .find(ComponentKind::Receiver, "memory")
        .unwrap();
    assert_eq!((r.accepted(), r.rejected()), (8, 2));
    running
        .shutdown(std::time::Duration::from_secs(5))
        .await
        .unwrap();
}

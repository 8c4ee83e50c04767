//! A service samples and redacts in process: opentelemetry_sdk -> SdkBridge -> redaction ->
//! tail sampler -> exporter. Only kept, redacted spans reach the exporter.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, Status, TraceContextExt as _, Tracer, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use otel_pipeline::processors::attributes::{AttributeRedactor, AttributesConfig};
use otel_pipeline::processors::config::from_yaml;
use otel_pipeline::processors::tail_sampling::{TailSampler, TailSamplingConfig};
use otel_pipeline::proto::common::v1::any_value::Value;
use otel_pipeline::receivers::SdkBridge;
use otel_pipeline::testing::{InMemoryExporter, eventually};
use otel_pipeline::{ComponentKind, Pipeline};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_and_redaction_before_anything_leaves_the_process() {
    let (receiver, bridge) = SdkBridge::new();
    // Spans ended before the pipeline starts wait in the bridge's queue.
    let early_provider = SdkTracerProvider::builder()
        .with_simple_exporter(bridge.clone())
        .build();
    early_provider
        .tracer("checkout")
        .in_span("before start", |cx| {
            cx.span().set_status(Status::error("early"));
        });
    assert_eq!(bridge.queued_spans(), 1);

    let redact: AttributesConfig = from_yaml(
        "attributes",
        "actions: [{ key: enduser.email, action: delete }]",
    )
    .expect("config");
    let sampler: TailSamplingConfig = from_yaml(
        "tail_sampling",
        "decision_wait: 200ms\npolicies: [{ name: errors, type: status_code, status_code: { status_codes: [ERROR] } }]",
    )
    .expect("config");
    let (exporter, exported) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .receiver(receiver)
        .processor(AttributeRedactor::attributes(redact))
        .processor(TailSampler::new(sampler))
        .exporter(exporter)
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");

    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(bridge)
        .build();
    let tracer = provider.tracer("checkout");
    for i in 0..10 {
        let mut span = tracer.start(format!("request {i}"));
        span.set_attribute(KeyValue::new("enduser.email", "jane@example.com"));
        if i % 5 == 0 {
            span.set_status(Status::error("payment failed"));
        }
        span.end();
    }
    provider.force_flush().expect("flush");
    assert!(
        eventually(Duration::from_secs(5), || exported.item_count() == 3).await,
        "got {}",
        exported.item_count()
    );
    for span in exported.spans() {
        assert!(
            span.attributes.iter().all(|a| a.key != "enduser.email"),
            "redacted before export"
        );
        assert!(matches!(span.status.as_ref().map(|s| s.code), Some(2)));
    }
    let batch = &exported.batches()[0];
    let scope = batch.data().resource_spans[0].scope_spans[0]
        .scope
        .as_ref()
        .expect("scope");
    assert_eq!(scope.name, "checkout");
    let service = batch.data().resource_spans[0]
        .resource
        .as_ref()
        .expect("resource")
        .attributes
        .iter()
        .find(|a| a.key == "service.name");
    assert!(matches!(
        service
            .and_then(|a| a.value.as_ref())
            .and_then(|v| v.value.as_ref()),
        Some(Value::StringValue(_))
    ));
    let t = running.telemetry().clone();
    assert_eq!(
        t.find(ComponentKind::Receiver, "sdk")
            .expect("receiver")
            .accepted(),
        11
    );
    running
        .shutdown(Duration::from_secs(5))
        .await
        .expect("stops");
    provider.shutdown().expect("sdk stops");
}

/// The SDK does not retry a failed export, so the bridge does: a batch the pipeline
/// refuses (back-pressure) is kept and tried again, and is delivered once the pipeline
/// takes data again. Received = accepted + refused + rejected + dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_retries_what_the_pipeline_refuses() {
    let (receiver, bridge) = SdkBridge::new();
    let (exporter, exported) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .receiver(receiver)
        .exporter(exporter)
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(bridge.clone())
        .build();
    let tracer = provider.tracer("bridge-test");
    tracer.in_span("kept", |_| {});
    assert!(eventually(Duration::from_secs(5), || exported.item_count() == 1).await);
    exported.set_refusing(true);
    tracer.in_span("refused-1", |_| {});
    tracer.in_span("refused-2", |_| {});
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        exported.item_count(),
        1,
        "refused while the pipeline refuses"
    );
    assert_eq!(bridge.queued_spans(), 2, "and kept in the bridge's queue");
    exported.set_refusing(false);
    assert!(
        eventually(Duration::from_secs(5), || exported.item_count() == 3).await,
        "delivered once the pipeline takes data again: {}",
        exported.item_count()
    );
    let r = running
        .telemetry()
        .find(ComponentKind::Receiver, "sdk")
        .expect("receiver");
    assert_eq!(r.accepted(), 3);
    assert_eq!(r.refused(), 0);
    let _ = provider.shutdown();
    let telemetry = running.telemetry().clone();
    running
        .shutdown(Duration::from_secs(5))
        .await
        .expect("stops");
    otel_pipeline::testing::assert_balanced(&telemetry);
}

/// The pipeline a new user builds: SDK -> bridge -> tail sampler -> exporter.
async fn sampling_pipeline(
    receiver: otel_pipeline::receivers::SdkBridgeReceiver,
) -> (
    otel_pipeline::RunningPipeline,
    otel_pipeline::testing::Exported<otel_pipeline::Traces>,
) {
    let sampler: TailSamplingConfig = from_yaml(
        "tail_sampling",
        "decision_wait: 100ms\npolicies: [{ name: all, type: always_sample }]",
    )
    .expect("config");
    let (exporter, exported) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .receiver(receiver)
        .processor(TailSampler::new(sampler))
        .exporter(exporter)
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");
    (running, exported)
}

/// End `n` spans with `provider`'s tracer, as fast as a loop can.
fn end_spans(provider: &SdkTracerProvider, n: usize) {
    let tracer = provider.tracer("load");
    for i in 0..n {
        let mut span = tracer.start(format!("op {i}"));
        span.set_attribute(KeyValue::new("i", i as i64));
        span.end();
    }
}

/// Every span ended is delivered or counted as dropped, and the exporter holds exactly
/// the delivered ones.
async fn assert_all_accounted(
    running: otel_pipeline::RunningPipeline,
    exported: &otel_pipeline::testing::Exported<otel_pipeline::Traces>,
    n: usize,
) {
    let r = running
        .telemetry()
        .find(ComponentKind::Receiver, "sdk")
        .expect("receiver");
    assert!(
        eventually(Duration::from_secs(10), || r.accepted()
            + r.dropped("queue_full")
            == n as u64)
        .await,
        "accepted {} + dropped {} of {n}",
        r.accepted(),
        r.dropped("queue_full")
    );
    let telemetry = running.telemetry().clone();
    running
        .shutdown(Duration::from_secs(5))
        .await
        .expect("stops");
    assert_eq!(exported.item_count() as u64, r.accepted());
    otel_pipeline::testing::assert_balanced(&telemetry);
}

/// Run `test` on a thread of its own and fail if it has not finished in `limit`: a hang
/// is a failure, not a test run that never ends.
fn within(limit: Duration, test: impl FnOnce() + Send + 'static) {
    let (done, finished) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        test();
        let _ = done.send(());
    });
    match finished.recv_timeout(limit) {
        Ok(()) => worker.join().expect("the test thread"),
        Err(_) if worker.is_finished() => {
            // It panicked: report its panic.
            if let Err(p) = worker.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(_) => panic!("hung: not finished within {limit:?}"),
    }
}

/// Run `test` on a runtime of its own (multi-thread with two workers, or current-thread),
/// on a thread of its own, failing if it has not finished in a minute.
fn on_runtime(multi_thread: bool, test: impl std::future::Future<Output = ()> + Send + 'static) {
    within(Duration::from_secs(60), move || {
        let rt = if multi_thread {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        }
        .expect("runtime");
        rt.block_on(test);
    });
}

/// The SDK's simple processor blocks on the export inside `Span::end`. Inside a task of a
/// multi-thread runtime this used to hang at span 129 (tokio's cooperative budget spent
/// inside the blocked poll). 10 000 spans now finish, every one accounted for.
#[test]
fn ten_thousand_spans_through_the_simple_processor_in_a_multi_thread_task() {
    on_runtime(true, async {
        let (receiver, bridge) = SdkBridge::new();
        let (running, exported) = sampling_pipeline(receiver).await;
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(bridge)
            .build();
        let p = provider.clone();
        tokio::spawn(async move { end_spans(&p, 10_000) })
            .await
            .expect("the service task");
        assert_all_accounted(running, &exported, 10_000).await;
        let _ = provider.shutdown();
    });
}

/// The same on a current-thread runtime, where the pipeline's tasks cannot run at all
/// while the service's task blocks: nothing may wait for them.
#[test]
fn ten_thousand_spans_through_the_simple_processor_on_a_current_thread_runtime() {
    on_runtime(false, async {
        let (receiver, bridge) = SdkBridge::new();
        let (running, exported) = sampling_pipeline(receiver).await;
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(bridge)
            .build();
        end_spans(&provider, 10_000);
        assert_all_accounted(running, &exported, 10_000).await;
        let _ = provider.shutdown();
    });
}

/// A queue smaller than the burst, on a current-thread runtime: the spans past it are
/// dropped and counted at once (never waited for), the rest delivered.
#[test]
fn a_full_queue_drops_and_counts_instead_of_blocking() {
    on_runtime(false, async {
        let (receiver, bridge) = SdkBridge::with_capacity(1_000);
        let (running, exported) = sampling_pipeline(receiver).await;
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(bridge)
            .build();
        end_spans(&provider, 3_000);
        let r = running
            .telemetry()
            .find(ComponentKind::Receiver, "sdk")
            .expect("receiver");
        assert_eq!(r.dropped("queue_full"), 2_000);
        assert_all_accounted(running, &exported, 3_000).await;
        let _ = provider.shutdown();
    });
}

/// The batch processor exports from a thread of its own: with a queue smaller than the
/// load it waits for room (bounded) instead of dropping, so all 10 000 arrive.
#[test]
fn ten_thousand_spans_through_the_batch_processor() {
    on_runtime(true, async {
        let (receiver, bridge) = SdkBridge::with_capacity(2_048);
        let (running, exported) = sampling_pipeline(receiver).await;
        let processor = opentelemetry_sdk::trace::BatchSpanProcessor::builder(
            bridge.with_max_wait(Duration::from_secs(10)),
        )
        .with_batch_config(
            opentelemetry_sdk::trace::BatchConfigBuilder::default()
                .with_max_queue_size(20_000)
                .build(),
        )
        .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let p = provider.clone();
        tokio::spawn(async move { end_spans(&p, 10_000) })
            .await
            .expect("the service task");
        let p = provider.clone();
        tokio::task::spawn_blocking(move || p.force_flush())
            .await
            .expect("flush task")
            .expect("flushed");
        let r = running
            .telemetry()
            .find(ComponentKind::Receiver, "sdk")
            .expect("receiver");
        assert_eq!(
            r.dropped("queue_full"),
            0,
            "the batch processor's thread waited"
        );
        assert_all_accounted(running, &exported, 10_000).await;
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    });
}

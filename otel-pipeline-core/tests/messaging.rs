//! Trace context through in-process queues, checked with real SDK spans.

use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use otel_pipeline_core::propagation::{Messaging, Traced};

fn setup() -> (SdkTracerProvider, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    (provider, exporter)
}

fn find<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[test]
fn single_messages_are_children_of_their_send_span() {
    let (provider, exporter) = setup();
    let tracer = provider.tracer("t");
    let queue = Messaging::new(provider.tracer("t"), "tokio_mpsc", "orders");
    let msg = tracer.in_span("request", |_| queue.send(42u32));
    // Consumed on another thread with an empty context.
    let handle = std::thread::spawn(move || {
        let (payload, cx) = queue.process(msg);
        cx.span().end();
        payload
    });
    assert_eq!(handle.join().expect("consumer"), 42);
    let spans = exporter.get_finished_spans().expect("spans");
    let request = find(&spans, "request")[0];
    let send = find(&spans, "send orders")[0];
    let process = find(&spans, "process orders")[0];
    assert_eq!(send.span_kind, SpanKind::Producer);
    assert_eq!(process.span_kind, SpanKind::Consumer);
    assert_eq!(send.parent_span_id, request.span_context.span_id());
    assert_eq!(process.parent_span_id, send.span_context.span_id());
    assert_eq!(
        process.span_context.trace_id(),
        request.span_context.trace_id()
    );
    assert!(
        process
            .attributes
            .contains(&KeyValue::new("messaging.operation.type", "process"))
    );
    assert!(
        process
            .attributes
            .contains(&KeyValue::new("messaging.destination.name", "orders"))
    );
}

#[test]
fn a_batch_links_to_every_message() {
    let (provider, exporter) = setup();
    let tracer = provider.tracer("t");
    let queue = Messaging::new(provider.tracer("t"), "crossbeam", "jobs");
    let (tx, rx) = crossbeam_channel::unbounded();
    for i in 0..3 {
        tracer.in_span(format!("request {i}"), |_| {
            tx.send(queue.send(i)).expect("send")
        });
    }
    drop(tx);
    let batch: Vec<Traced<i32>> = rx.iter().collect();
    let (payloads, cx) = queue.process_batch(batch);
    cx.span().end();
    assert_eq!(payloads, vec![0, 1, 2]);
    let spans = exporter.get_finished_spans().expect("spans");
    let process = find(&spans, "process jobs")[0];
    let sends: Vec<_> = find(&spans, "send jobs")
        .iter()
        .map(|s| s.span_context.clone())
        .collect();
    let linked: Vec<_> = process
        .links
        .iter()
        .map(|l| l.span_context.clone())
        .collect();
    assert_eq!(linked, sends);
    assert!(
        process
            .attributes
            .contains(&KeyValue::new("messaging.batch.message_count", 3))
    );
}

#[tokio::test]
async fn tokio_and_crossbeam_helpers_capture_the_current_context() {
    use otel_pipeline_core::propagation::messaging::{CrossbeamSendTraced, TokioSendTraced};
    let (provider, _exporter) = setup();
    let tracer = provider.tracer("t");
    let span = tracer.start("producer");
    let cx = Context::current_with_span(span).with_baggage([KeyValue::new("tenant", "acme")]);
    let expected = cx.span().span_context().clone();

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Traced<&str>>(1);
    let (ctx, crx) = crossbeam_channel::bounded::<Traced<&str>>(1);
    {
        let _guard = cx.clone().attach();
        tx.send_traced("a").await.expect("send");
        ctx.send_traced("b").expect("send");
    }
    // Received outside the producer's context, both carry it.
    for msg in [rx.recv().await.expect("msg"), crx.recv().expect("msg")] {
        assert_eq!(msg.span_context(), &expected);
        let (_, restored) = msg.into_parts();
        assert_eq!(
            restored.span().span_context().trace_id(),
            expected.trace_id()
        );
        assert_eq!(restored.span().span_context().span_id(), expected.span_id());
        assert_eq!(
            restored.baggage().get("tenant").map(|v| v.as_str()),
            Some("acme")
        );
    }
    // No context: the envelope carries an invalid span context, not a stale one.
    let (tx2, mut rx2) = tokio::sync::mpsc::channel::<Traced<u8>>(1);
    tx2.send_traced(1).await.expect("send");
    assert!(!rx2.recv().await.expect("msg").span_context().is_valid());
}

/// `send_traced(x).with_context(cx)` sends `cx`: the context is captured when the future
/// runs, not when `send_traced` is called. `send_traced_in` names the context outright.
#[tokio::test]
async fn send_traced_captures_the_context_the_future_runs_in() {
    use opentelemetry::context::FutureExt;
    use otel_pipeline_core::propagation::messaging::TokioSendTraced;
    let (provider, _exporter) = setup();
    let tracer = provider.tracer("t");
    let cx = Context::current_with_span(tracer.start("producer"));
    let expected = cx.span().span_context().clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Traced<u8>>(2);
    tx.send_traced(1)
        .with_context(cx.clone())
        .await
        .expect("send");
    tx.send_traced_in(&cx, 2).await.expect("send");
    for _ in 0..2 {
        let msg = rx.recv().await.expect("msg");
        assert_eq!(msg.span_context(), &expected, "payload {}", msg.payload());
    }
}

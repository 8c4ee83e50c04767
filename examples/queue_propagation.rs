//! Trace context across an in-process queue.
//!
//! A producer task handles a "checkout" request and enqueues three orders on a tokio mpsc
//! channel; a consumer task processes them. Each message travels in a `Traced` envelope, so
//! the consumer's spans join the producer's trace: the first two orders are processed one
//! at a time (the `process` span is a child of the message's `send` span), the last ones as
//! a batch (one `process` span that links to every message).
//!
//! Run it with `cargo run --example queue_propagation`.

use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use otel_pipeline::propagation::{Messaging, Traced};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let tracer = provider.tracer("queue_propagation");
    let orders = Messaging::new(provider.tracer("queue_propagation"), "tokio_mpsc", "orders");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Traced<String>>(16);

    // Producer: one request, four messages.
    let producer = {
        let orders = orders.clone();
        let tracer = tracer.clone();
        tokio::spawn(async move {
            tracer.in_span("checkout", |_cx| {
                (1..=4)
                    .map(|i| orders.send(format!("order-{i}")))
                    .collect::<Vec<_>>()
            })
        })
    };
    for msg in producer.await? {
        tx.send(msg).await?;
    }
    drop(tx);

    // Consumer: two messages one by one, then the rest as a batch.
    let consumer = tokio::spawn(async move {
        for _ in 0..2 {
            let Some(msg) = rx.recv().await else { return };
            let (order, cx) = orders.process(msg);
            let _guard = cx.clone().attach();
            println!("processed {order}");
            cx.span().end();
        }
        let mut batch = Vec::new();
        while let Some(msg) = rx.recv().await {
            batch.push(msg);
        }
        let (payloads, cx) = orders.process_batch(batch);
        println!("processed batch {payloads:?}");
        cx.span().end();
    });
    consumer.await?;
    provider.force_flush()?;

    let spans = exporter.get_finished_spans()?;
    println!(
        "\n{:<16} {:<9} {:<34} {:<18} links",
        "span", "kind", "trace", "parent"
    );
    for s in &spans {
        println!(
            "{:<16} {:<9} {:<34} {:<18} {}",
            s.name,
            format!("{:?}", s.span_kind),
            s.span_context.trace_id(),
            s.parent_span_id,
            s.links.len()
        );
    }
    let checkout = spans
        .iter()
        .find(|s| s.name == "checkout")
        .ok_or("no checkout span")?;
    let joined = spans
        .iter()
        .filter(|s| s.name == "process orders" && s.links.is_empty())
        .all(|s| s.span_context.trace_id() == checkout.span_context.trace_id());
    println!("\nconsumer spans joined the producer's trace: {joined}");
    assert!(joined);
    provider.shutdown()?;
    Ok(())
}

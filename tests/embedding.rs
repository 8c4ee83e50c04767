//! An embedded pipeline or collector, used as a library user would: what happens when it
//! is dropped without `shutdown`, and what a Collector config asks to be served.

use std::time::Duration;

use otel_pipeline::processors::config::from_yaml;
use otel_pipeline::processors::tail_sampling::{TailSampler, TailSamplingConfig};
use otel_pipeline::proto::trace::v1::{Status, status::StatusCode};
use otel_pipeline::testing::{InMemoryExporter, generate_traces};
use otel_pipeline::{DirectReceiver, Pipeline};

/// A tail sampler holding 20 error traces (its decision is 30 s away) is dropped without
/// `shutdown` on a multi-thread runtime: it drains in place, and all 20 reach the exporter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_running_pipeline_drains_what_it_holds() {
    let sampler: TailSamplingConfig = from_yaml(
        "tail_sampling",
        "decision_wait: 30s\npolicies: [{ name: errors, type: status_code, status_code: { status_codes: [ERROR] } }]",
    )
    .expect("config");
    let (receiver, sender) = DirectReceiver::new();
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
    let mut data = generate_traces(20, 2, 9);
    for span in &mut data.resource_spans[0].scope_spans[0].spans {
        span.status = Some(Status {
            code: StatusCode::Error as i32,
            message: "boom".into(),
        });
    }
    sender.send(data).await.expect("accepted");
    assert_eq!(exported.item_count(), 0, "held for the decision");
    drop(running);
    assert_eq!(
        exported.item_count(),
        40,
        "every kept span delivered on drop"
    );
    let traces: std::collections::HashSet<Vec<u8>> =
        exported.spans().into_iter().map(|s| s.trace_id).collect();
    assert_eq!(traces.len(), 20);
}

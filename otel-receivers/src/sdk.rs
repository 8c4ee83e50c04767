//! The in-process bridge from `opentelemetry_sdk`: a `SpanExporter` whose spans enter a
//! pipeline without leaving the process.
//!
//! The SDK's spans are converted to OTLP once, here at the edge; from then on the pipeline
//! works on OTLP like any other. Put the tail sampler and the redactor in that pipeline and
//! nothing unsampled or unredacted ever leaves the service.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use opentelemetry::trace::{Tracer, TracerProvider as _};
//! use opentelemetry_sdk::trace::SdkTracerProvider;
//! use otel_pipeline_core::{Pipeline, testing::InMemoryExporter};
//! use otel_receivers::SdkBridge;
//!
//! let (receiver, bridge) = SdkBridge::new();
//! let (exporter, exported) = InMemoryExporter::new();
//! let running = Pipeline::traces().receiver(receiver).exporter(exporter).build()?.start().await?;
//!
//! let provider = SdkTracerProvider::builder().with_simple_exporter(bridge).build();
//! provider.tracer("app").in_span("work", |_| {});
//! assert_eq!(exported.item_count(), 1);
//! # provider.shutdown()?; running.shutdown(std::time::Duration::from_secs(1)).await?; Ok(()) }
//! ```

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use otel_pipeline_core::{Batch, ComponentId, DirectReceiver, DirectSender, Traces};
use parking_lot::RwLock;

/// The receiver half: add it to a trace pipeline (a [`DirectReceiver`] with id `sdk`).
pub type SdkBridgeReceiver = DirectReceiver<Traces>;

/// The `SpanExporter` half: give it to the SDK's span processor.
#[derive(Clone)]
pub struct SdkBridge {
    sender: DirectSender<Traces>,
    resource: Arc<RwLock<ResourceAttributesWithSchema>>,
}

impl std::fmt::Debug for SdkBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdkBridge")
            .field("sender", &self.sender)
            .finish()
    }
}

impl SdkBridge {
    /// A connected pair: the pipeline's receiver (id `sdk`) and the SDK's exporter.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> (SdkBridgeReceiver, SdkBridge) {
        let (receiver, sender) = DirectReceiver::new();
        (
            receiver.with_id(ComponentId::new("sdk")),
            SdkBridge {
                sender,
                resource: Arc::new(RwLock::new(ResourceAttributesWithSchema::default())),
            },
        )
    }

    async fn push(&self, spans: Vec<SpanData>) -> OTelSdkResult {
        let resource_spans = group_spans_by_resource_and_scope(spans, &self.resource.read());
        let batch = Batch::<Traces>::new(ExportTraceServiceRequest { resource_spans });
        // The receiver counts accepted and rejected spans; the SDK does not retry a failed
        // export, so refused spans are counted as dropped.
        self.sender.send_batch_once(batch).await.map_err(|e| {
            OTelSdkError::InternalFailure(format!("the pipeline did not take the spans: {e}"))
        })
    }
}

impl SpanExporter for SdkBridge {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.push(batch)
    }

    fn set_resource(&mut self, resource: &Resource) {
        *self.resource.write() = resource.into();
    }
}

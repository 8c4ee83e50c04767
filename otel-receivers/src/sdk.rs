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

use std::sync::{Arc, OnceLock};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use otel_pipeline_core::{
    Batch, BoxConsumer, BoxError, ComponentId, ComponentTelemetry, ConsumeError, Consumer,
    Receiver, ReceiverContext, RunningReceiver, Traces,
};
use parking_lot::RwLock;

struct Slot {
    target: OnceLock<(BoxConsumer<Traces>, Arc<ComponentTelemetry>)>,
    stopped: std::sync::atomic::AtomicBool,
}

/// The `SpanExporter` half: give it to the SDK's span processor.
#[derive(Clone)]
pub struct SdkBridge {
    slot: Arc<Slot>,
    resource: Arc<RwLock<ResourceAttributesWithSchema>>,
}

/// The receiver half: add it to a trace pipeline.
pub struct SdkBridgeReceiver {
    id: ComponentId,
    slot: Arc<Slot>,
}

impl std::fmt::Debug for SdkBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdkBridge")
            .field("connected", &self.slot.target.get().is_some())
            .finish()
    }
}

impl std::fmt::Debug for SdkBridgeReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdkBridgeReceiver")
            .field("id", &self.id)
            .finish()
    }
}

impl SdkBridge {
    /// A connected pair: the pipeline's receiver (id `sdk`) and the SDK's exporter.
    pub fn new() -> (SdkBridgeReceiver, SdkBridge) {
        let slot = Arc::new(Slot {
            target: OnceLock::new(),
            stopped: std::sync::atomic::AtomicBool::new(false),
        });
        (
            SdkBridgeReceiver {
                id: ComponentId::new("sdk"),
                slot: Arc::clone(&slot),
            },
            SdkBridge {
                slot,
                resource: Arc::new(RwLock::new(ResourceAttributesWithSchema::default())),
            },
        )
    }

    async fn push(&self, spans: Vec<SpanData>) -> OTelSdkResult {
        let Some((consumer, telemetry)) = self.slot.target.get() else {
            return Err(OTelSdkError::InternalFailure(
                "the pipeline behind this exporter has not started".into(),
            ));
        };
        if self.slot.stopped.load(std::sync::atomic::Ordering::Acquire) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let resource_spans = group_spans_by_resource_and_scope(spans, &self.resource.read());
        let batch = Batch::<Traces>::new(ExportTraceServiceRequest { resource_spans });
        let n = batch.item_count();
        match consumer.consume(batch).await {
            Ok(()) => {
                telemetry.add_accepted(n);
                Ok(())
            }
            Err(e @ ConsumeError::Refused(_)) => {
                telemetry.add_refused(n);
                Err(OTelSdkError::InternalFailure(format!(
                    "pipeline refused the spans: {e}"
                )))
            }
            Err(e @ ConsumeError::Rejected(_)) => {
                telemetry.add_rejected(e.items());
                Err(OTelSdkError::InternalFailure(format!(
                    "pipeline rejected the spans: {e}"
                )))
            }
        }
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

impl Receiver<Traces> for SdkBridgeReceiver {
    fn id(&self) -> ComponentId {
        self.id.clone()
    }

    async fn start<C: Consumer<Traces> + Clone>(
        self,
        consumer: C,
        mut ctx: ReceiverContext,
    ) -> Result<RunningReceiver, BoxError> {
        self.slot
            .target
            .set((BoxConsumer::new(consumer), Arc::clone(&ctx.telemetry)))
            .map_err(|_| "the SDK bridge feeds one pipeline only")?;
        let slot = self.slot;
        Ok(RunningReceiver::new(tokio::spawn(async move {
            ctx.shutdown.wait().await;
            slot.stopped
                .store(true, std::sync::atomic::Ordering::Release);
            Ok(())
        })))
    }
}

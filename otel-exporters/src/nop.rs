//! The `nop` exporter: accepts everything and keeps nothing, counting what it discarded,
//! like the Collector's `nop` exporter. A sink for measuring a pipeline on its own (load
//! tests, the relay's `--discard`), and for pipelines whose only purpose is their
//! processors' side effects.

use std::sync::Arc;

use otel_pipeline_core::{
    Batch, BuildError, ComponentContext, ComponentId, ComponentTelemetry, ConsumeError, Consumer,
    Exporter, Logs, Metrics, Traces,
};

/// Discards every batch, counted as sent (`otelcol_exporter_sent_<items>`).
///
/// ```
/// use otel_exporters::NopExporter;
/// use otel_pipeline_core::{DirectReceiver, Pipeline};
/// let (receiver, _sender) = DirectReceiver::new();
/// let pipeline = Pipeline::logs().receiver(receiver).exporter(NopExporter::new()).build();
/// assert!(pipeline.is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct NopExporter {
    id: ComponentId,
}

impl NopExporter {
    /// A nop exporter with id `nop`.
    pub fn new() -> Self {
        Self {
            id: ComponentId::new("nop"),
        }
    }

    /// Use another id (`nop/sink`).
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }
}

impl Default for NopExporter {
    fn default() -> Self {
        Self::new()
    }
}

/// The consumer built by [`NopExporter`].
#[derive(Debug)]
pub struct NopConsumer {
    telemetry: Arc<ComponentTelemetry>,
}

macro_rules! nop_signal {
    ($($signal:ty),*) => {$(
        impl Exporter<$signal> for NopExporter {
            type Consumer = NopConsumer;

            fn id(&self) -> ComponentId {
                self.id.clone()
            }

            fn build(self, ctx: &mut ComponentContext<'_>) -> Result<NopConsumer, BuildError> {
                Ok(NopConsumer {
                    telemetry: ctx.telemetry(),
                })
            }
        }

        impl Consumer<$signal> for NopConsumer {
            async fn consume(&self, batch: Batch<$signal>) -> Result<(), ConsumeError<$signal>> {
                self.telemetry.add_sent(batch.item_count());
                Ok(())
            }
        }
    )*};
}

nop_signal!(Traces, Metrics, Logs);

#[cfg(test)]
mod tests {
    use super::*;
    use otel_pipeline_core::testing::{generate_logs, generate_metrics, generate_traces};
    use otel_pipeline_core::{ComponentKind, DirectReceiver, Pipeline};

    #[tokio::test]
    async fn discards_every_signal_and_counts_it_sent() {
        let (traces_in, traces) = DirectReceiver::new();
        let running = Pipeline::traces()
            .receiver(traces_in)
            .exporter(NopExporter::new())
            .build()
            .unwrap()
            .start()
            .await
            .unwrap();
        traces.send(generate_traces(3, 4, 1)).await.unwrap();
        let sent = running
            .telemetry()
            .find(ComponentKind::Exporter, "nop")
            .unwrap()
            .sent();
        assert_eq!(sent, 12);
        running
            .shutdown(std::time::Duration::from_secs(1))
            .await
            .unwrap();

        let (metrics_in, metrics) = DirectReceiver::new();
        let (logs_in, logs) = DirectReceiver::new();
        let m = Pipeline::metrics()
            .receiver(metrics_in)
            .exporter(NopExporter::new().with_id("nop/m".parse().unwrap()))
            .build()
            .unwrap()
            .start()
            .await
            .unwrap();
        let l = Pipeline::logs()
            .receiver(logs_in)
            .exporter(NopExporter::new())
            .build()
            .unwrap()
            .start()
            .await
            .unwrap();
        metrics.send(generate_metrics(2, 3, 1)).await.unwrap();
        logs.send(generate_logs(5, 1)).await.unwrap();
        let sent = |r: &otel_pipeline_core::RunningPipeline, id: &str| {
            r.telemetry()
                .find(ComponentKind::Exporter, id)
                .unwrap()
                .sent()
        };
        assert_eq!((sent(&m, "nop/m"), sent(&l, "nop")), (6, 5));
    }
}

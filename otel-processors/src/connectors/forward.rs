//! The `forward` connector.

use otel_pipeline_core::connector::{Connector, Downstream};
use otel_pipeline_core::{
    Batch, BuildError, ComponentContext, ComponentId, ComponentTelemetry, ConsumeError, Consumer,
    Signal,
};
use std::sync::Arc;

/// Passes every batch on, unchanged, to every pipeline it feeds (of the same signal), as
/// the Collector's `forward` connector does. Their refusals are its refusals.
///
/// ```
/// use otel_processors::connectors::Forward;
/// let forward = Forward::new().with_id("forward/sampling".parse().unwrap());
/// # let _ = forward;
/// ```
#[derive(Debug, Clone)]
pub struct Forward {
    id: ComponentId,
}

impl Default for Forward {
    fn default() -> Self {
        Self::new()
    }
}

impl Forward {
    /// A `forward` connector.
    pub fn new() -> Self {
        Self {
            id: ComponentId::new("forward"),
        }
    }

    /// Under another id (`forward/sampling`).
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }
}

/// The consumer a [`Forward`] builds.
#[derive(Debug, Clone)]
pub struct ForwardConsumer<S: Signal> {
    next: Downstream<S>,
    telemetry: Arc<ComponentTelemetry>,
}

impl<S: Signal> Consumer<S> for ForwardConsumer<S> {
    async fn consume(&self, batch: Batch<S>) -> Result<(), ConsumeError<S>> {
        let n = batch.item_count();
        self.next.consume(batch).await?;
        self.telemetry.add_sent(n);
        Ok(())
    }
}

impl<S: Signal> Connector<S, S> for Forward {
    type Consumer = ForwardConsumer<S>;

    fn id(&self) -> ComponentId {
        self.id.clone()
    }

    fn build(
        self,
        next: Downstream<S>,
        ctx: &mut ComponentContext<'_>,
    ) -> Result<ForwardConsumer<S>, BuildError> {
        Ok(ForwardConsumer {
            next,
            telemetry: ctx.telemetry(),
        })
    }
}

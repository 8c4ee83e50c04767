//! [`DirectReceiver`]: a receiver fed by code in the same process.

use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::component::{Receiver, ReceiverContext, RunningReceiver};
use crate::consumer::{BoxConsumer, ConsumeError, Consumer};
use crate::id::{BoxError, ComponentId};
use crate::signal::{Batch, Signal};
use crate::telemetry::{ComponentTelemetry, DropReason};

/// A receiver fed by code in the same process through a [`DirectSender`]: tests, examples,
/// and bridges such as the `opentelemetry_sdk` exporter in `otel-receivers`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use otel_pipeline_core::{DirectReceiver, Pipeline, testing::{InMemoryExporter, generate_traces}};
/// let (receiver, sender) = DirectReceiver::new();
/// let (exporter, exported) = InMemoryExporter::new();
/// let running = Pipeline::traces().receiver(receiver).exporter(exporter)
///     .build().unwrap().start().await.unwrap();
/// sender.send(generate_traces(2, 3, 7)).await.unwrap();
/// assert_eq!(exported.item_count(), 6);
/// running.shutdown(std::time::Duration::from_secs(1)).await.unwrap();
/// # }
/// ```
pub struct DirectReceiver<S: Signal> {
    id: ComponentId,
    slot: Arc<SenderSlot<S>>,
}

struct SenderSlot<S: Signal> {
    target: OnceLock<(BoxConsumer<S>, Arc<ComponentTelemetry>)>,
    /// Readers are sends in flight; the receiver takes the write side to stop, so shutdown
    /// waits for them.
    stopped: tokio::sync::RwLock<bool>,
}

/// Pushes batches into a [`DirectReceiver`], the way a network client would.
pub struct DirectSender<S: Signal> {
    slot: Arc<SenderSlot<S>>,
}

impl<S: Signal> Clone for DirectSender<S> {
    fn clone(&self) -> Self {
        Self {
            slot: Arc::clone(&self.slot),
        }
    }
}

impl<S: Signal> fmt::Debug for DirectReceiver<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectReceiver")
            .field("id", &self.id)
            .finish()
    }
}

impl<S: Signal> fmt::Debug for DirectSender<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectSender")
            .field("started", &self.slot.target.get().is_some())
            .finish()
    }
}

impl<S: Signal> DirectReceiver<S> {
    /// A receiver with id `memory` and the sender that feeds it.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> (Self, DirectSender<S>) {
        let slot = Arc::new(SenderSlot {
            target: OnceLock::new(),
            stopped: tokio::sync::RwLock::new(false),
        });
        (
            Self {
                id: ComponentId::new("memory"),
                slot: Arc::clone(&slot),
            },
            DirectSender { slot },
        )
    }

    /// Use another id (for a second in-memory receiver in one pipeline).
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }
}

impl<S: Signal> DirectSender<S> {
    /// Push one batch and wait for the pipeline's answer. Counts accepted, refused and
    /// rejected items like a network receiver does.
    pub async fn send(&self, batch: impl Into<Batch<S>>) -> Result<(), ConsumeError<S>> {
        self.send_batch(batch.into()).await
    }

    /// Push one [`Batch`] (with client info, if any).
    pub async fn send_batch(&self, batch: Batch<S>) -> Result<(), ConsumeError<S>> {
        self.send_counted(batch, false).await
    }

    /// Push one [`Batch`] for a sender that will not retry (the SDK's span processors drop
    /// what their exporter fails to export): a refusal is counted as items dropped with
    /// reason `refused_not_retried`, not as refused, which would promise a retry.
    pub async fn send_batch_once(&self, batch: Batch<S>) -> Result<(), ConsumeError<S>> {
        self.send_counted(batch, true).await
    }

    async fn send_counted(&self, batch: Batch<S>, once: bool) -> Result<(), ConsumeError<S>> {
        let stopped = self.slot.stopped.read().await;
        let Some((consumer, telemetry)) = self.slot.target.get() else {
            return Err(ConsumeError::refused(batch, "receiver not started"));
        };
        if *stopped {
            return Err(ConsumeError::refused(batch, "receiver stopped"));
        }
        let n = batch.item_count();
        let result = consumer.consume(batch).await;
        match &result {
            Ok(()) => telemetry.add_accepted(n),
            Err(ConsumeError::Refused(_)) if once => {
                telemetry.add_dropped(DropReason::REFUSED_NOT_RETRIED, n)
            }
            Err(ConsumeError::Refused(_)) => telemetry.add_refused(n),
            // A rejection names how many items it covers: the rest were taken.
            Err(ConsumeError::Rejected(r)) => {
                let rejected = r.items.min(n);
                telemetry.add_rejected(rejected);
                telemetry.add_accepted(n - rejected);
            }
        }
        result
    }
}

impl<S: Signal> Receiver<S> for DirectReceiver<S> {
    fn id(&self) -> ComponentId {
        self.id.clone()
    }

    async fn start<C: Consumer<S> + Clone>(
        self,
        consumer: C,
        mut ctx: ReceiverContext,
    ) -> Result<RunningReceiver, BoxError> {
        self.slot
            .target
            .set((BoxConsumer::new(consumer), ctx.telemetry))
            .map_err(|_| "in-memory receiver started twice")?;
        let slot = self.slot;
        Ok(RunningReceiver::new(tokio::spawn(async move {
            ctx.shutdown.wait().await;
            *slot.stopped.write().await = true;
            Ok(())
        })))
    }
}

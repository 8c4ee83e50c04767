//! Boxed, object-safe forms of the component traits, for pipelines whose shape is decided
//! at run time (the YAML loader), and the pieces that wire them.
//!
//! The typed builder stays the zero-cost path: every component is one concrete type and
//! the whole chain is one type. Where configuration decides the components, erase each
//! one once, at the configuration boundary ([`BoxProcessor`], [`BoxExporter`],
//! [`BoxReceiver`]), and hand lists of them to the same builder
//! ([`PipelineBuilder::processors`](crate::PipelineBuilder::processors),
//! [`PipelineBuilder::exporters`](crate::PipelineBuilder::exporters)). Each component is
//! still built by its own `build`, so both doors share one implementation.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use otel_pipeline_core::boxed::{BoxExporter, BoxProcessor};
//! use otel_pipeline_core::testing::{InMemoryExporter, generate_traces};
//! use otel_pipeline_core::{DirectReceiver};
//! use otel_pipeline_core::{BoundedQueue, Pipeline, QueueConfig, Traces};
//!
//! // Decided at run time: how many processors and exporters.
//! let processors: Vec<BoxProcessor<Traces>> =
//!     vec![Box::new(BoundedQueue::new(QueueConfig::default()))];
//! let (a, exported_a) = InMemoryExporter::new();
//! let (b, exported_b) = InMemoryExporter::new();
//! let exporters: Vec<BoxExporter<Traces>> = vec![
//!     Box::new(a.with_id("memory/a".parse()?)),
//!     Box::new(b.with_id("memory/b".parse()?)),
//! ];
//! let (receiver, sender) = DirectReceiver::new();
//! let running = Pipeline::traces()
//!     .receiver(receiver)
//!     .processors(processors)
//!     .exporters(exporters)
//!     .build()?
//!     .start()
//!     .await?;
//! sender.send(generate_traces(2, 5, 1)).await?;
//! running.shutdown(Duration::from_secs(5)).await?;
//! assert_eq!((exported_a.item_count(), exported_b.item_count()), (10, 10));
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::builder::{ExporterSet, ProcessorChain, build_processor};
use crate::component::{
    BuildContext, Children, ComponentContext, Exporter, Processor, Receiver, ReceiverContext,
    RunningReceiver, ShutdownSignal,
};
use crate::consumer::{BoxConsumer, BoxFuture, ConsumeError, Consumer};
use crate::id::{BoxError, BuildError, ComponentId, ComponentKind};
use crate::id::{ShutdownError, StartError};
use crate::signal::{Batch, Signal};
use crate::telemetry::Telemetry;

/// Object-safe form of [`Processor`]; every processor has it.
pub trait DynProcessor<S: Signal>: Send + 'static {
    /// The component id.
    fn id(&self) -> ComponentId;

    /// Build in front of `next`, erasing the consumer's type.
    fn build_boxed(
        self: Box<Self>,
        next: BoxConsumer<S>,
        ctx: &mut ComponentContext<'_>,
    ) -> Result<BoxConsumer<S>, BuildError>;
}

impl<S: Signal, P: Processor<S>> DynProcessor<S> for P {
    fn id(&self) -> ComponentId {
        Processor::id(self)
    }

    fn build_boxed(
        self: Box<Self>,
        next: BoxConsumer<S>,
        ctx: &mut ComponentContext<'_>,
    ) -> Result<BoxConsumer<S>, BuildError> {
        Ok(BoxConsumer::new((*self).build(next, ctx)?))
    }
}

/// A processor whose type was erased at the configuration boundary.
pub type BoxProcessor<S> = Box<dyn DynProcessor<S>>;

impl<S: Signal> Processor<S> for BoxProcessor<S> {
    type Consumer<N: Consumer<S>> = BoxConsumer<S>;

    fn id(&self) -> ComponentId {
        DynProcessor::id(&**self)
    }

    fn build<N: Consumer<S>>(
        self,
        next: N,
        ctx: &mut ComponentContext<'_>,
    ) -> Result<BoxConsumer<S>, BuildError> {
        self.build_boxed(BoxConsumer::new(next), ctx)
    }
}

/// Processors in order, decided at run time: each is built and counted as if added with
/// [`PipelineBuilder::processor`](crate::PipelineBuilder::processor).
impl<S: Signal> ProcessorChain<S> for Vec<BoxProcessor<S>> {
    type Consumer<N: Consumer<S>> = BoxConsumer<S>;

    fn build_chain<N: Consumer<S>>(
        self,
        next: N,
        ctx: &mut BuildContext,
    ) -> Result<BoxConsumer<S>, BuildError> {
        let mut head = BoxConsumer::new(next);
        for processor in self.into_iter().rev() {
            head = BoxConsumer::new(build_processor(processor, head, ctx)?);
        }
        Ok(head)
    }
}

/// Object-safe form of [`Exporter`]; every exporter has it.
pub trait DynExporter<S: Signal>: Send + 'static {
    /// The component id.
    fn id(&self) -> ComponentId;

    /// Build, erasing the consumer's type.
    fn build_boxed(
        self: Box<Self>,
        ctx: &mut ComponentContext<'_>,
    ) -> Result<BoxConsumer<S>, BuildError>;
}

impl<S: Signal, E: Exporter<S>> DynExporter<S> for E {
    fn id(&self) -> ComponentId {
        Exporter::id(self)
    }

    fn build_boxed(
        self: Box<Self>,
        ctx: &mut ComponentContext<'_>,
    ) -> Result<BoxConsumer<S>, BuildError> {
        Ok(BoxConsumer::new((*self).build(ctx)?))
    }
}

/// An exporter whose type was erased at the configuration boundary.
pub type BoxExporter<S> = Box<dyn DynExporter<S>>;

impl<S: Signal> Exporter<S> for BoxExporter<S> {
    type Consumer = BoxConsumer<S>;

    fn id(&self) -> ComponentId {
        DynExporter::id(&**self)
    }

    fn build(self, ctx: &mut ComponentContext<'_>) -> Result<BoxConsumer<S>, BuildError> {
        self.build_boxed(ctx)
    }
}

/// Exporters decided at run time: every batch goes to each, as with several
/// [`PipelineBuilder::exporter`](crate::PipelineBuilder::exporter) calls.
impl<S: Signal> ExporterSet<S> for Vec<BoxExporter<S>> {
    type Consumer = FanOutAll<S>;

    fn build_set(self, ctx: &mut BuildContext) -> Result<FanOutAll<S>, BuildError> {
        if self.is_empty() {
            return Err(BuildError::InvalidConfig {
                component: ComponentId::new("pipeline"),
                path: "exporters".into(),
                message: "a pipeline needs at least one exporter".into(),
            });
        }
        let mut consumers = Vec::with_capacity(self.len());
        for exporter in self {
            let id = DynExporter::id(&*exporter);
            let mut component = ctx.component(ComponentKind::Exporter, id)?;
            consumers.push(exporter.build_boxed(&mut component)?);
        }
        Ok(FanOutAll(consumers))
    }
}

/// Sends every batch to each of its consumers, concurrently, like [`FanOut`](crate::FanOut)
/// for a list decided at run time. If any refuses, the fan-out refuses, so back-pressure
/// from any exporter reaches the receiver.
#[derive(Debug, Clone)]
pub struct FanOutAll<S: Signal>(Vec<BoxConsumer<S>>);

impl<S: Signal> FanOutAll<S> {
    /// Fan out to `consumers`.
    pub fn new(consumers: Vec<BoxConsumer<S>>) -> Self {
        Self(consumers)
    }
}

impl<S: Signal> Consumer<S> for FanOutAll<S> {
    async fn consume(&self, batch: Batch<S>) -> Result<(), ConsumeError<S>> {
        match self.0.as_slice() {
            [] => Ok(()),
            [one] => one.consume(batch).await,
            [first @ .., last] => {
                let mut sends: Vec<Pin<Box<dyn Future<Output = _> + Send + '_>>> = first
                    .iter()
                    .map(|c| {
                        Box::pin(c.consume(batch.clone()))
                            as Pin<Box<dyn Future<Output = _> + Send>>
                    })
                    .collect();
                sends.push(Box::pin(last.consume(batch)));
                let mut refused = None;
                let mut rejected = None;
                for result in join_all(sends).await {
                    match result {
                        Ok(()) => {}
                        Err(e @ ConsumeError::Refused(_)) => refused = refused.or(Some(e)),
                        Err(e) => rejected = rejected.or(Some(e)),
                    }
                }
                match (refused, rejected) {
                    (Some(e), _) | (None, Some(e)) => Err(e),
                    (None, None) => Ok(()),
                }
            }
        }
    }
}

/// Poll every future until all are done; results in order.
async fn join_all<T>(mut futures: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>) -> Vec<T> {
    let mut results: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futures.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

/// Object-safe form of [`Receiver`]; every receiver has it.
pub trait DynReceiver<S: Signal>: Send + 'static {
    /// The component id.
    fn id(&self) -> ComponentId;

    /// [`Receiver::validate`].
    fn validate_boxed(&self) -> Result<(), BuildError>;

    /// Start serving into `consumer`.
    fn start_boxed(
        self: Box<Self>,
        consumer: BoxConsumer<S>,
        ctx: ReceiverContext,
    ) -> BoxFuture<'static, Result<RunningReceiver, BoxError>>;
}

impl<S: Signal, R: Receiver<S>> DynReceiver<S> for R {
    fn id(&self) -> ComponentId {
        Receiver::id(self)
    }

    fn validate_boxed(&self) -> Result<(), BuildError> {
        Receiver::validate(self)
    }

    fn start_boxed(
        self: Box<Self>,
        consumer: BoxConsumer<S>,
        ctx: ReceiverContext,
    ) -> BoxFuture<'static, Result<RunningReceiver, BoxError>> {
        Box::pin((*self).start(consumer, ctx))
    }
}

/// A receiver whose type was erased at the configuration boundary.
pub type BoxReceiver<S> = Box<dyn DynReceiver<S>>;

impl<S: Signal> Receiver<S> for BoxReceiver<S> {
    fn id(&self) -> ComponentId {
        DynReceiver::id(&**self)
    }

    fn validate(&self) -> Result<(), BuildError> {
        self.validate_boxed()
    }

    fn start<C: Consumer<S> + Clone>(
        self,
        consumer: C,
        ctx: ReceiverContext,
    ) -> impl std::future::Future<Output = Result<RunningReceiver, BoxError>> + Send {
        self.start_boxed(BoxConsumer::new(consumer), ctx)
    }
}

/// Receivers started outside a typed pipeline: one receiver can then feed several
/// pipelines (the loader starts it with a [`FanOutAll`] over their heads). Start them
/// after the pipelines they feed, and shut them down before.
pub struct ReceiverGroup {
    telemetry: Telemetry,
    shutdown_tx: watch::Sender<Option<Instant>>,
    shutdown: ShutdownSignal,
    running: Vec<(ComponentId, RunningReceiver)>,
}

impl fmt::Debug for ReceiverGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiverGroup")
            .field(
                "receivers",
                &self
                    .running
                    .iter()
                    .map(|(id, _)| id.to_string())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ReceiverGroup {
    /// An empty group counting into `telemetry`.
    pub fn new(telemetry: Telemetry) -> Self {
        let (shutdown_tx, shutdown) = ShutdownSignal::new();
        Self {
            telemetry,
            shutdown_tx,
            shutdown,
            running: Vec::new(),
        }
    }

    /// Start `receiver` for signal `S` into `consumer`, counting under pipeline label
    /// `pipeline`.
    pub async fn start<S: Signal, R: Receiver<S>>(
        &mut self,
        receiver: R,
        consumer: BoxConsumer<S>,
        pipeline: &str,
    ) -> Result<(), StartError> {
        let id = receiver.id();
        let ctx = ReceiverContext {
            telemetry: self.telemetry.component(
                ComponentKind::Receiver,
                id.clone(),
                pipeline.to_string(),
                S::ITEM,
            ),
            shutdown: self.shutdown.clone(),
            children: Children::detached(self.telemetry.clone(), pipeline, id.clone()),
        };
        let running = receiver
            .start(consumer, ctx)
            .await
            .map_err(|e| StartError::from_boxed(id.clone(), e))?;
        self.running.push((id, running));
        Ok(())
    }

    /// Stop every receiver and wait for them until `deadline`.
    pub async fn shutdown(self, deadline: Instant) -> Result<(), ShutdownError> {
        let now = Instant::now();
        let _ = self
            .shutdown_tx
            .send(Some(now + deadline.saturating_duration_since(now) / 2));
        let mut failures = Vec::new();
        crate::runtime::stop_receivers(self.running, deadline, &mut failures).await;
        ShutdownError::from_failures(failures)
    }
}

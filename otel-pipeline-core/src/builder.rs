//! The typed pipeline builder.
//!
//! `Pipeline::traces().receiver(r).processor(a).processor(b).exporter(e).build()` composes
//! with static dispatch: every method returns a builder whose type records what was added,
//! so the finished chain is one concrete type (as `tower::ServiceBuilder` does with
//! `Stack`). Components are checked against the pipeline's signal at compile time:
//!
//! ```compile_fail
//! # use otel_pipeline_core::{Pipeline, Traces, testing::InMemoryExporter, Transform};
//! // A processor written for traces cannot go into a metrics pipeline.
//! let only_traces = Transform::<Traces, _>::new("rename", |_data: &mut _| 0);
//! let (exporter, _spans) = InMemoryExporter::new();
//! let _ = Pipeline::metrics().processor(only_traces).exporter(exporter);
//! ```
//!
//! The same check with a metrics processor compiles:
//!
//! ```
//! # use otel_pipeline_core::{Pipeline, Metrics, testing::InMemoryExporter, Transform};
//! let for_metrics = Transform::<Metrics, _>::new("rename", |_data: &mut _| 0);
//! let (exporter, _points) = InMemoryExporter::new();
//! let _ = Pipeline::metrics().processor(for_metrics).exporter(exporter).build();
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::component::{
    BuildContext, ComponentContext, Exporter, Processor, Receiver, ReceiverContext,
    RunningReceiver, ShutdownSignal,
};
use crate::consumer::{ConsumeError, Consumer, FanOut};
use crate::health::Health;
use crate::id::StartError;
use crate::id::{BuildError, ComponentId, ComponentKind};
use crate::runtime::RunningPipeline;
use crate::signal::{Batch, Logs, Metrics, Signal, Traces};
use crate::telemetry::{ComponentTelemetry, Telemetry};

/// Entry point of the typed builder.
#[derive(Debug)]
pub struct Pipeline;

impl Pipeline {
    /// A trace pipeline.
    pub fn traces() -> PipelineBuilder<Traces, NoReceivers, Identity, NoExporters> {
        PipelineBuilder::new()
    }

    /// A metrics pipeline.
    pub fn metrics() -> PipelineBuilder<Metrics, NoReceivers, Identity, NoExporters> {
        PipelineBuilder::new()
    }

    /// A logs pipeline.
    pub fn logs() -> PipelineBuilder<Logs, NoReceivers, Identity, NoExporters> {
        PipelineBuilder::new()
    }

    /// A pipeline of signal `S`, for code generic over the signal.
    pub fn new_for<S: Signal>() -> PipelineBuilder<S, NoReceivers, Identity, NoExporters> {
        PipelineBuilder::new()
    }
}

/// A pipeline under construction: `R` receivers, `P` processor chain, `E` exporter set.
#[must_use = "a builder does nothing until built and started"]
pub struct PipelineBuilder<S, R, P, E> {
    name: String,
    telemetry: Option<Telemetry>,
    receivers: R,
    processors: P,
    exporters: E,
    _signal: PhantomData<fn() -> S>,
}

impl<S, R, P, E> fmt::Debug for PipelineBuilder<S, R, P, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<S: Signal> PipelineBuilder<S, NoReceivers, Identity, NoExporters> {
    fn new() -> Self {
        Self {
            name: S::NAME.to_string(),
            telemetry: None,
            receivers: NoReceivers,
            processors: Identity,
            exporters: NoExporters,
            _signal: PhantomData,
        }
    }
}

impl<S: Signal, R, P, E> PipelineBuilder<S, R, P, E> {
    /// Name the pipeline (default: the signal, `traces`); appears in self-telemetry.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Count into this registry (default: a new one, readable from the running pipeline).
    pub fn telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// Add a receiver. Several receivers feed the same head of the chain.
    pub fn receiver<X: Receiver<S>>(self, receiver: X) -> PipelineBuilder<S, (R, X), P, E> {
        PipelineBuilder {
            name: self.name,
            telemetry: self.telemetry,
            receivers: (self.receivers, receiver),
            processors: self.processors,
            exporters: self.exporters,
            _signal: PhantomData,
        }
    }

    /// Append a processor; data flows through processors in the order they are added.
    pub fn processor<X: Processor<S>>(self, processor: X) -> PipelineBuilder<S, R, Stack<P, X>, E> {
        PipelineBuilder {
            name: self.name,
            telemetry: self.telemetry,
            receivers: self.receivers,
            processors: Stack {
                first: self.processors,
                last: processor,
            },
            exporters: self.exporters,
            _signal: PhantomData,
        }
    }

    /// Append a chain of processors decided at run time, such as a
    /// `Vec<`[`BoxProcessor`](crate::boxed::BoxProcessor)`<S>>`.
    pub fn processors<X: ProcessorChain<S>>(
        self,
        chain: X,
    ) -> PipelineBuilder<S, R, Then<P, X>, E> {
        PipelineBuilder {
            name: self.name,
            telemetry: self.telemetry,
            receivers: self.receivers,
            processors: Then {
                first: self.processors,
                rest: chain,
            },
            exporters: self.exporters,
            _signal: PhantomData,
        }
    }

    /// Add an exporter. With several, every batch fans out to each.
    pub fn exporter<X: Exporter<S>>(self, exporter: X) -> PipelineBuilder<S, R, P, E::Output>
    where
        E: AddExporter<S, X>,
    {
        PipelineBuilder {
            name: self.name,
            telemetry: self.telemetry,
            receivers: self.receivers,
            processors: self.processors,
            exporters: self.exporters.add(exporter),
            _signal: PhantomData,
        }
    }
}

impl<S: Signal, R, P> PipelineBuilder<S, R, P, NoExporters> {
    /// Use exporters decided at run time (every batch goes to each), such as a
    /// `Vec<`[`BoxExporter`](crate::boxed::BoxExporter)`<S>>`.
    pub fn exporters<X: ExporterSet<S>>(self, set: X) -> PipelineBuilder<S, R, P, X> {
        PipelineBuilder {
            name: self.name,
            telemetry: self.telemetry,
            receivers: self.receivers,
            processors: self.processors,
            exporters: set,
            _signal: PhantomData,
        }
    }
}

impl<S, R, P, E> PipelineBuilder<S, R, P, E>
where
    S: Signal,
    R: ReceiverSet<S>,
    P: ProcessorChain<S>,
    E: ExporterSet<S>,
{
    /// Build exporters and processors (validating their configuration). Receivers are
    /// started by [`BuiltPipeline::start`].
    pub fn build(self) -> Result<Built<S, R, P, E>, BuildError> {
        let telemetry = self.telemetry.unwrap_or_default();
        self.receivers.validate_all(&mut Vec::new(), &self.name)?;
        let mut ctx = BuildContext::new::<S>(self.name, telemetry);
        let tail = self.exporters.build_set(&mut ctx)?;
        let head = self.processors.build_chain(tail, &mut ctx)?;
        Ok(BuiltPipeline {
            ctx,
            receivers: self.receivers,
            head: Arc::new(head),
            _signal: PhantomData,
        })
    }
}

/// What [`PipelineBuilder::build`] returns for receivers `R`, processors `P`, exporters `E`.
pub type Built<S, R, P, E> =
    BuiltPipeline<S, R, <P as ProcessorChain<S>>::Consumer<<E as ExporterSet<S>>::Consumer>>;

/// A pipeline whose exporters and processors are built, ready to start.
pub struct BuiltPipeline<S, R, C> {
    ctx: BuildContext,
    receivers: R,
    head: Arc<C>,
    _signal: PhantomData<fn() -> S>,
}

impl<S, R, C> fmt::Debug for BuiltPipeline<S, R, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuiltPipeline")
            .field("pipeline", &self.ctx.pipeline())
            .field("stages", &self.ctx.stages)
            .finish_non_exhaustive()
    }
}

impl<S: Signal, R: ReceiverSet<S>, C: Consumer<S>> BuiltPipeline<S, R, C> {
    /// The head of the chain: push batches here directly to bypass receivers.
    pub fn consumer(&self) -> Arc<C> {
        Arc::clone(&self.head)
    }

    /// Start exporters, then processors, then receivers. On any failure, what was
    /// started is shut down again and the error names the component.
    pub async fn start(mut self) -> Result<RunningPipeline, StartError> {
        let health = Health::new(std::mem::take(&mut self.ctx.gates));
        let (shutdown_tx, shutdown) = ShutdownSignal::new();
        let mut running = RunningPipeline::new(self.ctx, shutdown_tx, health)
            .start_stages()
            .await?;
        let mut started = Vec::new();
        let result = self
            .receivers
            .start_all(
                Arc::clone(&self.head),
                &mut ReceiverStart {
                    telemetry: running.telemetry().clone(),
                    pipeline: running.name().to_string(),
                    shutdown,
                    started: &mut started,
                },
            )
            .await;
        running.set_receivers(started);
        match result {
            Ok(()) => {
                running.health().set_ready();
                Ok(running)
            }
            Err(e) => {
                let _ = running.shutdown(std::time::Duration::from_secs(5)).await;
                Err(e)
            }
        }
    }
}

/// State passed to every receiver while a pipeline starts.
#[derive(Debug)]
pub struct ReceiverStart<'a> {
    telemetry: Telemetry,
    pipeline: String,
    shutdown: ShutdownSignal,
    started: &'a mut Vec<(crate::ComponentId, RunningReceiver)>,
}

/// The set of receivers of a pipeline (a type-level list built by
/// [`PipelineBuilder::receiver`]).
pub trait ReceiverSet<S: Signal>: Send + 'static {
    /// Validate every receiver in the set, and refuse two with one id; `ids` collects the
    /// ids seen so far.
    fn validate_all(&self, ids: &mut Vec<ComponentId>, pipeline: &str) -> Result<(), BuildError>;

    /// Start every receiver in the set into `consumer`.
    fn start_all<C: Consumer<S>>(
        self,
        consumer: Arc<C>,
        start: &mut ReceiverStart<'_>,
    ) -> impl std::future::Future<Output = Result<(), StartError>> + Send;
}

/// No receivers: the pipeline is fed through [`BuiltPipeline::consumer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReceivers;

impl<S: Signal> ReceiverSet<S> for NoReceivers {
    fn validate_all(&self, _ids: &mut Vec<ComponentId>, _pipeline: &str) -> Result<(), BuildError> {
        Ok(())
    }

    async fn start_all<C: Consumer<S>>(
        self,
        _consumer: Arc<C>,
        _start: &mut ReceiverStart<'_>,
    ) -> Result<(), StartError> {
        Ok(())
    }
}

impl<S: Signal, Rest: ReceiverSet<S>, X: Receiver<S>> ReceiverSet<S> for (Rest, X) {
    fn validate_all(&self, ids: &mut Vec<ComponentId>, pipeline: &str) -> Result<(), BuildError> {
        let (rest, receiver) = self;
        rest.validate_all(ids, pipeline)?;
        let id = receiver.id();
        if ids.contains(&id) {
            return Err(BuildError::DuplicateId {
                kind: ComponentKind::Receiver,
                id,
                pipeline: pipeline.to_string(),
            });
        }
        receiver.validate()?;
        ids.push(id);
        Ok(())
    }

    async fn start_all<C: Consumer<S>>(
        self,
        consumer: Arc<C>,
        start: &mut ReceiverStart<'_>,
    ) -> Result<(), StartError> {
        let (rest, receiver) = self;
        rest.start_all(Arc::clone(&consumer), start).await?;
        let id = receiver.id();
        if start.started.iter().any(|(seen, _)| *seen == id) {
            return Err(StartError::new(
                id.clone(),
                BuildError::DuplicateId {
                    kind: ComponentKind::Receiver,
                    id,
                    pipeline: start.pipeline.clone(),
                },
            ));
        }
        let telemetry = start.telemetry.component(
            ComponentKind::Receiver,
            id.clone(),
            start.pipeline.clone(),
            S::ITEM,
        );
        let ctx = ReceiverContext {
            telemetry,
            shutdown: start.shutdown.clone(),
            children: crate::component::Children::detached(
                start.telemetry.clone(),
                start.pipeline.clone(),
                id.clone(),
            ),
        };
        let running = receiver
            .start(consumer, ctx)
            .await
            .map_err(|e| StartError::from_boxed(id.clone(), e))?;
        start.started.push((id, running));
        Ok(())
    }
}

/// The processors of a pipeline, in order (a type-level list built by
/// [`PipelineBuilder::processor`]).
pub trait ProcessorChain<S: Signal>: Send + 'static {
    /// The head consumer the chain builds in front of `N`.
    type Consumer<N: Consumer<S>>: Consumer<S>;

    /// Build every processor, last first.
    fn build_chain<N: Consumer<S>>(
        self,
        next: N,
        ctx: &mut BuildContext,
    ) -> Result<Self::Consumer<N>, BuildError>;
}

/// The empty processor chain.
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity;

impl<S: Signal> ProcessorChain<S> for Identity {
    type Consumer<N: Consumer<S>> = N;

    fn build_chain<N: Consumer<S>>(
        self,
        next: N,
        _ctx: &mut BuildContext,
    ) -> Result<N, BuildError> {
        Ok(next)
    }
}

/// A processor chain `first` followed by processor `last`.
#[derive(Debug, Clone)]
pub struct Stack<First, Last> {
    first: First,
    last: Last,
}

impl<S: Signal, First: ProcessorChain<S>, Last: Processor<S>> ProcessorChain<S>
    for Stack<First, Last>
{
    type Consumer<N: Consumer<S>> = First::Consumer<CountIn<Last::Consumer<CountOut<N>>>>;

    fn build_chain<N: Consumer<S>>(
        self,
        next: N,
        ctx: &mut BuildContext,
    ) -> Result<Self::Consumer<N>, BuildError> {
        let counted = build_processor(self.last, next, ctx)?;
        self.first.build_chain(counted, ctx)
    }
}

/// Build one processor in front of `next`, with its own component context and the
/// incoming/outgoing counters every processor gets.
pub(crate) fn build_processor<S: Signal, P: Processor<S>, N: Consumer<S>>(
    processor: P,
    next: N,
    ctx: &mut BuildContext,
) -> Result<CountIn<P::Consumer<CountOut<N>>>, BuildError> {
    let id = processor.id();
    let mut component = ctx.component(ComponentKind::Processor, id)?;
    let telemetry = component.telemetry();
    let out = CountOut {
        inner: next,
        telemetry: Arc::clone(&telemetry),
    };
    let built = processor.build(out, &mut component)?;
    Ok(CountIn {
        inner: built,
        telemetry,
    })
}

/// A processor chain `first`, then the chain `rest` (what
/// [`PipelineBuilder::processors`] appends).
#[derive(Debug, Clone)]
pub struct Then<First, Rest> {
    first: First,
    rest: Rest,
}

impl<S: Signal, First: ProcessorChain<S>, Rest: ProcessorChain<S>> ProcessorChain<S>
    for Then<First, Rest>
{
    type Consumer<N: Consumer<S>> = First::Consumer<Rest::Consumer<N>>;

    fn build_chain<N: Consumer<S>>(
        self,
        next: N,
        ctx: &mut BuildContext,
    ) -> Result<Self::Consumer<N>, BuildError> {
        let rest = self.rest.build_chain(next, ctx)?;
        self.first.build_chain(rest, ctx)
    }
}

/// Counts what enters a processor (`otelcol_processor_incoming_*`, `..._refused_*`).
#[derive(Debug)]
pub struct CountIn<C> {
    inner: C,
    telemetry: Arc<ComponentTelemetry>,
}

impl<S: Signal, C: Consumer<S>> Consumer<S> for CountIn<C> {
    async fn consume(&self, batch: Batch<S>) -> Result<(), ConsumeError<S>> {
        let n = batch.item_count();
        let result = self.inner.consume(batch).await;
        match &result {
            Err(ConsumeError::Refused(_)) => self.telemetry.add_refused(n),
            _ => self.telemetry.add_accepted(n),
        }
        result
    }
}

/// Counts what a processor passes on (`otelcol_processor_outgoing_*`): items the next
/// stage took or rejected, not those it refused (they are still held or handed back).
#[derive(Debug)]
pub struct CountOut<C> {
    inner: C,
    telemetry: Arc<ComponentTelemetry>,
}

impl<S: Signal, C: Consumer<S>> Consumer<S> for CountOut<C> {
    async fn consume(&self, batch: Batch<S>) -> Result<(), ConsumeError<S>> {
        let n = batch.item_count();
        let result = self.inner.consume(batch).await;
        if !matches!(result, Err(ConsumeError::Refused(_))) {
            self.telemetry.add_outgoing(n);
        }
        result
    }
}

/// The exporters of a pipeline (a type-level list built by [`PipelineBuilder::exporter`]).
pub trait ExporterSet<S: Signal>: Send + 'static {
    /// The terminal consumer: one exporter, or a fan-out to several.
    type Consumer: Consumer<S>;

    /// Build every exporter in order.
    fn build_set(self, ctx: &mut BuildContext) -> Result<Self::Consumer, BuildError>;
}

/// Adds one exporter to a set; how `.exporter()` grows the builder's type.
pub trait AddExporter<S: Signal, X: Exporter<S>> {
    /// The set with `X` added.
    type Output;
    /// Add it.
    fn add(self, exporter: X) -> Self::Output;
}

/// No exporter yet. A pipeline without one does not build: `build` needs an
/// [`ExporterSet`], and this is not one.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoExporters;

/// A set of one exporter.
#[derive(Debug)]
pub struct OneExporter<X>(X);

/// A set of several exporters, fanned out to.
#[derive(Debug)]
pub struct ManyExporters<A, B>(A, B);

impl<S: Signal, X: Exporter<S>> AddExporter<S, X> for NoExporters {
    type Output = OneExporter<X>;
    fn add(self, exporter: X) -> Self::Output {
        OneExporter(exporter)
    }
}

impl<S: Signal, A: Exporter<S>, X: Exporter<S>> AddExporter<S, X> for OneExporter<A> {
    type Output = ManyExporters<OneExporter<A>, OneExporter<X>>;
    fn add(self, exporter: X) -> Self::Output {
        ManyExporters(self, OneExporter(exporter))
    }
}

impl<S: Signal, A, B, X: Exporter<S>> AddExporter<S, X> for ManyExporters<A, B> {
    type Output = ManyExporters<ManyExporters<A, B>, OneExporter<X>>;
    fn add(self, exporter: X) -> Self::Output {
        ManyExporters(self, OneExporter(exporter))
    }
}

impl<S: Signal, X: Exporter<S>> ExporterSet<S> for OneExporter<X> {
    type Consumer = X::Consumer;

    fn build_set(self, ctx: &mut BuildContext) -> Result<Self::Consumer, BuildError> {
        let id = self.0.id();
        let mut component: ComponentContext<'_> = ctx.component(ComponentKind::Exporter, id)?;
        self.0.build(&mut component)
    }
}

impl<S: Signal, A: ExporterSet<S>, B: ExporterSet<S>> ExporterSet<S> for ManyExporters<A, B> {
    type Consumer = FanOut<A::Consumer, B::Consumer>;

    fn build_set(self, ctx: &mut BuildContext) -> Result<Self::Consumer, BuildError> {
        let a = self.0.build_set(ctx)?;
        let b = self.1.build_set(ctx)?;
        Ok(FanOut::new(a, b))
    }
}

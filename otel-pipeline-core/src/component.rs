//! The component traits: [`Receiver`], [`Processor`], [`Exporter`], and the [`Lifecycle`]
//! hooks through which stateful components start, flush and shut down.
//!
//! # How a pipeline is built
//! The builder builds from the end: first the exporters, then the processors from last to
//! first (each wraps the consumer built before it, as `tower::Layer` wraps a service), then
//! it starts the receivers with the head of the chain. A component that owns state or a
//! background task registers a [`Lifecycle`] in its [`ComponentContext`]; the runtime starts
//! those in build order (exporters first) and shuts them down in reverse (processors from
//! first to last, exporters at the end), so every stage flushes into a stage that is still
//! running.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::consumer::{BoxFuture, Consumer};
use crate::id::{BoxError, BuildError, ComponentId, ComponentKind, ShutdownError, StartError};
use crate::signal::Signal;
use crate::telemetry::{ComponentTelemetry, Telemetry};

/// Start, flush and shutdown hooks of a component that owns state or tasks.
///
/// Object-safe on purpose: lifecycle calls happen a few times per run, so boxing their
/// futures costs nothing that matters, and it lets one list hold every stage.
pub trait Lifecycle: Send + Sync + 'static {
    /// Called once before any data flows; spawn background tasks here.
    fn start(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async { Ok(()) })
    }

    /// Push out whatever is held without stopping.
    fn force_flush(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async { Ok(()) })
    }

    /// Stop: flush everything held downstream (or drop it, counted) before `deadline`.
    /// Upstream stages have already stopped when this is called.
    fn shutdown(&self, deadline: Instant) -> BoxFuture<'_, Result<(), BoxError>>;
}

/// A registered lifecycle, as the runtime keeps it.
pub(crate) struct Stage {
    pub(crate) kind: ComponentKind,
    pub(crate) id: ComponentId,
    pub(crate) lifecycle: Arc<dyn Lifecycle>,
}

/// Start `stages` in order; if one fails, shut down those already started (in reverse,
/// by `rollback_deadline`) and name the one that failed.
pub(crate) async fn start_stages(
    stages: &[Stage],
    rollback_deadline: impl Fn() -> Instant,
) -> Result<(), StartError> {
    for (i, stage) in stages.iter().enumerate() {
        if let Err(source) = stage.lifecycle.start().await {
            let deadline = rollback_deadline();
            for started in stages[..i].iter().rev() {
                let _ = started.lifecycle.shutdown(deadline).await;
            }
            return Err(StartError::from_boxed(stage.id.clone(), source));
        }
    }
    Ok(())
}

/// Shut `stages` down in reverse order, each within `deadline`; collect what went wrong.
pub(crate) async fn shutdown_stages(
    stages: &[Stage],
    deadline: Instant,
    failures: &mut Vec<(ComponentId, String)>,
) {
    for stage in stages.iter().rev() {
        match tokio::time::timeout_at(deadline, stage.lifecycle.shutdown(deadline)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push((stage.id.clone(), e.to_string())),
            Err(_) => failures.push((
                stage.id.clone(),
                "did not finish before the deadline".to_string(),
            )),
        }
    }
}

/// Ask `stages`, last registered first, to push out what they hold.
pub(crate) async fn flush_stages(stages: &[Stage], failures: &mut Vec<(ComponentId, String)>) {
    for stage in stages.iter().rev() {
        if let Err(e) = stage.lifecycle.force_flush().await {
            failures.push((stage.id.clone(), e.to_string()));
        }
    }
}

/// Pipeline-wide state while a pipeline is built.
#[derive(Debug)]
pub struct BuildContext {
    pipeline: String,
    item: &'static str,
    telemetry: Telemetry,
    /// Set when this context builds a component's child at run time.
    parent: Option<ComponentId>,
    seen: Vec<(ComponentKind, ComponentId)>,
    pub(crate) stages: Vec<Stage>,
    /// Readiness gates components registered, named `<id>: <what>`.
    pub(crate) gates: Vec<(String, crate::health::ReadinessGate)>,
}

impl fmt::Debug for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.id)
    }
}

impl BuildContext {
    /// A context for pipeline `pipeline` of signal `S`, counting into `telemetry`.
    pub fn new<S: Signal>(pipeline: impl Into<String>, telemetry: Telemetry) -> Self {
        Self {
            pipeline: pipeline.into(),
            item: S::ITEM,
            telemetry,
            parent: None,
            seen: Vec::new(),
            stages: Vec::new(),
            gates: Vec::new(),
        }
    }

    /// The pipeline's name (`traces`, `traces/agent`).
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// The telemetry registry.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// The context of one component: its counters and its lifecycle registration.
    /// Fails if a component of the same kind and id is already in this pipeline.
    pub fn component(
        &mut self,
        kind: ComponentKind,
        id: ComponentId,
    ) -> Result<ComponentContext<'_>, BuildError> {
        if self.seen.iter().any(|(k, i)| *k == kind && *i == id) {
            return Err(BuildError::DuplicateId {
                kind,
                id,
                pipeline: self.pipeline.clone(),
            });
        }
        self.seen.push((kind, id.clone()));
        let telemetry = match &self.parent {
            None => self
                .telemetry
                .component(kind, id.clone(), self.pipeline.clone(), self.item),
            Some(parent) => self.telemetry.child_component(
                kind,
                id.clone(),
                self.pipeline.clone(),
                self.item,
                parent.clone(),
            ),
        };
        Ok(ComponentContext {
            build: self,
            kind,
            id,
            telemetry,
        })
    }
}

/// What a component sees while it is built: its id, its counters, and where to register
/// its [`Lifecycle`].
#[derive(Debug)]
pub struct ComponentContext<'a> {
    build: &'a mut BuildContext,
    kind: ComponentKind,
    id: ComponentId,
    telemetry: Arc<ComponentTelemetry>,
}

impl ComponentContext<'_> {
    /// The component's id.
    pub fn id(&self) -> &ComponentId {
        &self.id
    }

    /// The pipeline being built.
    pub fn pipeline(&self) -> &str {
        &self.build.pipeline
    }

    /// The component's counters.
    pub fn telemetry(&self) -> Arc<ComponentTelemetry> {
        Arc::clone(&self.telemetry)
    }

    /// Register start/flush/shutdown hooks.
    pub fn register_lifecycle(&mut self, lifecycle: Arc<dyn Lifecycle>) {
        self.build.stages.push(Stage {
            kind: self.kind,
            id: self.id.clone(),
            lifecycle,
        });
    }

    /// How many lifecycles the pipeline has registered so far.
    pub(crate) fn stages_len(&self) -> usize {
        self.build.stages.len()
    }

    /// Take back the lifecycles registered since `from` (a shared connector runs them
    /// itself).
    pub(crate) fn take_stages_from(&mut self, from: usize) -> Vec<Stage> {
        self.build.stages.split_off(from)
    }

    /// An [`BuildError::InvalidConfig`] for this component.
    pub fn invalid(&self, path: impl Into<String>, message: impl Into<String>) -> BuildError {
        BuildError::InvalidConfig {
            component: self.id.clone(),
            path: path.into(),
            message: message.into(),
        }
    }

    /// A gate that holds the pipeline's readiness closed until the component opens it,
    /// such as a metadata cache before its first full sync. `what` is shown in
    /// [`Health::waiting_for`](crate::Health::waiting_for).
    pub fn readiness_gate(&mut self, what: &str) -> crate::health::ReadinessGate {
        let gate = crate::health::ReadinessGate::closed();
        self.build
            .gates
            .push((format!("{}: {what}", self.id), gate.clone()));
        gate
    }

    /// A factory for the components this one creates while the pipeline runs, such as
    /// the trace router's exporter per endpoint. Keep it past `build`: it is owned and
    /// cheap to clone.
    pub fn children(&self) -> Children {
        Children {
            telemetry: self.build.telemetry.clone(),
            pipeline: self.build.pipeline.clone(),
            parent: self.id.clone(),
        }
    }
}

/// Builds components at run time on behalf of a parent component.
///
/// A child is built by the same [`Exporter::build`] / [`Processor::build`] as a component
/// of the typed builder, gets its own counters in the parent's [`Telemetry`] (with a
/// `parent` attribute naming the parent), and has its own lifecycle, which the parent
/// drives: [`Child::start`] before use, [`Child::shutdown`] when it goes. A child rebuilt
/// under the same id continues the counters of the one before it, so endpoints that come
/// and go neither lose counts nor grow the registry.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use otel_pipeline_core::{ComponentId, ComponentKind, Telemetry, Traces};
/// use otel_pipeline_core::testing::{InMemoryExporter, generate_traces};
/// use otel_pipeline_core::{Children, Consumer};
///
/// let telemetry = Telemetry::new();
/// let children = Children::detached(telemetry.clone(), "traces", ComponentId::new("router"));
/// let (exporter, exported) = InMemoryExporter::new();
/// let child = children.exporter::<Traces, _>(exporter)?;
/// child.start().await?;
/// child.consumer().consume(generate_traces(2, 3, 7).into()).await?;
/// child.shutdown(tokio::time::Instant::now() + std::time::Duration::from_secs(1)).await?;
/// assert_eq!(exported.item_count(), 6);
/// assert!(telemetry.find(ComponentKind::Exporter, "memory").is_some());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Children {
    telemetry: Telemetry,
    pipeline: String,
    parent: ComponentId,
}

impl Children {
    /// A factory outside any pipeline build, for a component that owns children without
    /// being built by the typed builder (and for tests).
    pub fn detached(
        telemetry: Telemetry,
        pipeline: impl Into<String>,
        parent: ComponentId,
    ) -> Self {
        Self {
            telemetry,
            pipeline: pipeline.into(),
            parent,
        }
    }

    /// The parent's id.
    pub fn parent(&self) -> &ComponentId {
        &self.parent
    }

    fn context<S: Signal>(&self) -> BuildContext {
        let mut ctx = BuildContext::new::<S>(self.pipeline.clone(), self.telemetry.clone());
        ctx.parent = Some(self.parent.clone());
        ctx
    }

    /// Build an exporter as a child. Start it with [`Child::start`] before sending to it.
    pub fn exporter<S: Signal, E: Exporter<S>>(
        &self,
        exporter: E,
    ) -> Result<Child<E::Consumer>, BuildError> {
        let mut build = self.context::<S>();
        let id = exporter.id();
        let mut ctx = build.component(ComponentKind::Exporter, id.clone())?;
        let telemetry = ctx.telemetry();
        let consumer = exporter.build(&mut ctx)?;
        Ok(Child {
            id,
            consumer,
            telemetry,
            stages: build.stages,
        })
    }

    /// Build a processor in front of `next` as a child.
    pub fn processor<S: Signal, P: Processor<S>, N: Consumer<S>>(
        &self,
        processor: P,
        next: N,
    ) -> Result<Child<P::Consumer<N>>, BuildError> {
        let mut build = self.context::<S>();
        let id = processor.id();
        let mut ctx = build.component(ComponentKind::Processor, id.clone())?;
        let telemetry = ctx.telemetry();
        let consumer = processor.build(next, &mut ctx)?;
        Ok(Child {
            id,
            consumer,
            telemetry,
            stages: build.stages,
        })
    }
}

/// A component built at run time by its parent (see [`Children`]): its consumer, its
/// counters and its lifecycle.
pub struct Child<C> {
    id: ComponentId,
    consumer: C,
    telemetry: Arc<ComponentTelemetry>,
    stages: Vec<Stage>,
}

impl<C> fmt::Debug for Child<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("id", &self.id)
            .field("stages", &self.stages)
            .finish_non_exhaustive()
    }
}

impl<C> Child<C> {
    /// The child's id.
    pub fn id(&self) -> &ComponentId {
        &self.id
    }

    /// Where to send the child data.
    pub fn consumer(&self) -> &C {
        &self.consumer
    }

    /// The child's counters.
    pub fn telemetry(&self) -> &Arc<ComponentTelemetry> {
        &self.telemetry
    }

    /// Start the child's stages in build order. If one fails, those already started are
    /// shut down again (within one second) and the error names the one that failed.
    pub async fn start(&self) -> Result<(), StartError> {
        start_stages(&self.stages, || {
            Instant::now() + std::time::Duration::from_secs(1)
        })
        .await
    }

    /// Ask the child to push out what it holds.
    pub async fn force_flush(&self) -> Result<(), ShutdownError> {
        let mut failures = Vec::new();
        flush_stages(&self.stages, &mut failures).await;
        ShutdownError::from_failures(failures)
    }

    /// Drain and stop the child by `deadline`: its queues deliver what they hold, and
    /// whatever cannot be delivered in time is counted by the child.
    pub async fn shutdown(&self, deadline: Instant) -> Result<(), ShutdownError> {
        let mut failures = Vec::new();
        shutdown_stages(&self.stages, deadline, &mut failures).await;
        ShutdownError::from_failures(failures)
    }
}

/// A processor: given the next consumer, it builds the consumer that stands before it.
///
/// Implement it for a signal only when the processor understands that signal; the typed
/// builder then refuses at compile time to put it anywhere else.
///
/// ```
/// use otel_pipeline_core::{
///     Batch, BuildError, ComponentContext, ComponentId, ConsumeError, Consumer, Processor, Traces,
/// };
///
/// /// Drops batches that hold no spans.
/// #[derive(Debug)]
/// struct DropEmpty;
///
/// #[derive(Debug)]
/// struct DropEmptyConsumer<N>(N);
///
/// impl<N: Consumer<Traces>> Consumer<Traces> for DropEmptyConsumer<N> {
///     async fn consume(&self, batch: Batch<Traces>) -> Result<(), ConsumeError<Traces>> {
///         if batch.item_count() == 0 { return Ok(()); }
///         self.0.consume(batch).await
///     }
/// }
///
/// impl Processor<Traces> for DropEmpty {
///     type Consumer<N: Consumer<Traces>> = DropEmptyConsumer<N>;
///     fn id(&self) -> ComponentId { ComponentId::new("drop_empty") }
///     fn build<N: Consumer<Traces>>(
///         self, next: N, _ctx: &mut ComponentContext<'_>,
///     ) -> Result<Self::Consumer<N>, BuildError> {
///         Ok(DropEmptyConsumer(next))
///     }
/// }
/// ```
pub trait Processor<S: Signal>: Send + 'static {
    /// The consumer this processor builds in front of `N`.
    type Consumer<N: Consumer<S>>: Consumer<S>;

    /// The component id (`batch`, `filter/health`).
    fn id(&self) -> ComponentId;

    /// Validate the configuration and build the consumer in front of `next`.
    fn build<N: Consumer<S>>(
        self,
        next: N,
        ctx: &mut ComponentContext<'_>,
    ) -> Result<Self::Consumer<N>, BuildError>;
}

/// An exporter: the terminal consumer of a pipeline.
pub trait Exporter<S: Signal>: Send + 'static {
    /// The consumer that sends data out.
    type Consumer: Consumer<S>;

    /// The component id (`otlp`, `debug`).
    fn id(&self) -> ComponentId;

    /// Validate the configuration and build the consumer. Register a [`Lifecycle`] to
    /// drain queues on shutdown.
    fn build(self, ctx: &mut ComponentContext<'_>) -> Result<Self::Consumer, BuildError>;
}

/// Tells a running receiver to stop accepting.
#[derive(Debug, Clone)]
pub struct ShutdownSignal(watch::Receiver<Option<Instant>>);

impl ShutdownSignal {
    pub(crate) fn new() -> (watch::Sender<Option<Instant>>, Self) {
        let (tx, rx) = watch::channel(None);
        (tx, Self(rx))
    }

    /// Whether shutdown has begun.
    pub fn is_shutdown(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// The instant by which the receiver should have stopped (drained its connections),
    /// once shutdown has begun: the caller's deadline, less the share the pipeline's
    /// stages need after the receivers.
    pub fn deadline(&self) -> Option<Instant> {
        *self.0.borrow()
    }

    /// Resolves when shutdown begins (at once if it already has), with the instant by
    /// which the receiver should have stopped.
    pub async fn wait(&mut self) -> Instant {
        // An error means the runtime is gone, which is shutdown too: stop now.
        match self.0.wait_for(Option::is_some).await {
            Ok(deadline) => deadline.unwrap_or_else(Instant::now),
            Err(_) => Instant::now(),
        }
    }
}

/// What a receiver gets when it starts.
#[derive(Debug)]
pub struct ReceiverContext {
    /// The receiver's counters.
    pub telemetry: Arc<ComponentTelemetry>,
    /// Fires when the receiver must stop accepting.
    pub shutdown: ShutdownSignal,
    /// Builds the components the receiver creates while it runs.
    pub children: Children,
}

/// A receiver that has started: it has bound its sockets and accepts data until its
/// [`ShutdownSignal`] fires, then the task ends.
#[derive(Debug)]
pub struct RunningReceiver {
    task: JoinHandle<Result<(), BoxError>>,
}

impl RunningReceiver {
    /// Wrap the task that serves the receiver.
    pub fn new(task: JoinHandle<Result<(), BoxError>>) -> Self {
        Self { task }
    }

    pub(crate) fn into_task(self) -> JoinHandle<Result<(), BoxError>> {
        self.task
    }
}

/// A receiver: brings data into a pipeline and maps refusals to its protocol's
/// back-pressure (gRPC `RESOURCE_EXHAUSTED`, HTTP 429/503 with `Retry-After`).
pub trait Receiver<S: Signal>: Send + 'static {
    /// The component id (`otlp`, `memory`).
    fn id(&self) -> ComponentId;

    /// Check what can be checked before anything starts (certificate files, listen
    /// addresses already taken, ...). The builder calls it in
    /// [`PipelineBuilder::build`](crate::PipelineBuilder::build), so a configuration
    /// mistake fails the build (and the collector's `--validate`), not the start.
    fn validate(&self) -> Result<(), BuildError> {
        Ok(())
    }

    /// Bind and start serving into `consumer`. Return once the receiver accepts data, so
    /// a bind error fails the pipeline's start instead of surfacing later.
    fn start<C: Consumer<S> + Clone>(
        self,
        consumer: C,
        ctx: ReceiverContext,
    ) -> impl Future<Output = Result<RunningReceiver, BoxError>> + Send;
}

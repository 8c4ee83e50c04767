//! Connectors: the exporter of one pipeline that is the receiver of others, possibly of
//! another signal (spans in, metrics out), as in the OpenTelemetry Collector.
//!
//! A [`Connector`] is built like a processor whose next stage is a set of pipelines: given
//! the [`Downstream`] pipelines it feeds, it builds the consumer that stands at the end of
//! the pipeline it is an exporter of. It is one component with two faces, not a pair
//! glued by a channel: a batch it emits is handed to the downstream pipelines' heads in
//! the same call, so their back-pressure reaches the pipeline it exports from.
//!
//! In the typed builder, build the downstream pipeline first and hand its head to
//! [`Connect`]; start the downstream pipeline first and shut it down last.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use otel_pipeline_core::connector::{Connect, Connector, Downstream};
//! use otel_pipeline_core::testing::{InMemoryExporter, generate_traces};
//! use otel_pipeline_core::{
//!     Batch, BoxConsumer, BuildError, ComponentContext, ComponentId, ConsumeError, Consumer,
//!     DirectReceiver, Logs, Pipeline, Traces,
//! };
//! use otel_pipeline_core::proto::collector::logs::v1::ExportLogsServiceRequest;
//!
//! /// One log record per batch of spans, saying how many there were.
//! struct CountAsLogs;
//! struct CountConsumer(Downstream<Logs>);
//!
//! impl Consumer<Traces> for CountConsumer {
//!     async fn consume(&self, batch: Batch<Traces>) -> Result<(), ConsumeError<Traces>> {
//!         let n = batch.item_count();
//!         let mut logs = otel_pipeline_core::testing::generate_logs(1, n as u64);
//!         let request: &mut ExportLogsServiceRequest = &mut logs;
//!         request.resource_logs[0].scope_logs[0].log_records[0].severity_text = format!("{n} spans");
//!         // What the logs pipeline refuses is this pipeline's refusal too.
//!         self.0.consume(Batch::new(logs)).await.map_err(|e| e.map_batch(|_| batch))
//!     }
//! }
//!
//! impl Connector<Traces, Logs> for CountAsLogs {
//!     type Consumer = CountConsumer;
//!     fn id(&self) -> ComponentId { ComponentId::new("count") }
//!     fn build(self, next: Downstream<Logs>, _ctx: &mut ComponentContext<'_>) -> Result<CountConsumer, BuildError> {
//!         Ok(CountConsumer(next))
//!     }
//! }
//!
//! let (logs_out, exported) = InMemoryExporter::new();
//! let logs = Pipeline::logs().named("logs").exporter(logs_out).build()?;
//! let head = BoxConsumer::new(logs.consumer());
//! let logs = logs.start().await?;
//!
//! let (receiver, sender) = DirectReceiver::new();
//! let traces = Pipeline::traces()
//!     .receiver(receiver)
//!     .exporter(Connect::new(CountAsLogs, Downstream::single("logs", head)))
//!     .build()?
//!     .start()
//!     .await?;
//! sender.send(generate_traces(2, 3, 7)).await?;
//! traces.shutdown(Duration::from_secs(1)).await?; // upstream first
//! logs.shutdown(Duration::from_secs(1)).await?;
//! assert_eq!(exported.item_count(), 1);
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;

use crate::boxed::FanOutAll;
use crate::component::{ComponentContext, Exporter, Lifecycle, Stage};
use crate::consumer::{BoxConsumer, BoxFuture, ConsumeError, Consumer};
use crate::id::{BoxError, BuildError, ComponentId};
use crate::signal::{Batch, Signal};

/// The pipelines a connector feeds, each with its name (`metrics/spanmetrics`) and head.
/// As a [`Consumer`] it sends each batch to all of them, as a pipeline's exporters do; a
/// routing connector picks some with [`Downstream::get`].
pub struct Downstream<S: Signal> {
    pipelines: Arc<[(String, BoxConsumer<S>)]>,
    all: Arc<FanOutAll<S>>,
}

impl<S: Signal> Clone for Downstream<S> {
    fn clone(&self) -> Self {
        Self {
            pipelines: Arc::clone(&self.pipelines),
            all: Arc::clone(&self.all),
        }
    }
}

impl<S: Signal> fmt::Debug for Downstream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl<S: Signal> Downstream<S> {
    /// The pipelines `(name, head)`, in order.
    pub fn new<N: Into<String>>(pipelines: impl IntoIterator<Item = (N, BoxConsumer<S>)>) -> Self {
        let pipelines: Arc<[(String, BoxConsumer<S>)]> =
            pipelines.into_iter().map(|(n, c)| (n.into(), c)).collect();
        let all = Arc::new(FanOutAll::new(
            pipelines.iter().map(|(_, c)| c.clone()).collect(),
        ));
        Self { pipelines, all }
    }

    /// One pipeline.
    pub fn single(name: impl Into<String>, head: BoxConsumer<S>) -> Self {
        Self::new([(name.into(), head)])
    }

    /// The pipelines' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.pipelines.iter().map(|(n, _)| n.as_str())
    }

    /// The head of the pipeline named `name`.
    pub fn get(&self, name: &str) -> Option<&BoxConsumer<S>> {
        self.pipelines
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
    }

    /// How many pipelines.
    pub fn len(&self) -> usize {
        self.pipelines.len()
    }

    /// Whether it feeds no pipeline.
    pub fn is_empty(&self) -> bool {
        self.pipelines.is_empty()
    }
}

impl<S: Signal> Consumer<S> for Downstream<S> {
    async fn consume(&self, batch: Batch<S>) -> Result<(), ConsumeError<S>> {
        self.all.consume(batch).await
    }
}

/// A connector from pipelines of signal `In` to pipelines of signal `Out`. See the
/// [module docs](self).
pub trait Connector<In: Signal, Out: Signal>: Send + 'static {
    /// The consumer at the end of the pipeline it exports from.
    type Consumer: Consumer<In>;

    /// The component id (`spanmetrics`, `forward/sampling`).
    fn id(&self) -> ComponentId;

    /// Validate the configuration and build the consumer that feeds `next`. Register a
    /// [`Lifecycle`] to flush what it holds (a metrics connector's last interval) on
    /// shutdown: the downstream pipelines are still running then.
    fn build(
        self,
        next: Downstream<Out>,
        ctx: &mut ComponentContext<'_>,
    ) -> Result<Self::Consumer, BuildError>;
}

/// A connector with the pipelines it feeds: an [`Exporter`] of the pipeline it exports
/// from, for the typed builder's `.exporter(...)`.
pub struct Connect<C, Out: Signal> {
    connector: C,
    next: Downstream<Out>,
}

impl<C, Out: Signal> fmt::Debug for Connect<C, Out> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connect")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl<C, Out: Signal> Connect<C, Out> {
    /// `connector`, feeding `next`.
    pub fn new(connector: C, next: Downstream<Out>) -> Self {
        Self { connector, next }
    }
}

impl<In: Signal, Out: Signal, C: Connector<In, Out>> Exporter<In> for Connect<C, Out> {
    type Consumer = C::Consumer;

    fn id(&self) -> ComponentId {
        self.connector.id()
    }

    fn build(self, ctx: &mut ComponentContext<'_>) -> Result<C::Consumer, BuildError> {
        self.connector.build(self.next, ctx)
    }
}

/// Object-safe form of [`Connector`]; every connector has it.
pub trait DynConnector<In: Signal, Out: Signal>: Send + 'static {
    /// The component id.
    fn id(&self) -> ComponentId;

    /// Build, erasing the consumer's type.
    fn build_boxed(
        self: Box<Self>,
        next: Downstream<Out>,
        ctx: &mut ComponentContext<'_>,
    ) -> Result<BoxConsumer<In>, BuildError>;
}

impl<In: Signal, Out: Signal, C: Connector<In, Out>> DynConnector<In, Out> for C {
    fn id(&self) -> ComponentId {
        Connector::id(self)
    }

    fn build_boxed(
        self: Box<Self>,
        next: Downstream<Out>,
        ctx: &mut ComponentContext<'_>,
    ) -> Result<BoxConsumer<In>, BuildError> {
        Ok(BoxConsumer::new((*self).build(next, ctx)?))
    }
}

/// A connector whose type was erased at the configuration boundary.
pub type BoxConnector<In, Out> = Box<dyn DynConnector<In, Out>>;

impl<In: Signal, Out: Signal> Connector<In, Out> for BoxConnector<In, Out> {
    type Consumer = BoxConsumer<In>;

    fn id(&self) -> ComponentId {
        DynConnector::id(&**self)
    }

    fn build(
        self,
        next: Downstream<Out>,
        ctx: &mut ComponentContext<'_>,
    ) -> Result<BoxConsumer<In>, BuildError> {
        self.build_boxed(next, ctx)
    }
}

type BuildOnce<In> =
    Box<dyn FnOnce(&mut ComponentContext<'_>) -> Result<BoxConsumer<In>, BuildError> + Send>;

struct SharedState<In: Signal> {
    build: Option<BuildOnce<In>>,
    consumer: Option<BoxConsumer<In>>,
    stages: Arc<[Stage]>,
    users: usize,
    started: bool,
    stopped: usize,
}

/// One connector instance shared by every pipeline that exports to it (the Collector
/// builds one per connector and pair of signals): each pipeline gets an exporter from
/// [`SharedConnector::exporter`]; the first built builds the connector, the others share
/// its consumer. It starts with the first pipeline that starts and stops when the last
/// pipeline that exports to it has stopped, so nothing one of them flushes is lost.
pub struct SharedConnector<In: Signal> {
    id: ComponentId,
    state: Arc<parking_lot::Mutex<SharedState<In>>>,
}

impl<In: Signal> fmt::Debug for SharedConnector<In> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedConnector")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<In: Signal> SharedConnector<In> {
    /// Share `connector`, feeding `next`.
    pub fn new<Out: Signal>(connector: BoxConnector<In, Out>, next: Downstream<Out>) -> Self {
        let id = DynConnector::id(&*connector);
        let build: BuildOnce<In> = Box::new(move |ctx| connector.build_boxed(next, ctx));
        Self::from_build(id, build)
    }

    /// Share an exporter built once (several connector instances of one id, fanned out).
    pub(crate) fn from_build(id: ComponentId, build: BuildOnce<In>) -> Self {
        Self {
            id,
            state: Arc::new(parking_lot::Mutex::new(SharedState {
                build: Some(build),
                consumer: None,
                stages: Arc::from(Vec::new()),
                users: 0,
                started: false,
                stopped: 0,
            })),
        }
    }

    /// An exporter for one more pipeline that exports to the connector.
    pub fn exporter(&self) -> SharedConnectorExporter<In> {
        SharedConnectorExporter {
            id: self.id.clone(),
            state: Arc::clone(&self.state),
        }
    }
}

/// One pipeline's face of a [`SharedConnector`].
pub struct SharedConnectorExporter<In: Signal> {
    id: ComponentId,
    state: Arc<parking_lot::Mutex<SharedState<In>>>,
}

impl<In: Signal> fmt::Debug for SharedConnectorExporter<In> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedConnectorExporter")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<In: Signal> Exporter<In> for SharedConnectorExporter<In> {
    type Consumer = BoxConsumer<In>;

    fn id(&self) -> ComponentId {
        self.id.clone()
    }

    fn build(self, ctx: &mut ComponentContext<'_>) -> Result<BoxConsumer<In>, BuildError> {
        let mut state = self.state.lock();
        if let Some(build) = state.build.take() {
            // Built in the first pipeline's context (its counters), but its lifecycle is
            // the shared one below, not that pipeline's alone.
            let before = ctx.stages_len();
            let consumer = build(ctx)?;
            state.stages = ctx.take_stages_from(before).into();
            state.consumer = Some(consumer);
        }
        let consumer = state
            .consumer
            .clone()
            .ok_or_else(|| ctx.invalid("", "the connector failed to build"))?;
        state.users += 1;
        drop(state);
        ctx.register_lifecycle(Arc::new(SharedLifecycle {
            state: Arc::clone(&self.state),
        }));
        Ok(consumer)
    }
}

struct SharedLifecycle<In: Signal> {
    state: Arc<parking_lot::Mutex<SharedState<In>>>,
}

impl<In: Signal> Lifecycle for SharedLifecycle<In> {
    fn start(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let stages = {
                let mut s = self.state.lock();
                if s.started {
                    return Ok(());
                }
                s.started = true;
                Arc::clone(&s.stages)
            };
            crate::component::start_stages(&stages, || {
                Instant::now() + std::time::Duration::from_secs(1)
            })
            .await
            .map_err(|e| Box::new(e) as BoxError)
        })
    }

    fn force_flush(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let stages = Arc::clone(&self.state.lock().stages);
            let mut failures = Vec::new();
            crate::component::flush_stages(&stages, &mut failures).await;
            crate::id::ShutdownError::from_failures(failures).map_err(|e| Box::new(e) as BoxError)
        })
    }

    fn shutdown(&self, deadline: Instant) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let stages = {
                let mut s = self.state.lock();
                s.stopped += 1;
                if s.stopped < s.users || !s.started {
                    return Ok(());
                }
                Arc::clone(&s.stages)
            };
            let mut failures = Vec::new();
            crate::component::shutdown_stages(&stages, deadline, &mut failures).await;
            crate::id::ShutdownError::from_failures(failures).map_err(|e| Box::new(e) as BoxError)
        })
    }
}

#[cfg(feature = "config")]
/// Several exporters of one pipeline built as one (a connector that feeds pipelines of
/// two signals is two instances, both fed by the pipeline it exports from).
pub(crate) struct ExporterPair<In: Signal> {
    pub(crate) id: ComponentId,
    pub(crate) parts: Vec<SharedConnectorExporter<In>>,
}

#[cfg(feature = "config")]
impl<In: Signal> Exporter<In> for ExporterPair<In> {
    type Consumer = FanOutAll<In>;

    fn id(&self) -> ComponentId {
        self.id.clone()
    }

    fn build(self, ctx: &mut ComponentContext<'_>) -> Result<FanOutAll<In>, BuildError> {
        let mut consumers = Vec::with_capacity(self.parts.len());
        for part in self.parts {
            consumers.push(part.build(ctx)?);
        }
        Ok(FanOutAll::new(consumers))
    }
}

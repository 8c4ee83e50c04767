//! The runtime: ordered start, health, and graceful shutdown with a deadline.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::component::{
    BoxError, BuildContext, ComponentId, RunningReceiver, Stage, flush_stages, shutdown_stages,
    start_stages,
};
use crate::telemetry::Telemetry;

/// Where a pipeline is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Built, starting components.
    Starting,
    /// Every component started; receivers accept data.
    Ready,
    /// Shutdown has begun: receivers stopped, stages flushing.
    Draining,
    /// Everything stopped.
    Stopped,
}

/// Holds readiness closed until opened: a component's "not yet" (a Kubernetes cache
/// before its first full sync). Get one from
/// [`ComponentContext::readiness_gate`](crate::ComponentContext::readiness_gate).
#[derive(Debug, Clone)]
pub struct ReadinessGate(Arc<std::sync::atomic::AtomicBool>);

impl ReadinessGate {
    pub(crate) fn closed() -> Self {
        Self(Arc::new(std::sync::atomic::AtomicBool::new(false)))
    }

    /// Readiness no longer waits for this gate.
    pub fn open(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether it has been opened.
    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Live/ready state that a health endpoint can serve. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Health {
    state: Arc<AtomicU8>,
    gates: Arc<Vec<(String, ReadinessGate)>>,
}

impl Health {
    pub(crate) fn new(gates: Vec<(String, ReadinessGate)>) -> Self {
        Self {
            state: Arc::new(AtomicU8::new(0)),
            gates: Arc::new(gates),
        }
    }

    /// What readiness waits for: the names of the gates still closed.
    pub fn waiting_for(&self) -> Vec<String> {
        self.gates
            .iter()
            .filter(|(_, g)| !g.is_open())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The current state.
    pub fn state(&self) -> HealthState {
        match self.state.load(Ordering::Acquire) {
            0 => HealthState::Starting,
            1 => HealthState::Ready,
            2 => HealthState::Draining,
            _ => HealthState::Stopped,
        }
    }

    /// Live: the process is working (starting, ready or draining), not stopped.
    pub fn is_live(&self) -> bool {
        self.state() != HealthState::Stopped
    }

    /// Ready: receivers accept data, and every component's readiness gate is open.
    pub fn is_ready(&self) -> bool {
        self.state() == HealthState::Ready && self.gates.iter().all(|(_, g)| g.is_open())
    }

    pub(crate) fn set_ready(&self) {
        self.state.store(1, Ordering::Release);
    }

    fn set_draining(&self) {
        self.state.store(2, Ordering::Release);
    }

    fn set_stopped(&self) {
        self.state.store(3, Ordering::Release);
    }
}

/// A component failed to start.
#[derive(Debug, thiserror::Error)]
#[error("{component} failed to start: {source}")]
pub struct StartError {
    /// The component.
    pub component: ComponentId,
    /// Why.
    #[source]
    pub source: BoxError,
}

impl StartError {
    pub(crate) fn new(
        component: ComponentId,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            component,
            source: Box::new(source),
        }
    }

    pub(crate) fn from_boxed(component: ComponentId, source: BoxError) -> Self {
        Self { component, source }
    }
}

/// Shutdown finished, but not cleanly: each entry names a component and what went wrong
/// (an error, or the deadline passing before it finished).
#[derive(Debug, thiserror::Error)]
pub struct ShutdownError {
    /// `(component, problem)` pairs in shutdown order.
    pub failures: Vec<(ComponentId, String)>,
}

/// Wait for receivers (already told to stop) until `deadline`; abort and name the late ones.
pub(crate) async fn stop_receivers(
    receivers: Vec<(ComponentId, RunningReceiver)>,
    deadline: Instant,
    failures: &mut Vec<(ComponentId, String)>,
) {
    for (id, receiver) in receivers {
        let mut task = receiver.into_task();
        match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => failures.push((id, e.to_string())),
            Ok(Err(join)) => failures.push((id, format!("task failed: {join}"))),
            Err(_) => {
                task.abort();
                failures.push((id, "did not stop before the deadline".to_string()));
            }
        }
    }
}

impl ShutdownError {
    pub(crate) fn from_failures(failures: Vec<(ComponentId, String)>) -> Result<(), Self> {
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Self { failures })
        }
    }
}

impl Drop for RunningPipeline {
    fn drop(&mut self) {
        // Receivers stop accepting; stages follow as their inputs close. (After
        // `shutdown`, this is already done.)
        let _ = self.shutdown_tx.send(true);
    }
}

impl fmt::Display for ShutdownError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("shutdown was not clean:")?;
        for (id, problem) in &self.failures {
            write!(f, " {id}: {problem};")?;
        }
        Ok(())
    }
}

/// A started pipeline. Shut it down with [`RunningPipeline::shutdown`]: a bounded drain in
/// which every stage delivers what it holds or counts it.
///
/// Dropping it without `shutdown` stops it too, unbounded: its receivers stop at once
/// (listeners close), and each stage winds down as its input closes, delivering what it
/// holds if the next stage takes it. Nothing waits for that, and there is no deadline.
pub struct RunningPipeline {
    name: String,
    telemetry: Telemetry,
    stages: Vec<Stage>,
    receivers: Vec<(ComponentId, RunningReceiver)>,
    shutdown_tx: watch::Sender<bool>,
    health: Health,
}

impl fmt::Debug for RunningPipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningPipeline")
            .field("name", &self.name)
            .field("health", &self.health.state())
            .field("stages", &self.stages)
            .finish_non_exhaustive()
    }
}

impl RunningPipeline {
    pub(crate) fn new(ctx: BuildContext, shutdown_tx: watch::Sender<bool>, health: Health) -> Self {
        let name = ctx.pipeline().to_string();
        let telemetry = ctx.telemetry().clone();
        Self {
            name,
            telemetry,
            stages: ctx.stages,
            receivers: Vec::new(),
            shutdown_tx,
            health,
        }
    }

    /// Start every registered stage in build order (exporters first). On failure, shut
    /// down those already started, in reverse.
    pub(crate) async fn start_stages(self) -> Result<Self, StartError> {
        if let Err(e) = start_stages(&self.stages, || Instant::now() + Duration::from_secs(5)).await
        {
            self.health.set_stopped();
            return Err(e);
        }
        Ok(self)
    }

    pub(crate) fn set_receivers(&mut self, receivers: Vec<(ComponentId, RunningReceiver)>) {
        self.receivers = receivers;
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The self-telemetry registry the pipeline counts into.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Live/ready state.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Ask every stage, first to last, to push out what it holds.
    pub async fn force_flush(&self) -> Result<(), ShutdownError> {
        let mut failures = Vec::new();
        flush_stages(&self.stages, &mut failures).await;
        ShutdownError::from_failures(failures)
    }

    /// Stop receivers, then let processors flush (first to last) and exporters drain, all
    /// within `timeout`. A stage that has not finished by the deadline is abandoned and
    /// named in the error; stages count what they had to drop.
    pub async fn shutdown(mut self, timeout: Duration) -> Result<(), ShutdownError> {
        let deadline = Instant::now() + timeout;
        self.health.set_draining();
        let _ = self.shutdown_tx.send(true);
        let mut failures = Vec::new();

        stop_receivers(std::mem::take(&mut self.receivers), deadline, &mut failures).await;

        // Reverse of start order: the first processor flushes into the second, ..., and
        // the exporters drain last.
        shutdown_stages(&self.stages, deadline, &mut failures).await;
        self.health.set_stopped();
        ShutdownError::from_failures(failures)
    }
}

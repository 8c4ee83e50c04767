//! The runtime: ordered start, health, and graceful shutdown with a deadline.

use std::fmt;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::component::{
    BuildContext, RunningReceiver, Stage, flush_stages, shutdown_stages, start_stages,
};
use crate::health::Health;
use crate::id::ComponentId;
use crate::id::{ShutdownError, StartError};
use crate::telemetry::Telemetry;

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

impl Drop for RunningPipeline {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        // Dropped without `shutdown`: drain as `shutdown(RunningPipeline::DROP_DRAIN)` would, where the
        // runtime allows blocking this thread for it; otherwise say loudly what may be lost.
        let stages = std::mem::take(&mut self.stages);
        let receivers = std::mem::take(&mut self.receivers);
        let tx = std::mem::replace(&mut self.shutdown_tx, watch::channel(None).0);
        let health = self.health.clone();
        let name = self.name.clone();
        let drain = async move {
            drain(
                &stages,
                receivers,
                &tx,
                &health,
                RunningPipeline::DROP_DRAIN,
            )
            .await
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tracing::warn!(
                    pipeline = %name,
                    limit = ?RunningPipeline::DROP_DRAIN,
                    "a running pipeline was dropped without shutdown(): draining it now"
                );
                let result = tokio::task::block_in_place(|| handle.block_on(drain));
                if let Err(e) = result {
                    tracing::error!(pipeline = %name, error = %e, "the pipeline dropped without shutdown() did not drain whole");
                }
            }
            Ok(handle) => {
                // A current-thread runtime cannot block here: drain in a task, which runs
                // only if the runtime keeps going after this.
                tracing::error!(
                    pipeline = %name,
                    "a running pipeline was dropped without shutdown() on a current-thread runtime: \
                     its receivers stop now and its stages drain in the background; what they \
                     hold is lost if the runtime stops first. Call `shutdown(timeout).await`."
                );
                handle.spawn(drain);
            }
            Err(_) => {
                tracing::error!(
                    pipeline = %name,
                    "a running pipeline was dropped without shutdown() outside its runtime: \
                     what its stages hold is lost. Call `shutdown(timeout).await`."
                );
                drop(drain);
            }
        }
    }
}

/// Stop the receivers, then let processors flush (first to last) and exporters drain,
/// all within `timeout`.
async fn drain(
    stages: &[Stage],
    receivers: Vec<(ComponentId, RunningReceiver)>,
    shutdown_tx: &watch::Sender<Option<Instant>>,
    health: &Health,
    timeout: Duration,
) -> Result<(), ShutdownError> {
    let deadline = Instant::now() + timeout;
    health.set_draining();
    // Receivers drain their connections within the first half of the time; the stages
    // flush in what is left.
    let _ = shutdown_tx.send(Some(Instant::now() + timeout / 2));
    let mut failures = Vec::new();
    stop_receivers(receivers, deadline, &mut failures).await;
    // Reverse of start order: the first processor flushes into the second, ..., and the
    // exporters drain last.
    shutdown_stages(stages, deadline, &mut failures).await;
    health.set_stopped();
    ShutdownError::from_failures(failures)
}

/// A started pipeline. Shut it down with [`RunningPipeline::shutdown`]: a bounded drain in
/// which every stage delivers what it holds or counts it.
///
/// Dropping it without `shutdown` drains it too, as `shutdown(RunningPipeline::DROP_DRAIN)` (5 s) would,
/// when it is dropped on a multi-thread tokio runtime (the dropping thread blocks for it,
/// through `block_in_place`). On a current-thread runtime it cannot block: the drain runs
/// in a task, and an error is logged that what the stages hold is lost if the runtime
/// stops first; outside any runtime, the error says it is lost. Call `shutdown` and await
/// it: that is the only way to choose the deadline and to see what did not drain.
pub struct RunningPipeline {
    name: String,
    telemetry: Telemetry,
    stages: Vec<Stage>,
    receivers: Vec<(ComponentId, RunningReceiver)>,
    shutdown_tx: watch::Sender<Option<Instant>>,
    health: Health,
    /// `shutdown` ran: nothing left for `Drop` to do.
    stopped: bool,
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
    /// How long a pipeline dropped without [`shutdown`](Self::shutdown) takes to drain,
    /// where it can.
    pub const DROP_DRAIN: Duration = Duration::from_secs(5);

    pub(crate) fn new(
        ctx: BuildContext,
        shutdown_tx: watch::Sender<Option<Instant>>,
        health: Health,
    ) -> Self {
        let name = ctx.pipeline().to_string();
        let telemetry = ctx.telemetry().clone();
        Self {
            name,
            telemetry,
            stages: ctx.stages,
            receivers: Vec::new(),
            shutdown_tx,
            health,
            stopped: false,
        }
    }

    /// Start every registered stage in build order (exporters first). On failure, shut
    /// down those already started, in reverse.
    pub(crate) async fn start_stages(mut self) -> Result<Self, StartError> {
        if let Err(e) = start_stages(&self.stages, || Instant::now() + Duration::from_secs(5)).await
        {
            // What started was shut down again: nothing for `Drop` to drain.
            self.stopped = true;
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
        self.stopped = true;
        let receivers = std::mem::take(&mut self.receivers);
        drain(
            &self.stages,
            receivers,
            &self.shutdown_tx,
            &self.health,
            timeout,
        )
        .await
    }
}

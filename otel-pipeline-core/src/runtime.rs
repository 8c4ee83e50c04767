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
        // Receivers stop accepting at once; stages follow as their inputs close. (After
        // `shutdown`, this is already done.)
        self.shutdown_tx.send_if_modified(|d| {
            let first = d.is_none();
            d.get_or_insert_with(Instant::now);
            first
        });
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
    shutdown_tx: watch::Sender<Option<Instant>>,
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
        // Receivers drain their connections within the first half of the time; the
        // stages flush in what is left.
        let _ = self.shutdown_tx.send(Some(Instant::now() + timeout / 2));
        let mut failures = Vec::new();

        stop_receivers(std::mem::take(&mut self.receivers), deadline, &mut failures).await;

        // Reverse of start order: the first processor flushes into the second, ..., and
        // the exporters drain last.
        shutdown_stages(&self.stages, deadline, &mut failures).await;
        self.health.set_stopped();
        ShutdownError::from_failures(failures)
    }
}

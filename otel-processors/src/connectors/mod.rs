//! Connectors: components that are the exporter of one pipeline and the receiver of
//! others ([`otel_pipeline_core::connector`]), as the Collector has them.
//! - [`Forward`]: passes every batch on to the pipelines it feeds (the Collector's
//!   `forward`), to join pipelines such as one that enriches and one that samples;
//! - [`Routing`]: sends each resource, span or log record to the pipelines of the first
//!   route whose OTTL condition holds (the Collector's `routing` connector);
//! - [`SpanMetrics`]: request, error and duration metrics from every span (`spanmetrics`);
//! - [`ServiceGraph`]: the service dependency graph as metrics (`servicegraph`).

mod forward;
pub mod routing;
pub mod servicegraph;
pub mod spanmetrics;

pub use forward::Forward;
pub use routing::{Routing, RoutingConfig};
pub use servicegraph::{ServiceGraph, ServiceGraphConfig};
pub use spanmetrics::{SpanMetrics, SpanMetricsConfig};

use std::sync::Arc;
use std::time::Duration;

use otel_pipeline_core::{BoxError, BoxFuture, Lifecycle};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

/// What a connector that emits on a timer does at each tick.
type Flush = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// The lifecycle of a connector that emits on a timer (`spanmetrics`, `servicegraph`):
/// `flush` every `every`, and `chore` every its own interval (expiring state); on
/// shutdown the timer stops and `flush` runs once more, while the pipelines it feeds still
/// run.
pub(crate) struct Periodic {
    every: Duration,
    flush: Flush,
    chore: Option<(Duration, Arc<dyn Fn() + Send + Sync>)>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Periodic {
    pub(crate) fn new(
        every: Duration,
        flush: Flush,
        chore: Option<(Duration, Arc<dyn Fn() + Send + Sync>)>,
    ) -> Self {
        Self {
            every,
            flush,
            chore,
            stop: watch::channel(false).0,
            task: Mutex::new(None),
        }
    }
}

impl Lifecycle for Periodic {
    fn start(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        let (every, flush, chore) = (self.every, Arc::clone(&self.flush), self.chore.clone());
        let mut stop = self.stop.subscribe();
        *self.task.lock() = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Without a chore, its timer never fires.
            let chore_every = chore.as_ref().map_or(Duration::from_secs(86_400), |c| c.0);
            let mut chore_tick =
                tokio::time::interval_at(Instant::now() + chore_every, chore_every);
            loop {
                tokio::select! {
                    _ = tick.tick() => flush().await,
                    _ = chore_tick.tick() => {
                        if let Some((_, f)) = &chore {
                            f();
                        }
                    }
                    _ = async { stop.wait_for(|s| *s).await.map(drop) } => return,
                }
            }
        }));
        Box::pin(async { Ok(()) })
    }

    fn force_flush(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            (self.flush)().await;
            Ok(())
        })
    }

    fn shutdown(&self, deadline: Instant) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let _ = self.stop.send(true);
            let task = self.task.lock().take();
            if let Some(task) = task {
                let _ = tokio::time::timeout_at(deadline, task).await;
            }
            let _ = tokio::time::timeout_at(deadline, (self.flush)()).await;
            Ok(())
        })
    }
}

//! `sending_queue.batch`: batching in front of an exporter, as the Collector's exporter
//! helper does it. The loader reads the settings ([`QueueBatch`]); the batching itself is
//! the batch processor's, which the crate that has it registers as a
//! [`QueueBatcherFactory`]. The exporter then receives batches of at least `min_size`
//! items (or what waited `flush_timeout`), split at `max_size`.

use std::time::Duration;

use crate::boxed::{BoxExporter, BoxProcessor};
use crate::component::{ComponentContext, Exporter, Processor};
use crate::consumer::BoxConsumer;
use crate::id::{BuildError, ComponentId};
use crate::signal::{Logs, Metrics, Signal, Traces};

/// An exporter's `sending_queue.batch` settings, with the Collector's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueBatch {
    /// Send what waits after this long (default 200 ms).
    pub flush_timeout: Duration,
    /// Send once this many items wait (default 8192).
    pub min_size: usize,
    /// Never send more than this many items in one request; 0 for no limit (the default).
    pub max_size: usize,
    /// Batch apart by these client metadata keys (`partition.metadata_keys`).
    pub metadata_keys: Vec<String>,
}

impl Default for QueueBatch {
    fn default() -> Self {
        Self {
            flush_timeout: Duration::from_millis(200),
            min_size: 8192,
            max_size: 0,
            metadata_keys: Vec::new(),
        }
    }
}

/// Makes the batching stage `sending_queue.batch` puts in front of an exporter; the
/// processors crate registers one ([`Registry::queue_batcher`](crate::collector::Registry::queue_batcher)).
pub trait QueueBatcherFactory: Send + Sync {
    /// For a traces exporter.
    fn traces(&self, batch: &QueueBatch) -> BoxProcessor<Traces>;
    /// For a metrics exporter.
    fn metrics(&self, batch: &QueueBatch) -> BoxProcessor<Metrics>;
    /// For a logs exporter.
    fn logs(&self, batch: &QueueBatch) -> BoxProcessor<Logs>;
}

/// An exporter with a stage in front of it, built in the exporter's own context: its
/// telemetry is the exporter's, and it shuts down (and flushes) before the exporter does.
pub(crate) struct Fronted<S: Signal> {
    pub(crate) front: BoxProcessor<S>,
    pub(crate) exporter: BoxExporter<S>,
}

impl<S: Signal> Exporter<S> for Fronted<S> {
    type Consumer = BoxConsumer<S>;

    fn id(&self) -> ComponentId {
        Exporter::id(&self.exporter)
    }

    fn build(self, ctx: &mut ComponentContext<'_>) -> Result<BoxConsumer<S>, BuildError> {
        // Lifecycles stop in reverse order of registration: the exporter's first here,
        // so the stage in front stops (and hands on what it holds) before it.
        let next = self.exporter.build(ctx)?;
        self.front.build(next, ctx)
    }
}

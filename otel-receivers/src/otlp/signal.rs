//! Where each signal's requests go once its pipeline has started the receiver.

use std::any::Any;
use std::sync::Arc;

use parking_lot::RwLock;

use otel_pipeline_core::{BoxConsumer, ComponentTelemetry, Signal};

/// Where accepted batches of one signal go: the pipeline's head and the receiver's counters.
pub(crate) struct Sink<S: Signal> {
    pub(crate) consumer: BoxConsumer<S>,
    pub(crate) telemetry: Arc<ComponentTelemetry>,
}

/// The sink of each signal, filled when that signal's pipeline starts the receiver and
/// emptied when it stops (its requests are then answered as for a signal without a
/// pipeline, and a pipeline may start the receiver for it again).
#[derive(Default)]
pub(crate) struct Sinks {
    slots: [RwLock<Option<Arc<dyn Any + Send + Sync>>>; 3],
}

impl Sinks {
    /// The sink of signal `S`, while its pipeline runs.
    pub(crate) fn get<S: Signal>(&self) -> Option<Arc<Sink<S>>> {
        let any = self.slots[S::KIND.index()].read().clone()?;
        any.downcast::<Sink<S>>().ok()
    }

    /// Install the sink of signal `S`; false if one is there already.
    pub(crate) fn set<S: Signal>(&self, sink: Sink<S>) -> bool {
        let mut slot = self.slots[S::KIND.index()].write();
        if slot.is_some() {
            return false;
        }
        *slot = Some(Arc::new(sink));
        true
    }

    /// Remove the sink of signal `S` (its pipeline stopped).
    pub(crate) fn clear<S: Signal>(&self) {
        *self.slots[S::KIND.index()].write() = None;
    }
}

//! Where each signal's requests go once its pipeline has started the receiver.

use std::any::Any;
use std::sync::{Arc, OnceLock};

use otel_pipeline_core::{BoxConsumer, ComponentTelemetry, Signal};

/// Where accepted batches of one signal go: the pipeline's head and the receiver's counters.
pub(crate) struct Sink<S: Signal> {
    pub(crate) consumer: BoxConsumer<S>,
    pub(crate) telemetry: Arc<ComponentTelemetry>,
}

/// The sink of each signal, filled when that signal's pipeline starts the receiver.
#[derive(Default)]
pub(crate) struct Sinks {
    slots: [OnceLock<Box<dyn Any + Send + Sync>>; 3],
}

fn slot(name: &str) -> usize {
    match name {
        "traces" => 0,
        "metrics" => 1,
        _ => 2,
    }
}

impl Sinks {
    /// The sink of signal `S`, once its pipeline has started the receiver.
    pub(crate) fn get<S: Signal>(&self) -> Option<&Sink<S>> {
        self.slots[slot(S::NAME)].get()?.downcast_ref()
    }

    /// Install the sink of signal `S`; false if it was already there.
    pub(crate) fn set<S: Signal>(&self, sink: Sink<S>) -> bool {
        self.slots[slot(S::NAME)].set(Box::new(sink)).is_ok()
    }
}

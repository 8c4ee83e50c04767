//! Health: where a pipeline is in its life, and the readiness gates components hold
//! closed until they are ready. A leaf: it imports nothing from this crate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

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

    pub(crate) fn set_draining(&self) {
        self.state.store(2, Ordering::Release);
    }

    pub(crate) fn set_stopped(&self) {
        self.state.store(3, Ordering::Release);
    }
}

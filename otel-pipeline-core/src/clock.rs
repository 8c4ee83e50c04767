//! Time for components that decide by it (the tail sampler's decision deadlines), behind a
//! trait so tests and simulations drive it exactly instead of sleeping.
//!
//! [`TokioClock`] is the default: tokio's clock, which also follows a runtime started with
//! `start_paused`. [`ManualClock`] moves only when told to, and wakes whatever sleeps
//! until a time it passes.
//!
//! ```
//! use std::time::Duration;
//! use otel_pipeline_core::clock::{Clock, ManualClock};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let clock = ManualClock::new();
//! let wake_at = clock.now() + Duration::from_secs(10);
//! let sleeper = tokio::spawn(clock.sleep_until(wake_at));
//! clock.advance(Duration::from_secs(9));
//! tokio::task::yield_now().await;
//! assert!(!sleeper.is_finished());
//! clock.advance(Duration::from_secs(1));
//! sleeper.await.unwrap(); // woken at exactly 10 s, without waiting 10 s
//! # }
//! ```

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::BoxFuture;

/// A source of the current time and of sleeps until a time.
pub trait Clock: Debug + Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Instant;

    /// A future that completes once [`now`](Clock::now) has reached `deadline`.
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()>;
}

/// A shared clock, as components hold one.
pub type SharedClock = Arc<dyn Clock>;

/// Tokio's clock: real time, or the runtime's paused time in tests that start paused.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl TokioClock {
    /// The default clock, shared.
    pub fn shared() -> SharedClock {
        Arc::new(TokioClock)
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep_until(deadline))
    }
}

/// A clock that moves only when [`advance`](ManualClock::advance)d or
/// [`set`](ManualClock::set); sleepers wake as soon as it passes their deadline. Cloning
/// gives another handle to the same clock.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<watch::Sender<Instant>>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock standing at the current tokio time.
    pub fn new() -> Self {
        Self {
            now: Arc::new(watch::Sender::new(Instant::now())),
        }
    }

    /// Move the clock forward by `by`, waking the sleepers it passes.
    pub fn advance(&self, by: Duration) {
        self.now.send_modify(|now| *now += by);
    }

    /// Move the clock to `to` (never backwards: an earlier time is ignored).
    pub fn set(&self, to: Instant) {
        self.now.send_if_modified(|now| {
            let later = to > *now;
            if later {
                *now = to;
            }
            later
        });
    }

    /// This clock as a [`SharedClock`].
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.now.borrow()
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as any handle to the clock; a clock nobody can
            // advance any more never reaches the deadline.
            if rx.wait_for(|now| *now >= deadline).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_it_passes_and_never_goes_back() {
        let clock = ManualClock::new();
        let t0 = clock.now();
        let early = tokio::spawn(clock.sleep_until(t0 + Duration::from_secs(1)));
        let late = tokio::spawn(clock.sleep_until(t0 + Duration::from_secs(5)));
        clock.set(t0 + Duration::from_secs(2));
        early.await.unwrap();
        tokio::task::yield_now().await;
        assert!(!late.is_finished());
        clock.set(t0); // ignored
        assert_eq!(clock.now(), t0 + Duration::from_secs(2));
        clock.advance(Duration::from_secs(3));
        late.await.unwrap();
        // A deadline already passed completes at once.
        clock.sleep_until(t0).await;
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock;
        let t0 = clock.now();
        clock.sleep_until(t0 + Duration::from_secs(30)).await;
        assert_eq!(clock.now(), t0 + Duration::from_secs(30));
    }
}

//! The grace table: recent trace ids and the endpoint each was sent to, so that a trace
//! in flight when the endpoint set changes keeps its endpoint for the grace period.
//!
//! Keys are the routing hash of the trace id (already well mixed, so the map hashes them
//! by passing them through). An entry is 8 bytes of key and 8 of value in a hashbrown
//! table, which keeps between 7/16 and 7/8 of its buckets full: 19 to 39 bytes per
//! remembered trace, about 4.3 MiB at the default bound of 200 000 (262 144 buckets of
//! 17 bytes). When the table is full and nothing in it has expired, new traces are not
//! remembered (counted); they are still routed, only without the grace of a later change.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Passes an already-mixed `u64` key through as its own hash.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

#[derive(Debug, Clone, Copy)]
struct Pin {
    /// The endpoint (a backend's unique id, never reused).
    backend: u32,
    /// When a span of the trace was last routed, in seconds since the table began.
    seen: u32,
}

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct GraceTable {
    map: HashMap<u64, Pin, BuildHasherDefault<PassThrough>>,
    capacity: usize,
    period_s: u32,
    last_sweep: u32,
    /// Traces not remembered because the table was full.
    pub(crate) full: u64,
    /// Spans sent to their trace's earlier endpoint instead of its owner now.
    pub(crate) pinned: u64,
}

/// What the table says about one trace.
pub(crate) enum Route {
    /// Send it to this backend (it had the trace before the set changed).
    Pinned(u32),
    /// Send it to its owner now.
    Owner,
}

impl GraceTable {
    pub(crate) fn new(capacity: usize, period_s: u32) -> Self {
        Self {
            map: HashMap::default(),
            capacity,
            period_s,
            last_sweep: 0,
            full: 0,
            pinned: 0,
        }
    }

    /// Entries held now.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Where trace `h` goes at second `now`, given its owner now. While `pinning` (the
    /// set changed less than a grace period ago) a trace remembered at another backend
    /// that is still `alive` stays there. Either way the choice is remembered.
    pub(crate) fn route(
        &mut self,
        h: u64,
        now: u32,
        owner: u32,
        pinning: bool,
        alive: impl Fn(u32) -> bool,
    ) -> Route {
        if let Some(pin) = self.map.get_mut(&h) {
            let fresh = now.saturating_sub(pin.seen) <= self.period_s;
            if pinning && fresh && pin.backend != owner && alive(pin.backend) {
                pin.seen = now;
                self.pinned += 1;
                return Route::Pinned(pin.backend);
            }
            pin.backend = owner;
            pin.seen = now;
            return Route::Owner;
        }
        if self.map.len() >= self.capacity {
            self.sweep(now);
            if self.map.len() >= self.capacity {
                self.full += 1;
                return Route::Owner;
            }
        }
        self.map.insert(
            h,
            Pin {
                backend: owner,
                seen: now,
            },
        );
        Route::Owner
    }

    /// Forget traces not seen for a grace period; at most once a second.
    pub(crate) fn sweep(&mut self, now: u32) {
        if now == self.last_sweep {
            return;
        }
        self.last_sweep = now;
        let period = self.period_s;
        self.map.retain(|_, p| now.saturating_sub(p.seen) <= period);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_only_while_pinning_and_fresh_and_alive() {
        let mut t = GraceTable::new(10, 30);
        assert!(matches!(t.route(1, 0, 7, false, |_| true), Route::Owner));
        // The set changed: owner is now 8, but the trace was at 7.
        assert!(matches!(t.route(1, 5, 8, true, |_| true), Route::Pinned(7)));
        // 7 went away: the owner takes it, and remembers it.
        assert!(matches!(t.route(1, 6, 8, true, |b| b != 7), Route::Owner));
        assert!(matches!(t.route(1, 7, 9, true, |_| true), Route::Pinned(8)));
        // Not seen for longer than the period: the owner takes it.
        assert!(matches!(t.route(1, 60, 9, true, |_| true), Route::Owner));
        assert_eq!(t.pinned, 2);
    }

    #[test]
    fn bounded() {
        let mut t = GraceTable::new(3, 30);
        for h in 0..5 {
            t.route(h, 0, 1, false, |_| true);
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.full, 2);
        // Once they expire, room comes back.
        t.route(99, 100, 1, false, |_| true);
        assert_eq!(t.len(), 1);
    }
}

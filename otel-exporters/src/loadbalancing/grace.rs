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
    /// Endpoints `gone` left the set: their traces now belong to `owner(h)`, which is
    /// where a draining gateway hands them (the same hash over the same remaining set).
    /// Pinning them there keeps them there when the endpoint comes back within the grace
    /// period (a restart), instead of splitting them between the two.
    pub(crate) fn repoint(&mut self, gone: &[u32], owner: impl Fn(u64) -> u32) {
        if gone.is_empty() {
            return;
        }
        for (h, pin) in &mut self.map {
            if gone.contains(&pin.backend) {
                pin.backend = owner(*h);
            }
        }
    }

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
    fn traces_of_a_gone_endpoint_stay_with_their_new_owner_when_it_returns() {
        let mut t = GraceTable::new(10, 30);
        t.route(1, 0, 7, false, |_| true);
        t.route(2, 0, 8, false, |_| true);
        // 7 leaves; trace 1 now belongs to 9 (trace 2's pin is not 7's).
        t.repoint(&[7], |_| 9);
        // 7 comes back as 10 and owns trace 1 again; the trace stays at 9.
        assert!(matches!(
            t.route(1, 5, 10, true, |_| true),
            Route::Pinned(9)
        ));
        assert!(matches!(t.route(2, 5, 8, true, |_| true), Route::Owner));
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

//! Tables keyed by a hash computed once by the caller: the tail sampler's span
//! dictionary and redaction's memo of values hash a byte string once and use that one
//! hash to look up, to remember a first sighting and to insert. A leaf module.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for keys that already are hashes.
#[derive(Default, Clone, Copy)]
pub(crate) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// A map keyed by hashes.
pub(crate) type HashKeyed<V> = HashMap<u64, V, BuildHasherDefault<Prehashed>>;

/// Hashes of things seen once, forgotten all at once past `limit`: whether a thing is
/// worth keeping is told by its second sighting.
#[derive(Debug, Default)]
pub(crate) struct SeenOnce(HashSet<u64, BuildHasherDefault<Prehashed>>);

impl SeenOnce {
    /// Heap bytes held (a control byte and a hash per bucket).
    pub(crate) fn held_bytes(&self) -> usize {
        self.0.capacity() * (1 + std::mem::size_of::<u64>())
    }

    /// Whether `hash` was seen once before (and forget it); otherwise remember it.
    #[inline]
    pub(crate) fn again(&mut self, hash: u64, limit: usize) -> bool {
        if self.0.remove(&hash) {
            return true;
        }
        if self.0.len() >= limit {
            self.0.clear();
        }
        self.0.insert(hash);
        false
    }
}

/// The entry of `memos` that `is_mine` picks, moved to the front: the memos a thread keeps
/// for several rule sets, most recently used first. Made by `make` when missing; past
/// `limit` entries the last one (the least recently used) goes.
pub(crate) fn most_recent<M>(
    memos: &mut Vec<M>,
    limit: usize,
    is_mine: impl Fn(&M) -> bool,
    make: impl FnOnce() -> M,
) -> &mut M {
    match memos.iter().position(is_mine) {
        Some(0) => {}
        Some(at) => memos[..=at].rotate_right(1),
        None => {
            if memos.len() >= limit {
                memos.pop();
            }
            memos.insert(0, make());
        }
    }
    &mut memos[0]
}

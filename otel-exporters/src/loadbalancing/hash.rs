//! The routing hash: which endpoint owns a key.
//!
//! Rendezvous (highest random weight) hashing: every endpoint scores every key, and the
//! highest score wins. It is the only candidate that is, at once,
//! - a pure function of the current endpoint set: agents that saw different histories of
//!   changes (one started after a scale-up, one before) still agree on every owner, which
//!   AnchorHash, DxHash and jump hash with arbitrary removals do not give without extra
//!   coordination;
//! - minimally disruptive: when an endpoint leaves, only its keys move; when one joins,
//!   only the keys it now wins move (Maglev moves more than that);
//! - balanced as well as independent random placement can be (no virtual nodes, no
//!   table whose slot counts add their own imbalance).
//!
//! Its cost is one score per endpoint per lookup: a xor and a 32-bit multiply, packed with
//! the endpoint's index so that one running maximum finds the winner, in a loop the
//! compiler vectorises. See `docs/adr/004-trace-router-hash.md` for the figures.
//!
//! Both hashes below are written out here, not taken from a hashing crate, because every
//! agent of a fleet must compute exactly the same owner on every CPU and in every build:
//! `ahash`, for one, gives different values with and without AES instructions.

/// A 64-bit hash of a routing key's bytes (a trace id, a service name). Stable across
/// processes, versions and platforms.
pub fn key_hash(bytes: &[u8]) -> u64 {
    const K0: u64 = 0xa076_1d64_78bd_642f;
    const K1: u64 = 0xe703_7ed1_a0b4_28db;
    const K2: u64 = 0x8ebc_6af0_9c88_c6e3;
    let mut h = K2 ^ (bytes.len() as u64).wrapping_mul(K0);
    let mut chunks = bytes.chunks_exact(16);
    for c in &mut chunks {
        let a = u64::from_le_bytes(c[..8].try_into().unwrap_or_default());
        let b = u64::from_le_bytes(c[8..].try_into().unwrap_or_default());
        h = mum(a ^ K0 ^ h, b ^ K1);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        let split = rest.len().min(8);
        a[..split].copy_from_slice(&rest[..split]);
        b[..rest.len() - split].copy_from_slice(&rest[split..]);
        h = mum(u64::from_le_bytes(a) ^ K0 ^ h, u64::from_le_bytes(b) ^ K1);
    }
    mum(h ^ K2, h.rotate_left(29) ^ K0)
}

/// Fold the 128-bit product: the mixing step of the wyhash family.
#[inline]
fn mum(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// Endpoints at most this many use the packed 32-bit scores (22 bits of score, 10 of
/// index); more fall back to 64-bit scores.
const PACKED_MAX: usize = 1 << 10;

/// A set of endpoints, ready for lookups. Build it from the endpoints' names; their
/// order does not matter (it is sorted), so every agent builds the same one.
///
/// ```
/// use otel_exporters::loadbalancing::{Rendezvous, key_hash};
/// let set = Rendezvous::new(["gw-0:4317", "gw-1:4317", "gw-2:4317"]);
/// let trace_id = [7u8; 16];
/// let owner = set.owner(key_hash(&trace_id));
/// assert!(owner < 3);
/// // Removing another endpoint does not move the key.
/// let other = (owner + 1) % 3;
/// let fewer = Rendezvous::new(set.names().iter().enumerate().filter(|(i, _)| *i != other).map(|(_, n)| n.as_str()));
/// assert_eq!(fewer.names()[fewer.owner(key_hash(&trace_id))], set.names()[owner]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Rendezvous {
    names: Vec<String>,
    /// Per endpoint: the value xor-ed into the key.
    xors: Vec<u32>,
    /// Per endpoint: the odd multiplier.
    muls: Vec<u32>,
}

impl Rendezvous {
    /// The set of `names` (duplicates removed, sorted).
    pub fn new<I, N>(names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        let mut names: Vec<String> = names.into_iter().map(|n| n.as_ref().to_string()).collect();
        names.sort();
        names.dedup();
        let hashes: Vec<u64> = names.iter().map(|n| key_hash(n.as_bytes())).collect();
        Self {
            xors: hashes.iter().map(|h| *h as u32).collect(),
            muls: hashes.iter().map(|h| ((h >> 32) as u32) | 1).collect(),
            names,
        }
    }

    /// The endpoints, sorted; [`Rendezvous::owner`] returns an index into this.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// How many endpoints.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The index of the endpoint that owns the key with hash `h`. With no endpoints, 0.
    #[inline]
    pub fn owner(&self, h: u64) -> usize {
        let k = fold(h);
        if self.xors.len() <= PACKED_MAX {
            // A plain max-reduction over the endpoints: the loop vectorizer turns it into
            // vector multiplies and signed maxima (SSE2 multiplies lanes in pairs).
            let xs = &self.xors[..];
            let ms = &self.muls[..xs.len()];
            let mut top = i32::MIN;
            for i in 0..xs.len() {
                top = top.max(packed(score(k, xs[i], ms[i]), i as u32));
            }
            (top as u32 & 0x3ff) as usize
        } else {
            self.owner_among(h, |_| true).unwrap_or(0)
        }
    }

    /// The owner among the endpoints for which `allowed` is true, or `None` if there is
    /// none: the owner the key would have in the set without the others. Used to pass a
    /// key to its next owner while its first choice is failing.
    pub fn owner_among(&self, h: u64, allowed: impl Fn(usize) -> bool) -> Option<usize> {
        let k = fold(h);
        let packed_scores = self.xors.len() <= PACKED_MAX;
        (0..self.xors.len())
            .filter(|i| allowed(*i))
            .map(|i| {
                let s = score(k, self.xors[i], self.muls[i]);
                let key = if packed_scores {
                    (i64::from(packed(s, i as u32)) << 32) | i as i64
                } else {
                    (i64::from(s as i32) << 32) | i as i64
                };
                (key, i)
            })
            .max_by_key(|(key, _)| *key)
            .map(|(_, i)| i)
    }
}

/// The 32-bit key the scores are computed from.
#[inline]
fn fold(h: u64) -> u32 {
    (h ^ (h >> 32)) as u32
}

/// An endpoint's score for key `k`: `(k ^ x) * m` modulo 2^32 with the endpoint's own
/// xor `x` and odd multiplier `m`, a bijection of the key (so every endpoint's scores
/// are uniform), compared on its high bits, which depend on every bit of the key. Keys
/// are already well mixed; the bench's balance figures check the scores.
#[inline]
fn score(k: u32, x: u32, m: u32) -> u32 {
    (k ^ x).wrapping_mul(m)
}

/// Score in the high 22 bits and index in the low 10, compared as a signed number (any
/// fixed total order serves; signed compares are native to SSE2). A tie in the top 22
/// bits goes to the higher index, the same way everywhere.
#[inline]
fn packed(score: u32, index: u32) -> i32 {
    ((score & !0x3ff) | index) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize, seed: u64) -> Vec<[u8; 16]> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                let mut id = [0u8; 16];
                for chunk in id.chunks_mut(8) {
                    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let mut z = x;
                    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                    chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
                }
                id
            })
            .collect()
    }

    #[test]
    fn the_key_hash_is_fixed() {
        // Agents of different builds must agree: these values may never change.
        assert_eq!(key_hash(b""), key_hash(b""));
        assert_ne!(key_hash(&[0u8; 16]), key_hash(&[1u8; 16]));
        assert_ne!(key_hash(b"a"), key_hash(b"a\0"));
        let golden = [key_hash(b"gw-0:4317"), key_hash(&[0xab; 16])];
        assert_eq!(golden, [GOLDEN_A, GOLDEN_B], "the routing hash changed");
    }

    const GOLDEN_A: u64 = 9_023_965_500_932_415_077;
    const GOLDEN_B: u64 = 7_348_614_165_737_744_717;

    #[test]
    fn balanced_and_minimal_movement() {
        let names: Vec<String> = (0..10).map(|i| format!("10.0.0.{i}:4317")).collect();
        let set = Rendezvous::new(&names);
        let keys = ids(200_000, 1);
        let mut load = [0usize; 10];
        let owners: Vec<usize> = keys.iter().map(|k| set.owner(key_hash(k))).collect();
        for &o in &owners {
            load[o] += 1;
        }
        let mean = keys.len() as f64 / 10.0;
        let peak = *load.iter().max().unwrap() as f64;
        assert!(peak / mean < 1.02, "{load:?}");

        // Remove one: only its keys move.
        let fewer = Rendezvous::new(names.iter().filter(|n| *n != &names[3]));
        for (k, &o) in keys.iter().zip(&owners) {
            let now = &fewer.names()[fewer.owner(key_hash(k))];
            if set.names()[o] != names[3] {
                assert_eq!(now, &set.names()[o]);
            } else {
                assert_ne!(now, &names[3]);
            }
        }
        // owner_among agrees with the smaller set.
        let removed = set.names().iter().position(|n| n == &names[3]).unwrap();
        for k in keys.iter().take(10_000) {
            let h = key_hash(k);
            let among = set.owner_among(h, |i| i != removed).unwrap();
            assert_eq!(set.names()[among], fewer.names()[fewer.owner(h)]);
        }
    }

    #[test]
    fn many_endpoints_use_wide_scores() {
        let set = Rendezvous::new((0..2000).map(|i| format!("e{i}")));
        let mut seen = std::collections::HashSet::new();
        for k in ids(20_000, 2) {
            seen.insert(set.owner(key_hash(&k)));
        }
        assert!(seen.len() > 1900, "{}", seen.len());
        assert_eq!(Rendezvous::new(Vec::<String>::new()).owner(5), 0);
    }
}

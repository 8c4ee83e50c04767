//! How a buffered span is packed: its encoding with what repeats across spans taken out.
//!
//! The spans of a trace carry the trace's id each, and the spans of a service carry the
//! same attribute keys and many of the same values (`http.request.method=GET`,
//! `db.system=postgresql`). A packed span is the span's encoding with
//!
//! - its trace id field replaced by one byte (the trace's buffer holds the id once);
//! - an attribute seen before replaced by its number in a dictionary, or, when only its
//!   key repeats, the key replaced by the key's number;
//! - every other field as it came, byte for byte, unknown fields included.
//!
//! The replacements are written as field tags of wire type 6, which protobuf does not
//! define and the receivers' check refuses, so they cannot be confused with a field of
//! the span. [`unpack`] gives back the span's encoding exactly: a span that [`pack`]
//! cannot read field by field is kept whole, behind a marker.
//!
//! A dictionary belongs to one shard. Something enters it at its second sighting (one
//! sighting is only remembered by its hash), so values that never repeat (ids, timestamps)
//! stay in the spans and do not fill it. A full dictionary takes no more entries; the
//! shard then starts a new one for new traces, and drops the old one once no buffered
//! trace refers to it ([`Dicts`]), so what a workload repeats can change over time.

use otel_pipeline_core::wire::{Wire, fields, put_varint, varint, varint_len};

use crate::prehashed::{HashKeyed, SeenOnce};

/// A whole attribute field from the dictionary: `ESC_ATTRIBUTE id`.
const ESC_ATTRIBUTE: u8 = 0x06;
/// An attribute whose key field is in the dictionary: `ESC_KEY id len rest-of-the-body`.
const ESC_KEY: u8 = 0x0e;
/// The trace id field (`0x0a 0x10` and the trace's id).
const ESC_TRACE_ID: u8 = 0x16;
/// The span's encoding follows as it came (it could not be read field by field).
const ESC_RAW: u8 = 0x1e;

/// `Span.attributes` (field 9, length-delimited), a one-byte tag.
const ATTRIBUTE_TAG: u8 = 0x4a;
/// `Span.trace_id` (field 1, length-delimited) and `KeyValue.key` (field 1 too).
const FIELD_1_TAG: u8 = 0x0a;

/// Entries longer than this stay in the spans: long values rarely repeat. (Under 256:
/// an index entry holds the length in eight bits.)
const MAX_ENTRY: usize = 128;
/// Entries in one dictionary.
const MAX_ENTRIES: usize = 1 << 15;
/// Bytes of entries in one dictionary.
const MAX_ARENA: usize = 1 << 20;
/// Hashes of things seen once that one dictionary remembers before forgetting them all.
const MAX_SEEN: usize = 1 << 14;
/// Dictionaries a shard keeps at most: past it, a full dictionary stays in use. With
/// the bounds above, one takes at most about 2.7 MiB (arena, entries, index, the hashes
/// seen once), so a shard's dictionaries stay under 8 MiB.
const MAX_DICTS: usize = 3;

/// Byte strings that repeat across spans, numbered.
#[derive(Default)]
pub(crate) struct Dict {
    arena: Vec<u8>,
    /// (start in `arena`, length) of entry i.
    entries: Vec<(u32, u32)>,
    /// Hash of an entry's bytes -> [`slot`] of the entry (found without reading
    /// `entries`).
    index: HashKeyed<u64>,
    /// Hashes of what was seen once.
    seen: SeenOnce,
    hash: ahash::RandomState,
}

impl std::fmt::Debug for Dict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dict")
            .field("entries", &self.entries.len())
            .field("bytes", &self.arena.len())
            .finish_non_exhaustive()
    }
}

impl Dict {
    /// Entry `id`.
    #[inline]
    fn get(&self, id: u64) -> Option<&[u8]> {
        let &(start, len) = self.entries.get(usize::try_from(id).ok()?)?;
        self.arena
            .get(start as usize..start as usize + len as usize)
    }

    /// Heap bytes held: the entries, their table (a control byte and the entry per
    /// bucket) and the hashes seen once.
    pub(crate) fn held_bytes(&self) -> usize {
        self.arena.capacity()
            + self.entries.capacity() * std::mem::size_of::<(u32, u32)>()
            + self.index.capacity() * (1 + std::mem::size_of::<(u64, u64)>())
            + self.seen.held_bytes()
    }

    /// Whether the dictionary takes no more entries.
    pub(crate) fn full(&self) -> bool {
        self.entries.len() >= MAX_ENTRIES || self.arena.len() >= MAX_ARENA
    }

    /// The number of `bytes`, entering them at their second sighting while there is
    /// room.
    #[inline]
    fn intern(&mut self, bytes: &[u8]) -> Option<u64> {
        let h = self.hash.hash_one(bytes);
        if let Some(&slot) = self.index.get(&h) {
            // Another string with the same hash stays in the span.
            let (id, start, len) = unslot(slot);
            return (len == bytes.len() && same(&self.arena[start..start + len], bytes))
                .then_some(id);
        }
        if self.full() || bytes.len() > MAX_ENTRY {
            return None;
        }
        if !self.seen.again(h, MAX_SEEN) {
            return None;
        }
        let id = self.entries.len() as u64;
        let start = self.arena.len();
        self.entries.push((start as u32, bytes.len() as u32));
        self.arena.extend_from_slice(bytes);
        self.index
            .insert(h, id << 40 | (bytes.len() as u64) << 32 | start as u64);
        Some(id)
    }
}

/// An index entry: (number, start in the arena, length), from bits 40.., 32..40, ..32
/// (numbers stay under 2^16, lengths under 2^8, starts under 2^32).
#[inline(always)]
fn unslot(slot: u64) -> (u64, usize, usize) {
    (
        slot >> 40,
        (slot & 0xffff_ffff) as usize,
        ((slot >> 32) & 0xff) as usize,
    )
}

/// `a == b` for slices of one length, eight bytes at a time: entries are short, and a
/// call to `memcmp` costs more than the compare.
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    let word = |s: &[u8], i: usize| u64::from_le_bytes(s[i..i + 8].try_into().expect("8"));
    let n = a.len();
    if n < 8 {
        let half = |s: &[u8], i: usize| u32::from_le_bytes(s[i..i + 4].try_into().expect("4"));
        return if n < 4 {
            a == b
        } else {
            half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4)
        };
    }
    let mut i = 0;
    while i + 8 <= n {
        if word(a, i) != word(b, i) {
            return false;
        }
        i += 8;
    }
    // The last eight bytes, overlapping what was compared.
    word(a, n - 8) == word(b, n - 8)
}

/// A shard's dictionaries: the current one, which new traces use, and older ones that
/// buffered traces still refer to.
#[derive(Debug)]
pub(crate) struct Dicts {
    /// (number, dictionary, traces that use it); the current one last.
    list: Vec<(u32, Dict, usize)>,
    next: u32,
}

impl Default for Dicts {
    fn default() -> Self {
        Self {
            list: vec![(0, Dict::default(), 0)],
            next: 1,
        }
    }
}

impl Dicts {
    /// The dictionary a new trace's spans are packed with (counted as one more user).
    pub(crate) fn enter(&mut self) -> u32 {
        let full = self.list.last().is_some_and(|(_, d, _)| d.full());
        if full && self.list.len() < MAX_DICTS {
            self.list.push((self.next, Dict::default(), 0));
            self.next = self.next.wrapping_add(1);
        }
        let last = self.list.last_mut().expect("always one");
        last.2 += 1;
        last.0
    }

    /// A trace that used dictionary `n` is gone. The dictionary itself stays until
    /// [`Dicts::collect`], so the trace can still be read until then.
    pub(crate) fn leave(&mut self, n: u32) {
        if let Some(e) = self.list.iter_mut().find(|e| e.0 == n) {
            e.2 = e.2.saturating_sub(1);
        }
    }

    /// Drop the dictionaries, but the current one, that no trace uses.
    pub(crate) fn collect(&mut self) {
        let current = self.list.last().map(|e| e.0);
        self.list.retain(|e| e.2 > 0 || Some(e.0) == current);
    }

    /// Dictionary `n`. A trace's dictionary lives as long as the trace, so any `n` a
    /// buffered trace holds is found; an unknown one reads as empty.
    pub(crate) fn get(&self, n: u32) -> &Dict {
        static EMPTY: std::sync::LazyLock<Dict> = std::sync::LazyLock::new(Dict::default);
        self.list.iter().find(|e| e.0 == n).map_or(&EMPTY, |e| &e.1)
    }

    /// Dictionary `n`, to pack more spans with (`None`: unknown, or packing `on` is off,
    /// and then only the trace id is packed).
    pub(crate) fn packing(&mut self, n: u32, on: bool) -> Option<&mut Dict> {
        self.list
            .iter_mut()
            .find(|e| on && e.0 == n)
            .map(|e| &mut e.1)
    }

    /// Heap bytes held by the dictionaries.
    pub(crate) fn held_bytes(&self) -> usize {
        self.list.iter().map(|e| e.1.held_bytes()).sum()
    }

    /// Dictionaries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }
}

/// Append `span` (one `Span` encoding, of the trace `trace_id`) to `out`, packed with
/// `dict` (which it may add to). `dict: None` packs the trace id only.
pub(crate) fn pack(
    span: &[u8],
    trace_id: &[u8; 16],
    mut dict: Option<&mut Dict>,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    let mut walk = fields(span);
    while let Some((field, wire, raw)) = walk.next_raw() {
        match (field, wire) {
            (1, Wire::Len(id)) if raw.len() == 18 && raw[0] == FIELD_1_TAG && id == trace_id => {
                out.push(ESC_TRACE_ID)
            }
            (9, Wire::Len(body)) if raw[0] == ATTRIBUTE_TAG => match dict.as_deref_mut() {
                Some(d) => attribute(raw, body, d, out),
                None => out.extend_from_slice(raw),
            },
            _ => out.extend_from_slice(raw),
        }
    }
    if !walk.finished() {
        out.truncate(start);
        out.push(ESC_RAW);
        out.extend_from_slice(span);
    }
}

/// Pack one attribute field (`raw`: tag, length and `body`).
#[inline]
fn attribute(raw: &[u8], body: &[u8], dict: &mut Dict, out: &mut Vec<u8>) {
    // The whole attribute, when it repeats: a key with one of its usual values.
    if raw.len() > 4
        && let Some(id) = dict.intern(raw)
        && 1 + varint_len(id) < raw.len()
    {
        out.push(ESC_ATTRIBUTE);
        put_varint(out, id);
        return;
    }
    // The key alone. The attribute's length is written again when unpacking, so only a
    // minimal one (as every encoder writes it) is left out.
    let header = raw.len() - body.len();
    if header == 1 + varint_len(body.len() as u64)
        && let Some((1, Wire::Len(_), key)) = fields(body).next_raw()
        && key[0] == FIELD_1_TAG
        && let Some(id) = dict.intern(key)
    {
        let rest = &body[key.len()..];
        let escape = 1 + varint_len(id) + varint_len(rest.len() as u64);
        if escape < header + key.len() {
            out.push(ESC_KEY);
            put_varint(out, id);
            put_varint(out, rest.len() as u64);
            out.extend_from_slice(rest);
            return;
        }
    }
    out.extend_from_slice(raw);
}

/// Append the span encoding that `packed` stands for to `out`. `None` if `packed` is not
/// what [`pack`] wrote for this trace and dictionary (then `out` holds part of it).
pub(crate) fn unpack(
    packed: &[u8],
    trace_id: &[u8; 16],
    dict: &Dict,
    out: &mut Vec<u8>,
) -> Option<()> {
    if let Some((&ESC_RAW, span)) = packed.split_first() {
        out.extend_from_slice(span);
        return Some(());
    }
    let mut rest = packed;
    while let Some(&first) = rest.first() {
        match first {
            ESC_TRACE_ID => {
                out.extend_from_slice(&[FIELD_1_TAG, 16]);
                out.extend_from_slice(trace_id);
                rest = &rest[1..];
            }
            ESC_ATTRIBUTE => {
                let (id, n) = varint(&rest[1..])?;
                out.extend_from_slice(dict.get(id)?);
                rest = &rest[1 + n..];
            }
            ESC_KEY => {
                let (id, n) = varint(&rest[1..])?;
                let key = dict.get(id)?;
                let (len, m) = varint(&rest[1 + n..])?;
                let from = 1 + n + m;
                let to = from.checked_add(usize::try_from(len).ok()?)?;
                let body = rest.get(from..to)?;
                out.push(ATTRIBUTE_TAG);
                put_varint(out, (key.len() + body.len()) as u64);
                out.extend_from_slice(key);
                out.extend_from_slice(body);
                rest = &rest[to..];
            }
            _ => {
                let (_, _, raw) = fields(rest).next_raw()?;
                out.extend_from_slice(raw);
                rest = &rest[raw.len()..];
            }
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use otel_pipeline_core::proto::trace::v1::Span;
    use otel_pipeline_core::testing::{SplitMix64, generate_traces};
    use prost::Message;

    const ID: [u8; 16] = [7; 16];

    fn round_trip(span: &[u8], dict: &mut Dict) -> usize {
        let mut packed = Vec::new();
        pack(span, &ID, Some(dict), &mut packed);
        let mut back = Vec::new();
        assert!(unpack(&packed, &ID, dict, &mut back).is_some(), "unpacks");
        assert_eq!(back, span, "the span's bytes come back exactly");
        packed.len()
    }

    #[test]
    fn packed_spans_unpack_to_their_bytes_and_repeats_shrink() {
        let req = generate_traces(50, 20, 3);
        let mut dict = Dict::default();
        let (mut raw, mut packed) = (0, 0);
        for s in &req.resource_spans[0].scope_spans[0].spans {
            let mut span = s.clone();
            span.trace_id = ID.to_vec();
            let bytes = span.encode_to_vec();
            raw += bytes.len();
            packed += round_trip(&bytes, &mut dict);
        }
        // Trace id, keys and the repeated values go: well under half.
        assert!(packed * 2 < raw, "packed {packed} of {raw}");
    }

    #[test]
    fn mutated_spans_come_back_byte_for_byte() {
        // Any bytes at all: what pack cannot read it keeps whole, and what it can read
        // (unknown fields, odd lengths, other trace ids) comes back as it was.
        let req = generate_traces(4, 5, 9);
        let mut rng = SplitMix64::new(11);
        let mut dict = Dict::default();
        let mut packed_some = false;
        for round in 0..20_000 {
            let s = &req.resource_spans[0].scope_spans[0].spans[round % 20];
            let mut span: Span = s.clone();
            if round % 3 == 0 {
                span.trace_id = ID.to_vec();
            }
            let mut bytes = span.encode_to_vec();
            for _ in 0..rng.below(4) {
                let at = rng.below(bytes.len() as u64 + 1) as usize;
                match rng.below(3) {
                    0 if at < bytes.len() => bytes[at] = rng.below(256) as u8,
                    1 => bytes.insert(at, rng.below(256) as u8),
                    _ => bytes.truncate(at),
                }
            }
            let mut packed = Vec::new();
            pack(&bytes, &ID, Some(&mut dict), &mut packed);
            packed_some |= packed.first() != Some(&ESC_RAW);
            let mut back = Vec::new();
            assert!(unpack(&packed, &ID, &dict, &mut back).is_some());
            assert_eq!(back, bytes, "round {round}");
        }
        assert!(packed_some);
    }

    #[test]
    fn a_hash_collision_or_a_full_dictionary_keeps_the_bytes() {
        let mut dict = Dict::default();
        // Seen once: remembered, not entered.
        assert_eq!(dict.intern(b"\x0a\x03abc"), None);
        assert_eq!(dict.intern(b"\x0a\x03abc"), Some(0));
        assert_eq!(dict.intern(b"\x0a\x03abc"), Some(0));
        // Too long to enter.
        let long = vec![b'x'; MAX_ENTRY + 1];
        assert_eq!(dict.intern(&long), None);
        assert_eq!(dict.intern(&long), None);
        // Full: known entries are still found, new ones stay out.
        for i in 0..MAX_ENTRIES {
            let e = format!("entry {i}");
            dict.intern(e.as_bytes());
            dict.intern(e.as_bytes());
        }
        assert!(dict.full());
        assert_eq!(dict.intern(b"\x0a\x03abc"), Some(0));
        assert_eq!(dict.intern(b"new"), None);
        assert_eq!(dict.intern(b"new"), None);
        // An entry found by hash whose bytes differ is not used.
        let h = dict.hash.hash_one(b"other");
        dict.index.insert(h, 5 << 32);
        assert_eq!(dict.intern(b"other"), None);
    }

    #[test]
    fn a_full_dictionary_is_followed_by_a_new_one_and_dropped_when_unused() {
        let mut dicts = Dicts::default();
        let first = dicts.enter();
        for i in 0..MAX_ENTRIES {
            let e = format!("entry {i}");
            let d = dicts.packing(first, true).expect("current");
            d.intern(e.as_bytes());
            d.intern(e.as_bytes());
        }
        let second = dicts.enter();
        assert_ne!(first, second);
        assert_eq!(dicts.len(), 2);
        dicts.collect();
        assert_eq!(dicts.len(), 2, "the first still has a trace");
        assert!(dicts.get(first).full());
        dicts.leave(first);
        assert!(dicts.get(first).full(), "readable until collected");
        dicts.collect();
        assert_eq!(dicts.len(), 1);
        assert!(!dicts.get(second).full());
        dicts.leave(second);
        dicts.collect();
        assert_eq!(dicts.len(), 1, "the current one stays");
    }
}

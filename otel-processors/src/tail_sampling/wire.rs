//! Reading fields of protobuf-encoded spans without decoding them.
//!
//! The tail sampler buffers spans encoded (about a sixth of the memory of the decoded
//! structs) and reads only what a policy needs: an attribute's value, the trace state. The
//! field numbers are those of `opentelemetry.proto.trace.v1.Span`,
//! `opentelemetry.proto.common.v1.KeyValue` and `AnyValue`.

/// Span fields read here.
pub(crate) const SPAN_TRACE_STATE: u32 = 3;
pub(crate) const SPAN_ATTRIBUTES: u32 = 9;
const KV_KEY: u32 = 1;
const KV_VALUE: u32 = 2;

pub(crate) use otel_pipeline_core::wire::{Wire, fields, varint};

/// Split a buffer of length-delimited messages.
pub(crate) fn delimited(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        let (len, n) = varint(rest)?;
        let len = usize::try_from(len).ok()?;
        let msg = rest.get(n..n.checked_add(len)?)?;
        rest = &rest[n + len..];
        Some(msg)
    })
}

// ---- encoding ----

use otel_pipeline_core::proto::common::v1::{KeyValue, any_value};
use otel_pipeline_core::proto::trace::v1::Span;
use prost::Message;

/// Bytes of a varint; lengths and tags under 128 (nearly all of them) without the
/// general formula.
#[inline(always)]
fn varint_len(v: u64) -> usize {
    if v < 0x80 {
        1
    } else {
        prost::encoding::encoded_len_varint(v)
    }
}

/// Room for a tag (at most two bytes for the fields here) and a length (at most ten).
const FIELD: usize = 12;

/// Size of a length-delimited field with `len` bytes of payload (one-byte tag).
#[inline(always)]
fn len_field(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Body size of a scalar `AnyValue` (`None`: a kind left to prost).
#[inline(always)]
fn scalar_len(v: Option<&any_value::Value>) -> Option<usize> {
    Some(match v {
        None => 0,
        Some(any_value::Value::StringValue(s)) => len_field(s.len()),
        Some(any_value::Value::BoolValue(_)) => 2,
        Some(any_value::Value::IntValue(i)) => 1 + varint_len(*i as u64),
        Some(any_value::Value::DoubleValue(_)) => 9,
        Some(_) => return None,
    })
}

/// Body size of an attribute written by hand (`None`: one left to prost).
#[inline(always)]
fn attribute_len(kv: &KeyValue) -> Option<usize> {
    if kv.key_strindex != 0 {
        return None;
    }
    let key = if kv.key.is_empty() {
        0
    } else {
        len_field(kv.key.len())
    };
    let value = match &kv.value {
        None => 0,
        Some(v) => len_field(scalar_len(v.value.as_ref())?),
    };
    Some(key + value)
}

/// Encodes spans back to back into a zero-filled area: a span is written in one pass, with
/// a room check per field instead of a capacity check per byte or a first pass to measure
/// it. Bodies only; [`append_delimited`] frames them.
#[derive(Debug, Default)]
pub(crate) struct SpanEncoder {
    /// Zero-filled working area; its length is the area's size, not what is used.
    buf: Vec<u8>,
    /// Bytes used by the spans encoded so far.
    used: usize,
}

impl SpanEncoder {
    /// An encoder with `bytes` of room to start with.
    pub(crate) fn with_room(bytes: usize) -> Self {
        Self {
            buf: vec![0; bytes],
            used: 0,
        }
    }

    /// Bytes used by the spans encoded so far.
    pub(crate) fn used(&self) -> usize {
        self.used
    }

    /// The encodings, back to back (the area's unused rest cut off).
    pub(crate) fn into_bytes(mut self) -> Vec<u8> {
        self.buf.truncate(self.used);
        // Batches wait in the shards' queues: do not hold twice what they need there.
        if self.buf.capacity() > 2 * self.used + 4096 {
            self.buf.shrink_to_fit();
        }
        self.buf
    }

    /// Encode `span` after the ones already here.
    pub(crate) fn push(&mut self, span: &Span) {
        let start = self.used;
        loop {
            let mut o = Out {
                buf: &mut self.buf[..],
                pos: start,
            };
            if o.span(span).is_some() {
                self.used = o.pos;
                return;
            }
            // Out of room: grow the area and write the span again.
            let want = (2 * self.buf.len()).max(start + 4096);
            self.buf.resize(want, 0);
        }
    }
}

/// Bytes `body` takes written length-delimited.
pub(crate) fn delimited_len(body: &[u8]) -> usize {
    varint_len(body.len() as u64) + body.len()
}

/// Append an encoded span body as a length-delimited message.
pub(crate) fn append_delimited(body: &[u8], out: &mut Vec<u8>) {
    prost::encoding::encode_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// Writes into the encoder's working area: a store and a bounds check per byte; `room`
/// checks, before each field, that the field fits (`None` ends the span's encoding, and
/// the encoder grows the area and starts the span again).
struct Out<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Out<'_> {
    #[inline(always)]
    fn room(&self, n: usize) -> Option<()> {
        (self.pos + n <= self.buf.len()).then_some(())
    }

    #[inline(always)]
    fn byte(&mut self, b: u8) {
        self.buf[self.pos] = b;
        self.pos += 1;
    }

    #[inline(always)]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte((v as u8) | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    #[inline(always)]
    fn tag(&mut self, field: u32, wire: u32) {
        self.varint(u64::from(field << 3 | wire));
    }

    #[inline(always)]
    fn raw(&mut self, b: &[u8]) {
        let n = b.len();
        let dst = &mut self.buf[self.pos..self.pos + n];
        // Span strings are mostly short: copy them with two overlapping fixed-size moves
        // instead of a call to memcpy.
        if (8..=16).contains(&n) {
            dst[..8].copy_from_slice(&b[..8]);
            dst[n - 8..].copy_from_slice(&b[n - 8..]);
        } else if (4..8).contains(&n) {
            dst[..4].copy_from_slice(&b[..4]);
            dst[n - 4..].copy_from_slice(&b[n - 4..]);
        } else {
            dst.copy_from_slice(b);
        }
        self.pos += n;
    }

    #[inline(always)]
    fn bytes_field(&mut self, field: u32, b: &[u8]) {
        if !b.is_empty() {
            self.tag(field, 2);
            self.varint(b.len() as u64);
            self.raw(b);
        }
    }

    #[inline(always)]
    fn varint_field(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.tag(field, 0);
            self.varint(v);
        }
    }

    /// A nested message written by prost.
    fn message(&mut self, field: u32, m: &impl Message) -> Option<()> {
        self.room(FIELD + m.encoded_len())?;
        let mut rest = &mut self.buf[self.pos..];
        let room = rest.len();
        prost::encoding::message::encode(field, m, &mut rest);
        self.pos += room - rest.len();
        Some(())
    }

    /// One attribute; scalar values by hand, anything else through prost.
    #[inline]
    fn attribute(&mut self, kv: &KeyValue) -> Option<()> {
        let Some(len) = attribute_len(kv) else {
            return self.message(SPAN_ATTRIBUTES, kv);
        };
        // The KeyValue's, key's, AnyValue's and value's framing, key and value.
        self.room(4 * FIELD + len)?;
        self.tag(SPAN_ATTRIBUTES, 2);
        self.varint(len as u64);
        self.bytes_field(KV_KEY, kv.key.as_bytes());
        let Some(value) = &kv.value else {
            return Some(());
        };
        let inner = value.value.as_ref();
        self.tag(KV_VALUE, 2);
        self.varint(scalar_len(inner).unwrap_or(0) as u64);
        match inner {
            Some(any_value::Value::StringValue(s)) => {
                self.tag(1, 2);
                self.varint(s.len() as u64);
                self.raw(s.as_bytes());
            }
            Some(any_value::Value::BoolValue(b)) => {
                self.tag(2, 0);
                self.byte(u8::from(*b));
            }
            Some(any_value::Value::IntValue(i)) => {
                self.tag(3, 0);
                self.varint(*i as u64);
            }
            Some(any_value::Value::DoubleValue(d)) => {
                self.tag(4, 1);
                self.raw(&d.to_le_bytes());
            }
            _ => {}
        }
        Some(())
    }

    /// A span's fields in field order: byte for byte what prost writes.
    fn span(&mut self, span: &Span) -> Option<()> {
        self.room(
            16 * FIELD
                + span.trace_id.len()
                + span.span_id.len()
                + span.trace_state.len()
                + span.parent_span_id.len()
                + span.name.len(),
        )?;
        self.bytes_field(1, &span.trace_id);
        self.bytes_field(2, &span.span_id);
        self.bytes_field(SPAN_TRACE_STATE, span.trace_state.as_bytes());
        self.bytes_field(4, &span.parent_span_id);
        self.bytes_field(5, span.name.as_bytes());
        self.varint_field(6, span.kind as i64 as u64);
        for (field, v) in [(7, span.start_time_unix_nano), (8, span.end_time_unix_nano)] {
            if v != 0 {
                self.tag(field, 1);
                self.raw(&v.to_le_bytes());
            }
        }
        for kv in &span.attributes {
            self.attribute(kv)?;
        }
        self.room(FIELD)?;
        self.varint_field(10, u64::from(span.dropped_attributes_count));
        for e in &span.events {
            self.message(11, e)?;
        }
        self.room(FIELD)?;
        self.varint_field(12, u64::from(span.dropped_events_count));
        for l in &span.links {
            self.message(13, l)?;
        }
        self.room(FIELD)?;
        self.varint_field(14, u64::from(span.dropped_links_count));
        if let Some(status) = &span.status {
            self.message(15, status)?;
        }
        self.room(FIELD)?;
        if span.flags != 0 {
            self.tag(16, 5);
            self.raw(&span.flags.to_le_bytes());
        }
        Some(())
    }
}

// ---- decoding ----

use otel_pipeline_core::proto::common::v1::AnyValue;
use otel_pipeline_core::proto::trace::v1::{
    Status,
    span::{Event, Link},
};

fn string(b: &[u8]) -> Option<String> {
    std::str::from_utf8(b).ok().map(str::to_owned)
}

/// An `AnyValue` with a scalar value; `None` leaves it to prost.
fn decode_any_value(b: &[u8]) -> Option<AnyValue> {
    let mut it = fields(b);
    let value = match it.next() {
        None => None,
        Some((1, Wire::Len(s))) => Some(any_value::Value::StringValue(string(s)?)),
        Some((2, Wire::Varint(v))) => Some(any_value::Value::BoolValue(v != 0)),
        Some((3, Wire::Varint(v))) => Some(any_value::Value::IntValue(v as i64)),
        Some((4, Wire::Fixed64(v))) => Some(any_value::Value::DoubleValue(f64::from_bits(v))),
        Some(_) => return None,
    };
    (it.next().is_none() && it.finished()).then_some(AnyValue { value })
}

/// An attribute: key and scalar value by hand, anything else by prost.
fn decode_attribute(b: &[u8]) -> Option<KeyValue> {
    let mut kv = KeyValue::default();
    let mut it = fields(b);
    for (field, w) in &mut it {
        match (field, w) {
            (KV_KEY, Wire::Len(k)) => kv.key = string(k)?,
            // A second value merges into the first in prost: let prost do it.
            (KV_VALUE, Wire::Len(_)) if kv.value.is_some() => return KeyValue::decode(b).ok(),
            (KV_VALUE, Wire::Len(v)) => {
                kv.value = Some(decode_any_value(v).or_else(|| AnyValue::decode(v).ok())?)
            }
            _ => return KeyValue::decode(b).ok(),
        }
    }
    it.finished().then_some(kv)
}

/// Decode a span: what prost's `Span::decode` gives for the same bytes (`None` where it
/// fails), by [`decode_span_fast`] where that applies.
pub(crate) fn decode_span(buf: &[u8]) -> Option<Span> {
    decode_span_fast(buf).or_else(|| Span::decode(buf).ok())
}

/// Decode a span this module encoded, with exactly sized vectors and no generic merge
/// loop; `None` for anything it does not expect, which [`decode_span`] hands to prost.
fn decode_span_fast(buf: &[u8]) -> Option<Span> {
    let mut span = Span::default();
    let attributes = fields(buf).filter(|(f, _)| *f == SPAN_ATTRIBUTES).count();
    span.attributes.reserve_exact(attributes);
    let mut it = fields(buf);
    for (field, w) in &mut it {
        match (field, w) {
            (1, Wire::Len(b)) => span.trace_id = b.to_vec(),
            (2, Wire::Len(b)) => span.span_id = b.to_vec(),
            (SPAN_TRACE_STATE, Wire::Len(b)) => span.trace_state = string(b)?,
            (4, Wire::Len(b)) => span.parent_span_id = b.to_vec(),
            (5, Wire::Len(b)) => span.name = string(b)?,
            (6, Wire::Varint(v)) => span.kind = v as i32,
            (7, Wire::Fixed64(v)) => span.start_time_unix_nano = v,
            (8, Wire::Fixed64(v)) => span.end_time_unix_nano = v,
            (SPAN_ATTRIBUTES, Wire::Len(b)) => span.attributes.push(decode_attribute(b)?),
            (10, Wire::Varint(v)) => span.dropped_attributes_count = v as u32,
            (11, Wire::Len(b)) => span.events.push(Event::decode(b).ok()?),
            (12, Wire::Varint(v)) => span.dropped_events_count = v as u32,
            (13, Wire::Len(b)) => span.links.push(Link::decode(b).ok()?),
            (14, Wire::Varint(v)) => span.dropped_links_count = v as u32,
            (15, Wire::Len(b)) if span.status.is_none() => {
                span.status = Some(Status::decode(b).ok()?)
            }
            (16, Wire::Fixed32(v)) => span.flags = v,
            _ => return None,
        }
    }
    it.finished().then_some(span)
}

/// An attribute value read in place.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum AnyRef<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Other,
}

/// The value an `AnyValue` encoding holds as prost reads it: of its `oneof` fields the last
/// one given wins (a scalar replaces what came before; arrays, maps, bytes and string
/// indexes into a dictionary, field 8, are `Other`).
pub(crate) fn any_value(buf: &[u8]) -> AnyRef<'_> {
    let mut out = AnyRef::Other;
    for (f, w) in fields(buf) {
        out = match (f, w) {
            (1, Wire::Len(s)) => std::str::from_utf8(s).map_or(AnyRef::Other, AnyRef::Str),
            (2, Wire::Varint(b)) => AnyRef::Bool(b != 0),
            (3, Wire::Varint(i)) => AnyRef::Int(i as i64),
            (4, Wire::Fixed64(d)) => AnyRef::Double(f64::from_bits(d)),
            (5..=8, _) => AnyRef::Other,
            // Unknown fields leave the value as it was.
            _ => continue,
        };
    }
    out
}

/// The value of attribute `key` in an encoded span, if present: what prost's decode
/// gives, read in place. The first attribute with the key counts (as the decoded
/// lookups take the first); within a `KeyValue` the last `key` wins, and several `value`
/// fields merge, so their `oneof` fields are read in order and the last one wins.
pub(crate) fn span_attr<'a>(span: &'a [u8], key: &str) -> Option<AnyRef<'a>> {
    fields(span).find_map(|(f, w)| match (f, w) {
        (SPAN_ATTRIBUTES, Wire::Len(kv)) => {
            let (k, raw) = attribute(kv);
            (k == key.as_bytes()).then(|| raw.map_or(AnyRef::Other, any_value))
        }
        _ => None,
    })
}

/// An encoded `KeyValue` as prost reads it: its key (the last given; none is the empty
/// key) and the bytes of its value (of several `value` fields, the last that sets its
/// `oneof`, or the first if none does), read only where the key is wanted.
pub(crate) fn attribute(kv: &[u8]) -> (&[u8], Option<&[u8]>) {
    let mut key: &[u8] = b"";
    let mut raw: Option<&[u8]> = None;
    for (f, w) in fields(kv) {
        match (f, w) {
            (KV_KEY, Wire::Len(k)) => key = k,
            (KV_VALUE, Wire::Len(v)) if raw.is_none() || has_oneof(v) => raw = Some(v),
            _ => {}
        }
    }
    (key, raw)
}

/// Whether an `AnyValue` encoding sets its `oneof` at all.
fn has_oneof(buf: &[u8]) -> bool {
    fields(buf).any(|(f, _)| (1..=8).contains(&f))
}

/// The `trace_state` of an encoded span ("" when absent).
pub(crate) fn span_trace_state(span: &[u8]) -> &str {
    // The last one given, as prost reads a repeated string field.
    fields(span)
        .filter_map(|(f, w)| match (f, w) {
            (SPAN_TRACE_STATE, Wire::Len(s)) => Some(std::str::from_utf8(s).unwrap_or("")),
            _ => None,
        })
        .last()
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use otel_pipeline_core::proto::common::v1::{AnyValue, KeyValue, any_value::Value};
    use otel_pipeline_core::proto::trace::v1::Span;
    use prost::Message;

    #[test]
    fn one_pass_encoding_decodes_to_the_same_span() {
        use otel_pipeline_core::proto::common::v1::{ArrayValue, KeyValueList};
        use otel_pipeline_core::proto::trace::v1::{
            Status,
            span::{Event, Link},
        };
        let kv = |k: &str, v: Option<Value>| KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: v }),
            ..Default::default()
        };
        let full = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            trace_state: "a=b".into(),
            parent_span_id: vec![3; 8],
            flags: 0x301,
            name: "n".repeat(300),
            kind: 3,
            start_time_unix_nano: 5,
            end_time_unix_nano: u64::MAX,
            attributes: vec![
                kv("s", Some(Value::StringValue("x".repeat(200)))),
                kv(&"k".repeat(150), Some(Value::StringValue("v".into()))),
                kv(
                    &"k".repeat(20_000),
                    Some(Value::StringValue("w".repeat(70_000))),
                ),
                kv("", Some(Value::StringValue(String::new()))),
                kv("i", Some(Value::IntValue(-1))),
                kv("b", Some(Value::BoolValue(false))),
                kv("d", Some(Value::DoubleValue(-0.5))),
                kv("none", None),
                KeyValue {
                    key: "no value".into(),
                    ..Default::default()
                },
                kv(
                    "arr",
                    Some(Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(Value::IntValue(1)),
                        }],
                    })),
                ),
                kv(
                    "map",
                    Some(Value::KvlistValue(KeyValueList {
                        values: vec![kv("k", Some(Value::BoolValue(true)))],
                    })),
                ),
                kv("bytes", Some(Value::BytesValue(vec![0, 1]))),
                KeyValue {
                    key: "idx".into(),
                    key_strindex: 7,
                    ..Default::default()
                },
            ],
            dropped_attributes_count: 1,
            events: vec![Event {
                name: "e".into(),
                time_unix_nano: 9,
                ..Default::default()
            }],
            dropped_events_count: 2,
            links: vec![Link {
                trace_id: vec![4; 16],
                span_id: vec![5; 8],
                flags: 1,
                ..Default::default()
            }],
            dropped_links_count: 3,
            status: Some(Status {
                code: 2,
                message: "m".into(),
            }),
        };
        for span in [full, Span::default()] {
            // Twice: the second one after the area has had to grow.
            let mut enc = SpanEncoder::with_room(16);
            enc.push(&span);
            let first = enc.used();
            enc.push(&span);
            let bytes = enc.into_bytes();
            assert_eq!(bytes.len(), 2 * first);
            assert_eq!(bytes[..first], bytes[first..]);
            let mut buf = vec![0xAA];
            append_delimited(&bytes[first..], &mut buf);
            assert_eq!(buf.len(), 1 + delimited_len(&bytes[first..]));
            // Byte for byte what prost writes, and read back as prost reads it.
            assert_eq!(buf[1..], span.encode_length_delimited_to_vec()[..]);
            let body = delimited(&buf[1..]).next().unwrap();
            assert_eq!(decode_span_fast(body), Some(span.clone()));
            let msgs: Vec<&[u8]> = delimited(&buf[1..]).collect();
            assert_eq!(msgs.len(), 1);
            assert_eq!(Span::decode(msgs[0]).unwrap(), span);
            assert_eq!(
                span_attr(msgs[0], "i"),
                span.attributes.get(2).map(|_| AnyRef::Int(-1))
            );
        }
    }

    /// The fast decoder either declines (and prost decodes) or agrees with prost, on
    /// mutated encodings of every field kind.
    #[test]
    fn decoder_agrees_with_prost_or_declines() {
        let kv = |k: &str, v: Value| KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        };
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            trace_state: "ot=th:8".into(),
            name: "GET /é".into(),
            kind: 2,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: vec![
                kv("s", Value::StringValue("x".into())),
                kv("i", Value::IntValue(-5)),
                kv("b", Value::BoolValue(true)),
                kv("d", Value::DoubleValue(0.5)),
                kv("raw", Value::BytesValue(vec![1, 2])),
            ],
            dropped_events_count: 3,
            status: Some(Default::default()),
            flags: 0x101,
            ..Default::default()
        };
        let good = span.encode_to_vec();
        assert_eq!(decode_span_fast(&good), Some(span));
        let mut rng = otel_pipeline_core::testing::SplitMix64::new(9);
        let (mut agreed, mut declined) = (0, 0);
        for _ in 0..20_000 {
            let mut b = good.clone();
            for _ in 0..=rng.below(3) {
                let at = rng.below(b.len() as u64) as usize;
                b[at] = rng.next_u64() as u8;
            }
            if rng.below(4) == 0 {
                b.truncate(rng.below(b.len() as u64) as usize);
            }
            match decode_span_fast(&b) {
                Some(ours) => {
                    assert_eq!(Some(ours), Span::decode(&b[..]).ok(), "{b:?}");
                    agreed += 1;
                }
                None => declined += 1,
            }
        }
        assert!(agreed > 1000 && declined > 1000, "{agreed} {declined}");
        // An unknown field is left to prost, which skips it.
        let mut unknown = good.clone();
        unknown.extend_from_slice(&[0xf8, 0x06, 0x01]); // field 111, varint 1
        assert_eq!(decode_span_fast(&unknown), None);
        assert!(Span::decode(&unknown[..]).is_ok());
    }

    #[test]
    fn reads_attributes_and_trace_state_from_bytes() {
        let kv = |k: &str, v: Value| KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        };
        let span = Span {
            trace_state: "ot=th:8".into(),
            attributes: vec![
                kv("s", Value::StringValue("x".into())),
                kv("i", Value::IntValue(-5)),
                kv("b", Value::BoolValue(true)),
                kv("d", Value::DoubleValue(0.5)),
            ],
            ..Default::default()
        };
        let mut buf = Vec::new();
        span.encode_length_delimited(&mut buf).unwrap();
        span.encode_length_delimited(&mut buf).unwrap();
        let spans: Vec<&[u8]> = delimited(&buf).collect();
        assert_eq!(spans.len(), 2);
        assert_eq!(span_attr(spans[0], "s"), Some(AnyRef::Str("x")));
        assert_eq!(span_attr(spans[0], "i"), Some(AnyRef::Int(-5)));
        assert_eq!(span_attr(spans[0], "b"), Some(AnyRef::Bool(true)));
        assert_eq!(span_attr(spans[1], "d"), Some(AnyRef::Double(0.5)));
        assert_eq!(span_attr(spans[1], "missing"), None);
        assert_eq!(span_trace_state(spans[1]), "ot=th:8");
        // Truncated input ends the walk instead of panicking.
        assert_eq!(delimited(&buf[..buf.len() - 3]).count(), 1);
        assert_eq!(span_attr(&spans[0][..5], "s"), None);
    }
}

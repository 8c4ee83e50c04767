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

/// One field's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

/// The fields of one message, in order. Stops at the first malformed byte.
pub(crate) struct Fields<'a> {
    buf: &'a [u8],
}

pub(crate) fn fields(buf: &[u8]) -> Fields<'_> {
    Fields { buf }
}

fn varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

impl<'a> Iterator for Fields<'a> {
    type Item = (u32, Wire<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let (tag, n) = varint(self.buf)?;
        let rest = &self.buf[n..];
        let field = (tag >> 3) as u32;
        let (wire, used) = match tag & 7 {
            0 => {
                let (v, m) = varint(rest)?;
                (Wire::Varint(v), m)
            }
            1 => (
                Wire::Fixed64(u64::from_le_bytes(rest.get(..8)?.try_into().ok()?)),
                8,
            ),
            2 => {
                let (len, m) = varint(rest)?;
                let len = usize::try_from(len).ok()?;
                (Wire::Len(rest.get(m..m.checked_add(len)?)?), m + len)
            }
            5 => (
                Wire::Fixed32(u32::from_le_bytes(rest.get(..4)?.try_into().ok()?)),
                4,
            ),
            _ => return None,
        };
        self.buf = &rest[used..];
        Some((field, wire))
    }
}

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

/// An attribute value read in place.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum AnyRef<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Other,
}

fn any_value(buf: &[u8]) -> AnyRef<'_> {
    match fields(buf).next() {
        Some((1, Wire::Len(s))) => std::str::from_utf8(s).map_or(AnyRef::Other, AnyRef::Str),
        Some((2, Wire::Varint(b))) => AnyRef::Bool(b != 0),
        Some((3, Wire::Varint(i))) => AnyRef::Int(i as i64),
        Some((4, Wire::Fixed64(d))) => AnyRef::Double(f64::from_bits(d)),
        _ => AnyRef::Other,
    }
}

/// The value of attribute `key` in an encoded span, if present.
pub(crate) fn span_attr<'a>(span: &'a [u8], key: &str) -> Option<AnyRef<'a>> {
    fields(span).find_map(|(f, w)| match (f, w) {
        (SPAN_ATTRIBUTES, Wire::Len(kv)) => {
            let mut found_key = false;
            let mut value = None;
            for (f, w) in fields(kv) {
                match (f, w) {
                    (KV_KEY, Wire::Len(k)) => found_key = k == key.as_bytes(),
                    (KV_VALUE, Wire::Len(v)) => value = Some(v),
                    _ => {}
                }
            }
            found_key.then(|| value.map_or(AnyRef::Other, any_value))
        }
        _ => None,
    })
}

/// The `trace_state` of an encoded span ("" when absent).
pub(crate) fn span_trace_state(span: &[u8]) -> &str {
    fields(span)
        .find_map(|(f, w)| match (f, w) {
            (SPAN_TRACE_STATE, Wire::Len(s)) => std::str::from_utf8(s).ok(),
            _ => None,
        })
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use otel_pipeline_core::proto::common::v1::{AnyValue, KeyValue, any_value::Value};
    use otel_pipeline_core::proto::trace::v1::Span;
    use prost::Message;

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

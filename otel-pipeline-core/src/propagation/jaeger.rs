//! Jaeger propagation: `uber-trace-id: {trace-id}:{span-id}:{parent-span-id}:{flags}` and
//! `uberctx-{key}` baggage.
//!
//! - Ids are hex of any length up to 32 (trace) or 16 (span) characters, left-padded; the
//!   flags are hex (`0x01` sampled, `0x02` debug). The separators may arrive URL-encoded as
//!   `%3A` or `%3a`.
//! - Debug is kept as a [`SamplingState`], not as a W3C flag bit.
//! - `uberctx-*` headers map to Baggage both ways (values percent-decoded and encoded), and
//!   are merged with any baggage already in the context.

use std::borrow::Cow;
use std::fmt;

use opentelemetry::Context;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

use super::baggage::{clone_baggage, percent_decode, percent_encode};
use super::sampling::{SamplingDecision, SamplingState};
use crate::hex;

/// The trace header.
pub const UBER_TRACE_ID: &str = "uber-trace-id";
/// Prefix of baggage headers.
pub const UBERCTX_PREFIX: &str = "uberctx-";

const FLAG_SAMPLED: u8 = 0x01;
const FLAG_DEBUG: u8 = 0x02;

/// Decode up to `N` bytes of hex (either case) right-aligned into an array.
fn parse_hex_id<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.is_empty() || s.len() > 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    let digits = s.as_bytes();
    // Walk from the right, two digits per byte.
    let mut pos = N;
    let mut i = digits.len();
    while i > 0 {
        let lo = (digits[i - 1] as char).to_digit(16)? as u8;
        let hi = if i >= 2 {
            (digits[i - 2] as char).to_digit(16)? as u8
        } else {
            0
        };
        pos -= 1;
        out[pos] = (hi << 4) | lo;
        i = i.saturating_sub(2);
    }
    Some(out)
}

/// Parse an `uber-trace-id` value into ids and flags.
///
/// ```
/// use otel_pipeline_core::propagation::jaeger::parse_uber_trace_id;
/// let (trace, span, flags) = parse_uber_trace_id("6e0c63257de34c92%3Abf3bb9c1e4ba9d3e%3A0%3A3").unwrap();
/// assert_eq!(format!("{trace}"), "00000000000000006e0c63257de34c92");
/// assert_eq!(flags, 3);
/// # let _ = span;
/// ```
pub fn parse_uber_trace_id(value: &str) -> Option<(TraceId, SpanId, u8)> {
    let value = value.trim_matches([' ', '\t']);
    let decoded: Cow<'_, str> = if value.contains('%') {
        Cow::Owned(value.replace("%3A", ":").replace("%3a", ":"))
    } else {
        Cow::Borrowed(value)
    };
    let mut parts = decoded.split(':');
    let (trace, span, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let trace: [u8; 16] = parse_hex_id(trace)?;
    let span: [u8; 8] = parse_hex_id(span)?;
    let _parent: [u8; 8] = parse_hex_id(parent)?;
    let flags: [u8; 1] = parse_hex_id(flags)?;
    if trace == [0; 16] || span == [0; 8] {
        return None;
    }
    Some((
        TraceId::from_bytes(trace),
        SpanId::from_bytes(span),
        flags[0],
    ))
}

/// The Jaeger propagator.
///
/// ```
/// use std::collections::HashMap;
/// use opentelemetry::baggage::BaggageExt;
/// use opentelemetry::propagation::TextMapPropagator;
/// use otel_pipeline_core::propagation::JaegerPropagator;
///
/// let p = JaegerPropagator::new();
/// let mut h = HashMap::new();
/// h.insert("uber-trace-id".to_string(), "6e0c63257de34c926e0c63257de34c92:bf3bb9c1e4ba9d3e:0:1".to_string());
/// h.insert("uberctx-user".to_string(), "alice%20b".to_string());
/// let cx = p.extract(&h);
/// assert_eq!(cx.baggage().get("user").map(|v| v.as_str()), Some("alice b"));
/// let mut out = HashMap::new();
/// p.inject_context(&cx, &mut out);
/// assert_eq!(out["uber-trace-id"], "6e0c63257de34c926e0c63257de34c92:bf3bb9c1e4ba9d3e:0:1");
/// assert_eq!(out["uberctx-user"], "alice%20b");
/// ```
#[derive(Clone)]
pub struct JaegerPropagator {
    baggage: bool,
    fields: [String; 1],
}

impl fmt::Debug for JaegerPropagator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JaegerPropagator")
            .field("baggage", &self.baggage)
            .finish()
    }
}

impl Default for JaegerPropagator {
    fn default() -> Self {
        Self::new()
    }
}

impl JaegerPropagator {
    /// A propagator that also maps `uberctx-*` to Baggage.
    pub fn new() -> Self {
        Self {
            baggage: true,
            fields: [UBER_TRACE_ID.to_string()],
        }
    }

    /// Leave `uberctx-*` headers alone (when W3C Baggage carries baggage).
    pub fn without_baggage(mut self) -> Self {
        self.baggage = false;
        self
    }
}

impl TextMapPropagator for JaegerPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if sc.is_valid() {
            let mut flags = if sc.is_sampled() { FLAG_SAMPLED } else { 0 };
            if SamplingState::for_injection(cx) == Some(SamplingDecision::Debug) {
                flags |= FLAG_SAMPLED | FLAG_DEBUG;
            }
            let mut v = String::with_capacity(32 + 1 + 16 + 3 + 2);
            hex::encode_to(&sc.trace_id().to_bytes(), &mut v);
            v.push(':');
            hex::encode_to(&sc.span_id().to_bytes(), &mut v);
            v.push_str(":0:");
            v.push_str(&format!("{flags:x}"));
            injector.set(UBER_TRACE_ID, v);
        }
        if self.baggage {
            for (key, (value, _)) in cx.baggage() {
                let mut encoded = String::new();
                percent_encode(value.as_str(), &mut encoded);
                injector.set(&format!("{UBERCTX_PREFIX}{}", key.as_str()), encoded);
            }
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let mut out = cx.clone();
        if let Some((trace, span, flags)) =
            extractor.get(UBER_TRACE_ID).and_then(parse_uber_trace_id)
        {
            let debug = flags & FLAG_DEBUG != 0;
            let sampled = debug || flags & FLAG_SAMPLED != 0;
            let tf = if sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::NOT_SAMPLED
            };
            let sc = SpanContext::new(trace, span, tf, true, TraceState::NONE);
            out = out.with_remote_span_context(sc.clone());
            if debug {
                out = SamplingState::attach(&out, SamplingDecision::Debug, Some(&sc));
            }
        }
        if self.baggage {
            let mut entries = Vec::new();
            for key in extractor.keys() {
                let lower = key.to_ascii_lowercase();
                if let (Some(name), Some(v)) =
                    (lower.strip_prefix(UBERCTX_PREFIX), extractor.get(key))
                {
                    entries.push((
                        name.to_string(),
                        percent_decode(v.trim_matches([' ', '\t'])),
                    ));
                }
            }
            if !entries.is_empty() {
                let mut baggage = clone_baggage(out.baggage());
                for (k, v) in entries {
                    baggage.insert(k, v);
                }
                out = out.with_baggage(baggage);
            }
        }
        out
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn extract(v: &str) -> SpanContext {
        let mut h = HashMap::new();
        h.insert(UBER_TRACE_ID.to_string(), v.to_string());
        JaegerPropagator::new()
            .extract(&h)
            .span()
            .span_context()
            .clone()
    }

    #[test]
    fn ids_are_left_padded_and_separators_decoded() {
        let sc = extract("abc:de:0:1");
        assert_eq!(sc.trace_id(), TraceId::from_hex("abc").unwrap());
        assert_eq!(sc.span_id(), SpanId::from_hex("de").unwrap());
        assert!(sc.is_sampled());
        for sep in ["%3A", "%3a"] {
            let sc = extract(&format!(
                "6e0c63257de34c92{sep}bf3bb9c1e4ba9d3e{sep}0{sep}0"
            ));
            assert!(sc.is_valid() && !sc.is_sampled());
        }
        // Upper-case hex is accepted (Jaeger clients parse either case).
        assert!(extract("6E0C63257DE34C92:BF3BB9C1E4BA9D3E:0:1").is_valid());
    }

    #[test]
    fn debug_flag_round_trips_without_touching_w3c_bits() {
        let mut h = HashMap::new();
        h.insert(
            UBER_TRACE_ID.to_string(),
            "6e0c63257de34c92:bf3bb9c1e4ba9d3e:0:3".to_string(),
        );
        let p = JaegerPropagator::new();
        let cx = p.extract(&h);
        assert_eq!(cx.span().span_context().trace_flags(), TraceFlags::SAMPLED);
        let mut out = HashMap::new();
        p.inject_context(&cx, &mut out);
        assert_eq!(
            out[UBER_TRACE_ID],
            "00000000000000006e0c63257de34c92:bf3bb9c1e4ba9d3e:0:3"
        );
    }

    #[test]
    fn invalid_values() {
        for bad in [
            "",
            "a:b:c",
            "a:b:c:d:e",
            "0:bf3bb9c1e4ba9d3e:0:1",
            "6e0c:0:0:1",
            "xyz:bf:0:1",
            "123456789012345678901234567890123:bf:0:1",
            "ab:12345678901234567:0:1",
            "ab:cd:0:123",
        ] {
            assert!(!extract(bad).is_valid(), "{bad}");
        }
    }
}

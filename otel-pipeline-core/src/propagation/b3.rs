//! B3 propagation (Zipkin): the single `b3` header and the multi `X-B3-*` headers.
//!
//! - Extraction tries the single header first, then the multi headers.
//! - Trace ids may be 16 or 32 lowercase hex characters (a 64-bit id is left-padded).
//! - Sampling `1`, `0`, `d` (debug), or absent (deferred); `b3: 0` (or `1`, `d`) alone is a
//!   decision without ids and is kept. `X-B3-Sampled` also accepts the legacy `true`/`false`;
//!   `X-B3-Flags: 1` is debug.
//! - Debug, deferred and id-less decisions are kept as a
//!   [`SamplingState`] in the context, never as W3C flag bits.
//! - Injection writes the single header by default, the multi headers on request, or both;
//!   it never writes a parent id (the receiver does not need it and it is often wrong).

use std::fmt;

use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

use super::sampling::{SamplingDecision, SamplingState};
use crate::hex;

/// The single header.
pub const B3_SINGLE: &str = "b3";
/// Multi header: trace id.
pub const B3_TRACE_ID: &str = "x-b3-traceid";
/// Multi header: span id.
pub const B3_SPAN_ID: &str = "x-b3-spanid";
/// Multi header: parent span id (read, never written).
pub const B3_PARENT_SPAN_ID: &str = "x-b3-parentspanid";
/// Multi header: sampled.
pub const B3_SAMPLED: &str = "x-b3-sampled";
/// Multi header: debug flag.
pub const B3_FLAGS: &str = "x-b3-flags";

/// Which B3 headers to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum B3Encoding {
    /// `b3: {trace}-{span}-{sampling}` (the default: one header, cheapest).
    #[default]
    Single,
    /// `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled` / `X-B3-Flags`.
    Multi,
    /// Both, for peers of either kind.
    SingleAndMulti,
}

/// What a B3 header set says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct B3Context {
    /// Trace and span id, when present.
    pub ids: Option<(TraceId, SpanId)>,
    /// The sampling decision (`Defer` when absent).
    pub decision: SamplingDecision,
}

fn parse_trace_id(s: &str) -> Option<TraceId> {
    let mut bytes = [0u8; 16];
    let ok = match s.len() {
        32 => hex::decode_lower(s.as_bytes(), &mut bytes),
        16 => hex::decode_lower(s.as_bytes(), &mut bytes[8..]),
        _ => false,
    };
    (ok && bytes != [0; 16]).then(|| TraceId::from_bytes(bytes))
}

fn parse_span_id(s: &str) -> Option<SpanId> {
    let mut bytes = [0u8; 8];
    (hex::decode_lower(s.as_bytes(), &mut bytes) && bytes != [0; 8])
        .then(|| SpanId::from_bytes(bytes))
}

fn parse_sampling(s: &str) -> Option<SamplingDecision> {
    match s {
        "1" => Some(SamplingDecision::Accept),
        "0" => Some(SamplingDecision::Deny),
        "d" => Some(SamplingDecision::Debug),
        _ => None,
    }
}

/// Parse a single `b3` header value.
///
/// ```
/// use otel_pipeline_core::propagation::b3::parse_single;
/// use otel_pipeline_core::propagation::SamplingDecision;
/// let b3 = parse_single("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d").unwrap();
/// assert_eq!(b3.decision, SamplingDecision::Debug);
/// assert_eq!(parse_single("0").unwrap(), otel_pipeline_core::propagation::b3::B3Context {
///     ids: None, decision: SamplingDecision::Deny });
/// ```
pub fn parse_single(value: &str) -> Option<B3Context> {
    let value = value.trim_matches([' ', '\t']);
    let mut parts = value.split('-');
    let first = parts.next()?;
    let Some(span) = parts.next() else {
        // A sampling decision alone.
        return Some(B3Context {
            ids: None,
            decision: parse_sampling(first)?,
        });
    };
    let ids = (parse_trace_id(first)?, parse_span_id(span)?);
    let decision = match parts.next() {
        None => SamplingDecision::Defer,
        Some(s) => parse_sampling(s)?,
    };
    if let Some(parent) = parts.next() {
        parse_span_id(parent)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(B3Context {
        ids: Some(ids),
        decision,
    })
}

/// Parse the multi headers.
pub fn parse_multi(extractor: &dyn Extractor) -> Option<B3Context> {
    let get = |k: &str| extractor.get(k).map(|v| v.trim_matches([' ', '\t']));
    let debug = get(B3_FLAGS) == Some("1");
    let sampled = match get(B3_SAMPLED) {
        None => None,
        Some("1") | Some("true") => Some(SamplingDecision::Accept),
        Some("0") | Some("false") => Some(SamplingDecision::Deny),
        Some(_) => return None,
    };
    let decision = if debug {
        SamplingDecision::Debug
    } else {
        sampled.unwrap_or(SamplingDecision::Defer)
    };
    match (get(B3_TRACE_ID), get(B3_SPAN_ID)) {
        (Some(t), Some(s)) => {
            if let Some(parent) = get(B3_PARENT_SPAN_ID) {
                parse_span_id(parent)?;
            }
            Some(B3Context {
                ids: Some((parse_trace_id(t)?, parse_span_id(s)?)),
                decision,
            })
        }
        (None, None) if debug || sampled.is_some() => Some(B3Context {
            ids: None,
            decision,
        }),
        _ => None,
    }
}

/// The B3 propagator.
///
/// ```
/// use std::collections::HashMap;
/// use opentelemetry::propagation::TextMapPropagator;
/// use otel_pipeline_core::propagation::B3Propagator;
///
/// let p = B3Propagator::single();
/// let mut h = HashMap::new();
/// h.insert("b3".to_string(), "0".to_string()); // "do not sample", no ids
/// let cx = p.extract(&h);
/// let mut out = HashMap::new();
/// p.inject_context(&cx, &mut out);
/// assert_eq!(out["b3"], "0"); // the decision is passed on, not lost
/// ```
#[derive(Clone)]
pub struct B3Propagator {
    encoding: B3Encoding,
    fields: Vec<String>,
}

impl fmt::Debug for B3Propagator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("B3Propagator")
            .field("encoding", &self.encoding)
            .finish()
    }
}

impl Default for B3Propagator {
    fn default() -> Self {
        Self::single()
    }
}

impl B3Propagator {
    /// Inject with `encoding`; extraction always accepts both forms.
    pub fn new(encoding: B3Encoding) -> Self {
        let fields = match encoding {
            B3Encoding::Single => vec![B3_SINGLE],
            B3Encoding::Multi => vec![B3_TRACE_ID, B3_SPAN_ID, B3_SAMPLED, B3_FLAGS],
            B3Encoding::SingleAndMulti => {
                vec![B3_SINGLE, B3_TRACE_ID, B3_SPAN_ID, B3_SAMPLED, B3_FLAGS]
            }
        };
        Self {
            encoding,
            fields: fields.into_iter().map(String::from).collect(),
        }
    }

    /// Inject the single `b3` header.
    pub fn single() -> Self {
        Self::new(B3Encoding::Single)
    }

    /// Inject the multi `X-B3-*` headers.
    pub fn multi() -> Self {
        Self::new(B3Encoding::Multi)
    }

    /// Extract from `extractor`: single header first, then multi.
    pub fn extract_b3(&self, extractor: &dyn Extractor) -> Option<B3Context> {
        extractor
            .get(B3_SINGLE)
            .and_then(parse_single)
            .or_else(|| parse_multi(extractor))
    }
}

fn sampling_char(d: SamplingDecision) -> Option<&'static str> {
    match d {
        SamplingDecision::Accept => Some("1"),
        SamplingDecision::Deny => Some("0"),
        SamplingDecision::Debug => Some("d"),
        SamplingDecision::Defer => None,
    }
}

impl TextMapPropagator for B3Propagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        let stored = SamplingState::for_injection(cx);
        let single = matches!(
            self.encoding,
            B3Encoding::Single | B3Encoding::SingleAndMulti
        );
        let multi = matches!(
            self.encoding,
            B3Encoding::Multi | B3Encoding::SingleAndMulti
        );
        if !sc.is_valid() {
            // A decision that arrived without ids is passed on as such.
            if let Some(decision) = stored {
                if let Some(c) = sampling_char(decision).filter(|_| single) {
                    injector.set(B3_SINGLE, c.to_string());
                }
                if multi {
                    match decision {
                        SamplingDecision::Debug => injector.set(B3_FLAGS, "1".into()),
                        SamplingDecision::Defer => {}
                        d => injector.set(B3_SAMPLED, sampling_char(d).unwrap_or("0").into()),
                    }
                }
            }
            return;
        }
        let decision = stored.unwrap_or(if sc.is_sampled() {
            SamplingDecision::Accept
        } else {
            SamplingDecision::Deny
        });
        if single {
            let mut v = String::with_capacity(32 + 1 + 16 + 2);
            hex::encode_to(&sc.trace_id().to_bytes(), &mut v);
            v.push('-');
            hex::encode_to(&sc.span_id().to_bytes(), &mut v);
            if let Some(c) = sampling_char(decision) {
                v.push('-');
                v.push_str(c);
            }
            injector.set(B3_SINGLE, v);
        }
        if multi {
            injector.set(B3_TRACE_ID, hex::encode(&sc.trace_id().to_bytes()));
            injector.set(B3_SPAN_ID, hex::encode(&sc.span_id().to_bytes()));
            match decision {
                SamplingDecision::Debug => injector.set(B3_FLAGS, "1".into()),
                SamplingDecision::Defer => {}
                d => injector.set(B3_SAMPLED, sampling_char(d).unwrap_or("0").into()),
            }
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let Some(b3) = self.extract_b3(extractor) else {
            return cx.clone();
        };
        match b3.ids {
            None => SamplingState::attach(cx, b3.decision, None),
            Some((trace_id, span_id)) => {
                let sampled = matches!(
                    b3.decision,
                    SamplingDecision::Accept | SamplingDecision::Debug
                );
                let flags = if sampled {
                    TraceFlags::SAMPLED
                } else {
                    TraceFlags::NOT_SAMPLED
                };
                let sc = SpanContext::new(trace_id, span_id, flags, true, TraceState::NONE);
                let with_span = cx.with_remote_span_context(sc.clone());
                match b3.decision {
                    // Plain decisions are fully said by the sampled flag.
                    SamplingDecision::Accept | SamplingDecision::Deny => with_span,
                    d => SamplingState::attach(&with_span, d, Some(&sc)),
                }
            }
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const T128: &str = "80f198ee56343ba864fe8b2a57d3eff7";
    const T64: &str = "a3ce929d0e0e4736";
    const S: &str = "e457b5a2e4d86bd1";
    const P: &str = "05e3ac9a4f6e3b90";

    fn h(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn roundtrip(p: &B3Propagator, input: &[(&str, &str)]) -> HashMap<String, String> {
        let cx = p.extract(&h(input));
        let mut out = HashMap::new();
        p.inject_context(&cx, &mut out);
        out
    }

    #[test]
    fn single_header_published_cases() {
        let single = B3Propagator::single();
        // From the B3 spec: trace-span-sampling-parent; parent is never re-injected.
        let out = roundtrip(&single, &[("b3", &format!("{T128}-{S}-1-{P}"))]);
        assert_eq!(out["b3"], format!("{T128}-{S}-1"));
        // 64-bit trace id is left-padded.
        let out = roundtrip(&single, &[("b3", &format!("{T64}-{S}-0"))]);
        assert_eq!(out["b3"], format!("0000000000000000{T64}-{S}-0"));
        // Debug stays debug.
        assert_eq!(
            roundtrip(&single, &[("b3", &format!("{T128}-{S}-d"))])["b3"],
            format!("{T128}-{S}-d")
        );
        // Deferred stays deferred.
        assert_eq!(
            roundtrip(&single, &[("b3", &format!("{T128}-{S}"))])["b3"],
            format!("{T128}-{S}")
        );
        // Decision alone.
        for d in ["0", "1", "d"] {
            assert_eq!(roundtrip(&single, &[("b3", d)])["b3"], d);
        }
    }

    #[test]
    fn debug_is_not_a_w3c_flag_bit() {
        let cx = B3Propagator::single().extract(&h(&[("b3", &format!("{T128}-{S}-d"))]));
        let sc = cx.span().span_context().clone();
        assert_eq!(
            sc.trace_flags(),
            TraceFlags::SAMPLED,
            "debug implies sampled, nothing else"
        );
        let cx = B3Propagator::single().extract(&h(&[("b3", &format!("{T128}-{S}"))]));
        assert_eq!(
            cx.span().span_context().trace_flags(),
            TraceFlags::NOT_SAMPLED
        );
    }

    #[test]
    fn invalid_single_falls_back_to_multi() {
        let p = B3Propagator::multi();
        let out = roundtrip(
            &p,
            &[
                ("b3", "not-valid"),
                ("x-b3-traceid", T128),
                ("x-b3-spanid", S),
                ("x-b3-parentspanid", P),
                ("x-b3-sampled", "1"),
            ],
        );
        assert_eq!(out.get("x-b3-traceid").map(String::as_str), Some(T128));
        assert_eq!(out.get("x-b3-spanid").map(String::as_str), Some(S));
        assert_eq!(out.get("x-b3-sampled").map(String::as_str), Some("1"));
        assert!(
            !out.contains_key("x-b3-parentspanid"),
            "never inject a parent id"
        );
    }

    #[test]
    fn multi_header_forms() {
        let p = B3Propagator::multi();
        let out = roundtrip(
            &p,
            &[
                ("x-b3-traceid", T64),
                ("x-b3-spanid", S),
                ("x-b3-flags", "1"),
            ],
        );
        assert_eq!(out.get("x-b3-flags").map(String::as_str), Some("1"));
        assert!(!out.contains_key("x-b3-sampled"));
        let out = roundtrip(
            &p,
            &[
                ("x-b3-traceid", T128),
                ("x-b3-spanid", S),
                ("x-b3-sampled", "true"),
            ],
        );
        assert_eq!(out.get("x-b3-sampled").map(String::as_str), Some("1"));
        let out = roundtrip(&p, &[("x-b3-sampled", "0")]);
        assert_eq!(out, h(&[("x-b3-sampled", "0")]));
        // Deferred: no sampling header.
        let out = roundtrip(&p, &[("x-b3-traceid", T128), ("x-b3-spanid", S)]);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn invalid_b3_is_ignored() {
        let p = B3Propagator::single();
        for bad in [
            format!("{}-{S}-1", T128.to_uppercase()),
            format!("{T128}-{S}-x"),
            format!("{T128}-0000000000000000-1"),
            format!("00000000000000000000000000000000-{S}-1"),
            format!("{T128}-{S}-1-{P}-extra"),
            format!("{T128}-{S}-1-zz"),
            format!("{T128}1-{S}-1"),
            "2".to_string(),
            String::new(),
        ] {
            assert!(roundtrip(&p, &[("b3", &bad)]).is_empty(), "{bad}");
        }
        assert!(roundtrip(&B3Propagator::multi(), &[("x-b3-traceid", T128)]).is_empty());
    }
}

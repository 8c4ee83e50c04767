//! W3C Trace Context (Level 2): `traceparent` and `tracestate`.
//!
//! # What "strict" means here
//! - `traceparent` ids and flags are lowercase hex of exact length; version `ff` is invalid;
//!   all-zero trace or parent ids are invalid; version `00` with anything after the flags is
//!   invalid; a higher version is parsed by the rules for future versions (at least 55
//!   characters, a `-` after the flags if more follow) and re-emitted as `00`. Spaces and
//!   tabs around the value are optional whitespace. Two different `traceparent` values in
//!   one request are invalid (the trace restarts).
//! - All 8 flag bits of a version `00` header are kept end to end, including the Level 2
//!   random-trace-id flag `0x02`; of a higher version only the bits defined today
//!   (sampled, random) are kept.
//! - `tracestate` lines are combined in order; empty members are skipped; a member with an
//!   invalid key or value, a duplicate key, or more than 32 members makes the whole
//!   `tracestate` invalid (it is dropped, the `traceparent` is kept). On injection, an empty
//!   `tracestate` is never sent, and one over 512 characters is cut by whole entries:
//!   entries over 128 characters first, then from the end.
//!
//! Keys follow the multi-tenant grammar (`tenant@system`, at most one `@`, a system id of at
//! most 14 characters) that the W3C conformance harness checks, with Level 2's allowance of a
//! digit as first character.

use std::fmt;

use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

use crate::hex;

/// Header name of the trace parent.
pub const TRACEPARENT: &str = "traceparent";
/// Header name of the trace state.
pub const TRACESTATE: &str = "tracestate";

/// The Level 2 flag that says the trace id's right-most 7 bytes are random.
pub const FLAG_RANDOM: u8 = 0x02;

/// Most members a `tracestate` may hold.
pub const MAX_TRACESTATE_MEMBERS: usize = 32;
/// Longest `tracestate` this crate propagates (the W3C's "at least 512").
pub const MAX_TRACESTATE_LEN: usize = 512;
/// Entries longer than this are the first removed when `tracestate` must be cut.
pub const TRACESTATE_LONG_ENTRY: usize = 128;

/// Why a `traceparent` value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceparentError {
    /// The version is not two lowercase hex digits followed by `-`.
    #[error("version is not two lowercase hex digits followed by '-'")]
    Version,
    /// Version `ff` is forbidden.
    #[error("version ff is forbidden")]
    VersionFf,
    /// Shorter than the 55 characters every version needs.
    #[error("shorter than 55 characters")]
    TooShort,
    /// The trace id is not 32 lowercase hex digits followed by `-`.
    #[error("trace-id is not 32 lowercase hex digits")]
    TraceId,
    /// The trace id is all zeros.
    #[error("trace-id is all zeros")]
    ZeroTraceId,
    /// The parent id is not 16 lowercase hex digits followed by `-`.
    #[error("parent-id is not 16 lowercase hex digits")]
    ParentId,
    /// The parent id is all zeros.
    #[error("parent-id is all zeros")]
    ZeroParentId,
    /// The flags are not 2 lowercase hex digits.
    #[error("trace-flags are not 2 lowercase hex digits")]
    Flags,
    /// Version 00 with data after the flags, or a later version without `-` after them.
    #[error("unexpected data after trace-flags")]
    TrailingData,
    /// Several `traceparent` headers with different values.
    #[error("several different traceparent values")]
    Duplicate,
}

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traceparent {
    /// The version the sender used (re-emitted as `00`).
    pub version: u8,
    /// The trace id.
    pub trace_id: TraceId,
    /// The sender's span id (our parent).
    pub parent_id: SpanId,
    /// The flags as kept (all 8 bits for version 00).
    pub flags: TraceFlags,
}

#[inline]
fn hex_byte(hi: u8, lo: u8) -> Option<u8> {
    Some((hex::lower_digit(hi)? << 4) | hex::lower_digit(lo)?)
}

/// Parse one `traceparent` value. Performs no heap allocation.
///
/// ```
/// use otel_pipeline_core::propagation::w3c::parse_traceparent;
/// let tp = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03").unwrap();
/// assert_eq!(tp.flags.to_u8(), 0x03); // sampled + random, both kept
/// assert!(parse_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_err());
/// ```
pub fn parse_traceparent(value: &str) -> Result<Traceparent, TraceparentError> {
    let v = value.trim_matches([' ', '\t']).as_bytes();
    if v.len() < 3 || v[2] != b'-' {
        return Err(TraceparentError::Version);
    }
    let version = hex_byte(v[0], v[1]).ok_or(TraceparentError::Version)?;
    if version == 0xff {
        return Err(TraceparentError::VersionFf);
    }
    if v.len() < 55 {
        return Err(TraceparentError::TooShort);
    }
    let mut trace = [0u8; 16];
    if v[35] != b'-' || !hex::decode_lower(&v[3..35], &mut trace) {
        return Err(TraceparentError::TraceId);
    }
    let mut span = [0u8; 8];
    if v[52] != b'-' || !hex::decode_lower(&v[36..52], &mut span) {
        return Err(TraceparentError::ParentId);
    }
    let mut flags = hex_byte(v[53], v[54]).ok_or(TraceparentError::Flags)?;
    if version == 0 {
        if v.len() != 55 {
            return Err(TraceparentError::TrailingData);
        }
    } else {
        if v.len() > 55 && v[55] != b'-' {
            return Err(TraceparentError::TrailingData);
        }
        // A later version may define the other bits differently: keep only ours.
        flags &= TraceFlags::SAMPLED.to_u8() | FLAG_RANDOM;
    }
    if trace == [0; 16] {
        return Err(TraceparentError::ZeroTraceId);
    }
    if span == [0; 8] {
        return Err(TraceparentError::ZeroParentId);
    }
    Ok(Traceparent {
        version,
        trace_id: TraceId::from_bytes(trace),
        parent_id: SpanId::from_bytes(span),
        flags: TraceFlags::new(flags),
    })
}

/// Write `00-{trace}-{span}-{flags}` for a span context into a fixed buffer.
pub fn format_traceparent(sc: &SpanContext) -> [u8; 55] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 55];
    out[0] = b'0';
    out[1] = b'0';
    let put = |out: &mut [u8], at: usize, bytes: &[u8]| {
        for (i, b) in bytes.iter().enumerate() {
            out[at + 2 * i] = DIGITS[(b >> 4) as usize];
            out[at + 2 * i + 1] = DIGITS[(b & 0xf) as usize];
        }
    };
    put(&mut out, 3, &sc.trace_id().to_bytes());
    put(&mut out, 36, &sc.span_id().to_bytes());
    put(&mut out, 53, &[sc.trace_flags().to_u8()]);
    out
}

/// Why a `tracestate` was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TracestateError {
    /// A member is not `key=value`.
    #[error("member `{0}` is not key=value")]
    Member(String),
    /// A key breaks the key grammar.
    #[error("invalid key `{0}`")]
    Key(String),
    /// A value breaks the value grammar.
    #[error("invalid value for key `{0}`")]
    Value(String),
    /// A key appears twice.
    #[error("duplicate key `{0}`")]
    Duplicate(String),
    /// More than 32 members.
    #[error("more than 32 members")]
    TooManyMembers,
}

/// Is `key` a valid `tracestate` key?
pub fn valid_tracestate_key(key: &str) -> bool {
    let k = key.as_bytes();
    let keychar = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-*/".contains(&c);
    let starts = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match key.find('@') {
        None => !k.is_empty() && k.len() <= 256 && starts(k[0]) && k.iter().all(|&c| keychar(c)),
        Some(at) => {
            let (tenant, system) = (&k[..at], &k[at + 1..]);
            !tenant.is_empty()
                && tenant.len() <= 241
                && starts(tenant[0])
                && tenant.iter().all(|&c| keychar(c))
                && !system.is_empty()
                && system.len() <= 14
                && system[0].is_ascii_lowercase()
                && system.iter().all(|&c| keychar(c))
        }
    }
}

/// Is `value` a valid `tracestate` value? (1 to 256 printable ASCII characters except `,`
/// and `=`, not ending in a space.)
pub fn valid_tracestate_value(value: &str) -> bool {
    let v = value.as_bytes();
    !v.is_empty()
        && v.len() <= 256
        && v[v.len() - 1] != b' '
        && v.iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
}

/// Parse and validate the `tracestate` header lines of one request, combined in order.
///
/// ```
/// use otel_pipeline_core::propagation::w3c::parse_tracestate;
/// let ts = parse_tracestate(&["rojo=00f067aa0ba902b7", " , congo=t61rcWkgMzE"]).unwrap();
/// assert_eq!(ts.get("congo"), Some("t61rcWkgMzE"));
/// assert!(parse_tracestate(&["foo=1,foo=2"]).is_err());
/// ```
pub fn parse_tracestate(lines: &[&str]) -> Result<TraceState, TracestateError> {
    let mut members: Vec<(&str, &str)> = Vec::new();
    for line in lines {
        for member in line.split(',') {
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            let (key, value) = member
                .split_once('=')
                .ok_or_else(|| TracestateError::Member(member.to_string()))?;
            if !valid_tracestate_key(key) {
                return Err(TracestateError::Key(key.to_string()));
            }
            if !valid_tracestate_value(value) {
                return Err(TracestateError::Value(key.to_string()));
            }
            if members.iter().any(|(k, _)| *k == key) {
                return Err(TracestateError::Duplicate(key.to_string()));
            }
            if members.len() == MAX_TRACESTATE_MEMBERS {
                return Err(TracestateError::TooManyMembers);
            }
            members.push((key, value));
        }
    }
    Ok(to_trace_state(&members))
}

/// Build opentelemetry's `TraceState` from validated members. Its own key check is a little
/// stricter than the grammar (it refuses a 14-character system id); members it refuses are
/// left out one by one instead of losing the whole state.
fn to_trace_state(members: &[(&str, &str)]) -> TraceState {
    if members.is_empty() {
        return TraceState::NONE;
    }
    TraceState::from_key_value(members.iter().copied()).unwrap_or_else(|_| {
        let kept: Vec<(&str, &str)> = members
            .iter()
            .copied()
            .filter(|m| TraceState::from_key_value([*m]).is_ok())
            .collect();
        TraceState::from_key_value(kept).unwrap_or(TraceState::NONE)
    })
}

/// Render a `TraceState` for the wire within the limits: at most 32 members and 512
/// characters, cutting whole entries (longest-first over 128 characters, then from the
/// end). Returns `None` when nothing is left, so no empty header is sent.
pub fn format_tracestate(ts: &TraceState) -> Option<String> {
    let mut entries: Vec<(&str, &str)> = ts.into_iter().take(MAX_TRACESTATE_MEMBERS).collect();
    if entries.is_empty() {
        return None;
    }
    let len = |e: &[(&str, &str)]| -> usize {
        e.iter().map(|(k, v)| k.len() + 1 + v.len()).sum::<usize>() + e.len().saturating_sub(1)
    };
    if len(&entries) > MAX_TRACESTATE_LEN {
        while len(&entries) > MAX_TRACESTATE_LEN {
            match entries
                .iter()
                .rposition(|(k, v)| k.len() + 1 + v.len() > TRACESTATE_LONG_ENTRY)
            {
                Some(i) => {
                    entries.remove(i);
                }
                None => break,
            }
        }
        while len(&entries) > MAX_TRACESTATE_LEN {
            entries.pop();
        }
    }
    if entries.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(len(&entries));
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    Some(out)
}

/// The values of a header, one per line. Distinct from `Extractor::get_all`'s default,
/// which returns at most one value for carriers that keep one.
pub(crate) fn header_lines<'a>(extractor: &'a dyn Extractor, key: &str) -> Vec<&'a str> {
    extractor.get_all(key).unwrap_or_default()
}

/// Extract a remote span context from W3C headers.
pub fn extract_span_context(extractor: &dyn Extractor) -> Result<SpanContext, TraceparentError> {
    let lines = header_lines(extractor, TRACEPARENT);
    let first = *lines.first().ok_or(TraceparentError::TooShort)?;
    if lines
        .iter()
        .any(|l| l.trim_matches([' ', '\t']) != first.trim_matches([' ', '\t']))
    {
        return Err(TraceparentError::Duplicate);
    }
    let tp = parse_traceparent(first)?;
    let lines = header_lines(extractor, TRACESTATE);
    let state = if lines.is_empty() {
        TraceState::NONE
    } else {
        parse_tracestate(&lines).unwrap_or(TraceState::NONE)
    };
    Ok(SpanContext::new(
        tp.trace_id,
        tp.parent_id,
        tp.flags,
        true,
        state,
    ))
}

/// Parse a `traceparent` straight into a remote [`SpanContext`] with no trace state.
/// Performs no heap allocation.
pub fn parse_span_context(traceparent: &str) -> Result<SpanContext, TraceparentError> {
    let tp = parse_traceparent(traceparent)?;
    Ok(SpanContext::new(
        tp.trace_id,
        tp.parent_id,
        tp.flags,
        true,
        TraceState::NONE,
    ))
}

/// The W3C Trace Context propagator (`traceparent`, `tracestate`).
///
/// ```
/// use std::collections::HashMap;
/// use opentelemetry::propagation::TextMapPropagator;
/// use opentelemetry::trace::TraceContextExt;
/// use otel_pipeline_core::propagation::W3cTraceContextPropagator;
///
/// let propagator = W3cTraceContextPropagator::new();
/// let mut headers = HashMap::new();
/// headers.insert("traceparent".to_string(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03".to_string());
/// let cx = propagator.extract(&headers);
/// let sc = cx.span().span_context().clone();
/// assert!(sc.is_remote() && sc.is_sampled());
///
/// let mut out = HashMap::new();
/// propagator.inject_context(&cx, &mut out);
/// assert_eq!(out["traceparent"], "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03");
/// assert!(!out.contains_key("tracestate")); // never an empty tracestate
/// ```
#[derive(Clone, Default)]
pub struct W3cTraceContextPropagator {
    fields: [String; 2],
}

impl fmt::Debug for W3cTraceContextPropagator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("W3cTraceContextPropagator")
    }
}

impl W3cTraceContextPropagator {
    /// A new propagator.
    pub fn new() -> Self {
        Self {
            fields: [TRACEPARENT.to_string(), TRACESTATE.to_string()],
        }
    }
}

impl TextMapPropagator for W3cTraceContextPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return;
        }
        let buf = format_traceparent(sc);
        // The buffer is ASCII by construction.
        injector.set(
            TRACEPARENT,
            std::str::from_utf8(&buf).unwrap_or_default().to_owned(),
        );
        if let Some(state) = format_tracestate(sc.trace_state()) {
            injector.set(TRACESTATE, state);
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        match extract_span_context(extractor) {
            Ok(sc) => cx.with_remote_span_context(sc),
            Err(_) => cx.clone(),
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

    const TP: &str = "00-12345678901234567890123456789012-1234567890123456-01";

    #[test]
    fn valid_traceparents() {
        let tp = parse_traceparent(TP).unwrap();
        assert_eq!(
            tp.trace_id,
            TraceId::from_hex("12345678901234567890123456789012").unwrap()
        );
        assert_eq!(tp.parent_id, SpanId::from_hex("1234567890123456").unwrap());
        assert_eq!(tp.flags, TraceFlags::SAMPLED);
        // Optional whitespace around the value.
        for v in [
            " 00-12345678901234567890123456789012-1234567890123456-01",
            "\t00-12345678901234567890123456789012-1234567890123456-01 \t",
        ] {
            assert!(parse_traceparent(v).is_ok(), "{v:?}");
        }
        // All 8 flag bits of version 00 survive, including random (0x02).
        for flags in [0x00u8, 0x01, 0x02, 0x03, 0x09, 0xff] {
            let v = format!("00-12345678901234567890123456789012-1234567890123456-{flags:02x}");
            assert_eq!(parse_traceparent(&v).unwrap().flags.to_u8(), flags);
        }
    }

    #[test]
    fn future_versions_parse_by_their_rules() {
        for v in [
            "cc-12345678901234567890123456789012-1234567890123456-01",
            "cc-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like",
        ] {
            let tp = parse_traceparent(v).unwrap();
            assert_eq!(tp.version, 0xcc);
            assert!(tp.flags.is_sampled());
        }
        // Unknown bits of a future version are not carried into version 00.
        let tp =
            parse_traceparent("01-12345678901234567890123456789012-1234567890123456-ff").unwrap();
        assert_eq!(tp.flags.to_u8(), 0x03);
        assert_eq!(
            parse_traceparent("cc-12345678901234567890123456789012-1234567890123456-01.what"),
            Err(TraceparentError::TrailingData)
        );
    }

    #[test]
    fn invalid_traceparents() {
        use TraceparentError::*;
        let cases = [
            (
                "ff-12345678901234567890123456789012-1234567890123456-01",
                VersionFf,
            ),
            (
                ".0-12345678901234567890123456789012-1234567890123456-01",
                Version,
            ),
            (
                "0.-12345678901234567890123456789012-1234567890123456-01",
                Version,
            ),
            (
                "000-12345678901234567890123456789012-1234567890123456-01",
                Version,
            ),
            (
                "0-12345678901234567890123456789012-1234567890123456-01",
                Version,
            ),
            (
                "0A-12345678901234567890123456789012-1234567890123456-01",
                Version,
            ),
            (
                "00-12345678901234567890123456789012-1234567890123456-01.",
                TrailingData,
            ),
            (
                "00-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like",
                TrailingData,
            ),
            (
                "00-00000000000000000000000000000000-1234567890123456-01",
                ZeroTraceId,
            ),
            (
                "00-.2345678901234567890123456789012-1234567890123456-01",
                TraceId,
            ),
            (
                "00-1234567890123456789012345678901.-1234567890123456-01",
                TraceId,
            ),
            (
                "00-123456789012345678901234567890123-1234567890123456-01",
                TraceId,
            ),
            (
                "00-1234567890123456789012345678901-1234567890123456-01",
                TooShort,
            ),
            (
                "00-ABCDEF78901234567890123456789012-1234567890123456-01",
                TraceId,
            ),
            (
                "00-12345678901234567890123456789012-0000000000000000-01",
                ZeroParentId,
            ),
            (
                "00-12345678901234567890123456789012-.234567890123456-01",
                ParentId,
            ),
            (
                "00-12345678901234567890123456789012-123456789012345.-01",
                ParentId,
            ),
            (
                "00-12345678901234567890123456789012-12345678901234567-01",
                ParentId,
            ),
            (
                "00-12345678901234567890123456789012-123456789012345-01",
                TooShort,
            ),
            (
                "00-12345678901234567890123456789012-1234567890123456-.0",
                Flags,
            ),
            (
                "00-12345678901234567890123456789012-1234567890123456-0.",
                Flags,
            ),
            (
                "00-12345678901234567890123456789012-1234567890123456-0A",
                Flags,
            ),
            (
                "00-12345678901234567890123456789012-1234567890123456-001",
                TrailingData,
            ),
            (
                "00-12345678901234567890123456789012-1234567890123456-1",
                TooShort,
            ),
            ("", Version),
        ];
        for (value, want) in cases {
            assert_eq!(parse_traceparent(value), Err(want), "{value:?}");
        }
    }

    #[test]
    fn format_round_trips_and_downgrades_to_00() {
        let tp =
            parse_traceparent("cc-12345678901234567890123456789012-1234567890123456-03-x").unwrap();
        let sc = SpanContext::new(tp.trace_id, tp.parent_id, tp.flags, true, TraceState::NONE);
        assert_eq!(
            &format_traceparent(&sc)[..],
            b"00-12345678901234567890123456789012-1234567890123456-03"
        );
    }

    #[test]
    fn tracestate_grammar_and_limits() {
        let ok = |lines: &[&str]| parse_tracestate(lines).unwrap();
        let ts = ok(&["foo=1 \t , \t bar=2, \t baz=3"]);
        assert_eq!(
            (ts.get("foo"), ts.get("bar"), ts.get("baz")),
            (Some("1"), Some("2"), Some("3"))
        );
        // Lines combine in order; empty lines and members are skipped.
        let ts = ok(&["foo=1,bar=2", "", "rojo=1,congo=2", "baz=3"]);
        assert_eq!(
            format_tracestate(&ts).unwrap(),
            "foo=1,bar=2,rojo=1,congo=2,baz=3"
        );
        assert_eq!(ok(&[""]), TraceState::NONE);
        // Leading spaces in a value are part of it.
        assert_eq!(ok(&["foo= 1"]).get("foo"), Some(" 1"));
        // Every allowed character.
        let key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/";
        let value: String = (0x20u8..=0x7e)
            .filter(|c| *c != b',' && *c != b'=')
            .map(char::from)
            .collect::<String>();
        let value = value.trim_end().to_string();
        assert_eq!(
            ok(&[&format!("{key}={value}")]).get(key),
            Some(value.as_str())
        );
        let vendor_key = format!("{key}@a-z0-9_-*/");
        assert_eq!(
            ok(&[&format!("{vendor_key}=1")]).get(&vendor_key),
            Some("1")
        );
        // Level 2: a key may start with a digit.
        assert_eq!(ok(&["1foo=1"]).get("1foo"), Some("1"));

        let bad = |lines: &[&str]| parse_tracestate(lines).unwrap_err();
        assert!(matches!(
            bad(&["foo=1,foo=2"]),
            TracestateError::Duplicate(_)
        ));
        assert!(matches!(
            bad(&["foo=1", "foo=1"]),
            TracestateError::Duplicate(_)
        ));
        for key in [
            "foo ",
            "FOO",
            "foo.bar",
            "foo@",
            "@foo",
            "foo@@bar",
            "foo@bar@baz",
            "t@vvvvvvvvvvvvvvv",
        ] {
            assert!(
                matches!(bad(&[&format!("{key}=1,bar=2")]), TracestateError::Key(_)),
                "{key}"
            );
        }
        assert!(matches!(
            bad(&[&format!("{}=1", "z".repeat(257))]),
            TracestateError::Key(_)
        ));
        assert!(matches!(
            bad(&[&format!("{}@v=1", "t".repeat(242))]),
            TracestateError::Key(_)
        ));
        assert!(matches!(bad(&["foo=bar=baz"]), TracestateError::Value(_)));
        assert!(matches!(bad(&["foo=,bar=3"]), TracestateError::Value(_)));
        assert!(matches!(bad(&["foo"]), TracestateError::Member(_)));
        let members: Vec<String> = (1..=33).map(|i| format!("bar{i:02}={i:02}")).collect();
        assert_eq!(
            parse_tracestate(&[&members[..32].join(",")]).map(|t| t.into_iter().count()),
            Ok(32)
        );
        assert_eq!(bad(&[&members.join(",")]), TracestateError::TooManyMembers);

        // Valid by the grammar; opentelemetry's TraceState refuses a 14-character system
        // id, so that one member is left out and the rest kept.
        let long = format!("{}@{}", "t".repeat(241), "v".repeat(14));
        let ts = ok(&["foo=1", &format!("{long}=1")]);
        assert_eq!(ts.get("foo"), Some("1"));
        let ts = ok(&["foo=1", &format!("{}=1", "z".repeat(256))]);
        assert_eq!(ts.get("foo"), Some("1"));
    }

    #[test]
    fn tracestate_truncation_removes_whole_entries() {
        // 5 entries of 100 chars + one of 200: 711 chars. The long one goes first.
        let mut members: Vec<String> = (0..5).map(|i| format!("k{i}={}", "v".repeat(97))).collect();
        members.insert(2, format!("long={}", "x".repeat(195)));
        let ts = parse_tracestate(&[&members.join(",")]).unwrap();
        let out = format_tracestate(&ts).unwrap();
        assert!(!out.contains("long="));
        assert_eq!(out.split(',').count(), 5);
        assert!(out.len() <= MAX_TRACESTATE_LEN);
        // Eight 100-char entries: 807 chars; cut from the end to 5 (504 chars).
        let members: Vec<String> = (0..8).map(|i| format!("k{i}={}", "v".repeat(97))).collect();
        let ts = parse_tracestate(&[&members.join(",")]).unwrap();
        let out = format_tracestate(&ts).unwrap();
        assert_eq!(out, members[..5].join(","));
    }

    fn carrier(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn propagator_keeps_flags_and_drops_bad_tracestate_only() {
        let p = W3cTraceContextPropagator::new();
        let cx = p.extract(&carrier(&[
            (
                "traceparent",
                "00-12345678901234567890123456789012-1234567890123456-02",
            ),
            ("tracestate", "foo=1,foo=2"),
        ]));
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && !sc.is_sampled());
        assert_eq!(
            sc.trace_flags().to_u8() & FLAG_RANDOM,
            FLAG_RANDOM,
            "random flag kept"
        );
        assert_eq!(sc.trace_state(), &TraceState::NONE);
        let mut out = HashMap::new();
        p.inject_context(&cx, &mut out);
        assert_eq!(
            out["traceparent"],
            "00-12345678901234567890123456789012-1234567890123456-02"
        );
        assert!(!out.contains_key("tracestate"));
        // Invalid traceparent: nothing extracted, nothing injected.
        let cx = p.extract(&carrier(&[
            (
                "traceparent",
                "00-00000000000000000000000000000000-1234567890123456-01",
            ),
            ("tracestate", "foo=1"),
        ]));
        assert!(!cx.span().span_context().is_valid());
        let mut out = HashMap::new();
        p.inject_context(&cx, &mut out);
        assert!(out.is_empty());
    }
}

//! W3C Trace Context (Level 2): `traceparent` and `tracestate`.
//!
//! Checked against the W3C Recommendation "Trace Context Level 2" and its public test
//! suite (`test/test.py` of w3c/trace-context); the section each rule comes from is named
//! where the rule is implemented, and `docs/propagation.md` lists them all with their tests.
//!
//! # `traceparent`
//! - Ids and flags are lowercase hex of exact length; version `ff` is invalid; all-zero
//!   trace or parent ids are invalid; version `00` with anything after the flags is invalid;
//!   a higher version is parsed by the rules for future versions (at least 55 characters, a
//!   `-` after the flags if more follow) and re-emitted as `00` ("Versioning of
//!   traceparent"). Spaces and tabs around the value are optional whitespace. Two different
//!   `traceparent` values in one request are invalid (the trace restarts).
//! - Flags: on extraction all 8 bits are read. On injection only the bits this version
//!   defines are sent, `sampled` (`0x01`) and `random` (`0x02`); the others are zeroed
//!   ("Other Flags": "Vendors MUST set those to zero").
//! - The random flag of the incoming header is sent on every outgoing header with the same
//!   trace id ("Random Trace ID Flag"), even after an `opentelemetry_sdk` child span that the
//!   sampler dropped, whose flags the SDK resets to `00`: when the flag is set, extraction
//!   leaves the incoming flags in the [`Context`], and injection restores the bit from
//!   there. An unset flag stays unset because the SDK copies the parent's flags (or resets
//!   them).
//!
//! # `tracestate`
//! - Lines are combined in order; empty members are skipped. Keys follow the current
//!   grammar, `key = ( lcalpha / DIGIT ) 0*255 ( keychar )` with `@` among the key
//!   characters anywhere after the first ("Key"). A member with an invalid key or value, or
//!   more than 32 members, makes the whole `tracestate` invalid: it is dropped and the
//!   `traceparent` kept. A duplicated key keeps its first value, and the `tracestate` is kept
//!   ("vendors MAY also discard duplicate keys").
//! - `opentelemetry`'s `TraceState` still checks keys by the older multi-tenant grammar (at
//!   most one `@`, a short vendor part), so it cannot hold every valid key. The full list
//!   travels beside it in the [`Context`] and is sent on unchanged while the span's
//!   `TraceState` is the one extracted. If the application changes it, the changed state is
//!   sent, followed by the members `TraceState` could not hold.
//! - On injection, an empty `tracestate` is never sent, and one over 512 characters is cut
//!   by whole entries: entries over 128 characters first, then from the end ("tracestate
//!   Limits").

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

/// Write `00-{trace}-{span}-{flags}` for a span context into a fixed buffer. Of the
/// flags, only `sampled` and `random` are written; the bits version `00` does not define
/// are zeroed ("Other Flags").
///
/// ```
/// use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
/// use otel_pipeline_core::propagation::w3c::format_traceparent;
/// let sc = SpanContext::new(TraceId::from(1), SpanId::from(2), TraceFlags::new(0xff), true, TraceState::NONE);
/// assert!(format_traceparent(&sc).ends_with(b"-03"));
/// ```
pub fn format_traceparent(sc: &SpanContext) -> [u8; 55] {
    format_traceparent_flags(sc, sc.trace_flags().to_u8())
}

fn format_traceparent_flags(sc: &SpanContext, flags: u8) -> [u8; 55] {
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
    put(&mut out, 53, &[flags & KNOWN_FLAGS]);
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
    /// More than 32 members.
    #[error("more than 32 members")]
    TooManyMembers,
}

/// Is `key` a valid `tracestate` key? ("Key": `key = ( lcalpha / DIGIT ) 0*255 ( keychar )`,
/// `keychar = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"`.)
///
/// ```
/// use otel_pipeline_core::propagation::w3c::valid_tracestate_key;
/// assert!(valid_tracestate_key("foo@bar@baz"));
/// assert!(valid_tracestate_key("1foo@"));
/// assert!(!valid_tracestate_key("@foo"));
/// assert!(!valid_tracestate_key("Foo"));
/// ```
pub fn valid_tracestate_key(key: &str) -> bool {
    let k = key.as_bytes();
    let keychar = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-*/@".contains(c);
    match k.first() {
        Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit() => {
            k.len() <= 256 && k.iter().all(keychar)
        }
        _ => false,
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

/// A `tracestate` as received: every member the grammar allows, in order.
///
/// `opentelemetry`'s `TraceState` refuses some keys the current grammar allows (more than
/// one `@`, a long part after it); this type keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracestate {
    members: Vec<(String, String)>,
}

impl Tracestate {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The members, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.members.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether it has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The header value within the limits (see [`format_tracestate`]); `None` when empty.
    pub fn header(&self) -> Option<String> {
        format_members(self.iter().collect())
    }

    /// As `opentelemetry`'s `TraceState`: the members it can hold, in order.
    pub fn to_trace_state(&self) -> TraceState {
        to_trace_state(&self.iter().collect::<Vec<_>>())
    }

    /// A `tracestate` of these members, in order, each checked by the current grammar
    /// (at most 32; a duplicated key keeps its first value).
    ///
    /// ```
    /// use otel_pipeline_core::propagation::w3c::Tracestate;
    /// let key = format!("{}@{}", "t".repeat(241), "v".repeat(14));
    /// let ts = Tracestate::from_members([(key.as_str(), "1")]).unwrap();
    /// assert_eq!(ts.get(&key), Some("1"));
    /// assert!(Tracestate::from_members([("Bad", "1")]).is_err());
    /// ```
    pub fn from_members<'a>(
        members: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, TracestateError> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (i, (key, value)) in members.into_iter().enumerate() {
            if !valid_tracestate_key(key) {
                return Err(TracestateError::Key(key.to_string()));
            }
            if !valid_tracestate_value(value) {
                return Err(TracestateError::Value(key.to_string()));
            }
            if i >= MAX_TRACESTATE_MEMBERS {
                return Err(TracestateError::TooManyMembers);
            }
            if !out.iter().any(|(k, _)| k == key) {
                out.push((key.to_string(), value.to_string()));
            }
        }
        Ok(Self { members: out })
    }
}

/// Parse and validate the `tracestate` header lines of one request, combined in order.
///
/// ```
/// use otel_pipeline_core::propagation::w3c::parse_tracestate;
/// let ts = parse_tracestate(&["rojo=00f067aa0ba902b7", " , congo=t61rcWkgMzE"]).unwrap();
/// assert_eq!(ts.get("congo"), Some("t61rcWkgMzE"));
/// // A duplicated key keeps its first value.
/// assert_eq!(parse_tracestate(&["foo=1,foo=2"]).unwrap().get("foo"), Some("1"));
/// assert!(parse_tracestate(&["@foo=1,bar=2"]).is_err());
/// ```
pub fn parse_tracestate(lines: &[&str]) -> Result<Tracestate, TracestateError> {
    let members = parse_members(lines)?;
    Ok(Tracestate {
        members: members
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
}

/// The members of `lines`, borrowed from them.
fn parse_members<'a>(lines: &[&'a str]) -> Result<Vec<(&'a str, &'a str)>, TracestateError> {
    let mut members: Vec<(&str, &str)> = Vec::new();
    let mut count = 0usize;
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
            // "There can be a maximum of 32 list-members in a list", duplicates included.
            count += 1;
            if count > MAX_TRACESTATE_MEMBERS {
                return Err(TracestateError::TooManyMembers);
            }
            // "Vendors MAY also discard duplicate keys": the first stays.
            if !members.iter().any(|(k, _)| *k == key) {
                members.push((key, value));
            }
        }
    }
    Ok(members)
}

/// Build opentelemetry's `TraceState` from validated members. Its own key check follows an
/// older grammar; members it refuses are left out one by one instead of losing the whole
/// state (the full list travels beside it, see [`Tracestate`]).
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
    format_members(ts.into_iter().collect())
}

/// "tracestate Limits": whole entries are cut, those over 128 characters first, then from
/// the end.
fn format_members(mut entries: Vec<(&str, &str)>) -> Option<String> {
    entries.truncate(MAX_TRACESTATE_MEMBERS);
    let len = |e: &[(&str, &str)]| -> usize {
        e.iter().map(|(k, v)| k.len() + 1 + v.len()).sum::<usize>() + e.len().saturating_sub(1)
    };
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

/// What extraction read, kept in the [`Context`] for injection: the incoming flags (the
/// random bit must follow the trace id out, whatever the SDK does to a dropped span's
/// flags) and the full `tracestate` when `TraceState` could not hold all of it.
#[derive(Debug, Clone)]
struct W3cOrigin {
    trace_id: TraceId,
    flags: u8,
    /// The full list and the `TraceState` made of it, when they differ.
    tracestate: Option<std::sync::Arc<(Tracestate, TraceState)>>,
}

fn remote_parts(
    extractor: &dyn Extractor,
) -> Result<(SpanContext, Option<W3cOrigin>), TraceparentError> {
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
    let members = if lines.is_empty() {
        Vec::new()
    } else {
        parse_members(&lines).unwrap_or_default()
    };
    let state = to_trace_state(&members);
    let held = state.into_iter().count();
    let random = tp.flags.to_u8() & FLAG_RANDOM != 0;
    // Only when injection may need it: a context value costs an allocation per request.
    // (An unset random flag stays unset without help: the SDK copies the parent's flags or
    // resets them to 00.)
    let origin = (random || held < members.len()).then(|| W3cOrigin {
        trace_id: tp.trace_id,
        flags: tp.flags.to_u8(),
        tracestate: (held < members.len()).then(|| {
            let full = Tracestate {
                members: members
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            };
            std::sync::Arc::new((full, state.clone()))
        }),
    });
    Ok((
        SpanContext::new(tp.trace_id, tp.parent_id, tp.flags, true, state),
        origin,
    ))
}

/// The whole `tracestate` of the span in `cx`: every member received, those
/// `opentelemetry`'s `TraceState` could not hold included, or what the application set
/// with [`with_tracestate`]; else what the span's `TraceState` holds.
///
/// `TraceState` checks keys by an older grammar and refuses some valid ones (`foo@@bar`,
/// `a@b@c`, a vendor part of 14 characters after a 241-character tenant), so an
/// application that reads `span_context().trace_state()` does not see them. This does.
///
/// ```
/// use std::collections::HashMap;
/// use opentelemetry::propagation::TextMapPropagator;
/// use opentelemetry::trace::TraceContextExt;
/// use otel_pipeline_core::propagation::W3cTraceContextPropagator;
/// use otel_pipeline_core::propagation::w3c::received_tracestate;
///
/// let mut headers = HashMap::new();
/// headers.insert("traceparent".to_string(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string());
/// headers.insert("tracestate".to_string(), "foo@@bar=1,congo=t61".to_string());
/// let cx = W3cTraceContextPropagator::new().extract(&headers);
/// assert_eq!(cx.span().span_context().trace_state().get("foo@@bar"), None);
/// assert_eq!(received_tracestate(&cx).get("foo@@bar"), Some("1"));
/// ```
pub fn received_tracestate(cx: &Context) -> Tracestate {
    let span = cx.span();
    let sc = span.span_context();
    let state = sc.trace_state();
    match cx
        .get::<W3cOrigin>()
        .filter(|o| o.trace_id == sc.trace_id())
        .and_then(|o| o.tracestate.as_deref())
    {
        Some((full, extracted)) if extracted == state => full.clone(),
        _ => Tracestate {
            members: state
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        },
    }
}

/// `cx` with `tracestate` as what the propagator sends for its span, whatever
/// `opentelemetry`'s `TraceState` can hold. It applies while the span's `TraceState`
/// stays the one it had here; a later change to that goes out first, followed by the
/// members `TraceState` cannot hold.
pub fn with_tracestate(cx: &Context, tracestate: Tracestate) -> Context {
    let span = cx.span();
    let sc = span.span_context();
    let flags = cx
        .get::<W3cOrigin>()
        .filter(|o| o.trace_id == sc.trace_id())
        .map_or(sc.trace_flags().to_u8(), |o| o.flags);
    let origin = W3cOrigin {
        trace_id: sc.trace_id(),
        flags,
        tracestate: Some(std::sync::Arc::new((tracestate, sc.trace_state().clone()))),
    };
    cx.with_value(origin)
}

/// Extract a remote span context from W3C headers.
pub fn extract_span_context(extractor: &dyn Extractor) -> Result<SpanContext, TraceparentError> {
    remote_parts(extractor).map(|(sc, _)| sc)
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
/// headers.insert("traceparent".to_string(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0b".to_string());
/// let cx = propagator.extract(&headers);
/// let sc = cx.span().span_context().clone();
/// assert!(sc.is_remote() && sc.is_sampled());
///
/// let mut out = HashMap::new();
/// propagator.inject_context(&cx, &mut out);
/// // Sampled and random are sent on; the undefined bit 0x08 is zeroed.
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

/// The flags this version defines; "Other Flags": "Vendors MUST set those to zero".
const KNOWN_FLAGS: u8 = 0x01 | FLAG_RANDOM;

impl TextMapPropagator for W3cTraceContextPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return;
        }
        let origin = cx
            .get::<W3cOrigin>()
            .filter(|o| o.trace_id == sc.trace_id());
        let mut flags = sc.trace_flags().to_u8() & KNOWN_FLAGS;
        if let Some(o) = origin {
            // "Random Trace ID Flag": set (or unset) on every outgoing header with the
            // incoming trace id as it was on the incoming one.
            flags = (flags & !FLAG_RANDOM) | (o.flags & FLAG_RANDOM);
        }
        let buf = format_traceparent_flags(sc, flags);
        // The buffer is ASCII by construction.
        injector.set(
            TRACEPARENT,
            std::str::from_utf8(&buf).unwrap_or_default().to_owned(),
        );
        let state = sc.trace_state();
        let header = match origin.and_then(|o| o.tracestate.as_deref()) {
            // Unchanged since extraction: the full list, as received.
            Some((full, extracted)) if extracted == state => full.header(),
            // Changed by the application: its state, then what `TraceState` cannot hold.
            Some((full, _)) => {
                let mut entries: Vec<(&str, &str)> = state.into_iter().collect();
                for (k, v) in full.iter() {
                    if TraceState::from_key_value([(k, v)]).is_err()
                        && !entries.iter().any(|(e, _)| *e == k)
                    {
                        entries.push((k, v));
                    }
                }
                format_members(entries)
            }
            None => format_tracestate(state),
        };
        if let Some(header) = header {
            injector.set(TRACESTATE, header);
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        match remote_parts(extractor) {
            Ok((sc, Some(origin))) => cx.with_value(origin).with_remote_span_context(sc),
            Ok((sc, None)) => cx.with_remote_span_context(sc),
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

    /// "tracestate Header Field Values", "Key" and "Value"; the cases of the W3C test
    /// suite's `test_tracestate_*` (Level 2, strict).
    #[test]
    fn tracestate_grammar_and_limits() {
        let ok = |lines: &[&str]| parse_tracestate(lines).unwrap();
        let ts = ok(&["foo=1 \t , \t bar=2, \t baz=3"]);
        assert_eq!(
            (ts.get("foo"), ts.get("bar"), ts.get("baz")),
            (Some("1"), Some("2"), Some("3"))
        );
        // "Multiple tracestate header fields MUST be handled as specified by RFC9110":
        // lines combine in order; empty lines and members are skipped.
        let ts = ok(&["foo=1,bar=2", "", "rojo=1,congo=2", "baz=3"]);
        assert_eq!(ts.header().unwrap(), "foo=1,bar=2,rojo=1,congo=2,baz=3");
        assert!(ok(&[""]).is_empty());
        assert_eq!(ok(&[""]).header(), None, "never an empty header");
        // "All leading spaces MUST be preserved as part of the value."
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
        // "Key": `@` is a key character anywhere after the first; a digit may start a key.
        for key in [
            format!("{key}@a-z0-9_-*/"),
            "foo@".into(),
            "foo@@bar".into(),
            "foo@bar@baz".into(),
            "foo@1bar".into(),
            "1foo".into(),
            format!("t@{}", "v".repeat(15)),
            format!("{}@{}", "t".repeat(241), "v".repeat(14)),
            format!("{}@v", "t".repeat(242)),
            "z".repeat(256),
        ] {
            let ts = ok(&["bar=2", &format!("{key}=1")]);
            assert_eq!(
                (ts.get(&key), ts.get("bar")),
                (Some("1"), Some("2")),
                "{key}"
            );
            assert_eq!(ts.header().unwrap(), format!("bar=2,{key}=1"));
        }
        // "vendors MAY also discard duplicate keys": the tracestate stays, the first kept.
        for lines in [&["foo=1,foo=2"][..], &["foo=1", "foo=2"], &["foo=1,foo=1"]] {
            assert_eq!(ok(lines).header().unwrap(), "foo=1", "{lines:?}");
        }

        let bad = |lines: &[&str]| parse_tracestate(lines).unwrap_err();
        for key in ["foo ", "FOO", "foo.bar", "@foo", "-foo", "_foo"] {
            assert!(
                matches!(bad(&[&format!("{key}=1,bar=2")]), TracestateError::Key(_)),
                "{key}"
            );
        }
        assert!(matches!(
            bad(&["foo=1", &format!("{}=1", "z".repeat(257))]),
            TracestateError::Key(_)
        ));
        assert!(matches!(bad(&["foo=bar=baz"]), TracestateError::Value(_)));
        assert!(matches!(bad(&["foo=,bar=3"]), TracestateError::Value(_)));
        assert!(matches!(bad(&["foo"]), TracestateError::Member(_)));
        // "There can be a maximum of 32 list-members in a list."
        let members: Vec<String> = (1..=33).map(|i| format!("bar{i:02}={i:02}")).collect();
        assert_eq!(
            parse_tracestate(&[&members[..32].join(",")]).map(|t| t.len()),
            Ok(32)
        );
        assert_eq!(bad(&[&members.join(",")]), TracestateError::TooManyMembers);
    }

    /// "tracestate Limits": whole entries, those over 128 characters first, then from the
    /// end.
    #[test]
    fn tracestate_truncation_removes_whole_entries() {
        // 5 entries of 100 chars + one of 200: 711 chars. The long one goes first.
        let mut members: Vec<String> = (0..5).map(|i| format!("k{i}={}", "v".repeat(97))).collect();
        members.insert(2, format!("long={}", "x".repeat(195)));
        let out = parse_tracestate(&[&members.join(",")])
            .unwrap()
            .header()
            .unwrap();
        assert!(!out.contains("long="));
        assert_eq!(out.split(',').count(), 5);
        assert!(out.len() <= MAX_TRACESTATE_LEN);
        // Eight 100-char entries: 807 chars; cut from the end to 5 (504 chars).
        let members: Vec<String> = (0..8).map(|i| format!("k{i}={}", "v".repeat(97))).collect();
        let ts = parse_tracestate(&[&members.join(",")]).unwrap();
        assert_eq!(ts.header().unwrap(), members[..5].join(","));
        assert_eq!(
            format_tracestate(&ts.to_trace_state()).unwrap(),
            members[..5].join(",")
        );
    }

    fn carrier(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn extract(p: &W3cTraceContextPropagator, traceparent: &str, tracestate: &[&str]) -> Context {
        struct Lines<'a>(&'a str, &'a [&'a str]);
        impl Extractor for Lines<'_> {
            fn get(&self, key: &str) -> Option<&str> {
                self.get_all(key).and_then(|l| l.first().copied())
            }
            fn keys(&self) -> Vec<&str> {
                vec![TRACEPARENT, TRACESTATE]
            }
            fn get_all(&self, key: &str) -> Option<Vec<&str>> {
                match key {
                    TRACEPARENT => Some(vec![self.0]),
                    TRACESTATE if !self.1.is_empty() => Some(self.1.to_vec()),
                    _ => None,
                }
            }
        }
        p.extract(&Lines(traceparent, tracestate))
    }

    fn inject(p: &W3cTraceContextPropagator, cx: &Context) -> HashMap<String, String> {
        let mut out = HashMap::new();
        p.inject_context(cx, &mut out);
        out
    }

    /// "Other Flags": "Vendors MUST set those to zero"; "Random Trace ID Flag": kept.
    #[test]
    fn unknown_flags_are_zeroed_and_random_kept() {
        let p = W3cTraceContextPropagator::new();
        for (incoming, outgoing) in [
            ("00", "00"),
            ("01", "01"),
            ("02", "02"),
            ("03", "03"),
            ("04", "00"),
            ("09", "01"),
            ("ff", "03"),
        ] {
            let cx = extract(
                &p,
                &format!("00-12345678901234567890123456789012-1234567890123456-{incoming}"),
                &[],
            );
            assert_eq!(
                inject(&p, &cx)["traceparent"],
                format!("00-12345678901234567890123456789012-1234567890123456-{outgoing}"),
                "{incoming}"
            );
        }
    }

    /// A random flag lost from the span's flags (an SDK span the sampler dropped is given
    /// flags 00) is restored for the same trace id, and only for it.
    #[test]
    fn random_flag_follows_the_trace_id_not_the_span_flags() {
        let p = W3cTraceContextPropagator::new();
        let cx = extract(
            &p,
            "00-12345678901234567890123456789012-1234567890123456-02",
            &[],
        );
        let child = SpanContext::new(
            TraceId::from_hex("12345678901234567890123456789012").unwrap(),
            SpanId::from_hex("00000000000000aa").unwrap(),
            TraceFlags::default(),
            false,
            TraceState::NONE,
        );
        let out = inject(&p, &cx.with_remote_span_context(child));
        assert_eq!(
            out["traceparent"],
            "00-12345678901234567890123456789012-00000000000000aa-02"
        );
        // Another trace id in the same context: its own flags.
        let other = SpanContext::new(
            TraceId::from_hex("abcdef78901234567890123456789012").unwrap(),
            SpanId::from_hex("00000000000000bb").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        );
        let out = inject(&p, &cx.with_remote_span_context(other));
        assert!(out["traceparent"].ends_with("-01"));
    }

    /// Keys `TraceState` cannot hold still go out; an application's change to the state
    /// goes out first, followed by them.
    #[test]
    fn tracestate_keys_beyond_trace_state_are_propagated() {
        let p = W3cTraceContextPropagator::new();
        let tp = "00-12345678901234567890123456789012-1234567890123456-01";
        let cx = extract(&p, tp, &["foo@@bar=1,bar=2", "foo@bar@baz=3"]);
        assert_eq!(cx.span().span_context().trace_state().get("bar"), Some("2"));
        let out = inject(&p, &cx);
        assert_eq!(out["tracestate"], "foo@@bar=1,bar=2,foo@bar@baz=3");
        // The application adds its own member.
        let sc = cx.span().span_context().clone();
        let changed = sc.trace_state().insert("congo", "t61").unwrap();
        let sc = SpanContext::new(sc.trace_id(), sc.span_id(), sc.trace_flags(), true, changed);
        let out = inject(&p, &cx.with_remote_span_context(sc));
        assert_eq!(
            out["tracestate"],
            "congo=t61,bar=2,foo@@bar=1,foo@bar@baz=3"
        );
        // Duplicates: the tracestate is kept with the first value.
        let cx = extract(&p, tp, &["foo=1,foo=2"]);
        assert_eq!(inject(&p, &cx)["tracestate"], "foo=1");
    }

    /// A key of the full 256 characters (241, `@`, 14; or 256 without `@`) is valid and
    /// goes out as it came in, extracted or set by the application.
    #[test]
    fn the_longest_keys_are_propagated() {
        let p = W3cTraceContextPropagator::new();
        let tp = "00-12345678901234567890123456789012-1234567890123456-01";
        let tenant = format!("{}@{}", "t".repeat(241), "v".repeat(14));
        let plain = "k".repeat(256);
        for key in [tenant.as_str(), plain.as_str()] {
            assert!(valid_tracestate_key(key), "{}", key.len());
            let header = format!("{key}=1,other=2");
            let cx = extract(&p, tp, &[&header]);
            assert_eq!(inject(&p, &cx)["tracestate"], header, "{}", key.len());
            // The application reads the whole received list.
            assert_eq!(received_tracestate(&cx).get(key), Some("1"));
            // Set by the application on a span of its own: `TraceState` cannot hold the
            // tenant form (its check allows 13 characters after the `@`), so it is set
            // beside it.
            let sc = SpanContext::new(
                TraceId::from(7),
                SpanId::from(8),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            );
            let cx = Context::new().with_remote_span_context(sc);
            let ts = Tracestate::from_members([(key, "1")]).unwrap();
            let out = inject(&p, &with_tracestate(&cx, ts));
            assert_eq!(out["tracestate"], format!("{key}=1"), "{}", key.len());
            assert_eq!(
                received_tracestate(&with_tracestate(
                    &cx,
                    Tracestate::from_members([(key, "2")]).unwrap()
                ))
                .get(key),
                Some("2")
            );
        }
    }

    #[test]
    fn propagator_drops_bad_tracestate_only() {
        let p = W3cTraceContextPropagator::new();
        let cx = extract(
            &p,
            "00-12345678901234567890123456789012-1234567890123456-02",
            &["@foo=1,bar=2"],
        );
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && !sc.is_sampled());
        assert_eq!(sc.trace_state(), &TraceState::NONE);
        let out = inject(&p, &cx);
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
        assert!(inject(&p, &cx).is_empty());
    }
}

//! OTLP trace requests as protobuf bytes: checked, counted, cut and read in place.
//!
//! A receiver that hands its pipeline the request's bytes ([`crate::Batch::from_encoded`])
//! checks them here once, against the schema of `ExportTraceServiceRequest`, with the
//! same rules prost's decoder applies (wire types of known fields, UTF-8 strings, nesting
//! depth, well-formed unknown fields), so a batch that passed can always be decoded
//! later. Stages that need no decoded spans then work on the bytes: [`split_traces`] cuts
//! a request span by span (the trace router, a batch's size limit), and [`fields`] reads
//! the fields of one message (the tail sampler's summaries).
//!
//! What is not read is copied byte for byte, unknown fields included: a newer OTLP
//! version's fields reach the backend through a pass-through pipeline.
//!
//! ```
//! use otel_pipeline_core::{testing::generate_traces, wire};
//! let request = generate_traces(2, 3, 1);
//! let bytes = prost::Message::encode_to_vec(&request);
//! assert_eq!(wire::check_traces(&bytes), Ok(6));
//! assert!(wire::check_traces(&bytes[..bytes.len() - 1]).is_err());
//! ```

use std::fmt;

/// Why bytes are not a valid request, as a client should read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    message: String,
}

impl WireError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// prost's decoding error, for a request of `signal` (`traces`, ...).
    pub(crate) fn from_prost(signal: &str, e: &prost::DecodeError) -> Self {
        Self::new(format!("malformed OTLP {signal} request: {e}"))
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WireError {}

/// One field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1.
    Fixed64(u64),
    /// Wire type 2: the bytes after the length.
    Len(&'a [u8]),
    /// Wire type 5.
    Fixed32(u32),
}

/// The fields of one message, in order, as `(field number, value)`. The walk stops at
/// the first malformed byte; [`Fields::finished`] tells whether it reached the end.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    buf: &'a [u8],
}

/// Walk the fields of the message encoded in `buf`.
///
/// ```
/// use otel_pipeline_core::wire::{Wire, fields};
/// // field 1, length 2, "hi"; field 2, varint 150
/// let msg = [0x0a, 2, b'h', b'i', 0x10, 0x96, 0x01];
/// let got: Vec<_> = fields(&msg).collect();
/// assert_eq!(got, vec![(1, Wire::Len(b"hi")), (2, Wire::Varint(150))]);
/// ```
pub fn fields(buf: &[u8]) -> Fields<'_> {
    Fields { buf }
}

impl<'a> Fields<'a> {
    /// Whether every byte was read (the walk did not stop at a malformed one).
    pub fn finished(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next field with its whole encoding (tag, length and value), for copying it
    /// as it is.
    #[inline(always)]
    pub fn next_raw(&mut self) -> Option<(u32, Wire<'a>, &'a [u8])> {
        let start = self.buf;
        let (tag, n) = varint(self.buf)?;
        let rest = &self.buf[n..];
        // A key past 32 bits is malformed, as prost reads it.
        let field = u32::try_from(tag).ok()? >> 3;
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
        Some((field, wire, &start[..n + used]))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (u32, Wire<'a>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.next_raw().map(|(f, w, _)| (f, w))
    }
}

/// Read a varint: its value and the bytes it took. `None` if it is cut short or longer
/// than 64 bits (as prost refuses it).
#[inline(always)]
pub fn varint(buf: &[u8]) -> Option<(u64, usize)> {
    // Tags and short lengths take one byte: the common case, without the loop.
    match buf.first() {
        Some(&b) if b < 0x80 => return Some((u64::from(b), 1)),
        None => return None,
        _ => {}
    }
    let mut v = 0u64;
    for (i, b) in buf.iter().enumerate().take(10) {
        // The tenth byte holds the 64th bit only: anything more overflows.
        if i == 9 && *b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Append `v` as a varint.
#[inline(always)]
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes `v` takes as a varint.
#[inline(always)]
pub fn varint_len(v: u64) -> usize {
    // ceil(bits / 7), at least 1.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Append a length-delimited field's tag and length (the caller appends the body).
#[inline(always)]
pub fn put_len_header(out: &mut Vec<u8>, field: u32, len: usize) {
    put_varint(out, u64::from(field << 3 | 2));
    put_varint(out, len as u64);
}

/// A length-delimited field being written before its length is known:
/// [`open_len_field`] writes its tag and leaves room for the length, [`close_len_field`]
/// writes the length once the body is written. A stage that rewrites a request writes
/// each message straight into the new request this way, instead of building it apart and
/// copying it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenField {
    at: usize,
    room: usize,
}

/// Start field `field`, a message whose length is not known yet: its tag, and room for a
/// length of as many bytes as `hint` (its old length, say) takes. Write the body after
/// it, then [`close_len_field`].
///
/// ```
/// use otel_pipeline_core::wire::{close_len_field, open_len_field};
/// let mut out = Vec::new();
/// let open = open_len_field(&mut out, 1, 2);
/// out.extend_from_slice(&[7; 200]); // longer than the hint: the length takes 2 bytes
/// close_len_field(&mut out, open);
/// assert_eq!(&out[..3], &[0x0a, 0xc8, 0x01]);
/// assert_eq!(out.len(), 203);
/// ```
#[inline]
pub fn open_len_field(out: &mut Vec<u8>, field: u32, hint: usize) -> OpenField {
    put_varint(out, u64::from(field << 3 | 2));
    let at = out.len();
    let room = varint_len(hint as u64);
    out.resize(at + room, 0);
    OpenField { at, room }
}

/// Write the length of the field [`open_len_field`] started, now that its body is
/// everything after it in `out`. The body moves only when its length takes more or fewer
/// bytes than the room left.
#[inline]
pub fn close_len_field(out: &mut Vec<u8>, open: OpenField) {
    let OpenField { at, room } = open;
    let mut v = (out.len() - at - room) as u64;
    let mut header = [0u8; 10];
    let mut n = 0;
    while v >= 0x80 {
        header[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    header[n] = v as u8;
    n += 1;
    if n == room {
        out[at..at + room].copy_from_slice(&header[..n]);
    } else {
        out.splice(at..at + room, header[..n].iter().copied());
    }
}

// ---- the schema check ----

/// The messages of `ExportTraceServiceRequest`, as the check walks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    Request,
    ResourceSpans,
    Resource,
    EntityRef,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

/// What a known field holds.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Varint,
    Fixed64,
    Fixed32,
    Bytes,
    Str,
    Nested(Msg),
}

impl Msg {
    fn name(self) -> &'static str {
        match self {
            Msg::Request => "ExportTraceServiceRequest",
            Msg::ResourceSpans => "ResourceSpans",
            Msg::Resource => "Resource",
            Msg::EntityRef => "EntityRef",
            Msg::ScopeSpans => "ScopeSpans",
            Msg::Scope => "InstrumentationScope",
            Msg::Span => "Span",
            Msg::Event => "Span.Event",
            Msg::Link => "Span.Link",
            Msg::Status => "Status",
            Msg::KeyValue => "KeyValue",
            Msg::AnyValue => "AnyValue",
            Msg::ArrayValue => "ArrayValue",
            Msg::KeyValueList => "KeyValueList",
        }
    }

    /// The kind of a known field; `None` for a field this OTLP version does not know.
    fn field(self, n: u32) -> Option<Kind> {
        Some(match (self, n) {
            (Msg::Request, 1) => Kind::Nested(Msg::ResourceSpans),
            (Msg::ResourceSpans, 1) => Kind::Nested(Msg::Resource),
            (Msg::ResourceSpans, 2) => Kind::Nested(Msg::ScopeSpans),
            (Msg::ResourceSpans, 3) => Kind::Str,
            (Msg::Resource, 1) => Kind::Nested(Msg::KeyValue),
            (Msg::Resource, 2) => Kind::Varint,
            (Msg::Resource, 3) => Kind::Nested(Msg::EntityRef),
            (Msg::EntityRef, 1..=4) => Kind::Str,
            (Msg::ScopeSpans, 1) => Kind::Nested(Msg::Scope),
            (Msg::ScopeSpans, 2) => Kind::Nested(Msg::Span),
            (Msg::ScopeSpans, 3) => Kind::Str,
            (Msg::Scope, 1 | 2) => Kind::Str,
            (Msg::Scope, 3) => Kind::Nested(Msg::KeyValue),
            (Msg::Scope, 4) => Kind::Varint,
            (Msg::Span, 1 | 2 | 4) => Kind::Bytes,
            (Msg::Span, 3 | 5) => Kind::Str,
            (Msg::Span, 6 | 10 | 12 | 14) => Kind::Varint,
            (Msg::Span, 7 | 8) => Kind::Fixed64,
            (Msg::Span, 9) => Kind::Nested(Msg::KeyValue),
            (Msg::Span, 11) => Kind::Nested(Msg::Event),
            (Msg::Span, 13) => Kind::Nested(Msg::Link),
            (Msg::Span, 15) => Kind::Nested(Msg::Status),
            (Msg::Span, 16) => Kind::Fixed32,
            (Msg::Event, 1) => Kind::Fixed64,
            (Msg::Event, 2) => Kind::Str,
            (Msg::Event, 3) => Kind::Nested(Msg::KeyValue),
            (Msg::Event, 4) => Kind::Varint,
            (Msg::Link, 1 | 2) => Kind::Bytes,
            (Msg::Link, 3) => Kind::Str,
            (Msg::Link, 4) => Kind::Nested(Msg::KeyValue),
            (Msg::Link, 5) => Kind::Varint,
            (Msg::Link, 6) => Kind::Fixed32,
            (Msg::Status, 2) => Kind::Str,
            (Msg::Status, 3) => Kind::Varint,
            (Msg::KeyValue, 1) => Kind::Str,
            (Msg::KeyValue, 2) => Kind::Nested(Msg::AnyValue),
            (Msg::KeyValue, 3) => Kind::Varint,
            (Msg::AnyValue, 1) => Kind::Str,
            (Msg::AnyValue, 2 | 3 | 8) => Kind::Varint,
            (Msg::AnyValue, 4) => Kind::Fixed64,
            (Msg::AnyValue, 5) => Kind::Nested(Msg::ArrayValue),
            (Msg::AnyValue, 6) => Kind::Nested(Msg::KeyValueList),
            (Msg::AnyValue, 7) => Kind::Bytes,
            (Msg::ArrayValue, 1) => Kind::Nested(Msg::AnyValue),
            (Msg::KeyValueList, 1) => Kind::Nested(Msg::KeyValue),
            _ => return None,
        })
    }
}

/// Deepest nesting accepted, counting the request as 0: under prost's own limit (100),
/// so whatever passes here decodes.
const MAX_DEPTH: u32 = 90;

/// Check that `buf` is an `ExportTraceServiceRequest` prost decodes, and count its
/// spans. The error names the message and field at fault.
pub fn check_traces(buf: &[u8]) -> Result<usize, WireError> {
    let mut spans = 0;
    check(Msg::Request, buf, 0, &mut spans)?;
    Ok(spans)
}

fn check(msg: Msg, buf: &[u8], depth: u32, spans: &mut usize) -> Result<(), WireError> {
    if depth > MAX_DEPTH {
        return Err(WireError::new(format!(
            "{} nested deeper than {MAX_DEPTH} messages",
            msg.name()
        )));
    }
    let mut it = fields(buf);
    while !it.finished() {
        let Some((n, value, _)) = it.next_raw() else {
            return Err(malformed_field(msg, it.buf));
        };
        if n == 0 {
            return Err(WireError::new(format!(
                "{}: field number 0 is invalid",
                msg.name()
            )));
        }
        let Some(kind) = msg.field(n) else {
            continue;
        };
        match (kind, value) {
            (Kind::Varint, Wire::Varint(_))
            | (Kind::Fixed64, Wire::Fixed64(_))
            | (Kind::Fixed32, Wire::Fixed32(_))
            | (Kind::Bytes, Wire::Len(_)) => {}
            (Kind::Str, Wire::Len(s)) => {
                if std::str::from_utf8(s).is_err() {
                    return Err(WireError::new(format!(
                        "{} field {n}: string is not valid UTF-8",
                        msg.name()
                    )));
                }
            }
            (Kind::Nested(inner), Wire::Len(body)) => {
                if inner == Msg::Span {
                    *spans += 1;
                } else if inner == Msg::KeyValue && plain_key_value(body) {
                    // The common attribute, checked without the general walk.
                    continue;
                }
                check(inner, body, depth + 1, spans)?;
            }
            _ => {
                return Err(WireError::new(format!(
                    "{} field {n}: wrong wire type",
                    msg.name()
                )));
            }
        }
    }
    Ok(())
}

/// Whether `kv` is a `KeyValue` of the usual shape (a key, then a scalar value, each once)
/// and valid. `false` leaves it to the general walk, which gives the error if there is one.
#[inline]
fn plain_key_value(kv: &[u8]) -> bool {
    let Some((key, rest)) = len_field(kv, 0x0a) else {
        return false;
    };
    if std::str::from_utf8(key).is_err() {
        return false;
    }
    if rest.is_empty() {
        return true;
    }
    match len_field(rest, 0x12) {
        Some((value, [])) => plain_any_value(value),
        _ => false,
    }
}

/// Whether `v` is an `AnyValue` holding one scalar (or nothing), and valid.
#[inline]
fn plain_any_value(v: &[u8]) -> bool {
    let Some((&tag, rest)) = v.split_first() else {
        return true;
    };
    match tag {
        // string_value
        0x0a => matches!(len_field(v, 0x0a), Some((s, [])) if std::str::from_utf8(s).is_ok()),
        // bytes_value
        0x3a => matches!(len_field(v, 0x3a), Some((_, []))),
        // bool_value, int_value, string_value_strindex
        0x10 | 0x18 | 0x40 => matches!(varint(rest), Some((_, n)) if n == rest.len()),
        // double_value
        0x21 => rest.len() == 8,
        _ => false,
    }
}

/// A length-delimited field with the one-byte `tag` at the start of `buf`: its body and
/// what follows it.
#[inline(always)]
fn len_field(buf: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = buf.split_first()?;
    if first != tag {
        return None;
    }
    let (len, n) = varint(rest)?;
    let end = n.checked_add(usize::try_from(len).ok()?)?;
    let body = rest.get(n..end)?;
    Some((body, &rest[end..]))
}

/// The error for the field that starts at `rest`: a tag or value cut short or
/// malformed, or a wire type prost does not skip (groups, 6, 7).
fn malformed_field(msg: Msg, rest: &[u8]) -> WireError {
    let what = match varint(rest) {
        None => "a malformed tag".to_string(),
        Some((tag, _)) if matches!(tag & 7, 3 | 4 | 6 | 7) => {
            format!("field {}: unsupported wire type {}", tag >> 3, tag & 7)
        }
        Some((tag, _)) => format!("field {}: truncated or malformed value", tag >> 3),
    };
    WireError::new(format!("{}: {what}", msg.name()))
}

// ---- cutting requests ----

/// Split the trace request in `buf` (checked by [`check_traces`]) span by span over
/// `parts` outputs: `owner(trace_id, span)` says where each span goes (consecutive spans
/// of one trace are asked once). Each output gets, for every resource and scope it has
/// spans of, that resource's and scope's fields byte for byte, then its spans byte for
/// byte; a resource whose spans all go one way is copied whole. Returns the outputs
/// that got spans, by index. Fields unknown to this OTLP version (of the request, a
/// resource or a scope) go out once, with the first output that gets spans of them, so a
/// split never multiplies them.
///
/// What prost decodes from the outputs is what splitting the decoded request would
/// give: the same spans, each under a copy of its resource and scope, in order.
///
/// ```
/// use otel_pipeline_core::{testing::generate_traces, wire};
/// let bytes = prost::Message::encode_to_vec(&generate_traces(4, 5, 1));
/// // Even trace ids' last byte to output 0, odd to 1.
/// let parts = wire::split_traces(&bytes, 2, |id, _| usize::from(id[15] & 1));
/// for (_, part, spans) in &parts {
///     assert_eq!(wire::check_traces(part), Ok(*spans));
/// }
/// assert_eq!(parts.iter().map(|(_, _, spans)| spans).sum::<usize>(), 20);
/// ```
pub fn split_traces(
    buf: &[u8],
    parts: usize,
    mut owner: impl FnMut(&[u8], &[u8]) -> usize,
) -> Vec<(usize, Vec<u8>, usize)> {
    let parts = parts.max(1);
    let mut last: Option<(&[u8], usize)> = None;
    split_each(buf, parts, |id, span| match last {
        Some((l, o)) if l == id && !id.is_empty() => o,
        _ => {
            let o = owner(id, span).min(parts - 1);
            last = Some((id, o));
            o
        }
    })
    .into_iter()
    .enumerate()
    .filter(|(_, (o, _))| !o.is_empty())
    .map(|(i, (o, count))| (i, o, count))
    .collect()
}

/// Take the first `n` spans of the request in `buf` (checked by [`check_traces`]) into
/// one request and the rest into another, cutting inside a resource or scope where
/// needed (both halves then carry it).
///
/// ```
/// use otel_pipeline_core::{testing::generate_traces, wire};
/// let bytes = prost::Message::encode_to_vec(&generate_traces(3, 4, 1));
/// let (front, rest) = wire::split_front_traces(&bytes, 5);
/// assert_eq!((wire::check_traces(&front), wire::check_traces(&rest)), (Ok(5), Ok(7)));
/// ```
pub fn split_front_traces(buf: &[u8], n: usize) -> (Vec<u8>, Vec<u8>) {
    let mut seen = 0usize;
    let mut halves = split_each(buf, 2, |_, _| {
        seen += 1;
        usize::from(seen > n)
    })
    .into_iter()
    .map(|(o, _)| o);
    let front = halves.next().unwrap_or_default();
    (front, halves.next().unwrap_or_default())
}

/// Cut the request in `buf` (checked by [`check_traces`], holding `total` spans) into
/// requests of `size` spans each (the last may hold fewer), in order, in one pass: taking
/// `size` from the front again and again would walk and copy the rest each time.
///
/// ```
/// use otel_pipeline_core::{testing::generate_traces, wire};
/// let bytes = prost::Message::encode_to_vec(&generate_traces(3, 4, 1));
/// let chunks = wire::chunk_traces(&bytes, 12, 5);
/// let sizes: Vec<usize> = chunks.iter().map(|(_, n)| *n).collect();
/// assert_eq!(sizes, [5, 5, 2]);
/// ```
pub fn chunk_traces(buf: &[u8], total: usize, size: usize) -> Vec<(Vec<u8>, usize)> {
    let size = size.max(1);
    let parts = total.div_ceil(size).max(1);
    let mut seen = 0usize;
    split_each(buf, parts, |_, _| {
        let o = seen / size;
        seen += 1;
        o
    })
    .into_iter()
    .filter(|(o, _)| !o.is_empty())
    .collect()
}

/// The walk behind [`split_traces`] and [`split_front_traces`]: `owner` is asked for every
/// span (`< parts`). Returns each output's bytes (empty if it got no span) and span count;
/// fields this OTLP version does not know (of the request, a resource or a scope) go out
/// once, with the first output that gets spans of them.
fn split_each<'a>(
    buf: &'a [u8],
    parts: usize,
    mut owner: impl FnMut(&'a [u8], &'a [u8]) -> usize,
) -> Vec<(Vec<u8>, usize)> {
    let mut out: Vec<Vec<u8>> = vec![Vec::new(); parts];
    let mut counts = vec![0usize; parts];
    let mut extra: Vec<&[u8]> = Vec::new();
    let mut scratch = Scratch::default();
    let mut it = fields(buf);
    while let Some((f, value, raw)) = it.next_raw() {
        match (f, value) {
            (1, Wire::Len(rs)) => {
                split_resource(rs, raw, &mut out, &mut counts, &mut scratch, &mut owner);
            }
            _ => extra.push(raw),
        }
    }
    // Fields of the request this OTLP version does not know go out once, with the first
    // output that got spans: copied to every output, one large unknown field would cost
    // its size once per part (and again per endpoint in a router). prost drops them, so
    // the decoded split has none at all.
    if let Some(first) = out.iter_mut().find(|o| !o.is_empty()) {
        for raw in &extra {
            first.extend_from_slice(raw);
        }
    }
    out.into_iter().zip(counts).collect()
}

/// Whether field `f` of a `ResourceSpans` or `ScopeSpans` is one this OTLP version knows
/// besides the spans (the resource or scope, and the schema URL): those go with every
/// part of a split; unknown ones go once.
fn known_head(f: u32) -> bool {
    f == 1 || f == 3
}

/// Working space reused across resources.
#[derive(Default)]
struct Scratch<'a> {
    /// The resource's scopes: (body, bytes of its known own fields, bytes of its unknown
    /// ones, first span in `spans`).
    scopes: Vec<(&'a [u8], usize, usize, usize)>,
    /// Spans of the resource: (whole field encoding, owner).
    spans: Vec<(&'a [u8], usize)>,
    /// The resource's body being built for one output.
    body: Vec<u8>,
}

/// Split one `ResourceSpans` (body `rs`, whole field `raw`) into `out`.
fn split_resource<'a>(
    rs: &'a [u8],
    raw: &'a [u8],
    out: &mut [Vec<u8>],
    counts: &mut [usize],
    scratch: &mut Scratch<'a>,
    owner: &mut impl FnMut(&'a [u8], &'a [u8]) -> usize,
) {
    let parts = out.len();
    scratch.scopes.clear();
    scratch.spans.clear();
    // The resource's own fields: the known ones (resource, schema URL), and unknown ones.
    let (mut head_len, mut head_unknown) = (0usize, 0usize);
    // Where every span goes: the one output, if all go one way and no scope is empty.
    let mut only: Option<Option<usize>> = None;
    let mut it = fields(rs);
    while let Some((f, value, field_raw)) = it.next_raw() {
        let (2, Wire::Len(ss)) = (f, value) else {
            if known_head(f) {
                head_len += field_raw.len();
            } else {
                head_unknown += field_raw.len();
            }
            continue;
        };
        let first = scratch.spans.len();
        let (mut scope_head, mut scope_unknown) = (0usize, 0usize);
        let mut sit = fields(ss);
        while let Some((sf, svalue, sraw)) = sit.next_raw() {
            match (sf, svalue) {
                (2, Wire::Len(span)) => {
                    let o = owner(trace_id(span), span).min(parts - 1);
                    scratch.spans.push((sraw, o));
                    only = match only {
                        None => Some(Some(o)),
                        Some(Some(p)) if p == o => Some(Some(o)),
                        _ => Some(None),
                    };
                }
                _ if known_head(sf) => scope_head += sraw.len(),
                _ => scope_unknown += sraw.len(),
            }
        }
        if scratch.spans.len() == first {
            // An empty scope: the decoded split leaves it out, so the copy must too.
            only = Some(None);
        }
        scratch.scopes.push((ss, scope_head, scope_unknown, first));
    }
    for (_, o) in &scratch.spans {
        counts[*o] += 1;
    }
    match only {
        // No span: nothing to send, as the decoded split does.
        None => return,
        // Every span one way: the resource as it came.
        Some(Some(o)) => {
            out[o].extend_from_slice(raw);
            return;
        }
        _ => {}
    }
    let span_count = scratch.spans.len();
    // Unknown fields of the resource and of each scope go with the first part that has
    // spans of them, once.
    let mut resource_unknown_out = head_unknown == 0;
    let mut scope_unknown_out: Vec<bool> = scratch.scopes.iter().map(|s| s.2 == 0).collect();
    for (o, target) in out.iter_mut().enumerate() {
        scratch.body.clear();
        for (i, &(ss, scope_head, scope_unknown, first)) in scratch.scopes.iter().enumerate() {
            let end = scratch.scopes.get(i + 1).map_or(span_count, |s| s.3);
            let spans = &scratch.spans[first..end];
            let size: usize = spans
                .iter()
                .filter(|(_, so)| *so == o)
                .map(|(s, _)| s.len())
                .sum();
            if size == 0 {
                continue;
            }
            let with_unknown = !std::mem::replace(&mut scope_unknown_out[i], true);
            let unknown = if with_unknown { scope_unknown } else { 0 };
            put_len_header(&mut scratch.body, 2, scope_head + unknown + size);
            let mut sit = fields(ss);
            while let Some((sf, _, sraw)) = sit.next_raw() {
                if sf != 2 && (known_head(sf) || with_unknown) {
                    scratch.body.extend_from_slice(sraw);
                }
            }
            for (span, _) in spans.iter().filter(|(_, so)| *so == o) {
                scratch.body.extend_from_slice(span);
            }
        }
        if scratch.body.is_empty() {
            continue;
        }
        let with_unknown = !std::mem::replace(&mut resource_unknown_out, true);
        let unknown = if with_unknown { head_unknown } else { 0 };
        put_len_header(target, 1, head_len + unknown + scratch.body.len());
        let mut it = fields(rs);
        while let Some((f, _, field_raw)) = it.next_raw() {
            if f != 2 && (known_head(f) || with_unknown) {
                target.extend_from_slice(field_raw);
            }
        }
        target.extend_from_slice(&scratch.body);
    }
}

/// A span's `trace_id` (field 1), read in place; empty if it has none.
#[inline]
pub fn trace_id(span: &[u8]) -> &[u8] {
    // As prost reads it: a field given twice keeps its last value, so a span cannot be
    // routed by one id here and buffered or exported under another.
    let mut id: &[u8] = &[];
    for (f, value) in fields(span) {
        if let (1, Wire::Len(v)) = (f, value) {
            id = v;
        }
    }
    id
}

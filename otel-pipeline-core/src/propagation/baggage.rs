//! W3C Baggage (`baggage` header).
//!
//! - Values are percent-decoded on extraction (bytes that are not valid UTF-8 become
//!   U+FFFD) and percent-encoded on injection: every byte outside the baggage-octet set,
//!   and `%` itself, so a value always survives a round trip (`=` is sent as `%3D` too, for
//!   parsers that split at every `=`).
//! - `=` may appear in a value (only the first `=` separates key and value).
//! - Properties (`;k=v`, `;flag`) are kept as the entry's metadata and sent back.
//! - Several `baggage` lines are combined in order.
//! - Limits: 64 members and 8192 bytes. Members past them are dropped whole (never cut),
//!   on extraction and on injection; an invalid member is skipped, the rest kept.

use std::borrow::Cow;
use std::fmt;

use opentelemetry::Context;
use opentelemetry::baggage::{Baggage, BaggageExt};
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};

use super::w3c::header_lines;

/// Header name.
pub const BAGGAGE: &str = "baggage";
/// Most members kept.
pub const MAX_MEMBERS: usize = 64;
/// Most bytes of a serialized baggage, separators included.
pub const MAX_BYTES: usize = 8192;

/// RFC 7230 `tchar`.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// W3C `baggage-octet`: printable ASCII except space, `"`, `,`, `;` and `\`.
fn is_baggage_octet(c: u8) -> bool {
    matches!(c, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

/// Percent-decode `s`; bytes that do not form valid UTF-8 become U+FFFD. A `%` not
/// followed by two hex digits is kept literally.
pub fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hi = (b[i + 1] as char).to_digit(16);
            let lo = (b[i + 2] as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    // Valid UTF-8 (the usual case) keeps its buffer; only invalid bytes cost a copy.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Percent-encode every byte of `s` that is not a baggage-octet, and `%` and `=`.
///
/// `=` is legal in a value, but parsers that split a member at every `=` (the
/// `opentelemetry_sdk` one among them) would cut the value short; `%3D` reads the same
/// everywhere.
pub fn percent_encode(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in s.as_bytes() {
        if is_baggage_octet(c) && c != b'%' && c != b'=' {
            out.push(c as char);
        } else {
            out.push('%');
            out.push(HEX[(c >> 4) as usize] as char);
            out.push(HEX[(c & 0xf) as usize] as char);
        }
    }
}

/// A property is `key` or `key=value` (OWS around `=` allowed).
fn normalize_property(p: &str) -> Option<String> {
    match p.split_once('=') {
        None => is_token(p).then(|| p.to_string()),
        Some((k, v)) => {
            let (k, v) = (k.trim_matches([' ', '\t']), v.trim_matches([' ', '\t']));
            (is_token(k) && v.bytes().all(is_baggage_octet)).then(|| format!("{k}={v}"))
        }
    }
}

/// A member's properties (`raw` is what follows its first `;`), invalid ones left out and
/// whitespace around them and their `=` removed. Borrowed when `raw` is already in that
/// form, as senders almost always write it.
fn properties(raw: &str) -> Cow<'_, str> {
    let tidy = |p: &str| match p.split_once('=') {
        None => is_token(p),
        Some((k, v)) => is_token(k) && v.bytes().all(is_baggage_octet),
    };
    if raw.split(';').all(tidy) {
        return Cow::Borrowed(raw);
    }
    let kept: Vec<String> = raw
        .split(';')
        .map(|p| p.trim_matches([' ', '\t']))
        .filter(|p| !p.is_empty())
        .filter_map(normalize_property)
        .collect();
    Cow::Owned(kept.join(";"))
}

/// What extraction kept and dropped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BaggageParse {
    /// The entries kept, in header order: `(key, decoded value, properties)`.
    pub entries: Vec<(String, String, String)>,
    /// Members skipped as malformed.
    pub invalid: usize,
    /// Members dropped because the limits were reached.
    pub over_limit: usize,
}

/// Parse `baggage` header lines.
///
/// ```
/// use otel_pipeline_core::propagation::baggage::parse_baggage;
/// let parsed = parse_baggage(&["userId=alice,serverNode=DF%2028,isProduction=false;p1=v1"]);
/// assert_eq!(parsed.entries[1], ("serverNode".into(), "DF 28".into(), String::new()));
/// assert_eq!(parsed.entries[2].2, "p1=v1");
/// ```
pub fn parse_baggage(lines: &[&str]) -> BaggageParse {
    let mut entries = Vec::new();
    let (invalid, over_limit) = parse_with(lines, |key, value, props| {
        entries.push((key.to_string(), value, props.into_owned()));
    });
    BaggageParse {
        entries,
        invalid,
        over_limit,
    }
}

/// Parse `lines`, handing each kept member to `entry` as `(key, decoded value,
/// properties)`. Returns how many members were invalid and how many over the limits.
fn parse_with<'a>(
    lines: &[&'a str],
    mut entry: impl FnMut(&'a str, String, Cow<'a, str>),
) -> (usize, usize) {
    let (mut invalid, mut over_limit) = (0, 0);
    let (mut members, mut bytes) = (0usize, 0usize);
    for line in lines {
        for member in line.split(',') {
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            let (kv, raw_props) = member.split_once(';').unwrap_or((member, ""));
            let Some((key, value)) = kv.split_once('=') else {
                invalid += 1;
                continue;
            };
            let (key, value) = (
                key.trim_matches([' ', '\t']),
                value.trim_matches([' ', '\t']),
            );
            if !is_token(key) || !value.bytes().all(is_baggage_octet) {
                invalid += 1;
                continue;
            }
            let props = if raw_props.is_empty() {
                Cow::Borrowed("")
            } else {
                properties(raw_props)
            };
            let size = member_size(key, value.len(), &props, members > 0);
            if members == MAX_MEMBERS || bytes + size > MAX_BYTES {
                over_limit += 1;
                continue;
            }
            bytes += size;
            members += 1;
            entry(key, percent_decode(value), props);
        }
    }
    (invalid, over_limit)
}

fn member_size(key: &str, encoded_value_len: usize, properties: &str, comma: bool) -> usize {
    let props = if properties.is_empty() {
        0
    } else {
        1 + properties.len()
    };
    usize::from(comma) + key.len() + 1 + encoded_value_len + props
}

/// Serialize baggage for the wire within the limits (sorted by key so the header is
/// stable). Returns `None` for empty baggage.
pub fn format_baggage(baggage: &Baggage) -> Option<String> {
    let mut entries: Vec<_> = baggage.iter().collect();
    entries.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let mut out = String::new();
    let mut members = 0;
    let mut member = String::new();
    for (key, (value, metadata)) in entries {
        if !is_token(key.as_str()) {
            continue;
        }
        member.clear();
        if members > 0 {
            member.push(',');
        }
        member.push_str(key.as_str());
        member.push('=');
        percent_encode(value.as_str(), &mut member);
        let props = metadata.as_str().trim_start_matches(';');
        if !props.is_empty() {
            member.push(';');
            member.push_str(props);
        }
        if members == MAX_MEMBERS || out.len() + member.len() > MAX_BYTES {
            continue;
        }
        out.push_str(&member);
        members += 1;
    }
    (!out.is_empty()).then_some(out)
}

/// The W3C Baggage propagator.
///
/// ```
/// use std::collections::HashMap;
/// use opentelemetry::baggage::BaggageExt;
/// use opentelemetry::propagation::TextMapPropagator;
/// use otel_pipeline_core::propagation::W3cBaggagePropagator;
///
/// let p = W3cBaggagePropagator::new();
/// let mut headers = HashMap::new();
/// headers.insert("baggage".to_string(), "tenant=acme%2Cinc;source=edge,query=a=b".to_string());
/// let cx = p.extract(&headers);
/// assert_eq!(cx.baggage().get("tenant").map(|v| v.as_str()), Some("acme,inc"));
/// assert_eq!(cx.baggage().get("query").map(|v| v.as_str()), Some("a=b"));
/// let mut out = HashMap::new();
/// p.inject_context(&cx, &mut out);
/// assert_eq!(out["baggage"], "query=a%3Db,tenant=acme%2Cinc;source=edge");
/// ```
#[derive(Clone)]
pub struct W3cBaggagePropagator {
    fields: [String; 1],
}

impl Default for W3cBaggagePropagator {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for W3cBaggagePropagator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("W3cBaggagePropagator")
    }
}

impl W3cBaggagePropagator {
    /// A new propagator.
    pub fn new() -> Self {
        Self {
            fields: [BAGGAGE.to_string()],
        }
    }
}

/// A copy of `baggage` (opentelemetry's `Baggage` is not `Clone`).
pub fn clone_baggage(baggage: &Baggage) -> Baggage {
    baggage
        .iter()
        .map(|(k, (v, m))| (k.clone(), (v.clone(), m.clone())))
        .collect()
}

impl TextMapPropagator for W3cBaggagePropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        if let Some(header) = format_baggage(cx.baggage()) {
            injector.set(BAGGAGE, header);
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let lines = header_lines(extractor, BAGGAGE);
        if lines.is_empty() {
            return cx.clone();
        }
        let mut baggage = Baggage::new();
        parse_with(&lines, |key, value, props| {
            baggage.insert_with_metadata(key.to_string(), value, props.as_ref());
        });
        if baggage.is_empty() {
            return cx.clone();
        }
        cx.with_baggage(baggage)
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn percent_encoding_round_trips() {
        for value in ["plain", "100%", "a b,c;d\\e\"f", "ünïcødé ☃", "=", ""] {
            let mut enc = String::new();
            percent_encode(value, &mut enc);
            assert!(enc.bytes().all(is_baggage_octet), "{enc}");
            assert_eq!(percent_decode(&enc), value);
        }
        let mut enc = String::new();
        percent_encode("50%", &mut enc);
        assert_eq!(enc, "50%25");
        // Invalid UTF-8 after decoding becomes U+FFFD; a stray % stays.
        assert_eq!(percent_decode("a%FFb"), "a\u{FFFD}b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn members_properties_and_invalid_members() {
        let p = parse_baggage(&[
            "k1=v1;prop1;prop2 = x , bad key=v, novalue, k2 = v2",
            "k3=a=b=c",
        ]);
        assert_eq!(
            p.entries,
            vec![
                ("k1".into(), "v1".into(), "prop1;prop2=x".into()),
                ("k2".into(), "v2".into(), String::new()),
                ("k3".into(), "a=b=c".into(), String::new()),
            ]
        );
        assert_eq!(p.invalid, 2);
    }

    #[test]
    fn limits_drop_whole_members() {
        let many: Vec<String> = (0..70).map(|i| format!("k{i}=v{i}")).collect();
        let p = parse_baggage(&[&many.join(",")]);
        assert_eq!(p.entries.len(), 64);
        assert_eq!(p.over_limit, 6);
        assert_eq!(p.entries[63].0, "k63");

        let big = "x".repeat(4000);
        let p = parse_baggage(&[&format!("a={big},b={big},c={big},d=small")]);
        let keys: Vec<&str> = p.entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(keys, ["a", "b", "d"]);
        assert_eq!(p.over_limit, 1);
    }

    #[test]
    fn inject_respects_limits_and_skips_empty() {
        let p = W3cBaggagePropagator::new();
        let mut out = HashMap::new();
        p.inject_context(&Context::new(), &mut out);
        assert!(out.is_empty(), "no empty baggage header");

        let mut baggage = Baggage::new();
        for i in 0..64 {
            baggage.insert(format!("key{i:02}"), "v".repeat(100));
        }
        let header = format_baggage(&baggage).unwrap();
        assert!(header.len() <= MAX_BYTES);
        assert_eq!(header.split(',').count(), 64);
        // Every member made it whole.
        assert!(header.split(',').all(|m| m.len() == 6 + 100));
    }

    /// "Limits": a platform MUST propagate all list-members while there are at most 64 and
    /// the header is at most 8192 bytes, across all `baggage` lines combined.
    #[test]
    fn sixty_four_members_in_8192_bytes_all_go_through() {
        // 64 members of 128 bytes each, commas included: 63 * 128 + 127 = 8191 bytes.
        let members: Vec<String> = (0..64)
            .map(|i| format!("k{i:02}={}", "v".repeat(123)))
            .collect();
        let header = members.join(",");
        assert!(header.len() <= MAX_BYTES);
        // Split over four lines: the limits apply to the combination.
        let lines: Vec<String> = members.chunks(16).map(|c| c.join(",")).collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let parsed = parse_baggage(&lines);
        assert_eq!((parsed.entries.len(), parsed.over_limit), (64, 0));
        let p = W3cBaggagePropagator::new();
        let mut carrier = HashMap::new();
        carrier.insert("baggage".to_string(), header.clone());
        let cx = p.extract(&carrier);
        assert_eq!(cx.baggage().len(), 64);
        let mut out = HashMap::new();
        p.inject_context(&cx, &mut out);
        assert_eq!(out["baggage"], header, "all 64, whole, in key order");
    }

    #[test]
    fn multiple_lines_combine() {
        let mut h = HashMap::new();
        h.insert("baggage".to_string(), "a=1".to_string());
        let cx = W3cBaggagePropagator::new().extract(&h);
        assert_eq!(cx.baggage().len(), 1);
        let p = parse_baggage(&["a=1", "b=2"]);
        assert_eq!(p.entries.len(), 2);
    }
}

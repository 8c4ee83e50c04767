//! Every reader of client bytes beside prost: for a request that passes `check_traces`,
//! each in-place reader must give exactly what prost's decode gives. Driven by the
//! `byte_readers` fuzz target and by a unit test over mutated requests.

use otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline_core::proto::common::v1::{AnyValue, InstrumentationScope, any_value};
use otel_pipeline_core::proto::resource::v1::Resource;
use otel_pipeline_core::proto::trace::v1::Span;
use otel_pipeline_core::wire::{self, Wire, fields};
use prost::Message;

use super::buffer::key_mask;
use super::pack::{Dict, pack, unpack};
use super::wire::{AnyRef, decode_span, span_attr, span_trace_state};
use super::{head, span_meta};

/// The first difference between a byte reader and prost on `request`, if any. A request
/// that `check_traces` refuses is not a case (`Ok`).
pub(crate) fn check_readers(request: &[u8]) -> Result<(), String> {
    if wire::check_traces(request).is_err() {
        return Ok(());
    }
    let decoded = ExportTraceServiceRequest::decode(request)
        .map_err(|e| format!("check_traces passed a request prost refuses: {e}"))?;
    let mut dict = Dict::default();
    let resources = fields(request).filter_map(|(f, v)| match (f, v) {
        (1, Wire::Len(rs)) => Some(rs),
        _ => None,
    });
    for (i, (rs, d_rs)) in resources.zip(&decoded.resource_spans).enumerate() {
        let (resource, url) = head::<Resource>(rs);
        if (resource.as_ref(), url.as_str()) != (d_rs.resource.as_ref(), d_rs.schema_url.as_str()) {
            return Err(format!("resource {i}: head() differs from prost"));
        }
        let scopes = fields(rs).filter_map(|(f, v)| match (f, v) {
            (2, Wire::Len(ss)) => Some(ss),
            _ => None,
        });
        for (j, (ss, d_ss)) in scopes.zip(&d_rs.scope_spans).enumerate() {
            let (scope, url) = head::<InstrumentationScope>(ss);
            if (scope.as_ref(), url.as_str()) != (d_ss.scope.as_ref(), d_ss.schema_url.as_str()) {
                return Err(format!("scope {i}.{j}: head() differs from prost"));
            }
            let spans = fields(ss).filter_map(|(f, v)| match (f, v) {
                (2, Wire::Len(span)) => Some(span),
                _ => None,
            });
            for (k, (span, d)) in spans.zip(&d_ss.spans).enumerate() {
                check_span(span, d, &mut dict).map_err(|e| format!("span {i}.{j}.{k}: {e}"))?;
            }
        }
    }
    check_splits(request, &decoded)
}

/// One span's bytes read in place, beside prost's decode `d`.
fn check_span(span: &[u8], d: &Span, dict: &mut Dict) -> Result<(), String> {
    if wire::trace_id(span) != &d.trace_id[..] {
        return Err("wire::trace_id differs".into());
    }
    if decode_span(span).as_ref() != Some(d) {
        return Err("the fast span decoder differs".into());
    }
    if span_trace_state(span) != d.trace_state {
        return Err("span_trace_state differs".into());
    }
    let keys: Vec<String> = d
        .attributes
        .iter()
        .take(8)
        .map(|kv| kv.key.clone())
        .collect();
    let meta = span_meta(span, &keys);
    let want = (
        d.start_time_unix_nano,
        d.end_time_unix_nano,
        d.parent_span_id.is_empty(),
        d.status.as_ref().map_or(0, |s| s.code.clamp(0, 2) as u8),
        d.flags & 0x01 != 0,
        key_mask(&d.attributes, &keys),
    );
    let got = (
        meta.start_ns,
        meta.end_ns,
        meta.root,
        meta.status,
        meta.sampled_flag,
        meta.mask,
    );
    if got != want {
        return Err(format!("span_meta {got:?}, prost {want:?}"));
    }
    for key in &keys {
        let first = d.attributes.iter().find(|kv| kv.key == *key);
        let want = first.map(|kv| expected(kv.value.as_ref()));
        if span_attr(span, key) != want {
            return Err(format!("span_attr({key:?}) differs"));
        }
    }
    // Packed as the sampler holds it, and back: the same bytes.
    let id: [u8; 16] = d.trace_id.as_slice().try_into().unwrap_or([0; 16]);
    let mut packed = Vec::new();
    pack(span, &id, Some(dict), &mut packed);
    let mut back = Vec::new();
    if unpack(&packed, &id, dict, &mut back).is_none() || back != span {
        return Err("pack/unpack does not give the span's bytes back".into());
    }
    Ok(())
}

/// What [`span_attr`] should read for a decoded value.
fn expected(v: Option<&AnyValue>) -> AnyRef<'_> {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => AnyRef::Str(s),
        Some(any_value::Value::BoolValue(b)) => AnyRef::Bool(*b),
        Some(any_value::Value::IntValue(i)) => AnyRef::Int(*i),
        Some(any_value::Value::DoubleValue(d)) => AnyRef::Double(*d),
        _ => AnyRef::Other,
    }
}

/// Every span with its resource and scope, as prost decodes `req`: what a split must keep.
fn triples(req: &ExportTraceServiceRequest) -> Vec<Vec<u8>> {
    req.resource_spans
        .iter()
        .flat_map(|rs| {
            rs.scope_spans.iter().flat_map(move |ss| {
                ss.spans.iter().map(move |s| {
                    // Presence, then the encoding, for resource and scope alike.
                    let mut key = vec![u8::from(rs.resource.is_some())];
                    key.extend(
                        rs.resource
                            .as_ref()
                            .map(Message::encode_to_vec)
                            .unwrap_or_default(),
                    );
                    key.extend(rs.schema_url.as_bytes());
                    key.push(u8::from(ss.scope.is_some()));
                    key.extend(
                        ss.scope
                            .as_ref()
                            .map(Message::encode_to_vec)
                            .unwrap_or_default(),
                    );
                    key.extend(ss.schema_url.as_bytes());
                    key.extend(s.encode_to_vec());
                    key
                })
            })
        })
        .collect()
}

/// Splitting the bytes gives what splitting the decoded request would.
fn check_splits(request: &[u8], decoded: &ExportTraceServiceRequest) -> Result<(), String> {
    let want = triples(decoded);
    let parts = wire::split_traces(request, 3, |id, _| {
        usize::from(id.last().copied().unwrap_or(0)) % 3
    });
    let mut got = Vec::new();
    for (_, part, n) in &parts {
        let req = ExportTraceServiceRequest::decode(&part[..])
            .map_err(|e| format!("a split part does not decode: {e}"))?;
        let t = triples(&req);
        if t.len() != *n {
            return Err(format!("a split part says {n} spans, holds {}", t.len()));
        }
        got.extend(t);
    }
    let (mut g, mut w) = (got, want.clone());
    g.sort();
    w.sort();
    if g != w {
        return Err("split_traces changed, lost or added spans".into());
    }
    let half = want.len() / 2;
    let (front, rest) = wire::split_front_traces(request, half);
    let mut both = Vec::new();
    for part in [&front, &rest] {
        if part.is_empty() {
            continue;
        }
        let req = ExportTraceServiceRequest::decode(&part[..])
            .map_err(|e| format!("a split_front part does not decode: {e}"))?;
        both.extend(triples(&req));
    }
    if both != want {
        return Err("split_front_traces changed the spans or their order".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use otel_pipeline_core::testing::{SplitMix64, generate_traces};

    /// Requests mutated at random (bytes changed, inserted, cut; fields repeated): every
    /// one that `check_traces` passes reads alike through every byte reader and prost.
    #[test]
    fn byte_readers_agree_with_prost_on_mutated_requests() {
        let mut rng = SplitMix64::new(26);
        let base = generate_traces(3, 4, 5).encode_to_vec();
        let mut checked = 0;
        for round in 0..4_000 {
            let mut bytes = base.clone();
            for _ in 0..=rng.below(3) {
                let at = rng.below(bytes.len() as u64 + 1) as usize;
                match rng.below(4) {
                    0 if at < bytes.len() => bytes[at] = rng.below(256) as u8,
                    1 => bytes.insert(at, rng.below(256) as u8),
                    // A whole field of the request repeated at the end (prost merges).
                    2 => {
                        let end = (at + 1 + rng.below(64) as usize).min(bytes.len());
                        let copy = bytes[at.min(end)..end].to_vec();
                        bytes.extend(copy);
                    }
                    _ => bytes.truncate(at.max(1)),
                }
            }
            if wire::check_traces(&bytes).is_ok() {
                checked += 1;
            }
            if let Err(e) = check_readers(&bytes) {
                panic!("round {round}: {e}\n{bytes:?}");
            }
        }
        assert!(checked > 200, "only {checked} mutated requests were valid");
    }

    /// A request whose messages are each given as two encodings back to back, which
    /// prost merges: every scalar field repeated (the last wins), every message field
    /// repeated (merged), resources and scopes twice.
    fn merged_request(req: &ExportTraceServiceRequest, rng: &mut SplitMix64) -> Vec<u8> {
        use prost::encoding::{WireType, encode_key, encode_varint};
        let field = |out: &mut Vec<u8>, tag: u32, body: &[u8]| {
            encode_key(tag, WireType::LengthDelimited, out);
            encode_varint(body.len() as u64, out);
            out.extend_from_slice(body);
        };
        let spans: Vec<&Span> = req
            .resource_spans
            .iter()
            .flat_map(|rs| rs.scope_spans.iter().flat_map(|ss| ss.spans.iter()))
            .collect();
        let mut out = Vec::new();
        for rs in &req.resource_spans {
            let mut rs_body = Vec::new();
            if let Some(r) = &rs.resource {
                // The resource twice: prost appends the second's attributes.
                field(&mut rs_body, 1, &r.encode_to_vec());
                if rng.below(2) == 0 {
                    field(&mut rs_body, 1, &r.encode_to_vec());
                }
            }
            for ss in &rs.scope_spans {
                let mut ss_body = Vec::new();
                if let Some(sc) = &ss.scope {
                    field(&mut ss_body, 1, &sc.encode_to_vec());
                }
                for span in &ss.spans {
                    let mut bytes = span.encode_to_vec();
                    if rng.below(2) == 0 {
                        // Another span's fields after this one's: its trace id, times,
                        // status and attributes win or append.
                        let other = spans[rng.below(spans.len() as u64) as usize];
                        bytes.extend(other.encode_to_vec());
                    }
                    field(&mut ss_body, 2, &bytes);
                }
                field(&mut rs_body, 2, &ss_body);
            }
            field(&mut out, 1, &rs_body);
        }
        out
    }

    /// What the fuzz target found first: an attribute with no `key` field (prost: the
    /// empty key) followed by an unknown field, read by `span_attr("")`.
    #[test]
    fn an_attribute_without_a_key_is_the_empty_key() {
        use otel_pipeline_core::proto::trace::v1::Span;
        let mut kv = Vec::new();
        wire::put_len_header(&mut kv, 9, 2);
        kv.extend_from_slice(b"db");
        wire::put_len_header(&mut kv, 2, 4);
        kv.extend_from_slice(&[0x0a, 0x02, b'p', b'g']);
        let mut span = Span {
            trace_id: vec![1; 16],
            span_id: vec![1; 8],
            ..Default::default()
        }
        .encode_to_vec();
        wire::put_len_header(&mut span, 9, kv.len());
        span.extend_from_slice(&kv);
        let d = Span::decode(&span[..]).unwrap();
        assert_eq!(d.attributes[0].key, "");
        assert_eq!(span_attr(&span, ""), Some(AnyRef::Str("pg")));
        let mut dict = Dict::default();
        check_span(&span, &d, &mut dict).unwrap();
    }

    /// Merged encodings, which a client may send and prost reads in its own way: every
    /// reader reads them as prost does.
    #[test]
    fn byte_readers_agree_with_prost_on_merged_encodings() {
        use otel_pipeline_core::proto::common::v1::KeyValue;
        let mut rng = SplitMix64::new(4);
        for round in 0..300 {
            let mut req = generate_traces(3, 3, round);
            // Attributes whose values differ in kind between the two halves.
            for (i, span) in req.resource_spans[0].scope_spans[0]
                .spans
                .iter_mut()
                .enumerate()
            {
                span.attributes.push(KeyValue {
                    key: "k".into(),
                    value: Some(AnyValue {
                        value: Some(if i % 2 == 0 {
                            any_value::Value::StringValue("s".into())
                        } else {
                            any_value::Value::IntValue(i as i64)
                        }),
                    }),
                    ..Default::default()
                });
            }
            let bytes = merged_request(&req, &mut rng);
            assert!(wire::check_traces(&bytes).is_ok());
            if let Err(e) = check_readers(&bytes) {
                panic!("round {round}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod fuzz_found {
    /// Found by the `byte_readers` fuzz target (2026-12-08): an attribute's `AnyValue`
    /// holding a string and then field 8 (`string_value_strindex`, a member of the
    /// `oneof` since OTLP 1.7). prost keeps the last member given; the byte readers took
    /// field 8 for an unknown field and kept the string.
    #[test]
    fn a_string_index_after_a_string_is_the_value_as_prost_reads_it() {
        let data: &[u8] = &[
            10, 146, 2, 10, 28, 10, 26, 10, 12, 110, 101, 114, 118, 105, 99, 101, 46, 110, 97, 109,
            101, 18, 10, 10, 8, 99, 104, 101, 99, 107, 111, 117, 116, 18, 223, 1, 10, 10, 10, 3,
            108, 105, 98, 18, 3, 49, 46, 48, 18, 105, 10, 16, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
            12, 13, 14, 15, 16, 18, 8, 1, 1, 1, 1, 1, 1, 1, 1, 10, 6, 71, 69, 84, 32, 47, 97, 48,
            2, 57, 232, 3, 0, 0, 0, 0, 0, 0, 65, 208, 7, 0, 0, 0, 0, 0, 0, 74, 18, 10, 10, 104,
            124, 116, 112, 46, 114, 111, 117, 116, 101, 18, 4, 10, 0, 64, 97, 74, 11, 10, 4, 99,
            111, 100, 101, 18, 3, 24, 247, 3, 122, 8, 24, 2, 18, 4, 98, 111, 111, 109, 133, 1, 1,
            0, 0, 0, 18, 84, 10, 16, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 8,
            2, 2, 2, 2, 2, 2, 2, 2, 34, 8, 1, 1, 1, 1, 1, 1, 1, 1, 42, 6, 83, 69, 76, 69, 67, 84,
            48, 2, 57, 232, 3, 0, 0, 0, 0, 0, 0, 65, 208, 7, 0, 0, 0, 0, 0, 0, 74, 10, 10, 2, 100,
            98, 18, 4, 10, 0, 112, 103, 133, 1, 1, 0, 255, 247, 26, 16, 104, 116, 116, 112, 115,
            58, 47, 47, 115, 99, 104, 101, 109, 97, 47, 49, 26, 16, 104, 116, 116, 112, 115, 58,
            47, 47, 115, 99, 104, 101, 109, 97, 47, 114,
        ];
        assert_eq!(super::check_readers(data), Ok(()));
    }
}

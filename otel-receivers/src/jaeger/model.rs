//! Jaeger's model (`jaeger.api_v2` protobuf, and `jaeger.thrift` read into it) and its
//! translation to OTLP as the Collector's `jaeger` receiver does.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue as OtlpKeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::thrift::TValue;

pub(crate) use otel_pipeline_core::foreign::jaeger::*;

// ---------------------------------------------------------------------------------------
// Thrift to the model

fn thrift_tag(t: &TValue) -> KeyValue {
    let key = t.string(1).unwrap_or_default();
    let mut kv = KeyValue {
        key,
        ..KeyValue::default()
    };
    // jaeger.thrift: STRING 0, DOUBLE 1, BOOL 2, LONG 3, BINARY 4.
    match t.int(2).unwrap_or_default() {
        1 => {
            kv.v_type = 3;
            if let Some(TValue::Double(d)) = t.field(4) {
                kv.v_float64 = *d;
            }
        }
        2 => {
            kv.v_type = 1;
            kv.v_bool = matches!(t.field(5), Some(TValue::Bool(true)));
        }
        3 => {
            kv.v_type = 2;
            kv.v_int64 = t.int(6).unwrap_or_default();
        }
        4 => {
            kv.v_type = 4;
            if let Some(TValue::Binary(b)) = t.field(7) {
                kv.v_binary.clone_from(b);
            }
        }
        _ => kv.v_str = t.string(3).unwrap_or_default(),
    }
    kv
}

fn ids(high: i64, low: i64) -> Vec<u8> {
    let mut id = Vec::with_capacity(16);
    id.extend_from_slice(&high.to_be_bytes());
    id.extend_from_slice(&low.to_be_bytes());
    id
}

fn thrift_process(p: &TValue) -> Process {
    Process {
        service_name: p.string(1).unwrap_or_default(),
        tags: p.list(2).iter().map(thrift_tag).collect(),
    }
}

/// A `jaeger.thrift` Batch read into the model.
pub(crate) fn thrift_batch(b: &TValue) -> Result<JaegerBatch, String> {
    if !matches!(b, TValue::Struct(_)) {
        return Err("the batch is not a struct".into());
    }
    let process = b.field(1).map(thrift_process);
    let spans = b
        .list(2)
        .iter()
        .map(|s| {
            let trace_id = ids(s.int(2).unwrap_or_default(), s.int(1).unwrap_or_default());
            let mut references: Vec<SpanRef> = s
                .list(6)
                .iter()
                .map(|r| SpanRef {
                    trace_id: ids(r.int(3).unwrap_or_default(), r.int(2).unwrap_or_default()),
                    span_id: r.int(4).unwrap_or_default().to_be_bytes().to_vec(),
                    ref_type: i32::from(r.int(1) == Some(1)),
                })
                .collect();
            let parent = s.int(4).unwrap_or_default();
            if parent != 0 {
                let parent = parent.to_be_bytes().to_vec();
                if !references
                    .iter()
                    .any(|r| r.ref_type == 0 && r.span_id == parent && r.trace_id == trace_id)
                {
                    references.insert(
                        0,
                        SpanRef {
                            trace_id: trace_id.clone(),
                            span_id: parent,
                            ref_type: 0,
                        },
                    );
                }
            }
            let micros = |id| u64::try_from(s.int(id).unwrap_or_default()).unwrap_or_default();
            JaegerSpan {
                trace_id,
                span_id: s.int(3).unwrap_or_default().to_be_bytes().to_vec(),
                operation_name: s.string(5).unwrap_or_default(),
                references,
                flags: u32::try_from(s.int(7).unwrap_or_default()).unwrap_or_default(),
                start_time: Some(Timestamp::from_nanos(micros(8).saturating_mul(1000))),
                duration: Some(Timestamp::from_nanos(micros(9).saturating_mul(1000))),
                tags: s.list(10).iter().map(thrift_tag).collect(),
                logs: s
                    .list(11)
                    .iter()
                    .map(|l| Log {
                        timestamp: Some(Timestamp::from_nanos(
                            u64::try_from(l.int(1).unwrap_or_default())
                                .unwrap_or_default()
                                .saturating_mul(1000),
                        )),
                        fields: l.list(2).iter().map(thrift_tag).collect(),
                    })
                    .collect(),
                ..JaegerSpan::default()
            }
        })
        .collect();
    Ok(JaegerBatch { spans, process })
}

// ---------------------------------------------------------------------------------------
// The model to OTLP

fn value(kv: &KeyValue) -> Value {
    match kv.v_type {
        1 => Value::BoolValue(kv.v_bool),
        2 => Value::IntValue(kv.v_int64),
        3 => Value::DoubleValue(kv.v_float64),
        4 => Value::BytesValue(kv.v_binary.clone()),
        _ => Value::StringValue(kv.v_str.clone()),
    }
}

fn otlp_kv(key: impl Into<String>, v: Value) -> OtlpKeyValue {
    OtlpKeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..OtlpKeyValue::default()
    }
}

fn text(kv: &KeyValue) -> String {
    match value(kv) {
        Value::StringValue(s) => s,
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        _ => String::new(),
    }
}

/// A process as a resource: `service.name`, its tags as attributes, `hostname` as
/// `host.name` and `jaeger.version` as `opencensus.exporterversion`, as the Collector
/// does.
fn resource(p: Option<&Process>) -> Resource {
    let mut attributes = Vec::new();
    if let Some(p) = p {
        if !p.service_name.is_empty() {
            attributes.push(otlp_kv(
                "service.name",
                Value::StringValue(p.service_name.clone()),
            ));
        }
        for t in &p.tags {
            match t.key.as_str() {
                "hostname" => attributes.push(otlp_kv("host.name", value(t))),
                "jaeger.version" => attributes.push(otlp_kv(
                    "opencensus.exporterversion",
                    Value::StringValue(format!("Jaeger-{}", text(t))),
                )),
                _ => attributes.push(otlp_kv(t.key.clone(), value(t))),
            }
        }
    }
    Resource {
        attributes,
        ..Resource::default()
    }
}

/// What the translation noticed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Notes {
    /// Spans whose trace id had 64 bits.
    pub(crate) trace_id_64bit: usize,
}

fn id<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    <[u8; N]>::try_from(bytes).ok()
}

/// Spans of one process, with each span's scope (name, version).
type Group = (Option<Process>, Vec<Span>, Vec<(String, String)>);

/// Translate batches to OTLP: one resource per process, one scope per
/// `otel.library.name`/`otel.scope.name`, `span.kind` and the status tags read into the
/// span, the first `CHILD_OF` reference in the trace as the parent and the other
/// references as links, logs as events (`event` their name). Spans with malformed ids
/// are an error for the whole request.
pub(crate) fn to_otlp(
    batches: Vec<JaegerBatch>,
    notes: &mut Notes,
) -> Result<ExportTraceServiceRequest, String> {
    let mut out: Vec<ResourceSpans> = Vec::new();
    for batch in batches {
        let batch_process = batch.process;
        // Spans with their own process get their own resource.
        let mut groups: Vec<Group> = Vec::new();
        for (i, s) in batch.spans.into_iter().enumerate() {
            let trace_id = id::<16>(&s.trace_id)
                .filter(|t| *t != [0; 16])
                .ok_or_else(|| format!("span {i}: trace id is not 16 bytes, or is zero"))?;
            let span_id = id::<8>(&s.span_id)
                .filter(|t| *t != [0; 8])
                .ok_or_else(|| format!("span {i}: span id is not 8 bytes, or is zero"))?;
            if trace_id[..8] == [0; 8] {
                notes.trace_id_64bit += 1;
            }
            let mut span = Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                name: s.operation_name,
                ..Span::default()
            };
            let start = s.start_time.map(|t| t.nanos()).unwrap_or_default();
            span.start_time_unix_nano = start;
            span.end_time_unix_nano =
                start.saturating_add(s.duration.map(|d| d.nanos()).unwrap_or_default());
            let mut parent_taken = false;
            for r in s.references {
                let (Some(t), Some(sid)) = (id::<16>(&r.trace_id), id::<8>(&r.span_id)) else {
                    continue;
                };
                if !parent_taken && r.ref_type == 0 && t == trace_id {
                    span.parent_span_id = sid.to_vec();
                    parent_taken = true;
                } else {
                    span.links.push(Link {
                        trace_id: t.to_vec(),
                        span_id: sid.to_vec(),
                        ..Link::default()
                    });
                }
            }
            // Tags: the special ones read into the span, the rest as attributes.
            let mut status = Status::default();
            let mut status_set = false;
            let (mut scope_name, mut scope_version) = (String::new(), String::new());
            let mut http_code: Option<i64> = None;
            let mut attrs = Vec::with_capacity(s.tags.len());
            let mut description = None;
            for t in &s.tags {
                match t.key.as_str() {
                    "span.kind" => {
                        span.kind = match text(t).as_str() {
                            "client" => SpanKind::Client,
                            "server" => SpanKind::Server,
                            "producer" => SpanKind::Producer,
                            "consumer" => SpanKind::Consumer,
                            "internal" => SpanKind::Internal,
                            _ => SpanKind::Unspecified,
                        } as i32;
                    }
                    "error" if matches!(value(t), Value::BoolValue(true)) || text(t) == "true" => {
                        status.code = StatusCode::Error as i32;
                        status_set = true;
                    }
                    "otel.status_code" => {
                        let code = match text(t).to_ascii_uppercase().as_str() {
                            "ERROR" => StatusCode::Error,
                            "OK" => StatusCode::Ok,
                            _ => StatusCode::Unset,
                        };
                        if !status_set {
                            status.code = code as i32;
                            status_set = true;
                        }
                    }
                    "otel.status_description" => description = Some(text(t)),
                    "w3c.tracestate" => span.trace_state = text(t),
                    "otel.library.name" | "otel.scope.name" => scope_name = text(t),
                    "otel.library.version" | "otel.scope.version" => scope_version = text(t),
                    key => {
                        if key == "http.status_code" || key == "http.response.status_code" {
                            http_code = text(t).parse().ok();
                        }
                        attrs.push(otlp_kv(key, value(t)));
                    }
                }
            }
            if !status_set
                && let Some(code) = http_code
                && !(100..400).contains(&code)
            {
                status.code = StatusCode::Error as i32;
                status_set = true;
            }
            if status_set {
                if status.code == StatusCode::Error as i32 {
                    status.message = description.unwrap_or_default();
                }
                span.status = Some(status);
            }
            span.attributes = attrs;
            span.events = s
                .logs
                .into_iter()
                .map(|l| {
                    let mut e = Event {
                        time_unix_nano: l.timestamp.map(|t| t.nanos()).unwrap_or_default(),
                        ..Event::default()
                    };
                    for f in &l.fields {
                        if f.key == "event" && e.name.is_empty() {
                            e.name = text(f);
                        } else {
                            e.attributes.push(otlp_kv(f.key.clone(), value(f)));
                        }
                    }
                    e
                })
                .collect();
            let process = s.process.filter(|p| !p.service_name.is_empty());
            let at = groups.iter().position(|(p, _, _)| *p == process);
            let g = match at {
                Some(g) => g,
                None => {
                    groups.push((process, Vec::new(), Vec::new()));
                    groups.len() - 1
                }
            };
            groups[g].1.push(span);
            groups[g].2.push((scope_name, scope_version));
        }
        for (process, spans, scopes) in groups {
            let mut rs = ResourceSpans {
                resource: Some(resource(process.as_ref().or(batch_process.as_ref()))),
                ..ResourceSpans::default()
            };
            for (span, (name, version)) in spans.into_iter().zip(scopes) {
                let at = rs.scope_spans.iter().position(|ss| {
                    ss.scope.as_ref().map(|s| (&s.name, &s.version)) == Some((&name, &version))
                        || (ss.scope.is_none() && name.is_empty())
                });
                let i = match at {
                    Some(i) => i,
                    None => {
                        rs.scope_spans.push(ScopeSpans {
                            scope: (!name.is_empty()).then(|| InstrumentationScope {
                                name: name.clone(),
                                version: version.clone(),
                                ..InstrumentationScope::default()
                            }),
                            ..ScopeSpans::default()
                        });
                        rs.scope_spans.len() - 1
                    }
                };
                rs.scope_spans[i].spans.push(span);
            }
            out.push(rs);
        }
    }
    Ok(ExportTraceServiceRequest {
        resource_spans: out,
    })
}

#[cfg(test)]
mod tests {
    use super::super::thrift::{Protocol, read_message, write};
    use super::*;

    fn tag(key: &str, vtype: i64, v: (i16, TValue)) -> TValue {
        TValue::Struct(vec![
            (1, TValue::Binary(key.as_bytes().to_vec())),
            (2, TValue::Int(vtype)),
            v,
        ])
    }

    fn s(text: &str) -> TValue {
        TValue::Binary(text.as_bytes().to_vec())
    }

    /// An `emitBatch` call as a Jaeger client library sends it.
    pub(crate) fn emit_batch(p: Protocol) -> Vec<u8> {
        let span = TValue::Struct(vec![
            (1, TValue::Int(0x1111)),
            (2, TValue::Int(0)),
            (3, TValue::Int(0x22)),
            (4, TValue::Int(0x33)),
            (5, s("GET /cart")),
            (7, TValue::Int(1)),
            (8, TValue::Int(1_700_000_000_000_000)),
            (9, TValue::Int(1500)),
            (
                10,
                TValue::List(vec![
                    tag("span.kind", 0, (3, s("server"))),
                    tag("error", 2, (5, TValue::Bool(true))),
                    tag("http.status_code", 3, (6, TValue::Int(503))),
                    tag("ratio", 1, (4, TValue::Double(0.5))),
                ]),
            ),
            (
                11,
                TValue::List(vec![TValue::Struct(vec![
                    (1, TValue::Int(1_700_000_000_000_100)),
                    (
                        2,
                        TValue::List(vec![
                            tag("event", 0, (3, s("retry"))),
                            tag("attempt", 3, (6, TValue::Int(2))),
                        ]),
                    ),
                ])]),
            ),
        ]);
        let process = TValue::Struct(vec![
            (1, s("cart")),
            (
                2,
                TValue::List(vec![
                    tag("hostname", 0, (3, s("node-7"))),
                    tag("jaeger.version", 0, (3, s("Python-4.8.0"))),
                ]),
            ),
        ]);
        let batch = TValue::Struct(vec![(1, process), (2, TValue::List(vec![span]))]);
        write::message("emitBatch", &TValue::Struct(vec![(1, batch)]), p)
    }

    #[test]
    fn a_thrift_batch_translates_as_the_collector_does() {
        for p in [Protocol::Compact, Protocol::Binary] {
            let (name, args) = read_message(&emit_batch(p), p).unwrap();
            assert_eq!(name, "emitBatch");
            let batch = thrift_batch(args.field(1).unwrap()).unwrap();
            let mut notes = Notes::default();
            let out = to_otlp(vec![batch], &mut notes).unwrap();
            assert_eq!(notes.trace_id_64bit, 1);
            let rs = &out.resource_spans[0];
            let keys: Vec<_> = rs
                .resource
                .as_ref()
                .unwrap()
                .attributes
                .iter()
                .map(|a| a.key.as_str())
                .collect();
            assert_eq!(
                keys,
                ["service.name", "host.name", "opencensus.exporterversion"]
            );
            let span = &rs.scope_spans[0].spans[0];
            assert_eq!(span.name, "GET /cart");
            assert_eq!(span.kind, SpanKind::Server as i32);
            assert_eq!(span.status.as_ref().unwrap().code, StatusCode::Error as i32);
            assert_eq!(span.parent_span_id, 0x33i64.to_be_bytes());
            assert_eq!(
                span.end_time_unix_nano - span.start_time_unix_nano,
                1_500_000
            );
            assert_eq!(span.attributes.len(), 2, "{:?}", span.attributes);
            assert_eq!(span.events[0].name, "retry");
            assert_eq!(span.events[0].attributes.len(), 1);
        }
    }

    #[test]
    fn malformed_ids_fail_the_request() {
        let batch = JaegerBatch {
            spans: vec![JaegerSpan {
                trace_id: vec![1; 3],
                span_id: vec![1; 8],
                ..JaegerSpan::default()
            }],
            process: None,
        };
        assert!(to_otlp(vec![batch], &mut Notes::default()).is_err());
    }
}

//! OTLP traces translated to Zipkin v2 (JSON and protobuf) and to Jaeger's `api_v2`, as
//! the Collector's `zipkin` and `jaeger` exporters do. The OTLP exporter sends them
//! ([`Protocol::ZipkinJson`](crate::otlp::Protocol::ZipkinJson),
//! [`ZipkinProto`](crate::otlp::Protocol::ZipkinProto),
//! [`JaegerGrpc`](crate::otlp::Protocol::JaegerGrpc)) with its queue, retries, TLS and
//! headers.

use otel_pipeline_core::foreign::jaeger::{
    JaegerBatch, JaegerSpan, KeyValue as JKv, Log, PostSpansRequest, Process, SpanRef, Timestamp,
};
use otel_pipeline_core::foreign::zipkin::{ListOfSpans, ProtoAnnotation, ProtoEndpoint, ProtoSpan};
use otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline_core::proto::common::v1::{AnyValue, KeyValue, any_value::Value};
use otel_pipeline_core::proto::trace::v1::Span;
use otel_pipeline_core::proto::trace::v1::span::SpanKind;
use otel_pipeline_core::proto::trace::v1::status::StatusCode;
use serde_json::{Map, Value as Json, json};

/// The service name Zipkin and Jaeger get for a resource without one.
const NO_SERVICE_NAME: &str = "OTLPResourceNoServiceName";

/// An attribute value as text: strings as they are, arrays and maps as JSON.
fn text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Some(other) => json_of(Some(other)).to_string(),
        None => String::new(),
    }
}

fn json_of(v: Option<&Value>) -> Json {
    match v {
        Some(Value::StringValue(s)) => Json::String(s.clone()),
        Some(Value::BoolValue(b)) => Json::Bool(*b),
        Some(Value::IntValue(i)) => json!(i),
        Some(Value::DoubleValue(d)) => json!(d),
        Some(Value::BytesValue(b)) => Json::String(b.iter().map(|x| format!("{x:02x}")).collect()),
        Some(Value::ArrayValue(a)) => {
            Json::Array(a.values.iter().map(|v| json_of(v.value.as_ref())).collect())
        }
        Some(Value::KvlistValue(m)) => Json::Object(attributes_json(&m.values)),
        // A string table index means nothing without its dictionary.
        Some(Value::StringValueStrindex(_)) | None => Json::Null,
    }
}

fn attributes_json(attrs: &[KeyValue]) -> Map<String, Json> {
    attrs
        .iter()
        .map(|a| {
            (
                a.key.clone(),
                json_of(a.value.as_ref().and_then(|v| v.value.as_ref())),
            )
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The service name of a resource and its other attributes as tags, as the Collector's
/// Zipkin exporter picks them: `service.name`, else `faas.name`, `k8s.deployment.name`
/// or `process.executable.name` (named in `otlp.service.name.source`).
fn service_and_tags(attrs: &[KeyValue], unnamed: Option<&str>) -> (String, Vec<(String, String)>) {
    let mut tags: Vec<(String, String)> = attrs
        .iter()
        .map(|a| (a.key.clone(), text(a.value.as_ref())))
        .collect();
    for (i, key) in [
        "service.name",
        "faas.name",
        "k8s.deployment.name",
        "process.executable.name",
    ]
    .into_iter()
    .enumerate()
    {
        if let Some(at) = tags.iter().position(|(k, _)| k == key) {
            let (_, name) = tags.remove(at);
            if i > 0 {
                tags.push(("otlp.service.name.source".into(), key.into()));
            }
            return (name, tags);
        }
    }
    (unnamed.unwrap_or(NO_SERVICE_NAME).into(), tags)
}

/// One Zipkin span's fields, before they are written as JSON or protobuf.
struct ZipkinSpan {
    trace_id: Vec<u8>,
    id: Vec<u8>,
    parent_id: Vec<u8>,
    name: String,
    kind: Option<&'static str>,
    /// Microseconds; 0 when the span had no start.
    timestamp: u64,
    duration: u64,
    local: (String, Option<String>, u16),
    remote: Option<(String, Option<String>, u16)>,
    annotations: Vec<(u64, String)>,
    tags: Vec<(String, String)>,
}

fn take(tags: &mut Vec<(String, String)>, key: &str) -> Option<String> {
    let at = tags.iter().position(|(k, _)| k == key)?;
    Some(tags.remove(at).1)
}

fn zipkin_spans(req: &ExportTraceServiceRequest, unnamed: Option<&str>) -> Vec<ZipkinSpan> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let attrs = rs
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        let (service, resource_tags) = service_and_tags(attrs, unnamed);
        for ss in &rs.scope_spans {
            let mut scope_tags = resource_tags.clone();
            if let Some(scope) = &ss.scope {
                if !scope.name.is_empty() {
                    scope_tags.push(("otel.library.name".into(), scope.name.clone()));
                }
                if !scope.version.is_empty() {
                    scope_tags.push(("otel.library.version".into(), scope.version.clone()));
                }
            }
            for span in &ss.spans {
                out.push(zipkin_span(span, &service, &scope_tags));
            }
        }
    }
    out
}

fn zipkin_span(span: &Span, service: &str, scope_tags: &[(String, String)]) -> ZipkinSpan {
    let mut tags: Vec<(String, String)> = scope_tags.to_vec();
    for a in &span.attributes {
        tags.retain(|(k, _)| *k != a.key);
        tags.push((a.key.clone(), text(a.value.as_ref())));
    }
    if !span.trace_state.is_empty() {
        tags.push(("w3c.tracestate".into(), span.trace_state.clone()));
    }
    let kind = match SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified) {
        SpanKind::Client => Some("CLIENT"),
        SpanKind::Server => Some("SERVER"),
        SpanKind::Producer => Some("PRODUCER"),
        SpanKind::Consumer => Some("CONSUMER"),
        SpanKind::Internal => {
            tags.push(("span.kind".into(), "internal".into()));
            None
        }
        SpanKind::Unspecified => None,
    };
    let local_ip = take(&mut tags, "net.host.ip");
    let local_port = take(&mut tags, "net.host.port").and_then(|p| p.parse().ok());
    let peer = take(&mut tags, "peer.service");
    let peer_ip = take(&mut tags, "net.peer.ip");
    let peer_port = take(&mut tags, "net.peer.port").and_then(|p| p.parse().ok());
    let remote = (peer.is_some() || peer_ip.is_some()).then(|| {
        (
            peer.unwrap_or_default(),
            peer_ip,
            peer_port.unwrap_or_default(),
        )
    });
    // Status: `error` only on ERROR (Zipkin fails any span that has it), and the code
    // and description unless unset.
    tags.retain(|(k, _)| k != "error");
    if let Some(status) = &span.status {
        match StatusCode::try_from(status.code).unwrap_or(StatusCode::Unset) {
            StatusCode::Error => {
                tags.push(("error".into(), "true".into()));
                tags.push(("otel.status_code".into(), "Error".into()));
            }
            StatusCode::Ok => tags.push(("otel.status_code".into(), "Ok".into())),
            StatusCode::Unset => {}
        }
        if status.code != 0 && !status.message.is_empty() {
            tags.push(("otel.status_description".into(), status.message.clone()));
        }
    }
    for (i, link) in span.links.iter().enumerate() {
        tags.push((
            format!("otlp.link.{i}"),
            format!(
                "{}|{}|{}|{}|{}",
                hex(&link.trace_id),
                hex(&link.span_id),
                link.trace_state,
                Json::Object(attributes_json(&link.attributes)),
                link.dropped_attributes_count
            ),
        ));
    }
    let annotations = span
        .events
        .iter()
        .map(|e| {
            let value = if e.attributes.is_empty() && e.dropped_attributes_count == 0 {
                e.name.clone()
            } else {
                format!(
                    "{}|{}|{}",
                    e.name,
                    Json::Object(attributes_json(&e.attributes)),
                    e.dropped_attributes_count
                )
            };
            (e.time_unix_nano / 1000, value)
        })
        .collect();
    let start = span.start_time_unix_nano;
    ZipkinSpan {
        trace_id: span.trace_id.clone(),
        id: span.span_id.clone(),
        parent_id: span.parent_span_id.clone(),
        name: span.name.clone(),
        kind,
        timestamp: if start < 1_000_000_000 {
            0
        } else {
            start / 1000
        },
        duration: span.end_time_unix_nano.saturating_sub(start) / 1000,
        local: (
            service.to_string(),
            local_ip,
            local_port.unwrap_or_default(),
        ),
        remote,
        annotations,
        tags,
    }
}

fn endpoint_json((service, ip, port): &(String, Option<String>, u16)) -> Json {
    let mut e = Map::new();
    if !service.is_empty() {
        e.insert("serviceName".into(), json!(service));
    }
    if let Some(ip) = ip {
        let key = if ip.contains(':') { "ipv6" } else { "ipv4" };
        e.insert(key.into(), json!(ip));
    }
    if *port > 0 {
        e.insert("port".into(), json!(port));
    }
    Json::Object(e)
}

/// Zipkin v2 JSON: a list of spans.
pub(crate) fn zipkin_json(req: &ExportTraceServiceRequest, unnamed: Option<&str>) -> Vec<u8> {
    let spans: Vec<Json> = zipkin_spans(req, unnamed)
        .into_iter()
        .map(|s| {
            let mut o = Map::new();
            o.insert("traceId".into(), json!(hex(&s.trace_id)));
            o.insert("id".into(), json!(hex(&s.id)));
            if !s.parent_id.is_empty() && s.parent_id.iter().any(|b| *b != 0) {
                o.insert("parentId".into(), json!(hex(&s.parent_id)));
            }
            o.insert("name".into(), json!(s.name));
            if let Some(kind) = s.kind {
                o.insert("kind".into(), json!(kind));
            }
            if s.timestamp > 0 {
                o.insert("timestamp".into(), json!(s.timestamp));
            }
            o.insert("duration".into(), json!(s.duration));
            o.insert("localEndpoint".into(), endpoint_json(&s.local));
            if let Some(r) = &s.remote {
                o.insert("remoteEndpoint".into(), endpoint_json(r));
            }
            if !s.annotations.is_empty() {
                let a: Vec<Json> = s
                    .annotations
                    .iter()
                    .map(|(ts, v)| json!({"timestamp": ts, "value": v}))
                    .collect();
                o.insert("annotations".into(), Json::Array(a));
            }
            if !s.tags.is_empty() {
                let tags: Map<String, Json> = s
                    .tags
                    .into_iter()
                    .map(|(k, v)| (k, Json::String(v)))
                    .collect();
                o.insert("tags".into(), Json::Object(tags));
            }
            Json::Object(o)
        })
        .collect();
    serde_json::to_vec(&spans).unwrap_or_else(|_| b"[]".to_vec())
}

fn endpoint_proto((service, ip, port): &(String, Option<String>, u16)) -> ProtoEndpoint {
    let mut e = ProtoEndpoint {
        service_name: service.clone(),
        port: i32::from(*port),
        ..ProtoEndpoint::default()
    };
    match ip.as_deref().map(str::parse::<std::net::IpAddr>) {
        Some(Ok(std::net::IpAddr::V4(v4))) => e.ipv4 = v4.octets().to_vec(),
        Some(Ok(std::net::IpAddr::V6(v6))) => e.ipv6 = v6.octets().to_vec(),
        _ => {}
    }
    e
}

/// Zipkin v2 protobuf: `ListOfSpans`.
pub(crate) fn zipkin_proto(req: &ExportTraceServiceRequest, unnamed: Option<&str>) -> Vec<u8> {
    let spans = zipkin_spans(req, unnamed)
        .into_iter()
        .map(|s| ProtoSpan {
            trace_id: s.trace_id,
            parent_id: if s.parent_id.iter().any(|b| *b != 0) {
                s.parent_id
            } else {
                Vec::new()
            },
            id: s.id,
            kind: match s.kind {
                Some("CLIENT") => 1,
                Some("SERVER") => 2,
                Some("PRODUCER") => 3,
                Some("CONSUMER") => 4,
                _ => 0,
            },
            name: s.name,
            timestamp: s.timestamp,
            duration: s.duration,
            local_endpoint: Some(endpoint_proto(&s.local)),
            remote_endpoint: s.remote.as_ref().map(endpoint_proto),
            annotations: s
                .annotations
                .into_iter()
                .map(|(timestamp, value)| ProtoAnnotation { timestamp, value })
                .collect(),
            tags: s.tags.into_iter().collect(),
            debug: false,
            shared: false,
        })
        .collect();
    prost::Message::encode_to_vec(&ListOfSpans { spans })
}

fn jkv(key: impl Into<String>, v: Option<&Value>) -> JKv {
    let mut kv = JKv {
        key: key.into(),
        ..JKv::default()
    };
    match v {
        Some(Value::BoolValue(b)) => {
            kv.v_type = 1;
            kv.v_bool = *b;
        }
        Some(Value::IntValue(i)) => {
            kv.v_type = 2;
            kv.v_int64 = *i;
        }
        Some(Value::DoubleValue(d)) => {
            kv.v_type = 3;
            kv.v_float64 = *d;
        }
        Some(Value::BytesValue(b)) => {
            kv.v_type = 4;
            kv.v_binary.clone_from(b);
        }
        Some(Value::StringValue(s)) => kv.v_str.clone_from(s),
        other => kv.v_str = json_of(other).to_string(),
    }
    kv
}

fn jstr(key: &str, v: &str) -> JKv {
    jkv(key, Some(&Value::StringValue(v.to_string())))
}

/// One `PostSpansRequest` for a whole OTLP request: the first resource is the batch's
/// process, spans of the others carry their own (Jaeger's span-level process).
pub(crate) fn jaeger(req: &ExportTraceServiceRequest, unnamed: Option<&str>) -> PostSpansRequest {
    let mut batch = JaegerBatch::default();
    for (r, rs) in req.resource_spans.iter().enumerate() {
        let attrs = rs
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        let mut process = Process {
            service_name: unnamed.unwrap_or(NO_SERVICE_NAME).into(),
            tags: Vec::new(),
        };
        for a in attrs {
            if a.key == "service.name" {
                process.service_name = text(a.value.as_ref());
            } else {
                process.tags.push(jkv(
                    a.key.clone(),
                    a.value.as_ref().and_then(|v| v.value.as_ref()),
                ));
            }
        }
        let own_process = if r == 0 {
            batch.process = Some(process);
            None
        } else {
            Some(process)
        };
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                let mut tags: Vec<JKv> = span
                    .attributes
                    .iter()
                    .map(|a| {
                        jkv(
                            a.key.clone(),
                            a.value.as_ref().and_then(|v| v.value.as_ref()),
                        )
                    })
                    .collect();
                if let Some(scope) = &ss.scope {
                    if !scope.name.is_empty() {
                        tags.push(jstr("otel.scope.name", &scope.name));
                    }
                    if !scope.version.is_empty() {
                        tags.push(jstr("otel.scope.version", &scope.version));
                    }
                }
                let kind = match SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified) {
                    SpanKind::Client => Some("client"),
                    SpanKind::Server => Some("server"),
                    SpanKind::Producer => Some("producer"),
                    SpanKind::Consumer => Some("consumer"),
                    SpanKind::Internal => Some("internal"),
                    SpanKind::Unspecified => None,
                };
                if let Some(kind) = kind {
                    tags.push(jstr("span.kind", kind));
                }
                if let Some(status) = &span.status {
                    match StatusCode::try_from(status.code).unwrap_or(StatusCode::Unset) {
                        StatusCode::Error => {
                            tags.push(jkv("error", Some(&Value::BoolValue(true))));
                            tags.push(jstr("otel.status_code", "ERROR"));
                        }
                        StatusCode::Ok => tags.push(jstr("otel.status_code", "OK")),
                        StatusCode::Unset => {}
                    }
                    if status.code != 0 && !status.message.is_empty() {
                        tags.push(jstr("otel.status_description", &status.message));
                    }
                }
                if !span.trace_state.is_empty() {
                    tags.push(jstr("w3c.tracestate", &span.trace_state));
                }
                let mut references = Vec::new();
                if !span.parent_span_id.is_empty() && span.parent_span_id.iter().any(|b| *b != 0) {
                    references.push(SpanRef {
                        trace_id: span.trace_id.clone(),
                        span_id: span.parent_span_id.clone(),
                        ref_type: 0,
                    });
                }
                references.extend(span.links.iter().map(|l| SpanRef {
                    trace_id: l.trace_id.clone(),
                    span_id: l.span_id.clone(),
                    ref_type: 1,
                }));
                let start = span.start_time_unix_nano;
                batch.spans.push(JaegerSpan {
                    trace_id: span.trace_id.clone(),
                    span_id: span.span_id.clone(),
                    operation_name: span.name.clone(),
                    references,
                    flags: 1,
                    start_time: Some(Timestamp::from_nanos(start)),
                    duration: Some(Timestamp::from_nanos(
                        span.end_time_unix_nano.saturating_sub(start),
                    )),
                    tags,
                    logs: span
                        .events
                        .iter()
                        .map(|e| Log {
                            timestamp: Some(Timestamp::from_nanos(e.time_unix_nano)),
                            fields: std::iter::once(jstr("event", &e.name))
                                .chain(e.attributes.iter().map(|a| {
                                    jkv(
                                        a.key.clone(),
                                        a.value.as_ref().and_then(|v| v.value.as_ref()),
                                    )
                                }))
                                .collect(),
                        })
                        .collect(),
                    process: own_process.clone(),
                    ..JaegerSpan::default()
                });
            }
        }
    }
    PostSpansRequest { batch: Some(batch) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otel_pipeline_core::proto::trace::v1::{Status, span::Event};

    fn request() -> ExportTraceServiceRequest {
        let mut req = otel_pipeline_core::testing::generate_traces(1, 2, 5);
        let spans = &mut req.resource_spans[0].scope_spans[0].spans;
        spans[1].parent_span_id = spans[0].span_id.clone();
        spans[1].kind = SpanKind::Client as i32;
        spans[1].status = Some(Status {
            code: StatusCode::Error as i32,
            message: "boom".into(),
        });
        let at = spans[1].start_time_unix_nano;
        spans[1].events.push(Event {
            name: "retry".into(),
            time_unix_nano: at,
            attributes: vec![KeyValue {
                key: "n".into(),
                value: Some(AnyValue {
                    value: Some(Value::IntValue(2)),
                }),
                ..KeyValue::default()
            }],
            dropped_attributes_count: 0,
        });
        req
    }

    #[test]
    fn zipkin_json_carries_kind_status_parent_and_events() {
        let body = zipkin_json(&request(), None);
        let spans: Vec<Json> = serde_json::from_slice(&body).unwrap();
        assert_eq!(spans.len(), 2);
        let child = &spans[1];
        assert_eq!(child["kind"], "CLIENT");
        assert_eq!(child["parentId"], spans[0]["id"]);
        assert_eq!(child["tags"]["error"], "true");
        assert_eq!(child["tags"]["otel.status_description"], "boom");
        assert_eq!(child["annotations"][0]["value"], "retry|{\"n\":2}|0");
        assert_eq!(child["traceId"].as_str().unwrap().len(), 32);
        assert!(child["localEndpoint"]["serviceName"].is_string());
    }

    #[test]
    fn jaeger_carries_references_status_and_logs() {
        let req = jaeger(&request(), None);
        let batch = req.batch.unwrap();
        assert!(batch.process.is_some());
        let child = &batch.spans[1];
        assert_eq!(child.references[0].span_id, batch.spans[0].span_id);
        assert!(child.tags.iter().any(|t| t.key == "error" && t.v_bool));
        assert!(
            child
                .tags
                .iter()
                .any(|t| t.key == "span.kind" && t.v_str == "client")
        );
        assert_eq!(child.logs[0].fields[0].v_str, "retry");
    }
}

//! Zipkin spans (v2 JSON and protobuf, v1 JSON) read into one model, and that model
//! translated to OTLP as the Collector's `zipkin` receiver does.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde::Deserialize;

/// A Zipkin span kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Kind {
    #[default]
    Unspecified,
    Client,
    Server,
    Producer,
    Consumer,
}

/// A host of a Zipkin span: its service and address.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Endpoint {
    pub(crate) service_name: String,
    pub(crate) ipv4: Option<Ipv4Addr>,
    pub(crate) ipv6: Option<Ipv6Addr>,
    pub(crate) port: u16,
}

/// One Zipkin span in the v2 model, whatever it arrived as.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ZSpan {
    pub(crate) trace_id: [u8; 16],
    /// The trace id had 64 bits (its high half is zero).
    pub(crate) trace_id_64: bool,
    pub(crate) id: [u8; 8],
    pub(crate) parent_id: Option<[u8; 8]>,
    pub(crate) name: String,
    pub(crate) kind: Kind,
    /// Microseconds since the epoch.
    pub(crate) timestamp: Option<u64>,
    /// Microseconds.
    pub(crate) duration: Option<u64>,
    pub(crate) local: Option<Endpoint>,
    pub(crate) remote: Option<Endpoint>,
    /// (microseconds, value)
    pub(crate) annotations: Vec<(u64, String)>,
    pub(crate) tags: BTreeMap<String, String>,
}

/// What the translation noticed and counted, by note.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Notes {
    /// Spans whose trace id had 64 bits.
    pub(crate) trace_id_64bit: usize,
    /// Spans that share their trace and span id with an earlier span of the request
    /// (Zipkin's shared client and server spans).
    pub(crate) duplicate_span_id: usize,
    /// Spans without a start time (set to the epoch, marked
    /// `otel.zipkin.absentField.startTime`).
    pub(crate) start_time_absent: usize,
    /// Span events and links whose encoded attributes did not parse (kept without them).
    pub(crate) unparsed_event_or_link: usize,
}

// ---------------------------------------------------------------------------------------
// IDs

fn hex_u64(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// A trace id of 1 to 32 hex digits (16 or 32 in practice): `(id, had 64 bits)`.
pub(crate) fn trace_id_hex(text: &str) -> Result<([u8; 16], bool), String> {
    let bad = || format!("traceId {text:?} is not 16 or 32 hex digits");
    if text.is_empty() || text.len() > 32 {
        return Err(bad());
    }
    let (high, low) = if text.len() > 16 {
        text.split_at(text.len() - 16)
    } else {
        ("", text)
    };
    let high = if high.is_empty() {
        0
    } else {
        hex_u64(high).ok_or_else(bad)?
    };
    let low = hex_u64(low).ok_or_else(bad)?;
    if high == 0 && low == 0 {
        return Err("traceId is zero".into());
    }
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&high.to_be_bytes());
    id[8..].copy_from_slice(&low.to_be_bytes());
    Ok((id, high == 0))
}

fn span_id_hex(field: &str, text: &str) -> Result<[u8; 8], String> {
    match hex_u64(text) {
        Some(0) => Err(format!("{field} is zero")),
        Some(v) => Ok(v.to_be_bytes()),
        None => Err(format!("{field} {text:?} is not 1 to 16 hex digits")),
    }
}

// ---------------------------------------------------------------------------------------
// v2 JSON

/// A tag or annotation value: strings as Zipkin says, but numbers and booleans, which
/// some clients send, are kept as their text instead of failing the request.
#[derive(Deserialize)]
#[serde(untagged)]
enum Text {
    S(String),
    B(bool),
    N(serde_json::Number),
}

impl Text {
    fn into_string(self) -> String {
        match self {
            Self::S(s) => s,
            Self::B(b) => b.to_string(),
            Self::N(n) => n.to_string(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonEndpoint {
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    ipv4: Option<String>,
    #[serde(default)]
    ipv6: Option<String>,
    #[serde(default)]
    port: Option<i64>,
}

impl JsonEndpoint {
    fn into_endpoint(self) -> Endpoint {
        Endpoint {
            service_name: self.service_name.unwrap_or_default().to_lowercase(),
            ipv4: self.ipv4.and_then(|s| s.parse().ok()),
            ipv6: self.ipv6.and_then(|s| s.parse().ok()),
            port: self
                .port
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or_default(),
        }
    }
}

#[derive(Deserialize)]
struct JsonAnnotation {
    #[serde(default)]
    timestamp: Option<f64>,
    #[serde(default)]
    value: Option<Text>,
    /// v1 only.
    #[serde(default)]
    endpoint: Option<JsonEndpoint>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonSpanV2 {
    trace_id: String,
    id: String,
    #[serde(default)]
    parent_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    timestamp: Option<f64>,
    #[serde(default)]
    duration: Option<f64>,
    #[serde(default, rename = "debug")]
    _debug: Option<bool>,
    #[serde(default, rename = "shared")]
    _shared: Option<bool>,
    #[serde(default)]
    local_endpoint: Option<JsonEndpoint>,
    #[serde(default)]
    remote_endpoint: Option<JsonEndpoint>,
    #[serde(default)]
    annotations: Vec<JsonAnnotation>,
    #[serde(default)]
    tags: BTreeMap<String, Text>,
}

/// A JSON list of at most `max` items, refused as soon as it holds one more: a request of
/// a million tiny spans is stopped at the limit, not materialized first.
struct Bounded<T> {
    max: usize,
    _t: std::marker::PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> serde::de::DeserializeSeed<'de> for Bounded<T> {
    type Value = Vec<T>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<T>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Bounded<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of spans")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element()? {
            if out.len() == self.max {
                return Err(serde::de::Error::custom(format!(
                    "{TOO_MANY} of {}",
                    self.max
                )));
            }
            out.push(item);
        }
        Ok(out)
    }
}

/// The start of the error for a request over the span limit.
pub(crate) const TOO_MANY: &str = "more spans than the limit";

fn bounded_json<T: for<'de> Deserialize<'de>>(body: &[u8], max: usize) -> Result<Vec<T>, String> {
    use serde::de::DeserializeSeed;
    let mut d = serde_json::Deserializer::from_slice(body);
    let out = Bounded {
        max,
        _t: std::marker::PhantomData,
    }
    .deserialize(&mut d)
    .map_err(|e| e.to_string())?;
    d.end().map_err(|e| e.to_string())?;
    Ok(out)
}

/// Microseconds from a JSON number; some clients send floats.
fn micros(v: Option<f64>) -> Option<u64> {
    v.filter(|v| v.is_finite() && *v > 0.0).map(|v| v as u64)
}

fn parent(text: Option<&str>) -> Result<Option<[u8; 8]>, String> {
    match text {
        None | Some("") => Ok(None),
        Some(t) => match hex_u64(t) {
            Some(0) => Ok(None),
            Some(v) => Ok(Some(v.to_be_bytes())),
            None => Err(format!("parentId {t:?} is not 1 to 16 hex digits")),
        },
    }
}

/// Zipkin v2 JSON: a list of spans.
pub(crate) fn parse_v2_json(body: &[u8], max: usize) -> Result<Vec<ZSpan>, String> {
    let spans: Vec<JsonSpanV2> = bounded_json(body, max)?;
    spans
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let at = |e: String| format!("span {i}: {e}");
            let (trace_id, trace_id_64) = trace_id_hex(&s.trace_id).map_err(at)?;
            let kind = match s.kind.as_deref().map(str::to_ascii_uppercase).as_deref() {
                Some("CLIENT") => Kind::Client,
                Some("SERVER") => Kind::Server,
                Some("PRODUCER") => Kind::Producer,
                Some("CONSUMER") => Kind::Consumer,
                None | Some("") => Kind::Unspecified,
                Some(other) => return Err(at(format!("unknown kind {other:?}"))),
            };
            Ok(ZSpan {
                trace_id,
                trace_id_64,
                id: span_id_hex("id", &s.id).map_err(at)?,
                parent_id: parent(s.parent_id.as_deref()).map_err(at)?,
                name: s.name.unwrap_or_default(),
                kind,
                timestamp: micros(s.timestamp),
                duration: micros(s.duration),
                local: s.local_endpoint.map(JsonEndpoint::into_endpoint),
                remote: s.remote_endpoint.map(JsonEndpoint::into_endpoint),
                annotations: s
                    .annotations
                    .into_iter()
                    .map(|a| {
                        (
                            micros(a.timestamp).unwrap_or_default(),
                            a.value.map(Text::into_string).unwrap_or_default(),
                        )
                    })
                    .collect(),
                tags: s
                    .tags
                    .into_iter()
                    .map(|(k, v)| (k, v.into_string()))
                    .collect(),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// v1 JSON

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonBinaryAnnotation {
    key: String,
    #[serde(default)]
    value: Option<Text>,
    #[serde(default)]
    endpoint: Option<JsonEndpoint>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonSpanV1 {
    trace_id: String,
    id: String,
    #[serde(default)]
    parent_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    timestamp: Option<f64>,
    #[serde(default)]
    duration: Option<f64>,
    #[serde(default, rename = "debug")]
    _debug: Option<bool>,
    #[serde(default)]
    annotations: Vec<JsonAnnotation>,
    #[serde(default)]
    binary_annotations: Vec<JsonBinaryAnnotation>,
}

/// Zipkin v1 JSON: a list of spans whose kind and hosts are told by their core
/// annotations (`cs`/`cr` client, `sr`/`ss` server, `ms` producer, `mr` consumer) and
/// binary annotations (`lc` local component, `ca`/`sa` client and server address).
pub(crate) fn parse_v1_json(body: &[u8], max: usize) -> Result<Vec<ZSpan>, String> {
    let spans: Vec<JsonSpanV1> = bounded_json(body, max)?;
    spans
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let at = |e: String| format!("span {i}: {e}");
            let (trace_id, trace_id_64) = trace_id_hex(&s.trace_id).map_err(at)?;
            let mut span = ZSpan {
                trace_id,
                trace_id_64,
                id: span_id_hex("id", &s.id).map_err(at)?,
                parent_id: parent(s.parent_id.as_deref()).map_err(at)?,
                name: s.name.unwrap_or_default(),
                timestamp: micros(s.timestamp),
                duration: micros(s.duration),
                ..ZSpan::default()
            };
            let mut core: BTreeMap<&'static str, (u64, Option<Endpoint>)> = BTreeMap::new();
            for a in s.annotations {
                let ts = micros(a.timestamp).unwrap_or_default();
                let value = a.value.map(Text::into_string).unwrap_or_default();
                let endpoint = a.endpoint.map(JsonEndpoint::into_endpoint);
                let key = match value.as_str() {
                    "cs" => "cs",
                    "cr" => "cr",
                    "sr" => "sr",
                    "ss" => "ss",
                    "ms" => "ms",
                    "mr" => "mr",
                    _ => {
                        if span.local.is_none() {
                            span.local = endpoint;
                        }
                        span.annotations.push((ts, value));
                        continue;
                    }
                };
                core.insert(key, (ts, endpoint));
            }
            let (kind, begin, end) = if core.contains_key("cs") || core.contains_key("cr") {
                (Kind::Client, "cs", "cr")
            } else if core.contains_key("sr") || core.contains_key("ss") {
                (Kind::Server, "sr", "ss")
            } else if core.contains_key("ms") {
                (Kind::Producer, "ms", "")
            } else if core.contains_key("mr") {
                (Kind::Consumer, "mr", "")
            } else {
                (Kind::Unspecified, "", "")
            };
            span.kind = kind;
            let begin = core.remove(begin);
            let end = core.remove(end);
            if let Some((ts, ep)) = begin.as_ref().or(end.as_ref()) {
                span.local = ep.clone().or(span.local);
                if span.timestamp.is_none() && begin.is_some() && *ts > 0 {
                    span.timestamp = Some(*ts);
                }
            }
            if let (Some((b, _)), Some((e, _)), None) = (&begin, &end, span.duration)
                && e >= b
            {
                span.duration = Some(e - b);
            }
            // The other side's core annotations of a shared span stay as events.
            for (name, (ts, _)) in core {
                span.annotations.push((ts, name.to_string()));
            }
            for b in s.binary_annotations {
                let endpoint = b.endpoint.map(JsonEndpoint::into_endpoint);
                match b.key.as_str() {
                    "ca" | "sa" | "ma" => {
                        if span.remote.is_none() {
                            span.remote = endpoint;
                        }
                    }
                    "lc" => {
                        if let Some(ep) = endpoint
                            && span.local.is_none()
                        {
                            span.local = Some(ep);
                        }
                        let value = b.value.map(Text::into_string).unwrap_or_default();
                        span.tags.insert("lc".into(), value);
                    }
                    _ => {
                        if span.local.is_none() {
                            span.local = endpoint;
                        }
                        let value = b.value.map(Text::into_string).unwrap_or_default();
                        span.tags.insert(b.key, value);
                    }
                }
            }
            Ok(span)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// v2 protobuf (zipkin.proto3)

#[cfg(test)]
use otel_pipeline_core::foreign::zipkin::ProtoSpan;
use otel_pipeline_core::foreign::zipkin::{ListOfSpans, ProtoEndpoint};

fn proto_endpoint(e: &ProtoEndpoint) -> Endpoint {
    Endpoint {
        service_name: e.service_name.to_lowercase(),
        ipv4: <[u8; 4]>::try_from(e.ipv4.as_slice())
            .ok()
            .map(Ipv4Addr::from),
        ipv6: <[u8; 16]>::try_from(e.ipv6.as_slice())
            .ok()
            .map(Ipv6Addr::from),
        port: u16::try_from(e.port).unwrap_or_default(),
    }
}

/// Zipkin v2 protobuf: `ListOfSpans`.
pub(crate) fn parse_v2_proto(body: &[u8], max: usize) -> Result<Vec<ZSpan>, String> {
    // Counted in the bytes first: a million two-byte spans would decode to hundreds of
    // bytes each before any check.
    let n = otel_pipeline_core::wire::fields(body)
        .filter(|(f, _)| *f == 1)
        .count();
    if n > max {
        return Err(format!("{TOO_MANY} of {max} ({n})"));
    }
    let list = <ListOfSpans as prost::Message>::decode(body).map_err(|e| e.to_string())?;
    list.spans
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let at = |e: &str| format!("span {i}: {e}");
            let (trace_id, trace_id_64) = match s.trace_id.len() {
                8 => {
                    let mut id = [0u8; 16];
                    id[8..].copy_from_slice(&s.trace_id);
                    (id, true)
                }
                16 => (
                    <[u8; 16]>::try_from(s.trace_id.as_slice()).unwrap_or_default(),
                    false,
                ),
                n => return Err(at(&format!("trace_id has {n} bytes, not 8 or 16"))),
            };
            if trace_id == [0; 16] {
                return Err(at("trace_id is zero"));
            }
            let id = <[u8; 8]>::try_from(s.id.as_slice())
                .ok()
                .filter(|id| *id != [0; 8])
                .ok_or_else(|| at("id is not 8 bytes, or is zero"))?;
            let parent_id = match s.parent_id.len() {
                0 => None,
                8 => <[u8; 8]>::try_from(s.parent_id.as_slice())
                    .ok()
                    .filter(|p| *p != [0; 8]),
                n => return Err(at(&format!("parent_id has {n} bytes, not 8"))),
            };
            let _ = (s.debug, s.shared);
            Ok(ZSpan {
                trace_id,
                trace_id_64,
                id,
                parent_id,
                name: s.name,
                kind: match s.kind {
                    1 => Kind::Client,
                    2 => Kind::Server,
                    3 => Kind::Producer,
                    4 => Kind::Consumer,
                    _ => Kind::Unspecified,
                },
                timestamp: (s.timestamp > 0).then_some(s.timestamp),
                duration: (s.duration > 0).then_some(s.duration),
                local: s.local_endpoint.as_ref().map(proto_endpoint),
                remote: s.remote_endpoint.as_ref().map(proto_endpoint),
                annotations: s
                    .annotations
                    .into_iter()
                    .map(|a| (a.timestamp, a.value))
                    .collect(),
                tags: s.tags.into_iter().collect(),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// To OTLP

/// The tag that says which resource attribute held the service name.
const SERVICE_NAME_SOURCE: &str = "otlp.service.name.source";
/// The attribute marking a span that arrived without a start time.
const START_TIME_ABSENT: &str = "otel.zipkin.absentField.startTime";

/// Tags that are resource attributes (the semantic conventions' resource attributes, and
/// OpenCensus's): moved from spans to their resource.
fn is_resource_key(key: &str) -> bool {
    const EXACT: &[&str] = &[
        "service.name",
        "service.namespace",
        "service.instance.id",
        "service.version",
        "deployment.environment",
        "deployment.environment.name",
        "faas.name",
        "faas.id",
        "faas.version",
        "faas.instance",
        "faas.max_memory",
        "opencensus.starttime",
        "opencensus.exporterversion",
        "opencensus.resourcetype",
    ];
    const PREFIXES: &[&str] = &[
        "telemetry.sdk.",
        "telemetry.auto.",
        "telemetry.distro.",
        "container.",
        "host.",
        "os.",
        "process.",
        "k8s.",
        "cloud.",
        "device.",
        "aws.ecs.",
        "aws.eks.",
        "aws.log.",
        "webengine.",
    ];
    EXACT.contains(&key) || PREFIXES.iter().any(|p| key.starts_with(p))
}

fn kv(key: impl Into<String>, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn str_kv(key: impl Into<String>, value: impl Into<String>) -> KeyValue {
    kv(key, Value::StringValue(value.into()))
}

/// A tag's value typed as the Collector's `parse_string_tags` does: integers, floats
/// with a fraction, `true`/`false`; anything else stays a string.
fn typed(value: &str) -> Value {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let unsigned = value.strip_prefix('-').unwrap_or(value);
    if digits(unsigned)
        && let Ok(i) = value.parse::<i64>()
    {
        return Value::IntValue(i);
    }
    if let Some((a, b)) = unsigned.split_once('.')
        && digits(a)
        && digits(b)
        && let Ok(f) = value.parse::<f64>()
    {
        return Value::DoubleValue(f);
    }
    match value {
        "true" => Value::BoolValue(true),
        "false" => Value::BoolValue(false),
        _ => Value::StringValue(value.to_string()),
    }
}

/// A JSON object of attributes as the Collector's Zipkin exporter encodes event and link
/// attributes: strings, numbers (integral ones as integers) and booleans.
fn json_attributes(text: &str) -> Option<Vec<KeyValue>> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
    Some(
        map.into_iter()
            .filter_map(|(k, v)| {
                let value = match v {
                    serde_json::Value::String(s) => Value::StringValue(s),
                    serde_json::Value::Bool(b) => Value::BoolValue(b),
                    serde_json::Value::Number(n) => match n.as_i64() {
                        Some(i) => Value::IntValue(i),
                        None => {
                            let f = n.as_f64()?;
                            if f.fract() == 0.0 && f.abs() < 9.0e15 {
                                Value::IntValue(f as i64)
                            } else {
                                Value::DoubleValue(f)
                            }
                        }
                    },
                    _ => return None,
                };
                Some(kv(k, value))
            })
            .collect(),
    )
}

/// `name|{attributes}|dropped`: the Collector's encoding of an event with attributes.
fn event(ts_us: u64, value: &str, notes: &mut Notes) -> Event {
    let mut event = Event {
        time_unix_nano: ts_us.saturating_mul(1000),
        ..Event::default()
    };
    let parts: Vec<&str> = value.split('|').collect();
    if parts.len() >= 3 {
        let json = parts[1..parts.len() - 1].join("|");
        let dropped = parts[parts.len() - 1].parse::<u32>();
        if let (Some(attrs), Ok(dropped)) = (json_attributes(&json), dropped) {
            event.name = parts[0].to_string();
            event.attributes = attrs;
            event.dropped_attributes_count = dropped;
            return event;
        }
        notes.unparsed_event_or_link += 1;
    }
    event.name = value.to_string();
    event
}

fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// `otlp.link.N`: `traceid|spanid|tracestate|{attributes}|dropped`.
fn link(value: &str) -> Option<Link> {
    let parts: Vec<&str> = value.split('|').collect();
    if parts.len() < 5 {
        return None;
    }
    let json = parts[3..parts.len() - 1].join("|");
    Some(Link {
        trace_id: hex_bytes::<16>(parts[0])?.to_vec(),
        span_id: hex_bytes::<8>(parts[1])?.to_vec(),
        trace_state: parts[2].to_string(),
        attributes: json_attributes(&json)?,
        dropped_attributes_count: parts[parts.len() - 1].parse().ok()?,
        flags: 0,
    })
}

fn status_code(text: &str) -> Option<StatusCode> {
    match text.to_ascii_uppercase().as_str() {
        "STATUS_CODE_UNSET" | "UNSET" => Some(StatusCode::Unset),
        "STATUS_CODE_OK" | "OK" => Some(StatusCode::Ok),
        "STATUS_CODE_ERROR" | "ERROR" => Some(StatusCode::Error),
        _ => None,
    }
}

fn ip_text(ep: &Endpoint) -> Option<String> {
    ep.ipv6
        .map(|ip| ip.to_string())
        .or_else(|| ep.ipv4.map(|ip| ip.to_string()))
}

/// Translate Zipkin spans to OTLP: one resource per local service (`service.name`, and
/// the resource attributes among the tags), one scope per `otel.library.name`, kinds,
/// `otel.status_code` and the `error` tag to status, annotations to events, endpoints to
/// `net.host.*`, `net.peer.*` and `peer.service`, the remaining tags to attributes
/// (typed when `parse_string_tags`).
pub(crate) fn to_otlp(
    spans: Vec<ZSpan>,
    parse_string_tags: bool,
    notes: &mut Notes,
) -> ExportTraceServiceRequest {
    // (service, scope name) -> (resource attributes, scope, spans), in the order first seen
    let mut groups: Vec<ResourceSpans> = Vec::new();
    let mut index: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    let mut seen: std::collections::HashSet<([u8; 16], [u8; 8])> =
        std::collections::HashSet::with_capacity(spans.len());
    for zspan in spans {
        let ZSpan {
            trace_id,
            trace_id_64,
            id,
            parent_id,
            name,
            kind,
            timestamp,
            duration,
            local,
            remote,
            annotations,
            mut tags,
        } = zspan;
        if trace_id_64 {
            notes.trace_id_64bit += 1;
        }
        if !seen.insert((trace_id, id)) {
            notes.duplicate_span_id += 1;
        }
        let service = local
            .as_ref()
            .map(|e| e.service_name.clone())
            .filter(|s| !s.is_empty());
        let scope_name = tags
            .remove("otel.library.name")
            .or_else(|| tags.remove("otel.scope.name"));
        let scope_version = tags
            .remove("otel.library.version")
            .or_else(|| tags.remove("otel.scope.version"));
        // The resource: the service name under its source key, and resource tags.
        let mut resource_attrs = Vec::new();
        let source = tags.remove(SERVICE_NAME_SOURCE);
        if let Some(service) = &service {
            let key = source
                .filter(|s| !s.is_empty())
                .unwrap_or("service.name".into());
            resource_attrs.push(str_kv(key, service.clone()));
        }
        let resource_keys: Vec<String> = tags
            .keys()
            .filter(|k| is_resource_key(k))
            .cloned()
            .collect();
        for k in resource_keys {
            if let Some(v) = tags.remove(&k)
                && !resource_attrs.iter().any(|a| a.key == k)
            {
                resource_attrs.push(str_kv(k, v));
            }
        }
        resource_attrs.sort_by(|a, b| a.key.cmp(&b.key));
        let mut span = Span {
            trace_id: trace_id.to_vec(),
            span_id: id.to_vec(),
            parent_span_id: parent_id
                .filter(|p| *p != id)
                .map(|p| p.to_vec())
                .unwrap_or_default(),
            trace_state: tags.remove("w3c.tracestate").unwrap_or_default(),
            name,
            ..Span::default()
        };
        span.kind = match kind {
            Kind::Client => SpanKind::Client,
            Kind::Server => SpanKind::Server,
            Kind::Producer => SpanKind::Producer,
            Kind::Consumer => SpanKind::Consumer,
            Kind::Unspecified => match tags.remove("span.kind").as_deref() {
                Some("internal") => SpanKind::Internal,
                _ => SpanKind::Unspecified,
            },
        } as i32;
        // Status: OTel's own tags first, then Zipkin's `error` tag. `error=true` is a flag
        // and goes; any other value is the error's message and stays as the attribute.
        let mut status = Status::default();
        if let Some(code) = tags.remove("otel.status_code") {
            status.code = status_code(&code).unwrap_or(StatusCode::Unset) as i32;
            if let Some(m) = tags.remove("otel.status_description") {
                status.message = m;
            }
        }
        match tags.get("error").map(String::as_str) {
            Some("true") => {
                status.code = StatusCode::Error as i32;
                tags.remove("error");
            }
            Some("false") => {}
            Some(message) => {
                status.code = StatusCode::Error as i32;
                if status.message.is_empty() {
                    status.message = message.to_string();
                }
            }
            None => {}
        }
        if status != Status::default() {
            span.status = Some(status);
        }
        for i in 0..128 {
            let Some(value) = tags.remove(&format!("otlp.link.{i}")) else {
                break;
            };
            match link(&value) {
                Some(l) => span.links.push(l),
                None => notes.unparsed_event_or_link += 1,
            }
        }
        let mut attrs: Vec<KeyValue> = tags
            .into_iter()
            .map(|(k, v)| {
                let value = if parse_string_tags {
                    typed(&v)
                } else {
                    Value::StringValue(v)
                };
                kv(k, value)
            })
            .collect();
        let mut put = |key: &str, value: Value| {
            attrs.retain(|a| a.key != key);
            attrs.push(kv(key, value));
        };
        if let Some(ep) = &local {
            if let Some(ip) = ip_text(ep) {
                put("net.host.ip", Value::StringValue(ip));
            }
            if ep.port > 0 {
                put("net.host.port", Value::IntValue(ep.port.into()));
            }
        }
        if let Some(ep) = &remote {
            if !ep.service_name.is_empty() {
                put("peer.service", Value::StringValue(ep.service_name.clone()));
            }
            if let Some(ip) = ip_text(ep) {
                put("net.peer.ip", Value::StringValue(ip));
            }
            if ep.port > 0 {
                put("net.peer.port", Value::IntValue(ep.port.into()));
            }
        }
        let duration_ns = duration.unwrap_or_default().saturating_mul(1000);
        match timestamp {
            Some(ts) => {
                span.start_time_unix_nano = ts.saturating_mul(1000);
                span.end_time_unix_nano = span.start_time_unix_nano.saturating_add(duration_ns);
            }
            None => {
                notes.start_time_absent += 1;
                span.start_time_unix_nano = 0;
                span.end_time_unix_nano = duration_ns;
                put(START_TIME_ABSENT, Value::BoolValue(true));
            }
        }
        span.attributes = attrs;
        span.events = annotations
            .iter()
            .map(|(ts, value)| event(*ts, value, notes))
            .collect();
        // Place the span in its resource and scope.
        let key = (
            service.clone().unwrap_or_default(),
            scope_name.clone().unwrap_or_default(),
        );
        let (r, s) = match index.get(&key) {
            Some(at) => *at,
            None => {
                let r = match index
                    .iter()
                    .find(|((svc, _), _)| *svc == key.0)
                    .map(|(_, (r, _))| *r)
                {
                    Some(r) => r,
                    None => {
                        groups.push(ResourceSpans {
                            resource: Some(Resource {
                                attributes: resource_attrs.clone(),
                                ..Resource::default()
                            }),
                            ..ResourceSpans::default()
                        });
                        groups.len() - 1
                    }
                };
                groups[r].scope_spans.push(ScopeSpans {
                    scope: scope_name.as_ref().map(|n| InstrumentationScope {
                        name: n.clone(),
                        version: scope_version.clone().unwrap_or_default(),
                        ..InstrumentationScope::default()
                    }),
                    ..ScopeSpans::default()
                });
                let s = groups[r].scope_spans.len() - 1;
                index.insert(key, (r, s));
                (r, s)
            }
        };
        // Resource tags of later spans of the same service join the resource.
        if let Some(res) = groups[r].resource.as_mut() {
            for a in resource_attrs {
                if !res.attributes.iter().any(|b| b.key == a.key) {
                    res.attributes.push(a);
                }
            }
        }
        groups[r].scope_spans[s].spans.push(span);
    }
    ExportTraceServiceRequest {
        resource_spans: groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
        span.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn ids_of_64_and_128_bits_and_malformed_ones() {
        let (id, short) = trace_id_hex("463ac35c9f6413ad").unwrap();
        assert!(short);
        assert_eq!(&id[..8], &[0; 8]);
        let (id, short) = trace_id_hex("5af7183fb1d4cf5f463ac35c9f6413ad").unwrap();
        assert!(!short);
        assert_eq!(id[0], 0x5a);
        assert!(trace_id_hex("").is_err());
        assert!(trace_id_hex("zz").is_err());
        assert!(trace_id_hex(&"a".repeat(33)).is_err());
        assert!(trace_id_hex("0000000000000000").is_err());
        assert!(span_id_hex("id", "0").is_err());
        assert!(span_id_hex("id", "12345678901234567").is_err());
        assert_eq!(span_id_hex("id", "1").unwrap(), [0, 0, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn a_v2_span_translates_as_the_collector_does() {
        let body = br#"[{
            "traceId": "5af7183fb1d4cf5f463ac35c9f6413ad", "id": "a2fb4a1d1a96d312",
            "parentId": "463ac35c9f6413ad", "name": "get /api", "kind": "CLIENT",
            "timestamp": 1700000000000000, "duration": 2500,
            "localEndpoint": {"serviceName": "Frontend", "ipv4": "10.0.0.1", "port": 8080},
            "remoteEndpoint": {"serviceName": "backend", "ipv6": "::1", "port": 9000},
            "annotations": [{"timestamp": 1700000000001000, "value": "wr"},
                            {"timestamp": 1700000000002000, "value": "retry|{\"n\":2,\"x\":1.5}|1"}],
            "tags": {"http.method": "GET", "http.status_code": "500", "error": "true",
                     "otel.library.name": "lib", "otel.library.version": "1.2",
                     "host.name": "box", "w3c.tracestate": "a=b", "count": 7}
        }]"#;
        let spans = parse_v2_json(body, usize::MAX).unwrap();
        let mut notes = Notes::default();
        let out = to_otlp(spans, true, &mut notes);
        assert_eq!(notes, Notes::default());
        let rs = &out.resource_spans[0];
        let res = &rs.resource.as_ref().unwrap().attributes;
        let keys: Vec<_> = res.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["host.name", "service.name"]);
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().unwrap().name, "lib");
        assert_eq!(ss.scope.as_ref().unwrap().version, "1.2");
        let span = &ss.spans[0];
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(span.trace_state, "a=b");
        assert_eq!(span.status.as_ref().unwrap().code, StatusCode::Error as i32);
        assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(
            span.end_time_unix_nano - span.start_time_unix_nano,
            2_500_000
        );
        assert_eq!(attr(span, "http.status_code"), Some(&Value::IntValue(500)));
        assert_eq!(attr(span, "count"), Some(&Value::IntValue(7)));
        assert_eq!(attr(span, "error"), None);
        assert_eq!(
            attr(span, "net.host.ip"),
            Some(&Value::StringValue("10.0.0.1".into()))
        );
        assert_eq!(attr(span, "net.peer.port"), Some(&Value::IntValue(9000)));
        assert_eq!(
            attr(span, "peer.service"),
            Some(&Value::StringValue("backend".into()))
        );
        assert_eq!(span.events.len(), 2);
        assert_eq!(span.events[1].name, "retry");
        assert_eq!(span.events[1].dropped_attributes_count, 1);
        assert_eq!(span.events[1].attributes.len(), 2);
        // Tags stay strings unless asked.
        let out = to_otlp(parse_v2_json(body, usize::MAX).unwrap(), false, &mut notes);
        let span = &out.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(
            attr(span, "http.status_code"),
            Some(&Value::StringValue("500".into()))
        );
    }

    #[test]
    fn error_messages_missing_times_short_ids_and_duplicates_are_noted() {
        let body = br#"[
            {"traceId": "463ac35c9f6413ad", "id": "1", "name": "a", "tags": {"error": "timeout"},
             "localEndpoint": {"serviceName": "svc"}},
            {"traceId": "463ac35c9f6413ad", "id": "1", "name": "b", "kind": "SERVER", "shared": true,
             "timestamp": 10, "localEndpoint": {"serviceName": "other"}},
            {"traceId": "463ac35c9f6413ad", "id": "2", "name": "c", "tags": {"span.kind": "internal"}}
        ]"#;
        let mut notes = Notes::default();
        let out = to_otlp(parse_v2_json(body, usize::MAX).unwrap(), false, &mut notes);
        assert_eq!(notes.trace_id_64bit, 3);
        assert_eq!(notes.duplicate_span_id, 1);
        assert_eq!(notes.start_time_absent, 2);
        assert_eq!(out.resource_spans.len(), 3);
        let a = &out.resource_spans[0].scope_spans[0].spans[0];
        let status = a.status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "timeout"));
        assert_eq!(
            attr(a, "error"),
            Some(&Value::StringValue("timeout".into()))
        );
        assert_eq!(attr(a, START_TIME_ABSENT), Some(&Value::BoolValue(true)));
        let c = &out.resource_spans[2];
        assert!(c.resource.as_ref().unwrap().attributes.is_empty());
        assert_eq!(c.scope_spans[0].spans[0].kind, SpanKind::Internal as i32);
    }

    #[test]
    fn malformed_requests_are_refused_with_the_reason() {
        for (body, want) in [
            (&br#"[{"traceId": "xyz", "id": "1"}]"#[..], "traceId"),
            (br#"[{"traceId": "1", "id": "0"}]"#, "id is zero"),
            (br#"[{"traceId": "1"}]"#, "missing field `id`"),
            (
                br#"[{"traceId": "1", "id": "2", "kind": "SIDEWAYS"}]"#,
                "unknown kind",
            ),
            (br#"{"not": "a list"}"#, "invalid type"),
        ] {
            let err = parse_v2_json(body, usize::MAX).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
        // The span limit stops a list as soon as it is passed, in either encoding.
        let many = format!("[{}]", [r#"{"traceId":"1","id":"1"}"#; 5].join(","));
        assert!(
            parse_v2_json(many.as_bytes(), 4)
                .unwrap_err()
                .contains(TOO_MANY)
        );
        assert_eq!(parse_v2_json(many.as_bytes(), 5).unwrap().len(), 5);
        let list: Vec<u8> = std::iter::repeat_n([0x0a, 0], 1000).flatten().collect();
        assert!(parse_v2_proto(&list, 999).unwrap_err().contains(TOO_MANY));
    }

    #[test]
    fn protobuf_spans_read_as_json_ones_do() {
        let mut tags = std::collections::HashMap::new();
        tags.insert("k".to_string(), "v".to_string());
        let list = ListOfSpans {
            spans: vec![ProtoSpan {
                trace_id: vec![1; 16],
                id: vec![2; 8],
                parent_id: vec![3; 8],
                kind: 2,
                name: "op".into(),
                timestamp: 1_000,
                duration: 5,
                local_endpoint: Some(ProtoEndpoint {
                    service_name: "svc".into(),
                    ipv4: vec![127, 0, 0, 1],
                    ..ProtoEndpoint::default()
                }),
                tags,
                ..ProtoSpan::default()
            }],
        };
        let spans = parse_v2_proto(&prost::Message::encode_to_vec(&list), usize::MAX).unwrap();
        assert_eq!(spans[0].kind, Kind::Server);
        assert_eq!(spans[0].trace_id, [1; 16]);
        assert_eq!(
            spans[0].local.as_ref().unwrap().ipv4,
            Some(Ipv4Addr::LOCALHOST)
        );
        let bad = ListOfSpans {
            spans: vec![ProtoSpan {
                trace_id: vec![1; 5],
                id: vec![2; 8],
                ..ProtoSpan::default()
            }],
        };
        assert!(parse_v2_proto(&prost::Message::encode_to_vec(&bad), usize::MAX).is_err());
        assert!(parse_v2_proto(&[0xff, 0xff], usize::MAX).is_err());
    }

    #[test]
    fn v1_spans_take_kind_and_hosts_from_their_annotations() {
        let body = br#"[{
            "traceId": "463ac35c9f6413ad", "id": "48485a3953bb6124", "name": "get",
            "annotations": [
                {"timestamp": 100, "value": "cs", "endpoint": {"serviceName": "web", "ipv4": "1.2.3.4"}},
                {"timestamp": 150, "value": "cache miss", "endpoint": {"serviceName": "web"}},
                {"timestamp": 300, "value": "cr", "endpoint": {"serviceName": "web"}}],
            "binaryAnnotations": [
                {"key": "http.path", "value": "/x", "endpoint": {"serviceName": "web"}},
                {"key": "sa", "value": true, "endpoint": {"serviceName": "db", "port": 5432}}]
        }]"#;
        let spans = parse_v1_json(body, usize::MAX).unwrap();
        let s = &spans[0];
        assert_eq!(s.kind, Kind::Client);
        assert_eq!(s.timestamp, Some(100));
        assert_eq!(s.duration, Some(200));
        assert_eq!(s.local.as_ref().unwrap().service_name, "web");
        assert_eq!(s.remote.as_ref().unwrap().port, 5432);
        assert_eq!(s.annotations, vec![(150, "cache miss".to_string())]);
        assert_eq!(s.tags.get("http.path").map(String::as_str), Some("/x"));
    }
}

//! Carriers: where headers live. Each implements `opentelemetry`'s `Extractor` (with
//! `get_all`, so repeated headers are combined or detected) and `Injector`.
//!
//! | carrier | extract | inject |
//! |---|---|---|
//! | `HashMap<String, String>` | `opentelemetry`'s own impl | same |
//! | `HeaderMapExtractor` / `HeaderMapInjector` (feature `http`) | every value of a repeated header | replaces |
//! | [`KafkaHeaders`] (`Vec<(String, Vec<u8>)>`) | case-insensitive, UTF-8 values only | **replaces** an existing key instead of appending a stale duplicate |
//! | [`SqsAttributes`] | case-sensitive map | within a member budget (10 by default); reports what did not fit |

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector};

/// Reads headers from an `http::HeaderMap`.
#[cfg(feature = "http")]
#[derive(Debug, Clone, Copy)]
pub struct HeaderMapExtractor<'a>(pub &'a http::HeaderMap);

#[cfg(feature = "http")]
impl Extractor for HeaderMapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }

    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let values: Vec<&str> = self
            .0
            .get_all(key)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then_some(values)
    }
}

/// Writes headers into an `http::HeaderMap`, replacing earlier values of the same name.
/// Names or values that HTTP cannot carry are skipped.
#[cfg(feature = "http")]
#[derive(Debug)]
pub struct HeaderMapInjector<'a>(pub &'a mut http::HeaderMap);

#[cfg(feature = "http")]
impl Injector for HeaderMapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Kafka-style record headers: an ordered list of `(name, bytes)` that may repeat names.
///
/// ```
/// use opentelemetry::propagation::Injector;
/// use otel_pipeline_core::propagation::carriers::KafkaHeaders;
/// let mut headers = vec![("traceparent".to_string(), b"stale".to_vec())];
/// KafkaHeaders(&mut headers).set("traceparent", "fresh".to_string());
/// assert_eq!(headers, vec![("traceparent".to_string(), b"fresh".to_vec())]);
/// ```
#[derive(Debug)]
pub struct KafkaHeaders<'a>(pub &'a mut Vec<(String, Vec<u8>)>);

/// Read-only view of Kafka-style headers.
#[derive(Debug, Clone, Copy)]
pub struct KafkaHeadersRef<'a>(pub &'a [(String, Vec<u8>)]);

fn kafka_get<'h>(headers: &'h [(String, Vec<u8>)], key: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

fn kafka_get_all<'h>(headers: &'h [(String, Vec<u8>)], key: &str) -> Option<Vec<&'h str>> {
    let values: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(key))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .collect();
    (!values.is_empty()).then_some(values)
}

impl Extractor for KafkaHeadersRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        kafka_get(self.0, key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }

    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        kafka_get_all(self.0, key)
    }
}

impl Extractor for KafkaHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        kafka_get(self.0, key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }

    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        kafka_get_all(self.0, key)
    }
}

impl Injector for KafkaHeaders<'_> {
    /// Replace every header named `key` (any case) with one new value, so a record that is
    /// re-produced does not carry both the old and the new context.
    fn set(&mut self, key: &str, value: String) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        self.0.push((key.to_string(), value.into_bytes()));
    }
}

/// SQS-style message attributes: a string map with a limit on how many attributes a
/// message may carry (10 on SQS). Injection keeps within the budget and records what it
/// had to leave out, so the caller can see that context did not fit.
///
/// ```
/// use std::collections::HashMap;
/// use opentelemetry::propagation::Injector;
/// use otel_pipeline_core::propagation::carriers::SqsAttributes;
/// let mut attrs: HashMap<String, String> = (0..9).map(|i| (format!("app{i}"), "x".into())).collect();
/// let mut carrier = SqsAttributes::new(&mut attrs);
/// carrier.set("traceparent", "00-...".into());
/// carrier.set("tracestate", "a=b".into());
/// assert_eq!(carrier.left_out(), ["tracestate"]);
/// ```
#[derive(Debug)]
pub struct SqsAttributes<'a> {
    attributes: &'a mut HashMap<String, String>,
    budget: usize,
    left_out: Vec<String>,
}

/// SQS's limit of message attributes.
pub const SQS_MAX_ATTRIBUTES: usize = 10;

impl<'a> SqsAttributes<'a> {
    /// A carrier with the SQS budget of 10 attributes.
    pub fn new(attributes: &'a mut HashMap<String, String>) -> Self {
        Self::with_budget(attributes, SQS_MAX_ATTRIBUTES)
    }

    /// A carrier with another budget.
    pub fn with_budget(attributes: &'a mut HashMap<String, String>, budget: usize) -> Self {
        Self {
            attributes,
            budget,
            left_out: Vec::new(),
        }
    }

    /// Keys that injection could not add because the budget was used up.
    pub fn left_out(&self) -> &[String] {
        &self.left_out
    }
}

impl Injector for SqsAttributes<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let Some(existing) = self.attributes.get_mut(key) {
            *existing = value;
        } else if self.attributes.len() < self.budget {
            self.attributes.insert(key.to_string(), value);
        } else {
            self.left_out.push(key.to_string());
        }
    }
}

impl Extractor for SqsAttributes<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.attributes.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagation::W3cTraceContextPropagator;
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn kafka_reinjection_replaces_instead_of_duplicating() {
        let p = W3cTraceContextPropagator::new();
        let mut headers = vec![
            (
                "TraceParent".to_string(),
                b"00-11111111111111111111111111111111-1111111111111111-01".to_vec(),
            ),
            ("key".to_string(), b"v".to_vec()),
        ];
        let cx = p.extract(&KafkaHeadersRef(&[(
            "traceparent".to_string(),
            TP.as_bytes().to_vec(),
        )]));
        p.inject_context(&cx, &mut KafkaHeaders(&mut headers));
        let tps: Vec<_> = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
            .collect();
        assert_eq!(tps.len(), 1);
        assert_eq!(tps[0].1, TP.as_bytes());
        // The consumer sees exactly one traceparent and extracts it.
        let cx = p.extract(&KafkaHeadersRef(&headers));
        assert!(cx.span().span_context().is_valid());
    }

    #[test]
    fn duplicate_kafka_headers_are_detected() {
        let headers = vec![
            ("traceparent".to_string(), TP.as_bytes().to_vec()),
            (
                "traceparent".to_string(),
                b"00-11111111111111111111111111111111-1111111111111111-01".to_vec(),
            ),
        ];
        let cx = W3cTraceContextPropagator::new().extract(&KafkaHeadersRef(&headers));
        assert!(
            !cx.span().span_context().is_valid(),
            "two different traceparents are ambiguous"
        );
        // Non-UTF-8 values are ignored, not mangled.
        let headers = vec![("traceparent".to_string(), vec![0xff, 0xfe])];
        assert_eq!(KafkaHeadersRef(&headers).get("traceparent"), None);
    }

    #[test]
    fn sqs_budget() {
        let mut attrs = HashMap::new();
        attrs.insert("traceparent".to_string(), "old".to_string());
        let mut carrier = SqsAttributes::with_budget(&mut attrs, 2);
        carrier.set("traceparent", "new".into());
        carrier.set("tracestate", "a=1".into());
        carrier.set("baggage", "b=2".into());
        assert_eq!(carrier.left_out(), ["baggage"]);
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs["traceparent"], "new");
    }

    #[cfg(feature = "http")]
    #[test]
    fn header_map_combines_repeated_headers() {
        use crate::propagation::w3c::parse_tracestate;
        let mut map = http::HeaderMap::new();
        map.append("tracestate", "a=1".parse().unwrap());
        map.append("tracestate", "b=2".parse().unwrap());
        let ex = HeaderMapExtractor(&map);
        let lines = ex.get_all("tracestate").unwrap();
        assert_eq!(parse_tracestate(&lines).unwrap().get("b"), Some("2"));
        let mut out = http::HeaderMap::new();
        HeaderMapInjector(&mut out).set("traceparent", TP.into());
        HeaderMapInjector(&mut out).set("bad name", "x".into());
        assert_eq!(out.len(), 1);
    }
}

//! The hand-off's wire form: how a draining gateway's buffered traces and decisions travel
//! to their new owners inside ordinary OTLP requests, and how the receiving sampler tells
//! them apart. A leaf of `tail_sampling`: the engine and the consumer import it.
//!
//! A handed-off `ResourceSpans` carries the resource attribute `otel_pipeline.handoff`:
//! - `spans`: spans of undecided traces. The receiver removes the attribute and buffers
//!   them like any others, merged with what it already holds of the trace.
//! - `sampled` / `not_sampled`: decisions. Each span stands for one decided trace (its
//!   trace id; nothing else is read) and is never exported: the receiver files the id in
//!   its decision cache, or decides a trace it buffers that way.
//!
//! Every gateway of a set runs the same sampler, so each understands the others. A
//! receiver that is not one of ours would export the decision spans as they are: point the
//! hand-off exporter only at gateways.

use otel_pipeline_core::ComponentTelemetry;
use otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline_core::proto::common::v1::{AnyValue, KeyValue, any_value};
use otel_pipeline_core::proto::resource::v1::Resource;
use otel_pipeline_core::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
use otel_pipeline_core::telemetry::Counter;

/// The resource attribute that marks handed-off data.
pub(crate) const KEY: &str = "otel_pipeline.handoff";

/// What a marked resource holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    Spans,
    Decision { keep: bool },
}

/// The marker on `resource`, if any. A marker with another value is left alone (and the
/// spans buffered as they are).
pub(crate) fn marker(resource: Option<&Resource>) -> Option<Marker> {
    let kv = resource?.attributes.iter().find(|kv| kv.key == KEY)?;
    match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => match s.as_str() {
            "spans" => Some(Marker::Spans),
            "sampled" => Some(Marker::Decision { keep: true }),
            "not_sampled" => Some(Marker::Decision { keep: false }),
            _ => None,
        },
        _ => None,
    }
}

/// Remove the marker from a resource (handed-off spans leave as they came).
pub(crate) fn unmark(resource: &mut Option<Resource>) {
    if let Some(r) = resource {
        r.attributes.retain(|kv| kv.key != KEY);
    }
}

fn mark_value(value: &str) -> KeyValue {
    KeyValue {
        key: KEY.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..KeyValue::default()
    }
}

/// Mark every resource of an outgoing request as handed-off spans.
pub(crate) fn mark_spans(req: &mut ExportTraceServiceRequest) {
    for rs in &mut req.resource_spans {
        rs.resource
            .get_or_insert_with(Resource::default)
            .attributes
            .push(mark_value("spans"));
    }
}

/// One request carrying decisions for `ids`, all `keep` or all not.
pub(crate) fn decisions(ids: &[u128], keep: bool) -> ExportTraceServiceRequest {
    let spans = ids
        .iter()
        .map(|id| {
            let bytes = id.to_be_bytes();
            Span {
                trace_id: bytes.to_vec(),
                // Any non-zero id; receivers that check span ids find a valid one.
                span_id: bytes[8..].iter().map(|b| b | 1).collect(),
                name: "otel_pipeline.handoff.decision".to_string(),
                ..Span::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![mark_value(if keep { "sampled" } else { "not_sampled" })],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            schema_url: String::new(),
        }],
    }
}

/// The hand-off's instruments (see `docs/telemetry.md`).
pub(crate) mod instruments {
    use otel_pipeline_core::telemetry::Instrument;

    pub(crate) const TRACES: Instrument = Instrument::counter(
        "otelcol_processor_tail_sampling_handoff_traces",
        "{traces}",
        "Undecided traces handed to their new owner at shutdown (`direction=sent`) or taken from a draining peer (`direction=received`).",
    );
    pub(crate) const SPANS: Instrument = Instrument::counter(
        "otelcol_processor_tail_sampling_handoff_spans",
        "{spans}",
        "Spans of the traces handed off, by direction.",
    );
    pub(crate) const BYTES: Instrument = Instrument::counter(
        "otelcol_processor_tail_sampling_handoff_bytes",
        "By",
        "OTLP-encoded bytes of the hand-off requests sent (spans and decisions).",
    );
    pub(crate) const DECISIONS: Instrument = Instrument::counter(
        "otelcol_processor_tail_sampling_handoff_decisions",
        "{traces}",
        "Decisions of already decided traces handed off, by direction.",
    );
    pub(crate) const FAILED: Instrument = Instrument::counter(
        "otelcol_processor_tail_sampling_handoff_failed_traces",
        "{traces}",
        "Traces a draining sampler could not hand off and decided itself.",
    );
    pub(crate) const UNTRUSTED: Instrument = Instrument::counter(
        "otelcol_processor_tail_sampling_handoff_untrusted_spans",
        "{spans}",
        "Spans under a hand-off marker from a client not in handoff.accept_from: the \
         marker decided nothing, the spans were sampled as any others.",
    );
}

/// The hand-off's counters, shared by the shards and the consumer.
#[derive(Debug)]
pub(crate) struct HandoffStats {
    pub(crate) sent_traces: Counter,
    pub(crate) sent_spans: Counter,
    pub(crate) sent_bytes: Counter,
    pub(crate) sent_decisions: Counter,
    pub(crate) received_traces: Counter,
    pub(crate) received_spans: Counter,
    pub(crate) received_decisions: Counter,
    pub(crate) failed_traces: Counter,
    /// Spans under a hand-off marker from a client not in `accept_from`.
    pub(crate) untrusted_spans: Counter,
}

impl HandoffStats {
    pub(crate) fn new(t: &ComponentTelemetry) -> Self {
        use instruments::*;
        let sent = [("direction", "sent")];
        let received = [("direction", "received")];
        Self {
            sent_traces: t.counter(&TRACES, &sent),
            sent_spans: t.counter(&SPANS, &sent),
            sent_bytes: t.counter(&BYTES, &[]),
            sent_decisions: t.counter(&DECISIONS, &sent),
            received_traces: t.counter(&TRACES, &received),
            received_spans: t.counter(&SPANS, &received),
            received_decisions: t.counter(&DECISIONS, &received),
            failed_traces: t.counter(&FAILED, &[]),
            untrusted_spans: t.counter(&UNTRUSTED, &[]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_round_trip_through_the_marker() {
        let req = decisions(&[1, u128::MAX], false);
        let rs = &req.resource_spans[0];
        assert_eq!(
            marker(rs.resource.as_ref()),
            Some(Marker::Decision { keep: false })
        );
        let spans = &rs.scope_spans[0].spans;
        assert_eq!(spans[0].trace_id, 1u128.to_be_bytes());
        assert!(spans.iter().all(|s| s.span_id.iter().any(|b| *b != 0)));
        let mut spans_req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans::default()],
        };
        mark_spans(&mut spans_req);
        let mut r = spans_req.resource_spans[0].resource.clone();
        assert_eq!(marker(r.as_ref()), Some(Marker::Spans));
        unmark(&mut r);
        assert_eq!(marker(r.as_ref()), None);
        assert!(r.is_some_and(|r| r.attributes.is_empty()));
    }
}

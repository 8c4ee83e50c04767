//! Sampling decisions that W3C trace flags cannot express.
//!
//! B3 has *debug* (force sampling) and *deferred* (no decision yet), and can carry a
//! decision with no ids at all (`b3: 0`); Jaeger has a debug flag. Folding these into W3C
//! flag bits loses them or corrupts other formats, so they travel as their own
//! [`SamplingState`] value in the [`Context`], next to the span context they came with.

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceId};

/// A sampling decision carried beside (or instead of) a span context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplingDecision {
    /// Sampled (`1`).
    Accept,
    /// Not sampled (`0`).
    Deny,
    /// Debug: sample and force through every sampler (`d`, `X-B3-Flags: 1`, Jaeger `0x02`).
    Debug,
    /// No decision yet: the receiver decides (B3 without a sampling field).
    Defer,
}

/// A [`SamplingDecision`] and the ids it belongs to, as stored in a [`Context`].
///
/// `Debug` is a decision for the whole trace and applies to every span of the same trace
/// id; the others describe one hop and apply only to the span they arrived with, so a
/// local child span injects its own sampled flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplingState {
    /// The decision.
    pub decision: SamplingDecision,
    /// The trace it belongs to (`None` for a decision that arrived without ids).
    pub trace_id: Option<TraceId>,
    /// The span it arrived with.
    pub span_id: Option<SpanId>,
}

impl SamplingState {
    /// Store `decision` for span context `sc` (or for no ids, if `sc` is invalid).
    pub fn attach(cx: &Context, decision: SamplingDecision, sc: Option<&SpanContext>) -> Context {
        let sc = sc.filter(|sc| sc.is_valid());
        cx.with_value(SamplingState {
            decision,
            trace_id: sc.map(|s| s.trace_id()),
            span_id: sc.map(|s| s.span_id()),
        })
    }

    /// The decision that applies to injecting `cx`, if one was stored that fits its span.
    pub fn for_injection(cx: &Context) -> Option<SamplingDecision> {
        let state = cx.get::<SamplingState>()?;
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return state.trace_id.is_none().then_some(state.decision);
        }
        match state.decision {
            SamplingDecision::Debug => {
                (state.trace_id == Some(sc.trace_id())).then_some(state.decision)
            }
            _ => (state.span_id == Some(sc.span_id()) && state.trace_id == Some(sc.trace_id()))
                .then_some(state.decision),
        }
    }
}

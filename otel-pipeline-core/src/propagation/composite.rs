//! [`CompositePropagator`]: several formats at once, with mismatches made visible.
//!
//! Extraction takes the span context from the **first** format (in configured order) that
//! yields a valid one, and lets every format add what else it carries (baggage, sampling
//! state). When another format also carries a valid span context with a **different trace
//! id**, the request crossed a hop that updated one format and not the other (a proxy, an
//! old client library): the composite counts a mismatch, calls the callback you gave it,
//! and records `otel_pipeline_propagation_mismatches` through the `opentelemetry` metrics
//! API. Injection writes every configured format.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::metrics::{Counter, Meter};
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceId};
use opentelemetry::{Context, KeyValue};

use super::{
    B3Encoding, B3Propagator, JaegerPropagator, W3cBaggagePropagator, W3cTraceContextPropagator,
};

/// Two formats in one request disagreeing on the trace id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The format whose context was used.
    pub chosen: Cow<'static, str>,
    /// Its trace id.
    pub chosen_trace_id: TraceId,
    /// The format that disagreed.
    pub other: Cow<'static, str>,
    /// The trace id it carried.
    pub other_trace_id: TraceId,
}

type Callback = Arc<dyn Fn(&Mismatch) + Send + Sync>;

struct Member {
    name: Cow<'static, str>,
    propagator: Box<dyn TextMapPropagator + Send + Sync>,
}

/// A propagator made of several, in priority order.
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::{Arc, Mutex};
/// use opentelemetry::propagation::TextMapPropagator;
/// use otel_pipeline_core::propagation::{B3Propagator, CompositePropagator, W3cTraceContextPropagator};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let log = Arc::clone(&seen);
/// let p = CompositePropagator::new()
///     .with("tracecontext", W3cTraceContextPropagator::new())
///     .with("b3", B3Propagator::single())
///     .on_mismatch(move |m| log.lock().unwrap().push(m.other.to_string()));
///
/// let mut h = HashMap::new();
/// h.insert("traceparent".to_string(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string());
/// h.insert("b3".to_string(), "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1".to_string());
/// let _cx = p.extract(&h);
/// assert_eq!(p.mismatches(), 1);
/// assert_eq!(*seen.lock().unwrap(), vec!["b3".to_string()]);
/// ```
pub struct CompositePropagator {
    members: Vec<Member>,
    fields: Vec<String>,
    mismatches: Arc<AtomicU64>,
    callback: Option<Callback>,
    counter: Counter<u64>,
}

/// A read handle on a [`CompositePropagator`]'s mismatch count that stays usable after the
/// propagator is given away (to `opentelemetry::global::set_text_map_propagator`).
///
/// ```
/// use std::collections::HashMap;
/// use opentelemetry::propagation::TextMapPropagator;
/// use otel_pipeline_core::propagation::CompositePropagator;
/// let p = CompositePropagator::w3c_and_b3();
/// let mismatches = p.mismatch_count();
/// // Given away, as `opentelemetry::global::set_text_map_propagator(p)` does.
/// let given: Box<dyn TextMapPropagator + Send + Sync> = Box::new(p);
/// let h = HashMap::from([
///     ("traceparent".to_string(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string()),
///     ("b3".to_string(), "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1".to_string()),
/// ]);
/// let _ = given.extract(&h);
/// assert_eq!(mismatches.get(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct MismatchCount(Arc<AtomicU64>);

impl MismatchCount {
    /// Mismatches seen so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for CompositePropagator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.members.iter().map(|m| m.name.as_ref()).collect();
        f.debug_struct("CompositePropagator")
            .field("formats", &names)
            .field("mismatches", &self.mismatches())
            .finish()
    }
}

impl Default for CompositePropagator {
    fn default() -> Self {
        Self::new()
    }
}

impl CompositePropagator {
    /// An empty composite. The mismatch counter is created on the global meter provider as
    /// it is now; use [`CompositePropagator::with_meter`] to choose another.
    pub fn new() -> Self {
        Self::with_meter(&opentelemetry::global::meter("otel-pipeline"))
    }

    /// An empty composite counting mismatches on `meter`.
    pub fn with_meter(meter: &Meter) -> Self {
        Self {
            members: Vec::new(),
            fields: Vec::new(),
            mismatches: Arc::new(AtomicU64::new(0)),
            callback: None,
            counter: meter
                .u64_counter("otel_pipeline_propagation_mismatches")
                .with_description(
                    "Requests whose trace-context formats carried different trace ids",
                )
                .build(),
        }
    }

    /// W3C Trace Context, then B3 (single `b3` header), plus W3C Baggage: the usual set
    /// for a service between W3C and Zipkin-instrumented peers. Extraction reads both B3
    /// forms; injection writes the single header. For peers that read only the
    /// multi-header `X-B3-*` form (the `opentelemetry-zipkin` default, and many older
    /// Zipkin libraries), use [`w3c_and_b3_with`](Self::w3c_and_b3_with).
    pub fn w3c_and_b3() -> Self {
        Self::w3c_and_b3_with(B3Encoding::Single)
    }

    /// W3C Trace Context, then B3 injected as `encoding` says (`Single`, `Multi` for the
    /// `X-B3-*` headers, or `SingleAndMulti`), plus W3C Baggage.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use opentelemetry::propagation::TextMapPropagator;
    /// use otel_pipeline_core::propagation::{B3Encoding, CompositePropagator};
    ///
    /// let legacy = CompositePropagator::w3c_and_b3_with(B3Encoding::Multi);
    /// let mut headers = HashMap::new();
    /// headers.insert("traceparent".to_string(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string());
    /// let cx = legacy.extract(&headers);
    /// let mut out = HashMap::new();
    /// legacy.inject_context(&cx, &mut out);
    /// assert_eq!(out["x-b3-traceid"], "0af7651916cd43dd8448eb211c80319c");
    /// assert!(!out.contains_key("b3"));
    /// ```
    pub fn w3c_and_b3_with(encoding: B3Encoding) -> Self {
        Self::new()
            .with("tracecontext", W3cTraceContextPropagator::new())
            .with("b3", B3Propagator::new(encoding))
            .with("baggage", W3cBaggagePropagator::new())
    }

    /// W3C Trace Context, B3, Jaeger and W3C Baggage.
    pub fn all_formats() -> Self {
        Self::w3c_and_b3().with("jaeger", JaegerPropagator::new())
    }

    /// Add a format, after those already added. `name` labels it in mismatch reports.
    pub fn with(
        mut self,
        name: impl Into<Cow<'static, str>>,
        propagator: impl TextMapPropagator + Send + Sync + 'static,
    ) -> Self {
        for field in propagator.fields() {
            if !self.fields.iter().any(|f| f == field) {
                self.fields.push(field.to_string());
            }
        }
        self.members.push(Member {
            name: name.into(),
            propagator: Box::new(propagator),
        });
        self
    }

    /// Call `f` for every mismatch.
    pub fn on_mismatch(mut self, f: impl Fn(&Mismatch) + Send + Sync + 'static) -> Self {
        self.callback = Some(Arc::new(f));
        self
    }

    /// Mismatches seen so far.
    pub fn mismatches(&self) -> u64 {
        self.mismatches.load(Ordering::Relaxed)
    }

    /// A handle that reads the mismatch count after the propagator is set globally.
    pub fn mismatch_count(&self) -> MismatchCount {
        MismatchCount(Arc::clone(&self.mismatches))
    }

    fn report(&self, m: &Mismatch) {
        self.mismatches.fetch_add(1, Ordering::Relaxed);
        self.counter.add(
            1,
            &[
                KeyValue::new("chosen", m.chosen.to_string()),
                KeyValue::new("other", m.other.to_string()),
            ],
        );
        if let Some(cb) = &self.callback {
            cb(m);
        }
    }
}

impl TextMapPropagator for CompositePropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        for m in &self.members {
            m.propagator.inject_context(cx, injector);
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let mut acc = cx.clone();
        let mut chosen: Option<(usize, SpanContext)> = None;
        for (i, m) in self.members.iter().enumerate() {
            let next = m.propagator.extract_with_context(&acc, extractor);
            let found = next.span().span_context().clone();
            let before = acc.span().span_context().clone();
            match &chosen {
                None => {
                    if found.is_valid() && found != before {
                        chosen = Some((i, found));
                    }
                    acc = next;
                }
                Some((first, sc)) => {
                    if found.is_valid() && found != *sc {
                        if found.trace_id() != sc.trace_id() {
                            self.report(&Mismatch {
                                chosen: self.members[*first].name.clone(),
                                chosen_trace_id: sc.trace_id(),
                                other: m.name.clone(),
                                other_trace_id: found.trace_id(),
                            });
                        }
                        // Keep what this format added (baggage, ...) but not its span.
                        acc = next.with_remote_span_context(sc.clone());
                    } else {
                        acc = next;
                    }
                }
            }
        }
        acc
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::baggage::BaggageExt;
    use std::collections::HashMap;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn h(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn first_valid_format_wins_and_all_are_injected() {
        let p = CompositePropagator::all_formats();
        // Only B3 present: B3 is used.
        let cx = p.extract(&h(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
        )]));
        assert_eq!(
            cx.span().span_context().trace_id(),
            TraceId::from_hex("80f198ee56343ba864fe8b2a57d3eff7").unwrap()
        );
        let mut out = HashMap::new();
        p.inject_context(&cx, &mut out);
        assert_eq!(
            out["traceparent"],
            "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01"
        );
        assert_eq!(
            out["b3"],
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"
        );
        assert_eq!(
            out["uber-trace-id"],
            "80f198ee56343ba864fe8b2a57d3eff7:e457b5a2e4d86bd1:0:1"
        );
        assert_eq!(p.mismatches(), 0);
    }

    #[test]
    fn agreeing_formats_are_not_a_mismatch_and_baggage_merges() {
        let p = CompositePropagator::all_formats();
        let cx = p.extract(&h(&[
            ("traceparent", TP),
            ("b3", "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1"),
            ("baggage", "a=1"),
            ("uberctx-b", "2"),
        ]));
        assert_eq!(p.mismatches(), 0);
        assert_eq!(cx.baggage().len(), 2);
        // Same trace, other span id (a hop updated one header): not a trace mismatch.
        let _ = p.extract(&h(&[
            ("traceparent", TP),
            ("b3", "0af7651916cd43dd8448eb211c80319c-1111111111111111-1"),
        ]));
        assert_eq!(p.mismatches(), 0);
    }

    #[test]
    fn mismatch_keeps_the_first_format_and_is_reported() {
        let p = CompositePropagator::w3c_and_b3();
        let cx = p.extract(&h(&[
            ("traceparent", TP),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d"),
        ]));
        assert_eq!(p.mismatches(), 1);
        assert_eq!(
            cx.span().span_context().trace_id(),
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap()
        );
        // The B3 debug decision belonged to the other trace: it does not leak into ours.
        let mut out = HashMap::new();
        p.inject_context(&cx, &mut out);
        assert_eq!(
            out["b3"],
            "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1"
        );
    }
}

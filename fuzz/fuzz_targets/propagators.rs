//! Every propagator's extract, on any header values: never panics, and what it extracts
//! injects into headers that extract to the same trace.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use otel_pipeline_core::propagation::{
    B3Propagator, CompositePropagator, JaegerPropagator, W3cBaggagePropagator,
    W3cTraceContextPropagator,
};

const HEADERS: [&str; 9] = [
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "uber-trace-id",
    "uberctx-user",
];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut carrier = HashMap::new();
    for (name, value) in HEADERS.iter().zip(text.split('\n')) {
        carrier.insert(name.to_string(), value.to_string());
    }
    let propagators: Vec<Box<dyn TextMapPropagator>> = vec![
        Box::new(W3cTraceContextPropagator::new()),
        Box::new(W3cBaggagePropagator::new()),
        Box::new(B3Propagator::single()),
        Box::new(B3Propagator::multi()),
        Box::new(JaegerPropagator::new()),
        Box::new(CompositePropagator::all_formats()),
    ];
    for p in &propagators {
        let cx = p.extract(&carrier);
        let mut out = HashMap::new();
        p.inject_context(&cx, &mut out);
        let again = p.extract(&out);
        assert_eq!(
            cx.span().span_context().trace_id(),
            again.span().span_context().trace_id()
        );
    }
});

//! Extract and inject for each format, ours against the reference implementations in the
//! same run: `opentelemetry_sdk`'s TraceContext and Baggage propagators and
//! `opentelemetry-zipkin`'s B3 propagator. Both sides use the same carriers.
//!
//! `cargo bench --bench propagation`

// The Zipkin propagator is deprecated with its exporter; it is still the reference B3.
#![allow(deprecated)]

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use otel_pipeline::propagation::carriers::{HeaderMapExtractor, HeaderMapInjector};
use otel_pipeline::propagation::w3c::parse_span_context;
use otel_pipeline::propagation::{
    B3Propagator, JaegerPropagator, W3cBaggagePropagator, W3cTraceContextPropagator,
};

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const TRACESTATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,vendor@sys=opaque";
const B3: &str = "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1";
const BAGGAGE: &str = "userId=alice,serverNode=DF%2028,isProduction=false,tenant=acme;source=edge";

fn hashmap(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn headermap(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (k, v) in pairs {
        map.append(*k, http::HeaderValue::from_static(v));
    }
    map
}

fn span_cx(state: TraceState) -> Context {
    Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").expect("hex"),
        SpanId::from_hex("b7ad6b7169203331").expect("hex"),
        TraceFlags::SAMPLED,
        true,
        state,
    ))
}

fn compare_extract(
    c: &mut Criterion,
    group: &str,
    ours: &dyn TextMapPropagator,
    reference: &dyn TextMapPropagator,
    pairs: &[(&'static str, &'static str)],
) {
    let map = hashmap(pairs);
    let hm = headermap(pairs);
    let mut g = c.benchmark_group(group);
    g.bench_function("ours/hashmap", |b| b.iter(|| ours.extract(black_box(&map))));
    g.bench_function("reference/hashmap", |b| {
        b.iter(|| reference.extract(black_box(&map)))
    });
    g.bench_function("ours/headermap", |b| {
        b.iter(|| ours.extract(&HeaderMapExtractor(black_box(&hm))))
    });
    g.bench_function("reference/headermap", |b| {
        b.iter(|| reference.extract(&HeaderMapExtractor(black_box(&hm))))
    });
    g.finish();
}

fn compare_inject(
    c: &mut Criterion,
    group: &str,
    ours: &dyn TextMapPropagator,
    reference: &dyn TextMapPropagator,
    cx: &Context,
) {
    let mut g = c.benchmark_group(group);
    g.bench_function("ours/hashmap", |b| {
        b.iter(|| {
            let mut out = HashMap::with_capacity(4);
            ours.inject_context(black_box(cx), &mut out);
            out
        })
    });
    g.bench_function("reference/hashmap", |b| {
        b.iter(|| {
            let mut out = HashMap::with_capacity(4);
            reference.inject_context(black_box(cx), &mut out);
            out
        })
    });
    g.bench_function("ours/headermap", |b| {
        b.iter(|| {
            let mut out = http::HeaderMap::with_capacity(4);
            ours.inject_context(black_box(cx), &mut HeaderMapInjector(&mut out));
            out
        })
    });
    g.bench_function("reference/headermap", |b| {
        b.iter(|| {
            let mut out = http::HeaderMap::with_capacity(4);
            reference.inject_context(black_box(cx), &mut HeaderMapInjector(&mut out));
            out
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let w3c = W3cTraceContextPropagator::new();
    let sdk = TraceContextPropagator::new();
    let b3 = B3Propagator::single();
    let zipkin = opentelemetry_zipkin::Propagator::new();
    let baggage = W3cBaggagePropagator::new();
    let sdk_baggage = BaggagePropagator::new();

    let mut g = c.benchmark_group("traceparent_parse");
    g.bench_function("ours/parse_span_context", |b| {
        b.iter(|| parse_span_context(black_box(TRACEPARENT)))
    });
    g.finish();

    compare_extract(
        c,
        "w3c_extract",
        &w3c,
        &sdk,
        &[("traceparent", TRACEPARENT)],
    );
    compare_extract(
        c,
        "w3c_extract_tracestate",
        &w3c,
        &sdk,
        &[("traceparent", TRACEPARENT), ("tracestate", TRACESTATE)],
    );
    compare_inject(c, "w3c_inject", &w3c, &sdk, &span_cx(TraceState::NONE));
    let state: TraceState = TRACESTATE.parse().expect("valid tracestate");
    compare_inject(c, "w3c_inject_tracestate", &w3c, &sdk, &span_cx(state));

    compare_extract(c, "b3_extract", &b3, &zipkin, &[("b3", B3)]);
    compare_inject(c, "b3_inject", &b3, &zipkin, &span_cx(TraceState::NONE));

    compare_extract(
        c,
        "baggage_extract",
        &baggage,
        &sdk_baggage,
        &[("baggage", BAGGAGE)],
    );
    let bag = Context::new().with_baggage([
        KeyValue::new("userId", "alice"),
        KeyValue::new("serverNode", "DF 28"),
        KeyValue::new("isProduction", "false"),
    ]);
    compare_inject(c, "baggage_inject", &baggage, &sdk_baggage, &bag);

    // Jaeger: no reference for this opentelemetry version (opentelemetry-jaeger-propagator
    // trails at 0.32); measured alone.
    let jaeger = JaegerPropagator::new().without_baggage();
    let map = hashmap(&[(
        "uber-trace-id",
        "0af7651916cd43dd8448eb211c80319c:b7ad6b7169203331:0:1",
    )]);
    let mut g = c.benchmark_group("jaeger");
    g.bench_function("ours/extract", |b| {
        b.iter(|| jaeger.extract(black_box(&map)))
    });
    let cx = span_cx(TraceState::NONE);
    g.bench_function("ours/inject", |b| {
        b.iter(|| {
            let mut out = HashMap::with_capacity(2);
            jaeger.inject_context(black_box(&cx), &mut out);
            out
        })
    });
    g.finish();
}

criterion_group!(propagation, benches);
criterion_main!(propagation);

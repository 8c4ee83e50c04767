//! Differential tests: our propagators against the reference implementations
//! (`opentelemetry_sdk`'s TraceContext and Baggage propagators, `opentelemetry-zipkin`'s B3
//! propagator) on generated valid headers. Where the references follow the spec, both must
//! give the same context; where they do not (they drop the W3C random flag, inject empty
//! `tracestate`, store B3 debug/deferred in W3C flag bits), the test compares only what the
//! spec fixes and the unit tests pin our behaviour.

// `opentelemetry-zipkin`'s propagator is deprecated together with its exporter, but it is
// still the reference B3 implementation for opentelemetry-rust.
#![allow(deprecated)]

use std::collections::HashMap;

use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use otel_pipeline_core::propagation::{
    B3Propagator, W3cBaggagePropagator, W3cTraceContextPropagator,
};
use otel_pipeline_core::testing::SplitMix64;

const CASES: usize = 2_000;

fn id_hex(rng: &mut SplitMix64, bytes: usize) -> String {
    loop {
        let raw: Vec<u8> = (0..bytes).map(|_| rng.next_u64() as u8).collect();
        if raw.iter().any(|b| *b != 0) {
            return raw.iter().map(|b| format!("{b:02x}")).collect();
        }
    }
}

fn pick<'a>(rng: &mut SplitMix64, from: &'a [&'a str]) -> &'a str {
    from[rng.below(from.len() as u64) as usize]
}

fn tracestate(rng: &mut SplitMix64) -> String {
    let n = rng.below(6) as usize;
    let mut keys = Vec::new();
    while keys.len() < n {
        let key = format!(
            "{}{}",
            pick(rng, &["rojo", "congo", "vendor", "t1", "a_b"]),
            rng.below(100)
        );
        let key = if rng.below(4) == 0 {
            format!("{key}@sys")
        } else {
            key
        };
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.iter()
        .map(|k| {
            format!(
                "{k}={}",
                pick(rng, &["00f067aa0ba902b7", "t61rcWkgMzE", "x:y;z", "1"])
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn carrier(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sc(cx: &opentelemetry::Context) -> SpanContext {
    cx.span().span_context().clone()
}

#[test]
fn w3c_trace_context_agrees_with_the_sdk() {
    let ours = W3cTraceContextPropagator::new();
    let reference = TraceContextPropagator::new();
    let mut rng = SplitMix64::new(1);
    for _ in 0..CASES {
        let flags = pick(&mut rng, &["00", "01", "02", "03"]);
        let traceparent = format!(
            "00-{}-{}-{flags}",
            id_hex(&mut rng, 16),
            id_hex(&mut rng, 8)
        );
        let state = tracestate(&mut rng);
        let mut pairs = vec![("traceparent", traceparent.as_str())];
        if !state.is_empty() {
            pairs.push(("tracestate", state.as_str()));
        }
        let headers = carrier(&pairs);
        let (a, b) = (
            sc(&ours.extract(&headers)),
            sc(&reference.extract(&headers)),
        );
        assert!(a.is_valid() && b.is_valid(), "{headers:?}");
        assert_eq!(a.trace_id(), b.trace_id());
        assert_eq!(a.span_id(), b.span_id());
        assert_eq!(a.is_sampled(), b.is_sampled());
        assert_eq!(a.is_remote(), b.is_remote());
        assert_eq!(
            a.trace_state().header(),
            b.trace_state().header(),
            "{state}"
        );
        // We keep every flag bit; the SDK keeps only `sampled`.
        assert_eq!(format!("{:02x}", a.trace_flags()), flags);

        // Injecting the same context gives the same traceparent where the flags are ones
        // the SDK keeps, and the same tracestate where there is one.
        let cx = opentelemetry::Context::new().with_remote_span_context(b.clone());
        let (mut out_a, mut out_b) = (HashMap::new(), HashMap::new());
        ours.inject_context(&cx, &mut out_a);
        reference.inject_context(&cx, &mut out_b);
        assert_eq!(out_a["traceparent"], out_b["traceparent"]);
        match out_a.get("tracestate") {
            Some(s) => assert_eq!(Some(s), out_b.get("tracestate")),
            None => assert_eq!(
                out_b.get("tracestate").map(String::as_str),
                Some(""),
                "SDK sends it empty"
            ),
        }
    }
}

#[test]
fn w3c_baggage_agrees_with_the_sdk_both_ways() {
    let ours = W3cBaggagePropagator::new();
    let reference = BaggagePropagator::new();
    let mut rng = SplitMix64::new(2);
    let values = [
        "alice", "a b", "100%", "x=y", "ünï", "c,d;e", "tab\tq", "\"q\"",
    ];
    for _ in 0..CASES {
        let n = 1 + rng.below(5) as usize;
        let mut expected: HashMap<String, String> = HashMap::new();
        while expected.len() < n {
            let key = format!(
                "{}{}",
                pick(&mut rng, &["user", "tenant", "k", "x-id"]),
                rng.below(1000)
            );
            expected.insert(key, pick(&mut rng, &values).to_string());
        }
        let cx = opentelemetry::Context::new().with_baggage(
            expected
                .iter()
                .map(|(k, v)| opentelemetry::KeyValue::new(k.clone(), v.clone())),
        );
        // Ours injects, the SDK extracts; the SDK injects, ours extracts.
        for (inject, extract) in [
            (
                &ours as &dyn TextMapPropagator,
                &reference as &dyn TextMapPropagator,
            ),
            (
                &reference as &dyn TextMapPropagator,
                &ours as &dyn TextMapPropagator,
            ),
        ] {
            let mut wire = HashMap::new();
            inject.inject_context(&cx, &mut wire);
            let got: HashMap<String, String> = extract
                .extract(&wire)
                .baggage()
                .iter()
                .map(|(k, (v, _))| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(got, expected, "{wire:?}");
        }
    }
}

#[test]
fn b3_agrees_with_zipkin_on_ids_and_sampling() {
    use opentelemetry_zipkin::{B3Encoding, Propagator};
    let ours = B3Propagator::single();
    let reference = Propagator::with_encoding(B3Encoding::SingleAndMultiHeader);
    let mut rng = SplitMix64::new(3);
    for i in 0..CASES {
        let trace = if i % 3 == 0 {
            id_hex(&mut rng, 8)
        } else {
            id_hex(&mut rng, 16)
        };
        let span = id_hex(&mut rng, 8);
        let sampled = pick(&mut rng, &["0", "1"]);
        let headers = if i % 2 == 0 {
            carrier(&[("b3", &format!("{trace}-{span}-{sampled}"))])
        } else {
            carrier(&[
                ("x-b3-traceid", &trace),
                ("x-b3-spanid", &span),
                ("x-b3-sampled", sampled),
            ])
        };
        let (a, b) = (
            sc(&ours.extract(&headers)),
            sc(&reference.extract(&headers)),
        );
        assert!(a.is_valid() && b.is_valid(), "{headers:?}");
        assert_eq!(
            (a.trace_id(), a.span_id(), a.is_sampled()),
            (b.trace_id(), b.span_id(), b.is_sampled())
        );
        // And what we inject, Zipkin reads back the same.
        let mut wire = HashMap::new();
        ours.inject_context(
            &opentelemetry::Context::new().with_remote_span_context(a.clone()),
            &mut wire,
        );
        let c = sc(&reference.extract(&wire));
        assert_eq!(
            (c.trace_id(), c.span_id(), c.is_sampled()),
            (a.trace_id(), a.span_id(), a.is_sampled())
        );
    }
}

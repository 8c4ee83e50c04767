//! Parsing a valid `traceparent` (no `tracestate`) into a `SpanContext` allocates nothing.
//! Its own test binary, so no other test's allocations land in the count.

use std::alloc::System;

use otel_pipeline_core::propagation::w3c::{parse_span_context, parse_traceparent};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn parsing_a_traceparent_does_not_allocate() {
    let headers = [
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03",
        " cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future ",
    ];
    // Warm up anything lazily initialised.
    let _ = parse_span_context(headers[0]);
    let region = Region::new(GLOBAL);
    let mut valid = 0;
    for _ in 0..1000 {
        for h in headers {
            let sc = parse_span_context(std::hint::black_box(h)).expect("valid");
            valid += usize::from(sc.is_valid());
            let _ = parse_traceparent(std::hint::black_box(h)).expect("valid");
        }
    }
    let change = region.change();
    assert_eq!(valid, 3000);
    assert_eq!(change.allocations, 0, "{change:?}");
    assert_eq!(change.reallocations, 0, "{change:?}");

    // The counter does see allocations (the test can fail).
    let region = Region::new(GLOBAL);
    let v: Vec<u8> = std::hint::black_box(vec![1, 2, 3]);
    assert!(region.change().allocations >= 1);
    drop(v);
}

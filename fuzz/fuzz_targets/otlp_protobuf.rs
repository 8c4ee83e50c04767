//! OTLP protobuf as the receivers take it in: any bytes decode or fail, never panic; what
//! decodes re-encodes to bytes that decode to the same message. The schema check that
//! lets trace requests pass through as bytes (ADR 005) agrees with prost: what it accepts
//! decodes, with the span count it gave, and what prost decodes it accepts (groups and
//! nesting past 90 aside);
//! the byte cuts of an accepted request decode to the decoded cuts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline_core::{Signal, Traces, wire};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let decoded = ExportTraceServiceRequest::decode(data);
    if let Ok(req) = &decoded {
        let again = ExportTraceServiceRequest::decode(req.encode_to_vec().as_slice())
            .expect("a re-encoded message decodes");
        assert_eq!(req, &again);
    }
    match (wire::check_traces(data), decoded) {
        (Ok(n), Ok(req)) => {
            assert_eq!(n, Traces::item_count(&req));
            let cut = n / 2;
            let (front, rest) = wire::split_front_traces(data, cut);
            let mut want_rest = req.clone();
            let want_front = Traces::split_front(&mut want_rest, cut);
            let front = ExportTraceServiceRequest::decode(&front[..]).expect("front decodes");
            let rest = ExportTraceServiceRequest::decode(&rest[..]).expect("rest decodes");
            // Empty resources and scopes may go either way; the spans may not.
            assert_eq!(Traces::item_count(&front), Traces::item_count(&want_front));
            assert_eq!(Traces::item_count(&rest), Traces::item_count(&want_rest));
            let parts = wire::split_traces(data, 3, |id, _| id.first().map_or(0, |b| *b as usize % 3));
            let total: usize = parts
                .iter()
                .map(|(_, p, count)| {
                    let got = wire::check_traces(p).expect("a part passes the check");
                    assert_eq!(got, *count);
                    got
                })
                .sum();
            assert_eq!(total, n);
        }
        (Err(_), Err(_)) => {}
        (Ok(_), Err(e)) => panic!("checked bytes that prost refuses: {e}"),
        // Stricter than prost on purpose: unknown groups, and nesting past 90.
        (Err(e), Ok(_)) => assert!(
            e.to_string().contains("unsupported wire type")
                || e.to_string().contains("nested deeper"),
            "refused bytes that prost decodes: {e}"
        ),
    }
});

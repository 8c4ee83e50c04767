//! OTLP/JSON as the HTTP receiver decodes it (opentelemetry-proto's serde): any text parses
//! or fails, never panics; what parses serializes and parses back to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<ExportTraceServiceRequest>(data)
        && let Ok(text) = serde_json::to_vec(&req)
    {
        let again: ExportTraceServiceRequest =
            serde_json::from_slice(&text).expect("our own JSON parses");
        assert_eq!(req, again);
    }
});

//! OTLP protobuf as the receivers decode it: any bytes decode or fail, never panic; what
//! decodes re-encodes to bytes that decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = ExportTraceServiceRequest::decode(data) {
        let again = ExportTraceServiceRequest::decode(req.encode_to_vec().as_slice())
            .expect("a re-encoded message decodes");
        assert_eq!(req, again);
    }
});

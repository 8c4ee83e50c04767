//! The differential of every reader of client bytes against prost (issue 26): for any
//! request `check_traces` accepts, the trace id, span summary, attribute reads, resource
//! and scope heads, splits, pack and unpack and the fast span decoder must each give what
//! prost's decode gives. A difference is a crash, with the input kept.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otel_processors::tail_sampling::internals::check_readers;

fuzz_target!(|data: &[u8]| {
    if let Err(difference) = check_readers(data) {
        panic!("a byte reader differs from prost: {difference}");
    }
});

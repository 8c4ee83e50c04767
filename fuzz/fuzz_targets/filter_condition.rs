//! The filter processor's condition language on any text: parses or names the column of
//! its error, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otel_processors::condition::Condition;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Condition::parse(text);
    }
});

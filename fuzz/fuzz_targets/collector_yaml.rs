//! The Collector-YAML loader on any text: loads or names an error, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otel_pipeline_core::collector::{CollectorConfig, ConfigFile, Registry};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let mut registry = Registry::new();
    otel_processors::collector::register(&mut registry);
    let files = [ConfigFile::new("fuzz.yaml", text)];
    let _ = CollectorConfig::load(
        &files,
        |name| (name == "HOME").then(|| "/root".to_string()),
        &registry,
    );
});

//! This crate's processors for the YAML loader: `memory_limiter`, `batch`, `filter`,
//! `attributes`, `redaction` and `tail_sampling`, each configured by its Collector section.
//!
//! ```
//! let mut registry = otel_pipeline_core::collector::Registry::new();
//! otel_processors::collector::register(&mut registry);
//! assert_eq!(registry.processor_kinds().count(), 6);
//! ```

use otel_pipeline_core::Traces;
use otel_pipeline_core::boxed::BoxProcessor;
use otel_pipeline_core::collector::{ProcessorFactory, Registry, Section};
use otel_pipeline_core::config::ConfigError;

use crate::{
    AttributeRedactor, AttributesConfig, BatchConfig, BatchProcessor, FilterConfig,
    FilterProcessor, MemoryLimiter, MemoryLimiterConfig, RedactionConfig, TailSampler,
    TailSamplingConfig,
};

/// Add this crate's processors to `registry`.
pub fn register(registry: &mut Registry) {
    registry
        .processor(TracesOnly("memory_limiter", |s| {
            let c: MemoryLimiterConfig = s.deserialize()?;
            Ok(Box::new(MemoryLimiter::new(c).with_id(s.id().clone())))
        }))
        .processor(TracesOnly("batch", |s| {
            let c: BatchConfig = s.deserialize()?;
            Ok(Box::new(BatchProcessor::new(c).with_id(s.id().clone())))
        }))
        .processor(TracesOnly("filter", |s| {
            let c: FilterConfig = s.deserialize()?;
            Ok(Box::new(FilterProcessor::new(c).with_id(s.id().clone())))
        }))
        .processor(TracesOnly("attributes", |s| {
            let c: AttributesConfig = s.deserialize()?;
            Ok(Box::new(
                AttributeRedactor::attributes(c).with_id(s.id().clone()),
            ))
        }))
        .processor(TracesOnly("redaction", |s| {
            let c: RedactionConfig = s.deserialize()?;
            Ok(Box::new(
                AttributeRedactor::redaction(c).with_id(s.id().clone()),
            ))
        }))
        .processor(TracesOnly("tail_sampling", |s| {
            let c: TailSamplingConfig = s.deserialize()?;
            Ok(Box::new(TailSampler::new(c).with_id(s.id().clone())))
        }));
}

type MakeTraces = fn(&Section<'_>) -> Result<BoxProcessor<Traces>, ConfigError>;

/// A processor type that handles traces only (today's processors; metrics and logs are
/// the API issue's).
struct TracesOnly(&'static str, MakeTraces);

impl ProcessorFactory for TracesOnly {
    fn kind(&self) -> &'static str {
        self.0
    }

    fn traces(&self, section: &Section<'_>) -> Option<Result<BoxProcessor<Traces>, ConfigError>> {
        Some((self.1)(section))
    }
}

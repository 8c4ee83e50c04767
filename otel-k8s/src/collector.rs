//! This crate's components for the YAML loader: the `k8sattributes` processor.
//!
//! ```
//! let mut registry = otel_pipeline_core::collector::Registry::new();
//! otel_k8s::collector::register(&mut registry);
//! assert!(registry.processor_kinds().any(|k| k == "k8sattributes"));
//! ```

use otel_pipeline_core::Traces;
use otel_pipeline_core::boxed::BoxProcessor;
use otel_pipeline_core::collector::{ProcessorFactory, Registry, Section};
use otel_pipeline_core::config::ConfigError;

use crate::{K8sAttributes, K8sAttributesConfig};

/// Add this crate's components to `registry`.
pub fn register(registry: &mut Registry) {
    registry.processor(K8sAttributesFactory);
}

struct K8sAttributesFactory;

impl ProcessorFactory for K8sAttributesFactory {
    fn kind(&self) -> &'static str {
        "k8sattributes"
    }

    fn traces(&self, section: &Section<'_>) -> Option<Result<BoxProcessor<Traces>, ConfigError>> {
        Some(section.deserialize::<K8sAttributesConfig>().map(|c| {
            Box::new(K8sAttributes::new(c).with_id(section.id().clone())) as BoxProcessor<Traces>
        }))
    }
}

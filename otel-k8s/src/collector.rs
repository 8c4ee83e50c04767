//! This crate's components for the YAML loader: the `k8sattributes` processor, and the
//! `loadbalancing` exporter with `resolver.k8s` working (it replaces the exporters crate's
//! factory, which refuses `resolver.k8s` without a Kubernetes resolver).
//!
//! ```
//! let mut registry = otel_pipeline_core::collector::Registry::new();
//! otel_k8s::collector::register(&mut registry);
//! assert!(registry.processor_kinds().any(|k| k == "k8sattributes"));
//! ```

use otel_pipeline_core::boxed::BoxProcessor;
use otel_pipeline_core::collector::{ProcessorFactory, Registry, Section};
use otel_pipeline_core::config::ConfigError;
use otel_pipeline_core::{Logs, Metrics, Traces};

use crate::{K8sAttributes, K8sAttributesConfig};

/// Add this crate's components to `registry`.
pub fn register(registry: &mut Registry) {
    registry.processor(K8sAttributesFactory);
    registry.exporter(LoadBalancingFactory);
}

struct LoadBalancingFactory;

impl otel_pipeline_core::collector::ExporterFactory for LoadBalancingFactory {
    fn kind(&self) -> &'static str {
        "loadbalancing"
    }

    fn traces(
        &self,
        section: &Section<'_>,
    ) -> Option<Result<otel_pipeline_core::boxed::BoxExporter<Traces>, ConfigError>> {
        use otel_exporters::loadbalancing::{ResolverConfig, TraceRouter};
        let built = otel_exporters::collector::trace_router_config(section).map(|c| {
            let resolver = match &c.resolver {
                ResolverConfig::K8s { service, ports, .. } => Some(std::sync::Arc::new(
                    crate::K8sResolver::new(service, ports.clone()),
                )),
                _ => None,
            };
            let mut router = TraceRouter::new(c).with_id(section.id().clone());
            if let Some(r) = resolver {
                router = router.with_resolver(r);
            }
            Box::new(router) as otel_pipeline_core::boxed::BoxExporter<Traces>
        });
        Some(built)
    }

    fn metrics(
        &self,
        section: &Section<'_>,
    ) -> Option<Result<otel_pipeline_core::boxed::BoxExporter<Metrics>, ConfigError>> {
        Some(k8s_resolver(section).and_then(|r| otel_exporters::collector::key_router(section, r)))
    }

    fn logs(
        &self,
        section: &Section<'_>,
    ) -> Option<Result<otel_pipeline_core::boxed::BoxExporter<Logs>, ConfigError>> {
        Some(k8s_resolver(section).and_then(|r| otel_exporters::collector::key_router(section, r)))
    }
}

/// The Kubernetes resolver the section's `resolver.k8s` asks for, if it does.
fn k8s_resolver(
    section: &Section<'_>,
) -> Result<Option<std::sync::Arc<dyn otel_exporters::loadbalancing::Resolver>>, ConfigError> {
    use otel_exporters::loadbalancing::ResolverConfig;
    let c = otel_exporters::collector::trace_router_config(section)?;
    Ok(match &c.resolver {
        ResolverConfig::K8s { service, ports, .. } => Some(std::sync::Arc::new(
            crate::K8sResolver::new(service, ports.clone()),
        )),
        _ => None,
    })
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

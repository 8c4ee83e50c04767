//! This crate's processors for the YAML loader: `memory_limiter`, `batch`, `filter`,
//! `transform`, `attributes`, `resource`, `resourcedetection`, `redaction`,
//! `probabilistic_sampler` and `tail_sampling`, each configured by its Collector section.
//! All of them serve traces, metrics and logs pipelines, except `tail_sampling` (traces).
//!
//! It also adds the connectors `forward` and `routing` (every signal to itself), and
//! `spanmetrics` and `servicegraph` (traces to metrics).
//!
//! ```
//! let mut registry = otel_pipeline_core::collector::Registry::new();
//! otel_processors::collector::register(&mut registry);
//! assert_eq!(registry.processor_kinds().count(), 10);
//! assert_eq!(registry.connector_kinds().count(), 4);
//! ```

use otel_pipeline_core::boxed::BoxProcessor;
use std::sync::Arc;

use otel_pipeline_core::SignalKind;
use otel_pipeline_core::collector::{
    AnyConnector, ConnectorFactory, ProcessorFactory, QueueBatch, QueueBatcherFactory, Registry,
    Reload, Section,
};
use otel_pipeline_core::config::ConfigError;
use otel_pipeline_core::{Logs, Metrics, Processor, Traces};

use crate::{
    AttributeRedactor, AttributesConfig, BatchConfig, BatchProcessor, FilterConfig,
    FilterProcessor, MemoryLimiter, MemoryLimiterConfig, RedactionConfig, TailSampler,
    TailSamplingConfig, attributes::AttributesHandle, batch::BatchHandle, filter::FilterHandle,
    tail_sampling::TailSamplingHandle,
};

/// `probabilistic_sampler`: traces and logs.
struct SamplerFactory;

impl ProcessorFactory for SamplerFactory {
    fn kind(&self) -> &'static str {
        "probabilistic_sampler"
    }

    fn traces(&self, section: &Section<'_>) -> Option<Result<BoxProcessor<Traces>, ConfigError>> {
        Some(Self::build(section).map(|p| Box::new(p) as BoxProcessor<Traces>))
    }

    fn logs(&self, section: &Section<'_>) -> Option<Result<BoxProcessor<Logs>, ConfigError>> {
        Some(Self::build(section).map(|p| Box::new(p) as BoxProcessor<Logs>))
    }
}

impl SamplerFactory {
    fn build(
        section: &Section<'_>,
    ) -> Result<crate::probabilistic_sampler::ProbabilisticSampler, ConfigError> {
        let c: crate::probabilistic_sampler::ProbabilisticSamplerConfig = section.deserialize()?;
        Ok(
            crate::probabilistic_sampler::ProbabilisticSampler::new(c)
                .with_id(section.id().clone()),
        )
    }
}

/// The `resource` processor's section: `attributes`, the attributes processor's actions.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceYaml {
    #[serde(default)]
    attributes: Vec<crate::attributes::ActionConfig>,
}

/// Add this crate's processors to `registry`.
pub fn register(registry: &mut Registry) {
    registry
        // `sending_queue.batch` of any exporter: this crate's batch processor in front.
        .queue_batcher(ExporterBatcher)
        .processor(EverySignal("memory_limiter", |s| {
            let c: MemoryLimiterConfig = s.deserialize()?;
            Ok(MemoryLimiter::new(c).with_id(s.id().clone()))
        }))
        .processor(EverySignal("batch", |s| {
            let c: BatchConfig = s.deserialize()?;
            let p = BatchProcessor::new(c.clone()).with_id(s.id().clone());
            s.on_reload(Arc::new(BatchSizes(p.handle(), c)));
            Ok(p)
        }))
        .processor(EverySignal("filter", |s| {
            let c: FilterConfig = s.deserialize()?;
            let filter = FilterProcessor::new(c).with_id(s.id().clone());
            s.on_reload(Arc::new(FilterRules(filter.handle())));
            Ok(filter)
        }))
        .processor(EverySignal("transform", |s| {
            let c: crate::TransformConfig = s.deserialize()?;
            Ok(crate::TransformProcessor::new(c).with_id(s.id().clone()))
        }))
        // `resource`: the attributes actions on resource attributes, nothing else.
        .processor(EverySignal("resource", |s| {
            let c: ResourceYaml = s.deserialize()?;
            let config = AttributesConfig {
                actions: c.attributes,
                apply_to: vec![crate::attributes::Target::Resource],
                ..AttributesConfig::default()
            };
            let p = AttributeRedactor::attributes(config).with_id(s.id().clone());
            p.compile()
                .map_err(|e| s.error(&e.path.replacen("actions", "attributes", 1), e.message))?;
            Ok(p)
        }))
        .processor(SamplerFactory)
        .processor(EverySignal("resourcedetection", |s| {
            let c: crate::resourcedetection::ResourceDetectionConfig = s.deserialize()?;
            Ok(crate::resourcedetection::ResourceDetection::new(c).with_id(s.id().clone()))
        }))
        .processor(EverySignal("attributes", |s| {
            let c: AttributesConfig = s.deserialize()?;
            let p = AttributeRedactor::attributes(c).with_id(s.id().clone());
            s.on_reload(Arc::new(AttributeRules(p.handle(), false)));
            Ok(p)
        }))
        .processor(EverySignal("redaction", |s| {
            let c: RedactionConfig = s.deserialize()?;
            let p = AttributeRedactor::redaction(c).with_id(s.id().clone());
            s.on_reload(Arc::new(AttributeRules(p.handle(), true)));
            Ok(p)
        }))
        .processor(TracesOnly("tail_sampling", |s| {
            let c: TailSamplingConfig = s.deserialize()?;
            let handoff = match &c.handoff {
                // Only taking hand-offs from peers (`accept_from`), handing off none.
                Some(h) if h.exporter.trim().is_empty() && !h.accept_from.is_empty() => None,
                Some(h) if h.exporter.trim().is_empty() => {
                    return Err(s.error(
                        "handoff.exporter",
                        "name the trace exporter (defined under exporters) that takes the hand-off",
                    ));
                }
                Some(h) => Some(s.exporter::<Traces>(&h.exporter, "handoff.exporter")?),
                None => None,
            };
            let storage = match &c.storage {
                Some(id) => Some(otel_pipeline_core::storage::FileStorageConfig::referenced(
                    s, id, "storage",
                )?),
                None => None,
            };
            let mut sampler = TailSampler::new(c).with_id(s.id().clone());
            if let Some(exporter) = handoff {
                sampler = sampler.with_handoff(exporter);
            }
            if let Some(storage) = storage {
                sampler = sampler.with_storage(storage, format!("processor_{}", s.id()));
            }
            s.on_reload(Arc::new(SamplerPolicies(sampler.handle())));
            Ok(Box::new(sampler))
        }));
    for kind in ["forward", "routing", "spanmetrics", "servicegraph"] {
        registry.connector(Connectors(kind));
    }
}

/// The connectors: `forward`, `routing`, `spanmetrics`, `servicegraph`.
struct Connectors(&'static str);

impl ConnectorFactory for Connectors {
    fn kind(&self) -> &'static str {
        self.0
    }

    fn supports(&self, from: SignalKind, to: SignalKind) -> bool {
        match self.0 {
            "forward" | "routing" => from == to,
            _ => from == SignalKind::Traces && to == SignalKind::Metrics,
        }
    }

    fn create(
        &self,
        section: &Section<'_>,
        from: SignalKind,
        to: SignalKind,
    ) -> Option<Result<AnyConnector, ConfigError>> {
        if !self.supports(from, to) {
            return None;
        }
        let id = section.id().clone();
        Some((|| {
            Ok(match (self.0, from) {
                ("forward", SignalKind::Traces) => AnyConnector::TracesToTraces(Box::new(
                    crate::connectors::Forward::new().with_id(id),
                )),
                ("forward", SignalKind::Metrics) => AnyConnector::MetricsToMetrics(Box::new(
                    crate::connectors::Forward::new().with_id(id),
                )),
                ("forward", SignalKind::Logs) => AnyConnector::LogsToLogs(Box::new(
                    crate::connectors::Forward::new().with_id(id),
                )),
                ("routing", signal) => {
                    let c: crate::connectors::RoutingConfig = section.deserialize()?;
                    if c.match_once.is_some() {
                        tracing::warn!(
                            connector = %id,
                            "match_once is deprecated in the Collector: the first matching route always wins here"
                        );
                    }
                    let r = crate::connectors::Routing::new(c).with_id(id);
                    let item = match signal {
                        SignalKind::Traces => Some("span"),
                        SignalKind::Logs => Some("log"),
                        SignalKind::Metrics => None,
                    };
                    r.check(item)
                        .map_err(|e| section.error(&e.path, e.message))?;
                    match signal {
                        SignalKind::Traces => AnyConnector::TracesToTraces(Box::new(r)),
                        SignalKind::Metrics => AnyConnector::MetricsToMetrics(Box::new(r)),
                        SignalKind::Logs => AnyConnector::LogsToLogs(Box::new(r)),
                    }
                }
                ("spanmetrics", _) => {
                    let c: crate::connectors::SpanMetricsConfig = section.deserialize()?;
                    let sm = crate::connectors::SpanMetrics::new(c)
                        .map_err(|e| section.error(&e.path, e.message))?;
                    AnyConnector::TracesToMetrics(Box::new(sm.with_id(id)))
                }
                _ => {
                    let c: crate::connectors::ServiceGraphConfig = section.deserialize()?;
                    let sg = crate::connectors::ServiceGraph::new(c)
                        .map_err(|e| section.error(&e.path, e.message))?;
                    AnyConnector::TracesToMetrics(Box::new(sg.with_id(id)))
                }
            })
        })())
    }
}

/// A running batcher takes new sizes and timeout in place; new `metadata_keys` need a
/// rebuild.
struct BatchSizes(BatchHandle, BatchConfig);

impl Reload for BatchSizes {
    fn check(&self, section: &Section<'_>) -> Result<(), ConfigError> {
        section.deserialize::<BatchConfig>()?.validate()
    }

    fn apply(&self, section: &Section<'_>) -> Result<(), ConfigError> {
        self.0.update(&section.deserialize()?)
    }

    fn needs_restart(&self, section: &Section<'_>) -> bool {
        section.deserialize::<BatchConfig>().is_ok_and(|c| {
            c.metadata_keys != self.1.metadata_keys
                || c.metadata_cardinality_limit != self.1.metadata_cardinality_limit
        })
    }

    fn in_place_keys(&self) -> Option<&'static [&'static str]> {
        Some(&["send_batch_size", "send_batch_max_size", "timeout"])
    }
}

/// A running filter takes new conditions in place.
struct FilterRules(FilterHandle);

impl Reload for FilterRules {
    fn check(&self, section: &Section<'_>) -> Result<(), ConfigError> {
        let c: FilterConfig = section.deserialize()?;
        c.compile().map(drop)
    }

    fn apply(&self, section: &Section<'_>) -> Result<(), ConfigError> {
        let c: FilterConfig = section.deserialize()?;
        self.0.update(&c)
    }
}

/// A running attributes (`false`) or redaction (`true`) processor takes new rules in
/// place.
struct AttributeRules(AttributesHandle, bool);

impl AttributeRules {
    fn read(&self, section: &Section<'_>) -> Result<AttributeRedactor, ConfigError> {
        Ok(if self.1 {
            AttributeRedactor::redaction(section.deserialize()?)
        } else {
            AttributeRedactor::attributes(section.deserialize()?)
        })
    }
}

impl Reload for AttributeRules {
    fn check(&self, section: &Section<'_>) -> Result<(), ConfigError> {
        self.0.check(&self.read(section)?)
    }

    fn apply(&self, section: &Section<'_>) -> Result<(), ConfigError> {
        self.0.update(&self.read(section)?)
    }
}

/// A running tail sampler takes new policies in place: its section is read again, the
/// policies checked as at start-up, then swapped in. Any other key that changed is
/// listed as needing a rebuild.
struct SamplerPolicies(TailSamplingHandle);

impl Reload for SamplerPolicies {
    fn check(&self, section: &Section<'_>) -> Result<(), ConfigError> {
        let c: TailSamplingConfig = section.deserialize()?;
        TailSampler::validate(&c)
    }

    fn apply(&self, section: &Section<'_>) -> Result<(), ConfigError> {
        let c: TailSamplingConfig = section.deserialize()?;
        self.0.update_policies(&c)
    }

    /// Only the policies change in place; the buffer's sizes, `decision_wait`, the shards,
    /// the hand-off and the rest shape the running engine and need a rebuild.
    fn in_place_keys(&self) -> Option<&'static [&'static str]> {
        Some(&["policies", "sample_on_first_match"])
    }
}

type MakeTraces = fn(&Section<'_>) -> Result<BoxProcessor<Traces>, ConfigError>;

/// A processor type that handles traces only (the tail sampler).
struct TracesOnly(&'static str, MakeTraces);

impl ProcessorFactory for TracesOnly {
    fn kind(&self) -> &'static str {
        self.0
    }

    fn traces(&self, section: &Section<'_>) -> Option<Result<BoxProcessor<Traces>, ConfigError>> {
        Some((self.1)(section))
    }
}

/// A processor type that serves every signal with one configuration.
/// The batch processor as an exporter's `sending_queue.batch`: `min_size` is its
/// `send_batch_size` (0 sends every request at once), `max_size` its
/// `send_batch_max_size`, `flush_timeout` its `timeout`, `partition.metadata_keys` its
/// `metadata_keys` (at most 1 000 combinations at once, as the processor's default).
struct ExporterBatcher;

impl ExporterBatcher {
    fn processor(batch: &QueueBatch) -> BatchProcessor {
        BatchProcessor::new(BatchConfig {
            send_batch_size: batch.min_size.max(1),
            send_batch_max_size: batch.max_size,
            timeout: batch.flush_timeout,
            metadata_keys: batch.metadata_keys.clone(),
            ..BatchConfig::default()
        })
        .with_id(otel_pipeline_core::ComponentId::new("sending_queue_batch"))
    }
}

impl QueueBatcherFactory for ExporterBatcher {
    fn traces(&self, batch: &QueueBatch) -> BoxProcessor<Traces> {
        Box::new(Self::processor(batch))
    }
    fn metrics(&self, batch: &QueueBatch) -> BoxProcessor<Metrics> {
        Box::new(Self::processor(batch))
    }
    fn logs(&self, batch: &QueueBatch) -> BoxProcessor<Logs> {
        Box::new(Self::processor(batch))
    }
}

struct EverySignal<P>(&'static str, fn(&Section<'_>) -> Result<P, ConfigError>);

impl<P> ProcessorFactory for EverySignal<P>
where
    P: Processor<Traces> + Processor<Metrics> + Processor<Logs> + Send + Sync + 'static,
{
    fn kind(&self) -> &'static str {
        self.0
    }

    fn traces(&self, section: &Section<'_>) -> Option<Result<BoxProcessor<Traces>, ConfigError>> {
        Some((self.1)(section).map(|p| Box::new(p) as BoxProcessor<Traces>))
    }

    fn metrics(&self, section: &Section<'_>) -> Option<Result<BoxProcessor<Metrics>, ConfigError>> {
        Some((self.1)(section).map(|p| Box::new(p) as BoxProcessor<Metrics>))
    }

    fn logs(&self, section: &Section<'_>) -> Option<Result<BoxProcessor<Logs>, ConfigError>> {
        Some((self.1)(section).map(|p| Box::new(p) as BoxProcessor<Logs>))
    }
}

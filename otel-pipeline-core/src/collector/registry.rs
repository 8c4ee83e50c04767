//! The registry of component factories, one per component type.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::auth::AuthExtensionFactory;
use super::factory::{
    ACCEPTED_EXTENSIONS, ConnectorFactory, ExporterFactories, ExporterFactory, ExtensionFactory,
    MetricsEndpointFactory, NoopExtension, ProcessorFactory, ReceiverFactory, TelemetryPushFactory,
};

/// Every component type the loader can build. Each crate adds its own
/// (`otel_receivers::register`, ...); a user adds theirs the same way.
///
/// ```
/// use otel_pipeline_core::collector::{ProcessorFactory, Registry, Section};
/// use otel_pipeline_core::boxed::BoxProcessor;
/// use otel_pipeline_core::config::ConfigError;
/// use otel_pipeline_core::{BoundedQueue, QueueConfig, Traces};
///
/// /// A `queue` processor, configured by `capacity`.
/// struct QueueFactory;
///
/// #[derive(serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct QueueYaml { capacity: usize }
///
/// impl ProcessorFactory for QueueFactory {
///     fn kind(&self) -> &'static str { "queue" }
///     fn traces(&self, section: &Section<'_>) -> Option<Result<BoxProcessor<Traces>, ConfigError>> {
///         Some(section.deserialize::<QueueYaml>().map(|c| {
///             Box::new(BoundedQueue::new(QueueConfig { capacity: c.capacity, ..Default::default() })
///                 .with_id(section.id().clone())) as BoxProcessor<Traces>
///         }))
///     }
/// }
///
/// let mut registry = Registry::new();
/// registry.processor(QueueFactory);
/// assert!(registry.processor_kinds().any(|k| k == "queue"));
/// ```
#[derive(Default)]
pub struct Registry {
    pub(crate) receivers: BTreeMap<&'static str, Arc<dyn ReceiverFactory>>,
    pub(crate) processors: BTreeMap<&'static str, Arc<dyn ProcessorFactory>>,
    pub(crate) exporters: ExporterFactories,
    pub(crate) extensions: BTreeMap<&'static str, Arc<dyn ExtensionFactory>>,
    pub(crate) connectors: BTreeMap<&'static str, Arc<dyn ConnectorFactory>>,
    pub(crate) metrics_endpoint: Option<Arc<dyn MetricsEndpointFactory>>,
    pub(crate) telemetry_push: Option<Arc<dyn TelemetryPushFactory>>,
    pub(crate) queue_batcher: Option<Arc<dyn super::queue_batch::QueueBatcherFactory>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("receivers", &self.receivers.keys().collect::<Vec<_>>())
            .field("processors", &self.processors.keys().collect::<Vec<_>>())
            .field("exporters", &self.exporters.keys().collect::<Vec<_>>())
            .field("extensions", &self.extensions.keys().collect::<Vec<_>>())
            .field("connectors", &self.connectors.keys().collect::<Vec<_>>())
            .field("metrics_endpoint", &self.metrics_endpoint.is_some())
            .finish()
    }
}

impl Registry {
    /// A registry with only the core's own extensions: the authenticators
    /// (`bearertokenauth`, `basicauth`, which receivers and exporters read), and the
    /// harmless `pprof` and `zpages`, accepted with a warning that they do nothing here;
    /// with the `storage` feature, `file_storage`.
    pub fn new() -> Self {
        let mut r = Self::default();
        for kind in ACCEPTED_EXTENSIONS {
            r.extension(NoopExtension(kind));
        }
        for kind in ["bearertokenauth", "basicauth", "headers_setter"] {
            r.extension(AuthExtensionFactory(kind));
        }
        #[cfg(feature = "storage")]
        r.extension(crate::storage::FileStorageFactory);
        r
    }

    /// Add (or replace) a receiver type.
    pub fn receiver(&mut self, factory: impl ReceiverFactory + 'static) -> &mut Self {
        self.receivers.insert(factory.kind(), Arc::new(factory));
        self
    }

    /// Add (or replace) a processor type.
    pub fn processor(&mut self, factory: impl ProcessorFactory + 'static) -> &mut Self {
        self.processors.insert(factory.kind(), Arc::new(factory));
        self
    }

    /// Set what batches in front of an exporter whose `sending_queue.batch` asks for it
    /// (the processors crate registers its batch processor). Without one, such an
    /// exporter is refused with the reason.
    pub fn queue_batcher(
        &mut self,
        factory: impl super::queue_batch::QueueBatcherFactory + 'static,
    ) -> &mut Self {
        self.queue_batcher = Some(Arc::new(factory));
        self
    }

    /// Add (or replace) an exporter type.
    pub fn exporter(&mut self, factory: impl ExporterFactory + 'static) -> &mut Self {
        self.exporters.insert(factory.kind(), Arc::new(factory));
        self
    }

    /// Also accept the type name `alias` for the type `of`, in every role `of` has (a
    /// component named `logging` is built by the `debug` factory): the Collector's newer
    /// snake_case names (`otlp_http`, `k8s_attributes`) and its older ones (`logging`), so
    /// configurations people run load as written. An unknown `of` adds nothing.
    ///
    /// ```
    /// let mut registry = otel_pipeline_core::collector::Registry::new();
    /// registry.alias("health", "health_check"); // no health_check in a bare registry
    /// assert!(registry.extension_kinds().all(|k| k != "health"));
    /// ```
    pub fn alias(&mut self, alias: &'static str, of: &'static str) -> &mut Self {
        if let Some(f) = self.receivers.get(of).cloned() {
            self.receivers.insert(alias, f);
        }
        if let Some(f) = self.processors.get(of).cloned() {
            self.processors.insert(alias, f);
        }
        if let Some(f) = self.exporters.get(of).cloned() {
            self.exporters.insert(alias, f);
        }
        if let Some(f) = self.extensions.get(of).cloned() {
            self.extensions.insert(alias, f);
        }
        if let Some(f) = self.connectors.get(of).cloned() {
            self.connectors.insert(alias, f);
        }
        self
    }

    /// Serve `service.telemetry.metrics` with `factory` (replacing any other). Without
    /// one, a collector built from this registry serves no self-metrics endpoint.
    pub fn metrics_endpoint(
        &mut self,
        factory: impl MetricsEndpointFactory + 'static,
    ) -> &mut Self {
        self.metrics_endpoint = Some(Arc::new(factory));
        self
    }

    /// Add (or replace) a connector type.
    pub fn connector(&mut self, factory: impl ConnectorFactory + 'static) -> &mut Self {
        self.connectors.insert(factory.kind(), Arc::new(factory));
        self
    }

    /// The connector types known.
    pub fn connector_kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.connectors.keys().copied()
    }

    /// Push self-metrics for `periodic` readers with `factory` (replacing any other).
    /// Without one, a configuration with a periodic reader is refused, naming it.
    pub fn telemetry_push(&mut self, factory: impl TelemetryPushFactory + 'static) -> &mut Self {
        self.telemetry_push = Some(Arc::new(factory));
        self
    }

    /// Add (or replace) an extension type.
    pub fn extension(&mut self, factory: impl ExtensionFactory + 'static) -> &mut Self {
        self.extensions.insert(factory.kind(), Arc::new(factory));
        self
    }

    /// The receiver types known.
    pub fn receiver_kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.receivers.keys().copied()
    }

    /// The processor types known.
    pub fn processor_kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.processors.keys().copied()
    }

    /// The exporter types known.
    pub fn exporter_kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.exporters.keys().copied()
    }

    /// The extension types known.
    pub fn extension_kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.extensions.keys().copied()
    }
}

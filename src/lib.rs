//! # otel-pipeline
//!
//! Embed an OpenTelemetry pipeline in any Rust service or bespoke collector: receivers,
//! processors and exporters wired by a typed builder.
//!
//! This facade re-exports the member crates behind features:
//! - everything from [`otel_pipeline_core`] at the root (data model, traits, builder,
//!   runtime, telemetry, propagation);
//! - [`receivers`] (feature `receivers`, default): `otel-receivers`;
//! - [`processors`] (feature `processors`, default): `otel-processors`;
//! - [`exporters`] (feature `exporters`, default): `otel-exporters`;
//! - `k8s` (feature `k8s`): `otel-k8s`, the `k8sattributes` processor (builds `kube`).
//!
//! Other features: `sdk` (re-exports `opentelemetry_sdk`, for a propagation-only build),
//! `tls` (TLS for the OTLP receiver and exporter), `http`, `tokio` and
//! `crossbeam` (propagation carriers and traced-send helpers), `testing` (the in-memory
//! exporter and data generators of [`otel_pipeline_core`]'s `testing` module), and
//! `pipeline` (default; off, the facade is propagation only).
//!
//! A pipeline end to end, in process: spans in, the tail sampler keeps the errors, counted.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use otel_pipeline::processors::config::from_yaml;
//! use otel_pipeline::processors::tail_sampling::{TailSampler, TailSamplingConfig};
//! use otel_pipeline::testing::{InMemoryExporter, generate_traces};
//! use otel_pipeline::{DirectReceiver};
//! use otel_pipeline::{ComponentKind, Pipeline};
//!
//! let sampler: TailSamplingConfig = from_yaml(
//!     "tail_sampling",
//!     "decision_wait: 1s\npolicies: [{ name: errors, type: status_code, status_code: { status_codes: [ERROR] } }]",
//! )?;
//! let (receiver, sender) = DirectReceiver::new();
//! let (exporter, kept) = InMemoryExporter::new();
//! let running = Pipeline::traces()
//!     .receiver(receiver)
//!     .processor(TailSampler::new(sampler))
//!     .exporter(exporter)
//!     .build()?
//!     .start()
//!     .await?;
//! sender.send(generate_traces(10, 3, 7)).await?; // no errors among them
//! let telemetry = running.telemetry().clone();
//! running.shutdown(Duration::from_secs(5)).await?; // decides what is buffered
//! let sampler = telemetry.find(ComponentKind::Processor, "tail_sampling").unwrap();
//! assert_eq!((kept.item_count(), sampler.dropped("not_sampled")), (0, 30));
//! # Ok(()) }
//! ```
//!
//! The repository's `examples/` (the demo, the collector, the load generator) and `docs/`
//! show more.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use otel_pipeline_core::*;

/// Receivers (`otel-receivers`).
#[cfg(feature = "receivers")]
pub use otel_receivers as receivers;

/// The `opentelemetry_sdk` these crates are built against (0.33): build your tracer
/// provider from it, so the SDK bridge is a `SpanExporter` of it and the propagators see
/// its spans. (`opentelemetry`, the API, is re-exported at the root.) Feature `sdk`, on
/// with `receivers`; a propagation-only build enables it alone.
#[cfg(feature = "sdk")]
pub use opentelemetry_sdk;

/// Processors (`otel-processors`).
#[cfg(feature = "processors")]
pub use otel_processors as processors;

/// Exporters (`otel-exporters`).
#[cfg(feature = "exporters")]
pub use otel_exporters as exporters;

/// Kubernetes metadata (`otel-k8s`, feature `k8s`).
#[cfg(feature = "k8s")]
pub use otel_k8s as k8s;

/// A registry of every component type this build includes, for the YAML loader
/// ([`collector::CollectorConfig`]): the receivers, processors and exporters of the
/// enabled features, the `health_check` extension, and the accepted no-op `pprof` and
/// `zpages`. Add your own factories to it before loading.
///
/// ```
/// let registry = otel_pipeline::default_registry();
/// assert!(registry.exporter_kinds().any(|k| k == "loadbalancing"));
/// assert!(registry.processor_kinds().any(|k| k == "tail_sampling"));
/// ```
#[cfg(feature = "pipeline")]
pub fn default_registry() -> collector::Registry {
    #[allow(unused_mut)]
    let mut registry = collector::Registry::new();
    #[cfg(feature = "receivers")]
    otel_receivers::collector::register(&mut registry);
    #[cfg(feature = "processors")]
    otel_processors::collector::register(&mut registry);
    #[cfg(feature = "exporters")]
    otel_exporters::collector::register(&mut registry);
    #[cfg(feature = "k8s")]
    otel_k8s::collector::register(&mut registry);
    // The names configurations use besides the classic ones: the Collector's current
    // snake_case type names, and `logging`, the old name of `debug`.
    for (alias, of) in TYPE_ALIASES {
        registry.alias(alias, of);
    }
    registry
}

/// Type names accepted beside the classic ones, and the type each stands for.
#[cfg(feature = "pipeline")]
const TYPE_ALIASES: [(&str, &str); 11] = [
    ("logging", "debug"),
    ("otlp_grpc", "otlp"),
    ("otlp_http", "otlphttp"),
    ("k8s_attributes", "k8sattributes"),
    ("load_balancing", "loadbalancing"),
    ("memorylimiter", "memory_limiter"),
    ("healthcheck", "health_check"),
    ("span_metrics", "spanmetrics"),
    ("service_graph", "servicegraph"),
    ("resource_detection", "resourcedetection"),
    ("probabilisticsampler", "probabilistic_sampler"),
];

/// The README's code example, compiled as a doctest so it cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Every Rust snippet of the guides in `docs/` (the README's is above) compiles, and unless
/// marked `no_run` runs, as a doctest of this crate, so the docs cannot drift from the API.
#[cfg(doctest)]
mod docs_snippets {
    #[doc = include_str!("../docs/architecture.md")]
    struct Architecture;
    #[doc = include_str!("../docs/collector.md")]
    struct Collector;
    #[doc = include_str!("../docs/k8s.md")]
    struct K8s;
    #[doc = include_str!("../docs/operations.md")]
    struct Operations;
    #[doc = include_str!("../docs/otlp.md")]
    struct Otlp;
    #[doc = include_str!("../docs/processors.md")]
    struct Processors;
    #[doc = include_str!("../docs/propagation.md")]
    struct Propagation;
    #[doc = include_str!("../docs/reliability.md")]
    struct Reliability;
    #[doc = include_str!("../docs/router.md")]
    struct Router;
    #[doc = include_str!("../docs/security.md")]
    struct Security;
    #[doc = include_str!("../docs/tail_sampling.md")]
    struct TailSampling;
    #[doc = include_str!("../docs/telemetry.md")]
    struct Telemetry;
}

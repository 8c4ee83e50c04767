//! # otel-processors
//!
//! The Collector's everyday processors, configurable from Rust or from the Collector's
//! YAML shape ([`config::from_yaml`]):
//! - [`memory_limiter`]: refuse new data while memory is over the limit;
//! - [`batch`]: combine and split batches by item count;
//! - [`filter`]: drop spans, span events, metrics, data points, log records or whole
//!   resources by OTTL conditions ([`condition`]) or the older include/exclude;
//! - [`attributes`]: attribute actions and redaction ([`AttributeRedactor`]);
//! - [`transform`]: OTTL statements that rewrite items ([`TransformProcessor`]), on the
//!   same parser and evaluator as the filter's conditions;
//! - [`tail_sampling`]: the tail sampler ([`TailSampler`]);
//! - [`connectors`]: `forward`, `routing`, `spanmetrics` and `servicegraph`.
//!
//! Every processor but the tail sampler (traces) serves traces, metrics and logs. This
//! crate has no feature flags.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod attributes;
pub mod batch;
pub mod collector;
pub mod condition;
pub mod connectors;
pub use otel_pipeline_core::config;
pub mod filter;
mod live;
pub mod memory_limiter;
mod prehashed;
pub mod probabilistic_sampler;
pub mod resourcedetection;
mod sampling;
pub mod tail_sampling;
pub mod transform;

pub use attributes::{AttributeRedactor, AttributesConfig, RedactionConfig};
pub use batch::{BatchConfig, BatchProcessor};
pub use config::{ConfigError, from_yaml, processor_config};
pub use filter::{FilterConfig, FilterProcessor};
pub use memory_limiter::{MemoryLimiter, MemoryLimiterConfig};
pub use tail_sampling::{TailSampler, TailSamplingConfig};
pub use transform::{TransformConfig, TransformProcessor};

/// Sleep until `t`, or forever when there is nothing to wait for.
pub(crate) async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

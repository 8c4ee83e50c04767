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
//! - [`exporters`] (feature `exporters`, default): `otel-exporters`.
//!
//! See `examples/demo.rs` for a pipeline end to end.

pub use otel_pipeline_core::*;

/// Receivers (`otel-receivers`).
#[cfg(feature = "receivers")]
pub use otel_receivers as receivers;

/// Processors (`otel-processors`).
#[cfg(feature = "processors")]
pub use otel_processors as processors;

/// Exporters (`otel-exporters`).
#[cfg(feature = "exporters")]
pub use otel_exporters as exporters;

//! # otel-exporters
//!
//! Exporters for otel-pipeline.
//!
//! - [`debug`]: prints what reaches it in a readable form, like the Collector's `debug`
//!   exporter.

pub mod debug;

pub use debug::{DebugExporter, Verbosity};

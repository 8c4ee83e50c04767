//! # otel-processors
//!
//! Processors for otel-pipeline. Planned here (see `docs/architecture.md`): memory
//! limiter, batch, filter, attribute redaction, tail sampling. This crate has no components
//! yet; the core crate ships `BoundedQueue` and `Transform`.

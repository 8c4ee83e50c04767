//! # otel-receivers
//!
//! Receivers for otel-pipeline. Planned here (see `docs/architecture.md`): OTLP over gRPC
//! and HTTP, and the in-process `opentelemetry_sdk` bridge. This crate has no components
//! yet; the in-memory receiver for tests lives in `otel_pipeline_core::testing`.

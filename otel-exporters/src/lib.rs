//! # otel-exporters
//!
//! Exporters for otel-pipeline.
//!
//! - [`debug`]: prints what reaches it in a readable form, like the Collector's `debug`
//!   exporter.
//! - [`otlp`]: OTLP over gRPC or HTTP with retry, backoff and a bounded sending queue;
//!   the same exporter sends traces as Zipkin v2 (JSON, protobuf) or Jaeger `api_v2`
//!   gRPC ([`Protocol::ZipkinJson`], [`Protocol::JaegerGrpc`]), for the Collector's
//!   `zipkin` and `jaeger` exporters.
//! - [`loadbalancing`]: the trace router, by trace id over a set of gateways.
//! - [`file`](mod@file): each request as a line of OTLP/JSON (or length-prefixed protobuf) in a
//!   file, with size-based rotation.
//! - [`nop`]: discards what reaches it, counted (a sink for measurements).
//! - [`prometheus`]: serves metrics at `/metrics` in the Prometheus text format, named as
//!   the Collector's `prometheus` exporter names them.
//!
//! ## Feature flags
//! - `tls`: export to `https://` endpoints, with a CA file or the system roots and an
//!   optional client certificate (rustls with ring).
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod collector;
pub mod debug;
pub mod file;
mod foreign;
pub mod loadbalancing;
pub mod nop;
pub mod otlp;
pub mod prometheus;
mod push;

pub use debug::{DebugExporter, Verbosity};
pub use loadbalancing::{TraceRouter, TraceRouterConfig};
pub use nop::NopExporter;
pub use otlp::{
    ClientTls, Compression, OtlpExporter, OtlpExporterConfig, Protocol, QueueStorage, RetryConfig,
    SendingQueueConfig, TlsVersion,
};

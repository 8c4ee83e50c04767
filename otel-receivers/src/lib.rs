//! # otel-receivers
//!
//! Receivers for otel-pipeline:
//! - [`otlp`]: OTLP over gRPC and HTTP (protobuf and JSON, gzip), all signals on shared
//!   ports, with limits, counted rejections and protocol-correct back-pressure.
//! - [`jaeger`]: Jaeger's gRPC `api_v2`, Thrift over HTTP and the agent's UDP Thrift,
//!   translated to OTLP.
//! - [`zipkin`]: Zipkin's HTTP API (v2 JSON and protobuf, v1 JSON) translated to OTLP.
//! - [`sdk`]: an `opentelemetry_sdk` `SpanExporter` that feeds a pipeline in-process, so a
//!   service can sample and redact before anything leaves it.
//!
//! ## Feature flags
//! - `tls`: serve OTLP over TLS, and require client certificates (mutual TLS), when
//!   [`OtlpConfig::tls`](otlp::OtlpConfig::tls) is set (rustls with ring).
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod collector;
pub mod jaeger;
pub mod otlp;
pub mod sdk;
pub mod zipkin;

pub use jaeger::{JaegerConfig, JaegerReceiver};
pub use otlp::{
    AuthError, AuthRequest, Authenticate, Authenticator, BasicAuth, BearerTokens, BoundAddrs, Cors,
    OtlpConfig, OtlpReceiver, OtlpSignalReceiver, ReceiverLimits, Secret, TlsFiles,
};
pub use sdk::{SdkBridge, SdkBridgeReceiver};
pub use zipkin::ZipkinReceiver;

/// The `opentelemetry_sdk` the [`SdkBridge`] implements `SpanExporter` for (0.33). A
/// tracer provider from another version does not accept the bridge: build yours from this.
pub use opentelemetry_sdk;

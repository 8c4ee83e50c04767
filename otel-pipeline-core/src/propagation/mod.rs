//! Trace-context propagation: W3C Trace Context (Level 2), W3C Baggage, B3, Jaeger, a
//! composite that reports mismatched formats, carriers, and helpers for async queues.
//!
//! Every propagator implements `opentelemetry::propagation::TextMapPropagator`, so it plugs
//! into `opentelemetry::global::set_text_map_propagator` and any instrumentation built on
//! it. This module needs none of the crate's features: a service that only propagates
//! depends on `otel-pipeline-core` with `default-features = false`.
//!
//! # Choosing propagators
//! ```
//! use otel_pipeline_core::propagation::CompositePropagator;
//! // W3C first, B3 for Zipkin-era peers, W3C Baggage; mismatches are counted.
//! opentelemetry::global::set_text_map_propagator(CompositePropagator::w3c_and_b3());
//! ```
//!
//! # Formats
//! - [`w3c`]: `traceparent` / `tracestate`, strict, all flag bits kept.
//! - [`baggage`]: `baggage`, percent-encoding both ways, limits enforced by whole members.
//! - [`b3`]: `b3` and `X-B3-*`, debug and deferred kept as [`SamplingState`].
//! - [`jaeger`]: `uber-trace-id` and `uberctx-*`.
//! - [`composite`]: first valid format wins; disagreements are reported.
//!
//! # Carriers and queues
//! - [`carriers`]: `http::HeaderMap` (feature `http`), Kafka-style header lists, SQS-style
//!   attribute maps with a budget. `HashMap<String, String>` works through
//!   `opentelemetry`'s own impls.
//! - [`messaging`]: [`Traced`] envelopes and producer/consumer spans for channels (tokio
//!   mpsc with feature `tokio`, crossbeam with feature `crossbeam`).

pub mod b3;
pub mod baggage;
pub mod carriers;
pub mod composite;
pub mod jaeger;
pub mod messaging;
mod sampling;
pub mod w3c;

pub use b3::{B3Encoding, B3Propagator};
pub use baggage::W3cBaggagePropagator;
pub use composite::{CompositePropagator, Mismatch, MismatchCount};
pub use jaeger::JaegerPropagator;
pub use messaging::{Messaging, Traced};
pub use sampling::{SamplingDecision, SamplingState};
pub use w3c::W3cTraceContextPropagator;

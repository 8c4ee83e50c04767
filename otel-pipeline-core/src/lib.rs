//! # otel-pipeline-core
//!
//! The foundation of otel-pipeline: the data model, the component traits, the typed
//! builder and runtime, self-telemetry, and trace-context propagators.
//!
//! ## Feature flags
//! - `pipeline` (default): the OTLP data model, [`Consumer`], [`Processor`],
//!   [`Exporter`], [`Receiver`], the typed [`Pipeline`] builder, the tokio runtime,
//!   and [`Telemetry`].
//! - `testing`: the `testing` module, an in-memory exporter that keeps what reaches it (and can be
//!   told to refuse, reject or hang), generators of realistic traces, metrics and logs,
//!   and balance checks on the counters. For tests, examples and benches.
//! - `config`: [`config`], loading component configs from the Collector's YAML shape.
//! - `serve`: [`serve`], a small HTTP/1 server for pull endpoints (health, `/metrics`).
//! - `wire`: OTLP/JSON forms of the requests and responses, and `otlp::WireSignal`.
//! - `http`, `tokio`, `crossbeam`: propagation carriers and traced-send helpers.
//!
//! With default features off, the crate is propagation only and pulls in neither tokio
//! nor prost.
//!
//! ## A pipeline in a few lines
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use otel_pipeline_core::{BoundedQueue, Pipeline, QueueConfig};
//! use otel_pipeline_core::testing::{InMemoryExporter, generate_traces};
//! use otel_pipeline_core::{DirectReceiver};
//!
//! let (receiver, sender) = DirectReceiver::new();
//! let (exporter, exported) = InMemoryExporter::new();
//! let running = Pipeline::traces()
//!     .receiver(receiver)
//!     .processor(BoundedQueue::new(QueueConfig::default()))
//!     .exporter(exporter)
//!     .build()?
//!     .start()
//!     .await?;
//!
//! sender.send(generate_traces(10, 5, 42)).await?;
//! running.shutdown(Duration::from_secs(5)).await?; // drains the queue
//! assert_eq!(exported.item_count(), 50);
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "pipeline")]
pub mod clock;
#[cfg(feature = "config")]
pub mod collector;
#[cfg(feature = "config")]
pub mod config;
mod hex;
pub mod propagation;

#[cfg(feature = "pipeline")]
pub mod boxed;
#[cfg(feature = "pipeline")]
pub mod builder;
#[cfg(feature = "pipeline")]
mod component;
#[cfg(feature = "pipeline")]
pub mod connector;
#[cfg(feature = "pipeline")]
mod consumer;
#[cfg(feature = "pipeline")]
mod direct;
#[cfg(feature = "wire")]
pub mod foreign;
#[cfg(feature = "pipeline")]
mod health;
#[cfg(feature = "pipeline")]
mod id;
#[cfg(feature = "pipeline")]
pub mod otlp;
#[cfg(feature = "pipeline")]
pub mod queue;
#[cfg(feature = "pipeline")]
mod runtime;
#[cfg(feature = "serve")]
pub mod serve;
#[cfg(feature = "pipeline")]
mod signal;
#[cfg(feature = "storage")]
pub mod storage;
#[cfg(feature = "pipeline")]
pub mod telemetry;
#[cfg(all(feature = "pipeline", any(test, feature = "testing")))]
pub mod testing;
#[cfg(feature = "pipeline")]
mod transform;
#[cfg(feature = "pipeline")]
pub mod wire;

#[cfg(feature = "pipeline")]
pub use builder::{BuiltPipeline, Pipeline, PipelineBuilder};
#[cfg(feature = "pipeline")]
pub use component::{
    BuildContext, Child, Children, ComponentContext, Exporter, Lifecycle, Processor, Receiver,
    ReceiverContext, RunningReceiver, ShutdownSignal,
};
#[cfg(feature = "pipeline")]
pub use consumer::{BoxConsumer, BoxFuture, ConsumeError, Consumer, FanOut, Refusal, Rejection};
#[cfg(feature = "pipeline")]
pub use direct::{DirectReceiver, DirectSender};
#[cfg(feature = "pipeline")]
pub use health::{Health, HealthState, ReadinessGate};
#[cfg(feature = "pipeline")]
pub use id::{BoxError, BuildError, ComponentId, ComponentKind, ShutdownError, StartError};
#[cfg(feature = "pipeline")]
pub use queue::{BoundedQueue, QueueConfig, QueueConsumer, WhenFull};
#[cfg(feature = "pipeline")]
pub use runtime::RunningPipeline;
#[cfg(feature = "pipeline")]
pub use signal::{
    Batch, ClientInfo, Logs, Metrics, Signal, SignalKind, Traces, is_credential_header,
};
#[cfg(feature = "pipeline")]
pub use telemetry::{ComponentTelemetry, DropReason, MetricPoint, Telemetry};

/// The `opentelemetry` API these crates are built against (0.33): use it, rather than a
/// version of your own, so span contexts, propagators and meters are the same types.
pub use opentelemetry;
#[cfg(feature = "pipeline")]
pub use transform::{Transform, TransformConsumer};

/// The OTLP protobuf types (re-exported from `opentelemetry-proto`), the pipeline's data
/// model.
#[cfg(feature = "pipeline")]
pub use opentelemetry_proto::tonic as proto;

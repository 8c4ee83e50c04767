//! Connectors: components that are the exporter of one pipeline and the receiver of
//! others ([`otel_pipeline_core::connector`]), as the Collector has them.
//! - [`Forward`]: passes every batch on to the pipelines it feeds (the Collector's
//!   `forward`), to join pipelines such as one that enriches and one that samples;
//! - [`Routing`]: sends each resource, span or log record to the pipelines of the first
//!   route whose OTTL condition holds (the Collector's `routing` connector);
//! - [`SpanMetrics`]: request, error and duration metrics from every span (`spanmetrics`);
//! - [`ServiceGraph`]: the service dependency graph as metrics (`servicegraph`).

mod forward;
pub mod routing;
pub mod servicegraph;
pub mod spanmetrics;

pub use forward::Forward;
pub use routing::{Routing, RoutingConfig};
pub use servicegraph::{ServiceGraph, ServiceGraphConfig};
pub use spanmetrics::{SpanMetrics, SpanMetricsConfig};

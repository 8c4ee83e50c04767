//! What differs between signals on the OTLP wire: paths and responses.

use std::any::Any;
use std::sync::{Arc, OnceLock};

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use otel_pipeline_core::{BoxConsumer, ComponentTelemetry, Logs, Metrics, Signal, Traces};

/// Where accepted batches of one signal go: the pipeline's head and the receiver's counters.
pub(crate) struct Sink<S: Signal> {
    pub(crate) consumer: BoxConsumer<S>,
    pub(crate) telemetry: Arc<ComponentTelemetry>,
}

/// The sink of each signal, filled when that signal's pipeline starts the receiver.
#[derive(Default)]
pub(crate) struct Sinks {
    slots: [OnceLock<Box<dyn Any + Send + Sync>>; 3],
}

fn slot(name: &str) -> usize {
    match name {
        "traces" => 0,
        "metrics" => 1,
        _ => 2,
    }
}

impl Sinks {
    /// The sink of signal `S`, once its pipeline has started the receiver.
    pub(crate) fn get<S: Signal>(&self) -> Option<&Sink<S>> {
        self.slots[slot(S::NAME)].get()?.downcast_ref()
    }

    /// Install the sink of signal `S`; false if it was already there.
    pub(crate) fn set<S: Signal>(&self, sink: Sink<S>) -> bool {
        self.slots[slot(S::NAME)].set(Box::new(sink)).is_ok()
    }
}

/// A signal as OTLP carries it.
pub trait OtlpSignal: Signal
where
    Self::Data: serde::de::DeserializeOwned,
{
    /// The gRPC method path.
    const GRPC_PATH: &'static str;
    /// The OTLP/HTTP path.
    const HTTP_PATH: &'static str;
    /// The export response message.
    type Response: prost::Message + Default + serde::Serialize + Send + 'static;

    /// A response that reports `rejected` items with `message` (OTLP partial success).
    fn partial_success(rejected: usize, message: String) -> Self::Response;

}

impl OtlpSignal for Traces {
    const GRPC_PATH: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    const HTTP_PATH: &'static str = "/v1/traces";
    type Response = ExportTraceServiceResponse;

    fn partial_success(rejected: usize, message: String) -> Self::Response {
        ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: rejected as i64,
                error_message: message,
            }),
        }
    }
}

impl OtlpSignal for Metrics {
    const GRPC_PATH: &'static str =
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    const HTTP_PATH: &'static str = "/v1/metrics";
    type Response = ExportMetricsServiceResponse;

    fn partial_success(rejected: usize, message: String) -> Self::Response {
        ExportMetricsServiceResponse {
            partial_success: Some(ExportMetricsPartialSuccess {
                rejected_data_points: rejected as i64,
                error_message: message,
            }),
        }
    }
}

impl OtlpSignal for Logs {
    const GRPC_PATH: &'static str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    const HTTP_PATH: &'static str = "/v1/logs";
    type Response = ExportLogsServiceResponse;

    fn partial_success(rejected: usize, message: String) -> Self::Response {
        ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: rejected as i64,
                error_message: message,
            }),
        }
    }
}

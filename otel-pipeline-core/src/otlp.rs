//! What differs between signals on the OTLP wire: method paths and responses.

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};

use crate::signal::{Logs, Metrics, Signal, Traces};

/// A signal OTLP carries in both encodings: its requests and responses also read and
/// write OTLP/JSON. The three signals are; the OTLP receiver and exporter are generic over
/// it. (Feature `wire`.)
#[cfg(feature = "wire")]
pub trait WireSignal:
    OtlpSignal<Response: serde::Serialize + serde::de::DeserializeOwned>
    + Signal<Data: serde::Serialize + serde::de::DeserializeOwned>
{
}

#[cfg(feature = "wire")]
impl<S> WireSignal for S where
    S: OtlpSignal<Response: serde::Serialize + serde::de::DeserializeOwned>
        + Signal<Data: serde::Serialize + serde::de::DeserializeOwned>
{
}

/// A signal as OTLP carries it: the gRPC method, the HTTP path and the response message.
pub trait OtlpSignal: Signal {
    /// The gRPC method path, e.g. `/opentelemetry.proto.collector.trace.v1.TraceService/Export`.
    const GRPC_PATH: &'static str;
    /// The OTLP/HTTP path, e.g. `/v1/traces`.
    const HTTP_PATH: &'static str;
    /// The export response message.
    type Response: prost::Message + Default + Clone + Send + Sync + 'static;

    /// A response that reports `rejected` items with `message` (OTLP partial success).
    fn partial_success(rejected: usize, message: String) -> Self::Response;

    /// The rejected count and message of a response, if it reports a partial success.
    fn rejected(response: &Self::Response) -> Option<(i64, &str)>;
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

    fn rejected(response: &Self::Response) -> Option<(i64, &str)> {
        let p = response.partial_success.as_ref()?;
        Some((p.rejected_spans, &p.error_message))
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

    fn rejected(response: &Self::Response) -> Option<(i64, &str)> {
        let p = response.partial_success.as_ref()?;
        Some((p.rejected_data_points, &p.error_message))
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

    fn rejected(response: &Self::Response) -> Option<(i64, &str)> {
        let p = response.partial_success.as_ref()?;
        Some((p.rejected_log_records, &p.error_message))
    }
}

//! The wire types of the trace formats older than OTLP that collectors still take and
//! send: Jaeger's `api_v2` protobuf model and Zipkin's v2 protobuf. The receivers and
//! exporters of those formats share them; translation lives with them.

/// Jaeger's `jaeger.api_v2` model and collector service messages.
pub mod jaeger {
    /// `google.protobuf.Timestamp` and `Duration`.
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Timestamp {
        /// Seconds.
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        /// Nanoseconds within the second.
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    impl Timestamp {
        /// From nanoseconds.
        pub fn from_nanos(ns: u64) -> Self {
            Self {
                seconds: (ns / 1_000_000_000) as i64,
                nanos: (ns % 1_000_000_000) as i32,
            }
        }

        /// As nanoseconds (negative values clamp to 0).
        pub fn nanos(&self) -> u64 {
            let s = u64::try_from(self.seconds).unwrap_or_default();
            let n = u64::try_from(self.nanos).unwrap_or_default();
            s.saturating_mul(1_000_000_000).saturating_add(n)
        }
    }

    /// A Jaeger tag.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        /// The key.
        #[prost(string, tag = "1")]
        pub key: String,
        /// STRING 0, BOOL 1, INT64 2, FLOAT64 3, BINARY 4.
        #[prost(int32, tag = "2")]
        pub v_type: i32,
        /// The string value.
        #[prost(string, tag = "3")]
        pub v_str: String,
        /// The boolean value.
        #[prost(bool, tag = "4")]
        pub v_bool: bool,
        /// The integer value.
        #[prost(int64, tag = "5")]
        pub v_int64: i64,
        /// The float value.
        #[prost(double, tag = "6")]
        pub v_float64: f64,
        /// The binary value.
        #[prost(bytes = "vec", tag = "7")]
        pub v_binary: Vec<u8>,
    }

    /// A span log (an event).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Log {
        /// When.
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        /// Its fields; `event` is its name.
        #[prost(message, repeated, tag = "2")]
        pub fields: Vec<KeyValue>,
    }

    /// A reference to another span: CHILD_OF 0 (the parent), FOLLOWS_FROM 1.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SpanRef {
        /// 16 bytes.
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        /// 8 bytes.
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        /// CHILD_OF 0, FOLLOWS_FROM 1.
        #[prost(int32, tag = "3")]
        pub ref_type: i32,
    }

    /// The process (service) that emitted spans.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Process {
        /// The service name.
        #[prost(string, tag = "1")]
        pub service_name: String,
        /// Process tags (resource attributes).
        #[prost(message, repeated, tag = "2")]
        pub tags: Vec<KeyValue>,
    }

    /// A Jaeger span.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct JaegerSpan {
        /// 16 bytes.
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        /// 8 bytes.
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        /// The operation.
        #[prost(string, tag = "3")]
        pub operation_name: String,
        /// The parent and links.
        #[prost(message, repeated, tag = "4")]
        pub references: Vec<SpanRef>,
        /// Sampling flags.
        #[prost(uint32, tag = "5")]
        pub flags: u32,
        /// Start.
        #[prost(message, optional, tag = "6")]
        pub start_time: Option<Timestamp>,
        /// Duration.
        #[prost(message, optional, tag = "7")]
        pub duration: Option<Timestamp>,
        /// Tags.
        #[prost(message, repeated, tag = "8")]
        pub tags: Vec<KeyValue>,
        /// Logs.
        #[prost(message, repeated, tag = "9")]
        pub logs: Vec<Log>,
        /// The span's own process, overriding the batch's.
        #[prost(message, optional, tag = "10")]
        pub process: Option<Process>,
        /// Unused by the collector path.
        #[prost(string, tag = "11")]
        pub process_id: String,
        /// Warnings.
        #[prost(string, repeated, tag = "12")]
        pub warnings: Vec<String>,
    }

    /// Spans of one process.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct JaegerBatch {
        /// The spans.
        #[prost(message, repeated, tag = "1")]
        pub spans: Vec<JaegerSpan>,
        /// Their process.
        #[prost(message, optional, tag = "2")]
        pub process: Option<Process>,
    }

    /// `jaeger.api_v2.PostSpansRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PostSpansRequest {
        /// The batch.
        #[prost(message, optional, tag = "1")]
        pub batch: Option<JaegerBatch>,
    }

    /// `jaeger.api_v2.PostSpansResponse` (empty).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PostSpansResponse {}

    /// The gRPC method of Jaeger's collector service.
    pub const POST_SPANS_PATH: &str = "/jaeger.api_v2.CollectorService/PostSpans";
}

/// Zipkin's `zipkin.proto3` messages.
pub mod zipkin {
    #[derive(Clone, PartialEq, prost::Message)]
    /// `zipkin.proto3.Endpoint`.
    pub struct ProtoEndpoint {
        #[prost(string, tag = "1")]
        /// `service_name`.
        pub service_name: String,
        #[prost(bytes = "vec", tag = "2")]
        /// `ipv4`.
        pub ipv4: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        /// `ipv6`.
        pub ipv6: Vec<u8>,
        #[prost(int32, tag = "4")]
        /// `port`.
        pub port: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    /// `zipkin.proto3.Annotation`.
    pub struct ProtoAnnotation {
        #[prost(fixed64, tag = "1")]
        /// `timestamp`.
        pub timestamp: u64,
        #[prost(string, tag = "2")]
        /// `value`.
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    /// `zipkin.proto3.Span`.
    pub struct ProtoSpan {
        #[prost(bytes = "vec", tag = "1")]
        /// `trace_id`.
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        /// `parent_id`.
        pub parent_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        /// `id`.
        pub id: Vec<u8>,
        #[prost(int32, tag = "4")]
        /// `kind`.
        pub kind: i32,
        #[prost(string, tag = "5")]
        /// `name`.
        pub name: String,
        #[prost(fixed64, tag = "6")]
        /// `timestamp`.
        pub timestamp: u64,
        #[prost(uint64, tag = "7")]
        /// `duration`.
        pub duration: u64,
        #[prost(message, optional, tag = "8")]
        /// `local_endpoint`.
        pub local_endpoint: Option<ProtoEndpoint>,
        #[prost(message, optional, tag = "9")]
        /// `remote_endpoint`.
        pub remote_endpoint: Option<ProtoEndpoint>,
        #[prost(message, repeated, tag = "10")]
        /// `annotations`.
        pub annotations: Vec<ProtoAnnotation>,
        #[prost(map = "string, string", tag = "11")]
        /// `tags`.
        pub tags: std::collections::HashMap<String, String>,
        #[prost(bool, tag = "12")]
        /// `debug`.
        pub debug: bool,
        #[prost(bool, tag = "13")]
        /// `shared`.
        pub shared: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    /// `zipkin.proto3.ListOfSpans`, the body of a protobuf POST to `/api/v2/spans`.
    pub struct ListOfSpans {
        #[prost(message, repeated, tag = "1")]
        /// `spans`.
        pub spans: Vec<ProtoSpan>,
    }
}

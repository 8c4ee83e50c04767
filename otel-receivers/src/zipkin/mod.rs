//! The Zipkin receiver: Zipkin's HTTP API (`POST /api/v2/spans` in JSON or protobuf,
//! `POST /api/v1/spans` in JSON), translated to OTLP as the Collector's `zipkin` receiver
//! does, on the same hardened server as the OTLP receiver (limits, TLS, authentication,
//! gzip/deflate/zstd bodies, counted refusals).
//!
//! Services still on Zipkin libraries send B3 headers and Zipkin spans; with this receiver
//! a gateway holds those fleets beside OTLP ones.
//!
//! ```no_run
//! use otel_pipeline_core::Pipeline;
//! use otel_receivers::ZipkinReceiver;
//! # async fn run(exporter: otel_pipeline_core::boxed::BoxExporter<otel_pipeline_core::Traces>) -> Result<(), Box<dyn std::error::Error>> {
//! let zipkin = ZipkinReceiver::new("0.0.0.0:9411".parse()?).parse_string_tags(true);
//! let pipeline = Pipeline::traces()
//!     .receiver(zipkin.traces())
//!     .exporter(exporter)
//!     .build()?
//!     .start()
//!     .await?;
//! # let _ = pipeline; Ok(()) }
//! ```
//!
//! What the translation does, and where it goes beyond the Collector:
//! - each local service becomes a resource (`service.name`, plus the tags that are
//!   resource attributes: `host.*`, `k8s.*`, `telemetry.sdk.*`, ...), each
//!   `otel.library.name` a scope;
//! - kinds map one to one; without a kind, `span.kind=internal` gives `INTERNAL`;
//! - `otel.status_code`/`otel.status_description` set the status; `error=true` sets
//!   `ERROR` and goes, and (beyond the Collector, which ignores it) an `error` tag holding a
//!   message also sets `ERROR` with that message and stays as an attribute, so a tail
//!   sampler keeps Zipkin errors;
//! - annotations become events (`name|{attributes}|dropped` ones with their attributes),
//!   `otlp.link.N` tags links, `w3c.tracestate` the trace state;
//! - endpoints become `net.host.ip`/`port`, `peer.service`, `net.peer.ip`/`port`;
//! - with `parse_string_tags`, tags that read as integers, floats or booleans get those
//!   types;
//! - a span without a timestamp starts at the epoch and is marked
//!   `otel.zipkin.absentField.startTime=true`, as the Collector does.
//!
//! A request with a malformed, zero or oversized id, an unknown kind, or bad JSON or
//! protobuf is refused whole with `400` and counted as `malformed`. Spans with 64-bit trace
//! ids (padded with zeros), spans repeating an id of the same request (Zipkin's shared
//! client and server spans) and spans without a start time are kept and counted in
//! `otelcol_receiver_translation_notes{note}`.

pub(crate) mod model;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderValue, Method, StatusCode, header};
use hyper::body::Incoming;
use hyper::{Request, Response};
use otel_pipeline_core::telemetry::Instrument;
use otel_pipeline_core::{Batch, ComponentId, Traces};

use crate::otlp::http_api::{
    ConnAuth, Outcome, Peer, Reply, ResBody, Shared, deliver, fail, plain, receive,
};
use crate::otlp::{Dialect, OtlpConfig, OtlpReceiver, OtlpSignalReceiver};

/// Spans a receiver kept but whose translation noticed something, by `format` and `note`.
pub(crate) const TRANSLATION_NOTES: Instrument = Instrument::counter(
    "otelcol_receiver_translation_notes",
    "{spans}",
    "Spans kept whose translation to OTLP noticed something (64-bit trace id, repeated span id, absent start time, unparsed event or link).",
);

/// The Zipkin receiver. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ZipkinReceiver(OtlpReceiver);

impl ZipkinReceiver {
    /// Listen on `endpoint` (the Collector's default is `localhost:9411`) with the OTLP
    /// receiver's default limits.
    pub fn new(endpoint: SocketAddr) -> Self {
        Self::with_server(OtlpConfig {
            grpc: None,
            http: Some(endpoint),
            ..OtlpConfig::default()
        })
    }

    /// Serve with these server settings (limits, TLS, authentication): the receiver
    /// listens on `config.http`; `config.grpc` is not used.
    pub fn with_server(config: OtlpConfig) -> Self {
        let config = OtlpConfig {
            grpc: None,
            ..config
        };
        Self(OtlpReceiver::speaking(
            config,
            Dialect::Zipkin {
                parse_string_tags: false,
            },
            "zipkin",
        ))
    }

    /// Type tags that read as integers, floats or booleans (the Collector's
    /// `parse_string_tags`). Default off: every tag is a string attribute.
    pub fn parse_string_tags(self, on: bool) -> Self {
        let ZipkinReceiver(r) = self;
        let config = r.config().clone();
        let id = r.component_id();
        Self(
            OtlpReceiver::speaking(
                config,
                Dialect::Zipkin {
                    parse_string_tags: on,
                },
                "zipkin",
            )
            .with_id(id),
        )
    }

    /// Use another id (`zipkin/legacy`).
    pub fn with_id(self, id: ComponentId) -> Self {
        Self(self.0.with_id(id))
    }

    /// Listen hosts that did not resolve when configured (from the YAML loader).
    pub(crate) fn with_unresolved(self, unresolved: Vec<(String, String)>) -> Self {
        Self(self.0.with_unresolved(unresolved))
    }

    /// The part that feeds a trace pipeline.
    pub fn traces(&self) -> OtlpSignalReceiver<Traces> {
        self.0.traces()
    }

    /// The address bound, once a pipeline has started the receiver.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.0.local_addrs().http
    }
}

#[derive(Clone, Copy)]
enum Format {
    V2Json,
    V2Proto,
    V1Json,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Self::V2Json => "zipkin_v2_json",
            Self::V2Proto => "zipkin_v2_proto",
            Self::V1Json => "zipkin_v1_json",
        }
    }
}

/// One request to Zipkin's HTTP API.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: Peer,
    conn_auth: ConnAuth,
    parse_string_tags: bool,
) -> Response<ResBody> {
    let v2 = match req.uri().path() {
        "/api/v2/spans" => true,
        "/api/v1/spans" => false,
        path => {
            return plain(
                StatusCode::NOT_FOUND,
                format!("no Zipkin endpoint at {path}"),
            );
        }
    };
    if req.method() != Method::POST {
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "the Zipkin span endpoints accept POST only".into(),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let Some(sink) = shared.sinks.get::<Traces>() else {
        return plain(
            StatusCode::NOT_FOUND,
            "this receiver has no traces pipeline".into(),
        );
    };
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let format = match (v2, content_type.as_str()) {
        (true, "application/x-protobuf" | "application/protobuf") => Format::V2Proto,
        (true, _) => Format::V2Json,
        (false, "application/x-thrift") => {
            return fail::<Traces>(
                &shared,
                Reply::Text,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Zipkin v1 Thrift is not supported: send Zipkin v1 or v2 JSON, or v2 protobuf"
                    .into(),
            );
        }
        (false, _) => Format::V1Json,
    };
    let (body, client, _held) =
        match receive::<Traces>(&shared, req, peer, conn_auth, Reply::Text).await {
            Ok(received) => received,
            Err(response) => return response,
        };
    let most = shared.config.limits.max_items_per_request;
    let parsed = match format {
        Format::V2Json => model::parse_v2_json(&body, most),
        Format::V2Proto => model::parse_v2_proto(&body, most),
        Format::V1Json => model::parse_v1_json(&body, most),
    };
    let spans = match parsed {
        Ok(spans) => spans,
        Err(e) if e.contains(model::TOO_MANY) => {
            return fail::<Traces>(
                &shared,
                Reply::Text,
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_items",
                format!("the request carries {e}"),
            );
        }
        Err(e) => {
            return fail::<Traces>(
                &shared,
                Reply::Text,
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("malformed Zipkin spans ({}): {e}", format.name()),
            );
        }
    };
    let mut notes = model::Notes::default();
    let request = model::to_otlp(spans, parse_string_tags, &mut notes);
    for (note, n) in [
        ("trace_id_64bit", notes.trace_id_64bit),
        ("duplicate_span_id", notes.duplicate_span_id),
        ("start_time_absent", notes.start_time_absent),
        ("unparsed_event_or_link", notes.unparsed_event_or_link),
    ] {
        if n > 0 {
            sink.telemetry
                .counter(
                    &TRANSLATION_NOTES,
                    &[("format", format.name()), ("note", note)],
                )
                .add(n as u64);
        }
    }
    answer(&shared, Batch::with_client(request, client)).await
}

/// Deliver a translated request and answer as Zipkin and Jaeger's HTTP collectors do:
/// `202 Accepted`, or `503` with `Retry-After` under back-pressure.
pub(crate) async fn answer(shared: &Shared, batch: Batch<Traces>) -> Response<ResBody> {
    match deliver::<Traces>(shared, batch).await {
        None => plain(StatusCode::NOT_FOUND, "no traces pipeline".into()),
        // Rejected items are counted by `deliver`; the client cannot do better by
        // sending them again.
        Some(Outcome::Accepted | Outcome::Rejected { .. }) => {
            let mut r = plain(StatusCode::ACCEPTED, String::new());
            r.headers_mut().remove(header::CONTENT_TYPE);
            r
        }
        Some(Outcome::Refused {
            retry_after,
            message,
        }) => {
            let mut r = plain(StatusCode::SERVICE_UNAVAILABLE, message);
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
    }
}

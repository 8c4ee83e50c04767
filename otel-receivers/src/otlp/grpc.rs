//! OTLP over gRPC: our own routing and codec on tonic's framing, so malformed and oversize
//! requests get `INVALID_ARGUMENT` (tonic's defaults say `INTERNAL` and `OUT_OF_RANGE`, which
//! OTLP clients would retry) and are counted.

use std::marker::PhantomData;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use otel_pipeline_core::{BoxFuture, ClientInfo, Logs, Metrics, OtlpSignal, Traces};
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::server::{Peer, ResBody};
use super::{Outcome, Shared, WireSignal, client_info, count_failed, deliver};

pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: Peer,
) -> Response<ResBody> {
    let path = req.uri().path();
    if path == Traces::GRPC_PATH {
        unary::<Traces>(shared, req, peer).await
    } else if path == Metrics::GRPC_PATH {
        unary::<Metrics>(shared, req, peer).await
    } else if path == Logs::GRPC_PATH {
        unary::<Logs>(shared, req, peer).await
    } else {
        status_response(&Status::unimplemented(format!("unknown method {path}")))
    }
}

fn status_response(status: &Status) -> Response<ResBody> {
    let mut response = status.clone().into_http::<tonic::body::Body>();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response.map(|b| {
        b.map_err(|e| Box::new(e) as otel_pipeline_core::BoxError)
            .boxed_unsync()
    })
}

async fn unary<S: WireSignal>(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: Peer,
) -> Response<ResBody> {
    if shared.sinks.get::<S>().is_none() {
        return status_response(&Status::unimplemented(format!(
            "this receiver has no {} pipeline",
            S::NAME
        )));
    }
    let client = client_info(&shared, Some(peer), req.headers());
    let codec = OtlpCodec::<S> {
        shared: Arc::clone(&shared),
        _signal: PhantomData,
    };
    let limit = shared.config.max_decompressed_bytes;
    let mut grpc = tonic::server::Grpc::new(codec)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    let service = ExportService::<S> {
        shared: Arc::clone(&shared),
        client,
        _signal: PhantomData,
    };
    let mut response = grpc.unary(service, req).await;
    // tonic refuses an oversize message with OUT_OF_RANGE, which OTLP clients retry
    // forever; it is a permanent error.
    if response.headers().get("grpc-status").map(|v| v.as_bytes()) == Some(b"11") {
        count_failed::<S>(&shared, "too_large");
        response
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("3"));
    }
    response.map(|b| {
        b.map_err(|e| Box::new(e) as otel_pipeline_core::BoxError)
            .boxed_unsync()
    })
}

struct ExportService<S> {
    shared: Arc<Shared>,
    client: Arc<ClientInfo>,
    _signal: PhantomData<fn() -> S>,
}

impl<S: WireSignal> tonic::server::UnaryService<S::Data> for ExportService<S> {
    type Response = S::Response;
    type Future = BoxFuture<'static, Result<tonic::Response<S::Response>, Status>>;

    fn call(&mut self, request: tonic::Request<S::Data>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        let client = Arc::clone(&self.client);
        Box::pin(async move {
            match deliver::<S>(&shared, request.into_inner(), client).await {
                None => Err(Status::unimplemented(format!("no {} pipeline", S::NAME))),
                Some(Outcome::Accepted) => Ok(tonic::Response::new(S::Response::default())),
                Some(Outcome::Rejected { items, message }) => {
                    Ok(tonic::Response::new(S::partial_success(items, message)))
                }
                Some(Outcome::Refused {
                    retry_after,
                    message,
                }) => Err(Status::with_error_details(
                    Code::ResourceExhausted,
                    message,
                    ErrorDetails::with_retry_info(Some(retry_after)),
                )),
            }
        })
    }
}

/// Prost encoding with decode errors as `INVALID_ARGUMENT`, counted.
struct OtlpCodec<S> {
    shared: Arc<Shared>,
    _signal: PhantomData<fn() -> S>,
}

impl<S: WireSignal> Codec for OtlpCodec<S> {
    type Encode = S::Response;
    type Decode = S::Data;
    type Encoder = ProstEncoder<S::Response>;
    type Decoder = CountingDecoder<S>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        CountingDecoder {
            shared: Arc::clone(&self.shared),
            _signal: PhantomData,
        }
    }
}

struct ProstEncoder<T>(PhantomData<T>);

impl<T: prost::Message> Encoder for ProstEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the response: {e}")))
    }
}

struct CountingDecoder<S> {
    shared: Arc<Shared>,
    _signal: PhantomData<fn() -> S>,
}

impl<S: WireSignal> Decoder for CountingDecoder<S> {
    type Item = S::Data;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<S::Data>, Status> {
        match <S::Data as prost::Message>::decode(src) {
            Ok(message) => Ok(Some(message)),
            Err(e) => {
                count_failed::<S>(&self.shared, "malformed");
                Err(Status::invalid_argument(format!(
                    "malformed OTLP {} request: {e}",
                    S::NAME
                )))
            }
        }
    }
}

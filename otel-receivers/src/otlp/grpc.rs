//! OTLP over gRPC: our own routing, framing and decoding (tonic only for status
//! encoding), so every malformed, oversize, corrupt or bomb request gets `INVALID_ARGUMENT`
//! (tonic's own handling says `INTERNAL`, `OUT_OF_RANGE` or `RESOURCE_EXHAUSTED` without
//! `RetryInfo`, which OTLP clients would retry) and is counted.

use otel_pipeline_core::{Batch, ClientInfo};
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use otel_pipeline_core::otlp::OtlpSignal;
use otel_pipeline_core::{Logs, Metrics, Traces};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::body::{self, BodyError, Compressed, Inflate};
use super::conn::{ConnAuth, Held, Peer, ResBody};
use super::shared::{Outcome, Shared, authenticate, client_info, count_failed, deliver};
use otel_pipeline_core::otlp::WireSignal;

pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: Peer,
    conn_auth: ConnAuth,
) -> Response<ResBody> {
    if let super::Dialect::Jaeger(_) = shared.dialect {
        return crate::jaeger::handle_grpc(shared, req, peer, conn_auth).await;
    }
    let path = req.uri().path();
    if path == Traces::GRPC_PATH {
        unary::<Traces>(shared, req, peer, conn_auth).await
    } else if path == Metrics::GRPC_PATH {
        unary::<Metrics>(shared, req, peer, conn_auth).await
    } else if path == Logs::GRPC_PATH {
        unary::<Logs>(shared, req, peer, conn_auth).await
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

/// A gRPC status answer, counted under `reason` when there is one.
pub(crate) fn refuse<S: WireSignal>(
    shared: &Shared,
    reason: Option<&'static str>,
    status: &Status,
) -> Response<ResBody> {
    if let Some(reason) = reason {
        count_failed::<S>(shared, reason);
    }
    status_response(status)
}

/// Back-pressure: retryable, with the delay to wait.
fn busy<S: WireSignal>(shared: &Shared) -> Response<ResBody> {
    refuse::<S>(
        shared,
        Some("in_flight_limit"),
        &Status::with_error_details(
            Code::ResourceExhausted,
            "the receiver holds as many request bytes as it may; retry later",
            ErrorDetails::with_retry_info(Some(shared.config.default_retry_after)),
        ),
    )
}

/// One unary OTLP call, framed and decoded here rather than by tonic: every failure maps
/// to the status `docs/otlp.md` promises and is counted, and decompression runs off the
/// runtime's threads within the receiver's byte budget.
async fn unary<S: WireSignal>(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: Peer,
    conn_auth: ConnAuth,
) -> Response<ResBody> {
    if shared.sinks.get::<S>().is_none() {
        return status_response(&Status::unimplemented(format!(
            "this receiver has no {} pipeline",
            S::NAME
        )));
    }
    let (message, client, _held) = match read_unary::<S>(&shared, req, peer, conn_auth).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let malformed =
        |why: String| refuse::<S>(&shared, Some("malformed"), &Status::invalid_argument(why));
    // Traces stay bytes, checked against the schema and counted without decoding
    // (ADR 005); metrics and logs are decoded here.
    let batch = match Batch::<S>::from_encoded(message) {
        Ok(b) => b.with_client_info(client),
        Err(e) => return malformed(format!("malformed OTLP {} request: {e}", S::NAME)),
    };
    let most = shared.config.limits.max_items_per_request;
    if batch.item_count() > most {
        return refuse::<S>(
            &shared,
            Some("too_many_items"),
            &Status::invalid_argument(format!(
                "the request carries {} {}, more than the limit of {most}",
                batch.item_count(),
                S::ITEM
            )),
        );
    }
    match deliver::<S>(&shared, batch).await {
        None => status_response(&Status::unimplemented(format!("no {} pipeline", S::NAME))),
        Some(Outcome::Accepted) => ok_response(&S::Response::default()),
        Some(Outcome::Rejected { items, message }) => {
            ok_response(&S::partial_success(items, message))
        }
        Some(Outcome::Refused {
            retry_after,
            message,
        }) => status_response(&Status::with_error_details(
            Code::ResourceExhausted,
            message,
            ErrorDetails::with_retry_info(Some(retry_after)),
        )),
    }
}

/// The steps every unary call takes before its message is decoded: credentials, the
/// body read within the limits, the one length-prefixed message taken out and inflated,
/// and the client's [`ClientInfo`]. Errors are answered as gRPC statuses and counted.
pub(crate) async fn read_unary<S: WireSignal>(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    peer: Peer,
    conn_auth: ConnAuth,
) -> Result<(bytes::Bytes, Arc<ClientInfo>, Held), Response<ResBody>> {
    let headers = req.headers();
    let mut client = client_info(shared, Some(peer), headers);
    match authenticate(shared, headers, peer, &conn_auth).await {
        Ok(identity) if identity.is_empty() => {}
        Ok(identity) => Arc::make_mut(&mut client).auth = identity,
        Err((e, _)) => {
            return Err(refuse::<S>(
                shared,
                Some("unauthenticated"),
                &Status::unauthenticated(format!("{}: {}", e.reason, e.message)),
            ));
        }
    }
    let encoding = match headers.get("grpc-encoding").map(|v| v.as_bytes()) {
        None | Some(b"identity") => None,
        Some(name) => match std::str::from_utf8(name)
            .ok()
            .and_then(Compressed::from_name)
        {
            Some(c) => Some(c),
            None => {
                let name = String::from_utf8_lossy(name).into_owned();
                let mut r = refuse::<S>(
                    shared,
                    Some("unsupported_encoding"),
                    &Status::unimplemented(format!(
                        "unsupported grpc-encoding {name:?}: use gzip, zstd, deflate or identity"
                    )),
                );
                r.headers_mut().insert(
                    "grpc-accept-encoding",
                    http::HeaderValue::from_static("gzip,zstd,deflate,identity"),
                );
                return Err(r);
            }
        },
    };
    let max = shared.config.max_request_bytes;
    // The 5-byte frame header comes on top of the message.
    let (body, held) = match body::read(shared, req.into_body(), max + 5, None).await {
        Ok(read) => read,
        Err(BodyError::TooLarge) => {
            return Err(refuse::<S>(
                shared,
                Some("too_large"),
                &Status::invalid_argument(format!("request exceeds the limit of {max} bytes")),
            ));
        }
        Err(BodyError::Timeout) => {
            return Err(refuse::<S>(
                shared,
                Some("body_read_timeout"),
                &Status::deadline_exceeded(format!(
                    "the request did not arrive within {:?}",
                    shared.config.limits.body_read_timeout
                )),
            ));
        }
        Err(BodyError::Busy) => return Err(busy::<S>(shared)),
        Err(BodyError::Read(e)) => {
            return Err(refuse::<S>(
                shared,
                Some("read_error"),
                &Status::invalid_argument(format!("reading the request: {e}")),
            ));
        }
    };
    // A unary request is exactly one length-prefixed message.
    let malformed =
        |why: String| refuse::<S>(shared, Some("malformed"), &Status::invalid_argument(why));
    if body.len() < 5 {
        return Err(malformed(format!(
            "a gRPC message needs a 5-byte prefix; got {} bytes",
            body.len()
        )));
    }
    let compressed = match body[0] {
        0 => false,
        1 => true,
        flag => return Err(malformed(format!("unknown gRPC compressed-flag {flag}"))),
    };
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if len != body.len() - 5 {
        return Err(malformed(format!(
            "the gRPC prefix says {len} bytes, {} followed (one message per unary call)",
            body.len() - 5
        )));
    }
    let message = body.slice(5..);
    let limit = shared.config.max_decompressed_bytes;
    let (message, held) = match (compressed, encoding) {
        (false, _) if message.len() > limit => {
            return Err(refuse::<S>(
                shared,
                Some("too_large"),
                &Status::invalid_argument(format!(
                    "the message of {} bytes exceeds the limit of {limit}",
                    message.len()
                )),
            ));
        }
        (false, _) => (message, held),
        (true, None) => {
            return Err(malformed(
                "a compressed message without grpc-encoding".into(),
            ));
        }
        (true, Some(encoding)) => {
            match body::inflate(shared, message, encoding, limit, held).await {
                Ok(inflated) => inflated,
                // A bomb: permanent, so clients do not retry it.
                Err(Inflate::TooLarge) => {
                    return Err(refuse::<S>(
                        shared,
                        Some("decompressed_too_large"),
                        &Status::invalid_argument(format!(
                            "the message inflates past the limit of {limit} bytes"
                        )),
                    ));
                }
                Err(Inflate::Invalid(e)) => {
                    return Err(malformed(format!(
                        "invalid {} message: {e}",
                        encoding.name()
                    )));
                }
                Err(Inflate::Busy) => return Err(busy::<S>(shared)),
            }
        }
    };
    Ok((message, client, held))
}

/// `200` with one uncompressed message and `grpc-status: 0` in the trailers.
pub(crate) fn ok_response<M: prost::Message>(message: &M) -> Response<ResBody> {
    let len = message.encoded_len();
    let mut buf = Vec::with_capacity(5 + len);
    buf.push(0);
    buf.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    // Encoding into a Vec cannot run out of room.
    let _ = message.encode(&mut buf);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let body = UnaryBody {
        data: Some(bytes::Bytes::from(buf)),
        trailers: Some(trailers),
    };
    let mut r = Response::new(body.boxed_unsync());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    r
}

/// A message, then trailers.
struct UnaryBody {
    data: Option<bytes::Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl hyper::body::Body for UnaryBody {
    type Data = bytes::Bytes;
    type Error = otel_pipeline_core::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        if let Some(d) = self.data.take() {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(d))));
        }
        std::task::Poll::Ready(
            self.trailers
                .take()
                .map(|t| Ok(hyper::body::Frame::trailers(t))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

//! OTLP over HTTP: `POST /v1/{traces,metrics,logs}`, protobuf or JSON, optionally gzip.

use otel_pipeline_core::{Batch, ClientInfo};
use std::sync::Arc;

use http::{HeaderValue, Method, StatusCode, header};
use hyper::body::Incoming;
use hyper::{Request, Response};
use otel_pipeline_core::otlp::OtlpSignal;
use otel_pipeline_core::{Logs, Metrics, Traces};

use super::body::{self, BodyError, Compressed, Inflate};
use super::conn::{ConnAuth, Held, Peer, ResBody, full};
use super::shared::{Outcome, Shared, authenticate, client_info, count_failed, deliver};
use otel_pipeline_core::otlp::WireSignal;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

/// `google.rpc.Status`, the body of OTLP/HTTP error responses.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: Peer,
    conn_auth: ConnAuth,
) -> Response<ResBody> {
    let Some(cors) = shared.config.cors.clone() else {
        return route(shared, req, peer, conn_auth).await;
    };
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| cors.allows(o))
        .map(str::to_string);
    if req.method() == Method::OPTIONS {
        return preflight(&cors, origin.as_deref(), req.headers());
    }
    let mut response = route(shared, req, peer, conn_auth).await;
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(v) = origin.and_then(|o| HeaderValue::from_str(&o).ok()) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Retry-After"),
        );
    }
    response
}

/// A CORS preflight: `204`, with the permissions only when the origin, the method
/// (POST) and every requested header are allowed; a browser then blocks what was not.
fn preflight(
    cors: &super::Cors,
    origin: Option<&str>,
    request: &http::HeaderMap,
) -> Response<ResBody> {
    let mut r = Response::new(full(Vec::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let headers = r.headers_mut();
    headers.insert(
        header::VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ),
    );
    let method_ok = request
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .is_some_and(|m| m.as_bytes().eq_ignore_ascii_case(b"POST"));
    let asked: Vec<String> = request
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    let (Some(origin), true) = (origin, method_ok) else {
        return r;
    };
    if !asked.iter().all(|h| cors.allows_header(h)) {
        return r;
    }
    if let Ok(v) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    if let Ok(v) = HeaderValue::from_str(&asked.join(", "))
        && !asked.is_empty()
    {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    if let Some(age) = cors.max_age {
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(age));
    }
    r
}

/// A request to the handler of the listener's dialect.
async fn route(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: Peer,
    conn_auth: ConnAuth,
) -> Response<ResBody> {
    match shared.dialect {
        super::Dialect::Otlp => {}
        super::Dialect::Zipkin { parse_string_tags } => {
            return crate::zipkin::handle(shared, req, peer, conn_auth, parse_string_tags).await;
        }
        super::Dialect::Jaeger(_) => {
            return crate::jaeger::handle_http(shared, req, peer, conn_auth).await;
        }
    }
    let path = req.uri().path();
    if path == Traces::HTTP_PATH {
        export::<Traces>(shared, req, peer, conn_auth).await
    } else if path == Metrics::HTTP_PATH {
        export::<Metrics>(shared, req, peer, conn_auth).await
    } else if path == Logs::HTTP_PATH {
        export::<Logs>(shared, req, peer, conn_auth).await
    } else {
        plain(StatusCode::NOT_FOUND, format!("no OTLP endpoint at {path}"))
    }
}

impl From<Encoding> for Reply {
    fn from(e: Encoding) -> Self {
        Self::Otlp(e)
    }
}

pub(crate) fn plain(status: StatusCode, message: String) -> Response<ResBody> {
    let mut r = Response::new(full(message));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn encoded<M: prost::Message + serde::Serialize>(
    status: StatusCode,
    encoding: Encoding,
    message: &M,
) -> Response<ResBody> {
    let body = match encoding {
        Encoding::Protobuf => message.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec()),
    };
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoding.content_type()),
    );
    r
}

/// How a handler answers errors: OTLP's `google.rpc.Status` in the request's encoding, or
/// plain text (the Zipkin and Jaeger HTTP APIs).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reply {
    Otlp(Encoding),
    Text,
}

/// An error answer, counted under `reason`.
pub(crate) fn fail<S: WireSignal>(
    shared: &Shared,
    reply: impl Into<Reply>,
    status: StatusCode,
    reason: &'static str,
    message: String,
) -> Response<ResBody> {
    count_failed::<S>(shared, reason);
    let encoding = match reply.into() {
        Reply::Otlp(e) => e,
        Reply::Text => return plain(status, message),
    };
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => 8, // RESOURCE_EXHAUSTED in google.rpc.Code
        StatusCode::REQUEST_TIMEOUT => 4,   // DEADLINE_EXCEEDED
        _ => 3,                             // INVALID_ARGUMENT
    };
    encoded(status, encoding, &RpcStatus { code, message })
}

async fn export<S: WireSignal>(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: Peer,
    conn_auth: ConnAuth,
) -> Response<ResBody> {
    if req.method() != Method::POST {
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} accepts POST only", S::HTTP_PATH),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    if shared.sinks.get::<S>().is_none() {
        return plain(
            StatusCode::NOT_FOUND,
            format!("this receiver has no {} pipeline", S::NAME),
        );
    }
    let headers = req.headers();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let encoding = match content_type.as_deref() {
        Some("application/x-protobuf") | Some("application/protobuf") => Encoding::Protobuf,
        Some("application/json") => Encoding::Json,
        other => {
            let msg = format!(
                "unsupported content type {:?}: use application/x-protobuf or application/json",
                other.unwrap_or("(none)")
            );
            return fail::<S>(
                &shared,
                Encoding::Json,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                msg,
            );
        }
    };
    let (body, client, _held) = match receive::<S>(&shared, req, peer, conn_auth, encoding).await {
        Ok(received) => received,
        Err(response) => return response,
    };
    let batch: Batch<S> = match encoding {
        // Traces stay bytes, checked against the schema and counted without decoding
        // (ADR 005); metrics and logs are decoded here.
        Encoding::Protobuf => match Batch::from_encoded(body) {
            Ok(b) => b.with_client_info(client),
            Err(e) => {
                let msg = format!("malformed OTLP {} protobuf: {e}", S::NAME);
                return fail::<S>(&shared, encoding, StatusCode::BAD_REQUEST, "malformed", msg);
            }
        },
        Encoding::Json => match serde_json::from_slice(&body) {
            Ok(d) => Batch::with_client(d, client),
            Err(e) => {
                let msg = format!("malformed OTLP {} JSON: {e}", S::NAME);
                return fail::<S>(&shared, encoding, StatusCode::BAD_REQUEST, "malformed", msg);
            }
        },
    };
    let most = shared.config.limits.max_items_per_request;
    if batch.item_count() > most {
        let msg = format!(
            "the request carries {} {}, more than the limit of {most}",
            batch.item_count(),
            S::ITEM
        );
        return fail::<S>(
            &shared,
            encoding,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_items",
            msg,
        );
    }
    match deliver::<S>(&shared, batch).await {
        None => plain(StatusCode::NOT_FOUND, format!("no {} pipeline", S::NAME)),
        Some(Outcome::Accepted) => encoded(StatusCode::OK, encoding, &S::Response::default()),
        Some(Outcome::Rejected { items, message }) => encoded(
            StatusCode::OK,
            encoding,
            &S::partial_success(items, message),
        ),
        Some(Outcome::Refused {
            retry_after,
            message,
        }) => {
            let mut r = encoded(
                StatusCode::TOO_MANY_REQUESTS,
                encoding,
                &RpcStatus { code: 8, message },
            );
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
    }
}

/// The steps every HTTP request takes before its body is decoded: content encoding,
/// credentials, the body read within the limits and inflated, and the client's
/// [`ClientInfo`]. Errors are answered in `reply`'s form and counted.
pub(crate) async fn receive<S: WireSignal>(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    peer: Peer,
    conn_auth: ConnAuth,
    reply: impl Into<Reply>,
) -> Result<(bytes::Bytes, Arc<ClientInfo>, Held), Response<ResBody>> {
    let reply = reply.into();
    let headers = req.headers();
    let compressed = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().map(str::trim))
    {
        None | Some(Ok("identity" | "")) => None,
        Some(Ok(name)) if Compressed::from_name(name).is_some() => Compressed::from_name(name),
        Some(other) => {
            let other = other.unwrap_or("(not text)");
            let msg =
                format!("unsupported content encoding {other:?}: use gzip, zstd, deflate or none");
            return Err(fail::<S>(
                shared,
                reply,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                msg,
            ));
        }
    };
    let identity = match authenticate(shared, headers, peer, &conn_auth).await {
        Ok(identity) => identity,
        Err((e, challenge)) => {
            count_failed::<S>(shared, "unauthenticated");
            let message = format!("unauthenticated ({}): {}", e.reason, e.message);
            let mut r = match reply {
                Reply::Otlp(encoding) => encoded(
                    StatusCode::UNAUTHORIZED,
                    encoding,
                    &RpcStatus {
                        code: 16, // UNAUTHENTICATED
                        message,
                    },
                ),
                Reply::Text => plain(StatusCode::UNAUTHORIZED, message),
            };
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            return Err(r);
        }
    };
    let max = shared.config.max_request_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut client = client_info(shared, Some(peer), headers);
    if !identity.is_empty() {
        Arc::make_mut(&mut client).auth = identity;
    }
    let (body, held) = match body::read(shared, req.into_body(), max, declared).await {
        Ok(read) => read,
        Err(BodyError::TooLarge) => {
            let msg = format!("request body exceeds the limit of {max} bytes");
            return Err(fail::<S>(
                shared,
                reply,
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                msg,
            ));
        }
        Err(BodyError::Timeout) => {
            let msg = format!(
                "the body did not arrive within {:?}",
                shared.config.limits.body_read_timeout
            );
            return Err(fail::<S>(
                shared,
                reply,
                StatusCode::REQUEST_TIMEOUT,
                "body_read_timeout",
                msg,
            ));
        }
        Err(BodyError::Busy) => return Err(busy::<S>(shared, reply)),
        Err(BodyError::Read(e)) => {
            return Err(fail::<S>(
                shared,
                reply,
                StatusCode::BAD_REQUEST,
                "read_error",
                format!("reading the body: {e}"),
            ));
        }
    };
    let (body, held) = if let Some(compressed) = compressed {
        let limit = shared.config.max_decompressed_bytes;
        match body::inflate(shared, body, compressed, limit, held).await {
            Ok(inflated) => inflated,
            Err(Inflate::TooLarge) => {
                let msg = format!("decompressed body exceeds the limit of {limit} bytes");
                return Err(fail::<S>(
                    shared,
                    reply,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "decompressed_too_large",
                    msg,
                ));
            }
            Err(Inflate::Invalid(e)) => {
                return Err(fail::<S>(
                    shared,
                    reply,
                    StatusCode::BAD_REQUEST,
                    "malformed",
                    format!("invalid {} body: {e}", compressed.name()),
                ));
            }
            Err(Inflate::Busy) => return Err(busy::<S>(shared, reply)),
        }
    } else {
        (body, held)
    };
    Ok((body, client, held))
}

/// The in-flight byte budget is spent: back-pressure, retryable.
pub(crate) fn busy<S: WireSignal>(shared: &Shared, reply: Reply) -> Response<ResBody> {
    count_failed::<S>(shared, "in_flight_limit");
    let message = "the receiver holds as many request bytes as it may; retry later";
    let mut r = match reply {
        Reply::Otlp(encoding) => encoded(
            StatusCode::TOO_MANY_REQUESTS,
            encoding,
            &RpcStatus {
                code: 8,
                message: message.into(),
            },
        ),
        Reply::Text => plain(StatusCode::TOO_MANY_REQUESTS, message.into()),
    };
    let secs = shared.config.default_retry_after.as_secs().max(1);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

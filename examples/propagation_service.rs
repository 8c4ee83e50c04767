//! A service for the W3C trace-context conformance harness.
//!
//! It accepts `POST` requests whose JSON body is an array of `{"url": ..., "arguments": ...}`.
//! For each element, in order and before it answers, it `POST`s `arguments` as the JSON body
//! to `url`, carrying the incoming trace context on: it extracts `traceparent`/`tracestate`,
//! starts a child span (so every callback gets a new parent id) and injects that span's
//! context into the callback's headers.
//!
//! ```text
//! cargo run --example propagation_service -- 5000
//! # then, from the W3C harness: python test/test.py http://127.0.0.1:5000/test
//! ```
//!
//! The listening port is the first argument (default 5000). `tests/trace_context_harness.rs`
//! drives this binary the way the harness does.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracerProvider;
use otel_pipeline::propagation::W3cTraceContextPropagator;
use otel_pipeline::propagation::carriers::{HeaderMapExtractor, HeaderMapInjector};
use tokio::net::{TcpListener, TcpStream};

type Body = Full<Bytes>;

fn respond(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(text.to_string())));
    *r.status_mut() = status;
    r
}

/// POST `body` to `url` (plain `http://host:port/path`) with the given headers.
async fn post(url: &str, headers: http::HeaderMap, body: Vec<u8>) -> Result<StatusCode, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad url {url}: {e}"))?;
    let authority = uri.authority().ok_or("url has no host")?.clone();
    let port = authority.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((authority.host(), port))
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = Request::post(path)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    req.headers_mut().extend(headers);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    Ok(resp.status())
}

async fn handle(
    req: Request<Incoming>,
    provider: SdkTracerProvider,
) -> Result<Response<Body>, Infallible> {
    if req.method() != http::Method::POST {
        return Ok(respond(StatusCode::METHOD_NOT_ALLOWED, "POST only"));
    }
    let propagator = W3cTraceContextPropagator::new();
    let parent =
        propagator.extract_with_context(&Context::new(), &HeaderMapExtractor(req.headers()));
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(respond(StatusCode::BAD_REQUEST, &format!("body: {e}"))),
    };
    let calls: Vec<serde_json::Value> = match serde_json::from_slice(&body) {
        Ok(serde_json::Value::Array(items)) => items,
        Ok(_) => return Ok(respond(StatusCode::BAD_REQUEST, "expected a JSON array")),
        Err(e) => {
            return Ok(respond(
                StatusCode::BAD_REQUEST,
                &format!("invalid JSON: {e}"),
            ));
        }
    };
    let tracer = provider.tracer("propagation_service");
    for call in calls {
        let Some(url) = call.get("url").and_then(|u| u.as_str()) else {
            return Ok(respond(StatusCode::BAD_REQUEST, "element without a url"));
        };
        let arguments = call
            .get("arguments")
            .cloned()
            .unwrap_or(serde_json::Value::Array(vec![]));
        // A new child span per callback: a new parent id, the same trace.
        let span = tracer
            .span_builder("callback")
            .with_kind(SpanKind::Client)
            .with_attributes([KeyValue::new("url.full", url.to_string())])
            .start_with_context(&tracer, &parent);
        let cx = parent.with_span(span);
        let mut headers = http::HeaderMap::new();
        propagator.inject_context(&cx, &mut HeaderMapInjector(&mut headers));
        let payload = serde_json::to_vec(&arguments).unwrap_or_else(|_| b"[]".to_vec());
        if let Err(e) = post(url, headers, payload).await {
            eprintln!("callback to {url} failed: {e}");
        }
        cx.span().end();
    }
    Ok(respond(StatusCode::OK, "ok"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::args().nth(1) {
        Some(p) => p.parse().map_err(|e| format!("port `{p}`: {e}"))?,
        None => 5000,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = TcpListener::bind(addr).await?;
    // Spans are created for real (ids, sampling) but not exported anywhere.
    let provider = SdkTracerProvider::builder().build();
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let provider = provider.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, provider.clone()));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection error: {e}");
            }
        });
    }
}

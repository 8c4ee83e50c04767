//! What the receiver's socket tests share: a pipeline fed by an OTLP receiver on loopback,
//! raw HTTP posts, and request bodies.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use otel_pipeline_core::testing::{Exported, InMemoryExporter, generate_traces};
use otel_pipeline_core::{ComponentKind, ComponentTelemetry, Pipeline, RunningPipeline, Traces};
use otel_receivers::{OtlpConfig, OtlpReceiver};
use prost::Message;

pub struct Setup {
    pub running: RunningPipeline,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub exported: Exported<Traces>,
}

impl Setup {
    pub async fn new(config: OtlpConfig) -> Self {
        let otlp = OtlpReceiver::new(config);
        let (exporter, exported) = InMemoryExporter::new();
        let running = Pipeline::traces()
            .receiver(otlp.traces())
            .exporter(exporter)
            .build()
            .unwrap()
            .start()
            .await
            .unwrap();
        let addrs = otlp.local_addrs();
        Self {
            running,
            grpc: addrs.grpc.unwrap(),
            http: addrs.http.unwrap(),
            exported,
        }
    }

    pub fn receiver(&self) -> Arc<ComponentTelemetry> {
        self.running
            .telemetry()
            .find(ComponentKind::Receiver, "otlp")
            .unwrap()
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

pub async fn http_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    http_request(addr, http::Method::POST, path, headers, body).await
}

pub async fn http_request(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

pub fn proto_traces(n: usize) -> Vec<u8> {
    generate_traces(1, n, 7).encode_to_vec()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

pub const PROTO: (&str, &str) = ("content-type", "application/x-protobuf");
pub const JSON: (&str, &str) = ("content-type", "application/json");

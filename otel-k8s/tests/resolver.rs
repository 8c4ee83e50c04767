//! The trace router following a headless Service's EndpointSlices on a local API server:
//! only ready endpoints receive traffic, and traffic moves as gateways become ready or not.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use otel_exporters::loadbalancing::{TraceRouter, TraceRouterConfig};
use otel_k8s::K8sResolver;
use otel_pipeline_core::DirectReceiver;
use otel_pipeline_core::testing::{Exported, InMemoryExporter, eventually, generate_traces};
use otel_pipeline_core::{Pipeline, RunningPipeline, Telemetry, Traces};
use otel_receivers::{OtlpConfig, OtlpReceiver};

mod common;
use common::ApiServer;

const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/observability/endpointslices";

async fn gateway(addr: SocketAddr) -> (RunningPipeline, Exported<Traces>) {
    let otlp = OtlpReceiver::new(OtlpConfig {
        grpc: Some(addr),
        http: None,
        ..OtlpConfig::loopback()
    });
    let (exporter, exported) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .receiver(otlp.traces())
        .exporter(exporter)
        .build()
        .expect("gateway builds")
        .start()
        .await
        .expect("gateway starts");
    (running, exported)
}

/// The Service's one EndpointSlice with `ready` for each of 127.0.0.1, .2, .3.
fn slice(ready: [bool; 3], port: u16) -> serde_json::Value {
    let endpoints: Vec<serde_json::Value> = ready
        .iter()
        .enumerate()
        .map(|(i, r)| {
            serde_json::json!({
                "addresses": [format!("127.0.0.{}", i + 1)],
                "conditions": { "ready": r, "serving": r, "terminating": false },
                "targetRef": { "kind": "Pod", "name": format!("otel-gateway-{i}"), "namespace": "observability" },
            })
        })
        .collect();
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "otel-gateway-x7k2p",
            "namespace": "observability",
            "labels": { "kubernetes.io/service-name": "otel-gateway" },
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{ "name": "otlp-grpc", "port": port, "protocol": "TCP" }],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_follows_ready_endpoints_of_a_headless_service() {
    // Three gateways on 127.0.0.1-3, one port, as pods behind a headless Service.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut gateways = Vec::new();
    for i in 1..=3u8 {
        gateways.push(gateway(SocketAddr::from(([127, 0, 0, i], port))).await);
    }
    let api = ApiServer::start().await;
    // A slice of another Service in the namespace must not count.
    let mut other = slice([true, true, true], 9999);
    other["metadata"]["name"] = "other-abcde".into();
    other["metadata"]["labels"]["kubernetes.io/service-name"] = "other".into();
    api.put(SLICES, other);
    api.put(SLICES, slice([true, true, false], port));

    let config = TraceRouterConfig::from_yaml(
        "exporters.loadbalancing",
        &format!(
            "protocol: {{ otlp: {{ tls: {{ insecure: true }}, timeout: 1s }} }}\nresolver: {{ k8s: {{ service: otel-gateway.observability, ports: [{port}] }} }}"
        ),
    )
    .expect("config");
    let resolver = Arc::new(
        K8sResolver::new("otel-gateway.observability", vec![port]).with_client(api.client()),
    );
    let telemetry = Telemetry::new();
    let (receiver, sender) = DirectReceiver::new();
    let built = Pipeline::traces()
        .telemetry(telemetry.clone())
        .receiver(receiver)
        .exporter(TraceRouter::new(config).with_resolver(resolver))
        .build()
        .expect("agent builds");
    let router = built.consumer();
    let running = built.start().await.expect("agent starts");
    let endpoints = |ready: &[u8]| {
        ready
            .iter()
            .map(|i| format!("127.0.0.{i}:{port}"))
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(10), || router.endpoints()
            == endpoints(&[1, 2]))
        .await,
        "{:?}",
        router.endpoints()
    );

    sender.send(generate_traces(200, 3, 1)).await.expect("sent");
    let count = |i: usize| gateways[i].1.item_count();
    assert!(eventually(Duration::from_secs(10), || count(0) + count(1) == 600).await);
    assert_eq!(count(2), 0, "a gateway that is not ready gets nothing");

    // The third becomes ready and the second stops being ready: traffic follows.
    api.put(SLICES, slice([true, false, true], port));
    assert!(
        eventually(Duration::from_secs(10), || router.endpoints()
            == endpoints(&[1, 3]))
        .await,
        "{:?}",
        router.endpoints()
    );
    let before = count(1);
    sender.send(generate_traces(200, 3, 2)).await.expect("sent");
    assert!(
        eventually(Duration::from_secs(10), || count(0) + count(1) + count(2)
            == 1200)
        .await
    );
    assert_eq!(count(1), before, "nothing new for the gateway that left");
    assert!(count(2) > 0);
    assert!(
        telemetry.sum(
            "otelcol_loadbalancer_num_backend_updates",
            &[("resolver", "k8s")]
        ) >= 2
    );

    running
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    for (g, _) in gateways {
        g.shutdown(Duration::from_secs(5))
            .await
            .expect("gateway shutdown");
    }
}

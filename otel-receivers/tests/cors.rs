//! CORS on the HTTP listener, configured from Collector YAML (`cors` and the older
//! `cors_allowed_origins`): a browser's preflight gets the permissions only for an
//! allowed origin, method and headers, and exports carry `Access-Control-Allow-Origin`.

// Test helpers unwrap: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use http::Method;
use otel_pipeline_core::testing::InMemoryExporter;
use otel_pipeline_core::{Pipeline, Traces};
use otel_receivers::{Cors, OtlpConfig, OtlpReceiver};

mod common;

use common::{PROTO, http_request, proto_traces};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_from_allowed_origins_may_export() {
    let otlp = OtlpReceiver::new(OtlpConfig {
        cors: Some(Cors {
            allowed_origins: vec![
                "https://*.shop.example".into(),
                "http://localhost:3000".into(),
            ],
            allowed_headers: vec!["x-tenant".into()],
            max_age: Some(600),
        }),
        ..OtlpConfig::loopback()
    });
    let (exporter, exported) = InMemoryExporter::<Traces>::new();
    let running = Pipeline::traces()
        .receiver(otlp.traces())
        .exporter(exporter)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let http = otlp.local_addrs().http.unwrap();

    let preflight = |origin: &'static str, headers: &'static str| async move {
        http_request(
            http,
            Method::OPTIONS,
            "/v1/traces",
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", headers),
            ],
            Vec::new(),
        )
        .await
    };
    let ok = preflight("https://web.shop.example", "content-type, x-tenant").await;
    assert_eq!(ok.status, 204);
    assert_eq!(
        ok.headers["access-control-allow-origin"],
        "https://web.shop.example"
    );
    assert_eq!(ok.headers["access-control-allow-methods"], "POST");
    assert_eq!(ok.headers["access-control-max-age"], "600");
    // Another origin, or a header not allowed: no permissions.
    let other = preflight("https://evil.example", "content-type").await;
    assert!(!other.headers.contains_key("access-control-allow-origin"));
    let header = preflight("http://localhost:3000", "x-secret").await;
    assert!(!header.headers.contains_key("access-control-allow-origin"));

    // The export itself carries the origin back, and its spans arrive.
    let reply = http_request(
        http,
        Method::POST,
        "/v1/traces",
        &[PROTO, ("origin", "http://localhost:3000")],
        proto_traces(2),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.headers["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert_eq!(exported.item_count(), 2);
    running
        .shutdown(std::time::Duration::from_secs(5))
        .await
        .unwrap();
}

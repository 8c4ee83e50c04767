//! Receiver configuration that can be checked before anything starts fails the pipeline's
//! `build`, naming the setting: a port another process holds, one port for both
//! protocols, certificate files that do not load, two receivers with one id.

// Test helpers unwrap: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use otel_pipeline_core::testing::InMemoryExporter;
use otel_pipeline_core::{BuildError, Pipeline};
use otel_receivers::{OtlpConfig, OtlpReceiver, TlsFiles};

fn config(grpc: Option<SocketAddr>, http: Option<SocketAddr>) -> OtlpConfig {
    OtlpConfig {
        grpc,
        http,
        ..OtlpConfig::default()
    }
}

fn build_error(receiver: &OtlpReceiver) -> (String, String) {
    match Pipeline::traces()
        .receiver(receiver.traces())
        .exporter(InMemoryExporter::new().0)
        .build()
    {
        Err(BuildError::InvalidConfig { path, message, .. }) => (path, message),
        Err(other) => panic!("expected an invalid setting, got {other}"),
        Ok(_) => panic!("the pipeline built"),
    }
}

#[tokio::test]
async fn a_port_in_use_fails_the_build_not_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let receiver = OtlpReceiver::new(config(Some(addr), None));
    let (path, message) = build_error(&receiver);
    assert_eq!(path, "protocols.grpc.endpoint");
    assert!(message.contains(&addr.to_string()), "{message}");

    let receiver = OtlpReceiver::new(config(None, Some(addr)));
    assert_eq!(build_error(&receiver).0, "protocols.http.endpoint");

    // Freed, the same configuration builds and starts.
    drop(taken);
    let receiver = OtlpReceiver::new(config(None, Some(addr)));
    let running = Pipeline::traces()
        .receiver(receiver.traces())
        .exporter(InMemoryExporter::new().0)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    // Built again for a second signal while the listeners run: not a conflict.
    assert!(
        Pipeline::logs()
            .receiver(receiver.logs())
            .exporter(InMemoryExporter::new().0)
            .build()
            .is_ok()
    );
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[test]
fn one_port_for_both_protocols_is_refused() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let receiver = OtlpReceiver::new(config(Some(addr), Some(addr)));
    let (path, message) = build_error(&receiver);
    assert_eq!(path, "protocols.http.endpoint");
    assert!(message.contains("gRPC endpoint too"), "{message}");
}

#[test]
fn certificate_files_that_do_not_load_fail_the_build() {
    let receiver = OtlpReceiver::new(OtlpConfig {
        grpc: Some("127.0.0.1:0".parse().unwrap()),
        http: None,
        tls: Some(TlsFiles {
            cert_file: "/nonexistent/otel-pipeline/server.pem".into(),
            key_file: "/nonexistent/otel-pipeline/server.key".into(),
            ..TlsFiles::default()
        }),
        ..OtlpConfig::default()
    });
    let (path, message) = build_error(&receiver);
    assert_eq!(path, "tls");
    // Built with TLS: the file is named; without: the missing feature is.
    assert!(
        message.contains("/nonexistent/otel-pipeline/server.pem") || message.contains("`tls`"),
        "{message}"
    );
}

#[test]
fn two_receivers_with_one_id_fail_the_build() {
    let a = OtlpReceiver::new(config(Some("127.0.0.1:0".parse().unwrap()), None));
    let b = OtlpReceiver::new(config(Some("127.0.0.1:0".parse().unwrap()), None));
    let err = Pipeline::traces()
        .receiver(a.traces())
        .receiver(b.traces())
        .exporter(InMemoryExporter::new().0)
        .build()
        .err()
        .unwrap();
    assert!(
        matches!(&err, BuildError::DuplicateId { id, .. } if id.to_string() == "otlp"),
        "{err}"
    );
}

/// The default listens on loopback only, as the Collector's YAML default does; every
/// interface is a choice (`all_interfaces`).
#[test]
fn the_default_receiver_listens_on_loopback_only() {
    let d = OtlpConfig::default();
    for addr in [d.grpc, d.http].into_iter().flatten() {
        assert!(addr.ip().is_loopback(), "{addr}");
    }
    assert_eq!(d.grpc.map(|a| a.port()), Some(4317));
    assert_eq!(d.http.map(|a| a.port()), Some(4318));
    let all = OtlpConfig::all_interfaces();
    assert!(
        all.grpc
            .is_some_and(|a| a.ip().is_unspecified() && a.port() == 4317)
    );
    assert!(
        all.http
            .is_some_and(|a| a.ip().is_unspecified() && a.port() == 4318)
    );
}

//! OTLP over TLS on loopback, gRPC and HTTP, with a throwaway self-signed certificate:
//! receiver with `OtlpConfig::tls`, exporter trusting the certificate through `ca_file`.

use std::path::PathBuf;
use std::time::Duration;

use otel_pipeline::DirectReceiver;
use otel_pipeline::exporters::otlp::{ClientTls, OtlpExporter, OtlpExporterConfig, Protocol};
use otel_pipeline::receivers::otlp::TlsFiles;
use otel_pipeline::receivers::{OtlpConfig, OtlpReceiver};
use otel_pipeline::testing::{InMemoryExporter, eventually, generate_traces};
use otel_pipeline::{ComponentKind, Pipeline, Traces};

mod common;

/// Write a self-signed certificate for `localhost`; returns (cert, key) paths.
fn certificate(dir: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("otel-pipeline-tls-{dir}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, signing_key.serialize_pem()).expect("write key");
    (cert_path, key_path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_over_tls_with_grpc_and_http() {
    let (cert, key) = certificate("e2e");
    let (gateway, otlp, out) = common::gateway(OtlpConfig {
        tls: Some(TlsFiles {
            cert_file: cert.clone(),
            key_file: key,
            ..TlsFiles::default()
        }),
        ..OtlpConfig::loopback()
    })
    .await;
    let addrs = otlp.local_addrs();

    let mut expected = 0;
    for (protocol, addr) in [
        (Protocol::Grpc, addrs.grpc),
        (Protocol::HttpProtobuf, addrs.http),
        (Protocol::HttpJson, addrs.http),
    ] {
        let port = addr.expect("addr").port();
        let (agent, sender) = common::agent(OtlpExporterConfig {
            endpoint: format!("https://localhost:{port}"),
            protocol,
            tls: ClientTls {
                ca_file: Some(cert.clone()),
                ..ClientTls::default()
            },
            ..OtlpExporterConfig::default()
        })
        .await;
        sender
            .send(generate_traces(1, 3, port.into()))
            .await
            .expect("queued");
        expected += 3;
        assert!(
            eventually(Duration::from_secs(10), || out.item_count() == expected).await,
            "{protocol:?} over TLS"
        );
        agent
            .shutdown(Duration::from_secs(5))
            .await
            .expect("drains");
    }

    // A plain-text client gets nowhere, and the receiver keeps serving.
    let (plain, sender) = common::agent(OtlpExporterConfig {
        endpoint: format!("http://{}", addrs.http.expect("http")),
        protocol: Protocol::HttpProtobuf,
        timeout: Duration::from_millis(500),
        retry: otel_pipeline::exporters::otlp::RetryConfig {
            enabled: false,
            ..Default::default()
        },
        queue: otel_pipeline::exporters::otlp::SendingQueueConfig {
            enabled: false,
            ..Default::default()
        },
        ..OtlpExporterConfig::default()
    })
    .await;
    // Without a queue, the exporter gives what it could not deliver back to its caller
    // as a refusal (the caller still holds its client's answer), counted there.
    let err = sender
        .send(generate_traces(1, 1, 9))
        .await
        .expect_err("refused");
    assert!(err.is_retryable(), "{err}");
    assert_eq!(out.item_count(), expected);
    let t = plain.telemetry().clone();
    assert_eq!(
        t.find(ComponentKind::Receiver, "memory")
            .expect("receiver")
            .refused(),
        1
    );
    plain.shutdown(Duration::from_secs(2)).await.expect("stops");
    gateway
        .shutdown(Duration::from_secs(5))
        .await
        .expect("stops");
}

#[tokio::test]
async fn bad_tls_files_fail_the_build_with_the_path() {
    let otlp = OtlpReceiver::new(OtlpConfig {
        tls: Some(TlsFiles {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
            ..TlsFiles::default()
        }),
        ..OtlpConfig::loopback()
    });
    let (kept, _) = InMemoryExporter::new();
    // Checked when the pipeline is built, before anything starts.
    let err = Pipeline::traces()
        .receiver(otlp.traces())
        .exporter(kept)
        .build()
        .expect_err("no certificate");
    assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    assert!(err.to_string().contains("invalid `tls`"), "{err}");

    let (_, sender) = DirectReceiver::<Traces>::new();
    drop(sender);
    let (receiver, _) = DirectReceiver::new();
    let err = Pipeline::traces()
        .receiver(receiver)
        .exporter(OtlpExporter::<Traces>::new(OtlpExporterConfig {
            endpoint: "https://localhost:4317".into(),
            tls: ClientTls {
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..ClientTls::default()
            },
            ..OtlpExporterConfig::default()
        }))
        .build()
        .expect_err("missing CA file");
    assert!(err.to_string().contains("tls.ca_file"), "{err}");
}

/// A CA, a server certificate for `localhost`, and client certificates: two from the CA
/// (for `ci-agent.example` and `other.example`) and one self-signed. Returns the directory.
fn pki(tag: &str) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = std::env::temp_dir().join(format!("otel-pipeline-mtls-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    let issue = |name: &str, file: &str| {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("signed");
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).expect("write");
    };
    issue("localhost", "server");
    issue("ci-agent.example", "client");
    issue("other.example", "other");
    let rogue =
        rcgen::generate_simple_self_signed(vec!["ci-agent.example".to_string()]).expect("rogue");
    std::fs::write(dir.join("rogue.pem"), rogue.cert.pem()).expect("write");
    std::fs::write(dir.join("rogue.key"), rogue.signing_key.serialize_pem()).expect("write");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_the_cas_clients_and_refuses_the_rest() {
    let dir = pki("e2e");
    let (gateway, otlp, out) = common::gateway(OtlpConfig {
        tls: Some(TlsFiles {
            cert_file: dir.join("server.pem"),
            key_file: dir.join("server.key"),
            client_ca_file: Some(dir.join("ca.pem")),
            client_names: vec!["ci-agent.example".into()],
            ..TlsFiles::default()
        }),
        ..OtlpConfig::loopback()
    })
    .await;
    let addrs = otlp.local_addrs();
    let receiver = gateway
        .telemetry()
        .find(ComponentKind::Receiver, "otlp")
        .expect("receiver");
    let client = |file: Option<&str>| ClientTls {
        ca_file: Some(dir.join("ca.pem")),
        cert_file: file.map(|f| dir.join(format!("{f}.pem"))),
        key_file: file.map(|f| dir.join(format!("{f}.key"))),
        ..ClientTls::default()
    };
    let send = |port: u16, protocol: Protocol, tls: ClientTls| async move {
        let (agent, sender) = common::agent(OtlpExporterConfig {
            endpoint: format!("https://localhost:{port}"),
            protocol,
            tls,
            retry: otel_pipeline::exporters::otlp::RetryConfig {
                enabled: false,
                ..Default::default()
            },
            ..OtlpExporterConfig::default()
        })
        .await;
        sender
            .send(otel_pipeline::Batch::new(generate_traces(1, 2, 3)))
            .await
            .expect("queued");
        agent
            .shutdown(Duration::from_secs(5))
            .await
            .expect("agent stops");
    };
    let grpc = addrs.grpc.expect("grpc").port();
    let http = addrs.http.expect("http").port();
    // The CA's client for the allowed name: admitted over both protocols, with its name.
    send(grpc, Protocol::Grpc, client(Some("client"))).await;
    send(http, Protocol::HttpProtobuf, client(Some("client"))).await;
    assert!(eventually(Duration::from_secs(10), || out.item_count() == 4).await);
    for batch in out.batches() {
        let c = batch.client.as_ref().expect("client info");
        assert_eq!(
            (c.auth("subject"), c.auth("scheme")),
            (Some("ci-agent.example"), Some("mtls"))
        );
    }
    // No certificate: refused per request and counted; the CA's certificate for another
    // name: refused; a self-signed certificate: the handshake fails.
    send(grpc, Protocol::Grpc, client(None)).await;
    send(http, Protocol::HttpProtobuf, client(None)).await;
    send(http, Protocol::HttpProtobuf, client(Some("other"))).await;
    assert!(
        eventually(Duration::from_secs(5), || receiver
            .failed_requests("unauthenticated")
            == 3)
        .await,
        "refused: {}",
        receiver.failed_requests("unauthenticated")
    );
    send(http, Protocol::HttpProtobuf, client(Some("rogue"))).await;
    let handshakes = || {
        gateway
            .telemetry()
            .snapshot()
            .iter()
            .filter(|p| {
                p.name == "otelcol_receiver_closed_connections"
                    && p.attribute("reason") == Some("tls_handshake")
            })
            .map(|p| p.value)
            .sum::<i64>()
    };
    assert!(eventually(Duration::from_secs(5), || handshakes() >= 1).await);
    assert_eq!(out.item_count(), 4, "nothing from a refused client");
    let _ = std::fs::remove_dir_all(&dir);
    gateway
        .shutdown(Duration::from_secs(5))
        .await
        .expect("stops");
}

/// `insecure_skip_verify`, `server_name_override` and `min_version`, over gRPC (our
/// rustls connector, as tonic's TLS has none of them) and HTTP: an untrusted self-signed
/// certificate is refused by default and accepted unchecked when asked; a certificate for
/// `localhost` fits an address endpoint with the name overridden.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_tls_options_beyond_a_ca_file() {
    use otel_pipeline::exporters::otlp::TlsVersion;
    let (cert, key) = certificate("options");
    let (gateway, otlp, out) = common::gateway(OtlpConfig {
        tls: Some(TlsFiles {
            cert_file: cert.clone(),
            key_file: key,
            ..TlsFiles::default()
        }),
        ..OtlpConfig::loopback()
    })
    .await;
    let addrs = otlp.local_addrs();
    let mut expected = 0;
    for (protocol, addr) in [
        (Protocol::Grpc, addrs.grpc.expect("grpc")),
        (Protocol::HttpProtobuf, addrs.http.expect("http")),
    ] {
        let port = addr.port();
        let cases = [
            // Untrusted: refused.
            ("localhost", ClientTls::default(), false),
            (
                "localhost",
                ClientTls {
                    insecure_skip_verify: true,
                    ..ClientTls::default()
                },
                true,
            ),
            // The certificate names localhost; the endpoint is an address.
            (
                "127.0.0.1",
                ClientTls {
                    ca_file: Some(cert.clone()),
                    server_name_override: Some("localhost".into()),
                    min_version: Some(TlsVersion::V1_3),
                    ..ClientTls::default()
                },
                true,
            ),
            // Without the override, the address does not match the certificate.
            (
                "127.0.0.1",
                ClientTls {
                    ca_file: Some(cert.clone()),
                    min_version: Some(TlsVersion::V1_2),
                    max_version: Some(TlsVersion::V1_2),
                    ..ClientTls::default()
                },
                false,
            ),
        ];
        for (host, tls, admitted) in cases {
            let (agent, sender) = common::agent(OtlpExporterConfig {
                endpoint: format!("https://{host}:{port}"),
                protocol,
                tls: tls.clone(),
                timeout: Duration::from_secs(2),
                retry: otel_pipeline::exporters::otlp::RetryConfig {
                    enabled: false,
                    ..Default::default()
                },
                ..OtlpExporterConfig::default()
            })
            .await;
            let _ = sender.send(generate_traces(1, 1, 7)).await;
            agent
                .shutdown(Duration::from_secs(5))
                .await
                .expect("agent stops");
            if admitted {
                expected += 1;
            }
            assert!(
                eventually(Duration::from_secs(5), || out.item_count() == expected).await,
                "{protocol:?} to {host} with {tls:?}: admitted {admitted}"
            );
        }
    }
    gateway
        .shutdown(Duration::from_secs(5))
        .await
        .expect("gateway stops");

    // A receiver that accepts TLS 1.2 only: a client that insists on 1.3 fails the
    // handshake; one that offers both gets in.
    let (cert, key) = certificate("versions");
    let (gateway, otlp, out) = common::gateway(OtlpConfig {
        tls: Some(TlsFiles {
            cert_file: cert.clone(),
            key_file: key,
            max_version: Some(TlsVersion::V1_2),
            ..TlsFiles::default()
        }),
        ..OtlpConfig::loopback()
    })
    .await;
    let port = otlp.local_addrs().http.expect("http").port();
    for (min, admitted) in [(Some(TlsVersion::V1_3), 0), (None, 1)] {
        let (agent, sender) = common::agent(OtlpExporterConfig {
            endpoint: format!("https://localhost:{port}"),
            protocol: Protocol::HttpProtobuf,
            tls: ClientTls {
                ca_file: Some(cert.clone()),
                min_version: min,
                ..ClientTls::default()
            },
            retry: otel_pipeline::exporters::otlp::RetryConfig {
                enabled: false,
                ..Default::default()
            },
            ..OtlpExporterConfig::default()
        })
        .await;
        let _ = sender.send(generate_traces(1, 1, 8)).await;
        agent.shutdown(Duration::from_secs(5)).await.expect("stops");
        assert!(
            eventually(Duration::from_secs(5), || out.item_count() == admitted).await,
            "client min_version {min:?}"
        );
    }
    gateway
        .shutdown(Duration::from_secs(5))
        .await
        .expect("gateway stops");
}

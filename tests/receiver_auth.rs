//! Authentication on the OTLP receiver, over real sockets with the real `opentelemetry-otlp`
//! clients (gRPC and HTTP): good tokens admitted with their identity, bad, missing and
//! rotated-out tokens refused and counted, tokens rotated by rewriting the file without a
//! restart, and the tokens never printed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{Tracer, TracerProvider as _};
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::{
    Protocol as OtlpProtocol, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use otel_pipeline::receivers::{Authenticator, BearerTokens, OtlpConfig, Secret};
use otel_pipeline::testing::eventually;
use otel_pipeline::{ComponentKind, ComponentTelemetry};

mod common;

const GOOD: &str = "tok-static-7f3a";

enum Client {
    Grpc,
    Http,
}

/// Send one span with `token` (none: no header). The SDK's simple processor only logs a
/// failed export, so the receiver's counters tell what happened.
fn send(client: &Client, addr: std::net::SocketAddr, token: Option<&str>) {
    let exporter = match client {
        Client::Grpc => {
            let mut metadata = MetadataMap::new();
            if let Some(t) = token {
                metadata.insert(
                    "authorization",
                    format!("Bearer {t}").parse().expect("ascii"),
                );
            }
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(format!("http://{addr}"))
                .with_metadata(metadata)
                .with_timeout(Duration::from_secs(5))
                .build()
                .expect("gRPC client")
        }
        Client::Http => {
            let mut headers = HashMap::new();
            if let Some(t) = token {
                headers.insert("authorization".to_string(), format!("Bearer {t}"));
            }
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(OtlpProtocol::HttpBinary)
                .with_endpoint(format!("http://{addr}/v1/traces"))
                .with_headers(headers)
                .with_timeout(Duration::from_secs(5))
                .build()
                .expect("HTTP client")
        }
    };
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .build();
    provider.tracer("auth-test").in_span("op", |_| {});
    let _ = provider.force_flush();
    let _ = provider.shutdown();
}

fn receiver(t: &otel_pipeline::Telemetry) -> Arc<ComponentTelemetry> {
    t.find(ComponentKind::Receiver, "otlp").expect("receiver")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_admit_good_refuse_bad_and_rotate_from_the_file() {
    let dir = std::env::temp_dir().join(format!("otel-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("tokens");
    std::fs::write(
        &file,
        "# rotated by the secret manager\nci-agent tok-file-1\n",
    )
    .expect("write");
    let tokens = BearerTokens::new([Secret::new(GOOD)])
        .with_file(&file)
        .expect("token file");
    let config = OtlpConfig {
        auth: Some(Authenticator::Bearer(Arc::new(tokens))),
        ..OtlpConfig::loopback()
    };
    let printed = format!("{config:?}");
    assert!(
        !printed.contains(GOOD) && !printed.contains("tok-file-1"),
        "a token in Debug output: {printed}"
    );
    let (running, otlp, exported) = common::gateway(config).await;
    let addrs = otlp.local_addrs();
    let grpc = addrs.grpc.expect("grpc");
    let http = addrs.http.expect("http");
    let r = receiver(running.telemetry());

    let call = |client: Client, addr, token: Option<&'static str>| async move {
        tokio::task::spawn_blocking(move || send(&client, addr, token))
            .await
            .expect("client task");
    };
    // Good tokens, from the configuration and from the file, over both protocols.
    call(Client::Grpc, grpc, Some(GOOD)).await;
    call(Client::Http, http, Some(GOOD)).await;
    call(Client::Grpc, grpc, Some("tok-file-1")).await;
    assert!(eventually(Duration::from_secs(5), || exported.item_count() == 3).await);
    let subjects: Vec<String> = exported
        .batches()
        .iter()
        .filter_map(|b| b.client.as_ref()?.auth("subject").map(str::to_string))
        .collect();
    assert_eq!(subjects, ["token-0", "token-0", "ci-agent"]);
    assert_eq!(r.accepted(), 3);
    assert_eq!(r.failed_requests("unauthenticated"), 0);

    // Bad and missing tokens: refused before decoding, counted, nothing delivered.
    call(Client::Grpc, grpc, Some("tok-wrong")).await;
    call(Client::Http, http, Some("tok-wrong")).await;
    call(Client::Grpc, grpc, None).await;
    call(Client::Http, http, None).await;
    assert!(
        eventually(Duration::from_secs(5), || r
            .failed_requests("unauthenticated")
            >= 4)
        .await,
        "refusals counted: {}",
        r.failed_requests("unauthenticated")
    );
    assert_eq!(exported.item_count(), 3);
    assert_eq!(r.accepted(), 3);

    // Rotation: the file is rewritten; the old token stops working and the new one works,
    // with no restart.
    tokio::time::sleep(Duration::from_millis(600)).await;
    std::fs::write(&file, "ci-agent tok-file-2\n").expect("rewrite");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let refused = r.failed_requests("unauthenticated");
    call(Client::Http, http, Some("tok-file-1")).await;
    call(Client::Grpc, grpc, Some("tok-file-1")).await;
    assert!(
        eventually(Duration::from_secs(5), || r
            .failed_requests("unauthenticated")
            >= refused + 2)
        .await,
        "the rotated-out token was still accepted"
    );
    call(Client::Http, http, Some("tok-file-2")).await;
    call(Client::Grpc, grpc, Some("tok-file-2")).await;
    assert!(
        eventually(Duration::from_secs(5), || exported.item_count() == 5).await,
        "the new token was not accepted"
    );
    assert_eq!(r.failed_requests("unauthenticated"), refused + 2);

    // HTTP's refusal says how to authenticate.
    let stream = tokio::net::TcpStream::connect(http).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            http::Request::post("/v1/traces")
                .header("host", http.to_string())
                .header("content-type", "application/x-protobuf")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers().get("www-authenticate").map(|v| v.as_bytes()),
        Some(&b"Bearer realm=\"otlp\""[..])
    );
    let _ = std::fs::remove_dir_all(&dir);
    running
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

/// `htpasswd -B` output for user `ci-agent`, password `ci-pass-1` (cost 4, to keep the
/// test fast; the default 10 is slower on purpose).
const HTPASSWD: &str = "ci-agent:$2b$04$A0/ktE9T7zn9i5m/LjqG0ukue8iLiOEEJNl6fNyIGvcXZa7/5yE16\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_checks_bcrypt_htpasswd_users() {
    use otel_pipeline::receivers::BasicAuth;
    let dir = std::env::temp_dir().join(format!("otel-basic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("htpasswd");
    std::fs::write(&file, HTPASSWD).expect("write");
    let basic = BasicAuth::new("inline-user:plain-pass", Some(file.clone())).expect("users");
    let printed = format!("{basic:?}");
    assert!(
        !printed.contains("$2b$") && !printed.contains("plain-pass"),
        "{printed}"
    );
    let (running, otlp, exported) = common::gateway(OtlpConfig {
        auth: Some(Authenticator::Basic(Arc::new(basic))),
        ..OtlpConfig::loopback()
    })
    .await;
    let http = otlp.local_addrs().http.expect("http");
    let grpc = otlp.local_addrs().grpc.expect("grpc");
    let r = receiver(running.telemetry());
    // The header a `basicauth` exporter sends.
    let basic = |user: &str, pass: &str| {
        let ext = otel_pipeline::collector::auth::AuthExtension::Basic {
            htpasswd_file: None,
            htpasswd_inline: String::new(),
            client: Some((user.into(), pass.into())),
        };
        otel_pipeline::collector::auth::client_header(&ext)
            .expect("credentials")
            .1
    };
    let send_with = |client: Client, addr, value: String| async move {
        tokio::task::spawn_blocking(move || send_header(&client, addr, &value))
            .await
            .expect("client task");
    };
    // The file's bcrypt user and the inline plain user: admitted, over both protocols.
    send_with(Client::Http, http, basic("ci-agent", "ci-pass-1")).await;
    send_with(Client::Grpc, grpc, basic("ci-agent", "ci-pass-1")).await;
    send_with(Client::Http, http, basic("inline-user", "plain-pass")).await;
    assert!(eventually(Duration::from_secs(5), || exported.item_count() == 3).await);
    let subjects: Vec<String> = exported
        .batches()
        .iter()
        .filter_map(|b| b.client.as_ref()?.auth("subject").map(str::to_string))
        .collect();
    assert_eq!(subjects, ["ci-agent", "ci-agent", "inline-user"]);
    // Wrong password, unknown user, a bearer token instead: refused and counted.
    send_with(Client::Http, http, basic("ci-agent", "ci-pass-2")).await;
    send_with(Client::Grpc, grpc, basic("nobody", "ci-pass-1")).await;
    send_with(Client::Http, http, "Bearer ci-pass-1".into()).await;
    assert!(
        eventually(Duration::from_secs(5), || r
            .failed_requests("unauthenticated")
            == 3)
        .await,
        "refused: {}",
        r.failed_requests("unauthenticated")
    );
    assert_eq!(exported.item_count(), 3);
    let _ = std::fs::remove_dir_all(&dir);
    running
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

/// Send one span with `authorization: <value>`.
fn send_header(client: &Client, addr: std::net::SocketAddr, value: &str) {
    let exporter = match client {
        Client::Grpc => {
            let mut metadata = MetadataMap::new();
            metadata.insert("authorization", value.parse().expect("ascii"));
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(format!("http://{addr}"))
                .with_metadata(metadata)
                .build()
                .expect("gRPC client")
        }
        Client::Http => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(OtlpProtocol::HttpBinary)
            .with_endpoint(format!("http://{addr}/v1/traces"))
            .with_headers(HashMap::from([(
                "authorization".to_string(),
                value.to_string(),
            )]))
            .build()
            .expect("HTTP client"),
    };
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .build();
    provider.tracer("auth-test").in_span("op", |_| {});
    let _ = provider.force_flush();
    let _ = provider.shutdown();
}

/// A backend's UNAUTHENTICATED is permanent: our exporter does not retry it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_exporter_does_not_retry_an_unauthenticated_answer() {
    use otel_pipeline::exporters::otlp::{OtlpExporterConfig, Protocol, RetryConfig};
    let (running, otlp, _exported) = common::gateway(OtlpConfig {
        auth: Some(Authenticator::Bearer(Arc::new(BearerTokens::new([
            Secret::new("right"),
        ])))),
        ..OtlpConfig::loopback()
    })
    .await;
    let r = receiver(running.telemetry());
    for (protocol, addr) in [
        (Protocol::Grpc, otlp.local_addrs().grpc.expect("grpc")),
        (
            Protocol::HttpProtobuf,
            otlp.local_addrs().http.expect("http"),
        ),
    ] {
        let (agent, sender) = common::agent(OtlpExporterConfig {
            endpoint: format!("http://{addr}"),
            protocol,
            headers: vec![("authorization".into(), "Bearer wrong".into())],
            retry: RetryConfig {
                initial_interval: Duration::from_millis(10),
                max_interval: Duration::from_millis(20),
                max_elapsed: Duration::from_secs(2),
                ..RetryConfig::default()
            },
            ..OtlpExporterConfig::default()
        })
        .await;
        sender
            .send(otel_pipeline::testing::generate_traces(1, 1, 1))
            .await
            .expect("queued");
        let exporter = agent
            .telemetry()
            .find(ComponentKind::Exporter, "otlp")
            .expect("exporter");
        assert!(eventually(Duration::from_secs(5), || exporter.send_failed() == 1).await);
        agent.shutdown(Duration::from_secs(5)).await.expect("stops");
    }
    assert_eq!(r.failed_requests("unauthenticated"), 2, "one attempt each");
    running
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

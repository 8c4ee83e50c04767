//! Python's `opentelemetry-sdk` with its OTLP gRPC and HTTP exporters as real clients:
//! python -> agent (OTLP receiver -> OTLP exporter) -> gateway, every span intact.
//!
//! The Python packages come from `tests/python/requirements.txt`, installed by `.ci/run`
//! into `.venv`. Set `OTEL_PIPELINE_PYTHON` to use another interpreter. Without a Python
//! that has them (as `build.rs` finds when the tests are built), these tests are reported
//! as ignored, not passed.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use otel_pipeline::exporters::otlp::{OtlpExporterConfig, Protocol};
use otel_pipeline::proto::common::v1::any_value::Value as PV;
use otel_pipeline::proto::trace::v1::status::StatusCode;
use otel_pipeline::receivers::OtlpConfig;
use otel_pipeline::testing::eventually;

mod common;

fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("OTEL_PIPELINE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let ok = Command::new(&candidate)
        .args([
            "-c",
            "import opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http",
        ])
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(candidate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(python_sdk),
    ignore = "needs Python's opentelemetry-sdk: run .ci/run, or set OTEL_PIPELINE_PYTHON"
)]
async fn python_sdk_grpc_and_http_exporters() {
    let python = python().expect("build.rs found Python's opentelemetry-sdk; it is gone");
    let (gateway, gateway_otlp, exported) = common::gateway(OtlpConfig::loopback()).await;
    let (agent, agent_otlp) = common::otlp_agent(OtlpExporterConfig {
        endpoint: format!("http://{}", gateway_otlp.local_addrs().grpc.expect("grpc")),
        protocol: Protocol::Grpc,
        ..OtlpExporterConfig::default()
    })
    .await;

    let addrs = agent_otlp.local_addrs();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/send_traces.py");
    for (protocol, endpoint) in [
        ("grpc", format!("http://{}", addrs.grpc.expect("grpc"))),
        ("http", format!("http://{}", addrs.http.expect("http"))),
    ] {
        let out = tokio::task::spawn_blocking({
            let (python, script) = (python.clone(), script.clone());
            move || {
                Command::new(python)
                    .arg(script)
                    .args([protocol, &endpoint, "25"])
                    .output()
            }
        })
        .await
        .expect("join")
        .expect("python runs");
        assert!(
            out.status.success(),
            "python {protocol}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    assert!(
        eventually(Duration::from_secs(15), || exported.item_count() == 50).await,
        "got {} of 50 spans",
        exported.item_count()
    );
    let spans = exported.spans();
    for protocol in ["grpc", "http"] {
        for i in 0..25 {
            let name = format!("py-{protocol}-{i}");
            let span = spans
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("missing {name}"));
            let attr = |k: &str| {
                span.attributes
                    .iter()
                    .find(|a| a.key == k)
                    .and_then(|a| a.value.clone())
                    .and_then(|v| v.value)
            };
            assert_eq!(attr("http.route"), Some(PV::StringValue("/cart".into())));
            assert_eq!(attr("http.response.status_code"), Some(PV::IntValue(503)));
            assert_eq!(attr("retry"), Some(PV::BoolValue(true)));
            assert_eq!(span.events[0].name, "retrying");
            assert_eq!(
                span.links[0]
                    .span_id
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>(),
                "b7ad6b7169203331"
            );
            let status = span.status.as_ref().expect("status");
            assert_eq!(
                (status.code, status.message.as_str()),
                (StatusCode::Error as i32, "backend down")
            );
        }
    }
    let batch = &exported.batches()[0];
    let rs = &batch.data().resource_spans[0];
    assert!(
        rs.resource
            .as_ref()
            .expect("resource")
            .attributes
            .iter()
            .any(|a| a.key == "service.name")
    );
    let scope = rs.scope_spans[0].scope.as_ref().expect("scope");
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        ("py-client", "4.5.6")
    );
    agent
        .shutdown(Duration::from_secs(5))
        .await
        .expect("agent stops");
    gateway
        .shutdown(Duration::from_secs(5))
        .await
        .expect("gateway stops");
}

/// Python's exporters authenticate with the headers their users set
/// (`OTEL_EXPORTER_OTLP_HEADERS`): the right bearer token gets in over gRPC and HTTP, a
/// wrong one is refused and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(python_sdk),
    ignore = "needs Python's opentelemetry-sdk: run .ci/run, or set OTEL_PIPELINE_PYTHON"
)]
async fn python_sdk_exporters_authenticate_with_bearer_tokens() {
    use std::sync::Arc;

    use otel_pipeline::ComponentKind;
    use otel_pipeline::receivers::{Authenticator, BearerTokens, Secret};
    let python = python().expect("build.rs found Python's opentelemetry-sdk; it is gone");
    let (gateway, otlp, exported) = common::gateway(OtlpConfig {
        auth: Some(Authenticator::Bearer(Arc::new(BearerTokens::new([
            Secret::new("py-token-1"),
        ])))),
        ..OtlpConfig::loopback()
    })
    .await;
    let addrs = otlp.local_addrs();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/send_traces.py");
    let run = |protocol: &'static str, endpoint: String, token: &'static str| {
        let (python, script) = (python.clone(), script.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(python)
                .arg(script)
                .args([protocol, &endpoint, "3"])
                .env(
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    format!("authorization=Bearer%20{token}"),
                )
                .output()
        })
    };
    let grpc = format!("http://{}", addrs.grpc.expect("grpc"));
    let http = format!("http://{}", addrs.http.expect("http"));
    for (protocol, endpoint) in [("grpc", &grpc), ("http", &http)] {
        let out = run(protocol, endpoint.clone(), "py-token-1")
            .await
            .expect("join")
            .expect("python runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        eventually(Duration::from_secs(15), || exported.item_count() == 6).await,
        "got {} of 6 spans",
        exported.item_count()
    );
    for (protocol, endpoint) in [("grpc", &grpc), ("http", &http)] {
        let _ = run(protocol, endpoint.clone(), "not-the-token")
            .await
            .expect("join");
    }
    let receiver = gateway
        .telemetry()
        .find(ComponentKind::Receiver, "otlp")
        .expect("receiver");
    assert!(
        eventually(Duration::from_secs(15), || receiver
            .failed_requests("unauthenticated")
            >= 2)
        .await,
        "refused: {}",
        receiver.failed_requests("unauthenticated")
    );
    assert_eq!(exported.item_count(), 6);
    gateway
        .shutdown(Duration::from_secs(5))
        .await
        .expect("gateway stops");
}

/// The value of every series of `name` in a Prometheus scrape whose labels hold all of
/// `needles`, summed.
fn scraped(scrape: &str, name: &str, needles: &[&str]) -> f64 {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let metric = head.split('{').next()?;
            (metric == name && needles.iter().all(|n| head.contains(n)))
                .then(|| value.parse::<f64>().unwrap_or(f64::NAN))
        })
        .sum()
}

/// The dashboard gateway (`docs/examples/dashboards.yaml`) as written, with only its
/// ports, intervals and backend set by an override file: a Python SDK shop sends to it;
/// `spanmetrics` and `servicegraph` see every span before the tail sampler, the
/// `prometheus` exporter serves counts, errors and latency buckets equal to what was
/// sent, and the traces backend holds only the sampled share (every failed order whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(python_sdk),
    ignore = "needs Python's opentelemetry-sdk: run .ci/run, or set OTEL_PIPELINE_PYTHON"
)]
async fn python_shop_red_metrics_before_sampling_through_the_dashboard_gateway() {
    use otel_pipeline::collector::{CollectorConfig, ConfigFile};
    let python = python().expect("build.rs found Python's opentelemetry-sdk; it is gone");
    let (backend, backend_otlp, exported) = common::gateway(OtlpConfig::loopback()).await;
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
    };
    let (grpc, http, prom, health) = (port(), port(), port(), port());
    let dashboards = include_str!("../docs/examples/dashboards.yaml");
    let overrides = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc}\n      http:\n        endpoint: 127.0.0.1:{http}\n\
         connectors:\n  spanmetrics:\n    metrics_flush_interval: 200ms\n  servicegraph:\n    metrics_flush_interval: 200ms\n\
         processors:\n  tail_sampling:\n    decision_wait: 1s\n\
         exporters:\n  prometheus:\n    endpoint: 127.0.0.1:{prom}\n\
         extensions:\n  health_check:\n    endpoint: 127.0.0.1:{health}\n\
         service:\n  telemetry:\n    metrics:\n      level: none\n"
    );
    let backend_addr = backend_otlp.local_addrs().grpc.expect("grpc").to_string();
    let config = CollectorConfig::load(
        &[
            ConfigFile::new("dashboards.yaml", dashboards),
            ConfigFile::new("test-ports.yaml", overrides),
        ],
        |k| (k == "BACKEND_ENDPOINT").then(|| backend_addr.clone()),
        &otel_pipeline::default_registry(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let collector = config
        .build(
            &otel_pipeline::default_registry(),
            otel_pipeline::Telemetry::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .start()
        .await
        .expect("starts");

    let requests = 30usize;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/send_shop.py");
    let endpoint = format!("http://127.0.0.1:{grpc}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([endpoint, requests.to_string()])
            .output()
    })
    .await
    .expect("join")
    .expect("python runs");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let failed = (0..requests).filter(|i| i % 5 == 0).count() as f64;
    let took = |ms: usize| (0..requests).filter(|i| [3, 30, 300][i % 3] <= ms).count() as f64;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{prom}").parse().expect("addr");
    let calls = "traces_span_metrics_calls_total";
    let checkout = "service_name=\"py-checkout\"";
    let mut scrape = String::new();
    let complete = eventually(Duration::from_secs(15), || {
        if let Some((200, body)) = common::http_get(addr, "/metrics") {
            scrape = body;
        }
        scraped(&scrape, calls, &[]) == 3.0 * requests as f64
            && scraped(
                &scrape,
                "traces_service_graph_request_total",
                &["server=\"py-checkout\""],
            ) == requests as f64
    })
    .await;
    assert!(complete, "the metrics never counted every span:\n{scrape}");
    // Requests and errors, per service, from every span: none of them sampled away.
    assert_eq!(
        scraped(
            &scrape,
            calls,
            &[checkout, "span_kind=\"SPAN_KIND_SERVER\""]
        ),
        requests as f64
    );
    assert_eq!(
        scraped(
            &scrape,
            calls,
            &[checkout, "status_code=\"STATUS_CODE_ERROR\""]
        ),
        failed
    );
    assert_eq!(
        scraped(
            &scrape,
            calls,
            &[
                "service_name=\"py-frontend\"",
                "span_name=\"GET /cart\"",
                "http_route=\"/cart\""
            ]
        ),
        requests as f64
    );
    // Latency buckets of checkout: 3, 30 and 300 ms spans.
    let bucket = |le: &str| {
        scraped(
            &scrape,
            "traces_span_metrics_duration_milliseconds_bucket",
            &[checkout, &format!("le=\"{le}\"")],
        )
    };
    assert_eq!(bucket("5"), took(3));
    assert_eq!(bucket("50"), took(30));
    assert_eq!(bucket("500"), took(300));
    assert_eq!(bucket("+Inf"), requests as f64);
    assert!(scrape.contains("tier=\"gateway\""), "const_labels");
    // The service graph: py-frontend calls py-checkout, with the failures.
    let edge = ["client=\"py-frontend\"", "server=\"py-checkout\""];
    assert_eq!(
        scraped(&scrape, "traces_service_graph_request_failed_total", &edge),
        failed
    );
    assert_eq!(
        scraped(
            &scrape,
            "traces_service_graph_request_server_seconds_count",
            &edge
        ),
        requests as f64
    );

    // The backend: every failed order's trace whole, and not every trace.
    let failed_spans = 3 * failed as usize;
    assert!(
        eventually(Duration::from_secs(15), || exported.item_count()
            >= failed_spans)
        .await,
        "the backend has {} spans",
        exported.item_count()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spans = exported.spans();
    let errors = spans
        .iter()
        .filter(|s| {
            s.status
                .as_ref()
                .is_some_and(|st| st.code == StatusCode::Error as i32)
        })
        .count();
    assert_eq!(
        errors,
        2 * failed as usize,
        "client and server span of each failed order"
    );
    assert!(
        spans.len() < 3 * requests,
        "sampled, not everything: {}",
        spans.len()
    );
    assert_eq!(spans.len() % 3, 0, "traces arrive whole");
    collector
        .shutdown(Duration::from_secs(5))
        .await
        .expect("drains");
    backend
        .shutdown(Duration::from_secs(5))
        .await
        .expect("stops");
}

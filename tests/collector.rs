//! The YAML-driven collector: every class of configuration mistake named with its path and
//! its place in the user's file; the shipped agent and gateway configurations running end
//! to end on loopback (agent -> two gateways through the trace router -> backends); and
//! the `collector` example driven as a process.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use otel_pipeline::collector::{CollectorConfig, ConfigFile, RunningCollector};
use otel_pipeline::exporters::otlp::OtlpExporterConfig;
use otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline::proto::common::v1::{AnyValue, KeyValue, any_value::Value};
use otel_pipeline::proto::trace::v1::{Status, status::StatusCode};
use otel_pipeline::receivers::OtlpConfig;
use otel_pipeline::testing::{Exported, eventually, generate_traces};
use otel_pipeline::{Telemetry, Traces};

mod common;

const AGENT: &str = include_str!("../docs/examples/agent.yaml");
const GATEWAY: &str = include_str!("../docs/examples/gateway.yaml");

fn load(files: &[(&str, &str)]) -> Result<CollectorConfig, otel_pipeline::collector::LoadError> {
    let files: Vec<ConfigFile> = files.iter().map(|(n, t)| ConfigFile::new(*n, *t)).collect();
    CollectorConfig::load(
        &files,
        |name| (name == "GW_PORT").then(|| "4317".into()),
        &otel_pipeline::default_registry(),
    )
}

/// The single error of loading `yaml`: `(path, line, column, message)`.
fn error_of(yaml: &str) -> (String, usize, usize, String) {
    let err = load(&[("c.yaml", yaml)]).expect_err("must not load");
    let e = err.errors.first().expect("one error").clone();
    let at = e.location.clone().expect("placed in the file");
    assert_eq!(&*at.file, "c.yaml");
    (e.path, at.line, at.column, e.message)
}

const BASE: &str = "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:0\nexporters:\n  debug:\n";

#[test]
fn the_shipped_configurations_load_as_written() {
    let agent = load(&[("agent.yaml", AGENT)]).unwrap();
    assert_eq!(agent.pipeline_names().collect::<Vec<_>>(), ["traces"]);
    assert_eq!(
        agent.service_telemetry().metrics_address.as_deref(),
        Some("0.0.0.0:8888")
    );
    let gateway = load(&[("gateway.yaml", GATEWAY)]).unwrap();
    assert!(
        gateway
            .warnings()
            .iter()
            .any(|w| w.contains("extensions.pprof"))
    );
}

#[test]
fn every_class_of_mistake_names_its_path_line_and_column() {
    let pipeline =
        "service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n";
    // An unknown key inside a component.
    let (path, line, col, msg) = error_of(&format!(
        "{BASE}processors:\n  batch:\n    send_batch_sise: 10\n{pipeline}"
    ));
    assert_eq!(
        (path.as_str(), line, col),
        ("processors.batch.send_batch_sise", 10, 5),
        "{msg}"
    );
    assert!(msg.contains("unknown field"), "{msg}");
    // A bad value.
    let (path, line, col, msg) = error_of(&format!(
        "{BASE}processors:\n  batch:\n    timeout: soon\n{pipeline}"
    ));
    assert_eq!(
        (path.as_str(), line, col),
        ("processors.batch.timeout", 10, 5),
        "{msg}"
    );
    // A bad value deep in a list, checked by the component's own validation.
    let (path, line, _, msg) = error_of(&format!(
        "{BASE}processors:\n  tail_sampling:\n    policies:\n      - {{ name: a, type: always_sample }}\n      - {{ name: b, type: latency, latency: {{ threshold_ms: -5 }} }}\n{pipeline}"
    ));
    assert!(
        path.starts_with("processors.tail_sampling.policies[1]"),
        "{path}: {msg}"
    );
    assert_eq!(line, 12, "{path}: {msg}");
    // An unknown component type, and one the Collector has that we do not.
    let (path, line, col, msg) = error_of(&format!("{BASE}processors:\n  transfrom:\n{pipeline}"));
    assert_eq!((path.as_str(), line, col), ("processors.transfrom", 9, 3));
    assert!(msg.contains("unknown processor type `transfrom`"), "{msg}");
    let (_, _, _, msg) = error_of(&format!("{BASE}processors:\n  groupbytrace:\n{pipeline}"));
    assert!(
        msg.contains("of the OpenTelemetry Collector that this build does not include"),
        "{msg}"
    );
    // Used but not defined.
    let (path, line, col, msg) = error_of(&format!(
        "{BASE}service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [debug]\n"
    ));
    assert_eq!(
        (path.as_str(), line, col),
        ("service.pipelines.traces.processors[0]", 12, 20)
    );
    assert!(
        msg.contains("processor `batch` is used here but not defined"),
        "{msg}"
    );
    // Unknown keys at the top, in service, and in a pipeline; an unknown signal.
    let (path, line, col, _) = error_of(&format!("{BASE}{pipeline}recievers: {{}}\n"));
    assert_eq!((path.as_str(), line, col), ("recievers", 13, 1));
    let (path, ..) = error_of(&format!("{BASE}service:\n  pipeline:\n    traces: {{}}\n"));
    assert_eq!(path, "service.pipeline");
    let (path, line, col, _) = error_of(&format!(
        "{BASE}service:\n  pipelines:\n    spans:\n      receivers: [otlp]\n      exporters: [debug]\n"
    ));
    assert_eq!(
        (path.as_str(), line, col),
        ("service.pipelines.spans", 10, 5)
    );
    // Broken YAML.
    let (_, line, _, msg) = error_of("receivers:\n  otlp: [\n");
    assert!(line >= 2 && msg.contains("YAML"), "{line} {msg}");
    // A receiver address that is not one.
    let (path, ..) = error_of(&format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: nowhere\nexporters:\n  debug:\n{pipeline}"
    ));
    assert_eq!(path, "receivers.otlp.protocols.grpc.endpoint");
    // The router's own checks.
    let (path, line, ..) = error_of(&format!(
        "{BASE}  loadbalancing:\n    resolver:\n      dns:\n        hostname: gw\n        interval: soon\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [loadbalancing]\n"
    ));
    assert_eq!(
        (path.as_str(), line),
        ("exporters.loadbalancing.resolver.dns.interval", 12)
    );
}

/// `token: ${env:TOKEN}` with TOKEN unset would accept `Authorization: Bearer ` with an
/// empty credential: the load refuses it and names the key.
#[test]
fn an_empty_bearer_token_is_refused_at_load_naming_the_key() {
    let pipeline = "service:\n  extensions: [bearertokenauth/server]\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n";
    let (path, line, _, msg) = error_of(&format!(
        "extensions:\n  bearertokenauth/server:\n    token: ${{env:UNSET_TOKEN}}\n{BASE}{pipeline}"
    ));
    assert_eq!(path, "extensions.bearertokenauth/server.token", "{msg}");
    assert_eq!(line, 3, "{msg}");
    assert!(msg.contains("empty"), "{msg}");
    let (path, _, _, msg) = error_of(&format!(
        "extensions:\n  bearertokenauth/server:\n    tokens: [good, \"\"]\n{BASE}{pipeline}"
    ));
    assert_eq!(path, "extensions.bearertokenauth/server.tokens[1]", "{msg}");
}

#[test]
fn several_files_merge_in_order_with_environment_values() {
    // (A `${...}` goes in a block list or quotes: braces are flow indicators in YAML.)
    let override_yaml = "exporters:\n  loadbalancing:\n    resolver:\n      k8s: null\n      static:\n        hostnames:\n          - gw-a:${env:GW_PORT}\n";
    let config = load(&[("agent.yaml", AGENT), ("override.yaml", override_yaml)]).unwrap();
    assert_eq!(config.pipeline_names().count(), 1);
    // A mistake in the second file is placed there.
    let err = load(&[
        ("agent.yaml", AGENT),
        ("bad.yaml", "processors:\n  batch:\n    timout: 1s\n"),
    ])
    .unwrap_err();
    let e = &err.errors[0];
    assert_eq!(e.path, "processors.batch.timout");
    let at = e.location.as_ref().unwrap();
    assert_eq!((&*at.file, at.line, at.column), ("bad.yaml", 3, 5));
    // `100_000` is a number, as the Collector reads it.
    let ok = format!(
        "{BASE}processors:\n  tail_sampling:\n    num_traces: 100_000\n    policies: [{{ name: all, type: always_sample }}]\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [tail_sampling]\n      exporters: [debug]\n"
    );
    load(&[("c.yaml", &ok)]).unwrap();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Self-metrics on a port of their own, so collectors in parallel tests do not share
/// the shipped configs' `:8888` (`level: none` in a test's file still turns them off).
const OWN_METRICS_PORT: (&str, &str) = (
    "metrics-port.yaml",
    "service:\n  telemetry:\n    metrics:\n      address: 127.0.0.1:0\n",
);

/// `files` as [`start`] loads them: with [`OWN_METRICS_PORT`] last. A reload loads the
/// same way, so the only differences are the test's own.
fn load_to_run(
    files: &[(&str, &str)],
) -> Result<CollectorConfig, otel_pipeline::collector::LoadError> {
    let files: Vec<(&str, &str)> = files
        .iter()
        .copied()
        .chain(std::iter::once(OWN_METRICS_PORT))
        .collect();
    load(&files)
}

async fn start(files: &[(&str, &str)]) -> RunningCollector {
    let config = load_to_run(files).unwrap_or_else(|e| panic!("{e}"));
    config
        .build(&otel_pipeline::default_registry(), Telemetry::new())
        .unwrap_or_else(|e| panic!("{e}"))
        .start()
        .await
        .expect("collector starts")
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// Traces from a service: every 5th an error, every 7th a health check, secrets on some.
fn workload(
    seed: u64,
) -> (
    ExportTraceServiceRequest,
    HashSet<Vec<u8>>,
    HashSet<Vec<u8>>,
) {
    let mut data = generate_traces(60, 4, seed);
    let mut errors = HashSet::new();
    let mut health = HashSet::new();
    let spans = &mut data.resource_spans[0].scope_spans[0].spans;
    for (i, span) in spans.iter_mut().enumerate() {
        let trace = i / 4;
        span.attributes.retain(|a| a.key != "http.route");
        if trace % 7 == 3 {
            span.attributes.push(kv("http.route", "/healthz"));
            health.insert(span.trace_id.clone());
            continue;
        }
        if trace % 5 == 0 {
            if i % 4 == 1 {
                span.status = Some(Status {
                    code: StatusCode::Error as i32,
                    message: "boom".into(),
                });
            }
            errors.insert(span.trace_id.clone());
        }
        span.attributes
            .push(kv("http.request.header.authorization", "Bearer s3cr3t"));
        span.attributes.push(kv(
            "db.statement",
            "SELECT * FROM cards WHERE pan = '4111111111111111'",
        ));
    }
    (data, errors, health)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_agent_and_gateways_run_end_to_end() {
    // Two backends, one per gateway, so a trace split across gateways would show.
    let backends = [
        common::gateway(OtlpConfig::loopback()).await,
        common::gateway(OtlpConfig::loopback()).await,
    ];
    let backend_addr = |i: usize| backends[i].1.local_addrs().grpc.unwrap();
    let gw_ports = [free_port(), free_port()];
    let mut gateways = Vec::new();
    for (i, port) in gw_ports.iter().enumerate() {
        let override_yaml = format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: 127.0.0.1:{port} }}\n      http: {{ endpoint: 127.0.0.1:0 }}\n\
             processors:\n  tail_sampling:\n    decision_wait: 500ms\n  batch:\n    timeout: 100ms\n\
             exporters:\n  otlp/backend:\n    endpoint: {}\n\
             extensions:\n  health_check:\n    endpoint: 127.0.0.1:0\n\
             service:\n  telemetry:\n    metrics: {{ level: none }}\n",
            backend_addr(i)
        );
        gateways.push(
            start(&[
                ("gateway.yaml", GATEWAY),
                ("gateway-test.yaml", &override_yaml),
            ])
            .await,
        );
    }
    let agent_port = free_port();
    let agent_override = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: 127.0.0.1:{agent_port} }}\n      http: {{ endpoint: 127.0.0.1:0 }}\n\
         processors:\n  batch:\n    timeout: 100ms\n  k8sattributes:\n    passthrough: true\n\
         exporters:\n  loadbalancing:\n    resolver:\n      k8s: null\n      static:\n        hostnames: [127.0.0.1:{}, 127.0.0.1:{}]\n\
         extensions:\n  health_check:\n    endpoint: 127.0.0.1:0\n",
        gw_ports[0], gw_ports[1]
    );
    let agent = start(&[("agent.yaml", AGENT), ("agent-test.yaml", &agent_override)]).await;
    assert!(agent.health().is_ready());

    // A service sends to the agent over OTLP.
    let (client, sender) = common::fast_retry_agent(format!("http://127.0.0.1:{agent_port}")).await;
    let mut errors = HashSet::new();
    let mut health = HashSet::new();
    for seed in 0..5 {
        let (data, e, h) = workload(100 + seed);
        errors.extend(e);
        health.extend(h);
        sender.send(data).await.unwrap();
    }
    client.shutdown(Duration::from_secs(5)).await.unwrap();

    let at = |b: &Exported<Traces>| b.spans();
    assert!(
        eventually(Duration::from_secs(15), || {
            let ids: HashSet<Vec<u8>> = backends
                .iter()
                .flat_map(|b| at(&b.2))
                .map(|s| s.trace_id)
                .collect();
            errors.iter().all(|e| ids.contains(e))
        })
        .await,
        "error traces missing at the backends"
    );
    // Let the rest of the decisions land, then check everything.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut owner: HashMap<Vec<u8>, HashSet<usize>> = HashMap::new();
    let mut per_trace: HashMap<Vec<u8>, usize> = HashMap::new();
    for (i, b) in backends.iter().enumerate() {
        for span in at(&b.2) {
            owner.entry(span.trace_id.clone()).or_default().insert(i);
            *per_trace.entry(span.trace_id.clone()).or_default() += 1;
            assert!(
                !health.contains(&span.trace_id),
                "a health check reached a backend"
            );
            for a in &span.attributes {
                assert_ne!(
                    a.key, "http.request.header.authorization",
                    "a credential reached a backend"
                );
                if let Some(Value::StringValue(v)) = a.value.as_ref().and_then(|v| v.value.as_ref())
                {
                    assert!(
                        !v.contains("4111111111111111"),
                        "a card number reached a backend: {v}"
                    );
                    assert!(!v.contains("s3cr3t"), "a token reached a backend: {v}");
                }
            }
        }
    }
    assert_eq!(
        owner.values().filter(|g| g.len() > 1).count(),
        0,
        "a trace split across gateways"
    );
    for e in &errors {
        assert_eq!(per_trace.get(e), Some(&4), "error trace arrived whole");
    }
    assert!(owner.values().any(|g| g.contains(&0)) && owner.values().any(|g| g.contains(&1)));

    let telemetries: Vec<Telemetry> = std::iter::once(agent.telemetry().clone())
        .chain(gateways.iter().map(|g| g.telemetry().clone()))
        .collect();
    agent.shutdown(Duration::from_secs(5)).await.unwrap();
    for g in gateways {
        g.shutdown(Duration::from_secs(5)).await.unwrap();
    }
    // Every span is accounted for at every stage of the agent and both gateways.
    for t in &telemetries {
        otel_pipeline::testing::assert_balanced(t);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_process_serves_health_and_metrics_and_drains_on_sigterm() {
    let bin = common::collector_bin();
    let (backend, backend_otlp, exported) = common::gateway(OtlpConfig::loopback()).await;
    let (grpc, health, metrics) = (free_port(), free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("otel-collector-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let override_path = dir.join("override.yaml");
    std::fs::write(
        &override_path,
        format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: 127.0.0.1:{grpc} }}\n      http: {{ endpoint: 127.0.0.1:0 }}\n\
             processors:\n  tail_sampling:\n    decision_wait: 300ms\n    policies: [{{ name: all, type: always_sample }}]\n  batch:\n    timeout: 100ms\n\
             extensions:\n  health_check:\n    endpoint: 127.0.0.1:{health}\n\
             service:\n  telemetry:\n    metrics: {{ address: 127.0.0.1:{metrics} }}\n"
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(&bin)
        .args(["--config", "docs/examples/gateway.yaml", "--config"])
        .arg(&override_path)
        .args(["--shutdown-timeout", "10s"])
        .env(
            "BACKEND_ENDPOINT",
            format!("http://{}", backend_otlp.local_addrs().grpc.unwrap()),
        )
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let health_addr: SocketAddr = format!("127.0.0.1:{health}").parse().unwrap();
    assert!(
        eventually(Duration::from_secs(20), || common::http_get(
            health_addr,
            "/"
        )
        .is_some_and(|(s, _)| s == 200))
        .await,
        "health_check never answered ready"
    );
    // OTLP in.
    let (client, sender) = common::agent(OtlpExporterConfig {
        endpoint: format!("http://127.0.0.1:{grpc}"),
        ..OtlpExporterConfig::default()
    })
    .await;
    sender.send(generate_traces(50, 4, 7)).await.unwrap();
    client.shutdown(Duration::from_secs(5)).await.unwrap();
    let metrics_addr: SocketAddr = format!("127.0.0.1:{metrics}").parse().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || common::http_get(
            metrics_addr,
            "/metrics"
        )
        .is_some_and(|(s, body)| {
            s == 200
                && body.contains(
                    "otelcol_receiver_accepted_spans_total{receiver=\"otlp\",pipeline=\"traces\"} 200",
                )
        }))
        .await,
        "{:?}",
        common::http_get(metrics_addr, "/metrics")
    );
    // SIGTERM while the sampler still holds the traces: they are decided and delivered.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let waited = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(waited.success(), "exit status {waited:?}");
    assert!(
        eventually(Duration::from_secs(5), || exported.item_count() == 200).await,
        "{} of 200 spans delivered",
        exported.item_count()
    );
    backend.shutdown(Duration::from_secs(5)).await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn options_the_collectors_configs_use_load() {
    let yaml = format!(
        "{BASE}processors:\n  batch:\n    send_batch_size: 0\n    timeout: 0s\n    metadata_keys: [tenant]\n    metadata_cardinality_limit: 100\n\
         \x20 memory_limiter:\n    check_interval: 1s\n    limit_mib: 4000\n    min_gc_interval_when_soft_limited: 10s\n    min_gc_interval_when_hard_limited: 5s\n\
         \x20 tail_sampling:\n    decision_cache:\n      sampled_cache_size: 100_000\n    policies:\n      - {{ name: r, type: rate_limiting, rate_limiting: {{ spans_per_second: 100, burst_capacity: 200 }} }}\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [memory_limiter, tail_sampling, batch]\n      exporters: [debug]\n"
    );
    if let Err(e) = load(&[("c.yaml", &yaml)]) {
        panic!("{e}");
    }
}

#[test]
fn the_shipped_agent_follows_the_gateways_through_the_k8s_resolver() {
    let agent = load(&[("agent.yaml", AGENT)]).unwrap();
    drop(agent);
    // An override file swaps in a static list: `k8s: null` clears the merged key.
    let static_list = "exporters:\n  loadbalancing:\n    resolver:\n      k8s: null\n      static:\n        hostnames: [gw-a:4317]\n";
    load(&[("agent.yaml", AGENT), ("static.yaml", static_list)]).unwrap();
    // Both at once is a mistake that names its path.
    let both = "exporters:\n  loadbalancing:\n    resolver:\n      static:\n        hostnames: [gw-a:4317]\n";
    let err = load(&[("agent.yaml", AGENT), ("both.yaml", both)]).unwrap_err();
    assert_eq!(
        err.errors[0].path, "exporters.loadbalancing.resolver",
        "{err}"
    );
}

/// Authentication and limits as operations teams write them: a gateway whose receiver asks
/// for `bearertokenauth/server` (tokens from a file) with the Collector's limit keys, an
/// agent whose exporter sends `bearertokenauth/client`, and one whose `basicauth/client`
/// credentials the gateway does not accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticators_and_limits_load_and_run_from_yaml() {
    let dir = std::env::temp_dir().join(format!("otel-yaml-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "edge-agents tok-from-file\n").expect("write");
    let (backend, backend_otlp, kept) = common::gateway(OtlpConfig::loopback()).await;
    let gw_port = free_port();
    let gateway_yaml = format!(
        r#"
extensions:
  bearertokenauth/server:
    filename: {tokens}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{gw_port}
        auth: {{ authenticator: bearertokenauth/server }}
        max_concurrent_streams: 50
        keepalive:
          server_parameters: {{ max_connection_idle: 60s, time: 30s, timeout: 5s }}
          enforcement_policy: {{ min_time: 10s, permit_without_stream: true }}
      http:
        endpoint: 127.0.0.1:0
        auth: {{ authenticator: bearertokenauth/server }}
        read_header_timeout: 5s
        read_timeout: 20s
        idle_timeout: 90s
        max_request_body_size: 2097152
exporters:
  otlp:
    endpoint: {backend}
    tls: {{ insecure: true }}
service:
  extensions: [bearertokenauth/server]
  telemetry:
    metrics: {{ level: none }}
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
"#,
        tokens = tokens.display(),
        backend = backend_otlp.local_addrs().grpc.expect("grpc"),
    );
    let gateway = start(&[("gateway.yaml", &gateway_yaml)]).await;
    let agent = |ext: &str, settings: &str| {
        let port = free_port();
        (
            port,
            format!(
                r#"
extensions:
  {ext}:
{settings}
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: 127.0.0.1:{port} }}
exporters:
  otlp:
    endpoint: 127.0.0.1:{gw_port}
    tls: {{ insecure: true }}
    auth: {{ authenticator: {ext} }}
    retry_on_failure: {{ enabled: false }}
service:
  extensions: [{ext}]
  telemetry:
    metrics: {{ level: none }}
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
"#
            ),
        )
    };
    let (good_port, good) = agent("bearertokenauth/client", "    token: tok-from-file");
    let (bad_port, bad) = agent(
        "basicauth/client",
        "    client_auth: { username: edge, password: wrong }",
    );
    // Credentials never show: not in a loaded configuration's Debug, not in errors.
    let loaded = load(&[("agent.yaml", &good)]).expect("loads");
    assert!(!format!("{loaded:?}").contains("tok-from-file"));
    let broken = good.replace("token: tok-from-file", "token: tok-from-file\n    tokn: x");
    let err = load(&[("agent.yaml", &broken)])
        .expect_err("unknown key")
        .to_string();
    assert!(
        err.contains("tokn") && !err.contains("tok-from-file"),
        "{err}"
    );
    let good = start(&[("agent.yaml", &good)]).await;
    let bad = start(&[("agent.yaml", &bad)]).await;
    for port in [good_port, bad_port] {
        let (client, sender) = common::agent(OtlpExporterConfig {
            endpoint: format!("http://127.0.0.1:{port}"),
            ..OtlpExporterConfig::default()
        })
        .await;
        sender
            .send(generate_traces(1, 3, u64::from(port)))
            .await
            .expect("queued");
        client
            .shutdown(Duration::from_secs(5))
            .await
            .expect("stops");
    }
    assert!(
        eventually(Duration::from_secs(10), || kept.item_count() == 3).await,
        "the authenticated agent's spans arrive"
    );
    let refused = || {
        gateway
            .telemetry()
            .find(otel_pipeline::ComponentKind::Receiver, "otlp")
            .map_or(0, |r| r.failed_requests("unauthenticated"))
    };
    assert!(
        eventually(Duration::from_secs(10), || refused() >= 1).await,
        "the other agent was refused and counted"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(kept.item_count(), 3, "nothing from the refused agent");
    // Nor in self-telemetry.
    for c in [&good, &bad, &gateway] {
        let text = format!("{:?}", c.telemetry().snapshot());
        assert!(!text.contains("tok-from-file") && !text.contains("wrong"));
    }
    for c in [good, bad, gateway] {
        c.shutdown(Duration::from_secs(5)).await.expect("stops");
    }
    backend
        .shutdown(Duration::from_secs(5))
        .await
        .expect("stops");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A listen address another process holds is found when the collector is built, before
/// anything starts, and the error points at the endpoint in the user's file.
#[test]
fn a_port_in_use_fails_the_build_at_its_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let yaml = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{port}\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n"
    );
    let config = load(&[("c.yaml", &yaml)]).expect("loads: --validate does not bind ports");
    let err = config
        .build(&otel_pipeline::default_registry(), Telemetry::new())
        .expect_err("the port is taken");
    let e = &err.errors[0];
    assert_eq!(e.path, "receivers.otlp.protocols.grpc.endpoint", "{err}");
    let at = e.location.clone().expect("placed in the file");
    assert_eq!(at.line, 5, "{err}");
    assert!(e.message.contains("cannot listen"), "{err}");
}

/// What depends on the host (certificate files, free ports) is left out of `load`, so
/// `--validate` works off the target host; `check_host` finds it, and `build` refuses it.
#[test]
fn host_checks_are_apart_from_loading() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let yaml = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{port}\n      http:\n        endpoint: 127.0.0.1:0\n        tls:\n          cert_file: /nonexistent/cert.pem\n          key_file: /nonexistent/key.pem\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n"
    );
    let config = load(&[("c.yaml", &yaml)]).expect("loads off-host");
    let registry = otel_pipeline::default_registry();
    let found = config.check_host(&registry);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].message.contains("/nonexistent/cert.pem"),
        "{found:?}"
    );
    assert!(config.build(&registry, Telemetry::new()).is_err());
}

/// CORS from both of the Collector's shapes (`cors:` and the older
/// `cors_allowed_origins`), and never on gRPC.
#[test]
fn cors_loads_from_both_collector_shapes_and_not_on_grpc() {
    let with = |protocols: &str| {
        format!(
            "receivers:\n  otlp:\n    protocols:\n{protocols}\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n"
        )
    };
    load(&[("c.yaml", &with("      http:\n        endpoint: 127.0.0.1:0\n        cors:\n          allowed_origins: [\"https://*.example\"]\n          max_age: 7200"))])
        .expect("cors loads");
    load(&[("c.yaml", &with("      http:\n        endpoint: 127.0.0.1:0\n        cors_allowed_origins: [\"http://localhost:3000\"]"))])
        .expect("the older keys load");
    let (path, _, _, message) = error_of(&with(
        "      grpc:\n        endpoint: 127.0.0.1:0\n        cors:\n          allowed_origins: [\"*\"]",
    ));
    assert_eq!(path, "receivers.otlp.protocols.grpc.cors", "{message}");
}

/// One configuration file, as the collector example reads it.
fn load_text(
    name: &str,
    text: String,
) -> Result<CollectorConfig, otel_pipeline::collector::LoadError> {
    CollectorConfig::load(
        &[
            ConfigFile::new(name, text),
            ConfigFile::new(OWN_METRICS_PORT.0, OWN_METRICS_PORT.1),
        ],
        |_| None,
        &otel_pipeline::default_registry(),
    )
}

/// The collector's configuration file changes while traffic flows: the tail sampler's
/// rate goes from 5 % to 50 % in place, buffered traces stay and are decided, and an
/// invalid change is refused with its line while the running policies keep running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sampling_rate_changes_live_through_the_config_file() {
    let backend = common::gateway(OtlpConfig::loopback()).await;
    let backend_addr = backend.1.local_addrs().grpc.unwrap();
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("otel-pipeline-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gateway.yaml");
    let yaml = |rate: &str| {
        format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: 127.0.0.1:{port} }}\n\
             processors:\n  tail_sampling:\n    decision_wait: 300ms\n    policies:\n      - name: rest\n        type: probabilistic\n        probabilistic: {{ sampling_percentage: {rate} }}\n\
             exporters:\n  otlp/backend:\n    endpoint: http://{backend_addr}\n\
             service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [tail_sampling]\n      exporters: [otlp/backend]\n"
        )
    };
    let load_file = || load_text("gateway.yaml", std::fs::read_to_string(&file).unwrap());
    std::fs::write(&file, yaml("5")).unwrap();
    let running = load_file()
        .unwrap_or_else(|e| panic!("{e}"))
        .build(&otel_pipeline::default_registry(), Telemetry::new())
        .unwrap_or_else(|e| panic!("{e}"))
        .start()
        .await
        .expect("collector starts");
    let (client, sender) = common::agent(OtlpExporterConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        ..OtlpExporterConfig::default()
    })
    .await;
    let decided = || {
        running.telemetry().sum(
            "otelcol_processor_tail_sampling_decisions",
            &[("policy", "(final)")],
        )
    };
    let kept = || backend.2.spans().len();
    // Sends `n` one-span traces; waits until all are decided; returns the share kept.
    async fn wave(
        sender: &otel_pipeline::DirectSender<Traces>,
        seed: u64,
        n: usize,
        decided: impl Fn() -> i64,
        kept: impl Fn() -> usize,
    ) -> f64 {
        let (before, kept_before) = (decided(), kept());
        for part in 0..4 {
            sender
                .send(generate_traces(n / 4, 1, seed * 10 + part))
                .await
                .unwrap();
        }
        assert!(
            eventually(Duration::from_secs(10), || decided() - before == n as i64).await,
            "decided {} of {n}",
            decided() - before
        );
        // Kept spans reach the backend soon after their decision.
        tokio::time::sleep(Duration::from_millis(500)).await;
        (kept() - kept_before) as f64 / n as f64
    }
    let share = wave(&sender, 1, 4000, decided, kept).await;
    assert!((0.02..0.08).contains(&share), "5 %: kept {share}");

    // Traces buffered when the file changes stay buffered and are decided once.
    for part in 0..4 {
        sender
            .send(generate_traces(250, 1, 900 + part))
            .await
            .unwrap();
    }
    std::fs::write(&file, yaml("50")).unwrap();
    let done = running
        .reload(&load_file().unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.applied, ["processors.tail_sampling"]);
    assert!(eventually(Duration::from_secs(10), || decided() == 5000).await);
    // The traces kept from that buffer reach the backend soon after their decision: let
    // them land before the next wave counts what it keeps.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let share = wave(&sender, 2, 4000, decided, kept).await;
    assert!((0.42..0.58).contains(&share), "50 %: kept {share}");

    // An invalid change is refused with its line; 50 % keeps running.
    std::fs::write(&file, yaml("500")).unwrap();
    let err = load_file().expect_err("500 % is not a rate");
    let e = &err.errors[0];
    assert!(
        e.path.starts_with("processors.tail_sampling.policies[0]"),
        "{err}"
    );
    assert!(e.location.as_ref().is_some_and(|at| at.line > 1), "{err}");
    let share = wave(&sender, 3, 4000, decided, kept).await;
    assert!((0.42..0.58).contains(&share), "still 50 %: kept {share}");

    // Nothing was dropped but what the policies did not keep.
    let dropped_other: i64 = running
        .telemetry()
        .snapshot()
        .iter()
        .filter(|p| p.name == "otelcol_processor_dropped_spans")
        .filter(|p| p.attribute("reason") != Some("not_sampled"))
        .map(|p| p.value)
        .sum();
    assert_eq!(dropped_other, 0);
    client.shutdown(Duration::from_secs(5)).await.unwrap();
    running.shutdown(Duration::from_secs(5)).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Filter conditions and redaction rules change in place on reload, from the next batch
/// on; an invalid condition is refused with its line and the running filter stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_and_redaction_rules_change_in_place() {
    let backend = common::gateway(OtlpConfig::loopback()).await;
    let backend_addr = backend.1.local_addrs().grpc.unwrap();
    let port = free_port();
    let yaml = |condition: &str, blocked: &str| {
        format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: 127.0.0.1:{port} }}\n\
             processors:\n  filter/noise:\n    traces:\n      span:\n        - '{condition}'\n  redaction:\n    allow_all_keys: true\n    blocked_values: ['{blocked}']\n\
             exporters:\n  otlp/backend:\n    endpoint: http://{backend_addr}\n\
             service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [filter/noise, redaction]\n      exporters: [otlp/backend]\n"
        )
    };
    let load = |text: String| load_text("c.yaml", text);
    let running = load(yaml(r#"name == "SELECT orders 1""#, "orders\\.svc"))
        .unwrap_or_else(|e| panic!("{e}"))
        .build(&otel_pipeline::default_registry(), Telemetry::new())
        .unwrap_or_else(|e| panic!("{e}"))
        .start()
        .await
        .expect("starts");
    let (client, sender) = common::agent(OtlpExporterConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        ..OtlpExporterConfig::default()
    })
    .await;
    // generate_traces: each trace is `GET /api/orders` and `SELECT orders 1..3`, with
    // `server.address = orders.svc` on every span.
    let got = |n: usize| {
        let spans = backend.2.spans();
        (spans.len() >= n).then_some(spans)
    };
    sender.send(generate_traces(10, 4, 1)).await.unwrap();
    assert!(eventually(Duration::from_secs(10), || got(30).is_some()).await);
    let before = backend.2.spans();
    assert_eq!(before.len(), 30, "one span of four filtered");
    let address = |s: &otel_pipeline::proto::trace::v1::Span| {
        s.attributes
            .iter()
            .find(|kv| kv.key == "server.address")
            .and_then(|kv| kv.value.clone())
    };
    assert_eq!(
        address(&before[0]),
        Some(AnyValue {
            value: Some(Value::StringValue("****".into()))
        })
    );

    // New rules: every SELECT span goes, and only `svc` is masked.
    let done = running
        .reload(&load(yaml(r#"IsMatch(name, "^SELECT")"#, "svc")).unwrap())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        done.applied,
        ["processors.filter/noise", "processors.redaction"]
    );
    sender.send(generate_traces(10, 4, 2)).await.unwrap();
    assert!(eventually(Duration::from_secs(10), || got(40).is_some()).await);
    let after: Vec<_> = backend.2.spans().split_off(30);
    assert_eq!(after.len(), 10, "only the roots pass: {after:?}");
    assert_eq!(
        address(&after[0]),
        Some(AnyValue {
            value: Some(Value::StringValue("orders.****".into()))
        })
    );

    // A condition that does not parse: refused with its line; the filter stays.
    let err = load(yaml("name ==", "svc")).expect_err("does not parse");
    assert!(
        err.errors[0]
            .path
            .starts_with("processors.filter/noise.traces.span[0]"),
        "{err}"
    );
    sender.send(generate_traces(10, 4, 3)).await.unwrap();
    assert!(eventually(Duration::from_secs(10), || got(50).is_some()).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(backend.2.spans().len(), 50);
    client.shutdown(Duration::from_secs(5)).await.unwrap();
    running.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// The tail sampler's `handoff.exporter` names a trace exporter under `exporters`; a name
/// that is not there, an exporter that takes no traces, or an exporter whose own section
/// is wrong fail the load at the right line.
#[test]
fn the_handoff_exporter_is_checked_where_it_is_named_and_defined() {
    let with = |handoff: &str, exporters: &str| {
        format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:0\n\
             processors:\n  tail_sampling:\n    handoff: {{ exporter: {handoff} }}\n    \
             policies: [{{ name: all, type: always_sample }}]\n\
             exporters:\n  debug:\n{exporters}\
             service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      \
             processors: [tail_sampling]\n      exporters: [debug]\n"
        )
    };
    let peers = "  loadbalancing/peers:\n    protocol: { otlp: { sending_queue: { enabled: false } } }\n    \
                 resolver: { static: { hostnames: [10.0.0.1:4317, 10.0.0.2:4317] } }\n    \
                 exclude_endpoints: [10.0.0.1:4317]\n";
    load(&[("c.yaml", &with("loadbalancing/peers", peers))]).expect("a hand-off loads");

    let (path, line, _, message) = error_of(&with("loadbalancing/nope", peers));
    assert_eq!(path, "processors.tail_sampling.handoff.exporter");
    assert_eq!(line, 8);
    assert!(message.contains("not defined under exporters"), "{message}");

    let bad = "  loadbalancing/peers:\n    resolver: { static: { hostnames: [10.0.0.1:4317] } }\n    \
               exclude_endpoints: ['not a host']\n";
    let (path, line, _, _) = error_of(&with("loadbalancing/peers", bad));
    assert_eq!(path, "exporters.loadbalancing/peers.exclude_endpoints[0]");
    assert_eq!(line, 14);
}

/// The collector process on a file that changes: a batch timeout changes in place, and a
/// new exporter endpoint rebuilds the collector in process, draining first. Every span
/// sent reaches the backend of its time, none twice, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_sizes_change_in_place_and_other_changes_rebuild_without_loss() {
    let bin = common::collector_bin();
    let a = common::gateway(OtlpConfig::loopback()).await;
    let b = common::gateway(OtlpConfig::loopback()).await;
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("otel-rebuild-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("collector.yaml");
    let yaml = |timeout: &str, backend: SocketAddr| {
        format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: 127.0.0.1:{port} }}\n\
             processors:\n  batch:\n    send_batch_size: 100000\n    timeout: {timeout}\n\
             exporters:\n  otlp/backend:\n    endpoint: http://{backend}\n\
             service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [otlp/backend]\n  \
             telemetry:\n    metrics: {{ level: none }}\n"
        )
    };
    let (a_addr, b_addr) = (
        a.1.local_addrs().grpc.unwrap(),
        b.1.local_addrs().grpc.unwrap(),
    );
    std::fs::write(&file, yaml("60s", a_addr)).unwrap();
    let log = dir.join("collector.log");
    let mut child = std::process::Command::new(&bin)
        .arg("--config")
        .arg(&file)
        .args(["--watch-interval", "200ms", "--shutdown-timeout", "10s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let (client, sender) = common::fast_retry_agent(format!("http://127.0.0.1:{port}")).await;
    // Held by the batch processor (60 s timeout) ...
    sender.send(generate_traces(25, 4, 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(a.2.item_count(), 0, "held for the batch timeout");
    // ... until the timeout changes in place.
    std::fs::write(&file, yaml("100ms", a_addr)).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || a.2.item_count() == 100).await,
        "the new timeout applies to what waits: {} of 100",
        a.2.item_count()
    );
    // A new endpoint needs a rebuild: spans in flight meanwhile are retried by the
    // client, and everything after goes to the new backend.
    std::fs::write(&file, yaml("100ms", b_addr)).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || std::fs::read_to_string(&log)
            .is_ok_and(
                |l| l.contains("the collector runs the new configuration")
            ))
        .await,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    sender.send(generate_traces(25, 4, 2)).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || b.2.item_count() == 100).await,
        "{} of 100 at the new backend",
        b.2.item_count()
    );
    client.shutdown(Duration::from_secs(5)).await.unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!((a.2.item_count(), b.2.item_count()), (100, 100));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("restart_needed=[\"exporters.otlp/backend\"]"),
        "{logged}"
    );
    a.0.shutdown(Duration::from_secs(5)).await.unwrap();
    b.0.shutdown(Duration::from_secs(5)).await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// What a reload cannot apply in place is listed, never applied halfway: a new endpoint,
/// a removed processor, a changed pipeline. The components that can change in place do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_lists_what_needs_a_rebuild() {
    let yaml = |batch_timeout: &str, with_filter: bool, endpoint: &str| {
        let (filter, chain) = if with_filter {
            (
                "  filter/noise:\n    traces:\n      span: ['name == \"noise\"']\n",
                "[filter/noise, batch]",
            )
        } else {
            ("", "[batch]")
        };
        format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: 127.0.0.1:0 }}\n\
             processors:\n  batch: {{ timeout: {batch_timeout} }}\n{filter}\
             exporters:\n  otlp:\n    endpoint: {endpoint}\n    tls: {{ insecure: true }}\n\
             service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: {chain}\n      exporters: [otlp]\n"
        )
    };
    let running = start(&[("c.yaml", &yaml("1s", true, "127.0.0.1:4317"))]).await;
    let reload = |text: String| {
        running
            .reload(&load_to_run(&[("c.yaml", &text)]).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let done = reload(yaml("2s", true, "127.0.0.1:4317"));
    assert!(
        done.applied.contains(&"processors.batch".to_string()),
        "{done:?}"
    );
    assert!(done.restart_needed.is_empty(), "{done:?}");
    let done = reload(yaml("2s", true, "127.0.0.1:4318"));
    assert_eq!(done.restart_needed, ["exporters.otlp"]);
    let done = reload(yaml("2s", false, "127.0.0.1:4317"));
    assert!(
        done.restart_needed
            .contains(&"processors.filter/noise".to_string())
            && done.restart_needed.contains(&"service".to_string()),
        "{done:?}"
    );
    running.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Every key of every component that reloads in place either changes in place or is
/// listed in `restart_needed`: a reload never reports "applied" while old values keep
/// running. Each key of the tail sampler, the batch processor, the filter, attributes and
/// redaction is flipped on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_flipping_each_key_applies_it_or_lists_a_rebuild() {
    const SAMPLER: &[(&str, &str, &str)] = &[
        // (key, before, after)
        ("decision_wait", "10s", "20s"),
        ("decision_wait_after_root_received", "1s", "2s"),
        ("num_traces", "1000", "2000"),
        ("expected_new_traces_per_sec", "10", "20"),
        ("max_buffered_bytes", "100000000", "200000000"),
        ("maximum_trace_size_bytes", "1000000", "2000000"),
        ("pack_spans", "true", "false"),
        ("block_on_overflow", "false", "true"),
        ("drop_pending_traces_on_shutdown", "false", "true"),
        (
            "decision_cache",
            "{ sampled_cache_size: 100 }",
            "{ sampled_cache_size: 200 }",
        ),
        ("shards", "1", "2"),
        ("handoff", "{ exporter: debug/a }", "{ exporter: debug/b }"),
        ("sample_on_first_match", "false", "true"),
        (
            "policies",
            "[{ name: all, type: always_sample }]",
            "[{ name: p, type: probabilistic, probabilistic: { sampling_percentage: 5 } }]",
        ),
    ];
    const IN_PLACE: &[&str] = &["sample_on_first_match", "policies"];
    let sampler = |flip: Option<&str>| -> String {
        SAMPLER
            .iter()
            .map(|(k, before, after)| {
                let v = if Some(*k) == flip { after } else { before };
                format!("    {k}: {v}\n")
            })
            .collect()
    };
    const BATCH: &[(&str, &str, &str, bool)] = &[
        ("send_batch_size", "100", "200", true),
        ("send_batch_max_size", "1000", "2000", true),
        ("timeout", "1s", "2s", true),
        ("metadata_keys", "[]", "[tenant]", false),
        ("metadata_cardinality_limit", "100", "200", false),
    ];
    let batch = |flip: Option<&str>| -> String {
        BATCH
            .iter()
            .map(|(k, before, after, _)| {
                let v = if Some(*k) == flip { after } else { before };
                format!("    {k}: {v}\n")
            })
            .collect()
    };
    let yaml = |s: &str, b: &str, filter: &str, attr: &str, redact: &str| {
        format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: 127.0.0.1:0 }}\n\
             processors:\n  tail_sampling:\n{s}  batch:\n{b}\
             \x20 filter:\n    error_mode: {filter}\n    traces:\n      span: ['name == \"x\"']\n\
             \x20 attributes:\n    actions: [{{ key: a, value: {attr}, action: upsert }}]\n\
             \x20 redaction:\n    allow_all_keys: true\n    blocked_values: ['{redact}']\n\
             exporters:\n  debug/a:\n  debug/b:\n\
             service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      \
             processors: [filter, attributes, redaction, tail_sampling, batch]\n      exporters: [debug/a]\n"
        )
    };
    let base = yaml(
        &sampler(None),
        &batch(None),
        "propagate",
        "one",
        "4[0-9]{15}",
    );
    let running = start(&[("c.yaml", &base)]).await;
    let reload = |text: String| {
        running
            .reload(&load_to_run(&[("c.yaml", &text)]).unwrap_or_else(|e| panic!("{e}\n{text}")))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    for (key, ..) in SAMPLER {
        let done = reload(yaml(
            &sampler(Some(key)),
            &batch(None),
            "propagate",
            "one",
            "4[0-9]{15}",
        ));
        let listed = done
            .restart_needed
            .contains(&"processors.tail_sampling".to_string());
        assert_eq!(
            listed,
            !IN_PLACE.contains(key),
            "tail_sampling.{key}: {done:?}"
        );
        assert!(
            done.applied
                .contains(&"processors.tail_sampling".to_string())
        );
    }
    for (key, _, _, in_place) in BATCH {
        let done = reload(yaml(
            &sampler(None),
            &batch(Some(key)),
            "propagate",
            "one",
            "4[0-9]{15}",
        ));
        let listed = done
            .restart_needed
            .contains(&"processors.batch".to_string());
        assert_eq!(listed, !in_place, "batch.{key}: {done:?}");
    }
    // Filter, attributes and redaction take their whole sections in place.
    for (filter, attr, redact) in [
        ("ignore", "one", "4[0-9]{15}"),
        ("propagate", "two", "4[0-9]{15}"),
        ("propagate", "one", "5[0-9]{15}"),
    ] {
        let done = reload(yaml(&sampler(None), &batch(None), filter, attr, redact));
        assert!(done.restart_needed.is_empty(), "{done:?}");
        for p in [
            "processors.filter",
            "processors.attributes",
            "processors.redaction",
        ] {
            assert!(done.applied.contains(&p.to_string()), "{p}: {done:?}");
        }
    }
    running.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// The shipped gateway, as written, masks its blocked values in every string a backend
/// receives: span, event, link, scope and resource attributes (plain strings, and strings
/// inside arrays and maps) and the status message. A card number, an e-mail address and
/// a bearer token are planted in each; none reaches the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_gateway_masks_secrets_in_every_string_a_backend_receives() {
    use otel_pipeline::proto::common::v1::{ArrayValue, KeyValueList};
    use otel_pipeline::proto::trace::v1::span::{Event, Link};
    const SECRETS: [&str; 3] = [
        "4111111111111111",
        "jane.doe@example.com",
        "Bearer abc.DEF-123",
    ];
    let planted = |i: usize| format!("see {} here", SECRETS[i % SECRETS.len()]);
    let string = |v: String| AnyValue {
        value: Some(Value::StringValue(v)),
    };
    // Every kind of attribute value that holds strings.
    let attrs = |prefix: &str| -> Vec<KeyValue> {
        (0..SECRETS.len())
            .flat_map(|i| {
                [
                    KeyValue {
                        key: format!("{prefix}.plain.{i}"),
                        value: Some(string(planted(i))),
                        ..Default::default()
                    },
                    KeyValue {
                        key: format!("{prefix}.array.{i}"),
                        value: Some(AnyValue {
                            value: Some(Value::ArrayValue(ArrayValue {
                                values: vec![string("ok".into()), string(planted(i))],
                            })),
                        }),
                        ..Default::default()
                    },
                    KeyValue {
                        key: format!("{prefix}.map.{i}"),
                        value: Some(AnyValue {
                            value: Some(Value::KvlistValue(KeyValueList {
                                values: vec![KeyValue {
                                    key: "nested".into(),
                                    value: Some(string(planted(i))),
                                    ..Default::default()
                                }],
                            })),
                        }),
                        ..Default::default()
                    },
                ]
            })
            .collect()
    };
    let mut data = generate_traces(1, 20, 77);
    let rs = &mut data.resource_spans[0];
    rs.resource
        .get_or_insert_default()
        .attributes
        .extend(attrs("resource"));
    rs.scope_spans[0]
        .scope
        .get_or_insert_default()
        .attributes
        .extend(attrs("scope"));
    for (i, span) in rs.scope_spans[0].spans.iter_mut().enumerate() {
        span.attributes.extend(attrs("span"));
        span.events.push(Event {
            name: "exception".into(),
            attributes: attrs("event"),
            ..Default::default()
        });
        span.links.push(Link {
            trace_id: vec![7; 16],
            span_id: vec![7; 8],
            attributes: attrs("link"),
            ..Default::default()
        });
        // Errors, so the tail sampler keeps every trace.
        span.status = Some(Status {
            code: StatusCode::Error as i32,
            message: format!("payment failed: {}", planted(i)),
        });
    }

    let backend = common::gateway(OtlpConfig::loopback()).await;
    let port = free_port();
    let override_yaml = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: 127.0.0.1:{port} }}\n      http: {{ endpoint: 127.0.0.1:0 }}\n\
         processors:\n  tail_sampling:\n    decision_wait: 200ms\n  batch:\n    timeout: 100ms\n\
         exporters:\n  otlp/backend:\n    endpoint: {}\n\
         extensions:\n  health_check:\n    endpoint: 127.0.0.1:0\n\
         service:\n  telemetry:\n    metrics: {{ level: none }}\n",
        backend.1.local_addrs().grpc.unwrap()
    );
    let gateway = start(&[
        ("gateway.yaml", GATEWAY),
        ("gateway-test.yaml", &override_yaml),
    ])
    .await;
    let (client, sender) = common::fast_retry_agent(format!("http://127.0.0.1:{port}")).await;
    sender.send(data).await.unwrap();
    client.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || backend.2.item_count() == 20).await,
        "spans at the backend: {}",
        backend.2.item_count()
    );
    // Everything the backend holds, every byte of it.
    for batch in backend.2.batches() {
        let text = format!("{:?}", batch.data());
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} reached the backend");
        }
        assert!(text.contains("****"), "masked, not removed");
    }
    let span = &backend.2.spans()[0];
    assert!(
        span.status
            .as_ref()
            .unwrap()
            .message
            .starts_with("payment failed: see "),
        "the status message keeps its text around the mask"
    );
    gateway.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// The names configurations use besides the classic ones load as those: `logging` (the
/// old `debug`, with its `loglevel`), and the Collector's snake_case `otlp_http`,
/// `otlp_grpc`, `load_balancing`.
#[test]
fn old_and_snake_case_type_names_load_as_the_classic_ones() {
    let yaml = "receivers:\n  otlp:\n    protocols:\n      grpc: { endpoint: 127.0.0.1:0 }\n\
                exporters:\n  logging:\n    loglevel: debug\n  otlp_http/backend:\n    endpoint: http://127.0.0.1:4318\n  \
                otlp_grpc:\n    endpoint: 127.0.0.1:4317\n    tls: { insecure: true }\n  \
                load_balancing:\n    protocol: { otlp: { tls: { insecure: true } } }\n    resolver: { static: { hostnames: [127.0.0.1:4317] } }\n\
                service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [logging, otlp_http/backend, otlp_grpc, load_balancing]\n";
    let config = load(&[("c.yaml", yaml)]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.pipeline_names().count(), 1);
    // `loglevel` and `verbosity` together are a mistake, named.
    let (path, ..) = error_of(&format!(
        "{BASE}  logging:\n    loglevel: info\n    verbosity: basic\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [logging]\n"
    ));
    assert_eq!(path, "exporters.logging.loglevel");
}

/// `resource` and `transform` from Collector YAML, in a running collector: resource
/// actions reach every span's resource, and statements rewrite names, status and
/// attributes as the real configurations write them (02, 16, 17 of
/// `../shared/real-configs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_and_transform_rewrite_spans_from_yaml() {
    let (sink, sink_rx, received) = common::gateway(OtlpConfig::loopback()).await;
    let port = free_port();
    let yaml = format!(
        r#"receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
processors:
  resource:
    attributes:
      - key: deployment.environment
        value: staging
        action: upsert
      - key: host.name
        action: delete
  transform:
    error_mode: ignore
    trace_statements:
      - context: span
        statements:
          - replace_pattern(name, "\\?.*", "")
          - replace_match(name, "GET /api/products/*", "GET /api/products/{{productId}}")
      - context: span
        conditions:
          - attributes["http.response.status_code"] == 500
        statements:
          - set(status.code, STATUS_CODE_UNSET)
          - delete_key(attributes, "error.type")
      - truncate_all(span.attributes, 8)
exporters:
  otlp:
    endpoint: http://{}
    tls: {{insecure: true}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [resource, transform]
      exporters: [otlp]
"#,
        sink_rx.local_addrs().grpc.expect("grpc")
    );
    let collector = start(&[("c.yaml", &yaml)]).await;
    let (agent, sender) = common::agent(OtlpExporterConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        ..OtlpExporterConfig::default()
    })
    .await;
    let mut request = generate_traces(1, 2, 17);
    request.resource_spans[0]
        .resource
        .get_or_insert_with(Default::default)
        .attributes
        .push(kv("host.name", "node-1"));
    {
        let spans = &mut request.resource_spans[0].scope_spans[0].spans;
        spans[0].name = "GET /api/products/42?color=red".into();
        spans[0]
            .attributes
            .push(kv("user.agent", "Mozilla/5.0 (X11)"));
        spans[1].name = "charge".into();
        spans[1]
            .attributes
            .retain(|a| a.key != "http.response.status_code");
        spans[1].attributes.push(KeyValue {
            key: "http.response.status_code".into(),
            value: Some(AnyValue {
                value: Some(Value::IntValue(500)),
            }),
            ..Default::default()
        });
        spans[1].attributes.push(kv("error.type", "500"));
        spans[1].status = Some(Status {
            code: StatusCode::Error as i32,
            message: "boom".into(),
        });
    }
    sender.send(request).await.expect("sent");
    assert!(eventually(Duration::from_secs(10), || received.item_count() == 2).await);
    let batches = received.batches();
    let data = batches[0].data();
    let resource = data.resource_spans[0].resource.as_ref().expect("resource");
    let keys: Vec<&str> = resource.attributes.iter().map(|a| a.key.as_str()).collect();
    assert!(keys.contains(&"deployment.environment"), "{keys:?}");
    assert!(!keys.contains(&"host.name"), "{keys:?}");
    let spans = &data.resource_spans[0].scope_spans[0].spans;
    let product = spans
        .iter()
        .find(|s| s.name.starts_with("GET"))
        .expect("renamed");
    assert_eq!(product.name, "GET /api/products/{productId}");
    let agent_value = product
        .attributes
        .iter()
        .find(|a| a.key == "user.agent")
        .and_then(|a| a.value.clone());
    assert_eq!(
        agent_value.and_then(|v| v.value),
        Some(Value::StringValue("Mozilla/".into())),
        "truncate_all cuts to 8 bytes"
    );
    let charge = spans.iter().find(|s| s.name == "charge").expect("charge");
    assert_eq!(charge.status.as_ref().map(|s| s.code), Some(0));
    assert!(!charge.attributes.iter().any(|a| a.key == "error.type"));
    let _ = agent.shutdown(Duration::from_secs(5)).await;
    let _ = collector.shutdown(Duration::from_secs(5)).await;
    let _ = sink.shutdown(Duration::from_secs(5)).await;
}

/// `probabilistic_sampler` from Collector YAML in traces and logs pipelines, as the
/// Collector's README writes it; a bad percentage is named.
#[test]
fn probabilistic_sampler_loads_as_the_collector_writes_it() {
    let with = |sampler: &str| {
        format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:0\nprocessors:\n  probabilistic_sampler:\n{sampler}\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [probabilistic_sampler]\n      exporters: [debug]\n    logs:\n      receivers: [otlp]\n      processors: [probabilistic_sampler]\n      exporters: [debug]\n"
        )
    };
    load(&[(
        "c.yaml",
        &with("    hash_seed: 22\n    sampling_percentage: 15.3"),
    )])
    .expect("hash_seed");
    load(&[(
        "c.yaml",
        &with("    mode: equalizing\n    sampling_percentage: 10\n    sampling_precision: 6\n    fail_closed: false\n    attribute_source: record\n    from_attribute: logID\n    sampling_priority: priority"),
    )])
    .expect("equalizing, logs by attribute");
    let (path, _, _, message) = error_of(&with("    sampling_percentage: 10\n    mode: sometimes"));
    assert_eq!(path, "processors.probabilistic_sampler.mode", "{message}");
}

/// `headers_setter` from Collector YAML: each request to the backend carries the tenant
/// header of the client that sent its data (a multi-tenant gateway in front of Tempo or
/// Mimir), or the default, over a queue and directly; a fixed header too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_setter_sends_each_clients_tenant() {
    let (sink, sink_rx, received) = common::gateway(OtlpConfig {
        include_metadata: true,
        ..OtlpConfig::loopback()
    })
    .await;
    let port = free_port();
    let yaml = format!(
        r#"extensions:
  headers_setter:
    headers:
      - key: X-Scope-OrgID
        from_context: x-tenant
        default_value: anonymous
      - key: X-Source
        value: gateway
        action: insert
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
        include_metadata: true
exporters:
  otlp:
    endpoint: http://{}
    tls: {{insecure: true}}
    auth:
      authenticator: headers_setter
service:
  extensions: [headers_setter]
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
"#,
        sink_rx.local_addrs().grpc.expect("grpc")
    );
    let collector = start(&[("c.yaml", &yaml)]).await;
    for (tenant, seed) in [(Some("acme"), 1), (Some("globex"), 2), (None, 3)] {
        let (agent, sender) = common::agent(OtlpExporterConfig {
            endpoint: format!("http://127.0.0.1:{port}"),
            headers: tenant
                .map(|t| vec![("x-tenant".to_string(), t.to_string())])
                .unwrap_or_default(),
            ..OtlpExporterConfig::default()
        })
        .await;
        sender
            .send(generate_traces(1, 1, seed))
            .await
            .expect("sent");
        let _ = agent.shutdown(Duration::from_secs(5)).await;
    }
    assert!(eventually(Duration::from_secs(10), || received.item_count() == 3).await);
    let mut tenants: Vec<String> = received
        .batches()
        .iter()
        .map(|b| {
            let client = b.client.as_ref().expect("client info");
            assert_eq!(client.metadata("x-source"), Some("gateway"));
            client
                .metadata("x-scope-orgid")
                .unwrap_or("none")
                .to_string()
        })
        .collect();
    tenants.sort();
    assert_eq!(tenants, ["acme", "anonymous", "globex"]);
    let _ = collector.shutdown(Duration::from_secs(5)).await;
    let _ = sink.shutdown(Duration::from_secs(5)).await;

    // As a receiver's authenticator it is refused, naming the key.
    let yaml = "extensions:\n  headers_setter:\n    headers:\n      - key: X-A\n        value: b\nreceivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:0\n        auth:\n          authenticator: headers_setter\nexporters:\n  debug:\nservice:\n  extensions: [headers_setter]\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n";
    let (path, _, _, message) = error_of(yaml);
    assert_eq!(
        path, "receivers.otlp.protocols.grpc.auth.authenticator",
        "{message}"
    );
}

/// `resourcedetection` from Collector YAML in a running collector: the `system` detector's
/// host name reaches each span's resource, and a cloud detector off its cloud (a silent
/// metadata address) adds nothing and holds start-up no longer than its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resourcedetection_runs_from_yaml() {
    let (sink, sink_rx, received) = common::gateway(OtlpConfig::loopback()).await;
    let port = free_port();
    // Accepts and never answers: a metadata service that is not there.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let yaml = format!(
        r#"receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
processors:
  resource_detection:
    detectors: [ec2, system]
    timeout: 300ms
    override: false
    ec2:
      endpoint: http://{}
exporters:
  otlp:
    endpoint: http://{}
    tls: {{insecure: true}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [resource_detection]
      exporters: [otlp]
"#,
        silent.local_addr().expect("addr"),
        sink_rx.local_addrs().grpc.expect("grpc")
    );
    let started = std::time::Instant::now();
    let collector = start(&[("c.yaml", &yaml)]).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let (agent, sender) = common::agent(OtlpExporterConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        ..OtlpExporterConfig::default()
    })
    .await;
    sender.send(generate_traces(1, 1, 5)).await.expect("sent");
    assert!(eventually(Duration::from_secs(10), || received.item_count() == 1).await);
    let batches = received.batches();
    let keys: Vec<String> = batches[0].data().resource_spans[0]
        .resource
        .as_ref()
        .expect("resource")
        .attributes
        .iter()
        .map(|a| a.key.clone())
        .collect();
    assert!(keys.contains(&"host.name".to_string()), "{keys:?}");
    assert!(keys.contains(&"os.type".to_string()), "{keys:?}");
    assert!(!keys.contains(&"cloud.provider".to_string()), "{keys:?}");
    let _ = agent.shutdown(Duration::from_secs(5)).await;
    let _ = collector.shutdown(Duration::from_secs(5)).await;
    let _ = sink.shutdown(Duration::from_secs(5)).await;
    drop(silent);
}

/// `service.telemetry.logs.processors` that cannot push are named: another exporter, a
/// missing endpoint, an unknown key.
#[test]
fn log_processors_that_cannot_push_are_named() {
    let with = |processor: &str| {
        format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:0\nexporters:\n  debug:\nservice:\n  telemetry:\n    logs:\n      processors:\n        - {processor}\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n"
        )
    };
    for (processor, want) in [
        (
            "batch: {exporter: {console: {}}}",
            "service.telemetry.logs.processors[0].batch.exporter.console",
        ),
        (
            "batch: {exporter: {otlp: {protocol: grpc}}}",
            "service.telemetry.logs.processors[0].batch.exporter.otlp.endpoint",
        ),
        (
            "batch: {exporter: {otlp: {endpoint: 'http://x:4318'}}, every: 1}",
            "service.telemetry.logs.processors[0].batch.every",
        ),
    ] {
        let (path, _, _, message) = error_of(&with(processor));
        assert_eq!(path, want, "{message}");
    }
    load(&[("c.yaml", &with("simple: {exporter: {otlp: {endpoint: 'http://127.0.0.1:4318', protocol: http/protobuf}}}"))])
        .expect("a simple processor loads");
}

//! Configurations written by others for trace pipelines (`../shared/real-configs`, where
//! it exists beside this clone; their sources are in its `manifest.tsv`): each is loaded
//! as `collector --validate` loads it, unchanged and in its traces-only variant, and the
//! outcome must be the one `tests/real_configs.tsv` records: `ok`, or refused with every
//! error naming a component this build does not include (or a setting), never a crash or
//! an unexplained error. A config that starts loading, or stops, fails the test until the
//! table says so.
//!
//! Each config that loads is then run: an override file points its receivers, exporters
//! and extensions at loopback (OTLP exporters and routers at a sink, `k8sattributes` in
//! passthrough), one error span goes in through its OTLP receiver, and the span must come
//! out of an exporter (the sink's, or a `debug` exporter's count).

use std::collections::BTreeMap;
use std::path::Path;

use std::net::SocketAddr;
use std::time::Duration;

use otel_pipeline::collector::{CollectorConfig, ConfigFile};
use otel_pipeline::exporters::otlp::{OtlpExporterConfig, Protocol};
use otel_pipeline::receivers::OtlpConfig;
use serde_yaml_ng::{Mapping, Value};

mod common;

/// `export A=x B=y` lines of `env.sh`; `$(mktemp -d)` becomes a fresh directory.
fn env_of(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tmp = std::env::temp_dir().join("real-configs-storage");
    let _ = std::fs::create_dir_all(&tmp);
    let mut env = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("export ") else {
            continue;
        };
        for pair in rest.split_whitespace() {
            if let Some((k, v)) = pair.split_once('=') {
                let v = if v.starts_with("$(") {
                    tmp.display().to_string()
                } else {
                    v.to_string()
                };
                env.insert(k.to_string(), v);
            }
        }
    }
    env
}

/// `ok`, or `refused: <the kinds of error>`.
fn outcome(files: &[ConfigFile], env: &BTreeMap<String, String>) -> (String, Vec<String>) {
    match CollectorConfig::load(
        files,
        |k| env.get(k).cloned(),
        &otel_pipeline::default_registry(),
    ) {
        Ok(_) => ("ok".into(), Vec::new()),
        Err(e) => (
            "refused".into(),
            e.errors.iter().map(ToString::to_string).collect(),
        ),
    }
}

/// Whether an error says what is missing or wrong in terms a user can act on.
fn named(message: &str) -> bool {
    [
        "that this build does not include",
        "unknown receiver type",
        "unknown processor type",
        "unknown exporter type",
        "unknown extension type",
        "unknown connector type",
        "is used here but not defined",
        "does not send",
        "does not take",
        "does not exist",
        "unknown signal",
        "unknown key",
        "is a receiver of this",
        "is an exporter of this",
        "only a pull reader",
        "a pipeline needs at least one",
    ]
    .iter()
    .any(|n| message.contains(n))
}

#[test]
fn real_configurations_load_or_name_what_they_lack() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/real-configs");
    if !dir.is_dir() {
        println!("../shared/real-configs is not beside this clone: nothing to load");
        return;
    }
    let env = env_of(&dir.join("env.sh"));
    let table = include_str!("real_configs.tsv");
    let expected: BTreeMap<&str, (&str, &str)> = table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut cols = l.split('\t');
            Some((cols.next()?, (cols.next()?, cols.next()?)))
        })
        .collect();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("readable")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    names.sort();
    let mut mismatches = Vec::new();
    let (mut unchanged, mut traces_only) = (0, 0);
    let mut report = String::new();
    for name in &names {
        let mut files = vec![ConfigFile::read(dir.join(name)).expect("readable")];
        let overlay = dir.join(
            name.replace(".yaml", "").replace(
                "01-otel-demo-current",
                "01b-otel-demo-current-observability-overlay",
            ) + ".yaml.part",
        );
        if name.starts_with("01-") && overlay.exists() {
            files.push(ConfigFile::read(&overlay).expect("readable"));
        }
        let (full, errors) = outcome(&files, &env);
        let variant = dir.join("traces-only").join(name);
        let (traces, t_errors) = if variant.exists() {
            outcome(&[ConfigFile::read(&variant).expect("readable")], &env)
        } else {
            ("absent".into(), Vec::new())
        };
        unchanged += usize::from(full == "ok");
        traces_only += usize::from(traces == "ok");
        for e in errors.iter().chain(&t_errors) {
            if !named(e) {
                mismatches.push(format!("{name}: an error that names nothing: {e}"));
            }
        }
        let first = |errs: &[String]| errs.first().cloned().unwrap_or_default();
        report.push_str(&format!(
            "{name}\t{full}\t{traces}\t{}\n",
            first(&errors).chars().take(140).collect::<String>()
        ));
        match expected.get(name.as_str()) {
            Some((f, t)) if *f == full && *t == traces => {}
            Some((f, t)) => mismatches.push(format!(
                "{name}: expected {f}/{t}, got {full}/{traces} ({})",
                first(&errors)
            )),
            None => mismatches.push(format!("{name}: not in tests/real_configs.tsv")),
        }
    }
    println!(
        "{report}unchanged: {unchanged}/{}; traces-only: {traces_only}/{}",
        names.len(),
        names.len()
    );
    assert!(
        mismatches.is_empty(),
        "{}\n\n{report}",
        mismatches.join("\n")
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}

/// Where the overridden exporters send: an OTLP receiver, and a Zipkin and a Jaeger
/// receiver, each into memory.
struct Sinks {
    otlp_grpc: SocketAddr,
    otlp_http: SocketAddr,
    zipkin: SocketAddr,
    jaeger_grpc: SocketAddr,
}

fn map(pairs: Vec<(&str, Value)>) -> Value {
    let mut m = Mapping::new();
    for (k, v) in pairs {
        m.insert(Value::String(k.into()), v);
    }
    Value::Mapping(m)
}

fn text(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

/// Two override files for config `yaml`: the first clears what the second replaces
/// (TLS settings, resolvers), the second points everything at loopback: OTLP receivers on
/// free ports, OTLP exporters and routers at the sink, `prometheus` and `health_check` on
/// free ports, `k8sattributes` in passthrough, no self-metrics endpoint. Also the gRPC
/// port of an OTLP receiver of a traces pipeline, where to send.
fn loopback(yaml: &str, sinks: &Sinks) -> (String, String, Option<(u16, Protocol)>) {
    let (sink, sink_http) = (sinks.otlp_grpc, sinks.otlp_http);
    let root: Value = serde_yaml_ng::from_str(yaml).expect("yaml");
    let kind = |id: &str| id.split('/').next().unwrap_or_default().to_string();
    let entries = |section: &str| -> Vec<String> {
        root.get(section)
            .and_then(Value::as_mapping)
            .map(|m| {
                m.keys()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (mut clear, mut set) = (Mapping::new(), Mapping::new());
    let mut receivers = Mapping::new();
    let mut receivers_clear = Mapping::new();
    let mut ports = std::collections::BTreeMap::new();
    for id in entries("receivers") {
        let protocols = root
            .get("receivers")
            .and_then(|r| r.get(id.as_str()))
            .and_then(|r| r.get("protocols"));
        match kind(&id).as_str() {
            "zipkin" => {
                let port = free_port();
                ports.insert(id.clone(), (port, Protocol::ZipkinJson));
                let endpoint = text(format!("127.0.0.1:{port}"));
                receivers.insert(text(&id), map(vec![("endpoint", endpoint)]));
                continue;
            }
            "jaeger" => {
                // gRPC is added where the config has none, to send the test's span.
                let grpc = free_port();
                ports.insert(id.clone(), (grpc, Protocol::JaegerGrpc));
                let mut p = vec![(
                    "grpc",
                    map(vec![("endpoint", text(format!("127.0.0.1:{grpc}")))]),
                )];
                for name in ["thrift_http", "thrift_compact", "thrift_binary"] {
                    if protocols.is_some_and(|p| p.get(name).is_some()) {
                        let port = if name.starts_with("thrift_c") || name.starts_with("thrift_b") {
                            free_udp_port()
                        } else {
                            free_port()
                        };
                        p.push((
                            name,
                            map(vec![("endpoint", text(format!("127.0.0.1:{port}")))]),
                        ));
                    }
                }
                receivers.insert(text(&id), map(vec![("protocols", map(p))]));
                continue;
            }
            _ => {}
        }
        if matches!(kind(&id).as_str(), "otlp" | "otlp_grpc") {
            // Certificates the config names are not on this machine.
            let no_tls = || map(vec![("tls", Value::Null)]);
            receivers_clear.insert(
                text(&id),
                map(vec![(
                    "protocols",
                    map(vec![("grpc", no_tls()), ("http", no_tls())]),
                )]),
            );
            let grpc = free_port();
            ports.insert(id.clone(), (grpc, Protocol::Grpc));
            let protocols = root
                .get("receivers")
                .and_then(|r| r.get(id.as_str()))
                .and_then(|r| r.get("protocols"));
            let mut p = vec![(
                "grpc",
                map(vec![("endpoint", text(format!("127.0.0.1:{grpc}")))]),
            )];
            if protocols.is_some_and(|p| p.get("http").is_some()) {
                let http = free_port();
                p.push((
                    "http",
                    map(vec![("endpoint", text(format!("127.0.0.1:{http}")))]),
                ));
            }
            receivers.insert(text(id), map(vec![("protocols", map(p))]));
        }
    }
    set.insert(text("receivers"), Value::Mapping(receivers));
    clear.insert(text("receivers"), Value::Mapping(receivers_clear));
    let (mut exporters, mut exporters_clear) = (Mapping::new(), Mapping::new());
    let insecure = || map(vec![("insecure", Value::Bool(true))]);
    for id in entries("exporters") {
        match kind(&id).as_str() {
            "otlp" | "otlp_grpc" => {
                exporters_clear.insert(text(&id), map(vec![("tls", Value::Null)]));
                let endpoint = text(format!("127.0.0.1:{}", sink.port()));
                exporters.insert(
                    text(id),
                    map(vec![("endpoint", endpoint), ("tls", insecure())]),
                );
            }
            "otlphttp" | "otlp_http" => {
                exporters_clear.insert(
                    text(&id),
                    map(vec![("tls", Value::Null), ("traces_endpoint", Value::Null)]),
                );
                let endpoint = text(format!("http://{sink_http}"));
                exporters.insert(
                    text(id),
                    map(vec![("endpoint", endpoint), ("tls", insecure())]),
                );
            }
            "loadbalancing" | "load_balancing" => {
                let protocol = |tls| map(vec![("otlp", map(vec![("tls", tls)]))]);
                exporters_clear.insert(
                    text(&id),
                    map(vec![
                        ("resolver", Value::Null),
                        ("protocol", protocol(Value::Null)),
                    ]),
                );
                let hostnames = Value::Sequence(vec![text(format!("127.0.0.1:{}", sink.port()))]);
                let resolver = map(vec![("static", map(vec![("hostnames", hostnames)]))]);
                exporters.insert(
                    text(id),
                    map(vec![
                        ("resolver", resolver),
                        ("protocol", protocol(insecure())),
                    ]),
                );
            }
            "zipkin" => {
                exporters_clear.insert(text(&id), map(vec![("tls", Value::Null)]));
                let endpoint = text(format!("http://{}/api/v2/spans", sinks.zipkin));
                exporters.insert(text(id), map(vec![("endpoint", endpoint)]));
            }
            "jaeger" => {
                exporters_clear.insert(text(&id), map(vec![("tls", Value::Null)]));
                let endpoint = text(format!("127.0.0.1:{}", sinks.jaeger_grpc.port()));
                exporters.insert(
                    text(id),
                    map(vec![("endpoint", endpoint), ("tls", insecure())]),
                );
            }
            "prometheus" => {
                let endpoint = text(format!("127.0.0.1:{}", free_port()));
                exporters.insert(text(id), map(vec![("endpoint", endpoint)]));
            }
            "file" => {
                let file = std::env::temp_dir().join(format!(
                    "real-config-{}-{}.json",
                    std::process::id(),
                    free_port()
                ));
                exporters.insert(
                    text(id),
                    map(vec![("path", text(file.display().to_string()))]),
                );
            }
            _ => {}
        }
    }
    clear.insert(text("exporters"), Value::Mapping(exporters_clear));
    set.insert(text("exporters"), Value::Mapping(exporters));
    let mut processors = Mapping::new();
    for id in entries("processors") {
        if matches!(kind(&id).as_str(), "k8sattributes" | "k8s_attributes") {
            processors.insert(text(id), map(vec![("passthrough", Value::Bool(true))]));
        }
    }
    set.insert(text("processors"), Value::Mapping(processors));
    let mut extensions = Mapping::new();
    for id in entries("extensions") {
        if matches!(kind(&id).as_str(), "health_check" | "healthcheck") {
            let endpoint = text(format!("127.0.0.1:{}", free_port()));
            extensions.insert(text(id), map(vec![("endpoint", endpoint)]));
        }
    }
    set.insert(text("extensions"), Value::Mapping(extensions));
    let level_none = map(vec![("metrics", map(vec![("level", text("none"))]))]);
    set.insert(text("service"), map(vec![("telemetry", level_none)]));
    // Where to send: an OTLP receiver of a traces pipeline.
    let send_to = root
        .get("service")
        .and_then(|s| s.get("pipelines"))
        .and_then(Value::as_mapping)
        .into_iter()
        .flatten()
        .filter(|(name, _)| name.as_str().is_some_and(|n| n.starts_with("traces")))
        .filter_map(|(_, p)| p.get("receivers").and_then(Value::as_sequence))
        .flatten()
        .filter_map(|r| r.as_str().and_then(|r| ports.get(r)).copied())
        .next();
    (
        serde_yaml_ng::to_string(&Value::Mapping(clear)).expect("yaml"),
        serde_yaml_ng::to_string(&Value::Mapping(set)).expect("yaml"),
        send_to,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_real_configuration_that_loads_runs_a_span_through() {
    use otel_pipeline::proto::trace::v1::{Status, status::StatusCode};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/real-configs");
    if !dir.is_dir() {
        println!("../shared/real-configs is not beside this clone: nothing to run");
        return;
    }
    let env = env_of(&dir.join("env.sh"));
    let table = include_str!("real_configs.tsv");
    // Each configuration that loads unchanged runs as it is; one that loads only as its
    // traces-only variant runs as that.
    let loading: Vec<(&str, std::path::PathBuf)> = table
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut cols = l.split('\t');
            let name = cols.next()?;
            match (cols.next()?, cols.next()?) {
                ("ok", _) => Some((name, dir.join(name))),
                (_, "ok") => Some((name, dir.join("traces-only").join(name))),
                _ => None,
            }
        })
        .collect();
    assert!(!loading.is_empty());
    let mut failures = Vec::new();
    for (name, path) in &loading {
        let (sink, sink_rx, received) = common::gateway(OtlpConfig::loopback()).await;
        let addrs = sink_rx.local_addrs();
        // Zipkin and Jaeger exporters send to receivers of their own formats.
        let zipkin = otel_pipeline::receivers::ZipkinReceiver::new(([127, 0, 0, 1], 0).into());
        let jaeger =
            otel_pipeline::receivers::JaegerReceiver::new(otel_pipeline::receivers::JaegerConfig {
                grpc: Some(([127, 0, 0, 1], 0).into()),
                ..Default::default()
            });
        let (legacy_memory, legacy_received) = otel_pipeline::testing::InMemoryExporter::new();
        let legacy = otel_pipeline::Pipeline::traces()
            .named("traces/legacy-sink")
            .receiver(zipkin.traces())
            .receiver(jaeger.traces())
            .exporter(legacy_memory)
            .build()
            .expect("builds")
            .start()
            .await
            .expect("starts");
        let sinks = Sinks {
            otlp_grpc: addrs.grpc.expect("grpc"),
            otlp_http: addrs.http.expect("http"),
            zipkin: zipkin.local_addr().expect("zipkin"),
            jaeger_grpc: jaeger.local_addrs().grpc.expect("jaeger"),
        };
        let original = std::fs::read_to_string(path).expect("readable");
        let (clear, set, send_to) = loopback(&original, &sinks);
        let Some((port, protocol)) = send_to else {
            failures.push(format!(
                "{name}: no OTLP, Zipkin or Jaeger receiver in a traces pipeline"
            ));
            continue;
        };
        let files = [
            ConfigFile::new(*name, original),
            ConfigFile::new("clear.yaml", clear),
            ConfigFile::new("loopback.yaml", set),
        ];
        let registry = otel_pipeline::default_registry();
        let telemetry = otel_pipeline::Telemetry::new();
        let built = CollectorConfig::load(&files, |k| env.get(k).cloned(), &registry)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                c.build(&registry, telemetry.clone())
                    .map_err(|e| e.to_string())
            });
        let collector = match built {
            Ok(c) => match c.start().await {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{name}: does not start: {e}"));
                    continue;
                }
            },
            Err(e) => {
                failures.push(format!("{name}: with loopback overrides: {e}"));
                continue;
            }
        };
        let (agent, sender) = common::agent(OtlpExporterConfig {
            endpoint: format!("http://127.0.0.1:{port}"),
            protocol,
            ..OtlpExporterConfig::default()
        })
        .await;
        // One error span of 3 s with a 500 status: kept by every sampling policy these
        // configs have (errors, latency, an HTTP status range).
        let mut request = otel_pipeline::testing::generate_traces(1, 1, 29);
        let span = &mut request.resource_spans[0].scope_spans[0].spans[0];
        span.name = "real-config-check".into();
        for key in ["http.status_code", "http.response.status_code"] {
            span.attributes
                .push(otel_pipeline::proto::common::v1::KeyValue {
                    key: key.into(),
                    value: Some(otel_pipeline::proto::common::v1::AnyValue {
                        value: Some(
                            otel_pipeline::proto::common::v1::any_value::Value::IntValue(500),
                        ),
                    }),
                    ..Default::default()
                });
        }
        span.end_time_unix_nano = span.start_time_unix_nano + 3_000_000_000;
        span.status = Some(Status {
            code: StatusCode::Error as i32,
            ..Default::default()
        });
        let sent = sender.send(request).await;
        let _ = agent.shutdown(Duration::from_secs(5)).await;
        // Shutdown drains: batches flush, tail samplers decide what they hold.
        let _ = collector.shutdown(Duration::from_secs(10)).await;
        let exported = telemetry.sum("otelcol_exporter_sent_spans", &[]);
        let arrived = received.item_count() + legacy_received.item_count();
        if sent.is_err() || (arrived == 0 && exported == 0) {
            failures.push(format!(
                "{name}: the span did not come out (sent: {sent:?}, sinks: {arrived}, exporters sent: {exported})"
            ));
        }
        let _ = sink.shutdown(Duration::from_secs(5)).await;
        let _ = legacy.shutdown(Duration::from_secs(5)).await;
    }
    println!(
        "{} configurations ran a span through",
        loading.len() - failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

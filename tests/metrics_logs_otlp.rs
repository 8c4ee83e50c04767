//! Metrics and logs end to end over real OTLP on loopback: a client exports with our OTLP
//! exporter (logs as OTLP/HTTP JSON, metrics as OTLP/gRPC) to a collector built from YAML
//! that filters, redacts and batches, and that exports over OTLP/gRPC to a backend.

use std::time::Duration;

use otel_pipeline::collector::{CollectorConfig, ConfigFile};
use otel_pipeline::exporters::otlp::{OtlpExporter, OtlpExporterConfig, Protocol};
use otel_pipeline::proto::common::v1::{AnyValue, any_value::Value};
use otel_pipeline::proto::metrics::v1::metric::Data;
use otel_pipeline::receivers::{OtlpConfig, OtlpReceiver};
use otel_pipeline::testing::{InMemoryExporter, eventually, generate_logs, generate_metrics};
use otel_pipeline::{ComponentKind, DirectReceiver, Logs, Metrics, Pipeline, Telemetry};

mod common;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_redaction_and_batch_on_metrics_and_logs_over_otlp() {
    // The backend: one OTLP receiver feeding a logs and a metrics pipeline.
    let backend = common::LogsMetricsBackend::start().await;
    let (backend_addr, logs_seen, metrics_seen) =
        (backend.addr, backend.logs.clone(), backend.metrics.clone());

    // The collector, from YAML.
    let (grpc, http) = (free_port(), free_port());
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: 127.0.0.1:{grpc} }}
      http: {{ endpoint: 127.0.0.1:{http} }}
processors:
  filter/noise:
    error_mode: ignore
    logs:
      log_record:
        - 'severity_number < SEVERITY_NUMBER_INFO'
    metrics:
      datapoint:
        - 'attributes["http.route"] == "/api/1"'
  redaction:
    allow_all_keys: true
    blocked_values: ['4[0-9]{{12}}(?:[0-9]{{3}})?']
  batch:
    timeout: 1s
exporters:
  otlp/backend:
    endpoint: http://{backend_addr}
service:
  telemetry:
    metrics: {{ address: 127.0.0.1:0 }}
  pipelines:
    logs:
      receivers: [otlp]
      processors: [filter/noise, redaction, batch]
      exporters: [otlp/backend]
    metrics:
      receivers: [otlp]
      processors: [filter/noise, batch]
      exporters: [otlp/backend]
"#
    );
    let config = CollectorConfig::load(
        &[ConfigFile::new("collector.yaml", yaml)],
        |_| None,
        &otel_pipeline::default_registry(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let collector = config
        .build(&otel_pipeline::default_registry(), Telemetry::new())
        .unwrap_or_else(|e| panic!("{e}"))
        .start()
        .await
        .expect("collector starts");

    // A service: logs over OTLP/HTTP JSON, metrics over OTLP/gRPC.
    let (logs_in, logs_sender) = DirectReceiver::<Logs>::new();
    let client_logs = Pipeline::logs()
        .receiver(logs_in)
        .exporter(OtlpExporter::<Logs>::new(OtlpExporterConfig {
            endpoint: format!("http://127.0.0.1:{http}"),
            protocol: Protocol::HttpJson,
            ..OtlpExporterConfig::default()
        }))
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");
    let (metrics_in, metrics_sender) = DirectReceiver::<Metrics>::new();
    let client_metrics = Pipeline::metrics()
        .receiver(metrics_in)
        .exporter(OtlpExporter::<Metrics>::new(OtlpExporterConfig {
            endpoint: format!("http://127.0.0.1:{grpc}"),
            ..OtlpExporterConfig::default()
        }))
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");

    // 8 records (severities INFO, WARN, ERROR, DEBUG in turn): the two DEBUG ones go; a
    // card number in a body is masked.
    let mut logs = generate_logs(8, 3);
    logs.resource_logs[0].scope_logs[0].log_records[0].body = Some(AnyValue {
        value: Some(Value::StringValue("paid with 4111111111111111".into())),
    });
    logs_sender.send(logs).await.expect("logs sent");
    // 4 metrics of 4 points (routes /api/0 .. /api/3): the /api/1 points go, in two
    // requests the batch joins.
    metrics_sender
        .send(generate_metrics(2, 4, 1))
        .await
        .expect("metrics sent");
    metrics_sender
        .send(generate_metrics(2, 4, 2))
        .await
        .expect("metrics sent");
    client_logs
        .shutdown(Duration::from_secs(5))
        .await
        .expect("client stops");
    client_metrics
        .shutdown(Duration::from_secs(5))
        .await
        .expect("client stops");

    assert!(
        eventually(Duration::from_secs(10), || logs_seen.item_count() == 6
            && metrics_seen.item_count() == 12)
        .await,
        "backend saw {} log records and {} data points",
        logs_seen.item_count(),
        metrics_seen.item_count()
    );
    let records: Vec<_> = logs_seen
        .batches()
        .into_iter()
        .flat_map(|b| b.into_data().resource_logs)
        .flat_map(|rl| rl.scope_logs)
        .flat_map(|sl| sl.log_records)
        .collect();
    assert!(records.iter().all(|r| r.severity_number >= 9));
    assert!(records.iter().any(|r| matches!(
        r.body.as_ref().and_then(|b| b.value.as_ref()),
        Some(Value::StringValue(s)) if s == "paid with ****"
    )));
    let routes: Vec<String> = metrics_seen
        .batches()
        .into_iter()
        .flat_map(|b| b.into_data().resource_metrics)
        .flat_map(|rm| rm.scope_metrics)
        .flat_map(|sm| sm.metrics)
        .flat_map(|m| match m.data {
            Some(Data::Gauge(g)) => g.data_points,
            Some(Data::Sum(s)) => s.data_points,
            _ => Vec::new(),
        })
        .map(|p| match &p.attributes[0].value {
            Some(AnyValue {
                value: Some(Value::StringValue(s)),
            }) => s.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    assert!(!routes.iter().any(|r| r == "/api/1"), "{routes:?}");
    // The batch joined the two metrics requests into one export.
    assert_eq!(metrics_seen.batches().len(), 1);

    let telemetry = collector.telemetry();
    let filtered = |signal: &str| {
        telemetry
            .components()
            .into_iter()
            .filter(|c| {
                c.kind() == ComponentKind::Processor && c.id().to_string() == "filter/noise"
            })
            .filter(|c| c.pipeline() == signal)
            .map(|c| c.dropped("filtered"))
            .sum::<u64>()
    };
    assert_eq!((filtered("logs"), filtered("metrics")), (2, 4));

    collector
        .shutdown(Duration::from_secs(5))
        .await
        .expect("collector stops");
    backend.stop().await;
}

/// `loadbalancing` in logs and metrics pipelines, from YAML: two backends; logs by trace
/// id (a trace's records reach one backend), metrics by `streamID` (a stream's points
/// reach one backend), and everything arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadbalancing_routes_logs_by_trace_id_and_metrics_by_stream() {
    use std::collections::{HashMap, HashSet};
    let backends = [
        common::LogsMetricsBackend::start().await,
        common::LogsMetricsBackend::start().await,
    ];
    let grpc = free_port();
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: 127.0.0.1:{grpc} }}
exporters:
  loadbalancing/logs:
    protocol: {{ otlp: {{ tls: {{ insecure: true }} }} }}
    resolver: {{ static: {{ hostnames: [{a}, {b}] }} }}
  loadbalancing/metrics:
    routing_key: streamID
    protocol: {{ otlp: {{ tls: {{ insecure: true }} }} }}
    resolver: {{ static: {{ hostnames: [{a}, {b}] }} }}
service:
  telemetry: {{ metrics: {{ level: none }} }}
  pipelines:
    logs:
      receivers: [otlp]
      exporters: [loadbalancing/logs]
    metrics:
      receivers: [otlp]
      exporters: [loadbalancing/metrics]
"#,
        a = backends[0].addr,
        b = backends[1].addr
    );
    let registry = otel_pipeline::default_registry();
    let collector = CollectorConfig::load(&[ConfigFile::new("lb.yaml", yaml)], |_| None, &registry)
        .unwrap_or_else(|e| panic!("{e}"))
        .build(&registry, Telemetry::new())
        .unwrap_or_else(|e| panic!("{e}"))
        .start()
        .await
        .expect("starts");
    // A metrics key on logs is refused, naming the key.
    let bad = "receivers: {otlp: {protocols: {grpc: {endpoint: 127.0.0.1:0}}}}\nexporters:\n  loadbalancing:\n    routing_key: streamID\n    resolver: {static: {hostnames: [a:4317]}}\nservice:\n  pipelines:\n    logs: {receivers: [otlp], exporters: [loadbalancing]}\n";
    let err = CollectorConfig::load(&[ConfigFile::new("bad.yaml", bad)], |_| None, &registry)
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("exporters.loadbalancing.routing_key: logs route by"),
        "{err}"
    );

    let endpoint = format!("http://127.0.0.1:{grpc}");
    let (client_logs, logs_tx) = common::client::<Logs>(endpoint.clone()).await;
    let (client_metrics, metrics_tx) = common::client::<Metrics>(endpoint).await;
    let mut logs = generate_logs(200, 7);
    for (i, r) in logs
        .resource_logs
        .iter_mut()
        .flat_map(|rl| rl.scope_logs.iter_mut())
        .flat_map(|sl| sl.log_records.iter_mut())
        .enumerate()
    {
        // 20 traces, 10 records each.
        r.trace_id = [(i % 20) as u8 + 1; 16].to_vec();
    }
    let log_count = <Logs as otel_pipeline::Signal>::item_count(&logs);
    logs_tx.send(logs).await.expect("sent");
    let metrics = generate_metrics(12, 5, 9);
    let point_count = <Metrics as otel_pipeline::Signal>::item_count(&metrics);
    metrics_tx.send(metrics).await.expect("sent");
    client_logs
        .shutdown(Duration::from_secs(5))
        .await
        .expect("drains");
    client_metrics
        .shutdown(Duration::from_secs(5))
        .await
        .expect("drains");
    let arrived = eventually(Duration::from_secs(10), || {
        backends.iter().map(|b| b.logs.item_count()).sum::<usize>() == log_count
            && backends
                .iter()
                .map(|b| b.metrics.item_count())
                .sum::<usize>()
                == point_count
    })
    .await;
    assert!(arrived, "not everything arrived");
    // Each trace's records on one backend, and both backends used.
    let mut owner: HashMap<Vec<u8>, usize> = HashMap::new();
    for (i, b) in backends.iter().enumerate() {
        for batch in b.logs.batches() {
            for r in batch
                .data()
                .resource_logs
                .iter()
                .flat_map(|rl| &rl.scope_logs)
                .flat_map(|sl| &sl.log_records)
            {
                assert_eq!(
                    *owner.entry(r.trace_id.clone()).or_insert(i),
                    i,
                    "a trace split"
                );
            }
        }
    }
    assert_eq!(owner.len(), 20);
    assert_eq!(
        owner.values().collect::<HashSet<_>>().len(),
        2,
        "both backends used"
    );
    // Each stream (metric name and point attributes) on one backend.
    let mut streams: HashMap<String, usize> = HashMap::new();
    for (i, b) in backends.iter().enumerate() {
        for batch in b.metrics.batches() {
            for m in batch
                .data()
                .resource_metrics
                .iter()
                .flat_map(|rm| &rm.scope_metrics)
                .flat_map(|sm| &sm.metrics)
            {
                let attrs: Vec<String> = match &m.data {
                    Some(Data::Gauge(g)) => g
                        .data_points
                        .iter()
                        .map(|p| format!("{:?}", p.attributes))
                        .collect(),
                    Some(Data::Sum(s)) => s
                        .data_points
                        .iter()
                        .map(|p| format!("{:?}", p.attributes))
                        .collect(),
                    Some(Data::Histogram(h)) => h
                        .data_points
                        .iter()
                        .map(|p| format!("{:?}", p.attributes))
                        .collect(),
                    _ => Vec::new(),
                };
                for a in attrs {
                    let key = format!("{}|{a}", m.name);
                    assert_eq!(*streams.entry(key).or_insert(i), i, "a stream split");
                }
            }
        }
    }
    collector
        .shutdown(Duration::from_secs(5))
        .await
        .expect("drains");
    for b in backends {
        b.stop().await;
    }
}

/// `service.telemetry.metrics.readers: periodic` with an otlp exporter, as the Collector's
/// demo configures it: the collector's own counters reach an OTLP backend every interval,
/// under the configured resource; and `logs.processors` pushes the collector's own logs
/// (what the application records, as the `collector` example does from `tracing`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_metrics_are_pushed_over_otlp_by_a_periodic_reader() {
    use otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest;
    let backend = OtlpReceiver::new(OtlpConfig {
        grpc: None,
        ..OtlpConfig::loopback()
    });
    let (out, seen) = InMemoryExporter::<Metrics>::new();
    let backend_pipeline = Pipeline::metrics()
        .receiver(backend.metrics())
        .exporter(out)
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");
    let (logs_out, logs_seen) = InMemoryExporter::<otel_pipeline::Logs>::new();
    let backend_logs = Pipeline::logs()
        .receiver(backend.logs())
        .exporter(logs_out)
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");
    let http = backend.local_addrs().http.expect("http");
    let grpc = free_port();
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: 127.0.0.1:{grpc} }}
exporters:
  nop:
service:
  telemetry:
    resource:
      service.name: gateway-7
    metrics:
      level: detailed
      readers:
        - periodic:
            interval: 100
            timeout: 5000
            exporter:
              otlp:
                protocol: http/protobuf
                endpoint: http://{http}
    logs:
      processors:
        - batch:
            schedule_delay: 100
            exporter:
              otlp:
                protocol: http/protobuf
                endpoint: http://{http}
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [nop]
"#
    );
    let registry = otel_pipeline::default_registry();
    let config = CollectorConfig::load(&[ConfigFile::new("self.yaml", yaml)], |_| None, &registry)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.service_telemetry().metric_pushes.len(), 1);
    assert_eq!(config.service_telemetry().log_pushes.len(), 1);
    let collector = config
        .build(&registry, Telemetry::new())
        .unwrap_or_else(|e| panic!("{e}"))
        .start()
        .await
        .expect("starts");
    let (client, client_tx) =
        common::client::<otel_pipeline::Traces>(format!("http://127.0.0.1:{grpc}")).await;
    let spans: ExportTraceServiceRequest = otel_pipeline::testing::generate_traces(3, 4, 1);
    client_tx.send(spans).await.expect("sent");
    client
        .shutdown(Duration::from_secs(5))
        .await
        .expect("drains");
    // The accepted spans, counted by the receiver, reach the backend as a cumulative sum.
    let accepted = |seen: &otel_pipeline::testing::Exported<Metrics>| -> Option<i64> {
        seen.batches()
            .iter()
            .flat_map(|b| b.data().resource_metrics.clone())
            .filter(|rm| {
                rm.resource.as_ref().is_some_and(|r| {
                    r.attributes.iter().any(|a| {
                        a.key == "service.name"
                            && a.value.as_ref().and_then(|v| v.value.clone())
                                == Some(Value::StringValue("gateway-7".into()))
                    })
                })
            })
            .flat_map(|rm| rm.scope_metrics)
            .flat_map(|sm| sm.metrics)
            .filter(|m| m.name == "otelcol_receiver_accepted_spans")
            .filter_map(|m| match m.data {
                Some(Data::Sum(s)) if s.is_monotonic => s
                    .data_points
                    .iter()
                    .map(|p| match p.value {
                        Some(
                            otel_pipeline::proto::metrics::v1::number_data_point::Value::AsInt(i),
                        ) => i,
                        _ => 0,
                    })
                    .max(),
                _ => None,
            })
            .max()
    };
    assert!(
        eventually(Duration::from_secs(10), || accepted(&seen) == Some(12)).await,
        "pushed: {:?}",
        accepted(&seen)
    );
    // A log the application records reaches the backend under the same resource.
    otel_pipeline::telemetry::record_log(otel_pipeline::proto::logs::v1::LogRecord {
        severity_number: 13,
        severity_text: "WARN".into(),
        body: Some(otel_pipeline::proto::common::v1::AnyValue {
            value: Some(Value::StringValue(
                "exporter otlp/backend is retrying".into(),
            )),
        }),
        ..Default::default()
    });
    let logged = || {
        logs_seen.batches().iter().any(|b| {
            b.data().resource_logs.iter().any(|rl| {
                let ours = rl.resource.as_ref().is_some_and(|r| {
                    r.attributes.iter().any(|a| {
                        a.value.as_ref().and_then(|v| v.value.clone())
                            == Some(Value::StringValue("gateway-7".into()))
                    })
                });
                ours && rl.scope_logs.iter().flat_map(|s| &s.log_records).any(|r| {
                    r.body.as_ref().and_then(|b| b.value.clone())
                        == Some(Value::StringValue(
                            "exporter otlp/backend is retrying".into(),
                        ))
                })
            })
        })
    };
    assert!(
        eventually(Duration::from_secs(10), logged).await,
        "the log arrives"
    );
    collector
        .shutdown(Duration::from_secs(5))
        .await
        .expect("drains");
    // Stopped: records are no longer kept.
    assert!(!otel_pipeline::telemetry::logs::wanted());
    backend_pipeline
        .shutdown(Duration::from_secs(5))
        .await
        .expect("stops");
    backend_logs
        .shutdown(Duration::from_secs(5))
        .await
        .expect("stops");
}

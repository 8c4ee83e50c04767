//! `service.telemetry.metrics.readers: periodic`: the collector's own metrics pushed over
//! OTLP every interval, through an [`OtlpExporter`] of their own (retry, queue, counters);
//! and `service.telemetry.logs.processors`: the collector's own logs, as the application
//! records them (`otel_pipeline_core::telemetry::record_log`), the same way.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use otel_pipeline_core::collector::{Extension, Host, MetricsPush, TelemetryPushFactory};
use otel_pipeline_core::proto::common::v1::{AnyValue, KeyValue, any_value};
use otel_pipeline_core::{
    Batch, BoxError, BoxFuture, Child, Children, ComponentId, Consumer, Logs, Metrics,
};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::otlp::{OtlpExporter, OtlpExporterConfig, OtlpExporterConsumer, Protocol, with_scheme};

/// Registered by [`crate::collector::register`].
pub(crate) struct OtlpTelemetryPush;

/// The exporter settings and resource attributes of a push.
fn push_settings(
    push: &MetricsPush,
    resource: &[(String, String)],
) -> (OtlpExporterConfig, Vec<KeyValue>) {
    let protocol = match push.protocol.as_str() {
        "grpc" => Protocol::Grpc,
        "http/json" => Protocol::HttpJson,
        _ => Protocol::HttpProtobuf,
    };
    let config = OtlpExporterConfig {
        endpoint: with_scheme(&push.endpoint, push.insecure),
        protocol,
        headers: push.headers.clone(),
        timeout: push.timeout,
        ..OtlpExporterConfig::default()
    };
    let mut attrs: Vec<KeyValue> = resource.iter().map(|(k, v)| string_kv(k, v)).collect();
    if !attrs.iter().any(|a| a.key == "service.name") {
        attrs.push(string_kv("service.name", "otel-pipeline-collector"));
    }
    if !attrs.iter().any(|a| a.key == "service.version") {
        attrs.push(string_kv("service.version", env!("CARGO_PKG_VERSION")));
    }
    (config, attrs)
}

impl TelemetryPushFactory for OtlpTelemetryPush {
    fn metrics(
        &self,
        push: &MetricsPush,
        resource: &[(String, String)],
    ) -> Result<Box<dyn Extension>, String> {
        let (config, attrs) = push_settings(push, resource);
        Ok(Box::new(Push {
            config,
            interval: push.interval,
            resource: attrs,
            state: Mutex::new(None),
        }))
    }

    fn logs(
        &self,
        push: &MetricsPush,
        resource: &[(String, String)],
    ) -> Result<Box<dyn Extension>, String> {
        let (config, attrs) = push_settings(push, resource);
        Ok(Box::new(LogPush {
            config,
            interval: push.interval,
            resource: attrs,
            state: Mutex::new(None),
        }))
    }
}

/// The most records one request of the collector's logs carries.
const LOG_BATCH: usize = 512;

/// `service.telemetry.logs.processors`: the collector's own logs, every interval.
struct LogPush {
    config: OtlpExporterConfig,
    interval: Duration,
    resource: Vec<KeyValue>,
    state: Mutex<Option<LogRunning>>,
}

struct LogRunning {
    child: Arc<Child<OtlpExporterConsumer<Logs>>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// One request of up to [`LOG_BATCH`] waiting records; `None` when none waits.
fn log_request(resource: &[KeyValue]) -> Option<Batch<Logs>> {
    use otel_pipeline_core::proto::collector::logs::v1::ExportLogsServiceRequest;
    use otel_pipeline_core::proto::common::v1::InstrumentationScope;
    use otel_pipeline_core::proto::logs::v1::{ResourceLogs, ScopeLogs};
    use otel_pipeline_core::proto::resource::v1::Resource;
    let records = otel_pipeline_core::telemetry::logs::take_logs(LOG_BATCH);
    if records.is_empty() {
        return None;
    }
    Some(Batch::new(ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: resource.to_vec(),
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "otel-pipeline-collector".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..InstrumentationScope::default()
                }),
                log_records: records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }))
}

impl Extension for LogPush {
    fn start(&self, host: Host) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let children = Children::detached(
                host.telemetry.clone(),
                "service.telemetry",
                ComponentId::new("service.telemetry.logs"),
            );
            let exporter = OtlpExporter::<Logs>::new(self.config.clone())
                .with_id(ComponentId::new("otlp").with_name("self_logs"));
            let child = Arc::new(children.exporter::<Logs, _>(exporter)?);
            child.start().await?;
            otel_pipeline_core::telemetry::logs::set_pushing(true);
            let (stop, mut stopped) = watch::channel(false);
            let (every, resource) = (self.interval, self.resource.clone());
            let task_child = Arc::clone(&child);
            let task = tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(Instant::now() + every, every);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            while let Some(batch) = log_request(&resource) {
                                // Refused or failed: counted by the exporter; logs are
                                // not worth holding the collector back for.
                                let _ = task_child.consumer().consume(batch).await;
                            }
                        }
                        _ = async { stopped.wait_for(|s| *s).await.map(drop) } => return,
                    }
                }
            });
            *self.state.lock() = Some(LogRunning { child, stop, task });
            Ok(())
        })
    }

    fn shutdown(&self, deadline: Instant) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let Some(running) = self.state.lock().take() else {
                return Ok(());
            };
            let _ = running.stop.send(true);
            let _ = tokio::time::timeout_at(deadline, running.task).await;
            // What was logged up to the stop, then no more.
            while let Some(batch) = log_request(&self.resource) {
                let _ = tokio::time::timeout_at(deadline, running.child.consumer().consume(batch))
                    .await;
            }
            otel_pipeline_core::telemetry::logs::set_pushing(false);
            running.child.shutdown(deadline).await?;
            Ok(())
        })
    }
}

fn string_kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_string())),
        }),
        ..Default::default()
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

struct Running {
    child: Arc<Child<OtlpExporterConsumer<Metrics>>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    host: Host,
    start_ns: u64,
}

struct Push {
    config: OtlpExporterConfig,
    interval: Duration,
    resource: Vec<KeyValue>,
    state: Mutex<Option<Running>>,
}

impl Push {
    fn request(&self, host: &Host, start_ns: u64) -> Batch<Metrics> {
        Batch::new(
            host.telemetry
                .to_otlp(self.resource.clone(), start_ns, now_ns()),
        )
    }
}

impl Extension for Push {
    fn start(&self, host: Host) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let children = Children::detached(
                host.telemetry.clone(),
                "service.telemetry",
                ComponentId::new("service.telemetry.metrics"),
            );
            let exporter = OtlpExporter::<Metrics>::new(self.config.clone())
                .with_id(ComponentId::new("otlp").with_name("self_metrics"));
            let child = Arc::new(children.exporter::<Metrics, _>(exporter)?);
            child.start().await?;
            let (stop, mut stopped) = watch::channel(false);
            let start_ns = now_ns();
            let (every, resource) = (self.interval, self.resource.clone());
            let (task_child, task_host) = (Arc::clone(&child), host.clone());
            let task = tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(Instant::now() + every, every);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            let request = task_host.telemetry.to_otlp(resource.clone(), start_ns, now_ns());
                            // Refused: the next interval sends the counters again, whole.
                            let _ = task_child.consumer().consume(Batch::new(request)).await;
                        }
                        _ = async { stopped.wait_for(|s| *s).await.map(drop) } => return,
                    }
                }
            });
            *self.state.lock() = Some(Running {
                child,
                stop,
                task,
                host,
                start_ns,
            });
            Ok(())
        })
    }

    fn shutdown(&self, deadline: Instant) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let Some(running) = self.state.lock().take() else {
                return Ok(());
            };
            let _ = running.stop.send(true);
            let _ = tokio::time::timeout_at(deadline, running.task).await;
            // The last counts, as the pipelines left them.
            let last = self.request(&running.host, running.start_ns);
            let _ = tokio::time::timeout_at(deadline, running.child.consumer().consume(last)).await;
            running.child.shutdown(deadline).await?;
            Ok(())
        })
    }
}

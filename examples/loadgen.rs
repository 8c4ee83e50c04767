//! OTLP load generator: sends realistic traces at a set rate or as fast as possible over
//! gRPC or HTTP, and reports spans/s sent and accepted.
//!
//! ```text
//! # against any OTLP endpoint
//! cargo run --release --example loadgen -- --endpoint http://127.0.0.1:4317 --protocol grpc --rate 50000 --duration 10
//! # measure our relay: start examples/relay as a child, sink its output here, report its CPU
//! cargo build --release --examples && target/release/examples/loadgen --relay --duration 10
//! ```
//!
//! Options: `--protocol grpc|http`, `--rate SPANS_PER_S` (0 = as fast as possible),
//! `--duration S`, `--spans-per-trace N` (20), `--attrs N` (10), `--error-share F` (0.05),
//! `--slow-share F` (0.05), `--traces-per-request N` (5), `--concurrency N` (4),
//! `--relay-compression gzip|zstd|none` (how the relay exports; default gzip), `--relay-arg ARG`
//! (repeatable: passed on to the relay, e.g. `--relay-arg --no-batch`).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use otel_pipeline::DirectReceiver;
use otel_pipeline::exporters::otlp::{
    Compression, OtlpExporter, OtlpExporterConfig, Protocol, RetryConfig, SendingQueueConfig,
};
use otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline::proto::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use otel_pipeline::proto::resource::v1::Resource;
use otel_pipeline::proto::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span::SpanKind, status::StatusCode,
};
use otel_pipeline::receivers::{OtlpConfig, OtlpReceiver};
use otel_pipeline::testing::SplitMix64;
use otel_pipeline::{Batch, Consumer, Pipeline, Traces};

#[derive(Debug, Clone)]
struct Options {
    endpoint: Option<String>,
    protocol: Protocol,
    rate: u64,
    duration: Duration,
    spans_per_trace: usize,
    attrs: usize,
    error_share: f64,
    slow_share: f64,
    traces_per_request: usize,
    concurrency: usize,
    relay: bool,
    relay_compression: String,
    relay_args: Vec<String>,
}

fn parse() -> Result<Options, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let num = |name: &str, default: f64| -> Result<f64, String> {
        get(name).map_or(Ok(default), |v| {
            v.parse::<f64>().map_err(|e| format!("{name} {v}: {e}"))
        })
    };
    Ok(Options {
        endpoint: get("--endpoint"),
        protocol: match get("--protocol").as_deref() {
            None | Some("grpc") => Protocol::Grpc,
            Some("http") => Protocol::HttpProtobuf,
            Some(other) => return Err(format!("--protocol {other}: use grpc or http")),
        },
        rate: num("--rate", 0.0)? as u64,
        duration: Duration::from_secs_f64(num("--duration", 10.0)?),
        spans_per_trace: num("--spans-per-trace", 20.0)?.max(1.0) as usize,
        attrs: num("--attrs", 10.0)? as usize,
        error_share: num("--error-share", 0.05)?,
        slow_share: num("--slow-share", 0.05)?,
        traces_per_request: num("--traces-per-request", 5.0)?.max(1.0) as usize,
        concurrency: num("--concurrency", 4.0)?.max(1.0) as usize,
        relay: args.iter().any(|a| a == "--relay"),
        relay_compression: get("--relay-compression").unwrap_or_else(|| "gzip".into()),
        relay_args: args
            .iter()
            .zip(args.iter().skip(1))
            .filter(|(flag, _)| *flag == "--relay-arg")
            .map(|(_, value)| value.clone())
            .collect(),
    })
}

fn kv(key: String, value: Value) -> KeyValue {
    KeyValue {
        key,
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// One request of `traces` traces; errors and slow roots in the configured shares.
fn request(o: &Options, rng: &mut SplitMix64) -> ExportTraceServiceRequest {
    let mut spans = Vec::with_capacity(o.traces_per_request * o.spans_per_trace);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    for _ in 0..o.traces_per_request {
        let trace_id: Vec<u8> =
            [rng.next_u64().to_be_bytes(), rng.next_u64().to_be_bytes()].concat();
        let root = rng.next_u64().max(1).to_be_bytes().to_vec();
        let error = (rng.below(10_000) as f64) < o.error_share * 10_000.0;
        let slow = (rng.below(10_000) as f64) < o.slow_share * 10_000.0;
        for i in 0..o.spans_per_trace {
            let duration = if i == 0 && slow {
                2_500_000_000
            } else {
                1_000_000 + rng.below(40_000_000)
            };
            let mut attributes: Vec<KeyValue> = (0..o.attrs)
                .map(|a| {
                    kv(
                        format!("app.attr.{a}"),
                        Value::StringValue(format!("value-{}", rng.below(1000))),
                    )
                })
                .collect();
            attributes.push(kv(
                "http.route".into(),
                Value::StringValue("/api/orders/{id}".into()),
            ));
            spans.push(Span {
                trace_id: trace_id.clone(),
                span_id: if i == 0 {
                    root.clone()
                } else {
                    rng.next_u64().max(1).to_be_bytes().to_vec()
                },
                parent_span_id: if i == 0 { Vec::new() } else { root.clone() },
                name: if i == 0 {
                    "GET /api/orders/{id}".into()
                } else {
                    format!("db query {i}")
                },
                kind: if i == 0 {
                    SpanKind::Server
                } else {
                    SpanKind::Client
                } as i32,
                start_time_unix_nano: now,
                end_time_unix_nano: now + duration,
                attributes,
                status: Some(Status {
                    code: if error && i == 0 {
                        StatusCode::Error
                    } else {
                        StatusCode::Unset
                    } as i32,
                    ..Default::default()
                }),
                flags: 0x101,
                ..Default::default()
            });
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name".into(),
                    Value::StringValue("loadgen".into()),
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "loadgen".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// CPU seconds (user + system) a process has used, from /proc (Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut o = parse()?;
    let mut relay = None;
    let mut sink = None;
    if o.relay {
        // Sink: where the relay exports to, counted here.
        let sink_otlp = OtlpReceiver::new(OtlpConfig {
            http: None,
            ..OtlpConfig::loopback()
        });
        let running = Pipeline::traces()
            .named("traces/sink")
            .receiver(sink_otlp.traces())
            .exporter(DropCounter)
            .build()?
            .start()
            .await?;
        let sink_addr = sink_otlp
            .local_addrs()
            .grpc
            .ok_or("sink has no gRPC address")?;
        let exe = std::env::current_exe()?;
        let relay_bin = exe.with_file_name("relay");
        let mut child = Command::new(&relay_bin)
            .args([
                "--grpc",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--to",
                &format!("http://{sink_addr}"),
            ])
            .args(["--compression", &o.relay_compression])
            .args(&o.relay_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "starting {}: {e} (cargo build --release --examples first)",
                    relay_bin.display()
                )
            })?;
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?),
            &mut line,
        )?;
        let grpc = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("grpc="))
            .ok_or("relay did not report its address")?;
        let http = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http="))
            .ok_or("relay did not report its address")?;
        o.endpoint = Some(match o.protocol {
            Protocol::Grpc => format!("http://{grpc}"),
            _ => format!("http://{http}"),
        });
        relay = Some(child);
        sink = Some(running);
    }
    let endpoint = o
        .endpoint
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:4317".into());

    // The sender: our OTLP exporter without a queue, one request at a time per task.
    let (receiver, sender) = DirectReceiver::<Traces>::new();
    let running = Pipeline::traces()
        .named("traces/loadgen")
        .receiver(receiver)
        .exporter(OtlpExporter::<Traces>::new(OtlpExporterConfig {
            endpoint: endpoint.clone(),
            protocol: o.protocol,
            compression: Compression::None,
            retry: RetryConfig {
                enabled: false,
                ..RetryConfig::default()
            },
            queue: SendingQueueConfig {
                enabled: false,
                ..SendingQueueConfig::default()
            },
            ..OtlpExporterConfig::default()
        }))
        .build()?
        .start()
        .await?;

    let sent = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let spans_per_request = (o.traces_per_request * o.spans_per_trace) as u64;
    let cpu_before = relay.as_ref().and_then(|c| cpu_seconds(c.id()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..o.concurrency {
        let (o, sender, sent, accepted) = (
            o.clone(),
            sender.clone(),
            Arc::clone(&sent),
            Arc::clone(&accepted),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = SplitMix64::new(worker as u64 + 1);
            // Pre-generate a few requests so generation cost stays out of the measurement.
            let pool: Vec<ExportTraceServiceRequest> =
                (0..16).map(|_| request(&o, &mut rng)).collect();
            let per_task_rate = o.rate as f64 / o.concurrency as f64;
            let mut i = 0usize;
            while start.elapsed() < o.duration {
                let batch = Batch::<Traces>::new(pool[i % pool.len()].clone());
                i += 1;
                sent.fetch_add(spans_per_request, Ordering::Relaxed);
                if sender.send_batch(batch).await.is_ok() {
                    accepted.fetch_add(spans_per_request, Ordering::Relaxed);
                }
                if per_task_rate > 0.0 {
                    let due = start
                        + Duration::from_secs_f64(
                            i as f64 * spans_per_request as f64 / per_task_rate,
                        );
                    tokio::time::sleep_until(due.into()).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (sent, accepted) = (
        sent.load(Ordering::Relaxed),
        accepted.load(Ordering::Relaxed),
    );
    println!("endpoint      {endpoint} ({:?})", o.protocol);
    println!(
        "duration      {elapsed:.1} s, {} tasks, {} spans/request",
        o.concurrency, spans_per_request
    );
    println!(
        "sent          {sent} spans, {:.0} spans/s",
        sent as f64 / elapsed
    );
    let refused = sent - accepted;
    println!(
        "accepted      {accepted} spans, {:.0} spans/s ({refused} refused or failed)",
        accepted as f64 / elapsed
    );
    if let Some(mut child) = relay {
        let cpu = cpu_seconds(child.id()).zip(cpu_before).map(|(a, b)| a - b);
        drop(child.stdin.take());
        let _ = child.wait();
        if let Some(cpu) = cpu {
            println!(
                "relay cpu     {cpu:.2} s, {:.2} CPU-seconds per million spans",
                cpu / (accepted as f64 / 1e6)
            );
        }
    }
    running.shutdown(Duration::from_secs(5)).await?;
    if let Some(sink) = sink {
        let t = sink.telemetry().clone();
        sink.shutdown(Duration::from_secs(5)).await?;
        let got = t.sum("otelcol_receiver_accepted_spans", &[]);
        println!("relayed       {got} spans reached the sink");
    }
    Ok(())
}

/// A terminal exporter that only counts (the sink of the relay measurement).
#[derive(Debug, Default)]
struct DropCounter;

impl otel_pipeline::Exporter<Traces> for DropCounter {
    type Consumer = DropCounterConsumer;
    fn id(&self) -> otel_pipeline::ComponentId {
        otel_pipeline::ComponentId::new("count")
    }
    fn build(
        self,
        ctx: &mut otel_pipeline::ComponentContext<'_>,
    ) -> Result<Self::Consumer, otel_pipeline::BuildError> {
        Ok(DropCounterConsumer(ctx.telemetry()))
    }
}

#[derive(Debug)]
struct DropCounterConsumer(Arc<otel_pipeline::ComponentTelemetry>);

impl Consumer<Traces> for DropCounterConsumer {
    async fn consume(
        &self,
        batch: Batch<Traces>,
    ) -> Result<(), otel_pipeline::ConsumeError<Traces>> {
        self.0.add_sent(batch.item_count());
        Ok(())
    }
}

//! Soak: the shipped gateway configuration (`docs/examples/gateway.yaml`: memory limiter,
//! tail sampling, redaction, batch) under a sustained load over OTLP/gRPC on loopback, for
//! minutes. It checks that memory is flat after warm-up, that no error trace is lost, and
//! that every stage's counters balance. Exits non-zero if any check fails.
//!
//! ```text
//! cargo run --release --example soak -- --seconds 300 --rate 20000
//! ```
//!
//! Options: `--seconds N` (180), `--rate SPANS_PER_S` (20 000), `--warmup-share F` (0.3:
//! memory is compared from the end of warm-up on), `--rss-growth-mib N` (64: allowed growth
//! after warm-up), `--decision-wait S` (2; the shipped gateway's is 10), `--limit-mib N`
//! (the memory limiter's hard limit instead of the shipped 75 % of the machine, its spike
//! limit a fifth of it), `--peak-mib N` (fail when the process's peak RSS passes N).
//! `tests/soak.rs` runs a shortened form in CI.
//!
//! The memory bound of the shipped gateway at full load (issue 32; docs/reliability.md):
//!
//! ```text
//! cargo run --release --example soak -- --seconds 60 --rate 250000 --decision-wait 10 \
//!     --limit-mib 700 --peak-mib 800 --rss-growth-mib 1000
//! ```
//!
//! A refusal (the memory limiter's back-pressure) is not a failure: the client waits and
//! sends the request again, so nothing is lost; the waits are counted and printed.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use otel_pipeline::DirectReceiver;
use otel_pipeline::collector::{CollectorConfig, ConfigFile};
use otel_pipeline::exporters::otlp::{OtlpExporter, OtlpExporterConfig, RetryConfig};
use otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline::proto::trace::v1::{Status, status::StatusCode};
use otel_pipeline::receivers::{OtlpConfig, OtlpReceiver};
use otel_pipeline::testing::{assert_balanced, generate_traces};
use otel_pipeline::{
    Batch, BuildError, ComponentContext, ComponentId, ComponentTelemetry, ConsumeError, Consumer,
    Exporter, Pipeline, Telemetry, Traces,
};
use std::sync::Mutex;

const GATEWAY: &str = include_str!("../docs/examples/gateway.yaml");

// The allocator of the shipped collector binary (`examples/collector.rs`), so the memory
// measured is what a deployed gateway holds: mimalloc hands freed pages back to the
// system on its own, where glibc's allocator keeps them in its arenas.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Options {
    seconds: u64,
    rate: u64,
    warmup_share: f64,
    rss_growth_mib: u64,
    decision_wait: f64,
    limit_mib: u64,
    peak_mib: u64,
}

fn parse() -> Result<Options, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str, default: f64| -> Result<f64, String> {
        match args.iter().position(|a| a == name) {
            None => Ok(default),
            Some(i) => args
                .get(i + 1)
                .ok_or(format!("{name} needs a value"))?
                .parse()
                .map_err(|e| format!("{name}: {e}")),
        }
    };
    Ok(Options {
        seconds: get("--seconds", 180.0)? as u64,
        rate: get("--rate", 20_000.0)? as u64,
        warmup_share: get("--warmup-share", 0.3)?,
        rss_growth_mib: get("--rss-growth-mib", 64.0)? as u64,
        decision_wait: get("--decision-wait", 2.0)?,
        limit_mib: get("--limit-mib", 0.0)? as u64,
        peak_mib: get("--peak-mib", 0.0)? as u64,
    })
}

/// The backend: counts spans and remembers which traces arrived, and keeps nothing else.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<(u64, HashSet<Vec<u8>>)>>);

struct SinkConsumer(Sink, Arc<ComponentTelemetry>);

impl Exporter<Traces> for Sink {
    type Consumer = SinkConsumer;

    fn id(&self) -> ComponentId {
        ComponentId::new("sink")
    }

    fn build(self, ctx: &mut ComponentContext<'_>) -> Result<SinkConsumer, BuildError> {
        Ok(SinkConsumer(self, ctx.telemetry()))
    }
}

impl Consumer<Traces> for SinkConsumer {
    async fn consume(&self, batch: Batch<Traces>) -> Result<(), ConsumeError<Traces>> {
        let n = batch.item_count();
        let mut state = self
            .0
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.0 += n as u64;
        for rs in &batch.data().resource_spans {
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    state.1.insert(span.trace_id.clone());
                }
            }
        }
        self.1.add_sent(n);
        Ok(())
    }
}

fn rss_mib() -> Option<u64> {
    status_mib("VmRSS:")
}

/// The process's peak RSS so far.
fn peak_rss_mib() -> Option<u64> {
    status_mib("VmHWM:")
}

fn status_mib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn free_port() -> Result<u16, std::io::Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = parse()?;
    // The backend the gateway exports to.
    let backend_otlp = OtlpReceiver::new(OtlpConfig {
        http: None,
        ..OtlpConfig::loopback()
    });
    let sink = Sink::default();
    let backend = Pipeline::traces()
        .named("traces/backend")
        .receiver(backend_otlp.traces())
        .exporter(sink.clone())
        .build()?
        .start()
        .await?;
    let backend_addr = backend_otlp.local_addrs().grpc.ok_or("backend address")?;

    // The gateway, as shipped, on loopback, with a short decision wait so a run ends soon.
    let gw_port = free_port()?;
    let limiter = if o.limit_mib > 0 {
        format!(
            "  memory_limiter:\n    limit_percentage: 0\n    spike_limit_percentage: 0\n    \
             limit_mib: {}\n    spike_limit_mib: {}\n    check_interval: 100ms\n",
            o.limit_mib,
            o.limit_mib / 5
        )
    } else {
        String::new()
    };
    let override_yaml = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: 127.0.0.1:{gw_port} }}\n      http: {{ endpoint: 127.0.0.1:0 }}\n\
         processors:\n  tail_sampling:\n    decision_wait: {}ms\n  batch:\n    timeout: 200ms\n{limiter}\
         exporters:\n  otlp/backend:\n    endpoint: {backend_addr}\n\
         extensions:\n  health_check:\n    endpoint: 127.0.0.1:0\n\
         service:\n  telemetry:\n    metrics: {{ level: none }}\n",
        (o.decision_wait * 1000.0) as u64,
    );
    let files = [
        ConfigFile::new("gateway.yaml", GATEWAY),
        ConfigFile::new("soak.yaml", override_yaml),
    ];
    let config = CollectorConfig::load(&files, |_| None, &otel_pipeline::default_registry())?;
    let gateway_telemetry = Telemetry::new();
    let gateway = config
        .build(
            &otel_pipeline::default_registry(),
            gateway_telemetry.clone(),
        )?
        .start()
        .await?;

    // The client: OTLP/gRPC at a steady rate, 5 % of traces with an error.
    let (receiver, sender) = DirectReceiver::new();
    let client = Pipeline::traces()
        .named("traces/client")
        .receiver(receiver)
        .exporter(OtlpExporter::<Traces>::new(OtlpExporterConfig {
            endpoint: format!("http://127.0.0.1:{gw_port}"),
            retry: RetryConfig {
                initial_interval: Duration::from_millis(50),
                ..RetryConfig::default()
            },
            ..OtlpExporterConfig::default()
        }))
        .build()?
        .start()
        .await?;

    let spans_per_trace = 10;
    let traces_per_request = 10;
    let per_request = (spans_per_trace * traces_per_request) as u64;
    let requests_per_tick = (o.rate / 10 / per_request).max(1);
    let started = Instant::now();
    let warmup_end = Duration::from_secs_f64(o.seconds as f64 * o.warmup_share);
    let mut errors: HashSet<Vec<u8>> = HashSet::new();
    let mut sent = 0u64;
    let mut seed = 0u64;
    let mut waits = 0u64;
    let mut rss_at_warmup = None;
    let mut rss_max_after = 0u64;
    let mut next_report = Duration::from_secs(1);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    println!(
        "soak: {} s at {} spans/s through the shipped gateway",
        o.seconds, o.rate
    );
    while started.elapsed() < Duration::from_secs(o.seconds) {
        tick.tick().await;
        for _ in 0..requests_per_tick {
            seed += 1;
            let mut data: ExportTraceServiceRequest =
                generate_traces(traces_per_request, spans_per_trace, seed);
            let spans = &mut data.resource_spans[0].scope_spans[0].spans;
            for (i, span) in spans.iter_mut().enumerate() {
                let trace = seed as usize * traces_per_request + i / spans_per_trace;
                if trace.is_multiple_of(20) && i % spans_per_trace == 1 {
                    span.status = Some(Status {
                        code: StatusCode::Error as i32,
                        message: "soak".into(),
                    });
                    errors.insert(span.trace_id.clone());
                }
            }
            // Refused (the client's queue is full while the gateway pushes back): wait
            // and send the same request again, as an SDK's retry would.
            let mut batch = Batch::new(data);
            loop {
                match sender.send_batch(batch).await {
                    Ok(()) => {
                        sent += per_request;
                        break;
                    }
                    Err(ConsumeError::Refused(r)) => {
                        waits += 1;
                        batch = r.batch;
                        if waits.is_multiple_of(50) {
                            println!(
                                "  {:>4} s  the client waits on back-pressure ({waits} waits), rss {} MiB",
                                started.elapsed().as_secs(),
                                rss_mib().unwrap_or(0)
                            );
                        }
                        // Refused past the end of the run and a minute more: the gateway
                        // does not take data again.
                        if started.elapsed() > Duration::from_secs(o.seconds + 60) {
                            return Err(format!(
                                "refused for good: {waits} waits, rss {} MiB",
                                rss_mib().unwrap_or(0)
                            )
                            .into());
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => {
                        return Err(format!("the client could not queue: {}", e.reason()).into());
                    }
                }
            }
        }
        let elapsed = started.elapsed();
        if elapsed >= next_report {
            next_report += Duration::from_secs(1);
            let rss = rss_mib().unwrap_or(0);
            if elapsed >= warmup_end {
                rss_at_warmup.get_or_insert(rss);
                rss_max_after = rss_max_after.max(rss);
            }
            if elapsed.as_secs().is_multiple_of(10) || o.seconds <= 20 {
                println!(
                    "  {:>4} s  sent {:>9} spans  arrived {:>9}  rss {rss} MiB",
                    elapsed.as_secs(),
                    sent,
                    sink.0
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                );
            }
        }
    }

    let send_secs = started.elapsed().as_secs_f64();
    // Drain: the client flushes, the gateway decides what it holds, the backend takes it.
    let client_telemetry = client.telemetry().clone();
    client.shutdown(Duration::from_secs(30)).await?;
    gateway.shutdown(Duration::from_secs(30)).await?;
    let backend_telemetry = backend.telemetry().clone();
    backend.shutdown(Duration::from_secs(10)).await?;

    let (arrived, traces) = {
        let s = sink
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (s.0, s.1.clone())
    };
    let lost: Vec<_> = errors.iter().filter(|t| !traces.contains(*t)).collect();
    let rss_start = rss_at_warmup.unwrap_or(0);
    let growth = rss_max_after.saturating_sub(rss_start);
    let peak = peak_rss_mib().unwrap_or(0);
    println!(
        "soak: sent {sent} spans ({:.0} spans/s over {send_secs:.0} s), {} error \
         traces; {arrived} spans arrived (sampled); rss after warm-up {rss_start} MiB, max \
         {rss_max_after} MiB (+{growth}); peak rss {peak} MiB; the client waited {waits} \
         times on back-pressure",
        sent as f64 / send_secs,
        errors.len()
    );
    let mut failed = Vec::new();
    if o.peak_mib > 0 && peak > o.peak_mib {
        failed.push(format!("peak rss {peak} MiB, over {} MiB", o.peak_mib));
    }
    if !lost.is_empty() {
        failed.push(format!("{} error traces lost", lost.len()));
    }
    if growth > o.rss_growth_mib {
        failed.push(format!(
            "memory grew {growth} MiB after warm-up (allowed {})",
            o.rss_growth_mib
        ));
    }
    for (name, t) in [
        ("client", &client_telemetry),
        ("gateway", &gateway_telemetry),
        ("backend", &backend_telemetry),
    ] {
        if let Err(e) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| assert_balanced(t)))
        {
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "counters do not balance".into());
            failed.push(format!("{name}: {why}"));
        }
    }
    if failed.is_empty() {
        println!("soak: ok (no error trace lost, memory flat, counters balance)");
        Ok(())
    } else {
        for f in &failed {
            eprintln!("soak: FAILED: {f}");
        }
        std::process::exit(1)
    }
}

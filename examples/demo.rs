//! The main demo: the agent and gateway tiers of a production deployment, in one process
//! on loopback, from the shipped Collector YAML, on embedded defaults.
//!
//! ```text
//! services --OTLP--> agent (docs/examples/agent.yaml) --trace router--> gateway 1 --> backend 1
//!                                                                   \-> gateway 2 --> backend 2
//! ```
//!
//! A synthetic shop plays the instrumented services. `frontend` speaks W3C Trace Context,
//! `checkout` reads W3C or B3 and calls `payments` with B3, and `checkout` hands each order
//! to `worker` through an async queue. Some requests fail, some are slow (over 2 s), some
//! are Kubernetes health checks, and every order carries secrets in its attributes (a
//! bearer token, an e-mail, a card number in a SQL statement).
//!
//! The agent drops health checks, batches, and routes every span by trace id to the
//! gateway that owns its trace. Each gateway tail-samples (every error and slow trace,
//! `sampling.priority=always_on`, 5 % of the rest), removes secrets, and sends to its
//! backend. At the end a table shows what happened and checks the promises: no trace split
//! across gateways, no error trace lost, no broken parent link at the B3/W3C boundary or
//! the queue, no health check and no secret at a backend. It exits non-zero when one fails.
//!
//! ```text
//! cargo run --example demo             # progress line and the summary table
//! cargo run --example demo -- --verbose  # also every span the backends received
//! ```

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::net::TcpListener;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use otel_pipeline::collector::{CollectorConfig, ConfigFile, RunningCollector};
use otel_pipeline::exporters::otlp::{OtlpExporterConfig, RetryConfig};
use otel_pipeline::propagation::{
    B3Propagator, CompositePropagator, Traced, W3cTraceContextPropagator,
};
use otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline::proto::common::v1::{AnyValue, KeyValue, any_value::Value};
use otel_pipeline::proto::resource::v1::Resource;
use otel_pipeline::proto::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span::SpanKind, status::StatusCode,
};
use otel_pipeline::receivers::{OtlpConfig, OtlpReceiver};
use otel_pipeline::testing::{Exported, InMemoryExporter, SplitMix64};
use otel_pipeline::{Pipeline, RunningPipeline, Telemetry, Traces};

const AGENT: &str = include_str!("../docs/examples/agent.yaml");
const GATEWAY: &str = include_str!("../docs/examples/gateway.yaml");
const REQUESTS: usize = 300;

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn start_collector(
    name: &str,
    text: &str,
    overrides: &str,
) -> Result<RunningCollector, Box<dyn std::error::Error>> {
    let files = [
        ConfigFile::new(name, text),
        ConfigFile::new(format!("{name} (demo overrides)"), overrides),
    ];
    let registry = otel_pipeline::default_registry();
    let config = CollectorConfig::load(&files, |_| None, &registry)?;
    Ok(config.build(&registry, Telemetry::new())?.start().await?)
}

/// A backend: OTLP in, kept in memory.
async fn backend()
-> Result<(RunningPipeline, OtlpReceiver, Exported<Traces>), Box<dyn std::error::Error>> {
    let otlp = OtlpReceiver::new(OtlpConfig {
        http: None,
        ..OtlpConfig::loopback()
    });
    let (exporter, exported) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .receiver(otlp.traces())
        .exporter(exporter)
        .build()?
        .start()
        .await?;
    Ok((running, otlp, exported))
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

/// What the shop sent, to check against what arrived.
#[derive(Default)]
struct Sent {
    spans: usize,
    health: HashSet<Vec<u8>>,
    errors: HashSet<Vec<u8>>,
    slow: HashSet<Vec<u8>>,
}

/// Spans by service, each a resource of its own.
#[derive(Default)]
struct Outbox(HashMap<&'static str, Vec<Span>>);

impl Outbox {
    fn take(&mut self) -> ExportTraceServiceRequest {
        let mut req = ExportTraceServiceRequest::default();
        for (service, spans) in self.0.drain() {
            req.resource_spans.push(ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", service),
                        kv("k8s.namespace.name", "shop"),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        req
    }
}

/// Start a span under `parent` (a new trace when it has none) and return its context.
fn child_of(parent: &Context, rng: &mut SplitMix64) -> SpanContext {
    let p = parent.span().span_context().clone();
    let trace_id = if p.is_valid() {
        p.trace_id()
    } else {
        TraceId::from_bytes(rng.next_u128_bytes())
    };
    SpanContext::new(
        trace_id,
        SpanId::from_bytes(rng.next_u64().max(1).to_be_bytes()),
        TraceFlags::SAMPLED,
        false,
        TraceState::NONE,
    )
}

trait U128Bytes {
    fn next_u128_bytes(&mut self) -> [u8; 16];
}

impl U128Bytes for SplitMix64 {
    fn next_u128_bytes(&mut self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next_u64().to_be_bytes());
        b[8..].copy_from_slice(&self.next_u64().to_be_bytes());
        b
    }
}

#[allow(clippy::too_many_arguments)]
fn span(
    sc: &SpanContext,
    parent: &Context,
    name: &str,
    kind: SpanKind,
    start: u64,
    millis: u64,
    attrs: Vec<KeyValue>,
    error: bool,
) -> Span {
    let p = parent.span().span_context().clone();
    Span {
        trace_id: sc.trace_id().to_bytes().to_vec(),
        span_id: sc.span_id().to_bytes().to_vec(),
        parent_span_id: if p.is_valid() {
            p.span_id().to_bytes().to_vec()
        } else {
            Vec::new()
        },
        name: name.into(),
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + millis * 1_000_000,
        attributes: attrs,
        status: error.then(|| Status {
            code: StatusCode::Error as i32,
            message: "card declined".into(),
        }),
        ..Default::default()
    }
}

/// One request through the shop. Health checks stop at `frontend`; orders go frontend
/// (W3C) -> checkout (W3C or B3 in, B3 out) -> payments (B3), and checkout queues the
/// order for `worker`.
async fn shop_request(
    i: usize,
    rng: &mut SplitMix64,
    queue: &tokio::sync::mpsc::Sender<Traced<u64>>,
    out: &mut Outbox,
    sent: &mut Sent,
) {
    let w3c = W3cTraceContextPropagator::new();
    let b3 = B3Propagator::single();
    let accept_both = CompositePropagator::w3c_and_b3();
    let now = 1_764_500_000_000_000_000u64 + i as u64 * 10_000_000;
    let roll = rng.below(100);

    // frontend: the entry point.
    let root = child_of(&Context::new(), rng);
    let root_cx = Context::new().with_remote_span_context(root.clone());
    if roll < 15 {
        let probe = span(
            &root,
            &Context::new(),
            "GET /healthz",
            SpanKind::Server,
            now,
            1,
            vec![
                kv("http.route", "/healthz"),
                kv("user_agent.original", "kube-probe/1.31"),
            ],
            false,
        );
        sent.health.insert(probe.trace_id.clone());
        out.0.entry("frontend").or_default().push(probe);
        sent.spans += 1;
        return;
    }
    let error = (15..25).contains(&roll);
    let slow = (25..30).contains(&roll);
    let priority = roll == 30;
    let mut front_attrs = vec![
        kv("http.route", "/api/orders"),
        kv("http.request.method", "POST"),
    ];
    if priority {
        front_attrs.push(kv("sampling.priority", "always_on"));
    }
    // frontend -> checkout over HTTP with W3C headers.
    let mut headers: HashMap<String, String> = HashMap::new();
    w3c.inject_context(&root_cx, &mut headers);
    // checkout reads whichever format arrives.
    let incoming = accept_both.extract(&headers);
    let checkout = child_of(&incoming, rng);
    let checkout_cx = Context::new().with_remote_span_context(checkout.clone());
    // checkout -> payments over HTTP with B3 (a Zipkin-era service).
    let mut b3_headers: HashMap<String, String> = HashMap::new();
    b3.inject_context(&checkout_cx, &mut b3_headers);
    let pay_parent = b3.extract(&b3_headers);
    let payments = child_of(&pay_parent, rng);
    let pay_ms = if slow { 2_500 } else { 40 };
    // checkout -> worker through a queue, the context in the message.
    let producer = child_of(&checkout_cx, rng);
    let producer_cx = Context::new().with_remote_span_context(producer.clone());
    let _ = queue.send(Traced::in_context(i as u64, &producer_cx)).await;

    let secrets = vec![
        kv(
            "http.request.header.authorization",
            "Bearer eyJhbGciOi.demo.token",
        ),
        kv("user.email", "ada@example.com"),
    ];
    let total = pay_ms + 60;
    out.0.entry("frontend").or_default().push(span(
        &root,
        &Context::new(),
        "POST /api/orders",
        SpanKind::Server,
        now,
        total + 10,
        front_attrs,
        false,
    ));
    out.0.entry("checkout").or_default().push(span(
        &checkout,
        &incoming,
        "checkout",
        SpanKind::Server,
        now + 1_000_000,
        total,
        secrets,
        false,
    ));
    out.0.entry("payments").or_default().push(span(
        &payments,
        &pay_parent,
        "charge card",
        SpanKind::Server,
        now + 2_000_000,
        pay_ms,
        vec![kv(
            "db.statement",
            "UPDATE cards SET used = 1 WHERE pan = '4111111111111111'",
        )],
        error,
    ));
    out.0.entry("checkout").or_default().push(span(
        &producer,
        &checkout_cx,
        "orders publish",
        SpanKind::Producer,
        now + 3_000_000,
        1,
        vec![kv("messaging.system", "tokio")],
        false,
    ));
    sent.spans += 4;
    let id = root.trace_id().to_bytes().to_vec();
    if error {
        sent.errors.insert(id.clone());
    }
    if slow {
        sent.slow.insert(id);
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let verbose = std::env::args().any(|a| a == "--verbose");
    match run(verbose).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(verbose: bool) -> Result<bool, Box<dyn std::error::Error>> {
    println!(
        "otel-pipeline demo: agent -> trace router -> two tail-sampling gateways -> backends (loopback)\n"
    );
    let backends = [backend().await?, backend().await?];
    let gw_ports = [free_port()?, free_port()?];
    let mut gateways = Vec::new();
    for (i, port) in gw_ports.iter().enumerate() {
        let overrides = format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: 127.0.0.1:{port} }}\n      http: {{ endpoint: 127.0.0.1:0 }}\n\
             processors:\n  tail_sampling:\n    decision_wait: 1s\n  batch:\n    timeout: 100ms\n  redaction:\n    summary: silent\n\
             exporters:\n  otlp/backend:\n    endpoint: {}\n\
             extensions:\n  health_check:\n    endpoint: 127.0.0.1:0\n\
             service:\n  telemetry:\n    metrics: {{ level: none }}\n",
            backends[i]
                .1
                .local_addrs()
                .grpc
                .ok_or("backend not bound")?
        );
        gateways.push(start_collector("docs/examples/gateway.yaml", GATEWAY, &overrides).await?);
    }
    let agent_port = free_port()?;
    let overrides = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: 127.0.0.1:{agent_port} }}\n      http: {{ endpoint: 127.0.0.1:0 }}\n\
         processors:\n  batch:\n    timeout: 100ms\n  k8sattributes:\n    passthrough: true\n\
         exporters:\n  loadbalancing:\n    resolver:\n      k8s: null\n      static:\n        hostnames:\n          - 127.0.0.1:{}\n          - 127.0.0.1:{}\n\
         extensions:\n  health_check:\n    endpoint: 127.0.0.1:0\n\
         service:\n  telemetry:\n    metrics: {{ level: none }}\n",
        gw_ports[0], gw_ports[1]
    );
    let agent = start_collector("docs/examples/agent.yaml", AGENT, &overrides).await?;

    // The services' OTLP exporter, to the agent.
    let (svc_receiver, svc) = otel_pipeline::DirectReceiver::new();
    let services = Pipeline::traces()
        .named("traces/shop")
        .receiver(svc_receiver)
        .exporter(otel_pipeline::exporters::OtlpExporter::<Traces>::new(
            OtlpExporterConfig {
                endpoint: format!("http://127.0.0.1:{agent_port}"),
                retry: RetryConfig {
                    initial_interval: Duration::from_millis(20),
                    ..RetryConfig::default()
                },
                ..OtlpExporterConfig::default()
            },
        ))
        .build()?
        .start()
        .await?;

    // The worker consumes the queue and records its consumer spans.
    let (queue, mut inbox) = tokio::sync::mpsc::channel::<Traced<u64>>(64);
    let worker = tokio::spawn(async move {
        let mut rng = SplitMix64::new(99);
        let mut spans = Vec::new();
        while let Some(message) = inbox.recv().await {
            let (order, cx) = message.into_parts();
            let sc = child_of(&cx, &mut rng);
            let start = 1_764_500_000_000_000_000u64 + order * 10_000_000 + 5_000_000;
            spans.push(span(
                &sc,
                &cx,
                "orders process",
                SpanKind::Consumer,
                start,
                15,
                vec![kv("messaging.system", "tokio")],
                false,
            ));
        }
        spans
    });

    let started = Instant::now();
    let mut rng = SplitMix64::new(2026);
    let mut sent = Sent::default();
    let mut out = Outbox::default();
    let backend_spans = |b: &[(RunningPipeline, OtlpReceiver, Exported<Traces>); 2]| {
        b[0].2.item_count() + b[1].2.item_count()
    };
    for i in 0..REQUESTS {
        shop_request(i, &mut rng, &queue, &mut out, &mut sent).await;
        if i % 25 == 24 {
            svc.send(out.take()).await?;
            print!(
                "\r  sent {:>3}/{REQUESTS} requests, {:>4} spans at the backends",
                i + 1,
                backend_spans(&backends)
            );
            let _ = std::io::stdout().flush();
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }
    drop(queue);
    let worker_spans = worker.await?;
    sent.spans += worker_spans.len();
    out.0.entry("worker").or_default().extend(worker_spans);
    svc.send(out.take()).await?;
    services.shutdown(Duration::from_secs(5)).await?;

    // Wait for the gateways' decisions to settle.
    let mut last = usize::MAX;
    let mut still = 0;
    while started.elapsed() < Duration::from_secs(30) && still < 8 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = backend_spans(&backends);
        print!("\r  sent {REQUESTS}/{REQUESTS} requests, {now:>4} spans at the backends");
        let _ = std::io::stdout().flush();
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    println!("\n");

    let agent_t = agent.telemetry().clone();
    let gw_t: Vec<Telemetry> = gateways.iter().map(|g| g.telemetry().clone()).collect();
    agent.shutdown(Duration::from_secs(5)).await?;
    for g in gateways {
        g.shutdown(Duration::from_secs(5)).await?;
    }

    // What arrived.
    let mut arrived: HashMap<Vec<u8>, (HashSet<usize>, Vec<Span>)> = HashMap::new();
    let mut leaks = Vec::new();
    for (i, b) in backends.iter().enumerate() {
        for s in b.2.spans() {
            for a in &s.attributes {
                if let Some(Value::StringValue(v)) = a.value.as_ref().and_then(|v| v.value.as_ref())
                    && (v.contains("4111111111111111")
                        || v.contains("eyJhbGciOi")
                        || v.contains("ada@example.com"))
                {
                    leaks.push(format!("{} = {v}", a.key));
                }
                if a.key == "http.request.header.authorization" {
                    leaks.push(a.key.clone());
                }
            }
            if verbose {
                println!(
                    "  backend {} trace {} span {} parent {:<16} {}",
                    i + 1,
                    hex(&s.trace_id),
                    hex(&s.span_id),
                    hex(&s.parent_span_id),
                    s.name
                );
            }
            let e = arrived.entry(s.trace_id.clone()).or_default();
            e.0.insert(i);
            e.1.push(s);
        }
    }
    let split = arrived.values().filter(|(g, _)| g.len() > 1).count();
    let lost_errors = sent
        .errors
        .iter()
        .filter(|id| !arrived.contains_key(*id))
        .count();
    let lost_slow = sent
        .slow
        .iter()
        .filter(|id| !arrived.contains_key(*id))
        .count();
    let health_through = sent
        .health
        .iter()
        .filter(|id| arrived.contains_key(*id))
        .count();
    let broken_links: usize = arrived
        .values()
        .map(|(_, spans)| {
            let ids: HashSet<&Vec<u8>> = spans.iter().map(|s| &s.span_id).collect();
            spans
                .iter()
                .filter(|s| !s.parent_span_id.is_empty() && !ids.contains(&s.parent_span_id))
                .count()
        })
        .sum();

    let sum = |ts: &[Telemetry], name: &str, f: &[(&str, &str)]| {
        ts.iter().map(|t| t.sum(name, f)).sum::<i64>()
    };
    let agent_ts = std::slice::from_ref(&agent_t);
    let mut rows: Vec<(String, String, &str)> = vec![
        ("spans generated".into(), sent.spans.to_string(), ""),
        (
            "requests (health checks / errors / slow)".into(),
            format!(
                "{REQUESTS} ({} / {} / {})",
                sent.health.len(),
                sent.errors.len(),
                sent.slow.len()
            ),
            "",
        ),
        (
            "health-check spans filtered by the agent".into(),
            sum(
                agent_ts,
                "otelcol_processor_dropped_spans",
                &[("processor", "filter/health")],
            )
            .to_string(),
            "",
        ),
    ];
    for (i, port) in gw_ports.iter().enumerate() {
        let ep = format!("127.0.0.1:{port}");
        rows.push((
            format!("spans routed to gateway {}", i + 1),
            sum(
                agent_ts,
                "otelcol_loadbalancer_routed_spans",
                &[("endpoint", &ep)],
            )
            .to_string(),
            "",
        ));
    }
    for policy in ["errors", "slow", "priority", "rest"] {
        rows.push((
            format!("traces kept by policy `{policy}`"),
            sum(
                &gw_t,
                "otelcol_processor_tail_sampling_decisions",
                &[("policy", policy), ("decision", "sampled")],
            )
            .to_string(),
            "",
        ));
    }
    rows.push((
        "traces dropped by the sampler".into(),
        sum(
            &gw_t,
            "otelcol_processor_tail_sampling_decisions",
            &[("policy", "(final)"), ("decision", "not_sampled")],
        )
        .to_string(),
        "",
    ));
    rows.push((
        "attribute values redacted".into(),
        sum(&gw_t, "otelcol_processor_redacted_attributes", &[]).to_string(),
        "",
    ));
    rows.push((
        "spans at the backends".into(),
        backend_spans(&backends).to_string(),
        "",
    ));
    let promise = |ok: bool| if ok { "ok" } else { "FAILED" };
    rows.push((
        "traces split across gateways (must be 0)".into(),
        split.to_string(),
        promise(split == 0),
    ));
    rows.push((
        "error traces lost (must be 0)".into(),
        lost_errors.to_string(),
        promise(lost_errors == 0),
    ));
    rows.push((
        "slow traces lost (must be 0)".into(),
        lost_slow.to_string(),
        promise(lost_slow == 0),
    ));
    rows.push((
        "broken parent links, B3/W3C and queue (must be 0)".into(),
        broken_links.to_string(),
        promise(broken_links == 0),
    ));
    rows.push((
        "health checks at a backend (must be 0)".into(),
        health_through.to_string(),
        promise(health_through == 0),
    ));
    rows.push((
        "secrets at a backend (must be 0)".into(),
        leaks.len().to_string(),
        promise(leaks.is_empty()),
    ));

    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let vw = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    println!("  {:<width$} | {:>vw$} | promise", "summary", "");
    println!("  {}-+-{}-+--------", "-".repeat(width), "-".repeat(vw));
    for (label, value, check) in &rows {
        println!("  {label:<width$} | {value:>vw$} | {check}");
    }
    for b in backends {
        b.0.shutdown(Duration::from_secs(5)).await?;
    }
    let ok = split == 0
        && lost_errors == 0
        && lost_slow == 0
        && broken_links == 0
        && health_through == 0
        && leaks.is_empty();
    println!(
        "\n{}",
        if ok {
            "every promise held"
        } else {
            "a promise FAILED"
        }
    );
    if !leaks.is_empty() {
        println!("leaked: {leaks:?}");
    }
    Ok(ok)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

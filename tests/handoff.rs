//! The tail sampler's hand-off on loopback: three gateways (OTLP receiver, tail sampler,
//! in memory), agents routing by trace id, and one gateway leaving while it buffers
//! traces. Its undecided traces must reach their new owners and be decided there whole;
//! its decisions must follow, so late spans obey them.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use otel_pipeline::config::from_yaml;
use otel_pipeline::exporters::loadbalancing::{TraceRouter, TraceRouterConfig};
use otel_pipeline::exporters::otlp::OtlpExporterConfig;
use otel_pipeline::processors::tail_sampling::{
    TailSampler, TailSamplingConfig, TailSamplingHandle,
};
use otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline::proto::trace::v1::{Span, Status, status::StatusCode};
use otel_pipeline::receivers::{OtlpConfig, OtlpReceiver};
use otel_pipeline::testing::{Exported, InMemoryExporter, eventually, generate_traces};
use otel_pipeline::{DirectReceiver, DirectSender, Pipeline, RunningPipeline, Traces};
use std::sync::Arc;

mod common;

struct Gateway {
    running: Option<RunningPipeline>,
    exported: Exported<Traces>,
    sampler: TailSamplingHandle,
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// Keep every trace with an error span, nothing else: which traces are kept depends only
/// on whether the sampler saw the whole trace.
fn sampler_config() -> TailSamplingConfig {
    from_yaml(
        "processors.tail_sampling",
        "decision_wait: 1500ms\nshards: 2\nhandoff: { accept_from: [\"*\"] }\n\
         policies: [{ name: errors, type: status_code, status_code: { status_codes: [ERROR] } }]\n",
    )
    .expect("sampler config")
}

/// A router over `endpoints` (without `exclude`), with fast retries.
fn router(endpoints: &[SocketAddr], exclude: Option<SocketAddr>) -> TraceRouter {
    router_with(endpoints, exclude, 3)
}

/// [`router`], ejecting an endpoint after `failures` failures in a row.
fn router_with(
    endpoints: &[SocketAddr],
    exclude: Option<SocketAddr>,
    failures: u32,
) -> TraceRouter {
    let list: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
    // The hand-off's router sends synchronously: what it cannot deliver is decided at
    // the leaving gateway instead of being lost in a queue.
    let (exclude, queue) = match exclude {
        Some(e) => (format!("exclude_endpoints: [{e}]\n"), "false"),
        None => (String::new(), "true"),
    };
    // Without a queue (the hand-off), refusals come straight back: the sampler retries
    // them for a second and decides the rest itself.
    let retry = if queue == "false" {
        "{ enabled: false }"
    } else {
        "{ initial_interval: 20ms, max_interval: 100ms }"
    };
    let yaml = format!(
        "protocol:\n  otlp:\n    tls: {{ insecure: true }}\n    timeout: 2s\n    \
         retry_on_failure: {retry}\n    \
         sending_queue: {{ enabled: {queue} }}\n\
         resolver:\n  static:\n    hostnames: [{}]\n\
         health: {{ failure_threshold: {failures}, probe_interval: 200ms }}\n{exclude}",
        list.join(", ")
    );
    TraceRouter::new(
        TraceRouterConfig::from_yaml("exporters.loadbalancing", &yaml).expect("router config"),
    )
}

async fn gateway(addr: SocketAddr, handoff: Option<TraceRouter>) -> Gateway {
    let otlp = OtlpReceiver::new(OtlpConfig {
        grpc: Some(addr),
        http: None,
        ..OtlpConfig::loopback()
    });
    let mut sampler = TailSampler::new(sampler_config());
    if let Some(r) = handoff {
        sampler = sampler.with_handoff(r);
    }
    let handle = sampler.handle();
    let (exporter, exported) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .receiver(otlp.traces())
        .processor(sampler)
        .exporter(exporter)
        .build()
        .expect("gateway builds")
        .start()
        .await
        .expect("gateway starts");
    Gateway {
        running: Some(running),
        exported,
        sampler: handle,
    }
}

async fn agent(endpoints: &[SocketAddr]) -> (RunningPipeline, DirectSender<Traces>) {
    let (receiver, sender) = DirectReceiver::new();
    let running = Pipeline::traces()
        .receiver(receiver)
        .exporter(router(endpoints, None))
        .build()
        .expect("agent builds")
        .start()
        .await
        .expect("agent starts");
    (running, sender)
}

fn set_error(span: &mut Span) {
    span.status = Some(Status {
        code: StatusCode::Error as i32,
        message: "boom".into(),
    });
}

/// `spans` of each of `traces` traces, with `edit` applied per (trace, span) index.
fn traces(
    traces: usize,
    spans: usize,
    seed: u64,
    mut edit: impl FnMut(usize, usize, &mut Span),
) -> ExportTraceServiceRequest {
    let mut data = generate_traces(traces, spans, seed);
    for (i, span) in data.resource_spans[0].scope_spans[0]
        .spans
        .iter_mut()
        .enumerate()
    {
        edit(i / spans, i % spans, span);
    }
    data
}

/// Spans `from..` of each trace of `data` (with `spans` per trace) moved out of it.
fn split_off(
    data: &mut ExportTraceServiceRequest,
    spans: usize,
    from: usize,
) -> ExportTraceServiceRequest {
    let mut rest = data.clone();
    let all = std::mem::take(&mut data.resource_spans[0].scope_spans[0].spans);
    let (mut head, mut tail) = (Vec::new(), Vec::new());
    for (i, span) in all.into_iter().enumerate() {
        if i % spans < from {
            head.push(span);
        } else {
            tail.push(span);
        }
    }
    data.resource_spans[0].scope_spans[0].spans = head;
    rest.resource_spans[0].scope_spans[0].spans = tail;
    rest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_gateway_hands_its_traces_and_decisions_to_their_new_owners() {
    let addrs = [free_addr(), free_addr(), free_addr()];
    let leaving = addrs[0];
    let mut gateways = vec![
        gateway(leaving, Some(router(&addrs, Some(leaving)))).await,
        gateway(addrs[1], None).await,
        gateway(addrs[2], None).await,
    ];
    let (agent_before, sender) = agent(&addrs).await;

    // Decided traces: 2 spans each, every other one with an error, decided before the
    // gateway leaves. Their late spans come after: a plain one for the kept traces (it
    // must be kept), an error one for the others (it must be dropped, as decided, and not
    // start a trace of its own).
    let decided_n = 600;
    let decided = traces(decided_n, 3, 7, |t, s, span| {
        if (t % 2 == 0 && s == 0) || (t % 2 == 1 && s == 2) {
            set_error(span);
        }
    });
    let mut decided_head = decided.clone();
    let decided_late = split_off(&mut decided_head, 3, 2);
    sender.send(decided_head).await.expect("agent takes");
    let decided_by = |gs: &[Gateway]| -> i64 {
        gs.iter()
            .map(|g| {
                let s = g.sampler.stats();
                s.sampled + s.not_sampled
            })
            .sum()
    };
    assert!(
        eventually(Duration::from_secs(10), || decided_by(&gateways)
            == decided_n as i64)
        .await,
        "the first traces are decided"
    );

    // Undecided traces: 3 of 4 spans now; every tenth trace's error is in the last span,
    // which comes after the gateway has left.
    let fresh_n = 3000;
    let fresh = traces(fresh_n, 4, 8, |t, s, span| {
        if t % 10 == 0 && s == 3 {
            set_error(span);
        }
    });
    let error_traces: HashSet<Vec<u8>> = fresh.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .filter(|s| {
            s.status
                .as_ref()
                .is_some_and(|st| st.code == StatusCode::Error as i32)
        })
        .map(|s| s.trace_id.clone())
        .collect();
    let mut fresh_head = fresh.clone();
    let fresh_tail = split_off(&mut fresh_head, 4, 3);
    sender.send(fresh_head).await.expect("agent takes");
    let buffered = |g: &Gateway| g.sampler.stats().traces_buffered;
    assert!(
        eventually(Duration::from_secs(5), || gateways
            .iter()
            .map(buffered)
            .sum::<i64>()
            == fresh_n as i64)
        .await,
        "the new traces are buffered"
    );
    agent_before
        .shutdown(Duration::from_secs(5))
        .await
        .expect("agent drains");
    let held = buffered(&gateways[0]);
    let decided_here = {
        let s = gateways[0].sampler.stats();
        s.sampled + s.not_sampled
    };
    assert!(
        held > 500 && decided_here > 100,
        "the leaving gateway holds a share: {held}, {decided_here}"
    );

    // The gateway leaves: its traces go to their new owners.
    let exported_before = gateways[0].exported.spans().len();
    gateways[0]
        .running
        .take()
        .expect("running")
        .shutdown(Duration::from_secs(10))
        .await
        .expect("the leaving gateway drains cleanly");
    let s = gateways[0].sampler.stats();
    assert_eq!(s.handoff_sent_traces, held, "{s:?}");
    assert_eq!(s.handoff_sent_spans, 3 * held, "{s:?}");
    assert_eq!(s.handoff_sent_decisions, decided_here, "{s:?}");
    assert_eq!(s.handoff_failed_traces, 0, "{s:?}");
    assert_eq!(
        gateways[0].exported.spans().len(),
        exported_before,
        "nothing was decided on partial data at the leaving gateway"
    );
    let received = |f: fn(&otel_pipeline::processors::tail_sampling::TailSamplingStats) -> i64| {
        gateways[1..]
            .iter()
            .map(|g| f(&g.sampler.stats()))
            .sum::<i64>()
    };
    assert_eq!(received(|s| s.handoff_received_traces), held);
    assert_eq!(received(|s| s.handoff_received_spans), 3 * held);
    assert_eq!(received(|s| s.handoff_received_decisions), decided_here);

    // The agents route over the two that stay; the rest of every trace arrives.
    let (agent_after, sender) = agent(&addrs[1..]).await;
    sender.send(fresh_tail).await.expect("agent takes");
    sender.send(decided_late).await.expect("agent takes");
    agent_after
        .shutdown(Duration::from_secs(5))
        .await
        .expect("agent drains");
    let stays = &gateways[1..];
    assert!(
        eventually(Duration::from_secs(10), || stays.iter().all(|g| g
            .sampler
            .stats()
            .traces_buffered
            == 0))
        .await,
        "everything is decided"
    );
    for g in &mut gateways[1..] {
        g.running
            .take()
            .expect("running")
            .shutdown(Duration::from_secs(5))
            .await
            .expect("drains");
    }

    // Every fresh error trace is kept whole by exactly one gateway; no other fresh trace
    // is kept (each was decided once, on all four spans).
    let mut by_trace: HashMap<Vec<u8>, (HashSet<usize>, usize)> = HashMap::new();
    for (i, g) in gateways.iter().enumerate() {
        for span in g.exported.spans() {
            let e = by_trace.entry(span.trace_id.clone()).or_default();
            e.0.insert(i);
            e.1 += 1;
        }
    }
    for id in &error_traces {
        let (owners, spans) = by_trace.get(id).expect("a fresh error trace was kept");
        assert_eq!(*spans, 4, "kept whole");
        assert_eq!(owners.len(), 1, "decided by one gateway");
        assert!(!owners.contains(&0), "not by the one that left");
    }
    let fresh_ids: HashSet<Vec<u8>> = fresh.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(|s| s.trace_id.clone())
        .collect();
    let kept_fresh = by_trace.keys().filter(|id| fresh_ids.contains(*id)).count();
    assert_eq!(
        kept_fresh,
        error_traces.len(),
        "only the error traces are kept"
    );

    // Decided traces: the kept ones got their late span (3 in all), the dropped ones
    // nothing, wherever they had been decided.
    for (t, span) in decided.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .step_by(3)
        .enumerate()
    {
        let spans = by_trace.get(&span.trace_id).map_or(0, |e| e.1);
        if t % 2 == 0 {
            assert_eq!(spans, 3, "a kept trace's late span followed its decision");
        } else {
            assert_eq!(
                spans, 0,
                "a dropped trace's late error span followed its decision"
            );
        }
    }
}

/// A collector process on `config`, its log in `log`.
fn spawn_collector(config: &std::path::Path, log: &std::path::Path) -> std::process::Child {
    std::process::Command::new(common::collector_bin())
        .arg("--config")
        .arg(config)
        .args(["--shutdown-timeout", "10s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("collector starts")
}

/// The value of the Prometheus sample whose line starts with `prefix`, summed.
fn metric(body: &str, name: &str, label: &str) -> u64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A rolling restart on loopback: an agent and three gateways run as collector
/// processes; while traces are in flight and buffered, one gateway gets SIGTERM, hands
/// its traces to the other two and comes back. Every error and slow trace is kept, whole,
/// by one gateway, and so is every other kept trace; the counters show the hand-off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_restarted_with_sigterm_hands_off_and_no_trace_is_lost_or_split() {
    let dir = std::env::temp_dir().join(format!("otel-handoff-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // One sink per gateway, so a trace decided by two gateways would show.
    let mut sinks = Vec::new();
    for _ in 0..3 {
        let (running, otlp, exported) = common::gateway(OtlpConfig {
            http: None,
            ..OtlpConfig::loopback()
        })
        .await;
        let addr = otlp.local_addrs().grpc.expect("bound");
        sinks.push((running, addr, exported));
    }
    let gw: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let metrics: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let peers = gw
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let mut configs = Vec::new();
    for i in 0..3 {
        let yaml = format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: {me} }}\n\
             processors:\n  tail_sampling:\n    decision_wait: 2s\n    \
             handoff: {{ exporter: loadbalancing/peers, accept_from: [\"*\"] }}\n    policies:\n      \
             - {{ name: errors, type: status_code, status_code: {{ status_codes: [ERROR] }} }}\n      \
             - {{ name: slow, type: latency, latency: {{ threshold_ms: 2000 }} }}\n      \
             - {{ name: rest, type: probabilistic, probabilistic: {{ sampling_percentage: 10 }} }}\n  \
             batch: {{ timeout: 100ms }}\n\
             exporters:\n  otlp/sink:\n    endpoint: {sink}\n    tls: {{ insecure: true }}\n  \
             loadbalancing/peers:\n    protocol: {{ otlp: {{ timeout: 2s, tls: {{ insecure: true }}, \
             sending_queue: {{ enabled: false }} }} }}\n    \
             resolver: {{ static: {{ hostnames: [{peers}] }} }}\n    exclude_endpoints: [{me}]\n\
             service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      \
             processors: [tail_sampling, batch]\n      exporters: [otlp/sink]\n  \
             telemetry:\n    metrics: {{ address: {m} }}\n",
            me = gw[i],
            sink = sinks[i].1,
            m = metrics[i],
        );
        let path = dir.join(format!("gateway-{i}.yaml"));
        std::fs::write(&path, yaml).expect("config written");
        configs.push(path);
    }
    let agent_addr = free_addr();
    let agent_yaml = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: {agent_addr} }}\n\
         processors:\n  batch: {{ timeout: 50ms }}\n\
         exporters:\n  loadbalancing:\n    protocol:\n      otlp:\n        timeout: 2s\n        \
         tls: {{ insecure: true }}\n        \
         retry_on_failure: {{ initial_interval: 20ms, max_interval: 200ms, max_elapsed_time: 60s }}\n    \
         resolver: {{ static: {{ hostnames: [{peers}] }} }}\n    \
         health: {{ failure_threshold: 2, probe_interval: 300ms }}\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      \
         exporters: [loadbalancing]\n"
    );
    let agent_path = dir.join("agent.yaml");
    std::fs::write(&agent_path, agent_yaml).expect("config written");

    let mut gateways: Vec<std::process::Child> = (0..3)
        .map(|i| spawn_collector(&configs[i], &dir.join(format!("gateway-{i}.log"))))
        .collect();
    for m in &metrics {
        assert!(
            eventually(Duration::from_secs(20), || common::http_get(*m, "/metrics")
                .is_some())
            .await,
            "a gateway never came up"
        );
    }
    let mut agent = spawn_collector(&agent_path, &dir.join("agent.log"));

    // A service sends through the agent: each trace in two halves a second apart, so
    // traces are always both in flight and buffered. Every 10th trace ends in an error,
    // every 10th (offset 5) is slow; both only in the second half.
    let (client, sender) = common::fast_retry_agent(format!("http://{agent_addr}")).await;
    let mut must_keep: HashSet<Vec<u8>> = HashSet::new();
    let mut sent_at: HashMap<Vec<u8>, u128> = HashMap::new();
    let mut restarted_at = 0u128;
    let mut all: HashSet<Vec<u8>> = HashSet::new();
    let mut pending: std::collections::VecDeque<(std::time::Instant, ExportTraceServiceRequest)> =
        Default::default();
    let started = std::time::Instant::now();
    let mut restarted = false;
    let mut terminated_at = None;
    let mut exited_at: Option<std::time::Instant> = None;
    let mut tick = 0u64;
    while started.elapsed() < Duration::from_secs(10) || !pending.is_empty() {
        let sending = started.elapsed() < Duration::from_secs(10);
        if sending {
            tick += 1;
            let mut data = traces(20, 4, 1000 + tick, |t, s, span| {
                if s == 3 && t % 10 == 0 {
                    set_error(span);
                }
                if s == 3 && t % 10 == 5 {
                    span.end_time_unix_nano = span.start_time_unix_nano + 3_000_000_000;
                }
            });
            for span in &data.resource_spans[0].scope_spans[0].spans {
                all.insert(span.trace_id.clone());
                sent_at.insert(span.trace_id.clone(), started.elapsed().as_millis());
                let slow = span.end_time_unix_nano - span.start_time_unix_nano >= 3_000_000_000;
                let error = span
                    .status
                    .as_ref()
                    .is_some_and(|s| s.code == StatusCode::Error as i32);
                if slow || error {
                    must_keep.insert(span.trace_id.clone());
                }
            }
            let second = split_off(&mut data, 4, 2);
            sender.send(data).await.expect("client takes");
            pending.push_back((std::time::Instant::now() + Duration::from_secs(1), second));
        }
        while pending
            .front()
            .is_some_and(|(due, _)| *due <= std::time::Instant::now())
        {
            let (_, second) = pending.pop_front().expect("due");
            sender.send(second).await.expect("client takes");
        }
        // SIGTERM gateway 0 at 3 s.
        if terminated_at.is_none() && started.elapsed() >= Duration::from_secs(3) {
            let status = std::process::Command::new("kill")
                .args(["-TERM", &gateways[0].id().to_string()])
                .status()
                .expect("kill");
            assert!(status.success());
            terminated_at = Some(std::time::Instant::now());
        }
        // Start it again 2 s after it has exited (without holding up the traffic).
        if terminated_at.is_some()
            && exited_at.is_none()
            && let Some(status) = gateways[0].try_wait().expect("wait")
        {
            assert!(
                status.success(),
                "the gateway exits cleanly after its hand-off"
            );
            exited_at = Some(std::time::Instant::now());
        }
        if !restarted && exited_at.is_some_and(|at| at.elapsed() >= Duration::from_secs(2)) {
            gateways[0] = spawn_collector(&configs[0], &dir.join("gateway-0-again.log"));
            restarted = true;
            restarted_at = started.elapsed().as_millis();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(restarted, "the gateway was restarted during the run");
    client
        .shutdown(Duration::from_secs(10))
        .await
        .expect("client drains");

    // The first gateway's log reports its hand-off.
    let log = std::fs::read_to_string(dir.join("gateway-0.log")).expect("log");
    assert!(log.contains("handed buffered traces"), "{log}");
    // Let every decision land: the last halves plus the decision wait.
    let received_by_peers = || {
        metrics[1..]
            .iter()
            .filter_map(|m| common::http_get(*m, "/metrics"))
            .map(|(_, b)| {
                metric(
                    &b,
                    "otelcol_processor_tail_sampling_handoff_spans_total",
                    "direction=\"received\"",
                )
            })
            .sum::<u64>()
    };
    let handed = received_by_peers();
    assert!(handed > 0, "the peers' counters show the hand-off");
    tokio::time::sleep(Duration::from_secs(4)).await;
    for g in gateways.iter_mut().chain(std::iter::once(&mut agent)) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &g.id().to_string()])
            .status();
    }
    for g in gateways.iter_mut().chain(std::iter::once(&mut agent)) {
        let status = tokio::task::block_in_place(|| g.wait()).expect("exits");
        assert!(status.success(), "{status:?}");
    }

    let mut by_trace: HashMap<Vec<u8>, (HashSet<usize>, usize)> = HashMap::new();
    for (i, (_, _, exported)) in sinks.iter().enumerate() {
        for span in exported.spans() {
            let e = by_trace.entry(span.trace_id.clone()).or_default();
            e.0.insert(i);
            e.1 += 1;
        }
    }
    let lost: Vec<_> = must_keep
        .iter()
        .filter(|id| !by_trace.contains_key(*id))
        .collect();
    let mut when: Vec<u128> = lost.iter().map(|id| sent_at[*id]).collect();
    when.sort();
    assert!(
        lost.is_empty(),
        "{} of {} error/slow traces lost; sent at {when:?} ms, SIGTERM at 3000, restarted at {restarted_at}",
        lost.len(),
        must_keep.len()
    );
    let split = by_trace
        .values()
        .filter(|(sinks, _)| sinks.len() > 1)
        .count();
    assert_eq!(split, 0, "traces decided by two gateways");
    let partial = by_trace.values().filter(|(_, spans)| *spans != 4).count();
    assert_eq!(
        partial,
        0,
        "kept traces missing spans (of {})",
        by_trace.len()
    );
    // Roughly the policies' share was kept: the error and slow fifth, a tenth of the rest.
    let kept = by_trace.len() as f64 / all.len() as f64;
    assert!((0.22..0.36).contains(&kept), "kept share {kept}");
    for (running, _, _) in sinks {
        running
            .shutdown(Duration::from_secs(5))
            .await
            .expect("sink drains");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A client that is not a peer sends a victim's trace id under the hand-off marker
/// `not_sampled`, through a real OTLP receiver: the marker decides nothing (counted), the
/// victim's error trace is kept, and so are its late spans. The same request from a peer
/// named in `accept_from` (by its bearer token's subject) is obeyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_handoff_decision_from_a_client_decides_nothing() {
    use otel_pipeline::proto::common::v1::{AnyValue, KeyValue, any_value::Value};
    use otel_pipeline::proto::resource::v1::Resource;
    use otel_pipeline::receivers::{Authenticator, BearerTokens, Secret};
    let config: TailSamplingConfig = from_yaml(
        "processors.tail_sampling",
        "decision_wait: 300ms\nhandoff: { accept_from: [gateway-b] }\n\
         policies: [{ name: errors, type: status_code, status_code: { status_codes: [ERROR] } }]\n",
    )
    .expect("config");
    let tokens = BearerTokens::new([Secret::new("client-token")]);
    let tokens = {
        // Two names: the client's token, and the peer gateway's.
        let dir = std::env::temp_dir().join(format!("otel-forge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("tokens");
        std::fs::write(&file, "app-1 client-token\ngateway-b peer-token\n").expect("write");
        tokens.with_file(&file).expect("token file")
    };
    let otlp = OtlpReceiver::new(OtlpConfig {
        auth: Some(Authenticator::Bearer(Arc::new(tokens))),
        ..OtlpConfig::loopback()
    });
    let sampler = TailSampler::new(config);
    let (exporter, exported) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .receiver(otlp.traces())
        .processor(sampler)
        .exporter(exporter)
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");
    let addr = otlp.local_addrs().grpc.expect("grpc");
    let send = |token: &'static str, req: ExportTraceServiceRequest| async move {
        let headers = vec![("authorization".to_string(), format!("Bearer {token}"))];
        let (client, sender) = otel_pipeline_agent(addr, headers).await;
        sender.send(req).await.expect("sent");
        client
            .shutdown(Duration::from_secs(2))
            .await
            .expect("client");
    };
    // The victim's error trace.
    let mut victim = generate_traces(1, 3, 1);
    set_error(&mut victim.resource_spans[0].scope_spans[0].spans[0]);
    let victim_id = victim.resource_spans[0].scope_spans[0].spans[0]
        .trace_id
        .clone();
    send("client-token", victim.clone()).await;
    // The forgery: the victim's trace id under `not_sampled`, from an ordinary client.
    let forged = |id: &[u8]| {
        let mut req = generate_traces(1, 1, 2);
        req.resource_spans[0].scope_spans[0].spans[0].trace_id = id.to_vec();
        req.resource_spans[0].resource = Some(Resource {
            attributes: vec![KeyValue {
                key: "otel_pipeline.handoff".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue("not_sampled".into())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        req
    };
    send("client-token", forged(&victim_id)).await;
    assert!(
        eventually(Duration::from_secs(5), || exported
            .spans()
            .iter()
            .filter(|s| s.trace_id == victim_id)
            .count()
            >= 3)
        .await,
        "the victim's error trace was dropped by a forged decision"
    );
    let untrusted = running.telemetry().sum(
        "otelcol_processor_tail_sampling_handoff_untrusted_spans",
        &[],
    );
    assert_eq!(untrusted, 1);
    // From the peer, the same marker is obeyed: a new error trace decided `not_sampled`
    // before it arrives is not kept.
    let mut other = generate_traces(1, 2, 3);
    set_error(&mut other.resource_spans[0].scope_spans[0].spans[0]);
    let other_id = other.resource_spans[0].scope_spans[0].spans[0]
        .trace_id
        .clone();
    send("peer-token", forged(&other_id)).await;
    send("client-token", other).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        exported
            .spans()
            .iter()
            .filter(|s| s.trace_id == other_id)
            .count(),
        0,
        "the peer's decision is obeyed"
    );
    running
        .shutdown(Duration::from_secs(5))
        .await
        .expect("stops");
}

/// An agent pipeline sending over OTLP/gRPC to `addr` with `headers`.
async fn otel_pipeline_agent(
    addr: SocketAddr,
    headers: Vec<(String, String)>,
) -> (RunningPipeline, DirectSender<Traces>) {
    let (receiver, sender) = DirectReceiver::new();
    let running = Pipeline::traces()
        .receiver(receiver)
        .exporter(otel_pipeline::exporters::otlp::OtlpExporter::<Traces>::new(
            OtlpExporterConfig {
                endpoint: format!("http://{addr}"),
                headers,
                ..OtlpExporterConfig::default()
            },
        ))
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");
    (running, sender)
}

/// A leaving gateway hands its traces to two peers, one of which refuses (it is itself
/// shutting down): the refusing peer's share is decided here, the other peer's share only
/// there. No trace is exported twice, none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_taken_in_part_is_decided_here_only_for_the_rest() {
    let addrs = [free_addr(), free_addr(), free_addr()];
    let leaving = addrs[0];
    // The refusing peer is never ejected (which would send its share to the other).
    let mut gateways = vec![
        gateway(leaving, Some(router_with(&addrs, Some(leaving), 1_000_000))).await,
        gateway(addrs[1], None).await,
    ];
    // The third peer refuses everything, as a receiver that is shutting down does.
    let (refusing, _otlp, refusing_out) = {
        let (running, otlp, out) = common::gateway(OtlpConfig {
            grpc: Some(addrs[2]),
            http: None,
            ..OtlpConfig::loopback()
        })
        .await;
        out.set_refusing(true);
        (running, otlp, out)
    };
    let (agent, sender) = agent(&[leaving]).await;
    let n = 400;
    let data = traces(n, 2, 31, |_, s, span| {
        if s == 0 {
            set_error(span);
        }
    });
    sender.send(data).await.expect("agent takes");
    assert!(
        eventually(Duration::from_secs(5), || gateways[0]
            .sampler
            .stats()
            .traces_buffered
            == n as i64)
        .await
    );
    agent
        .shutdown(Duration::from_secs(5))
        .await
        .expect("agent drains");
    gateways[0]
        .running
        .take()
        .expect("running")
        .shutdown(Duration::from_secs(10))
        .await
        .expect("drains");
    let taken = gateways[1].sampler.stats().handoff_received_traces;
    let s = gateways[0].sampler.stats();
    assert!(
        taken > 50 && taken < n as i64 - 50,
        "the peer took a share: {taken}"
    );
    assert_eq!(s.handoff_sent_traces, taken, "{s:?}");
    assert_eq!(s.handoff_failed_traces, n as i64 - taken, "{s:?}");
    let peer = gateways.pop().expect("peer");
    peer.running
        .expect("running")
        .shutdown(Duration::from_secs(5))
        .await
        .expect("peer drains");
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    for span in gateways[0]
        .exported
        .spans()
        .into_iter()
        .chain(peer.exported.spans())
    {
        *seen.entry(span.span_id).or_default() += 1;
    }
    assert_eq!(seen.len(), 2 * n, "every span exported");
    assert!(seen.values().all(|c| *c == 1), "a span exported twice");
    assert_eq!(refusing_out.item_count(), 0);
    refusing
        .shutdown(Duration::from_secs(2))
        .await
        .expect("stops");
}

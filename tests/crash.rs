//! Crash durability with real processes: a collector whose exporter has a persistent
//! sending queue (`sending_queue.storage: file_storage`) is killed with SIGKILL at random
//! moments while clients send and its backend is down, and restarted each time. Once the
//! backend is back, every span the collector acknowledged reaches it. Duplicates (at
//! least once) are counted and printed. Run under `fsync: true` (every write) and a
//! periodic policy: a kill loses nothing under either (what `write` returned is in the
//! page cache); they differ on power loss, which a test cannot cut (docs/reliability.md).

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use otel_pipeline::exporters::otlp::{
    OtlpExporterConfig, Protocol, RetryConfig, SendingQueueConfig,
};
use otel_pipeline::receivers::OtlpConfig;
use otel_pipeline::testing::{eventually, generate_traces};
use std::sync::Mutex;

mod common;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A small xorshift: the kill moments, printed with their seed so a failure replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn config(dir: &Path, grpc: u16, backend: u16, fsync: &str) -> String {
    format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: 127.0.0.1:{grpc} }}\n\
         exporters:\n  otlp/backend:\n    endpoint: http://127.0.0.1:{backend}\n    timeout: 1s\n    \
         retry_on_failure: {{ initial_interval: 50ms, max_interval: 200ms, max_elapsed_time: 0s }}\n    \
         sending_queue: {{ num_consumers: 2, storage: file_storage/queue }}\n\
         extensions:\n  file_storage/queue:\n    directory: {}\n    create_directory: true\n    fsync: {fsync}\n\
         service:\n  extensions: [file_storage/queue]\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [otlp/backend]\n  \
         telemetry:\n    metrics: {{ level: none }}\n",
        dir.display()
    )
}

fn spawn(config: &Path, log: &Path) -> Child {
    Command::new(common::collector_bin())
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .expect("log file"),
        )
        .spawn()
        .expect("collector starts")
}

/// A backend on loopback `port` that keeps what it receives.
async fn sink_on(
    port: u16,
) -> (
    otel_pipeline::RunningPipeline,
    otel_pipeline::testing::Exported<otel_pipeline::Traces>,
) {
    let (running, _otlp, exported) = common::gateway(OtlpConfig {
        grpc: Some(SocketAddr::from(([127, 0, 0, 1], port))),
        http: None,
        ..OtlpConfig::loopback()
    })
    .await;
    (running, exported)
}

/// How many of the span ids `wanted` the backend has.
fn arrived_of(
    exported: &otel_pipeline::testing::Exported<otel_pipeline::Traces>,
    wanted: &HashSet<Vec<u8>>,
) -> usize {
    let got: HashSet<Vec<u8>> = exported.spans().into_iter().map(|s| s.span_id).collect();
    wanted.iter().filter(|id| got.contains(*id)).count()
}

/// Each span id with how many times it arrived, and the duplicates in all.
fn receipts(
    exported: &otel_pipeline::testing::Exported<otel_pipeline::Traces>,
) -> (HashMap<Vec<u8>, usize>, usize) {
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    for s in exported.spans() {
        *seen.entry(s.span_id).or_default() += 1;
    }
    let duplicates = seen.values().map(|n| n - 1).sum();
    (seen, duplicates)
}

/// Acknowledged spans (by span id) of every send that returned OK.
type Acked = Arc<Mutex<HashSet<Vec<u8>>>>;

async fn one_policy(fsync: &str, seed: u64) {
    let dir = std::env::temp_dir().join(format!(
        "otel-crash-{}-{}",
        fsync.replace(' ', "_"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let (grpc, backend) = (free_port(), free_port());
    let file = dir.join("collector.yaml");
    std::fs::write(&file, config(&dir.join("storage"), grpc, backend, fsync)).expect("config");
    let log = dir.join("collector.log");

    // The client: no queue and no retries of its own, so OK means the collector answered OK.
    let (client, sender) = common::agent(OtlpExporterConfig {
        endpoint: format!("http://127.0.0.1:{grpc}"),
        protocol: Protocol::Grpc,
        timeout: Duration::from_secs(2),
        retry: RetryConfig {
            enabled: false,
            ..RetryConfig::default()
        },
        queue: SendingQueueConfig {
            enabled: false,
            ..SendingQueueConfig::default()
        },
        ..OtlpExporterConfig::default()
    })
    .await;
    let sender = Arc::new(sender);
    let acked: Acked = Arc::default();
    let mut rng = Rng(seed | 1);
    let mut next_seed = 0u64;
    const KILLS: usize = 3;
    for round in 0..KILLS {
        let mut child = spawn(&file, &log);
        // Two clients send until the kill.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for c in 0..2u64 {
            let (sender, acked, stop) =
                (Arc::clone(&sender), Arc::clone(&acked), Arc::clone(&stop));
            let base = next_seed + c * 1_000_000;
            tasks.push(tokio::spawn(async move {
                let mut s = base;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let req = generate_traces(2, 5, s);
                    let ids: Vec<Vec<u8>> = req
                        .resource_spans
                        .iter()
                        .flat_map(|r| &r.scope_spans)
                        .flat_map(|s| &s.spans)
                        .map(|s| s.span_id.clone())
                        .collect();
                    s += 1;
                    if sender.send(req).await.is_ok() {
                        acked.lock().expect("lock").extend(ids);
                    } else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }));
        }
        next_seed += 10_000_000;
        let wait = 300 + rng.below(700);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        // SIGKILL: no drain, no sync, no goodbye.
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        eprintln!(
            "fsync {fsync}: round {round}: killed after {wait} ms; {} spans acknowledged so far",
            acked.lock().expect("lock").len()
        );
    }
    let acked: HashSet<Vec<u8>> = acked.lock().expect("lock").clone();
    // What an operator sees before the restart: requests held, nothing corrupt.
    let inspect = Command::new(common::collector_bin())
        .args(["storage", "inspect"])
        .arg(dir.join("storage"))
        .output()
        .expect("inspect runs");
    let shown = String::from_utf8_lossy(&inspect.stdout);
    eprintln!("{shown}");
    assert!(inspect.status.success(), "inspect: {shown}");
    assert!(
        shown.contains("exporter_otlp_backend_traces") && shown.contains("queue-request="),
        "{shown}"
    );
    assert!(
        acked.len() > 100,
        "the clients got answers: {}",
        acked.len()
    );

    // The backend comes back; so does the collector, which sends what its disk holds.
    let (gw, exported) = sink_on(backend).await;
    let mut child = spawn(&file, &log);
    let arrived = |exported: &otel_pipeline::testing::Exported<otel_pipeline::Traces>| {
        arrived_of(exported, &acked)
    };
    let all = eventually(Duration::from_secs(60), || {
        arrived(&exported) == acked.len()
    })
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let spans = exported.spans();
    let (seen, duplicates) = receipts(&exported);
    eprintln!(
        "fsync {fsync}: {} acknowledged, {} arrived ({} spans received, {duplicates} duplicates, {} not acknowledged but delivered)",
        acked.len(),
        arrived(&exported),
        spans.len(),
        seen.keys().filter(|k| !acked.contains(*k)).count()
    );
    assert!(
        all,
        "fsync {fsync} (seed {seed}): {} of {} acknowledged spans arrived; log: {}",
        arrived(&exported),
        acked.len(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    client.shutdown(Duration::from_secs(2)).await.ok();
    gw.shutdown(Duration::from_secs(2)).await.ok();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_spans_survive_sigkill_under_every_write_and_periodic_fsync() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    eprintln!("kill seed {seed}");
    one_policy("true", seed).await;
    one_policy("200ms", seed.rotate_left(17)).await;
}

/// A trace sent: its id, whether it has an error, its span ids.
type TraceInfo = (Vec<u8>, bool, Vec<Vec<u8>>);

/// `traces` traces of `spans` spans from `seed`; the first span of every even-numbered
/// trace has status ERROR. Returns the request and, per trace, (trace id, error, span ids).
fn traces_with_errors(
    traces: usize,
    spans: usize,
    seed: u64,
) -> (
    otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest,
    Vec<TraceInfo>,
) {
    use otel_pipeline::proto::trace::v1::{Status, status::StatusCode};
    let mut req = generate_traces(traces, spans, seed);
    let mut order: Vec<Vec<u8>> = Vec::new();
    let mut info: HashMap<Vec<u8>, (bool, Vec<Vec<u8>>)> = HashMap::new();
    for s in req
        .resource_spans
        .iter_mut()
        .flat_map(|r| &mut r.scope_spans)
        .flat_map(|s| &mut s.spans)
    {
        if !info.contains_key(&s.trace_id) {
            order.push(s.trace_id.clone());
            let error = order.len() % 2 == 1;
            if error {
                s.status = Some(Status {
                    code: StatusCode::Error as i32,
                    message: "boom".into(),
                });
            }
            info.insert(s.trace_id.clone(), (error, Vec::new()));
        }
        if let Some(e) = info.get_mut(&s.trace_id) {
            e.1.push(s.span_id.clone());
        }
    }
    let out = order
        .into_iter()
        .map(|t| {
            let (error, ids) = info.remove(&t).unwrap_or_default();
            (t, error, ids)
        })
        .collect();
    (req, out)
}

/// A late span of trace `trace_id`.
fn late_span(
    trace_id: &[u8],
    seed: u64,
) -> otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest {
    let mut req = generate_traces(1, 1, seed);
    for s in req
        .resource_spans
        .iter_mut()
        .flat_map(|r| &mut r.scope_spans)
        .flat_map(|s| &mut s.spans)
    {
        s.trace_id = trace_id.to_vec();
        s.parent_span_id = Vec::new();
        s.status = None;
    }
    req
}

/// The tail sampler's journal: a gateway that keeps error traces is killed while it
/// buffers undecided traces; after the restart they are decided on all their spans, the
/// error ones arrive whole, none twice, and late spans of traces decided before the
/// crash follow those decisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_tail_sampler_decides_what_it_held_after_the_restart() {
    let dir = std::env::temp_dir().join(format!("otel-crash-sampler-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let (gw, _otlp, exported) = common::gateway(OtlpConfig::loopback()).await;
    let backend = _otlp.local_addrs().grpc.expect("grpc");
    let grpc = free_port();
    let file = dir.join("collector.yaml");
    std::fs::write(
        &file,
        format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: 127.0.0.1:{grpc} }}\n\
             processors:\n  tail_sampling:\n    decision_wait: 2s\n    storage: file_storage\n    \
             policies: [{{ name: errors, type: status_code, status_code: {{ status_codes: [ERROR] }} }}]\n\
             exporters:\n  otlp/backend:\n    endpoint: http://{backend}\n    sending_queue: {{ storage: file_storage }}\n\
             extensions:\n  file_storage:\n    directory: {}\n    create_directory: true\n    fsync: true\n\
             service:\n  extensions: [file_storage]\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [tail_sampling]\n      exporters: [otlp/backend]\n  \
             telemetry:\n    metrics: {{ level: none }}\n",
            dir.join("storage").display()
        ),
    )
    .expect("config");
    let log = dir.join("collector.log");
    let (client, sender) = common::agent(OtlpExporterConfig {
        endpoint: format!("http://127.0.0.1:{grpc}"),
        protocol: Protocol::Grpc,
        retry: RetryConfig {
            initial_interval: Duration::from_millis(50),
            max_elapsed: Duration::from_secs(20),
            ..RetryConfig::default()
        },
        queue: SendingQueueConfig {
            enabled: false,
            ..SendingQueueConfig::default()
        },
        ..OtlpExporterConfig::default()
    })
    .await;
    let mut child = spawn(&file, &log);

    // A: decided before the crash.
    let (a, a_traces) = traces_with_errors(10, 4, 1);
    sender.send(a).await.expect("A acknowledged");
    let a_errors: usize = a_traces.iter().filter(|t| t.1).map(|t| t.2.len()).sum();
    assert!(
        eventually(Duration::from_secs(10), || exported.item_count()
            == a_errors)
        .await,
        "A's error traces arrive: {} of {a_errors}",
        exported.item_count()
    );
    // B: acknowledged, then the gateway dies before deciding it.
    let (b, b_traces) = traces_with_errors(10, 4, 2);
    sender.send(b).await.expect("B acknowledged");
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert_eq!(
        exported.item_count(),
        a_errors,
        "B was not decided before the kill"
    );

    let mut child = spawn(&file, &log);
    let b_errors: usize = b_traces.iter().filter(|t| t.1).map(|t| t.2.len()).sum();
    let all = eventually(Duration::from_secs(15), || {
        exported.item_count() >= a_errors + b_errors
    })
    .await;
    assert!(
        all,
        "B's error traces arrive after the restart: {} of {}; log: {}",
        exported.item_count(),
        a_errors + b_errors,
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Late spans: one of a kept A trace, one of a dropped A trace.
    let kept = a_traces.iter().find(|t| t.1).expect("an error trace");
    let dropped = a_traces.iter().find(|t| !t.1).expect("a plain trace");
    sender
        .send(late_span(&kept.0, 1001))
        .await
        .expect("late span");
    sender
        .send(late_span(&dropped.0, 1002))
        .await
        .expect("late span");
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();

    let spans = exported.spans();
    let mut per_trace: HashMap<Vec<u8>, Vec<Vec<u8>>> = HashMap::new();
    for s in &spans {
        per_trace
            .entry(s.trace_id.clone())
            .or_default()
            .push(s.span_id.clone());
    }
    for (trace, error, ids) in a_traces.iter().chain(&b_traces) {
        let got = per_trace.get(trace).cloned().unwrap_or_default();
        if *error {
            for id in ids {
                assert_eq!(
                    got.iter().filter(|g| *g == id).count(),
                    1,
                    "every span of error trace {trace:02x?} once"
                );
            }
        } else {
            assert!(got.is_empty(), "plain trace {trace:02x?} dropped: {got:?}");
        }
    }
    assert_eq!(
        per_trace.get(&kept.0).map_or(0, Vec::len),
        kept.2.len() + 1,
        "the late span of a kept trace follows its decision from before the crash"
    );
    assert!(
        !per_trace.contains_key(&dropped.0),
        "a dropped trace's late span is dropped"
    );
    assert_eq!(spans.len(), a_errors + b_errors + 1);
    client.shutdown(Duration::from_secs(2)).await.ok();
    gw.shutdown(Duration::from_secs(2)).await.ok();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Python's `opentelemetry-sdk`, as tests/python_sdk.rs finds it.
fn python() -> Option<std::path::PathBuf> {
    let candidate = std::env::var_os("OTEL_PIPELINE_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
        });
    let ok = Command::new(&candidate)
        .args(["-c", "import opentelemetry.exporter.otlp.proto.grpc"])
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(candidate)
}

/// A collector process the chaos loop kills and restarts.
struct Proc {
    name: String,
    config: std::path::PathBuf,
    log: std::path::PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn start(&mut self) {
        if self.child.is_none() {
            self.child = Some(spawn(&self.config, &self.log));
        }
    }
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    fn term(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

/// The whole topology, as issue 31 asks: two Python services send to an agent (OTLP in,
/// the trace router out, persistent queues), which routes by trace id to three gateways
/// (tail sampling with a journal, persistent queue to the backend). The backend is down
/// the whole time traffic flows; meanwhile the agent and the gateways are killed with
/// SIGKILL at random moments, five times, and restarted. Then the backend comes back:
/// every error and slow trace span the agent acknowledged reaches it; duplicates are
/// counted and printed. Bounded: 12 s of traffic, at most 60 s of waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(python_sdk),
    ignore = "needs Python's opentelemetry-sdk: run .ci/run, or set OTEL_PIPELINE_PYTHON"
)]
async fn python_services_an_agent_and_three_gateways_killed_at_random_lose_nothing_acknowledged() {
    let python = python().expect("build.rs found Python's opentelemetry-sdk; it is gone");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(11);
    eprintln!("topology kill seed {seed}");
    let mut rng = Rng(seed | 1);
    let dir = std::env::temp_dir().join(format!("otel-crash-topology-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let sink = free_port();
    let gateways = [free_port(), free_port(), free_port()];
    let agent_port = free_port();
    let retry =
        "retry_on_failure: { initial_interval: 50ms, max_interval: 300ms, max_elapsed_time: 0s }";
    let storage = |name: &str| {
        format!(
            "extensions:\n  file_storage:\n    directory: {}\n    create_directory: true\n    fsync: 100ms\n",
            dir.join(name).join("storage").display()
        )
    };
    let mut procs = Vec::new();
    for (i, port) in gateways.iter().enumerate() {
        let name = format!("gateway{i}");
        std::fs::create_dir_all(dir.join(&name)).expect("dir");
        let config = dir.join(&name).join("collector.yaml");
        std::fs::write(
            &config,
            format!(
                "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: 127.0.0.1:{port} }}\n\
                 processors:\n  tail_sampling:\n    decision_wait: 2s\n    storage: file_storage\n    policies:\n      \
                 - {{ name: errors, type: status_code, status_code: {{ status_codes: [ERROR] }} }}\n      \
                 - {{ name: slow, type: latency, latency: {{ threshold_ms: 2000 }} }}\n\
                 exporters:\n  otlp/backend:\n    endpoint: http://127.0.0.1:{sink}\n    timeout: 1s\n    {retry}\n    \
                 sending_queue: {{ storage: file_storage }}\n\
                 {}\
                 service:\n  extensions: [file_storage]\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [tail_sampling]\n      exporters: [otlp/backend]\n  \
                 telemetry:\n    metrics: {{ level: none }}\n",
                storage(&name)
            ),
        )
        .expect("config");
        procs.push(Proc {
            log: dir.join(&name).join("collector.log"),
            name,
            config,
            child: None,
        });
    }
    std::fs::create_dir_all(dir.join("agent")).expect("dir");
    let config = dir.join("agent").join("collector.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: 127.0.0.1:{agent_port} }}\n\
             exporters:\n  loadbalancing:\n    routing_key: traceID\n    protocol:\n      otlp:\n        tls: {{ insecure: true }}\n        timeout: 1s\n        \
             {retry}\n    resolver:\n      static:\n        hostnames: [{}]\n    \
             health: {{ failure_threshold: 0 }}\n    sending_queue: {{ storage: file_storage }}\n\
             {}\
             service:\n  extensions: [file_storage]\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [loadbalancing]\n  \
             telemetry:\n    metrics: {{ level: none }}\n",
            gateways
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(", "),
            storage("agent")
        ),
    )
    .expect("config");
    procs.push(Proc {
        log: dir.join("agent").join("collector.log"),
        name: "agent".into(),
        config,
        child: None,
    });
    for p in &mut procs {
        p.start();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Two services send for 12 s while the backend is down.
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/crash_client.py");
    let clients: Vec<_> = (0..2)
        .map(|i| {
            let (python, script) = (python.clone(), script.clone());
            let endpoint = format!("http://127.0.0.1:{agent_port}");
            tokio::task::spawn_blocking(move || {
                Command::new(python)
                    .arg(script)
                    .args([
                        endpoint.as_str(),
                        "12",
                        &format!("shop-{i}"),
                        &(seed + i).to_string(),
                    ])
                    .stderr(Stdio::null())
                    .output()
                    .expect("python runs")
            })
        })
        .collect();
    for k in 0..5 {
        tokio::time::sleep(Duration::from_millis(1000 + rng.below(1200))).await;
        let victim = rng.below(procs.len() as u64) as usize;
        procs[victim].kill9();
        eprintln!("kill {k}: SIGKILL {}", procs[victim].name);
        tokio::time::sleep(Duration::from_millis(200 + rng.below(400))).await;
        procs[victim].start();
    }
    let mut acked: HashMap<Vec<u8>, (Vec<u8>, String)> = HashMap::new();
    for c in clients {
        let out = c.await.expect("client task");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut f = line.split_whitespace();
            if let (Some("ACK"), Some(t), Some(s), Some(k)) =
                (f.next(), f.next(), f.next(), f.next())
            {
                let hex = |h: &str| {
                    (0..h.len())
                        .step_by(2)
                        .filter_map(|i| u8::from_str_radix(&h[i..i + 2], 16).ok())
                        .collect::<Vec<u8>>()
                };
                acked.insert(hex(s), (hex(t), k.to_string()));
            }
        }
    }
    let wanted: HashSet<Vec<u8>> = acked
        .iter()
        .filter(|(_, (_, k))| k != "plain")
        .map(|(s, _)| s.clone())
        .collect();
    eprintln!(
        "{} spans acknowledged, {} of them in error or slow traces",
        acked.len(),
        wanted.len()
    );
    assert!(
        wanted.len() > 50,
        "the services got answers: {}",
        wanted.len()
    );

    // The backend comes back.
    let (backend, exported) = sink_on(sink).await;
    let arrived = || arrived_of(&exported, &wanted);
    let all = eventually(Duration::from_secs(60), || arrived() == wanted.len()).await;
    let spans = exported.spans();
    let (seen, duplicates) = receipts(&exported);
    let plain = seen
        .keys()
        .filter(|s| acked.get(*s).is_some_and(|(_, k)| k == "plain"))
        .count();
    eprintln!(
        "backend: {} spans ({} duplicates); {} of {} wanted arrived; {plain} spans of plain traces kept (the policies drop those)",
        spans.len(),
        duplicates,
        arrived(),
        wanted.len()
    );
    for p in &mut procs {
        p.term();
    }
    if !all {
        let missing: Vec<_> = wanted
            .iter()
            .filter(|s| !seen.contains_key(*s))
            .take(5)
            .map(|s| acked.get(s).map(|(t, k)| format!("{t:02x?} {k}")))
            .collect();
        let logs: String = procs
            .iter()
            .map(|p| {
                format!(
                    "--- {}\n{}",
                    p.name,
                    std::fs::read_to_string(&p.log).unwrap_or_default()
                )
            })
            .collect();
        panic!(
            "seed {seed}: {} of {} acknowledged error/slow spans arrived; missing e.g. {missing:?}\n{logs}",
            arrived(),
            wanted.len()
        );
    }
    backend.shutdown(Duration::from_secs(2)).await.ok();
    let _ = std::fs::remove_dir_all(&dir);
}

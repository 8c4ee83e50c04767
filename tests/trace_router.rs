//! The trace router on loopback: real OTLP receivers as gateways, an agent pipeline with
//! the router in front of them, fed by a real OTLP client or from the test. Every span of
//! a trace must reach exactly one gateway while gateways stop, join, leave and fail.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{Status, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use otel_pipeline::exporters::loadbalancing::{
    DnsResolver, Resolver, ResolverUpdates, TraceRouter, TraceRouterConfig,
};
use otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline::receivers::{OtlpConfig, OtlpReceiver};
use otel_pipeline::testing::{Exported, eventually, generate_traces};
use otel_pipeline::{BoxFuture, BuildError, Pipeline, RunningPipeline, Telemetry, Traces};
use otel_pipeline::{DirectReceiver, DirectSender};
use tokio::sync::watch;

mod common;

struct Gateway {
    running: RunningPipeline,
    addr: SocketAddr,
    exported: Exported<Traces>,
}

async fn gateway_at(addr: SocketAddr) -> Gateway {
    let (running, otlp, exported) = common::gateway(OtlpConfig {
        grpc: Some(addr),
        http: None,
        ..OtlpConfig::loopback()
    })
    .await;
    let addr = otlp.local_addrs().grpc.expect("gRPC bound");
    Gateway {
        running,
        addr,
        exported,
    }
}

async fn gateway() -> Gateway {
    gateway_at(SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// The router's YAML with fast retries and health checks, routing to `endpoints`.
fn router_config(endpoints: &[String], extra: &str) -> TraceRouterConfig {
    let yaml = format!(
        "protocol:\n  otlp:\n    tls: {{ insecure: true }}\n    timeout: 1s\n    compression: none\n    \
         retry_on_failure: {{ initial_interval: 20ms, max_interval: 100ms, max_elapsed_time: 60s }}\n    \
         sending_queue: {{ num_consumers: 2, queue_size: 100000 }}\n\
         resolver:\n  static:\n    hostnames: [{}]\n\
         {health}{extra}",
        endpoints.join(", "),
        health = if extra.contains("health:") {
            ""
        } else {
            "health: { failure_threshold: 3, probe_interval: 200ms }\n"
        },
    );
    TraceRouterConfig::from_yaml("exporters.loadbalancing", &yaml).expect("router config")
}

struct Agent {
    running: RunningPipeline,
    sender: DirectSender<Traces>,
    telemetry: Telemetry,
}

async fn agent(config: TraceRouterConfig, resolver: Option<Arc<dyn Resolver>>) -> Agent {
    let (receiver, sender) = DirectReceiver::new();
    let telemetry = Telemetry::new();
    let mut router = TraceRouter::new(config);
    if let Some(r) = resolver {
        router = router.with_resolver(r);
    }
    let running = Pipeline::traces()
        .named("traces/agent")
        .telemetry(telemetry.clone())
        .receiver(receiver)
        .exporter(router)
        .build()
        .expect("agent builds")
        .start()
        .await
        .expect("agent starts");
    Agent {
        running,
        sender,
        telemetry,
    }
}

/// A resolver the test drives.
#[derive(Debug)]
struct Controlled(watch::Receiver<Vec<String>>);

impl Resolver for Controlled {
    fn kind(&self) -> &'static str {
        "test"
    }
    fn run(self: Arc<Self>, updates: ResolverUpdates) -> BoxFuture<'static, ()> {
        let mut rx = self.0.clone();
        Box::pin(async move {
            loop {
                let set = rx.borrow_and_update().clone();
                updates.publish(set);
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
    }
}

/// trace id -> the gateways (by index) that received spans of it, and span counts.
fn where_traces_went(gateways: &[&Exported<Traces>]) -> (HashMap<Vec<u8>, HashSet<usize>>, usize) {
    let mut owners: HashMap<Vec<u8>, HashSet<usize>> = HashMap::new();
    let mut spans = 0;
    for (i, g) in gateways.iter().enumerate() {
        for span in g.spans() {
            owners.entry(span.trace_id.clone()).or_default().insert(i);
            spans += 1;
        }
    }
    (owners, spans)
}

fn split_traces(owners: &HashMap<Vec<u8>, HashSet<usize>>) -> usize {
    owners.values().filter(|g| g.len() > 1).count()
}

/// The first half (by position in its trace) of every trace's spans, and the second.
fn halves(
    data: &ExportTraceServiceRequest,
    spans_per_trace: usize,
) -> (ExportTraceServiceRequest, ExportTraceServiceRequest) {
    let mut first = data.clone();
    let mut second = data.clone();
    for (rs1, rs2) in first
        .resource_spans
        .iter_mut()
        .zip(&mut second.resource_spans)
    {
        for (ss1, ss2) in rs1.scope_spans.iter_mut().zip(&mut rs2.scope_spans) {
            let all = std::mem::take(&mut ss1.spans);
            ss2.spans.clear();
            for (i, span) in all.into_iter().enumerate() {
                if i % spans_per_trace < spans_per_trace / 2 {
                    ss1.spans.push(span);
                } else {
                    ss2.spans.push(span);
                }
            }
        }
    }
    (first, second)
}

fn metric(t: &Telemetry, name: &str, filter: &[(&str, &str)]) -> i64 {
    t.sum(name, filter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_otlp_client_through_the_router_reaches_one_gateway_per_trace() {
    let gateways = [gateway().await, gateway().await, gateway().await];
    let endpoints: Vec<String> = gateways.iter().map(|g| g.addr.to_string()).collect();
    // The agent: OTLP in from a real client, the router out.
    let otlp = OtlpReceiver::new(OtlpConfig::loopback());
    let telemetry = Telemetry::new();
    let agent = Pipeline::traces()
        .named("traces/agent")
        .telemetry(telemetry.clone())
        .receiver(otlp.traces())
        .exporter(TraceRouter::new(router_config(&endpoints, "")))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let agent_addr = otlp.local_addrs().grpc.unwrap();

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{agent_addr}"))
        .build()
        .unwrap();
    let traces = 300;
    let spans_per_trace = 4;
    // The SDK's simple processor exports span by span and blocks while it does: run it
    // on a blocking thread that still sees the tokio runtime tonic needs.
    let provider = tokio::task::spawn_blocking(move || {
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .with_resource(
                Resource::builder_empty()
                    .with_attributes([KeyValue::new("service.name", "checkout")])
                    .build(),
            )
            .build();
        let tracer = provider.tracer("router-test");
        for t in 0..traces {
            let root = tracer.start("GET /orders");
            let cx = Context::current_with_span(root);
            for c in 0..spans_per_trace - 1 {
                let mut child = tracer.start_with_context(format!("step {c}"), &cx);
                if t % 10 == 0 && c == 0 {
                    opentelemetry::trace::Span::set_status(&mut child, Status::error("boom"));
                }
                opentelemetry::trace::Span::end(&mut child);
            }
            cx.span().end();
        }
        provider.force_flush().expect("flush");
        provider
    })
    .await
    .unwrap();
    let expected = traces * spans_per_trace;
    let all = [
        &gateways[0].exported,
        &gateways[1].exported,
        &gateways[2].exported,
    ];
    assert!(
        eventually(Duration::from_secs(20), || where_traces_went(&all).1
            >= expected)
        .await,
        "only {} of {expected} spans arrived",
        where_traces_went(&all).1
    );
    let (owners, spans) = where_traces_went(&all);
    assert_eq!(spans, expected, "no span duplicated");
    assert_eq!(owners.len(), traces);
    assert_eq!(
        split_traces(&owners),
        0,
        "every trace at exactly one gateway"
    );
    // Each gateway got a share (300 traces over 3: far from 0 for any).
    for g in &gateways {
        assert!(
            g.exported.item_count() > expected / 6,
            "{}",
            g.exported.item_count()
        );
    }
    // Every error span arrived.
    let errors: usize = all
        .iter()
        .flat_map(|g| g.spans())
        .filter(|s| s.status.as_ref().is_some_and(|st| st.code == 2))
        .count();
    assert_eq!(errors, traces / 10);
    for (i, e) in endpoints.iter().enumerate() {
        assert_eq!(
            metric(
                &telemetry,
                "otelcol_loadbalancer_routed_spans",
                &[("endpoint", e)]
            ),
            gateways[i].exported.item_count() as i64
        );
    }
    assert_eq!(
        metric(
            &telemetry,
            "otelcol_loadbalancer_num_backends",
            &[("resolver", "static")]
        ),
        3
    );
    let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    agent.shutdown(Duration::from_secs(5)).await.unwrap();
    for g in gateways {
        g.running.shutdown(Duration::from_secs(5)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_stops_is_ejected_its_share_moves_and_it_returns_when_back() {
    let gateways = [gateway().await, gateway().await, gateway().await];
    let endpoints: Vec<String> = gateways.iter().map(|g| g.addr.to_string()).collect();
    let agent = agent(router_config(&endpoints, ""), None).await;
    let [g0, g1, g2] = gateways;

    agent.sender.send(generate_traces(200, 5, 1)).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            g0.exported.item_count() + g1.exported.item_count() + g2.exported.item_count() == 1000
        })
        .await
    );
    let at_g2_before = g2.exported.item_count();
    assert!(at_g2_before > 0);

    // g2 stops: attempts to it fail, it is ejected, and what it would have had goes to
    // the others.
    let g2_addr = g2.addr;
    g2.running.shutdown(Duration::from_secs(5)).await.unwrap();
    for seed in 2..6 {
        agent
            .sender
            .send(generate_traces(100, 5, seed))
            .await
            .unwrap();
    }
    let total = 1000 + 4 * 500;
    assert!(
        eventually(Duration::from_secs(20), || {
            g0.exported.item_count() + g1.exported.item_count() + at_g2_before == total
        })
        .await,
        "g0 {} g1 {} g2 {at_g2_before}: lost spans",
        g0.exported.item_count(),
        g1.exported.item_count()
    );
    let (owners, _) = where_traces_went(&[&g0.exported, &g1.exported]);
    assert_eq!(split_traces(&owners), 0);
    let e2 = g2_addr.to_string();
    assert_eq!(
        metric(
            &agent.telemetry,
            "otelcol_loadbalancer_ejections",
            &[("endpoint", &e2)]
        ),
        1
    );
    assert!(
        metric(
            &agent.telemetry,
            "otelcol_loadbalancer_backend_outcome",
            &[("endpoint", &e2), ("success", "false")]
        ) >= 3
    );
    assert_eq!(
        metric(&agent.telemetry, "otelcol_loadbalancer_num_backends", &[]),
        2
    );

    // A gateway comes back on the same address: the probe finds it and it returns.
    let back = gateway_at(g2_addr).await;
    assert!(
        eventually(Duration::from_secs(10), || metric(
            &agent.telemetry,
            "otelcol_loadbalancer_returns",
            &[("endpoint", &e2)]
        ) == 1)
        .await
    );
    // New traffic reaches it. Sent in rounds: on a loaded machine the first attempt to a
    // returned endpoint can still fail and be routed to the others, as it should be.
    let mut arrived = false;
    for seed in 9..29 {
        agent
            .sender
            .send(generate_traces(50, 5, seed))
            .await
            .unwrap();
        if eventually(Duration::from_millis(500), || {
            back.exported.item_count() > 0
        })
        .await
        {
            arrived = true;
            break;
        }
    }
    assert!(arrived, "the returned gateway gets no traffic");
    assert_eq!(
        metric(&agent.telemetry, "otelcol_loadbalancer_num_backends", &[]),
        3
    );
    agent
        .running
        .shutdown(Duration::from_secs(5))
        .await
        .unwrap();
    for g in [g0, g1, back] {
        g.running.shutdown(Duration::from_secs(5)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_joining_splits_no_trace_in_flight_and_new_traces_use_it() {
    let gateways = [gateway().await, gateway().await, gateway().await];
    let endpoints: Vec<String> = gateways.iter().map(|g| g.addr.to_string()).collect();
    let (set_tx, set_rx) = watch::channel(endpoints[..2].to_vec());
    let agent = agent(
        router_config(&endpoints, "grace_period: 30s"),
        Some(Arc::new(Controlled(set_rx))),
    )
    .await;

    let in_flight = generate_traces(300, 6, 11);
    let (first, second) = halves(&in_flight, 6);
    agent.sender.send(first).await.unwrap();
    let all = [
        &gateways[0].exported,
        &gateways[1].exported,
        &gateways[2].exported,
    ];
    assert!(eventually(Duration::from_secs(10), || where_traces_went(&all).1 == 900).await);

    set_tx.send(endpoints.clone()).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || metric(
            &agent.telemetry,
            "otelcol_loadbalancer_num_backends",
            &[]
        ) == 3)
        .await
    );
    agent.sender.send(second).await.unwrap();
    let fresh = generate_traces(300, 6, 12);
    agent.sender.send(fresh.clone()).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || where_traces_went(&all).1
            == 3600)
        .await
    );

    let (owners, _) = where_traces_went(&all);
    assert_eq!(
        split_traces(&owners),
        0,
        "no trace in flight split by the new gateway"
    );
    // The in-flight traces stayed on the first two; a third of the new ones went to the
    // new gateway at once.
    let fresh_ids: HashSet<Vec<u8>> = fresh.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(|s| s.trace_id.clone())
        .collect();
    let at_new: HashSet<Vec<u8>> = gateways[2]
        .exported
        .spans()
        .iter()
        .map(|s| s.trace_id.clone())
        .collect();
    assert!(at_new.iter().all(|id| fresh_ids.contains(id)));
    assert!(
        at_new.len() > 60,
        "{} of 300 new traces at the new gateway",
        at_new.len()
    );
    assert!(
        metric(
            &agent.telemetry,
            "otelcol_loadbalancer_grace_pinned_spans",
            &[]
        ) > 0
    );

    // (With `grace_period: 0s` the same change splits about a third of these traces.)
    agent
        .running
        .shutdown(Duration::from_secs(5))
        .await
        .unwrap();
    for g in gateways {
        g.running.shutdown(Duration::from_secs(5)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_queued_for_a_removed_endpoint_reach_the_new_owners() {
    let gateways = [gateway().await, gateway().await, gateway().await];
    let endpoints: Vec<String> = gateways.iter().map(|g| g.addr.to_string()).collect();
    // g2 accepts connections but refuses every request (retryable), so its exporter's
    // queue fills while it retries. Ejection is off: only removal takes it away.
    gateways[2].exported.set_refusing(true);
    let (set_tx, set_rx) = watch::channel(endpoints.clone());
    let agent = agent(
        router_config(
            &endpoints,
            "grace_period: 0s\nhealth: { failure_threshold: 0 }",
        )
        .clone(),
        Some(Arc::new(Controlled(set_rx))),
    )
    .await;
    for seed in 20..30 {
        agent
            .sender
            .send(generate_traces(100, 4, seed))
            .await
            .unwrap();
    }
    let e2 = endpoints[2].clone();
    assert!(
        eventually(Duration::from_secs(10), || metric(
            &agent.telemetry,
            "otelcol_exporter_queue_size",
            &[("exporter", &format!("otlp/{e2}"))]
        ) > 0)
        .await,
        "g2's queue holds batches"
    );
    set_tx.send(endpoints[..2].to_vec()).unwrap();
    let all = [&gateways[0].exported, &gateways[1].exported];
    assert!(
        eventually(Duration::from_secs(15), || where_traces_went(&all).1
            == 4000)
        .await,
        "{} of 4000 spans at the remaining gateways",
        where_traces_went(&all).1
    );
    assert_eq!(gateways[2].exported.item_count(), 0);
    let (owners, _) = where_traces_went(&all);
    assert_eq!(split_traces(&owners), 0);
    assert!(metric(&agent.telemetry, "otelcol_loadbalancer_rerouted_spans", &[]) > 0);
    assert_eq!(
        metric(&agent.telemetry, "otelcol_exporter_dropped_spans", &[]),
        0
    );
    agent
        .running
        .shutdown(Duration::from_secs(5))
        .await
        .unwrap();
    for g in gateways {
        g.running.shutdown(Duration::from_secs(5)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dns_resolver_follows_the_answer_and_keeps_the_last_good_set_on_failure() {
    let answer: Arc<std::sync::Mutex<std::io::Result<Vec<std::net::IpAddr>>>> =
        Arc::new(std::sync::Mutex::new(Ok(vec![
            "127.0.0.1".parse().unwrap(),
        ])));
    let lookup_answer = Arc::clone(&answer);
    let dns = DnsResolver::new(
        "gateways.test",
        4317,
        Duration::from_millis(50),
        Duration::from_millis(500),
    )
    .with_lookup(Arc::new(move |name: String| {
        assert_eq!(name, "gateways.test");
        let a = match &*lookup_answer.lock().unwrap() {
            Ok(v) => Ok(v.clone()),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        };
        Box::pin(async move { a })
    }));
    let (receiver, _sender) = DirectReceiver::<Traces>::new();
    let telemetry = Telemetry::new();
    let router =
        TraceRouter::new(router_config(&["127.0.0.1:1".into()], "")).with_resolver(Arc::new(dns));
    let built = Pipeline::traces()
        .telemetry(telemetry.clone())
        .receiver(receiver)
        .exporter(router)
        .build()
        .unwrap();
    let router = built.consumer();
    let running = built.start().await.unwrap();
    assert_eq!(router.endpoints(), vec!["127.0.0.1:4317".to_string()]);

    *answer.lock().unwrap() = Ok(vec![
        "127.0.0.3".parse().unwrap(),
        "127.0.0.2".parse().unwrap(),
        "::1".parse().unwrap(),
    ]);
    assert!(
        eventually(Duration::from_secs(5), || router.endpoints()
            == vec![
                "127.0.0.2:4317".to_string(),
                "127.0.0.3:4317".into(),
                "[::1]:4317".into()
            ])
        .await,
        "{:?}",
        router.endpoints()
    );
    *answer.lock().unwrap() = Err(std::io::Error::other("SERVFAIL"));
    let failures = |t: &Telemetry| {
        t.sum(
            "otelcol_loadbalancer_num_resolutions",
            &[("resolver", "dns"), ("success", "false")],
        )
    };
    assert!(eventually(Duration::from_secs(5), || failures(&telemetry) >= 3).await);
    assert_eq!(router.endpoints().len(), 3, "the last good set stays");
    *answer.lock().unwrap() = Ok(vec![]);
    let before = failures(&telemetry);
    assert!(eventually(Duration::from_secs(5), || failures(&telemetry) > before).await);
    assert_eq!(
        router.endpoints().len(),
        3,
        "an empty answer does not empty the router"
    );
    assert!(
        telemetry.sum(
            "otelcol_loadbalancer_num_resolutions",
            &[("resolver", "dns"), ("success", "true")]
        ) >= 2
    );
    assert_eq!(
        telemetry.sum("otelcol_loadbalancer_num_backend_updates", &[]),
        2
    );
    running.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[test]
fn bad_configurations_fail_at_build_with_the_path_named() {
    let build = |router: TraceRouter| {
        let (receiver, _sender) = DirectReceiver::<Traces>::new();
        Pipeline::traces()
            .receiver(receiver)
            .exporter(router)
            .build()
            .map(|_| ())
    };
    let k8s = TraceRouterConfig::from_yaml("lb", "resolver: { k8s: { service: gw.obs } }").unwrap();
    let err = build(TraceRouter::new(k8s)).unwrap_err();
    assert!(
        matches!(&err, BuildError::InvalidConfig { path, .. } if path == "resolver.k8s"),
        "{err}"
    );

    let bad_header = TraceRouterConfig::from_yaml(
        "lb",
        "protocol: { otlp: { headers: { \"bad header\": x } } }\nresolver: { static: { hostnames: [a:1] } }",
    )
    .unwrap();
    let err = build(TraceRouter::new(bad_header)).unwrap_err();
    assert!(
        matches!(&err, BuildError::InvalidConfig { path, .. } if path == "protocol.otlp.headers.bad header"),
        "{err}"
    );
    let err = TraceRouterConfig::from_yaml(
        "exporters.loadbalancing",
        "resolver: { dns: { hostname: gw, interval: soon } }",
    )
    .unwrap_err();
    assert_eq!(err.path, "exporters.loadbalancing.resolver.dns.interval");
}

/// Endpoints that refuse while the set keeps changing under the router: whatever the
/// rounds of routing again give, every span is delivered, or handed back to the caller
/// as a refusal and counted; none leaves `route` uncounted (it used to end after four
/// rounds and report the rest as delivered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_refused_while_the_set_keeps_changing_are_refused_upstream() {
    let (a, b) = (gateway().await, gateway().await);
    a.exported.set_refusing(true);
    b.exported.set_refusing(true);
    let (set_a, set_b) = (vec![a.addr.to_string()], vec![b.addr.to_string()]);
    let (tx, rx) = watch::channel(set_a.clone());
    let yaml = "protocol:\n  otlp:\n    tls: { insecure: true }\n    timeout: 1s\n    \
                retry_on_failure: { enabled: false }\n    sending_queue: { enabled: false }\n\
                resolver:\n  static:\n    hostnames: [placeholder:4317]\n";
    let config = TraceRouterConfig::from_yaml("exporters.loadbalancing", yaml).expect("config");
    let agent = agent(config, Some(Arc::new(Controlled(rx)))).await;
    // The set flips between the two refusing gateways all the time.
    let flipper = tokio::spawn(async move {
        for i in 0u64.. {
            let _ = tx.send(if i % 2 == 0 {
                set_b.clone()
            } else {
                set_a.clone()
            });
            tokio::time::sleep(Duration::from_micros(300)).await;
        }
    });
    for seed in 0..30 {
        // Refused upstream, or rejected (counted failed by the endpoint): never `Ok`.
        let result = agent.sender.send(generate_traces(8, 2, seed)).await;
        assert!(
            result.is_err(),
            "send {seed}: no gateway took a span, yet Ok"
        );
    }
    flipper.abort();
    assert_eq!(a.exported.item_count() + b.exported.item_count(), 0);
    // What the agent's receiver took, the router and its endpoints account for (failed
    // or dropped): nothing counted as delivered that no gateway has.
    otel_pipeline::testing::assert_balanced(&agent.telemetry);
    let _ = agent.running.shutdown(Duration::from_secs(2)).await;
    a.running.shutdown(Duration::from_secs(2)).await.expect("a");
    b.running.shutdown(Duration::from_secs(2)).await.expect("b");
}

/// Persistent queues (`sending_queue.storage`): the router is stopped while both of its
/// gateways are down, holding what it accepted on disk, one directory per gateway. It
/// restarts after the gateways moved (new addresses, as pods get): the old gateways'
/// queues are opened, handed back and routed to the gateway that owns those traces now.
/// Every span arrives, once, and the old directories are emptied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_queues_of_departed_gateways_are_rerouted_after_a_restart() {
    use otel_pipeline::exporters::otlp::QueueStorage;
    use otel_pipeline::storage::{FileStorageConfig, Fsync, inspect};
    let dir = std::env::temp_dir().join(format!("otel-router-storage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let storage = QueueStorage {
        storage: FileStorageConfig {
            directory: dir.clone(),
            create_directory: true,
            fsync: Fsync::Never,
            ..FileStorageConfig::default()
        },
        owner: "exporter_loadbalancing_traces".into(),
    };
    let dead = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .to_string()
    };
    let old = [dead(), dead()];
    let no_ejection = "health: { failure_threshold: 0, probe_interval: 200ms }\n";
    let mut config = router_config(&old, no_ejection);
    config.otlp.queue.storage = Some(storage.clone());
    let first = agent(config, None).await;
    for seed in 0..20 {
        first
            .sender
            .send(generate_traces(5, 4, seed))
            .await
            .expect("accepted onto disk");
    }
    first
        .running
        .shutdown(Duration::from_millis(300))
        .await
        .ok();
    let held = |endpoint: &str| {
        inspect(
            &storage
                .storage
                .owner_dir(&format!("{}_{endpoint}", storage.owner)),
            1 << 26,
        )
        .map(|r| r.held())
        .unwrap_or(0)
    };
    assert!(
        held(&old[0]) > 0 && held(&old[1]) > 0,
        "both gateways' shares are on disk"
    );

    let moved = gateway().await;
    let mut config = router_config(&[moved.addr.to_string()], no_ejection);
    config.otlp.queue.storage = Some(storage.clone());
    let second = agent(config, None).await;
    assert!(
        eventually(Duration::from_secs(20), || moved.exported.item_count()
            >= 400)
        .await,
        "{} of 400 spans re-routed",
        moved.exported.item_count()
    );
    second
        .running
        .shutdown(Duration::from_secs(5))
        .await
        .expect("drains");
    let ids: HashSet<Vec<u8>> = moved
        .exported
        .spans()
        .into_iter()
        .map(|s| s.span_id)
        .collect();
    assert_eq!(ids.len(), 400);
    assert_eq!(moved.exported.item_count(), 400, "none twice");
    assert_eq!(
        (held(&old[0]), held(&old[1])),
        (0, 0),
        "the old queues are emptied"
    );
    moved.running.shutdown(Duration::from_secs(2)).await.ok();
    let _ = std::fs::remove_dir_all(&dir);
}

//! Fault tests: the downstream goes away and comes back.
//! - With a queue large enough, every span arrives, exactly once in count.
//! - With a small queue, what was dropped or refused equals what the counters say.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use otel_pipeline::DirectSender;
use otel_pipeline::exporters::otlp::{
    OtlpExporterConfig, Protocol, RetryConfig, SendingQueueConfig,
};
use otel_pipeline::receivers::OtlpConfig;
use otel_pipeline::testing::{Exported, eventually, generate_traces};
use otel_pipeline::{ComponentKind, RunningPipeline, Traces};

mod common;

async fn gateway_on(addr: SocketAddr) -> (RunningPipeline, Exported<Traces>, SocketAddr) {
    let (running, otlp, exported) = common::gateway(OtlpConfig {
        grpc: Some(addr),
        http: None,
        ..OtlpConfig::loopback()
    })
    .await;
    (running, exported, otlp.local_addrs().grpc.expect("grpc"))
}

/// A port with nothing behind it.
fn dead_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

async fn agent_to(
    addr: SocketAddr,
    queue: SendingQueueConfig,
) -> (RunningPipeline, DirectSender<Traces>) {
    common::agent(OtlpExporterConfig {
        endpoint: format!("http://{addr}"),
        protocol: Protocol::Grpc,
        timeout: Duration::from_secs(2),
        retry: RetryConfig {
            initial_interval: Duration::from_millis(20),
            max_interval: Duration::from_millis(100),
            max_elapsed: Duration::from_secs(60),
            ..RetryConfig::default()
        },
        queue,
        ..OtlpExporterConfig::default()
    })
    .await
}

fn ids(exported: &Exported<Traces>) -> Vec<Vec<u8>> {
    exported.spans().into_iter().map(|s| s.span_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_queue_rides_out_a_downstream_restart() {
    let (gw1, out1, addr) = gateway_on("127.0.0.1:0".parse().expect("addr")).await;
    let (agent, sender) = agent_to(
        addr,
        SendingQueueConfig {
            max_items: 10_000,
            ..SendingQueueConfig::default()
        },
    )
    .await;

    for seed in 0..20 {
        sender
            .send(generate_traces(2, 5, seed))
            .await
            .expect("accepted");
    }
    assert!(eventually(Duration::from_secs(10), || out1.item_count() == 200).await);

    // The gateway goes away; the agent keeps accepting into its queue.
    gw1.shutdown(Duration::from_secs(5))
        .await
        .expect("gateway stops");
    for seed in 100..130 {
        sender
            .send(generate_traces(2, 5, seed))
            .await
            .expect("queued while downstream is down");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // It comes back on the same address.
    let (gw2, out2, _) = gateway_on(addr).await;
    assert!(
        eventually(Duration::from_secs(20), || out2.item_count() == 300).await,
        "got {} of 300 after the restart",
        out2.item_count()
    );
    let telemetry = agent.telemetry().clone();
    agent
        .shutdown(Duration::from_secs(5))
        .await
        .expect("agent drains");
    let mut all = ids(&out1);
    all.extend(ids(&out2));
    assert_eq!(all.len(), 500, "exactly once in count");
    assert_eq!(
        all.iter().collect::<HashSet<_>>().len(),
        500,
        "no duplicates"
    );
    let exporter = telemetry
        .find(ComponentKind::Exporter, "otlp")
        .expect("exporter");
    assert_eq!(exporter.sent(), 500);
    assert_eq!(
        exporter.send_failed() + exporter.dropped_total() + exporter.enqueue_failed(),
        0
    );
    gw2.shutdown(Duration::from_secs(5))
        .await
        .expect("gateway stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_queue_refuses_and_drops_exactly_what_it_counts() {
    let dead = dead_port();
    let (agent, sender) = agent_to(
        dead,
        SendingQueueConfig {
            max_items: 30,
            num_consumers: 2,
            ..SendingQueueConfig::default()
        },
    )
    .await;
    let (mut accepted, mut refused) = (0u64, 0u64);
    for seed in 0..20 {
        match sender.send(generate_traces(1, 10, seed)).await {
            Ok(()) => accepted += 10,
            Err(e) => {
                assert!(e.is_retryable(), "{e}");
                refused += 10;
            }
        }
    }
    assert_eq!(accepted, 30);
    assert_eq!(refused, 170);
    let telemetry = agent.telemetry().clone();
    let err = agent
        .shutdown(Duration::from_millis(800))
        .await
        .expect_err("undeliverable data is reported");
    assert!(err.to_string().contains("otlp"), "{err}");
    let receiver = telemetry
        .find(ComponentKind::Receiver, "memory")
        .expect("receiver");
    let exporter = telemetry
        .find(ComponentKind::Exporter, "otlp")
        .expect("exporter");
    assert_eq!(receiver.accepted(), accepted);
    assert_eq!(receiver.refused(), refused);
    assert_eq!(exporter.enqueue_failed(), refused);
    assert_eq!(exporter.sent(), 0);
    assert_eq!(
        exporter.dropped("shutdown_deadline") + exporter.send_failed(),
        accepted,
        "every accepted span is accounted for"
    );
}

/// `sizer: requests` (the Collector's default): the queue holds `queue_size` requests
/// whatever their size, and refuses the next; requests of 500 spans are not refused
/// early as they were when the count was read as items.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_sized_in_requests_holds_that_many_requests_of_any_size() {
    let dead = dead_port();
    let (agent, sender) = agent_to(
        dead,
        SendingQueueConfig {
            max_requests: Some(4),
            num_consumers: 1,
            ..SendingQueueConfig::default()
        },
    )
    .await;
    let (mut accepted, mut refused) = (0, 0);
    for seed in 0..10 {
        match sender.send(generate_traces(25, 20, seed)).await {
            Ok(()) => accepted += 1,
            Err(e) => {
                assert!(e.is_retryable(), "{e}");
                assert!(e.to_string().contains("full"), "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!((accepted, refused), (4, 6));
    let telemetry = agent.telemetry().clone();
    let _ = agent.shutdown(Duration::from_millis(300)).await;
    let exporter = telemetry
        .find(ComponentKind::Exporter, "otlp")
        .expect("exporter");
    assert_eq!(exporter.enqueue_failed(), 6 * 500);
    assert_eq!(
        exporter.dropped("shutdown_deadline") + exporter.send_failed(),
        4 * 500,
        "every accepted span is accounted for"
    );
}

/// A backend that hangs without answering, or answers with garbage: every attempt ends at
/// the exporter's timeout or with an error, the queue's workers are never stuck, and once
/// a real backend answers on the same address, what was retried arrives and the counters
/// balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_or_garbage_backend_never_sticks_the_workers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for (protocol, garbage) in [
        (Protocol::Grpc, false),
        (Protocol::HttpProtobuf, false),
        (Protocol::Grpc, true),
        (Protocol::HttpProtobuf, true),
    ] {
        // A raw TCP server: reads and never answers, or answers bytes that are not HTTP.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bad = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 64 << 10];
                let _ = s.read(&mut buf).await;
                if garbage {
                    let _ = s
                        .write_all(b"\x00\xffNOT HTTP AT ALL\r\n\r\n\x17\x03")
                        .await;
                }
                held.push(s); // keep it open: a hang
            }
        });
        let (agent, sender) = common::agent(OtlpExporterConfig {
            endpoint: format!("http://{addr}"),
            protocol,
            timeout: Duration::from_millis(300),
            retry: RetryConfig {
                initial_interval: Duration::from_millis(50),
                max_interval: Duration::from_millis(100),
                max_elapsed: Duration::from_secs(30),
                ..RetryConfig::default()
            },
            queue: SendingQueueConfig {
                num_consumers: 2,
                ..SendingQueueConfig::default()
            },
            ..OtlpExporterConfig::default()
        })
        .await;
        for seed in 0..4 {
            sender.send(generate_traces(1, 5, seed)).await.unwrap();
        }
        // Several timeouts or errors per batch go by.
        tokio::time::sleep(Duration::from_millis(900)).await;
        let exporter = agent
            .telemetry()
            .find(ComponentKind::Exporter, "otlp")
            .unwrap();
        assert_eq!(exporter.sent(), 0);
        // The real backend takes over the address; the same workers deliver everything.
        bad.abort();
        let _ = bad.await;
        let (gateway, _, exported) = common::gateway(match protocol {
            Protocol::Grpc => OtlpConfig {
                grpc: Some(addr),
                http: None,
                ..OtlpConfig::loopback()
            },
            _ => OtlpConfig {
                grpc: None,
                http: Some(addr),
                ..OtlpConfig::loopback()
            },
        })
        .await;
        assert!(
            eventually(Duration::from_secs(10), || exported.item_count() == 20).await,
            "{protocol:?} garbage={garbage}: {} of 20 arrived; sent {} failed {} dropped {} queue {}",
            exported.item_count(),
            exporter.sent(),
            exporter.send_failed(),
            exporter.dropped_total(),
            exporter.queue_size()
        );
        let telemetry = agent.telemetry().clone();
        agent.shutdown(Duration::from_secs(5)).await.unwrap();
        otel_pipeline::testing::assert_balanced(&telemetry);
        gateway.shutdown(Duration::from_secs(5)).await.unwrap();
    }
}

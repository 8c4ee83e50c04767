//! `sending_queue` as the Collector's exporter helper reads it, from YAML: `batch`
//! (batches of `min_size` items, split at `max_size`, held up to `flush_timeout`, sent at
//! shutdown), `wait_for_result`, and the settings the Collector refuses, refused with the
//! setting named.

use std::time::Duration;

use otel_pipeline::collector::{CollectorConfig, ConfigFile, RunningCollector};
use otel_pipeline::receivers::OtlpConfig;
use otel_pipeline::testing::{Exported, eventually, generate_traces};
use otel_pipeline::{DirectSender, RunningPipeline, Telemetry, Traces};

mod common;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

fn collector_yaml(port: u16, backend: &str, queue: &str) -> String {
    format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{port}\n\
         exporters:\n  otlp:\n    endpoint: {backend}\n    tls: {{insecure: true}}\n    sending_queue: {queue}\n\
         service:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [otlp]\n"
    )
}

fn load(yaml: &str) -> Result<CollectorConfig, String> {
    CollectorConfig::load(
        &[ConfigFile::new("c.yaml", yaml.to_string())],
        |_| None,
        &otel_pipeline::default_registry(),
    )
    .map_err(|e| e.to_string())
}

/// The sizes of the requests the backend got, in order.
fn sizes(exported: &Exported<Traces>) -> Vec<usize> {
    exported.batches().iter().map(|b| b.item_count()).collect()
}

/// A backend that keeps what it gets, our collector in front of it with `queue` as its
/// OTLP exporter's `sending_queue`, and a client sending to the collector.
struct Setup {
    backend: RunningPipeline,
    exported: Exported<Traces>,
    collector: RunningCollector,
    client: RunningPipeline,
    tx: DirectSender<Traces>,
}

impl Setup {
    async fn start(queue: &str) -> Self {
        let (backend, gw_otlp, exported) = common::gateway(OtlpConfig {
            grpc: Some("127.0.0.1:0".parse().expect("addr")),
            http: None,
            ..OtlpConfig::loopback()
        })
        .await;
        let backend_addr = gw_otlp.local_addrs().grpc.expect("grpc");
        let port = free_port();
        let yaml = collector_yaml(port, &backend_addr.to_string(), queue);
        let registry = otel_pipeline::default_registry();
        let collector = load(&yaml)
            .unwrap_or_else(|e| panic!("{e}"))
            .build(&registry, Telemetry::new())
            .unwrap_or_else(|e| panic!("{e}"))
            .start()
            .await
            .expect("starts");
        let (client, tx) = common::client::<Traces>(format!("http://127.0.0.1:{port}")).await;
        Self {
            backend,
            exported,
            collector,
            client,
            tx,
        }
    }

    /// Stop the client, then the collector (which sends what it holds), then the backend.
    async fn stop(self) -> Exported<Traces> {
        let t = Duration::from_secs(5);
        self.client.shutdown(t).await.expect("client stops");
        self.collector.shutdown(t).await.expect("drains");
        self.backend.shutdown(t).await.expect("stops");
        self.exported
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_batches_are_min_size_split_at_max_size_and_flushed_at_shutdown() {
    let s = Setup::start("{batch: {min_size: 100, max_size: 150, flush_timeout: 30s}}").await;
    let exported = &s.exported;

    // Twenty requests of 25 spans: five requests of 100 reach the backend.
    for seed in 0..20 {
        s.tx.send(generate_traces(5, 5, seed)).await.expect("sent");
    }
    eventually(Duration::from_secs(10), || exported.item_count() == 500).await;
    assert_eq!(sizes(exported), vec![100; 5]);
    exported.clear();

    // One request of 400: split at 150, and the 100 left is a batch of its own.
    s.tx.send(generate_traces(20, 20, 99)).await.expect("sent");
    eventually(Duration::from_secs(10), || exported.item_count() == 400).await;
    let mut got = sizes(exported);
    got.sort_unstable();
    assert_eq!(got, vec![100, 150, 150]);
    exported.clear();

    // Thirty spans wait (below min_size, flush_timeout far off) until shutdown sends them.
    s.tx.send(generate_traces(3, 10, 7)).await.expect("sent");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(exported.item_count(), 0, "held for min_size or the timeout");
    let exported = s.stop().await;
    assert_eq!(sizes(&exported), vec![30]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_flush_timeout_sends_what_waits() {
    // Below the default `min_size` (8192): what waits goes when `flush_timeout` passes.
    let s = Setup::start("\n      batch:\n        flush_timeout: 1s\n").await;
    for seed in 0..4 {
        s.tx.send(generate_traces(2, 5, seed)).await.expect("sent");
    }
    // Sent once the second passes (not at shutdown), the four requests joined.
    eventually(Duration::from_secs(5), || s.exported.item_count() == 40).await;
    assert!(sizes(&s.exported).len() <= 2, "{:?}", sizes(&s.exported));
    s.stop().await;
}

#[test]
fn queue_settings_the_collector_refuses_are_refused_with_the_setting_named() {
    let backend = "127.0.0.1:1";
    for (queue, path, words) in [
        (
            "{sizer: requests, batch: {}}",
            "sending_queue.batch.sizer",
            "only `items` or `bytes`",
        ),
        (
            "{batch: {sizer: bytes}}",
            "sending_queue.batch.sizer",
            "`bytes` is not supported",
        ),
        (
            "{batch: {min_size: 200, max_size: 100}}",
            "sending_queue.batch.max_size",
            "greater or equal to `min_size`",
        ),
        (
            "{batch: {min_size: -1}}",
            "sending_queue.batch.min_size",
            "non-negative",
        ),
        (
            "{batch: {flush_timeout: 0s}}",
            "sending_queue.batch.flush_timeout",
            "positive",
        ),
        (
            "{sizer: items, queue_size: 100, batch: {min_size: 500}}",
            "sending_queue.batch.min_size",
            "less than or equal to `queue_size`",
        ),
        (
            "{batch: {partition: {metadata_keys: [Tenant, tenant]}}}",
            "sending_queue.batch.partition.metadata_keys",
            "duplicate",
        ),
        ("{batch: {min_sise: 10}}", "sending_queue.batch", "min_sise"),
        (
            "{wait_for_result: true, batch: {}}",
            "sending_queue.wait_for_result",
            "not supported together with `batch`",
        ),
    ] {
        let err = load(&collector_yaml(4317, backend, queue))
            .expect_err(queue)
            .to_string();
        assert!(err.contains(path), "{queue}: {err}");
        assert!(err.contains(words), "{queue}: {err}");
    }
    // What the Collector accepts loads: its defaults, a batch sized in items under a
    // queue sized in requests, waiting for the result, a partition.
    for queue in [
        "{batch: {}}",
        "{batch: ~}",
        "{sizer: requests, queue_size: 1000, batch: {sizer: items, min_size: 4096, max_size: 8192}}",
        "{wait_for_result: true, num_consumers: 4}",
        "{batch: {partition: {metadata_keys: [tenant]}, flush_timeout: 1s}}",
    ] {
        load(&collector_yaml(4317, backend, queue)).unwrap_or_else(|e| panic!("{queue}: {e}"));
    }
    // The load balancer batches before routing: in its own queue, not each endpoint's.
    let lb = "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:4317\n\
              exporters:\n  loadbalancing:\n    protocol:\n      otlp:\n        tls: {insecure: true}\n        sending_queue: {batch: {}}\n    resolver:\n      static: {hostnames: [127.0.0.1:1]}\n\
              service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [loadbalancing]\n";
    let err = load(lb).expect_err("nested batch");
    assert!(err.contains("protocol.otlp.sending_queue.batch"), "{err}");
    let top = lb
        .replace("        sending_queue: {batch: {}}\n", "")
        .replace(
            "    resolver:",
            "    sending_queue: {batch: {min_size: 1000}}\n    resolver:",
        );
    load(&top).unwrap_or_else(|e| panic!("{e}"));
    // An exporter another component sends through (the tail sampler's hand-off) is not in
    // a pipeline: a batch there would be ignored, so it is refused.
    let handoff = "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:4317\n\
                   processors:\n  tail_sampling:\n    handoff: {exporter: loadbalancing/handoff}\n    policies: [{name: all, type: always_sample}]\n\
                   exporters:\n  nop:\n  loadbalancing/handoff:\n    protocol: {otlp: {tls: {insecure: true}}}\n    sending_queue: {batch: {}}\n    resolver:\n      static: {hostnames: [127.0.0.1:1]}\n\
                   service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [tail_sampling]\n      exporters: [nop]\n";
    let registry = otel_pipeline::default_registry();
    let err = match load(handoff) {
        Err(e) => e,
        Ok(c) => c
            .build(&registry, Telemetry::new())
            .err()
            .map(|e| e.to_string())
            .expect("refused at build"),
    };
    assert!(
        err.contains("exporters.loadbalancing/handoff.sending_queue.batch"),
        "{err}"
    );
}

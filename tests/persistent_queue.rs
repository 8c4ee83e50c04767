//! The persistent sending queue (`sending_queue.storage`), in process: what a stopped
//! exporter could not send is on disk and goes out after the next start; a full store
//! pushes back; the disk is given back once the backend took everything.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use otel_pipeline::exporters::otlp::{
    OtlpExporterConfig, Protocol, QueueStorage, RetryConfig, SendingQueueConfig,
};
use otel_pipeline::receivers::OtlpConfig;
use otel_pipeline::storage::{FileStorageConfig, Fsync};
use otel_pipeline::testing::{eventually, generate_traces};
use otel_pipeline::{ComponentKind, DirectSender, RunningPipeline, Traces};

mod common;

fn storage_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("otel-pq-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn dead_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

async fn agent(
    backend: SocketAddr,
    dir: &Path,
    fsync: Fsync,
    max_bytes: u64,
) -> (RunningPipeline, DirectSender<Traces>) {
    common::agent(OtlpExporterConfig {
        endpoint: format!("http://{backend}"),
        protocol: Protocol::Grpc,
        timeout: Duration::from_secs(1),
        retry: RetryConfig {
            initial_interval: Duration::from_millis(20),
            max_interval: Duration::from_millis(100),
            max_elapsed: Duration::MAX,
            ..RetryConfig::default()
        },
        queue: SendingQueueConfig {
            num_consumers: 2,
            // A small memory bound: most of the backlog is held on disk only.
            max_bytes: Some(4096),
            storage: Some(QueueStorage {
                storage: FileStorageConfig {
                    directory: dir.to_path_buf(),
                    create_directory: true,
                    fsync,
                    max_bytes,
                    segment_bytes: 16 << 10,
                    ..FileStorageConfig::default()
                },
                owner: "exporter_otlp_traces".into(),
            }),
            ..SendingQueueConfig::default()
        },
        ..OtlpExporterConfig::default()
    })
    .await
}

fn disk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("exporter_otlp_traces"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_stopped_exporter_could_not_send_goes_out_after_the_restart() {
    for fsync in [
        Fsync::EveryWrite,
        Fsync::Interval(Duration::from_millis(50)),
    ] {
        let dir = storage_dir(&format!("restart-{}", matches!(fsync, Fsync::EveryWrite)));
        let backend = dead_port();
        // The backend is down: everything accepted waits in the queue, on disk.
        let (running, sender) = agent(backend, &dir, fsync, 1 << 30).await;
        for seed in 0..40 {
            sender
                .send(generate_traces(2, 5, seed))
                .await
                .expect("accepted");
        }
        let telemetry = running.telemetry().clone();
        running.shutdown(Duration::from_millis(500)).await.ok();
        let exporter = telemetry.find(ComponentKind::Exporter, "otlp").unwrap();
        assert_eq!(exporter.dropped_total(), 0, "nothing is counted lost");
        assert_eq!(exporter.send_failed(), 0);
        assert_eq!(
            telemetry.sum(
                "otelcol_exporter_storage_events",
                &[("event", "kept_at_shutdown")]
            ),
            400
        );
        assert!(disk_bytes(&dir) > 0);

        // The backend comes back, and so does the exporter: the backlog goes out first.
        let (gw, otlp, exported) = common::gateway(OtlpConfig {
            grpc: Some(backend),
            http: None,
            ..OtlpConfig::loopback()
        })
        .await;
        let _ = otlp;
        let (running, sender) = agent(backend, &dir, fsync, 1 << 30).await;
        assert_eq!(
            running
                .telemetry()
                .sum("otelcol_exporter_storage_events", &[("event", "recovered")]),
            40
        );
        for seed in 100..110 {
            sender
                .send(generate_traces(2, 5, seed))
                .await
                .expect("accepted");
        }
        assert!(
            eventually(Duration::from_secs(20), || exported.item_count() >= 500).await,
            "{} of 500 arrived",
            exported.item_count()
        );
        let ids: HashSet<Vec<u8>> = exported.spans().into_iter().map(|s| s.span_id).collect();
        assert_eq!(ids.len(), 500, "every span, none twice");
        assert_eq!(exported.item_count(), 500);
        running
            .shutdown(Duration::from_secs(5))
            .await
            .expect("drains");
        assert!(
            disk_bytes(&dir) < 64 << 10,
            "the disk is given back: {} bytes",
            disk_bytes(&dir)
        );
        gw.shutdown(Duration::from_secs(5)).await.unwrap();

        // And nothing comes back a third time.
        let (running, _sender) = agent(backend, &dir, fsync, 1 << 30).await;
        assert_eq!(
            running
                .telemetry()
                .sum("otelcol_exporter_storage_events", &[("event", "recovered")]),
            0
        );
        running.shutdown(Duration::from_secs(1)).await.ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_pushes_back_and_takes_again_once_the_backend_drains_it() {
    let dir = storage_dir("full");
    let backend = dead_port();
    let (running, sender) = agent(backend, &dir, Fsync::Never, 1 << 16).await;
    let (mut accepted, mut refused) = (0usize, 0usize);
    for seed in 0..200 {
        match sender.send(generate_traces(2, 5, seed)).await {
            Ok(()) => accepted += 10,
            Err(e) => {
                assert!(e.is_retryable(), "a full store is back-pressure: {e}");
                refused += 10;
            }
        }
    }
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
    assert!(disk_bytes(&dir) <= 1 << 16);
    let telemetry = running.telemetry().clone();
    assert!(telemetry.sum("otelcol_exporter_storage_events", &[("event", "full")]) > 0);
    let exporter = telemetry.find(ComponentKind::Exporter, "otlp").unwrap();
    assert_eq!(exporter.enqueue_failed() as usize, refused);

    // The backend comes up: the queue drains and takes again.
    let (gw, _otlp, exported) = common::gateway(OtlpConfig {
        grpc: Some(backend),
        http: None,
        ..OtlpConfig::loopback()
    })
    .await;
    assert!(
        eventually(Duration::from_secs(20), || exported.item_count()
            == accepted)
        .await,
        "{} of {accepted}",
        exported.item_count()
    );
    sender
        .send(generate_traces(2, 5, 999))
        .await
        .expect("room again");
    assert!(
        eventually(Duration::from_secs(10), || exported.item_count()
            == accepted + 10)
        .await
    );
    running.shutdown(Duration::from_secs(5)).await.unwrap();
    gw.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_another_process_holds_fails_the_start_with_its_name() {
    let dir = storage_dir("locked");
    let backend = dead_port();
    let (first, _s) = agent(backend, &dir, Fsync::Never, 1 << 20).await;
    let second = otel_pipeline::Pipeline::traces()
        .receiver(otel_pipeline::DirectReceiver::<Traces>::new().0)
        .exporter(otel_pipeline::exporters::OtlpExporter::<Traces>::new(
            OtlpExporterConfig {
                endpoint: format!("http://{backend}"),
                queue: SendingQueueConfig {
                    storage: Some(QueueStorage {
                        storage: FileStorageConfig {
                            directory: dir.clone(),
                            timeout: Duration::from_millis(100),
                            ..FileStorageConfig::default()
                        },
                        owner: "exporter_otlp_traces".into(),
                    }),
                    ..SendingQueueConfig::default()
                },
                ..OtlpExporterConfig::default()
            },
        ))
        .build()
        .unwrap()
        .start()
        .await;
    let err = match second {
        Ok(_) => panic!("the second owner is refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("in use by another process"), "{err}");
    first.shutdown(Duration::from_millis(300)).await.ok();
}

/// `file_storage` and the keys that name it, read as the Collector reads them; mistakes
/// name the setting.
#[test]
fn storage_settings_load_and_mistakes_name_the_setting() {
    use otel_pipeline::collector::{CollectorConfig, ConfigFile};
    let load = |yaml: String| {
        CollectorConfig::load(
            &[ConfigFile::new("c.yaml", yaml)],
            |_| None,
            &otel_pipeline::default_registry(),
        )
    };
    let doc = |storage: &str, exporter_queue: &str, sampler: &str| {
        format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: 127.0.0.1:0 }}\n\
             processors:\n  tail_sampling:\n    policies: [{{ name: all, type: always_sample }}]\n{sampler}\
             exporters:\n  otlp:\n    endpoint: localhost:4317\n    sending_queue: {exporter_queue}\n\
             extensions:\n  file_storage:\n{storage}\
             service:\n  extensions: [file_storage]\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [tail_sampling]\n      exporters: [otlp]\n"
        )
    };
    let good = "    directory: /var/lib/otelcol/file_storage\n    timeout: 2s\n    fsync: true\n    compaction: { on_start: true, directory: /tmp }\n";
    load(doc(
        good,
        "{ storage: file_storage }",
        "    storage: file_storage\n",
    ))
    .expect("the Collector's shape loads");
    for (storage, queue, sampler, path, says) in [
        (
            "    fsync: sometimes\n",
            "{ storage: file_storage }",
            "",
            "extensions.file_storage.fsync",
            "expected true, false",
        ),
        (
            "    max_bytes: 10\n",
            "{ storage: file_storage }",
            "",
            "extensions.file_storage.max_bytes",
            "at least",
        ),
        (
            "    directory: /x\n",
            "{ storage: file_storage/other }",
            "",
            "exporters.otlp.sending_queue.storage",
            "is not defined under extensions",
        ),
        (
            "    directory: /x\n",
            "{ enabled: false, storage: file_storage }",
            "",
            "exporters.otlp.sending_queue.storage",
            "needs the queue enabled",
        ),
        (
            "    directory: /x\n",
            "{ }",
            "    storage: health_check\n",
            "processors.tail_sampling.storage",
            "is not defined under extensions",
        ),
    ] {
        let err = match load(doc(storage, queue, sampler)) {
            Ok(_) => panic!("{path} must not load"),
            Err(e) => e,
        };
        let e = err.errors.first().expect("an error");
        assert_eq!(e.path, path, "{e:?}");
        assert!(e.message.contains(says), "{}: {}", e.path, e.message);
    }
}

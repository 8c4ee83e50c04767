//! The `file` exporter: OTLP/JSON lines and length-prefixed protobuf from a collector built
//! from YAML, rotation by size with a bounded number of backups, and its failure paths (a
//! directory that is not there fails the start, naming the path; unbuilt keys refused).

use std::path::{Path, PathBuf};
use std::time::Duration;

use otel_pipeline::collector::{CollectorConfig, ConfigFile};
use otel_pipeline::exporters::file::{FileExporter, FileExporterConfig};
use otel_pipeline::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline::testing::{generate_metrics, generate_traces};
use otel_pipeline::{DirectReceiver, Metrics, Pipeline, Signal, Telemetry, Traces};
use prost::Message;

mod common;

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("otel-file-exporter-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn spans_in_json_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .expect("readable")
        .lines()
        .map(|l| {
            let r: ExportTraceServiceRequest = serde_json::from_str(l).expect("a request a line");
            Traces::item_count(&r)
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_and_protobuf_records_from_yaml() {
    let dir = scratch("yaml");
    let (traces_path, metrics_path) = (dir.join("traces.json"), dir.join("metrics.pb"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let yaml = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{port}\n\
         exporters:\n  file/traces:\n    path: {}\n  file/metrics:\n    path: {}\n    format: proto\n    flush_interval: 100ms\n\
         service:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [file/traces]\n    metrics:\n      receivers: [otlp]\n      exporters: [file/metrics]\n",
        traces_path.display(),
        metrics_path.display()
    );
    let registry = otel_pipeline::default_registry();
    let collector =
        CollectorConfig::load(&[ConfigFile::new("file.yaml", yaml)], |_| None, &registry)
            .unwrap_or_else(|e| panic!("{e}"))
            .build(&registry, Telemetry::new())
            .unwrap_or_else(|e| panic!("{e}"))
            .start()
            .await
            .expect("starts");
    let endpoint = format!("http://127.0.0.1:{port}");
    let (client, tx) = common::client::<Traces>(endpoint.clone()).await;
    let (mclient, mtx) = common::client::<Metrics>(endpoint).await;
    for seed in 0..5 {
        tx.send(generate_traces(4, 5, seed)).await.expect("sent");
    }
    mtx.send(generate_metrics(3, 4, 1)).await.expect("sent");
    client
        .shutdown(Duration::from_secs(5))
        .await
        .expect("drains");
    mclient
        .shutdown(Duration::from_secs(5))
        .await
        .expect("drains");
    collector
        .shutdown(Duration::from_secs(5))
        .await
        .expect("flushes");

    assert_eq!(spans_in_json_lines(&traces_path), 100);
    let bytes = std::fs::read(&metrics_path).expect("readable");
    let (mut at, mut points) = (0, 0);
    while at < bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let r =
            ExportMetricsServiceRequest::decode(&bytes[at + 4..at + 4 + len]).expect("a record");
        points += Metrics::item_count(&r);
        at += 4 + len;
    }
    assert_eq!(points, 12);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_every_span_within_the_backups_it_may_keep() {
    let dir = scratch("rotation");
    let path = dir.join("spans.json");
    let config: FileExporterConfig = serde_yaml_ng::from_str(&format!(
        "path: {}\nrotation:\n  max_megabytes: 1\n  max_backups: 10\n",
        path.display()
    ))
    .expect("config");
    let (rx, tx) = DirectReceiver::<Traces>::new();
    let running = Pipeline::traces()
        .receiver(rx)
        .exporter(FileExporter::new(config).expect("valid"))
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");
    // About 3.5 MB of JSON: three rotations.
    let mut sent = 0;
    for seed in 0..70 {
        let r = generate_traces(10, 10, seed);
        sent += Traces::item_count(&r);
        tx.send(r).await.expect("written");
    }
    running
        .shutdown(Duration::from_secs(5))
        .await
        .expect("flushes");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert!(files.len() >= 3, "rotated: {files:?}");
    for f in &files {
        assert!(
            std::fs::metadata(f).expect("meta").len() <= 1024 * 1024,
            "{f:?} too big"
        );
    }
    let total: usize = files.iter().map(|f| spans_in_json_lines(f)).sum();
    assert_eq!(total, sent, "every span is in the file or a backup");

    // With room for one backup, the older ones go.
    let dir2 = scratch("rotation-one");
    let path2 = dir2.join("spans.json");
    let config: FileExporterConfig = serde_yaml_ng::from_str(&format!(
        "path: {}\nrotation:\n  max_megabytes: 1\n  max_backups: 1\n",
        path2.display()
    ))
    .expect("config");
    let (rx, tx) = DirectReceiver::<Traces>::new();
    let running = Pipeline::traces()
        .receiver(rx)
        .exporter(FileExporter::new(config).expect("valid"))
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");
    for seed in 0..70 {
        tx.send(generate_traces(10, 10, seed))
            .await
            .expect("written");
    }
    running
        .shutdown(Duration::from_secs(5))
        .await
        .expect("flushes");
    assert_eq!(
        std::fs::read_dir(&dir2).expect("dir").count(),
        2,
        "the file and one backup"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&dir2);
}

#[tokio::test]
async fn a_missing_directory_fails_the_start_naming_the_path_and_unbuilt_keys_are_refused() {
    let registry = otel_pipeline::default_registry();
    let yaml = "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:0\n\
                exporters:\n  file:\n    path: /nonexistent-otel-dir/out.json\n\
                service:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [file]\n";
    // It validates where the directory is not (as `--validate` runs off the target host)...
    let config = CollectorConfig::load(&[ConfigFile::new("f.yaml", yaml)], |_| None, &registry)
        .unwrap_or_else(|e| panic!("{e}"));
    // ...and fails to start there, naming the path.
    let err = config
        .build(&registry, Telemetry::new())
        .unwrap_or_else(|e| panic!("{e}"))
        .start()
        .await
        .expect_err("no such directory");
    assert!(
        err.to_string().contains("/nonexistent-otel-dir/out.json"),
        "{err}"
    );

    let compressed = yaml.replace(
        "path: /nonexistent-otel-dir/out.json",
        "path: /tmp/x.json\n    compression: zstd",
    );
    let err = CollectorConfig::load(
        &[ConfigFile::new("f.yaml", compressed)],
        |_| None,
        &registry,
    )
    .expect_err("refused")
    .to_string();
    assert!(err.contains("exporters.file.compression"), "{err}");
}

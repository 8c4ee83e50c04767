//! An OTLP relay: receive OTLP (gRPC and HTTP), batch, and export it over OTLP/gRPC with
//! the default sending queue. The smallest useful collector, and the process
//! `examples/loadgen.rs --relay` measures.
//! Prints its self-telemetry to standard error when it stops.
//!
//! ```text
//! cargo run --release --example relay -- --grpc 127.0.0.1:4317 --http 127.0.0.1:4318 --to http://127.0.0.1:14317 [--compression gzip|zstd|none] [--no-batch] [--discard]
//! ```
//! `--no-batch` exports each request as it came (no `batch` processor: the Collector's
//! default of 8192 spans or 200 ms otherwise); `--discard` exports nowhere (the `nop`
//! exporter), to measure receiving alone.
//! Prints `ready grpc=... http=...` once listening; stops on end of standard input (or
//! Ctrl-C), drains, and prints its self-telemetry.

use std::net::SocketAddr;
use std::time::Duration;

use otel_pipeline::boxed::{BoxExporter, BoxProcessor};
use otel_pipeline::exporters::NopExporter;
use otel_pipeline::exporters::otlp::{Compression, OtlpExporter, OtlpExporterConfig, Protocol};
use otel_pipeline::processors::{BatchConfig, BatchProcessor};
use otel_pipeline::receivers::{OtlpConfig, OtlpReceiver};
use otel_pipeline::{Pipeline, Traces};
use tokio::io::AsyncReadExt;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let grpc: SocketAddr = arg(&args, "--grpc")
        .unwrap_or_else(|| "127.0.0.1:4317".into())
        .parse()?;
    let http: SocketAddr = arg(&args, "--http")
        .unwrap_or_else(|| "127.0.0.1:4318".into())
        .parse()?;
    let to = arg(&args, "--to").unwrap_or_else(|| "http://127.0.0.1:14317".into());
    let compression = match arg(&args, "--compression").as_deref() {
        None | Some("gzip") => Compression::Gzip,
        Some("zstd") => Compression::Zstd,
        Some("none") => Compression::None,
        Some(other) => {
            return Err(format!("--compression {other}: use gzip, zstd or none").into());
        }
    };

    let otlp = OtlpReceiver::new(OtlpConfig {
        grpc: Some(grpc),
        http: Some(http),
        ..OtlpConfig::default()
    });
    let batch = !args.iter().any(|a| a == "--no-batch");
    let discard = args.iter().any(|a| a == "--discard");
    let processors: Vec<BoxProcessor<Traces>> = if batch {
        vec![Box::new(BatchProcessor::new(BatchConfig::default()))]
    } else {
        Vec::new()
    };
    let exporter: BoxExporter<Traces> = if discard {
        Box::new(NopExporter::new())
    } else {
        Box::new(OtlpExporter::<Traces>::new(OtlpExporterConfig {
            endpoint: to,
            protocol: Protocol::Grpc,
            compression,
            ..OtlpExporterConfig::default()
        }))
    };
    let running = Pipeline::traces()
        .named("traces/relay")
        .receiver(otlp.traces())
        .processors(processors)
        .exporter(exporter)
        .build()?
        .start()
        .await?;
    let addrs = otlp.local_addrs();
    println!(
        "ready grpc={} http={}",
        addrs.grpc.map(|a| a.to_string()).unwrap_or_default(),
        addrs.http.map(|a| a.to_string()).unwrap_or_default()
    );

    // Run until standard input closes (the load generator holds it) or Ctrl-C.
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    tokio::select! {
        _ = async { while let Ok(n) = stdin.read(&mut buf).await { if n == 0 { break; } } } => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let telemetry = running.telemetry().clone();
    running.shutdown(Duration::from_secs(10)).await?;
    // Standard error: the load generator may have closed our standard output by now.
    eprint!("{}", telemetry.render_prometheus());
    Ok(())
}

//! A collector built from the crates, run by Collector YAML.
//!
//! ```text
//! cargo run --example collector -- --config agent.yaml [--config override.yaml ...]
//! cargo run --example collector -- --config agent.yaml --validate
//! ```
//!
//! Files merge in order, `${env:NAME}` and `${env:NAME:-default}` are replaced, and every
//! mistake is reported with its path, file, line and column. SIGTERM or SIGINT stops it
//! gracefully: receivers stop accepting, processors flush, exporters drain, all within
//! `--shutdown-timeout` (default 30s). Self-metrics are served as Prometheus text at
//! `service.telemetry.metrics.address` (default `localhost:8888`) under `/metrics`.

use std::process::ExitCode;
use std::time::Duration;

use otel_pipeline::Telemetry;
use otel_pipeline::collector::{CollectorConfig, ConfigFile};
use otel_pipeline::receivers::collector::{listen_address, serve_metrics};

struct Args {
    configs: Vec<String>,
    validate: bool,
    shutdown_timeout: Duration,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: collector --config FILE [--config FILE ...] [--validate] [--shutdown-timeout 30s]"
    );
    ExitCode::from(2)
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        configs: Vec::new(),
        validate: false,
        shutdown_timeout: Duration::from_secs(30),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or(format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--config" | "-c" => args.configs.push(value("--config")?),
            "--validate" => args.validate = true,
            "--shutdown-timeout" => {
                let v = value("--shutdown-timeout")?;
                args.shutdown_timeout = otel_pipeline::config::parse_duration(&v)?;
            }
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if args.configs.is_empty() {
        return Err("give at least one --config".into());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("collector: {e}");
            }
            return usage();
        }
    };
    let mut files = Vec::new();
    for path in &args.configs {
        match ConfigFile::read(path) {
            Ok(f) => files.push(f),
            Err(e) => {
                eprintln!("collector: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let registry = otel_pipeline::default_registry();
    let config = match CollectorConfig::load(&files, |name| std::env::var(name).ok(), &registry) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("collector: the configuration is not valid:");
            for e in &errors.errors {
                eprintln!("  {e}");
            }
            return ExitCode::from(2);
        }
    };
    let level = match config.service_telemetry().log_level.as_str() {
        "debug" => tracing::Level::DEBUG,
        "warn" => tracing::Level::WARN,
        "error" | "dpanic" | "panic" | "fatal" => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    if args.validate {
        println!(
            "collector: the configuration is valid ({} pipelines: {})",
            config.pipeline_names().count(),
            config.pipeline_names().collect::<Vec<_>>().join(", ")
        );
        return ExitCode::SUCCESS;
    }

    let telemetry = Telemetry::new();
    let collector = match config.build(&registry, telemetry.clone()) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("collector: {errors}");
            return ExitCode::from(2);
        }
    };
    let metrics = match &config.service_telemetry().metrics_address {
        None => None,
        Some(addr) => {
            let served = match listen_address(addr) {
                Ok(a) => serve_metrics(a, telemetry.clone()).await,
                Err(e) => Err(e.into()),
            };
            match served {
                Ok(s) => {
                    tracing::info!(address = %s.local_addr(), "serving self-metrics at /metrics");
                    Some(s)
                }
                Err(e) => {
                    eprintln!("collector: service.telemetry.metrics: {e}");
                    return ExitCode::from(1);
                }
            }
        }
    };
    let running = match collector.start().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("collector: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(pipelines = ?config.pipeline_names().collect::<Vec<_>>(), "collector started");
    println!("collector: ready");

    wait_for_signal().await;
    tracing::info!(timeout = ?args.shutdown_timeout, "shutting down");
    let deadline = tokio::time::Instant::now() + args.shutdown_timeout;
    let result = running.shutdown(args.shutdown_timeout).await;
    if let Some(m) = metrics {
        m.stop(deadline).await;
    }
    match result {
        Ok(()) => {
            println!("collector: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("collector: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

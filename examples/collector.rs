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
//!
//! SIGHUP, or a change to any `--config` file (checked every `--watch-interval`, default
//! 2s; `0s` turns watching off), reloads the configuration: components that can change in
//! place (the tail sampler's policies, filter conditions, attributes and redaction rules)
//! take their new sections, and nothing restarts. A
//! configuration that does not load is logged with its errors and the running one stays.

use std::process::ExitCode;
use std::time::Duration;

use otel_pipeline::Telemetry;
use otel_pipeline::collector::{CollectorConfig, ConfigFile};
use otel_pipeline::receivers::collector::{listen_address, serve_metrics};

struct Args {
    configs: Vec<String>,
    validate: bool,
    shutdown_timeout: Duration,
    watch_interval: Duration,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: collector --config FILE [--config FILE ...] [--validate] [--shutdown-timeout 30s] [--watch-interval 2s]"
    );
    ExitCode::from(2)
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        configs: Vec::new(),
        validate: false,
        shutdown_timeout: Duration::from_secs(30),
        watch_interval: Duration::from_secs(2),
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
            "--watch-interval" => {
                let v = value("--watch-interval")?;
                args.watch_interval = otel_pipeline::config::parse_duration(&v)?;
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

    let mut stamps = stamps(&args.configs);
    let mut hangup = hangup_signal();
    let mut watch =
        (!args.watch_interval.is_zero()).then(|| tokio::time::interval(args.watch_interval));
    let stop = wait_for_signal();
    tokio::pin!(stop);
    loop {
        let changed = async {
            match watch.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stop => break,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                stamps = stamps_now(&args.configs);
                reload(&running, &args.configs, &registry);
            }
            _ = changed => {
                let now = stamps_now(&args.configs);
                if now != stamps {
                    stamps = now;
                    tracing::info!("a configuration file changed: reloading");
                    reload(&running, &args.configs, &registry);
                }
            }
        }
    }
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

/// The files' modification times (and sizes), to notice a change.
fn stamps(paths: &[String]) -> Vec<Option<(std::time::SystemTime, u64)>> {
    stamps_now(paths)
}

fn stamps_now(paths: &[String]) -> Vec<Option<(std::time::SystemTime, u64)>> {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// Load the files again; hand the running collector the new configuration, or log why
/// not and keep the running one.
fn reload(
    running: &otel_pipeline::collector::RunningCollector,
    paths: &[String],
    registry: &otel_pipeline::collector::Registry,
) {
    let mut files = Vec::new();
    for path in paths {
        match ConfigFile::read(path) {
            Ok(f) => files.push(f),
            Err(e) => {
                tracing::error!("reload refused, the running configuration stays: {e}");
                return;
            }
        }
    }
    let config = match CollectorConfig::load(&files, |name| std::env::var(name).ok(), registry) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.errors {
                tracing::error!("reload refused, the running configuration stays: {e}");
            }
            return;
        }
    };
    match running.reload(&config) {
        Ok(done) => tracing::info!(applied = ?done.applied, "configuration reloaded"),
        Err(errors) => {
            for e in &errors.errors {
                tracing::error!("reload refused, the running configuration stays: {e}");
            }
        }
    }
}

/// SIGHUP, where there is one.
#[cfg(unix)]
fn hangup_signal() -> Hangup {
    Hangup(tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok())
}

#[cfg(unix)]
struct Hangup(Option<tokio::signal::unix::Signal>);

#[cfg(unix)]
impl Hangup {
    async fn recv(&mut self) {
        match self.0.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {
    Hangup
}

#[cfg(not(unix))]
struct Hangup;

#[cfg(not(unix))]
impl Hangup {
    async fn recv(&mut self) {
        std::future::pending::<()>().await;
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

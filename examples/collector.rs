//! A collector built from the crates, run by Collector YAML.
//!
//! ```text
//! cargo run --example collector -- --config agent.yaml [--config override.yaml ...]
//! cargo run --example collector -- --config agent.yaml --validate [--strict]
//! cargo run --example collector -- storage inspect /var/lib/otelcol/file_storage
//! ```
//!
//! `storage inspect DIR` looks into a `file_storage` directory (or one component's
//! subdirectory) without changing it, even while a collector runs on it: segments,
//! records by kind, what a restart would send, and what is torn or corrupt. It exits 1
//! when something is corrupt.
//!
//! `--validate` checks the configuration as the Collector's `validate` does; whether
//! receivers' certificate files exist and their ports are free depends on the host it
//! runs on, so those are warnings unless `--strict` is given.
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
//! take their new sections, and nothing restarts. Other changes (endpoints, receivers,
//! pipelines) rebuild the collector in process: the running one drains first, so nothing
//! it accepted is lost, then the new one starts. A configuration that does not load is
//! logged with its errors and the running one stays.

use std::process::ExitCode;

// The collector's allocator: spans are decoded by receiver tasks and freed on other
// threads (batch, sampler shards, exporters), which mimalloc handles with less CPU and
// less fragmentation than the system allocator (measured in docs/benchmarks.md). A
// library user picks their own.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Duration;

use otel_pipeline::Telemetry;
use otel_pipeline::collector::{CollectorConfig, ConfigFile};

struct Args {
    configs: Vec<String>,
    validate: bool,
    strict: bool,
    shutdown_timeout: Duration,
    watch_interval: Duration,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: collector --config FILE [--config FILE ...] [--validate [--strict]] [--shutdown-timeout 30s] [--watch-interval 2s]"
    );
    ExitCode::from(2)
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        configs: Vec::new(),
        validate: false,
        strict: false,
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
            "--strict" => args.strict = true,
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

/// `storage inspect DIR`: what a `file_storage` directory holds, for an operator.
fn storage_inspect(dir: &std::path::Path) -> ExitCode {
    use otel_pipeline::storage::inspect;
    let has_segments = |d: &std::path::Path| {
        std::fs::read_dir(d).is_ok_and(|mut e| {
            e.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "seg")))
        })
    };
    let mut dirs = Vec::new();
    if has_segments(dir) {
        dirs.push(dir.to_path_buf());
    } else {
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                let mut subs: Vec<_> = entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect();
                subs.sort();
                dirs.extend(subs);
            }
            Err(e) => {
                eprintln!("collector: storage inspect {}: {e}", dir.display());
                return ExitCode::from(2);
            }
        }
    }
    if dirs.is_empty() {
        println!("{}: no storage here", dir.display());
    }
    let mut corrupt = 0;
    for d in dirs {
        match inspect(&d, 256 << 20) {
            Ok(report) => {
                corrupt += report.corrupt();
                print!("{report}");
            }
            Err(e) => {
                eprintln!("collector: storage inspect {}: {e}", d.display());
                return ExitCode::from(2);
            }
        }
    }
    if corrupt > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.first().map(String::as_str) == Some("storage") {
        return match raw.get(1..).unwrap_or_default() {
            [cmd, dir] if cmd == "inspect" => storage_inspect(std::path::Path::new(dir)),
            _ => {
                eprintln!("usage: collector storage inspect DIR");
                ExitCode::from(2)
            }
        };
    }
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
    let mut config = match CollectorConfig::load(&files, |name| std::env::var(name).ok(), &registry)
    {
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
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
        let _ = tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::from_level(level))
            .with(fmt)
            .with(PushedLogs)
            .try_init();
    }
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    if args.validate {
        // Certificate files and free ports: warnings, since validate often runs off the
        // target host or beside a running collector; errors with --strict.
        let host = config.check_host(&registry);
        for e in &host {
            if args.strict {
                eprintln!("collector: {e}");
            } else {
                tracing::warn!("{e} (checked again at start; --strict makes this an error)");
            }
        }
        if args.strict && !host.is_empty() {
            eprintln!("collector: the configuration is not valid on this host");
            return ExitCode::from(2);
        }
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
    let mut running = match collector.start().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("collector: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(
        pipelines = ?config.pipeline_names().collect::<Vec<_>>(),
        metrics = ?running.metrics_address(),
        "collector started"
    );
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
                if let Some(new) = reload(&running, &args.configs, &registry) {
                    (running, config) = restart(running, config, new, &registry, &telemetry, &args).await;
                }
            }
            _ = changed => {
                let now = stamps_now(&args.configs);
                if now != stamps {
                    stamps = now;
                    tracing::info!("a configuration file changed: reloading");
                    if let Some(new) = reload(&running, &args.configs, &registry) {
                        (running, config) = restart(running, config, new, &registry, &telemetry, &args).await;
                    }
                }
            }
        }
    }
    tracing::info!(timeout = ?args.shutdown_timeout, "shutting down");
    let result = running.shutdown(args.shutdown_timeout).await;
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

/// Rebuild the collector from `new` (changes that cannot be made in place): drain the
/// running one first, so nothing it accepted is lost, then start the new one on the same
/// self-telemetry. If the new one does not start, the configuration that ran before
/// starts again; if that fails too, the process exits.
async fn restart(
    running: otel_pipeline::collector::RunningCollector,
    old: CollectorConfig,
    new: CollectorConfig,
    registry: &otel_pipeline::collector::Registry,
    telemetry: &Telemetry,
    args: &Args,
) -> (otel_pipeline::collector::RunningCollector, CollectorConfig) {
    if let Err(e) = running.shutdown(args.shutdown_timeout).await {
        tracing::warn!("restart: the running collector did not drain cleanly: {e}");
    }
    let started = async |c: &CollectorConfig| -> Result<_, String> {
        let built = c
            .build(registry, telemetry.clone())
            .map_err(|e| e.to_string())?;
        built.start().await.map_err(|e| e.to_string())
    };
    match started(&new).await {
        Ok(r) => {
            tracing::info!(pipelines = ?new.pipeline_names().collect::<Vec<_>>(), "restart: the collector runs the new configuration");
            (r, new)
        }
        Err(e) => {
            tracing::error!(
                "restart: the new configuration did not start ({e}); starting the previous one again"
            );
            match started(&old).await {
                Ok(r) => (r, old),
                Err(e) => {
                    tracing::error!(
                        "restart: the previous configuration did not start either: {e}"
                    );
                    std::process::exit(1);
                }
            }
        }
    }
}

/// Load the files again; hand the running collector the new configuration, or log why
/// not and keep the running one. Returns the new configuration when it changes what
/// cannot change in place, so the caller rebuilds the collector from it.
fn reload(
    running: &otel_pipeline::collector::RunningCollector,
    paths: &[String],
    registry: &otel_pipeline::collector::Registry,
) -> Option<CollectorConfig> {
    let mut files = Vec::new();
    for path in paths {
        match ConfigFile::read(path) {
            Ok(f) => files.push(f),
            Err(e) => {
                tracing::error!("reload refused, the running configuration stays: {e}");
                return None;
            }
        }
    }
    let config = match CollectorConfig::load(&files, |name| std::env::var(name).ok(), registry) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.errors {
                tracing::error!("reload refused, the running configuration stays: {e}");
            }
            return None;
        }
    };
    match running.reload(&config) {
        Ok(done) if done.restart_needed.is_empty() => {
            tracing::info!(applied = ?done.applied, "configuration reloaded");
            None
        }
        Ok(done) => {
            tracing::info!(
                applied = ?done.applied,
                restart_needed = ?done.restart_needed,
                "configuration reloaded; these changes need a rebuild: restarting in process (draining first)"
            );
            Some(config)
        }
        Err(errors) => {
            for e in &errors.errors {
                tracing::error!("reload refused, the running configuration stays: {e}");
            }
            None
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

/// Each log event, as an OTLP log record, to `service.telemetry.logs.processors` (only
/// while one pushes: otherwise nothing is built).
struct PushedLogs;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PushedLogs {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        use otel_pipeline::proto::common::v1::{AnyValue, KeyValue, any_value::Value};
        use otel_pipeline::proto::logs::v1::LogRecord;
        if !otel_pipeline::telemetry::logs::wanted() {
            return;
        }
        struct Fields {
            body: String,
            attrs: Vec<KeyValue>,
        }
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                let text = format!("{value:?}");
                if field.name() == "message" {
                    self.body = text;
                } else {
                    self.attrs.push(KeyValue {
                        key: field.name().to_string(),
                        value: Some(AnyValue {
                            value: Some(Value::StringValue(text)),
                        }),
                        ..Default::default()
                    });
                }
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "message" {
                    self.body = value.to_string();
                } else {
                    self.record_debug(field, &value);
                }
            }
        }
        let mut fields = Fields {
            body: String::new(),
            attrs: Vec::new(),
        };
        event.record(&mut fields);
        let meta = event.metadata();
        fields.attrs.push(KeyValue {
            key: "code.namespace".into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(meta.target().to_string())),
            }),
            ..Default::default()
        });
        // The log data model's numbers: TRACE 1, DEBUG 5, INFO 9, WARN 13, ERROR 17.
        let (number, text) = match *meta.level() {
            tracing::Level::TRACE => (1, "TRACE"),
            tracing::Level::DEBUG => (5, "DEBUG"),
            tracing::Level::INFO => (9, "INFO"),
            tracing::Level::WARN => (13, "WARN"),
            tracing::Level::ERROR => (17, "ERROR"),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        otel_pipeline::telemetry::record_log(LogRecord {
            time_unix_nano: now,
            observed_time_unix_nano: now,
            severity_number: number,
            severity_text: text.into(),
            body: Some(AnyValue {
                value: Some(Value::StringValue(fields.body)),
            }),
            attributes: fields.attrs,
            ..Default::default()
        });
    }
}

//! The `file` exporter: each request as a line of OTLP/JSON (or, with `format: proto`, as
//! a 4-byte big-endian length and the protobuf bytes), appended to a file, with the
//! Collector's size-based rotation. Every signal.
//!
//! Keys, as the Collector's: `path` (required), `format` (`json`, default, or `proto`),
//! `append` (false: the file starts empty), `flush_interval` (1 s: written data reaches
//! the file at least that often, and at shutdown), `rotation` (`max_megabytes` 100,
//! `max_days` 0 = keep, `max_backups` 100, `localtime` false): when the file would pass
//! `max_megabytes` it is renamed to `<name>-<UTC time>.<ext>` and a new one started, and
//! the oldest backups beyond `max_backups` (or older than `max_days`) are removed.
//! `compression` and `group_by` are refused, naming the key: not built.
//!
//! The file is opened when the pipeline starts, so `--validate` runs where the
//! directory does not exist. A write that fails (a full disk) refuses the batch, which is
//! retryable, and is counted; nothing is dropped silently.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use otel_pipeline_core::config::ConfigError;
use otel_pipeline_core::otlp::WireSignal;
use otel_pipeline_core::{
    Batch, BoxError, BoxFuture, BuildError, ComponentContext, ComponentId, ComponentTelemetry,
    ConsumeError, Consumer, Exporter, Lifecycle,
};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;

/// `rotation`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationConfig {
    /// Rotate before the file passes this size (default 100).
    #[serde(default = "default_megabytes")]
    pub max_megabytes: u64,
    /// Remove backups older than this many days (0, the default: keep).
    #[serde(default)]
    pub max_days: u64,
    /// Keep at most this many backups (default 100; 0 keeps all).
    #[serde(default = "default_backups")]
    pub max_backups: usize,
    /// Accepted: backup names use UTC here.
    #[serde(default)]
    pub localtime: bool,
}

fn default_megabytes() -> u64 {
    100
}

fn default_backups() -> usize {
    100
}

/// The `file` exporter's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileExporterConfig {
    /// The file written.
    pub path: PathBuf,
    /// `json` (default) or `proto`.
    #[serde(default)]
    pub format: Option<String>,
    /// Keep what the file holds (default: start it empty).
    #[serde(default)]
    pub append: bool,
    /// How often written data is flushed to the file (default 1 s).
    #[serde(default, deserialize_with = "otel_pipeline_core::config::opt_duration")]
    pub flush_interval: Option<Duration>,
    /// Size-based rotation; none without it.
    #[serde(default)]
    pub rotation: Option<RotationConfig>,
    /// Refused: not built.
    #[serde(default)]
    pub compression: Option<String>,
    /// Refused: not built.
    #[serde(default)]
    pub group_by: Option<serde_yaml_ng::Value>,
}

impl FileExporterConfig {
    /// Check the settings; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.path.as_os_str().is_empty() {
            return Err(ConfigError::new("path", "missing: the file to write"));
        }
        match self.format.as_deref() {
            None | Some("json" | "proto") => {}
            Some(other) => {
                return Err(ConfigError::new(
                    "format",
                    format!("`{other}`: expected json or proto"),
                ));
            }
        }
        if self.compression.as_deref().is_some_and(|c| !c.is_empty()) {
            return Err(ConfigError::new(
                "compression",
                "compressed files are not built in this collector; leave it out",
            ));
        }
        if self.group_by.as_ref().is_some_and(|g| !g.is_null()) {
            return Err(ConfigError::new(
                "group_by",
                "a file per resource attribute is not built in this collector; leave it out",
            ));
        }
        if self.rotation.as_ref().is_some_and(|r| r.max_megabytes == 0) {
            return Err(ConfigError::new(
                "rotation.max_megabytes",
                "must be positive",
            ));
        }
        Ok(())
    }
}

/// The `file` exporter. See the [module docs](self).
///
/// ```
/// use otel_exporters::file::{FileExporter, FileExporterConfig};
/// let config: FileExporterConfig = serde_yaml_ng::from_str("path: /var/log/otel/traces.json\nrotation: {max_megabytes: 10}")?;
/// let exporter = FileExporter::new(config)?;
/// # let _ = exporter;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct FileExporter {
    id: ComponentId,
    config: FileExporterConfig,
}

impl FileExporter {
    /// The exporter for `config`; errors name the key.
    pub fn new(config: FileExporterConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            id: ComponentId::new("file"),
            config,
        })
    }

    /// Under another id.
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }
}

struct Open {
    writer: BufWriter<File>,
    size: u64,
}

struct Shared {
    config: FileExporterConfig,
    file: Mutex<Option<Open>>,
    telemetry: Arc<ComponentTelemetry>,
}

impl Shared {
    fn open(&self, append: bool) -> std::io::Result<Open> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&self.config.path)?;
        let size = file.metadata().map_or(0, |m| m.len());
        Ok(Open {
            writer: BufWriter::new(file),
            size,
        })
    }

    /// Write `record`, rotating first if it would pass the size bound.
    fn write(&self, record: &[u8]) -> std::io::Result<()> {
        let mut slot = self.file.lock();
        let open = match slot.as_mut() {
            Some(o) => o,
            None => slot.insert(self.open(true)?),
        };
        if let Some(r) = &self.config.rotation {
            let limit = r.max_megabytes * 1024 * 1024;
            if open.size > 0 && open.size + record.len() as u64 > limit {
                open.writer.flush()?;
                rotate(&self.config.path, r)?;
                *open = self.open(false)?;
            }
        }
        open.writer.write_all(record)?;
        open.size += record.len() as u64;
        Ok(())
    }

    fn flush(&self) -> std::io::Result<()> {
        match self.file.lock().as_mut() {
            Some(o) => o.writer.flush(),
            None => Ok(()),
        }
    }
}

/// `dir/name.ext` -> `dir/name-<UTC time>.ext`; then prune old backups.
fn rotate(path: &Path, r: &RotationConfig) -> std::io::Result<()> {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    // Sortable and unique enough: seconds and nanoseconds since the epoch.
    let backup = dir.join(format!(
        "{stem}-{}.{:09}{ext}",
        now.as_secs(),
        now.subsec_nanos()
    ));
    std::fs::rename(path, &backup)?;
    let prefix = format!("{stem}-");
    let mut backups: Vec<(PathBuf, SystemTime)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix) && name.ends_with(&ext)
        })
        .filter_map(|e| Some((e.path(), e.metadata().ok()?.modified().ok()?)))
        .collect();
    backups.sort_by(|a, b| b.0.cmp(&a.0));
    for (i, (p, modified)) in backups.iter().enumerate() {
        let too_many = r.max_backups > 0 && i >= r.max_backups;
        let too_old = r.max_days > 0
            && modified
                .elapsed()
                .is_ok_and(|age| age > Duration::from_secs(r.max_days * 86_400));
        if too_many || too_old {
            let _ = std::fs::remove_file(p);
        }
    }
    Ok(())
}

/// The consumer a [`FileExporter`] builds.
pub struct FileConsumer<S> {
    shared: Arc<Shared>,
    _signal: std::marker::PhantomData<fn() -> S>,
}

impl<S> std::fmt::Debug for FileConsumer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileConsumer")
            .field("path", &self.shared.config.path)
            .finish_non_exhaustive()
    }
}

impl<S: WireSignal> Consumer<S> for FileConsumer<S> {
    async fn consume(&self, batch: Batch<S>) -> Result<(), ConsumeError<S>> {
        let n = batch.item_count();
        let record = if self.shared.config.format.as_deref() == Some("proto") {
            let bytes = batch.to_bytes();
            let mut r = Vec::with_capacity(4 + bytes.len());
            r.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            r.extend_from_slice(&bytes);
            r
        } else {
            match serde_json::to_vec(batch.data()) {
                Ok(mut r) => {
                    r.push(b'\n');
                    r
                }
                Err(e) => {
                    self.shared.telemetry.add_send_failed(n);
                    return Err(ConsumeError::rejected(
                        n,
                        format!("not encodable as JSON: {e}"),
                    ));
                }
            }
        };
        match self.shared.write(&record) {
            Ok(()) => {
                self.shared.telemetry.add_sent(n);
                Ok(())
            }
            Err(e) => {
                // A full disk or a lost directory: the caller keeps the batch and retries.
                self.shared.telemetry.add_send_failed(n);
                Err(ConsumeError::refused(
                    batch,
                    format!("writing {}: {e}", self.shared.config.path.display()),
                ))
            }
        }
    }
}

struct Flusher {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Lifecycle for Flusher {
    fn start(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let open = self.shared.open(self.shared.config.append).map_err(|e| {
                format!(
                    "file exporter: opening {}: {e}",
                    self.shared.config.path.display()
                )
            })?;
            *self.shared.file.lock() = Some(open);
            let every = self
                .shared
                .config
                .flush_interval
                .unwrap_or(Duration::from_secs(1));
            let shared = Arc::clone(&self.shared);
            let mut stop = self.stop.subscribe();
            *self.task.lock() = Some(tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(Instant::now() + every, every);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            if let Err(e) = shared.flush() {
                                tracing::warn!(path = %shared.config.path.display(), "file exporter: flush failed: {e}");
                            }
                        }
                        _ = async { stop.wait_for(|s| *s).await.map(drop) } => return,
                    }
                }
            }));
            Ok(())
        })
    }

    fn force_flush(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move { self.shared.flush().map_err(|e| Box::new(e) as BoxError) })
    }

    fn shutdown(&self, deadline: Instant) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let _ = self.stop.send(true);
            let task = self.task.lock().take();
            if let Some(task) = task {
                let _ = tokio::time::timeout_at(deadline, task).await;
            }
            self.shared.flush().map_err(|e| Box::new(e) as BoxError)
        })
    }
}

impl<S: WireSignal> Exporter<S> for FileExporter {
    type Consumer = FileConsumer<S>;

    fn id(&self) -> ComponentId {
        self.id.clone()
    }

    fn build(self, ctx: &mut ComponentContext<'_>) -> Result<FileConsumer<S>, BuildError> {
        self.config
            .validate()
            .map_err(|e| ctx.invalid(e.path, e.message))?;
        let shared = Arc::new(Shared {
            config: self.config,
            file: Mutex::new(None),
            telemetry: ctx.telemetry(),
        });
        ctx.register_lifecycle(Arc::new(Flusher {
            shared: Arc::clone(&shared),
            stop: watch::channel(false).0,
            task: Mutex::new(None),
        }));
        Ok(FileConsumer {
            shared,
            _signal: std::marker::PhantomData,
        })
    }
}

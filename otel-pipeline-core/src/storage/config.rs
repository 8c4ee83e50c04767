//! The Collector's `file_storage` extension, read into [`FileStorageConfig`], which
//! opens one [`SegmentLog`] per component that names it (`sending_queue.storage`, the
//! tail sampler's `storage`).
//!
//! ```yaml
//! extensions:
//!   file_storage:
//!     directory: /var/lib/otelcol/file_storage
//!     create_directory: true
//!     timeout: 1s          # how long to wait for the directory's lock
//!     fsync: true          # true: every write; false: never; or a period such as 200ms
//!     max_bytes: 2147483648  # ours: the bound on disk (default 1 GiB per component)
//! exporters:
//!   otlp:
//!     endpoint: backend:4317
//!     sending_queue: { storage: file_storage }
//! service:
//!   extensions: [file_storage]
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{Fsync, LogOptions, SegmentLog, StorageError};
use crate::collector::{Extension, ExtensionFactory, Host, Section};
use crate::config::ConfigError;
use crate::{BoxError, BoxFuture};

/// Where the Collector keeps `file_storage` by default.
pub const DEFAULT_DIRECTORY: &str = "/var/lib/otelcol/file_storage";

/// A `file_storage` extension's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStorageConfig {
    /// The directory: each component gets its own subdirectory in it.
    pub directory: PathBuf,
    /// Make the directory (and parents) when it is missing (default false, as the
    /// Collector).
    pub create_directory: bool,
    /// `directory_permissions` for a directory it makes (default `0750`).
    pub directory_permissions: u32,
    /// How long to wait for another process to let go of a component's directory.
    pub timeout: Duration,
    /// When records are synced (`fsync`: `true` every write, `false` never, or a period;
    /// default every second).
    pub fsync: Fsync,
    /// Most bytes on disk per component (ours; default 1 GiB).
    pub max_bytes: u64,
    /// Segment size (ours; default 8 MiB).
    pub segment_bytes: u64,
}

impl Default for FileStorageConfig {
    fn default() -> Self {
        let d = LogOptions::default();
        Self {
            directory: DEFAULT_DIRECTORY.into(),
            create_directory: false,
            directory_permissions: 0o750,
            timeout: d.lock_timeout,
            fsync: d.fsync,
            max_bytes: d.max_bytes,
            segment_bytes: d.segment_bytes,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FsyncYaml {
    Bool(bool),
    Text(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileStorageYaml {
    #[serde(default)]
    directory: Option<String>,
    #[serde(default)]
    create_directory: Option<bool>,
    #[serde(default)]
    directory_permissions: Option<String>,
    #[serde(default, deserialize_with = "crate::config::opt_duration")]
    timeout: Option<Duration>,
    #[serde(default)]
    fsync: Option<FsyncYaml>,
    #[serde(default)]
    max_bytes: Option<u64>,
    #[serde(default)]
    segment_bytes: Option<u64>,
    /// bbolt's compaction settings: accepted; the segment log compacts by deleting
    /// segments whose records are all released, always.
    #[serde(default)]
    compaction: Option<serde_yaml_ng::Value>,
}

impl FileStorageConfig {
    /// Read a `file_storage` section; errors name the setting.
    pub fn from_section(section: &Section<'_>) -> Result<Self, ConfigError> {
        let y: FileStorageYaml = if section.is_empty() {
            FileStorageYaml::default()
        } else {
            section.deserialize()?
        };
        let _ = y.compaction;
        let d = Self::default();
        let fsync = match y.fsync {
            None => d.fsync,
            Some(FsyncYaml::Bool(true)) => Fsync::EveryWrite,
            Some(FsyncYaml::Bool(false)) => Fsync::Never,
            Some(FsyncYaml::Text(t)) => match t.trim() {
                "always" | "every_write" | "true" => Fsync::EveryWrite,
                "never" | "false" => Fsync::Never,
                other => match crate::config::parse_duration(other) {
                    Ok(p) if !p.is_zero() => Fsync::Interval(p),
                    Ok(_) => Fsync::EveryWrite,
                    Err(e) => {
                        return Err(section.error(
                            "fsync",
                            format!("expected true, false, always, never or a period: {e}"),
                        ));
                    }
                },
            },
        };
        let directory_permissions = match y.directory_permissions {
            None => d.directory_permissions,
            Some(p) => u32::from_str_radix(p.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| {
                    section.error(
                        "directory_permissions",
                        "expected an octal mode such as 0750",
                    )
                })?,
        };
        let max_bytes = y.max_bytes.unwrap_or(d.max_bytes);
        if max_bytes < 1 << 16 {
            return Err(section.error("max_bytes", "must be at least 65536"));
        }
        let directory = match y.directory {
            Some(dir) if dir.trim().is_empty() => {
                return Err(section.error("directory", "must not be empty"));
            }
            Some(dir) => PathBuf::from(dir),
            None => d.directory,
        };
        Ok(Self {
            directory,
            create_directory: y.create_directory.unwrap_or(d.create_directory),
            directory_permissions,
            timeout: y.timeout.unwrap_or(d.timeout),
            fsync,
            max_bytes,
            segment_bytes: y.segment_bytes.unwrap_or(d.segment_bytes),
        })
    }

    /// The `file_storage` extension that `section` names at `subpath` (an exporter's
    /// `sending_queue.storage`).
    pub fn referenced(section: &Section<'_>, id: &str, subpath: &str) -> Result<Self, ConfigError> {
        let ext = section.referenced("extensions", id, subpath)?;
        if ext.id().kind() != "file_storage" {
            return Err(section.error(
                subpath,
                format!("`{id}` is not a storage extension (use file_storage)"),
            ));
        }
        Self::from_section(&ext)
    }

    /// The log options this gives.
    pub fn log_options(&self) -> LogOptions {
        LogOptions {
            fsync: self.fsync,
            max_bytes: self.max_bytes,
            segment_bytes: self.segment_bytes,
            lock_timeout: self.timeout,
            ..LogOptions::default()
        }
    }

    /// The directory of `owner` (`exporter_otlp_backend_traces`): characters other than
    /// letters, digits, `-`, `_` and `.` become `_`.
    pub fn owner_dir(&self, owner: &str) -> PathBuf {
        let name: String = owner
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.directory.join(name)
    }

    /// Open `owner`'s log (making its subdirectory; the storage directory itself only
    /// with `create_directory`). Blocking: call it from a blocking task.
    pub fn open(&self, owner: &str) -> Result<Arc<SegmentLog>, StorageError> {
        self.ensure_directory()?;
        let dir = self.owner_dir(owner);
        make_dir(&dir, self.directory_permissions)?;
        SegmentLog::open_shared(&dir, self.log_options())
    }

    fn ensure_directory(&self) -> Result<(), StorageError> {
        if self.directory.is_dir() {
            return Ok(());
        }
        if !self.create_directory {
            return Err(StorageError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "storage directory {} does not exist (create it, or set create_directory: true)",
                    self.directory.display()
                ),
            )));
        }
        make_dir(&self.directory, self.directory_permissions)
    }
}

fn make_dir(dir: &Path, mode: u32) -> Result<(), StorageError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, mode);
    #[cfg(not(unix))]
    let _ = mode;
    builder.create(dir).map_err(StorageError::Io)
}

/// The `file_storage` extension type: its section is checked when loaded, and the
/// directory when the collector starts; the components that name it open their own logs.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileStorageFactory;

impl ExtensionFactory for FileStorageFactory {
    fn kind(&self) -> &'static str {
        "file_storage"
    }
    fn create(&self, section: &Section<'_>) -> Result<Box<dyn Extension>, ConfigError> {
        Ok(Box::new(FileStorageExtension(
            FileStorageConfig::from_section(section)?,
        )))
    }
}

struct FileStorageExtension(FileStorageConfig);

impl Extension for FileStorageExtension {
    fn start(&self, _host: Host) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move { self.0.ensure_directory().map_err(Into::into) })
    }
    fn shutdown(&self, _deadline: tokio::time::Instant) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async { Ok(()) })
    }
}

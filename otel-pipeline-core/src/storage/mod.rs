//! Durable storage for what the pipeline has acknowledged: an append-only **segment log**
//! of checksummed records with group commit, behind the small [`Store`] trait that the
//! persistent sending queue and the tail sampler's journal share (docs/adr/006).
//!
//! - **Records.** Each record is a 16-byte header (magic, length, CRC-32 of kind, length
//!   and payload, kind) and its payload, appended to the active segment file
//!   (`0000000001.seg`, ...). A [`RecordId`] names the segment and offset, so a record is
//!   read back with one positioned read.
//! - **Durability.** [`Store::append`] writes the record with one `write` before it
//!   returns: from then on it survives the process being killed (the page cache holds it).
//!   [`Store::durable`] waits until it also survives power loss, as [`Fsync`] says:
//!   `EveryWrite` syncs before answering (concurrent appends share one `fdatasync`: group
//!   commit), `Interval` syncs in the background, `Never` leaves it to the OS.
//! - **Release.** [`Store::release`] marks records done with a small release record. A
//!   segment file is deleted once every record in it and in every older segment is
//!   released, so disk use shrinks from the oldest end as data leaves; when nothing at all
//!   is held, the active segment is rolled and deleted too.
//! - **Bounds.** `max_bytes` bounds the files on disk: past it, and on a full disk,
//!   `append` refuses with a retryable [`StorageError::Full`] (back-pressure), leaving the
//!   log as it was.
//! - **Recovery.** [`SegmentLog::open`] scans every segment, one record in memory at a
//!   time: a torn last record (a kill mid-write) is truncated and counted; a corrupt
//!   record in the middle is skipped (the scan looks for the next valid header) and
//!   counted, never a panic or a loop. What is still held comes back from
//!   [`Store::recovered`] as ids, read one at a time with [`Store::read`].
//! - **One owner.** A lock file keeps a second process out of the directory.
//!
//! ```
//! use otel_pipeline_core::storage::{Fsync, LogOptions, SegmentLog, Store};
//!
//! let dir = std::env::temp_dir().join(format!("otel-storage-doc-{}", std::process::id()));
//! let _ = std::fs::remove_dir_all(&dir);
//! std::fs::create_dir_all(&dir).unwrap();
//! let options = LogOptions { fsync: Fsync::Never, ..LogOptions::default() };
//! let log = SegmentLog::open(&dir, options.clone()).unwrap();
//! let appended = log.append(1, &[b"a request".as_slice()]).unwrap();
//! drop(log);
//!
//! // After a restart, what was not released comes back.
//! let log = SegmentLog::open(&dir, options).unwrap();
//! let ids = log.recovered();
//! assert_eq!(ids.len(), 1);
//! let record = log.read(ids[0].0).unwrap();
//! assert_eq!(record.payload, b"a request");
//! log.release(&[appended.id]);
//! # drop(log);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::BoxFuture;

#[cfg(feature = "config")]
mod config;
mod inspect;

#[cfg(feature = "config")]
pub use config::{DEFAULT_DIRECTORY, FileStorageConfig, FileStorageFactory};
pub use inspect::{Inspection, SegmentReport, inspect, kind_name};

/// The first four bytes of every record ("OPL1").
const MAGIC: [u8; 4] = *b"OPL1";
/// Header: magic, payload length (u32 LE), CRC-32 (u32 LE), kind, three reserved bytes.
const HEADER: usize = 16;
/// The kind of release records, written by [`Store::release`]. Callers use 1..=255.
pub const KIND_RELEASE: u8 = 0;
/// Segment files end with this.
const SEGMENT_EXT: &str = "seg";
/// The lock file that keeps a second process out.
const LOCK_FILE: &str = "LOCK";

/// When appended records are synced to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Never explicitly: the OS writes back in its own time. Survives a process kill,
    /// not a power loss.
    Never,
    /// Before [`Store::durable`] answers; concurrent appends share one sync.
    EveryWrite,
    /// In the background every interval: a power loss loses at most that much.
    Interval(Duration),
}

/// How a [`SegmentLog`] runs.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The sync policy (default: every second).
    pub fsync: Fsync,
    /// Most bytes of segment files on disk (default 1 GiB). Past it, appends refuse.
    pub max_bytes: u64,
    /// A segment is rolled past this size (default 8 MiB; at most 1 GiB).
    pub segment_bytes: u64,
    /// The largest payload taken or read back (default 64 MiB).
    pub max_record_bytes: usize,
    /// How long [`SegmentLog::open`] waits for another owner of the directory to let go
    /// (the Collector's `timeout`; default 1 s).
    pub lock_timeout: Duration,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            fsync: Fsync::Interval(Duration::from_secs(1)),
            max_bytes: 1 << 30,
            segment_bytes: 8 << 20,
            max_record_bytes: 64 << 20,
            lock_timeout: Duration::from_secs(1),
        }
    }
}

/// Why storage could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No room: `max_bytes` is reached or the disk is full. Retryable: room comes back as
    /// held records are released.
    #[error("storage is full ({0})")]
    Full(String),
    /// A payload larger than `max_record_bytes`.
    #[error("a record of {len} bytes is larger than the storage's limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Another process holds the directory.
    #[error("storage directory {0} is in use by another process")]
    Locked(PathBuf),
    /// A record that does not read back as written.
    #[error("record {0} is corrupt or gone")]
    Corrupt(RecordId),
    /// Reading or writing failed.
    #[error("storage I/O failed: {0}")]
    Io(#[from] io::Error),
}

impl StorageError {
    /// Whether trying again later may succeed (the store is full, or the device failed
    /// for a moment): the caller answers its client with back-pressure.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Full(_) | Self::Io(_))
    }
}

/// A record's place: its segment and offset.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId(u64);

impl RecordId {
    fn new(segment: u32, offset: u64) -> Self {
        Self(((segment as u64) << 32) | (offset & 0xffff_ffff))
    }
    /// The segment's number.
    pub fn segment(self) -> u32 {
        (self.0 >> 32) as u32
    }
    /// The record's offset in its segment.
    pub fn offset(self) -> u64 {
        self.0 & 0xffff_ffff
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.segment(), self.offset())
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// An appended record: its id, and the write to wait on for [`Store::durable`].
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    /// Where it is.
    pub id: RecordId,
    seq: u64,
}

/// A record read back.
#[derive(Debug, Clone)]
pub struct Record {
    /// The kind it was appended with.
    pub kind: u8,
    /// Its bytes.
    pub payload: Vec<u8>,
}

/// What recovery found when the log opened, and what the log has done since: counters
/// an owner publishes as self-telemetry.
#[derive(Debug, Default)]
pub struct StorageStats {
    /// Torn last records truncated at open (a kill mid-write).
    pub torn_records: AtomicU64,
    /// Corrupt stretches skipped at open.
    pub corrupt_records: AtomicU64,
    /// Bytes those stretches held.
    pub corrupt_bytes: AtomicU64,
    /// Appends refused because the store or the disk was full.
    pub full_refusals: AtomicU64,
    /// Bytes of segment files on disk now.
    pub disk_bytes: AtomicU64,
    /// Records held (appended, not released) now.
    pub held_records: AtomicU64,
    /// Records recovered at open.
    pub recovered_records: AtomicU64,
    /// Syncs to the device done.
    pub syncs: AtomicU64,
}

/// Durable records: what the persistent sending queue and the tail sampler's journal
/// need of storage.
pub trait Store: Send + Sync + fmt::Debug {
    /// Append one record of `kind` (1..=255) made of `parts`, written before this returns
    /// (it survives a process kill from then on).
    fn append(&self, kind: u8, parts: &[&[u8]]) -> Result<Appended, StorageError>;
    /// Wait until `appended` survives power loss as far as the [`Fsync`] policy promises.
    fn durable(&self, appended: Appended) -> BoxFuture<'_, Result<(), StorageError>>;
    /// These records are done with: not recovered after a restart.
    fn release(&self, ids: &[RecordId]);
    /// Read a held record back.
    fn read(&self, id: RecordId) -> Result<Record, StorageError>;
    /// The records held when the store opened, oldest first, with their kinds: given to
    /// the first caller (the owner replays them once).
    fn recovered(&self) -> Vec<(RecordId, u8)>;
    /// The store's counters.
    fn stats(&self) -> &StorageStats;
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    file: Arc<File>,
    bytes: u64,
    /// Records in it not yet released.
    held: u64,
}

struct Inner {
    dir: PathBuf,
    segments: BTreeMap<u32, Segment>,
    active: u32,
    /// Bytes of all segment files.
    disk_bytes: u64,
    /// Sequence of the last write.
    written: u64,
    /// Files written since the last sync (sealed segments and the active one).
    dirty: Vec<Arc<File>>,
    /// A segment file was created since the last sync (the directory needs one too).
    new_file: bool,
    recovered: Vec<(RecordId, u8)>,
    closed: bool,
}

/// The segment log (module docs). Cheap to share behind an `Arc`.
pub struct SegmentLog {
    options: LogOptions,
    inner: Mutex<Inner>,
    /// Wakes the sync thread.
    wake: Condvar,
    /// The sequence synced so far.
    synced: tokio::sync::watch::Sender<u64>,
    stats: Arc<StorageStats>,
    sync_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The directory's lock, let go at [`SegmentLog::close`] (or drop).
    lock: Mutex<Option<File>>,
}

impl fmt::Debug for SegmentLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("SegmentLog")
            .field("dir", &inner.dir)
            .field("segments", &inner.segments.len())
            .field("disk_bytes", &inner.disk_bytes)
            .field("fsync", &self.options.fsync)
            .finish()
    }
}

fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:010}.{SEGMENT_EXT}"))
}

/// The segment files in `dir`, by number.
fn segment_numbers(dir: &Path) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".seg")
            && let Ok(n) = stem.parse::<u32>()
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Fill `buf` from `offset` of `file` without moving a shared cursor (records are read
/// while appends go on).
#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

fn crc(kind: u8, len: u32, parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(&len.to_le_bytes());
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

fn header(kind: u8, len: u32, crc: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&MAGIC);
    h[4..8].copy_from_slice(&len.to_le_bytes());
    h[8..12].copy_from_slice(&crc.to_le_bytes());
    h[12] = kind;
    h
}

/// One record found by a scan.
pub(crate) struct Found {
    pub(crate) offset: u64,
    pub(crate) kind: u8,
    pub(crate) len: u32,
}

/// What a scan of one segment found.
#[derive(Default)]
pub(crate) struct Scan {
    pub(crate) records: Vec<Found>,
    /// Corrupt stretches skipped: (offset, bytes).
    pub(crate) corrupt: Vec<(u64, u64)>,
    /// Where valid data ends when the file ends in a partial or invalid record that no
    /// valid record follows.
    pub(crate) torn_at: Option<u64>,
    /// Release records' payloads (ids), read as the scan goes.
    pub(crate) released: Vec<u64>,
}

/// The record at `offset`, if a valid one starts there. `buf` is reused for its payload.
fn record_at(
    file: &File,
    len_file: u64,
    offset: u64,
    max: usize,
    buf: &mut Vec<u8>,
) -> io::Result<Option<(u8, u32)>> {
    if offset + HEADER as u64 > len_file {
        return Ok(None);
    }
    let mut h = [0u8; HEADER];
    read_exact_at(file, &mut h, offset)?;
    if h[..4] != MAGIC {
        return Ok(None);
    }
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let want = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    let kind = h[12];
    if len as usize > max || offset + (HEADER as u64) + len as u64 > len_file {
        return Ok(None);
    }
    buf.clear();
    buf.resize(len as usize, 0);
    read_exact_at(file, buf, offset + HEADER as u64)?;
    if crc(kind, len, &[buf]) != want {
        return Ok(None);
    }
    Ok(Some((kind, len)))
}

/// The next offset after `from` where a valid record starts, searching in bounded
/// windows; `None` when none does.
fn resync(file: &File, len_file: u64, from: u64, max: usize) -> io::Result<Option<u64>> {
    let mut window = vec![0u8; 64 << 10];
    let mut payload = Vec::new();
    let mut pos = from;
    while pos + HEADER as u64 <= len_file {
        let n = ((len_file - pos) as usize).min(window.len());
        read_exact_at(file, &mut window[..n], pos)?;
        let mut i = 0;
        while i + MAGIC.len() <= n {
            if window[i..i + 4] == MAGIC
                && record_at(file, len_file, pos + i as u64, max, &mut payload)?.is_some()
            {
                return Ok(Some(pos + i as u64));
            }
            i += 1;
        }
        // The last three bytes may start a magic cut by the window.
        pos += (n.saturating_sub(MAGIC.len() - 1)).max(1) as u64;
    }
    Ok(None)
}

/// Scan one segment file, one record in memory at a time.
pub(crate) fn scan(file: &File, max: usize) -> io::Result<Scan> {
    let len_file = file.metadata()?.len();
    let mut out = Scan::default();
    let mut buf = Vec::new();
    let mut offset = 0u64;
    while offset < len_file {
        match record_at(file, len_file, offset, max, &mut buf)? {
            Some((kind, len)) => {
                if kind == KIND_RELEASE {
                    out.released.extend(
                        buf.chunks_exact(8)
                            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())),
                    );
                }
                out.records.push(Found { offset, kind, len });
                offset += HEADER as u64 + len as u64;
            }
            None => match resync(file, len_file, offset + 1, max)? {
                Some(next) => {
                    out.corrupt.push((offset, next - offset));
                    offset = next;
                }
                None => {
                    out.torn_at = Some(offset);
                    break;
                }
            },
        }
    }
    Ok(out)
}

fn lock_dir(dir: &Path, timeout: Duration) -> Result<File, StorageError> {
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    let until = std::time::Instant::now() + timeout;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(lock),
            Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(fs::TryLockError::WouldBlock) => return Err(StorageError::Locked(dir.into())),
            Err(fs::TryLockError::Error(e)) => return Err(e.into()),
        }
    }
}

/// Make a new file's directory entry durable (POSIX); Windows has no such call.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

impl SegmentLog {
    /// Open (creating) the log in `dir`: lock it, recover what it holds (module docs), and
    /// start the sync thread the policy needs. The directory must exist.
    pub fn open(dir: &Path, options: LogOptions) -> Result<Self, StorageError> {
        let mut options = options;
        options.segment_bytes = options.segment_bytes.clamp(4096, 1 << 30);
        options.max_record_bytes = options.max_record_bytes.clamp(1, 256 << 20);
        let lock = lock_dir(dir, options.lock_timeout)?;
        let stats = Arc::new(StorageStats::default());
        let numbers = segment_numbers(dir)?;
        let mut segments = BTreeMap::new();
        let mut released: HashSet<u64> = HashSet::new();
        let mut data: Vec<(RecordId, u8)> = Vec::new();
        let last = numbers.last().copied();
        for n in &numbers {
            let path = segment_path(dir, *n);
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let found = scan(&file, options.max_record_bytes)?;
            let mut bytes = file.metadata()?.len();
            if let Some(at) = found.torn_at {
                if Some(*n) == last {
                    // A kill mid-write: cut the partial record so appends never follow it.
                    file.set_len(at)?;
                    file.sync_all()?;
                    bytes = at;
                    stats.torn_records.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.corrupt_records.fetch_add(1, Ordering::Relaxed);
                    stats.corrupt_bytes.fetch_add(bytes - at, Ordering::Relaxed);
                }
            }
            for (_, len) in &found.corrupt {
                stats.corrupt_records.fetch_add(1, Ordering::Relaxed);
                stats.corrupt_bytes.fetch_add(*len, Ordering::Relaxed);
            }
            released.extend(found.released.iter().copied());
            data.extend(
                found
                    .records
                    .iter()
                    .filter(|r| r.kind != KIND_RELEASE)
                    .map(|r| (RecordId::new(*n, r.offset), r.kind)),
            );
            segments.insert(
                *n,
                Segment {
                    file: Arc::new(file),
                    bytes,
                    held: 0,
                },
            );
        }
        data.retain(|(id, _)| !released.contains(&id.0));
        for (id, _) in &data {
            if let Some(s) = segments.get_mut(&id.segment()) {
                s.held += 1;
            }
        }
        // Appends go to a new segment, never after recovered data.
        let active = last.map_or(1, |n| n.wrapping_add(1).max(1));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(segment_path(dir, active))?;
        let active_bytes = file.metadata()?.len();
        segments.insert(
            active,
            Segment {
                file: Arc::new(file),
                bytes: active_bytes,
                held: 0,
            },
        );
        sync_dir(dir)?;
        let disk_bytes = segments.values().map(|s| s.bytes).sum();
        stats
            .recovered_records
            .store(data.len() as u64, Ordering::Relaxed);
        stats
            .held_records
            .store(data.len() as u64, Ordering::Relaxed);
        let (synced, _) = tokio::sync::watch::channel(0);
        let log = Self {
            options,
            inner: Mutex::new(Inner {
                dir: dir.to_path_buf(),
                segments,
                active,
                disk_bytes,
                written: 0,
                dirty: Vec::new(),
                new_file: false,
                recovered: data,
                closed: false,
            }),
            wake: Condvar::new(),
            synced,
            stats,
            sync_thread: Mutex::new(None),
            lock: Mutex::new(Some(lock)),
        };
        {
            let mut inner = log.inner.lock();
            log.delete_released_head(&mut inner);
            log.stats
                .disk_bytes
                .store(inner.disk_bytes, Ordering::Relaxed);
        }
        Ok(log)
    }

    /// Open the log and, for `EveryWrite` and `Interval`, run its sync thread. The log is
    /// shared; dropping the last `Arc` stops the thread after a final sync.
    pub fn open_shared(dir: &Path, options: LogOptions) -> Result<Arc<Self>, StorageError> {
        let log = Arc::new(Self::open(dir, options)?);
        if log.options.fsync != Fsync::Never {
            let weak = Arc::downgrade(&log);
            let handle = std::thread::Builder::new()
                .name("otel-storage-sync".into())
                .spawn(move || sync_loop(&weak))?;
            *log.sync_thread.lock() = Some(handle);
        }
        Ok(log)
    }

    /// The directory.
    pub fn dir(&self) -> PathBuf {
        self.inner.lock().dir.clone()
    }

    /// The options it runs with.
    pub fn options(&self) -> &LogOptions {
        &self.options
    }

    /// Shared counters (for an owner that publishes them).
    pub fn shared_stats(&self) -> Arc<StorageStats> {
        Arc::clone(&self.stats)
    }

    /// Sync everything written so far now, whatever the policy (a graceful stop).
    pub fn sync_now(&self) -> Result<(), StorageError> {
        let (seq, files, new_file, dir) = {
            let mut inner = self.inner.lock();
            let active = inner
                .segments
                .get(&inner.active)
                .map(|s| Arc::clone(&s.file));
            let mut files = std::mem::take(&mut inner.dirty);
            files.extend(active);
            (
                inner.written,
                files,
                std::mem::take(&mut inner.new_file),
                inner.dir.clone(),
            )
        };
        for f in files {
            f.sync_data()?;
        }
        if new_file {
            sync_dir(&dir)?;
        }
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        self.synced.send_if_modified(|s| {
            let grew = seq > *s;
            *s = (*s).max(seq);
            grew
        });
        Ok(())
    }

    /// Write one record under the lock; `room` checks `max_bytes` (release records may go
    /// a little past it, so room can always be made).
    fn write(&self, kind: u8, parts: &[&[u8]], room: bool) -> Result<Appended, StorageError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > self.options.max_record_bytes {
            return Err(StorageError::TooLarge {
                len,
                max: self.options.max_record_bytes,
            });
        }
        let total = (HEADER + len) as u64;
        let mut inner = self.inner.lock();
        if inner.closed {
            return Err(StorageError::Io(io::Error::other("storage is closed")));
        }
        if room && inner.disk_bytes + total > self.options.max_bytes {
            self.stats.full_refusals.fetch_add(1, Ordering::Relaxed);
            return Err(StorageError::Full(format!(
                "{} of max_bytes {} on disk",
                inner.disk_bytes, self.options.max_bytes
            )));
        }
        let active_bytes = inner.segments.get(&inner.active).map_or(0, |s| s.bytes);
        if active_bytes > 0 && active_bytes + total > self.options.segment_bytes {
            self.roll(&mut inner)?;
        }
        let active = inner.active;
        let seg = inner
            .segments
            .get_mut(&active)
            .ok_or_else(|| io::Error::other("active segment missing"))?;
        let offset = seg.bytes;
        let mut record = Vec::with_capacity(HEADER + len);
        record.extend_from_slice(&header(kind, len as u32, crc(kind, len as u32, parts)));
        for p in parts {
            record.extend_from_slice(p);
        }
        if let Err(e) = (&*seg.file).write_all(&record) {
            // Leave the log as it was: cut whatever part of the record got written.
            let _ = seg.file.set_len(offset);
            if is_no_space(&e) {
                self.stats.full_refusals.fetch_add(1, Ordering::Relaxed);
                return Err(StorageError::Full(format!("the disk is full: {e}")));
            }
            return Err(e.into());
        }
        seg.bytes += total;
        if kind != KIND_RELEASE {
            seg.held += 1;
            self.stats.held_records.fetch_add(1, Ordering::Relaxed);
        }
        inner.disk_bytes += total;
        inner.written += 1;
        self.stats
            .disk_bytes
            .store(inner.disk_bytes, Ordering::Relaxed);
        let seq = inner.written;
        drop(inner);
        if self.options.fsync == Fsync::EveryWrite {
            self.wake.notify_one();
        }
        Ok(Appended {
            id: RecordId::new(active, offset),
            seq,
        })
    }

    /// Start a new active segment; the old one is synced by the next sync.
    fn roll(&self, inner: &mut Inner) -> Result<(), StorageError> {
        let next = inner.active.wrapping_add(1).max(1);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(segment_path(&inner.dir, next))?;
        if let Some(old) = inner.segments.get(&inner.active) {
            let old = Arc::clone(&old.file);
            inner.dirty.push(old);
        }
        inner.segments.insert(
            next,
            Segment {
                file: Arc::new(file),
                bytes: 0,
                held: 0,
            },
        );
        inner.active = next;
        inner.new_file = true;
        Ok(())
    }

    /// Delete the oldest segments while every record in them is released; when nothing
    /// is held at all and the active segment has grown, roll it and delete it too.
    fn delete_released_head(&self, inner: &mut Inner) {
        let everything_released = inner.segments.values().all(|s| s.held == 0);
        if everything_released
            && inner.segments.get(&inner.active).map_or(0, |s| s.bytes) >= (64 << 10)
        {
            let _ = self.roll(inner);
        }
        // Empty sealed segments (one per restart that wrote nothing) hold no release
        // records either: they go wherever they are.
        let empty: Vec<u32> = inner
            .segments
            .iter()
            .filter(|(n, s)| **n != inner.active && s.bytes == 0)
            .map(|(n, _)| *n)
            .collect();
        for n in empty {
            if fs::remove_file(segment_path(&inner.dir, n)).is_ok() {
                inner.segments.remove(&n);
            }
        }
        while let Some((&n, seg)) = inner.segments.iter().next() {
            if n == inner.active || seg.held > 0 {
                break;
            }
            let bytes = seg.bytes;
            if fs::remove_file(segment_path(&inner.dir, n)).is_err() {
                break;
            }
            inner.segments.remove(&n);
            inner.disk_bytes = inner.disk_bytes.saturating_sub(bytes);
        }
        self.stats
            .disk_bytes
            .store(inner.disk_bytes, Ordering::Relaxed);
    }

    /// Stop: sync what was written, refuse further appends, and let go of the directory
    /// (another owner may open it now).
    pub fn close(&self) -> Result<(), StorageError> {
        let r = self.sync_now();
        self.inner.lock().closed = true;
        self.lock.lock().take();
        self.wake.notify_all();
        if let Some(handle) = self.sync_thread.lock().take()
            && handle.thread().id() != std::thread::current().id()
        {
            let _ = handle.join();
        }
        r
    }
}

impl Drop for SegmentLog {
    fn drop(&mut self) {
        let _ = self.sync_now();
    }
}

/// The sync thread: `EveryWrite` syncs as soon as there is something new (appends that
/// arrive during a sync share the next one); `Interval` syncs on the interval.
fn sync_loop(log: &std::sync::Weak<SegmentLog>) {
    loop {
        let Some(l) = log.upgrade() else { return };
        {
            let mut inner = l.inner.lock();
            if inner.closed {
                return;
            }
            match l.options.fsync {
                Fsync::EveryWrite => {
                    if inner.written <= *l.synced.borrow() {
                        l.wake.wait_for(&mut inner, Duration::from_millis(200));
                    }
                }
                Fsync::Interval(every) => {
                    l.wake
                        .wait_for(&mut inner, every.max(Duration::from_millis(1)));
                }
                Fsync::Never => return,
            }
            if inner.closed {
                return;
            }
            if inner.written <= *l.synced.borrow() {
                continue;
            }
        }
        if let Err(e) = l.sync_now() {
            tracing::error!(error = %e, "storage: sync failed; retrying");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Store for SegmentLog {
    fn append(&self, kind: u8, parts: &[&[u8]]) -> Result<Appended, StorageError> {
        let kind = kind.max(1);
        self.write(kind, parts, true)
    }

    fn durable(&self, appended: Appended) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            if self.options.fsync != Fsync::EveryWrite {
                return Ok(());
            }
            let mut rx = self.synced.subscribe();
            let running = self.sync_thread.lock().is_some();
            if !running {
                // Opened without its thread (`open`): sync here.
                return self.sync_now();
            }
            rx.wait_for(|s| *s >= appended.seq)
                .await
                .map(|_| ())
                .map_err(|_| StorageError::Io(io::Error::other("storage is closed")))
        })
    }

    fn release(&self, ids: &[RecordId]) {
        if ids.is_empty() {
            return;
        }
        let payload: Vec<u8> = ids.iter().flat_map(|id| id.0.to_le_bytes()).collect();
        // A lost release record only means the record comes back after a restart.
        for chunk in payload.chunks(self.options.max_record_bytes & !7) {
            let _ = self.write(KIND_RELEASE, &[chunk], false);
        }
        let mut inner = self.inner.lock();
        for id in ids {
            if let Some(s) = inner.segments.get_mut(&id.segment())
                && s.held > 0
            {
                s.held -= 1;
                self.stats.held_records.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.delete_released_head(&mut inner);
    }

    fn read(&self, id: RecordId) -> Result<Record, StorageError> {
        let file = {
            let inner = self.inner.lock();
            inner
                .segments
                .get(&id.segment())
                .map(|s| (Arc::clone(&s.file), s.bytes))
        };
        let Some((file, len)) = file else {
            return Err(StorageError::Corrupt(id));
        };
        let mut buf = Vec::new();
        match record_at(
            &file,
            len,
            id.offset(),
            self.options.max_record_bytes,
            &mut buf,
        )? {
            Some((kind, _)) if kind != KIND_RELEASE => Ok(Record { kind, payload: buf }),
            _ => Err(StorageError::Corrupt(id)),
        }
    }

    fn recovered(&self) -> Vec<(RecordId, u8)> {
        std::mem::take(&mut self.inner.lock().recovered)
    }

    fn stats(&self) -> &StorageStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests;

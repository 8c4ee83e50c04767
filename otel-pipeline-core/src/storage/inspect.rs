//! A read-only look into a storage directory, for an operator (`collector storage inspect
//! DIR`): segments, records by kind, what is still held, and what is corrupt.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::{HEADER, KIND_RELEASE, RecordId, StorageError, scan, segment_numbers, segment_path};

/// One segment file as [`inspect`] found it.
#[derive(Debug, Clone, Default)]
pub struct SegmentReport {
    /// Its file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Valid records by kind (0 is release records).
    pub records: BTreeMap<u8, u64>,
    /// Records not released (by kind): what a restart would recover.
    pub held: BTreeMap<u8, u64>,
    /// Bytes in held records.
    pub held_bytes: u64,
    /// Corrupt stretches: (offset, bytes).
    pub corrupt: Vec<(u64, u64)>,
    /// Where a torn or invalid tail starts (truncated at the next open if this is the
    /// newest segment).
    pub torn_at: Option<u64>,
}

/// A storage directory, as [`inspect`] found it.
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    /// The directory.
    pub dir: PathBuf,
    /// Its segments, oldest first.
    pub segments: Vec<SegmentReport>,
}

impl Inspection {
    /// Records held in all segments.
    pub fn held(&self) -> u64 {
        self.segments.iter().flat_map(|s| s.held.values()).sum()
    }
    /// Corrupt stretches in the middle of segments, and invalid tails of segments other
    /// than the newest (data a restart will skip).
    pub fn corrupt(&self) -> usize {
        let last = self.segments.len().saturating_sub(1);
        self.segments
            .iter()
            .enumerate()
            .map(|(i, s)| s.corrupt.len() + usize::from(i != last && s.torn_at.is_some()))
            .sum()
    }

    /// Whether the newest segment ends in a torn record (a kill mid-write; the next open
    /// truncates it, losing only that unacknowledged record).
    pub fn torn(&self) -> bool {
        self.segments.last().is_some_and(|s| s.torn_at.is_some())
    }
    /// Bytes of all segment files.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "storage {}", self.dir.display())?;
        writeln!(
            f,
            "  {} segments, {} bytes on disk, {} records held, {} corrupt stretches{}",
            self.segments.len(),
            self.bytes(),
            self.held(),
            self.corrupt(),
            if self.torn() {
                ", a torn last record"
            } else {
                ""
            }
        )?;
        for s in &self.segments {
            let name = s.path.file_name().unwrap_or_default().to_string_lossy();
            let records: Vec<String> = s
                .records
                .iter()
                .map(|(k, n)| format!("{}={n}", kind_name(*k)))
                .collect();
            let held: Vec<String> = s
                .held
                .iter()
                .map(|(k, n)| format!("{}={n}", kind_name(*k)))
                .collect();
            writeln!(
                f,
                "  {name}: {} bytes; records [{}]; held [{}] ({} bytes)",
                s.bytes,
                records.join(" "),
                held.join(" "),
                s.held_bytes
            )?;
            for (offset, len) in &s.corrupt {
                writeln!(f, "    corrupt: {len} bytes at offset {offset} (skipped)")?;
            }
            if let Some(at) = s.torn_at {
                writeln!(
                    f,
                    "    torn or invalid tail from offset {at} ({} bytes)",
                    s.bytes - at
                )?;
            }
        }
        Ok(())
    }
}

/// Names of the record kinds the crates write.
pub fn kind_name(kind: u8) -> String {
    match kind {
        KIND_RELEASE => "release".into(),
        1 => "queue-request".into(),
        2 => "sampler-spans".into(),
        3 => "sampler-decision".into(),
        k => format!("kind{k}"),
    }
}

/// Look into `dir` without changing it (no lock is taken: it may be read while its owner
/// runs, and then shows a moment of it).
pub fn inspect(dir: &Path, max_record_bytes: usize) -> Result<Inspection, StorageError> {
    let mut segments = Vec::new();
    let mut released = HashSet::new();
    let mut found = Vec::new();
    for n in segment_numbers(dir)? {
        let path = segment_path(dir, n);
        let file = File::open(&path)?;
        let bytes = file.metadata()?.len();
        let s = scan(&file, max_record_bytes.max(1))?;
        released.extend(s.released.iter().copied());
        found.push((n, path, bytes, s));
    }
    for (n, path, bytes, s) in found {
        let mut report = SegmentReport {
            path,
            bytes,
            corrupt: s.corrupt.clone(),
            torn_at: s.torn_at,
            ..SegmentReport::default()
        };
        for r in &s.records {
            *report.records.entry(r.kind).or_default() += 1;
            if r.kind != KIND_RELEASE && !released.contains(&RecordId::new(n, r.offset).0) {
                *report.held.entry(r.kind).or_default() += 1;
                report.held_bytes += HEADER as u64 + r.len as u64;
            }
        }
        segments.push(report);
    }
    Ok(Inspection {
        dir: dir.to_path_buf(),
        segments,
    })
}

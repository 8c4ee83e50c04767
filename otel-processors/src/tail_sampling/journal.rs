//! The tail sampler's journal (`storage`, a `file_storage` extension): what the sampler
//! holds survives a crash.
//!
//! - **Spans.** Each accepted request is appended (with its arrival time) and synced as
//!   the extension's `fsync` says before `consume` answers. The journal tracks, per
//!   record, the traces in it not yet resolved; a trace is resolved when it is decided
//!   (and its kept spans were handed to the next stage), handed off to a peer, or taken
//!   as a late span. A record is released once every trace in it is resolved, so a
//!   segment goes once all its traces are decided.
//! - **Decisions.** After each delivery a shard appends the decisions it made, so late
//!   spans that arrive after a restart follow them. Decision records are released after
//!   twice `decision_wait` (at least 5 s), which bounds the disk to a few decision
//!   windows of traffic.
//! - **Replay.** At start, before any receiver runs, decisions come back into the
//!   decision caches, then the spans records, one at a time, with their arrival times:
//!   traces past `decision_wait` are decided at once on all their spans; spans of traces
//!   decided before the crash are skipped (they were delivered then).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ahash::{AHashMap, AHashSet};
use otel_pipeline_core::ComponentTelemetry;
use otel_pipeline_core::storage::{
    FileStorageConfig, RecordId, SegmentLog, StorageError, StorageStats, Store,
};
use otel_pipeline_core::telemetry::{Counter, Gauge, Instrument};
use parking_lot::Mutex;

/// A received request.
pub(crate) const KIND_SPANS: u8 = 2;
/// Decisions made.
pub(crate) const KIND_DECISIONS: u8 = 3;

const JOURNAL_BYTES: Instrument = Instrument::gauge(
    "otelcol_processor_tail_sampling_journal_bytes",
    "By",
    "Bytes of the tail sampler's journal on disk.",
);
/// By `event`: `recovered_requests`, `recovered_decisions`, `torn`, `corrupt`, `full`,
/// `unreadable`, `skipped_decided_spans`.
const JOURNAL_EVENTS: Instrument = Instrument::counter(
    "otelcol_processor_tail_sampling_journal_events",
    "{records}",
    "Tail sampler journal events: requests and decisions recovered at start, torn or corrupt records skipped, appends refused as full, records unreadable at replay, replayed spans of traces decided before the crash.",
);

/// Indexes into [`Journal::events`].
pub(crate) mod event {
    pub(crate) const RECOVERED_REQUESTS: usize = 0;
    pub(crate) const RECOVERED_DECISIONS: usize = 1;
    pub(crate) const TORN: usize = 2;
    pub(crate) const CORRUPT: usize = 3;
    pub(crate) const FULL: usize = 4;
    pub(crate) const UNREADABLE: usize = 5;
    pub(crate) const SKIPPED: usize = 6;
}

/// The journal of one sampler.
pub(crate) struct Journal {
    pub(crate) log: Arc<SegmentLog>,
    stats: Arc<StorageStats>,
    /// Per spans record: its traces not resolved yet.
    pending: Mutex<AHashMap<RecordId, AHashSet<u128>>>,
    /// Decision records, oldest first, with when they were written.
    decisions: Mutex<VecDeque<(std::time::Instant, RecordId)>>,
    keep_decisions: Duration,
    pub(crate) events: [Counter; 7],
    bytes: Gauge,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("log", &self.log).finish()
    }
}

impl Journal {
    /// Open `owner`'s journal under `storage` (blocking).
    pub(crate) fn open(
        storage: &FileStorageConfig,
        owner: &str,
        decision_wait: Duration,
        telemetry: &ComponentTelemetry,
    ) -> Result<Self, StorageError> {
        let log = storage.open(owner)?;
        let events = [
            "recovered_requests",
            "recovered_decisions",
            "torn",
            "corrupt",
            "full",
            "unreadable",
            "skipped_decided_spans",
        ]
        .map(|e| telemetry.counter(&JOURNAL_EVENTS, &[("event", e)]));
        let stats = log.shared_stats();
        events[event::TORN].add(
            stats
                .torn_records
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        events[event::CORRUPT].add(
            stats
                .corrupt_records
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        let j = Self {
            log,
            stats,
            pending: Mutex::default(),
            decisions: Mutex::default(),
            keep_decisions: (decision_wait * 2).max(Duration::from_secs(5)),
            events,
            bytes: telemetry.gauge(&JOURNAL_BYTES, &[]),
        };
        j.update();
        Ok(j)
    }

    fn update(&self) {
        self.bytes.set(
            self.stats
                .disk_bytes
                .load(std::sync::atomic::Ordering::Relaxed) as i64,
        );
    }

    /// Append a received request (`trusted`: from a peer whose hand-off markers count),
    /// durable as the policy says before this returns.
    pub(crate) async fn append_spans(
        &self,
        request: &[u8],
        trusted: bool,
    ) -> Result<RecordId, StorageError> {
        let arrival = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let appended = self
            .log
            .append(
                KIND_SPANS,
                &[&[1 + u8::from(trusted)], &arrival.to_le_bytes(), request],
            )
            .inspect_err(|e| {
                if matches!(e, StorageError::Full(_)) {
                    self.events[event::FULL].add(1);
                }
            })?;
        if let Err(e) = self.log.durable(appended).await {
            self.log.release(&[appended.id]);
            return Err(e);
        }
        self.update();
        Ok(appended.id)
    }

    /// The traces record `id` holds; released at once when it holds none.
    pub(crate) fn register(&self, id: RecordId, traces: AHashSet<u128>) {
        if traces.is_empty() {
            self.log.release(&[id]);
            return;
        }
        self.pending.lock().insert(id, traces);
    }

    /// A shard delivered what it decided: append its decisions, then resolve the traces
    /// (a record whose traces are all resolved is released), and let old decision
    /// records go.
    pub(crate) fn commit(&self, decisions: &[(u128, bool)], resolved: &[(RecordId, u128)]) {
        if !decisions.is_empty() {
            let mut payload = Vec::with_capacity(1 + decisions.len() * 17);
            payload.push(1u8);
            for (id, keep) in decisions {
                payload.extend_from_slice(&id.to_le_bytes());
                payload.push(u8::from(*keep));
            }
            // A decision that cannot be written only means a late span after a crash is
            // decided anew; the spans themselves are still released below.
            if let Ok(a) = self.log.append(KIND_DECISIONS, &[&payload]) {
                self.decisions
                    .lock()
                    .push_back((std::time::Instant::now(), a.id));
            }
        }
        let mut done = Vec::new();
        if !resolved.is_empty() {
            let mut pending = self.pending.lock();
            for (record, trace) in resolved {
                if let Some(set) = pending.get_mut(record) {
                    set.remove(trace);
                    if set.is_empty() {
                        pending.remove(record);
                        done.push(*record);
                    }
                }
            }
        }
        {
            let now = std::time::Instant::now();
            let mut d = self.decisions.lock();
            while d
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > self.keep_decisions)
            {
                if let Some((_, id)) = d.pop_front() {
                    done.push(id);
                }
            }
        }
        if !done.is_empty() {
            self.log.release(&done);
            self.update();
        }
    }

    /// A recovered decision record, kept like a new one.
    pub(crate) fn keep_recovered_decisions(&self, id: RecordId) {
        self.decisions
            .lock()
            .push_back((std::time::Instant::now(), id));
    }

    /// Stop: sync and let go of the directory.
    pub(crate) fn close(&self) {
        let _ = self.log.close();
        self.update();
    }
}

/// A spans record read back: its arrival time, whether its hand-off markers count, and
/// the request.
pub(crate) fn parse_spans(payload: &[u8]) -> Option<(SystemTime, bool, &[u8])> {
    let trusted = match payload.first()? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let nanos = u64::from_le_bytes(payload.get(1..9)?.try_into().ok()?);
    Some((
        UNIX_EPOCH + Duration::from_nanos(nanos),
        trusted,
        &payload[9..],
    ))
}

/// A decision record read back.
pub(crate) fn parse_decisions(payload: &[u8]) -> Option<Vec<(u128, bool)>> {
    let rest = payload.strip_prefix(&[1])?;
    if rest.len() % 17 != 0 {
        return None;
    }
    Some(
        rest.chunks_exact(17)
            .map(|c| {
                let mut id = [0u8; 16];
                id.copy_from_slice(&c[..16]);
                (u128::from_le_bytes(id), c[16] != 0)
            })
            .collect(),
    )
}

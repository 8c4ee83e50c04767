//! The OTLP exporter's sending queue, holding requests **encoded**: each batch is encoded
//! (and for HTTP, compressed) once, by the caller, before it waits; the workers send the
//! bytes and resend the same bytes on retry.
//!
//! A decoded batch takes three to four times its encoded size in memory, so a queue of
//! decoded batches bounded by encoded bytes held several times its bound. Here the bound
//! (`max_bytes`) is what the queue holds. A batch is only decoded again if a trace router
//! takes it back from a departing endpoint (rare, and never on the hot path).
//!
//! With `storage` (a `file_storage` extension), the queue is **persistent**: each request
//! is appended to a segment log, and synced as the extension's `fsync` says, before
//! `consume` answers; it is released once the backend took it or it failed for good, so
//! what a crash leaves is sent after the restart (at least once, in order). The log is
//! opened and replayed when the queue starts, before any receiver takes data, so the
//! collector is not ready until the replay is done; replayed requests are held as their
//! place on disk and read when a worker takes them, so a replay never loads the backlog
//! into memory. A request the memory bound has no room for is held on disk only.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use otel_pipeline_core::otlp::WireSignal;
use otel_pipeline_core::queue::{join_until, next_queued, queue_outcome};
use otel_pipeline_core::storage::{RecordId, SegmentLog, StorageStats, Store};
use otel_pipeline_core::telemetry::{Counter, Gauge, Instrument};
use otel_pipeline_core::{
    Batch, BoxError, BoxFuture, ComponentTelemetry, ConsumeError, Consumer, Lifecycle, Signal,
};
use parking_lot::Mutex;
use std::sync::OnceLock;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{KEPT_ON_DISK, OtlpSender, SendingQueueConfig};

/// The record kind of a queued request.
const KIND_REQUEST: u8 = 1;

/// Bytes of the queue's storage files on disk.
const STORAGE_BYTES: Instrument = Instrument::gauge(
    "otelcol_exporter_storage_bytes",
    "By",
    "Bytes of the persistent sending queue's files on disk.",
);
/// Requests held in storage.
const STORAGE_RECORDS: Instrument = Instrument::gauge(
    "otelcol_exporter_storage_records",
    "{requests}",
    "Requests the persistent sending queue holds on disk.",
);
/// What storage found and did, by `event`: `recovered`, `torn`, `corrupt`, `full`,
/// `unreadable`, `kept_at_shutdown`.
const STORAGE_EVENTS: Instrument = Instrument::counter(
    "otelcol_exporter_storage_events",
    "{records}",
    "Persistent sending queue records by event: recovered at start, torn or corrupt records skipped, appends refused as full, records unreadable when sent, requests kept on disk at shutdown.",
);

/// One encoded request waiting, with the room it takes.
struct Item {
    /// The request, unless it is held on disk only.
    body: Option<Bytes>,
    /// Its record, with a persistent queue.
    record: Option<RecordId>,
    items: usize,
    /// Headers of this request alone (`headers_setter`).
    extra: Option<Arc<http::HeaderMap>>,
    _permits: Permits,
}

/// The room one queued request takes: a request (when the queue counts them), its items
/// and its bytes.
type Permits = (
    Option<OwnedSemaphorePermit>,
    Option<OwnedSemaphorePermit>,
    Option<OwnedSemaphorePermit>,
);

/// A persistent queue's log, opened when the queue starts, and its metrics.
struct Persisted {
    log: Arc<SegmentLog>,
    stats: Arc<StorageStats>,
    bytes: Gauge,
    records: Gauge,
    events: [Counter; 6],
}

impl Persisted {
    const RECOVERED: usize = 0;
    const TORN: usize = 1;
    const CORRUPT: usize = 2;
    const FULL: usize = 3;
    const UNREADABLE: usize = 4;
    const KEPT: usize = 5;

    fn new(log: Arc<SegmentLog>, telemetry: &ComponentTelemetry) -> Self {
        let events = [
            "recovered",
            "torn",
            "corrupt",
            "full",
            "unreadable",
            "kept_at_shutdown",
        ]
        .map(|e| telemetry.counter(&STORAGE_EVENTS, &[("event", e)]));
        let stats = log.shared_stats();
        events[Self::TORN].add(stats.torn_records.load(Ordering::Relaxed));
        events[Self::CORRUPT].add(stats.corrupt_records.load(Ordering::Relaxed));
        let p = Self {
            stats,
            bytes: telemetry.gauge(&STORAGE_BYTES, &[]),
            records: telemetry.gauge(&STORAGE_RECORDS, &[]),
            events,
            log,
        };
        p.update();
        p
    }

    fn update(&self) {
        self.bytes
            .set(self.stats.disk_bytes.load(Ordering::Relaxed) as i64);
        self.records
            .set(self.stats.held_records.load(Ordering::Relaxed) as i64);
    }

    fn release(&self, id: RecordId) {
        self.log.release(&[id]);
        self.update();
    }
}

/// A queued request's record: items, its own headers, then the body.
fn record_head(items: usize, extra: Option<&http::HeaderMap>) -> Vec<u8> {
    let mut head = vec![1u8];
    head.extend_from_slice(&(items.min(u32::MAX as usize) as u32).to_le_bytes());
    let headers: Vec<_> = extra
        .map(|h| {
            h.iter()
                .filter(|(k, v)| {
                    k.as_str().len() <= u16::MAX as usize && v.len() <= u16::MAX as usize
                })
                .take(u16::MAX as usize)
                .collect()
        })
        .unwrap_or_default();
    head.extend_from_slice(&(headers.len() as u16).to_le_bytes());
    for (k, v) in headers {
        head.extend_from_slice(&(k.as_str().len() as u16).to_le_bytes());
        head.extend_from_slice(k.as_str().as_bytes());
        head.extend_from_slice(&(v.len() as u16).to_le_bytes());
        head.extend_from_slice(v.as_bytes());
    }
    head
}

/// Read a record back: items, headers (`None` when it had none), and where the body
/// starts.
fn parse_record(p: &[u8]) -> Option<(usize, Option<Arc<http::HeaderMap>>, usize)> {
    fn take<'a>(p: &'a [u8], at: &mut usize, n: usize) -> Option<&'a [u8]> {
        let s = p.get(*at..*at + n)?;
        *at += n;
        Some(s)
    }
    let mut at = 0;
    if take(p, &mut at, 1)? != [1] {
        return None;
    }
    let items = u32::from_le_bytes(take(p, &mut at, 4)?.try_into().ok()?) as usize;
    let n = u16::from_le_bytes(take(p, &mut at, 2)?.try_into().ok()?);
    let mut headers = http::HeaderMap::new();
    for _ in 0..n {
        let kl = u16::from_le_bytes(take(p, &mut at, 2)?.try_into().ok()?) as usize;
        let k = http::HeaderName::from_bytes(take(p, &mut at, kl)?).ok()?;
        let vl = u16::from_le_bytes(take(p, &mut at, 2)?.try_into().ok()?) as usize;
        let v = http::HeaderValue::from_bytes(take(p, &mut at, vl)?).ok()?;
        headers.append(k, v);
    }
    let extra = (n > 0).then(|| Arc::new(headers));
    Some((items, extra, at))
}

struct Shared<S: Signal> {
    sender: Arc<OtlpSender<S>>,
    tx: mpsc::UnboundedSender<Item>,
    requests: Option<Arc<Semaphore>>,
    items: Arc<Semaphore>,
    bytes: Option<Arc<Semaphore>>,
    /// Items accepted and not yet sent, failed or dropped.
    held: AtomicUsize,
    config: SendingQueueConfig,
    telemetry: Arc<ComponentTelemetry>,
    /// The log, once the queue started with storage.
    persisted: OnceLock<Persisted>,
}

impl<S: Signal> Shared<S> {
    fn release(&self, items: usize) {
        let left = self.held.fetch_sub(items, Ordering::AcqRel) - items;
        self.telemetry.set_queue_size(left);
    }

    /// Hand `batch` back, counted as not enqueued.
    fn refuse(&self, batch: Batch<S>, items: usize, reason: &'static str) -> ConsumeError<S> {
        self.telemetry.add_enqueue_failed(items);
        ConsumeError::refused(batch, reason)
    }

    /// Take `n` permits of `sem`, or say why not.
    async fn acquire(
        &self,
        sem: &Arc<Semaphore>,
        n: usize,
    ) -> Result<OwnedSemaphorePermit, &'static str> {
        let n = n.min(u32::MAX as usize) as u32;
        if self.config.block_on_overflow {
            return Arc::clone(sem)
                .acquire_many_owned(n)
                .await
                .map_err(|_| "queue is shutting down");
        }
        match Arc::clone(sem).try_acquire_many_owned(n) {
            Ok(p) => Ok(p),
            Err(TryAcquireError::NoPermits) => Err("sending queue is full"),
            Err(TryAcquireError::Closed) => Err("queue is shutting down"),
        }
    }
}

/// The consumer in front of an OTLP exporter's senders when its queue is on.
pub struct EncodedQueue<S: Signal> {
    shared: Arc<Shared<S>>,
}

impl<S: Signal> std::fmt::Debug for EncodedQueue<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedQueue")
            .field("held", &self.shared.held.load(Ordering::Relaxed))
            .field("max_items", &self.shared.config.max_items)
            .field("max_bytes", &self.shared.config.max_bytes)
            .finish()
    }
}

impl<S: WireSignal> EncodedQueue<S> {
    /// A queue in front of `sender`, and the lifecycle that runs its workers.
    pub(crate) fn new(
        sender: OtlpSender<S>,
        config: SendingQueueConfig,
        telemetry: Arc<ComponentTelemetry>,
    ) -> (Self, Arc<dyn Lifecycle>) {
        telemetry.set_queue_capacity(config.max_items);
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            sender: Arc::new(sender),
            tx,
            requests: config.max_requests.map(|r| Arc::new(Semaphore::new(r))),
            items: Arc::new(Semaphore::new(config.max_items)),
            bytes: config.max_bytes.map(|b| Arc::new(Semaphore::new(b))),
            held: AtomicUsize::new(0),
            config,
            telemetry,
            persisted: OnceLock::new(),
        });
        let workers = Workers {
            shared: Arc::clone(&shared),
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
            stop_tx,
            stop_rx,
            tasks: Mutex::new(Vec::new()),
        };
        (Self { shared }, Arc::new(workers))
    }
}

impl<S: WireSignal> Consumer<S> for EncodedQueue<S> {
    async fn consume(&self, batch: Batch<S>) -> Result<(), ConsumeError<S>> {
        let shared = &self.shared;
        let items = batch.item_count();
        let persisted = match (&shared.config.storage, shared.persisted.get()) {
            (None, _) => None,
            (Some(_), Some(p)) => Some(p),
            (Some(_), None) => return Err(shared.refuse(batch, items, "storage is not open yet")),
        };
        let request_permit = match &shared.requests {
            Some(sem) => match shared.acquire(sem, 1).await {
                Ok(p) => Some(p),
                Err(reason) => return Err(shared.refuse(batch, items, reason)),
            },
            None => None,
        };
        let permit = match shared
            .acquire(&shared.items, items.clamp(1, shared.config.max_items))
            .await
        {
            Ok(p) => p,
            Err(reason) => return Err(shared.refuse(batch, items, reason)),
        };
        // Encoded (and compressed) once, here, on the caller's task.
        let body = match shared.sender.encode(&batch) {
            Ok(b) => b,
            Err(reason) => {
                shared.telemetry.add_send_failed(items);
                return Err(ConsumeError::rejected(items, reason));
            }
        };
        let byte_permit = match (&shared.bytes, shared.config.max_bytes) {
            // Persistent: what memory has no room for is held on disk only.
            (Some(sem), Some(limit)) if persisted.is_some() => {
                let n = body.len().clamp(1, limit).min(u32::MAX as usize) as u32;
                Arc::clone(sem).try_acquire_many_owned(n).ok()
            }
            (Some(sem), Some(limit)) => match shared.acquire(sem, body.len().clamp(1, limit)).await
            {
                Ok(p) => Some(p),
                Err(reason) => return Err(shared.refuse(batch, items, reason)),
            },
            _ => None,
        };
        let extra = shared.sender.request_headers(batch.client.as_deref());
        let mut record = None;
        if let Some(p) = persisted {
            let head = record_head(items, extra.as_deref());
            let appended = match p.log.append(KIND_REQUEST, &[&head, &body]) {
                Ok(a) => a,
                Err(e) => {
                    if matches!(e, otel_pipeline_core::storage::StorageError::Full(_)) {
                        p.events[Persisted::FULL].add(1);
                    }
                    return Err(if e.is_retryable() {
                        shared.refuse(batch, items, "persistent queue: storage is full or failing")
                    } else {
                        shared.telemetry.add_enqueue_failed(items);
                        ConsumeError::rejected(items, format!("persistent queue: {e}"))
                    });
                }
            };
            // Acknowledged only once durable as the storage's fsync policy says.
            if let Err(e) = p.log.durable(appended).await {
                p.release(appended.id);
                tracing::warn!(error = %e, "persistent queue: sync failed; the request is refused");
                return Err(shared.refuse(batch, items, "persistent queue: storage sync failed"));
            }
            p.update();
            record = Some(appended.id);
        }
        drop(batch);
        let held = shared.held.fetch_add(items, Ordering::AcqRel) + items;
        let item = Item {
            body: (persisted.is_none() || byte_permit.is_some()).then_some(body),
            record,
            items,
            extra,
            _permits: (request_permit, Some(permit), byte_permit),
        };
        if shared.tx.send(item).is_err() {
            shared.release(items);
            shared.telemetry.add_enqueue_failed(items);
            return Err(ConsumeError::rejected(items, "queue is shutting down"));
        }
        shared.telemetry.set_queue_size(held);
        Ok(())
    }
}

type SharedRx = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Item>>>;

struct Workers<S: Signal> {
    shared: Arc<Shared<S>>,
    rx: SharedRx,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl<S: WireSignal> Workers<S> {
    /// Open the persistent queue's log and queue what it still holds, oldest first,
    /// as places on disk.
    async fn replay(&self) -> Result<(), BoxError> {
        let Some(storage) = self.shared.config.storage.clone() else {
            return Ok(());
        };
        let shared = Arc::clone(&self.shared);
        let queued = tokio::task::spawn_blocking(move || -> Result<(usize, usize), BoxError> {
            let log = storage.storage.open(&storage.owner).map_err(|e| {
                format!(
                    "sending_queue.storage: {}: {e}",
                    storage.storage.owner_dir(&storage.owner).display()
                )
            })?;
            let p = Persisted::new(Arc::clone(&log), &shared.telemetry);
            let (mut requests, mut items) = (0, 0);
            for (id, kind) in log.recovered() {
                let parsed = (kind == KIND_REQUEST)
                    .then(|| log.read(id).ok())
                    .flatten()
                    .and_then(|r| parse_record(&r.payload).map(|(n, extra, _)| (n, extra)));
                let Some((n, extra)) = parsed else {
                    p.events[Persisted::UNREADABLE].add(1);
                    log.release(&[id]);
                    continue;
                };
                shared.held.fetch_add(n, Ordering::AcqRel);
                let item = Item {
                    body: None,
                    record: Some(id),
                    items: n,
                    extra,
                    _permits: (None, None, None),
                };
                if shared.tx.send(item).is_err() {
                    return Err("sending queue closed while replaying".into());
                }
                requests += 1;
                items += n;
            }
            p.events[Persisted::RECOVERED].add(requests as u64);
            p.update();
            let _ = shared.persisted.set(p);
            Ok((requests, items))
        })
        .await
        .map_err(|e| format!("sending_queue.storage: replay failed: {e}"))??;
        if queued.0 > 0 {
            tracing::info!(
                exporter = %self.shared.telemetry.id(),
                requests = queued.0,
                items = queued.1,
                "persistent queue: sending what the last run left on disk"
            );
        }
        self.shared
            .telemetry
            .set_queue_size(self.shared.held.load(Ordering::Acquire));
        Ok(())
    }
}

impl<S: WireSignal> Lifecycle for Workers<S> {
    fn start(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            if !self.tasks.lock().is_empty() {
                return Err("sending queue started twice".into());
            }
            self.replay().await?;
            let mut tasks = self.tasks.lock();
            for _ in 0..self.shared.config.num_consumers.max(1) {
                tasks.push(tokio::spawn(worker(
                    Arc::clone(&self.shared),
                    Arc::clone(&self.rx),
                    self.stop_rx.clone(),
                )));
            }
            Ok(())
        })
    }

    fn shutdown(&self, deadline: Instant) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            self.shared.items.close();
            if let Some(requests) = &self.shared.requests {
                requests.close();
            }
            if let Some(bytes) = &self.shared.bytes {
                bytes.close();
            }
            let _ = self.stop_tx.send(true);
            let tasks = std::mem::take(&mut *self.tasks.lock());
            let timed_out = join_until(tasks, deadline).await;
            if let Some(p) = self.shared.persisted.get() {
                // What is left stays on disk and is sent after the next start: not lost.
                let left = self.shared.held.swap(0, Ordering::AcqRel);
                if left > 0 {
                    p.events[Persisted::KEPT].add(left as u64);
                    tracing::info!(
                        exporter = %self.shared.telemetry.id(),
                        items = left,
                        "persistent queue: unsent requests stay on disk for the next start"
                    );
                }
                self.shared.telemetry.set_queue_size(0);
                let synced = p.log.close();
                p.update();
                synced?;
                return Ok(());
            }
            queue_outcome(&self.shared.held, &self.shared.telemetry, timed_out)
        })
    }
}

async fn worker<S: WireSignal>(
    shared: Arc<Shared<S>>,
    rx: SharedRx,
    mut stop: watch::Receiver<bool>,
) {
    while let Some(Item {
        body,
        record,
        items,
        extra,
        _permits,
    }) = next_queued(&rx, &mut stop).await
    {
        let persisted = shared.persisted.get();
        let body = match (body, record, persisted) {
            (Some(b), _, _) => b,
            (None, Some(id), Some(p)) => {
                let read = p.log.read(id).ok().and_then(|r| {
                    let (_, _, at) = parse_record(&r.payload)?;
                    Some(Bytes::from(r.payload).slice(at..))
                });
                match read {
                    Some(b) => b,
                    None => {
                        p.events[Persisted::UNREADABLE].add(1);
                        shared.telemetry.add_send_failed(items);
                        tracing::error!(record = %id, items, "persistent queue: a record no longer reads back; its items are counted failed");
                        p.release(id);
                        shared.release(items);
                        continue;
                    }
                }
            }
            _ => {
                shared.release(items);
                continue;
            }
        };
        // Failures are counted by the sender (sent, failed, dropped at the deadline).
        let outcome = shared.sender.send_encoded(body, items, extra).await;
        let kept = matches!(&outcome, Err(ConsumeError::Rejected(r)) if r.reason == KEPT_ON_DISK);
        if let (Some(id), Some(p)) = (record, persisted) {
            if kept {
                // Still held (`held` counts it), so shutdown reports it kept.
                continue;
            }
            p.release(id);
        }
        shared.release(items);
    }
}

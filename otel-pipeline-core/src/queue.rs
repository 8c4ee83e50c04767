//! [`BoundedQueue`]: a bounded, counted hand-off between two stages.
//!
//! Put it where a slow stage must not hold up a fast one (typically in front of an
//! exporter). It is bounded by items (spans, points, records), not batches, so its memory
//! is predictable. When it is full it either refuses (the caller gets the batch back and
//! pushes back to its client) or makes the caller wait, as configured. Its workers deliver
//! downstream and retry refusals with exponential backoff; on shutdown they drain what is
//! queued before the deadline and count whatever they had to give up.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::component::{ComponentContext, Lifecycle, Processor};
use crate::consumer::{BoxFuture, ConsumeError, Consumer};
use crate::id::{BoxError, BuildError, ComponentId};
use crate::signal::{Batch, Signal};
use crate::telemetry::{ComponentTelemetry, DropReason};

/// What a full queue does with a new batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Hand the batch back at once as a retryable refusal (the default: receivers turn it
    /// into `RESOURCE_EXHAUSTED` / HTTP 429 so clients back off).
    #[default]
    Refuse,
    /// Make the caller wait until there is room.
    Block,
}

/// Settings of a [`BoundedQueue`].
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// Most items held at once (default 10 000). A batch larger than this takes the whole
    /// queue rather than being refused forever.
    pub capacity: usize,
    /// Most bytes held at once, measured as the batches' protobuf-encoded size (default:
    /// no byte bound). A batch larger than this takes the whole budget.
    pub max_bytes: Option<usize>,
    /// Concurrent deliveries downstream (default 1, which keeps order).
    pub workers: usize,
    /// Behaviour when full (default [`WhenFull::Refuse`]).
    pub when_full: WhenFull,
    /// First wait after a downstream refusal (default 50 ms); doubles up to `retry_max`.
    pub retry_initial: Duration,
    /// Longest wait between retries (default 1 s).
    pub retry_max: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            max_bytes: None,
            workers: 1,
            when_full: WhenFull::Refuse,
            retry_initial: Duration::from_millis(50),
            retry_max: Duration::from_secs(1),
        }
    }
}

/// A bounded queue processor. See the [module docs](self).
///
/// ```
/// use otel_pipeline_core::{BoundedQueue, Pipeline, QueueConfig, WhenFull, testing::InMemoryExporter};
/// let (exporter, _spans) = InMemoryExporter::new();
/// let queue = BoundedQueue::new(QueueConfig { capacity: 2048, when_full: WhenFull::Refuse, ..Default::default() });
/// let pipeline = Pipeline::traces().processor(queue).exporter(exporter).build();
/// assert!(pipeline.is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct BoundedQueue {
    id: ComponentId,
    config: QueueConfig,
}

impl BoundedQueue {
    /// A queue with id `queue`.
    pub fn new(config: QueueConfig) -> Self {
        Self {
            id: ComponentId::new("queue"),
            config,
        }
    }

    /// Give the queue another id (needed for a second queue in one pipeline).
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }
}

impl<S: Signal> Processor<S> for BoundedQueue {
    type Consumer<N: Consumer<S>> = QueueConsumer<S>;

    fn id(&self) -> ComponentId {
        self.id.clone()
    }

    fn build<N: Consumer<S>>(
        self,
        next: N,
        ctx: &mut ComponentContext<'_>,
    ) -> Result<QueueConsumer<S>, BuildError> {
        let c = &self.config;
        if c.capacity == 0 {
            return Err(ctx.invalid("capacity", "must be at least 1"));
        }
        if c.capacity > Semaphore::MAX_PERMITS {
            return Err(ctx.invalid("capacity", "too large"));
        }
        if c.max_bytes == Some(0) || c.max_bytes.is_some_and(|b| b > Semaphore::MAX_PERMITS) {
            return Err(ctx.invalid("max_bytes", "must be between 1 and 2^61"));
        }
        if c.workers == 0 {
            return Err(ctx.invalid("workers", "must be at least 1"));
        }
        if c.retry_initial.is_zero() || c.retry_max < c.retry_initial {
            return Err(ctx.invalid(
                "retry_initial",
                "must be non-zero and no more than retry_max",
            ));
        }
        let telemetry = ctx.telemetry();
        telemetry.set_queue_capacity(c.capacity);
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            tx,
            permits: Arc::new(Semaphore::new(c.capacity)),
            bytes: c.max_bytes.map(|b| Arc::new(Semaphore::new(b))),
            held: AtomicUsize::new(0),
            deadline: Mutex::new(None),
            config: self.config,
            telemetry,
        });
        ctx.register_lifecycle(Arc::new(QueueWorkers {
            shared: Arc::clone(&shared),
            next: Mutex::new(Some(next)),
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
            stop_tx,
            stop_rx,
            tasks: Mutex::new(Vec::new()),
        }));
        Ok(QueueConsumer { shared })
    }
}

struct Item<S: Signal> {
    batch: Batch<S>,
    items: usize,
    _permits: (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>),
}

struct Shared<S: Signal> {
    tx: mpsc::UnboundedSender<Item<S>>,
    permits: Arc<Semaphore>,
    bytes: Option<Arc<Semaphore>>,
    /// Items accepted and not yet delivered or dropped.
    held: AtomicUsize,
    deadline: Mutex<Option<Instant>>,
    config: QueueConfig,
    telemetry: Arc<ComponentTelemetry>,
}

impl<S: Signal> Shared<S> {
    fn release(&self, items: usize) {
        let left = self.held.fetch_sub(items, Ordering::AcqRel) - items;
        self.telemetry.set_queue_size(left);
    }
}

/// The consumer side of a [`BoundedQueue`].
pub struct QueueConsumer<S: Signal> {
    shared: Arc<Shared<S>>,
}

impl<S: Signal> fmt::Debug for QueueConsumer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueConsumer")
            .field("held", &self.shared.held.load(Ordering::Relaxed))
            .field("capacity", &self.shared.config.capacity)
            .finish()
    }
}

impl<S: Signal> Consumer<S> for QueueConsumer<S> {
    async fn consume(&self, batch: Batch<S>) -> Result<(), ConsumeError<S>> {
        let shared = &self.shared;
        let items = batch.item_count();
        let want = items.clamp(1, shared.config.capacity) as u32;
        let permit = match acquire(&shared.permits, want, shared.config.when_full).await {
            Ok(p) => p,
            Err(reason) => return Err(shared.refuse(batch, items, reason)),
        };
        let byte_permit = match &shared.bytes {
            None => None,
            Some(sem) => {
                let size = batch.encoded_len();
                let limit = shared.config.max_bytes.unwrap_or(usize::MAX);
                let want = size.clamp(1, limit).min(u32::MAX as usize) as u32;
                match acquire(sem, want, shared.config.when_full).await {
                    Ok(p) => Some(p),
                    Err(reason) => return Err(shared.refuse(batch, items, reason)),
                }
            }
        };
        let held = shared.held.fetch_add(items, Ordering::AcqRel) + items;
        let item = Item {
            batch,
            items,
            _permits: (permit, byte_permit),
        };
        if let Err(mpsc::error::SendError(item)) = shared.tx.send(item) {
            shared.release(items);
            return Err(shared.refuse(item.batch, items, "queue is shutting down"));
        }
        shared.telemetry.set_queue_size(held);
        Ok(())
    }
}

/// Take `n` permits, or say why not.
async fn acquire(
    sem: &Arc<Semaphore>,
    n: u32,
    when_full: WhenFull,
) -> Result<OwnedSemaphorePermit, &'static str> {
    match when_full {
        WhenFull::Refuse => match Arc::clone(sem).try_acquire_many_owned(n) {
            Ok(p) => Ok(p),
            Err(TryAcquireError::NoPermits) => Err("queue is full"),
            Err(TryAcquireError::Closed) => Err("queue is shutting down"),
        },
        WhenFull::Block => Arc::clone(sem)
            .acquire_many_owned(n)
            .await
            .map_err(|_| "queue is shutting down"),
    }
}

impl<S: Signal> Shared<S> {
    /// Hand `batch` back, counted as not enqueued.
    fn refuse(&self, batch: Batch<S>, items: usize, reason: &'static str) -> ConsumeError<S> {
        self.telemetry.add_enqueue_failed(items);
        ConsumeError::refused(batch, reason)
    }
}

type SharedRx<S> = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Item<S>>>>;

struct QueueWorkers<S: Signal, N> {
    shared: Arc<Shared<S>>,
    next: Mutex<Option<N>>,
    rx: SharedRx<S>,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl<S: Signal, N: Consumer<S>> Lifecycle for QueueWorkers<S, N> {
    fn start(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let next = Arc::new(self.next.lock().take().ok_or("queue started twice")?);
            let mut tasks = self.tasks.lock();
            for _ in 0..self.shared.config.workers {
                tasks.push(tokio::spawn(worker(
                    Arc::clone(&self.shared),
                    Arc::clone(&next),
                    Arc::clone(&self.rx),
                    self.stop_rx.clone(),
                )));
            }
            Ok(())
        })
    }

    fn shutdown(&self, deadline: Instant) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            *self.shared.deadline.lock() = Some(deadline);
            self.shared.permits.close();
            if let Some(bytes) = &self.shared.bytes {
                bytes.close();
            }
            let _ = self.stop_tx.send(true);
            let tasks = std::mem::take(&mut *self.tasks.lock());
            let timed_out = join_until(tasks, deadline).await;
            queue_outcome(&self.shared.held, &self.shared.telemetry, timed_out)
        })
    }
}

/// The end of a queue's shutdown, once its workers have stopped (`timed_out`: some were
/// stopped at the deadline): what it still holds (`held` items) is counted as dropped at
/// the deadline, its size gauge returns to zero, and the outcome says so.
pub fn queue_outcome(
    held: &AtomicUsize,
    telemetry: &ComponentTelemetry,
    timed_out: bool,
) -> Result<(), BoxError> {
    let left = held.swap(0, Ordering::AcqRel);
    if left > 0 {
        telemetry.add_dropped(DropReason::SHUTDOWN_DEADLINE, left);
        telemetry.set_queue_size(0);
    }
    deadline_outcome(timed_out, telemetry)
}

async fn worker<S: Signal, N: Consumer<S>>(
    shared: Arc<Shared<S>>,
    next: Arc<N>,
    rx: SharedRx<S>,
    mut stop: watch::Receiver<bool>,
) {
    while let Some(item) = next_queued(&rx, &mut stop).await {
        deliver(&shared, &*next, item).await;
    }
}

/// The next item for one of the workers that share `rx`. Once `stop` turns true the
/// channel closes: nothing new comes in, and what it holds is still handed out. `None`
/// when it is closed and empty: the worker is done.
pub async fn next_queued<T>(
    rx: &tokio::sync::Mutex<mpsc::UnboundedReceiver<T>>,
    stop: &mut watch::Receiver<bool>,
) -> Option<T> {
    let mut rx = rx.lock().await;
    let stopping = tokio::select! {
        biased;
        item = rx.recv() => Ok(item),
        _ = stop.wait_for(|s| *s) => Err(()),
    };
    match stopping {
        Ok(item) => item,
        Err(()) => {
            rx.close();
            rx.recv().await
        }
    }
}

async fn deliver<S: Signal, N: Consumer<S>>(shared: &Shared<S>, next: &N, item: Item<S>) {
    let Item {
        batch,
        items,
        _permits,
    } = item;
    let redelivery = Redelivery {
        initial: shared.config.retry_initial,
        max: shared.config.retry_max,
    };
    redelivery
        .deliver(next, batch, &shared.deadline, &shared.telemetry)
        .await;
    shared.release(items);
}

/// Wait for a stateful stage's tasks until `deadline`, aborting those still running then.
/// Returns whether any had to be aborted.
pub async fn join_until(tasks: Vec<JoinHandle<()>>, deadline: Instant) -> bool {
    let mut timed_out = false;
    for mut task in tasks {
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            task.abort();
            timed_out = true;
        }
    }
    timed_out
}

/// A stateful stage's two shutdown instants, from the pipeline's `deadline` (when the
/// pipeline abandons a stage that has not finished): when to stop delivering and count what
/// is left (a tenth of the time left before the deadline, at most 50 ms), and when to stop
/// waiting for the stage's own tasks (half that margin before it).
///
/// ```
/// use std::time::Duration;
/// let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
/// let (count_by, join_by) = otel_pipeline_core::queue::stage_deadlines(deadline);
/// assert!(count_by < join_by && join_by < deadline);
/// ```
pub fn stage_deadlines(deadline: Instant) -> (Instant, Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    let margin = (left / 10).min(Duration::from_millis(50));
    (deadline - margin, deadline - margin / 2)
}

/// The result of a stateful stage's shutdown: clean, or an error that says the deadline
/// passed and how many items were dropped for it (they are already counted).
pub fn deadline_outcome(timed_out: bool, telemetry: &ComponentTelemetry) -> Result<(), BoxError> {
    let dropped = telemetry.dropped("shutdown_deadline");
    if timed_out || dropped > 0 {
        return Err(format!(
            "deadline passed before the stage drained; dropped {dropped} items (counted)"
        )
        .into());
    }
    Ok(())
}

/// Hands a batch the caller has already accepted to the next stage, retrying refusals with
/// exponential backoff (or the refusal's `retry_after`) until the next stage takes it, or
/// until a shutdown deadline would pass, when the items are counted as dropped with
/// reason `shutdown_deadline`. For stateful stages (queues, batchers, samplers) that own
/// data and must not lose it quietly.
#[derive(Debug, Clone, Copy)]
pub struct Redelivery {
    /// First wait after a refusal.
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
}

/// How a redelivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// The next stage took the batch.
    Accepted,
    /// The next stage rejected it permanently (and counted that).
    Rejected,
    /// Given up at the shutdown deadline; counted as dropped.
    DroppedAtDeadline,
}

impl Redelivery {
    /// [`Redelivery::deliver`], bounded by shutdown: if the next stage has not taken the
    /// batch when shutdown has begun (`stop` is `true`) and `deadline` has come, because it
    /// hangs, the items are counted as dropped with reason `shutdown_deadline` and the call
    /// returns. A stage whose next stage hangs never loses items quietly.
    pub async fn deliver_until_deadline<S: Signal, N: Consumer<S>>(
        &self,
        next: &N,
        batch: Batch<S>,
        deadline: &Mutex<Option<Instant>>,
        stop: &watch::Receiver<bool>,
        telemetry: &ComponentTelemetry,
    ) -> Delivered {
        let n = batch.item_count();
        let mut stop = stop.clone();
        let passed = async {
            let _ = stop.wait_for(|s| *s).await;
            let at = (*deadline.lock()).unwrap_or_else(Instant::now);
            tokio::time::sleep_until(at).await;
        };
        tokio::select! {
            delivered = self.deliver(next, batch, deadline, telemetry) => delivered,
            _ = passed => {
                telemetry.add_dropped(DropReason::SHUTDOWN_DEADLINE, n);
                Delivered::DroppedAtDeadline
            }
        }
    }

    /// Deliver `batch` to `next`. `deadline` is set when shutdown begins.
    pub async fn deliver<S: Signal, N: Consumer<S>>(
        &self,
        next: &N,
        mut batch: Batch<S>,
        deadline: &Mutex<Option<Instant>>,
        telemetry: &ComponentTelemetry,
    ) -> Delivered {
        let mut backoff = self.initial;
        loop {
            match next.consume(batch).await {
                Ok(()) => return Delivered::Accepted,
                // A rejection was counted by the stage that rejected it.
                Err(ConsumeError::Rejected(_)) => return Delivered::Rejected,
                Err(ConsumeError::Refused(refusal)) => {
                    batch = refusal.batch;
                    let wait = refusal.retry_after.unwrap_or(backoff).min(self.max);
                    let stop = *deadline.lock();
                    if stop.is_some_and(|d| Instant::now() + wait >= d) {
                        telemetry.add_dropped(DropReason::SHUTDOWN_DEADLINE, batch.item_count());
                        return Delivered::DroppedAtDeadline;
                    }
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(self.max);
                }
            }
        }
    }
}

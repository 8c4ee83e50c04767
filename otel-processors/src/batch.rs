//! The `batch` processor: combine small batches and split large ones by item count
//! (spans, metric data points or log records), for every signal.
//!
//! ```yaml
//! batch:
//!   send_batch_size: 8192      # send when this many items are waiting (0: on timeout only)
//!   send_batch_max_size: 10000 # never send more than this in one batch (0: no limit)
//!   timeout: 200ms             # send whatever is waiting after this long (0: at once)
//!   metadata_keys: [tenant]    # batch separately per value of these request headers
//!   metadata_cardinality_limit: 1000
//! ```
//!
//! Resource and scope grouping is preserved: batches are combined by appending their
//! resources, and a split clones the resource and scope of a group it cuts in two (and,
//! for metrics, the metric whose data points it divides).
//! Client information does not survive combining (the combined batch came from several
//! clients), except with `metadata_keys`: then each distinct combination of those
//! metadata values (from receivers with `include_metadata`) is batched apart and keeps its
//! metadata downstream. A new combination past `metadata_cardinality_limit` is rejected,
//! counted with reason `metadata_cardinality_limit`. Waiting items are sent on timeout and on shutdown; a refusal downstream is
//! retried until the shutdown deadline, after which the items are counted as dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use otel_pipeline_core::queue::{Redelivery, deadline_outcome, join_until, stage_deadlines};
use otel_pipeline_core::{
    Batch, BoxError, BoxFuture, BuildError, ComponentContext, ComponentId, ComponentTelemetry,
    ConsumeError, Consumer, DropReason, Lifecycle, Processor, Signal,
};
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;

use crate::config::ConfigError;
use crate::live::LiveRules;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

fn default_size() -> usize {
    8192
}

fn default_timeout() -> Duration {
    Duration::from_millis(200)
}

/// Configuration of the batch processor (defaults as the Collector's).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Send when this many items wait (default 8192).
    #[serde(default = "default_size")]
    pub send_batch_size: usize,
    /// Largest batch sent; 0 for no limit (default 0).
    #[serde(default)]
    pub send_batch_max_size: usize,
    /// Send what waits after this long (default 200 ms).
    #[serde(
        default = "default_timeout",
        deserialize_with = "crate::config::duration"
    )]
    pub timeout: Duration,
    /// Batch separately per distinct values of these client metadata keys (default none).
    #[serde(default)]
    pub metadata_keys: Vec<String>,
    /// Most distinct metadata combinations batched at once (default 1000; 0: no limit).
    #[serde(default = "default_cardinality")]
    pub metadata_cardinality_limit: usize,
}

fn default_cardinality() -> usize {
    1000
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            send_batch_size: default_size(),
            send_batch_max_size: 0,
            timeout: default_timeout(),
            metadata_keys: Vec::new(),
            metadata_cardinality_limit: default_cardinality(),
        }
    }
}

impl BatchConfig {
    /// Check the settings: errors name the setting, as at build.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.send_batch_max_size != 0 && self.send_batch_max_size < self.send_batch_size {
            return Err(ConfigError::new(
                "send_batch_max_size",
                "must be 0 or at least send_batch_size",
            ));
        }
        Ok(())
    }
}

/// The sizes and timeout a running batcher reads before each decision.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Send at this many items (`usize::MAX`: on timeout only).
    size: usize,
    /// Never more than this many (`usize::MAX`: no limit).
    max: usize,
    timeout: Duration,
}

impl Sizes {
    fn of(c: &BatchConfig) -> Self {
        let unbounded = |n: usize| if n == 0 { usize::MAX } else { n };
        Self {
            size: unbounded(c.send_batch_size),
            max: unbounded(c.send_batch_max_size),
            timeout: c.timeout,
        }
    }
}

/// The batch processor.
#[derive(Debug, Clone)]
pub struct BatchProcessor {
    id: ComponentId,
    config: BatchConfig,
    live: Arc<LiveRules<Sizes>>,
}

/// Changes a built batcher's `send_batch_size`, `send_batch_max_size` and `timeout`
/// while it runs: [`BatchProcessor::handle`]. What waits is sent by the new sizes from
/// the next item on.
#[derive(Debug, Clone)]
pub struct BatchHandle(Arc<LiveRules<Sizes>>);

impl BatchHandle {
    /// Batch by the sizes and timeout of `config` from now on (`metadata_keys` and its
    /// limit keep the values the batcher was built with). An invalid configuration is
    /// refused with the error of a build, and the running sizes stay.
    pub fn update(&self, config: &BatchConfig) -> Result<(), ConfigError> {
        config.validate()?;
        if self.0.replace(Sizes::of(config)) {
            Ok(())
        } else {
            Err(ConfigError::new(
                "",
                "the batch processor is not built yet: nothing to update",
            ))
        }
    }
}

impl BatchProcessor {
    /// A batcher with id `batch`.
    pub fn new(config: BatchConfig) -> Self {
        Self {
            id: ComponentId::new("batch"),
            config,
            live: Arc::default(),
        }
    }

    /// A handle that changes the built batcher's sizes in place.
    pub fn handle(&self) -> BatchHandle {
        BatchHandle(Arc::clone(&self.live))
    }

    /// Use another id.
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }
}

struct Worker<S: Signal, N> {
    next: Mutex<Option<N>>,
    rx: Mutex<Option<mpsc::Receiver<Batch<S>>>>,
    sizes: Arc<RwLock<Arc<Sizes>>>,
    groups: Arc<Groups>,
    deadline: Arc<Mutex<Option<Instant>>>,
    telemetry: Arc<ComponentTelemetry>,
    task: Mutex<Option<JoinHandle<()>>>,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    /// Spans handed to the worker and not yet delivered (queued or pending).
    held: Arc<AtomicUsize>,
}

/// The consumer built by [`BatchProcessor`].
#[derive(Debug)]
pub struct BatchConsumer<S: Signal> {
    tx: mpsc::Sender<Batch<S>>,
    groups: Arc<Groups>,
    telemetry: Arc<ComponentTelemetry>,
    held: Arc<AtomicUsize>,
}

/// The metadata combinations being batched, shared by the consumer (which admits new ones
/// up to the limit) and the worker (which forgets a combination once it has sent it all).
#[derive(Debug, Default)]
struct Groups {
    keys: Vec<String>,
    limit: usize,
    active: Mutex<std::collections::HashSet<GroupKey>>,
}

type GroupKey = Vec<Option<String>>;

impl Groups {
    fn key_of<S: Signal>(&self, batch: &Batch<S>) -> GroupKey {
        self.keys
            .iter()
            .map(|k| {
                batch
                    .client
                    .as_ref()
                    .and_then(|c| c.metadata(k))
                    .map(str::to_string)
            })
            .collect()
    }
}

impl<S: Signal> Processor<S> for BatchProcessor {
    type Consumer<N: Consumer<S>> = BatchConsumer<S>;

    fn id(&self) -> ComponentId {
        self.id.clone()
    }

    fn build<N: Consumer<S>>(
        self,
        next: N,
        ctx: &mut ComponentContext<'_>,
    ) -> Result<BatchConsumer<S>, BuildError> {
        let c = &self.config;
        c.validate().map_err(|e| ctx.invalid(e.path, e.message))?;
        let sizes = self.live.install(Sizes::of(c));
        let groups = Arc::new(Groups {
            keys: c
                .metadata_keys
                .iter()
                .map(|k| k.to_ascii_lowercase())
                .collect(),
            limit: c.metadata_cardinality_limit,
            active: Mutex::new(Default::default()),
        });
        // A small hand-off: callers wait (back-pressure) while the worker is busy.
        let (tx, rx) = mpsc::channel(64);
        let (stop_tx, stop_rx) = watch::channel(false);
        let held = Arc::new(AtomicUsize::new(0));
        ctx.register_lifecycle(Arc::new(Worker {
            next: Mutex::new(Some(next)),
            rx: Mutex::new(Some(rx)),
            sizes,
            groups: Arc::clone(&groups),
            deadline: Arc::new(Mutex::new(None)),
            telemetry: ctx.telemetry(),
            task: Mutex::new(None),
            stop_tx,
            stop_rx,
            held: Arc::clone(&held),
        }));
        Ok(BatchConsumer {
            tx,
            groups,
            telemetry: ctx.telemetry(),
            held,
        })
    }
}

impl<S: Signal> Consumer<S> for BatchConsumer<S> {
    async fn consume(&self, batch: Batch<S>) -> Result<(), ConsumeError<S>> {
        if !self.groups.keys.is_empty() {
            let key = self.groups.key_of(&batch);
            let mut active = self.groups.active.lock();
            if !active.contains(&key) {
                if self.groups.limit != 0 && active.len() >= self.groups.limit {
                    drop(active);
                    let n = batch.item_count();
                    self.telemetry
                        .add_dropped(DropReason::METADATA_CARDINALITY_LIMIT, n);
                    return Err(ConsumeError::rejected(
                        n,
                        format!(
                            "too many distinct values of {:?} being batched (metadata_cardinality_limit {})",
                            self.groups.keys, self.groups.limit
                        ),
                    ));
                }
                active.insert(key);
            }
        }
        let n = batch.item_count();
        self.held.fetch_add(n, Ordering::Relaxed);
        match self.tx.send(batch).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError(batch)) => {
                self.held.fetch_sub(n, Ordering::Relaxed);
                Err(ConsumeError::refused(
                    batch,
                    "batch processor is shutting down",
                ))
            }
        }
    }
}

impl<S: Signal, N: Consumer<S>> Lifecycle for Worker<S, N> {
    fn start(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let next = self
                .next
                .lock()
                .take()
                .ok_or("batch processor started twice")?;
            let rx = self
                .rx
                .lock()
                .take()
                .ok_or("batch processor started twice")?;
            let task = tokio::spawn(run(
                next,
                rx,
                self.stop_rx.clone(),
                RunEnv {
                    sizes: Arc::clone(&self.sizes),
                    groups: Arc::clone(&self.groups),
                    deadline: Arc::clone(&self.deadline),
                    telemetry: Arc::clone(&self.telemetry),
                    held: Arc::clone(&self.held),
                },
            ));
            *self.task.lock() = Some(task);
            Ok(())
        })
    }

    fn shutdown(&self, deadline: Instant) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            // Stop delivering a little before the pipeline abandons this stage, and count
            // what could not be delivered (a hanging next stage included).
            let (count_by, join_by) = stage_deadlines(deadline);
            *self.deadline.lock() = Some(count_by);
            let _ = self.stop_tx.send(true);
            let tasks: Vec<_> = self.task.lock().take().into_iter().collect();
            let timed_out = join_until(tasks, join_by).await;
            // A task stopped before it counted: what it still held is counted for it.
            let held = self.held.swap(0, Ordering::Relaxed);
            if timed_out && held > 0 {
                self.telemetry
                    .add_dropped(DropReason::SHUTDOWN_DEADLINE, held);
            }
            deadline_outcome(timed_out, &self.telemetry)
        })
    }
}

/// What the worker task shares with its lifecycle.
struct RunEnv {
    sizes: Arc<RwLock<Arc<Sizes>>>,
    groups: Arc<Groups>,
    deadline: Arc<Mutex<Option<Instant>>>,
    telemetry: Arc<ComponentTelemetry>,
    held: Arc<AtomicUsize>,
}

async fn run<S: Signal, N: Consumer<S>>(
    next: N,
    mut rx: mpsc::Receiver<Batch<S>>,
    mut stop: watch::Receiver<bool>,
    env: RunEnv,
) {
    let RunEnv {
        sizes,
        groups,
        deadline,
        telemetry,
        held,
    } = env;
    let redelivery = Redelivery {
        initial: Duration::from_millis(50),
        max: Duration::from_secs(1),
    };
    let stop_watch = stop.clone();
    // Read before each decision: a reload changes them in place. A size of 0 in the
    // configuration is no size trigger: send on timeout (or at once with a 0 timeout).
    let now_sizes = || **sizes.read();
    // One pending batch per metadata combination (one in all without metadata_keys).
    let mut pending: std::collections::HashMap<GroupKey, Pending<S>> = Default::default();
    // A batch leaves the processor's hold when it is handed on (delivered, rejected or
    // counted as dropped).
    let send = |p: &mut Pending<S>| {
        let out = p.take(now_sizes().max);
        held.fetch_sub(out.item_count(), Ordering::Relaxed);
        out
    };
    loop {
        let Sizes { size, timeout, .. } = now_sizes();
        // Waiting items are looked at again within a second, so a new timeout or size
        // from a reload applies to them too.
        let timer = pending
            .values()
            .filter_map(|p| p.oldest)
            .min()
            .map(|t| (t + timeout).min(Instant::now() + Duration::from_secs(1)));
        tokio::select! {
            received = rx.recv() => match received {
                Some(batch) => {
                    let key = groups.key_of(&batch);
                    let group = pending.entry(key.clone()).or_insert_with(|| Pending::new(&batch, &groups));
                    group.push(batch);
                    group.oldest.get_or_insert_with(Instant::now);
                    let now_all = timeout.is_zero();
                    while group.count >= size || (now_all && group.count > 0) {
                        let out = send(group);
                        redelivery
                .deliver_until_deadline(&next, out, &deadline, &stop_watch, &telemetry)
                .await;
                    }
                    if group.count == 0 {
                        pending.remove(&key);
                        groups.active.lock().remove(&key);
                    }
                }
                None => break,
            },
            _ = crate::sleep_until_opt(timer) => {
                let now = Instant::now();
                let due: Vec<GroupKey> = pending
                    .iter()
                    .filter(|(_, p)| {
                        p.oldest.is_some_and(|t| t + timeout <= now) || p.count >= size
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in due {
                    if let Some(mut group) = pending.remove(&key) {
                        while group.count > 0 {
                            let out = send(&mut group);
                            redelivery
                .deliver_until_deadline(&next, out, &deadline, &stop_watch, &telemetry)
                .await;
                        }
                    }
                    groups.active.lock().remove(&key);
                }
            }
            _ = stop.changed() => break,
        }
    }
    // Shutdown: take what is still queued, send everything, stop.
    rx.close();
    while let Some(batch) = rx.recv().await {
        let key = groups.key_of(&batch);
        pending
            .entry(key)
            .or_insert_with(|| Pending::new(&batch, &groups))
            .push(batch);
    }
    for (key, mut group) in pending.drain() {
        while group.count > 0 {
            let out = send(&mut group);
            redelivery
                .deliver_until_deadline(&next, out, &deadline, &stop_watch, &telemetry)
                .await;
        }
        groups.active.lock().remove(&key);
    }
}

/// Items waiting to be sent.
struct Pending<S: Signal> {
    /// What waits, joined: as bytes while the batches came as bytes (ADR 005).
    batch: Batch<S>,
    /// Parts already cut to the maximum size, sent before `batch` (cut in one pass: see
    /// [`Pending::take`]).
    cut: std::collections::VecDeque<Batch<S>>,
    /// Items in `cut` and `batch`.
    count: usize,
    /// When the oldest waiting span arrived.
    oldest: Option<Instant>,
    /// With metadata_keys, the metadata every batch of this group carries on.
    client: Option<Arc<otel_pipeline_core::ClientInfo>>,
}

impl<S: Signal> Pending<S> {
    fn new(first: &Batch<S>, groups: &Groups) -> Self {
        let client = (!groups.keys.is_empty()).then(|| {
            Arc::new(otel_pipeline_core::ClientInfo {
                addr: None,
                metadata: groups
                    .keys
                    .iter()
                    .filter_map(|k| {
                        first
                            .client
                            .as_ref()
                            .and_then(|c| c.metadata(k))
                            .map(|v| (k.clone(), v.to_string()))
                    })
                    .collect(),
                auth: Vec::new(),
            })
        });
        Self {
            batch: Batch::new(S::Data::default()),
            cut: std::collections::VecDeque::new(),
            count: 0,
            oldest: None,
            client,
        }
    }

    fn push(&mut self, batch: Batch<S>) {
        self.count += batch.item_count();
        self.batch.append(batch);
    }

    /// Up to `max` items from the front. When more than `max` wait, everything waiting is
    /// cut into `max`-sized parts at once, in one pass over its bytes: taking `max` from
    /// the front each time would walk and copy the rest each time (quadratic in the size
    /// of a large request).
    fn take(&mut self, max: usize) -> Batch<S> {
        if self.cut.is_empty() && self.batch.item_count() > max {
            self.cut = self.batch.split_chunks(max).into();
        }
        let mut out = match self.cut.pop_front() {
            Some(part) => part,
            None => {
                let n = self.batch.item_count().min(max);
                self.batch.split_front(n)
            }
        };
        let n = out.item_count();
        self.count -= n;
        if self.count == 0 {
            self.oldest = None;
        }
        out.client.clone_from(&self.client);
        out
    }
}

//! The in-process bridge from `opentelemetry_sdk`: a `SpanExporter` whose spans enter a
//! pipeline without leaving the process.
//!
//! The SDK's spans are converted to OTLP once, here at the edge; from then on the pipeline
//! works on OTLP like any other. Put the tail sampler and the redactor in that pipeline and
//! nothing unsampled or unredacted ever leaves the service.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use opentelemetry::trace::{Tracer, TracerProvider as _};
//! use opentelemetry_sdk::trace::SdkTracerProvider;
//! use otel_pipeline_core::{Pipeline, testing::{InMemoryExporter, eventually}};
//! use otel_receivers::SdkBridge;
//!
//! let (receiver, bridge) = SdkBridge::new();
//! let (exporter, exported) = InMemoryExporter::new();
//! let running = Pipeline::traces().receiver(receiver).exporter(exporter).build()?.start().await?;
//!
//! // Any span processor works: the simple one, the batch one, or your own.
//! let provider = SdkTracerProvider::builder().with_simple_exporter(bridge).build();
//! provider.tracer("app").in_span("work", |_| {});
//! // The span is queued at once and delivered by the pipeline's own task.
//! assert!(eventually(std::time::Duration::from_secs(1), || exported.item_count() == 1).await);
//! provider.shutdown()?;
//! running.shutdown(std::time::Duration::from_secs(1)).await?;
//! # Ok(()) }
//! ```
//!
//! # Never blocking the service
//! The SDK calls `export` from wherever its span processor runs: the simple processor
//! blocks on the export inside `Span::end`, often inside a tokio task; the batch processor
//! from a thread of its own. A pipeline reached from there directly could hang the
//! service: on a current-thread runtime the pipeline's tasks cannot run while the
//! service's task blocks, and on any runtime tokio's cooperative budget runs out inside
//! the blocked poll and spins. So `export` never touches the pipeline. It converts the
//! spans and puts them in a bounded queue (by spans, [`SdkBridge::DEFAULT_CAPACITY`] by
//! default), and a task of the pipeline's runtime delivers them.
//!
//! When the queue is full, an `export` on a runtime thread returns an error at once (the
//! SDK drops those spans; they are counted as dropped with reason `queue_full`); an
//! `export` from a plain thread (the batch processor's) waits for room up to
//! [`SdkBridge::with_max_wait`] (1 s by default) first. A batch the pipeline refuses
//! (memory limiter, a full tail sampler) is kept and retried after the refusal's
//! `retry_after`, so back-pressure fills the queue rather than losing spans; at shutdown
//! the queue is delivered within the deadline, and what is left is counted as
//! `shutdown_deadline`. Spans exported before the pipeline starts wait in the queue.
//! Received = accepted + rejected + dropped, whatever happens.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use otel_pipeline_core::{
    Batch, BoxConsumer, BoxError, ComponentId, ComponentTelemetry, ConsumeError, Consumer,
    DropReason, Receiver, ReceiverContext, RunningReceiver, Traces,
};
use parking_lot::{Condvar, Mutex, RwLock};

/// Spans dropped at the bridge because its queue was full.
const QUEUE_FULL: DropReason = DropReason::new("queue_full");

/// The `SpanExporter` half: give it to the SDK's span processor.
#[derive(Clone)]
pub struct SdkBridge {
    queue: Arc<Queue>,
    resource: Arc<RwLock<ResourceAttributesWithSchema>>,
    max_wait: Duration,
}

/// The receiver half: add it to a trace pipeline (id `sdk`). Its task delivers what the
/// [`SdkBridge`] queued.
pub struct SdkBridgeReceiver {
    id: ComponentId,
    queue: Arc<Queue>,
}

/// What the two halves share: queued batches, bounded by spans.
struct Queue {
    items: Mutex<Queued>,
    /// Signalled when the drain task takes a batch (room for a waiting exporter).
    room: Condvar,
    /// Wakes the drain task.
    work: tokio::sync::Notify,
    capacity: usize,
    /// The receiver's counters, once the pipeline has started it.
    telemetry: OnceLock<Arc<ComponentTelemetry>>,
    /// Spans dropped before the pipeline started (counted when it starts).
    early_drops: AtomicU64,
    /// The receiver has stopped: exports fail at once.
    stopped: AtomicBool,
}

#[derive(Default)]
struct Queued {
    batches: VecDeque<Batch<Traces>>,
    spans: usize,
}

impl Queue {
    fn drop_spans(&self, reason: DropReason, n: usize) {
        match self.telemetry.get() {
            Some(t) => t.add_dropped(reason, n),
            None => {
                self.early_drops.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }

    /// Take the next batch, making room for a waiting exporter.
    fn pop(&self) -> Option<Batch<Traces>> {
        let mut q = self.items.lock();
        let batch = q.batches.pop_front()?;
        q.spans -= batch.item_count();
        self.room.notify_all();
        Some(batch)
    }

    /// Put a refused batch back at the front, for the next try.
    fn push_front(&self, batch: Batch<Traces>) {
        let mut q = self.items.lock();
        q.spans += batch.item_count();
        q.batches.push_front(batch);
    }
}

impl std::fmt::Debug for SdkBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdkBridge")
            .field("capacity", &self.queue.capacity)
            .field("queued_spans", &self.queue.items.lock().spans)
            .field("max_wait", &self.max_wait)
            .finish()
    }
}

impl std::fmt::Debug for SdkBridgeReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdkBridgeReceiver")
            .field("id", &self.id)
            .finish()
    }
}

impl SdkBridge {
    /// Spans the queue holds by default: a burst of this many spans ended without the
    /// service's task yielding is still delivered whole.
    pub const DEFAULT_CAPACITY: usize = 65_536;

    /// A connected pair: the pipeline's receiver (id `sdk`) and the SDK's exporter, with a
    /// queue of [`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY) spans.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> (SdkBridgeReceiver, SdkBridge) {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// A connected pair whose queue holds at most `spans` spans (at least one batch is
    /// always taken, whatever its size).
    pub fn with_capacity(spans: usize) -> (SdkBridgeReceiver, SdkBridge) {
        let queue = Arc::new(Queue {
            items: Mutex::new(Queued::default()),
            room: Condvar::new(),
            work: tokio::sync::Notify::new(),
            capacity: spans.max(1),
            telemetry: OnceLock::new(),
            early_drops: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        });
        (
            SdkBridgeReceiver {
                id: ComponentId::new("sdk"),
                queue: Arc::clone(&queue),
            },
            SdkBridge {
                queue,
                resource: Arc::new(RwLock::new(ResourceAttributesWithSchema::default())),
                max_wait: Duration::from_secs(1),
            },
        )
    }

    /// How long an `export` called off any tokio runtime (the batch span processor's
    /// thread) waits for room in a full queue before it gives up (1 s by default). An
    /// `export` on a runtime thread never waits: waiting there could stop the very task
    /// that makes room.
    pub fn with_max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// Spans queued and not yet delivered.
    pub fn queued_spans(&self) -> usize {
        self.queue.items.lock().spans
    }

    fn enqueue(&self, spans: Vec<SpanData>) -> OTelSdkResult {
        let n = spans.len();
        if n == 0 {
            return Ok(());
        }
        if self.queue.stopped.load(Ordering::Acquire) {
            self.queue.drop_spans(DropReason::SHUTDOWN_DEADLINE, n);
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let resource_spans = group_spans_by_resource_and_scope(spans, &self.resource.read());
        let batch = Batch::<Traces>::new(ExportTraceServiceRequest { resource_spans });
        let mut q = self.queue.items.lock();
        let fits = |q: &Queued| q.spans == 0 || q.spans + n <= self.queue.capacity;
        if !fits(&q) && tokio::runtime::Handle::try_current().is_err() {
            // A plain thread may wait for the drain task to make room, bounded.
            let deadline = std::time::Instant::now() + self.max_wait;
            while !fits(&q) && !self.queue.stopped.load(Ordering::Acquire) {
                if self.queue.room.wait_until(&mut q, deadline).timed_out() {
                    break;
                }
            }
        }
        if !fits(&q) {
            drop(q);
            self.queue.drop_spans(QUEUE_FULL, n);
            return Err(OTelSdkError::InternalFailure(format!(
                "the pipeline's queue is full ({} spans): {n} spans dropped",
                self.queue.capacity
            )));
        }
        q.spans += n;
        q.batches.push_back(batch);
        drop(q);
        self.queue.work.notify_one();
        Ok(())
    }

    /// Wait, off any runtime, until the queue is empty or `wait` has passed.
    fn wait_empty(&self, wait: Duration) -> OTelSdkResult {
        if tokio::runtime::Handle::try_current().is_ok() {
            // On a runtime thread the drain task may need this very thread: do not wait.
            return Ok(());
        }
        let deadline = std::time::Instant::now() + wait;
        let mut q = self.queue.items.lock();
        while q.spans > 0 && !self.queue.stopped.load(Ordering::Acquire) {
            if self.queue.room.wait_until(&mut q, deadline).timed_out() {
                return Err(OTelSdkError::Timeout(wait));
            }
        }
        Ok(())
    }
}

impl SpanExporter for SdkBridge {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        // Done here, synchronously: the returned future is ready at once, so whoever
        // blocks on it never blocks on the pipeline.
        let result = self.enqueue(batch);
        std::future::ready(result)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.wait_empty(self.max_wait.max(Duration::from_secs(5)))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.wait_empty(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        *self.resource.write() = resource.into();
    }
}

impl SdkBridgeReceiver {
    /// Use another id (two bridges in one pipeline).
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }
}

/// Count one delivered batch's outcome as a receiver that does not hand refusals back.
fn count(t: &ComponentTelemetry, n: usize, result: &Result<(), ConsumeError<Traces>>) {
    match result {
        Ok(()) => t.add_accepted(n),
        Err(ConsumeError::Refused(_)) => t.add_dropped(DropReason::REFUSED_NOT_RETRIED, n),
        Err(ConsumeError::Rejected(r)) => {
            let rejected = r.items.min(n);
            t.add_rejected(rejected);
            t.add_accepted(n - rejected);
        }
    }
}

/// How long to wait before trying a refused batch again.
fn backoff(retry_after: Option<Duration>) -> Duration {
    retry_after
        .unwrap_or(Duration::from_millis(50))
        .clamp(Duration::from_millis(5), Duration::from_secs(1))
}

impl Receiver<Traces> for SdkBridgeReceiver {
    fn id(&self) -> ComponentId {
        self.id.clone()
    }

    async fn start<C: Consumer<Traces> + Clone>(
        self,
        consumer: C,
        mut ctx: ReceiverContext,
    ) -> Result<RunningReceiver, BoxError> {
        let queue = self.queue;
        queue
            .telemetry
            .set(Arc::clone(&ctx.telemetry))
            .map_err(|_| "SDK bridge receiver started twice")?;
        let early = queue.early_drops.swap(0, Ordering::Relaxed);
        if early > 0 {
            ctx.telemetry.add_dropped(QUEUE_FULL, early as usize);
        }
        let consumer = BoxConsumer::new(consumer);
        let telemetry = ctx.telemetry;
        Ok(RunningReceiver::new(tokio::spawn(async move {
            // Until shutdown: deliver, retrying refusals.
            let deadline = loop {
                let Some(batch) = queue.pop() else {
                    tokio::select! {
                        () = queue.work.notified() => continue,
                        deadline = ctx.shutdown.wait() => break deadline,
                    }
                };
                let n = batch.item_count();
                match consumer.consume(batch).await {
                    Err(ConsumeError::Refused(r)) => {
                        let wait = backoff(r.retry_after);
                        queue.push_front(r.batch);
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            deadline = ctx.shutdown.wait() => break deadline,
                        }
                    }
                    other => count(&telemetry, n, &other),
                }
            };
            // Shutdown: new exports fail; what is queued is delivered by the deadline.
            queue.stopped.store(true, Ordering::Release);
            queue.room.notify_all();
            while let Some(batch) = queue.pop() {
                let n = batch.item_count();
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    telemetry.add_dropped(DropReason::SHUTDOWN_DEADLINE, n);
                    continue;
                }
                match tokio::time::timeout_at(deadline, consumer.consume(batch)).await {
                    Ok(Err(ConsumeError::Refused(r))) => {
                        let wait = backoff(r.retry_after);
                        if now + wait < deadline {
                            queue.push_front(r.batch);
                            tokio::time::sleep(wait).await;
                        } else {
                            telemetry.add_dropped(DropReason::SHUTDOWN_DEADLINE, n);
                        }
                    }
                    Ok(other) => count(&telemetry, n, &other),
                    Err(_) => telemetry.add_dropped(DropReason::SHUTDOWN_DEADLINE, n),
                }
            }
            queue.room.notify_all();
            Ok(())
        })))
    }
}

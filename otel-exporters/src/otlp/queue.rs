//! The OTLP exporter's sending queue, holding requests **encoded**: each batch is encoded
//! (and for HTTP, compressed) once, by the caller, before it waits; the workers send the
//! bytes and resend the same bytes on retry.
//!
//! A decoded batch takes three to four times its encoded size in memory, so a queue of
//! decoded batches bounded by encoded bytes held several times its bound. Here the bound
//! (`max_bytes`) is what the queue holds. A batch is only decoded again if a trace router
//! takes it back from a departing endpoint (rare, and never on the hot path).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use otel_pipeline_core::otlp::WireSignal;
use otel_pipeline_core::queue::{join_until, next_queued, queue_outcome};
use otel_pipeline_core::{
    Batch, BoxError, BoxFuture, ComponentTelemetry, ConsumeError, Consumer, Lifecycle, Signal,
};
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{OtlpSender, SendingQueueConfig};

/// One encoded request waiting, with the room it takes.
struct Item {
    body: Bytes,
    items: usize,
    /// Headers of this request alone (`headers_setter`).
    extra: Option<Arc<http::HeaderMap>>,
    _permits: (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>),
}

struct Shared<S: Signal> {
    sender: Arc<OtlpSender<S>>,
    tx: mpsc::UnboundedSender<Item>,
    items: Arc<Semaphore>,
    bytes: Option<Arc<Semaphore>>,
    /// Items accepted and not yet sent, failed or dropped.
    held: AtomicUsize,
    config: SendingQueueConfig,
    telemetry: Arc<ComponentTelemetry>,
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
            items: Arc::new(Semaphore::new(config.max_items)),
            bytes: config.max_bytes.map(|b| Arc::new(Semaphore::new(b))),
            held: AtomicUsize::new(0),
            config,
            telemetry,
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
            (Some(sem), Some(limit)) => match shared.acquire(sem, body.len().clamp(1, limit)).await
            {
                Ok(p) => Some(p),
                Err(reason) => return Err(shared.refuse(batch, items, reason)),
            },
            _ => None,
        };
        let extra = shared.sender.request_headers(batch.client.as_deref());
        drop(batch);
        let held = shared.held.fetch_add(items, Ordering::AcqRel) + items;
        let item = Item {
            body,
            items,
            extra,
            _permits: (permit, byte_permit),
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

impl<S: WireSignal> Lifecycle for Workers<S> {
    fn start(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let mut tasks = self.tasks.lock();
            if !tasks.is_empty() {
                return Err("sending queue started twice".into());
            }
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

async fn worker<S: WireSignal>(
    shared: Arc<Shared<S>>,
    rx: SharedRx,
    mut stop: watch::Receiver<bool>,
) {
    while let Some(Item {
        body,
        items,
        extra,
        _permits,
    }) = next_queued(&rx, &mut stop).await
    {
        // Failures are counted by the sender (sent, failed, dropped at the deadline).
        let _ = shared.sender.send_encoded(body, items, extra).await;
        shared.release(items);
    }
}

//! The [`Consumer`] trait: the one async method every stage of a pipeline implements.
//!
//! Each arrow in `receiver -> processor -> ... -> exporter` is the next stage's consumer. A
//! consumer either takes the batch (`Ok`), **refuses** it (back-pressure: retryable, and the
//! batch is handed back so the caller can retry or push back to its client), or **rejects**
//! it (permanent: the data is bad; the rejecting stage has counted it).

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::signal::{Batch, Signal};

/// A boxed, sendable future; the one place the crate erases a future's type.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A stage that accepts batches of signal `S`.
///
/// Implement it for your own processor output or exporter. The method is a native
/// `async` trait method, so a chain of consumers compiles to one concrete type with no
/// dynamic dispatch; [`BoxConsumer`] erases the type where configuration is decided at
/// run time.
///
/// ```
/// use otel_pipeline_core::{Batch, ConsumeError, Consumer, Traces};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// /// Counts spans and keeps nothing.
/// #[derive(Debug, Default)]
/// struct CountingSink(AtomicUsize);
///
/// impl Consumer<Traces> for CountingSink {
///     async fn consume(&self, batch: Batch<Traces>) -> Result<(), ConsumeError<Traces>> {
///         self.0.fetch_add(batch.item_count(), Ordering::Relaxed);
///         Ok(())
///     }
/// }
/// ```
pub trait Consumer<S: Signal>: Send + Sync + 'static {
    /// Take one batch. On [`ConsumeError::Refused`] the batch comes back to the caller.
    fn consume(&self, batch: Batch<S>) -> impl Future<Output = Result<(), ConsumeError<S>>> + Send;
}

impl<S: Signal, C: Consumer<S> + ?Sized> Consumer<S> for Arc<C> {
    fn consume(&self, batch: Batch<S>) -> impl Future<Output = Result<(), ConsumeError<S>>> + Send {
        (**self).consume(batch)
    }
}

/// Why a stage did not take a batch.
pub enum ConsumeError<S: Signal> {
    /// Back-pressure: try again later. The batch is handed back untouched.
    Refused(Refusal<S>),
    /// Permanent: the data cannot be processed and must not be retried.
    Rejected(Rejection),
}

/// A retryable refusal that hands the batch back.
pub struct Refusal<S: Signal> {
    /// The batch that was not taken.
    pub batch: Batch<S>,
    /// Why (for logs and error messages), e.g. `"queue full"`.
    pub reason: Cow<'static, str>,
    /// When the refusing stage expects to have room again, if it knows.
    pub retry_after: Option<Duration>,
}

/// A permanent rejection. The batch is gone; the rejecting stage counted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// What was wrong with the data.
    pub reason: Cow<'static, str>,
    /// How many items (spans, points, records) were rejected.
    pub items: usize,
}

impl<S: Signal> ConsumeError<S> {
    /// A refusal that hands `batch` back.
    pub fn refused(batch: Batch<S>, reason: impl Into<Cow<'static, str>>) -> Self {
        Self::Refused(Refusal {
            batch,
            reason: reason.into(),
            retry_after: None,
        })
    }

    /// A permanent rejection of `items` items.
    pub fn rejected(items: usize, reason: impl Into<Cow<'static, str>>) -> Self {
        Self::Rejected(Rejection {
            reason: reason.into(),
            items,
        })
    }

    /// Whether the caller may retry (the batch was refused, not rejected).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Refused(_))
    }

    /// The reason as text.
    pub fn reason(&self) -> &str {
        match self {
            Self::Refused(r) => &r.reason,
            Self::Rejected(r) => &r.reason,
        }
    }

    /// Items affected: the refused batch's size, or the rejected count.
    pub fn items(&self) -> usize {
        match self {
            Self::Refused(r) => r.batch.item_count(),
            Self::Rejected(r) => r.items,
        }
    }

    /// The same error for another batch: a refusal hands back `f(batch)` (with its reason
    /// and `retry_after`), a rejection stays as it is. A connector that emits metrics for
    /// spans turns the metrics pipeline's refusal into a refusal of the spans with this.
    pub fn map_batch<T: Signal>(self, f: impl FnOnce(Batch<S>) -> Batch<T>) -> ConsumeError<T> {
        match self {
            Self::Refused(r) => ConsumeError::Refused(Refusal {
                batch: f(r.batch),
                reason: r.reason,
                retry_after: r.retry_after,
            }),
            Self::Rejected(r) => ConsumeError::Rejected(r),
        }
    }

    /// The batch handed back by a refusal.
    pub fn into_batch(self) -> Option<Batch<S>> {
        match self {
            Self::Refused(r) => Some(r.batch),
            Self::Rejected(_) => None,
        }
    }
}

impl<S: Signal> fmt::Debug for Refusal<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refusal")
            .field("reason", &self.reason)
            .field("retry_after", &self.retry_after)
            .field("items", &self.batch.item_count())
            .finish()
    }
}

impl<S: Signal> fmt::Debug for ConsumeError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused(r) => f.debug_tuple("Refused").field(r).finish(),
            Self::Rejected(r) => f.debug_tuple("Rejected").field(r).finish(),
        }
    }
}

impl<S: Signal> fmt::Display for ConsumeError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused(r) => {
                write!(
                    f,
                    "refused {} {} (retryable): {}",
                    r.batch.item_count(),
                    S::ITEM,
                    r.reason
                )?;
                if let Some(after) = r.retry_after {
                    write!(f, "; retry after {after:?}")?;
                }
                Ok(())
            }
            Self::Rejected(r) => write!(f, "rejected {} {}: {}", r.items, S::ITEM, r.reason),
        }
    }
}

impl<S: Signal> std::error::Error for ConsumeError<S> {}

/// Object-safe twin of [`Consumer`], used only by [`BoxConsumer`].
trait DynConsumer<S: Signal>: Send + Sync + 'static {
    fn consume_boxed(&self, batch: Batch<S>) -> BoxFuture<'_, Result<(), ConsumeError<S>>>;
}

impl<S: Signal, C: Consumer<S>> DynConsumer<S> for C {
    fn consume_boxed(&self, batch: Batch<S>) -> BoxFuture<'_, Result<(), ConsumeError<S>>> {
        Box::pin(self.consume(batch))
    }
}

/// A type-erased, cheaply clonable consumer.
///
/// Use it where the shape of a pipeline is decided at run time (the YAML loader, a
/// receiver that hands its consumer to spawned connection tasks). It costs one allocation
/// per batch for the boxed future, never one per span.
pub struct BoxConsumer<S: Signal>(Arc<dyn DynConsumer<S>>);

impl<S: Signal> BoxConsumer<S> {
    /// Erase the type of `consumer`.
    pub fn new(consumer: impl Consumer<S>) -> Self {
        Self(Arc::new(consumer))
    }
}

impl<S: Signal> Clone for BoxConsumer<S> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<S: Signal> fmt::Debug for BoxConsumer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxConsumer")
            .field("signal", &S::NAME)
            .finish_non_exhaustive()
    }
}

impl<S: Signal> Consumer<S> for BoxConsumer<S> {
    fn consume(&self, batch: Batch<S>) -> impl Future<Output = Result<(), ConsumeError<S>>> + Send {
        self.0.consume_boxed(batch)
    }
}

/// Sends every batch to two consumers concurrently (nest it for more).
///
/// The first consumer gets a clone, the second the original. If either refuses, the
/// fan-out refuses, so back-pressure from any exporter reaches the receiver; a retry will
/// then deliver the batch again to the consumer that had accepted it. Put a bounded queue
/// in front of an exporter that should not hold the others back.
#[derive(Debug, Clone)]
pub struct FanOut<A, B> {
    first: A,
    second: B,
}

impl<A, B> FanOut<A, B> {
    /// Fan out to `first` and `second`.
    pub fn new(first: A, second: B) -> Self {
        Self { first, second }
    }
}

impl<S: Signal, A: Consumer<S>, B: Consumer<S>> Consumer<S> for FanOut<A, B> {
    async fn consume(&self, batch: Batch<S>) -> Result<(), ConsumeError<S>> {
        let copy = batch.clone();
        let (a, b) = tokio::join!(self.first.consume(copy), self.second.consume(batch));
        match (a, b) {
            (Ok(()), Ok(())) => Ok(()),
            // A refusal wins: the caller keeps the data and retries.
            (Err(e @ ConsumeError::Refused(_)), _) | (_, Err(e @ ConsumeError::Refused(_))) => {
                Err(e)
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }
}

//! [`Transform`]: a stateless processor made from a function.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::component::{ComponentContext, Processor};
use crate::consumer::{ConsumeError, Consumer};
use crate::id::{BuildError, ComponentId};
use crate::signal::{Batch, Signal};
use crate::telemetry::{ComponentTelemetry, DropReason};

/// A stateless processor made from a function that edits each batch in place.
///
/// The function returns how many items it removed; they are counted as dropped with the
/// reason given by [`Transform::drop_reason`] (default `"transform"`). A batch left empty is
/// not passed on.
///
/// ```
/// use otel_pipeline_core::{Traces, Transform};
/// // Drop every span named "healthz".
/// let filter = Transform::<Traces, _>::new("drop_healthz", |data: &mut _| {
///     let mut dropped = 0;
///     for rs in &mut data.resource_spans {
///         for ss in &mut rs.scope_spans {
///             let before = ss.spans.len();
///             ss.spans.retain(|s| s.name != "healthz");
///             dropped += before - ss.spans.len();
///         }
///     }
///     dropped
/// })
/// .drop_reason(otel_pipeline_core::DropReason::FILTERED);
/// ```
pub struct Transform<S: Signal, F> {
    id: ComponentId,
    f: F,
    reason: DropReason,
    _signal: PhantomData<fn() -> S>,
}

impl<S: Signal, F> fmt::Debug for Transform<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transform").field("id", &self.id).finish()
    }
}

impl<S: Signal, F> Transform<S, F>
where
    F: Fn(&mut S::Data) -> usize + Send + Sync + 'static,
{
    /// A transform with component type `kind` (`Transform::new("rename", ...)`).
    pub fn new(kind: &'static str, f: F) -> Self {
        Self {
            id: ComponentId::new(kind),
            f,
            reason: DropReason::new("transform"),
            _signal: PhantomData,
        }
    }

    /// Give the transform a full id (`rename/http`).
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }

    /// The reason label used when counting removed items.
    pub fn drop_reason(mut self, reason: DropReason) -> Self {
        self.reason = reason;
        self
    }
}

/// The consumer built by [`Transform`].
pub struct TransformConsumer<F, N> {
    f: F,
    next: N,
    reason: DropReason,
    telemetry: Arc<ComponentTelemetry>,
}

impl<F, N: fmt::Debug> fmt::Debug for TransformConsumer<F, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransformConsumer")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl<S: Signal, F> Processor<S> for Transform<S, F>
where
    F: Fn(&mut S::Data) -> usize + Send + Sync + 'static,
{
    type Consumer<N: Consumer<S>> = TransformConsumer<F, N>;

    fn id(&self) -> ComponentId {
        self.id.clone()
    }

    fn build<N: Consumer<S>>(
        self,
        next: N,
        ctx: &mut ComponentContext<'_>,
    ) -> Result<Self::Consumer<N>, BuildError> {
        Ok(TransformConsumer {
            f: self.f,
            next,
            reason: self.reason,
            telemetry: ctx.telemetry(),
        })
    }
}

impl<S: Signal, F, N> Consumer<S> for TransformConsumer<F, N>
where
    F: Fn(&mut S::Data) -> usize + Send + Sync + 'static,
    N: Consumer<S>,
{
    async fn consume(&self, mut batch: Batch<S>) -> Result<(), ConsumeError<S>> {
        let removed = (self.f)(batch.data_mut());
        self.telemetry.add_dropped(self.reason, removed);
        if batch.item_count() == 0 {
            return Ok(());
        }
        self.next.consume(batch).await
    }
}

//! Trace context through in-process queues: [`Traced`] envelopes and [`Messaging`] spans.
//!
//! A task that hands work to another through a channel loses its trace context: the
//! consumer runs in another task with an empty context. Wrap the payload in [`Traced`] when
//! it is enqueued (it captures the current span context and baggage, as values, so it never
//! keeps a span alive) and restore it when consumed.
//!
//! [`Messaging`] adds the spans of the messaging semantic conventions: a `PRODUCER` span
//! `send {destination}` per message, and on the consumer side a `CONSUMER` span
//! `process {destination}` that is either the **child** of the message's context (one
//! message at a time) or **links** to every message's context (a batch).
//!
//! ```
//! # #[cfg(feature = "tokio")] {
//! use otel_pipeline_core::propagation::messaging::{TokioSendTraced, Traced};
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let (tx, mut rx) = tokio::sync::mpsc::channel::<Traced<String>>(16);
//! tx.send_traced("order 42".to_string()).await.unwrap(); // captures Context::current()
//! let msg = rx.recv().await.unwrap();
//! let (payload, cx) = msg.into_parts(); // the producer's context, to attach or parent spans on
//! # let _ = (payload, cx); });
//! # }
//! ```

use std::borrow::Cow;

use opentelemetry::baggage::{BaggageExt, BaggageMetadata};
use opentelemetry::trace::{Link, SpanContext, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, Key, KeyValue, StringValue};

/// A payload with the trace context it was produced in.
#[derive(Debug, Clone)]
pub struct Traced<T> {
    payload: T,
    span_context: SpanContext,
    baggage: Vec<(Key, (StringValue, BaggageMetadata))>,
}

impl<T> Traced<T> {
    /// Wrap `payload` with the current context.
    pub fn new(payload: T) -> Self {
        Context::map_current(|cx| Self::in_context(payload, cx))
    }

    /// Wrap `payload` with the span context and baggage of `cx`.
    pub fn in_context(payload: T, cx: &Context) -> Self {
        Self {
            payload,
            span_context: cx.span().span_context().clone(),
            baggage: cx
                .baggage()
                .iter()
                .map(|(k, (v, m))| (k.clone(), (v.clone(), m.clone())))
                .collect(),
        }
    }

    /// The payload.
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// The producer's span context (invalid if it had none).
    pub fn span_context(&self) -> &SpanContext {
        &self.span_context
    }

    /// The producer's context, rebuilt: its span as a remote parent, and its baggage.
    pub fn context(&self) -> Context {
        let mut cx = Context::new();
        if self.span_context.is_valid() {
            cx = cx.with_remote_span_context(self.span_context.clone());
        }
        if !self.baggage.is_empty() {
            cx = cx.with_baggage(
                self.baggage
                    .iter()
                    .cloned()
                    .collect::<opentelemetry::baggage::Baggage>(),
            );
        }
        cx
    }

    /// The payload and the producer's context.
    pub fn into_parts(self) -> (T, Context) {
        let cx = self.context();
        (self.payload, cx)
    }
}

/// Producer and consumer spans for one destination, after the messaging semantic
/// conventions (`messaging.system`, `messaging.destination.name`,
/// `messaging.operation.type`, `messaging.batch.message_count`).
#[derive(Debug, Clone)]
pub struct Messaging<Tr> {
    tracer: Tr,
    system: Cow<'static, str>,
    destination: Cow<'static, str>,
}

impl<Tr> Messaging<Tr>
where
    Tr: Tracer,
    Tr::Span: Send + Sync + 'static,
{
    /// Spans for `destination` (a queue or channel name) of messaging system `system`.
    pub fn new(
        tracer: Tr,
        system: impl Into<Cow<'static, str>>,
        destination: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            tracer,
            system: system.into(),
            destination: destination.into(),
        }
    }

    fn attributes(&self, operation: &'static str) -> Vec<KeyValue> {
        vec![
            KeyValue::new("messaging.system", self.system.to_string()),
            KeyValue::new("messaging.destination.name", self.destination.to_string()),
            KeyValue::new("messaging.operation.type", operation),
        ]
    }

    /// Record a `PRODUCER` span `send {destination}` as a child of the current context and
    /// wrap `payload` with that span's context.
    pub fn send<T>(&self, payload: T) -> Traced<T> {
        let parent = Context::current();
        let builder = self
            .tracer
            .span_builder(format!("send {}", self.destination))
            .with_kind(SpanKind::Producer)
            .with_attributes(self.attributes("send"));
        let span = self.tracer.build_with_context(builder, &parent);
        let cx = parent.with_span(span);
        let traced = Traced::in_context(payload, &cx);
        cx.span().end();
        traced
    }

    /// Start a `CONSUMER` span `process {destination}` whose parent is the message's
    /// context (use it for one message at a time). Returns the payload and a context that
    /// holds the span; attach it while processing. The span ends when the context is
    /// dropped, or call `cx.span().end()`.
    pub fn process<T>(&self, message: Traced<T>) -> (T, Context) {
        let (payload, parent) = message.into_parts();
        let builder = self
            .tracer
            .span_builder(format!("process {}", self.destination))
            .with_kind(SpanKind::Consumer)
            .with_attributes(self.attributes("process"));
        let span = self.tracer.build_with_context(builder, &parent);
        (payload, parent.with_span(span))
    }

    /// Start one `CONSUMER` span `process {destination}` for a batch, a child of the
    /// current context, with a link to each message's context.
    pub fn process_batch<T>(&self, messages: Vec<Traced<T>>) -> (Vec<T>, Context) {
        let parent = Context::current();
        let mut links = Vec::with_capacity(messages.len());
        let mut payloads = Vec::with_capacity(messages.len());
        for m in messages {
            if m.span_context.is_valid() {
                links.push(Link::with_context(m.span_context.clone()));
            }
            payloads.push(m.payload);
        }
        let mut attributes = self.attributes("process");
        attributes.push(KeyValue::new(
            "messaging.batch.message_count",
            payloads.len() as i64,
        ));
        let builder = self
            .tracer
            .span_builder(format!("process {}", self.destination))
            .with_kind(SpanKind::Consumer)
            .with_attributes(attributes)
            .with_links(links);
        let span = self.tracer.build_with_context(builder, &parent);
        (payloads, parent.with_span(span))
    }
}

/// Send with the trace context captured, over a tokio mpsc channel.
#[cfg(feature = "tokio")]
pub trait TokioSendTraced<T: Send> {
    /// Wrap `payload` with the context current **when the future runs**, and send it: so
    /// `tx.send_traced(x).with_context(cx).await` sends `cx`, as it reads.
    fn send_traced(
        &self,
        payload: T,
    ) -> impl std::future::Future<
        Output = Result<(), tokio::sync::mpsc::error::SendError<Traced<T>>>,
    > + Send;

    /// Wrap `payload` with the span context and baggage of `cx`, and send it.
    fn send_traced_in(
        &self,
        cx: &Context,
        payload: T,
    ) -> impl std::future::Future<
        Output = Result<(), tokio::sync::mpsc::error::SendError<Traced<T>>>,
    > + Send;
}

#[cfg(feature = "tokio")]
impl<T: Send> TokioSendTraced<T> for tokio::sync::mpsc::Sender<Traced<T>> {
    async fn send_traced(
        &self,
        payload: T,
    ) -> Result<(), tokio::sync::mpsc::error::SendError<Traced<T>>> {
        // Captured at the first poll, inside whatever context the caller attached.
        let msg = Traced::new(payload);
        self.send(msg).await
    }

    fn send_traced_in(
        &self,
        cx: &Context,
        payload: T,
    ) -> impl std::future::Future<
        Output = Result<(), tokio::sync::mpsc::error::SendError<Traced<T>>>,
    > + Send {
        self.send(Traced::in_context(payload, cx))
    }
}

/// Send with the current context captured, over a crossbeam channel.
#[cfg(feature = "crossbeam")]
pub trait CrossbeamSendTraced<T> {
    /// Wrap `payload` in [`Traced::new`] and send it.
    fn send_traced(&self, payload: T) -> Result<(), crossbeam_channel::SendError<Traced<T>>>;
}

#[cfg(feature = "crossbeam")]
impl<T> CrossbeamSendTraced<T> for crossbeam_channel::Sender<Traced<T>> {
    fn send_traced(&self, payload: T) -> Result<(), crossbeam_channel::SendError<Traced<T>>> {
        self.send(Traced::new(payload))
    }
}

//! The `debug` exporter: prints spans readably, for demos and for looking at a pipeline.
//!
//! Verbosity follows the Collector's `debug` exporter: `basic` prints one summary line per
//! batch, `normal` one line per span, `detailed` every field.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::Arc;

use otel_pipeline_core::hex;
use otel_pipeline_core::proto::common::v1::{AnyValue, KeyValue, any_value::Value};
use otel_pipeline_core::proto::trace::v1::{Span, span::SpanKind, status::StatusCode};
use otel_pipeline_core::{
    Batch, BuildError, ComponentContext, ComponentId, ComponentTelemetry, ConsumeError, Consumer,
    Exporter, Traces,
};
use parking_lot::Mutex;

/// How much the debug exporter prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verbosity {
    /// One line per batch: counts.
    Basic,
    /// One line per span: ids, name, kind, duration, status.
    #[default]
    Normal,
    /// Every span field, attributes, events and links.
    Detailed,
}

type Sink = Arc<Mutex<Box<dyn Write + Send>>>;

/// Prints every batch it receives. Writes to standard output unless given another writer.
///
/// ```
/// use otel_pipeline_core::{Pipeline, testing::InMemoryReceiver};
/// use otel_exporters::{DebugExporter, Verbosity};
/// let (receiver, _sender) = InMemoryReceiver::new();
/// let pipeline = Pipeline::traces()
///     .receiver(receiver)
///     .exporter(DebugExporter::new(Verbosity::Normal))
///     .build();
/// assert!(pipeline.is_ok());
/// ```
pub struct DebugExporter {
    id: ComponentId,
    verbosity: Verbosity,
    sink: Sink,
}

impl std::fmt::Debug for DebugExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugExporter")
            .field("id", &self.id)
            .field("verbosity", &self.verbosity)
            .finish_non_exhaustive()
    }
}

impl DebugExporter {
    /// A debug exporter printing to standard output.
    pub fn new(verbosity: Verbosity) -> Self {
        Self::to_writer(verbosity, std::io::stdout())
    }

    /// A debug exporter printing to `writer`.
    pub fn to_writer(verbosity: Verbosity, writer: impl Write + Send + 'static) -> Self {
        Self {
            id: ComponentId::new("debug"),
            verbosity,
            sink: Arc::new(Mutex::new(Box::new(writer))),
        }
    }

    /// Use another id (`debug/detailed`).
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }
}

/// The consumer built by [`DebugExporter`].
pub struct DebugConsumer {
    verbosity: Verbosity,
    sink: Sink,
    telemetry: Arc<ComponentTelemetry>,
}

impl std::fmt::Debug for DebugConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugConsumer")
            .field("verbosity", &self.verbosity)
            .finish_non_exhaustive()
    }
}

impl Exporter<Traces> for DebugExporter {
    type Consumer = DebugConsumer;

    fn id(&self) -> ComponentId {
        self.id.clone()
    }

    fn build(self, ctx: &mut ComponentContext<'_>) -> Result<DebugConsumer, BuildError> {
        Ok(DebugConsumer {
            verbosity: self.verbosity,
            sink: self.sink,
            telemetry: ctx.telemetry(),
        })
    }
}

impl Consumer<Traces> for DebugConsumer {
    async fn consume(&self, batch: Batch<Traces>) -> Result<(), ConsumeError<Traces>> {
        let n = batch.item_count();
        let text = render_traces(&batch, self.verbosity);
        let written = {
            let mut sink = self.sink.lock();
            sink.write_all(text.as_bytes()).and_then(|()| sink.flush())
        };
        match written {
            Ok(()) => {
                self.telemetry.add_sent(n);
                Ok(())
            }
            Err(e) => {
                self.telemetry.add_send_failed(n);
                Err(ConsumeError::rejected(
                    n,
                    format!("debug exporter could not write: {e}"),
                ))
            }
        }
    }
}

/// Render a trace batch as text at the given verbosity.
pub fn render_traces(batch: &Batch<Traces>, verbosity: Verbosity) -> String {
    let mut out = String::new();
    let resources = batch.data.resource_spans.len();
    let _ = writeln!(
        out,
        "Traces: {} resource(s), {} span(s)",
        resources,
        batch.item_count()
    );
    if verbosity == Verbosity::Basic {
        return out;
    }
    for rs in &batch.data.resource_spans {
        let attrs = rs
            .resource
            .as_ref()
            .map(|r| &r.attributes[..])
            .unwrap_or(&[]);
        let _ = writeln!(out, "Resource {}", render_attributes(attrs));
        for ss in &rs.scope_spans {
            if let Some(scope) = &ss.scope {
                let _ = writeln!(out, "  Scope {} {}", scope.name, scope.version);
            }
            for span in &ss.spans {
                render_span(&mut out, span, verbosity);
            }
        }
    }
    out
}

fn render_span(out: &mut String, span: &Span, verbosity: Verbosity) {
    let kind = SpanKind::try_from(span.kind)
        .map(|k| {
            k.as_str_name()
                .trim_start_matches("SPAN_KIND_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| format!("kind({})", span.kind));
    let status = span
        .status
        .as_ref()
        .and_then(|s| StatusCode::try_from(s.code).ok())
        .map_or("unset", |c| match c {
            StatusCode::Unset => "unset",
            StatusCode::Ok => "ok",
            StatusCode::Error => "error",
        });
    let duration_ms = span
        .end_time_unix_nano
        .saturating_sub(span.start_time_unix_nano) as f64
        / 1e6;
    let _ = writeln!(
        out,
        "    {} {} trace={} span={} parent={} {duration_ms:.3}ms status={status}",
        kind,
        span.name,
        hex::encode(&span.trace_id),
        hex::encode(&span.span_id),
        if span.parent_span_id.is_empty() {
            "-".to_string()
        } else {
            hex::encode(&span.parent_span_id)
        },
    );
    if verbosity != Verbosity::Detailed {
        return;
    }
    let _ = writeln!(
        out,
        "      attributes {}",
        render_attributes(&span.attributes)
    );
    if !span.trace_state.is_empty() {
        let _ = writeln!(out, "      tracestate {}", span.trace_state);
    }
    let _ = writeln!(out, "      flags {:#x}", span.flags);
    if let Some(status) = span.status.as_ref().filter(|s| !s.message.is_empty()) {
        let _ = writeln!(out, "      status message {}", status.message);
    }
    for event in &span.events {
        let _ = writeln!(
            out,
            "      event {} at {} {}",
            event.name,
            event.time_unix_nano,
            render_attributes(&event.attributes)
        );
    }
    for link in &span.links {
        let _ = writeln!(
            out,
            "      link trace={} span={} {}",
            hex::encode(&link.trace_id),
            hex::encode(&link.span_id),
            render_attributes(&link.attributes)
        );
    }
}

fn render_attributes(attrs: &[KeyValue]) -> String {
    let parts: Vec<String> = attrs
        .iter()
        .map(|kv| format!("{}={}", kv.key, render_value(kv.value.as_ref())))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

fn render_value(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        None => "null".to_string(),
        Some(Value::StringValue(s)) => format!("{s:?}"),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => format!("0x{}", hex::encode(b)),
        Some(Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|v| render_value(Some(v))).collect();
            format!("[{}]", items.join(", "))
        }
        Some(Value::KvlistValue(kv)) => render_attributes(&kv.values),
        Some(other) => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otel_pipeline_core::testing::generate_traces;

    #[test]
    fn normal_prints_one_line_per_span() {
        let batch = Batch::<Traces>::new(generate_traces(1, 3, 9));
        let text = render_traces(&batch, Verbosity::Normal);
        assert!(
            text.starts_with("Traces: 1 resource(s), 3 span(s)\n"),
            "{text}"
        );
        assert!(
            text.contains("Resource {service.name=\"orders\"}"),
            "{text}"
        );
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("    server GET /api/orders"))
                .count(),
            1,
            "{text}"
        );
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("    client SELECT orders"))
                .count(),
            2,
            "{text}"
        );
        let detailed = render_traces(&batch, Verbosity::Detailed);
        assert!(
            detailed.contains("http.response.status_code=200"),
            "{detailed}"
        );
        assert_eq!(render_traces(&batch, Verbosity::Basic).lines().count(), 1);
    }
}

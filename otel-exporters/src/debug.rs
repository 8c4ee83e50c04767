//! The `debug` exporter: prints spans, metrics and log records readably, for demos and for
//! looking at a pipeline.
//!
//! Verbosity follows the Collector's `debug` exporter: `basic` prints one summary line per
//! batch, `normal` one line per span, data point or log record, `detailed` every field.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::Arc;

use otel_pipeline_core::proto::common::v1::{AnyValue, KeyValue, any_value::Value};
use otel_pipeline_core::proto::metrics::v1::{
    Metric, NumberDataPoint, metric::Data, number_data_point,
};
use otel_pipeline_core::proto::trace::v1::{Span, span::SpanKind, status::StatusCode};
use otel_pipeline_core::{
    Batch, BuildError, ComponentContext, ComponentId, ComponentTelemetry, ConsumeError, Consumer,
    Exporter, Logs, Metrics, Traces,
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
/// use otel_pipeline_core::{Pipeline, DirectReceiver};
/// use otel_exporters::{DebugExporter, Verbosity};
/// let (receiver, _sender) = DirectReceiver::new();
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

/// The consumer built by [`DebugExporter`], for signal `S`.
pub struct DebugConsumer<S> {
    verbosity: Verbosity,
    sink: Sink,
    telemetry: Arc<ComponentTelemetry>,
    signal: std::marker::PhantomData<fn(S)>,
}

impl<S> std::fmt::Debug for DebugConsumer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugConsumer")
            .field("verbosity", &self.verbosity)
            .finish_non_exhaustive()
    }
}

impl<S> DebugConsumer<S> {
    fn write(&self, n: usize, text: &str) -> Result<(), String> {
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
                Err(format!("debug exporter could not write: {e}"))
            }
        }
    }
}

/// The exporter and its consumer for one signal, rendered by `$render`.
macro_rules! debug_signal {
    ($signal:ty, $render:ident) => {
        impl Exporter<$signal> for DebugExporter {
            type Consumer = DebugConsumer<$signal>;

            fn id(&self) -> ComponentId {
                self.id.clone()
            }

            fn build(
                self,
                ctx: &mut ComponentContext<'_>,
            ) -> Result<DebugConsumer<$signal>, BuildError> {
                Ok(DebugConsumer {
                    verbosity: self.verbosity,
                    sink: self.sink,
                    telemetry: ctx.telemetry(),
                    signal: std::marker::PhantomData,
                })
            }
        }

        impl Consumer<$signal> for DebugConsumer<$signal> {
            async fn consume(&self, batch: Batch<$signal>) -> Result<(), ConsumeError<$signal>> {
                let n = batch.item_count();
                let text = $render(&batch, self.verbosity);
                self.write(n, &text)
                    .map_err(|e| ConsumeError::rejected(n, e))
            }
        }
    };
}

debug_signal!(Traces, render_traces);
debug_signal!(Metrics, render_metrics);
debug_signal!(Logs, render_logs);

/// Render a metrics batch as text at the given verbosity: one line per data point
/// (`normal`), plus its attributes and times (`detailed`).
pub fn render_metrics(batch: &Batch<Metrics>, verbosity: Verbosity) -> String {
    let mut out = String::new();
    let metrics: usize = batch
        .data()
        .resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .map(|sm| sm.metrics.len())
        .sum();
    let _ = writeln!(
        out,
        "Metrics: {} resource(s), {} metric(s), {} data point(s)",
        batch.data().resource_metrics.len(),
        metrics,
        batch.item_count()
    );
    if verbosity == Verbosity::Basic {
        return out;
    }
    for rm in &batch.data().resource_metrics {
        let attrs = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let _ = writeln!(out, "Resource {}", render_attributes(attrs));
        for sm in &rm.scope_metrics {
            if let Some(scope) = &sm.scope {
                let _ = writeln!(out, "  Scope {} {}", scope.name, scope.version);
            }
            for m in &sm.metrics {
                render_metric(&mut out, m, verbosity);
            }
        }
    }
    out
}

fn render_metric(out: &mut String, m: &Metric, verbosity: Verbosity) {
    let (kind, points): (&str, Vec<PointLine<'_>>) = match &m.data {
        None => ("Empty", Vec::new()),
        Some(Data::Gauge(g)) => ("Gauge", number_points(&g.data_points)),
        Some(Data::Sum(s)) => (
            if s.is_monotonic {
                "Sum (monotonic)"
            } else {
                "Sum"
            },
            number_points(&s.data_points),
        ),
        Some(Data::Histogram(h)) => (
            "Histogram",
            h.data_points
                .iter()
                .map(|p| {
                    (
                        format!("count={} sum={}", p.count, p.sum.unwrap_or_default()),
                        &p.attributes[..],
                        p.time_unix_nano,
                    )
                })
                .collect(),
        ),
        Some(Data::ExponentialHistogram(h)) => (
            "ExponentialHistogram",
            h.data_points
                .iter()
                .map(|p| {
                    (
                        format!(
                            "count={} sum={} scale={}",
                            p.count,
                            p.sum.unwrap_or_default(),
                            p.scale
                        ),
                        &p.attributes[..],
                        p.time_unix_nano,
                    )
                })
                .collect(),
        ),
        Some(Data::Summary(s)) => (
            "Summary",
            s.data_points
                .iter()
                .map(|p| {
                    (
                        format!("count={} sum={}", p.count, p.sum),
                        &p.attributes[..],
                        p.time_unix_nano,
                    )
                })
                .collect(),
        ),
    };
    let unit = if m.unit.is_empty() {
        String::new()
    } else {
        format!(" [{}]", m.unit)
    };
    let _ = writeln!(out, "    {} {kind}{unit}", m.name);
    for (value, attrs, time) in points {
        if verbosity == Verbosity::Detailed {
            let _ = writeln!(out, "      {value} {} t={time}", render_attributes(attrs));
        } else {
            let _ = writeln!(out, "      {value} {}", render_attributes(attrs));
        }
    }
}

/// One data point as printed: its value, attributes and time.
type PointLine<'a> = (String, &'a [KeyValue], u64);

fn number_points(points: &[NumberDataPoint]) -> Vec<PointLine<'_>> {
    points
        .iter()
        .map(|p| {
            let v = match p.value {
                Some(number_data_point::Value::AsDouble(d)) => d.to_string(),
                Some(number_data_point::Value::AsInt(i)) => i.to_string(),
                None => "null".into(),
            };
            (v, &p.attributes[..], p.time_unix_nano)
        })
        .collect()
}

/// Render a logs batch as text at the given verbosity: one line per record (`normal`),
/// plus its attributes and trace context (`detailed`).
pub fn render_logs(batch: &Batch<Logs>, verbosity: Verbosity) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Logs: {} resource(s), {} log record(s)",
        batch.data().resource_logs.len(),
        batch.item_count()
    );
    if verbosity == Verbosity::Basic {
        return out;
    }
    for rl in &batch.data().resource_logs {
        let attrs = rl.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let _ = writeln!(out, "Resource {}", render_attributes(attrs));
        for sl in &rl.scope_logs {
            if let Some(scope) = &sl.scope {
                let _ = writeln!(out, "  Scope {} {}", scope.name, scope.version);
            }
            for r in &sl.log_records {
                let severity = if r.severity_text.is_empty() {
                    format!("SEVERITY{}", r.severity_number)
                } else {
                    r.severity_text.clone()
                };
                let _ = writeln!(out, "    {severity} {}", render_value(r.body.as_ref()));
                if verbosity == Verbosity::Detailed {
                    let _ = writeln!(
                        out,
                        "      t={} trace={} span={} {}",
                        r.time_unix_nano,
                        hex(&r.trace_id),
                        hex(&r.span_id),
                        render_attributes(&r.attributes)
                    );
                }
            }
        }
    }
    out
}

/// Render a trace batch as text at the given verbosity.
pub fn render_traces(batch: &Batch<Traces>, verbosity: Verbosity) -> String {
    let mut out = String::new();
    let resources = batch.data().resource_spans.len();
    let _ = writeln!(
        out,
        "Traces: {} resource(s), {} span(s)",
        resources,
        batch.item_count()
    );
    if verbosity == Verbosity::Basic {
        return out;
    }
    for rs in &batch.data().resource_spans {
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
        hex(&span.trace_id),
        hex(&span.span_id),
        if span.parent_span_id.is_empty() {
            "-".to_string()
        } else {
            hex(&span.parent_span_id)
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
            hex(&link.trace_id),
            hex(&link.span_id),
            render_attributes(&link.attributes)
        );
    }
}

/// Lowercase hex of ids and byte values.
fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
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
        Some(Value::BytesValue(b)) => format!("0x{}", hex(b)),
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
    use otel_pipeline_core::testing::{generate_logs, generate_metrics, generate_traces};

    #[test]
    fn metrics_and_logs_print_one_line_per_point_and_record() {
        let batch = Batch::<Metrics>::new(generate_metrics(2, 3, 1));
        let text = render_metrics(&batch, Verbosity::Normal);
        assert!(
            text.starts_with("Metrics: 1 resource(s), 2 metric(s), 6 data point(s)\n"),
            "{text}"
        );
        assert!(text.contains("    orders.metric.0 Gauge [1]\n"), "{text}");
        assert!(
            text.contains("    orders.metric.1 Sum (monotonic) [1]\n"),
            "{text}"
        );
        assert_eq!(
            text.lines().filter(|l| l.contains("{http.route=")).count(),
            6,
            "{text}"
        );
        assert_eq!(render_metrics(&batch, Verbosity::Basic).lines().count(), 1);

        let batch = Batch::<Logs>::new(generate_logs(4, 1));
        let text = render_logs(&batch, Verbosity::Detailed);
        assert!(
            text.starts_with("Logs: 1 resource(s), 4 log record(s)\n"),
            "{text}"
        );
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("    ERROR \"order "))
                .count(),
            1,
            "{text}"
        );
        assert_eq!(
            text.lines().filter(|l| l.starts_with("      t=")).count(),
            4,
            "{text}"
        );
    }

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

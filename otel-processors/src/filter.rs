//! The `filter` processor: drop spans and span events that match OTTL conditions.
//!
//! ```yaml
//! filter/health:
//!   error_mode: ignore
//!   traces:
//!     span:
//!       - 'attributes["http.route"] == "/healthz"'
//!       - 'IsMatch(name, "^GET /(ready|live)z?$")'
//!     spanevent:
//!       - 'name == "debug"'
//! ```
//!
//! A span is dropped when **any** `span` condition is true; of the spans kept, events for
//! which any `spanevent` condition is true are removed. Conditions are parsed when the
//! pipeline is built: a bad one is a configuration error naming the condition and column.
//! Dropped spans count as `otelcol_processor_dropped_spans{reason="filtered"}`, dropped
//! events as `otelcol_processor_dropped_span_events{reason="filtered"}`.
//!
//! `error_mode` says what an evaluation error does (a comparison of a string with a number,
//! say): `propagate` (the default, as the Collector's) rejects the batch; `ignore` and
//! `silent` keep the span as if the condition were false. Errors are counted either way
//! (`otelcol_processor_failed_requests{reason="condition_error"}`).

use std::sync::Arc;

use otel_pipeline_core::{
    Batch, BuildError, ComponentContext, ComponentId, ComponentTelemetry, ConsumeError, Consumer,
    Processor, Traces,
};
use serde::Deserialize;

use crate::attributes::{
    AttrMatches, AttributeMatch, MatchConfig, MatchType, Matcher, SpanFilter, all_match,
    attr_matches,
};
use crate::condition::{Condition, EvalError, SpanContext};
use crate::config::ConfigError;
use otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceRequest;

/// What an evaluation error does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorMode {
    /// Reject the whole batch (default).
    #[default]
    Propagate,
    /// Treat the condition as false; count the error.
    Ignore,
    /// As `ignore`.
    Silent,
}

/// Conditions on traces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceConditions {
    /// Drop a span when any of these is true.
    #[serde(default)]
    pub span: Vec<String>,
    /// Drop a span event when any of these is true.
    #[serde(default)]
    pub spanevent: Vec<String>,
}

/// Configuration of the filter processor.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// What an evaluation error does.
    #[serde(default)]
    pub error_mode: ErrorMode,
    /// Trace conditions.
    #[serde(default)]
    pub traces: TraceConditions,
    /// The Collector's older way for spans: keep only spans that match `include`, and
    /// drop those that match `exclude` (services, span names, attributes, resources,
    /// libraries, span kinds; strict or regexp). Not together with `traces`.
    #[serde(default)]
    pub spans: Option<SpanMatching>,
    /// The older way for span events: keep only events that match `include`, drop those
    /// that match `exclude` (event names and attributes). Not together with `traces`.
    #[serde(default)]
    pub span_events: Option<EventMatching>,
    /// Metrics conditions: accepted by the Collector, not supported here yet (refused
    /// with a clear error).
    #[serde(default)]
    pub metrics: Option<serde::de::IgnoredAny>,
    /// Logs conditions: not supported here yet (refused with a clear error).
    #[serde(default)]
    pub logs: Option<serde::de::IgnoredAny>,
    /// Profiles conditions: not supported (refused with a clear error).
    #[serde(default)]
    pub profiles: Option<serde::de::IgnoredAny>,
}

/// `span_events.include` / `span_events.exclude`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventMatching {
    /// Only events that match are kept.
    #[serde(default)]
    pub include: Option<EventMatch>,
    /// Events that match are dropped.
    #[serde(default)]
    pub exclude: Option<EventMatch>,
}

/// Which span events match. All given properties must match.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventMatch {
    /// Strict or regexp.
    #[serde(default)]
    pub match_type: MatchType,
    /// The event name is one of these.
    #[serde(default)]
    pub event_names: Vec<String>,
    /// Every listed event attribute matches.
    #[serde(default)]
    pub event_attributes: Vec<AttributeMatch>,
}

/// An [`EventMatch`], compiled.
struct EventFilter {
    names: Option<Matcher>,
    attributes: AttrMatches,
}

impl std::fmt::Debug for EventFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventFilter").finish_non_exhaustive()
    }
}

impl EventFilter {
    fn new(m: &EventMatch, path: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            names: Matcher::new(m.match_type, &m.event_names)
                .map_err(|e| ConfigError::new(format!("{path}.event_names"), e))?,
            attributes: attr_matches(&m.event_attributes, m.match_type, "event_attributes")
                .map_err(|e| ConfigError::new(format!("{path}.event_attributes"), e))?,
        })
    }

    fn matches(&self, event: &otel_pipeline_core::proto::trace::v1::span::Event) -> bool {
        self.names.as_ref().is_none_or(|n| n.is_match(&event.name))
            && all_match(&self.attributes, &event.attributes)
    }
}

/// `spans.include` / `spans.exclude`, as the attributes processor matches spans.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanMatching {
    /// Only spans that match are kept.
    #[serde(default)]
    pub include: Option<MatchConfig>,
    /// Spans that match are dropped.
    #[serde(default)]
    pub exclude: Option<MatchConfig>,
}

/// The filter processor.
///
/// ```
/// use otel_pipeline_core::{Pipeline, testing::InMemoryExporter};
/// use otel_processors::filter::{FilterConfig, FilterProcessor, TraceConditions};
/// let filter = FilterProcessor::new(FilterConfig {
///     traces: TraceConditions { span: vec![r#"attributes["http.route"] == "/healthz""#.into()], ..Default::default() },
///     ..Default::default()
/// });
/// let (exporter, _) = InMemoryExporter::new();
/// assert!(Pipeline::traces().processor(filter).exporter(exporter).build().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct FilterProcessor {
    id: ComponentId,
    config: FilterConfig,
}

impl FilterProcessor {
    /// A filter with id `filter`.
    pub fn new(config: FilterConfig) -> Self {
        Self {
            id: ComponentId::new("filter"),
            config,
        }
    }

    /// Use another id (`filter/health`).
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }
}

/// Parse a list of conditions; errors name `path[i]` and the column.
pub(crate) fn parse_all(path: &str, texts: &[String]) -> Result<Vec<Condition>, ConfigError> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Condition::parse(t)
                .map_err(|e| ConfigError::new(format!("{path}[{i}]"), format!("{e} in `{t}`")))
        })
        .collect()
}

/// A filter configuration, compiled: apply it to a batch in place.
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    spans: Vec<Condition>,
    include: Option<Arc<SpanFilter>>,
    exclude: Option<Arc<SpanFilter>>,
    event_include: Option<Arc<EventFilter>>,
    event_exclude: Option<Arc<EventFilter>>,
    events: Vec<Condition>,
    error_mode: ErrorMode,
}

/// What [`CompiledFilter::apply`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filtered {
    /// Spans removed.
    pub spans: usize,
    /// Span events removed.
    pub events: usize,
    /// Evaluation errors (under `ignore`/`silent`).
    pub errors: usize,
}

impl FilterConfig {
    /// Parse every condition; errors name `traces.span[i]` and the column.
    pub fn compile(&self) -> Result<CompiledFilter, ConfigError> {
        for (key, given) in [
            ("metrics", self.metrics.is_some()),
            ("logs", self.logs.is_some()),
            ("profiles", self.profiles.is_some()),
        ] {
            if given {
                return Err(ConfigError::new(
                    key,
                    format!("filtering {key} is not supported yet: this filter handles traces"),
                ));
            }
        }
        let legacy = self.spans.clone().unwrap_or_default();
        let ottl = !self.traces.span.is_empty() || !self.traces.spanevent.is_empty();
        if self.span_events.is_some() && ottl {
            return Err(ConfigError::new(
                "span_events",
                "use either `span_events` (include/exclude) or `traces` (OTTL conditions), not both",
            ));
        }
        let events = self.span_events.clone().unwrap_or_default();
        let event_filter = |m: &Option<EventMatch>, path: &str| {
            m.as_ref()
                .map(|m| EventFilter::new(m, path).map(Arc::new))
                .transpose()
        };
        if self.spans.is_some() && ottl {
            return Err(ConfigError::new(
                "spans",
                "use either `spans` (include/exclude) or `traces` (OTTL conditions), not both",
            ));
        }
        let matcher = |c: &Option<MatchConfig>, path: &str| {
            c.as_ref()
                .map(|m| {
                    SpanFilter::new(m)
                        .map(Arc::new)
                        .map_err(|e| ConfigError::new(path, e))
                })
                .transpose()
        };
        Ok(CompiledFilter {
            include: matcher(&legacy.include, "spans.include")?,
            event_include: event_filter(&events.include, "span_events.include")?,
            event_exclude: event_filter(&events.exclude, "span_events.exclude")?,
            exclude: matcher(&legacy.exclude, "spans.exclude")?,
            spans: parse_all("traces.span", &self.traces.span)?,
            events: parse_all("traces.spanevent", &self.traces.spanevent)?,
            error_mode: self.error_mode,
        })
    }
}

/// The consumer built by [`FilterProcessor`].
#[derive(Debug)]
pub struct FilterConsumer<N> {
    filter: CompiledFilter,
    telemetry: Arc<ComponentTelemetry>,
    next: N,
}

impl Processor<Traces> for FilterProcessor {
    type Consumer<N: Consumer<Traces>> = FilterConsumer<N>;

    fn id(&self) -> ComponentId {
        self.id.clone()
    }

    fn build<N: Consumer<Traces>>(
        self,
        next: N,
        ctx: &mut ComponentContext<'_>,
    ) -> Result<FilterConsumer<N>, BuildError> {
        let filter = self
            .config
            .compile()
            .map_err(|e| ctx.invalid(e.path, e.message))?;
        Ok(FilterConsumer {
            filter,
            telemetry: ctx.telemetry(),
            next,
        })
    }
}

/// Any condition true? Evaluation errors follow `mode`.
fn any(
    conds: &[Condition],
    cx: &SpanContext<'_>,
    mode: ErrorMode,
    errors: &mut usize,
) -> Result<bool, EvalError> {
    for c in conds {
        match c.eval(cx) {
            Ok(true) => return Ok(true),
            Ok(false) => {}
            Err(e) => {
                *errors += 1;
                if mode == ErrorMode::Propagate {
                    return Err(EvalError(format!("`{}`: {e}", c.text())));
                }
            }
        }
    }
    Ok(false)
}

impl CompiledFilter {
    /// Filter `data` in place. Under `error_mode: propagate` an evaluation error stops and
    /// is returned (the batch may be partly filtered).
    pub fn apply(&self, data: &mut ExportTraceServiceRequest) -> Result<Filtered, EvalError> {
        let (mut spans_dropped, mut events_dropped, mut errors) = (0, 0, 0);
        let mode = self.error_mode;
        for rs in &mut data.resource_spans {
            let resource = rs.resource.as_ref();
            for ss in &mut rs.scope_spans {
                let scope = ss.scope.as_ref();
                let before = ss.spans.len();
                let mut failure = None;
                ss.spans.retain(|span| {
                    if failure.is_some() {
                        return true;
                    }
                    if self
                        .include
                        .as_ref()
                        .is_some_and(|f| !f.matches_in(span, resource, scope))
                        || self
                            .exclude
                            .as_ref()
                            .is_some_and(|f| f.matches_in(span, resource, scope))
                    {
                        return false;
                    }
                    let cx = SpanContext {
                        span,
                        event: None,
                        resource,
                        scope,
                    };
                    match any(&self.spans, &cx, mode, &mut errors) {
                        Ok(drop) => !drop,
                        Err(e) => {
                            failure = Some(e);
                            true
                        }
                    }
                });
                if let Some(e) = failure {
                    return Err(e);
                }
                spans_dropped += before - ss.spans.len();
                if self.event_include.is_some() || self.event_exclude.is_some() {
                    for span in &mut ss.spans {
                        let before = span.events.len();
                        span.events.retain(|e| {
                            self.event_include.as_ref().is_none_or(|f| f.matches(e))
                                && !self.event_exclude.as_ref().is_some_and(|f| f.matches(e))
                        });
                        events_dropped += before - span.events.len();
                    }
                }
                if self.events.is_empty() {
                    continue;
                }
                for span in &mut ss.spans {
                    let mut events = std::mem::take(&mut span.events);
                    let before = events.len();
                    let mut failure = None;
                    events.retain(|event| {
                        let cx = SpanContext {
                            span,
                            event: Some(event),
                            resource,
                            scope,
                        };
                        match any(&self.events, &cx, mode, &mut errors) {
                            Ok(drop) => !drop,
                            Err(e) => {
                                failure.get_or_insert(e);
                                true
                            }
                        }
                    });
                    events_dropped += before - events.len();
                    span.events = events;
                    if let Some(e) = failure {
                        return Err(e);
                    }
                }
            }
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        }
        data.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
        Ok(Filtered {
            spans: spans_dropped,
            events: events_dropped,
            errors,
        })
    }
}

impl<N: Consumer<Traces>> Consumer<Traces> for FilterConsumer<N> {
    async fn consume(&self, mut batch: Batch<Traces>) -> Result<(), ConsumeError<Traces>> {
        let n = batch.item_count();
        match self.filter.apply(&mut batch.data) {
            Ok(f) => {
                self.telemetry.add_dropped("filtered", f.spans);
                self.telemetry.add_dropped_events("filtered", f.events);
                self.telemetry
                    .add_failed_requests("condition_error", f.errors);
                if batch.item_count() == 0 {
                    return Ok(());
                }
                self.next.consume(batch).await
            }
            Err(e) => {
                self.telemetry.add_failed_request("condition_error");
                self.telemetry.add_dropped("condition_error", n);
                Err(ConsumeError::rejected(
                    n,
                    format!("filter condition failed: {e}"),
                ))
            }
        }
    }
}

//! The `filter` processor: drop spans, span events, metrics, data points, log records or
//! whole resources that match OTTL conditions (or the Collector's older include/exclude
//! properties).
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
//!   metrics:
//!     metric:
//!       - 'name == "http.server.active_requests" and type == METRIC_DATA_TYPE_GAUGE'
//!     datapoint:
//!       - 'attributes["http.route"] == "/healthz"'
//!   logs:
//!     log_record:
//!       - 'severity_number < SEVERITY_NUMBER_INFO'
//!       - 'IsMatch(body, "^GET /healthz")'
//! ```
//!
//! An item is dropped when **any** of its conditions is true: `resource` conditions (under
//! `traces`, `metrics` or `logs`) drop a whole resource with everything in it; `span`,
//! `metric` and `log_record` drop one item; `spanevent` drops events of the spans kept,
//! and `datapoint` data points of the metrics kept. A metric left with no data point is
//! removed, as are scopes and resources left empty. Conditions are parsed when the
//! pipeline is built: a bad one is a configuration error naming the condition and column.
//! Dropped items count as `otelcol_processor_dropped_{spans,metric_points,log_records}`
//! with `reason="filtered"`, dropped events as
//! `otelcol_processor_dropped_span_events{reason="filtered"}`.
//!
//! The older properties, under `include` (keep only what matches) and `exclude` (drop what
//! matches), work as the Collector's:
//! - `logs`: `match_type` (`strict` or `regexp`), `resource_attributes`,
//!   `record_attributes`, `severity_texts`, `severity_number: {min, match_undefined}` and
//!   `bodies`; every property given must match.
//! - `metrics`: `match_type` `strict` or `regexp` with `metric_names` (and
//!   `resource_attributes`), or `expr` with `expressions` in the `expr` language's common
//!   form (`Label("k") == "v"`, `HasLabel("k")`, `MetricName`, `MetricType`, `&&`, `||`,
//!   `!`), true when a data point of the metric matches. `regexp` cache settings are
//!   accepted and have no effect: each pattern set is compiled once into one automaton.
//!
//! `error_mode` says what an evaluation error does (a bare path used as a condition that
//! holds no boolean; comparisons never fail, as in the Collector): `propagate` (the default, as the Collector's) rejects the batch; `ignore` and
//! `silent` keep the span as if the condition were false. Errors are counted either way
//! (`otelcol_processor_failed_requests{reason="condition_error"}`).

use std::sync::Arc;

use otel_pipeline_core::{
    Batch, BuildError, ComponentContext, ComponentId, ComponentTelemetry, ConsumeError, Consumer,
    DropReason, Logs, Metrics, Processor, Signal, Traces,
};
use serde::Deserialize;

use crate::attributes::{
    AttrMatches, AttributeMatch, ItemKind, MatchConfig, MatchType, Matcher, SeverityMatch,
    SpanFilter, all_match, attr_matches, body_text, severity_matches,
};
use crate::condition::{
    Condition, Cx, EvalError, Item, SpanBytes, SpanContext, Target, points, severity_number,
};
use crate::config::ConfigError;
use crate::live::LiveRules;
use otel_pipeline_core::proto::collector::logs::v1::ExportLogsServiceRequest;
use otel_pipeline_core::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline_core::proto::common::v1::InstrumentationScope;
use otel_pipeline_core::proto::logs::v1::LogRecord;
use otel_pipeline_core::proto::metrics::v1::{Metric, metric::Data as MetricData};
use otel_pipeline_core::proto::resource::v1::Resource;

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
    /// Drop a resource, with all its spans, when any of these is true.
    #[serde(default)]
    pub resource: Vec<String>,
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
    /// Metric conditions and match properties.
    #[serde(default)]
    pub metrics: MetricFilters,
    /// Log conditions and match properties.
    #[serde(default)]
    pub logs: LogFilters,
    /// Profiles conditions: not supported (refused with a clear error).
    #[serde(default)]
    pub profiles: Option<serde::de::IgnoredAny>,
}

/// Conditions and match properties for metrics.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricFilters {
    /// Drop a resource, with all its metrics, when any of these is true.
    #[serde(default)]
    pub resource: Vec<String>,
    /// Drop a metric when any of these is true.
    #[serde(default)]
    pub metric: Vec<String>,
    /// Drop a data point when any of these is true.
    #[serde(default)]
    pub datapoint: Vec<String>,
    /// Keep only metrics that match (the older way; not with conditions).
    #[serde(default)]
    pub include: Option<MetricMatch>,
    /// Drop metrics that match (the older way; not with conditions).
    #[serde(default)]
    pub exclude: Option<MetricMatch>,
    /// The Collector's regexp cache settings: accepted, no effect here.
    #[serde(default)]
    pub regexp: Option<RegexpCache>,
}

/// The Collector's `regexp` cache settings (`cacheenabled`, `cachemaxnumentries`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexpCache {
    /// Accepted; no effect.
    #[serde(default)]
    pub cacheenabled: bool,
    /// Accepted; no effect.
    #[serde(default)]
    pub cachemaxnumentries: usize,
}

/// How metric properties match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricMatchType {
    /// Exact names (default).
    #[default]
    Strict,
    /// Regular expressions on names.
    Regexp,
    /// `expressions` in the `expr` language's common form.
    Expr,
}

/// Which metrics match, the older way.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricMatch {
    /// Strict, regexp or expr.
    #[serde(default)]
    pub match_type: MetricMatchType,
    /// The metric's name is one of these (strict or regexp).
    #[serde(default)]
    pub metric_names: Vec<String>,
    /// For `expr`: true when a data point satisfies any of these.
    #[serde(default)]
    pub expressions: Vec<String>,
    /// Every listed resource attribute matches (strict or regexp).
    #[serde(default)]
    pub resource_attributes: Vec<AttributeMatch>,
    /// The Collector's regexp cache settings: accepted, no effect here.
    #[serde(default)]
    pub regexp: Option<RegexpCache>,
}

/// Conditions and match properties for logs.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFilters {
    /// Drop a resource, with all its log records, when any of these is true.
    #[serde(default)]
    pub resource: Vec<String>,
    /// Drop a log record when any of these is true.
    #[serde(default)]
    pub log_record: Vec<String>,
    /// Keep only log records that match (the older way; not with conditions).
    #[serde(default)]
    pub include: Option<LogMatch>,
    /// Drop log records that match (the older way; not with conditions).
    #[serde(default)]
    pub exclude: Option<LogMatch>,
}

/// Which log records match, the older way. Every property given must match; with none
/// given, the match is ignored (as the Collector does).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogMatch {
    /// Strict or regexp.
    #[serde(default)]
    pub match_type: MatchType,
    /// Every listed resource attribute matches.
    #[serde(default)]
    pub resource_attributes: Vec<AttributeMatch>,
    /// Every listed record attribute matches.
    #[serde(default)]
    pub record_attributes: Vec<AttributeMatch>,
    /// The severity text is one of these.
    #[serde(default)]
    pub severity_texts: Vec<String>,
    /// The severity number is at least `min`.
    #[serde(default)]
    pub severity_number: Option<SeverityMatch>,
    /// The body (a string, or the text form of a number or boolean) is one of these.
    #[serde(default)]
    pub bodies: Vec<String>,
}

/// A [`LogMatch`], compiled.
#[derive(Debug)]
struct LogMatcher {
    resource: AttrMatches,
    record: AttrMatches,
    severity_texts: Option<Matcher>,
    severity: Option<(i32, bool)>,
    bodies: Option<Matcher>,
}

impl LogMatcher {
    fn new(m: &LogMatch, path: &str) -> Result<Option<Self>, ConfigError> {
        let at = |field: &str| format!("{path}.{field}");
        // With no `min`, severity is not matched on (as the Collector reads it).
        let severity = match m.severity_number.as_ref().filter(|s| !s.min.is_empty()) {
            None => None,
            Some(s) => {
                let min = {
                    severity_number(&s.min).ok_or_else(|| {
                        ConfigError::new(
                            at("severity_number.min"),
                            format!(
                                "`{}` is not a severity: use TRACE, DEBUG, INFO, WARN, ERROR or FATAL (with 2 to 4 after it), or 1 to 24",
                                s.min
                            ),
                        )
                    })?
                };
                Some((min, s.match_undefined))
            }
        };
        let out = Self {
            resource: attr_matches(&m.resource_attributes, m.match_type, "resource_attributes")
                .map_err(|e| ConfigError::new(at("resource_attributes"), e))?,
            record: attr_matches(&m.record_attributes, m.match_type, "record_attributes")
                .map_err(|e| ConfigError::new(at("record_attributes"), e))?,
            severity_texts: Matcher::new(m.match_type, &m.severity_texts)
                .map_err(|e| ConfigError::new(at("severity_texts"), e))?,
            severity,
            bodies: Matcher::new(m.match_type, &m.bodies)
                .map_err(|e| ConfigError::new(at("bodies"), e))?,
        };
        let empty = out.resource.is_empty()
            && out.record.is_empty()
            && out.severity_texts.is_none()
            && out.severity.is_none()
            && out.bodies.is_none();
        Ok((!empty).then_some(out))
    }

    fn matches(&self, record: &LogRecord, resource: Option<&Resource>) -> bool {
        if !self.resource.is_empty()
            && !all_match(&self.resource, resource.map_or(&[][..], |r| &r.attributes))
        {
            return false;
        }
        severity_matches(record, self.severity)
            && self
                .severity_texts
                .as_ref()
                .is_none_or(|m| m.is_match(&record.severity_text))
            && self
                .bodies
                .as_ref()
                .is_none_or(|m| body_text(record).is_some_and(|b| m.is_match(&b)))
            && all_match(&self.record, &record.attributes)
    }
}

/// A [`MetricMatch`], compiled.
#[derive(Debug)]
enum MetricMatcher {
    Names {
        names: Option<Matcher>,
        resource: AttrMatches,
    },
    /// True when a data point satisfies any expression.
    Expr(Vec<Condition>),
}

impl MetricMatcher {
    fn new(m: &MetricMatch, path: &str) -> Result<Option<Self>, ConfigError> {
        let at = |field: &str| format!("{path}.{field}");
        if m.match_type == MetricMatchType::Expr {
            if !m.metric_names.is_empty() {
                return Err(ConfigError::new(
                    at("metric_names"),
                    "match_type expr takes `expressions`, not `metric_names`",
                ));
            }
            let conds = m
                .expressions
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    Condition::parse_expr_language(t).map_err(|e| {
                        ConfigError::new(
                            format!("{path}.expressions[{i}]"),
                            format!("{e} in `{t}`"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok((!conds.is_empty()).then_some(Self::Expr(conds)));
        }
        if !m.expressions.is_empty() {
            return Err(ConfigError::new(
                at("expressions"),
                "`expressions` need match_type: expr",
            ));
        }
        let match_type = if m.match_type == MetricMatchType::Regexp {
            MatchType::Regexp
        } else {
            MatchType::Strict
        };
        let names = Matcher::new(match_type, &m.metric_names)
            .map_err(|e| ConfigError::new(at("metric_names"), e))?;
        let resource = attr_matches(&m.resource_attributes, match_type, "resource_attributes")
            .map_err(|e| ConfigError::new(at("resource_attributes"), e))?;
        Ok((names.is_some() || !resource.is_empty()).then_some(Self::Names { names, resource }))
    }

    fn matches(
        &self,
        metric: &Metric,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        errors: &mut usize,
    ) -> bool {
        match self {
            Self::Names { names, resource: r } => {
                names.as_ref().is_none_or(|n| n.is_match(&metric.name))
                    && (r.is_empty()
                        || all_match(r, resource.map_or(&[][..], |res| &res.attributes)))
            }
            Self::Expr(conds) => points(metric).any(|p| {
                let cx = Cx {
                    item: Item::Point(p, metric),
                    resource,
                    scope,
                };
                conds.iter().any(|c| {
                    c.eval_in(&cx).unwrap_or_else(|_| {
                        *errors += 1;
                        false
                    })
                })
            }),
        }
    }
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
    live: Arc<LiveRules<CompiledFilter>>,
}

/// Changes a built filter's conditions while it runs: [`FilterProcessor::handle`].
#[derive(Debug, Clone)]
pub struct FilterHandle(Arc<LiveRules<CompiledFilter>>);

impl FilterHandle {
    /// Filter with `config` from the next batch on. A configuration that does not compile
    /// is refused with the errors of a build, and the running conditions stay.
    pub fn update(&self, config: &FilterConfig) -> Result<(), ConfigError> {
        let compiled = config.compile()?;
        if self.0.replace(compiled) {
            Ok(())
        } else {
            Err(ConfigError::new(
                "",
                "the filter is not built yet: nothing to update",
            ))
        }
    }
}

impl FilterProcessor {
    /// A filter with id `filter`.
    pub fn new(config: FilterConfig) -> Self {
        Self {
            id: ComponentId::new("filter"),
            config,
            live: Arc::default(),
        }
    }

    /// A handle that changes the filter's conditions once it is built.
    pub fn handle(&self) -> FilterHandle {
        FilterHandle(Arc::clone(&self.live))
    }

    /// Use another id (`filter/health`).
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }
}

/// Parse a list of span conditions; errors name `path[i]` and the column.
pub(crate) fn parse_all(path: &str, texts: &[String]) -> Result<Vec<Condition>, ConfigError> {
    parse_for(path, texts, Target::Span)
}

/// Parse a list of conditions on `target` items; errors name `path[i]` and the column.
fn parse_for(path: &str, texts: &[String], target: Target) -> Result<Vec<Condition>, ConfigError> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Condition::parse_for(t, target)
                .map_err(|e| ConfigError::new(format!("{path}[{i}]"), format!("{e} in `{t}`")))
        })
        .collect()
}

/// A filter configuration, compiled: apply it to a batch in place.
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    trace_resources: Vec<Condition>,
    metric_resources: Vec<Condition>,
    log_resources: Vec<Condition>,
    metric_conds: Vec<Condition>,
    datapoints: Vec<Condition>,
    log_records: Vec<Condition>,
    metric_include: Option<Arc<MetricMatcher>>,
    metric_exclude: Option<Arc<MetricMatcher>>,
    log_include: Option<Arc<LogMatcher>>,
    log_exclude: Option<Arc<LogMatcher>>,
    spans: Vec<Condition>,
    include: Option<Arc<SpanFilter>>,
    exclude: Option<Arc<SpanFilter>>,
    event_include: Option<Arc<EventFilter>>,
    event_exclude: Option<Arc<EventFilter>>,
    events: Vec<Condition>,
    error_mode: ErrorMode,
    /// When every trace condition reads spans in place: the attribute keys they read
    /// (a span whose value for one of them is not a scalar is decoded). `None`: trace
    /// batches are filtered decoded.
    in_place: Option<Arc<[String]>>,
}

/// A request filtered in its bytes ([`CompiledFilter::apply_encoded`]): the new request
/// (`None` when nothing was removed) and what was removed.
pub type FilteredRequest = (Option<Vec<u8>>, Filtered);

/// What [`CompiledFilter::apply`] (or `apply_metrics`, `apply_logs`) removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filtered {
    /// Items removed: spans, metric data points or log records.
    pub spans: usize,
    /// Span events removed.
    pub events: usize,
    /// Evaluation errors (under `ignore`/`silent`).
    pub errors: usize,
}

impl FilterConfig {
    /// Parse every condition and compile every match; errors name the setting
    /// (`traces.span[i]`, `logs.include.severity_number.min`, ...) and, for a condition,
    /// the column.
    pub fn compile(&self) -> Result<CompiledFilter, ConfigError> {
        if self.profiles.is_some() {
            return Err(ConfigError::new(
                "profiles",
                "the profiles signal is not supported: this filter handles traces, metrics and logs",
            ));
        }
        let m = &self.metrics;
        let metric_conditions =
            !m.resource.is_empty() || !m.metric.is_empty() || !m.datapoint.is_empty();
        if metric_conditions && (m.include.is_some() || m.exclude.is_some()) {
            return Err(ConfigError::new(
                "metrics",
                "use either `include`/`exclude` or the conditions (`resource`, `metric`, `datapoint`), not both",
            ));
        }
        let l = &self.logs;
        if (!l.resource.is_empty() || !l.log_record.is_empty())
            && (l.include.is_some() || l.exclude.is_some())
        {
            return Err(ConfigError::new(
                "logs",
                "use either `include`/`exclude` or the conditions (`resource`, `log_record`), not both",
            ));
        }
        let metric_matcher = |c: &Option<MetricMatch>, path: &str| {
            Ok::<_, ConfigError>(match c {
                None => None,
                Some(c) => MetricMatcher::new(c, path)?.map(Arc::new),
            })
        };
        let log_matcher = |c: &Option<LogMatch>, path: &str| {
            Ok::<_, ConfigError>(match c {
                None => None,
                Some(c) => LogMatcher::new(c, path)?.map(Arc::new),
            })
        };
        let metric_include = metric_matcher(&m.include, "metrics.include")?;
        let metric_exclude = metric_matcher(&m.exclude, "metrics.exclude")?;
        let log_include = log_matcher(&l.include, "logs.include")?;
        let log_exclude = log_matcher(&l.exclude, "logs.exclude")?;
        let trace_resources =
            parse_for("traces.resource", &self.traces.resource, Target::Resource)?;
        let metric_resources = parse_for("metrics.resource", &m.resource, Target::Resource)?;
        let log_resources = parse_for("logs.resource", &l.resource, Target::Resource)?;
        let metric_conds = parse_for("metrics.metric", &m.metric, Target::Metric)?;
        let datapoints = parse_for("metrics.datapoint", &m.datapoint, Target::DataPoint)?;
        let log_records = parse_for("logs.log_record", &l.log_record, Target::Log)?;
        let legacy = self.spans.clone().unwrap_or_default();
        let ottl = !self.traces.span.is_empty()
            || !self.traces.spanevent.is_empty()
            || !self.traces.resource.is_empty();
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
                        .and_then(|f| f.check_for(ItemKind::Span).map(|()| f))
                        .map(Arc::new)
                        .map_err(|e| ConfigError::new(path, e))
                })
                .transpose()
        };
        let spans = parse_all("traces.span", &self.traces.span)?;
        let events_conds = parse_all("traces.spanevent", &self.traces.spanevent)?;
        let in_place = (legacy.include.is_none()
            && legacy.exclude.is_none()
            && events.include.is_none()
            && events.exclude.is_none()
            && events_conds.is_empty()
            && spans.iter().all(Condition::reads_in_place))
        .then(|| {
            let mut keys = Vec::new();
            for c in &spans {
                c.attribute_keys(&mut keys);
            }
            keys.into()
        });
        Ok(CompiledFilter {
            in_place,
            trace_resources,
            metric_resources,
            log_resources,
            metric_conds,
            datapoints,
            log_records,
            metric_include,
            metric_exclude,
            log_include,
            log_exclude,
            include: matcher(&legacy.include, "spans.include")?,
            event_include: event_filter(&events.include, "span_events.include")?,
            event_exclude: event_filter(&events.exclude, "span_events.exclude")?,
            exclude: matcher(&legacy.exclude, "spans.exclude")?,
            spans,
            events: events_conds,
            error_mode: self.error_mode,
        })
    }
}

/// The consumer built by [`FilterProcessor`], for signal `S`.
pub struct FilterConsumer<S, N> {
    filter: Arc<parking_lot::RwLock<Arc<CompiledFilter>>>,
    telemetry: Arc<ComponentTelemetry>,
    next: N,
    signal: std::marker::PhantomData<fn(S)>,
}

impl<S, N: std::fmt::Debug> std::fmt::Debug for FilterConsumer<S, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterConsumer")
            .field("filter", &self.filter)
            .field("next", &self.next)
            .finish()
    }
}

/// The filter for one signal: how to apply it, and the same consumer around it.
macro_rules! filter_signal {
    ($signal:ty, $apply:ident) => {
        impl Processor<$signal> for FilterProcessor {
            type Consumer<N: Consumer<$signal>> = FilterConsumer<$signal, N>;

            fn id(&self) -> ComponentId {
                self.id.clone()
            }

            fn build<N: Consumer<$signal>>(
                self,
                next: N,
                ctx: &mut ComponentContext<'_>,
            ) -> Result<FilterConsumer<$signal, N>, BuildError> {
                let filter = self
                    .config
                    .compile()
                    .map_err(|e| ctx.invalid(e.path, e.message))?;
                Ok(FilterConsumer {
                    filter: self.live.install(filter),
                    telemetry: ctx.telemetry(),
                    next,
                    signal: std::marker::PhantomData,
                })
            }
        }

        impl<N: Consumer<$signal>> Consumer<$signal> for FilterConsumer<$signal, N> {
            async fn consume(
                &self,
                mut batch: Batch<$signal>,
            ) -> Result<(), ConsumeError<$signal>> {
                let n = batch.item_count();
                let filter = Arc::clone(&*self.filter.read());
                let outcome = match <$signal as InPlace>::filter_in_place(&filter, &mut batch) {
                    Some(outcome) => outcome,
                    None => filter.$apply(batch.data_mut()),
                };
                consumed::<$signal>(&self.telemetry, n, outcome)?;
                if batch.item_count() == 0 {
                    return Ok(());
                }
                self.next.consume(batch).await
            }
        }
    };
}

/// Filtering a batch still in its bytes, where the signal and the conditions allow it.
trait InPlace: Signal + Sized {
    /// `None`: filter it decoded.
    fn filter_in_place(
        _filter: &CompiledFilter,
        _batch: &mut Batch<Self>,
    ) -> Option<Result<Filtered, EvalError>> {
        None
    }
}

impl InPlace for Metrics {}
impl InPlace for Logs {}

impl InPlace for Traces {
    fn filter_in_place(
        filter: &CompiledFilter,
        batch: &mut Batch<Traces>,
    ) -> Option<Result<Filtered, EvalError>> {
        let keys = filter.in_place.as_ref()?;
        let bytes = batch.encoded()?.clone();
        Some(match filter.apply_bytes(keys, &bytes) {
            Ok((None, f)) => Ok(f),
            Ok((Some(cut), f)) => match Batch::<Traces>::from_encoded(cut.into()) {
                Ok(mut b) => {
                    b.client = batch.client.take();
                    *batch = b;
                    Ok(f)
                }
                Err(e) => Err(EvalError(format!(
                    "the filtered request does not check: {e}"
                ))),
            },
            Err(e) => Err(e),
        })
    }
}

filter_signal!(Traces, apply);
filter_signal!(Metrics, apply_metrics);
filter_signal!(Logs, apply_logs);

/// Count what a filter pass removed; an evaluation error under `propagate` rejects the
/// batch's `n` items.
fn consumed<S: Signal>(
    telemetry: &ComponentTelemetry,
    n: usize,
    outcome: Result<Filtered, EvalError>,
) -> Result<(), ConsumeError<S>> {
    match outcome {
        Ok(f) => {
            telemetry.add_dropped(DropReason::FILTERED, f.spans);
            telemetry.add_dropped_events(DropReason::FILTERED, f.events);
            telemetry.add_failed_requests("condition_error", f.errors);
            Ok(())
        }
        Err(e) => {
            telemetry.add_failed_request("condition_error");
            telemetry.add_dropped(DropReason::CONDITION_ERROR, n);
            Err(ConsumeError::rejected(
                n,
                format!("filter condition failed: {e}"),
            ))
        }
    }
}

/// The evaluation context of a span (or one of its events).
fn span_cx<'a>(
    span: &'a otel_pipeline_core::proto::trace::v1::Span,
    event: Option<&'a otel_pipeline_core::proto::trace::v1::span::Event>,
    resource: Option<&'a Resource>,
    scope: Option<&'a InstrumentationScope>,
) -> Cx<'a> {
    Cx {
        item: Item::Span(SpanContext {
            span,
            event,
            resource,
            scope,
        }),
        resource,
        scope,
    }
}

/// Any condition true? Evaluation errors follow `mode`.
fn any(
    conds: &[Condition],
    cx: &Cx<'_>,
    mode: ErrorMode,
    errors: &mut usize,
) -> Result<bool, EvalError> {
    for c in conds {
        match c.eval_in(cx) {
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
    /// Remove the resources for which a `resource` condition is true; returns the items
    /// they held.
    fn drop_resources<R>(
        &self,
        conds: &[Condition],
        resources: &mut Vec<R>,
        resource_of: impl Fn(&R) -> Option<&Resource>,
        items_of: impl Fn(&R) -> usize,
        errors: &mut usize,
    ) -> Result<usize, EvalError> {
        if conds.is_empty() {
            return Ok(0);
        }
        let mut dropped = 0;
        let mut failure = None;
        resources.retain(|r| {
            if failure.is_some() {
                return true;
            }
            let cx = Cx {
                item: Item::Resource,
                resource: resource_of(r),
                scope: None,
            };
            match any(conds, &cx, self.error_mode, errors) {
                Ok(true) => {
                    dropped += items_of(r);
                    false
                }
                Ok(false) => true,
                Err(e) => {
                    failure = Some(e);
                    true
                }
            }
        });
        failure.map_or(Ok(dropped), Err)
    }

    /// Filter metrics in place: `resource`, then `include`/`exclude` or `metric`
    /// conditions per metric, then `datapoint` conditions. Counts data points.
    pub fn apply_metrics(
        &self,
        data: &mut ExportMetricsServiceRequest,
    ) -> Result<Filtered, EvalError> {
        let mut out = Filtered::default();
        let mode = self.error_mode;
        out.spans += self.drop_resources(
            &self.metric_resources,
            &mut data.resource_metrics,
            |rm| rm.resource.as_ref(),
            |rm| {
                rm.scope_metrics
                    .iter()
                    .flat_map(|sm| &sm.metrics)
                    .map(|m| points(m).count())
                    .sum()
            },
            &mut out.errors,
        )?;
        for rm in &mut data.resource_metrics {
            let resource = rm.resource.as_ref();
            for sm in &mut rm.scope_metrics {
                let scope = sm.scope.as_ref();
                let mut failure = None;
                let mut dropped = 0;
                sm.metrics.retain_mut(|metric| {
                    if failure.is_some() {
                        return true;
                    }
                    let errors = &mut out.errors;
                    let skip = self
                        .metric_include
                        .as_ref()
                        .is_some_and(|m| !m.matches(metric, resource, scope, errors))
                        || self
                            .metric_exclude
                            .as_ref()
                            .is_some_and(|m| m.matches(metric, resource, scope, errors));
                    let drop = skip || {
                        let cx = Cx {
                            item: Item::Metric(metric),
                            resource,
                            scope,
                        };
                        match any(&self.metric_conds, &cx, mode, errors) {
                            Ok(d) => d,
                            Err(e) => {
                                failure = Some(e);
                                return true;
                            }
                        }
                    };
                    if drop {
                        dropped += points(metric).count();
                        return false;
                    }
                    if self.datapoints.is_empty() {
                        return true;
                    }
                    match self.filter_points(metric, resource, scope, errors) {
                        Ok(n) => dropped += n,
                        Err(e) => {
                            failure = Some(e);
                            return true;
                        }
                    }
                    // A metric left with no data point goes too.
                    points(metric).next().is_some()
                });
                out.spans += dropped;
                if let Some(e) = failure {
                    return Err(e);
                }
            }
            rm.scope_metrics.retain(|sm| !sm.metrics.is_empty());
        }
        data.resource_metrics
            .retain(|rm| !rm.scope_metrics.is_empty());
        Ok(out)
    }

    /// Remove the data points of `metric` that a `datapoint` condition is true for.
    fn filter_points(
        &self,
        metric: &mut Metric,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        errors: &mut usize,
    ) -> Result<usize, EvalError> {
        // Decide on a shared borrow, then remove by index.
        let mut verdicts = Vec::new();
        for p in points(metric) {
            let cx = Cx {
                item: Item::Point(p, metric),
                resource,
                scope,
            };
            verdicts.push(any(&self.datapoints, &cx, self.error_mode, errors)?);
        }
        let dropped = verdicts.iter().filter(|d| **d).count();
        if dropped == 0 {
            return Ok(0);
        }
        fn keep<T>(v: &mut Vec<T>, verdicts: &[bool]) {
            let mut i = 0;
            v.retain(|_| {
                i += 1;
                !verdicts[i - 1]
            });
        }
        match &mut metric.data {
            Some(MetricData::Gauge(g)) => keep(&mut g.data_points, &verdicts),
            Some(MetricData::Sum(s)) => keep(&mut s.data_points, &verdicts),
            Some(MetricData::Histogram(h)) => keep(&mut h.data_points, &verdicts),
            Some(MetricData::ExponentialHistogram(h)) => keep(&mut h.data_points, &verdicts),
            Some(MetricData::Summary(s)) => keep(&mut s.data_points, &verdicts),
            None => {}
        }
        Ok(dropped)
    }

    /// Filter logs in place: `resource`, then `include`/`exclude` or `log_record`
    /// conditions per record. Counts log records.
    pub fn apply_logs(&self, data: &mut ExportLogsServiceRequest) -> Result<Filtered, EvalError> {
        let mut out = Filtered::default();
        let mode = self.error_mode;
        out.spans += self.drop_resources(
            &self.log_resources,
            &mut data.resource_logs,
            |rl| rl.resource.as_ref(),
            |rl| rl.scope_logs.iter().map(|sl| sl.log_records.len()).sum(),
            &mut out.errors,
        )?;
        for rl in &mut data.resource_logs {
            let resource = rl.resource.as_ref();
            for sl in &mut rl.scope_logs {
                let scope = sl.scope.as_ref();
                let before = sl.log_records.len();
                let mut failure = None;
                sl.log_records.retain(|record: &LogRecord| {
                    if failure.is_some() {
                        return true;
                    }
                    if self
                        .log_include
                        .as_ref()
                        .is_some_and(|m| !m.matches(record, resource))
                        || self
                            .log_exclude
                            .as_ref()
                            .is_some_and(|m| m.matches(record, resource))
                    {
                        return false;
                    }
                    let cx = Cx {
                        item: Item::Log(record),
                        resource,
                        scope,
                    };
                    match any(&self.log_records, &cx, mode, &mut out.errors) {
                        Ok(drop) => !drop,
                        Err(e) => {
                            failure = Some(e);
                            true
                        }
                    }
                });
                out.spans += before - sl.log_records.len();
                if let Some(e) = failure {
                    return Err(e);
                }
            }
            rl.scope_logs.retain(|sl| !sl.log_records.is_empty());
        }
        data.resource_logs.retain(|rl| !rl.scope_logs.is_empty());
        Ok(out)
    }

    /// Whether trace batches still in their bytes are filtered in place (every trace
    /// condition reads only what a span's encoding answers: not the whole attribute
    /// map, no span-event conditions, no legacy `spans`/`span_events` matchers).
    pub fn filters_traces_in_place(&self) -> bool {
        self.in_place.is_some()
    }

    /// Filter a protobuf-encoded `ExportTraceServiceRequest` in its bytes, as the
    /// processor does for a batch still in its bytes: `None` when the conditions need the
    /// decoded request ([`Self::filters_traces_in_place`]); else the new request (`None`
    /// when nothing was removed) and what was removed. The request must be one that
    /// decodes (as a receiver checked it).
    ///
    /// ```
    /// use otel_processors::filter::FilterConfig;
    /// use otel_pipeline_core::testing::generate_traces;
    /// use prost::Message;
    ///
    /// let config: FilterConfig = otel_processors::from_yaml(
    ///     "processors.filter",
    ///     "traces:\n  span: ['name == \"GET /api/orders\"']\n",
    /// ).unwrap();
    /// let filter = config.compile().unwrap();
    /// let request = generate_traces(2, 2, 1).encode_to_vec();
    /// let (cut, removed) = filter.apply_encoded(&request).unwrap().unwrap();
    /// assert_eq!(removed.spans, 2); // each trace's root
    /// assert!(cut.is_some_and(|b| b.len() < request.len()));
    /// ```
    pub fn apply_encoded(&self, request: &[u8]) -> Option<Result<FilteredRequest, EvalError>> {
        let keys = self.in_place.as_ref()?;
        Some(self.apply_bytes(keys, request))
    }

    /// Filter an encoded `ExportTraceServiceRequest` as [`Self::apply`] filters the
    /// decoded one, reading spans in place ([`crate::condition`]'s `SpanBytes`: the same
    /// evaluator, another reader) and dropping spans, and then empty scopes and
    /// resources, by cutting bytes. Resources and scopes are decoded (a few fields
    /// each); a span whose value for one of `keys` is not a scalar is decoded. Returns
    /// the new request (`None`: unchanged) and what was removed.
    pub(crate) fn apply_bytes(
        &self,
        keys: &[String],
        bytes: &[u8],
    ) -> Result<FilteredRequest, EvalError> {
        use otel_pipeline_core::wire::{Wire, close_len_field, fields, open_len_field};
        use prost::Message;
        let undecodable = |what: &str| EvalError(format!("a {what} does not decode"));
        // A message field given several times merges: decoding the occurrences end to
        // end is what prost does.
        fn merged<M: Message + Default>(msg: &[u8], field: u32) -> Result<Option<M>, ()> {
            let mut joined: Option<Vec<u8>> = None;
            for (f, w) in fields(msg) {
                if let (true, Wire::Len(b)) = (f == field, w) {
                    joined.get_or_insert_with(Vec::new).extend_from_slice(b);
                }
            }
            joined
                .map(|b| M::decode(&b[..]).map_err(|_| ()))
                .transpose()
        }
        let mode = self.error_mode;
        let (mut dropped, mut errors) = (0usize, 0usize);
        let mut out = Vec::with_capacity(bytes.len());
        let mut changed = false;
        // The values of `keys` in the span at hand, reused span after span.
        let mut values = Vec::with_capacity(keys.len());
        let mut top = fields(bytes);
        // Kept spans are copied once, straight into the new request; a scope or resource
        // left empty is cut back out.
        while let Some((f, w, raw)) = top.next_raw() {
            let (1, Wire::Len(rs)) = (f, w) else {
                out.extend_from_slice(raw);
                continue;
            };
            let resource: Option<Resource> = merged(rs, 1).map_err(|()| undecodable("resource"))?;
            let count = |rs: &[u8]| {
                fields(rs)
                    .filter_map(|(f, w)| match (f, w) {
                        (2, Wire::Len(ss)) => Some(fields(ss).filter(|(f, _)| *f == 2).count()),
                        _ => None,
                    })
                    .sum::<usize>()
            };
            if !self.trace_resources.is_empty() {
                let cx = Cx {
                    item: Item::Resource,
                    resource: resource.as_ref(),
                    scope: None,
                };
                if any(&self.trace_resources, &cx, mode, &mut errors)? {
                    dropped += count(rs);
                    changed = true;
                    continue;
                }
            }
            let rs_start = out.len();
            let rs_open = open_len_field(&mut out, 1, rs.len());
            let mut scopes = 0usize;
            let mut walk = fields(rs);
            while let Some((f, w, raw_ss)) = walk.next_raw() {
                let (2, Wire::Len(ss)) = (f, w) else {
                    out.extend_from_slice(raw_ss);
                    continue;
                };
                let scope: Option<InstrumentationScope> =
                    merged(ss, 1).map_err(|()| undecodable("scope"))?;
                let ss_start = out.len();
                let ss_open = open_len_field(&mut out, 2, ss.len());
                let mut kept = 0usize;
                let mut spans = fields(ss);
                while let Some((f, w, raw_span)) = spans.next_raw() {
                    let (2, Wire::Len(span)) = (f, w) else {
                        out.extend_from_slice(raw_span);
                        continue;
                    };
                    SpanBytes::read_attributes(span, keys, &mut values);
                    let in_place = if SpanBytes::any_not_scalar(&values) {
                        None
                    } else {
                        SpanBytes::new(span, keys, &values)
                    };
                    let drop = match in_place {
                        Some(sb) => {
                            let cx = Cx {
                                item: Item::SpanBytes(sb),
                                resource: resource.as_ref(),
                                scope: scope.as_ref(),
                            };
                            any(&self.spans, &cx, mode, &mut errors)?
                        }
                        None => {
                            let decoded = otel_pipeline_core::proto::trace::v1::Span::decode(span)
                                .map_err(|_| undecodable("span"))?;
                            let cx = span_cx(&decoded, None, resource.as_ref(), scope.as_ref());
                            any(&self.spans, &cx, mode, &mut errors)?
                        }
                    };
                    if drop {
                        dropped += 1;
                        changed = true;
                    } else {
                        kept += 1;
                        out.extend_from_slice(raw_span);
                    }
                }
                // As the decoded path: a scope left without spans goes.
                if kept == 0 {
                    out.truncate(ss_start);
                    changed = true;
                    continue;
                }
                scopes += 1;
                close_len_field(&mut out, ss_open);
            }
            if scopes == 0 {
                out.truncate(rs_start);
                changed = true;
                continue;
            }
            close_len_field(&mut out, rs_open);
        }
        if !top.finished() {
            return Err(undecodable("request"));
        }
        Ok((
            changed.then_some(out),
            Filtered {
                spans: dropped,
                events: 0,
                errors,
            },
        ))
    }

    /// Filter `data` in place. Under `error_mode: propagate` an evaluation error stops and
    /// is returned (the batch may be partly filtered).
    pub fn apply(&self, data: &mut ExportTraceServiceRequest) -> Result<Filtered, EvalError> {
        let (mut spans_dropped, mut events_dropped, mut errors) = (0, 0, 0);
        let mode = self.error_mode;
        spans_dropped += self.drop_resources(
            &self.trace_resources,
            &mut data.resource_spans,
            |rs| rs.resource.as_ref(),
            |rs| rs.scope_spans.iter().map(|ss| ss.spans.len()).sum(),
            &mut errors,
        )?;
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
                    let cx = span_cx(span, None, resource, scope);
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
                        let cx = span_cx(span, Some(event), resource, scope);
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

#[cfg(test)]
mod tests {
    use otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceRequest;
    use otel_pipeline_core::proto::common::v1::{
        AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value::Value,
    };
    use otel_pipeline_core::proto::resource::v1::Resource;
    use otel_pipeline_core::proto::trace::v1::{ScopeSpans, Status};
    use otel_pipeline_core::testing::{SplitMix64, generate_traces};
    use prost::Message;

    use super::{CompiledFilter, FilterConfig};

    fn compile(yaml: &str) -> CompiledFilter {
        let c: FilterConfig = crate::from_yaml("processors.filter", yaml).expect("config");
        c.compile().expect("compiles")
    }

    fn kv(k: &str, v: Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    /// A request of several resources and scopes (one scope empty, one resource without
    /// a resource), spans with names, kinds, statuses, durations and attributes of every
    /// kind (arrays too), drawn from `seed`.
    fn request(seed: u64) -> ExportTraceServiceRequest {
        let mut rng = SplitMix64::new(seed);
        let mut req = generate_traces(6, 4, seed);
        let template = req.resource_spans[0].clone();
        req.resource_spans.clear();
        for r in 0..3 {
            let mut rs = template.clone();
            rs.resource = (r != 2).then(|| Resource {
                attributes: vec![
                    kv(
                        "service.name",
                        Value::StringValue(format!("svc-{}", rng.below(3))),
                    ),
                    kv("deployment.environment", Value::StringValue("prod".into())),
                ],
                ..Default::default()
            });
            let spans = std::mem::take(&mut rs.scope_spans[0].spans);
            rs.scope_spans = vec![
                ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: format!("lib-{r}"),
                        version: "1.0".into(),
                        ..Default::default()
                    }),
                    spans: spans[..12].to_vec(),
                    ..Default::default()
                },
                ScopeSpans::default(),
                ScopeSpans {
                    spans: spans[12..].to_vec(),
                    ..Default::default()
                },
            ];
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    let route =
                        ["/healthz", "/api/orders", "/readyz", "/api/pay"][rng.below(4) as usize];
                    span.name = format!("GET {route}");
                    span.kind = rng.below(6) as i32;
                    span.attributes = vec![
                        kv("http.route", Value::StringValue(route.into())),
                        kv(
                            "http.response.status_code",
                            Value::IntValue([200, 404, 500][rng.below(3) as usize]),
                        ),
                        kv("retry", Value::BoolValue(rng.below(2) == 1)),
                        kv("ratio", Value::DoubleValue(rng.below(100) as f64 / 10.0)),
                    ];
                    if rng.below(5) == 0 {
                        // Not a scalar: that span is read decoded.
                        span.attributes
                            .push(kv("tags", Value::ArrayValue(ArrayValue { values: vec![] })));
                    }
                    if rng.below(4) == 0 {
                        span.status = Some(Status {
                            code: 2,
                            message: "boom".into(),
                        });
                    }
                    span.end_time_unix_nano = span.start_time_unix_nano + rng.below(3_000_000_000);
                }
            }
            req.resource_spans.push(rs);
        }
        req
    }

    const CONDITIONS: &[&str] = &[
        r#"attributes["http.route"] == "/healthz""#,
        r#"IsMatch(name, ".*ready.*")"#,
        r#"kind == SPAN_KIND_CLIENT"#,
        r#"status.code == STATUS_CODE_ERROR and attributes["retry"] == true"#,
        r#"attributes["http.response.status_code"] >= 500"#,
        r#"attributes["ratio"] > 5.0"#,
        r#"duration_ns > 2000000000 or end_time_unix_nano < 5"#,
        r#"resource.attributes["service.name"] == "svc-1" and instrumentation_scope.name == "lib-0""#,
        r#"attributes["tags"] != nil and kind == 2"#,
        r#"not IsMatch(attributes["http.route"], "^/api")"#,
        r#"attributes["missing"] == "x""#,
        r#"status.message == "boom""#,
        // Errors under `ignore`: compared counts.
        r#"attributes["http.route"] > 3"#,
    ];

    /// The byte path gives what the decoded path gives: the same request (decoded, after
    /// the empty scopes and resources go) and the same counts, for every condition alone
    /// and for pairs, with resource conditions, under `ignore` and `propagate`.
    #[test]
    fn the_byte_path_filters_as_the_decoded_path() {
        let mut checked = 0;
        for (i, a) in CONDITIONS.iter().enumerate() {
            for b in [None, Some(CONDITIONS[(i + 3) % CONDITIONS.len()])] {
                for mode in ["ignore", "propagate"] {
                    let spans = match b {
                        Some(b) => format!("[{a:?}, {b:?}]"),
                        None => format!("[{a:?}]"),
                    };
                    let resource = if i % 4 == 0 {
                        "    resource: ['attributes[\"service.name\"] == \"svc-2\"']\n"
                    } else {
                        ""
                    };
                    let f = compile(&format!(
                        "error_mode: {mode}\ntraces:\n    span: {spans}\n{resource}"
                    ));
                    let keys = f.in_place.clone().expect("every condition reads in place");
                    for seed in 0..6 {
                        let req = request(seed * 31 + i as u64);
                        let mut decoded = req.clone();
                        let want = f.apply(&mut decoded);
                        let got = f.apply_bytes(&keys, &req.encode_to_vec());
                        match (want, got) {
                            (Ok(w), Ok((cut, g))) => {
                                assert_eq!(w, g, "counts for {spans}");
                                let after = match cut {
                                    Some(b) => {
                                        ExportTraceServiceRequest::decode(&b[..]).expect("decodes")
                                    }
                                    None => req.clone(),
                                };
                                assert_eq!(after, decoded, "{spans} on seed {seed}");
                                checked += 1;
                            }
                            (Err(_), Err(_)) => assert_eq!(mode, "propagate"),
                            (w, g) => panic!("{spans} ({mode}): decoded {w:?}, bytes {g:?}"),
                        }
                    }
                }
            }
        }
        assert!(checked > 200, "{checked}");
    }

    /// Conditions that read the whole attribute map, span events or legacy matchers keep
    /// the decoded path.
    #[test]
    fn what_cannot_be_read_in_place_is_filtered_decoded() {
        for yaml in [
            "traces:\n  span: ['Len(attributes) > 3']\n",
            "traces:\n  spanevent: ['name == \"x\"']\n",
            "spans:\n  exclude:\n    match_type: strict\n    span_names: [x]\n",
        ] {
            assert!(!compile(yaml).filters_traces_in_place(), "{yaml}");
        }
        assert!(compile("traces:\n  span: ['name == \"x\"']\n").filters_traces_in_place());
    }
}

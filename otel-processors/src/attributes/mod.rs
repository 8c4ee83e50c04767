//! [`AttributeRedactor`]: the Collector's `attributes` actions and its `redaction` mode.
//!
//! ```yaml
//! attributes/redact:
//!   apply_to: [span, resource, event]     # default: [span]
//!   include: { match_type: strict, services: [checkout] }
//!   actions:
//!     - { key: http.request.header.authorization, action: delete }
//!     - { key: db.statement, action: hash }
//!     - { pattern: '^http\.request\.header\.x-api-.*', action: delete }
//!     - { key: env, value: prod, action: upsert }
//!     - { key: http.url, pattern: '^(?P<scheme>\w+)://(?P<host>[^/:]+)', action: extract }
//!     - { key: http.response.status_code, action: convert, converted_type: int }
//! redaction:
//!   allow_all_keys: true
//!   blocked_values: ['4[0-9]{12}(?:[0-9]{3})?']
//!   summary: info
//! ```
//!
//! Actions run in order: `insert` (only if absent), `update` (only if present), `upsert`,
//! `delete` and `hash` (by `key` or by key `pattern`), `extract` (named regex groups of the
//! value become attributes), `convert` (`int`, `double`, `string`, `bool`). `hash` replaces
//! the value with the lowercase hex SHA-256 of its string form. Redaction then removes every
//! key not allowed (unless `allow_all_keys`), masks the parts of values that match a
//! `blocked_values` regex with `****`, leaves `ignored_keys` alone, and adds summary
//! attributes (`redaction.redacted.keys`/`.count`, `redaction.masked.keys`/`.count`).
//! Every pattern is compiled once, when the pipeline is built.
//!
//! # What each covers
//! `apply_to` names the places: `span` (the item's own attributes: a span's, a log
//! record's, a data point's), `resource`, `scope`, `event`, `link`, `status` (a span's
//! status message) and `body` (log bodies). Actions default to `[span]`, as the
//! Collector's `attributes` processor. Redaction defaults to all of them, so a blocked
//! value is masked in every string a backend receives: the Collector's `redaction`
//! processor covers resource, scope, span and event attributes; links and status
//! messages are ours. Within an attribute, strings nested in arrays and maps are masked
//! too. `status` and `body` have no key: only `blocked_values` applies there.

use std::sync::Arc;

use otel_pipeline_core::proto::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use otel_pipeline_core::proto::logs::v1::LogRecord;
use otel_pipeline_core::proto::metrics::v1::Metric;
use otel_pipeline_core::proto::resource::v1::Resource;
use otel_pipeline_core::proto::trace::v1::Span;
use otel_pipeline_core::{
    Batch, BuildError, ClientInfo, ComponentContext, ComponentId, ComponentTelemetry, ConsumeError,
    Consumer, Logs, Metrics, Processor, Traces,
};
use regex::{Regex, RegexSet};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::condition::find_attr;
use crate::config::ConfigError;
use crate::live::LiveRules;
use otel_pipeline_core::proto::collector::logs::v1::ExportLogsServiceRequest;
use otel_pipeline_core::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceRequest;

mod in_place;
pub use in_place::RedactedRequest;

/// A value in a config: string, integer, float or boolean.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    /// Boolean.
    Bool(bool),
    /// Integer.
    Int(i64),
    /// Float.
    Double(f64),
    /// String.
    Str(String),
}

impl ConfigValue {
    fn to_any(&self) -> AnyValue {
        AnyValue {
            value: Some(match self {
                Self::Bool(b) => any_value::Value::BoolValue(*b),
                Self::Int(i) => any_value::Value::IntValue(*i),
                Self::Double(d) => any_value::Value::DoubleValue(*d),
                Self::Str(s) => any_value::Value::StringValue(s.clone()),
            }),
        }
    }
}

/// What an action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    /// Add if absent.
    Insert,
    /// Change if present.
    Update,
    /// Add or change.
    Upsert,
    /// Remove.
    Delete,
    /// Replace with SHA-256 hex.
    Hash,
    /// Named regex groups of the value become attributes.
    Extract,
    /// Change the value's type.
    Convert,
}

/// One action.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// The attribute key.
    #[serde(default)]
    pub key: Option<String>,
    /// For `delete`/`hash`: a regex on keys. For `extract`: a regex on the value.
    #[serde(default)]
    pub pattern: Option<String>,
    /// For `insert`/`update`/`upsert`: the value.
    #[serde(default)]
    pub value: Option<ConfigValue>,
    /// For `insert`/`update`/`upsert`: copy the value of this attribute.
    #[serde(default)]
    pub from_attribute: Option<String>,
    /// For `insert`/`update`/`upsert`: take the value from the request's client
    /// context: `metadata.<key>` (request headers the receiver kept, with
    /// `include_metadata`), `client.address`, or `auth.<attribute>` (what the receiver's
    /// authenticator established: `auth.subject`, `auth.scheme`; without one the action
    /// does nothing).
    #[serde(default)]
    pub from_context: Option<String>,
    /// Ours: allow `from_context: metadata.<key>` to copy a credential header
    /// (`authorization`, `cookie`, `x-api-key`, ...; see
    /// [`is_credential_header`](otel_pipeline_core::is_credential_header)) into telemetry.
    /// Off by default: a credential copied into a span is sent to every backend and kept
    /// as long as the traces are. Turn it on only for a value you mean to store.
    #[serde(default)]
    pub allow_credentials: bool,
    /// For `convert`: `int`, `double`, `string` or `bool`.
    #[serde(default)]
    pub converted_type: Option<String>,
    /// The action.
    pub action: ActionKind,
}

/// How `include`/`exclude` values match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchType {
    /// Exact equality (default).
    #[default]
    Strict,
    /// Regular expressions.
    Regexp,
}

/// An attribute to match.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeMatch {
    /// Key that must be present.
    pub key: String,
    /// Value it must have (or match); any value when absent.
    #[serde(default)]
    pub value: Option<ConfigValue>,
}

/// Which spans an action list applies to. All given properties must match.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Strict or regexp.
    #[serde(default)]
    pub match_type: MatchType,
    /// Resource `service.name` is one of these.
    #[serde(default)]
    pub services: Vec<String>,
    /// Span name is one of these.
    #[serde(default)]
    pub span_names: Vec<String>,
    /// Every listed attribute matches.
    #[serde(default)]
    pub attributes: Vec<AttributeMatch>,
    /// Every listed resource attribute matches.
    #[serde(default)]
    pub resources: Vec<AttributeMatch>,
    /// The instrumentation scope is one of these (name, and version when given).
    #[serde(default)]
    pub libraries: Vec<LibraryMatch>,
    /// The span kind is one of these (`SPAN_KIND_SERVER`, `SERVER`, `server`, ...).
    #[serde(default)]
    pub span_kinds: Vec<String>,
    /// Logs: the body (a string, or the text of a number or boolean) is one of these.
    #[serde(default)]
    pub log_bodies: Vec<String>,
    /// Logs: the severity text is one of these.
    #[serde(default)]
    pub log_severity_texts: Vec<String>,
    /// Logs: the severity number is at least `min`.
    #[serde(default)]
    pub log_severity_number: Option<SeverityMatch>,
    /// Metrics: the metric's name is one of these.
    #[serde(default)]
    pub metric_names: Vec<String>,
}

/// `severity_number: {min: INFO, match_undefined: true}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeverityMatch {
    /// The least severity that matches: `TRACE` ... `FATAL4` (any case) or `1` to `24`.
    #[serde(default)]
    pub min: String,
    /// Records with no severity (0) match too.
    #[serde(default)]
    pub match_undefined: bool,
}

/// An instrumentation scope to match.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryMatch {
    /// Scope name (strict or regexp, as the match type says).
    pub name: String,
    /// Scope version; any version when absent.
    #[serde(default)]
    pub version: Option<String>,
}

/// Where actions and redaction apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The item's own attributes: a span's, a log record's or a data point's (also
    /// spelled `log_record` or `datapoint`).
    #[serde(alias = "log_record", alias = "datapoint")]
    Span,
    /// Resource attributes.
    Resource,
    /// Span event attributes.
    Event,
    /// Span link attributes.
    Link,
    /// Instrumentation scope attributes.
    Scope,
    /// A span's status message: redaction masks `blocked_values` in it (it has no key, so
    /// key rules do not apply). Actions do not apply to it.
    Status,
    /// Log bodies: redaction masks `blocked_values` in a string body and in the string
    /// values of a map or list body. Actions do not apply to bodies.
    Body,
}

fn default_targets() -> Vec<Target> {
    vec![Target::Span]
}

/// Redaction covers every string a backend receives by default: the Collector's
/// redaction processor covers resource, scope, span and span event attributes (and log
/// bodies); links and status messages are ours, so no secret passes by an uncovered
/// field.
fn default_redaction_targets() -> Vec<Target> {
    vec![
        Target::Span,
        Target::Resource,
        Target::Scope,
        Target::Event,
        Target::Link,
        Target::Status,
        Target::Body,
    ]
}

/// Configuration of the `attributes` processor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributesConfig {
    /// Actions, in order.
    #[serde(default)]
    pub actions: Vec<ActionConfig>,
    /// Only spans that match.
    #[serde(default)]
    pub include: Option<MatchConfig>,
    /// Not spans that match.
    #[serde(default)]
    pub exclude: Option<MatchConfig>,
    /// Which attribute sets to change (default: span attributes).
    #[serde(default = "default_targets")]
    pub apply_to: Vec<Target>,
}

impl Default for AttributesConfig {
    fn default() -> Self {
        Self {
            actions: Vec::new(),
            include: None,
            exclude: None,
            apply_to: default_targets(),
        }
    }
}

/// How much the redaction reports about itself on each span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Summary {
    /// Keys and counts.
    Debug,
    /// Counts (default).
    #[default]
    Info,
    /// Nothing.
    Silent,
}

/// Configuration of the `redaction` mode.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionConfig {
    /// Keep every key (then only `blocked_values` applies).
    #[serde(default)]
    pub allow_all_keys: bool,
    /// Keys kept when `allow_all_keys` is false.
    #[serde(default)]
    pub allowed_keys: Vec<String>,
    /// Keys neither removed nor masked.
    #[serde(default)]
    pub ignored_keys: Vec<String>,
    /// Regexes whose matches in values are masked.
    #[serde(default)]
    pub blocked_values: Vec<String>,
    /// Summary attributes.
    #[serde(default)]
    pub summary: Summary,
    /// What to redact (default: everything, `[span, resource, scope, event, link,
    /// status, body]`).
    #[serde(default = "default_redaction_targets")]
    pub apply_to: Vec<Target>,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        Self {
            allow_all_keys: false,
            allowed_keys: Vec::new(),
            ignored_keys: Vec::new(),
            blocked_values: Vec::new(),
            summary: Summary::default(),
            apply_to: default_redaction_targets(),
        }
    }
}

/// Builds [`ConfigError`]s the way a component context would.
struct Invalid;

impl Invalid {
    fn invalid(&self, path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::new(path, message)
    }
}

impl std::fmt::Debug for CompiledAttributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledAttributes")
            .field("actions", &self.actions.len())
            .finish_non_exhaustive()
    }
}

enum Action {
    Set {
        key: String,
        source: Source,
        mode: ActionKind,
    },
    Delete(KeySel),
    Hash(KeySel),
    Extract {
        key: String,
        re: Regex,
        names: Vec<String>,
    },
    Convert {
        key: String,
        to: Conversion,
    },
}

enum Source {
    Value(AnyValue),
    From(String),
    Context(ContextKey),
}

/// Where a `from_context` value comes from.
enum ContextKey {
    Metadata(String),
    ClientAddress,
    /// An attribute the receiver's authenticator set (`auth.subject`, `auth.scheme`).
    Auth(String),
}

enum KeySel {
    Key(String),
    Pattern(Regex),
}

impl KeySel {
    fn matches(&self, key: &str) -> bool {
        match self {
            Self::Key(k) => k == key,
            Self::Pattern(re) => re.is_match(key),
        }
    }
}

#[derive(Clone, Copy)]
enum Conversion {
    Int,
    Double,
    Str,
    Bool,
}

#[derive(Debug)]
pub(crate) enum Matcher {
    Strict(Vec<String>),
    Regexp(RegexSet),
}

impl Matcher {
    pub(crate) fn new(match_type: MatchType, values: &[String]) -> Result<Option<Self>, String> {
        if values.is_empty() {
            return Ok(None);
        }
        Ok(Some(match match_type {
            MatchType::Strict => Self::Strict(values.to_vec()),
            MatchType::Regexp => Self::Regexp(RegexSet::new(values).map_err(|e| e.to_string())?),
        }))
    }

    pub(crate) fn is_match(&self, s: &str) -> bool {
        match self {
            Self::Strict(v) => v.iter().any(|x| x == s),
            Self::Regexp(set) => set.is_match(s),
        }
    }
}

/// Which spans, log records or metrics an `include`/`exclude` selects. Every property
/// given must match; a property of another signal is refused when the processor is built
/// for a signal ([`SpanFilter::check_for`]).
pub(crate) struct SpanFilter {
    services: Option<Matcher>,
    names: Option<Matcher>,
    attributes: Vec<(String, Option<AttrValueMatch>)>,
    resources: Vec<(String, Option<AttrValueMatch>)>,
    libraries: Vec<(Matcher, Option<String>)>,
    kinds: Vec<i32>,
    log_bodies: Option<Matcher>,
    log_severity_texts: Option<Matcher>,
    log_severity: Option<(i32, bool)>,
    metric_names: Option<Matcher>,
}

/// The signals an item filter can be built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ItemKind {
    Span,
    Log,
    Metric,
}

#[derive(Debug)]
pub(crate) enum AttrValueMatch {
    Equal(AnyValue),
    Regex(Regex),
}

impl std::fmt::Debug for SpanFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanFilter").finish_non_exhaustive()
    }
}

pub(crate) type AttrMatches = Vec<(String, Option<AttrValueMatch>)>;

pub(crate) fn attr_matches(
    list: &[AttributeMatch],
    match_type: MatchType,
    what: &str,
) -> Result<AttrMatches, String> {
    list.iter()
        .map(|a| {
            let m = match (&a.value, match_type) {
                (None, _) => None,
                (Some(ConfigValue::Str(s)), MatchType::Regexp) => Some(AttrValueMatch::Regex(
                    Regex::new(s).map_err(|e| format!("{what} {}: {e}", a.key))?,
                )),
                (Some(v), _) => Some(AttrValueMatch::Equal(v.to_any())),
            };
            Ok((a.key.clone(), m))
        })
        .collect()
}

pub(crate) fn all_match(want: &AttrMatches, attrs: &[KeyValue]) -> bool {
    want.iter()
        .all(|(key, want)| match (find_attr(attrs, key), want) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(v), Some(AttrValueMatch::Equal(w))) => v == w,
            (Some(v), Some(AttrValueMatch::Regex(re))) => {
                attribute_string_value(v).is_some_and(|s| re.is_match(&s))
            }
        })
}

/// The text a `match_type: regexp` attribute matcher reads, as the Collector's
/// `attributeStringValue` gives it: a string as it is, a boolean as `true`/`false`, an
/// integer in decimal, a float in plain decimal (never an exponent). Other values (bytes,
/// maps, arrays, empty) have none, and match no pattern.
pub(crate) fn attribute_string_value(v: &AnyValue) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    Some(match v.value.as_ref()? {
        any_value::Value::StringValue(s) => Cow::Borrowed(s.as_str()),
        any_value::Value::BoolValue(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        any_value::Value::IntValue(i) => Cow::Owned(i.to_string()),
        any_value::Value::DoubleValue(d) if d.is_infinite() => {
            Cow::Borrowed(if *d > 0.0 { "+Inf" } else { "-Inf" })
        }
        any_value::Value::DoubleValue(d) => Cow::Owned(d.to_string()),
        _ => return None,
    })
}

/// Whether a record's severity is at least `min`, or undefined (0) where that matches
/// too; true when severity is not matched on (`None`).
pub(crate) fn severity_matches(record: &LogRecord, severity: Option<(i32, bool)>) -> bool {
    severity.is_none_or(|(min, undefined)| {
        let n = record.severity_number;
        n != 0 && n >= min || undefined && n == 0
    })
}

/// A log body as matchers read it: its text as the Collector's `AsString` gives it
/// (numbers and booleans as text, maps and arrays as JSON, bytes in base64); `None` when
/// the record has no body.
pub(crate) fn body_text(record: &LogRecord) -> Option<std::borrow::Cow<'_, str>> {
    record.body.as_ref().map(crate::condition::as_string)
}

/// `SPAN_KIND_SERVER`, `SERVER` or `server` as the protobuf enum value.
fn span_kind(name: &str) -> Option<i32> {
    let upper = name.to_ascii_uppercase();
    let short = upper.strip_prefix("SPAN_KIND_").unwrap_or(&upper);
    Some(match short {
        "UNSPECIFIED" => 0,
        "INTERNAL" => 1,
        "SERVER" => 2,
        "CLIENT" => 3,
        "PRODUCER" => 4,
        "CONSUMER" => 5,
        _ => return None,
    })
}

impl SpanFilter {
    pub(crate) fn new(c: &MatchConfig) -> Result<Self, String> {
        if c.services.is_empty()
            && c.span_names.is_empty()
            && c.attributes.is_empty()
            && c.resources.is_empty()
            && c.libraries.is_empty()
            && c.span_kinds.is_empty()
            && c.log_bodies.is_empty()
            && c.log_severity_texts.is_empty()
            && c.log_severity_number.is_none()
            && c.metric_names.is_empty()
        {
            return Err(
                "give at least one of services, span_names, span_kinds, attributes, libraries, resources, log_bodies, log_severity_texts, log_severity_number or metric_names to match on"
                    .into(),
            );
        }
        let log_severity = match &c.log_severity_number {
            None => None,
            Some(s) => Some((
                crate::condition::severity_number(&s.min).ok_or_else(|| {
                    format!(
                        "log_severity_number.min: `{}` is not a severity (TRACE ... FATAL4, or 1 to 24)",
                        s.min
                    )
                })?,
                s.match_undefined,
            )),
        };
        let libraries = c
            .libraries
            .iter()
            .map(|l| {
                let name = Matcher::new(c.match_type, std::slice::from_ref(&l.name))
                    .map_err(|e| format!("libraries: {e}"))?
                    .ok_or("libraries: a name is needed")?;
                Ok((name, l.version.clone()))
            })
            .collect::<Result<_, String>>()?;
        let kinds = c
            .span_kinds
            .iter()
            .map(|k| span_kind(k).ok_or(format!("span_kinds: `{k}` is not a span kind")))
            .collect::<Result<_, String>>()?;
        Ok(Self {
            services: Matcher::new(c.match_type, &c.services)
                .map_err(|e| format!("services: {e}"))?,
            names: Matcher::new(c.match_type, &c.span_names)
                .map_err(|e| format!("span_names: {e}"))?,
            attributes: attr_matches(&c.attributes, c.match_type, "attributes")?,
            resources: attr_matches(&c.resources, c.match_type, "resources")?,
            libraries,
            kinds,
            log_bodies: Matcher::new(c.match_type, &c.log_bodies)
                .map_err(|e| format!("log_bodies: {e}"))?,
            log_severity_texts: Matcher::new(c.match_type, &c.log_severity_texts)
                .map_err(|e| format!("log_severity_texts: {e}"))?,
            log_severity,
            metric_names: Matcher::new(c.match_type, &c.metric_names)
                .map_err(|e| format!("metric_names: {e}"))?,
        })
    }

    /// Refuse properties that `kind` items do not have (span names for logs, log bodies
    /// for spans, ...), as the Collector does when it builds the processor.
    pub(crate) fn check_for(&self, kind: ItemKind) -> Result<(), String> {
        let span_only = self.names.is_some() || !self.kinds.is_empty();
        let log_only = self.log_bodies.is_some()
            || self.log_severity_texts.is_some()
            || self.log_severity.is_some();
        let metric_only = self.metric_names.is_some();
        let wrong = match kind {
            ItemKind::Span if log_only => "log_bodies, log_severity_texts and log_severity_number",
            ItemKind::Span if metric_only => "metric_names",
            ItemKind::Log if span_only => "span_names and span_kinds",
            ItemKind::Log if metric_only => "metric_names",
            ItemKind::Metric if span_only => "span_names and span_kinds",
            ItemKind::Metric if log_only => {
                "log_bodies, log_severity_texts and log_severity_number"
            }
            ItemKind::Metric if !self.attributes.is_empty() => "attributes",
            _ => return Ok(()),
        };
        let name = match kind {
            ItemKind::Span => "spans",
            ItemKind::Log => "log records",
            ItemKind::Metric => "metrics",
        };
        Err(format!("{wrong} do not apply to {name}"))
    }

    /// The resource, scope and service properties, which every signal has.
    fn matches_common(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
    ) -> bool {
        if !self.libraries.is_empty() {
            let Some(scope) = scope else { return false };
            let any = self.libraries.iter().any(|(name, version)| {
                name.is_match(&scope.name) && version.as_ref().is_none_or(|v| *v == scope.version)
            });
            if !any {
                return false;
            }
        }
        if !self.resources.is_empty() {
            let attrs = resource.map_or(&[][..], |r| &r.attributes[..]);
            if !all_match(&self.resources, attrs) {
                return false;
            }
        }
        if let Some(m) = &self.services {
            let service = resource
                .and_then(|r| find_attr(&r.attributes, "service.name"))
                .and_then(|v| match &v.value {
                    Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
                    _ => None,
                });
            if !service.is_some_and(|s| m.is_match(s)) {
                return false;
            }
        }
        true
    }

    /// Whether a log record matches every given property.
    pub(crate) fn matches_log(
        &self,
        record: &LogRecord,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
    ) -> bool {
        if !self.matches_common(resource, scope) {
            return false;
        }
        severity_matches(record, self.log_severity)
            && self
                .log_severity_texts
                .as_ref()
                .is_none_or(|m| m.is_match(&record.severity_text))
            && self
                .log_bodies
                .as_ref()
                .is_none_or(|m| body_text(record).is_some_and(|b| m.is_match(&b)))
            && all_match(&self.attributes, &record.attributes)
    }

    /// Whether a metric matches every given property.
    pub(crate) fn matches_metric(
        &self,
        metric: &Metric,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
    ) -> bool {
        self.matches_common(resource, scope)
            && self
                .metric_names
                .as_ref()
                .is_none_or(|m| m.is_match(&metric.name))
    }

    /// Whether `span` (of `resource` and `scope`) matches every given property.
    pub(crate) fn matches_in(
        &self,
        span: &Span,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
    ) -> bool {
        self.matches_common(resource, scope)
            && (self.kinds.is_empty() || self.kinds.contains(&span.kind))
            && self.names.as_ref().is_none_or(|m| m.is_match(&span.name))
            && all_match(&self.attributes, &span.attributes)
    }
}

/// The `blocked_values` patterns, compiled, with a memo of the values they judged.
struct Blocked {
    /// Any of the patterns (a quick no for most values).
    any: Regex,
    /// Each pattern, in the configured order.
    each: Vec<Regex>,
    /// Which memo of each thread is this one's.
    id: u64,
}

/// Values at most this long are remembered.
const MEMO_VALUE: usize = 128;
/// Values a memo remembers before starting afresh.
const MEMO_ENTRIES: usize = 2048;
/// Bytes of values (and their masked forms) a memo remembers before starting afresh. With
/// the table, a memo stays under about 160 KiB, and a thread's memos under 1.3 MiB.
const MEMO_BYTES: usize = 64 << 10;
/// Memos a thread keeps (of as many redaction processors or rule sets); past it, the one
/// used least recently goes.
const MEMOS: usize = 8;

/// What one thread remembers for one [`Blocked`]: value hash -> (value, masked form if
/// any pattern matched). Values enter at their second sighting, so one-off values (ids,
/// timestamps) cost a hash, not an entry.
struct Memo {
    owner: u64,
    /// Bytes of the values and masked forms remembered.
    bytes: usize,
    hash: ahash::RandomState,
    judged: crate::prehashed::HashKeyed<(Box<str>, Option<Box<str>>)>,
    seen: crate::prehashed::SeenOnce,
}

thread_local! {
    static MEMO: std::cell::RefCell<Vec<Memo>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Blocked {
    fn new(any: Regex, each: Vec<Regex>) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Self {
            any,
            each,
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// `s` with every match of the patterns masked, in the configured order (a pattern
    /// with no match leaves it alone); `None` when no pattern matches.
    fn scan(&self, s: &str) -> Option<String> {
        if !self.any.is_match(s) {
            return None;
        }
        let mut out = std::borrow::Cow::Borrowed(s);
        for re in &self.each {
            if let std::borrow::Cow::Owned(masked) = re.replace_all(&out, "****") {
                out = std::borrow::Cow::Owned(masked);
            }
        }
        Some(out.into_owned())
    }

    /// This thread's memo for these patterns (made when missing), for `f`: one
    /// thread-local access for all the values of an attribute list or a request.
    fn with_memo<R>(&self, f: impl FnOnce(&mut Memo) -> R) -> R {
        MEMO.with_borrow_mut(|memos| {
            f(crate::prehashed::most_recent(
                memos,
                MEMOS,
                |m| m.owner == self.id,
                || Memo {
                    owner: self.id,
                    bytes: 0,
                    hash: ahash::RandomState::new(),
                    judged: Default::default(),
                    seen: Default::default(),
                },
            ))
        })
    }

    /// What the patterns make of `s`, handed to `f`: `None` when no pattern matches,
    /// else the masked form. Real attributes repeat their values across spans (methods,
    /// routes, hosts, the same token), so a value judged before is answered from `memo`
    /// (this thread's, [`Self::with_memo`]) without running the patterns.
    fn judge<R>(&self, memo: &mut Memo, s: &str, f: impl FnOnce(Option<&str>) -> R) -> R {
        if s.len() > MEMO_VALUE {
            return f(self.scan(s).as_deref());
        }
        let h = memo.hash.hash_one(s.as_bytes());
        if let Some((value, masked)) = memo.judged.get(&h)
            && **value == *s
        {
            return f(masked.as_deref());
        }
        let masked = self.scan(s);
        if !memo.judged.contains_key(&h) && memo.seen.again(h, MEMO_ENTRIES) {
            let size = s.len() + masked.as_ref().map_or(0, String::len);
            if memo.judged.len() >= MEMO_ENTRIES || memo.bytes + size > MEMO_BYTES {
                memo.judged.clear();
                memo.bytes = 0;
            }
            memo.bytes += size;
            memo.judged
                .insert(h, (s.into(), masked.as_deref().map(Into::into)));
        }
        f(masked.as_deref())
    }

    /// Mask the matches in `s` ([`Self::judge`]); whether any pattern matched.
    fn mask_in(&self, memo: &mut Memo, s: &mut String) -> bool {
        self.judge(memo, s, |m| m.map(str::to_owned))
            .map(|m| *s = m)
            .is_some()
    }

    /// [`Self::mask_in`] with this thread's memo.
    fn mask(&self, s: &mut String) -> bool {
        self.with_memo(|memo| self.mask_in(memo, s))
    }
}

struct Redaction {
    allow_all: bool,
    allowed: Vec<String>,
    ignored: Vec<String>,
    /// The `blocked_values` patterns.
    blocked: Option<Blocked>,
    summary: Summary,
    targets: Vec<Target>,
}

/// Attribute actions and redaction, compiled: apply them to a batch in place.
pub struct CompiledAttributes {
    /// Which memo of attributes each thread keeps for these rules (`in_place`).
    id: u64,
    actions: Vec<Action>,
    targets: Vec<Target>,
    include: Option<SpanFilter>,
    exclude: Option<SpanFilter>,
    redaction: Option<Redaction>,
}

/// The attributes / redaction processor.
///
/// ```
/// use otel_processors::attributes::{AttributeRedactor, AttributesConfig};
/// use otel_processors::config::from_yaml;
/// let config: AttributesConfig = from_yaml("processors.attributes", r#"
/// actions:
///   - { key: db.statement, action: hash }
/// "#).unwrap();
/// let _processor = AttributeRedactor::attributes(config);
/// ```
#[derive(Debug, Clone)]
pub struct AttributeRedactor {
    id: ComponentId,
    attributes: AttributesConfig,
    redaction: Option<RedactionConfig>,
    live: Arc<LiveRules<CompiledAttributes>>,
    /// The signal it was built for, so a replacement is checked as the build was.
    built_for: Arc<parking_lot::Mutex<Option<ItemKind>>>,
}

/// Changes a built attributes/redaction processor's rules while it runs:
/// [`AttributeRedactor::handle`].
#[derive(Debug, Clone)]
pub struct AttributesHandle {
    live: Arc<LiveRules<CompiledAttributes>>,
    built_for: Arc<parking_lot::Mutex<Option<ItemKind>>>,
}

impl AttributesHandle {
    /// Apply the actions and redaction of `rules` from the next batch on (its id is not
    /// used). Rules that do not compile, or that match on another signal's properties, are
    /// refused with the errors of a build, and the running rules stay.
    pub fn update(&self, rules: &AttributeRedactor) -> Result<(), ConfigError> {
        let compiled = self.compile_for_built(rules)?;
        self.live.replace(compiled);
        Ok(())
    }

    /// Whether [`AttributesHandle::update`] would take `rules`, changing nothing.
    pub fn check(&self, rules: &AttributeRedactor) -> Result<(), ConfigError> {
        self.compile_for_built(rules).map(drop)
    }

    fn compile_for_built(
        &self,
        rules: &AttributeRedactor,
    ) -> Result<CompiledAttributes, ConfigError> {
        let compiled = rules.compile()?;
        let Some(kind) = *self.built_for.lock() else {
            return Err(ConfigError::new(
                "",
                "the processor is not built yet: nothing to update",
            ));
        };
        compiled.check_for(kind)?;
        Ok(compiled)
    }
}

impl AttributeRedactor {
    /// The `attributes` processor (id `attributes`).
    pub fn attributes(config: AttributesConfig) -> Self {
        Self {
            id: ComponentId::new("attributes"),
            attributes: config,
            redaction: None,
            live: Arc::default(),
            built_for: Arc::default(),
        }
    }

    /// A handle that changes the rules once the processor is built.
    pub fn handle(&self) -> AttributesHandle {
        AttributesHandle {
            live: Arc::clone(&self.live),
            built_for: Arc::clone(&self.built_for),
        }
    }

    /// The `redaction` processor (id `redaction`).
    pub fn redaction(config: RedactionConfig) -> Self {
        Self {
            id: ComponentId::new("redaction"),
            attributes: AttributesConfig::default(),
            redaction: Some(config),
            live: Arc::default(),
            built_for: Arc::default(),
        }
    }

    /// Actions followed by redaction, as one stage.
    pub fn attributes_and_redaction(
        attributes: AttributesConfig,
        redaction: RedactionConfig,
    ) -> Self {
        Self {
            id: ComponentId::new("attributes"),
            attributes,
            redaction: Some(redaction),
            live: Arc::default(),
            built_for: Arc::default(),
        }
    }

    /// Use another id (`attributes/redact`).
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }

    /// Compile actions, match rules and redaction; errors name the offending setting.
    pub fn compile(&self) -> Result<CompiledAttributes, ConfigError> {
        let ctx = Invalid;
        let mut actions = Vec::new();
        for (i, a) in self.attributes.actions.iter().enumerate() {
            let at = |field: &str| format!("actions[{i}].{field}");
            let need_key = || {
                a.key
                    .clone()
                    .ok_or_else(|| ctx.invalid(at("key"), format!("`{:?}` needs a key", a.action)))
            };
            let sel = || match (&a.key, &a.pattern) {
                (Some(k), None) => Ok(KeySel::Key(k.clone())),
                (None, Some(p)) => Regex::new(p)
                    .map(KeySel::Pattern)
                    .map_err(|e| ctx.invalid(at("pattern"), e.to_string())),
                _ => Err(ctx.invalid(at("key"), "give exactly one of `key` and `pattern`")),
            };
            actions.push(match a.action {
                ActionKind::Insert | ActionKind::Update | ActionKind::Upsert => {
                    let source = match (&a.value, &a.from_attribute, &a.from_context) {
                        (Some(v), None, None) => Source::Value(v.to_any()),
                        (None, Some(f), None) => Source::From(f.clone()),
                        (None, None, Some(c)) => {
                            Source::Context(if let Some(k) = c.strip_prefix("metadata.") {
                                if otel_pipeline_core::is_credential_header(k)
                                    && !a.allow_credentials
                                {
                                    return Err(ctx.invalid(
                                        at("from_context"),
                                        format!(
                                            "`{k}` carries a credential: copying it into \
                                             telemetry sends it to every backend; set \
                                             `allow_credentials: true` on this action if \
                                             that is what you want"
                                        ),
                                    ));
                                }
                                ContextKey::Metadata(k.to_ascii_lowercase())
                            } else if let Some(k) = c.strip_prefix("auth.") {
                                ContextKey::Auth(k.to_string())
                            } else if c == "client.address" {
                                ContextKey::ClientAddress
                            } else {
                                return Err(ctx.invalid(
                                    at("from_context"),
                                    "expected metadata.<key>, auth.<attribute> or client.address",
                                ));
                            })
                        }
                        _ => {
                            return Err(ctx.invalid(
                                at("value"),
                                "give exactly one of `value`, `from_attribute` and `from_context`",
                            ));
                        }
                    };
                    Action::Set {
                        key: need_key()?,
                        source,
                        mode: a.action,
                    }
                }
                ActionKind::Delete => Action::Delete(sel()?),
                ActionKind::Hash => Action::Hash(sel()?),
                ActionKind::Extract => {
                    let key = need_key()?;
                    let pattern = a
                        .pattern
                        .as_ref()
                        .ok_or_else(|| ctx.invalid(at("pattern"), "extract needs a pattern"))?;
                    let re = Regex::new(pattern)
                        .map_err(|e| ctx.invalid(at("pattern"), e.to_string()))?;
                    let names: Vec<String> =
                        re.capture_names().flatten().map(String::from).collect();
                    if names.is_empty() {
                        return Err(ctx.invalid(
                            at("pattern"),
                            "extract needs named groups, like (?P<name>...)",
                        ));
                    }
                    Action::Extract { key, re, names }
                }
                ActionKind::Convert => {
                    let to = match a.converted_type.as_deref() {
                        Some("int") => Conversion::Int,
                        Some("double") => Conversion::Double,
                        Some("string") => Conversion::Str,
                        Some("bool") => Conversion::Bool,
                        other => {
                            return Err(ctx.invalid(
                                at("converted_type"),
                                format!("{other:?}: use int, double, string or bool"),
                            ));
                        }
                    };
                    Action::Convert {
                        key: need_key()?,
                        to,
                    }
                }
            });
        }
        let filter = |c: &Option<MatchConfig>, name: &str| {
            c.as_ref()
                .map(SpanFilter::new)
                .transpose()
                .map_err(|e| ctx.invalid(name, e))
        };
        let redaction = match &self.redaction {
            None => None,
            Some(r) => {
                let blocked = if r.blocked_values.is_empty() {
                    None
                } else {
                    let each = r
                        .blocked_values
                        .iter()
                        .enumerate()
                        .map(|(i, p)| {
                            Regex::new(p).map_err(|e| {
                                ctx.invalid(format!("blocked_values[{i}]"), e.to_string())
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    // One unanchored automaton for all patterns: a single pass over a value
                    // says whether any matches, which most values do not. Each pattern is a
                    // group of its own, so its flags stay inside it.
                    let any = r
                        .blocked_values
                        .iter()
                        .map(|p| format!("(?:{p})"))
                        .collect::<Vec<_>>()
                        .join("|");
                    let any = Regex::new(&any)
                        .map_err(|e| ctx.invalid("blocked_values", e.to_string()))?;
                    Some(Blocked::new(any, each))
                };
                // With allow_all_keys false and nothing allowed, every attribute goes: the
                // Collector reads an empty `redaction:` that way, so we do too.
                Some(Redaction {
                    allow_all: r.allow_all_keys,
                    allowed: r.allowed_keys.clone(),
                    ignored: r.ignored_keys.clone(),
                    blocked,
                    summary: r.summary,
                    targets: r.apply_to.clone(),
                })
            }
        };
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Ok(CompiledAttributes {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            actions,
            targets: self.attributes.apply_to.clone(),
            include: filter(&self.attributes.include, "include")?,
            exclude: filter(&self.attributes.exclude, "exclude")?,
            redaction,
        })
    }
}

/// Mask `blocked_values` in a value and in every string nested in its arrays and maps;
/// returns how many strings changed.
fn mask_within(v: &mut AnyValue, blocked: &Blocked, memo: &mut Memo) -> usize {
    // Iterative, so a hostile client's deeply nested value cannot overflow the stack.
    let mut stack: Vec<&mut AnyValue> = vec![v];
    let mut changed = 0;
    while let Some(v) = stack.pop() {
        match v.value.as_mut() {
            Some(any_value::Value::StringValue(s)) => {
                changed += usize::from(blocked.mask_in(memo, s));
            }
            Some(any_value::Value::ArrayValue(a)) => stack.extend(a.values.iter_mut()),
            Some(any_value::Value::KvlistValue(kv)) => {
                stack.extend(kv.values.iter_mut().filter_map(|kv| kv.value.as_mut()));
            }
            _ => {}
        }
    }
    changed
}

/// The consumer built by [`AttributeRedactor`], for signal `S`.
pub struct AttributesConsumer<S, N> {
    rules: Arc<parking_lot::RwLock<Arc<CompiledAttributes>>>,
    telemetry: Arc<ComponentTelemetry>,
    next: N,
    signal: std::marker::PhantomData<fn(S)>,
}

impl<S, N: std::fmt::Debug> std::fmt::Debug for AttributesConsumer<S, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttributesConsumer")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

/// The processor and its consumer for one signal; `$kind` says which include/exclude
/// properties apply, `$apply` how a batch is changed.
macro_rules! attributes_signal {
    ($signal:ty, $kind:expr, $apply:ident) => {
        impl Processor<$signal> for AttributeRedactor {
            type Consumer<N: Consumer<$signal>> = AttributesConsumer<$signal, N>;

            fn id(&self) -> ComponentId {
                self.id.clone()
            }

            fn build<N: Consumer<$signal>>(
                self,
                next: N,
                ctx: &mut ComponentContext<'_>,
            ) -> Result<AttributesConsumer<$signal, N>, BuildError> {
                let rules = self.compile().map_err(|e| ctx.invalid(e.path, e.message))?;
                rules
                    .check_for($kind)
                    .map_err(|e| ctx.invalid(e.path, e.message))?;
                *self.built_for.lock() = Some($kind);
                Ok(AttributesConsumer {
                    rules: self.live.install(rules),
                    telemetry: ctx.telemetry(),
                    next,
                    signal: std::marker::PhantomData,
                })
            }
        }

        impl<N: Consumer<$signal>> Consumer<$signal> for AttributesConsumer<$signal, N> {
            async fn consume(
                &self,
                mut batch: Batch<$signal>,
            ) -> Result<(), ConsumeError<$signal>> {
                let client = batch.client.clone();
                let rules = Arc::clone(&*self.rules.read());
                let redacted = match <$signal as InPlace>::apply_in_place(&rules, &mut batch) {
                    Some(n) => n,
                    None => rules.$apply(batch.data_mut(), client.as_deref()),
                };
                self.telemetry.add_redacted_attributes(redacted);
                self.next.consume(batch).await
            }
        }
    };
}

/// Changing a batch still in its bytes, where the signal and the rules allow it.
trait InPlace: otel_pipeline_core::Signal + Sized {
    /// `None`: change it decoded.
    fn apply_in_place(_rules: &CompiledAttributes, _batch: &mut Batch<Self>) -> Option<usize> {
        None
    }
}

impl InPlace for Metrics {}
impl InPlace for Logs {}

impl InPlace for Traces {
    fn apply_in_place(rules: &CompiledAttributes, batch: &mut Batch<Traces>) -> Option<usize> {
        let done = rules.apply_encoded(batch.encoded()?)?;
        if let Some(new) = done.bytes {
            // Values replaced and attributes cut or appended in a checked request.
            let items = batch.item_count();
            let whole = std::mem::replace(batch, Batch::new(Default::default()));
            *batch = whole.with_rewritten_request(new.into(), items);
        }
        Some(done.redacted)
    }
}

attributes_signal!(Traces, ItemKind::Span, apply_with_client);
attributes_signal!(Metrics, ItemKind::Metric, apply_metrics);
attributes_signal!(Logs, ItemKind::Log, apply_logs);

fn string_form(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex(b),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn sha256_hex(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes()))
}

fn str_value(s: String) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s)),
    }
}

fn set(attrs: &mut Vec<KeyValue>, key: &str, value: AnyValue) {
    match attrs.iter_mut().find(|kv| kv.key == key) {
        Some(kv) => kv.value = Some(value),
        None => attrs.push(KeyValue {
            key: key.to_string(),
            value: Some(value),
            ..Default::default()
        }),
    }
}

fn convert(v: &AnyValue, to: Conversion) -> Option<AnyValue> {
    use any_value::Value::*;
    let out = match (to, v.value.as_ref()?) {
        (Conversion::Int, StringValue(s)) => IntValue(s.trim().parse().ok()?),
        (Conversion::Int, DoubleValue(d)) => IntValue(*d as i64),
        (Conversion::Int, BoolValue(b)) => IntValue(i64::from(*b)),
        (Conversion::Double, StringValue(s)) => DoubleValue(s.trim().parse().ok()?),
        (Conversion::Double, IntValue(i)) => DoubleValue(*i as f64),
        (Conversion::Bool, StringValue(s)) => BoolValue(s.trim().parse().ok()?),
        (Conversion::Str, _) => StringValue(string_form(v)),
        (_, other) => other.clone(),
    };
    Some(AnyValue { value: Some(out) })
}

impl CompiledAttributes {
    fn apply_actions(&self, attrs: &mut Vec<KeyValue>, client: Option<&ClientInfo>) {
        for action in &self.actions {
            match action {
                Action::Set { key, source, mode } => {
                    let text = |s: String| AnyValue {
                        value: Some(any_value::Value::StringValue(s)),
                    };
                    let value = match source {
                        Source::Value(v) => Some(v.clone()),
                        Source::From(f) => find_attr(attrs, f).cloned(),
                        Source::Context(ContextKey::Metadata(k)) => client
                            .and_then(|c| c.metadata(k))
                            .map(|v| text(v.to_string())),
                        Source::Context(ContextKey::ClientAddress) => client
                            .and_then(|c| c.addr)
                            .map(|a| text(a.ip().to_string())),
                        Source::Context(ContextKey::Auth(k)) => {
                            client.and_then(|c| c.auth(k)).map(|v| text(v.to_string()))
                        }
                    };
                    let Some(value) = value else { continue };
                    let exists = attrs.iter().any(|kv| kv.key == *key);
                    let go = match mode {
                        ActionKind::Insert => !exists,
                        ActionKind::Update => exists,
                        _ => true,
                    };
                    if go {
                        set(attrs, key, value);
                    }
                }
                Action::Delete(sel) => attrs.retain(|kv| !sel.matches(&kv.key)),
                Action::Hash(sel) => {
                    for kv in attrs.iter_mut().filter(|kv| sel.matches(&kv.key)) {
                        let s = kv.value.as_ref().map(string_form).unwrap_or_default();
                        kv.value = Some(str_value(sha256_hex(&s)));
                    }
                }
                Action::Extract { key, re, names } => {
                    let Some(any_value::Value::StringValue(s)) =
                        find_attr(attrs, key).and_then(|v| v.value.clone())
                    else {
                        continue;
                    };
                    if let Some(caps) = re.captures(&s) {
                        for name in names {
                            if let Some(m) = caps.name(name) {
                                set(attrs, name, str_value(m.as_str().to_string()));
                            }
                        }
                    }
                }
                Action::Convert { key, to } => {
                    let kv = attrs.iter_mut().find(|kv| kv.key == *key);
                    if let Some((kv, v)) = kv.and_then(|kv| {
                        kv.value
                            .as_ref()
                            .and_then(|v| convert(v, *to))
                            .map(|v| (kv, v))
                    }) {
                        kv.value = Some(v);
                    }
                }
            }
        }
    }

    /// Redact one attribute set; returns (removed keys, masked keys).
    fn redact(r: &Redaction, attrs: &mut Vec<KeyValue>) -> (Vec<String>, Vec<String>) {
        let mut removed = Vec::new();
        let mut masked = Vec::new();
        attrs.retain(|kv| {
            let keep = r.allow_all || r.allowed.contains(&kv.key) || r.ignored.contains(&kv.key);
            if !keep {
                removed.push(kv.key.clone());
            }
            keep
        });
        if let Some(blocked) = &r.blocked {
            blocked.with_memo(|memo| {
                for kv in attrs.iter_mut() {
                    let Some(v) = kv.value.as_mut() else {
                        continue;
                    };
                    // Strings inside arrays and maps are values a backend receives too.
                    if !r.ignored.contains(&kv.key) && mask_within(v, blocked, memo) > 0 {
                        masked.push(kv.key.clone());
                    }
                }
            });
        }
        (removed, masked)
    }

    fn summarize(
        summary: Summary,
        attrs: &mut Vec<KeyValue>,
        removed: &[String],
        masked: &[String],
    ) {
        let int = |n: usize| AnyValue {
            value: Some(any_value::Value::IntValue(n as i64)),
        };
        let keys = |k: &[String]| {
            let mut sorted: Vec<&str> = k.iter().map(String::as_str).collect();
            sorted.sort_unstable();
            sorted.dedup();
            str_value(sorted.join(","))
        };
        if summary == Summary::Silent {
            return;
        }
        if !removed.is_empty() {
            if summary == Summary::Debug {
                set(attrs, "redaction.redacted.keys", keys(removed));
            }
            set(attrs, "redaction.redacted.count", int(removed.len()));
        }
        if !masked.is_empty() {
            if summary == Summary::Debug {
                set(attrs, "redaction.masked.keys", keys(masked));
            }
            set(attrs, "redaction.masked.count", int(masked.len()));
        }
    }

    /// Actions and redaction on one attribute set of kind `target`.
    fn process(
        &self,
        target: Target,
        attrs: &mut Vec<KeyValue>,
        client: Option<&ClientInfo>,
    ) -> usize {
        self.process_noting(target, attrs, client, None)
    }

    /// As [`process`](Self::process), with `also_masked` (a keyless field of the same
    /// item that was masked, `status.message`) named in the summary.
    fn process_noting(
        &self,
        target: Target,
        attrs: &mut Vec<KeyValue>,
        client: Option<&ClientInfo>,
        also_masked: Option<&str>,
    ) -> usize {
        if self.targets.contains(&target) {
            self.apply_actions(attrs, client);
        }
        let Some(r) = self
            .redaction
            .as_ref()
            .filter(|r| r.targets.contains(&target))
        else {
            return 0;
        };
        let (removed, mut masked) = Self::redact(r, attrs);
        masked.extend(also_masked.map(str::to_string));
        Self::summarize(r.summary, attrs, &removed, &masked);
        removed.len() + masked.len()
    }

    fn selected(
        &self,
        span: &Span,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
    ) -> bool {
        self.include
            .as_ref()
            .is_none_or(|f| f.matches_in(span, resource, scope))
            && !self
                .exclude
                .as_ref()
                .is_some_and(|f| f.matches_in(span, resource, scope))
    }
}

impl CompiledAttributes {
    /// Refuse include/exclude properties that `kind` items do not have.
    fn check_for(&self, kind: ItemKind) -> Result<(), ConfigError> {
        for (name, f) in [("include", &self.include), ("exclude", &self.exclude)] {
            if let Some(f) = f {
                f.check_for(kind).map_err(|e| ConfigError::new(name, e))?;
            }
        }
        Ok(())
    }

    /// Redaction of a log body: mask `blocked_values` in a string body and in the string
    /// values of a map or list body; returns how many values were masked.
    fn redact_body(&self, body: Option<&mut AnyValue>) -> usize {
        let Some(r) = self
            .redaction
            .as_ref()
            .filter(|r| r.targets.contains(&Target::Body))
        else {
            return 0;
        };
        let Some(blocked) = &r.blocked else {
            return 0;
        };
        body.map_or(0, |b| {
            blocked.with_memo(|memo| mask_within(b, blocked, memo))
        })
    }

    /// Redaction of a span's status message: `blocked_values` masked in it; 1 when it
    /// changed.
    fn redact_status(&self, span: &mut Span) -> usize {
        let Some(blocked) = self
            .redaction
            .as_ref()
            .filter(|r| r.targets.contains(&Target::Status))
            .and_then(|r| r.blocked.as_ref())
        else {
            return 0;
        };
        span.status
            .as_mut()
            .map_or(0, |st| usize::from(blocked.mask(&mut st.message)))
    }

    /// Apply to every selected log record (its attributes, its body for redaction, and
    /// its resource); returns how many values redaction removed or masked.
    pub fn apply_logs(
        &self,
        data: &mut ExportLogsServiceRequest,
        client: Option<&ClientInfo>,
    ) -> usize {
        let selected = |record: &LogRecord,
                        resource: Option<&Resource>,
                        scope: Option<&InstrumentationScope>| {
            self.include
                .as_ref()
                .is_none_or(|f| f.matches_log(record, resource, scope))
                && !self
                    .exclude
                    .as_ref()
                    .is_some_and(|f| f.matches_log(record, resource, scope))
        };
        let mut redacted = 0;
        for rl in &mut data.resource_logs {
            let resource_selected = rl.scope_logs.iter().any(|sl| {
                sl.log_records
                    .iter()
                    .any(|r| selected(r, rl.resource.as_ref(), sl.scope.as_ref()))
            });
            for sl in &mut rl.scope_logs {
                for record in &mut sl.log_records {
                    if !selected(record, rl.resource.as_ref(), sl.scope.as_ref()) {
                        continue;
                    }
                    redacted += self.process(Target::Span, &mut record.attributes, client);
                    redacted += self.redact_body(record.body.as_mut());
                }
            }
            if let Some(resource) = rl.resource.as_mut().filter(|_| resource_selected) {
                redacted += self.process(Target::Resource, &mut resource.attributes, client);
            }
        }
        redacted
    }

    /// Apply to the data points of every selected metric (and its resource); returns how
    /// many values redaction removed or masked.
    pub fn apply_metrics(
        &self,
        data: &mut ExportMetricsServiceRequest,
        client: Option<&ClientInfo>,
    ) -> usize {
        use otel_pipeline_core::proto::metrics::v1::metric::Data;
        let selected =
            |m: &Metric, resource: Option<&Resource>, scope: Option<&InstrumentationScope>| {
                self.include
                    .as_ref()
                    .is_none_or(|f| f.matches_metric(m, resource, scope))
                    && !self
                        .exclude
                        .as_ref()
                        .is_some_and(|f| f.matches_metric(m, resource, scope))
            };
        let mut redacted = 0;
        for rm in &mut data.resource_metrics {
            let resource_selected = rm.scope_metrics.iter().any(|sm| {
                sm.metrics
                    .iter()
                    .any(|m| selected(m, rm.resource.as_ref(), sm.scope.as_ref()))
            });
            for sm in &mut rm.scope_metrics {
                for metric in &mut sm.metrics {
                    if !selected(metric, rm.resource.as_ref(), sm.scope.as_ref()) {
                        continue;
                    }
                    let mut each = |attrs: &mut Vec<KeyValue>| {
                        redacted += self.process(Target::Span, attrs, client);
                    };
                    match &mut metric.data {
                        Some(Data::Gauge(g)) => g
                            .data_points
                            .iter_mut()
                            .for_each(|p| each(&mut p.attributes)),
                        Some(Data::Sum(g)) => g
                            .data_points
                            .iter_mut()
                            .for_each(|p| each(&mut p.attributes)),
                        Some(Data::Histogram(g)) => g
                            .data_points
                            .iter_mut()
                            .for_each(|p| each(&mut p.attributes)),
                        Some(Data::ExponentialHistogram(g)) => g
                            .data_points
                            .iter_mut()
                            .for_each(|p| each(&mut p.attributes)),
                        Some(Data::Summary(g)) => g
                            .data_points
                            .iter_mut()
                            .for_each(|p| each(&mut p.attributes)),
                        None => {}
                    }
                }
            }
            if let Some(resource) = rm.resource.as_mut().filter(|_| resource_selected) {
                redacted += self.process(Target::Resource, &mut resource.attributes, client);
            }
        }
        redacted
    }

    /// Actions and redaction on one selected span: its status message, attributes,
    /// events and links; how many values redaction removed or masked.
    fn apply_span(&self, span: &mut Span, client: Option<&ClientInfo>) -> usize {
        let status = self.redact_status(span) > 0;
        let n = self.process_noting(
            Target::Span,
            &mut span.attributes,
            client,
            status.then_some("status.message"),
        );
        // (Counted in the summary when span attributes are redacted too.)
        let mut redacted = n.max(usize::from(status));
        for event in &mut span.events {
            redacted += self.process(Target::Event, &mut event.attributes, client);
        }
        for link in &mut span.links {
            redacted += self.process(Target::Link, &mut link.attributes, client);
        }
        redacted
    }

    /// Apply to every selected span (and its events and resource); returns how many
    /// attribute values redaction removed or masked.
    pub fn apply(&self, data: &mut ExportTraceServiceRequest) -> usize {
        self.apply_with_client(data, None)
    }

    /// [`CompiledAttributes::apply`], with the client context that `from_context`
    /// actions read.
    pub fn apply_with_client(
        &self,
        data: &mut ExportTraceServiceRequest,
        client: Option<&ClientInfo>,
    ) -> usize {
        let mut redacted = 0;
        for rs in &mut data.resource_spans {
            // Resource attributes: changed when any span of the resource is selected.
            let resource_selected = rs.scope_spans.iter().any(|ss| {
                ss.spans
                    .iter()
                    .any(|span| self.selected(span, rs.resource.as_ref(), ss.scope.as_ref()))
            });
            for ss in &mut rs.scope_spans {
                let scope = ss.scope.as_ref();
                let mut scope_selected = false;
                for span in &mut ss.spans {
                    if !self.selected(span, rs.resource.as_ref(), scope) {
                        continue;
                    }
                    scope_selected = true;
                    redacted += self.apply_span(span, client);
                }
                if let Some(scope) = ss.scope.as_mut().filter(|_| scope_selected) {
                    redacted += self.process(Target::Scope, &mut scope.attributes, client);
                }
            }
            if let Some(resource) = rs.resource.as_mut().filter(|_| resource_selected) {
                redacted += self.process(Target::Resource, &mut resource.attributes, client);
            }
        }
        redacted
    }
}

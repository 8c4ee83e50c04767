//! The `transform` processor: OTTL statements that rewrite spans, span events, log
//! records, metrics, data points and their resources, in the Collector's config shape.
//!
//! ```yaml
//! transform:
//!   error_mode: ignore
//!   trace_statements:
//!     - context: span
//!       conditions:
//!         - 'attributes["http.response.status_code"] == 500'
//!       statements:
//!         - 'set(status.code, STATUS_CODE_ERROR)'
//!         - 'replace_pattern(name, "\\?.*", "")'
//!         - 'set(attributes["user.email"], SHA256(attributes["user.email"])) where attributes["user.email"] != nil'
//!     - 'truncate_all(span.attributes, 4095)'        # the basic form: context from the paths
//!   log_statements:
//!     - context: log
//!       statements: ['delete_key(attributes, "password")']
//!   metric_statements:
//!     - context: datapoint
//!       statements: ['keep_keys(attributes, ["http.route", "http.response.status_code"])']
//! ```
//!
//! One parser and one evaluator with the `filter` processor (`condition`): statements
//! read paths, literals and conditions exactly as filter conditions do, and add
//! converters and editors.
//!
//! **Contexts**: `resource`, `span`, `spanevent` (traces), `log` (logs), `metric`,
//! `datapoint` (metrics). A group without `context` (or a statement given as a plain
//! string) takes the most specific context its paths name (`span.name` → span,
//! `resource.attributes` alone → resource), else the signal's item (span, log, data point).
//!
//! **Editors**: `set`, `delete_key`, `delete_matching_keys`, `keep_keys`,
//! `keep_matching_keys`, `limit`, `merge_maps` (`insert`, `update`, `upsert`),
//! `replace_pattern` (optionally hashing what it puts in with `SHA256`), `replace_match`
//! (a glob), `replace_all_patterns` (`key` or `value`), `replace_all_matches`,
//! `truncate_all`. **Converters**: `SHA256`, `Concat`, `Split`, `IsMatch`, `Int`,
//! `Double`, `String`, `ConvertCase` (`lower`, `upper`, `snake`, `camel`), `Len`,
//! `Substring`, `Trim`.
//!
//! Groups run in order, each over every item of its context; a group's `conditions` (any
//! of them true) and a statement's `where` select the items it changes. A statement that
//! fails on an item (a converter given the wrong type, a condition that is not a boolean)
//! follows `error_mode` (of the group, else the processor): `propagate` (the default, as
//! the Collector's) rejects the batch, counted as
//! `otelcol_processor_failed_requests{reason="statement_error"}`; `ignore` logs (at most
//! once a second) and `silent` does not, and both go on with the next statement, each
//! failure counted under the same reason. Statements are parsed when the pipeline is
//! built: a bad one is a configuration error naming the statement and column.

use std::sync::Arc;
use std::time::{Duration, Instant};

use otel_pipeline_core::proto::collector::logs::v1::ExportLogsServiceRequest;
use otel_pipeline_core::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline_core::proto::common::v1::{InstrumentationScope, KeyValue, any_value};
use otel_pipeline_core::proto::logs::v1::LogRecord;
use otel_pipeline_core::proto::metrics::v1::{Metric, metric::Data as MetricData};
use otel_pipeline_core::proto::resource::v1::Resource;
use otel_pipeline_core::proto::trace::v1::{Span, Status, span::Event};
use otel_pipeline_core::{
    Batch, BuildError, ComponentContext, ComponentId, ComponentTelemetry, ConsumeError, Consumer,
    Logs, Metrics, Processor, Traces,
};
use parking_lot::Mutex;
use regex::Regex;
use serde::Deserialize;

use crate::condition::{
    Condition, Cx, EvalError, Expr, Func, Item, Lit, Operand, Path, PointRef, SpanContext,
    Statement, Target, Val, eval_expr, path_prefixes, points, read_str, value_of,
};
use crate::config::ConfigError;
use crate::filter::ErrorMode;

/// Configuration of the transform processor.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// What a failing statement does, unless its group says otherwise.
    #[serde(default)]
    pub error_mode: ErrorMode,
    /// Statements on traces.
    #[serde(default)]
    pub trace_statements: Vec<StatementGroup>,
    /// Statements on metrics.
    #[serde(default)]
    pub metric_statements: Vec<StatementGroup>,
    /// Statements on logs.
    #[serde(default)]
    pub log_statements: Vec<StatementGroup>,
}

/// A statement on its own (its context inferred), or a group of them.
#[derive(Debug, Clone, PartialEq)]
pub enum StatementGroup {
    /// One statement; the context comes from its paths.
    Statement(String),
    /// Statements sharing a context and conditions.
    Group(GroupConfig),
}

/// A string is a statement; a map is a group, read with its own errors (an unknown key
/// is named, where an untagged enum would only say that nothing matched).
impl<'de> Deserialize<'de> for StatementGroup {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StatementGroup;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a statement, or a map with `statements`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StatementGroup::Statement(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                GroupConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(StatementGroup::Group)
            }
        }
        d.deserialize_any(V)
    }
}

/// Statements that share a context and conditions.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// `resource`, `span`, `spanevent`, `log`, `metric` or `datapoint`; inferred from the
    /// statements' paths when absent.
    #[serde(default)]
    pub context: Option<String>,
    /// The statements, run in order on each item.
    pub statements: Vec<String>,
    /// The items the group changes: those for which any condition is true (all, when
    /// there are none).
    #[serde(default)]
    pub conditions: Vec<String>,
    /// This group's error mode.
    #[serde(default)]
    pub error_mode: Option<ErrorMode>,
}

/// The item a group of statements runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Resource,
    Span,
    SpanEvent,
    Log,
    Metric,
    DataPoint,
}

impl Context {
    fn target(self) -> Target {
        match self {
            Self::Resource => Target::Resource,
            Self::Span | Self::SpanEvent => Target::Span,
            Self::Log => Target::Log,
            Self::Metric => Target::Metric,
            Self::DataPoint => Target::DataPoint,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Insert,
    Update,
    Upsert,
}

#[derive(Debug, Clone)]
enum Editor {
    Set(Path, Operand),
    DeleteKey(Path, Operand),
    DeleteMatchingKeys(Path, Regex),
    KeepKeys(Path, Operand),
    KeepMatchingKeys(Path, Regex),
    Limit(Path, usize, Vec<String>),
    MergeMaps(Path, Operand, Strategy),
    ReplacePattern(Path, Regex, String, bool),
    ReplaceMatch(Path, Regex, String),
    /// (map, on keys rather than values, pattern, replacement, hash what is put in)
    ReplaceAllPatterns(Path, bool, Regex, String, bool),
    ReplaceAllMatches(Path, Regex, String),
    TruncateAll(Path, usize),
}

#[derive(Debug, Clone)]
struct Compiled {
    text: String,
    editor: Editor,
    cond: Option<Expr>,
}

#[derive(Debug, Clone)]
struct Group {
    context: Context,
    conditions: Vec<Condition>,
    statements: Vec<Compiled>,
    error_mode: ErrorMode,
}

/// A transform configuration, compiled.
#[derive(Debug, Clone, Default)]
pub struct CompiledTransform {
    traces: Vec<Group>,
    metrics: Vec<Group>,
    logs: Vec<Group>,
}

/// Glob (`*`, `?`, `[...]`, `{a,b}`) to an anchored regex, as `replace_match` reads it.
fn glob(pattern: &str) -> Result<Regex, String> {
    let mut re = String::from("^");
    let mut chars = pattern.chars().peekable();
    let mut braces = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str("(?s:.*)"),
            '?' => re.push_str("(?s:.)"),
            '[' => {
                re.push('[');
                if chars.peek() == Some(&'!') {
                    chars.next();
                    re.push('^');
                }
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                    if c == '\\' || c == '[' {
                        re.push('\\');
                    }
                    re.push(c);
                }
                re.push(']');
            }
            '{' => {
                braces += 1;
                re.push_str("(?:");
            }
            '}' if braces > 0 => {
                braces -= 1;
                re.push(')');
            }
            ',' if braces > 0 => re.push('|'),
            '\\' => {
                if let Some(next) = chars.next() {
                    re.push_str(&regex::escape(&next.to_string()));
                }
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    if braces > 0 {
        return Err(format!("unclosed `{{` in glob `{pattern}`"));
    }
    re.push('$');
    Regex::new(&re).map_err(|e| format!("glob `{pattern}`: {e}"))
}

fn infer(text: &str, signal: &str) -> Context {
    let prefixes = path_prefixes(text);
    let has = |p: &str| prefixes.iter().any(|x| x == p);
    match signal {
        "traces" if has("spanevent") => Context::SpanEvent,
        "traces" if has("span") => Context::Span,
        "metrics" if has("datapoint") => Context::DataPoint,
        "metrics" if has("metric") => Context::Metric,
        "logs" if has("log") => Context::Log,
        _ if has("resource") => Context::Resource,
        "traces" => Context::Span,
        "metrics" => Context::DataPoint,
        _ => Context::Log,
    }
}

fn context_named(name: &str, signal: &str) -> Result<Context, String> {
    Ok(match (signal, name) {
        (_, "resource") => Context::Resource,
        ("traces", "span") => Context::Span,
        ("traces", "spanevent") => Context::SpanEvent,
        ("logs", "log") => Context::Log,
        ("metrics", "metric") => Context::Metric,
        ("metrics", "datapoint") => Context::DataPoint,
        (_, "scope" | "instrumentation_scope") => {
            return Err(
                "the scope context is not supported: use resource or the item's context".into(),
            );
        }
        _ => {
            let known = match signal {
                "traces" => "resource, span, spanevent",
                "metrics" => "resource, metric, datapoint",
                _ => "resource, log",
            };
            return Err(format!(
                "`{name}` is not a context of {signal} statements (use {known})"
            ));
        }
    })
}

/// An argument that must be a path; `maps` only: a whole attribute map.
fn path_arg(args: &[Operand], i: usize, maps: bool) -> Result<Path, String> {
    match args.get(i) {
        Some(Operand::Path(p @ (Path::AttrMap | Path::ResourceAttrMap))) => Ok(p.clone()),
        Some(Operand::Path(p @ Path::OfSpan(inner))) if **inner == Path::AttrMap => Ok(p.clone()),
        Some(Operand::Path(p)) if !maps => Ok(p.clone()),
        Some(_) if maps => Err(format!(
            "argument {} must be an attribute map (`attributes`, `resource.attributes`)",
            i + 1
        )),
        _ => Err(format!("argument {} must be a path", i + 1)),
    }
}

fn str_arg(args: &[Operand], i: usize, what: &str) -> Result<String, String> {
    match args.get(i) {
        Some(Operand::Lit(Lit::Str(s))) => Ok(s.clone()),
        _ => Err(format!("argument {} ({what}) must be a string", i + 1)),
    }
}

fn int_arg(args: &[Operand], i: usize, what: &str) -> Result<usize, String> {
    match args.get(i) {
        Some(Operand::Lit(Lit::Int(n))) if *n >= 0 => Ok(*n as usize),
        _ => Err(format!(
            "argument {} ({what}) must be a non-negative integer",
            i + 1
        )),
    }
}

fn regex_arg(args: &[Operand], i: usize) -> Result<Regex, String> {
    let p = str_arg(args, i, "a regex")?;
    Regex::new(&p).map_err(|e| format!("invalid regex `{p}`: {e}"))
}

/// An optional trailing function argument (`SHA256`); any other is refused.
fn hash_arg(args: &[Operand], i: usize) -> Result<bool, String> {
    match args.get(i) {
        None => Ok(false),
        Some(Operand::FuncName(Func::Sha256)) => Ok(true),
        Some(_) => Err(format!(
            "argument {} may only be SHA256 (the function applied to what is put in)",
            i + 1
        )),
    }
}

fn arity(args: &[Operand], least: usize, most: usize, editor: &str) -> Result<(), String> {
    if args.len() < least || args.len() > most {
        let want = if least == most {
            least.to_string()
        } else {
            format!("{least} to {most}")
        };
        return Err(format!(
            "{editor} takes {want} arguments, got {}",
            args.len()
        ));
    }
    Ok(())
}

fn editor(st: &Statement) -> Result<Editor, String> {
    let a = &st.args;
    let name = st.editor.as_str();
    Ok(match name {
        "set" => {
            arity(a, 2, 2, name)?;
            Editor::Set(path_arg(a, 0, false)?, a[1].clone())
        }
        "delete_key" => {
            arity(a, 2, 2, name)?;
            Editor::DeleteKey(path_arg(a, 0, true)?, a[1].clone())
        }
        "delete_matching_keys" => {
            arity(a, 2, 2, name)?;
            Editor::DeleteMatchingKeys(path_arg(a, 0, true)?, regex_arg(a, 1)?)
        }
        "keep_keys" => {
            arity(a, 2, 2, name)?;
            Editor::KeepKeys(path_arg(a, 0, true)?, a[1].clone())
        }
        "keep_matching_keys" => {
            arity(a, 2, 2, name)?;
            Editor::KeepMatchingKeys(path_arg(a, 0, true)?, regex_arg(a, 1)?)
        }
        "limit" => {
            arity(a, 2, 3, name)?;
            let priority = match a.get(2) {
                None => Vec::new(),
                Some(Operand::List(items)) => items
                    .iter()
                    .map(|i| match i {
                        Operand::Lit(Lit::Str(s)) => Ok(s.clone()),
                        _ => Err("limit's priority keys must be strings".to_string()),
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err("limit's third argument must be a list of keys".into()),
            };
            Editor::Limit(path_arg(a, 0, true)?, int_arg(a, 1, "the limit")?, priority)
        }
        "merge_maps" => {
            arity(a, 3, 3, name)?;
            let strategy = match str_arg(a, 2, "the strategy")?.as_str() {
                "insert" => Strategy::Insert,
                "update" => Strategy::Update,
                "upsert" => Strategy::Upsert,
                other => {
                    return Err(format!(
                        "merge_maps strategy `{other}` is not insert, update or upsert"
                    ));
                }
            };
            Editor::MergeMaps(path_arg(a, 0, true)?, a[1].clone(), strategy)
        }
        "replace_pattern" => {
            arity(a, 3, 4, name)?;
            Editor::ReplacePattern(
                path_arg(a, 0, false)?,
                regex_arg(a, 1)?,
                str_arg(a, 2, "the replacement")?,
                hash_arg(a, 3)?,
            )
        }
        "replace_match" => {
            arity(a, 3, 3, name)?;
            Editor::ReplaceMatch(
                path_arg(a, 0, false)?,
                glob(&str_arg(a, 1, "a glob")?)?,
                str_arg(a, 2, "the replacement")?,
            )
        }
        "replace_all_patterns" => {
            arity(a, 4, 5, name)?;
            let keys = match str_arg(a, 1, "the mode")?.as_str() {
                "key" => true,
                "value" => false,
                other => {
                    return Err(format!(
                        "replace_all_patterns mode `{other}` is not key or value"
                    ));
                }
            };
            Editor::ReplaceAllPatterns(
                path_arg(a, 0, true)?,
                keys,
                regex_arg(a, 2)?,
                str_arg(a, 3, "the replacement")?,
                hash_arg(a, 4)?,
            )
        }
        "replace_all_matches" => {
            arity(a, 3, 3, name)?;
            Editor::ReplaceAllMatches(
                path_arg(a, 0, true)?,
                glob(&str_arg(a, 1, "a glob")?)?,
                str_arg(a, 2, "the replacement")?,
            )
        }
        "truncate_all" => {
            arity(a, 2, 2, name)?;
            Editor::TruncateAll(path_arg(a, 0, true)?, int_arg(a, 1, "the limit")?)
        }
        other => {
            return Err(format!(
                "unknown editor `{other}` (known: set, delete_key, delete_matching_keys, keep_keys, keep_matching_keys, limit, merge_maps, replace_pattern, replace_match, replace_all_patterns, replace_all_matches, truncate_all)"
            ));
        }
    })
}

impl TransformConfig {
    /// Parse every statement and condition; errors name the setting
    /// (`trace_statements[0].statements[1]`) and the column.
    pub fn compile(&self) -> Result<CompiledTransform, ConfigError> {
        let groups = |key: &str, signal: &str, list: &[StatementGroup]| {
            list.iter()
                .enumerate()
                .map(|(i, g)| self.group(&format!("{key}[{i}]"), signal, g))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(CompiledTransform {
            traces: groups("trace_statements", "traces", &self.trace_statements)?,
            metrics: groups("metric_statements", "metrics", &self.metric_statements)?,
            logs: groups("log_statements", "logs", &self.log_statements)?,
        })
    }

    fn group(&self, at: &str, signal: &str, g: &StatementGroup) -> Result<Group, ConfigError> {
        let (texts, conditions, context, mode, stmt_at): (Vec<&String>, &[String], _, _, String) =
            match g {
                StatementGroup::Statement(t) => (
                    vec![t],
                    &[],
                    infer(t, signal),
                    self.error_mode,
                    at.to_string(),
                ),
                StatementGroup::Group(c) => {
                    let context = match &c.context {
                        Some(name) => context_named(name, signal)
                            .map_err(|m| ConfigError::new(format!("{at}.context"), m))?,
                        // The most specific context any statement or condition names.
                        None => {
                            let all: Vec<Context> = c
                                .statements
                                .iter()
                                .chain(&c.conditions)
                                .map(|t| infer(t, signal))
                                .collect();
                            [
                                Context::SpanEvent,
                                Context::Span,
                                Context::Log,
                                Context::DataPoint,
                                Context::Metric,
                                Context::Resource,
                            ]
                            .into_iter()
                            .find(|ctx| all.contains(ctx))
                            .unwrap_or_else(|| infer("", signal))
                        }
                    };
                    (
                        c.statements.iter().collect(),
                        &c.conditions[..],
                        context,
                        c.error_mode.unwrap_or(self.error_mode),
                        format!("{at}.statements"),
                    )
                }
            };
        let target = context.target();
        let conditions = conditions
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Condition::parse_for(t, target).map_err(|e| {
                    ConfigError::new(format!("{at}.conditions[{i}]"), format!("{e} in `{t}`"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let single = matches!(g, StatementGroup::Statement(_));
        let statements = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let place = if single {
                    stmt_at.clone()
                } else {
                    format!("{stmt_at}[{i}]")
                };
                let st = Statement::parse(t, target)
                    .map_err(|e| ConfigError::new(&place, format!("{e} in `{t}`")))?;
                let editor = editor(&st).map_err(|m| {
                    ConfigError::new(&place, format!("column {}: {m} in `{t}`", st.column))
                })?;
                Ok(Compiled {
                    text: (*t).clone(),
                    editor,
                    cond: st.cond,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(Group {
            context,
            conditions,
            statements,
            error_mode: mode,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The items statements change.

/// What a statement changes: an item with its resource (and scope), readable as a
/// condition context and writable by path.
trait Item_ {
    /// The item as conditions read it.
    fn cx(&self) -> Cx<'_>;
    /// The item's own attributes.
    fn attrs(&mut self) -> Option<&mut Vec<KeyValue>>;
    /// The item's resource (created when a statement writes to it).
    fn resource(&mut self) -> &mut Option<Resource>;
    /// The resource's attributes.
    fn resource_attrs(&mut self) -> &mut Vec<KeyValue> {
        &mut self
            .resource()
            .get_or_insert_with(Resource::default)
            .attributes
    }
    /// Set a field other than attributes.
    fn set_field(&mut self, path: &Path, v: Val) -> Result<(), EvalError>;
    /// `path` as this item writes it: a `span.` path is the item's own only for a span.
    fn resolve<'p>(&self, path: &'p Path) -> Result<&'p Path, EvalError> {
        match path {
            Path::OfSpan(_) => Err(EvalError(
                "the span's fields cannot be changed from this context".into(),
            )),
            p => Ok(p),
        }
    }
}

fn map_of<'a, T: Item_ + ?Sized>(
    item: &'a mut T,
    path: &Path,
) -> Result<&'a mut Vec<KeyValue>, EvalError> {
    match item.resolve(path)? {
        Path::ResourceAttrMap | Path::ResourceAttr(_) => Ok(item.resource_attrs()),
        _ => item
            .attrs()
            .ok_or_else(|| EvalError("this context has no attributes".into())),
    }
}

fn not_settable(path: &Path) -> EvalError {
    EvalError(format!("{path:?} cannot be set in this context"))
}

fn want_int(v: &Val, path: &Path) -> Result<i64, EvalError> {
    match v {
        Val::Int(i) => Ok(*i),
        other => Err(EvalError(format!("{path:?} takes an int, got {other:?}"))),
    }
}

fn want_str(v: Val, path: &Path) -> Result<String, EvalError> {
    match v {
        Val::Str(s) => Ok(s),
        other => Err(EvalError(format!("{path:?} takes a string, got {other:?}"))),
    }
}

fn want_u64(v: &Val, path: &Path) -> Result<u64, EvalError> {
    u64::try_from(want_int(v, path)?).map_err(|_| EvalError(format!("{path:?} cannot be negative")))
}

/// A count (`dropped_attributes_count`), saturating at `u32::MAX`.
fn want_u32(v: &Val, path: &Path) -> Result<u32, EvalError> {
    Ok(u32::try_from(want_u64(v, path)?).unwrap_or(u32::MAX))
}

/// Write `v` at `path`; nil writes nothing (as the Collector's `set`).
fn write<T: Item_ + ?Sized>(item: &mut T, path: &Path, v: Val) -> Result<(), EvalError> {
    if v == Val::Nil {
        return Ok(());
    }
    let path = item.resolve(path)?;
    match path {
        Path::Attr(k) | Path::ResourceAttr(k) => {
            let attrs = map_of(item, path)?;
            let value = v.into_any();
            match attrs.iter_mut().find(|kv| kv.key == *k) {
                Some(kv) => kv.value = value,
                None => attrs.push(KeyValue {
                    key: k.clone(),
                    value,
                    ..KeyValue::default()
                }),
            }
            Ok(())
        }
        Path::AttrMap | Path::ResourceAttrMap => match v {
            Val::Any(any_value::Value::KvlistValue(m)) => {
                *map_of(item, path)? = m.values;
                Ok(())
            }
            other => Err(EvalError(format!(
                "an attribute map takes a map, got {other:?}"
            ))),
        },
        _ => item.set_field(path, v),
    }
}

fn status(span: &mut Span) -> &mut Status {
    span.status.get_or_insert_with(Status::default)
}

struct ResourceItem<'a> {
    resource: &'a mut Option<Resource>,
}

impl Item_ for ResourceItem<'_> {
    fn cx(&self) -> Cx<'_> {
        Cx {
            item: Item::Resource,
            resource: self.resource.as_ref(),
            scope: None,
        }
    }
    fn attrs(&mut self) -> Option<&mut Vec<KeyValue>> {
        Some(self.resource_attrs())
    }
    fn resource(&mut self) -> &mut Option<Resource> {
        self.resource
    }
    fn set_field(&mut self, path: &Path, v: Val) -> Result<(), EvalError> {
        match path {
            Path::DroppedAttributesCount => {
                let n = want_u32(&v, path)?;
                self.resource
                    .get_or_insert_with(Resource::default)
                    .dropped_attributes_count = n;
                Ok(())
            }
            _ => Err(not_settable(path)),
        }
    }
}

struct SpanItem<'a> {
    resource: &'a mut Option<Resource>,
    scope: &'a Option<InstrumentationScope>,
    span: &'a mut Span,
}

impl Item_ for SpanItem<'_> {
    fn cx(&self) -> Cx<'_> {
        let (resource, scope) = (self.resource.as_ref(), self.scope.as_ref());
        Cx {
            item: Item::Span(SpanContext {
                span: self.span,
                event: None,
                resource,
                scope,
            }),
            resource,
            scope,
        }
    }
    fn attrs(&mut self) -> Option<&mut Vec<KeyValue>> {
        Some(&mut self.span.attributes)
    }
    fn resolve<'p>(&self, path: &'p Path) -> Result<&'p Path, EvalError> {
        Ok(match path {
            Path::OfSpan(inner) => inner,
            p => p,
        })
    }
    fn resource(&mut self) -> &mut Option<Resource> {
        self.resource
    }
    fn set_field(&mut self, path: &Path, v: Val) -> Result<(), EvalError> {
        let span = &mut *self.span;
        match path {
            Path::Name => span.name = want_str(v, path)?,
            Path::Kind => {
                let k = want_int(&v, path)?;
                span.kind = i32::try_from(k)
                    .ok()
                    .filter(|k| (0..=5).contains(k))
                    .ok_or_else(|| EvalError(format!("{k} is not a span kind")))?;
            }
            Path::StatusCode => {
                let c = want_int(&v, path)?;
                status(span).code = i32::try_from(c)
                    .ok()
                    .filter(|c| (0..=2).contains(c))
                    .ok_or_else(|| EvalError(format!("{c} is not a status code")))?;
            }
            Path::StatusMessage => status(span).message = want_str(v, path)?,
            Path::TraceState => span.trace_state = want_str(v, path)?,
            Path::StartTimeUnixNano => span.start_time_unix_nano = want_u64(&v, path)?,
            Path::EndTimeUnixNano => span.end_time_unix_nano = want_u64(&v, path)?,
            Path::DroppedAttributesCount => {
                span.dropped_attributes_count = want_u32(&v, path)?;
            }
            _ => return Err(not_settable(path)),
        }
        Ok(())
    }
}

struct EventItem<'a> {
    resource: &'a mut Option<Resource>,
    scope: &'a Option<InstrumentationScope>,
    span: &'a Span,
    event: &'a mut Event,
}

impl Item_ for EventItem<'_> {
    fn cx(&self) -> Cx<'_> {
        let (resource, scope) = (self.resource.as_ref(), self.scope.as_ref());
        Cx {
            item: Item::Span(SpanContext {
                span: self.span,
                event: Some(self.event),
                resource,
                scope,
            }),
            resource,
            scope,
        }
    }
    fn attrs(&mut self) -> Option<&mut Vec<KeyValue>> {
        Some(&mut self.event.attributes)
    }
    fn resource(&mut self) -> &mut Option<Resource> {
        self.resource
    }
    fn set_field(&mut self, path: &Path, v: Val) -> Result<(), EvalError> {
        match path {
            Path::Name => self.event.name = want_str(v, path)?,
            Path::TimeUnixNano | Path::StartTimeUnixNano => {
                self.event.time_unix_nano = want_u64(&v, path)?;
            }
            Path::DroppedAttributesCount => {
                self.event.dropped_attributes_count = want_u32(&v, path)?;
            }
            _ => return Err(not_settable(path)),
        }
        Ok(())
    }
}

struct LogItem<'a> {
    resource: &'a mut Option<Resource>,
    scope: &'a Option<InstrumentationScope>,
    log: &'a mut LogRecord,
}

impl Item_ for LogItem<'_> {
    fn cx(&self) -> Cx<'_> {
        Cx {
            item: Item::Log(self.log),
            resource: self.resource.as_ref(),
            scope: self.scope.as_ref(),
        }
    }
    fn attrs(&mut self) -> Option<&mut Vec<KeyValue>> {
        Some(&mut self.log.attributes)
    }
    fn resource(&mut self) -> &mut Option<Resource> {
        self.resource
    }
    fn set_field(&mut self, path: &Path, v: Val) -> Result<(), EvalError> {
        let log = &mut *self.log;
        match path {
            Path::Body => log.body = v.into_any(),
            Path::SeverityText => log.severity_text = want_str(v, path)?,
            Path::SeverityNumber => {
                let n = want_int(&v, path)?;
                log.severity_number = i32::try_from(n)
                    .ok()
                    .filter(|n| (0..=24).contains(n))
                    .ok_or_else(|| EvalError(format!("{n} is not a severity number")))?;
            }
            Path::TimeUnixNano => log.time_unix_nano = want_u64(&v, path)?,
            Path::ObservedTimeUnixNano => log.observed_time_unix_nano = want_u64(&v, path)?,
            Path::EventName => log.event_name = want_str(v, path)?,
            Path::DroppedAttributesCount => {
                log.dropped_attributes_count = want_u32(&v, path)?;
            }
            _ => return Err(not_settable(path)),
        }
        Ok(())
    }
}

struct MetricItem<'a> {
    resource: &'a mut Option<Resource>,
    scope: &'a Option<InstrumentationScope>,
    metric: &'a mut Metric,
}

impl Item_ for MetricItem<'_> {
    fn cx(&self) -> Cx<'_> {
        Cx {
            item: Item::Metric(self.metric),
            resource: self.resource.as_ref(),
            scope: self.scope.as_ref(),
        }
    }
    fn attrs(&mut self) -> Option<&mut Vec<KeyValue>> {
        None
    }
    fn resource(&mut self) -> &mut Option<Resource> {
        self.resource
    }
    fn set_field(&mut self, path: &Path, v: Val) -> Result<(), EvalError> {
        match path {
            Path::Name => self.metric.name = want_str(v, path)?,
            Path::Description => self.metric.description = want_str(v, path)?,
            Path::Unit => self.metric.unit = want_str(v, path)?,
            _ => return Err(not_settable(path)),
        }
        Ok(())
    }
}

/// The attributes of data point `index` of a metric.
fn point_attrs(metric: &mut Metric, index: usize) -> Option<&mut Vec<KeyValue>> {
    Some(match metric.data.as_mut()? {
        MetricData::Gauge(g) => &mut g.data_points.get_mut(index)?.attributes,
        MetricData::Sum(s) => &mut s.data_points.get_mut(index)?.attributes,
        MetricData::Histogram(h) => &mut h.data_points.get_mut(index)?.attributes,
        MetricData::ExponentialHistogram(h) => &mut h.data_points.get_mut(index)?.attributes,
        MetricData::Summary(s) => &mut s.data_points.get_mut(index)?.attributes,
    })
}

struct PointItem<'a> {
    resource: &'a mut Option<Resource>,
    scope: &'a Option<InstrumentationScope>,
    metric: &'a mut Metric,
    index: usize,
}

impl Item_ for PointItem<'_> {
    fn cx(&self) -> Cx<'_> {
        let point: Option<PointRef<'_>> = points(self.metric).nth(self.index);
        Cx {
            item: match point {
                Some(p) => Item::Point(p, self.metric),
                None => Item::Metric(self.metric),
            },
            resource: self.resource.as_ref(),
            scope: self.scope.as_ref(),
        }
    }
    fn attrs(&mut self) -> Option<&mut Vec<KeyValue>> {
        point_attrs(self.metric, self.index)
    }
    fn resource(&mut self) -> &mut Option<Resource> {
        self.resource
    }
    fn set_field(&mut self, path: &Path, _v: Val) -> Result<(), EvalError> {
        Err(not_settable(path))
    }
}

// ---------------------------------------------------------------------------------------
// Running statements.

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    use std::fmt::Write;
    let mut out = String::with_capacity(64);
    for b in sha2::Sha256::digest(s.as_bytes()) {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `re` replaced in `s` by `replacement` (`$1` expands), each replacement hashed when
/// `hash`; `None` when nothing matched.
fn replace(re: &Regex, s: &str, replacement: &str, hash: bool) -> Option<String> {
    if !re.is_match(s) {
        return None;
    }
    Some(if hash {
        re.replace_all(s, |caps: &regex::Captures<'_>| {
            let mut dst = String::new();
            caps.expand(replacement, &mut dst);
            sha256_hex(&dst)
        })
        .into_owned()
    } else {
        re.replace_all(s, replacement).into_owned()
    })
}

/// The longest prefix of `s` of at most `limit` bytes that ends on a character boundary.
fn truncated(s: &str, limit: usize) -> Option<&str> {
    if s.len() <= limit {
        return None;
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Some(&s[..end])
}

fn string_of(kv: &KeyValue) -> Option<&str> {
    match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn set_string(kv: &mut KeyValue, s: String) {
    kv.value = Val::Str(s).into_any();
}

/// Run one statement on `item`.
fn exec<T: Item_ + ?Sized>(st: &Compiled, item: &mut T) -> Result<(), EvalError> {
    // Read first (conditions, arguments, current values), then write.
    let cx = item.cx();
    if let Some(c) = &st.cond
        && !eval_expr(c, &cx)?
    {
        return Ok(());
    }
    match &st.editor {
        Editor::Set(path, value) => {
            let v = value_of(value, &cx)?;
            write(item, path, v)
        }
        Editor::DeleteKey(map, key) => {
            let computed;
            let key = match key {
                Operand::Lit(Lit::Str(k)) => k.as_str(),
                other => {
                    computed = value_of(other, &cx)?.text();
                    computed.as_str()
                }
            };
            map_of(item, map)?.retain(|kv| kv.key != key);
            Ok(())
        }
        Editor::DeleteMatchingKeys(map, re) => {
            map_of(item, map)?.retain(|kv| !re.is_match(&kv.key));
            Ok(())
        }
        Editor::KeepKeys(map, keys) => {
            let keys: Vec<String> = match value_of(keys, &cx)? {
                Val::Any(any_value::Value::ArrayValue(a)) => {
                    a.values.iter().map(|v| Val::of(Some(v)).text()).collect()
                }
                Val::Str(s) => vec![s],
                other => {
                    return Err(EvalError(format!(
                        "keep_keys takes a list of keys, got {other:?}"
                    )));
                }
            };
            map_of(item, map)?.retain(|kv| keys.contains(&kv.key));
            Ok(())
        }
        Editor::KeepMatchingKeys(map, re) => {
            map_of(item, map)?.retain(|kv| re.is_match(&kv.key));
            Ok(())
        }
        Editor::Limit(map, limit, priority) => {
            let attrs = map_of(item, map)?;
            if attrs.len() > *limit {
                // Priority keys first, then the others in order, up to the limit.
                let mut kept = 0usize;
                let mut keep: Vec<bool> = attrs
                    .iter()
                    .map(|kv| {
                        let p = priority.contains(&kv.key) && kept < *limit;
                        kept += usize::from(p);
                        p
                    })
                    .collect();
                for (i, k) in keep.iter_mut().enumerate() {
                    if !*k && kept < *limit && !priority.contains(&attrs[i].key) {
                        *k = true;
                        kept += 1;
                    }
                }
                let mut it = keep.into_iter();
                attrs.retain(|_| it.next().unwrap_or(false));
            }
            Ok(())
        }
        Editor::MergeMaps(map, source, strategy) => {
            let source = match value_of(source, &cx)? {
                Val::Any(any_value::Value::KvlistValue(m)) => m.values,
                Val::Nil => return Ok(()),
                other => return Err(EvalError(format!("merge_maps takes a map, got {other:?}"))),
            };
            let attrs = map_of(item, map)?;
            for kv in source {
                match attrs.iter_mut().find(|a| a.key == kv.key) {
                    Some(a) if *strategy != Strategy::Insert => a.value = kv.value,
                    Some(_) => {}
                    None if *strategy != Strategy::Update => attrs.push(kv),
                    None => {}
                }
            }
            Ok(())
        }
        // Only strings are rewritten; other values are left as they are. The value is
        // read in place and copied only when it changes.
        Editor::ReplacePattern(path, re, replacement, hash) => {
            match read_str(path, &cx).and_then(|s| replace(re, s, replacement, *hash)) {
                Some(new) => write(item, path, Val::Str(new)),
                None => Ok(()),
            }
        }
        Editor::ReplaceMatch(path, glob, replacement) => {
            if read_str(path, &cx).is_some_and(|s| glob.is_match(s)) {
                write(item, path, Val::Str(replacement.clone()))
            } else {
                Ok(())
            }
        }
        Editor::ReplaceAllPatterns(map, keys, re, replacement, hash) => {
            let attrs = map_of(item, map)?;
            if *keys {
                for kv in attrs.iter_mut() {
                    if let Some(new) = replace(re, &kv.key, replacement, *hash) {
                        kv.key = new;
                    }
                }
            } else {
                for kv in attrs.iter_mut() {
                    let new = string_of(kv).and_then(|s| replace(re, s, replacement, *hash));
                    if let Some(new) = new {
                        set_string(kv, new);
                    }
                }
            }
            Ok(())
        }
        Editor::ReplaceAllMatches(map, glob, replacement) => {
            for kv in map_of(item, map)?.iter_mut() {
                if string_of(kv).is_some_and(|s| glob.is_match(s)) {
                    set_string(kv, replacement.clone());
                }
            }
            Ok(())
        }
        Editor::TruncateAll(map, limit) => {
            for kv in map_of(item, map)?.iter_mut() {
                let cut = string_of(kv)
                    .and_then(|s| truncated(s, *limit))
                    .map(str::to_string);
                if let Some(cut) = cut {
                    set_string(kv, cut);
                }
            }
            Ok(())
        }
    }
}

/// Errors under `ignore`/`silent`, and the last log line's time under `ignore`.
struct Failures<'a> {
    count: usize,
    last_log: &'a Mutex<Option<Instant>>,
}

impl Failures<'_> {
    /// A statement or condition failed: propagate, or count (and log at most once a
    /// second) and go on.
    fn failed(&mut self, mode: ErrorMode, text: &str, e: &EvalError) -> Result<(), EvalError> {
        match mode {
            ErrorMode::Propagate => Err(EvalError(format!("`{text}`: {}", e.0))),
            ErrorMode::Ignore | ErrorMode::Silent => {
                self.count += 1;
                if mode == ErrorMode::Ignore {
                    let mut last = self.last_log.lock();
                    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        *last = Some(Instant::now());
                        tracing::warn!(statement = text, error = %e.0, "transform: a statement failed and was skipped (error_mode: ignore)");
                    }
                }
                Ok(())
            }
        }
    }
}

/// Run a group on one item.
fn run_group<T: Item_ + ?Sized>(
    g: &Group,
    item: &mut T,
    failures: &mut Failures<'_>,
) -> Result<(), EvalError> {
    if !g.conditions.is_empty() {
        let cx = item.cx();
        let mut selected = false;
        for c in &g.conditions {
            match c.eval_in(&cx) {
                Ok(true) => {
                    selected = true;
                    break;
                }
                Ok(false) => {}
                Err(e) => failures.failed(g.error_mode, c.text(), &e)?,
            }
        }
        if !selected {
            return Ok(());
        }
    }
    for st in &g.statements {
        if let Err(e) = exec(st, item) {
            failures.failed(g.error_mode, &st.text, &e)?;
        }
    }
    Ok(())
}

impl CompiledTransform {
    /// Whether there is nothing to run for traces (the batch can pass as it is).
    fn has_traces(&self) -> bool {
        !self.traces.is_empty()
    }

    /// Run the trace statements on `data` in place. Returns how many statements failed
    /// and were skipped (`ignore`, `silent`); a failure under `propagate` is the error.
    pub fn apply(&self, data: &mut ExportTraceServiceRequest) -> Result<usize, EvalError> {
        self.counting(|c, f| c.apply_traces(data, f))
    }

    /// [`apply`](Self::apply) for logs.
    pub fn apply_logs_request(
        &self,
        data: &mut ExportLogsServiceRequest,
    ) -> Result<usize, EvalError> {
        self.counting(|c, f| c.apply_logs(data, f))
    }

    /// [`apply`](Self::apply) for metrics.
    pub fn apply_metrics_request(
        &self,
        data: &mut ExportMetricsServiceRequest,
    ) -> Result<usize, EvalError> {
        self.counting(|c, f| c.apply_metrics(data, f))
    }

    fn counting(
        &self,
        run: impl FnOnce(&Self, &mut Failures<'_>) -> Result<(), EvalError>,
    ) -> Result<usize, EvalError> {
        let last = Mutex::new(None);
        let mut failures = Failures {
            count: 0,
            last_log: &last,
        };
        run(self, &mut failures)?;
        Ok(failures.count)
    }

    fn apply_traces(
        &self,
        req: &mut ExportTraceServiceRequest,
        failures: &mut Failures<'_>,
    ) -> Result<(), EvalError> {
        for g in &self.traces {
            for rs in &mut req.resource_spans {
                let resource = &mut rs.resource;
                if g.context == Context::Resource {
                    run_group(g, &mut ResourceItem { resource }, failures)?;
                    continue;
                }
                for ss in &mut rs.scope_spans {
                    let scope = &ss.scope;
                    for span in &mut ss.spans {
                        if g.context == Context::Span {
                            run_group(
                                g,
                                &mut SpanItem {
                                    resource,
                                    scope,
                                    span,
                                },
                                failures,
                            )?;
                            continue;
                        }
                        // Span events: taken out of the span while they change, so their
                        // conditions can read the span; put back whatever happens.
                        let mut events = std::mem::take(&mut span.events);
                        let mut out = Ok(());
                        for event in &mut events {
                            out = run_group(
                                g,
                                &mut EventItem {
                                    resource,
                                    scope,
                                    span,
                                    event,
                                },
                                failures,
                            );
                            if out.is_err() {
                                break;
                            }
                        }
                        span.events = events;
                        out?;
                    }
                }
            }
        }
        Ok(())
    }

    fn apply_logs(
        &self,
        req: &mut ExportLogsServiceRequest,
        failures: &mut Failures<'_>,
    ) -> Result<(), EvalError> {
        for g in &self.logs {
            for rl in &mut req.resource_logs {
                let resource = &mut rl.resource;
                if g.context == Context::Resource {
                    run_group(g, &mut ResourceItem { resource }, failures)?;
                    continue;
                }
                for sl in &mut rl.scope_logs {
                    let scope = &sl.scope;
                    for log in &mut sl.log_records {
                        run_group(
                            g,
                            &mut LogItem {
                                resource,
                                scope,
                                log,
                            },
                            failures,
                        )?;
                    }
                }
            }
        }
        Ok(())
    }

    fn apply_metrics(
        &self,
        req: &mut ExportMetricsServiceRequest,
        failures: &mut Failures<'_>,
    ) -> Result<(), EvalError> {
        for g in &self.metrics {
            for rm in &mut req.resource_metrics {
                let resource = &mut rm.resource;
                if g.context == Context::Resource {
                    run_group(g, &mut ResourceItem { resource }, failures)?;
                    continue;
                }
                for sm in &mut rm.scope_metrics {
                    let scope = &sm.scope;
                    for metric in &mut sm.metrics {
                        if g.context == Context::Metric {
                            run_group(
                                g,
                                &mut MetricItem {
                                    resource,
                                    scope,
                                    metric,
                                },
                                failures,
                            )?;
                            continue;
                        }
                        for index in 0..points(metric).len() {
                            run_group(
                                g,
                                &mut PointItem {
                                    resource,
                                    scope,
                                    metric,
                                    index,
                                },
                                failures,
                            )?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The transform processor.
///
/// ```
/// use otel_pipeline_core::{Pipeline, testing::InMemoryExporter};
/// use otel_processors::transform::{StatementGroup, TransformConfig, TransformProcessor};
/// let transform = TransformProcessor::new(TransformConfig {
///     trace_statements: vec![StatementGroup::Statement(
///         r#"replace_pattern(span.name, "\\?.*", "")"#.into(),
///     )],
///     ..TransformConfig::default()
/// });
/// let (exporter, _) = InMemoryExporter::new();
/// assert!(Pipeline::traces().processor(transform).exporter(exporter).build().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct TransformProcessor {
    id: ComponentId,
    config: TransformConfig,
}

impl TransformProcessor {
    /// A transform with id `transform`.
    pub fn new(config: TransformConfig) -> Self {
        Self {
            id: ComponentId::new("transform"),
            config,
        }
    }

    /// Use another id (`transform/redact`).
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }
}

/// The consumer built by [`TransformProcessor`], for signal `S`.
pub struct TransformConsumer<S, N> {
    compiled: Arc<CompiledTransform>,
    telemetry: Arc<ComponentTelemetry>,
    last_log: Mutex<Option<Instant>>,
    next: N,
    signal: std::marker::PhantomData<fn(S)>,
}

impl<S, N: std::fmt::Debug> std::fmt::Debug for TransformConsumer<S, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransformConsumer")
            .field("compiled", &self.compiled)
            .field("next", &self.next)
            .finish()
    }
}

macro_rules! transform_signal {
    ($signal:ty, $apply:ident, $any:expr) => {
        impl Processor<$signal> for TransformProcessor {
            type Consumer<N: Consumer<$signal>> = TransformConsumer<$signal, N>;

            fn id(&self) -> ComponentId {
                self.id.clone()
            }

            fn build<N: Consumer<$signal>>(
                self,
                next: N,
                ctx: &mut ComponentContext<'_>,
            ) -> Result<TransformConsumer<$signal, N>, BuildError> {
                let compiled = self
                    .config
                    .compile()
                    .map_err(|e| ctx.invalid(e.path, e.message))?;
                Ok(TransformConsumer {
                    compiled: Arc::new(compiled),
                    telemetry: ctx.telemetry(),
                    last_log: Mutex::new(None),
                    next,
                    signal: std::marker::PhantomData,
                })
            }
        }

        impl<N: Consumer<$signal>> Consumer<$signal> for TransformConsumer<$signal, N> {
            async fn consume(
                &self,
                mut batch: Batch<$signal>,
            ) -> Result<(), ConsumeError<$signal>> {
                let any: fn(&CompiledTransform) -> bool = $any;
                if !any(&self.compiled) {
                    return self.next.consume(batch).await;
                }
                let n = batch.item_count();
                let mut failures = Failures {
                    count: 0,
                    last_log: &self.last_log,
                };
                let outcome = self.compiled.$apply(batch.data_mut(), &mut failures);
                self.telemetry
                    .add_failed_requests("statement_error", failures.count);
                if let Err(e) = outcome {
                    self.telemetry.add_failed_request("statement_error");
                    self.telemetry
                        .add_dropped(otel_pipeline_core::DropReason::CONDITION_ERROR, n);
                    return Err(ConsumeError::rejected(
                        n,
                        format!("transform statement failed: {}", e.0),
                    ));
                }
                self.next.consume(batch).await
            }
        }
    };
}

transform_signal!(Traces, apply_traces, CompiledTransform::has_traces);
transform_signal!(Metrics, apply_metrics, |c| !c.metrics.is_empty());
transform_signal!(Logs, apply_logs, |c| !c.logs.is_empty());

#[cfg(test)]
mod tests {
    use super::*;
    use otel_pipeline_core::proto::common::v1::AnyValue;
    use otel_pipeline_core::proto::trace::v1::{ResourceSpans, ScopeSpans};

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..KeyValue::default()
        }
    }

    fn s(v: &str) -> any_value::Value {
        any_value::Value::StringValue(v.into())
    }

    fn request() -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("ignored-errors"))],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        name: "GET /api/products/42?color=red".into(),
                        kind: 2,
                        attributes: vec![
                            kv("http.response.status_code", any_value::Value::IntValue(500)),
                            kv("error.type", s("500")),
                            kv("user.email", s("ada@example.com")),
                            kv("long", s("ééééé")),
                        ],
                        status: Some(Status {
                            code: 2,
                            message: "boom".into(),
                        }),
                        events: vec![Event {
                            name: "exception".into(),
                            attributes: vec![kv("exception.message", s("password=hunter2"))],
                            ..Event::default()
                        }],
                        ..Span::default()
                    }],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    fn run(yaml: &str) -> Result<ExportTraceServiceRequest, EvalError> {
        let config: TransformConfig = serde_yaml_ng::from_str(yaml).expect("yaml");
        let compiled = config.compile().expect("compiles");
        let mut req = request();
        let last = Mutex::new(None);
        let mut failures = Failures {
            count: 0,
            last_log: &last,
        };
        compiled.apply_traces(&mut req, &mut failures)?;
        Ok(req)
    }

    fn span(req: &ExportTraceServiceRequest) -> &Span {
        &req.resource_spans[0].scope_spans[0].spans[0]
    }

    fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        span.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn the_real_configs_statements_do_what_they_say() {
        // 02-otel-demo-2024: strip query strings, then name product routes.
        let out = run(r#"
error_mode: ignore
trace_statements:
  - context: span
    statements:
      - replace_pattern(name, "\\?.*", "")
      - replace_match(name, "GET /api/products/*", "GET /api/products/{productId}")
"#)
        .unwrap();
        assert_eq!(span(&out).name, "GET /api/products/{productId}");
        // 16-newrelic: truncate_all on span and resource attributes (basic form).
        let out = run(r#"
trace_statements:
  - truncate_all(span.attributes, 4)
  - truncate_all(resource.attributes, 4)
"#)
        .unwrap();
        assert_eq!(attr(span(&out), "user.email"), Some(&s("ada@")));
        assert_eq!(
            attr(span(&out), "long"),
            Some(&s("éé")),
            "cut on a character boundary"
        );
        let res = &out.resource_spans[0].resource.as_ref().unwrap().attributes[0];
        assert_eq!(res.value.as_ref().unwrap().value, Some(s("igno")));
        // 17-newrelic-ignored-errors: a group condition.
        let out = run(r#"
error_mode: ignore
trace_statements:
  - context: span
    conditions:
      - resource.attributes["service.name"] == "ignored-errors" and attributes["http.response.status_code"] == 500 and span.kind == 2
    statements:
      - set(status.code, STATUS_CODE_UNSET)
      - delete_key(attributes, "error.type")
"#)
        .unwrap();
        assert_eq!(span(&out).status.as_ref().unwrap().code, 0);
        assert_eq!(attr(span(&out), "error.type"), None);
        // The same with a condition that does not hold changes nothing.
        let out = run(r#"
trace_statements:
  - context: span
    conditions: ['span.kind == 3']
    statements: ['set(status.code, STATUS_CODE_UNSET)']
"#)
        .unwrap();
        assert_eq!(span(&out).status.as_ref().unwrap().code, 2);
    }

    #[test]
    fn editors_and_converters() {
        let out = run(r#"
trace_statements:
  - context: span
    statements:
      - set(attributes["user.email"], SHA256(attributes["user.email"]))
      - set(attributes["route"], Concat(["GET", String(attributes["http.response.status_code"])], " "))
      - set(attributes["parts"], Split("a,b,c", ","))
      - set(attributes["code"], Int("503"))
      - set(attributes["n"], Len(name)) where IsMatch(name, "^GET")
      - set(attributes["never"], "x") where name == "nope"
      - keep_matching_keys(attributes, "^(user|route|parts|code|n|never|long)")
      - limit(attributes, 5, ["n"])
  - context: spanevent
    statements:
      - replace_all_patterns(attributes, "value", "password=\\w+", "password=***")
      - set(name, Concat([name, span.name], ":"))
"#)
        .unwrap();
        let sp = span(&out);
        // sha256("ada@example.com"), as `sha256sum` gives it.
        assert_eq!(
            attr(sp, "user.email"),
            Some(&s(
                "b5fc85e55755f9e0d030a10ab4429b6b2944855f9a0d60077fe832becbc41d72"
            ))
        );
        assert_eq!(attr(sp, "route"), Some(&s("GET 500")));
        assert_eq!(attr(sp, "code"), None, "dropped by the limit");
        assert_eq!(attr(sp, "n"), Some(&any_value::Value::IntValue(30)));
        assert_eq!(attr(sp, "never"), None);
        // Six were left; the limit keeps the priority key and the first four others.
        let keys: Vec<&str> = sp.attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["user.email", "long", "route", "parts", "n"]);
        let event = &sp.events[0];
        assert_eq!(
            event.attributes[0].value.as_ref().unwrap().value,
            Some(s("password=***"))
        );
        assert_eq!(event.name, "exception:GET /api/products/42?color=red");
    }

    #[test]
    fn converters_compute_what_the_collectors_do() {
        let out = run(r#"
trace_statements:
  - context: span
    statements:
      - set(attributes["snake"], ConvertCase("HelloWorld http2Server", "snake"))
      - set(attributes["camel"], ConvertCase("hello_world", "camel"))
      - set(attributes["upper"], ConvertCase("abc", "upper"))
      - set(attributes["int"], Int("503"))
      - set(attributes["int2"], Int(2.9))
      - set(attributes["double"], Double("1.5"))
      - set(attributes["sub"], Substring("abcdef", 1, 3))
      - set(attributes["trim"], Trim("  x  "))
      - set(attributes["none"], Int("not a number"))
      - set(attributes["matched"], IsMatch(attributes["http.response.status_code"], "^5"))
"#)
        .unwrap();
        let sp = span(&out);
        assert_eq!(attr(sp, "snake"), Some(&s("hello_world_http2_server")));
        assert_eq!(attr(sp, "camel"), Some(&s("HelloWorld")));
        assert_eq!(attr(sp, "upper"), Some(&s("ABC")));
        assert_eq!(attr(sp, "int"), Some(&any_value::Value::IntValue(503)));
        assert_eq!(attr(sp, "int2"), Some(&any_value::Value::IntValue(2)));
        assert_eq!(
            attr(sp, "double"),
            Some(&any_value::Value::DoubleValue(1.5))
        );
        assert_eq!(attr(sp, "sub"), Some(&s("bcd")));
        assert_eq!(attr(sp, "trim"), Some(&s("x")));
        assert_eq!(attr(sp, "none"), None, "nil is not set");
        assert_eq!(
            attr(sp, "matched"),
            Some(&any_value::Value::BoolValue(true))
        );
    }

    #[test]
    fn failures_follow_error_mode_and_are_counted() {
        let yaml = |mode: &str| {
            format!(
                "error_mode: {mode}\ntrace_statements:\n  - context: span\n    statements:\n      - set(attributes[\"h\"], SHA256(kind))\n      - set(attributes[\"after\"], true)\n"
            )
        };
        // propagate: the batch fails with the statement named.
        let err = run(&yaml("propagate")).unwrap_err();
        assert!(err.0.contains("SHA256(kind)"), "{}", err.0);
        // ignore: the next statement still runs.
        let out = run(&yaml("ignore")).unwrap();
        assert_eq!(
            attr(span(&out), "after"),
            Some(&any_value::Value::BoolValue(true))
        );
        assert_eq!(attr(span(&out), "h"), None);
    }

    #[test]
    fn bad_statements_are_refused_with_their_place() {
        for (yaml, want) in [
            (
                "trace_statements: ['sett(name, \"x\")']",
                "unknown editor `sett`",
            ),
            (
                "trace_statements: [{context: span, statments: ['set(name, \"x\")']}]",
                "unknown field `statments`",
            ),
            ("trace_statements: ['set(name)']", "set takes 2 arguments"),
            (
                "trace_statements: ['delete_key(name, \"x\")']",
                "attribute map",
            ),
            (
                "trace_statements: ['replace_pattern(name, \"(\", \"x\")']",
                "invalid regex",
            ),
            (
                "trace_statements: ['set(attributes[\"x\"], Nope(1))']",
                "unknown converter",
            ),
            (
                "trace_statements: [{context: log, statements: ['set(name, \"x\")']}]",
                "trace_statements[0].context",
            ),
            (
                "trace_statements: [{context: span, statements: ['set(name, \"x\") where']}]",
                "trace_statements[0].statements[0]",
            ),
        ] {
            // A mistake in the shape fails as the section is read, the rest when compiled.
            let text = match serde_yaml_ng::from_str::<TransformConfig>(yaml) {
                Err(e) => e.to_string(),
                Ok(config) => {
                    let err = config.compile().expect_err(yaml);
                    format!("{}: {}", err.path, err.message)
                }
            };
            assert!(text.contains(want), "{yaml}: {text}");
        }
    }

    #[test]
    fn globs_read_as_the_collector_reads_them() {
        let g = glob("GET /api/products/*").unwrap();
        assert!(g.is_match("GET /api/products/42/reviews"));
        assert!(!g.is_match("POST /api/products/42"));
        let g = glob("{GET,POST} /v?/[!x]*").unwrap();
        assert!(g.is_match("POST /v1/items"));
        assert!(!g.is_match("GET /v1/xs"));
        assert!(glob("{open").is_err());
    }
}

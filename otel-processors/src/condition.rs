//! Conditions in the OTTL form that filter and sampling configs use, parsed once at build
//! time into a small tree and evaluated per span without allocating.
//!
//! ```text
//! attributes["http.route"] == "/healthz"
//! resource.attributes["service.name"] != "checkout" and kind == SPAN_KIND_SERVER
//! IsMatch(name, "^GET /internal/.*") or (status.code == STATUS_CODE_ERROR and not attributes["retry"] == true)
//! attributes["http.response.status_code"] >= 500
//! ```
//!
//! # Paths, by context
//! Every context reads `resource.attributes["k"]`, `instrumentation_scope.name` and
//! `instrumentation_scope.version` (also `scope.name`, `scope.version`). A path may carry
//! its context's prefix, as current OTTL writes it (`span.name`, `log.body`,
//! `datapoint.attributes["k"]`, `metric.name`).
//! - **span** and **spanevent**: `attributes["k"]` (for span events, the event's), `name`,
//!   `kind`, `status.code`, `status.message`, `trace_state`, `duration_ns` (end minus
//!   start).
//! - **log_record**: `attributes["k"]`, `body` (a string body; other bodies compare as
//!   values), `severity_number`, `severity_text`, `time_unix_nano`,
//!   `observed_time_unix_nano`, `flags`, `event_name`, `dropped_attributes_count`.
//! - **metric**: `name`, `description`, `unit`, `type`, `aggregation_temporality`,
//!   `is_monotonic`, and the functions `HasAttrKeyOnDatapoint("k")` and
//!   `HasAttrOnDatapoint("k", "v")`.
//! - **datapoint**: `attributes["k"]`, `value_double`, `value_int`, `count`, `sum`,
//!   `time_unix_nano`, `start_time_unix_nano`, `flags`, and the metric's fields as
//!   `metric.name`, `metric.type`, ...
//! - **resource**: `attributes["k"]`, `dropped_attributes_count`.
//!
//! A path that its context does not have is a parse error, so a typo fails at start-up.
//!
//! # Literals
//! strings (`"..."` with `\"` and `\\` escapes), integers, floats, `true`, `false`, `nil`,
//! and the enum names `SPAN_KIND_*`, `STATUS_CODE_*`, `SEVERITY_NUMBER_*`,
//! `METRIC_DATA_TYPE_*` and `AGGREGATION_TEMPORALITY_*`.
//!
//! # Semantics
//! Comparisons follow the Collector's OTTL rules (`pkg/ottl/compare.go`) and never fail:
//! - integers and floats compare numerically, strings and bytes lexicographically (by
//!   byte), booleans with `false < true`;
//! - a missing attribute is `nil`; `nil` equals `nil` (so `<=` and `>=` hold as well) and
//!   nothing else;
//! - maps and arrays are equal when their contents are, and have no order;
//! - any other pair, such as a string against a number or a missing attribute against a
//!   number, is false for every operator except `!=`, which is true.
//!
//! So `attributes["http.status_code"] >= 500` is simply false on a span without the
//! attribute, or with the string `"503"`. `IsMatch(value, "regex")` matches a string as it
//! is and any other value on its text, as the Collector formats it (`503`, `1.5`, `true`,
//! bytes in hex, maps and arrays as JSON); a missing value matches nothing.
//!
//! The only evaluation error left is a bare path used as a condition whose value is not a
//! boolean (`attributes["retry"]` on a string); the processor's `error_mode` decides.
//! Parentheses and `not` nest at most 64 deep.

use std::fmt;

use otel_pipeline_core::proto::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use otel_pipeline_core::proto::logs::v1::LogRecord;
use otel_pipeline_core::proto::metrics::v1::{
    ExponentialHistogramDataPoint, HistogramDataPoint, Metric, NumberDataPoint, SummaryDataPoint,
    metric::Data as MetricData, number_data_point,
};
use otel_pipeline_core::proto::resource::v1::Resource;
use otel_pipeline_core::proto::trace::v1::{Span, span::Event};
use regex::Regex;

use crate::tail_sampling::wire::AnyRef;

/// A condition that did not parse: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ConditionError {
    /// 1-based column in the condition text.
    pub column: usize,
    /// What was expected or wrong.
    pub message: String,
}

/// An evaluation that could not decide (for example `"a" < 3`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

/// What a condition is evaluated on.
#[derive(Debug, Clone, Copy)]
pub struct SpanContext<'a> {
    /// The span.
    pub span: &'a Span,
    /// The span event, when evaluating a span-event condition.
    pub event: Option<&'a Event>,
    /// The resource of the span.
    pub resource: Option<&'a Resource>,
    /// The instrumentation scope.
    pub scope: Option<&'a InstrumentationScope>,
}

/// Which kind of item a condition is written for: it decides the paths it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Spans and span events (`traces.span`, `traces.spanevent`, sampling policies).
    Span,
    /// Log records (`logs.log_record`).
    Log,
    /// Metrics (`metrics.metric`).
    Metric,
    /// Metric data points (`metrics.datapoint`).
    DataPoint,
    /// Resources (`traces.resource`, `metrics.resource`, `logs.resource`).
    Resource,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Self::Span => "span",
            Self::Log => "log_record",
            Self::Metric => "metric",
            Self::DataPoint => "datapoint",
            Self::Resource => "resource",
        }
    }
}

/// One data point of any metric type.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PointRef<'a> {
    Number(&'a NumberDataPoint),
    Histogram(&'a HistogramDataPoint),
    Exponential(&'a ExponentialHistogramDataPoint),
    Summary(&'a SummaryDataPoint),
}

impl<'a> PointRef<'a> {
    pub(crate) fn attributes(self) -> &'a [KeyValue] {
        match self {
            Self::Number(p) => &p.attributes,
            Self::Histogram(p) => &p.attributes,
            Self::Exponential(p) => &p.attributes,
            Self::Summary(p) => &p.attributes,
        }
    }
}

/// What a condition is evaluated on, for contexts other than spans.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Item<'a> {
    Span(SpanContext<'a>),
    Log(&'a LogRecord),
    Metric(&'a Metric),
    Point(PointRef<'a>, &'a Metric),
    Resource,
    /// A span read in place from its encoding (the filter's byte path).
    SpanBytes(SpanBytes<'a>),
}

/// A span read in place from its encoding: the fields conditions compare, found in one
/// walk as prost would decode them (the last occurrence of a field wins, `status`
/// occurrences merge); attributes are looked up in the bytes when a condition asks.
/// What a decoded span answers, this answers, for every path but the whole attribute
/// map ([`Condition::reads_in_place`]) and attributes whose values are not scalars
/// (which the caller checks first, and decodes for).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SpanBytes<'a> {
    /// The attribute keys the conditions read, and what the span holds for each (the
    /// first attribute with the key, as the decoded lookups take it), found in the same
    /// walk.
    keys: &'a [String],
    values: &'a [Option<AnyRef<'a>>],
    name: &'a str,
    kind: i32,
    status_code: i32,
    status_message: &'a str,
    trace_state: &'a str,
    start: u64,
    end: u64,
    dropped_attributes_count: u32,
}

impl<'a> SpanBytes<'a> {
    /// The values of `keys` in the span `bytes`, into `values` (one per key), in one
    /// walk of its attributes.
    pub(crate) fn read_attributes(
        bytes: &'a [u8],
        keys: &[String],
        values: &mut Vec<Option<AnyRef<'a>>>,
    ) {
        use crate::tail_sampling::wire::{SPAN_ATTRIBUTES, any_value, attribute};
        use otel_pipeline_core::wire::{Wire, fields};
        values.clear();
        values.resize(keys.len(), None);
        if keys.is_empty() {
            return;
        }
        for (f, w) in fields(bytes) {
            if let (SPAN_ATTRIBUTES, Wire::Len(kv)) = (f, w) {
                let (k, raw) = attribute(kv);
                if let Some(i) = keys.iter().position(|key| key.as_bytes() == k)
                    && values[i].is_none()
                {
                    values[i] = Some(raw.map_or(AnyRef::Other, any_value));
                }
            }
        }
    }

    /// Read the span `bytes`, whose attributes `keys` hold `values`
    /// ([`Self::read_attributes`]); `None` where the bytes do not read as a span (the
    /// caller decodes, and gets prost's verdict).
    pub(crate) fn new(
        bytes: &'a [u8],
        keys: &'a [String],
        values: &'a [Option<AnyRef<'a>>],
    ) -> Option<Self> {
        use otel_pipeline_core::wire::{Wire, fields};
        let text = |b: &'a [u8]| std::str::from_utf8(b).ok();
        let mut s = Self {
            keys,
            values,
            ..Self::default()
        };
        let mut walk = fields(bytes);
        for (f, w) in walk.by_ref() {
            match (f, w) {
                (3, Wire::Len(b)) => s.trace_state = text(b)?,
                (5, Wire::Len(b)) => s.name = text(b)?,
                (6, Wire::Varint(v)) => s.kind = v as i32,
                (7, Wire::Fixed64(v)) => s.start = v,
                (8, Wire::Fixed64(v)) => s.end = v,
                (10, Wire::Varint(v)) => s.dropped_attributes_count = v as u32,
                (15, Wire::Len(st)) => {
                    let mut inner = fields(st);
                    for (g, x) in inner.by_ref() {
                        match (g, x) {
                            (2, Wire::Len(m)) => s.status_message = text(m)?,
                            (3, Wire::Varint(c)) => s.status_code = c as i32,
                            _ => {}
                        }
                    }
                    if !inner.finished() {
                        return None;
                    }
                }
                _ => {}
            }
        }
        walk.finished().then_some(s)
    }

    /// Whether an attribute the conditions read holds something other than a string,
    /// bool, int or double (an array, a map, bytes, or no value): read the span decoded.
    pub(crate) fn any_not_scalar(values: &[Option<AnyRef<'_>>]) -> bool {
        values.iter().any(|v| matches!(v, Some(AnyRef::Other)))
    }
}

fn read_span_bytes<'a>(path: &Path, s: &SpanBytes<'a>) -> Value<'a> {
    match path {
        Path::OfSpan(inner) => read_span_bytes(inner, s),
        Path::Attr(k) => match s
            .keys
            .iter()
            .position(|key| key == k)
            .and_then(|i| s.values.get(i).copied().flatten())
        {
            Some(AnyRef::Str(v)) => Value::Str(v),
            Some(AnyRef::Bool(v)) => Value::Bool(v),
            Some(AnyRef::Int(v)) => Value::Int(v),
            Some(AnyRef::Double(v)) => Value::Double(v),
            // Checked before evaluating (`attr_not_scalar`): such a span is decoded.
            Some(AnyRef::Other) | None => Value::Nil,
        },
        Path::Name => Value::Str(s.name),
        Path::Kind => Value::Int(i64::from(s.kind)),
        Path::StatusCode => Value::Int(i64::from(s.status_code)),
        Path::StatusMessage => Value::Str(s.status_message),
        Path::TraceState => Value::Str(s.trace_state),
        Path::DurationNs => Value::Int(s.end.saturating_sub(s.start) as i64),
        Path::StartTimeUnixNano => int(s.start),
        Path::EndTimeUnixNano => int(s.end),
        Path::DroppedAttributesCount => Value::Int(i64::from(s.dropped_attributes_count)),
        _ => Value::Nil,
    }
}

/// An item with the resource and scope it belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cx<'a> {
    pub(crate) item: Item<'a>,
    pub(crate) resource: Option<&'a Resource>,
    pub(crate) scope: Option<&'a InstrumentationScope>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Path {
    Attr(String),
    ResourceAttr(String),
    /// The item's whole attribute map (`attributes`, `span.attributes`).
    AttrMap,
    /// The resource's whole attribute map (`resource.attributes`).
    ResourceAttrMap,
    /// A path of the span itself (`span.name`): in a span event's context, the event's
    /// span rather than the event.
    OfSpan(Box<Path>),
    EndTimeUnixNano,
    ScopeName,
    ScopeVersion,
    Name,
    Kind,
    StatusCode,
    StatusMessage,
    TraceState,
    DurationNs,
    Body,
    SeverityNumber,
    SeverityText,
    TimeUnixNano,
    ObservedTimeUnixNano,
    StartTimeUnixNano,
    Flags,
    EventName,
    DroppedAttributesCount,
    Description,
    Unit,
    MetricType,
    AggregationTemporality,
    IsMonotonic,
    /// The `expr` language's `MetricType`: `Gauge`, `Sum`, `Histogram`, ...
    MetricTypeName,
    ValueDouble,
    ValueInt,
    Count,
    Sum,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Nil,
}

#[derive(Debug, Clone)]
pub(crate) enum Operand {
    Lit(Lit),
    Path(Path),
    /// A converter: `SHA256(attributes["email"])`, `Concat([a, b], "-")`.
    Call(Box<Call>),
    /// A list literal: `["a", "b"]`.
    List(Vec<Operand>),
    /// A converter named without a call, as an editor's argument
    /// (`replace_pattern(name, "x", "y", SHA256)`).
    FuncName(Func),
}

/// A converter call, its arguments parsed (and its regex compiled) once.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) func: Func,
    pub(crate) args: Vec<Operand>,
    /// The compiled pattern of `IsMatch`.
    pub(crate) regex: Option<Regex>,
}

/// The converters (functions that compute a value) statements and conditions may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    Sha256,
    Concat,
    Split,
    IsMatch,
    Int,
    Double,
    String,
    ConvertCase,
    Len,
    Substring,
    Trim,
}

impl Func {
    fn by_name(name: &str) -> Option<(Self, usize, usize)> {
        // (function, least arguments, most arguments)
        Some(match name {
            "SHA256" => (Self::Sha256, 1, 1),
            "Concat" => (Self::Concat, 2, 2),
            "Split" => (Self::Split, 2, 2),
            "IsMatch" => (Self::IsMatch, 2, 2),
            "Int" => (Self::Int, 1, 1),
            "Double" => (Self::Double, 1, 1),
            "String" => (Self::String, 1, 1),
            "ConvertCase" => (Self::ConvertCase, 2, 2),
            "Len" => (Self::Len, 1, 1),
            "Substring" => (Self::Substring, 3, 3),
            "Trim" => (Self::Trim, 1, 2),
            _ => return None,
        })
    }
}

/// A value computed by a converter or read for a statement: owned, unlike [`Value`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    Nil,
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Bytes(Vec<u8>),
    /// Maps and arrays.
    Any(any_value::Value),
}

impl Val {
    fn owned(v: Value<'_>) -> Self {
        match v {
            Value::Nil => Self::Nil,
            Value::Str(s) => Self::Str(s.to_string()),
            Value::Int(i) => Self::Int(i),
            Value::Double(d) => Self::Double(d),
            Value::Bool(b) => Self::Bool(b),
            Value::Bytes(b) => Self::Bytes(b.to_vec()),
            Value::Complex(c) => Self::Any(c.clone()),
        }
    }

    fn borrowed(&self) -> Value<'_> {
        match self {
            Self::Nil => Value::Nil,
            Self::Str(s) => Value::Str(s),
            Self::Int(i) => Value::Int(*i),
            Self::Double(d) => Value::Double(*d),
            Self::Bool(b) => Value::Bool(*b),
            Self::Bytes(b) => Value::Bytes(b),
            Self::Any(a) => Value::Complex(a),
        }
    }

    /// The value as an attribute value; `None` for nil.
    pub(crate) fn into_any(self) -> Option<AnyValue> {
        let v = match self {
            Self::Nil => return None,
            Self::Str(s) => any_value::Value::StringValue(s),
            Self::Int(i) => any_value::Value::IntValue(i),
            Self::Double(d) => any_value::Value::DoubleValue(d),
            Self::Bool(b) => any_value::Value::BoolValue(b),
            Self::Bytes(b) => any_value::Value::BytesValue(b),
            Self::Any(a) => a,
        };
        Some(AnyValue { value: Some(v) })
    }

    /// An attribute value as a [`Val`].
    pub(crate) fn of(v: Option<&AnyValue>) -> Self {
        Self::owned(any_value(v))
    }

    /// The text the Collector's string getters read: strings as they are, other values
    /// formatted (numbers, booleans, hex bytes, JSON maps and arrays); nil is "".
    pub(crate) fn text(&self) -> String {
        match self {
            Self::Str(s) => s.clone(),
            other => value_text(other.borrowed()),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Self::Nil => "nil",
            Self::Str(_) => "a string",
            Self::Int(_) => "an int",
            Self::Double(_) => "a double",
            Self::Bool(_) => "a bool",
            Self::Bytes(_) => "bytes",
            Self::Any(any_value::Value::ArrayValue(_)) => "a slice",
            Self::Any(_) => "a map",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

#[derive(Debug, Clone)]
pub(crate) enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Cmp(Operand, Op, Operand),
    Truthy(Operand),
    IsMatch(Operand, Regex),
    /// A data point of the metric has attribute `key` (with `value`, when given).
    OnDatapoint(String, Option<Lit>),
}

/// A parsed condition.
#[derive(Clone)]
pub struct Condition {
    text: String,
    expr: Expr,
    target: Target,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Condition").field(&self.text).finish()
    }
}

/// A value read from a span.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value<'a> {
    Str(&'a str),
    Int(i64),
    Double(f64),
    Bool(bool),
    Bytes(&'a [u8]),
    Nil,
    /// Arrays and maps: equal to another by their contents, never ordered.
    Complex(&'a any_value::Value),
}

fn any_value(v: Option<&AnyValue>) -> Value<'_> {
    match v.and_then(|v| v.value.as_ref()) {
        None => Value::Nil,
        Some(any_value::Value::StringValue(s)) => Value::Str(s),
        Some(any_value::Value::IntValue(i)) => Value::Int(*i),
        Some(any_value::Value::DoubleValue(d)) => Value::Double(*d),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::BytesValue(b)) => Value::Bytes(b),
        Some(v) => Value::Complex(v),
    }
}

/// Look up `key` in `attrs` (linear: attribute lists are short and this allocates nothing).
pub(crate) fn find_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

impl Condition {
    /// Parse `text`; a bad condition is an error that names the column.
    ///
    /// ```
    /// use otel_processors::condition::Condition;
    /// assert!(Condition::parse(r#"attributes["http.route"] == "/healthz""#).is_ok());
    /// let err = Condition::parse(r#"attributes["http.route"] = "/healthz""#).unwrap_err();
    /// assert_eq!(err.column, 26);
    /// ```
    pub fn parse(text: &str) -> Result<Self, ConditionError> {
        Self::parse_for(text, Target::Span)
    }

    /// Parse `text` as a condition on `target` items.
    pub(crate) fn parse_for(text: &str, target: Target) -> Result<Self, ConditionError> {
        Self::parse_dialect(text, target, false)
    }

    /// Parse with the older `expr` spellings too (`&&`, `||`, `!`, `Label("k")`,
    /// `HasLabel("k")`, `MetricName`, `MetricType`), for data points.
    pub(crate) fn parse_expr_language(text: &str) -> Result<Self, ConditionError> {
        Self::parse_dialect(text, Target::DataPoint, true)
    }

    fn parse_dialect(text: &str, target: Target, expr: bool) -> Result<Self, ConditionError> {
        let tokens = lex(text, expr)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            len: text.len(),
            target,
            expr,
            depth: 0,
        };
        let parsed = p.or()?;
        if let Some(t) = p.peek() {
            return Err(p.error_at(t.col, format!("unexpected {}", t.kind)));
        }
        Ok(Self {
            text: text.to_string(),
            expr: parsed,
            target,
        })
    }

    /// The condition's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Evaluate on a span (or span event).
    pub fn eval(&self, cx: &SpanContext<'_>) -> Result<bool, EvalError> {
        self.eval_in(&Cx {
            item: Item::Span(*cx),
            resource: cx.resource,
            scope: cx.scope,
        })
    }

    /// Whether a span's encoding answers every path this condition reads
    /// ([`SpanBytes`]): all but the whole attribute map.
    pub(crate) fn reads_in_place(&self) -> bool {
        fn operand(o: &Operand) -> bool {
            match o {
                Operand::Path(p) => path(p),
                Operand::Call(c) => c.args.iter().all(operand),
                Operand::List(items) => items.iter().all(operand),
                Operand::Lit(_) | Operand::FuncName(_) => true,
            }
        }
        fn path(p: &Path) -> bool {
            match p {
                Path::AttrMap => false,
                Path::OfSpan(inner) => path(inner),
                _ => true,
            }
        }
        fn expr(e: &Expr) -> bool {
            match e {
                Expr::Or(v) | Expr::And(v) => v.iter().all(expr),
                Expr::Not(e) => expr(e),
                Expr::Cmp(a, _, b) => operand(a) && operand(b),
                Expr::Truthy(o) | Expr::IsMatch(o, _) => operand(o),
                Expr::OnDatapoint(..) => false,
            }
        }
        self.target == Target::Span && expr(&self.expr)
    }

    /// The span attribute keys this condition reads (`attributes["k"]`).
    pub(crate) fn attribute_keys(&self, out: &mut Vec<String>) {
        fn operand(o: &Operand, out: &mut Vec<String>) {
            match o {
                Operand::Path(p) => path(p, out),
                Operand::Call(c) => c.args.iter().for_each(|a| operand(a, out)),
                Operand::List(items) => items.iter().for_each(|a| operand(a, out)),
                Operand::Lit(_) | Operand::FuncName(_) => {}
            }
        }
        fn path(p: &Path, out: &mut Vec<String>) {
            match p {
                Path::Attr(k) if !out.contains(k) => out.push(k.clone()),
                Path::OfSpan(inner) => path(inner, out),
                _ => {}
            }
        }
        fn expr(e: &Expr, out: &mut Vec<String>) {
            match e {
                Expr::Or(v) | Expr::And(v) => v.iter().for_each(|e| expr(e, out)),
                Expr::Not(e) => expr(e, out),
                Expr::Cmp(a, _, b) => {
                    operand(a, out);
                    operand(b, out);
                }
                Expr::Truthy(o) | Expr::IsMatch(o, _) => operand(o, out),
                Expr::OnDatapoint(..) => {}
            }
        }
        expr(&self.expr, out);
    }

    /// Evaluate on any item. An item of another context than the condition was parsed
    /// for is an evaluation error (the filter never mixes them).
    pub(crate) fn eval_in(&self, cx: &Cx<'_>) -> Result<bool, EvalError> {
        let fits = matches!(
            (self.target, &cx.item),
            (Target::Span, Item::Span(_) | Item::SpanBytes(_))
                | (Target::Log, Item::Log(_))
                | (Target::Metric, Item::Metric(_))
                | (Target::DataPoint, Item::Point(..))
                | (Target::Resource, Item::Resource)
        );
        if !fits {
            return Err(EvalError(format!(
                "a {} condition evaluated on another kind of item",
                self.target.name()
            )));
        }
        eval(&self.expr, cx)
    }
}

/// A parsed statement: `editor(arguments) [where condition]`.
#[derive(Debug, Clone)]
pub(crate) struct Statement {
    pub(crate) editor: String,
    /// 1-based column of the editor's name.
    pub(crate) column: usize,
    pub(crate) args: Vec<Operand>,
    pub(crate) cond: Option<Expr>,
}

impl Statement {
    /// Parse a statement whose paths are those of `target` items.
    pub(crate) fn parse(text: &str, target: Target) -> Result<Self, ConditionError> {
        let tokens = lex(text, false)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            len: text.len(),
            target,
            expr: false,
            depth: 0,
        };
        let (editor, column) = match p.next() {
            Some(Token {
                kind: Tok::Ident(w),
                col,
            }) => (w, col),
            Some(t) => {
                return Err(p.error_at(t.col, format!("expected an editor name, found {}", t.kind)));
            }
            None => return Err(p.eof()),
        };
        let args = p.arguments()?;
        let cond = if p.is_word("where") {
            p.pos += 1;
            Some(p.or()?)
        } else {
            None
        };
        if let Some(t) = p.peek() {
            return Err(p.error_at(t.col, format!("unexpected {}", t.kind)));
        }
        Ok(Self {
            editor,
            column,
            args,
            cond,
        })
    }
}

/// The context prefixes the paths of `text` carry (`span`, `resource`, `log`, ...), for
/// inferring the context of a statement written without one.
pub(crate) fn path_prefixes(text: &str) -> Vec<String> {
    let Ok(tokens) = lex(text, false) else {
        return Vec::new();
    };
    tokens
        .windows(2)
        .filter_map(|w| match (&w[0].kind, &w[1].kind) {
            (Tok::Ident(name), Tok::Dot) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn int(v: u64) -> Value<'static> {
    Value::Int(v as i64)
}

fn metric_type(m: &Metric) -> i64 {
    match &m.data {
        None => 0,
        Some(MetricData::Gauge(_)) => 1,
        Some(MetricData::Sum(_)) => 2,
        Some(MetricData::Histogram(_)) => 3,
        Some(MetricData::ExponentialHistogram(_)) => 4,
        Some(MetricData::Summary(_)) => 5,
    }
}

/// Every data point of `m`, without allocating.
pub(crate) fn points(m: &Metric) -> Points<'_> {
    match &m.data {
        None => Points::Number([].iter()),
        Some(MetricData::Gauge(g)) => Points::Number(g.data_points.iter()),
        Some(MetricData::Sum(s)) => Points::Number(s.data_points.iter()),
        Some(MetricData::Histogram(h)) => Points::Histogram(h.data_points.iter()),
        Some(MetricData::ExponentialHistogram(h)) => Points::Exponential(h.data_points.iter()),
        Some(MetricData::Summary(s)) => Points::Summary(s.data_points.iter()),
    }
}

/// The iterator [`points`] returns: one slice iterator per kind of data point.
pub(crate) enum Points<'a> {
    Number(std::slice::Iter<'a, NumberDataPoint>),
    Histogram(std::slice::Iter<'a, HistogramDataPoint>),
    Exponential(std::slice::Iter<'a, ExponentialHistogramDataPoint>),
    Summary(std::slice::Iter<'a, SummaryDataPoint>),
}

impl<'a> Iterator for Points<'a> {
    type Item = PointRef<'a>;

    fn next(&mut self) -> Option<PointRef<'a>> {
        match self {
            Self::Number(i) => i.next().map(PointRef::Number),
            Self::Histogram(i) => i.next().map(PointRef::Histogram),
            Self::Exponential(i) => i.next().map(PointRef::Exponential),
            Self::Summary(i) => i.next().map(PointRef::Summary),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Self::Number(i) => i.size_hint(),
            Self::Histogram(i) => i.size_hint(),
            Self::Exponential(i) => i.size_hint(),
            Self::Summary(i) => i.size_hint(),
        }
    }
}

impl ExactSizeIterator for Points<'_> {}

fn read_metric<'a>(path: &Path, m: &'a Metric) -> Value<'a> {
    match path {
        Path::Name => Value::Str(&m.name),
        Path::Description => Value::Str(&m.description),
        Path::Unit => Value::Str(&m.unit),
        Path::MetricType => Value::Int(metric_type(m)),
        Path::AggregationTemporality => Value::Int(i64::from(match &m.data {
            Some(MetricData::Sum(s)) => s.aggregation_temporality,
            Some(MetricData::Histogram(h)) => h.aggregation_temporality,
            Some(MetricData::ExponentialHistogram(h)) => h.aggregation_temporality,
            _ => 0,
        })),
        Path::IsMonotonic => {
            Value::Bool(matches!(&m.data, Some(MetricData::Sum(s)) if s.is_monotonic))
        }
        Path::MetricTypeName => Value::Str(match &m.data {
            None => "Empty",
            Some(MetricData::Gauge(_)) => "Gauge",
            Some(MetricData::Sum(_)) => "Sum",
            Some(MetricData::Histogram(_)) => "Histogram",
            Some(MetricData::ExponentialHistogram(_)) => "ExponentialHistogram",
            Some(MetricData::Summary(_)) => "Summary",
        }),
        _ => Value::Nil,
    }
}

fn read_point<'a>(path: &Path, p: PointRef<'a>, m: &'a Metric) -> Value<'a> {
    use PointRef::*;
    match (path, p) {
        (Path::Attr(k), _) => any_value(find_attr(p.attributes(), k)),
        (Path::ValueDouble, Number(n)) => match n.value {
            Some(number_data_point::Value::AsDouble(d)) => Value::Double(d),
            _ => Value::Double(0.0),
        },
        (Path::ValueInt, Number(n)) => match n.value {
            Some(number_data_point::Value::AsInt(i)) => Value::Int(i),
            _ => Value::Int(0),
        },
        (Path::Count, Histogram(h)) => int(h.count),
        (Path::Count, Exponential(h)) => int(h.count),
        (Path::Count, Summary(s)) => int(s.count),
        (Path::Sum, Histogram(h)) => h.sum.map_or(Value::Nil, Value::Double),
        (Path::Sum, Exponential(h)) => h.sum.map_or(Value::Nil, Value::Double),
        (Path::Sum, Summary(s)) => Value::Double(s.sum),
        (Path::TimeUnixNano, Number(n)) => int(n.time_unix_nano),
        (Path::TimeUnixNano, Histogram(n)) => int(n.time_unix_nano),
        (Path::TimeUnixNano, Exponential(n)) => int(n.time_unix_nano),
        (Path::TimeUnixNano, Summary(n)) => int(n.time_unix_nano),
        (Path::StartTimeUnixNano, Number(n)) => int(n.start_time_unix_nano),
        (Path::StartTimeUnixNano, Histogram(n)) => int(n.start_time_unix_nano),
        (Path::StartTimeUnixNano, Exponential(n)) => int(n.start_time_unix_nano),
        (Path::StartTimeUnixNano, Summary(n)) => int(n.start_time_unix_nano),
        (Path::Flags, Number(n)) => Value::Int(i64::from(n.flags)),
        (Path::Flags, Histogram(n)) => Value::Int(i64::from(n.flags)),
        (Path::Flags, Exponential(n)) => Value::Int(i64::from(n.flags)),
        (Path::Flags, Summary(n)) => Value::Int(i64::from(n.flags)),
        (Path::ValueDouble | Path::ValueInt | Path::Count | Path::Sum, _) => Value::Nil,
        _ => read_metric(path, m),
    }
}

fn read_log<'a>(path: &Path, r: &'a LogRecord) -> Value<'a> {
    match path {
        Path::Attr(k) => any_value(find_attr(&r.attributes, k)),
        Path::Body => any_value(r.body.as_ref()),
        Path::SeverityNumber => Value::Int(i64::from(r.severity_number)),
        Path::SeverityText => Value::Str(&r.severity_text),
        Path::TimeUnixNano => int(r.time_unix_nano),
        Path::ObservedTimeUnixNano => int(r.observed_time_unix_nano),
        Path::Flags => Value::Int(i64::from(r.flags)),
        Path::EventName => Value::Str(&r.event_name),
        Path::DroppedAttributesCount => Value::Int(i64::from(r.dropped_attributes_count)),
        _ => Value::Nil,
    }
}

fn read_span<'a>(path: &Path, cx: &SpanContext<'a>) -> Value<'a> {
    match path {
        Path::OfSpan(inner) => read_span(inner, &SpanContext { event: None, ..*cx }),
        Path::Attr(k) => match cx.event {
            Some(e) => any_value(find_attr(&e.attributes, k)),
            None => any_value(find_attr(&cx.span.attributes, k)),
        },
        Path::Name => Value::Str(cx.event.map_or(&cx.span.name, |e| &e.name)),
        Path::Kind => Value::Int(i64::from(cx.span.kind)),
        Path::StatusCode => Value::Int(cx.span.status.as_ref().map_or(0, |s| i64::from(s.code))),
        Path::StatusMessage => Value::Str(cx.span.status.as_ref().map_or("", |s| &s.message)),
        Path::TraceState => Value::Str(&cx.span.trace_state),
        Path::DurationNs => Value::Int(
            cx.span
                .end_time_unix_nano
                .saturating_sub(cx.span.start_time_unix_nano) as i64,
        ),
        Path::StartTimeUnixNano => int(cx
            .event
            .map_or(cx.span.start_time_unix_nano, |e| e.time_unix_nano)),
        Path::EndTimeUnixNano => int(cx.span.end_time_unix_nano),
        Path::TimeUnixNano => cx.event.map_or(Value::Nil, |e| int(e.time_unix_nano)),
        Path::DroppedAttributesCount => Value::Int(i64::from(
            cx.event.map_or(cx.span.dropped_attributes_count, |e| {
                e.dropped_attributes_count
            }),
        )),
        _ => Value::Nil,
    }
}

fn read<'a>(path: &Path, cx: &Cx<'a>) -> Value<'a> {
    match path {
        Path::ResourceAttr(k) => {
            return any_value(cx.resource.and_then(|r| find_attr(&r.attributes, k)));
        }
        Path::ScopeName => return cx.scope.map_or(Value::Nil, |s| Value::Str(&s.name)),
        Path::ScopeVersion => return cx.scope.map_or(Value::Nil, |s| Value::Str(&s.version)),
        _ => {}
    }
    match cx.item {
        Item::Span(span) => read_span(path, &span),
        Item::SpanBytes(span) => read_span_bytes(path, &span),
        Item::Log(r) => read_log(path, r),
        Item::Metric(m) => read_metric(path, m),
        Item::Point(p, m) => read_point(path, p, m),
        Item::Resource => match (path, cx.resource) {
            (Path::Attr(k), r) => any_value(r.and_then(|r| find_attr(&r.attributes, k))),
            (Path::DroppedAttributesCount, Some(r)) => {
                Value::Int(i64::from(r.dropped_attributes_count))
            }
            _ => Value::Nil,
        },
    }
}

fn operand<'a>(o: &'a Operand, cx: &Cx<'a>) -> Value<'a> {
    match o {
        Operand::Path(p) => read(p, cx),
        Operand::Lit(l) => lit_value(l),
        // Computed values are compared through `value_of`, never read here.
        Operand::Call(_) | Operand::List(_) | Operand::FuncName(_) => Value::Nil,
    }
}

/// The string at `path` on `cx`, borrowed; `None` when it is not a string.
pub(crate) fn read_str<'a>(path: &Path, cx: &Cx<'a>) -> Option<&'a str> {
    match read(path, cx) {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

/// Whether reading `o` computes a value (a converter or a list) rather than borrowing one.
fn computed(o: &Operand) -> bool {
    matches!(
        o,
        Operand::Call(_)
            | Operand::List(_)
            | Operand::FuncName(_)
            | Operand::Path(Path::AttrMap | Path::ResourceAttrMap)
    ) || matches!(o, Operand::Path(Path::OfSpan(p)) if **p == Path::AttrMap)
}

/// The attributes of the item `cx` is on (for span events, the event's).
fn item_attrs<'a>(cx: &Cx<'a>) -> &'a [KeyValue] {
    match cx.item {
        Item::Span(s) => s.event.map_or(&s.span.attributes, |e| &e.attributes),
        // Conditions that read the whole map are never evaluated in place.
        Item::SpanBytes(_) => &[],
        Item::Log(r) => &r.attributes,
        Item::Point(p, _) => p.attributes(),
        Item::Metric(_) => &[],
        Item::Resource => cx.resource.map_or(&[][..], |r| &r.attributes),
    }
}

fn map_val(attrs: &[KeyValue]) -> Val {
    Val::Any(any_value::Value::KvlistValue(
        otel_pipeline_core::proto::common::v1::KeyValueList {
            values: attrs.to_vec(),
        },
    ))
}

/// The value of `o` on `cx`, owned: what statements' arguments and converters read.
pub(crate) fn value_of(o: &Operand, cx: &Cx<'_>) -> Result<Val, EvalError> {
    Ok(match o {
        Operand::Lit(l) => Val::owned(lit_value(l)),
        Operand::Path(Path::AttrMap) => map_val(item_attrs(cx)),
        Operand::Path(Path::OfSpan(inner)) if **inner == Path::AttrMap => match cx.item {
            Item::Span(s) => map_val(&s.span.attributes),
            _ => map_val(&[]),
        },
        Operand::Path(Path::ResourceAttrMap) => {
            map_val(cx.resource.map_or(&[][..], |r| &r.attributes))
        }
        Operand::Path(p) => Val::owned(read(p, cx)),
        Operand::List(items) => {
            let values = items
                .iter()
                .map(|i| value_of(i, cx).map(|v| v.into_any().unwrap_or_default()))
                .collect::<Result<Vec<_>, _>>()?;
            Val::Any(any_value::Value::ArrayValue(
                otel_pipeline_core::proto::common::v1::ArrayValue { values },
            ))
        }
        Operand::Call(c) => call(c, cx)?,
        Operand::FuncName(f) => {
            return Err(EvalError(format!("{f:?} is a function, not a value")));
        }
    })
}

fn call(c: &Call, cx: &Cx<'_>) -> Result<Val, EvalError> {
    use sha2::Digest;
    let arg = |i: usize| value_of(&c.args[i], cx);
    let text_arg = |i: usize, what: &str| match arg(i)? {
        Val::Str(s) => Ok(s),
        other => Err(EvalError(format!(
            "{:?} needs {what} as a string, got {}",
            c.func,
            other.type_name()
        ))),
    };
    Ok(match c.func {
        Func::Sha256 => match arg(0)? {
            Val::Nil => Val::Nil,
            Val::Str(s) => {
                let mut out = String::with_capacity(64);
                hex_into(&sha2::Sha256::digest(s.as_bytes()), &mut out);
                Val::Str(out)
            }
            other => {
                return Err(EvalError(format!(
                    "SHA256 takes a string, got {}",
                    other.type_name()
                )));
            }
        },
        Func::Concat => {
            let delimiter = text_arg(1, "the delimiter")?;
            match arg(0)? {
                Val::Any(any_value::Value::ArrayValue(a)) => Val::Str(
                    a.values
                        .iter()
                        .map(|v| Val::of(Some(v)).text())
                        .collect::<Vec<_>>()
                        .join(&delimiter),
                ),
                other => {
                    return Err(EvalError(format!(
                        "Concat takes a list, got {}",
                        other.type_name()
                    )));
                }
            }
        }
        Func::Split => match arg(0)? {
            Val::Nil => Val::Nil,
            Val::Str(s) => {
                let delimiter = text_arg(1, "the delimiter")?;
                let parts: Vec<AnyValue> = if delimiter.is_empty() {
                    s.chars()
                        .map(|c| Val::Str(c.to_string()).into_any().unwrap_or_default())
                        .collect()
                } else {
                    s.split(delimiter.as_str())
                        .map(|p| Val::Str(p.to_string()).into_any().unwrap_or_default())
                        .collect()
                };
                Val::Any(any_value::Value::ArrayValue(
                    otel_pipeline_core::proto::common::v1::ArrayValue { values: parts },
                ))
            }
            other => {
                return Err(EvalError(format!(
                    "Split takes a string, got {}",
                    other.type_name()
                )));
            }
        },
        Func::IsMatch => {
            let Some(re) = &c.regex else {
                return Err(EvalError("IsMatch without a pattern".into()));
            };
            match arg(0)? {
                Val::Nil => Val::Bool(false),
                v => Val::Bool(re.is_match(&v.text())),
            }
        }
        Func::Int => match arg(0)? {
            Val::Int(i) => Val::Int(i),
            Val::Double(d) if d.is_finite() => Val::Int(d.trunc() as i64),
            Val::Bool(b) => Val::Int(i64::from(b)),
            Val::Str(s) => s.trim().parse::<i64>().map_or(Val::Nil, Val::Int),
            _ => Val::Nil,
        },
        Func::Double => match arg(0)? {
            Val::Int(i) => Val::Double(i as f64),
            Val::Double(d) => Val::Double(d),
            Val::Bool(b) => Val::Double(if b { 1.0 } else { 0.0 }),
            Val::Str(s) => s.trim().parse::<f64>().map_or(Val::Nil, Val::Double),
            _ => Val::Nil,
        },
        Func::String => match arg(0)? {
            Val::Nil => Val::Nil,
            v => Val::Str(v.text()),
        },
        Func::ConvertCase => {
            let to = text_arg(1, "the case")?;
            match arg(0)? {
                Val::Nil => Val::Nil,
                Val::Str(s) => Val::Str(convert_case(&s, &to)?),
                other => {
                    return Err(EvalError(format!(
                        "ConvertCase takes a string, got {}",
                        other.type_name()
                    )));
                }
            }
        }
        Func::Len => match arg(0)? {
            Val::Str(s) => Val::Int(s.chars().count() as i64),
            Val::Bytes(b) => Val::Int(b.len() as i64),
            Val::Any(any_value::Value::ArrayValue(a)) => Val::Int(a.values.len() as i64),
            Val::Any(any_value::Value::KvlistValue(m)) => Val::Int(m.values.len() as i64),
            other => {
                return Err(EvalError(format!(
                    "Len takes a string, bytes, a slice or a map, got {}",
                    other.type_name()
                )));
            }
        },
        Func::Substring => {
            let s = text_arg(0, "the value")?;
            let (Val::Int(start), Val::Int(len)) = (arg(1)?, arg(2)?) else {
                return Err(EvalError("Substring takes an int start and length".into()));
            };
            let (Ok(start), Ok(len)) = (usize::try_from(start), usize::try_from(len)) else {
                return Err(EvalError(
                    "Substring's start and length cannot be negative".into(),
                ));
            };
            match s.get(start..start.saturating_add(len)) {
                Some(sub) => Val::Str(sub.to_string()),
                None => {
                    return Err(EvalError(format!(
                        "Substring({start}, {len}) is outside a string of {} bytes",
                        s.len()
                    )));
                }
            }
        }
        Func::Trim => {
            let s = text_arg(0, "the value")?;
            let cut = if c.args.len() > 1 {
                text_arg(1, "the characters")?
            } else {
                " ".into()
            };
            Val::Str(s.trim_matches(|ch| cut.contains(ch)).to_string())
        }
    })
}

/// `ConvertCase`: `lower`, `upper`, `snake` or `camel`.
fn convert_case(s: &str, to: &str) -> Result<String, EvalError> {
    let words = || {
        let mut words: Vec<String> = Vec::new();
        let mut cur = String::new();
        let mut prev_lower = false;
        for ch in s.chars() {
            if !ch.is_alphanumeric() {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                prev_lower = false;
                continue;
            }
            if ch.is_uppercase() && prev_lower && !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            prev_lower = ch.is_lowercase() || ch.is_ascii_digit();
            cur.extend(ch.to_lowercase());
        }
        if !cur.is_empty() {
            words.push(cur);
        }
        words
    };
    Ok(match to {
        "lower" => s.to_lowercase(),
        "upper" => s.to_uppercase(),
        "snake" => words().join("_"),
        "camel" => words()
            .iter()
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect::<String>())
                    .unwrap_or_default()
            })
            .collect(),
        other => {
            return Err(EvalError(format!(
                "ConvertCase: `{other}` is not lower, upper, snake or camel"
            )));
        }
    })
}

/// OTTL's comparison rules, as the Collector's `compare.go` applies them: a comparison
/// never fails. Numbers compare numerically (integers with floats), strings and bytes
/// lexicographically, booleans with `false < true`; `nil` equals only `nil` (and then
/// `<=` and `>=` hold too); maps and arrays are equal when their contents are. Any other
/// pair (a string against a number, a missing attribute against a number, an ordering of
/// maps) is invalid: false for every operator but `!=`, which is true.
fn compare(a: Value<'_>, b: Value<'_>, op: Op) -> bool {
    use Value::*;
    use std::cmp::Ordering;
    let ordered = |o: Option<Ordering>| match o {
        // NaN: every comparison is false, but `!=` is true.
        None => op == Op::Ne,
        Some(o) => match op {
            Op::Eq => o.is_eq(),
            Op::Ne => o.is_ne(),
            Op::Lt => o.is_lt(),
            Op::Le => o.is_le(),
            Op::Gt => o.is_gt(),
            Op::Ge => o.is_ge(),
        },
    };
    match (a, b) {
        (Nil, Nil) => matches!(op, Op::Eq | Op::Le | Op::Ge),
        (Int(x), Int(y)) => ordered(Some(x.cmp(&y))),
        (Int(x), Double(y)) => ordered((x as f64).partial_cmp(&y)),
        (Double(x), Int(y)) => ordered(x.partial_cmp(&(y as f64))),
        (Double(x), Double(y)) => ordered(x.partial_cmp(&y)),
        (Str(x), Str(y)) => ordered(Some(x.as_bytes().cmp(y.as_bytes()))),
        (Bytes(x), Bytes(y)) => ordered(Some(x.cmp(y))),
        (Bool(x), Bool(y)) => ordered(Some(x.cmp(&y))),
        // Maps and arrays: equality of contents, no order.
        (Complex(x), Complex(y)) if matches!(op, Op::Eq | Op::Ne) => (x == y) == (op == Op::Eq),
        _ => op == Op::Ne,
    }
}

/// The text `IsMatch` reads from a value that is not a string, as the Collector's
/// `StringLikeGetter` formats it: integers and floats in decimal, booleans as
/// `true`/`false`, bytes in lowercase hex, maps and arrays as JSON.
fn value_text(v: Value<'_>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    match v {
        Value::Str(s) => out.push_str(s),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Double(d) => go_float(d, &mut out),
        Value::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        Value::Bytes(b) => hex_into(b, &mut out),
        Value::Complex(c) => json_value(Some(c), &mut out),
        Value::Nil => {}
    }
    out
}

/// A value as the Collector's `pcommon.Value.AsString` gives it: strings as they are,
/// integers and booleans as text, floats as JSON writes them, bytes in base64, maps and
/// arrays as JSON, an empty value as "". What log body matchers read.
pub(crate) fn as_string(v: &AnyValue) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    match v.value.as_ref() {
        Some(any_value::Value::StringValue(s)) => Cow::Borrowed(s),
        Some(any_value::Value::BytesValue(b)) => {
            let mut out = String::new();
            base64(b, &mut out);
            Cow::Owned(out)
        }
        Some(any_value::Value::DoubleValue(d)) if !d.is_finite() => Cow::Owned(format!(
            "json: unsupported value: {}",
            value_text(Value::Double(*d))
        )),
        None => Cow::Borrowed(""),
        Some(_) => Cow::Owned(value_text(any_value(Some(v)))),
    }
}

fn hex_into(b: &[u8], out: &mut String) {
    use std::fmt::Write;
    for byte in b {
        let _ = write!(out, "{byte:02x}");
    }
}

/// Go's `strconv.FormatFloat(f, 'f' or 'e', -1, 64)` as `encoding/json` picks between them.
fn go_float(d: f64, out: &mut String) {
    use std::fmt::Write;
    if d.is_nan() {
        out.push_str("NaN");
    } else if d.is_infinite() {
        out.push_str(if d > 0.0 { "+Inf" } else { "-Inf" });
    } else if d == 0.0 || (1e-6..1e21).contains(&d.abs()) {
        let _ = write!(out, "{d}");
    } else {
        // Rust writes `1e21` and `1.5e-7`; Go's encoder writes `1e+21` and `1.5e-7`.
        let s = format!("{d:e}");
        match s.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => {
                let _ = write!(out, "{mantissa}e+{exp}");
            }
            _ => out.push_str(&s),
        }
    }
}

/// A value as JSON, as Go's `json.Marshal` writes `AsRaw()`: map keys sorted, bytes in
/// base64, an empty value as `null`.
fn json_value(v: Option<&any_value::Value>, out: &mut String) {
    use std::fmt::Write;
    match v {
        None => out.push_str("null"),
        Some(any_value::Value::StringValue(s)) => json_string(s, out),
        Some(any_value::Value::IntValue(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(any_value::Value::DoubleValue(d)) if d.is_finite() => go_float(*d, out),
        Some(any_value::Value::DoubleValue(_)) => out.push_str("null"),
        Some(any_value::Value::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(any_value::Value::BytesValue(b)) => {
            out.push('"');
            base64(b, out);
            out.push('"');
        }
        Some(any_value::Value::ArrayValue(a)) => {
            out.push('[');
            for (i, item) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_value(item.value.as_ref(), out);
            }
            out.push(']');
        }
        Some(any_value::Value::KvlistValue(m)) => {
            let mut entries: Vec<&KeyValue> = m.values.iter().collect();
            entries.sort_by(|a, b| a.key.cmp(&b.key));
            // A map keeps one value per key (the last one, as pcommon's FromRaw would).
            entries.dedup_by(|later, earlier| {
                if later.key == earlier.key {
                    std::mem::swap(later, earlier);
                    true
                } else {
                    false
                }
            });
            out.push('{');
            for (i, kv) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(&kv.key, out);
                out.push(':');
                json_value(kv.value.as_ref().and_then(|v| v.value.as_ref()), out);
            }
            out.push('}');
        }
        // A profile's string-table index: no value of its own here.
        Some(any_value::Value::StringValueStrindex(_)) => out.push_str("null"),
    }
}

fn json_string(s: &str, out: &mut String) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Go's encoder escapes HTML-significant characters too.
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn base64(b: &[u8], out: &mut String) {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in b.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(chunk.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
}

fn lit_value(l: &Lit) -> Value<'_> {
    match l {
        Lit::Str(s) => Value::Str(s),
        Lit::Int(i) => Value::Int(*i),
        Lit::Double(d) => Value::Double(*d),
        Lit::Bool(b) => Value::Bool(*b),
        Lit::Nil => Value::Nil,
    }
}

/// Evaluate a parsed condition tree (a statement's `where` clause) on `cx`.
pub(crate) fn eval_expr(e: &Expr, cx: &Cx<'_>) -> Result<bool, EvalError> {
    eval(e, cx)
}

fn eval(e: &Expr, cx: &Cx<'_>) -> Result<bool, EvalError> {
    Ok(match e {
        Expr::Or(items) => {
            for i in items {
                if eval(i, cx)? {
                    return Ok(true);
                }
            }
            false
        }
        Expr::And(items) => {
            for i in items {
                if !eval(i, cx)? {
                    return Ok(false);
                }
            }
            true
        }
        Expr::Not(inner) => !eval(inner, cx)?,
        Expr::Cmp(a, op, b) if computed(a) || computed(b) => {
            let (a, b) = (value_of(a, cx)?, value_of(b, cx)?);
            compare(a.borrowed(), b.borrowed(), *op)
        }
        Expr::Cmp(a, op, b) => compare(operand(a, cx), operand(b, cx), *op),
        Expr::Truthy(o) if computed(o) => match value_of(o, cx)? {
            Val::Bool(b) => b,
            Val::Nil => false,
            other => return Err(EvalError(format!("{other:?} is not a boolean"))),
        },
        Expr::Truthy(o) => match operand(o, cx) {
            Value::Bool(b) => b,
            // A flag that is not there is not set.
            Value::Nil => false,
            other => return Err(EvalError(format!("{other:?} is not a boolean"))),
        },
        // A value that is not a string is matched on its text, as the Collector's
        // string-like getter formats it; a missing one matches nothing.
        Expr::IsMatch(o, re) if computed(o) => match value_of(o, cx)? {
            Val::Nil => false,
            v => re.is_match(&v.text()),
        },
        Expr::IsMatch(o, re) => match operand(o, cx) {
            Value::Str(s) => re.is_match(s),
            Value::Nil => false,
            other => re.is_match(&value_text(other)),
        },
        Expr::OnDatapoint(key, want) => match cx.item {
            Item::Metric(m) => points(m).any(|p| match find_attr(p.attributes(), key) {
                None => false,
                Some(v) => want
                    .as_ref()
                    .is_none_or(|w| compare(any_value(Some(v)), lit_value(w), Op::Eq)),
            }),
            _ => false,
        },
    })
}

// ---- lexer ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Double(f64),
    Op(Op),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Str(s) => write!(f, "string {s:?}"),
            Tok::Int(i) => write!(f, "number {i}"),
            Tok::Double(d) => write!(f, "number {d}"),
            Tok::Op(o) => write!(f, "operator {o:?}"),
            Tok::LParen => f.write_str("`(`"),
            Tok::RParen => f.write_str("`)`"),
            Tok::LBracket => f.write_str("`[`"),
            Tok::RBracket => f.write_str("`]`"),
            Tok::Comma => f.write_str("`,`"),
            Tok::Dot => f.write_str("`.`"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: Tok,
    col: usize,
}

fn lex(text: &str, expr: bool) -> Result<Vec<Token>, ConditionError> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |col: usize, message: String| ConditionError {
        column: col + 1,
        message,
    };
    while i < b.len() {
        let c = b[i];
        let start = i;
        let simple = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => Some(Tok::LParen),
            b')' => Some(Tok::RParen),
            b'[' => Some(Tok::LBracket),
            b']' => Some(Tok::RBracket),
            b',' => Some(Tok::Comma),
            b'.' if !b.get(i + 1).is_some_and(u8::is_ascii_digit) => Some(Tok::Dot),
            _ => None,
        };
        if let Some(kind) = simple {
            out.push(Token {
                kind,
                col: start + 1,
            });
            i += 1;
            continue;
        }
        let two = |x: u8| b.get(i + 1) == Some(&x);
        // The `expr` language spells the logic operators with symbols.
        let word = match c {
            b'&' if expr && two(b'&') => Some(("and", 2)),
            b'|' if expr && two(b'|') => Some(("or", 2)),
            b'!' if expr && !two(b'=') => Some(("not", 1)),
            _ => None,
        };
        if let Some((w, n)) = word {
            out.push(Token {
                kind: Tok::Ident(w.into()),
                col: start + 1,
            });
            i += n;
            continue;
        }
        let op = match c {
            b'=' if two(b'=') => Some((Op::Eq, 2)),
            b'!' if two(b'=') => Some((Op::Ne, 2)),
            b'<' if two(b'=') => Some((Op::Le, 2)),
            b'>' if two(b'=') => Some((Op::Ge, 2)),
            b'<' => Some((Op::Lt, 1)),
            b'>' => Some((Op::Gt, 1)),
            _ => None,
        };
        if let Some((op, n)) = op {
            out.push(Token {
                kind: Tok::Op(op),
                col: start + 1,
            });
            i += n;
            continue;
        }
        if c == b'"' {
            let mut s = String::new();
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err(err(start, "unterminated string".into())),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        match b.get(i + 1) {
                            Some(b'"') => s.push('"'),
                            Some(b'\\') => s.push('\\'),
                            Some(b'n') => s.push('\n'),
                            Some(b't') => s.push('\t'),
                            _ => return Err(err(i, "unknown escape in string".into())),
                        }
                        i += 2;
                    }
                    Some(_) => {
                        // Copy one UTF-8 character.
                        let ch = text[i..].chars().next().unwrap_or('\u{FFFD}');
                        s.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            out.push(Token {
                kind: Tok::Str(s),
                col: start + 1,
            });
            continue;
        }
        if c.is_ascii_digit() || c == b'-' || c == b'.' {
            i += 1;
            while i < b.len() {
                let exponent_sign = (b[i] == b'-' || b[i] == b'+')
                    && matches!(b[i - 1], b'e' | b'E')
                    && b[start..i - 1].iter().any(u8::is_ascii_digit);
                if !(b[i].is_ascii_digit()
                    || b[i] == b'.'
                    || b[i] == b'e'
                    || b[i] == b'E'
                    || exponent_sign)
                {
                    break;
                }
                i += 1;
            }
            let s = &text[start..i];
            let kind = if let Ok(v) = s.parse::<i64>() {
                Tok::Int(v)
            } else if let Ok(v) = s.parse::<f64>() {
                Tok::Double(v)
            } else {
                return Err(err(start, format!("`{s}` is not a number")));
            };
            out.push(Token {
                kind,
                col: start + 1,
            });
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Token {
                kind: Tok::Ident(text[start..i].to_string()),
                col: start + 1,
            });
            continue;
        }
        let ch = text[i..].chars().next().unwrap_or('?');
        return Err(err(start, format!("unexpected character `{ch}`")));
    }
    Ok(out)
}

// ---- parser ----

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    len: usize,
    target: Target,
    /// The older `expr` language's names are accepted too.
    expr: bool,
    /// How deep `not` and parentheses nest here, bounded by [`MAX_DEPTH`].
    depth: usize,
}

/// How deep parentheses and `not` may nest: far more than any real condition, and little
/// enough that the recursive parser cannot overflow a thread's stack.
const MAX_DEPTH: usize = 64;

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn error_at(&self, col: usize, message: String) -> ConditionError {
        ConditionError {
            column: col,
            message,
        }
    }

    fn eof(&self) -> ConditionError {
        self.error_at(self.len + 1, "unexpected end of condition".into())
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Token { kind: Tok::Ident(s), .. }) if s == w)
    }

    fn expect(&mut self, want: &Tok) -> Result<Token, ConditionError> {
        match self.next() {
            Some(t) if t.kind == *want => Ok(t),
            Some(t) => Err(self.error_at(t.col, format!("expected {want}, found {}", t.kind))),
            None => Err(self.eof()),
        }
    }

    fn or(&mut self) -> Result<Expr, ConditionError> {
        let mut items = vec![self.and()?];
        while self.is_word("or") {
            self.pos += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::Or(items)
        })
    }

    fn and(&mut self) -> Result<Expr, ConditionError> {
        let mut items = vec![self.not()?];
        while self.is_word("and") {
            self.pos += 1;
            items.push(self.not()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::And(items)
        })
    }

    fn not(&mut self) -> Result<Expr, ConditionError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let col = self.peek().map_or(self.len + 1, |t| t.col);
            return Err(self.error_at(
                col,
                format!("conditions nest at most {MAX_DEPTH} deep (parentheses and `not`)"),
            ));
        }
        let out = if self.is_word("not") {
            self.pos += 1;
            self.not().map(|e| Expr::Not(Box::new(e)))
        } else {
            self.comparison()
        };
        self.depth -= 1;
        out
    }

    fn comparison(&mut self) -> Result<Expr, ConditionError> {
        if matches!(
            self.peek(),
            Some(Token {
                kind: Tok::LParen,
                ..
            })
        ) {
            self.pos += 1;
            let inner = self.or()?;
            self.expect(&Tok::RParen)?;
            return Ok(inner);
        }
        if self.is_word("HasAttrKeyOnDatapoint")
            || self.is_word("HasAttrOnDatapoint")
            || (self.expr && self.is_word("HasLabel"))
        {
            let Some(Token {
                kind: Tok::Ident(f),
                col,
            }) = self.next()
            else {
                return Err(self.eof());
            };
            if f != "HasLabel" && self.target != Target::Metric {
                return Err(self.error_at(
                    col,
                    format!(
                        "{f} is a metric function, not for {} conditions",
                        self.target.name()
                    ),
                ));
            }
            self.expect(&Tok::LParen)?;
            let key = self.string("an attribute key")?;
            let value = if f == "HasAttrOnDatapoint" {
                self.expect(&Tok::Comma)?;
                Some(Lit::Str(self.string("an attribute value")?))
            } else {
                None
            };
            self.expect(&Tok::RParen)?;
            return Ok(if f == "HasLabel" {
                // On a data point: the attribute is present.
                Expr::Cmp(
                    Operand::Path(Path::Attr(key)),
                    Op::Ne,
                    Operand::Lit(Lit::Nil),
                )
            } else {
                Expr::OnDatapoint(key, value)
            });
        }
        if self.is_word("IsMatch") {
            let col = self.next().map_or(0, |t| t.col);
            self.expect(&Tok::LParen)?;
            let target = self.operand()?;
            self.expect(&Tok::Comma)?;
            let pattern = match self.next() {
                Some(Token {
                    kind: Tok::Str(s),
                    col,
                }) => {
                    Regex::new(&s).map_err(|e| self.error_at(col, format!("invalid regex: {e}")))?
                }
                Some(t) => {
                    return Err(
                        self.error_at(t.col, format!("expected a regex string, found {}", t.kind))
                    );
                }
                None => return Err(self.eof()),
            };
            self.expect(&Tok::RParen)?;
            let _ = col;
            return Ok(Expr::IsMatch(target, pattern));
        }
        let left = self.operand()?;
        match self.peek() {
            Some(Token {
                kind: Tok::Op(op), ..
            }) => {
                let op = *op;
                self.pos += 1;
                let right = self.operand()?;
                Ok(Expr::Cmp(left, op, right))
            }
            _ => Ok(Expr::Truthy(left)),
        }
    }

    fn operand(&mut self) -> Result<Operand, ConditionError> {
        let t = self.next().ok_or_else(|| self.eof())?;
        let col = t.col;
        match t.kind {
            Tok::Str(s) => Ok(Operand::Lit(Lit::Str(s))),
            Tok::Int(i) => Ok(Operand::Lit(Lit::Int(i))),
            Tok::Double(d) => Ok(Operand::Lit(Lit::Double(d))),
            Tok::LBracket => {
                let mut items = Vec::new();
                if self.peek().is_some_and(|t| t.kind == Tok::RBracket) {
                    self.pos += 1;
                    return Ok(Operand::List(items));
                }
                loop {
                    items.push(self.nested_operand()?);
                    match self.next() {
                        Some(Token {
                            kind: Tok::Comma, ..
                        }) => {}
                        Some(Token {
                            kind: Tok::RBracket,
                            ..
                        }) => break,
                        Some(t) => {
                            return Err(self.error_at(
                                t.col,
                                format!("expected `,` or `]` in a list, found {}", t.kind),
                            ));
                        }
                        None => return Err(self.eof()),
                    }
                }
                Ok(Operand::List(items))
            }
            // A converter; in the `expr` language, `Label("k")` is a path.
            Tok::Ident(w)
                if w.starts_with(|c: char| c.is_ascii_uppercase())
                    && self.peek().is_some_and(|t| t.kind == Tok::LParen)
                    && !(self.expr && w == "Label") =>
            {
                self.converter(&w, col)
            }
            Tok::Ident(w) if Func::by_name(&w).is_some() => Ok(Operand::FuncName(
                Func::by_name(&w).map_or(Func::String, |f| f.0),
            )),
            Tok::Ident(w) => self.ident(&w, col),
            other => Err(self.error_at(col, format!("expected a value or a path, found {other}"))),
        }
    }

    /// An operand inside a list or a call, nesting bounded as conditions are.
    fn nested_operand(&mut self) -> Result<Operand, ConditionError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let col = self.peek().map_or(self.len + 1, |t| t.col);
            return Err(self.error_at(col, format!("values nest at most {MAX_DEPTH} deep")));
        }
        let out = self.operand();
        self.depth -= 1;
        out
    }

    /// The arguments of a call, after its name: `(a, b, ...)`.
    pub(crate) fn arguments(&mut self) -> Result<Vec<Operand>, ConditionError> {
        self.expect(&Tok::LParen)?;
        let mut args = Vec::new();
        if self.peek().is_some_and(|t| t.kind == Tok::RParen) {
            self.pos += 1;
            return Ok(args);
        }
        loop {
            args.push(self.nested_operand()?);
            match self.next() {
                Some(Token {
                    kind: Tok::Comma, ..
                }) => {}
                Some(Token {
                    kind: Tok::RParen, ..
                }) => return Ok(args),
                Some(t) => {
                    return Err(self.error_at(
                        t.col,
                        format!("expected `,` or `)` between arguments, found {}", t.kind),
                    ));
                }
                None => return Err(self.eof()),
            }
        }
    }

    /// A converter call: `Name(args)`.
    fn converter(&mut self, name: &str, col: usize) -> Result<Operand, ConditionError> {
        let Some((func, least, most)) = Func::by_name(name) else {
            return Err(self.error_at(
                col,
                format!(
                    "unknown converter `{name}` (known: SHA256, Concat, Split, IsMatch, Int, Double, String, ConvertCase, Len, Substring, Trim)"
                ),
            ));
        };
        let args = self.arguments()?;
        if args.len() < least || args.len() > most {
            let want = if least == most {
                format!("{least}")
            } else {
                format!("{least} to {most}")
            };
            return Err(self.error_at(
                col,
                format!("{name} takes {want} arguments, got {}", args.len()),
            ));
        }
        let regex = match (func, args.get(1)) {
            (Func::IsMatch, Some(Operand::Lit(Lit::Str(p)))) => {
                Some(Regex::new(p).map_err(|e| self.error_at(col, format!("invalid regex: {e}")))?)
            }
            (Func::IsMatch, _) => {
                return Err(self.error_at(col, "IsMatch's pattern must be a string".into()));
            }
            _ => None,
        };
        Ok(Operand::Call(Box::new(Call { func, args, regex })))
    }

    /// A string literal; `what` names it in the error.
    fn string(&mut self, what: &str) -> Result<String, ConditionError> {
        match self.next() {
            Some(Token {
                kind: Tok::Str(s), ..
            }) => Ok(s),
            Some(t) => {
                Err(self.error_at(t.col, format!("expected {what} string, found {}", t.kind)))
            }
            None => Err(self.eof()),
        }
    }

    fn at_bracket(&self) -> bool {
        self.peek().is_some_and(|t| t.kind == Tok::LBracket)
    }

    fn key(&mut self) -> Result<String, ConditionError> {
        self.expect(&Tok::LBracket)?;
        let key = match self.next() {
            Some(Token {
                kind: Tok::Str(s), ..
            }) => s,
            Some(t) => {
                return Err(self.error_at(
                    t.col,
                    format!("expected an attribute key string, found {}", t.kind),
                ));
            }
            None => return Err(self.eof()),
        };
        self.expect(&Tok::RBracket)?;
        Ok(key)
    }

    fn field(&mut self) -> Result<(String, usize), ConditionError> {
        self.expect(&Tok::Dot)?;
        match self.next() {
            Some(Token {
                kind: Tok::Ident(s),
                col,
            }) => Ok((s, col)),
            Some(t) => {
                Err(self.error_at(t.col, format!("expected a field name, found {}", t.kind)))
            }
            None => Err(self.eof()),
        }
    }

    fn ident(&mut self, w: &str, col: usize) -> Result<Operand, ConditionError> {
        use Target::*;
        let t = self.target;
        let path = |p: Path| Ok(Operand::Path(p));
        // A path this context does not have.
        let missing = |me: &Self| {
            Err(me.error_at(
                col,
                format!("`{w}` is not a path of {} conditions", t.name()),
            ))
        };
        match w {
            "true" => return Ok(Operand::Lit(Lit::Bool(true))),
            "false" => return Ok(Operand::Lit(Lit::Bool(false))),
            "nil" => return Ok(Operand::Lit(Lit::Nil)),
            "resource" => {
                return match self.field()? {
                    (f, _) if f == "attributes" && !self.at_bracket() => {
                        path(Path::ResourceAttrMap)
                    }
                    (f, _) if f == "attributes" => path(Path::ResourceAttr(self.key()?)),
                    (f, _) if f == "dropped_attributes_count" && t == Resource => {
                        path(Path::DroppedAttributesCount)
                    }
                    (f, c) => Err(self.error_at(
                        c,
                        format!("unknown field resource.{f}: use resource.attributes[\"...\"]"),
                    )),
                };
            }
            "instrumentation_scope" | "scope" if t != Resource => {
                return match self.field()? {
                    (f, _) if f == "name" => path(Path::ScopeName),
                    (f, _) if f == "version" => path(Path::ScopeVersion),
                    (f, c) => Err(self.error_at(c, format!("unknown field {w}.{f}"))),
                };
            }
            _ => {}
        }
        if self.expr {
            match w {
                "Label" => {
                    self.expect(&Tok::LParen)?;
                    let key = self.string("a label name")?;
                    self.expect(&Tok::RParen)?;
                    return path(Path::Attr(key));
                }
                "MetricName" => return path(Path::Name),
                "MetricType" => return path(Path::MetricTypeName),
                _ => {}
            }
        }
        match (t, w) {
            // `span.` names the span itself, also from a span event's context.
            (Span, "span") => {
                let (f, c) = self.field()?;
                Ok(match self.ident(&f, c)? {
                    Operand::Path(p) => Operand::Path(Path::OfSpan(Box::new(p))),
                    other => other,
                })
            }
            // The context's own prefix (`spanevent.name`, `log.body`, `metric.name`, ...).
            (Span, "spanevent") | (Log, "log") | (Metric, "metric") | (DataPoint, "datapoint") => {
                let (f, c) = self.field()?;
                self.ident(&f, c)
            }
            // A data point reads its metric's fields as `metric.<field>`.
            (DataPoint, "metric") => {
                let (f, c) = self.field()?;
                let saved = std::mem::replace(&mut self.target, Metric);
                let out = self.ident(&f, c);
                self.target = saved;
                out
            }
            (Span | Log | DataPoint | Resource, "attributes") if !self.at_bracket() => {
                path(Path::AttrMap)
            }
            (Span | Log | DataPoint | Resource, "attributes") => path(Path::Attr(self.key()?)),
            (Span, "start_time_unix_nano") => path(Path::StartTimeUnixNano),
            (Span, "end_time_unix_nano") => path(Path::EndTimeUnixNano),
            (Span, "time_unix_nano") => path(Path::TimeUnixNano),
            (Span, "dropped_attributes_count") => path(Path::DroppedAttributesCount),
            (Span | Metric, "name") => path(Path::Name),
            (Span, "kind") => path(Path::Kind),
            (Span, "trace_state") => path(Path::TraceState),
            (Span, "duration_ns") => path(Path::DurationNs),
            (Span, "status") => match self.field()? {
                (f, _) if f == "code" => path(Path::StatusCode),
                (f, _) if f == "message" => path(Path::StatusMessage),
                (f, c) => Err(self.error_at(
                    c,
                    format!("unknown field status.{f}: use status.code or status.message"),
                )),
            },
            (Log, "body") => path(Path::Body),
            (Log, "severity_number") => path(Path::SeverityNumber),
            (Log, "severity_text") => path(Path::SeverityText),
            (Log, "observed_time_unix_nano") => path(Path::ObservedTimeUnixNano),
            (Log, "event_name") => path(Path::EventName),
            (Log | Resource, "dropped_attributes_count") => path(Path::DroppedAttributesCount),
            (Log | DataPoint, "time_unix_nano") => path(Path::TimeUnixNano),
            (Log | DataPoint, "flags") => path(Path::Flags),
            (DataPoint, "start_time_unix_nano") => path(Path::StartTimeUnixNano),
            (DataPoint, "value_double") => path(Path::ValueDouble),
            (DataPoint, "value_int") => path(Path::ValueInt),
            (DataPoint, "count") => path(Path::Count),
            (DataPoint, "sum") => path(Path::Sum),
            (Metric, "description") => path(Path::Description),
            (Metric, "unit") => path(Path::Unit),
            (Metric, "type") => path(Path::MetricType),
            (Metric, "aggregation_temporality") => path(Path::AggregationTemporality),
            (Metric, "is_monotonic") => path(Path::IsMonotonic),
            _ if w
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit()) =>
            {
                match enum_value(w) {
                    Some(v) => Ok(Operand::Lit(Lit::Int(v))),
                    None => Err(self.error_at(col, format!("unknown name `{w}`"))),
                }
            }
            _ => missing(self),
        }
    }
}

/// A severity by its short name (`TRACE`, `DEBUG2`, `info`, `ERROR4`, ...; case does not
/// matter) or its number as text (`1` to `24`), as the log data model numbers them.
pub(crate) fn severity_number(name: &str) -> Option<i32> {
    if let Ok(n) = name.parse::<i32>() {
        return (1..=24).contains(&n).then_some(n);
    }
    let upper = name.to_ascii_uppercase();
    let (base, step) = match upper.char_indices().last() {
        Some((i, c @ '2'..='4')) => (&upper[..i], c as i32 - '1' as i32),
        _ => (upper.as_str(), 0),
    };
    let first = match base {
        "TRACE" => 1,
        "DEBUG" => 5,
        "INFO" => 9,
        "WARN" => 13,
        "ERROR" => 17,
        "FATAL" => 21,
        _ => return None,
    };
    Some(first + step)
}

fn enum_value(name: &str) -> Option<i64> {
    Some(match name {
        "SPAN_KIND_UNSPECIFIED" => 0,
        "SPAN_KIND_INTERNAL" => 1,
        "SPAN_KIND_SERVER" => 2,
        "SPAN_KIND_CLIENT" => 3,
        "SPAN_KIND_PRODUCER" => 4,
        "SPAN_KIND_CONSUMER" => 5,
        "STATUS_CODE_UNSET" => 0,
        "STATUS_CODE_OK" => 1,
        "STATUS_CODE_ERROR" => 2,
        "METRIC_DATA_TYPE_NONE" => 0,
        "METRIC_DATA_TYPE_GAUGE" => 1,
        "METRIC_DATA_TYPE_SUM" => 2,
        "METRIC_DATA_TYPE_HISTOGRAM" => 3,
        "METRIC_DATA_TYPE_EXPONENTIAL_HISTOGRAM" => 4,
        "METRIC_DATA_TYPE_SUMMARY" => 5,
        "AGGREGATION_TEMPORALITY_UNSPECIFIED" => 0,
        "AGGREGATION_TEMPORALITY_DELTA" => 1,
        "AGGREGATION_TEMPORALITY_CUMULATIVE" => 2,
        "SEVERITY_NUMBER_UNSPECIFIED" => 0,
        _ => return severity_number(name.strip_prefix("SEVERITY_NUMBER_")?).map(i64::from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use otel_pipeline_core::proto::trace::v1::Status;

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn span() -> Span {
        Span {
            name: "GET /healthz".into(),
            kind: 2,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 3_000_001_000,
            status: Some(Status {
                code: 2,
                message: "boom".into(),
            }),
            attributes: vec![
                kv(
                    "http.route",
                    any_value::Value::StringValue("/healthz".into()),
                ),
                kv("http.response.status_code", any_value::Value::IntValue(503)),
                kv("retry", any_value::Value::BoolValue(true)),
                kv("ratio", any_value::Value::DoubleValue(0.5)),
            ],
            ..Default::default()
        }
    }

    fn check(cond: &str) -> bool {
        let s = span();
        let resource = Resource {
            attributes: vec![kv(
                "service.name",
                any_value::Value::StringValue("checkout".into()),
            )],
            ..Default::default()
        };
        let scope = InstrumentationScope {
            name: "lib".into(),
            ..Default::default()
        };
        let cx = SpanContext {
            span: &s,
            event: None,
            resource: Some(&resource),
            scope: Some(&scope),
        };
        Condition::parse(cond)
            .unwrap_or_else(|e| panic!("{cond}: {e}"))
            .eval(&cx)
            .unwrap_or_else(|e| panic!("{cond}: {e}"))
    }

    #[test]
    fn comparisons() {
        assert!(check(r#"attributes["http.route"] == "/healthz""#));
        assert!(check(r#"span.attributes["http.route"] != "/ready""#));
        assert!(check(r#"attributes["http.response.status_code"] >= 500"#));
        assert!(!check(r#"attributes["http.response.status_code"] < 500"#));
        assert!(check(r#"attributes["http.response.status_code"] > 499.5"#));
        assert!(check(r#"attributes["ratio"] <= 0.5"#));
        assert!(check(r#"attributes["ratio"] == 0.5"#));
        assert!(check(r#"attributes["retry"] == true"#));
        assert!(check(r#"attributes["missing"] == nil"#));
        assert!(!check(r#"attributes["missing"] == "x""#));
        assert!(check(
            r#"resource.attributes["service.name"] == "checkout""#
        ));
        assert!(check(r#"instrumentation_scope.name == "lib""#));
        assert!(check("kind == SPAN_KIND_SERVER"));
        assert!(check("kind == 2"));
        assert!(check("status.code == STATUS_CODE_ERROR"));
        assert!(check(r#"status.message == "boom""#));
        assert!(check("duration_ns > 2000000000"));
        assert!(check(r#"name > "GET /a""#));
    }

    #[test]
    fn logic_and_regex() {
        assert!(check(r#"IsMatch(name, "^GET /health")"#));
        assert!(
            check(r#"IsMatch(attributes["http.response.status_code"], "5..")"#),
            "an integer is matched on its decimal text"
        );
        assert!(!check(r#"IsMatch(attributes["missing"], ".*")"#));
        assert!(check(
            r#"kind == SPAN_KIND_SERVER and status.code == STATUS_CODE_ERROR"#
        ));
        assert!(check(
            r#"kind == SPAN_KIND_CLIENT or status.code == STATUS_CODE_ERROR"#
        ));
        assert!(!check(
            r#"not (kind == SPAN_KIND_CLIENT or status.code == STATUS_CODE_ERROR)"#
        ));
        assert!(check(
            r#"not kind == SPAN_KIND_CLIENT and (attributes["retry"] or false)"#
        ));
        assert!(check(r#"attributes["retry"]"#));
    }

    #[test]
    fn evaluation_errors() {
        let s = span();
        let cx = SpanContext {
            span: &s,
            event: None,
            resource: None,
            scope: None,
        };
        // An ordering of a string against a number is false, not an error.
        let c = Condition::parse(r#"attributes["http.route"] > 3"#).unwrap();
        assert_eq!(c.eval(&cx), Ok(false));
        let c = Condition::parse(r#"attributes["http.route"]"#).unwrap();
        assert!(c.eval(&cx).is_err());
    }

    /// The Collector's own table (`pkg/ottl/compare_test.go`, `Test_compare`): every
    /// pair of value kinds, both ways round, under every operator.
    #[test]
    fn comparisons_follow_the_collector_table() {
        use any_value::Value as V;
        let ops = [Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Ge, Op::Gt];
        let s = |x: &str| Some(V::StringValue(x.into()));
        let b = |x: &[u8]| Some(V::BytesValue(x.to_vec()));
        let i = |x: i64| Some(V::IntValue(x));
        let f = |x: f64| Some(V::DoubleValue(x));
        let t = |x: bool| Some(V::BoolValue(x));
        #[allow(clippy::type_complexity)]
        let table: Vec<(&str, Option<V>, Option<V>, [bool; 6])> = vec![
            // EQ, NE, LT, LTE, GTE, GT
            (
                "identity string",
                s("1"),
                s("1"),
                [true, false, false, true, true, false],
            ),
            (
                "identity int64",
                i(1),
                i(1),
                [true, false, false, true, true, false],
            ),
            (
                "identity float64",
                f(1.0),
                f(1.0),
                [true, false, false, true, true, false],
            ),
            (
                "identity bytes",
                b(b"1"),
                b(b"1"),
                [true, false, false, true, true, false],
            ),
            (
                "identity nil",
                None,
                None,
                [true, false, false, true, true, false],
            ),
            (
                "diff strings",
                s("1"),
                s("2"),
                [false, true, true, true, false, false],
            ),
            (
                "string bytes",
                s("1"),
                b(b"1"),
                [false, true, false, false, false, false],
            ),
            (
                "string int64",
                s("1"),
                i(1),
                [false, true, false, false, false, false],
            ),
            (
                "string float64",
                s("1"),
                f(1.0),
                [false, true, false, false, false, false],
            ),
            (
                "string nil",
                s("1"),
                None,
                [false, true, false, false, false, false],
            ),
            (
                "diff bytes",
                b(b"1"),
                b(b"2"),
                [false, true, true, true, false, false],
            ),
            (
                "bytes string",
                b(b"1"),
                s("1"),
                [false, true, false, false, false, false],
            ),
            (
                "bytes int64",
                b(b"1"),
                i(1),
                [false, true, false, false, false, false],
            ),
            (
                "bytes float64",
                b(b"1"),
                f(1.0),
                [false, true, false, false, false, false],
            ),
            (
                "bytes nil",
                b(b"1"),
                None,
                [false, true, false, false, false, false],
            ),
            (
                "false true",
                t(false),
                t(true),
                [false, true, true, true, false, false],
            ),
            (
                "true false",
                t(true),
                t(false),
                [false, true, false, false, true, true],
            ),
            (
                "true true",
                t(true),
                t(true),
                [true, false, false, true, true, false],
            ),
            (
                "false false",
                t(false),
                t(false),
                [true, false, false, true, true, false],
            ),
            (
                "bool string",
                t(false),
                s("1"),
                [false, true, false, false, false, false],
            ),
            (
                "bool int64",
                t(false),
                i(1),
                [false, true, false, false, false, false],
            ),
            (
                "bool float64",
                t(false),
                f(1.0),
                [false, true, false, false, false, false],
            ),
            (
                "bool and empty string",
                t(false),
                s(""),
                [false, true, false, false, false, false],
            ),
            (
                "bool nil",
                t(false),
                None,
                [false, true, false, false, false, false],
            ),
            (
                "nil string",
                None,
                s("1"),
                [false, true, false, false, false, false],
            ),
            (
                "nil int64",
                None,
                i(1),
                [false, true, false, false, false, false],
            ),
            (
                "nil float64",
                None,
                f(1.0),
                [false, true, false, false, false, false],
            ),
            (
                "nil and empty string",
                None,
                s(""),
                [false, true, false, false, false, false],
            ),
            (
                "int64 string",
                i(1),
                s("1"),
                [false, true, false, false, false, false],
            ),
            (
                "int64 bytes",
                i(1),
                b(b"1"),
                [false, true, false, false, false, false],
            ),
            (
                "int64 nil",
                i(1),
                None,
                [false, true, false, false, false, false],
            ),
            (
                "int64 int64",
                i(1),
                i(2),
                [false, true, true, true, false, false],
            ),
            (
                "int64 float64",
                i(1),
                f(2.0),
                [false, true, true, true, false, false],
            ),
            (
                "diff float64s",
                f(1.0),
                f(2.0),
                [false, true, true, true, false, false],
            ),
            (
                "float64 string",
                f(1.0),
                s("1"),
                [false, true, false, false, false, false],
            ),
            (
                "float64 bytes",
                f(1.0),
                b(b"1"),
                [false, true, false, false, false, false],
            ),
            (
                "float64 nil",
                f(1.0),
                None,
                [false, true, false, false, false, false],
            ),
            (
                "float64 int64",
                f(1.0),
                i(2),
                [false, true, true, true, false, false],
            ),
            // Beyond the Collector's table, from its rules: NaN, maps and arrays.
            (
                "nan nan",
                f(f64::NAN),
                f(f64::NAN),
                [false, true, false, false, false, false],
            ),
            (
                "array array",
                Some(V::ArrayValue(Default::default())),
                Some(V::ArrayValue(Default::default())),
                [true, false, false, false, false, false],
            ),
            (
                "array string",
                Some(V::ArrayValue(Default::default())),
                s("[]"),
                [false, true, false, false, false, false],
            ),
        ];
        for (name, a, b, want) in &table {
            let (av, bv) = (AnyValue { value: a.clone() }, AnyValue { value: b.clone() });
            for (op, want) in ops.iter().zip(want) {
                let got = compare(any_value(Some(&av)), any_value(Some(&bv)), *op);
                assert_eq!(got, *want, "{name} {op:?}");
            }
        }
    }

    /// The check from the issue: five spans through one condition; a missing attribute
    /// or a string never makes the condition fail, and `IsMatch` reads the int 503.
    #[test]
    fn missing_and_mistyped_values_compare_false() {
        let cond = Condition::parse(
            r#"attributes["http.status_code"] >= 500 or IsMatch(attributes["code"], "^5")"#,
        )
        .unwrap();
        let with = |kv: Option<KeyValue>| {
            let mut s = span();
            s.attributes = kv.into_iter().collect();
            let cx = SpanContext {
                span: &s,
                event: None,
                resource: None,
                scope: None,
            };
            cond.eval(&cx)
        };
        let int = |k: &str, v| Some(kv(k, any_value::Value::IntValue(v)));
        assert_eq!(with(int("http.status_code", 503)), Ok(true));
        assert_eq!(with(int("http.status_code", 200)), Ok(false));
        assert_eq!(with(None), Ok(false));
        let text = kv(
            "http.status_code",
            any_value::Value::StringValue("503".into()),
        );
        assert_eq!(with(Some(text)), Ok(false));
        assert_eq!(with(int("code", 503)), Ok(true));
    }

    #[test]
    fn is_match_reads_values_as_the_collector_formats_them() {
        use any_value::Value as V;
        let cases: Vec<(V, &str)> = vec![
            (V::IntValue(-42), "^-42$"),
            (V::DoubleValue(1.5), "^1.5$"),
            (V::DoubleValue(100.0), "^100$"),
            (V::DoubleValue(1e21), r"^1e\+21$"),
            (V::DoubleValue(1.5e-7), r"^1.5e-7$"),
            (V::BoolValue(true), "^true$"),
            (V::BytesValue(vec![0xde, 0xad]), "^dead$"),
            (
                V::KvlistValue(otel_pipeline_core::proto::common::v1::KeyValueList {
                    values: vec![
                        kv("b", V::BytesValue(b"hi".to_vec())),
                        kv("a", V::StringValue("<x>".into())),
                    ],
                }),
                r#"^\{"a":"\\u003cx\\u003e","b":"aGk="\}$"#,
            ),
            (
                V::ArrayValue(otel_pipeline_core::proto::common::v1::ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(V::IntValue(1)),
                        },
                        AnyValue { value: None },
                    ],
                }),
                r"^\[1,null\]$",
            ),
        ];
        for (value, pattern) in cases {
            let mut s = span();
            s.attributes = vec![kv("v", value.clone())];
            let cx = SpanContext {
                span: &s,
                event: None,
                resource: None,
                scope: None,
            };
            let c = Condition::parse(&format!(
                r#"IsMatch(attributes["v"], "{}")"#,
                pattern.replace('\\', "\\\\").replace('"', "\\\"")
            ))
            .unwrap_or_else(|e| panic!("{pattern}: {e}"));
            assert_eq!(c.eval(&cx), Ok(true), "{value:?} against {pattern}");
        }
    }

    /// Log body matchers read `AsString`: bytes in base64 (not hex, as `IsMatch` reads
    /// an attribute), floats as JSON writes them.
    #[test]
    fn as_string_is_the_collectors_as_string() {
        use any_value::Value as V;
        let text = |v: Option<V>| as_string(&AnyValue { value: v }).into_owned();
        assert_eq!(text(None), "");
        assert_eq!(text(Some(V::StringValue("x".into()))), "x");
        assert_eq!(text(Some(V::IntValue(-7))), "-7");
        assert_eq!(text(Some(V::DoubleValue(0.000_000_1))), "1e-7");
        assert_eq!(text(Some(V::DoubleValue(2.5))), "2.5");
        assert_eq!(text(Some(V::BoolValue(false))), "false");
        assert_eq!(text(Some(V::BytesValue(b"hi!".to_vec()))), "aGkh");
        assert_eq!(text(Some(V::BytesValue(b"h".to_vec()))), "aA==");
    }

    #[test]
    fn exponents_and_nesting() {
        assert!(check(r#"attributes["ratio"] > 1e-5"#));
        assert!(check(r#"attributes["ratio"] < 5E+2"#));
        let deep = format!("{}name == \"a\"{}", "(".repeat(10_000), ")".repeat(10_000));
        let err = Condition::parse(&deep).unwrap_err();
        assert!(err.message.contains("nest"), "{err}");
        let nots = format!("{}true", "not ".repeat(100_000));
        assert!(Condition::parse(&nots).is_err());
        let fine = format!("{}name != \"a\"{}", "(".repeat(30), ")".repeat(30));
        assert!(Condition::parse(&fine).is_ok());
    }

    #[test]
    fn parse_errors_name_the_column() {
        let cases = [
            (r#"attributes["a"] =="#, 19, "end of condition"),
            (r#"attributes[a] == 1"#, 12, "attribute key"),
            (r#"attributes["a"] == "x"#, 20, "unterminated"),
            (r#"nme == "x""#, 1, "`nme` is not a path of span conditions"),
            (
                r#"SPAN_KIND_SERVR == kind"#,
                1,
                "unknown name `SPAN_KIND_SERVR`",
            ),
            (r#"severity_number > 3"#, 1, "not a path of span"),
            (r#"status.cod == 1"#, 8, "unknown field"),
            (r#"IsMatch(name, "(")"#, 15, "invalid regex"),
            (r#"name == "a" extra"#, 13, "unexpected"),
            (r#"(name == "a""#, 13, "end of condition"),
            (r#"name @ 1"#, 6, "unexpected character"),
        ];
        for (text, column, words) in cases {
            let e = Condition::parse(text).unwrap_err();
            assert_eq!(e.column, column, "{text}: {e}");
            assert!(e.message.contains(words), "{text}: {e}");
        }
    }
}

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
//! `==` and `!=` compare any two values (integers and floats numerically; different types
//! are not equal; a missing attribute is `nil`). `<`, `>`, `<=`, `>=` compare numbers with
//! numbers and strings with strings; anything else is an evaluation error, which the
//! processor's `error_mode` decides about. `IsMatch(value, "regex")` is false for a value
//! that is not a string.

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
}

/// An item with the resource and scope it belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cx<'a> {
    pub(crate) item: Item<'a>,
    pub(crate) resource: Option<&'a Resource>,
    pub(crate) scope: Option<&'a InstrumentationScope>,
}

#[derive(Debug, Clone, PartialEq)]
enum Path {
    Attr(String),
    ResourceAttr(String),
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
enum Lit {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Nil,
}

#[derive(Debug, Clone)]
enum Operand {
    Lit(Lit),
    Path(Path),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

#[derive(Debug, Clone)]
enum Expr {
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
    /// Arrays and maps: only equal to themselves by identity, so never to a literal.
    Complex,
}

fn any_value(v: Option<&AnyValue>) -> Value<'_> {
    match v.and_then(|v| v.value.as_ref()) {
        None => Value::Nil,
        Some(any_value::Value::StringValue(s)) => Value::Str(s),
        Some(any_value::Value::IntValue(i)) => Value::Int(*i),
        Some(any_value::Value::DoubleValue(d)) => Value::Double(*d),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::BytesValue(b)) => Value::Bytes(b),
        Some(_) => Value::Complex,
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

    /// Evaluate on any item. An item of another context than the condition was parsed
    /// for is an evaluation error (the filter never mixes them).
    pub(crate) fn eval_in(&self, cx: &Cx<'_>) -> Result<bool, EvalError> {
        let fits = matches!(
            (self.target, &cx.item),
            (Target::Span, Item::Span(_))
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
    }
}

fn equal(a: Value<'_>, b: Value<'_>) -> bool {
    match (a, b) {
        (Value::Int(x), Value::Double(y)) | (Value::Double(y), Value::Int(x)) => (x as f64) == y,
        (Value::Complex, _) | (_, Value::Complex) => false,
        _ => a == b,
    }
}

fn order(a: Value<'_>, b: Value<'_>) -> Result<std::cmp::Ordering, EvalError> {
    use Value::*;
    let num = |v: Value<'_>| match v {
        Int(i) => Some(i as f64),
        Double(d) => Some(d),
        _ => None,
    };
    match (a, b) {
        (Int(x), Int(y)) => Ok(x.cmp(&y)),
        (Str(x), Str(y)) => Ok(x.cmp(y)),
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) => x
                .partial_cmp(&y)
                .ok_or_else(|| EvalError("cannot order NaN".into())),
            _ => Err(EvalError(format!("cannot order {a:?} and {b:?}"))),
        },
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
        Expr::Cmp(a, op, b) => {
            let (a, b) = (operand(a, cx), operand(b, cx));
            match op {
                Op::Eq => equal(a, b),
                Op::Ne => !equal(a, b),
                Op::Lt => order(a, b)?.is_lt(),
                Op::Gt => order(a, b)?.is_gt(),
                Op::Le => order(a, b)?.is_le(),
                Op::Ge => order(a, b)?.is_ge(),
            }
        }
        Expr::Truthy(o) => match operand(o, cx) {
            Value::Bool(b) => b,
            other => return Err(EvalError(format!("{other:?} is not a boolean"))),
        },
        Expr::IsMatch(o, re) => match operand(o, cx) {
            Value::Str(s) => re.is_match(s),
            _ => false,
        },
        Expr::OnDatapoint(key, want) => match cx.item {
            Item::Metric(m) => points(m).any(|p| match find_attr(p.attributes(), key) {
                None => false,
                Some(v) => want
                    .as_ref()
                    .is_none_or(|w| equal(any_value(Some(v)), lit_value(w))),
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
            while i < b.len()
                && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b'e' || b[i] == b'E')
            {
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
}

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
        if self.is_word("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.comparison()
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
            Tok::Ident(w) => self.ident(&w, col),
            other => Err(self.error_at(col, format!("expected a value or a path, found {other}"))),
        }
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
            // The context's own prefix (`span.name`, `log.body`, `metric.name`, ...).
            (Span, "span" | "spanevent")
            | (Log, "log")
            | (Metric, "metric")
            | (DataPoint, "datapoint") => {
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
            (Span | Log | DataPoint | Resource, "attributes") => path(Path::Attr(self.key()?)),
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
            !check(r#"IsMatch(attributes["http.response.status_code"], "5..")"#),
            "non-strings never match"
        );
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
        let c = Condition::parse(r#"attributes["http.route"] > 3"#).unwrap();
        assert!(c.eval(&cx).is_err());
        let c = Condition::parse(r#"attributes["http.route"]"#).unwrap();
        assert!(c.eval(&cx).is_err());
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

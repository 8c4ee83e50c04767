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
//! # Paths
//! `attributes["k"]` (also `span.attributes["k"]`; for span events, the event's),
//! `resource.attributes["k"]`, `instrumentation_scope.name`, `name`, `kind`, `status.code`,
//! `status.message`, `trace_state`, `duration_ns` (end minus start).
//!
//! # Literals
//! strings (`"..."` with `\"` and `\\` escapes), integers, floats, `true`, `false`, `nil`,
//! `SPAN_KIND_*` and `STATUS_CODE_*` names.
//!
//! # Semantics
//! `==` and `!=` compare any two values (integers and floats numerically; different types
//! are not equal; a missing attribute is `nil`). `<`, `>`, `<=`, `>=` compare numbers with
//! numbers and strings with strings; anything else is an evaluation error, which the
//! processor's `error_mode` decides about. `IsMatch(value, "regex")` is false for a value
//! that is not a string.

use std::fmt;

use otel_pipeline_core::proto::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
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

#[derive(Debug, Clone, PartialEq)]
enum Path {
    Attr(String),
    ResourceAttr(String),
    ScopeName,
    Name,
    Kind,
    StatusCode,
    StatusMessage,
    TraceState,
    DurationNs,
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
}

/// A parsed condition.
#[derive(Clone)]
pub struct Condition {
    text: String,
    expr: Expr,
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
        let tokens = lex(text)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            len: text.len(),
        };
        let expr = p.or()?;
        if let Some(t) = p.peek() {
            return Err(p.error_at(t.col, format!("unexpected {}", t.kind)));
        }
        Ok(Self {
            text: text.to_string(),
            expr,
        })
    }

    /// The condition's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Evaluate on a span (or span event).
    pub fn eval(&self, cx: &SpanContext<'_>) -> Result<bool, EvalError> {
        eval(&self.expr, cx)
    }
}

fn read<'a>(path: &Path, cx: &SpanContext<'a>) -> Value<'a> {
    match path {
        Path::Attr(k) => match cx.event {
            Some(e) => any_value(find_attr(&e.attributes, k)),
            None => any_value(find_attr(&cx.span.attributes, k)),
        },
        Path::ResourceAttr(k) => any_value(cx.resource.and_then(|r| find_attr(&r.attributes, k))),
        Path::ScopeName => cx.scope.map_or(Value::Nil, |s| Value::Str(&s.name)),
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
    }
}

fn operand<'a>(o: &'a Operand, cx: &SpanContext<'a>) -> Value<'a> {
    match o {
        Operand::Path(p) => read(p, cx),
        Operand::Lit(Lit::Str(s)) => Value::Str(s),
        Operand::Lit(Lit::Int(i)) => Value::Int(*i),
        Operand::Lit(Lit::Double(d)) => Value::Double(*d),
        Operand::Lit(Lit::Bool(b)) => Value::Bool(*b),
        Operand::Lit(Lit::Nil) => Value::Nil,
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

fn eval(e: &Expr, cx: &SpanContext<'_>) -> Result<bool, EvalError> {
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

fn lex(text: &str) -> Result<Vec<Token>, ConditionError> {
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
        let path = |p: Path| Ok(Operand::Path(p));
        match w {
            "true" => Ok(Operand::Lit(Lit::Bool(true))),
            "false" => Ok(Operand::Lit(Lit::Bool(false))),
            "nil" => Ok(Operand::Lit(Lit::Nil)),
            "attributes" => path(Path::Attr(self.key()?)),
            "name" => path(Path::Name),
            "kind" => path(Path::Kind),
            "trace_state" => path(Path::TraceState),
            "duration_ns" => path(Path::DurationNs),
            "span" | "spanevent" => {
                let (f, c) = self.field()?;
                self.ident(&f, c)
            }
            "status" => match self.field()? {
                (f, _) if f == "code" => path(Path::StatusCode),
                (f, _) if f == "message" => path(Path::StatusMessage),
                (f, c) => Err(self.error_at(
                    c,
                    format!("unknown field status.{f}: use status.code or status.message"),
                )),
            },
            "resource" => match self.field()? {
                (f, _) if f == "attributes" => path(Path::ResourceAttr(self.key()?)),
                (f, c) => Err(self.error_at(
                    c,
                    format!("unknown field resource.{f}: use resource.attributes[\"...\"]"),
                )),
            },
            "instrumentation_scope" => match self.field()? {
                (f, _) if f == "name" => path(Path::ScopeName),
                (f, c) => Err(self.error_at(c, format!("unknown field instrumentation_scope.{f}"))),
            },
            _ => match enum_value(w) {
                Some(v) => Ok(Operand::Lit(Lit::Int(v))),
                None => Err(self.error_at(col, format!("unknown name `{w}`"))),
            },
        }
    }
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
        _ => return None,
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
            (r#"nme == "x""#, 1, "unknown name `nme`"),
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

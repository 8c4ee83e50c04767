//! Collector YAML as the Collector reads it, with every node's place in its file.
//!
//! - Scalars resolve as the Collector's YAML library resolves plain scalars: `null`/`~`/
//!   empty, `true`/`false`, integers (with `_` separators, `0x`, `0o`, `0b`), floats
//!   (`.inf`, `.nan`), else strings. Quoted and block scalars are strings.
//! - `${env:NAME}`, `${env:NAME:-default}` and `${NAME}` are replaced in string values;
//!   `$$` is a literal `$`. A plain value that is one reference alone resolves again as a
//!   scalar, so `port: ${env:PORT}` is a number. An unset variable with no default
//!   becomes empty, as in the Collector.
//! - Anchors, aliases and `<<` merge keys work.
//! - Several documents merge in order: maps merge key by key, anything else is replaced.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_yaml_ng::Value;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::ConfigError;

/// A place in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file (as given to the loader).
    pub file: Arc<str>,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// A YAML value with where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) value: NodeValue,
    pub(crate) at: Location,
}

#[derive(Debug, Clone)]
pub(crate) enum NodeValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Seq(Vec<Node>),
    /// Entries in order, each with the place of its key.
    Map(Vec<(String, Location, Node)>),
}

impl Node {
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            NodeValue::Map(entries) => entries.iter().find(|(k, _, _)| k == key).map(|(_, _, v)| v),
            _ => None,
        }
    }

    pub(crate) fn entries(&self) -> &[(String, Location, Node)] {
        match &self.value {
            NodeValue::Map(entries) => entries,
            _ => &[],
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self.value, NodeValue::Null)
    }

    /// The plain `serde_yaml_ng` value, for deserializing a component's config.
    pub(crate) fn to_value(&self) -> Value {
        match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(b) => Value::Bool(*b),
            NodeValue::Int(i) => Value::Number((*i).into()),
            NodeValue::Float(f) => Value::Number((*f).into()),
            NodeValue::String(s) => Value::String(s.clone()),
            NodeValue::Seq(items) => Value::Sequence(items.iter().map(Node::to_value).collect()),
            NodeValue::Map(entries) => Value::Mapping(
                entries
                    .iter()
                    .map(|(k, _, v)| (Value::String(k.clone()), v.to_value()))
                    .collect(),
            ),
        }
    }

    /// Record the place of every path below this node, as `serde_path_to_error` spells
    /// paths (`a.b[2].c`), prefixed with `path`.
    pub(crate) fn index(&self, path: &str, out: &mut BTreeMap<String, Location>) {
        out.entry(path.to_string())
            .or_insert_with(|| self.at.clone());
        match &self.value {
            NodeValue::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    item.index(&format!("{path}[{i}]"), out);
                }
            }
            NodeValue::Map(entries) => {
                for (k, key_at, v) in entries {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    out.insert(p.clone(), key_at.clone());
                    v.index(&p, out);
                }
            }
            _ => {}
        }
    }
}

/// Merge `over` onto `base`: maps key by key (recursively), anything else replaced.
pub(crate) fn merge(base: &mut Node, over: Node) {
    match (&mut base.value, over.value) {
        (NodeValue::Map(base_entries), NodeValue::Map(over_entries)) => {
            for (k, k_at, v) in over_entries {
                match base_entries.iter_mut().find(|(bk, _, _)| *bk == k) {
                    Some((_, _, existing)) => merge(existing, v),
                    None => base_entries.push((k, k_at, v)),
                }
            }
        }
        (_, value) => {
            base.value = value;
            base.at = over.at;
        }
    }
}

/// Parse one YAML document from `text`, named `file` in locations and errors.
pub(crate) fn parse(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Node, ConfigError> {
    let file: Arc<str> = Arc::from(file);
    let mut events = Events::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut events, false).map_err(|e| {
        let at = located(&file, e.marker());
        ConfigError::new("", format!("YAML syntax: {}", e.info())).at(at)
    })?;
    let mut builder = Builder {
        file,
        events: events.0,
        pos: 0,
        anchors: BTreeMap::new(),
        env,
    };
    // Skip to the document's root.
    while builder.pos < builder.events.len()
        && matches!(
            builder.events[builder.pos].0,
            Event::StreamStart | Event::DocumentStart
        )
    {
        builder.pos += 1;
    }
    if builder.pos >= builder.events.len()
        || matches!(
            builder.events[builder.pos].0,
            Event::StreamEnd | Event::DocumentEnd
        )
    {
        let at = Location {
            file: Arc::clone(&builder.file),
            line: 1,
            column: 1,
        };
        return Ok(Node {
            value: NodeValue::Map(Vec::new()),
            at,
        });
    }
    builder.node("")
}

fn located(file: &Arc<str>, m: &Marker) -> Location {
    Location {
        file: Arc::clone(file),
        line: m.line(),
        column: m.col() + 1,
    }
}

#[derive(Default)]
struct Events(Vec<(Event, Marker)>);

impl MarkedEventReceiver for Events {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        self.0.push((ev, mark));
    }
}

struct Builder<'a> {
    file: Arc<str>,
    events: Vec<(Event, Marker)>,
    pos: usize,
    anchors: BTreeMap<usize, Node>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Builder<'_> {
    fn err(&self, path: &str, mark: &Marker, message: impl Into<String>) -> ConfigError {
        ConfigError::new(path, message).at(located(&self.file, mark))
    }

    fn next(&mut self, path: &str) -> Result<(Event, Marker), ConfigError> {
        let Some(item) = self.events.get(self.pos).cloned() else {
            let err = ConfigError::new(path, "unexpected end of the document");
            return Err(match self.events.last() {
                Some((_, m)) => err.at(located(&self.file, m)),
                None => err,
            });
        };
        self.pos += 1;
        Ok(item)
    }

    fn node(&mut self, path: &str) -> Result<Node, ConfigError> {
        let (event, mark) = self.next(path)?;
        let at = located(&self.file, &mark);
        let (node, anchor) = match event {
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(n) => (
                    Node {
                        value: n.value.clone(),
                        at,
                    },
                    0,
                ),
                None => return Err(self.err(path, &mark, "alias to an unknown anchor")),
            },
            Event::Scalar(text, style, anchor, tag) => {
                let value = self.scalar(
                    path,
                    &mark,
                    &text,
                    style,
                    tag.as_ref().map(|t| t.suffix.as_str()),
                )?;
                (Node { value, at }, anchor)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    if matches!(self.events.get(self.pos), Some((Event::SequenceEnd, _))) {
                        self.pos += 1;
                        break;
                    }
                    let item = self.node(&format!("{path}[{}]", items.len()))?;
                    items.push(item);
                }
                (
                    Node {
                        value: NodeValue::Seq(items),
                        at,
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, _) => {
                let mut entries: Vec<(String, Location, Node)> = Vec::new();
                let mut merged: Vec<(String, Location, Node)> = Vec::new();
                loop {
                    if matches!(self.events.get(self.pos), Some((Event::MappingEnd, _))) {
                        self.pos += 1;
                        break;
                    }
                    let key_node = self.node(path)?;
                    let key = match &key_node.value {
                        NodeValue::String(s) => s.clone(),
                        NodeValue::Int(i) => i.to_string(),
                        NodeValue::Bool(b) => b.to_string(),
                        NodeValue::Float(f) => f.to_string(),
                        NodeValue::Null => String::new(),
                        _ => {
                            return Err(ConfigError::new(path, "a mapping key must be a scalar")
                                .at(key_node.at));
                        }
                    };
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    let value = self.node(&child)?;
                    if key == "<<" {
                        // Merge keys: entries of the merged map(s) apply unless the map
                        // itself sets them.
                        let sources = match value.value {
                            NodeValue::Map(m) => vec![m],
                            NodeValue::Seq(items) => items
                                .into_iter()
                                .filter_map(|n| match n.value {
                                    NodeValue::Map(m) => Some(m),
                                    _ => None,
                                })
                                .collect(),
                            _ => {
                                return Err(ConfigError::new(child, "`<<` merges a mapping")
                                    .at(key_node.at));
                            }
                        };
                        for source in sources {
                            for entry in source {
                                if !merged.iter().any(|(k, _, _)| *k == entry.0) {
                                    merged.push(entry);
                                }
                            }
                        }
                        continue;
                    }
                    if entries.iter().any(|(k, _, _)| *k == key) {
                        return Err(ConfigError::new(child, "key given twice in one mapping")
                            .at(key_node.at));
                    }
                    entries.push((key, key_node.at, value));
                }
                for entry in merged {
                    if !entries.iter().any(|(k, _, _)| *k == entry.0) {
                        entries.push(entry);
                    }
                }
                (
                    Node {
                        value: NodeValue::Map(entries),
                        at,
                    },
                    anchor,
                )
            }
            other => return Err(self.err(path, &mark, format!("unexpected YAML event {other:?}"))),
        };
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }

    fn scalar(
        &self,
        path: &str,
        mark: &Marker,
        text: &str,
        style: TScalarStyle,
        tag: Option<&str>,
    ) -> Result<NodeValue, ConfigError> {
        let whole_reference = style == TScalarStyle::Plain && is_single_reference(text);
        let expanded = expand(text, self.env).map_err(|m| self.err(path, mark, m))?;
        if tag == Some("str") {
            return Ok(NodeValue::String(expanded));
        }
        if style != TScalarStyle::Plain {
            return Ok(NodeValue::String(expanded));
        }
        if whole_reference || expanded == text {
            return Ok(resolve_plain(&expanded));
        }
        Ok(NodeValue::String(expanded))
    }
}

/// Whether `text` is exactly one `${...}` reference.
fn is_single_reference(text: &str) -> bool {
    text.starts_with("${") && text.ends_with('}') && text[2..].find('}') == Some(text.len() - 3)
}

/// Replace `${env:NAME}`, `${env:NAME:-default}` and `${NAME}`; `$$` is `$`.
fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !text.contains('$') {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("`${{` without a closing `}}` in `{text}`"))?;
            let reference = &body[..end];
            let (scheme, name) = match reference.split_once(':') {
                Some((scheme, name)) if !scheme.contains('-') => (scheme, name),
                _ => ("env", reference),
            };
            if scheme != "env" {
                return Err(format!(
                    "`${{{reference}}}`: the `{scheme}` provider is not supported (only env)"
                ));
            }
            let (name, default) = match name.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (name, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`${{{reference}}}`: `{name}` is not an environment variable name"
                ));
            }
            match (env(name), default) {
                (Some(v), _) if !v.is_empty() || default.is_none() => out.push_str(&v),
                (_, Some(d)) => out.push_str(d),
                (None, None) => {}
                (Some(_), None) => {}
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// How the Collector's YAML reads a plain scalar.
pub(crate) fn resolve_plain(text: &str) -> NodeValue {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return NodeValue::Null,
        "true" | "True" | "TRUE" => return NodeValue::Bool(true),
        "false" | "False" | "FALSE" => return NodeValue::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return NodeValue::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return NodeValue::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return NodeValue::Float(f64::NAN),
        _ => {}
    }
    if let Some(i) = parse_int(text) {
        return NodeValue::Int(i);
    }
    let looks_numeric = text
        .trim_start_matches(['+', '-'])
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || c == '.');
    if looks_numeric
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-' | '_'))
        && let Ok(f) = text.replace('_', "").parse::<f64>()
    {
        return NodeValue::Float(f);
    }
    NodeValue::String(text.to_string())
}

fn parse_int(text: &str) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, digits) = if let Some(d) = digits.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = digits.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = digits.strip_prefix("0b") {
        (2, d)
    } else {
        (10, digits)
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || !digits.chars().all(|c| c == '_' || c.is_digit(radix))
    {
        return None;
    }
    let clean: String = digits.chars().filter(|c| *c != '_').collect();
    let v = i64::from_str_radix(&clean, radix).ok()?;
    Some(if negative { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Node {
        parse("t.yaml", text, &|name| match name {
            "PORT" => Some("4317".into()),
            "HOST" => Some("gw".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        })
        .unwrap()
    }

    #[test]
    fn scalars_resolve_as_the_collector_reads_them() {
        let d = doc(
            "a: 100_000\nb: '100_000'\nc: 0x1F\nd: 1.5\ne: true\nf: ~\ng: 5s\nh: -3\ni: 1e3\nj: 0o17\n",
        );
        let v = |k: &str| d.get(k).unwrap().to_value();
        assert_eq!(v("a"), Value::Number(100_000.into()));
        assert_eq!(v("b"), Value::String("100_000".into()));
        assert_eq!(v("c"), Value::Number(31.into()));
        assert_eq!(v("d"), Value::Number(1.5.into()));
        assert_eq!(v("e"), Value::Bool(true));
        assert_eq!(v("f"), Value::Null);
        assert_eq!(v("g"), Value::String("5s".into()));
        assert_eq!(v("h"), Value::Number((-3).into()));
        assert_eq!(v("i"), Value::Number(1000.0.into()));
        assert_eq!(v("j"), Value::Number(15.into()));
    }

    #[test]
    fn env_references_expand() {
        let d = doc(
            "port: ${env:PORT}\nhost: \"${HOST}:${env:PORT}\"\nmissing: ${env:NOPE:-fallback}\n\
             empty: ${env:EMPTY:-dflt}\nunset: ${env:NOPE}\ncost: $$5\n",
        );
        let v = |k: &str| d.get(k).unwrap().to_value();
        assert_eq!(v("port"), Value::Number(4317.into()));
        assert_eq!(v("host"), Value::String("gw:4317".into()));
        assert_eq!(v("missing"), Value::String("fallback".into()));
        assert_eq!(v("empty"), Value::String("dflt".into()));
        assert_eq!(v("unset"), Value::Null);
        assert_eq!(v("cost"), Value::String("$5".into()));
        let err = parse("t.yaml", "a:\n  b: ${file:/etc/x}\n", &|_| None).unwrap_err();
        assert_eq!(err.path, "a.b");
        assert_eq!(
            err.location.as_ref().map(|l| (l.line, l.column)),
            Some((2, 6))
        );
    }

    #[test]
    fn places_anchors_merges_and_errors() {
        let d = doc("base: &b\n  x: 1\n  y: 2\nderived:\n  <<: *b\n  y: 3\n");
        let derived = d.get("derived").unwrap();
        assert_eq!(
            derived.get("x").unwrap().to_value(),
            Value::Number(1.into())
        );
        assert_eq!(
            derived.get("y").unwrap().to_value(),
            Value::Number(3.into())
        );
        let mut index = BTreeMap::new();
        d.index("", &mut index);
        let at = &index["derived.y"];
        assert_eq!((at.line, at.column), (6, 3));
        let err = parse("bad.yaml", "a: [1, 2\n", &|_| None).unwrap_err();
        assert!(err.location.is_some(), "{err}");
        let err = parse("dup.yaml", "a: 1\na: 2\n", &|_| None).unwrap_err();
        assert_eq!(err.path, "a");
        assert_eq!(err.location.map(|l| l.line), Some(2));
    }

    #[test]
    fn documents_merge_in_order() {
        let mut a = doc("exporters:\n  otlp: { endpoint: a, timeout: 5s }\nlist: [1, 2]\n");
        let b = doc("exporters:\n  otlp: { endpoint: b }\nlist: [3]\n");
        merge(&mut a, b);
        let otlp = a.get("exporters").unwrap().get("otlp").unwrap();
        assert_eq!(
            otlp.get("endpoint").unwrap().to_value(),
            Value::String("b".into())
        );
        assert_eq!(
            otlp.get("timeout").unwrap().to_value(),
            Value::String("5s".into())
        );
        assert_eq!(
            a.get("list").unwrap().to_value(),
            Value::Sequence(vec![Value::Number(3.into())])
        );
    }
}

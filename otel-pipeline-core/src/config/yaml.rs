//! Collector YAML as the Collector reads it, with every node's place in its file.
//!
//! - Scalars resolve as the Collector's YAML library resolves plain scalars: `null`/`~`/
//!   empty, `true`/`false`, integers (with `_` separators, `0x`, `0o`, `0b`), floats
//!   (`.inf`, `.nan`), else strings. Quoted and block scalars are strings.
//! - `${env:NAME}`, `${env:NAME:-default}` and `${NAME}` are replaced in string values;
//!   `$$` is a literal `$`. A plain value that is one reference alone resolves again as a
//!   scalar, so `port: ${env:PORT}` is a number. An unset variable with no default
//!   becomes empty, as in the Collector; a default applies only to an unset variable (one
//!   set to the empty string stays empty).
//! - Mapping keys are taken as written: no `${...}` or `$$` expansion, no retyping
//!   (`0x1F`, `~` and `1.50` stay those strings), as the Collector expands values only.
//! - Nesting is bounded ([`MAX_DEPTH`] levels) and so is what aliases copy
//!   ([`MAX_NODES`] nodes in all), so a hostile file (deep nesting, "billion laughs")
//!   is an error, not an exhausted stack or memory.
//! - Anchors, aliases and `<<` merge keys work.
//! - Several documents merge in order: maps merge key by key, anything else is replaced.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_yaml_ng::Value;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::ConfigError;

/// How deep mappings and sequences may nest in a configuration.
pub(crate) const MAX_DEPTH: usize = 128;

/// How many nodes a document may hold once its aliases are copied in.
pub(crate) const MAX_NODES: usize = 1_000_000;

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
        depth: 0,
        nodes: 0,
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
    /// Each anchored node with its size in nodes.
    anchors: BTreeMap<usize, (Node, usize)>,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// How deep the node being built is.
    depth: usize,
    /// Nodes built so far, aliases counted at their full size.
    nodes: usize,
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

    /// A mapping key: a scalar taken as written (no expansion, no retyping), or an alias
    /// to one.
    fn key(&mut self, path: &str) -> Result<(String, Location), ConfigError> {
        let (event, mark) = self.next(path)?;
        let at = located(&self.file, &mark);
        let text = match event {
            Event::Scalar(text, ..) => text,
            Event::Alias(id) => match self.anchors.get(&id).map(|(n, _)| &n.value) {
                Some(NodeValue::String(s)) => s.clone(),
                Some(NodeValue::Int(i)) => i.to_string(),
                Some(NodeValue::Bool(b)) => b.to_string(),
                Some(NodeValue::Float(f)) => f.to_string(),
                Some(NodeValue::Null) => String::new(),
                Some(_) => {
                    return Err(ConfigError::new(path, "a mapping key must be a scalar").at(at));
                }
                None => return Err(self.err(path, &mark, "alias to an unknown anchor")),
            },
            _ => return Err(ConfigError::new(path, "a mapping key must be a scalar").at(at)),
        };
        self.count(path, &mark, 1)?;
        Ok((text, at))
    }

    /// Count `n` more nodes against [`MAX_NODES`].
    fn count(&mut self, path: &str, mark: &Marker, n: usize) -> Result<(), ConfigError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(self.err(
                path,
                mark,
                format!(
                    "the document expands to more than {MAX_NODES} nodes (aliases copied in): \
                     refused"
                ),
            ));
        }
        Ok(())
    }

    fn node(&mut self, path: &str) -> Result<Node, ConfigError> {
        self.depth += 1;
        let out = if self.depth > MAX_DEPTH {
            let mark = self.events.get(self.pos).map(|(_, m)| *m);
            let err = ConfigError::new(path, format!("nested more than {MAX_DEPTH} levels deep"));
            Err(match mark {
                Some(m) => err.at(located(&self.file, &m)),
                None => err,
            })
        } else {
            self.node_inner(path)
        };
        self.depth -= 1;
        out
    }

    fn node_inner(&mut self, path: &str) -> Result<Node, ConfigError> {
        let (event, mark) = self.next(path)?;
        let at = located(&self.file, &mark);
        let nodes_before = self.nodes;
        let (node, anchor) = match event {
            Event::Alias(id) => {
                let Some((n, size)) = self.anchors.get(&id) else {
                    return Err(self.err(path, &mark, "alias to an unknown anchor"));
                };
                let (value, size) = (n.value.clone(), *size);
                // The copy counts at its full size, so nested aliases cannot multiply
                // unseen (the `billion laughs` pattern); the size was counted before the
                // clone would be made a second time.
                self.count(path, &mark, size)?;
                (Node { value, at }, 0)
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.count(path, &mark, 1)?;
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
                self.count(path, &mark, 1)?;
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
                self.count(path, &mark, 1)?;
                let mut entries: Vec<(String, Location, Node)> = Vec::new();
                let mut merged: Vec<(String, Location, Node)> = Vec::new();
                loop {
                    if matches!(self.events.get(self.pos), Some((Event::MappingEnd, _))) {
                        self.pos += 1;
                        break;
                    }
                    let (key, key_at) = self.key(path)?;
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
                                return Err(
                                    ConfigError::new(child, "`<<` merges a mapping").at(key_at)
                                );
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
                        return Err(
                            ConfigError::new(child, "key given twice in one mapping").at(key_at)
                        );
                    }
                    entries.push((key, key_at, value));
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
            let size = self.nodes - nodes_before;
            self.anchors.insert(anchor, (node.clone(), size));
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
            // As the Collector's env provider: the default applies only to a variable
            // that is not set; one set to the empty string stays empty.
            match (env(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {}
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
        // Set but empty: the Collector's env provider keeps it empty.
        assert_eq!(v("empty"), Value::Null);
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
    fn keys_are_taken_as_written() {
        let d = doc(
            "m:\n  0x1F: a\n  ~: b\n  null: c\n  1.50: d\n  $$k: e\n  ${env:PORT}: f\n  \"q\": g\n",
        );
        let keys: Vec<&str> = d
            .get("m")
            .unwrap()
            .entries()
            .iter()
            .map(|(k, _, _)| k.as_str())
            .collect();
        assert_eq!(
            keys,
            ["0x1F", "~", "null", "1.50", "$$k", "${env:PORT}", "q"]
        );
        // Values are still expanded and typed.
        let d = doc("a: $$5\nb: 0x1F\n");
        assert_eq!(d.get("a").unwrap().to_value(), Value::String("$5".into()));
        assert_eq!(d.get("b").unwrap().to_value(), Value::Number(31.into()));
    }

    #[test]
    fn hostile_nesting_and_alias_expansion_are_refused() {
        // The YAML parser refuses very deep flow nesting itself; ours bounds the rest.
        let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse("deep.yaml", &deep, &|_| None).is_err());
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let err = parse("deep.yaml", &deep, &|_| None).unwrap_err();
        assert!(err.to_string().contains("levels deep"), "{err}");
        let deep_block: String = (0..300)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        let err = parse("block.yaml", &deep_block, &|_| None).unwrap_err();
        assert!(err.to_string().contains("levels deep"), "{err}");
        // Billion laughs: nine levels of ten aliases each would be 10^9 nodes.
        let mut laughs = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
            .iter()
            .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
        {
            laughs.push_str(&format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{prev}"); 10].join(", ")
            ));
        }
        let err = parse("laughs.yaml", &laughs, &|_| None).unwrap_err();
        assert!(err.to_string().contains("nodes"), "{err}");
        // A modest use of aliases still loads.
        let ok = "a: &a {x: 1, y: [1, 2, 3]}\nb: [*a, *a, *a]\nc: {<<: *a, z: 2}\n";
        assert!(parse("ok.yaml", ok, &|_| None).is_ok());
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

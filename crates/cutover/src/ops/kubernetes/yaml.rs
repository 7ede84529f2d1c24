//! A small YAML writer for the manifests: block maps and lists, scalars, and `#` comments.
//!
//! Why not a serde YAML crate: the workspace has none; `serde_yaml` is archived and `serde_yml`
//! is deprecated (RUSTSEC-2025-0068); and none of the serde serializers writes comments, which
//! the manifests need (every derived number says where it came from). Nor does a
//! `serde_json::Value` fit as the tree: without `preserve_order` it sorts keys, and Kubernetes
//! readers expect `name` first in a container. So the tree is [`Node`], ordered as built, and
//! it implements `serde::Serialize`: the tests compare `serde_json` of the tree with what an
//! independent YAML parser (PyYAML) reads back from [`documents`].
//!
//! The writer uses a closed subset of YAML that is easy to get right: a string is written
//! plain only when it is made of `A-Za-z0-9._/-`, starts with a letter or `/` and is no word
//! YAML 1.1 or 1.2 reads as something else (`yes`, `off`, `null`, ...); every other string is
//! double-quoted with escapes. So no value can turn into a number, a boolean or a null, under
//! YAML 1.1 (go-yaml, used by kubectl) or 1.2.

use serde::ser::{SerializeMap, SerializeSeq};
use std::fmt::Write as _;

/// A YAML value; maps keep the order they were built in.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Map(Map),
    List(Vec<Node>),
    Str(String),
    Int(i64),
    Bool(bool),
}

/// An ordered map whose entries may carry comments (written above the key).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Map(Vec<Entry>);

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    key: String,
    value: Node,
    comments: Vec<String>,
}

impl Map {
    pub fn new() -> Self {
        Map(Vec::new())
    }

    /// Adds `key: value`.
    pub fn with(self, key: &str, value: impl Into<Node>) -> Self {
        self.with_comments(key, Vec::new(), value)
    }

    /// Adds `key: value` with comment lines above it (each line without the `# `).
    pub fn with_comments(
        mut self,
        key: &str,
        comments: Vec<String>,
        value: impl Into<Node>,
    ) -> Self {
        self.push(key, comments, value);
        self
    }

    pub fn push(&mut self, key: &str, comments: Vec<String>, value: impl Into<Node>) {
        self.0.push(Entry {
            key: key.to_owned(),
            value: value.into(),
            comments,
        });
    }

    /// The value of `key`, for callers that add to a map they built.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.0.iter().find(|e| e.key == key).map(|e| &e.value)
    }
}

impl From<Map> for Node {
    fn from(map: Map) -> Self {
        Node::Map(map)
    }
}
impl From<Vec<Node>> for Node {
    fn from(list: Vec<Node>) -> Self {
        Node::List(list)
    }
}
impl From<&str> for Node {
    fn from(s: &str) -> Self {
        Node::Str(s.to_owned())
    }
}
impl From<String> for Node {
    fn from(s: String) -> Self {
        Node::Str(s)
    }
}
impl From<u64> for Node {
    fn from(n: u64) -> Self {
        Node::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}
impl From<u32> for Node {
    fn from(n: u32) -> Self {
        Node::Int(n.into())
    }
}
impl From<u16> for Node {
    fn from(n: u16) -> Self {
        Node::Int(n.into())
    }
}
impl From<bool> for Node {
    fn from(b: bool) -> Self {
        Node::Bool(b)
    }
}

impl serde::Serialize for Node {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Map(map) => {
                let mut out = serializer.serialize_map(Some(map.0.len()))?;
                for entry in &map.0 {
                    out.serialize_entry(&entry.key, &entry.value)?;
                }
                out.end()
            }
            Node::List(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(item)?;
                }
                out.end()
            }
            Node::Str(s) => serializer.serialize_str(s),
            Node::Int(n) => serializer.serialize_i64(*n),
            Node::Bool(b) => serializer.serialize_bool(*b),
        }
    }
}

/// A YAML stream: `header` comment lines, then each document after a `---` line.
pub fn documents(header: &[String], docs: &[Map]) -> String {
    let mut out = String::new();
    for line in header {
        comment(&mut out, 0, line);
    }
    for doc in docs {
        out.push_str("---\n");
        write_map(&mut out, 0, doc);
    }
    out
}

/// Lines of a comment are kept to this many columns where the words allow.
const COMMENT_WIDTH: usize = 100;

/// `text` as `# ` lines at `indent`, wrapped at word boundaries; a line that starts with `- `
/// (a list in the comment) continues indented under its text, one that starts with `$ ` (a
/// command to copy) is never wrapped.
fn comment(out: &mut String, indent: usize, text: &str) {
    if text.is_empty() {
        let _ = writeln!(out, "{:indent$}#", "");
    }
    let width = COMMENT_WIDTH.saturating_sub(indent + 2).max(40);
    for paragraph in text.lines().map(printable) {
        if paragraph.starts_with("$ ") {
            let _ = writeln!(out, "{:indent$}# {paragraph}", "");
            continue;
        }
        let hang = if paragraph.starts_with("- ") {
            "  "
        } else {
            ""
        };
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            let started = !line.trim().is_empty();
            if started && line.len() + 1 + word.len() > width {
                let _ = writeln!(out, "{:indent$}# {line}", "");
                line = hang.to_owned();
            } else if started {
                line.push(' ');
            }
            line.push_str(word);
        }
        let _ = writeln!(out, "{:indent$}# {line}", "");
    }
}

/// Writes the entries of a map, each at `indent` (the caller has written nothing of the line).
fn write_map(out: &mut String, indent: usize, map: &Map) {
    for (i, entry) in map.0.iter().enumerate() {
        if i > 0 {
            out.push_str(&" ".repeat(indent));
        }
        write_entry(out, indent, entry);
    }
}

/// `key: value` from the current column, its comments above it.
fn write_entry(out: &mut String, indent: usize, entry: &Entry) {
    if !entry.comments.is_empty() {
        // What is already written of the key's line (its indentation, or `- ` of a list item)
        // goes below the comments, which line up with the line's first character.
        let line_start = out.rfind('\n').map_or(0, |i| i + 1);
        let pending = out.split_off(line_start);
        let column = pending.len() - pending.trim_start().len();
        for line in &entry.comments {
            comment(out, column, line);
        }
        out.push_str(&pending);
    }
    out.push_str(&scalar(&entry.key));
    out.push(':');
    write_value(out, indent, &entry.value);
}

/// The value after `key:` or `-`: inline for scalars and empty collections, else on the next
/// lines, indented two more.
fn write_value(out: &mut String, indent: usize, value: &Node) {
    match value {
        Node::Map(map) if !map.0.is_empty() => {
            out.push('\n');
            out.push_str(&" ".repeat(indent + 2));
            write_map(out, indent + 2, map);
        }
        Node::List(items) if !items.is_empty() => {
            out.push('\n');
            for item in items {
                out.push_str(&" ".repeat(indent + 2));
                write_item(out, indent + 2, item);
            }
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

/// One `- item` of a list, from the current column (`indent`).
fn write_item(out: &mut String, indent: usize, item: &Node) {
    match item {
        Node::Map(map) if !map.0.is_empty() => {
            out.push_str("- ");
            // The map's keys line up after "- ".
            write_map(out, indent + 2, map);
        }
        Node::List(items) if !items.is_empty() => {
            out.push('-');
            write_value(out, indent, &Node::List(items.clone()));
        }
        other => {
            out.push_str("- ");
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

/// A comment line holds no character that would end it or that YAML refuses raw: those are
/// written escaped, as in a quoted scalar (a comment may quote a user's value).
fn printable(line: &str) -> String {
    line.chars()
        .map(|c| {
            if needs_escape(c) {
                format!("\\u{:04x}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Characters YAML does not allow raw or reads as a line break: C0 and C1 controls, DEL,
/// the line and paragraph separators, the BOM and the non-characters U+FFFE and U+FFFF.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
        )
}

fn inline(node: &Node) -> String {
    match node {
        Node::Map(_) => "{}".into(),
        Node::List(_) => "[]".into(),
        Node::Str(s) => scalar(s),
        Node::Int(n) => n.to_string(),
        Node::Bool(b) => b.to_string(),
    }
}

/// Words a plain scalar must not be: YAML 1.1 booleans and nulls (go-yaml v2, PyYAML) and
/// YAML 1.2's.
const RESERVED: &[&str] = &[
    "y", "n", "yes", "no", "true", "false", "on", "off", "null", "nan", "inf",
];

/// A string as a YAML scalar: plain when it cannot be read as anything else, else quoted.
pub fn scalar(s: &str) -> String {
    let plain = s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
        && !RESERVED.contains(&s.to_ascii_lowercase().as_str());
    if plain {
        s.to_owned()
    } else {
        quoted(s)
    }
}

/// A double-quoted scalar: `"`, `\` and what [`needs_escape`] escaped.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_only_when_nothing_else_can_be_read() {
        for plain in [
            "api",
            "/health",
            "apps/v1",
            "app.kubernetes.io/name",
            "RELEASE-1",
        ] {
            assert_eq!(scalar(plain), plain);
        }
        for (text, written) in [
            ("", r#""""#),
            ("8080", r#""8080""#),
            ("0.0.0.0:8080", r#""0.0.0.0:8080""#),
            ("yes", r#""yes""#),
            ("Off", r#""Off""#),
            ("null", r#""null""#),
            ("-x", r#""-x""#),
            (".inf", r#"".inf""#),
            ("a b", r#""a b""#),
            ("a: b", r#""a: b""#),
            ("#x", r##""#x""##),
            ("say \"hi\"\n", r#""say \"hi\"\n""#),
            ("back\\slash", r#""back\\slash""#),
            ("bell\u{7}", r#""bell\u0007""#),
            ("c1\u{85}", r#""c1\u0085""#),
            ("sep\u{2028}", r#""sep\u2028""#),
            ("café", "\"café\""),
        ] {
            assert_eq!(scalar(text), written, "{text:?}");
        }
    }

    #[test]
    fn block_maps_lists_and_comments() {
        let doc = Map::new()
            .with("apiVersion", "v1")
            .with_comments("count", vec!["why two".into()], 2u32)
            .with("empty", Map::new())
            .with("none", Vec::<Node>::new())
            .with(
                "items",
                vec![
                    Map::new()
                        .with_comments("name", vec!["first".into()], "a")
                        .with_comments("port", vec!["second".into()], 80u16)
                        .into(),
                    Node::from("plain"),
                    Node::from(vec![Node::from(true)]),
                ],
            )
            .with(
                "nested",
                Map::new().with("deep", Map::new().with("x", false)),
            );
        let text = documents(&["header".into()], &[doc]);
        assert_eq!(
            text,
            "# header\n\
             ---\n\
             apiVersion: v1\n\
             # why two\n\
             count: 2\n\
             empty: {}\n\
             none: []\n\
             items:\n\
             \x20 # first\n\
             \x20 - name: a\n\
             \x20   # second\n\
             \x20   port: 80\n\
             \x20 - plain\n\
             \x20 -\n\
             \x20   - true\n\
             nested:\n\
             \x20 deep:\n\
             \x20   x: false\n"
        );
    }

    #[test]
    fn long_comments_wrap_at_words() {
        let long = format!("- {}", "word ".repeat(40));
        let text = documents(&[long], &[]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() > 1, "{text}");
        assert!(lines.iter().all(|l| l.len() <= COMMENT_WIDTH), "{text}");
        assert!(lines[0].starts_with("# - word word"), "{text}");
        assert!(lines[1].starts_with("#   word"), "{text}");
        assert_eq!(text.matches("word").count(), 40);
        let command = format!("$ kubectl {}", "--flag ".repeat(20));
        let text = documents(std::slice::from_ref(&command), &[]);
        assert_eq!(text, format!("# {command}\n"));
    }

    #[test]
    fn serializes_in_build_order() {
        let doc = Node::from(Map::new().with("b", 1u32).with("a", vec![Node::from("x")]));
        assert_eq!(serde_json::to_string(&doc).unwrap(), r#"{"b":1,"a":["x"]}"#);
    }
}

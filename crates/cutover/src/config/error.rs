//! Config errors that point at the exact place in the file.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Located),
}

/// `file:line:column: key: message`, the shape editors and CI annotations understand.
#[derive(Debug)]
pub struct Located {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.path.display(), self.line, self.column)?;
        if !self.key.is_empty() && self.key != "." {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl ConfigError {
    pub(super) fn at_span(
        path: &Path,
        text: &str,
        span: Option<Range<usize>>,
        key: &str,
        message: &str,
    ) -> Self {
        let (line, column) = span.clone().map_or((1, 1), |s| line_column(text, s.start));
        // Errors of the TOML layer (a number too large for any integer) come without a key:
        // name the one written where the error is.
        let key = match (key, span) {
            ("" | ".", Some(span)) => key_written_at(text, span.start).unwrap_or_default(),
            _ => key.to_owned(),
        };
        ConfigError::Invalid(Located {
            path: path.to_owned(),
            line,
            column,
            key,
            message: message.trim().to_owned(),
        })
    }

    /// An error about a key found after parsing; its position is looked up in the source.
    pub(super) fn at_key(path: &Path, text: &str, key: &[&str], message: String) -> Self {
        let span = key_span(text, key);
        Self::at_span(path, text, span, &key.join("."), &message)
    }

    pub fn located(&self) -> Option<&Located> {
        match self {
            ConfigError::Invalid(located) => Some(located),
            ConfigError::Read { .. } => None,
        }
    }
}

/// The dotted key whose value is written at `offset`: the table header above it, then the keys
/// on its line (inline tables nest), found by reading the text as written.
fn key_written_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset.min(text.len()))?;
    let line_start = before.rfind('\n').map_or(0, |nl| nl + 1);
    let mut path: Vec<String> = before[..line_start]
        .lines()
        .rev()
        .find_map(|line| {
            let line = line.trim();
            let inner = line.strip_prefix("[[").or_else(|| line.strip_prefix('['))?;
            let inner = inner.split(']').next()?;
            Some(
                inner
                    .split('.')
                    .map(|k| k.trim().trim_matches('"').to_owned())
                    .collect(),
            )
        })
        .unwrap_or_default();
    let depth = path.len();
    // Keys open on this line: `a = { b = { c = ` gives a.b.c.
    let mut open: Vec<String> = Vec::new();
    let mut last: Option<String> = None;
    let mut word = String::new();
    let mut in_string = None;
    for c in before[line_start..].chars() {
        match (in_string, c) {
            (Some(q), c) if c == q => in_string = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => in_string = Some(c),
            (None, '=') => {
                last = Some(word.trim().trim_matches('"').to_owned());
                word.clear();
            }
            (None, '{') => {
                if let Some(key) = last.take() {
                    open.push(key);
                }
            }
            (None, '}') => {
                open.pop();
                last = None;
            }
            (None, ',') => {
                last = None;
                word.clear();
            }
            (None, c) => word.push(c),
        }
    }
    path.extend(open);
    path.extend(last);
    (path.len() > depth || depth > 0).then(|| path.join("."))
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

/// Whether the whole of `path` is written in `text` (not left to a default).
pub(super) fn key_is_written(text: &str, path: &[&str]) -> bool {
    let Ok(doc) = toml_edit::ImDocument::parse(text) else {
        return false;
    };
    let mut item = doc.as_item();
    for segment in path {
        match item.as_table_like().and_then(|t| t.get(segment)) {
            Some(value) => item = value,
            None => return false,
        }
    }
    true
}

/// Where the deepest existing key of `path` is written, via toml_edit's span-keeping parser.
fn key_span(text: &str, path: &[&str]) -> Option<Range<usize>> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut item = doc.as_item();
    let mut best = None;
    for segment in path {
        let table = item.as_table_like()?;
        let (key, value) = table.get_key_value(segment)?;
        best = key.span().or(best);
        item = value;
    }
    best
}

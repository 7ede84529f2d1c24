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
        let (line, column) = span.map_or((1, 1), |s| line_column(text, s.start));
        ConfigError::Invalid(Located {
            path: path.to_owned(),
            line,
            column,
            key: key.to_owned(),
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

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
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

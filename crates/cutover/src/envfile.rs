//! Env files (`env_file`): one dotenv parser for the config's checks, the deploy gate and the
//! releases' environment. Imports nothing else of the crate.

use std::path::{Path, PathBuf};

/// An env file that cannot be read or parsed. The message never quotes the file's lines: they
/// may hold secrets.
#[derive(Debug, thiserror::Error)]
#[error("cannot read env file {}: {message}", path.display())]
pub struct EnvFileError {
    pub path: PathBuf,
    pub message: String,
}

/// Reads a dotenv file with dotenvy (quotes, escapes, `export`, comments, multiline values).
pub fn read(path: &Path) -> Result<Vec<(String, String)>, EnvFileError> {
    let iter = dotenvy::from_path_iter(path).map_err(|e| EnvFileError {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    iter.map(|item| {
        item.map_err(|e| EnvFileError {
            path: path.to_owned(),
            // dotenvy's parse errors quote the line, which may hold a secret: keep only the position.
            message: match e {
                dotenvy::Error::LineParse(_, index) => format!("syntax error at byte {index}"),
                other => other.to_string(),
            },
        })
    })
    .collect()
}

//! [`MigrateError`]: one variant per step that can fail, with messages that say what to do.

use super::files::{line_column, Direction, MigrationFile};
use super::lock::LockHolder;
use super::status::ChangedFile;
use std::error::Error as _;
use std::path::PathBuf;
use std::time::Duration;
use tokio_postgres::error::ErrorPosition;

/// Everything that can go wrong, one variant per step. No message contains a password: URLs
/// appear only through [`crate::services::redact_url`].
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot read migrations directory {}: {source}", dir.display())]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read migration file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("migration file {}: the version does not fit a PostgreSQL bigint", file.display())]
    BadVersion { file: PathBuf },
    #[error("two {direction} migration files for version {version}: {} and {}", first.display(), second.display())]
    Duplicate {
        version: u64,
        direction: Direction,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("migration name {name:?} is not valid: use letters, digits, '_' and '-'")]
    BadName { name: String },
    #[error("cannot create migration file {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{reason}")]
    Url { target: String, reason: String },
    #[error("cannot connect to {target}: {reason}")]
    Connect {
        target: String,
        reason: String,
        /// The server's SQLSTATE, when it answered (28P01: wrong password, 3D000: no database).
        sqlstate: Option<String>,
    },
    #[error("{target}: no current schema (the search_path names no existing schema)")]
    NoSchema { target: String },
    #[error("{action} failed: {reason}")]
    Query {
        action: &'static str,
        reason: String,
        sqlstate: Option<String>,
    },
    #[error("schema_migrations is not as golang-migrate leaves it: {reason}")]
    BadVersionTable { reason: String },
    #[error("version {version} does not fit a PostgreSQL bigint")]
    VersionTooLarge { version: u64 },
    #[error("timed out after {} waiting for the migration lock; {}", humantime::format_duration(*waited), holders_text(holders))]
    LockTimeout {
        waited: Duration,
        holders: Vec<LockHolder>,
    },
    #[error("the database is dirty at {}: a migration failed or was interrupted; fix the schema by hand, then run `cutover migrate force VERSION` with the version it now matches", version_text(*version))]
    Dirty { version: Option<u64> },
    #[error("{}", changed_text(files))]
    Changed { files: Vec<ChangedFile> },
    #[error("the database is at version {version}, which has no migration file in {}; cannot migrate down from it", dir.display())]
    UnknownVersion { version: u64, dir: PathBuf },
    #[error("version {version} has no down file in {}; cannot migrate down from it", dir.display())]
    NoDownFile { version: u64, dir: PathBuf },
    #[error("{}", failed_text(self))]
    Failed {
        /// The file that failed (its path).
        file: PathBuf,
        version: u64,
        direction: Direction,
        /// 1-based line and column in the file, from PostgreSQL's error position.
        line_column: Option<(usize, usize)>,
        /// PostgreSQL's message (with detail and hint), or what broke.
        message: String,
        sqlstate: Option<String>,
        /// The version the database is now dirty at.
        dirty_at: Option<u64>,
    },
}

fn version_text(version: Option<u64>) -> String {
    match version {
        Some(v) => format!("version {v}"),
        None => "no version (a down migration of the first version failed)".to_string(),
    }
}

fn holders_text(holders: &[LockHolder]) -> String {
    if holders.is_empty() {
        return "no holder is visible now (it may have just released the lock)".to_string();
    }
    let list: Vec<String> = holders.iter().map(ToString::to_string).collect();
    format!("held by {}", list.join("; "))
}

fn changed_text(files: &[ChangedFile]) -> String {
    let list: Vec<String> = files
        .iter()
        .map(|f| {
            format!(
                "{} (applied with sha256 {}, now {})",
                f.path.display(),
                f.recorded_sha256,
                f.sha256
            )
        })
        .collect();
    format!(
        "already-applied migration files changed since they were applied: {}; restore them and put the change in a new migration",
        list.join("; ")
    )
}

fn failed_text(error: &MigrateError) -> String {
    let MigrateError::Failed {
        file,
        line_column,
        message,
        dirty_at,
        ..
    } = error
    else {
        unreachable!("only for Failed")
    };
    let at = match line_column {
        Some((line, column)) => format!(" at line {line}, column {column}"),
        None => String::new(),
    };
    format!(
        "migration {}{at} failed: {message}; the database is left dirty at {}: fix the schema by hand, then run `cutover migrate force VERSION`",
        file.display(),
        version_text(*dirty_at)
    )
}

impl MigrateError {
    pub(crate) fn query(action: &'static str, e: tokio_postgres::Error) -> MigrateError {
        MigrateError::Query {
            action,
            reason: describe(&e),
            sqlstate: e.code().map(|c| c.code().to_string()),
        }
    }
}

/// A one-line description of a tokio-postgres error: the server's message with its SQLSTATE,
/// detail and hint, or the client-side error and its causes.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; detail: {detail}"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        if let Some(context) = db.where_() {
            text.push_str(&format!("; context: {}", context.replace('\n', " / ")));
        }
        return text;
    }
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// A file that failed: where in it, as PostgreSQL said, and the version left dirty.
pub(super) fn failed(
    file: &MigrationFile,
    version: u64,
    direction: Direction,
    dirty_at: Option<u64>,
    e: &tokio_postgres::Error,
) -> MigrateError {
    let line_column = e.as_db_error().and_then(|db| match db.position() {
        Some(ErrorPosition::Original(position)) => line_column(&file.sql, *position),
        _ => None,
    });
    MigrateError::Failed {
        file: file.path.clone(),
        version,
        direction,
        line_column,
        message: describe(e),
        sqlstate: e.code().map(|c| c.code().to_string()),
        dirty_at,
    }
}

//! Database migrations on PostgreSQL, compatible with golang-migrate.
//!
//! cutover reads golang-migrate's files (`{version}_{title}.up.sql` / `.down.sql`), its table
//! (`schema_migrations(version bigint not null primary key, dirty boolean not null)`, one row,
//! written like its postgres driver's `SetVersion`), and takes its advisory lock, so either tool
//! can take over a database the other managed, and the two exclude each other. cutover adds
//! sha256 checksums of applied up files in a side table golang-migrate ignores
//! (`cutover_migration_checksums`).
//!
//! # Layout
//! - [`files`]: scanning a folder, `create`, error positions to line:column.
//! - [`lock`]: golang-migrate's lock keys; taking them with a timeout; naming the holder.
//! - `session`: the one dedicated connection everything runs on; the two tables.
//!
//! # One step, as golang-migrate does it
//!
//! ```text
//!   clean at V ──SetVersion(T, dirty)──> dirty at T ──run file (one batch)──> SetVersion(T, clean) ──> clean at T
//!                                             │
//!                                             └── file fails: stays dirty at T; every up/down is
//!                                                 refused until `force VERSION` after a manual fix
//! ```
//!
//! For `up` the target T is the file's version; for `down` it is the previous version (none
//! below the first one, written as golang-migrate's `-1` while dirty). Everything runs on one
//! connection holding the lock, which is released at the end (and by the server, should the
//! connection drop). Each file runs as one simple-query batch, with no transaction added: a
//! multi-statement batch is one implicit transaction in PostgreSQL unless the file manages its
//! own.

pub mod files;
pub mod lock;
mod session;

pub use files::{create, line_column, Direction, Migration, MigrationFile, Migrations};
pub use lock::{advisory_lock_id, lock_keys, LockHolder};
pub use session::{CHECKSUM_TABLE, VERSION_TABLE};

use serde::{Deserialize, Serialize};
use session::{ChecksumChange, Recorded, Session};
use std::collections::BTreeMap;
use std::error::Error as _;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
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

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// How a migration command runs.
#[derive(Clone)]
pub struct Options {
    /// How long to wait for the migration lock (the `lock_timeout` of the config).
    pub lock_timeout: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// Run `up` even though an already-applied file changed (its new checksum is recorded).
    pub allow_changed: bool,
    /// Called at each step, for progress events.
    pub progress: Option<ProgressFn>,
}

impl Options {
    pub fn new(lock_timeout: Duration) -> Options {
        Options {
            lock_timeout,
            connect_timeout: Duration::from_secs(10),
            allow_changed: false,
            progress: None,
        }
    }

    pub(crate) fn report(&self, progress: Progress) {
        if let Some(callback) = &self.progress {
            callback(&progress);
        }
    }
}

impl Default for Options {
    fn default() -> Options {
        Options::new(Duration::from_secs(60))
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("lock_timeout", &self.lock_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("allow_changed", &self.allow_changed)
            .field("progress", &self.progress.as_ref().map(|_| "callback"))
            .finish()
    }
}

/// What a running migration command is doing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    /// Another session holds the lock; waiting up to `lock_timeout`.
    WaitingForLock {
        holders: Vec<LockHolder>,
    },
    LockAcquired,
    /// About to run `file` (none: golang-migrate's version move without a file).
    Running {
        version: u64,
        direction: Direction,
        file: Option<String>,
    },
    Done(Step),
}

/// One migration that ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub version: u64,
    pub direction: Direction,
    /// The file name; `None` when the version had no file for this direction.
    pub file: Option<String>,
    /// The database's version after this step.
    pub now_at: Option<u64>,
    pub duration_ms: f64,
}

/// What `migrate status` reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MigrateStatus {
    /// The database's version; `None` when nothing was applied.
    pub version: Option<u64>,
    pub dirty: bool,
    /// The newest version among the files.
    pub latest: Option<u64>,
    /// The database's version has no file here (it is ahead of these files, e.g. after a
    /// rollback to an older release, or files were removed).
    pub unknown_version: bool,
    pub applied: Vec<AppliedFile>,
    pub pending: Vec<PendingFile>,
    /// Applied up files whose content changed since they were applied.
    pub changed: Vec<ChangedFile>,
}

impl MigrateStatus {
    /// The database is at a version newer than every file here: what a rollback to an older
    /// release leaves (the rollback should warn; it never runs `down` by itself).
    pub fn ahead_of_files(&self) -> bool {
        match (self.version, self.latest) {
            (Some(db), Some(latest)) => db > latest,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedFile {
    pub version: u64,
    pub file: Option<String>,
    /// The checksum recorded when it was applied; `None` if applied before cutover took over.
    pub recorded_sha256: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingFile {
    pub version: u64,
    pub file: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedFile {
    pub version: u64,
    pub file: String,
    pub path: PathBuf,
    pub recorded_sha256: String,
    pub sha256: String,
}

fn changed_files(
    migrations: &Migrations,
    version: Option<u64>,
    recorded: &BTreeMap<u64, Recorded>,
) -> Vec<ChangedFile> {
    migrations
        .through(version)
        .filter_map(|m| {
            let file = m.up.as_ref()?;
            let rec = recorded.get(&m.version)?;
            (rec.sha256 != file.sha256).then(|| ChangedFile {
                version: m.version,
                file: file.name.clone(),
                path: file.path.clone(),
                recorded_sha256: rec.sha256.clone(),
                sha256: file.sha256.clone(),
            })
        })
        .collect()
}

/// Reads the database's migration state and compares it with `migrations`. Takes no lock and
/// creates nothing.
pub async fn status(
    url: &str,
    migrations: &Migrations,
    options: &Options,
) -> Result<MigrateStatus, MigrateError> {
    let session = Session::connect(url, options).await?;
    let result = async {
        let db = session.read_version().await?;
        let recorded = session.checksums().await?;
        Ok(MigrateStatus {
            version: db.version,
            dirty: db.dirty,
            latest: migrations.latest(),
            unknown_version: db.version.is_some_and(|v| migrations.get(v).is_none()),
            applied: migrations
                .through(db.version)
                .map(|m| AppliedFile {
                    version: m.version,
                    file: m.up.as_ref().map(|f| f.name.clone()),
                    recorded_sha256: recorded.get(&m.version).map(|r| r.sha256.clone()),
                })
                .collect(),
            pending: migrations
                .after(db.version)
                .map(|m| PendingFile {
                    version: m.version,
                    file: m.up.as_ref().map(|f| f.name.clone()),
                })
                .collect(),
            changed: changed_files(migrations, db.version, &recorded),
        })
    }
    .await;
    session.close().await;
    result
}

/// Applies pending migrations, oldest first, at most `limit` of them (all when `None`).
/// Refuses a dirty database, and (unless `options.allow_changed`) a database whose applied
/// files changed. Returns the steps that ran; none when everything was applied already.
pub async fn up(
    url: &str,
    migrations: &Migrations,
    limit: Option<usize>,
    options: &Options,
) -> Result<Vec<Step>, MigrateError> {
    let mut session = Session::connect(url, options).await?;
    let result = up_locked(&mut session, migrations, limit, options).await;
    if result.is_err() {
        abandon_transaction(&session).await;
    }
    session.close().await;
    result
}

async fn up_locked(
    session: &mut Session,
    migrations: &Migrations,
    limit: Option<usize>,
    options: &Options,
) -> Result<Vec<Step>, MigrateError> {
    session.lock(options).await?;
    session.ensure_tables().await?;
    let db = session.read_version().await?;
    if db.dirty {
        return Err(MigrateError::Dirty {
            version: db.version,
        });
    }
    let recorded = session.checksums().await?;
    let changed = changed_files(migrations, db.version, &recorded);
    if !changed.is_empty() {
        if !options.allow_changed {
            return Err(MigrateError::Changed { files: changed });
        }
        for file in &changed {
            tracing::warn!(file = %file.path.display(), recorded = %file.recorded_sha256, now = %file.sha256,
                "running although an applied migration file changed; recording its new checksum");
        }
    }
    // Applied files without a checksum (taken over from golang-migrate) get one now; changed
    // files that were allowed get their new one.
    let adopt: Vec<(u64, &MigrationFile)> = migrations
        .through(db.version)
        .filter_map(|m| Some((m.version, m.up.as_ref()?)))
        .filter(|(v, f)| recorded.get(v).is_none_or(|r| r.sha256 != f.sha256))
        .collect();
    session.record_checksums(&adopt).await?;

    let mut steps = Vec::new();
    let pending: Vec<&Migration> = migrations
        .after(db.version)
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    for migration in pending {
        let started = Instant::now();
        let file = migration.up.as_ref();
        options.report(Progress::Running {
            version: migration.version,
            direction: Direction::Up,
            file: file.map(|f| f.name.clone()),
        });
        session
            .set_version(Some(migration.version), true, ChecksumChange::None)
            .await?;
        if let Some(file) = file {
            tracing::info!(file = %file.name, "applying migration");
            session.run(file).await.map_err(|e| {
                failed(
                    file,
                    migration.version,
                    Direction::Up,
                    Some(migration.version),
                    &e,
                )
            })?;
        }
        session
            .set_version(
                Some(migration.version),
                false,
                ChecksumChange::Record(migration),
            )
            .await?;
        let step = Step {
            version: migration.version,
            direction: Direction::Up,
            file: file.map(|f| f.name.clone()),
            now_at: Some(migration.version),
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        options.report(Progress::Done(step.clone()));
        steps.push(step);
    }
    Ok(steps)
}

/// Reverts the `n` newest applied migrations with their down files. Never run automatically.
pub async fn down(
    url: &str,
    migrations: &Migrations,
    n: usize,
    options: &Options,
) -> Result<Vec<Step>, MigrateError> {
    let mut session = Session::connect(url, options).await?;
    let result = down_locked(&mut session, migrations, n, options).await;
    if result.is_err() {
        abandon_transaction(&session).await;
    }
    session.close().await;
    result
}

async fn down_locked(
    session: &mut Session,
    migrations: &Migrations,
    n: usize,
    options: &Options,
) -> Result<Vec<Step>, MigrateError> {
    session.lock(options).await?;
    session.ensure_tables().await?;
    let db = session.read_version().await?;
    if db.dirty {
        return Err(MigrateError::Dirty {
            version: db.version,
        });
    }
    let mut current = db.version;
    let mut steps = Vec::new();
    for _ in 0..n {
        let Some(version) = current else { break };
        let migration = migrations
            .get(version)
            .ok_or_else(|| MigrateError::UnknownVersion {
                version,
                dir: migrations.dir().to_path_buf(),
            })?;
        let file = migration
            .down
            .as_ref()
            .ok_or_else(|| MigrateError::NoDownFile {
                version,
                dir: migrations.dir().to_path_buf(),
            })?;
        let target = migrations.previous(version);
        let started = Instant::now();
        options.report(Progress::Running {
            version,
            direction: Direction::Down,
            file: Some(file.name.clone()),
        });
        session
            .set_version(target, true, ChecksumChange::None)
            .await?;
        tracing::info!(file = %file.name, "reverting migration");
        session
            .run(file)
            .await
            .map_err(|e| failed(file, version, Direction::Down, target, &e))?;
        session
            .set_version(target, false, ChecksumChange::Forget(version))
            .await?;
        let step = Step {
            version,
            direction: Direction::Down,
            file: Some(file.name.clone()),
            now_at: target,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        options.report(Progress::Done(step.clone()));
        steps.push(step);
        current = target;
    }
    Ok(steps)
}

/// Sets the version and clears the dirty flag, after a person fixed the schema by hand
/// (`None`: no version). Runs no migration. Checksums of versions above it are forgotten.
pub async fn force(url: &str, version: Option<u64>, options: &Options) -> Result<(), MigrateError> {
    if let Some(v) = version {
        if i64::try_from(v).is_err() {
            return Err(MigrateError::VersionTooLarge { version: v });
        }
    }
    let mut session = Session::connect(url, options).await?;
    let result = async {
        session.lock(options).await?;
        session.ensure_tables().await?;
        session
            .set_version(version, false, ChecksumChange::ForgetAbove(version))
            .await
    }
    .await;
    session.close().await;
    result
}

/// After a failed file, the session may be inside the file's own, aborted, transaction; end it
/// so the lock can be released cleanly.
async fn abandon_transaction(session: &Session) {
    let _ = session.client().batch_execute("ROLLBACK").await;
}

fn failed(
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

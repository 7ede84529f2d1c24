//! Opening the state database (for the daemon, read-only for the CLI, degraded on a full disk)
//! and its versioned schema.
//!
//! The schema version is SQLite's `user_version`. The daemon's open brings an older database
//! forward through [`MIGRATIONS`], all steps and the new version in one transaction, after
//! keeping a copy of the file as it was (`state.db.bak-v{old}`, the way back for a deliberate
//! downgrade). Every open refuses a database a newer cutover wrote ([`StoreError::NewerSchema`])
//! before writing anything to it.

use super::{Store, StoreError};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The schema this binary writes, and the newest it can read.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Forward migrations: `MIGRATIONS[n]` takes a database from schema v`n` to v`n + 1`. Append
/// only: databases out there have run the released steps, so those are never edited.
const MIGRATIONS: &[&str] = &[V1_TABLES, V2_LAST_ACTIVE_AT, V3_DAEMON_EVENTS];

/// v3: changes to the daemon itself (`cutover reload`, `cutover upgrade`), for the history.
const V3_DAEMON_EVENTS: &str = r#"
CREATE TABLE IF NOT EXISTS daemon_events (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('reload', 'upgrade')),
    who         TEXT NOT NULL,
    summary     TEXT NOT NULL
);
"#;

/// v1: the tables. `IF NOT EXISTS` because a database written before the schema had a version
/// may start here with its tables, or some of them, already there (see [`unversioned_version`]).
const V1_TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS releases (
    component   TEXT NOT NULL,
    id          TEXT NOT NULL,
    sha256      TEXT NOT NULL CHECK (length(sha256) = 64),
    size        INTEGER NOT NULL CHECK (size >= 0),
    stored_at   INTEGER NOT NULL,
    kind        TEXT NOT NULL DEFAULT 'file' CHECK (kind IN ('file', 'bundle')),
    pruned_at   INTEGER,
    PRIMARY KEY (component, id)
);
CREATE TABLE IF NOT EXISTS components (
    name        TEXT PRIMARY KEY,
    active      TEXT,
    previous    TEXT,
    updated_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pipelines (
    id          INTEGER PRIMARY KEY,
    release     TEXT NOT NULL,
    components  TEXT NOT NULL,
    who         TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER,
    outcome     TEXT CHECK (outcome IN ('succeeded', 'failed', 'rolled_back', 'interrupted')),
    reason      TEXT
);
CREATE TABLE IF NOT EXISTS deploys (
    id           INTEGER PRIMARY KEY,
    pipeline_id  INTEGER REFERENCES pipelines(id),
    component    TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('deploy', 'rollback')),
    from_release TEXT,
    to_release   TEXT NOT NULL,
    who          TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    ended_at     INTEGER,
    phase        TEXT NOT NULL CHECK (phase IN ('preparing', 'migrating', 'starting', 'switching', 'stabilizing',
                                                 'finalizing', 'rolling_back', 'done')),
    outcome      TEXT CHECK (outcome IN ('succeeded', 'failed', 'rolled_back', 'interrupted')),
    reason       TEXT,
    CHECK ((ended_at IS NULL) = (outcome IS NULL))
);
CREATE INDEX IF NOT EXISTS deploys_open ON deploys (component) WHERE ended_at IS NULL;
CREATE TABLE IF NOT EXISTS deploy_events (
    id          INTEGER PRIMARY KEY,
    deploy_id   INTEGER NOT NULL REFERENCES deploys(id),
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    message     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deploy_events_by_deploy ON deploy_events (deploy_id);
CREATE TABLE IF NOT EXISTS instances (
    id          INTEGER PRIMARY KEY,
    component   TEXT NOT NULL,
    release     TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    start_ticks INTEGER NOT NULL,
    port        INTEGER NOT NULL CHECK (port > 0 AND port < 65536),
    log_path    TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('starting', 'serving', 'stopped')),
    started_at  INTEGER NOT NULL,
    stopped_at  INTEGER
);
"#;

/// v2: when each release was last active, for retention: releases that a finished deploy or
/// rollback made active, and whatever is committed as active or previous now.
const V2_LAST_ACTIVE_AT: &str = "
ALTER TABLE releases ADD COLUMN last_active_at INTEGER;
UPDATE releases SET last_active_at = (
    SELECT MAX(d.ended_at) FROM deploys d WHERE d.component = releases.component
      AND d.to_release = releases.id AND d.outcome = 'succeeded');
UPDATE releases SET last_active_at = COALESCE(last_active_at, stored_at)
  WHERE EXISTS (SELECT 1 FROM components c WHERE c.name = releases.component
                  AND releases.id IN (c.active, c.previous));
";

/// The first version whose tables have `releases.last_active_at` (see [`unversioned_version`]).
const LAST_ACTIVE_AT_SINCE: i64 = 2;

pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("state.db")
}

/// Where the copy of the database is kept before it is upgraded from schema v`from`.
fn backup_path(db: &Path, from: i64) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(format!(".bak-v{from}"));
    PathBuf::from(name)
}

impl Store {
    /// Opens (creating if needed) the database for the daemon, the single writer, upgrading an
    /// older schema.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        open_migrating(data_dir, MIGRATIONS)
    }

    /// Opens the database read-only (the CLI while the daemon is down). An older schema is read
    /// as it is; a newer one is refused.
    pub fn open_read_only(data_dir: &Path) -> Result<Store, StoreError> {
        let path = db_path(data_dir);
        if !path.exists() {
            return Err(StoreError::Missing(path));
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_error(&path))?;
        let _ = conn.busy_timeout(BUSY_TIMEOUT);
        refuse_newer(&conn, &path, SCHEMA_VERSION)?;
        Ok(Store::from_connection(conn, path))
    }

    /// For a daemon that cannot open the database for writing: read-only, or, when even that
    /// needs room the disk does not have (a WAL database's shared-memory file), immutable (the
    /// last checkpointed state). Marked degraded. A newer schema is refused here too: reading
    /// it would be no safer than writing it.
    pub fn open_degraded(data_dir: &Path) -> Result<Store, StoreError> {
        let store = match Self::open_read_only(data_dir) {
            Err(newer @ StoreError::NewerSchema { .. }) => return Err(newer),
            Ok(store)
                if store
                    .with(|c| c.query_row("SELECT count(*) FROM components", [], |_| Ok(())))
                    .is_ok() =>
            {
                store
            }
            _ => {
                let path = db_path(data_dir);
                let uri = format!("file:{}?immutable=1", path.display());
                let conn = Connection::open_with_flags(
                    &uri,
                    OpenFlags::SQLITE_OPEN_READ_ONLY
                        | OpenFlags::SQLITE_OPEN_URI
                        | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(open_error(&path))?;
                refuse_newer(&conn, &path, SCHEMA_VERSION)?;
                Store::from_connection(conn, path)
            }
        };
        store.mark_degraded();
        Ok(store)
    }

    /// The schema version of the open database: [`SCHEMA_VERSION`] once the daemon has opened
    /// it for writing; older when the CLI or a degraded daemon reads one not yet upgraded (0: a
    /// database written before the schema had a version).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.with(|c| user_version(c))
    }
}

/// [`Store::open`] with the migrations given (the tests' way to run a step that fails).
pub(super) fn open_migrating(data_dir: &Path, migrations: &[&str]) -> Result<Store, StoreError> {
    let path = db_path(data_dir);
    let mut conn = Connection::open(&path).map_err(open_error(&path))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error(&path))?;
    // Before the first write (even the journal mode): a newer database stays exactly as it is.
    refuse_newer(&conn, &path, migrations.len() as i64)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .and_then(|_| conn.pragma_update(None, "synchronous", "FULL"))
        .and_then(|_| conn.pragma_update(None, "foreign_keys", "ON"))
        .map_err(open_error(&path))?;
    migrate(&mut conn, &path, migrations)?;
    Ok(Store::from_connection(conn, path))
}

/// How long a query waits for the other side's write lock (the CLI beside the daemon).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

fn open_error(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    }
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// The database's schema version, unless it is newer than `supported`.
fn refuse_newer(conn: &Connection, path: &Path, supported: i64) -> Result<i64, StoreError> {
    let found = user_version(conn).map_err(open_error(path))?;
    if found > supported {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    Ok(found)
}

/// Whether the database has the column an older cutover did not write.
pub(super) fn has_last_active_at(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare("SELECT 1 FROM pragma_table_info('releases') WHERE name = 'last_active_at'")?
        .exists([])
}

/// The version a database written before the schema had one (user_version 0, every cutover
/// up to this one) is at, told by its shape. With `releases.last_active_at` it has the v2
/// tables. Without, it counts as v0 rather than v1: the cutover that wrote it created its
/// tables on every open, those of its own version, so the v1 step runs again to add any it
/// lacks (all of them in a new file) and leaves the others as they are.
fn unversioned_version(conn: &Connection) -> rusqlite::Result<i64> {
    Ok(if has_last_active_at(conn)? {
        LAST_ACTIVE_AT_SINCE
    } else {
        0
    })
}

/// The version to migrate from, or None when the database is at `supported`.
fn pending_from(conn: &Connection, path: &Path, supported: i64) -> Result<Option<i64>, StoreError> {
    let stamped = refuse_newer(conn, path, supported)?;
    if stamped == supported {
        return Ok(None);
    }
    if stamped > 0 {
        return Ok(Some(stamped));
    }
    // An unversioned database at `supported` still gets its version written (and no copy).
    unversioned_version(conn)
        .map(Some)
        .map_err(open_error(path))
}

fn has_tables(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table'")?
        .exists([])
}

/// Brings the database to the last of `migrations`: a copy of it first (unless it is new), then
/// every step and the new version in one transaction, so a failure leaves it as it was.
fn migrate(conn: &mut Connection, path: &Path, migrations: &[&str]) -> Result<(), StoreError> {
    let supported = migrations.len() as i64;
    let Some(from) = pending_from(conn, path, supported)? else {
        return Ok(());
    };
    if from < supported && has_tables(conn).map_err(open_error(path))? {
        back_up(conn, path, from)?;
    }
    let upgrade_error = |from| {
        move |source| StoreError::Upgrade {
            path: path.to_path_buf(),
            from,
            to: supported,
            source: Box::new(source),
        }
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(upgrade_error(from))?;
    // Again under the write lock: another process may have upgraded it since.
    let Some(from) = pending_from(&tx, path, supported)? else {
        return Ok(());
    };
    migrations[from as usize..]
        .iter()
        .try_for_each(|step| tx.execute_batch(step))
        .and_then(|_| tx.pragma_update(None, "user_version", supported))
        .and_then(|_| tx.commit())
        .map_err(upgrade_error(from))
}

/// Keeps a copy of the database as it is before its upgrade from v`from` ([`backup_path`]),
/// written aside and renamed into place, replacing what an earlier upgrade left there.
fn back_up(conn: &Connection, path: &Path, from: i64) -> Result<(), StoreError> {
    let backup = backup_path(path, from);
    let mut partial = backup.clone().into_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let copy = || -> std::io::Result<()> {
        // VACUUM INTO refuses to write over a file, and a crash may have left this one.
        match fs::remove_file(&partial) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let target = partial
            .to_str()
            .ok_or_else(|| std::io::Error::other(format!("{} is not UTF-8", partial.display())))?;
        conn.execute("VACUUM INTO ?1", [target])
            .map_err(std::io::Error::other)?;
        // SQLite does not sync what VACUUM INTO writes.
        File::open(&partial)?.sync_all()?;
        fs::rename(&partial, &backup)?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        File::open(dir.unwrap_or(Path::new(".")))?.sync_all()
    };
    copy().map_err(|source| {
        let _ = fs::remove_file(&partial);
        StoreError::Backup {
            path: path.to_path_buf(),
            backup: backup.clone(),
            from,
            source,
        }
    })
}

#[path = "schema_tests.rs"]
#[cfg(test)]
mod tests;

//! Opening the state database (for the daemon, read-only for the CLI, degraded on a full disk)
//! and its schema, with the upgrade of a database an older cutover wrote.

use super::{Store, StoreError};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(super) const SCHEMA: &str = r#"
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

pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("state.db")
}

impl Store {
    /// Opens (creating if needed) the database for the daemon, the single writer.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let path = db_path(data_dir);
        let mut conn = Connection::open(&path).map_err(open_error(&path))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .and_then(|_| conn.pragma_update(None, "synchronous", "FULL"))
            .and_then(|_| conn.pragma_update(None, "foreign_keys", "ON"))
            .and_then(|_| conn.busy_timeout(BUSY_TIMEOUT))
            .and_then(|_| conn.execute_batch(SCHEMA))
            .and_then(|_| upgrade_schema(&mut conn))
            .map_err(open_error(&path))?;
        Ok(Store::from_connection(conn, path))
    }

    /// Opens the database read-only (the CLI while the daemon is down).
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
        Ok(Store::from_connection(conn, path))
    }

    /// For a daemon that cannot open the database for writing: read-only, or, when even that
    /// needs room the disk does not have (a WAL database's shared-memory file), immutable (the
    /// last checkpointed state). Marked degraded.
    pub fn open_degraded(data_dir: &Path) -> Result<Store, StoreError> {
        let store = match Self::open_read_only(data_dir) {
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
                Store::from_connection(conn, path)
            }
        };
        store.mark_degraded();
        Ok(store)
    }
}

/// How long a query waits for the other side's write lock (the CLI beside the daemon).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

fn open_error(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether the database has the column an older cutover did not write.
pub(super) fn has_last_active_at(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare("SELECT 1 FROM pragma_table_info('releases') WHERE name = 'last_active_at'")?
        .exists([])
}

/// Brings a database written by an older cutover up to this schema (additive changes only).
fn upgrade_schema(conn: &mut Connection) -> rusqlite::Result<()> {
    if has_last_active_at(conn)? {
        return Ok(());
    }
    let tx = conn.transaction()?;
    tx.execute_batch(
        "ALTER TABLE releases ADD COLUMN last_active_at INTEGER;
         -- Releases that a finished deploy or rollback made active, and whatever is committed now.
         UPDATE releases SET last_active_at = (
             SELECT MAX(d.ended_at) FROM deploys d WHERE d.component = releases.component
               AND d.to_release = releases.id AND d.outcome = 'succeeded');
         UPDATE releases SET last_active_at = COALESCE(last_active_at, stored_at)
           WHERE EXISTS (SELECT 1 FROM components c WHERE c.name = releases.component
                           AND releases.id IN (c.active, c.previous));",
    )?;
    tx.commit()
}

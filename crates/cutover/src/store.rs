//! Durable state in SQLite (`data_dir/state.db`, WAL mode). Only this module touches SQLite.
//!
//! The daemon is the single writer. Every phase change of a deploy is committed before the action
//! it announces, so after a crash the daemon can tell where each deploy was (see
//! [`crate::daemon`] recovery). The CLI may open the database read-only while the daemon is down.

use crate::config::ComponentName;
use crate::release::{now_millis, ReleaseId, StoredRelease};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open state database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("state database {}: {source}", path.display())]
    Query {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("no state database at {} yet: nothing has been deployed", .0.display())]
    Missing(PathBuf),
}

impl StoreError {
    /// SQLite could not write for lack of room (SQLITE_FULL) or because the database is open
    /// read-only: the state cannot be recorded, though it can still be read.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Query {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } => matches!(
                e.code,
                rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::ReadOnly
            ),
            _ => false,
        }
    }
}

pub use crate::vocab::{DeployKind, InstanceState, Outcome, Phase};

/// Vocabulary words stored as text columns (CHECK constraints keep them to these words).
trait FromSqlWord: Sized {
    fn from_sql(text: &str) -> rusqlite::Result<Self>;
}

macro_rules! from_sql_word {
    ($($ty:ident),*) => {$(
        impl FromSqlWord for $ty {
            fn from_sql(text: &str) -> rusqlite::Result<Self> {
                $ty::parse(text).ok_or_else(|| rusqlite::Error::InvalidColumnType(
                    0, format!("{}: {text}", stringify!($ty)), rusqlite::types::Type::Text))
            }
        }
    )*};
}

from_sql_word!(Phase, Outcome, DeployKind, InstanceState);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeployRecord {
    pub id: i64,
    pub pipeline_id: Option<i64>,
    pub component: String,
    pub kind: DeployKind,
    pub from_release: Option<String>,
    pub to_release: String,
    pub who: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub phase: Phase,
    pub outcome: Option<Outcome>,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PipelineRecord {
    pub id: i64,
    pub release: String,
    pub components: Vec<String>,
    pub who: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub outcome: Option<Outcome>,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventRecord {
    pub deploy_id: i64,
    pub at: i64,
    pub kind: String,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub id: i64,
    pub component: String,
    pub release: String,
    pub pid: i32,
    /// Process start time in clock ticks since boot (/proc/PID/stat field 22): with the pid it
    /// identifies the process even after the pid is reused.
    pub start_ticks: u64,
    pub port: u16,
    pub log_path: String,
    pub state: InstanceState,
    pub started_at: i64,
}

/// A kept release with its history, as retention and `cutover releases` see it.
#[derive(Clone, Debug)]
pub struct ReleaseRecord {
    pub release: StoredRelease,
    /// When it last became the active release; None if it never was (failed, refused,
    /// rolled back).
    pub last_active_at: Option<i64>,
    /// How the latest finished deploy to it ended.
    pub last_outcome: Option<Outcome>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ComponentState {
    pub active: Option<String>,
    pub previous: Option<String>,
    pub updated_at: Option<i64>,
}

const SCHEMA: &str = r#"
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

/// A handle to the state database; cheap to clone. Calls are short and synchronous: a deploy
/// commits a handful of rows, so a mutex around one connection is simpler than a pool.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// Set when the daemon could not write its state at start-up (a full disk): it serves the
    /// committed releases anyway and records what it can (see [`Store::degraded`]).
    degraded: Arc<std::sync::atomic::AtomicBool>,
}

pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("state.db")
}

impl Store {
    /// Opens (creating if needed) the database for the daemon, the single writer.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let path = db_path(data_dir);
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .and_then(|_| conn.pragma_update(None, "synchronous", "FULL"))
            .and_then(|_| conn.pragma_update(None, "foreign_keys", "ON"))
            .and_then(|_| conn.busy_timeout(std::time::Duration::from_secs(5)))
            .and_then(|_| conn.execute_batch(SCHEMA))
            .and_then(|_| upgrade_schema(&mut conn))
            .map_err(open_err)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            path,
            degraded: Arc::default(),
        })
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
        .map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            path,
            degraded: Arc::default(),
        })
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
                .map_err(|source| StoreError::Open {
                    path: path.clone(),
                    source,
                })?;
                Store {
                    conn: Arc::new(Mutex::new(conn)),
                    path,
                    degraded: Arc::default(),
                }
            }
        };
        store.mark_degraded();
        Ok(store)
    }

    /// Says that the state could not be written at start-up: recovery then serves releases even
    /// when it cannot record their instances.
    pub fn mark_degraded(&self) {
        self.degraded
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn degraded(&self) -> bool {
        self.degraded.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(|source| StoreError::Query {
            path: self.path.clone(),
            source,
        })
    }

    // --- releases --------------------------------------------------------------------------

    pub fn insert_release(&self, release: &StoredRelease) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO releases (component, id, sha256, size, stored_at, kind) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (component, id) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size,
                   stored_at = excluded.stored_at, kind = excluded.kind, pruned_at = NULL",
                params![release.component.as_str(), release.id.as_str(), release.sha256,
                        release.size as i64, release.stored_at,
                        match release.kind { crate::release::ArtifactKind::Bundle => "bundle", crate::release::ArtifactKind::File => "file" }],
            )
            .map(drop)
        })
    }

    pub fn release(&self, component: &str, id: &str) -> Result<Option<StoredRelease>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT component, id, sha256, size, stored_at, kind FROM releases
                 WHERE component = ?1 AND id = ?2 AND pruned_at IS NULL",
                [component, id],
                release_from_row,
            )
            .optional()
        })
    }

    /// Releases some watchdog rollback moved away from, with when it last did: a crash loop's
    /// release is no rollback target until it is activated again.
    pub fn rolled_back_from(
        &self,
        component: &str,
        who: &str,
    ) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT from_release, MAX(ended_at) FROM deploys
                 WHERE component = ?1 AND kind = 'rollback' AND who = ?2 AND outcome = 'succeeded'
                   AND from_release IS NOT NULL GROUP BY from_release",
            )?;
            let rows = stmt.query_map([component, who], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    pub fn mark_pruned(&self, component: &str, id: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE releases SET pruned_at = ?3 WHERE component = ?1 AND id = ?2",
                params![component, id, now_millis()],
            )
            .map(drop)
        })
    }

    // --- components ------------------------------------------------------------------------

    pub fn component_state(&self, component: &str) -> Result<ComponentState, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT active, previous, updated_at FROM components WHERE name = ?1",
                [component],
                |r| {
                    Ok(ComponentState {
                        active: r.get(0)?,
                        previous: r.get(1)?,
                        updated_at: r.get(2)?,
                    })
                },
            )
            .optional()
            .map(Option::unwrap_or_default)
        })
    }

    /// The committed active release of a component, if any (unreadable state counts as none).
    pub fn active_release(&self, component: &str) -> Option<ReleaseId> {
        self.component_state(component)
            .ok()
            .and_then(|s| s.active)
            .and_then(|a| ReleaseId::parse(&a).ok())
    }

    /// Records `active` as the release to run after any restart; the one it replaces becomes
    /// `previous` (the default rollback target).
    pub fn set_active(&self, component: &str, active: &str) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let now = now_millis();
            tx.execute(
                "INSERT INTO components (name, active, previous, updated_at) VALUES (?1, ?2, NULL, ?3)
                 ON CONFLICT (name) DO UPDATE SET
                   previous = CASE WHEN components.active = excluded.active THEN components.previous
                                   ELSE components.active END,
                   active = excluded.active, updated_at = excluded.updated_at",
                params![component, active, now],
            )?;
            // Retention keeps releases that were active before those that never were.
            tx.execute(
                "UPDATE releases SET last_active_at = ?3 WHERE component = ?1 AND id = ?2",
                params![component, active, now],
            )?;
            tx.commit()
        })
    }

    /// Kept releases of a component with what retention and `cutover releases` need: when each
    /// was last active (never: None) and how the last deploy to it ended. Newest first.
    pub fn release_records(&self, component: &str) -> Result<Vec<ReleaseRecord>, StoreError> {
        self.with(|c| {
            // A database of an older cutover, read by the CLI before the new daemon upgraded
            // it, has no such column yet: nothing is known to have been active then.
            let last_active = if has_last_active_at(c)? {
                "last_active_at"
            } else {
                "NULL"
            };
            let mut stmt = c.prepare(&format!(
                "SELECT component, id, sha256, size, stored_at, kind, {last_active},
                   (SELECT outcome FROM deploys d WHERE d.component = r.component AND d.to_release = r.id
                      AND d.outcome IS NOT NULL ORDER BY d.id DESC LIMIT 1)
                 FROM releases r WHERE component = ?1 AND pruned_at IS NULL
                 ORDER BY stored_at DESC, rowid DESC"
            ))?;
            let rows = stmt.query_map([component], |r| {
                Ok(ReleaseRecord {
                    release: release_from_row(r)?,
                    last_active_at: r.get(6)?,
                    last_outcome: opt_enum(r.get::<_, Option<String>>(7)?, Outcome::from_sql)?,
                })
            })?;
            rows.collect()
        })
    }

    // --- pipelines and deploys ---------------------------------------------------------------

    pub fn begin_pipeline(
        &self,
        release: &str,
        components: &[String],
        who: &str,
    ) -> Result<i64, StoreError> {
        let names = serde_json::to_string(components).expect("names serialize");
        self.with(|c| {
            c.execute(
                "INSERT INTO pipelines (release, components, who, started_at) VALUES (?1, ?2, ?3, ?4)",
                params![release, names, who, now_millis()],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    pub fn finish_pipeline(
        &self,
        id: i64,
        outcome: Outcome,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE pipelines SET ended_at = ?2, outcome = ?3, reason = ?4 WHERE id = ?1 AND ended_at IS NULL",
                params![id, now_millis(), outcome.as_str(), reason],
            )
            .map(drop)
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn begin_deploy(
        &self,
        pipeline_id: Option<i64>,
        component: &ComponentName,
        kind: DeployKind,
        from: Option<&ReleaseId>,
        to: &ReleaseId,
        who: &str,
    ) -> Result<i64, StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO deploys (pipeline_id, component, kind, from_release, to_release, who, started_at, phase)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'preparing')",
                params![pipeline_id, component.as_str(), kind.as_str(), from.map(ReleaseId::as_str),
                        to.as_str(), who, now_millis()],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    pub fn set_phase(&self, deploy_id: i64, phase: Phase) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE deploys SET phase = ?2 WHERE id = ?1",
                params![deploy_id, phase.as_str()],
            )
            .map(drop)
        })
    }

    pub fn add_event(&self, deploy_id: i64, kind: &str, message: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO deploy_events (deploy_id, at, kind, message) VALUES (?1, ?2, ?3, ?4)",
                params![deploy_id, now_millis(), kind, message],
            )
            .map(drop)
        })
    }

    pub fn finish_deploy(
        &self,
        deploy_id: i64,
        outcome: Outcome,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE deploys SET ended_at = ?2, outcome = ?3, reason = ?4, phase = 'done'
                 WHERE id = ?1 AND ended_at IS NULL",
                params![deploy_id, now_millis(), outcome.as_str(), reason],
            )
            .map(drop)
        })
    }

    /// Marks every deploy and pipeline still open as interrupted (daemon start-up); returns the
    /// deploys that were open, with the phase they had reached.
    pub fn interrupt_open(&self, reason: &str) -> Result<Vec<DeployRecord>, StoreError> {
        let open = self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "{DEPLOY_SELECT} WHERE ended_at IS NULL ORDER BY id"
            ))?;
            let rows = stmt.query_map([], deploy_from_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        self.with(|c| {
            let tx = c.transaction()?;
            let now = now_millis();
            tx.execute(
                "UPDATE deploys SET ended_at = ?1, outcome = 'interrupted', reason = ?2, phase = 'done'
                 WHERE ended_at IS NULL",
                params![now, reason],
            )?;
            tx.execute(
                "UPDATE pipelines SET ended_at = ?1, outcome = 'interrupted', reason = ?2 WHERE ended_at IS NULL",
                params![now, reason],
            )?;
            tx.commit()
        })?;
        Ok(open)
    }

    pub fn deploys(&self, limit: usize) -> Result<Vec<DeployRecord>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!("{DEPLOY_SELECT} ORDER BY id DESC LIMIT ?1"))?;
            let rows = stmt.query_map([limit as i64], deploy_from_row)?;
            rows.collect()
        })
    }

    pub fn deploy(&self, id: i64) -> Result<Option<DeployRecord>, StoreError> {
        self.with(|c| {
            c.query_row(
                &format!("{DEPLOY_SELECT} WHERE id = ?1"),
                [id],
                deploy_from_row,
            )
            .optional()
        })
    }

    /// The last deploy of `component` that succeeded, to find what was before it.
    pub fn pipelines(&self, limit: usize) -> Result<Vec<PipelineRecord>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, release, components, who, started_at, ended_at, outcome, reason
                 FROM pipelines ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit as i64], |r| {
                let names: String = r.get(2)?;
                Ok(PipelineRecord {
                    id: r.get(0)?,
                    release: r.get(1)?,
                    components: serde_json::from_str(&names).unwrap_or_default(),
                    who: r.get(3)?,
                    started_at: r.get(4)?,
                    ended_at: r.get(5)?,
                    outcome: opt_enum(r.get::<_, Option<String>>(6)?, Outcome::from_sql)?,
                    reason: r.get(7)?,
                })
            })?;
            rows.collect()
        })
    }

    pub fn events(&self, deploy_id: i64) -> Result<Vec<EventRecord>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT deploy_id, at, kind, message FROM deploy_events WHERE deploy_id = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([deploy_id], |r| {
                Ok(EventRecord {
                    deploy_id: r.get(0)?,
                    at: r.get(1)?,
                    kind: r.get(2)?,
                    message: r.get(3)?,
                })
            })?;
            rows.collect()
        })
    }

    // --- instances ---------------------------------------------------------------------------

    pub fn insert_instance(&self, record: &InstanceRecord) -> Result<i64, StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO instances (component, release, pid, start_ticks, port, log_path, state, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![record.component, record.release, record.pid, record.start_ticks as i64,
                        record.port, record.log_path, record.state.as_str(), record.started_at],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    pub fn set_instance_state(&self, id: i64, state: InstanceState) -> Result<(), StoreError> {
        self.with(|c| {
            let stopped_at = (state == InstanceState::Stopped).then(now_millis);
            c.execute(
                "UPDATE instances SET state = ?2, stopped_at = COALESCE(?3, stopped_at) WHERE id = ?1",
                params![id, state.as_str(), stopped_at],
            )
            .map(drop)
        })
    }

    /// Instances not known to be stopped: after a crash, each is adopted or killed.
    pub fn live_instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, component, release, pid, start_ticks, port, log_path, state, started_at
                 FROM instances WHERE state != 'stopped' ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(InstanceRecord {
                    id: r.get(0)?,
                    component: r.get(1)?,
                    release: r.get(2)?,
                    pid: r.get(3)?,
                    start_ticks: r.get::<_, i64>(4)? as u64,
                    port: r.get(5)?,
                    log_path: r.get(6)?,
                    state: InstanceState::from_sql(&r.get::<_, String>(7)?)?,
                    started_at: r.get(8)?,
                })
            })?;
            rows.collect()
        })
    }

    /// The newest instance log of a release (for `cutover logs`).
    pub fn latest_instance(
        &self,
        component: &str,
        release: &str,
    ) -> Result<Option<InstanceRecord>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT id, component, release, pid, start_ticks, port, log_path, state, started_at
                 FROM instances WHERE component = ?1 AND release = ?2 ORDER BY id DESC LIMIT 1",
                [component, release],
                |r| {
                    Ok(InstanceRecord {
                        id: r.get(0)?,
                        component: r.get(1)?,
                        release: r.get(2)?,
                        pid: r.get(3)?,
                        start_ticks: r.get::<_, i64>(4)? as u64,
                        port: r.get(5)?,
                        log_path: r.get(6)?,
                        state: InstanceState::from_sql(&r.get::<_, String>(7)?)?,
                        started_at: r.get(8)?,
                    })
                },
            )
            .optional()
        })
    }
}

/// Brings a database written by an older cutover up to this schema (additive changes only).
fn has_last_active_at(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare("SELECT 1 FROM pragma_table_info('releases') WHERE name = 'last_active_at'")?
        .exists([])
}

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

const DEPLOY_SELECT: &str =
    "SELECT id, pipeline_id, component, kind, from_release, to_release, who,
    started_at, ended_at, phase, outcome, reason FROM deploys";

fn deploy_from_row(r: &Row<'_>) -> rusqlite::Result<DeployRecord> {
    Ok(DeployRecord {
        id: r.get(0)?,
        pipeline_id: r.get(1)?,
        component: r.get(2)?,
        kind: DeployKind::from_sql(&r.get::<_, String>(3)?)?,
        from_release: r.get(4)?,
        to_release: r.get(5)?,
        who: r.get(6)?,
        started_at: r.get(7)?,
        ended_at: r.get(8)?,
        phase: Phase::from_sql(&r.get::<_, String>(9)?)?,
        outcome: opt_enum(r.get::<_, Option<String>>(10)?, Outcome::from_sql)?,
        reason: r.get(11)?,
    })
}

fn release_from_row(r: &Row<'_>) -> rusqlite::Result<StoredRelease> {
    let component: String = r.get(0)?;
    let id: String = r.get(1)?;
    let bad = |e: String| rusqlite::Error::InvalidColumnType(0, e, rusqlite::types::Type::Text);
    Ok(StoredRelease {
        component: ComponentName::parse(&component).map_err(bad)?,
        id: ReleaseId::parse(&id).map_err(bad)?,
        sha256: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        stored_at: r.get(4)?,
        kind: match r.get::<_, String>(5)?.as_str() {
            "bundle" => crate::release::ArtifactKind::Bundle,
            _ => crate::release::ArtifactKind::File,
        },
    })
}

fn opt_enum<T>(
    text: Option<String>,
    parse: fn(&str) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    text.as_deref().map(parse).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ComponentName {
        ComponentName::parse(s).unwrap()
    }
    fn rid(s: &str) -> ReleaseId {
        ReleaseId::parse(s).unwrap()
    }

    #[test]
    fn active_and_previous_follow_switches() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.component_state("backend").unwrap().active.is_none());
        store.set_active("backend", "v1").unwrap();
        store.set_active("backend", "v2").unwrap();
        let state = store.component_state("backend").unwrap();
        assert_eq!(
            (state.active.as_deref(), state.previous.as_deref()),
            (Some("v2"), Some("v1"))
        );
        // Re-activating the same release keeps the rollback target.
        store.set_active("backend", "v2").unwrap();
        assert_eq!(
            store
                .component_state("backend")
                .unwrap()
                .previous
                .as_deref(),
            Some("v1")
        );
    }

    #[test]
    fn open_deploys_are_interrupted_on_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let p = store
            .begin_pipeline("v2", &["backend".into()], "tester")
            .unwrap();
        let d = store
            .begin_deploy(
                Some(p),
                &name("backend"),
                DeployKind::Deploy,
                Some(&rid("v1")),
                &rid("v2"),
                "tester",
            )
            .unwrap();
        store.set_phase(d, Phase::Stabilizing).unwrap();
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        let open = store.interrupt_open("daemon restarted").unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].phase, Phase::Stabilizing);
        let record = store.deploy(d).unwrap().unwrap();
        assert_eq!(record.outcome, Some(Outcome::Interrupted));
        assert_eq!(
            store.pipelines(10).unwrap()[0].outcome,
            Some(Outcome::Interrupted)
        );
        assert!(store.interrupt_open("again").unwrap().is_empty());
    }

    #[test]
    fn a_database_of_an_older_cutover_reads_before_and_after_its_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(db_path(dir.path())).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.execute(
                "INSERT INTO releases (component, id, sha256, size, stored_at) VALUES ('backend', 'v1', ?1, 1, 5)",
                [&"a".repeat(64)],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO components (name, active, updated_at) VALUES ('backend', 'v1', 6)",
                [],
            )
            .unwrap();
        }
        // The CLI reads it while the daemon still runs the old version.
        let old = Store::open_read_only(dir.path()).unwrap();
        let records = old.release_records("backend").unwrap();
        assert_eq!(records[0].last_active_at, None);
        drop(old);
        // The new daemon upgrades it: the committed active release counts as having been active.
        let store = Store::open(dir.path()).unwrap();
        assert!(store.release_records("backend").unwrap()[0]
            .last_active_at
            .is_some());
    }

    #[test]
    fn a_degraded_store_reads_the_committed_state_and_says_writes_fail_for_lack_of_room() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.set_active("backend", "v1").unwrap();
        drop(store);
        let degraded = Store::open_degraded(dir.path()).unwrap();
        assert!(degraded.degraded());
        assert_eq!(degraded.active_release("backend").unwrap().as_str(), "v1");
        let err = degraded.set_active("backend", "v2").unwrap_err();
        assert!(err.is_disk_full(), "{err}");
    }

    #[test]
    fn check_constraints_guard_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bad = store.with(|c| {
            c.execute(
                "INSERT INTO deploys (component, kind, to_release, who, started_at, phase) VALUES ('a', 'yolo', 'v', 'w', 0, 'done')",
                [],
            )
        });
        assert!(bad.is_err());
    }
}

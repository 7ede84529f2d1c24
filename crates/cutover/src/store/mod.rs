//! Durable state in SQLite (`data_dir/state.db`, WAL mode). Only this module touches SQLite.
//!
//! The daemon is the single writer. Every phase change of a deploy is committed before the action
//! it announces, so after a crash the daemon can tell where each deploy was (see
//! [`crate::daemon`] recovery). The CLI may open the database read-only while the daemon is down.
//!
//! `schema.rs` opens the database, brings an older schema up to date and refuses a newer one
//! (the version is SQLite's `user_version`, see [`SCHEMA_VERSION`]); the queries are grouped by
//! table: `releases.rs` (releases and which one each component runs), `deploys.rs` (pipelines,
//! deploys and their events), `instances.rs` (the release processes).

mod daemon_events;
mod deploys;
mod instances;
mod releases;
mod schema;

pub use daemon_events::DaemonEvent;
pub use deploys::{DeployRecord, EventRecord, PipelineRecord};
pub use instances::InstanceRecord;
pub use releases::{ComponentState, ReleaseRecord};
pub use schema::{db_path, SCHEMA_VERSION};

use rusqlite::Connection;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Refused, never opened degraded: this binary does not know what the newer one recorded.
    #[error(
        "the state database {} was written by a newer cutover (schema v{found}; this binary \
         supports up to v{supported}): run the newer cutover, or, to downgrade deliberately, stop \
         the daemon and put back the copy kept before the upgrade ({}.bak-v{supported}, or the \
         newest older .bak-v* beside it; see \"State schema versions\" in ARCHITECTURE.md)",
        path.display(),
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "cannot keep a copy of the state database {} at {} before upgrading it from schema \
         v{from} (nothing was changed): {source}",
        path.display(),
        backup.display()
    )]
    Backup {
        path: PathBuf,
        backup: PathBuf,
        from: i64,
        source: std::io::Error,
    },
    #[error(
        "cannot upgrade the state database {} from schema v{from} to v{to} (nothing was \
         changed): {source}",
        path.display()
    )]
    Upgrade {
        path: PathBuf,
        from: i64,
        to: i64,
        /// Boxed: the versions beside it would make every `StoreError` (and `DeployError`,
        /// which holds one) bigger.
        source: Box<rusqlite::Error>,
    },
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

/// A handle to the state database; cheap to clone. Calls are short and synchronous: a deploy
/// commits a handful of rows, so a mutex around one connection is simpler than a pool.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// Set when the daemon could not write its state at start-up (a full disk): it serves the
    /// committed releases anyway and records what it can (see [`Store::degraded`]).
    degraded: Arc<AtomicBool>,
}

impl Store {
    fn from_connection(conn: Connection, path: PathBuf) -> Store {
        Store {
            conn: Arc::new(Mutex::new(conn)),
            path,
            degraded: Arc::default(),
        }
    }

    /// Says that the state could not be written at start-up: recovery then serves releases even
    /// when it cannot record their instances.
    pub fn mark_degraded(&self) {
        self.degraded.store(true, Ordering::SeqCst);
    }

    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::SeqCst)
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
}

fn opt_enum<T>(
    text: Option<String>,
    parse: fn(&str) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    text.as_deref().map(parse).transpose()
}

#[cfg(test)]
mod tests;

//! The release processes the daemon started (`instances`), so a restarted daemon can adopt or
//! stop them.

use super::{FromSqlWord, InstanceState, Store, StoreError};
use crate::release::now_millis;
use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

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

impl Store {
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
            let mut stmt = c.prepare(&format!(
                "{INSTANCE_SELECT} WHERE state != 'stopped' ORDER BY id"
            ))?;
            let rows = stmt.query_map([], instance_from_row)?;
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
                &format!(
                    "{INSTANCE_SELECT} WHERE component = ?1 AND release = ?2 ORDER BY id DESC LIMIT 1"
                ),
                [component, release],
                instance_from_row,
            )
            .optional()
        })
    }
}

const INSTANCE_SELECT: &str =
    "SELECT id, component, release, pid, start_ticks, port, log_path, state, started_at
    FROM instances";

fn instance_from_row(r: &Row<'_>) -> rusqlite::Result<InstanceRecord> {
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
}

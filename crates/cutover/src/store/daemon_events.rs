//! Changes to the daemon itself (`daemon_events`): reloads and upgrades, with who asked and
//! what changed, shown by `cutover history`.

use super::{Store, StoreError};
use crate::release::now_millis;
use rusqlite::params;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DaemonEvent {
    pub id: i64,
    pub at: i64,
    /// `reload` or `upgrade`.
    pub kind: String,
    pub who: String,
    pub summary: String,
}

impl Store {
    pub fn record_daemon_event(
        &self,
        kind: &str,
        who: &str,
        summary: &str,
    ) -> Result<i64, StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO daemon_events (at, kind, who, summary) VALUES (?1, ?2, ?3, ?4)",
                params![now_millis(), kind, who, summary],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// The latest `limit`, newest first.
    pub fn daemon_events(&self, limit: usize) -> Result<Vec<DaemonEvent>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, at, kind, who, summary FROM daemon_events ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map(params![limit as i64], |r| {
                Ok(DaemonEvent {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    kind: r.get(2)?,
                    who: r.get(3)?,
                    summary: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }
}

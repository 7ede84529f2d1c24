//! Pipelines, the deploys in them and their events (`pipelines`, `deploys`, `deploy_events`).

use super::{opt_enum, DeployKind, FromSqlWord, Outcome, Phase, Store, StoreError};
use crate::config::ComponentName;
use crate::release::{now_millis, ReleaseId};
use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

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

impl Store {
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

    /// The newest `limit` pipelines, newest first.
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

//! The operator side's record of fleet runs: one SQLite file (`[fleet] history`, default
//! `$XDG_STATE_HOME/cutover/fleet.sqlite`). Each host's daemon keeps its own history as for any
//! deploy; the run id, passed to each host as part of `--who`, ties them together.
//!
//! A run is written when it starts and each host when it finishes, so a killed `cutover fleet
//! deploy` leaves a run without an end, which `cutover fleet history` shows as such.

use super::plan::{HostOutcome, RunOutcome};
use rusqlite::{params, Connection};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SCHEMA_VERSION: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("fleet history {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("fleet history {}: cannot create its directory: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("fleet history {}: written by a newer cutover (schema {found}, this one knows {SCHEMA_VERSION})", path.display())]
    Newer { path: PathBuf, found: i64 },
}

/// A run as stored.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    pub id: String,
    /// `deploy` or `rollback`.
    pub kind: String,
    pub release: Option<String>,
    pub components: Vec<String>,
    pub who: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub outcome: Option<RunOutcome>,
    pub reason: Option<String>,
    pub hosts: Vec<HostRecord>,
}

/// One host's part in a run.
#[derive(Clone, Debug, Serialize)]
pub struct HostRecord {
    pub host: String,
    pub wave: usize,
    pub outcome: HostOutcome,
    pub detail: Option<String>,
    /// Each component's release before the run.
    pub from: Vec<(String, Option<String>)>,
    pub started_at: Option<i64>,
    pub finished_at: i64,
}

pub struct History {
    conn: Connection,
    path: PathBuf,
}

impl History {
    /// `$XDG_STATE_HOME/cutover/fleet.sqlite`, else `~/.local/state/cutover/fleet.sqlite`.
    pub fn default_path() -> PathBuf {
        std::env::var_os("XDG_STATE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("state"))
            })
            .unwrap_or_else(std::env::temp_dir)
            .join("cutover")
            .join("fleet.sqlite")
    }

    pub fn open(path: &Path) -> Result<History, HistoryError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| HistoryError::Dir {
                path: path.to_owned(),
                source,
            })?;
        }
        let err = |source| HistoryError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        if found > SCHEMA_VERSION {
            return Err(HistoryError::Newer {
                path: path.to_owned(),
                found,
            });
        }
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             BEGIN;
             CREATE TABLE IF NOT EXISTS fleet_runs (
                 id TEXT PRIMARY KEY,
                 kind TEXT NOT NULL,
                 release TEXT,
                 components TEXT NOT NULL,
                 who TEXT NOT NULL,
                 started_at INTEGER NOT NULL,
                 finished_at INTEGER,
                 outcome TEXT,
                 reason TEXT
             );
             CREATE TABLE IF NOT EXISTS fleet_hosts (
                 run_id TEXT NOT NULL REFERENCES fleet_runs(id),
                 host TEXT NOT NULL,
                 wave INTEGER NOT NULL,
                 outcome TEXT NOT NULL,
                 detail TEXT,
                 from_releases TEXT NOT NULL,
                 started_at INTEGER,
                 finished_at INTEGER NOT NULL,
                 PRIMARY KEY (run_id, host)
             );
             PRAGMA user_version = 1;
             COMMIT;",
        )
        .map_err(err)?;
        Ok(History {
            conn,
            path: path.to_owned(),
        })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> HistoryError + '_ {
        |source| HistoryError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    pub fn start_run(&self, run: &RunRecord) -> Result<(), HistoryError> {
        self.conn
            .execute(
                "INSERT INTO fleet_runs (id, kind, release, components, who, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    run.id,
                    run.kind,
                    run.release,
                    json(&run.components),
                    run.who,
                    run.started_at
                ],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// Records (or replaces: a rollback after the host's deploy) one host's part.
    pub fn record_host(&self, run_id: &str, host: &HostRecord) -> Result<(), HistoryError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO fleet_hosts
                 (run_id, host, wave, outcome, detail, from_releases, started_at, finished_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    run_id,
                    host.host,
                    host.wave as i64,
                    json(&host.outcome).trim_matches('"'),
                    host.detail,
                    json(&host.from),
                    host.started_at,
                    host.finished_at
                ],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    pub fn finish_run(
        &self,
        run_id: &str,
        outcome: RunOutcome,
        reason: Option<&str>,
        finished_at: i64,
    ) -> Result<(), HistoryError> {
        self.conn
            .execute(
                "UPDATE fleet_runs SET outcome = ?2, reason = ?3, finished_at = ?4 WHERE id = ?1",
                params![run_id, outcome.label(), reason, finished_at],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// The newest runs first, each with its hosts in deploy order.
    pub fn recent(&self, limit: usize) -> Result<Vec<RunRecord>, HistoryError> {
        let mut runs = self
            .conn
            .prepare(
                "SELECT id, kind, release, components, who, started_at, finished_at, outcome, reason
                 FROM fleet_runs ORDER BY started_at DESC, id DESC LIMIT ?1",
            )
            .map_err(self.err())?
            .query_map([limit as i64], |r| {
                Ok(RunRecord {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    release: r.get(2)?,
                    components: parse(&r.get::<_, String>(3)?).unwrap_or_default(),
                    who: r.get(4)?,
                    started_at: r.get(5)?,
                    finished_at: r.get(6)?,
                    outcome: r
                        .get::<_, Option<String>>(7)?
                        .and_then(parse_word),
                    reason: r.get(8)?,
                    hosts: Vec::new(),
                })
            })
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        for run in &mut runs {
            run.hosts = self.hosts_of(&run.id)?;
        }
        Ok(runs)
    }

    fn hosts_of(&self, run_id: &str) -> Result<Vec<HostRecord>, HistoryError> {
        self.conn
            .prepare(
                "SELECT host, wave, outcome, detail, from_releases, started_at, finished_at
                 FROM fleet_hosts WHERE run_id = ?1 ORDER BY wave, finished_at",
            )
            .map_err(self.err())?
            .query_map([run_id], |r| {
                Ok(HostRecord {
                    host: r.get(0)?,
                    wave: r.get::<_, i64>(1)? as usize,
                    outcome: parse_word(r.get(2)?).unwrap_or(HostOutcome::Failed),
                    detail: r.get(3)?,
                    from: parse(&r.get::<_, String>(4)?).unwrap_or_default(),
                    started_at: r.get(5)?,
                    finished_at: r.get(6)?,
                })
            })
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())
    }
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// A unit variant stored as its serde name (`rolled_back`).
fn parse_word<T: serde::de::DeserializeOwned>(word: String) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(word)).ok()
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
    serde_json::from_str(text).ok()
}

/// A run id unique across operators without coordination: time, then randomness.
pub fn new_run_id() -> String {
    let mut bytes = [0u8; 3];
    let _ = getrandom::getrandom(&mut bytes);
    let t = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let compact: String = t.chars().filter(|c| c.is_ascii_digit()).take(14).collect();
    format!(
        "{}-{}",
        compact,
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_without_an_end_is_kept_with_the_hosts_that_finished() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::open(&dir.path().join("state/fleet.sqlite")).unwrap();
        let run = RunRecord {
            id: "r1".into(),
            kind: "deploy".into(),
            release: Some("v2".into()),
            components: vec!["backend".into()],
            who: "ci".into(),
            started_at: 1,
            finished_at: None,
            outcome: None,
            reason: None,
            hosts: Vec::new(),
        };
        history.start_run(&run).unwrap();
        history
            .record_host(
                "r1",
                &HostRecord {
                    host: "web1".into(),
                    wave: 1,
                    outcome: HostOutcome::Succeeded,
                    detail: None,
                    from: vec![("backend".into(), Some("v1".into()))],
                    started_at: Some(2),
                    finished_at: 3,
                },
            )
            .unwrap();
        let runs = history.recent(10).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].finished_at, None);
        assert_eq!(runs[0].hosts[0].outcome, HostOutcome::Succeeded);
        assert_eq!(runs[0].hosts[0].from[0].1.as_deref(), Some("v1"));

        history
            .finish_run("r1", RunOutcome::RolledBack, Some("web2 failed"), 9)
            .unwrap();
        let runs = history.recent(10).unwrap();
        assert_eq!(runs[0].outcome, Some(RunOutcome::RolledBack));
    }
}

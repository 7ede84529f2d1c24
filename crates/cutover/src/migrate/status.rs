//! `migrate status`: the database's migration state beside the files, read without a lock.

use super::files::Migrations;
use super::session::{Recorded, Session};
use super::{MigrateError, Options};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

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

pub(super) fn changed_files(
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

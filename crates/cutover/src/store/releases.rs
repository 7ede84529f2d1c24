//! Stored releases and which one each component runs (`releases`, `components`).

use super::schema::has_last_active_at;
use super::{opt_enum, FromSqlWord, Outcome, Store, StoreError};
use crate::config::ComponentName;
use crate::release::{now_millis, ReleaseId, StoredRelease};
use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

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

impl Store {
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

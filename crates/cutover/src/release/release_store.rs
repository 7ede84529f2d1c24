//! [`ReleaseStore`]: building a release under a staging name and renaming it into place,
//! reading it back, removing it, and sweeping what a crash left.

use super::artifact::check_source;
use super::durable::{copy_hashing, hex, sha256_file, sync_dir, write_synced};
use super::{io_err, now_millis, ArtifactKind, ReleaseError, ReleaseId, StoredRelease};
use crate::config::ComponentName;
use sha2::{Digest, Sha256};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The directory tree of stored releases. Only this type writes under `releases/`.
#[derive(Clone, Debug)]
pub struct ReleaseStore {
    root: PathBuf,
    bundle_limits: crate::bundle::Limits,
}

impl ReleaseStore {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("releases"),
            bundle_limits: crate::bundle::Limits::default(),
        }
    }

    /// The most a bundle may unpack to (`[daemon] bundle_max_size` / `bundle_max_entries`).
    pub fn with_bundle_limits(mut self, limits: crate::bundle::Limits) -> Self {
        self.bundle_limits = limits;
        self
    }

    pub fn release_dir(&self, component: &ComponentName, id: &ReleaseId) -> PathBuf {
        self.root.join(component.as_str()).join(id.as_str())
    }

    pub fn artifact_path(&self, component: &ComponentName, id: &ReleaseId) -> PathBuf {
        self.release_dir(component, id).join("artifact")
    }

    pub fn logs_dir(&self, component: &ComponentName, id: &ReleaseId) -> PathBuf {
        self.release_dir(component, id).join("logs")
    }

    /// The unpacked tree of a bundle release.
    pub fn bundle_dir(&self, component: &ComponentName, id: &ReleaseId) -> PathBuf {
        self.release_dir(component, id).join("bundle")
    }

    /// The sha256 manifest of a bundle release, by relative path.
    pub fn manifest(
        &self,
        component: &ComponentName,
        id: &ReleaseId,
    ) -> Result<std::collections::BTreeMap<String, String>, ReleaseError> {
        let path = self.release_dir(component, id).join("manifest.json");
        let text = fs::read(&path).map_err(io_err("read", &path))?;
        parse_json(&path, &text)
    }

    /// Records a release that has no files here (a hook component's release lives elsewhere).
    pub fn store_metadata_only(
        &self,
        component: &ComponentName,
        id: &ReleaseId,
    ) -> Result<StoredRelease, ReleaseError> {
        let tmp = self.staging_dir(component, id)?;
        let release = StoredRelease {
            component: component.clone(),
            id: id.clone(),
            sha256: hex(&Sha256::digest(b"")),
            size: 0,
            stored_at: now_millis(),
            kind: ArtifactKind::File,
        };
        discard_on_error(&tmp, self.publish(&tmp, &release))?;
        Ok(release)
    }

    /// Stores a bundle (tar, tar.gz or directory) as release `id`, unpacked. The same content
    /// under the same id again is a no-op; different content is refused.
    pub fn store_bundle(
        &self,
        component: &ComponentName,
        id: &ReleaseId,
        source: &Path,
    ) -> Result<StoredRelease, ReleaseError> {
        if !source.exists() {
            return Err(ReleaseError::Missing(source.to_owned()));
        }
        let tmp = self.staging_dir(component, id)?;
        let release = discard_on_error(&tmp, self.fill_bundle(component, id, source, &tmp))?;
        let stored = self.already_stored(component, id, || Ok(release.sha256.clone()));
        if let Some(existing) = discard_on_error(&tmp, stored)? {
            let _ = fs::remove_dir_all(&tmp);
            return Ok(existing);
        }
        discard_on_error(&tmp, self.publish(&tmp, &release))?;
        Ok(release)
    }

    fn fill_bundle(
        &self,
        component: &ComponentName,
        id: &ReleaseId,
        source: &Path,
        tmp: &Path,
    ) -> Result<StoredRelease, ReleaseError> {
        let size = crate::bundle::unpack(source, &tmp.join("bundle"), self.bundle_limits)?;
        let manifest = crate::bundle::manifest(&tmp.join("bundle"))?;
        let release = StoredRelease {
            component: component.clone(),
            id: id.clone(),
            sha256: crate::bundle::tree_sha256(&manifest),
            size,
            stored_at: now_millis(),
            kind: ArtifactKind::Bundle,
        };
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        write_synced(&tmp.join("manifest.json"), &json, 0o644)?;
        Ok(release)
    }

    /// Reads the metadata of a stored release, failing if it is not (fully) stored.
    pub fn get(
        &self,
        component: &ComponentName,
        id: &ReleaseId,
    ) -> Result<StoredRelease, ReleaseError> {
        let meta = self.release_dir(component, id).join("release.json");
        let text = match fs::read(&meta) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ReleaseError::NotStored {
                    component: component.clone(),
                    id: id.clone(),
                })
            }
            Err(e) => return Err(io_err("read", &meta)(e)),
        };
        parse_json(&meta, &text)
    }

    /// Stores `source` as release `id`. Storing the same bytes again under the same id is a
    /// no-op (a retried deploy); different bytes under a stored id are refused.
    pub fn store_file(
        &self,
        component: &ComponentName,
        id: &ReleaseId,
        source: &Path,
        must_be_runnable: bool,
    ) -> Result<StoredRelease, ReleaseError> {
        check_source(source, must_be_runnable)?;
        if let Some(existing) = self.already_stored(component, id, || sha256_file(source))? {
            return Ok(existing);
        }

        let tmp = self.staging_dir(component, id)?;
        // A copy cut short (a full disk) must not stay behind and keep the disk full.
        discard_on_error(
            &tmp,
            (|| {
                let (sha256, size) = copy_hashing(source, &tmp.join("artifact"))?;
                let release = StoredRelease {
                    component: component.clone(),
                    id: id.clone(),
                    sha256,
                    size,
                    stored_at: now_millis(),
                    kind: ArtifactKind::File,
                };
                self.publish(&tmp, &release)?;
                Ok(release)
            })(),
        )
    }

    /// Release `id` as stored already, if its content is the same (a retried deploy: storing
    /// it again is a no-op); an error if different content is stored under that id. The new
    /// content's sha256 is computed only when there is something to compare it with.
    fn already_stored(
        &self,
        component: &ComponentName,
        id: &ReleaseId,
        new_sha256: impl FnOnce() -> Result<String, ReleaseError>,
    ) -> Result<Option<StoredRelease>, ReleaseError> {
        let Ok(existing) = self.get(component, id) else {
            return Ok(None);
        };
        let new = new_sha256()?;
        if existing.sha256 == new {
            return Ok(Some(existing));
        }
        Err(ReleaseError::Conflict {
            component: component.clone(),
            id: id.clone(),
            stored: existing.sha256,
            new,
        })
    }

    /// Removes what a store or a prune cut short by a crash left: the `.tmp-*` staging and
    /// `.trash-*` directories this store creates, and nothing else. Run at daemon start-up, when
    /// no store is in progress.
    pub fn sweep_leftovers(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        let Ok(components) = fs::read_dir(&self.root) else {
            return removed;
        };
        for component in components.flatten() {
            let Ok(entries) = fs::read_dir(component.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let ours = name.starts_with(".tmp-") || name.starts_with(".trash-");
                if ours && entry.file_type().is_ok_and(|t| t.is_dir()) {
                    match fs::remove_dir_all(entry.path()) {
                        Ok(()) => removed.push(entry.path()),
                        Err(e) => tracing::warn!("cannot remove {}: {e}", entry.path().display()),
                    }
                }
            }
        }
        removed
    }

    /// A fresh, empty directory beside where release `id` will live, to build it in.
    fn staging_dir(
        &self,
        component: &ComponentName,
        id: &ReleaseId,
    ) -> Result<PathBuf, ReleaseError> {
        let parent = self.root.join(component.as_str());
        fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
        let tmp = parent.join(format!(".tmp-{}-{}", id, std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err("remove", &tmp))?;
        }
        fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
        Ok(tmp)
    }

    /// Writes `release.json` and `logs/` into a staged release, fsyncs it and renames it into
    /// place: the release appears whole or not at all.
    fn publish(&self, tmp: &Path, release: &StoredRelease) -> Result<(), ReleaseError> {
        let json = serde_json::to_vec_pretty(release).expect("release metadata serializes");
        write_synced(&tmp.join("release.json"), &json, 0o644)?;
        fs::create_dir(tmp.join("logs")).map_err(io_err("create", tmp))?;
        sync_dir(tmp)?;
        let dest = self.release_dir(&release.component, &release.id);
        fs::rename(tmp, &dest).map_err(io_err("rename into place", &dest))?;
        sync_dir(dest.parent().expect("a release dir has a parent"))
    }

    /// Removes a stored release. The directory is first renamed away, so the store never shows
    /// a half-deleted release.
    pub fn remove(&self, component: &ComponentName, id: &ReleaseId) -> Result<(), ReleaseError> {
        let dir = self.release_dir(component, id);
        let trash = self
            .root
            .join(component.as_str())
            .join(format!(".trash-{id}"));
        match fs::rename(&dir, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("remove", &dir)(e)),
        }
        fs::remove_dir_all(&trash).map_err(io_err("remove", &trash))
    }
}

/// Removes a staging directory when building the release in it failed.
fn discard_on_error<T>(tmp: &Path, result: Result<T, ReleaseError>) -> Result<T, ReleaseError> {
    if result.is_err() {
        let _ = fs::remove_dir_all(tmp);
    }
    result
}

/// The JSON a release directory holds (`release.json`, `manifest.json`), read back.
fn parse_json<T: serde::de::DeserializeOwned>(path: &Path, text: &[u8]) -> Result<T, ReleaseError> {
    serde_json::from_slice(text)
        .map_err(|e| io_err("parse", path)(io::Error::new(io::ErrorKind::InvalidData, e)))
}

//! The release store: immutable artifacts under `data_dir/releases/<component>/<release-id>/`.
//!
//! A release directory is built under a temporary name, fsynced, then renamed into place, so a
//! crash never leaves a half-written release under a real name. Layout of one release:
//!
//! ```text
//! releases/backend/v2/
//!   artifact        the stored executable (mode 0755)
//!   release.json    id, sha256, size, stored time
//!   logs/           one log file per instance of this release (not part of the artifact)
//! ```

use crate::config::ComponentName;
use serde::{de, Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A release identifier, usually a commit SHA or a version; safe to use as a directory name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ReleaseId(String);

impl ReleaseId {
    pub fn parse(text: &str) -> Result<Self, String> {
        let ok = !text.is_empty()
            && text.len() <= 64
            && text.starts_with(|c: char| c.is_ascii_alphanumeric())
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "invalid release id {text:?}: use 1-64 characters A-Z, a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ReleaseId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ReleaseId::parse(&text).map_err(de::Error::custom)
    }
}

/// What a release holds: one executable file, or an unpacked tree (bundle or static site).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    #[default]
    File,
    Bundle,
}

/// Metadata of a stored release, as kept in `release.json` and in the state database.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredRelease {
    pub component: ComponentName,
    pub id: ReleaseId,
    /// Of the file, or for a bundle of its sorted file manifest (see [`crate::bundle::tree_sha256`]).
    pub sha256: String,
    pub size: u64,
    /// Unix time in milliseconds.
    pub stored_at: i64,
    #[serde(default)]
    pub kind: ArtifactKind,
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("artifact {} does not exist", .0.display())]
    Missing(PathBuf),
    #[error("artifact {} is not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("artifact {} is empty", .0.display())]
    Empty(PathBuf),
    #[error("artifact {} is not executable (mode {mode:o}); run `chmod +x` on it", path.display())]
    NotExecutable { path: PathBuf, mode: u32 },
    #[error("artifact {} is built for {found}, but this machine is {expected}", path.display())]
    WrongMachine {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("artifact {} is neither an ELF executable nor a script with a #! line", .0.display())]
    NotRunnable(PathBuf),
    #[error(
        "release {id} of {component} is already stored with sha256 {stored}, but this artifact has sha256 {new}; use a new release id"
    )]
    Conflict {
        component: ComponentName,
        id: ReleaseId,
        stored: String,
        new: String,
    },
    #[error("release {id} of {component} is not in the release store")]
    NotStored {
        component: ComponentName,
        id: ReleaseId,
    },
    #[error("{0}")]
    Bundle(#[from] crate::bundle::BundleError),
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ReleaseError + 'a {
    move |source| ReleaseError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

pub use crate::vocab::now_millis;

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
        serde_json::from_slice(&text)
            .map_err(|e| io_err("parse", &path)(io::Error::new(io::ErrorKind::InvalidData, e)))
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
        if let Ok(existing) = self.get(component, id) {
            let _ = fs::remove_dir_all(&tmp);
            if existing.sha256 == release.sha256 {
                return Ok(existing);
            }
            return Err(ReleaseError::Conflict {
                component: component.clone(),
                id: id.clone(),
                stored: existing.sha256,
                new: release.sha256,
            });
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
        serde_json::from_slice(&text)
            .map_err(|e| io_err("parse", &meta)(io::Error::new(io::ErrorKind::InvalidData, e)))
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
        if let Ok(existing) = self.get(component, id) {
            let new_sha = sha256_file(source)?;
            if existing.sha256 == new_sha {
                return Ok(existing);
            }
            return Err(ReleaseError::Conflict {
                component: component.clone(),
                id: id.clone(),
                stored: existing.sha256,
                new: new_sha,
            });
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

/// Checks that a program inside a stored bundle can run here (exists, executable, this machine).
pub fn check_program(path: &Path) -> Result<(), ReleaseError> {
    check_source(path, true)
}

fn check_source(source: &Path, must_be_runnable: bool) -> Result<(), ReleaseError> {
    let meta = match fs::metadata(source) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ReleaseError::Missing(source.to_owned()))
        }
        Err(e) => return Err(io_err("inspect", source)(e)),
    };
    if !meta.is_file() {
        return Err(ReleaseError::NotAFile(source.to_owned()));
    }
    if meta.len() == 0 {
        return Err(ReleaseError::Empty(source.to_owned()));
    }
    if !must_be_runnable {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    if mode & 0o111 == 0 {
        return Err(ReleaseError::NotExecutable {
            path: source.to_owned(),
            mode: mode & 0o7777,
        });
    }
    let mut head = [0u8; 20];
    let mut file = File::open(source).map_err(io_err("open", source))?;
    let n = read_up_to(&mut file, &mut head).map_err(io_err("read", source))?;
    check_runnable(source, &head[..n])
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Refuses files the kernel would not run here: a foreign ELF (another architecture or word
/// size) or something that is neither ELF nor a `#!` script. Checked before anything starts,
/// so the error says "built for aarch64" instead of "exec format error" in a log.
fn check_runnable(path: &Path, head: &[u8]) -> Result<(), ReleaseError> {
    if head.starts_with(b"#!") {
        return Ok(());
    }
    if head.len() < 20 || &head[..4] != b"\x7fELF" {
        return Err(ReleaseError::NotRunnable(path.to_owned()));
    }
    let class = head[4];
    let little_endian = head[5] == 1;
    let machine = if little_endian {
        u16::from_le_bytes([head[18], head[19]])
    } else {
        u16::from_be_bytes([head[18], head[19]])
    };
    let found = describe_elf(class, machine);
    let expected = describe_elf(host_elf_class(), host_elf_machine());
    if class != host_elf_class()
        || machine != host_elf_machine()
        || little_endian != cfg!(target_endian = "little")
    {
        return Err(ReleaseError::WrongMachine {
            path: path.to_owned(),
            found,
            expected,
        });
    }
    Ok(())
}

fn host_elf_class() -> u8 {
    if cfg!(target_pointer_width = "64") {
        2
    } else {
        1
    }
}

fn host_elf_machine() -> u16 {
    match std::env::consts::ARCH {
        "x86" => 3,
        "arm" => 40,
        "x86_64" => 62,
        "aarch64" => 183,
        "riscv64" | "riscv32" => 243,
        "powerpc64" => 21,
        "s390x" => 22,
        _ => 0,
    }
}

fn describe_elf(class: u8, machine: u16) -> String {
    let arch = match machine {
        3 => "x86",
        40 => "arm",
        62 => "x86_64",
        183 => "aarch64",
        243 => "riscv",
        21 => "powerpc64",
        22 => "s390x",
        other => return format!("ELF machine {other}"),
    };
    let bits = if class == 2 { "64-bit" } else { "32-bit" };
    format!("{arch} ({bits})")
}

pub fn sha256_file(path: &Path) -> Result<String, ReleaseError> {
    let mut file = File::open(path).map_err(io_err("open", path))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(io_err("read", path))?;
    Ok(hex(&hasher.finalize()))
}

fn copy_hashing(source: &Path, dest: &Path) -> Result<(String, u64), ReleaseError> {
    let mut input = File::open(source).map_err(io_err("open", source))?;
    let mut output = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(dest)
        .map_err(io_err("create", dest))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(io_err("read", source))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n]).map_err(io_err("write", dest))?;
        size += n as u64;
    }
    output.sync_all().map_err(io_err("fsync", dest))?;
    Ok((hex(&hasher.finalize()), size))
}

fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ReleaseError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err("create", path))?;
    file.write_all(bytes).map_err(io_err("write", path))?;
    file.sync_all().map_err(io_err("fsync", path))
}

fn sync_dir(dir: &Path) -> Result<(), ReleaseError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))
}

/// Removes a staging directory when building the release in it failed.
fn discard_on_error<T>(tmp: &Path, result: Result<T, ReleaseError>) -> Result<T, ReleaseError> {
    if result.is_err() {
        let _ = fs::remove_dir_all(tmp);
    }
    result
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component() -> ComponentName {
        ComponentName::parse("backend").unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn release_ids_are_path_safe() {
        assert!(ReleaseId::parse("3f9c2e1").is_ok());
        assert!(ReleaseId::parse("v1.2.3-rc_1").is_ok());
        for bad in ["", "..", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(ReleaseId::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn stores_atomically_and_is_idempotent_for_same_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ReleaseStore::new(tmp.path());
        let src = write(tmp.path(), "api", b"#!/bin/sh\necho hi\n", 0o755);
        let id = ReleaseId::parse("v1").unwrap();
        let stored = store.store_file(&component(), &id, &src, true).unwrap();
        assert_eq!(stored.size, 18);
        assert_eq!(stored.sha256, sha256_file(&src).unwrap());
        assert_eq!(store.get(&component(), &id).unwrap(), stored);
        let again = store.store_file(&component(), &id, &src, true).unwrap();
        assert_eq!(again, stored);
        let mode = fs::metadata(store.artifact_path(&component(), &id))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        // No temporary directories are left behind.
        let names: Vec<_> = fs::read_dir(tmp.path().join("releases/backend"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["v1"]);

        let other = write(tmp.path(), "api2", b"#!/bin/sh\necho other\n", 0o755);
        let err = store
            .store_file(&component(), &id, &other, true)
            .unwrap_err();
        assert!(matches!(err, ReleaseError::Conflict { .. }), "{err}");
    }

    #[test]
    fn refuses_bad_artifacts_with_reasons() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ReleaseStore::new(tmp.path());
        let id = ReleaseId::parse("v1").unwrap();
        let check = |path: &Path| {
            store
                .store_file(&component(), &id, path, true)
                .unwrap_err()
                .to_string()
        };

        assert!(check(&tmp.path().join("nope")).ends_with("does not exist"));
        assert!(check(&write(tmp.path(), "empty", b"", 0o755)).ends_with("is empty"));
        assert!(check(&write(tmp.path(), "noexec", b"#!/bin/sh\n", 0o644))
            .contains("is not executable (mode 644)"));
        assert!(check(&write(
            tmp.path(),
            "text",
            b"hello world, not a program",
            0o755
        ))
        .contains("neither an ELF executable nor a script"));

        let mut arm = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0".to_vec();
        let foreign = if std::env::consts::ARCH == "aarch64" {
            62u16
        } else {
            183u16
        };
        arm.extend_from_slice(&foreign.to_le_bytes());
        arm.extend_from_slice(&[0; 40]);
        let msg = check(&write(tmp.path(), "foreign", &arm, 0o755));
        assert!(
            msg.contains("is built for") && msg.contains("but this machine is"),
            "{msg}"
        );
        assert!(!tmp.path().join("releases/backend/v1").exists());
    }

    #[test]
    fn accepts_this_machines_own_executables() {
        let exe = std::env::current_exe().unwrap();
        let mut head = [0u8; 20];
        let n = read_up_to(&mut File::open(&exe).unwrap(), &mut head).unwrap();
        check_runnable(&exe, &head[..n]).unwrap();
    }
}

//! Room on the data_dir's filesystem: a deploy is refused before it copies an artifact that
//! would not fit, and a reserve file keeps a few MiB aside so a full disk never keeps the daemon
//! from opening its state database and serving the committed releases.

use crate::config::Config;
use crate::vocab::human_bytes;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Room always kept free on the data_dir's filesystem after an artifact is stored: the state
/// database, instance logs and the next start need it.
pub const MIN_HEADROOM: u64 = 16 << 20;

/// The reserve file's size: enough for SQLite's WAL and shared-memory files and a few rows.
const RESERVE_BYTES: usize = 8 << 20;

/// What must stay free on the data_dir's filesystem: [`MIN_HEADROOM`], or more where a
/// `[checks] disk` entry on the same filesystem asks for more.
pub fn headroom(config: &Config) -> u64 {
    let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).ok();
    let data_dev = dev(&config.daemon.data_dir);
    config
        .checks
        .disk
        .iter()
        .filter(|check| data_dev.is_some() && dev(&check.path) == data_dev)
        .map(|check| check.min_free)
        .fold(MIN_HEADROOM, u64::max)
}

/// Bytes an artifact will take once stored: a file's size, a directory's files. A tar archive
/// counts as its own size (a compressed one unpacks to more; unpacking stops cleanly if the disk
/// fills and the partial copy is removed).
pub fn artifact_bytes(path: &Path) -> io::Result<u64> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for entry in fs::read_dir(path)? {
        total += artifact_bytes(&entry?.path())?;
    }
    Ok(total)
}

/// What stands between an artifact and the disk.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot stat {}: {source}", path.display())]
    Stat { path: PathBuf, source: nix::Error },
    #[error("not enough disk space: the artifact needs {}, and only {} is free on {} ({} must stay free); free some space first", human_bytes(*needed), human_bytes(*free), data_dir.display(), human_bytes(*headroom))]
    NoRoom {
        needed: u64,
        free: u64,
        data_dir: PathBuf,
        headroom: u64,
    },
    #[error("cannot create the space reserve {}: {source}", path.display())]
    Reserve { path: PathBuf, source: io::Error },
}

/// Bytes available to an unprivileged user on the filesystem holding `path`.
pub fn disk_free(path: &Path) -> Result<u64, DiskError> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(|source| DiskError::Stat {
        path: path.to_owned(),
        source,
    })?;
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

/// Refuses an artifact that would leave less than `headroom` free on the data_dir.
pub fn ensure_room(data_dir: &Path, artifact: &Path, headroom: u64) -> Result<(), DiskError> {
    let Ok(needed) = artifact_bytes(artifact) else {
        return Ok(()); // a missing artifact gets its own, clearer error when it is stored
    };
    let free = disk_free(data_dir)?;
    if free < needed.saturating_add(headroom) {
        return Err(DiskError::NoRoom {
            needed,
            free,
            data_dir: data_dir.to_owned(),
            headroom,
        });
    }
    Ok(())
}

fn reserve_path(data_dir: &Path) -> PathBuf {
    data_dir.join("space-reserve")
}

/// At start-up: when the disk is (nearly) full, gives back the reserve so the state database
/// can be opened and written. Returns what to log, if anything.
pub fn release_reserve_if_full(data_dir: &Path) -> Option<String> {
    let free = disk_free(data_dir).ok()?;
    if free >= RESERVE_BYTES as u64 {
        return None;
    }
    let path = reserve_path(data_dir);
    if fs::remove_file(&path).is_ok() {
        return Some(format!(
            "the disk holding {} is full: released the {} MiB space reserve so the daemon can serve; free some space, deploys are refused until then",
            data_dir.display(),
            RESERVE_BYTES >> 20
        ));
    }
    Some(format!(
        "the disk holding {} is full (and the space reserve is already used); free some space",
        data_dir.display()
    ))
}

/// (Re)creates the reserve when it is missing and the disk has room for it several times over.
pub fn ensure_reserve(data_dir: &Path) -> Result<(), DiskError> {
    let path = reserve_path(data_dir);
    let free = disk_free(data_dir)?;
    if path.exists() || free < (RESERVE_BYTES as u64) * 4 {
        return Ok(());
    }
    // Written, not sparse: a sparse file would reserve nothing.
    let written = fs::File::create(&path).and_then(|mut f| {
        f.write_all(&vec![0u8; RESERVE_BYTES])?;
        f.sync_all()
    });
    written.map_err(|source| {
        let _ = fs::remove_file(&path);
        DiskError::Reserve { path, source }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_count_their_files() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("a/b")).unwrap();
        fs::write(tmp.path().join("a/one"), vec![0u8; 100]).unwrap();
        fs::write(tmp.path().join("a/b/two"), vec![0u8; 23]).unwrap();
        assert_eq!(artifact_bytes(&tmp.path().join("a")).unwrap(), 123);
        assert_eq!(artifact_bytes(&tmp.path().join("a/one")).unwrap(), 100);
    }

    #[test]
    fn refuses_what_would_eat_the_headroom() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("artifact");
        fs::write(&file, b"x").unwrap();
        assert!(ensure_room(tmp.path(), &file, 0).is_ok());
        let err = ensure_room(tmp.path(), &file, u64::MAX / 2)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not enough disk space") && err.contains("free"),
            "{err}"
        );
    }
}

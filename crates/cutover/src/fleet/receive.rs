//! The host side of an upload: `cutover fleet receive --sha256 HEX` reads the artifact from
//! stdin (the ssh channel) into the ssh user's upload cache, and keeps it only if its sha256 is
//! the one the operator computed. `--check` answers whether it is already there, so a rerun of
//! a fleet deploy (or a retry after a cut connection) sends nothing twice.
//!
//! The cache is per user (`$XDG_CACHE_HOME/cutover/uploads`, else `~/.cache/cutover/uploads`):
//! the ssh user is usually not the daemon's, and the deploy that follows is run as the ssh user,
//! whose CLI sends the file to the daemon as `cutover deploy` always does.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Uploads kept in the cache besides the newest: enough for a rerun or a quick redeploy.
const KEEP: usize = 5;

/// What `cutover fleet receive` prints (one JSON object).
#[derive(Debug, Serialize, Deserialize)]
pub struct Received {
    /// Where the artifact is on the host, once it is there.
    pub path: String,
    /// It was there before this call (nothing was read).
    pub present: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("--sha256 must be 64 hex digits, not {0:?}")]
    BadDigest(String),
    #[error(
        "the artifact arrived damaged: {received} bytes with sha256 {actual}, expected {expected}"
    )]
    Mismatch {
        received: u64,
        actual: String,
        expected: String,
    },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// Receives (or, with `check`, looks for) the artifact with digest `sha256`.
pub fn receive(
    sha256: &str,
    executable: bool,
    check: bool,
    input: impl Read,
) -> Result<Received, ReceiveError> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ReceiveError::BadDigest(sha256.to_owned()));
    }
    let sha256 = sha256.to_ascii_lowercase();
    let dir = cache_dir();
    let path = dir.join(format!("{sha256}.artifact"));
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ReceiveError::Io { path, source }
    };
    if path.is_file() && digest_of(&path).map_err(io_err(&path))? == sha256 {
        return Ok(Received {
            path: path.display().to_string(),
            present: true,
        });
    }
    if check {
        return Ok(Received {
            path: path.display().to_string(),
            present: false,
        });
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io_err(&dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".receiving-")
        .tempfile_in(&dir)
        .map_err(io_err(&dir))?;
    let (received, actual) = copy_hashing(input, tmp.as_file_mut()).map_err(io_err(&path))?;
    if actual != sha256 {
        // The temp file goes with `tmp`.
        return Err(ReceiveError::Mismatch {
            received,
            actual,
            expected: sha256,
        });
    }
    let mode = if executable { 0o755 } else { 0o644 };
    let file = tmp.as_file();
    file.set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| file.sync_all())
        .map_err(io_err(&path))?;
    tmp.persist(&path).map_err(|e| ReceiveError::Io {
        path: path.clone(),
        source: e.error,
    })?;
    prune(&dir, &path);
    Ok(Received {
        path: path.display().to_string(),
        present: false,
    })
}

fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("cutover").join("uploads")
}

fn copy_hashing(mut input: impl Read, out: &mut File) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
    Ok((total, hex(&hasher.finalize())))
}

/// sha256 of a file, as lowercase hex.
pub fn digest_of(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Drops all but the newest [`KEEP`] uploads (and the one just received). Only files this
/// command writes are considered: `<64 hex>.artifact`.
fn prune(dir: &Path, keep: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut uploads: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| is_upload_name(&e.file_name().to_string_lossy()))
        .filter(|e| e.path() != keep)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    uploads.sort_by_key(|u| std::cmp::Reverse(u.0));
    for (_, old) in uploads.into_iter().skip(KEEP) {
        let _ = fs::remove_file(old);
    }
}

fn is_upload_name(name: &str) -> bool {
    name.strip_suffix(".artifact")
        .is_some_and(|stem| stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_files_are_pruned() {
        assert!(is_upload_name(&format!("{}.artifact", "a".repeat(64))));
        assert!(!is_upload_name("notes.txt"));
        assert!(!is_upload_name(&format!("{}.artifact", "g".repeat(64))));
        assert!(!is_upload_name(&format!(
            ".receiving-{}.artifact",
            "a".repeat(52)
        )));
    }
}

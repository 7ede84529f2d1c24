//! Artifacts sent over the control socket (`POST /v1/uploads`), so `cutover deploy --artifact
//! ./api` works from any directory even though the hardened daemon cannot see the deployer's
//! home or /tmp. An upload lands in `data_dir/uploads/<id>/<name>`.
//!
//! Only what this daemon received is ever removed: [`Uploads`] remembers each upload it wrote,
//! and removes exactly that upload's own directory, once the pipeline that used it ends, when
//! the deploy naming it is refused, or when nobody deployed it within [`UNUSED_UPLOAD_TTL`]. A
//! path a deployer names itself (`--no-upload`) is never an upload, wherever it points.

use bytes::Buf;
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Largest accepted upload: a deploy artifact, not a disk image.
pub const MAX_UPLOAD_BYTES: u64 = 8 << 30;

/// An upload no deploy has claimed by then is removed (a CLI that died between upload and deploy).
pub const UNUSED_UPLOAD_TTL: Duration = Duration::from_secs(15 * 60);

/// The uploads this daemon received and has not removed yet.
pub struct Uploads {
    dir: PathBuf,
    /// Upload file -> when it arrived and whether a deploy is using it.
    live: Mutex<HashMap<PathBuf, Entry>>,
    next: AtomicU64,
}

struct Entry {
    received: Instant,
    in_use: bool,
}

impl Uploads {
    /// Stale uploads of a previous daemon (interrupted pipelines) go away here: the
    /// directories named as [`Uploads::receive`] names them, and nothing else in `uploads/`
    /// (a deployer may keep files there and deploy them with `--no-upload`).
    pub fn open(data_dir: &Path) -> Uploads {
        let uploads = Self::open_keeping(data_dir);
        let dir = &uploads.dir;
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let ours = entry.file_type().is_ok_and(|t| t.is_dir())
                && entry.file_name().to_str().is_some_and(is_upload_dir_name);
            if ours {
                if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                    tracing::warn!("cannot remove stale upload {}: {e}", entry.path().display());
                }
            }
        }
        uploads
    }

    /// Without removing what is there (a daemon taking over from one still running: those
    /// uploads are the other's).
    pub fn open_keeping(data_dir: &Path) -> Uploads {
        let dir = data_dir.join("uploads");
        Uploads {
            dir,
            live: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Entry>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `path` as used by a deploy if it is one of our uploads not in use yet; a deployer's
    /// own path (or an upload another deploy already uses) is not ours to remove: false.
    pub fn claim(&self, path: &Path) -> bool {
        match self.live().get_mut(path) {
            Some(entry) if !entry.in_use => {
                entry.in_use = true;
                true
            }
            _ => false,
        }
    }

    /// Removes an upload this daemon received (its own `uploads/<id>/` directory); anything
    /// else is left alone.
    pub fn remove(&self, path: &Path) {
        if self.live().remove(path).is_none() {
            return;
        }
        let Some(dir) = path
            .parent()
            .filter(|d| d.parent() == Some(self.dir.as_path()))
        else {
            return;
        };
        if let Err(e) = std::fs::remove_dir_all(dir) {
            tracing::warn!("cannot remove upload {}: {e}", dir.display());
        }
    }

    /// Removes uploads that no deploy claimed within `ttl`.
    pub fn sweep(&self, ttl: Duration) {
        let expired: Vec<PathBuf> = self
            .live()
            .iter()
            .filter(|(_, e)| !e.in_use && e.received.elapsed() >= ttl)
            .map(|(p, _)| p.clone())
            .collect();
        for path in expired {
            tracing::info!("removing upload {} (never deployed)", path.display());
            self.remove(&path);
        }
    }

    /// Streams the request body to a new upload file; the file name and mode come from the
    /// `x-cutover-name` and `x-cutover-mode` headers (so "not executable" is still detected).
    pub async fn receive(&self, req: Request<Incoming>) -> Result<PathBuf, UploadError> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let name = header("x-cutover-name").unwrap_or_else(|| "artifact".into());
        let name = Path::new(&name)
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.starts_with('.'))
            .unwrap_or("artifact")
            .to_owned();
        let mode = stored_mode(header("x-cutover-mode").as_deref());
        let dir = self.dir.join(format!(
            "{}-{}",
            crate::release::now_millis(),
            self.next.fetch_add(1, Ordering::Relaxed)
        ));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| UploadError::io("create", &dir, e))?;
        let path = dir.join(name);
        let written = async {
            write_body(&path, req.into_body()).await?;
            tokio::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .await
                .map_err(|e| UploadError::io("set the mode of", &path, e))
        };
        if let Err(e) = written.await {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(e);
        }
        self.live().insert(
            path.clone(),
            Entry {
                received: Instant::now(),
                in_use: false,
            },
        );
        Ok(path)
    }
}

/// `<millis>-<n>`: the name of a directory [`Uploads::receive`] made.
fn is_upload_dir_name(name: &str) -> bool {
    name.split_once('-').is_some_and(|(ms, n)| {
        [ms, n]
            .iter()
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The mode an upload is stored with: the sender's permission bits without setuid, setgid,
/// sticky or group/world write (an artifact is read and run, never written by others).
fn stored_mode(header: Option<&str>) -> u32 {
    header
        .and_then(|m| u32::from_str_radix(m, 8).ok())
        .unwrap_or(0o644)
        & 0o755
}

/// Why an upload was not kept (its directory is removed).
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("upload interrupted: {0}")]
    Interrupted(hyper::Error),
    #[error("upload larger than {MAX_UPLOAD_BYTES} bytes")]
    TooLarge,
}

impl UploadError {
    fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        UploadError::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }

    /// The sender's fault (400, 413) or ours (500: the disk, say).
    pub fn status(&self) -> http::StatusCode {
        match self {
            UploadError::Io { .. } => http::StatusCode::INTERNAL_SERVER_ERROR,
            UploadError::Interrupted(_) => http::StatusCode::BAD_REQUEST,
            UploadError::TooLarge => http::StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

async fn write_body(path: &Path, mut body: Incoming) -> Result<(), UploadError> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| UploadError::io("create", path, e))?;
    let mut written = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(UploadError::Interrupted)?;
        if let Ok(mut data) = frame.into_data() {
            written += data.remaining() as u64;
            if written > MAX_UPLOAD_BYTES {
                return Err(UploadError::TooLarge);
            }
            while data.has_remaining() {
                let chunk = data.chunk();
                file.write_all(chunk)
                    .await
                    .map_err(|e| UploadError::io("write", path, e))?;
                let n = chunk.len();
                data.advance(n);
            }
        }
    }
    file.sync_all()
        .await
        .map_err(|e| UploadError::io("fsync", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_modes_drop_special_and_write_bits() {
        assert_eq!(stored_mode(Some("7777")), 0o755);
        assert_eq!(stored_mode(Some("0666")), 0o644);
        assert_eq!(stored_mode(Some("755")), 0o755);
        assert_eq!(stored_mode(Some("nonsense")), 0o644);
        assert_eq!(stored_mode(None), 0o644);
    }

    #[test]
    fn start_up_removes_only_directories_it_named() {
        let tmp = tempfile::tempdir().unwrap();
        let uploads = tmp.path().join("uploads");
        for dir in ["1733000000000-0", "1733000000000-12", "mine", "12-", "v1-2"] {
            std::fs::create_dir_all(uploads.join(dir)).unwrap();
        }
        std::fs::write(uploads.join("42-7"), b"a file, not ours").unwrap();
        Uploads::open(tmp.path());
        let mut left: Vec<String> = std::fs::read_dir(&uploads)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["12-", "42-7", "mine", "v1-2"]);
    }

    #[test]
    fn only_registered_uploads_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let uploads = Uploads::open(tmp.path());
        // A deployer's own paths, even inside uploads/ or naming the data dir, are never ours.
        std::fs::create_dir_all(tmp.path().join("uploads/x")).unwrap();
        std::fs::write(tmp.path().join("uploads/x/file"), b"keep").unwrap();
        for foreign in [
            tmp.path().join("uploads"),
            tmp.path().join("uploads/x/file"),
            tmp.path().to_owned(),
        ] {
            assert!(!uploads.claim(&foreign));
            uploads.remove(&foreign);
        }
        assert!(tmp.path().join("uploads/x/file").exists());

        let dir = tmp.path().join("uploads/1-0");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("artifact");
        std::fs::write(&path, b"x").unwrap();
        uploads.live().insert(
            path.clone(),
            Entry {
                received: Instant::now(),
                in_use: false,
            },
        );
        assert!(uploads.claim(&path));
        assert!(!uploads.claim(&path), "one deploy at a time uses an upload");
        uploads.sweep(Duration::ZERO);
        assert!(path.exists(), "an upload in use is not swept");
        uploads.remove(&path);
        assert!(!dir.exists());
        assert!(tmp.path().join("uploads").exists());
    }
}

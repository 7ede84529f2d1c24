//! Artifacts sent over the control socket (`POST /v1/uploads`), so `cutover deploy --artifact
//! ./api` works from any directory even though the hardened daemon cannot see the deployer's
//! home or /tmp. An upload lands in `data_dir/uploads/<id>/<name>` and is removed once the
//! pipeline that used it ends (or at the next daemon start).

use bytes::Buf;
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncWriteExt;

/// Largest accepted upload: a deploy artifact, not a disk image.
pub const MAX_UPLOAD_BYTES: u64 = 8 << 30;

pub fn uploads_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("uploads")
}

/// Stale uploads of a previous daemon (interrupted pipelines) go away at start-up.
pub fn clear(data_dir: &Path) {
    let _ = std::fs::remove_dir_all(uploads_dir(data_dir));
}

/// Whether `path` is an upload, which the pipeline using it may delete afterwards.
pub fn is_upload(data_dir: &Path, path: &Path) -> bool {
    // `starts_with` compares components, and `..` is one: refuse it outright.
    path.starts_with(uploads_dir(data_dir))
        && !path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}

/// Removes the upload directory holding `path`.
pub fn remove(data_dir: &Path, path: &Path) {
    if let (true, Some(dir)) = (is_upload(data_dir, path), path.parent()) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// Streams the request body to a new upload file; the file name and mode come from the
/// `x-cutover-name` and `x-cutover-mode` headers (so "not executable" is still detected).
pub async fn receive(data_dir: &Path, req: Request<Incoming>) -> Result<PathBuf, String> {
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
    let mode = header("x-cutover-mode")
        .and_then(|m| u32::from_str_radix(&m, 8).ok())
        .unwrap_or(0o644)
        & 0o777;
    let dir = uploads_dir(data_dir).join(format!(
        "{}-{}",
        crate::release::now_millis(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(name);
    let result = write_body(&path, req.into_body()).await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_dir_all(&dir).await;
        return Err(e);
    }
    tokio::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .await
        .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
    Ok(path)
}

async fn write_body(path: &Path, mut body: Incoming) -> Result<(), String> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let mut written = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("upload interrupted: {e}"))?;
        if let Ok(mut data) = frame.into_data() {
            written += data.remaining() as u64;
            if written > MAX_UPLOAD_BYTES {
                return Err(format!("upload larger than {MAX_UPLOAD_BYTES} bytes"));
            }
            while data.has_remaining() {
                let chunk = data.chunk();
                file.write_all(chunk)
                    .await
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                let n = chunk.len();
                data.advance(n);
            }
        }
    }
    file.sync_all()
        .await
        .map_err(|e| format!("cannot fsync {}: {e}", path.display()))
}

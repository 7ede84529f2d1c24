//! The files a fleet deploy sends: each artifact as one file (a directory packed as a tar
//! archive, as `cutover deploy` sends one to its daemon) and its sha256, checked on arrival.

use std::path::{Path, PathBuf};

/// The file to send for an artifact (a directory packed as a tar) and its sha256.
pub async fn prepare(path: &Path) -> std::io::Result<(Prepared, String)> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let meta = std::fs::metadata(&path)?;
        let prepared = if meta.is_dir() {
            let tar = tempfile::Builder::new().suffix(".tar").tempfile()?;
            crate::bundle::pack_directory(&path, tar.reopen()?)?;
            Prepared::Packed(tar)
        } else {
            Prepared::File(path)
        };
        let digest = super::receive::digest_of(prepared.path())?;
        Ok((prepared, digest))
    })
    .await
    .map_err(std::io::Error::other)?
}

pub enum Prepared {
    File(PathBuf),
    Packed(tempfile::NamedTempFile),
}

impl Prepared {
    pub fn path(&self) -> &Path {
        match self {
            Prepared::File(p) => p,
            Prepared::Packed(t) => t.path(),
        }
    }
}

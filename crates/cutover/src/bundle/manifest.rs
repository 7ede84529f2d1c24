//! Checksums of an unpacked bundle: per file (ETags) and for the whole tree.

use super::{io_err, BundleError};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::Path;

/// sha256 of every regular file under `dir`, by path relative to it (for ETags, and as the
/// bundle's own checksum).
pub fn manifest(dir: &Path) -> Result<BTreeMap<String, String>, BundleError> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Result<(), BundleError> {
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let path = entry.map_err(io_err("list", dir))?.path();
        let meta = fs::symlink_metadata(&path).map_err(io_err("inspect", &path))?;
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else if meta.is_file() {
            let mut hasher = Sha256::new();
            let mut file = File::open(&path).map_err(io_err("open", &path))?;
            io::copy(&mut file, &mut hasher).map_err(io_err("read", &path))?;
            let relative = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            out.insert(relative, format!("{:x}", hasher.finalize()));
        }
    }
    Ok(())
}

/// One checksum for a whole unpacked tree: sha256 over its sorted manifest.
pub fn tree_sha256(manifest: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for (path, sha) in manifest {
        hasher.update(path.as_bytes());
        hasher.update([0]);
        hasher.update(sha.as_bytes());
        hasher.update([b'\n']);
    }
    format!("{:x}", hasher.finalize())
}

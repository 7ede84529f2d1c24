//! Unpacking bundle artifacts (a tar archive, plain or gzip, or a directory) into the release
//! store, refusing anything that could write or point outside the release.
//!
//! Refused: absolute paths, `..` components, symlinks whose target leaves the release, hard
//! links to outside, devices and FIFOs, and more bytes or entries than [`Limits`] allow.
//! Set-id, sticky and group/world write bits are dropped (files become 0755 or 0644 at most).
//! Hard links stay links. The tar crate parses; the containment rules are ours because
//! `unpack_in` alone still follows pre-existing symlinks.
//!
//! `archive.rs` unpacks tar entries, `directory.rs` copies a directory, both under the rules of
//! `containment.rs` and within the `budget.rs` of [`Limits`]; `manifest.rs` checksums the result; `pack.rs` packs a directory to send it.

mod archive;
mod budget;
mod containment;
mod directory;
mod manifest;
mod pack;

pub use manifest::{manifest, tree_sha256};
pub use pack::pack_directory;

use budget::Budget;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{} is not a tar archive, a .tar.gz or a directory", .0.display())]
    NotABundle(PathBuf),
    #[error("bundle entry {entry:?} is refused: {why}")]
    Unsafe { entry: String, why: &'static str },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{} is empty: a bundle needs at least one file", .0.display())]
    Empty(PathBuf),
    #[error("bundle entry {entry:?} is refused: it is a hard link to {target:?}, {why}")]
    HardLink {
        entry: String,
        target: String,
        why: &'static str,
    },
    /// The program is missing, and the bundle holds nothing but one directory: it was archived
    /// from outside that directory.
    #[error("artifact {} does not exist: the bundle's only top-level entry is the directory {top}/, and {{release_dir}} is the top of the bundle (releases/<component>/<release>/bundle); archive the directory's contents instead (`tar -czf app.tar.gz -C {top} .`){}",
        program.display(),
        suggestion.as_ref().map(|s| format!(" or start `{{release_dir}}/{s}`")).unwrap_or_default())]
    OneTopLevelDirectory {
        program: PathBuf,
        top: String,
        suggestion: Option<String>,
    },
    #[error("{} unpacks to more than {limit} {what} ([daemon] bundle_max_{key} in cutover.toml)", bundle.display())]
    TooLarge {
        bundle: PathBuf,
        limit: String,
        what: &'static str,
        key: &'static str,
    },
}

/// The most one bundle may unpack to (a setting of the daemon's).
pub use crate::config::BundleLimits as Limits;

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BundleError + 'a {
    move |source| BundleError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Whether `source` looks like a bundle (directory or tar) rather than a single executable.
pub fn is_bundle(source: &Path) -> bool {
    if source.is_dir() {
        return true;
    }
    let mut head = [0u8; 262];
    let n = File::open(source)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    is_gzip(&head[..n]) || is_tar(&head[..n])
}

fn is_gzip(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
}

fn is_tar(head: &[u8]) -> bool {
    head.len() >= 262 && &head[257..262] == b"ustar"
}

/// Unpacks `source` into `dest` (which must not exist yet), within `limits`. Returns the bytes
/// written.
pub fn unpack(source: &Path, dest: &Path, limits: Limits) -> Result<u64, BundleError> {
    fs::create_dir_all(dest).map_err(io_err("create", dest))?;
    let mut budget = Budget::new(limits, source);
    if source.is_dir() {
        directory::copy_dir(source, source, dest, &mut budget)?;
    } else {
        let file = File::open(source).map_err(io_err("open", source))?;
        let mut reader = BufReader::new(file);
        let mut head = [0u8; 2];
        let n = reader
            .get_mut()
            .read(&mut head)
            .map_err(io_err("read", source))?;
        let file = File::open(source).map_err(io_err("open", source))?;
        if is_gzip(&head[..n]) {
            archive::unpack_tar(
                tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file))),
                dest,
                &mut budget,
            )?
        } else if is_bundle(source) {
            archive::unpack_tar(tar::Archive::new(BufReader::new(file)), dest, &mut budget)?
        } else {
            return Err(BundleError::NotABundle(source.to_owned()));
        }
    }
    let written = budget.bytes;
    if fs::read_dir(dest)
        .map_err(io_err("list", dest))?
        .next()
        .is_none()
    {
        return Err(BundleError::Empty(source.to_owned()));
    }
    Ok(written)
}

#[cfg(test)]
mod tests;

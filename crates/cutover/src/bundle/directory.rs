//! Copying a directory artifact into the release under the same rules as an archive.

use super::budget::Budget;
use super::containment::{link_stays_inside, safe_mode};
use super::{io_err, BundleError};
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

pub(super) fn copy_dir(
    root: &Path,
    dir: &Path,
    dest: &Path,
    budget: &mut Budget<'_>,
) -> Result<(), BundleError> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(io_err("list", dir))?
        .collect::<Result<_, _>>()
        .map_err(io_err("list", dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        budget.entry()?;
        let path = entry.path();
        let relative = path.strip_prefix(root).expect("walk stays under root");
        let target = dest.join(relative);
        let meta = fs::symlink_metadata(&path).map_err(io_err("inspect", &path))?;
        if meta.file_type().is_symlink() {
            let link = fs::read_link(&path).map_err(io_err("read link", &path))?;
            if !link_stays_inside(&link) {
                return Err(BundleError::Unsafe {
                    entry: relative.display().to_string(),
                    why: "is a symlink that points outside the release",
                });
            }
            std::os::unix::fs::symlink(&link, &target).map_err(io_err("create", &target))?;
        } else if meta.is_dir() {
            fs::create_dir(&target).map_err(io_err("create", &target))?;
            copy_dir(root, &path, dest, budget)?;
        } else if meta.is_file() {
            // Checked before copying: a directory's sizes are known up front.
            budget.wrote(meta.len())?;
            fs::copy(&path, &target).map_err(io_err("copy", &target))?;
            fs::set_permissions(
                &target,
                fs::Permissions::from_mode(safe_mode(meta.permissions().mode())),
            )
            .map_err(io_err("chmod", &target))?;
            let copy = File::options()
                .write(true)
                .open(&target)
                .map_err(io_err("open", &target))?;
            if let Ok(mtime) = meta.modified() {
                copy.set_modified(mtime)
                    .map_err(io_err("set mtime of", &target))?;
            }
            copy.sync_all().map_err(io_err("fsync", &target))?;
        } else {
            return Err(BundleError::Unsafe {
                entry: relative.display().to_string(),
                why: "is a device, FIFO or other special file",
            });
        }
    }
    Ok(())
}

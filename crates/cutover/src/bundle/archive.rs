//! Unpacking a tar archive (plain or gzip) entry by entry, each checked before it is written.

use super::budget::Budget;
use super::containment::{contained, link_stays_inside, no_symlink_on_the_way, safe_mode};
use super::{io_err, BundleError};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

pub(super) fn unpack_tar<R: Read>(
    mut archive: tar::Archive<R>,
    dest: &Path,
    budget: &mut Budget<'_>,
) -> Result<(), BundleError> {
    let source = budget.source;
    let entries = archive.entries().map_err(io_err("read", source))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err("read", source))?;
        budget.entry()?;
        let raw_path = entry.path().map_err(io_err("read", source))?.into_owned();
        let name = raw_path.display().to_string();
        let unsafe_entry = |why| BundleError::Unsafe {
            entry: name.clone(),
            why,
        };
        let path = contained(&raw_path).map_err(unsafe_entry)?;
        if path.as_os_str().is_empty() {
            continue; // "./" itself
        }
        let target = dest.join(&path);
        // No directory on the way may be a symlink planted by an earlier entry.
        no_symlink_on_the_way(dest, &path).map_err(unsafe_entry)?;
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        }
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => {
                fs::create_dir_all(&target).map_err(io_err("create", &target))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mode = safe_mode(entry.header().mode().unwrap_or(0o644));
                // create_new (O_EXCL) never follows a symlink left at the final component.
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(io_err("create", &target))?;
                // Read at most one byte past the budget: a bomb stops there, not at a full disk.
                let copied = io::copy(&mut (&mut entry).take(budget.room() + 1), &mut out)
                    .map_err(io_err("write", &target))?;
                budget.wrote(copied)?;
                // Keep the archive's mtime: it is the file's Last-Modified when served.
                if let Ok(mtime) = entry.header().mtime() {
                    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
                    out.set_modified(when)
                        .map_err(io_err("set mtime of", &target))?;
                }
                out.sync_all().map_err(io_err("fsync", &target))?;
                fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                    .map_err(io_err("chmod", &target))?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(io_err("read", source))?
                    .ok_or_else(|| unsafe_entry("is a symlink without a target"))?;
                if !link_stays_inside(&link) {
                    return Err(unsafe_entry("is a symlink that points outside the release"));
                }
                std::os::unix::fs::symlink(&link, &target).map_err(io_err("create", &target))?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(io_err("read", source))?
                    .ok_or_else(|| unsafe_entry("is a hard link without a target"))?;
                let refused = |why| BundleError::HardLink {
                    entry: name.clone(),
                    target: link.display().to_string(),
                    why,
                };
                let inside = contained(&link).map_err(refused)?;
                no_symlink_on_the_way(dest, &inside).map_err(refused)?;
                let from = dest.join(inside);
                if from.symlink_metadata().map_or(true, |m| !m.is_file()) {
                    return Err(refused("which is not a file unpacked before it"));
                }
                // A link, as in the archive: the bytes are stored once.
                fs::hard_link(&from, &target).map_err(io_err("link", &target))?;
            }
            tar::EntryType::XHeader
            | tar::EntryType::XGlobalHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => {}
            _ => return Err(unsafe_entry("is a device, FIFO or other special file")),
        }
    }
    Ok(())
}

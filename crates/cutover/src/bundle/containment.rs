//! The rules that keep an unpacked bundle inside its release: paths, links and modes.

use std::path::{Component, Path, PathBuf};

/// The mode a file is stored with: no set-id, sticky or group/world write bits.
pub(super) fn safe_mode(mode: u32) -> u32 {
    mode & 0o755
}

/// The path of an entry inside the release, or why it is refused.
pub(super) fn contained(path: &Path) -> Result<PathBuf, &'static str> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("contains `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    Ok(clean)
}

/// Whether a symlink may point at `target`: relative and never upward. A link can then only
/// resolve below its own directory, and so can any chain of such links; checking `..` against
/// the link's depth instead would be fooled by links to `.` (`up -> .`, then
/// `x -> up/up/../..`), whose text depth is not their real depth.
pub(super) fn link_stays_inside(target: &Path) -> bool {
    !target.as_os_str().is_empty()
        && target
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Refuses an entry whose path goes through a symlink already unpacked: nothing is ever
/// written or linked through a link.
pub(super) fn no_symlink_on_the_way(dest: &Path, path: &Path) -> Result<(), &'static str> {
    let mut at = dest.to_path_buf();
    let parts: Vec<_> = path.components().collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        at.push(part);
        if at
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            return Err("is inside a symlinked directory");
        }
    }
    Ok(())
}

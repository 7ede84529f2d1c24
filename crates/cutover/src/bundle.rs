//! Unpacking bundle artifacts (a tar archive, plain or gzip, or a directory) into the release
//! store, refusing anything that could write or point outside the release.
//!
//! Refused: absolute paths, `..` components, symlinks whose target leaves the release, hard
//! links to outside, devices and FIFOs. Set-id bits are dropped. The tar crate parses; the
//! containment rules are ours because `unpack_in` alone still follows pre-existing symlinks.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

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
}

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

/// Unpacks `source` into `dest` (which must not exist yet). Returns the bytes written.
pub fn unpack(source: &Path, dest: &Path) -> Result<u64, BundleError> {
    fs::create_dir_all(dest).map_err(io_err("create", dest))?;
    let written = if source.is_dir() {
        copy_dir(source, source, dest)?
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
            unpack_tar(
                tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file))),
                source,
                dest,
            )?
        } else if is_bundle(source) {
            unpack_tar(tar::Archive::new(BufReader::new(file)), source, dest)?
        } else {
            return Err(BundleError::NotABundle(source.to_owned()));
        }
    };
    if fs::read_dir(dest)
        .map_err(io_err("list", dest))?
        .next()
        .is_none()
    {
        return Err(BundleError::Empty(source.to_owned()));
    }
    Ok(written)
}

/// The path of an entry inside the release, or why it is refused.
fn contained(path: &Path) -> Result<PathBuf, &'static str> {
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
fn link_stays_inside(target: &Path) -> bool {
    !target.as_os_str().is_empty()
        && target
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Refuses an entry whose path goes through a symlink already unpacked: nothing is ever
/// written or linked through a link.
fn no_symlink_on_the_way(dest: &Path, path: &Path) -> Result<(), &'static str> {
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

fn unpack_tar<R: Read>(
    mut archive: tar::Archive<R>,
    source: &Path,
    dest: &Path,
) -> Result<u64, BundleError> {
    let mut written = 0;
    let entries = archive.entries().map_err(io_err("read", source))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err("read", source))?;
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
                let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
                // create_new (O_EXCL) never follows a symlink left at the final component.
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(io_err("create", &target))?;
                written += io::copy(&mut entry, &mut out).map_err(io_err("write", &target))?;
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
                let inside = contained(&link).map_err(unsafe_entry)?;
                no_symlink_on_the_way(dest, &inside).map_err(unsafe_entry)?;
                let from = dest.join(inside);
                if from.symlink_metadata().map_or(true, |m| !m.is_file()) {
                    return Err(unsafe_entry(
                        "is a hard link to something not in the release",
                    ));
                }
                written += fs::copy(&from, &target).map_err(io_err("copy", &target))?;
            }
            tar::EntryType::XHeader
            | tar::EntryType::XGlobalHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => {}
            _ => return Err(unsafe_entry("is a device, FIFO or other special file")),
        }
    }
    Ok(written)
}

fn copy_dir(root: &Path, dir: &Path, dest: &Path) -> Result<u64, BundleError> {
    let mut written = 0;
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(io_err("list", dir))?
        .collect::<Result<_, _>>()
        .map_err(io_err("list", dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
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
            written += copy_dir(root, &path, dest)?;
        } else if meta.is_file() {
            written += fs::copy(&path, &target).map_err(io_err("copy", &target))?;
            fs::set_permissions(
                &target,
                fs::Permissions::from_mode(meta.permissions().mode() & 0o777),
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
    Ok(written)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            // Set the raw name so hostile paths are not normalized away by the builder.
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            if let Some(link) = link {
                header.set_link_name(link).unwrap();
            }
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn unpack_bytes(bytes: &[u8]) -> Result<tempfile::TempDir, BundleError> {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("site.tar");
        fs::write(&archive, bytes).unwrap();
        unpack(&archive, &dir.path().join("out")).map(|_| dir)
    }

    #[test]
    fn unpacks_plain_and_gzip_archives() {
        let bytes = tar_with(&[
            ("index.html", tar::EntryType::Regular, b"<h1>hi</h1>", None),
            (
                "assets/app.js",
                tar::EntryType::Regular,
                b"console.log(1)",
                None,
            ),
            (
                "latest",
                tar::EntryType::Symlink,
                b"",
                Some("assets/app.js"),
            ),
        ]);
        let dir = unpack_bytes(&bytes).unwrap();
        assert_eq!(
            fs::read(dir.path().join("out/assets/app.js")).unwrap(),
            b"console.log(1)"
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &bytes).unwrap();
        let dir = unpack_bytes(&gz.finish().unwrap()).unwrap();
        assert_eq!(
            fs::read(dir.path().join("out/index.html")).unwrap(),
            b"<h1>hi</h1>"
        );
        let manifest = manifest(&dir.path().join("out")).unwrap();
        assert_eq!(
            manifest.keys().collect::<Vec<_>>(),
            ["assets/app.js", "index.html"]
        );
    }

    #[test]
    fn refuses_entries_that_escape() {
        let cases: &[(&str, tar::EntryType, Option<&str>, &str)] = &[
            ("../evil", tar::EntryType::Regular, None, "contains `..`"),
            (
                "/etc/evil",
                tar::EntryType::Regular,
                None,
                "is an absolute path",
            ),
            (
                "a/../../evil",
                tar::EntryType::Regular,
                None,
                "contains `..`",
            ),
            (
                "up",
                tar::EntryType::Symlink,
                Some("../../etc/passwd"),
                "points outside",
            ),
            (
                "abs",
                tar::EntryType::Symlink,
                Some("/etc/passwd"),
                "points outside",
            ),
            (
                "hard",
                tar::EntryType::Link,
                Some("/etc/passwd"),
                "is an absolute path",
            ),
            ("dev", tar::EntryType::Char, None, "special file"),
        ];
        for (path, kind, link, why) in cases {
            let err = unpack_bytes(&tar_with(&[(path, *kind, b"x", *link)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{path}: {err}");
        }
        // Links to "." cannot be chained to climb out (their text depth is not their real depth).
        let err = unpack_bytes(&tar_with(&[
            ("up", tar::EntryType::Symlink, b"", Some(".")),
            (
                "evil",
                tar::EntryType::Symlink,
                b"",
                Some("up/up/up/up/../../../../state.db"),
            ),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("points outside"), "{err}");
        let err = unpack_bytes(&tar_with(&[
            ("esc", tar::EntryType::Symlink, b"", Some("up")),
            ("esc/deep/x", tar::EntryType::Regular, b"x", None),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("symlinked directory"), "{err}");
        let err = unpack_bytes(&tar_with(&[(
            "sibling",
            tar::EntryType::Symlink,
            b"",
            Some("../x"),
        )]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("points outside"), "{err}");
        // A symlinked directory planted first cannot be written through.
        let err = unpack_bytes(&tar_with(&[
            ("d", tar::EntryType::Symlink, b"", Some(".")),
            ("d/x", tar::EntryType::Regular, b"x", None),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("symlinked directory"), "{err}");
    }

    #[test]
    fn copies_directories_and_refuses_escaping_links() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("site");
        fs::create_dir_all(src.join("assets")).unwrap();
        fs::write(src.join("index.html"), "hi").unwrap();
        fs::write(src.join("assets/a.css"), "body{}").unwrap();
        unpack(&src, &dir.path().join("out")).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("out/assets/a.css")).unwrap(),
            "body{}"
        );
        std::os::unix::fs::symlink("/etc/passwd", src.join("leak")).unwrap();
        let err = unpack(&src, &dir.path().join("out2"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("points outside"), "{err}");
    }
}

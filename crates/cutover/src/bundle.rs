//! Unpacking bundle artifacts (a tar archive, plain or gzip, or a directory) into the release
//! store, refusing anything that could write or point outside the release.
//!
//! Refused: absolute paths, `..` components, symlinks whose target leaves the release, hard
//! links to outside, devices and FIFOs, and more bytes or entries than [`Limits`] allow.
//! Set-id, sticky and group/world write bits are dropped (files become 0755 or 0644 at most).
//! Hard links stay links. The tar crate parses; the containment rules are ours because
//! `unpack_in` alone still follows pre-existing symlinks.

mod layout;

pub use layout::check_program;

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

/// Counts what an unpack wrote against its [`Limits`].
struct Budget<'a> {
    limits: Limits,
    source: &'a Path,
    bytes: u64,
    entries: u64,
}

impl Budget<'_> {
    fn entry(&mut self) -> Result<(), BundleError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(BundleError::TooLarge {
                bundle: self.source.to_owned(),
                limit: self.limits.max_entries.to_string(),
                what: "entries",
                key: "entries",
            });
        }
        Ok(())
    }

    /// The most bytes the next file may still have.
    fn room(&self) -> u64 {
        self.limits.max_bytes.saturating_sub(self.bytes)
    }

    fn wrote(&mut self, bytes: u64) -> Result<(), BundleError> {
        self.bytes += bytes;
        if self.bytes > self.limits.max_bytes {
            return Err(BundleError::TooLarge {
                bundle: self.source.to_owned(),
                limit: crate::vocab::human_bytes(self.limits.max_bytes),
                what: "bytes",
                key: "size",
            });
        }
        Ok(())
    }
}

/// The mode a file is stored with: no set-id, sticky or group/world write bits.
fn safe_mode(mode: u32) -> u32 {
    mode & 0o755
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

/// Unpacks `source` into `dest` (which must not exist yet), within `limits`. Returns the bytes
/// written.
pub fn unpack(source: &Path, dest: &Path, limits: Limits) -> Result<u64, BundleError> {
    fs::create_dir_all(dest).map_err(io_err("create", dest))?;
    let mut budget = Budget {
        limits,
        source,
        bytes: 0,
        entries: 0,
    };
    if source.is_dir() {
        copy_dir(source, source, dest, &mut budget)?;
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
                dest,
                &mut budget,
            )?
        } else if is_bundle(source) {
            unpack_tar(tar::Archive::new(BufReader::new(file)), dest, &mut budget)?
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

fn copy_dir(
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
        unpack(&archive, &dir.path().join("out"), Limits::default()).map(|_| dir)
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
        unpack(&src, &dir.path().join("out"), Limits::default()).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("out/assets/a.css")).unwrap(),
            "body{}"
        );
        std::os::unix::fs::symlink("/etc/passwd", src.join("leak")).unwrap();
        let err = unpack(&src, &dir.path().join("out2"), Limits::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("points outside"), "{err}");
    }

    #[test]
    fn hard_links_stay_links_and_their_errors_name_the_target() {
        use std::os::unix::fs::MetadataExt;
        let dir = unpack_bytes(&tar_with(&[
            ("a", tar::EntryType::Regular, b"data", None),
            ("b", tar::EntryType::Link, b"", Some("a")),
        ]))
        .unwrap();
        let (a, b) = (
            fs::metadata(dir.path().join("out/a")).unwrap(),
            fs::metadata(dir.path().join("out/b")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino(), "a hard link was unpacked as a copy");
        let err = unpack_bytes(&tar_with(&[(
            "b",
            tar::EntryType::Link,
            b"",
            Some("missing"),
        )]))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("\"b\"")
                && err.contains("hard link to \"missing\"")
                && err.contains("not a file unpacked before it"),
            "{err}"
        );
        let err = unpack_bytes(&tar_with(&[("h", tar::EntryType::Link, b"", Some("../x"))]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hard link to \"../x\"") && err.contains("`..`"),
            "{err}"
        );
    }

    #[test]
    fn modes_lose_special_and_foreign_write_bits() {
        assert_eq!(safe_mode(0o7777), 0o755);
        assert_eq!(safe_mode(0o666), 0o644);
        assert_eq!(safe_mode(0o4755), 0o755);
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o7777);
        header.set_size(1);
        header.set_path("run").unwrap();
        header.set_cksum();
        builder.append(&header, &b"x"[..]).unwrap();
        let dir = unpack_bytes(&builder.into_inner().unwrap()).unwrap();
        let mode = fs::metadata(dir.path().join("out/run"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
    }

    #[test]
    fn limits_stop_bombs_early() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("bomb.tar");
        fs::write(
            &archive,
            tar_with(&[
                ("a", tar::EntryType::Regular, &[0u8; 600], None),
                ("b", tar::EntryType::Regular, &[0u8; 600], None),
            ]),
        )
        .unwrap();
        let small = Limits {
            max_bytes: 1000,
            max_entries: 10,
        };
        let err = unpack(&archive, &dir.path().join("out"), small)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("more than 1000 B bytes") || err.contains("more than"),
            "{err}"
        );
        assert!(err.contains("bundle_max_size"), "{err}");
        let few = Limits {
            max_bytes: 1 << 20,
            max_entries: 1,
        };
        let err = unpack(&archive, &dir.path().join("out2"), few)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("more than 1 entries") && err.contains("bundle_max_entries"),
            "{err}"
        );
        // A directory is judged before a byte is copied.
        let src = dir.path().join("site");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("big"), vec![0u8; 2000]).unwrap();
        let err = unpack(&src, &dir.path().join("out3"), small)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bundle_max_size"), "{err}");
        assert!(!dir.path().join("out3/big").exists());
    }
}

//! A real Docker engine for tests, and an image built from this machine's own binaries.
//!
//! - [`Dockerd`]: Debian's `dockerd` with its own data root, exec root, socket, pidfile and an
//!   empty config file in a temp dir; no bridge and no iptables (containers use
//!   `network_mode: host`, on free loopback ports). Stopped by its pid on drop.
//! - [`services_image`]: one image holding PostgreSQL 15 (`postgres`, `initdb`, `pg_ctl`,
//!   `pg_isready`, its share files and modules) and Redis (`redis-server`, `redis-cli`), every
//!   library `ldd` names and the dynamic loader, a static busybox as `/bin/sh`, a `postgres`
//!   user (uid 999) and `/bin/postgres-entrypoint` (initdb from `POSTGRES_USER`,
//!   `POSTGRES_PASSWORD`, `POSTGRES_DB` on an empty data dir, like the official image). No
//!   registry: the root filesystem is a tar file given to `docker import`, built once per content
//!   (a hash of every file's path, size and mtime) under the target dir.
//!
//! When `dockerd` or an input is missing, tests print a skip note and return, except under
//! `CI=true`, where they fail.

use super::support::in_ci;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PG: &str = "/usr/lib/postgresql/15";
const POSTGRES_UID: u32 = 999;

/// Fails the test under CI, else prints a skip note; returns `None` for `?`.
fn unavailable<T>(message: String) -> Option<T> {
    if in_ci() {
        panic!("{message}");
    }
    eprintln!("SKIP: {message}");
    None
}

pub struct Dockerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// `unix://...`, for `DOCKER_HOST`.
    pub host: String,
}

impl Dockerd {
    pub fn start() -> Option<Dockerd> {
        if !Path::new("/usr/sbin/dockerd").is_file() {
            return unavailable("dockerd is not installed; .ci/run must install docker.io".into());
        }
        // Short paths: containerd's sockets live under the exec root (108-byte limit).
        let dir = tempfile::Builder::new()
            .prefix("dkr-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        fs::write(d.join("daemon.json"), "{}").unwrap();
        let log = fs::File::create(d.join("dockerd.log")).unwrap();
        let child = Command::new("/usr/sbin/dockerd")
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("sock").display()))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .args(["--iptables=false", "--bridge=none"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => return unavailable(format!("cannot start dockerd: {e}")),
        };
        let host = format!("unix://{}", d.join("sock").display());
        let mut engine = Dockerd {
            dir,
            child: Some(child),
            host,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if engine
                .docker(&["version", "--format", "{{.Server.Version}}"])
                .0
            {
                return Some(engine);
            }
            let exited = engine.child.as_mut().unwrap().try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                let log = fs::read_to_string(engine.dir.path().join("dockerd.log")).unwrap();
                return unavailable(format!("dockerd did not start ({exited:?}):\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs the Docker CLI against this engine: (success, stdout + stderr).
    pub fn docker(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .stdin(Stdio::null())
            .output()
            .expect("run docker");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Imports the root filesystem `tar` as `tag`, running as `postgres` by default.
    pub fn import(&self, tar: &Path, tag: &str) {
        let out = Command::new("docker")
            .args(["import", "--change", "USER postgres", "--change"])
            .arg(r#"CMD ["/bin/sh"]"#)
            .arg(tar)
            .arg(tag)
            .env("DOCKER_HOST", &self.host)
            .stdin(Stdio::null())
            .output()
            .expect("run docker import");
        assert!(
            out.status.success(),
            "docker import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child);
        }
        unmount_under(self.dir.path());
    }
}

/// SIGTERM by pid: dockerd stops its containers and its containerd and unmounts the container
/// file systems; SIGKILL if it takes longer than a minute.
fn stop(mut child: Child) {
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// What the engine left mounted in its directory (it keeps `exec/netns/default`, and after a
/// SIGKILL the overlays), deepest first, so the temp dir can be removed.
fn unmount_under(dir: &Path) {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let c = std::ffi::CString::new(point).unwrap();
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
}

/// The entry point of the PostgreSQL container: initdb on first start, then postgres.
const POSTGRES_ENTRYPOINT: &str = r#"#!/bin/sh
set -e
export PATH=/usr/lib/postgresql/15/bin:/bin
PGDATA=/var/lib/postgresql/data
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    printf '%s\n' "$POSTGRES_PASSWORD" > /tmp/pwfile
    initdb -D "$PGDATA" -U "$POSTGRES_USER" -A scram-sha-256 --pwfile=/tmp/pwfile -E UTF8 --locale=C --no-sync
    rm -f /tmp/pwfile
    if [ "$POSTGRES_DB" != postgres ]; then
        echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\"" | postgres --single -D "$PGDATA" postgres >/dev/null
    fi
fi
exec postgres -D "$PGDATA" -c listen_addresses=127.0.0.1 -c unix_socket_directories=/tmp "$@"
"#;

/// The root filesystem tar of the services image, built if its inputs changed; `None` (skip)
/// when an input is missing outside CI.
pub fn services_image() -> Option<PathBuf> {
    let mut files: Vec<PathBuf> = ["bin/postgres", "bin/initdb", "bin/pg_ctl", "bin/pg_isready"]
        .iter()
        .map(|b| Path::new(PG).join(b))
        .chain(["/usr/bin/redis-server", "/usr/bin/redis-cli"].map(PathBuf::from))
        .collect();
    for f in files.iter().chain([&PathBuf::from("/bin/busybox")]) {
        if !f.is_file() {
            return unavailable(format!(
                "{} is missing; .ci/run must install postgresql-15, redis-server and busybox-static",
                f.display()
            ));
        }
    }
    // Modules postgres loads at run time (plpgsql, text search, encodings); not the JIT, which
    // would pull in LLVM.
    for entry in fs::read_dir(Path::new(PG).join("lib")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".so") && !name.starts_with("llvmjit") {
            files.push(path);
        }
    }
    let mut libraries = BTreeSet::new();
    // busybox-static needs nothing; a dynamic busybox gets its libraries too.
    for f in files.iter().chain([&PathBuf::from("/bin/busybox")]) {
        libraries.extend(ldd(f));
    }
    files.extend(libraries);
    files.sort();
    files.dedup();
    let trees = ["/usr/share/postgresql/15", "/usr/share/zoneinfo"];

    let mut hash = Sha256::new();
    hash.update(POSTGRES_ENTRYPOINT);
    hash.update(b"layout v1");
    for f in files.iter().chain([&PathBuf::from("/bin/busybox")]) {
        let meta = fs::metadata(f).unwrap();
        hash.update(format!(
            "{}:{}:{}\n",
            f.display(),
            meta.size(),
            meta.mtime()
        ));
    }
    for tree in trees {
        hash.update(format!("{tree}:{}\n", fs::metadata(tree).unwrap().mtime()));
    }
    let key = format!("{:x}", hash.finalize());
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("compose-images");
    fs::create_dir_all(&cache).unwrap();
    let tar_path = cache.join(format!("services-{}.tar", &key[..16]));
    if tar_path.is_file() {
        return Some(tar_path);
    }
    // Another test process may build the same file: write aside, rename into place.
    let partial = tempfile::NamedTempFile::new_in(&cache).unwrap();
    let mut tar = Rootfs::new(partial.reopen().unwrap());
    tar.dir("tmp", 0o1777, 0);
    tar.dir("var/lib/postgresql", 0o755, POSTGRES_UID);
    tar.dir("var/lib/postgresql/data", 0o700, POSTGRES_UID);
    tar.file_from("bin/busybox", Path::new("/bin/busybox"));
    tar.symlink("bin/sh", "busybox");
    tar.bytes(
        "bin/postgres-entrypoint",
        POSTGRES_ENTRYPOINT.as_bytes(),
        0o755,
    );
    tar.bytes(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\npostgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/sh\n",
        0o644,
    );
    tar.bytes("etc/group", b"root:x:0:\npostgres:x:999:\n", 0o644);
    for f in &files {
        tar.file_from(f.strip_prefix("/").unwrap().to_str().unwrap(), f);
    }
    for tree in trees {
        tar.tree(Path::new(tree));
    }
    tar.finish();
    partial.persist(&tar_path).unwrap();
    Some(tar_path)
}

/// The libraries `ldd` names for `binary`, and the dynamic loader.
fn ldd(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().expect("run ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// A root filesystem written as a tar stream: parent directories added once, files copied
/// with their mode and owned by root unless said otherwise.
struct Rootfs {
    builder: tar::Builder<std::io::BufWriter<fs::File>>,
    dirs: BTreeSet<PathBuf>,
}

impl Rootfs {
    fn new(file: fs::File) -> Rootfs {
        let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
        builder.follow_symlinks(false);
        Rootfs {
            builder,
            dirs: BTreeSet::new(),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, uid: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(uid.into());
        header.set_gid(uid.into());
        header.set_size(size);
        header.set_mtime(0);
        header
    }

    fn parents(&mut self, path: &str) {
        let mut parents: Vec<&Path> = Path::new(path).ancestors().skip(1).collect();
        parents.reverse();
        for parent in parents {
            if !parent.as_os_str().is_empty() && !self.dirs.contains(parent) {
                self.dir(parent.to_str().unwrap(), 0o755, 0);
            }
        }
    }

    fn dir(&mut self, path: &str, mode: u32, uid: u32) {
        self.parents(path);
        if self.dirs.insert(PathBuf::from(path)) {
            let mut header = Self::header(tar::EntryType::Directory, mode, uid, 0);
            self.builder
                .append_data(&mut header, format!("{path}/"), std::io::empty())
                .unwrap();
        }
    }

    fn bytes(&mut self, path: &str, data: &[u8], mode: u32) {
        self.parents(path);
        let mut header = Self::header(tar::EntryType::Regular, mode, 0, data.len() as u64);
        self.builder.append_data(&mut header, path, data).unwrap();
    }

    /// Copies `source`'s content (following links: ldd names links to versioned files).
    fn file_from(&mut self, path: &str, source: &Path) {
        self.parents(path);
        let meta = fs::metadata(source).unwrap();
        let mut header = Self::header(tar::EntryType::Regular, meta.mode() & 0o7777, 0, meta.len());
        self.builder
            .append_data(&mut header, path, fs::File::open(source).unwrap())
            .unwrap();
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.parents(path);
        let mut header = Self::header(tar::EntryType::Symlink, 0o777, 0, 0);
        self.builder.append_link(&mut header, path, target).unwrap();
    }

    /// A directory tree as it is (links kept as links).
    fn tree(&mut self, root: &Path) {
        let inside = root
            .strip_prefix("/")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        self.parents(&inside);
        self.dirs.insert(PathBuf::from(&inside));
        self.builder.append_dir_all(&inside, root).unwrap();
    }

    fn finish(self) {
        self.builder
            .into_inner()
            .unwrap()
            .into_inner()
            .unwrap()
            .sync_all()
            .unwrap();
    }
}

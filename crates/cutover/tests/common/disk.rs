//! Disk conditions for tests: a small tmpfs to fill, and what an interrupted store leaves.

use std::path::{Path, PathBuf};

/// Files under the release store whose names say a store or a prune was cut short.
pub fn leftovers(data: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(components) = std::fs::read_dir(data.join("releases")) else {
        return found;
    };
    for component in components.flatten() {
        for entry in std::fs::read_dir(component.path()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") || name.starts_with(".trash-") {
                found.push(name);
            }
        }
    }
    found
}

/// A scratch tmpfs of `size` for the data dir, unmounted on drop. Tests run as root in CI.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "cannot mount a tmpfs (needs root): this test must run in CI"
            );
            eprintln!("skipping: cannot mount a tmpfs here (not root)");
            return None;
        }
        Some(Tmpfs(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

pub fn fill(path: &Path, leave_bytes: u64) {
    let stat = nix::sys::statvfs::statvfs(path.parent().unwrap()).unwrap();
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    let size = free.saturating_sub(leave_bytes);
    let file = std::fs::File::create(path).unwrap();
    // Written, not sparse: tmpfs counts pages actually used.
    use std::io::Write;
    let mut writer = std::io::BufWriter::new(file);
    let chunk = vec![1u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        if writer.write_all(&chunk[..n]).is_err() {
            break;
        }
        left -= n as u64;
    }
    let _ = writer.flush();
}

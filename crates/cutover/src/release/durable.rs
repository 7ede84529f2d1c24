//! Writing files so that they survive a crash (fsynced, directories too), and hashing them.

use super::{io_err, ReleaseError};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub fn sha256_file(path: &Path) -> Result<String, ReleaseError> {
    let mut file = File::open(path).map_err(io_err("open", path))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(io_err("read", path))?;
    Ok(hex(&hasher.finalize()))
}

pub(super) fn copy_hashing(source: &Path, dest: &Path) -> Result<(String, u64), ReleaseError> {
    let mut input = File::open(source).map_err(io_err("open", source))?;
    let mut output = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(dest)
        .map_err(io_err("create", dest))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(io_err("read", source))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n]).map_err(io_err("write", dest))?;
        size += n as u64;
    }
    output.sync_all().map_err(io_err("fsync", dest))?;
    Ok((hex(&hasher.finalize()), size))
}

pub(super) fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ReleaseError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err("create", path))?;
    file.write_all(bytes).map_err(io_err("write", path))?;
    file.sync_all().map_err(io_err("fsync", path))
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), ReleaseError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

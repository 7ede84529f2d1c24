//! Whether an artifact can run on this machine: a non-empty executable file, ELF for this
//! architecture and word size, or a `#!` script.

use super::{io_err, ReleaseError};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Checks that a program inside a stored bundle can run here (exists, executable, this machine).
pub fn check_program(path: &Path) -> Result<(), ReleaseError> {
    check_source(path, true)
}

pub(super) fn check_source(source: &Path, must_be_runnable: bool) -> Result<(), ReleaseError> {
    let meta = match fs::metadata(source) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ReleaseError::Missing(source.to_owned()))
        }
        Err(e) => return Err(io_err("inspect", source)(e)),
    };
    if !meta.is_file() {
        return Err(ReleaseError::NotAFile(source.to_owned()));
    }
    if meta.len() == 0 {
        return Err(ReleaseError::Empty(source.to_owned()));
    }
    if !must_be_runnable {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    if mode & 0o111 == 0 {
        return Err(ReleaseError::NotExecutable {
            path: source.to_owned(),
            mode: mode & 0o7777,
        });
    }
    let mut head = [0u8; 20];
    let mut file = File::open(source).map_err(io_err("open", source))?;
    let n = read_up_to(&mut file, &mut head).map_err(io_err("read", source))?;
    check_runnable(source, &head[..n])
}

pub(super) fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Refuses files the kernel would not run here: a foreign ELF (another architecture or word
/// size) or something that is neither ELF nor a `#!` script. Checked before anything starts,
/// so the error says "built for aarch64" instead of "exec format error" in a log.
pub(super) fn check_runnable(path: &Path, head: &[u8]) -> Result<(), ReleaseError> {
    if head.starts_with(b"#!") {
        return Ok(());
    }
    if head.len() < 20 || &head[..4] != b"\x7fELF" {
        return Err(ReleaseError::NotRunnable(path.to_owned()));
    }
    let class = head[4];
    let little_endian = head[5] == 1;
    let machine = if little_endian {
        u16::from_le_bytes([head[18], head[19]])
    } else {
        u16::from_be_bytes([head[18], head[19]])
    };
    let found = describe_elf(class, machine);
    let expected = describe_elf(host_elf_class(), host_elf_machine());
    if class != host_elf_class()
        || machine != host_elf_machine()
        || little_endian != cfg!(target_endian = "little")
    {
        return Err(ReleaseError::WrongMachine {
            path: path.to_owned(),
            found,
            expected,
        });
    }
    Ok(())
}

fn host_elf_class() -> u8 {
    if cfg!(target_pointer_width = "64") {
        2
    } else {
        1
    }
}

fn host_elf_machine() -> u16 {
    match std::env::consts::ARCH {
        "x86" => 3,
        "arm" => 40,
        "x86_64" => 62,
        "aarch64" => 183,
        "riscv64" | "riscv32" => 243,
        "powerpc64" => 21,
        "s390x" => 22,
        _ => 0,
    }
}

fn describe_elf(class: u8, machine: u16) -> String {
    let arch = match machine {
        3 => "x86",
        40 => "arm",
        62 => "x86_64",
        183 => "aarch64",
        243 => "riscv",
        21 => "powerpc64",
        22 => "s390x",
        other => return format!("ELF machine {other}"),
    };
    let bits = if class == 2 { "64-bit" } else { "32-bit" };
    format!("{arch} ({bits})")
}

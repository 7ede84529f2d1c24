//! The host side of the fleet lock: `cutover fleet lock --run ID` takes an exclusive flock(2)
//! for the host's daemon, prints `locked`, and holds it until its stdin closes. The operator
//! keeps that ssh session open for the whole run, so the lock goes when the run ends, is killed
//! or loses the connection (sshd closes the session, stdin ends, the process exits): no stale
//! lock is ever left to clear by hand.
//!
//! The file is in `/run/lock` (a tmpfs every user may write), named after the daemon's
//! data_dir, so two fleets whose hosts share a machine (or two daemons on one host) do not
//! block each other. Another user's lock file is opened read-only: flock needs no write access.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Exit code of `cutover fleet lock` when another run holds the lock.
pub const HELD_ELSEWHERE: i32 = 3;
/// The line printed once the lock is held.
pub const LOCKED: &str = "locked";

/// Who holds a lock, written into the file for whoever finds it taken.
#[derive(Debug, Serialize, Deserialize)]
pub struct Holder {
    pub run: String,
    pub pid: u32,
    pub since_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another fleet run holds this host: {0}")]
    Held(String),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// Takes the lock for the daemon of `data_dir`, says so on `out`, and holds it until `input`
/// ends.
pub fn hold(
    data_dir: &Path,
    run: &str,
    out: &mut impl Write,
    input: impl Read,
) -> Result<(), LockError> {
    let path = lock_path(data_dir);
    let io_err = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    let mut file = open(&path).map_err(io_err)?;
    // SAFETY: flock(2) on an fd we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        return Err(LockError::Held(describe(&text)));
    }
    let holder = Holder {
        run: run.to_owned(),
        pid: std::process::id(),
        since_ms: crate::vocab::now_millis(),
    };
    // Best effort: a read-only handle (another user's file) cannot record who holds it.
    let _ = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| {
        file.write_all(
            serde_json::to_string(&holder)
                .unwrap_or_default()
                .as_bytes(),
        )
    });
    writeln!(out, "{LOCKED}")
        .and_then(|()| out.flush())
        .map_err(io_err)?;
    // Held while the operator's session lives; whatever it sends is ignored.
    let mut lines = io::BufReader::new(input).lines();
    while let Some(Ok(_)) = lines.next() {}
    Ok(())
}

fn lock_path(data_dir: &Path) -> PathBuf {
    let dir = Path::new("/run/lock");
    let dir = if dir.is_dir() {
        dir.to_owned()
    } else {
        std::env::temp_dir()
    };
    let digest = Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("cutover-fleet-{name}.lock"))
}

fn open(path: &Path) -> io::Result<File> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o666)
        .open(path)
    {
        Ok(file) => {
            // The umask took bits off; other users of the host must be able to open it too.
            let _ = file.set_permissions(std::fs::Permissions::from_mode(0o666));
            Ok(file)
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => File::open(path),
        Err(e) => Err(e),
    }
}

fn describe(text: &str) -> String {
    match serde_json::from_str::<Holder>(text) {
        Ok(h) => format!(
            "fleet run {} (pid {} on the host, since {})",
            h.run,
            h.pid,
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(h.since_ms.max(0) as u64)
            )
        ),
        Err(_) => "a fleet run (it did not say which)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_told_who_holds_it() {
        use std::sync::mpsc::{channel, Receiver, Sender};
        /// Input that ends when the test drops the sender.
        struct Until(Receiver<()>);
        impl Read for Until {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                let _ = self.0.recv();
                Ok(0)
            }
        }
        /// Output that tells the test when `locked` was written.
        struct Tell(Sender<()>);
        impl Write for Tell {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let _ = self.0.send(());
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let (end_input, input) = channel::<()>();
        let (told, locked) = channel::<()>();
        let first = {
            let data_dir = data_dir.clone();
            std::thread::spawn(move || hold(&data_dir, "run-a", &mut Tell(told), Until(input)))
        };
        locked.recv().unwrap();
        let err = hold(&data_dir, "run-b", &mut Vec::new(), io::empty()).unwrap_err();
        assert!(err.to_string().contains("run-a"), "{err}");
        drop(end_input);
        first.join().unwrap().unwrap();
        // Released with its input: the next run gets it.
        hold(&data_dir, "run-c", &mut Vec::new(), io::empty()).unwrap();
    }
}

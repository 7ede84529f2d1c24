//! Instances: release processes started, watched, adopted and stopped by the daemon.
//!
//! Each instance runs in its own process group (so a stop reaches every process it forked), with
//! stdin from /dev/null and stdout+stderr appended to its own log file. Writing to a file rather
//! than a pipe lets an instance outlive a crash of the daemon: the restarted daemon adopts it by
//! pid and start time instead of cutting traffic.

mod instance_log;
mod ports;

pub use instance_log::{rotate_log, rotate_logs, tail_lines};

use crate::config::{ComponentName, ProcessConfig};
use crate::release::ReleaseId;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

/// Environment variables of the daemon that must not leak into releases: they describe sockets
/// that belong to the daemon alone.
const DAEMON_ONLY_ENV: &[&str] = &[
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "CUTOVER_HANDOFF_FD",
];

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("cannot find a free loopback port: {0}")]
    NoPort(io::Error),
    #[error("cannot open log file {}: {source}", path.display())]
    Log { path: PathBuf, source: io::Error },
    #[error("cannot read env file {}: {message}", path.display())]
    EnvFile { path: PathBuf, message: String },
    #[error("cannot start `{program}`: {source}")]
    Spawn { program: String, source: io::Error },
    /// The instance started but its row could not be written; it was killed.
    #[error("{0}")]
    Record(#[from] crate::store::StoreError),
}

/// What an instance is started from.
pub struct LaunchSpec<'a> {
    pub component: &'a ComponentName,
    pub process: &'a ProcessConfig,
    pub release: &'a ReleaseId,
    pub release_dir: &'a Path,
    pub artifact: &'a Path,
    pub data_dir: &'a Path,
    pub log_path: PathBuf,
}

/// A running (or exited) instance. Cloning shares the exit watch.
#[derive(Clone, Debug)]
pub struct Instance {
    /// Row id in the state database.
    pub id: i64,
    pub component: ComponentName,
    pub release: ReleaseId,
    /// Also the process group id: each instance leads its own group.
    pub pid: i32,
    pub start_ticks: u64,
    pub addr: SocketAddr,
    pub log_path: PathBuf,
    exit: watch::Receiver<Option<String>>,
}

impl Instance {
    /// How the process ended, once it has.
    pub fn exit_status(&self) -> Option<String> {
        self.exit.borrow().clone()
    }

    /// Resolves when the process has exited, with how it ended.
    pub async fn exited(&self) -> String {
        let mut rx = self.exit.clone();
        let status = match rx.wait_for(Option::is_some).await {
            Ok(status) => status.clone().unwrap_or_default(),
            Err(_) => "exited".into(),
        };
        status
    }

    /// SIGTERM to the process group, SIGKILL after `timeout`. Returns how it ended.
    pub async fn stop(&self, timeout: Duration) -> String {
        if let Some(status) = self.exit_status() {
            // The leader is gone; children it left in its group go now.
            signal_group(self.pid, libc::SIGKILL);
            return status;
        }
        signal_group(self.pid, libc::SIGTERM);
        let status = match tokio::time::timeout(timeout, self.exited()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::warn!(pid = self.pid, release = %self.release, "did not stop within {timeout:?}; sending SIGKILL");
                signal_group(self.pid, libc::SIGKILL);
                self.exited().await
            }
        };
        // Children the leader left behind in its group go with it.
        signal_group(self.pid, libc::SIGKILL);
        status
    }

    /// The last `lines` lines of the instance's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_lines(&self.log_path, lines).unwrap_or_default()
    }
}

fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Replaces `{name}` placeholders (validated at config load) with their values.
fn expand(template: &str, values: &BTreeMap<&str, String>) -> String {
    let mut out = template.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// Reads a dotenv file (see [`crate::envfile`]).
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, SupervisorError> {
    crate::envfile::read(path).map_err(|e| SupervisorError::EnvFile {
        path: e.path,
        message: e.message,
    })
}

/// Starts an instance and records it. `record` stores the row and returns its id; it runs
/// before the process is watched, so a crash right after spawn still finds the row.
pub fn launch(
    spec: &LaunchSpec<'_>,
    record: impl FnOnce(i32, u64, u16) -> Result<i64, crate::store::StoreError>,
) -> Result<Instance, SupervisorError> {
    let port = ports::pick().map_err(SupervisorError::NoPort)?;
    let values: BTreeMap<&str, String> = [
        ("artifact", spec.artifact.display().to_string()),
        ("port", port.to_string()),
        ("release", spec.release.to_string()),
        ("release_dir", spec.release_dir.display().to_string()),
        ("component", spec.component.to_string()),
        ("data_dir", spec.data_dir.display().to_string()),
    ]
    .into_iter()
    .collect();

    let argv: Vec<String> = spec
        .process
        .command
        .iter()
        .map(|a| expand(a, &values))
        .collect();
    let mut command = tokio::process::Command::new(&argv[0]);
    command.args(&argv[1..]);
    if let Some(inherited) = &spec.process.clean_env {
        // `env_clear = true`: the release sees only what its config names, not whatever the
        // daemon was started with.
        command.env_clear();
        for name in inherited {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
    }
    for name in DAEMON_ONLY_ENV {
        command.env_remove(name);
    }
    if let Some(env_file) = &spec.process.env_file {
        command.envs(read_env_file(env_file)?);
    }
    command
        .envs(
            spec.process
                .env
                .iter()
                .map(|(k, v)| (k.clone(), expand(v, &values))),
        )
        .env("CUTOVER_COMPONENT", spec.component.as_str())
        .env("CUTOVER_RELEASE", spec.release.as_str())
        .env("CUTOVER_PORT", port.to_string())
        .current_dir(spec.release_dir)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(false);
    if let Some(soft) = crate::fdlimit::release_soft_limit() {
        // SAFETY: only setrlimit(2), async-signal-safe, runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let mut limit = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && soft < limit.rlim_cur {
                    limit.rlim_cur = soft;
                    libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
                }
                Ok(())
            });
        }
    }

    if let Some(dir) = spec.log_path.parent() {
        fs::create_dir_all(dir).map_err(|source| SupervisorError::Log {
            path: spec.log_path.clone(),
            source,
        })?;
    }
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(&spec.log_path)
        .map_err(|source| SupervisorError::Log {
            path: spec.log_path.clone(),
            source,
        })?;
    let log_err = log.try_clone().map_err(|source| SupervisorError::Log {
        path: spec.log_path.clone(),
        source,
    })?;
    command.stdout(log).stderr(log_err);

    let mut child = command.spawn().map_err(|source| SupervisorError::Spawn {
        program: argv[0].clone(),
        source,
    })?;
    let pid = child.id().expect("a just-spawned child has a pid") as i32;
    let start_ticks = process_start_ticks(pid).unwrap_or(0);
    let id = match record(pid, start_ticks, port) {
        Ok(id) => id,
        Err(e) => {
            signal_group(pid, libc::SIGKILL);
            return Err(e.into());
        }
    };

    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let status = match child.wait().await {
            Ok(status) => describe_exit(status),
            Err(e) => format!("could not be waited for: {e}"),
        };
        let _ = tx.send(Some(status));
    });

    Ok(Instance {
        id,
        component: spec.component.clone(),
        release: spec.release.clone(),
        pid,
        start_ticks,
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        log_path: spec.log_path.clone(),
        exit: rx,
    })
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "exited".into(),
    }
}

/// Takes back an instance that outlived a previous daemon, if it is still the same process.
pub fn adopt(
    record: &crate::store::InstanceRecord,
    component: &ComponentName,
    release: &ReleaseId,
) -> Option<Instance> {
    let ticks = process_start_ticks(record.pid)?;
    if ticks != record.start_ticks {
        return None; // the pid now belongs to another process
    }
    let pidfd = pidfd_open(record.pid).ok()?;
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        // Not our child, so it cannot be waited for; a pidfd turns readable when it exits.
        // SAFETY: the AsyncFd owns the pidfd and closes it only after deregistering it.
        match unsafe { AsyncFd::register(pidfd) } {
            Ok(fd) => {
                let _ = fd.readable().await;
            }
            Err(e) => tracing::warn!("cannot watch adopted instance: {e}"),
        }
        let _ = tx.send(Some(
            "exited (adopted after a daemon restart: its exit status is unknown)".into(),
        ));
    });
    Some(Instance {
        id: record.id,
        component: component.clone(),
        release: release.clone(),
        pid: record.pid,
        start_ticks: ticks,
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, record.port)),
        log_path: PathBuf::from(&record.log_path),
        exit: rx,
    })
}

/// Kills the process group of a recorded instance if it is still the same process.
pub fn kill_orphan(record: &crate::store::InstanceRecord) -> bool {
    if process_start_ticks(record.pid) == Some(record.start_ticks) {
        signal_group(record.pid, libc::SIGKILL);
        true
    } else {
        false
    }
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) has no memory arguments; a non-negative result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot.
pub fn process_start_ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is parenthesised and may contain spaces: parse after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let state = rest.split(' ').next()?;
    if state == "Z" || state == "X" {
        return None; // a zombie has exited
    }
    rest.split(' ').nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_placeholders() {
        let values: BTreeMap<&str, String> =
            [("port", "4100".to_string()), ("release", "v2".into())]
                .into_iter()
                .collect();
        assert_eq!(expand("127.0.0.1:{port}", &values), "127.0.0.1:4100");
        assert_eq!(expand("{release}-{release}", &values), "v2-v2");
    }

    #[test]
    fn reads_own_start_ticks() {
        let me = std::process::id() as i32;
        assert!(process_start_ticks(me).is_some());
        assert_eq!(process_start_ticks(me), process_start_ticks(me));
    }
}

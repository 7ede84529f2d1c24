//! The transport to the hosts: the system `ssh`, so the user's `~/.ssh/config`, agent,
//! known_hosts, ProxyJump and the rest apply as they do for any ssh session.
//!
//! One control master per host for the whole run (`ControlMaster=auto`, sockets in a private
//! temp dir): the preflight, the upload, the lock and the deploy of a host share one TCP
//! connection and one authentication, and `close` ends the masters when the run is over.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// ssh exits with 255 when ssh itself failed (resolve, connect, authenticate), and with the
/// remote command's status otherwise.
const SSH_FAILED: i32 = 255;
/// How long a connection may take before the host is called unreachable.
const CONNECT_TIMEOUT_S: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// ssh could not reach or log in to the host.
    #[error("ssh to {host} failed: {stderr}")]
    Unreachable { host: String, stderr: String },
    /// The remote command ran and failed.
    #[error("`{command}` on {host} exited with {status}{}", stderr_suffix(.stderr))]
    Remote {
        host: String,
        command: String,
        status: String,
        stderr: String,
    },
    #[error("ssh to {host}: {source}")]
    Io {
        host: String,
        source: std::io::Error,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

impl SshError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, SshError::Unreachable { .. } | SshError::Spawn { .. })
    }
}

/// What a remote command printed, when it succeeded.
pub struct Output {
    pub stdout: String,
}

pub struct Ssh {
    argv: Vec<String>,
    /// Holds the control sockets; removed (with whatever is left in it) on drop.
    control_dir: tempfile::TempDir,
}

impl Ssh {
    pub fn new(argv: Vec<String>) -> std::io::Result<Ssh> {
        // Control socket paths are limited to 108 bytes: a short dir, and %C (a hash) in it.
        let control_dir = tempfile::Builder::new()
            .prefix("cutover-ssh-")
            .tempdir_in("/tmp")?;
        Ok(Ssh { argv, control_dir })
    }

    fn control_path(&self) -> PathBuf {
        self.control_dir.path().join("%C")
    }

    /// `ssh [user's options] [ours] HOST -- 'quoted remote argv'`.
    fn command(&self, host: &str, remote: &[String]) -> Command {
        let mut command = Command::new(&self.argv[0]);
        command.args(&self.argv[1..]);
        command
            .arg("-o")
            .arg("BatchMode=yes")
            .arg("-o")
            .arg(format!("ConnectTimeout={CONNECT_TIMEOUT_S}"))
            .arg("-o")
            .arg("ServerAliveInterval=5")
            .arg("-o")
            .arg("ServerAliveCountMax=3")
            .arg("-o")
            .arg("ControlMaster=auto")
            .arg("-o")
            .arg(format!("ControlPath={}", self.control_path().display()))
            .arg("-o")
            .arg("ControlPersist=30")
            .arg(host)
            .arg("--")
            .arg(quote(remote));
        command.kill_on_drop(true);
        command
    }

    /// Runs `remote` on `host` and returns its stdout; `stdin` feeds it (an upload).
    pub async fn run(
        &self,
        host: &str,
        remote: &[String],
        stdin: Option<std::fs::File>,
    ) -> Result<Output, SshError> {
        let mut command = self.command(host, remote);
        command
            .stdin(stdin.map_or_else(Stdio::null, Stdio::from))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = command
            .output()
            .await
            .map_err(|source| self.spawn_error(source))?;
        let stderr = last_lines(&String::from_utf8_lossy(&output.stderr));
        check(host, remote, output.status, stderr)?;
        Ok(Output {
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        })
    }

    /// Starts `remote` on `host` with its stdin kept open (a lock held while the run lives).
    pub fn spawn_held(&self, host: &str, remote: &[String]) -> Result<Child, SshError> {
        let mut command = self.command(host, remote);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.spawn().map_err(|source| self.spawn_error(source))
    }

    /// Runs `remote` on `host`, handing each line of its stdout to `on_line` as it comes.
    pub async fn stream(
        &self,
        host: &str,
        remote: &[String],
        mut on_line: impl FnMut(&str),
    ) -> Result<(), SshError> {
        let mut command = self.command(host, remote);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|source| self.spawn_error(source))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = tokio::spawn(read_all(child.stderr.take().expect("piped")));
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => on_line(&line),
                Ok(None) => break,
                Err(source) => {
                    return Err(SshError::Io {
                        host: host.to_owned(),
                        source,
                    })
                }
            }
        }
        let status = child.wait().await.map_err(|source| SshError::Io {
            host: host.to_owned(),
            source,
        })?;
        let stderr = stderr.await.unwrap_or_default();
        check(host, remote, status, last_lines(&stderr))
    }

    /// Ends the control master of each host (they would otherwise linger `ControlPersist`).
    pub async fn close(&self, hosts: &[String]) {
        let closing = hosts.iter().map(|host| {
            let mut command = Command::new(&self.argv[0]);
            command
                .args(&self.argv[1..])
                .arg("-o")
                .arg(format!("ControlPath={}", self.control_path().display()))
                .args(["-O", "exit"])
                .arg(host)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), command.status()).await;
            }
        });
        futures_util::future::join_all(closing).await;
    }

    fn spawn_error(&self, source: std::io::Error) -> SshError {
        SshError::Spawn {
            program: self.argv[0].clone(),
            source,
        }
    }
}

/// The remote argv as one shell word list: the remote side runs it through the login shell.
fn quote(remote: &[String]) -> String {
    // Only NUL cannot be quoted; nothing cutover sends contains one.
    shlex::try_join(remote.iter().map(String::as_str)).unwrap_or_default()
}

fn check(
    host: &str,
    remote: &[String],
    status: ExitStatus,
    stderr: String,
) -> Result<(), SshError> {
    match status.code() {
        Some(0) => Ok(()),
        Some(SSH_FAILED) => Err(SshError::Unreachable {
            host: host.to_owned(),
            stderr: if stderr.is_empty() {
                "ssh exited with 255".into()
            } else {
                stderr
            },
        }),
        _ => Err(SshError::Remote {
            host: host.to_owned(),
            command: shorten(&quote(remote)),
            status: describe(status),
            stderr,
        }),
    }
}

/// A command line cut to a length an error message can carry.
fn shorten(command: &str) -> String {
    const MAX: usize = 120;
    match command.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &command[..at]),
        None => command.to_owned(),
    }
}

fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("code {code}"),
        None => "a signal".into(),
    }
}

/// The last lines of what a command printed on stderr: enough to say why, not a wall of text.
fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let from = lines.len().saturating_sub(6);
    lines[from..].join("\n")
}

async fn read_all(mut reader: impl AsyncRead + Unpin) -> String {
    let mut bytes = Vec::new();
    let _ = reader.read_to_end(&mut bytes).await;
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remote_command_survives_the_remote_shell() {
        let argv: Vec<String> = [
            "cutover",
            "--config",
            "/etc/my dir/c.toml",
            "deploy",
            "a;rm -rf /",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            shlex::split(&quote(&argv)).unwrap(),
            argv,
            "the shell must see exactly the words we sent"
        );
    }

    #[test]
    fn stderr_keeps_its_last_lines() {
        let text = (1..=10).map(|i| format!("line {i}\n")).collect::<String>();
        assert_eq!(last_lines(&text).lines().next(), Some("line 5"));
    }
}

//! The old daemon's side of `cutover upgrade`: start the new binary, hand it everything, step
//! aside. Whatever goes wrong before the new daemon serves, the old one goes on serving and the
//! new one is killed.

use super::{decode, encode, fdpass, HandedInstance, Message, Offer, Socket, HANDOFF_FD_ENV};
use crate::accept_gate::AcceptGate;
use crate::component::{Busy, ComponentRuntime, DeployClaim};
use crate::release::ReleaseId;
use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::net::UnixStream;

/// How many of the new daemon's last log lines a failed upgrade reports.
const LOG_TAIL: usize = 20;

/// How long the new daemon has to start accepting once the old one stopped.
const SERVING_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("cannot upgrade now: {0}")]
    Busy(#[from] Busy),
    #[error("cannot start the new binary {path}: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the new daemon refused to take over: {error}{}", tail(.log))]
    Refused { error: String, log: Vec<String> },
    #[error("the new daemon (pid {pid}) {status} before taking over{}", tail(.log))]
    Exited {
        pid: u32,
        status: String,
        log: Vec<String>,
    },
    #[error("the new daemon (pid {pid}) was not ready within {after:?}; killed it{}", tail(.log))]
    TimedOut {
        pid: u32,
        after: Duration,
        log: Vec<String>,
    },
    #[error("handoff to the new daemon failed: {source}{}", tail(.log))]
    Transport {
        source: std::io::Error,
        log: Vec<String>,
    },
}

fn tail(log: &[String]) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!("\nits last log lines:\n  {}", log.join("\n  "))
    }
}

/// The sockets a new daemon would take over, each a duplicate of the fd a server uses, kept
/// from start-up (the servers own theirs).
#[derive(Default)]
pub struct Sockets(Mutex<Vec<(Socket, OwnedFd)>>);

impl Sockets {
    pub fn keep(&self, socket: Socket, fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
        let fd = fd.try_clone_to_owned()?;
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|(s, _)| *s != socket);
        all.push((socket, fd));
        Ok(())
    }

    /// Stops keeping a socket (a component removed by a reload): the server's own fd is then
    /// the last, and the socket closes with it.
    pub fn forget(&self, socket: &Socket) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|(s, _)| s != socket);
    }

    fn duplicates(&self) -> std::io::Result<Vec<(Socket, OwnedFd)>> {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.iter()
            .map(|(s, fd)| Ok((s.clone(), fd.try_clone()?)))
            .collect()
    }
}

/// What the old daemon needs to hand over.
pub struct Giver<'a> {
    pub binary: &'a Path,
    pub config_path: &'a Path,
    pub config_sha256: &'a str,
    pub components: &'a [Arc<ComponentRuntime>],
    pub sockets: &'a Sockets,
    pub gate: &'a AcceptGate,
    pub timeout: Duration,
    pub socket_activated: bool,
}

/// The new daemon serves: the old one must finish its connections and exit without stopping
/// any instance. Holds the claims until then, so that nothing here changes an instance.
pub struct HandedOver {
    pub new_pid: u32,
    _claims: Vec<DeployClaim>,
}

impl Giver<'_> {
    pub async fn upgrade(&self) -> Result<HandedOver, UpgradeError> {
        // No deploy, rollback or watchdog restart may change an instance while it changes hands.
        let claims = self
            .components
            .iter()
            .map(|c| {
                let release = c
                    .serving()
                    .map(|s| s.instance.release)
                    .unwrap_or_else(|| ReleaseId::parse("none").expect("a valid id"));
                c.claim(&release, "cutover upgrade")
            })
            .collect::<Result<Vec<_>, Busy>>()?;
        let instances: Vec<HandedInstance> = self
            .components
            .iter()
            .filter_map(|c| c.serving())
            .map(|s| HandedInstance {
                component: s.instance.component.to_string(),
                id: s.instance.id,
                release: s.instance.release.to_string(),
                pid: s.instance.pid,
                start_ticks: s.instance.start_ticks,
                port: s.instance.addr.port(),
                log_path: s.instance.log_path.clone(),
            })
            .collect();

        let (parent, child_end) =
            fdpass::socketpair_for_child().map_err(|source| UpgradeError::Transport {
                source,
                log: Vec::new(),
            })?;
        let mut command = tokio::process::Command::new(self.binary);
        command
            .arg("--config")
            .arg(self.config_path)
            .arg("serve")
            .env(HANDOFF_FD_ENV, child_end.as_raw_fd().to_string())
            // systemd's activation variables name this process; the sockets come by handoff.
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_FDNAMES")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            // Its own group: a failed one is killed with whatever it started (a wrapper
            // script's children), and a terminal's Ctrl-C aimed at the old daemon spares it.
            .process_group(0)
            .kill_on_drop(false);
        // Inheritable only by this child: anything else spawned meanwhile (a service check)
        // must not hold the other end open, or this side would never see the child die.
        let child_fd = child_end.as_raw_fd();
        set_cloexec(child_fd, true).map_err(|source| UpgradeError::Transport {
            source,
            log: Vec::new(),
        })?;
        // SAFETY: only fcntl(2), async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(move || set_cloexec(child_fd, false));
        }
        let mut child = command.spawn().map_err(|source| UpgradeError::Spawn {
            path: self.binary.to_path_buf(),
            source,
        })?;
        drop(child_end);
        let pid = child.id().unwrap_or_default();
        let log = LogTail::follow(child.stderr.take());

        let result = self.hand_over(&parent, pid, instances).await;
        match result {
            Ok(()) => Ok(HandedOver {
                new_pid: pid,
                _claims: claims,
            }),
            Err(failure) => {
                self.gate.open();
                if pid > 0 {
                    // SAFETY: kill(2) of the process group this function created.
                    unsafe {
                        libc::kill(-(pid as i32), libc::SIGKILL);
                    }
                }
                let _ = child.start_kill();
                let status = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await
                {
                    Ok(Ok(status)) => describe(status),
                    _ => "did not exit".to_owned(),
                };
                // Its last words arrive as it exits.
                log.settle().await;
                Err(failure.into_error(pid, status, log.lines(), self.timeout))
            }
        }
    }

    async fn hand_over(
        &self,
        sock: &UnixStream,
        pid: u32,
        instances: Vec<HandedInstance>,
    ) -> Result<(), Failure> {
        let mut passed = self.sockets.duplicates().map_err(Failure::Io)?;
        let stderr = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_err(Failure::Io)?;
        passed.push((Socket::Stderr, stderr));
        let offer = Offer {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            config_sha256: self.config_sha256.to_owned(),
            sockets: passed.iter().map(|(s, _)| s.clone()).collect(),
            instances,
            socket_activated: self.socket_activated,
        };
        let fds: Vec<_> = passed.iter().map(|(_, fd)| fd.as_fd()).collect();
        fdpass::send(sock, &encode(&Message::Offer(offer)), &fds)
            .await
            .map_err(Failure::from_io)?;
        drop(fds);
        drop(passed);

        match tokio::time::timeout(self.timeout, receive(sock)).await {
            Err(_) => return Err(Failure::TimedOut),
            Ok(Err(e)) => return Err(Failure::from_io(e)),
            Ok(Ok(Message::Ready)) => {}
            Ok(Ok(Message::Failed { error })) => return Err(Failure::Refused(error)),
            Ok(Ok(other)) => return Err(Failure::Unexpected(other)),
        }
        self.gate.close().await;
        tracing::info!(pid, "the new daemon is ready; stopped accepting");
        fdpass::send(sock, &encode(&Message::Released), &[])
            .await
            .map_err(Failure::from_io)?;
        match tokio::time::timeout(SERVING_TIMEOUT, receive(sock)).await {
            Ok(Ok(Message::Serving)) => Ok(()),
            Err(_) => Err(Failure::TimedOut),
            Ok(Err(e)) => Err(Failure::from_io(e)),
            Ok(Ok(Message::Failed { error })) => Err(Failure::Refused(error)),
            Ok(Ok(other)) => Err(Failure::Unexpected(other)),
        }
    }
}

async fn receive(sock: &UnixStream) -> std::io::Result<Message> {
    let received = fdpass::recv(sock).await?;
    decode(&received.message)
}

enum Failure {
    Refused(String),
    Exited,
    TimedOut,
    Unexpected(Message),
    Io(std::io::Error),
}

impl Failure {
    fn from_io(e: std::io::Error) -> Failure {
        use std::io::ErrorKind::{BrokenPipe, ConnectionReset, UnexpectedEof};
        if matches!(e.kind(), UnexpectedEof | BrokenPipe | ConnectionReset) {
            Failure::Exited
        } else {
            Failure::Io(e)
        }
    }

    fn into_error(
        self,
        pid: u32,
        status: String,
        log: Vec<String>,
        timeout: Duration,
    ) -> UpgradeError {
        match self {
            Failure::Refused(error) => UpgradeError::Refused { error, log },
            Failure::Exited => UpgradeError::Exited { pid, status, log },
            Failure::TimedOut => UpgradeError::TimedOut {
                pid,
                after: timeout,
                log,
            },
            Failure::Unexpected(message) => UpgradeError::Transport {
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("unexpected message {message:?}"),
                ),
                log,
            },
            Failure::Io(source) => UpgradeError::Transport { source, log },
        }
    }
}

fn set_cloexec(fd: std::os::fd::RawFd, on: bool) -> std::io::Result<()> {
    // SAFETY: fcntl(2) on an fd this function's caller owns; no memory is passed.
    let done = unsafe { libc::fcntl(fd, libc::F_SETFD, if on { libc::FD_CLOEXEC } else { 0 }) };
    if done < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(9)) => "was killed".to_owned(),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "exited".to_owned(),
    }
}

/// The new daemon's output until it serves: passed on to ours line by line, and the last
/// [`LOG_TAIL`] lines kept to explain a failure. (Once it serves it writes to our stderr
/// itself: the fd comes with the offer.)
struct LogTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl LogTail {
    fn follow(stderr: Option<tokio::process::ChildStderr>) -> LogTail {
        let lines = Arc::new(Mutex::new(VecDeque::new()));
        let done = stderr.map(|stderr| {
            let lines = lines.clone();
            tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    eprintln!("{line}");
                    let mut kept = lines.lock().unwrap_or_else(|p| p.into_inner());
                    if kept.len() == LOG_TAIL {
                        kept.pop_front();
                    }
                    kept.push_back(line);
                }
            })
        });
        LogTail { lines, done }
    }

    /// Waits (briefly) for the output of a process that is exiting.
    async fn settle(&self) {
        if let Some(done) = &self.done {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while !done.is_finished() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    fn lines(&self) -> Vec<String> {
        let kept = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().map(|l| strip_ansi(l)).collect()
    }
}

/// Log lines may carry terminal colours; an error message must not.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

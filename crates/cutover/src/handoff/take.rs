//! The new daemon's side of `cutover upgrade`: receive the offer, take the sockets, say when
//! ready, start serving when the old daemon has let go.

use super::{decode, encode, fdpass, HandedInstance, Message, Offer, Socket, HANDOFF_FD_ENV};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use tokio::net::UnixStream;

/// A daemon started by `cutover upgrade`, until it serves.
pub struct Takeover {
    sock: UnixStream,
    pub old_pid: u32,
    pub old_version: String,
    pub config_sha256: String,
    pub instances: Vec<HandedInstance>,
    pub socket_activated: bool,
    fds: HashMap<Socket, OwnedFd>,
}

impl Takeover {
    /// The offer of the daemon that started this one, if one did (`CUTOVER_HANDOFF_FD`).
    pub async fn from_env() -> io::Result<Option<Takeover>> {
        let Ok(fd) = std::env::var(HANDOFF_FD_ENV) else {
            return Ok(None);
        };
        let fd: RawFd = fd.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{HANDOFF_FD_ENV}={fd:?} is not an fd number"),
            )
        })?;
        let sock = fdpass::from_inherited_fd(fd)?;
        let received = fdpass::recv(&sock).await?;
        let Message::Offer(offer) = decode(&received.message)? else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the old daemon sent no offer",
            ));
        };
        let Offer {
            version,
            pid,
            config_sha256,
            sockets,
            instances,
            socket_activated,
        } = offer;
        if sockets.len() != received.fds.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the offer names {} sockets but {} fds arrived",
                    sockets.len(),
                    received.fds.len()
                ),
            ));
        }
        Ok(Some(Takeover {
            sock,
            old_pid: pid,
            old_version: version,
            config_sha256,
            instances,
            socket_activated,
            fds: sockets.into_iter().zip(received.fds).collect(),
        }))
    }

    pub fn take(&mut self, socket: &Socket) -> Option<OwnedFd> {
        self.fds.remove(socket)
    }

    /// Public listeners by component name, as systemd's would be.
    pub fn take_components(&mut self) -> HashMap<String, OwnedFd> {
        let names: Vec<String> = self
            .fds
            .keys()
            .filter_map(|s| match s {
                Socket::Component(name) => Some(name.clone()),
                _ => None,
            })
            .collect();
        names
            .into_iter()
            .filter_map(|n| Some((n.clone(), self.fds.remove(&Socket::Component(n))?)))
            .collect()
    }

    /// Tells the old daemon why this one gives up (it goes on serving).
    pub async fn fail(&self, error: &str) {
        let message = Message::Failed {
            error: error.to_owned(),
        };
        let _ = fdpass::send(&self.sock, &encode(&message), &[]).await;
    }

    /// Says this daemon is ready; returns once the old one has stopped accepting, or died
    /// (end-of-file): either way nobody else accepts now.
    pub async fn ready(&self) -> io::Result<()> {
        fdpass::send(&self.sock, &encode(&Message::Ready), &[]).await?;
        match fdpass::recv(&self.sock).await {
            Ok(received) => match decode(&received.message)? {
                Message::Released => Ok(()),
                other => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("expected the old daemon to let go, got {other:?}"),
                )),
            },
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                tracing::warn!(
                    old_pid = self.old_pid,
                    "the old daemon died during the handoff; taking over on our own"
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Tells the old daemon this one accepts now, and logs where it did.
    pub async fn serving(mut self) {
        let _ = fdpass::send(&self.sock, &encode(&Message::Serving), &[]).await;
        if let Some(stderr) = self.fds.remove(&Socket::Stderr) {
            // Until now our output went through the old daemon; from here on straight to
            // where it logged (the journal, a terminal, a file).
            // SAFETY: dup2(2) onto fd 2, which this process owns; `stderr` stays valid.
            unsafe {
                libc::dup2(stderr.as_raw_fd(), libc::STDERR_FILENO);
            }
        }
    }
}

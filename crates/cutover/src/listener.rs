//! Public sockets: inherited from systemd socket activation, or bound by the daemon.
//!
//! Only the daemon owns listening sockets, and they are close-on-exec: release processes never
//! inherit them. Under socket activation (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`) each
//! socket is named after its component, so a daemon restart refuses no connection: the kernel
//! queues them on the inherited socket meanwhile.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, RawFd};
use tokio::net::{TcpListener, TcpSocket};

/// The first fd systemd passes (SD_LISTEN_FDS_START).
const LISTEN_FDS_START: RawFd = 3;

#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("cannot listen on {addr} for {component}: {source}")]
    Bind {
        component: String,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("inherited socket {name:?} (fd {fd}) is unusable: {source}")]
    Inherited {
        name: String,
        fd: RawFd,
        source: io::Error,
    },
}

/// Sockets passed by systemd, by name. Read once at start-up.
pub struct Inherited {
    by_name: HashMap<String, RawFd>,
    /// Who passed them, for the log.
    from: &'static str,
}

impl Inherited {
    /// Reads the activation environment. Sockets meant for another process (LISTEN_PID is not
    /// ours) are ignored, as sd_listen_fds(3) does.
    pub fn from_env() -> Inherited {
        Self::parse(
            std::env::var("LISTEN_PID").ok().as_deref(),
            std::env::var("LISTEN_FDS").ok().as_deref(),
            std::env::var("LISTEN_FDNAMES").ok().as_deref(),
            std::process::id(),
        )
    }

    fn parse(pid: Option<&str>, fds: Option<&str>, names: Option<&str>, me: u32) -> Inherited {
        let mut by_name = HashMap::new();
        let ours = pid.and_then(|p| p.parse::<u32>().ok()) == Some(me);
        let count = fds.and_then(|n| n.parse::<i32>().ok()).unwrap_or(0);
        if ours && count > 0 {
            let names: Vec<&str> = names.map(|n| n.split(':').collect()).unwrap_or_default();
            for i in 0..count {
                let name = names.get(i as usize).copied().unwrap_or("unknown");
                by_name.insert(name.to_owned(), LISTEN_FDS_START + i);
            }
        }
        Inherited {
            by_name,
            from: "systemd",
        }
    }

    /// The public listeners a daemon handed over on `cutover upgrade`, by component name.
    pub fn from_handoff(fds: HashMap<String, std::os::fd::OwnedFd>) -> Inherited {
        use std::os::fd::IntoRawFd;
        Inherited {
            by_name: fds
                .into_iter()
                .map(|(n, fd)| (n, fd.into_raw_fd()))
                .collect(),
            from: "the previous daemon",
        }
    }

    /// No inherited sockets (for listeners systemd does not pass, like the admin one).
    pub fn none() -> Inherited {
        Inherited {
            by_name: HashMap::new(),
            from: "nobody",
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Takes the socket named after `component`; must be called inside the tokio runtime.
    fn take(&mut self, component: &str) -> Result<Option<TcpListener>, ListenerError> {
        let Some(fd) = self.by_name.remove(component) else {
            return Ok(None);
        };
        let err = |source| ListenerError::Inherited {
            name: component.to_owned(),
            fd,
            source,
        };
        // SAFETY: systemd (or the previous daemon) handed us this fd for exactly this use;
        // nothing else in this process owns it.
        unsafe {
            if libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) < 0 {
                return Err(err(io::Error::last_os_error()));
            }
        }
        let std_listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        std_listener.set_nonblocking(true).map_err(err)?;
        TcpListener::from_std(std_listener).map(Some).map_err(err)
    }

    /// Names that no component claimed (a mistake in the .socket unit worth a warning).
    pub fn unclaimed(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }

    pub fn passed_by(&self) -> &'static str {
        self.from
    }
}

/// The listener for a component: inherited if systemd passed one with its name, else bound.
pub fn open(
    component: &str,
    addr: SocketAddr,
    inherited: &mut Inherited,
) -> Result<TcpListener, ListenerError> {
    if let Some(listener) = inherited.take(component)? {
        tracing::info!(component, "using the socket passed by {}", inherited.from);
        return Ok(listener);
    }
    bind(component, addr)
}

fn bind(component: &str, addr: SocketAddr) -> Result<TcpListener, ListenerError> {
    let err = |source| ListenerError::Bind {
        component: component.to_owned(),
        addr,
        source,
    };
    // tokio creates sockets with SOCK_CLOEXEC.
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    // A deep backlog: during a daemon restart, connections wait here instead of being refused.
    socket.listen(4096).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_names_to_fds_only_for_our_pid() {
        let got = Inherited::parse(Some("42"), Some("2"), Some("backend:frontend"), 42);
        assert_eq!(got.by_name.get("backend"), Some(&3));
        assert_eq!(got.by_name.get("frontend"), Some(&4));
        let other = Inherited::parse(Some("41"), Some("2"), Some("backend:frontend"), 42);
        assert!(other.is_empty());
        let none = Inherited::parse(None, None, None, 42);
        assert!(none.is_empty());
    }

    #[tokio::test]
    async fn bound_sockets_are_close_on_exec() {
        let listener = bind("api", "127.0.0.1:0".parse().unwrap()).unwrap();
        use std::os::fd::AsRawFd;
        let flags = unsafe { libc::fcntl(listener.as_raw_fd(), libc::F_GETFD) };
        assert!(flags & libc::FD_CLOEXEC != 0);
    }
}

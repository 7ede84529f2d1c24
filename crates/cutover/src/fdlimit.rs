//! The file-descriptor budget: how many connections each listener may hold open at once.
//!
//! Why: a daemon that runs out of fds cannot accept on any socket, open SQLite, write a log or
//! reach an upstream; before this, 1,100 slow clients under `ulimit -n 1024` froze the public
//! ports and the control socket together. So the daemon raises its soft RLIMIT_NOFILE to the
//! hard limit at start, keeps a fixed reserve for its own work, and splits the rest among the
//! public listeners; each listener stops accepting at its cap (see [`crate::conn_limit`]).

use crate::config::Config;
use crate::conn_limit::ConnLimit;
use crate::conn_limit::Limits;
use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// fds the daemon needs whatever the traffic: stdio, the tokio runtime, listening sockets,
/// the data-dir lock, SQLite (database, WAL, shared memory, journals), instance log files,
/// pidfds, health probes, uploads and bundle unpacking during a deploy, webhooks.
const RESERVED_FDS: u64 = 64;
/// Per component on top of that: its instances' pidfds and logs, an old and a new one during a
/// deploy, and their health probes.
const RESERVED_FDS_PER_COMPONENT: u64 = 8;
/// Concurrent control-socket connections (CLI calls; a deploy keeps one open while it runs).
pub const CONTROL_CONNECTIONS: usize = 32;
/// Concurrent admin-listener connections (metrics scrapers, health checks).
pub const ADMIN_CONNECTIONS: usize = 16;
/// A proxied request holds the client's connection and one to the upstream; a static one the
/// client's connection and the file it sends.
const FDS_PER_PUBLIC_CONNECTION: u64 = 2;

/// Raises the fd limit and sizes every listener's cap for `config`; logs the result.
pub fn budget_for(config: &Config) -> Budget {
    let fd_limit = raise_to_hard_limit();
    let public = config
        .components
        .iter()
        .filter(|c| c.listen.is_some())
        .count()
        + usize::from(config.front.http.is_some())
        + usize::from(config.front.https.is_some());
    let budget = Budget::new(
        fd_limit,
        public,
        config.components.len(),
        config.daemon.max_connections,
    );
    tracing::info!(
        "connection caps: {} per public listener, {} control, {} admin; request bodies idle \
         for {} are cut off",
        budget.public_per_listener,
        budget.control,
        budget.admin,
        config.daemon.body_read_timeout
    );
    budget
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (an unprivileged process may) and returns
/// the limit now in force.
pub fn raise_to_hard_limit() -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    let _ = INHERITED_SOFT_LIMIT.set(soft);
    // An unlimited hard limit cannot be the soft one: the kernel caps fds at fs.nr_open.
    let target = if hard == nix::libc::RLIM_INFINITY {
        nr_open().unwrap_or(soft)
    } else {
        hard
    };
    if target <= soft {
        tracing::info!("file descriptor limit: {soft}");
        return soft;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
        Ok(()) => {
            tracing::info!("file descriptor limit: {target} (soft limit raised from {soft})");
            target
        }
        Err(e) => {
            tracing::warn!("file descriptor limit: {soft} (cannot raise it to {target}: {e})");
            soft
        }
    }
}

/// The soft limit the daemon was started with, before [`raise_to_hard_limit`].
static INHERITED_SOFT_LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// The soft limit releases get: the one the daemon inherited, not the one it raised for its own
/// sockets. Programs built around select(2) break past 1024 fds, which is why systemd starts
/// services with a soft limit of 1024 and lets those that can use more raise it themselves.
pub fn release_soft_limit() -> Option<u64> {
    INHERITED_SOFT_LIMIT.get().copied()
}

fn nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How many connections each kind of listener may hold open at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// For each public (component) listener.
    pub public_per_listener: usize,
    pub control: usize,
    pub admin: usize,
}

impl Budget {
    /// The caps for `fd_limit`, `public_listeners` public sockets and `components` components;
    /// `configured` (`[daemon] max_connections`) overrides the derived public cap.
    pub fn new(
        fd_limit: u64,
        public_listeners: usize,
        components: usize,
        configured: Option<usize>,
    ) -> Budget {
        let reserved = RESERVED_FDS
            + RESERVED_FDS_PER_COMPONENT * components as u64
            + (CONTROL_CONNECTIONS + ADMIN_CONNECTIONS) as u64;
        let public_fds = fd_limit.saturating_sub(reserved);
        let listeners = public_listeners.max(1) as u64;
        let derived = (public_fds / FDS_PER_PUBLIC_CONNECTION / listeners).max(1);
        let derived = usize::try_from(derived).unwrap_or(usize::MAX);
        let public_per_listener = configured.unwrap_or(derived);
        if public_fds == 0 {
            tracing::warn!(
                "file descriptor limit {fd_limit} leaves nothing for connections after the \
                 {reserved} the daemon reserves; raise it (LimitNOFILE=)"
            );
        } else if configured.is_some_and(|n| n > derived) {
            tracing::warn!(
                "max_connections = {public_per_listener} per listener needs more file \
                 descriptors than the limit {fd_limit} leaves ({derived} fit): under load, \
                 upstream connections and the control socket may fail; raise LimitNOFILE="
            );
        }
        Budget {
            public_per_listener,
            control: CONTROL_CONNECTIONS,
            admin: ADMIN_CONNECTIONS,
        }
    }
}

impl Budget {
    /// A fresh cap for one public listener; `body_read_timeout` is the daemon's, shared by
    /// every listener (a reload changes it for all).
    pub fn public_limits(&self, body_read_timeout: &crate::live::LiveDuration) -> Limits {
        Limits {
            connections: ConnLimit::new(self.public_per_listener),
            body_read_timeout: body_read_timeout.clone(),
        }
    }

    pub fn admin_limits(&self, config: &Config) -> Limits {
        Limits {
            connections: ConnLimit::new(self.admin),
            body_read_timeout: crate::live::LiveDuration::new(
                config.daemon.body_read_timeout.get(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_caps_leave_the_reserve_free() {
        let budget = Budget::new(1024, 2, 2, None);
        let public_fds = 2 * budget.public_per_listener as u64 * FDS_PER_PUBLIC_CONNECTION;
        let reserve = 1024 - public_fds;
        assert!(reserve >= RESERVED_FDS + 2 * RESERVED_FDS_PER_COMPONENT + 48);
        assert_eq!(budget.public_per_listener, (1024 - 64 - 16 - 48) / 2 / 2);
    }

    #[test]
    fn configured_cap_wins_and_tiny_limits_still_accept() {
        assert_eq!(Budget::new(1024, 1, 1, Some(10)).public_per_listener, 10);
        assert_eq!(Budget::new(64, 3, 3, None).public_per_listener, 1);
        // A hook-only config has no public listener: no division by zero.
        assert!(Budget::new(1024, 0, 1, None).public_per_listener > 0);
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert!(raise_to_hard_limit() >= soft);
    }
}

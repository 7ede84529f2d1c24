//! `cutover upgrade`: the running daemon hands its sockets and its running instances to a new
//! daemon process (usually a newer binary) without closing a socket or restarting an instance.
//!
//! The exchange, over a socketpair the new process inherits (`CUTOVER_HANDOFF_FD`):
//!
//! 1. old → new `Offer`, carrying by SCM_RIGHTS the data_dir lock, the control socket, the admin
//!    and every public listener, and the old daemon's stderr; with the serving instances.
//! 2. The new daemon loads the config (it must be the one the old runs), opens the state database
//!    (migrating it forward if it is newer), adopts each serving instance after a health probe,
//!    and answers `Ready` (or `Failed` with why, and exits).
//! 3. The old daemon stops accepting (waits until no accept loop is inside `accept`), and answers
//!    `Released`. Connections arriving meanwhile wait in the kernel's queue: no socket closes.
//! 4. The new daemon starts accepting and answers `Serving`. The old one finishes its in-flight
//!    requests (up to the drain timeout) and exits without stopping any instance.
//!
//! Either side dying is seen as end-of-file: before `Released` the old daemon simply goes on
//! (opens its gate again if it had closed it); after it, the new one serves on its own.

pub mod fdpass;
pub mod give;
pub mod take;

use serde::{Deserialize, Serialize};

/// The environment variable naming the new daemon's end of the handoff socket.
pub const HANDOFF_FD_ENV: &str = "CUTOVER_HANDOFF_FD";

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    Offer(Offer),
    Ready,
    Failed { error: String },
    Released,
    Serving,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Offer {
    pub version: String,
    pub pid: u32,
    /// The config the old daemon runs: the new one must load the same (else `cutover reload`
    /// first), so that every socket handed over has a component to serve it.
    pub config_sha256: String,
    /// What each passed fd is, in the order they were passed.
    pub sockets: Vec<Socket>,
    pub instances: Vec<HandedInstance>,
    /// Whether systemd passed the old daemon its public sockets (the new one inherits that).
    #[serde(default)]
    pub socket_activated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "role", content = "name", rename_all = "snake_case")]
pub enum Socket {
    /// The open file description that holds the data_dir's flock: sharing it passes the lock.
    Lock,
    /// Where the old daemon logs; the new one writes there once it serves.
    Stderr,
    Control,
    Admin,
    Component(String),
}

/// A serving instance: the new daemon adopts it (it keeps running).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HandedInstance {
    pub component: String,
    pub id: i64,
    pub release: String,
    pub pid: i32,
    /// With the pid, identifies the process even if the pid was reused.
    pub start_ticks: u64,
    pub port: u16,
    pub log_path: std::path::PathBuf,
}

/// Messages are JSON; the framing and the fds are `fdpass`'s.
fn encode(message: &Message) -> Vec<u8> {
    serde_json::to_vec(message).expect("handoff messages serialize")
}

fn decode(bytes: &[u8]) -> std::io::Result<Message> {
    serde_json::from_slice(bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("malformed handoff message: {e}"),
        )
    })
}

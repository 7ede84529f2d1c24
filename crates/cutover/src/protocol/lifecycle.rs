//! The control API's requests and answers for changes to the daemon itself: reload, upgrade.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `cutover reload`: re-read the config and apply it live.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    pub who: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReloadResponse {
    /// One line per change, saying when it applies.
    pub lines: Vec<String>,
    /// As recorded in the history.
    pub summary: String,
}

/// How long `cutover upgrade` gives the new daemon to be ready (adopt and probe every
/// instance) before killing it.
pub const DEFAULT_UPGRADE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The most `--timeout` may ask: the CLI waits 60 s for an answer.
pub const MAX_UPGRADE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(50);

/// `cutover upgrade`: hand the daemon's sockets and instances to a new daemon process.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeRequest {
    /// The new binary; none: the one the daemon was started from.
    pub binary: Option<PathBuf>,
    /// How long the new daemon gets to be ready; none: [`DEFAULT_UPGRADE_TIMEOUT`].
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    pub who: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UpgradeResponse {
    pub old_pid: u32,
    pub new_pid: u32,
}

//! How a migration command runs ([`Options`]) and what it reports as it goes ([`Progress`]).

use super::files::Direction;
use super::lock::LockHolder;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// How a migration command runs.
#[derive(Clone)]
pub struct Options {
    /// How long to wait for the migration lock (the `lock_timeout` of the config).
    pub lock_timeout: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// Run `up` even though an already-applied file changed (its new checksum is recorded).
    pub allow_changed: bool,
    /// Called at each step, for progress events.
    pub progress: Option<ProgressFn>,
}

impl Options {
    pub fn new(lock_timeout: Duration) -> Options {
        Options {
            lock_timeout,
            connect_timeout: Duration::from_secs(10),
            allow_changed: false,
            progress: None,
        }
    }

    pub(crate) fn report(&self, progress: Progress) {
        if let Some(callback) = &self.progress {
            callback(&progress);
        }
    }
}

impl Default for Options {
    fn default() -> Options {
        Options::new(Duration::from_secs(60))
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("lock_timeout", &self.lock_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("allow_changed", &self.allow_changed)
            .field("progress", &self.progress.as_ref().map(|_| "callback"))
            .finish()
    }
}

/// What a running migration command is doing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    /// Another session holds the lock; waiting up to `lock_timeout`.
    WaitingForLock {
        holders: Vec<LockHolder>,
    },
    LockAcquired,
    /// About to run `file` (none: golang-migrate's version move without a file).
    Running {
        version: u64,
        direction: Direction,
        file: Option<String>,
    },
    Done(Step),
}

/// One migration that ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub version: u64,
    pub direction: Direction,
    /// The file name; `None` when the version had no file for this direction.
    pub file: Option<String>,
    /// The database's version after this step.
    pub now_at: Option<u64>,
    pub duration_ms: f64,
}

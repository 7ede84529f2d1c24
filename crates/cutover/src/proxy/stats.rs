//! What one upstream answered, counted per request: read by stabilization and status.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Counters of what one upstream answered; read by stabilization and status.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    pub requests: AtomicU64,
    /// Responses with a 5xx status.
    pub server_errors: AtomicU64,
    /// Requests that got no response at all (connection refused, reset).
    pub connect_errors: AtomicU64,
    /// Requests whose response headers did not come within `upstream_timeout` (answered 504).
    pub timeouts: AtomicU64,
    /// Responses cut short: the body ended before its declared length or last chunk, or the
    /// connection broke mid-body. The client already had the head, so only we can count it.
    pub broken_bodies: AtomicU64,
    /// Requests sent that have no response headers yet.
    waiting: AtomicUsize,
    /// When a response head last arrived, or waiting went from none to some (ms on
    /// [`clock_ms`]): with `waiting`, says how long the instance has answered nothing.
    last_progress_ms: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub failed: u64,
}

impl UpstreamStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let unanswered =
            self.connect_errors.load(Ordering::Relaxed) + self.timeouts.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed) + unanswered,
            failed: self.server_errors.load(Ordering::Relaxed)
                + unanswered
                + self.broken_bodies.load(Ordering::Relaxed),
        }
    }

    // The time is stored before the count changes, so a check never sees a request waiting
    // with a timestamp older than its wait.
    fn begin_wait(&self) {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            self.last_progress_ms.store(clock_ms(), Ordering::SeqCst);
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
    }

    fn end_wait(&self, answered: bool) {
        // Progress matters only to requests still waiting: when none is, the next wait starts
        // the clock afresh (and the common case reads no clock at all).
        if answered && self.waiting.load(Ordering::SeqCst) > 1 {
            self.last_progress_ms.store(clock_ms(), Ordering::SeqCst);
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }

    /// Requests waiting for response headers, and for how long no response head has arrived
    /// while some waited; None when nothing waits.
    pub fn stall(&self) -> Option<(usize, Duration)> {
        let waiting = self.waiting.load(Ordering::SeqCst);
        if waiting == 0 {
            return None;
        }
        let since = self.last_progress_ms.load(Ordering::SeqCst);
        Some((
            waiting,
            Duration::from_millis(clock_ms().saturating_sub(since)),
        ))
    }
}

/// Milliseconds on a monotonic clock local to this process (atomics cannot hold an `Instant`).
fn clock_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Counts one request as waiting for its response head until dropped (a client that goes
/// away mid-wait drops the future, and with it this).
pub(super) struct WaitGuard<'a> {
    stats: &'a UpstreamStats,
    pub(super) answered: bool,
}

impl<'a> WaitGuard<'a> {
    pub(super) fn new(stats: &'a UpstreamStats) -> Self {
        stats.begin_wait();
        WaitGuard {
            stats,
            answered: false,
        }
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.stats.end_wait(self.answered);
    }
}

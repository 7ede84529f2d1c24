//! Settings `cutover reload` changes under tasks that are already running (every open
//! connection's body timeout, the log rotation loop): one shared atomic each, read where used.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A duration every holder sees change at once.
#[derive(Clone, Debug)]
pub struct LiveDuration(Arc<AtomicU64>);

impl LiveDuration {
    pub fn new(value: Duration) -> LiveDuration {
        LiveDuration(Arc::new(AtomicU64::new(millis(value))))
    }

    pub fn get(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed))
    }

    pub fn set(&self, value: Duration) {
        self.0.store(millis(value), Ordering::Relaxed);
    }
}

fn millis(value: Duration) -> u64 {
    u64::try_from(value.as_millis()).unwrap_or(u64::MAX)
}

/// A count (bytes) every holder sees change at once.
#[derive(Clone, Debug)]
pub struct LiveCount(Arc<AtomicU64>);

impl LiveCount {
    pub fn new(value: u64) -> LiveCount {
        LiveCount(Arc::new(AtomicU64::new(value)))
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

/// The daemon's live settings, as the config running now says.
#[derive(Clone, Debug)]
pub struct LiveSettings {
    pub body_read_timeout: LiveDuration,
    pub log_max_size: LiveCount,
}

impl LiveSettings {
    pub fn new(config: &crate::config::Config) -> LiveSettings {
        LiveSettings {
            body_read_timeout: LiveDuration::new(config.daemon.body_read_timeout.get()),
            log_max_size: LiveCount::new(config.daemon.log_max_size),
        }
    }

    /// After a reload: every running connection and task uses the new values from now on.
    pub fn apply(&self, config: &crate::config::Config) {
        self.body_read_timeout
            .set(config.daemon.body_read_timeout.get());
        self.log_max_size.set(config.daemon.log_max_size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_clone_sees_a_change() {
        let timeout = LiveDuration::new(Duration::from_secs(30));
        let held = timeout.clone();
        timeout.set(Duration::from_millis(1500));
        assert_eq!(held.get(), Duration::from_millis(1500));
        let size = LiveCount::new(10);
        let held = size.clone();
        size.set(20);
        assert_eq!(held.get(), 20);
    }
}

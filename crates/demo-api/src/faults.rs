//! Fault injection (`DEMO_*` knobs), so deploys can be exercised against a
//! backend that crashes, turns unhealthy or fails some requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::Config;

pub struct Faults {
    started: Instant,
    fail_after: Option<Duration>,
    error_rate: f64,
    /// xorshift64 state; quality and cross-thread races don't matter here.
    rng: AtomicU64,
}

impl Faults {
    pub fn new(config: &Config, started: Instant) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Faults {
            started,
            fail_after: config.fail_after,
            error_rate: config.error_rate,
            // xorshift must never be seeded with 0.
            rng: AtomicU64::new(nanos | 1),
        }
    }

    /// `DEMO_FAIL_AFTER_MS` has elapsed: every request, health checks included, fails.
    pub fn failing(&self) -> bool {
        self.fail_after
            .is_some_and(|after| self.started.elapsed() >= after)
    }

    /// Rolls the dice for `DEMO_ERROR_RATE`.
    pub fn inject_error(&self) -> bool {
        self.error_rate > 0.0 && self.next_unit() < self.error_rate
    }

    /// Uniform in [0, 1).
    fn next_unit(&self) -> f64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `DEMO_CRASH_AFTER_MS`: die abruptly, without draining anything.
pub fn spawn_crash_timer(after: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        eprintln!("crashing on purpose");
        std::process::exit(3);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(vars: &[(&str, &str)]) -> Faults {
        Faults::new(&Config::from_pairs(vars).unwrap(), Instant::now())
    }

    #[test]
    fn error_rate_extremes_and_middle() {
        let never = faults(&[("DEMO_ERROR_RATE", "0")]);
        let always = faults(&[("DEMO_ERROR_RATE", "1")]);
        assert!((0..1000).all(|_| !never.inject_error() && always.inject_error()));

        let half = faults(&[("DEMO_ERROR_RATE", "0.5")]);
        let hits = (0..10_000).filter(|_| half.inject_error()).count();
        assert!((4_000..6_000).contains(&hits), "{hits}");
    }

    #[test]
    fn fail_after() {
        assert!(faults(&[("DEMO_FAIL_AFTER_MS", "0")]).failing());
        assert!(!faults(&[("DEMO_FAIL_AFTER_MS", "60000")]).failing());
        assert!(!faults(&[]).failing());
    }
}

//! When to order a certificate (pure: times in, a time out).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Two thirds into the lifetime: for Let's Encrypt's 90 days, 30 days before expiry, which
/// leaves weeks of retries before clients see an expired certificate.
pub fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    not_before + lifetime * 2 / 3
}

/// How long to wait after consecutive failures: `min`, doubling, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            min: Duration::from_secs(60),
            max: Duration::from_secs(6 * 3600),
        }
    }
}

impl Backoff {
    /// The wait after the `failures`-th failure in a row (1 is the first).
    pub fn after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.min.saturating_mul(1 << doublings).min(self.max)
    }
}

/// What the schedule needs to know about one wanted certificate.
pub(super) struct Due {
    /// The stored certificate's validity, when there is one that covers every wanted host.
    pub valid: Option<(SystemTime, SystemTime)>,
    /// Consecutive failures and when the last one ended.
    pub failures: u32,
    pub last_failure: Option<SystemTime>,
}

/// When the next order should start: after a failure, once its backoff has passed; with no
/// usable certificate, now (the epoch, which is never in the future); else at two thirds of
/// its lifetime.
pub(super) fn next_attempt(due: &Due, backoff: &Backoff) -> SystemTime {
    if let (true, Some(failed)) = (due.failures > 0, due.last_failure) {
        return failed + backoff.after(due.failures);
    }
    match due.valid {
        Some((not_before, not_after)) => renew_at(not_before, not_after),
        None => UNIX_EPOCH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn renews_at_two_thirds_of_the_lifetime() {
        let from = UNIX_EPOCH + 1000 * DAY;
        assert_eq!(renew_at(from, from + 90 * DAY), from + 60 * DAY);
        // A certificate that ends before it starts is renewed at once (its start).
        assert_eq!(renew_at(from, from - DAY), from);
    }

    #[test]
    fn backoff_doubles_from_min_up_to_max() {
        let backoff = Backoff::default();
        let minutes: Vec<u64> = (1..=11).map(|n| backoff.after(n).as_secs() / 60).collect();
        assert_eq!(minutes, [1, 2, 4, 8, 16, 32, 64, 128, 256, 360, 360]);
        assert_eq!(backoff.after(u32::MAX), backoff.max);
        assert_eq!(backoff.after(0), backoff.min);
    }

    #[test]
    fn next_attempt_is_now_without_a_certificate_then_backs_off_then_renews() {
        let backoff = Backoff::default();
        let t = UNIX_EPOCH + 1000 * DAY;
        let missing = Due {
            valid: None,
            failures: 0,
            last_failure: None,
        };
        assert_eq!(next_attempt(&missing, &backoff), UNIX_EPOCH);
        let failed_twice = Due {
            failures: 2,
            last_failure: Some(t),
            ..missing
        };
        assert_eq!(next_attempt(&failed_twice, &backoff), t + 2 * backoff.min);
        let issued = Due {
            valid: Some((t, t + 90 * DAY)),
            failures: 0,
            last_failure: None,
        };
        assert_eq!(next_attempt(&issued, &backoff), t + 60 * DAY);
    }
}

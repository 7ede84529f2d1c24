//! The watchdog's decisions, without I/O: what to do about the serving instance given probe
//! results, exits and restarts, and the time they happened. The runner ([`super`]) feeds it
//! inputs and carries out the effects it returns.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The knobs of one component (health config, `stabilize_checks`, `restart`).
#[derive(Clone, Debug)]
pub struct Policy {
    /// Failed probes in a row that make a live instance unhealthy.
    pub unhealthy_threshold: u32,
    /// Restarts within `window` before a rollback is due.
    pub max_restarts: u32,
    pub window: Duration,
    pub rollback: bool,
}

/// Delay before the first restart after the one immediately following a failure; it doubles
/// with each further restart within the window, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A health probe of the watched instance passed or failed.
    Probe { ok: bool },
    /// The watched instance's process ended.
    Exited,
    /// A restart (or rollback) could not bring up a healthy instance.
    RestartFailed,
    /// A restart or rollback put a healthy instance in place (it passed the health gate).
    Replaced { rolled_back: bool },
    /// Someone else (a deploy) now serves another instance: start over.
    Reset,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Announce that the instance turned unhealthy (status, metrics, webhook).
    ReportUnhealthy,
    /// Announce that it is healthy again.
    ReportRecovered,
    /// Replace the instance after `delay`: with the same release, or (`roll_back`) with the
    /// previous one because `restarts` restarts within the window did not help.
    Restart {
        delay: Duration,
        roll_back: bool,
        restarts: u32,
    },
}

/// What the watchdog knows about the instance it watches.
#[derive(Clone, Debug)]
pub struct Watch {
    policy: Policy,
    failures: u32,
    unhealthy: bool,
    /// When each restart within the window was started.
    restarts: VecDeque<Instant>,
    /// The last restart asked for was a rollback.
    rolling_back: bool,
    /// A rollback was tried and failed: plain restarts from then on, until something serves.
    rollback_failed: bool,
}

impl Watch {
    pub fn new(policy: Policy) -> Watch {
        Watch {
            policy,
            failures: 0,
            unhealthy: false,
            restarts: VecDeque::new(),
            rolling_back: false,
            rollback_failed: false,
        }
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    pub fn is_unhealthy(&self) -> bool {
        self.unhealthy
    }

    /// Restarts within the window ending at `now`.
    pub fn restarts_within_window(&self, now: Instant) -> u32 {
        self.restarts
            .iter()
            .filter(|t| now.duration_since(**t) < self.policy.window)
            .count() as u32
    }

    pub fn apply(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        match input {
            Input::Probe { ok: true } => {
                self.failures = 0;
                self.recovered()
            }
            Input::Probe { ok: false } => {
                self.failures = self.failures.saturating_add(1);
                if self.unhealthy || self.failures < self.policy.unhealthy_threshold {
                    return Vec::new();
                }
                self.unhealthy = true;
                vec![Effect::ReportUnhealthy, self.restart(now)]
            }
            Input::Exited => {
                let mut effects = Vec::new();
                if !self.unhealthy {
                    self.unhealthy = true;
                    effects.push(Effect::ReportUnhealthy);
                }
                effects.push(self.restart(now));
                effects
            }
            Input::RestartFailed => {
                // One failed rollback is enough: trying again every backoff would fill history
                // and the webhooks with the same failure.
                self.rollback_failed |= self.rolling_back;
                vec![self.restart(now)]
            }
            Input::Replaced { rolled_back } => {
                self.failures = 0;
                self.rollback_failed = false;
                if rolled_back {
                    // Another release: its own count starts now.
                    self.restarts.clear();
                }
                self.recovered()
            }
            Input::Reset => {
                self.failures = 0;
                self.unhealthy = false;
                self.restarts.clear();
                self.rollback_failed = false;
                Vec::new()
            }
        }
    }

    fn recovered(&mut self) -> Vec<Effect> {
        if std::mem::take(&mut self.unhealthy) {
            vec![Effect::ReportRecovered]
        } else {
            Vec::new()
        }
    }

    /// The next restart: immediate the first time in a window, then with a doubling backoff so a
    /// release that crashes at once cannot spin; a rollback once `max_restarts` did not help.
    fn restart(&mut self, now: Instant) -> Effect {
        let window = self.policy.window;
        self.restarts.retain(|t| now.duration_since(*t) < window);
        let before = self.restarts.len() as u32;
        let roll_back =
            self.policy.rollback && !self.rollback_failed && before >= self.policy.max_restarts;
        self.rolling_back = roll_back;
        let delay = match before {
            // The first restart, and the first try of a rollback to a release that was fine
            // before, go at once; a rollback that keeps failing backs off like restarts do.
            0 => Duration::ZERO,
            n if roll_back && n == self.policy.max_restarts => Duration::ZERO,
            n => FIRST_BACKOFF
                .saturating_mul(1u32 << (n - 1).min(16))
                .min(MAX_BACKOFF),
        };
        self.restarts.push_back(now);
        Effect::Restart {
            delay,
            roll_back,
            restarts: before,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_rollback_is_not_tried_again_until_something_serves() {
        let mut watch = Watch::new(policy());
        let t = Instant::now();
        let mut effects = watch.apply(Input::Exited, t);
        for _ in 0..3 {
            effects = watch.apply(Input::RestartFailed, t);
        }
        assert!(
            matches!(
                effects.last(),
                Some(Effect::Restart {
                    roll_back: true,
                    ..
                })
            ),
            "{effects:?}"
        );
        // The rollback fails: back to restarts of the same release, with backoff.
        let effects = watch.apply(Input::RestartFailed, t);
        assert!(
            matches!(effects.last(), Some(Effect::Restart { roll_back: false, delay, .. }) if !delay.is_zero()),
            "{effects:?}"
        );
        let effects = watch.apply(Input::RestartFailed, t);
        assert!(matches!(
            effects.last(),
            Some(Effect::Restart {
                roll_back: false,
                ..
            })
        ));
        // Once an instance serves again, a later crash loop may roll back once more.
        watch.apply(Input::Replaced { rolled_back: false }, t);
        assert!(!watch.rollback_failed);
    }

    fn policy() -> Policy {
        Policy {
            unhealthy_threshold: 3,
            max_restarts: 3,
            window: Duration::from_secs(60),
            rollback: true,
        }
    }

    fn restart(effects: &[Effect]) -> (Duration, bool) {
        match effects.last() {
            Some(Effect::Restart {
                delay, roll_back, ..
            }) => (*delay, *roll_back),
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    #[test]
    fn unhealthy_after_threshold_failures_in_a_row_only() {
        let mut watch = Watch::new(policy());
        let t = Instant::now();
        let fail = Input::Probe { ok: false };
        assert!(watch.apply(fail.clone(), t).is_empty());
        assert!(watch.apply(fail.clone(), t).is_empty());
        // A success in between starts the count again.
        assert!(watch.apply(Input::Probe { ok: true }, t).is_empty());
        assert!(watch.apply(fail.clone(), t).is_empty());
        assert!(watch.apply(fail.clone(), t).is_empty());
        let effects = watch.apply(fail.clone(), t);
        assert_eq!(effects[0], Effect::ReportUnhealthy);
        assert_eq!(restart(&effects), (Duration::ZERO, false));
        assert!(watch.is_unhealthy());
        assert_eq!(watch.consecutive_failures(), 3);
        // Further failures while the restart is under way decide nothing new.
        assert!(watch.apply(fail, t).is_empty());
    }

    #[test]
    fn an_exit_is_unhealthy_at_once_and_a_replacement_recovers() {
        let mut watch = Watch::new(policy());
        let t = Instant::now();
        let effects = watch.apply(Input::Exited, t);
        assert_eq!(effects[0], Effect::ReportUnhealthy);
        assert_eq!(restart(&effects), (Duration::ZERO, false));
        assert_eq!(
            watch.apply(Input::Replaced { rolled_back: false }, t),
            [Effect::ReportRecovered]
        );
        assert!(!watch.is_unhealthy());
        // A probe passing after a probe failure (below threshold) reports nothing.
        watch.apply(Input::Probe { ok: false }, t);
        assert!(watch.apply(Input::Probe { ok: true }, t).is_empty());
    }

    #[test]
    fn a_live_instance_that_answers_again_recovers_by_itself() {
        let mut watch = Watch::new(Policy {
            unhealthy_threshold: 1,
            ..policy()
        });
        let t = Instant::now();
        watch.apply(Input::Probe { ok: false }, t);
        assert_eq!(
            watch.apply(Input::Probe { ok: true }, t),
            [Effect::ReportRecovered]
        );
    }

    #[test]
    fn restarts_back_off_then_roll_back_after_max_restarts_in_the_window() {
        let mut watch = Watch::new(policy());
        let t = Instant::now();
        let mut delays = Vec::new();
        for i in 0..3 {
            let now = t + Duration::from_secs(i);
            delays.push(restart(&watch.apply(Input::Exited, now)));
            watch.apply(Input::Replaced { rolled_back: false }, now);
        }
        assert_eq!(
            delays,
            [
                (Duration::ZERO, false),
                (Duration::from_millis(500), false),
                (Duration::from_secs(1), false)
            ]
        );
        assert_eq!(watch.restarts_within_window(t + Duration::from_secs(3)), 3);
        let (delay, roll_back) = restart(&watch.apply(Input::Exited, t + Duration::from_secs(3)));
        assert!(roll_back, "the fourth failure within the window rolls back");
        assert_eq!(delay, Duration::ZERO);
        // A rollback that cannot start its release is not tried again: plain restarts, backing
        // off (see a_failed_rollback_is_not_tried_again_until_something_serves).
        let mut failed = watch.clone();
        let retry = restart(&failed.apply(Input::RestartFailed, t + Duration::from_secs(4)));
        assert_eq!(retry, (Duration::from_secs(4), false));
        // The rolled-back release starts with a clean count.
        watch.apply(Input::Replaced { rolled_back: true }, t);
        assert_eq!(
            restart(&watch.apply(Input::Exited, t + Duration::from_secs(4))),
            (Duration::ZERO, false)
        );
    }

    #[test]
    fn restarts_outside_the_window_are_forgotten() {
        let mut watch = Watch::new(policy());
        let t = Instant::now();
        for i in 0..3 {
            watch.apply(Input::Exited, t + Duration::from_secs(i));
            watch.apply(Input::Replaced { rolled_back: false }, t);
        }
        // Long after: an isolated crash is restarted at once, no rollback.
        let later = t + Duration::from_secs(3600);
        assert_eq!(
            restart(&watch.apply(Input::Exited, later)),
            (Duration::ZERO, false)
        );
    }

    #[test]
    fn without_rollback_it_keeps_restarting_with_a_capped_backoff() {
        let mut watch = Watch::new(Policy {
            rollback: false,
            window: Duration::from_secs(3600),
            ..policy()
        });
        let t = Instant::now();
        let mut last = (Duration::ZERO, false);
        for i in 0..20 {
            last = restart(&watch.apply(Input::RestartFailed, t + Duration::from_secs(i)));
            assert!(!last.1);
        }
        assert_eq!(last.0, MAX_BACKOFF);
    }

    #[test]
    fn a_reset_forgets_everything() {
        let mut watch = Watch::new(policy());
        let t = Instant::now();
        for _ in 0..4 {
            watch.apply(Input::Exited, t);
        }
        watch.apply(Input::Reset, t);
        assert!(!watch.is_unhealthy());
        assert_eq!(watch.restarts_within_window(t), 0);
        let effects = watch.apply(Input::Exited, t);
        assert_eq!(effects[0], Effect::ReportUnhealthy);
        assert_eq!(restart(&effects), (Duration::ZERO, false));
    }
}

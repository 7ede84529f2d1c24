//! The deploy of one component as a pure state machine: `apply(state, event, now) -> (state,
//! effect)`. The runners (process, static, hook) only perform the effect it names and feed back
//! the one event that effect ends with; time is passed in, so every transition is a unit test.
//!
//! Its states, effects and events are tabled in ARCHITECTURE.md ("The deploy state machine";
//! `tests/state_diagram.rs` keeps the table and these enums in step).
//!
//! Every phase is committed (`CommitPhase`) before its action; the release recorded as active
//! changes only in `Finalizing` (`CommitActive`), which is why a crash anywhere before it brings
//! the old release back (recovery's plan, [`super::recovery`], serves the committed one; the
//! unit tests crash a deploy after each effect and check what serves).

pub use super::failure::Failure;
use crate::proxy::StatsSnapshot;
use crate::vocab::{DeployKind, Outcome, Phase};
use std::time::{Duration, Instant};

/// What one deploy knows before it starts; fixed for its whole run.
#[derive(Clone, Debug)]
pub struct Spec {
    pub kind: DeployKind,
    /// A process component: its instances drain, stabilize and retire. Static sites and hooks
    /// switch and are done.
    pub runs_instance: bool,
    /// Something serves the component now (for a process: a warm instance to go back to).
    pub has_old: bool,
    /// Migrations are configured (a deploy runs them; a rollback only checks the schema).
    pub migrations: bool,
    /// The release to deploy already serves: once its bytes proved the same, nothing to do.
    pub already_active: bool,
    /// Zero: no stabilization (static, hook, manual rollback, or `stabilize = "0s"`).
    pub stabilize: Duration,
    pub drain: Duration,
    /// How often stabilization probes the new instance.
    pub probe_every: Duration,
    pub checks: Checks,
    /// `cutover deploy --hold`: once ready, wait for go before the switch (never a hook: its
    /// start is its switch).
    pub holds: bool,
}

/// The stabilization verdict's thresholds (`stabilize_checks`).
#[derive(Clone, Copy, Debug)]
pub struct Checks {
    pub unhealthy_threshold: u32,
    pub max_error_rate: f64,
    pub min_requests: u64,
    pub stall_timeout: Duration,
}

impl From<&crate::config::StabilizeChecks> for Checks {
    fn from(c: &crate::config::StabilizeChecks) -> Self {
        Checks {
            unhealthy_threshold: c.unhealthy_threshold,
            max_error_rate: c.max_error_rate,
            min_requests: c.min_requests,
            stall_timeout: c.stall_timeout.get(),
        }
    }
}

/// Where a deploy is. `committed` says whether the phase of the step is recorded yet: a step's
/// action starts only after its phase is.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    Preparing {
        committed: bool,
    },
    Migrating {
        committed: bool,
    },
    Starting {
        committed: bool,
    },
    /// Ready beside the old release (which still serves everything); waiting for go.
    Holding,
    Switching {
        committed: bool,
    },
    /// Switched; the old instance drains until `until`, the new one is watched meanwhile.
    Draining {
        until: Instant,
    },
    Stabilizing {
        committed: bool,
        since: Instant,
        until: Instant,
        /// Consecutive failed probes.
        failures: u32,
        /// When the old instance's drain ends: finalize waits only for what is left of it.
        drain_until: Instant,
    },
    Finalizing {
        committed: bool,
        drain_until: Instant,
        /// What stabilization saw, when there was one (for the `stable` event).
        stable: Option<StatsSnapshot>,
    },
    /// Committed; the old instance is being retired.
    Retiring,
    /// Before the switch: the new instance is being stopped, the old one never noticed.
    StoppingNew {
        reason: Failure,
    },
    RollingBack {
        committed: bool,
        reason: Failure,
    },
    /// Swapped back; the new instance is being retired.
    RetiringNew {
        reason: Failure,
    },
    Done {
        outcome: Outcome,
        reason: Option<Failure>,
    },
}

/// What happened: the result of the last effect, or something observed meanwhile.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    PhaseCommitted,
    PhaseNotCommitted(String),
    Stored,
    Migrated,
    /// The new release is ready: health gate passed (process), site loaded (static), verify
    /// URL shows it (hook).
    Started,
    /// The hold was released (`cutover proceed`).
    Go {
        who: String,
    },
    Switched,
    Drained {
        remaining: usize,
    },
    Observed(Observation),
    NewExited {
        status: String,
    },
    Committed,
    SwappedBack,
    /// The instance (or the whole component, for the first release) is stopped.
    Stopped,
    Failed(Failure),
    Abort {
        who: String,
    },
}

/// One look at the new instance during stabilization.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub probe_ok: bool,
    /// The probe's result, for messages ("HTTP 500 in 3 ms").
    pub probe: String,
    pub stats: StatsSnapshot,
    /// Requests waiting for response headers, and for how long none arrived.
    pub stall: Option<(usize, Duration)>,
}

/// What the runner must do next. Each effect ends with exactly one [`Event`].
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Record the phase before its action.
    CommitPhase(Phase),
    /// Store and verify the artifact (or find the stored release).
    Store,
    /// Run the migrations (`apply`), or only warn when the schema is ahead (a rollback).
    Migrate { apply: bool },
    /// Start the new release and wait until it is ready.
    Start,
    /// Wait at the hold for go (the runner gives up on its timeout or a departed follower).
    AwaitGo,
    /// The atomic switch to the new release.
    Switch,
    /// Wait for the old instance's requests and tunnels, up to `until`, watching the new one.
    DrainOld { until: Instant },
    /// Wait until `at` (watching the new instance), then probe it and read its traffic.
    Observe { at: Instant },
    /// Commit the new release as active.
    CommitActive { stable: Option<StatsSnapshot> },
    /// Drain what is left of the old instance until `drain_until`, close it, stop it.
    RetireOld { drain_until: Instant },
    /// Stop the new instance (before the switch).
    StopNew,
    /// Point traffic back at the old release (restarting it cold if its instance died).
    SwapBack,
    /// No old release: keep the new one if it still runs (committing it), else serve nothing.
    KeepOrDropNew,
    /// Drain, close and stop the new instance after a swap back.
    RetireNew,
    /// The end: record the outcome.
    Finish {
        outcome: Outcome,
        reason: Option<Failure>,
    },
}

/// The stabilization verdict on one observation.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Keep watching; `failures` consecutive probes failed so far.
    Watching {
        failures: u32,
    },
    Fails(Failure),
}

/// Judges one observation: consecutive probe failures, a stall, then the error rate (judged only
/// once `min_requests` requests were seen, so 1 of 1 is not 100%).
pub fn judge(checks: &Checks, failures: u32, seen: &Observation) -> Verdict {
    let failures = if seen.probe_ok { 0 } else { failures + 1 };
    if failures >= checks.unhealthy_threshold {
        return Verdict::Fails(Failure::ProbesFailed {
            count: failures,
            last: seen.probe.clone(),
        });
    }
    if let Some((waiting, since)) = seen.stall {
        if since >= checks.stall_timeout {
            return Verdict::Fails(Failure::Stalled { waiting, since });
        }
    }
    let stats = seen.stats;
    if stats.requests >= checks.min_requests.max(1) {
        let rate = stats.failed as f64 / stats.requests as f64;
        if rate > checks.max_error_rate {
            return Verdict::Fails(Failure::ErrorRate {
                failed: stats.failed,
                requests: stats.requests,
                limit: checks.max_error_rate,
            });
        }
    }
    Verdict::Watching { failures }
}

/// The first state and effect of a deploy.
pub fn start() -> (State, Effect) {
    (
        State::Preparing { committed: false },
        Effect::CommitPhase(Phase::Preparing),
    )
}

/// One transition. An event that means nothing in a state (a late probe after the verdict, a
/// second abort) leaves it as it is and asks for nothing new: `None`.
pub fn apply(spec: &Spec, state: &State, event: Event, now: Instant) -> Option<(State, Effect)> {
    use Event as E;
    use State as S;
    // An abort: before the switch the new instance is stopped (the old one never noticed);
    // after it, traffic swaps back like an automatic rollback.
    if let E::Abort { who } = &event {
        let reason = Failure::Aborted { who: who.clone() };
        return match state {
            S::Preparing { .. } | S::Migrating { .. } => Some(finish(Outcome::Failed, reason)),
            S::Starting { .. } | S::Holding | S::Switching { .. } => Some(stop_new(reason)),
            S::Draining { .. } | S::Stabilizing { .. } => Some(roll_back(reason)),
            _ => None,
        };
    }
    let next = match (state, event) {
        (S::Preparing { committed: false }, E::PhaseCommitted) => {
            (S::Preparing { committed: true }, Effect::Store)
        }
        (S::Preparing { committed: true }, E::Stored) if spec.already_active => (
            S::Done {
                outcome: Outcome::Succeeded,
                reason: None,
            },
            Effect::Finish {
                outcome: Outcome::Succeeded,
                reason: None,
            },
        ),
        (S::Preparing { committed: true }, E::Stored) if spec.migrations => (
            S::Migrating { committed: false },
            Effect::CommitPhase(Phase::Migrating),
        ),
        (S::Preparing { committed: true }, E::Stored)
        | (S::Migrating { committed: true }, E::Migrated) => (
            S::Starting { committed: false },
            Effect::CommitPhase(Phase::Starting),
        ),
        (S::Migrating { committed: false }, E::PhaseCommitted) => (
            S::Migrating { committed: true },
            Effect::Migrate {
                apply: spec.kind == DeployKind::Deploy,
            },
        ),
        (S::Starting { committed: false }, E::PhaseCommitted) => {
            (S::Starting { committed: true }, Effect::Start)
        }
        (S::Starting { committed: true }, E::Started) if spec.holds => {
            (S::Holding, Effect::AwaitGo)
        }
        (S::Starting { committed: true }, E::Started) | (S::Holding, E::Go { .. }) => (
            S::Switching { committed: false },
            Effect::CommitPhase(Phase::Switching),
        ),
        (S::Holding, E::Failed(why)) => stop_new(why),
        (S::Holding, E::NewExited { status }) => stop_new(Failure::NewExited {
            status,
            while_draining: false,
        }),
        (S::Switching { committed: false }, E::PhaseCommitted) => {
            (S::Switching { committed: true }, Effect::Switch)
        }
        (S::Switching { committed: false }, E::PhaseNotCommitted(why)) => {
            stop_new(Failure::Record(why))
        }
        (S::Switching { committed: true }, E::Switched) => {
            let until = now + spec.drain;
            if spec.runs_instance && spec.has_old {
                (S::Draining { until }, Effect::DrainOld { until })
            } else {
                after_drain(spec, now, until)
            }
        }
        (S::Draining { until }, E::Drained { .. }) => after_drain(spec, now, *until),
        (S::Draining { .. }, E::NewExited { status }) => roll_back(Failure::NewExited {
            status,
            while_draining: true,
        }),
        (
            S::Stabilizing {
                committed: false,
                drain_until,
                ..
            },
            E::PhaseCommitted,
        ) => (
            S::Stabilizing {
                committed: true,
                since: now,
                until: now + spec.stabilize,
                failures: 0,
                drain_until: *drain_until,
            },
            Effect::Observe { at: now },
        ),
        (
            S::Stabilizing {
                committed: false, ..
            },
            E::PhaseNotCommitted(why),
        ) => roll_back(Failure::Record(why)),
        (
            S::Stabilizing {
                committed: true,
                since,
                until,
                failures,
                drain_until,
            },
            E::Observed(seen),
        ) => match judge(&spec.checks, *failures, &seen) {
            Verdict::Fails(reason) => roll_back(reason),
            Verdict::Watching { .. } if now >= *until => (
                S::Finalizing {
                    committed: false,
                    drain_until: *drain_until,
                    stable: Some(seen.stats),
                },
                Effect::CommitPhase(Phase::Finalizing),
            ),
            Verdict::Watching { failures } => (
                S::Stabilizing {
                    committed: true,
                    since: *since,
                    until: *until,
                    failures,
                    drain_until: *drain_until,
                },
                Effect::Observe {
                    at: (now + spec.probe_every).min(*until),
                },
            ),
        },
        (S::Stabilizing { .. }, E::NewExited { status }) => roll_back(Failure::NewExited {
            status,
            while_draining: false,
        }),
        (
            S::Finalizing {
                committed: false,
                drain_until,
                stable,
            },
            E::PhaseCommitted,
        ) => (
            S::Finalizing {
                committed: true,
                drain_until: *drain_until,
                stable: *stable,
            },
            Effect::CommitActive { stable: *stable },
        ),
        (
            S::Finalizing {
                committed: true,
                drain_until,
                ..
            },
            E::Committed,
        ) => {
            if spec.runs_instance && spec.has_old {
                (
                    S::Retiring,
                    Effect::RetireOld {
                        drain_until: *drain_until,
                    },
                )
            } else {
                finish(Outcome::Succeeded, None)
            }
        }
        (S::Finalizing { .. }, E::PhaseNotCommitted(why) | E::Failed(Failure::Step(why)))
            if spec.runs_instance && spec.has_old =>
        {
            roll_back(Failure::Record(why))
        }
        (S::Retiring, E::Stopped) => finish(Outcome::Succeeded, None),
        (S::StoppingNew { reason }, E::Stopped) => finish(Outcome::Failed, reason.clone()),
        // A rollback happens even if the database cannot record it.
        (
            S::RollingBack {
                committed: false,
                reason,
            },
            E::PhaseCommitted | E::PhaseNotCommitted(_),
        ) => {
            let effect = if spec.has_old {
                Effect::SwapBack
            } else {
                Effect::KeepOrDropNew
            };
            (
                S::RollingBack {
                    committed: true,
                    reason: reason.clone(),
                },
                effect,
            )
        }
        (S::RollingBack { reason, .. }, E::SwappedBack) => (
            S::RetiringNew {
                reason: reason.clone(),
            },
            Effect::RetireNew,
        ),
        (S::RollingBack { reason, .. }, E::Stopped) => finish(
            Outcome::Failed,
            Failure::NoPrevious {
                cause: Box::new(reason.clone()),
            },
        ),
        (S::RollingBack { reason, .. }, E::Failed(why)) => finish(
            Outcome::Failed,
            Failure::RollbackImpossible {
                cause: Box::new(reason.clone()),
                why: why.to_string(),
            },
        ),
        (S::RetiringNew { reason }, E::Stopped) => finish(Outcome::RolledBack, reason.clone()),
        // Before the switch, a failed step ends the deploy; the old release never noticed.
        (S::Preparing { .. } | S::Migrating { .. } | S::Finalizing { .. }, E::Failed(why)) => {
            finish(Outcome::Failed, why)
        }
        (
            S::Preparing { .. } | S::Migrating { .. } | S::Starting { .. } | S::Finalizing { .. },
            E::PhaseNotCommitted(why),
        ) => finish(Outcome::Failed, Failure::Record(why)),
        // The start step stops what it started when it fails.
        (S::Starting { .. }, E::Failed(why)) => finish(Outcome::Failed, why),
        _ => return None,
    };
    Some(next)
}

/// After the old instance drained (or there was none): stabilize, or finalize at once.
fn after_drain(spec: &Spec, now: Instant, drain_until: Instant) -> (State, Effect) {
    let stabilizes =
        spec.runs_instance && spec.kind == DeployKind::Deploy && !spec.stabilize.is_zero();
    if stabilizes {
        (
            State::Stabilizing {
                committed: false,
                since: now,
                until: now + spec.stabilize,
                failures: 0,
                drain_until,
            },
            Effect::CommitPhase(Phase::Stabilizing),
        )
    } else {
        (
            State::Finalizing {
                committed: false,
                drain_until,
                stable: None,
            },
            Effect::CommitPhase(Phase::Finalizing),
        )
    }
}

fn roll_back(reason: Failure) -> (State, Effect) {
    (
        State::RollingBack {
            committed: false,
            reason,
        },
        Effect::CommitPhase(Phase::RollingBack),
    )
}

fn stop_new(reason: Failure) -> (State, Effect) {
    (State::StoppingNew { reason }, Effect::StopNew)
}

fn finish(outcome: Outcome, reason: impl Into<Option<Failure>>) -> (State, Effect) {
    let reason = reason.into();
    (
        State::Done {
            outcome,
            reason: reason.clone(),
        },
        Effect::Finish { outcome, reason },
    )
}

#[cfg(test)]
mod tests;

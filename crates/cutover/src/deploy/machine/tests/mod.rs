//! Every transition of the deploy machine, driven through `check`: a script of events and the
//! effect each must produce.

use super::*;

fn spec() -> Spec {
    Spec {
        kind: DeployKind::Deploy,
        runs_instance: true,
        has_old: true,
        migrations: false,
        already_active: false,
        stabilize: Duration::from_secs(60),
        drain: Duration::from_secs(30),
        probe_every: Duration::from_millis(250),
        checks: Checks {
            unhealthy_threshold: 3,
            max_error_rate: 0.05,
            min_requests: 20,
            stall_timeout: Duration::from_secs(10),
        },
        holds: false,
    }
}

/// Runs `script` (event, seconds since the start, the effect expected) from the start state;
/// returns the final state.
fn check(spec: &Spec, script: &[(Event, u64, Effect)]) -> State {
    let t0 = Instant::now();
    let (mut state, first) = start();
    assert_eq!(first, Effect::CommitPhase(Phase::Preparing));
    for (i, (event, at, expected)) in script.iter().enumerate() {
        let now = t0 + Duration::from_secs(*at);
        let (next, effect) = apply(spec, &state, event.clone(), now)
            .unwrap_or_else(|| panic!("step {i}: {event:?} means nothing in {state:?}"));
        assert_eq!(&effect, expected, "step {i}: {event:?} in {state:?}");
        state = next;
    }
    state
}

fn at(t0: Instant, secs: u64) -> Instant {
    t0 + Duration::from_secs(secs)
}

fn seen(ok: bool, requests: u64, failed: u64) -> Event {
    Event::Observed(Observation {
        probe_ok: ok,
        probe: if ok {
            "HTTP 200 in 1 ms".into()
        } else {
            "HTTP 500 in 1 ms".into()
        },
        stats: StatsSnapshot { requests, failed },
        stall: None,
    })
}

/// The script up to the first observation of stabilization; the clock is checked loosely
/// (`Observe` and `DrainOld` carry instants, so they are matched with the start time known).
fn up_to_stabilizing(spec: &Spec) -> (State, Instant) {
    let t0 = Instant::now();
    let (mut state, _) = start();
    let steps = [
        (Event::PhaseCommitted, Effect::Store),
        (Event::Stored, Effect::CommitPhase(Phase::Starting)),
        (Event::PhaseCommitted, Effect::Start),
        (Event::Started, Effect::CommitPhase(Phase::Switching)),
        (Event::PhaseCommitted, Effect::Switch),
        (Event::Switched, Effect::DrainOld { until: at(t0, 30) }),
        (
            Event::Drained { remaining: 0 },
            Effect::CommitPhase(Phase::Stabilizing),
        ),
        (Event::PhaseCommitted, Effect::Observe { at: at(t0, 1) }),
    ];
    for (i, (event, expected)) in steps.into_iter().enumerate() {
        let now = if i < 7 { t0 } else { at(t0, 1) };
        let (next, effect) = apply(spec, &state, event, now).unwrap();
        assert_eq!(effect, expected, "step {i}");
        state = next;
    }
    (state, t0)
}

#[test]
fn a_deploy_that_goes_well() {
    let spec = spec();
    let (mut state, t0) = up_to_stabilizing(&spec);
    // Probes every 250 ms until the window (60 s from 1 s) is over.
    let (next, effect) = apply(&spec, &state, seen(true, 10, 0), at(t0, 2)).unwrap();
    assert_eq!(
        effect,
        Effect::Observe {
            at: at(t0, 2) + Duration::from_millis(250)
        }
    );
    state = next;
    let (next, effect) = apply(&spec, &state, seen(true, 500, 1), at(t0, 61)).unwrap();
    assert_eq!(effect, Effect::CommitPhase(Phase::Finalizing));
    state = next;
    let (next, effect) = apply(&spec, &state, Event::PhaseCommitted, at(t0, 61)).unwrap();
    assert_eq!(
        effect,
        Effect::CommitActive {
            stable: Some(StatsSnapshot {
                requests: 500,
                failed: 1
            })
        }
    );
    state = next;
    // Finalize waits only for what is left of the drain that started at the switch.
    let (next, effect) = apply(&spec, &state, Event::Committed, at(t0, 61)).unwrap();
    assert_eq!(
        effect,
        Effect::RetireOld {
            drain_until: at(t0, 30)
        }
    );
    state = next;
    let (state, effect) = apply(&spec, &state, Event::Stopped, at(t0, 62)).unwrap();
    assert_eq!(
        effect,
        Effect::Finish {
            outcome: Outcome::Succeeded,
            reason: None
        }
    );
    assert!(matches!(
        state,
        State::Done {
            outcome: Outcome::Succeeded,
            ..
        }
    ));
}

#[test]
fn migrations_run_before_the_new_instance_starts() {
    let spec = Spec {
        migrations: true,
        ..spec()
    };
    check(
        &spec,
        &[
            (Event::PhaseCommitted, 0, Effect::Store),
            (Event::Stored, 0, Effect::CommitPhase(Phase::Migrating)),
            (Event::PhaseCommitted, 0, Effect::Migrate { apply: true }),
            (Event::Migrated, 0, Effect::CommitPhase(Phase::Starting)),
        ],
    );
    // A rollback never runs migrations: it only looks at the schema.
    let rollback = Spec {
        kind: DeployKind::Rollback,
        ..spec.clone()
    };
    check(
        &rollback,
        &[
            (Event::PhaseCommitted, 0, Effect::Store),
            (Event::Stored, 0, Effect::CommitPhase(Phase::Migrating)),
            (Event::PhaseCommitted, 0, Effect::Migrate { apply: false }),
        ],
    );
}

#[test]
fn failures_before_the_switch_leave_the_old_release_alone() {
    let failed = |why: &str| Effect::Finish {
        outcome: Outcome::Failed,
        reason: Some(Failure::Step(why.into())),
    };
    let spec = Spec {
        migrations: true,
        ..spec()
    };
    // Store, migration and start failures end the deploy; the start step stops its instance.
    check(
        &spec,
        &[
            (Event::PhaseCommitted, 0, Effect::Store),
            (
                Event::Failed(Failure::Step("bad artifact".into())),
                0,
                failed("bad artifact"),
            ),
        ],
    );
    check(
        &spec,
        &[
            (Event::PhaseCommitted, 0, Effect::Store),
            (Event::Stored, 0, Effect::CommitPhase(Phase::Migrating)),
            (Event::PhaseCommitted, 0, Effect::Migrate { apply: true }),
            (
                Event::Failed(Failure::Step("migration failed".into())),
                0,
                failed("migration failed"),
            ),
        ],
    );
    let state = check(
        &spec,
        &[
            (Event::PhaseCommitted, 0, Effect::Store),
            (Event::Stored, 0, Effect::CommitPhase(Phase::Migrating)),
            (Event::PhaseCommitted, 0, Effect::Migrate { apply: true }),
            (Event::Migrated, 0, Effect::CommitPhase(Phase::Starting)),
            (Event::PhaseCommitted, 0, Effect::Start),
            (
                Event::Failed(Failure::Step("health gate failed".into())),
                0,
                failed("health gate failed"),
            ),
        ],
    );
    assert!(matches!(
        state,
        State::Done {
            outcome: Outcome::Failed,
            ..
        }
    ));
    // The switch cannot be recorded: the started instance is stopped, nothing switched.
    let state = check(
        &spec,
        &[
            (Event::PhaseCommitted, 0, Effect::Store),
            (Event::Stored, 0, Effect::CommitPhase(Phase::Migrating)),
            (Event::PhaseCommitted, 0, Effect::Migrate { apply: true }),
            (Event::Migrated, 0, Effect::CommitPhase(Phase::Starting)),
            (Event::PhaseCommitted, 0, Effect::Start),
            (Event::Started, 0, Effect::CommitPhase(Phase::Switching)),
            (
                Event::PhaseNotCommitted("disk full".into()),
                0,
                Effect::StopNew,
            ),
            (
                Event::Stopped,
                0,
                Effect::Finish {
                    outcome: Outcome::Failed,
                    reason: Some(Failure::Record("disk full".into())),
                },
            ),
        ],
    );
    assert!(matches!(
        state,
        State::Done {
            outcome: Outcome::Failed,
            ..
        }
    ));
    // A phase that cannot be recorded before anything started ends the deploy too.
    let (state, _) = start();
    let (_, effect) = apply(
        &spec,
        &state,
        Event::PhaseNotCommitted("locked".into()),
        Instant::now(),
    )
    .unwrap();
    assert_eq!(
        effect,
        Effect::Finish {
            outcome: Outcome::Failed,
            reason: Some(Failure::Record("locked".into()))
        }
    );
}

#[test]
fn deploying_what_already_serves_does_nothing_once_stored() {
    let spec = Spec {
        already_active: true,
        ..spec()
    };
    check(
        &spec,
        &[
            (Event::PhaseCommitted, 0, Effect::Store),
            (
                Event::Stored,
                0,
                Effect::Finish {
                    outcome: Outcome::Succeeded,
                    reason: None,
                },
            ),
        ],
    );
}

#[test]
fn static_sites_hooks_and_first_releases_switch_and_finalize() {
    for spec in [
        Spec {
            runs_instance: false,
            ..spec()
        },
        Spec {
            has_old: false,
            stabilize: Duration::ZERO,
            ..spec()
        },
    ] {
        check(
            &spec,
            &[
                (Event::PhaseCommitted, 0, Effect::Store),
                (Event::Stored, 0, Effect::CommitPhase(Phase::Starting)),
                (Event::PhaseCommitted, 0, Effect::Start),
                (Event::Started, 0, Effect::CommitPhase(Phase::Switching)),
                (Event::PhaseCommitted, 0, Effect::Switch),
                (Event::Switched, 0, Effect::CommitPhase(Phase::Finalizing)),
                (
                    Event::PhaseCommitted,
                    0,
                    Effect::CommitActive { stable: None },
                ),
                (
                    Event::Committed,
                    0,
                    Effect::Finish {
                        outcome: Outcome::Succeeded,
                        reason: None,
                    },
                ),
            ],
        );
    }
}

#[test]
fn manual_rollbacks_and_a_zero_window_skip_stabilization() {
    for spec in [
        Spec {
            kind: DeployKind::Rollback,
            ..spec()
        },
        Spec {
            stabilize: Duration::ZERO,
            ..spec()
        },
    ] {
        let state = check(
            &spec,
            &[
                (Event::PhaseCommitted, 0, Effect::Store),
                (Event::Stored, 0, Effect::CommitPhase(Phase::Starting)),
                (Event::PhaseCommitted, 0, Effect::Start),
                (Event::Started, 0, Effect::CommitPhase(Phase::Switching)),
                (Event::PhaseCommitted, 0, Effect::Switch),
            ],
        );
        let t = Instant::now();
        let (state, effect) = apply(&spec, &state, Event::Switched, t).unwrap();
        assert_eq!(
            effect,
            Effect::DrainOld {
                until: t + spec.drain
            }
        );
        let (_, effect) = apply(&spec, &state, Event::Drained { remaining: 1 }, t).unwrap();
        assert_eq!(effect, Effect::CommitPhase(Phase::Finalizing));
    }
}

mod crash;
mod hold;
mod rollback;
mod verdict;

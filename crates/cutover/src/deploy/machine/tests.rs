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

/// Runs the stabilization of `spec` on `observations` (seconds after its start) and returns the
/// effect after the last one.
fn stabilize(spec: &Spec, observations: &[(u64, Event)]) -> Effect {
    let (mut state, t0) = up_to_stabilizing(spec);
    let mut last = None;
    for (secs, event) in observations {
        let (next, effect) = apply(spec, &state, event.clone(), at(t0, 1 + secs)).unwrap();
        state = next;
        last = Some(effect);
    }
    last.unwrap()
}

/// What a failed verdict asks for first: the rollback's phase.
fn rolled_back() -> Effect {
    Effect::CommitPhase(Phase::RollingBack)
}

#[test]
fn the_verdict_counts_consecutive_probe_failures() {
    let spec = spec();
    // Two failures, a success, two failures: never three in a row.
    let effect = stabilize(
        &spec,
        &[
            (1, seen(false, 0, 0)),
            (2, seen(false, 0, 0)),
            (3, seen(true, 0, 0)),
            (4, seen(false, 0, 0)),
            (5, seen(false, 0, 0)),
        ],
    );
    assert!(matches!(effect, Effect::Observe { .. }), "{effect:?}");
    let effect = stabilize(
        &spec,
        &[
            (1, seen(false, 0, 0)),
            (2, seen(false, 0, 0)),
            (3, seen(false, 0, 0)),
        ],
    );
    assert_eq!(effect, rolled_back());
    let verdict = judge(
        &spec.checks,
        2,
        &Observation {
            probe_ok: false,
            probe: "HTTP 500 in 1 ms".into(),
            stats: StatsSnapshot::default(),
            stall: None,
        },
    );
    assert_eq!(
        verdict.clone(),
        Verdict::Fails(Failure::ProbesFailed {
            count: 3,
            last: "HTTP 500 in 1 ms".into()
        })
    );
    let Verdict::Fails(failure) = verdict else {
        unreachable!()
    };
    assert_eq!(
        failure.to_string(),
        "3 health probes failed in a row (last: HTTP 500 in 1 ms)"
    );
}

#[test]
fn the_verdict_judges_the_error_rate_only_past_min_requests() {
    let checks = spec().checks;
    let ok = |requests, failed| Observation {
        probe_ok: true,
        probe: String::new(),
        stats: StatsSnapshot { requests, failed },
        stall: None,
    };
    // 1 of 1 failed is not judged: too few requests.
    assert_eq!(
        judge(&checks, 0, &ok(1, 1)),
        Verdict::Watching { failures: 0 }
    );
    assert_eq!(
        judge(&checks, 0, &ok(19, 19)),
        Verdict::Watching { failures: 0 }
    );
    // At the limit passes, above fails.
    assert_eq!(
        judge(&checks, 0, &ok(100, 5)),
        Verdict::Watching { failures: 0 }
    );
    let Verdict::Fails(failure) = judge(&checks, 0, &ok(100, 6)) else {
        panic!("6% passed")
    };
    assert_eq!(
        failure.to_string(),
        "error rate 6.0% (6 of 100 requests failed) is above the 5.0% limit"
    );
    // min_requests = 0 still needs one request to judge.
    let zero = Checks {
        min_requests: 0,
        ..checks
    };
    assert_eq!(
        judge(&zero, 0, &ok(0, 0)),
        Verdict::Watching { failures: 0 }
    );
}

#[test]
fn the_verdict_fails_a_release_that_answers_nothing() {
    let checks = spec().checks;
    let stalled = |secs| Observation {
        probe_ok: true,
        probe: String::new(),
        stats: StatsSnapshot::default(),
        stall: Some((3, Duration::from_secs(secs))),
    };
    assert_eq!(
        judge(&checks, 0, &stalled(9)),
        Verdict::Watching { failures: 0 }
    );
    let Verdict::Fails(failure) = judge(&checks, 0, &stalled(10)) else {
        panic!("a stall passed")
    };
    assert_eq!(
        failure.to_string(),
        "no response for 10s while 3 request(s) waited for one"
    );
}

#[test]
fn a_failed_stabilization_swaps_back_then_retires_the_new_instance() {
    let spec = spec();
    let (state, t0) = up_to_stabilizing(&spec);
    let (state, effect) = apply(&spec, &state, seen(true, 100, 50), at(t0, 2)).unwrap();
    assert_eq!(effect, Effect::CommitPhase(Phase::RollingBack));
    // The swap back happens even if the phase cannot be recorded.
    let (state, effect) = apply(
        &spec,
        &state,
        Event::PhaseNotCommitted("full".into()),
        at(t0, 2),
    )
    .unwrap();
    assert_eq!(effect, Effect::SwapBack);
    let (state, effect) = apply(&spec, &state, Event::SwappedBack, at(t0, 2)).unwrap();
    assert_eq!(effect, Effect::RetireNew);
    let (_, effect) = apply(&spec, &state, Event::Stopped, at(t0, 3)).unwrap();
    let Effect::Finish {
        outcome: Outcome::RolledBack,
        reason: Some(reason),
    } = effect
    else {
        panic!("{effect:?}")
    };
    assert!(
        reason.to_string().starts_with("error rate 50.0%"),
        "{reason}"
    );
}

#[test]
fn the_new_instance_dying_rolls_back_in_drain_and_stabilization() {
    let spec = spec();
    let (state, t0) = up_to_stabilizing(&spec);
    let (state, _) = apply(
        &spec,
        &state,
        Event::NewExited {
            status: "exited with code 3".into(),
        },
        at(t0, 2),
    )
    .unwrap();
    let State::RollingBack { reason, .. } = &state else {
        panic!("{state:?}")
    };
    assert_eq!(reason.to_string(), "the new instance exited with code 3");

    let draining = State::Draining { until: at(t0, 30) };
    let (state, effect) = apply(
        &spec,
        &draining,
        Event::NewExited {
            status: "was killed by SIGKILL".into(),
        },
        t0,
    )
    .unwrap();
    assert_eq!(effect, Effect::CommitPhase(Phase::RollingBack));
    let State::RollingBack { reason, .. } = &state else {
        panic!("{state:?}")
    };
    assert_eq!(
        reason.to_string(),
        "the new instance was killed by SIGKILL while the old one drained"
    );
}

#[test]
fn without_an_old_release_a_rollback_keeps_or_drops_the_new_one() {
    let spec = Spec {
        has_old: false,
        ..spec()
    };
    let failing = State::RollingBack {
        committed: false,
        reason: Failure::ProbesFailed {
            count: 3,
            last: "x".into(),
        },
    };
    let (state, effect) = apply(&spec, &failing, Event::PhaseCommitted, Instant::now()).unwrap();
    assert_eq!(effect, Effect::KeepOrDropNew);
    let (_, effect) = apply(&spec, &state, Event::Stopped, Instant::now()).unwrap();
    let Effect::Finish {
        outcome: Outcome::Failed,
        reason: Some(reason),
    } = effect
    else {
        panic!()
    };
    assert!(
        reason
            .to_string()
            .ends_with("; there is no previous release to roll back to"),
        "{reason}"
    );
}

#[test]
fn a_swap_back_that_fails_says_so() {
    let spec = spec();
    let state = State::RollingBack {
        committed: true,
        reason: Failure::Aborted { who: "ops".into() },
    };
    let (_, effect) = apply(
        &spec,
        &state,
        Event::Failed(Failure::Step("v1 does not start".into())),
        Instant::now(),
    )
    .unwrap();
    let Effect::Finish {
        outcome: Outcome::Failed,
        reason: Some(reason),
    } = effect
    else {
        panic!()
    };
    assert_eq!(
        reason.to_string(),
        "aborted by ops; rollback impossible: v1 does not start"
    );
}

#[test]
fn a_commit_that_fails_swaps_back_while_the_old_instance_is_warm() {
    let spec = spec();
    let t = Instant::now();
    let finalizing = State::Finalizing {
        committed: true,
        drain_until: t,
        stable: None,
    };
    let (_, effect) = apply(
        &spec,
        &finalizing,
        Event::Failed(Failure::Step("database is locked".into())),
        t,
    )
    .unwrap();
    assert_eq!(effect, Effect::CommitPhase(Phase::RollingBack));
    let uncommitted = State::Finalizing {
        committed: false,
        drain_until: t,
        stable: None,
    };
    let (state, _) = apply(
        &spec,
        &uncommitted,
        Event::PhaseNotCommitted("full".into()),
        t,
    )
    .unwrap();
    assert!(matches!(state, State::RollingBack { .. }));
    // With nothing to go back to, the deploy just fails.
    let first = Spec {
        has_old: false,
        ..spec
    };
    let (_, effect) = apply(
        &first,
        &finalizing,
        Event::Failed(Failure::Step("locked".into())),
        t,
    )
    .unwrap();
    assert!(matches!(
        effect,
        Effect::Finish {
            outcome: Outcome::Failed,
            ..
        }
    ));
}

#[test]
fn an_abort_stops_or_swaps_back_depending_on_the_switch() {
    let spec = spec();
    let t = Instant::now();
    let abort = || Event::Abort {
        who: "alice".into(),
    };
    let (_, effect) = apply(&spec, &State::Preparing { committed: true }, abort(), t).unwrap();
    assert_eq!(
        effect,
        Effect::Finish {
            outcome: Outcome::Failed,
            reason: Some(Failure::Aborted {
                who: "alice".into()
            })
        }
    );
    let (state, effect) = apply(&spec, &State::Starting { committed: true }, abort(), t).unwrap();
    assert_eq!(effect, Effect::StopNew);
    let (_, effect) = apply(&spec, &state, Event::Stopped, t).unwrap();
    assert!(matches!(
        effect,
        Effect::Finish {
            outcome: Outcome::Failed,
            ..
        }
    ));
    let (_, effect) = apply(&spec, &State::Draining { until: t }, abort(), t).unwrap();
    assert_eq!(effect, Effect::CommitPhase(Phase::RollingBack));
    let (state, _) = up_to_stabilizing(&spec);
    let (_, effect) = apply(&spec, &state, abort(), t).unwrap();
    assert_eq!(effect, Effect::CommitPhase(Phase::RollingBack));
    // Once finalizing, an abort is too late and changes nothing.
    assert!(apply(&spec, &State::Retiring, abort(), t).is_none());
}

#[test]
fn events_that_mean_nothing_change_nothing() {
    let spec = spec();
    let t = Instant::now();
    assert!(apply(
        &spec,
        &State::Preparing { committed: false },
        Event::Started,
        t
    )
    .is_none());
    assert!(apply(&spec, &State::Retiring, seen(true, 1, 0), t).is_none());
    let done = State::Done {
        outcome: Outcome::Succeeded,
        reason: None,
    };
    assert!(apply(&spec, &done, Event::NewExited { status: "x".into() }, t).is_none());
}

/// A deploy of v2 over v1 driven to its end, with the daemon killed after each effect: the
/// state database and the instance rows as a crash would leave them go through recovery's
/// plan, which says what serves on the next start.
fn serves_after_a_crash_at_each_step(script: &[Event]) -> Vec<(Effect, &'static str)> {
    let spec = spec();
    let t0 = Instant::now();
    let (mut state, mut effect) = start();
    let mut active = "v1";
    let mut live = vec!["v1"];
    let mut seen = Vec::new();
    for (i, event) in script.iter().enumerate() {
        // The effect has run: what it changed in the database and the process table.
        match &effect {
            Effect::Start => live.push("v2"),
            Effect::CommitActive { .. } => active = "v2",
            Effect::RetireOld { .. } => live.retain(|r| *r != "v1"),
            Effect::RetireNew => live.retain(|r| *r != "v2"),
            _ => {}
        }
        let plan = crate::deploy::recovery::plan(Some(active), &live);
        let serves = match crate::deploy::recovery::after_probe(&plan, Some(active), true) {
            crate::deploy::recovery::Serves::Adopted(i) => live[i],
            _ => active,
        };
        seen.push((effect.clone(), serves));
        // A minute apart: longer than the drain and the stabilization window.
        let now = at(t0, 61 * i as u64);
        let (next_state, next_effect) = apply(&spec, &state, event.clone(), now).unwrap();
        state = next_state;
        effect = next_effect;
    }
    seen
}

#[test]
fn after_a_crash_the_old_release_serves_until_the_new_one_is_committed() {
    use Event as E;
    let succeeded = serves_after_a_crash_at_each_step(&[
        E::PhaseCommitted,
        E::Stored,
        E::PhaseCommitted,
        E::Started,
        E::PhaseCommitted,
        E::Switched,
        E::Drained { remaining: 0 },
        E::PhaseCommitted,
        seen(true, 100, 0),
        E::PhaseCommitted,
        E::Committed,
        E::Stopped,
    ]);
    let committed_at = succeeded
        .iter()
        .position(|(effect, _)| matches!(effect, Effect::CommitActive { .. }))
        .expect("a successful deploy commits");
    for (i, (effect, serves)) in succeeded.iter().enumerate() {
        let expected = if i < committed_at { "v1" } else { "v2" };
        assert_eq!(*serves, expected, "a crash after {effect:?}");
    }
    assert!(matches!(
        succeeded.last().unwrap().0,
        Effect::RetireOld { .. }
    ));

    // Rolled back: v1 serves after a crash at every step, the swap back included.
    let rolled_back = serves_after_a_crash_at_each_step(&[
        E::PhaseCommitted,
        E::Stored,
        E::PhaseCommitted,
        E::Started,
        E::PhaseCommitted,
        E::Switched,
        E::Drained { remaining: 0 },
        E::PhaseCommitted,
        seen(true, 100, 50),
        E::PhaseCommitted,
        E::SwappedBack,
        E::Stopped,
    ]);
    assert!(rolled_back.iter().any(|(e, _)| *e == Effect::SwapBack));
    for (effect, serves) in &rolled_back {
        assert_eq!(*serves, "v1", "a crash after {effect:?}");
    }
}

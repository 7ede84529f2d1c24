//! After the switch: swap back, keep or drop the new instance, commit failures, abort.

use super::*;

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

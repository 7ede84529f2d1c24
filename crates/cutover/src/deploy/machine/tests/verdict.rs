//! The stabilization verdict: consecutive probe failures, error ratio past min_requests, stalls.

use super::*;

/// Runs the stabilization of `spec` on `observations` (seconds after its start) and returns the
/// effect after the last one.
pub(super) fn stabilize(spec: &Spec, observations: &[(u64, Event)]) -> Effect {
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
pub(super) fn rolled_back() -> Effect {
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

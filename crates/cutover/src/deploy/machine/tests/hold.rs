//! `cutover deploy --hold`: ready, then waiting for go before the switch; anything but go stops
//! the new instance, and the old release never noticed.

use super::*;

fn holding() -> Spec {
    Spec {
        holds: true,
        ..spec()
    }
}

/// The script up to the hold.
fn to_hold() -> Vec<(Event, u64, Effect)> {
    vec![
        (Event::PhaseCommitted, 0, Effect::Store),
        (Event::Stored, 0, Effect::CommitPhase(Phase::Starting)),
        (Event::PhaseCommitted, 0, Effect::Start),
        (Event::Started, 1, Effect::AwaitGo),
    ]
}

#[test]
fn a_held_deploy_switches_on_go() {
    let mut script = to_hold();
    script.extend([
        (
            Event::Go { who: "ops".into() },
            5,
            Effect::CommitPhase(Phase::Switching),
        ),
        (Event::PhaseCommitted, 5, Effect::Switch),
    ]);
    assert_eq!(
        check(&holding(), &script),
        State::Switching { committed: true }
    );
}

#[test]
fn an_unheld_deploy_never_waits() {
    let script = [
        (Event::PhaseCommitted, 0, Effect::Store),
        (Event::Stored, 0, Effect::CommitPhase(Phase::Starting)),
        (Event::PhaseCommitted, 0, Effect::Start),
        (Event::Started, 1, Effect::CommitPhase(Phase::Switching)),
    ];
    check(&spec(), &script);
    // And a stray go means nothing to it.
    let state = State::Switching { committed: false };
    assert_eq!(
        apply(
            &spec(),
            &state,
            Event::Go { who: "ops".into() },
            Instant::now()
        ),
        None
    );
}

#[test]
fn abort_timeout_and_a_dead_instance_at_the_hold_stop_the_new_one() {
    let ends = [
        (
            Event::Abort { who: "ops".into() },
            Failure::Aborted { who: "ops".into() },
        ),
        (
            Event::Failed(Failure::Step("nobody said go within 10m".into())),
            Failure::Step("nobody said go within 10m".into()),
        ),
        (
            Event::NewExited {
                status: "exited with status 1".into(),
            },
            Failure::NewExited {
                status: "exited with status 1".into(),
                while_draining: false,
            },
        ),
    ];
    for (event, reason) in ends {
        let mut script = to_hold();
        script.push((event, 2, Effect::StopNew));
        script.push((
            Event::Stopped,
            2,
            Effect::Finish {
                outcome: Outcome::Failed,
                reason: Some(reason.clone()),
            },
        ));
        assert_eq!(
            check(&holding(), &script),
            State::Done {
                outcome: Outcome::Failed,
                reason: Some(reason),
            }
        );
    }
}

//! A crash after each effect: which release serves on the next start.

use super::*;

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
    // Every step up to the first look at the new release, then how that look goes on.
    let deploy = |then: &[Event]| {
        let mut script = vec![
            E::PhaseCommitted,
            E::Stored,
            E::PhaseCommitted,
            E::Started,
            E::PhaseCommitted,
            E::Switched,
            E::Drained { remaining: 0 },
            E::PhaseCommitted,
        ];
        script.extend_from_slice(then);
        serves_after_a_crash_at_each_step(&script)
    };
    let succeeded = deploy(&[
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
    let rolled_back = deploy(&[
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

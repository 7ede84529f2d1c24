//! What start-up does with the instances a previous daemon left behind, for one process
//! component: pure, so that "which release serves after a crash in each phase" is a unit test
//! (see `machine/tests.rs`). `daemon.rs` performs the plan: adoption, probes, kills, starts.
//!
//! The rule: the committed active release serves. The deploy machine changes it only in
//! `CommitActive`, so a crash anywhere before that brings the old release back, and after it
//! the new one. An instance of the active release that outlived the daemon is adopted if it
//! answers its health probe (no cold start, no dropped requests); every other instance is an
//! orphan of an interrupted deploy and is stopped.

/// The plan for one component.
#[derive(Debug, PartialEq, Eq)]
pub struct RecoveryPlan {
    /// The instance (index into `live`) to adopt if its health probe passes.
    pub adopt: Option<usize>,
    /// Instances to stop now (indexes into `live`).
    pub stop: Vec<usize>,
}

/// `active`: the committed active release, if any; `live`: the release of each instance row
/// still marked running, oldest first.
pub fn plan(active: Option<&str>, live: &[&str]) -> RecoveryPlan {
    let adopt = active.and_then(|active| live.iter().position(|release| *release == active));
    RecoveryPlan {
        adopt,
        stop: (0..live.len()).filter(|i| Some(*i) != adopt).collect(),
    }
}

/// What serves once the plan ran: the adopted instance when its probe passed, else a new
/// instance of the active release (nothing for a component never deployed).
#[derive(Debug, PartialEq, Eq)]
pub enum Serves {
    Adopted(usize),
    StartActive,
    Nothing,
}

pub fn after_probe(plan: &RecoveryPlan, active: Option<&str>, adopted_healthy: bool) -> Serves {
    match (plan.adopt, active) {
        (Some(i), _) if adopted_healthy => Serves::Adopted(i),
        (_, Some(_)) => Serves::StartActive,
        (_, None) => Serves::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_active_releases_instance_is_adopted_and_every_other_stopped() {
        let p = plan(Some("v1"), &["v1", "v2"]);
        assert_eq!(
            p,
            RecoveryPlan {
                adopt: Some(0),
                stop: vec![1]
            }
        );
        assert_eq!(after_probe(&p, Some("v1"), true), Serves::Adopted(0));
    }

    #[test]
    fn an_unhealthy_survivor_is_replaced_by_a_fresh_start() {
        let p = plan(Some("v2"), &["v1", "v2"]);
        assert_eq!(p.adopt, Some(1));
        assert_eq!(after_probe(&p, Some("v2"), false), Serves::StartActive);
    }

    #[test]
    fn only_the_first_instance_of_the_active_release_is_adopted() {
        let p = plan(Some("v1"), &["v1", "v1"]);
        assert_eq!(p.adopt, Some(0));
        assert_eq!(p.stop, vec![1]);
    }

    #[test]
    fn nothing_committed_means_nothing_serves_and_everything_stops() {
        let p = plan(None, &["v1"]);
        assert_eq!(p.adopt, None);
        assert_eq!(p.stop, vec![0]);
        assert_eq!(after_probe(&p, None, false), Serves::Nothing);
    }

    #[test]
    fn no_survivor_means_a_cold_start_of_the_active_release() {
        let p = plan(Some("v3"), &[]);
        assert_eq!(after_probe(&p, Some("v3"), false), Serves::StartActive);
    }
}

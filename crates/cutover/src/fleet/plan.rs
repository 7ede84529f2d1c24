//! The decisions of a fleet run, without any I/O: the waves, what each host's pipeline result
//! means for the fleet, which hosts go back when one fails, and how the run ends. `run.rs`
//! carries them out over ssh.

use super::remote::PipelineResult;
use crate::vocab::Outcome;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The hosts in deploy order, cut into waves: `canary` hosts first, then `max_parallel` at a
/// time.
pub fn waves(hosts: &[String], canary: usize, max_parallel: usize) -> Vec<Vec<String>> {
    let canary = canary.clamp(1, hosts.len().max(1));
    let mut waves = vec![hosts[..canary.min(hosts.len())].to_vec()];
    waves.extend(
        hosts[canary.min(hosts.len())..]
            .chunks(max_parallel.max(1))
            .map(<[String]>::to_vec),
    );
    waves.retain(|w| !w.is_empty());
    waves
}

/// `strategy = "all_healthy_then_switch"`: when a component may switch. Every host of the run
/// deploys with a hold before each component's switch; a component is released on every host
/// at once, when every host still in the run holds it, i.e. is healthy on the new release
/// beside its old one. A host whose deploy ended leaves the barrier (that is a failure the run
/// acts on; the barrier only keeps the others from waiting on it).
#[derive(Debug, Default)]
pub struct Barrier {
    hosts: BTreeSet<String>,
    /// Component -> the hosts holding before its switch.
    holding: BTreeMap<String, BTreeSet<String>>,
    released: BTreeSet<String>,
}

impl Barrier {
    pub fn new(hosts: &[String]) -> Self {
        Barrier {
            hosts: hosts.iter().cloned().collect(),
            ..Barrier::default()
        }
    }

    /// `host` holds before its switch of `component` (said again each second while it holds);
    /// the components this releases, now.
    pub fn holding(&mut self, host: &str, component: &str) -> Vec<String> {
        if self.hosts.contains(host) {
            self.holding
                .entry(component.to_owned())
                .or_default()
                .insert(host.to_owned());
        }
        self.release()
    }

    /// `host`'s deploy ended; the components its leaving releases.
    pub fn left(&mut self, host: &str) -> Vec<String> {
        self.hosts.remove(host);
        self.release()
    }

    /// Whether `host` waits for the others before its switch of `component`.
    pub fn is_holding(&self, host: &str, component: &str) -> bool {
        !self.released.contains(component)
            && self
                .holding
                .get(component)
                .is_some_and(|h| h.contains(host))
    }

    fn release(&mut self) -> Vec<String> {
        let ready: Vec<String> = self
            .holding
            .iter()
            .filter(|(component, holders)| {
                !self.released.contains(*component)
                    && !self.hosts.is_empty()
                    && self.hosts.iter().all(|h| holders.contains(h))
            })
            .map(|(component, _)| component.clone())
            .collect();
        self.released.extend(ready.iter().cloned());
        ready
    }
}

/// How one host took part in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostOutcome {
    /// Every component already ran the release: nothing was done.
    AlreadyThere,
    /// Deployed and stable (and kept).
    Succeeded,
    /// Its deploy failed before traffic moved: it never served the new release.
    Failed,
    /// It switched, then its own daemon swapped back (its stabilization failed).
    RolledBackByHost,
    /// Its deploy was stopped by the fleet because another host failed.
    Aborted,
    /// It switched in this run and the fleet moved it back because another host failed.
    RolledBack,
    /// The fleet's rollback of it failed: it may still serve the new release.
    RollbackFailed,
    /// Not started: an earlier host failed.
    NotStarted,
    /// ssh or the host's cutover could not be reached or did not answer as expected.
    Unreachable,
}

impl HostOutcome {
    /// Hosts with this outcome serve the new release, unless someone moves them back.
    pub fn serves_new_release(self) -> bool {
        matches!(self, HostOutcome::Succeeded | HostOutcome::RollbackFailed)
    }

    /// A host whose result stops the run.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            HostOutcome::Failed | HostOutcome::RolledBackByHost | HostOutcome::Unreachable
        )
    }

    pub fn label(self) -> &'static str {
        match self {
            HostOutcome::AlreadyThere => "already there",
            HostOutcome::Succeeded => "succeeded",
            HostOutcome::Failed => "failed",
            HostOutcome::RolledBackByHost => "rolled back by the host",
            HostOutcome::Aborted => "aborted",
            HostOutcome::RolledBack => "rolled back",
            HostOutcome::RollbackFailed => "rollback failed",
            HostOutcome::NotStarted => "not started",
            HostOutcome::Unreachable => "unreachable",
        }
    }
}

/// What a host's own pipeline result means for the fleet. `aborted`: the fleet asked the host
/// to stop this deploy.
pub fn host_outcome(result: &PipelineResult, aborted: bool) -> HostOutcome {
    match result.outcome {
        Outcome::Succeeded => HostOutcome::Succeeded,
        _ if aborted => HostOutcome::Aborted,
        Outcome::RolledBack => HostOutcome::RolledBackByHost,
        Outcome::Failed | Outcome::Interrupted => HostOutcome::Failed,
    }
}

/// How a whole run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// Every host runs the release.
    Succeeded,
    /// A host failed and every host the run had moved is back on its old release.
    RolledBack,
    /// A host failed and nothing had moved, or `--no-rollback` kept the hosts that finished,
    /// or a rollback failed: `cutover fleet status` shows where each host is.
    Failed,
}

impl RunOutcome {
    pub fn label(self) -> &'static str {
        match self {
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::RolledBack => "rolled_back",
            RunOutcome::Failed => "failed",
        }
    }
}

/// The run's end from its hosts' outcomes.
pub fn run_outcome(hosts: &[HostOutcome]) -> RunOutcome {
    if hosts
        .iter()
        .all(|h| matches!(h, HostOutcome::Succeeded | HostOutcome::AlreadyThere))
    {
        return RunOutcome::Succeeded;
    }
    if hosts.iter().any(|h| h.serves_new_release()) {
        return RunOutcome::Failed;
    }
    if hosts.contains(&HostOutcome::RolledBack) {
        RunOutcome::RolledBack
    } else {
        RunOutcome::Failed
    }
}

/// The components to move back on a host the run switched, last deployed first, each to the
/// release it ran before (`from`); a component that had none (its first deploy) stays.
pub fn rollback_steps(result: &PipelineResult, release: &str) -> Vec<(String, String)> {
    result
        .from
        .iter()
        .rev()
        .filter_map(|(component, from)| {
            let from = from.as_deref()?;
            (from != release).then(|| (component.clone(), from.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("h{i}")).collect()
    }

    #[test]
    fn the_canary_goes_first_then_waves_of_max_parallel() {
        assert_eq!(
            waves(&hosts(5), 1, 2),
            vec![vec!["h1"], vec!["h2", "h3"], vec!["h4", "h5"]]
        );
        assert_eq!(
            waves(&hosts(4), 2, 3),
            vec![vec!["h1", "h2"], vec!["h3", "h4"]]
        );
        assert_eq!(waves(&hosts(1), 1, 2), vec![vec!["h1"]]);
        assert_eq!(waves(&hosts(3), 3, 1), vec![vec!["h1", "h2", "h3"]]);
    }

    #[test]
    fn a_component_switches_only_when_every_host_holds_it_and_only_once() {
        let mut barrier = Barrier::new(&hosts(3));
        assert!(barrier.holding("h1", "backend").is_empty());
        assert!(barrier.holding("h2", "backend").is_empty());
        // Said again each second while holding: still waiting for h3.
        assert!(barrier.holding("h1", "backend").is_empty());
        assert!(barrier.is_holding("h1", "backend"));
        assert_eq!(barrier.holding("h3", "backend"), vec!["backend"]);
        assert!(!barrier.is_holding("h1", "backend"));
        // A late repeat of a released hold releases nothing twice.
        assert!(barrier.holding("h2", "backend").is_empty());
        // The next stage has a barrier of its own.
        assert!(barrier.holding("h3", "frontend").is_empty());
        assert!(barrier.holding("h1", "frontend").is_empty());
        assert_eq!(barrier.holding("h2", "frontend"), vec!["frontend"]);
    }

    #[test]
    fn a_host_that_left_is_not_waited_for_and_a_stranger_counts_for_nothing() {
        let mut barrier = Barrier::new(&hosts(2));
        assert!(barrier.holding("elsewhere", "backend").is_empty());
        assert!(barrier.holding("h1", "backend").is_empty());
        assert_eq!(barrier.left("h2"), vec!["backend"]);
        let mut empty = Barrier::new(&hosts(1));
        assert!(empty.left("h1").is_empty());
        assert!(empty.holding("h1", "backend").is_empty());
    }

    fn result(outcome: Outcome, from: &[(&str, Option<&str>)]) -> PipelineResult {
        PipelineResult {
            outcome,
            reason: None,
            from: from
                .iter()
                .map(|(c, f)| ((*c).to_owned(), f.map(str::to_owned)))
                .collect(),
        }
    }

    #[test]
    fn an_aborted_deploy_that_finished_anyway_counts_as_switched() {
        let done = result(Outcome::Succeeded, &[]);
        assert_eq!(host_outcome(&done, true), HostOutcome::Succeeded);
        let stopped = result(Outcome::Failed, &[]);
        assert_eq!(host_outcome(&stopped, true), HostOutcome::Aborted);
        assert_eq!(host_outcome(&stopped, false), HostOutcome::Failed);
        let swapped = result(Outcome::RolledBack, &[]);
        assert_eq!(host_outcome(&swapped, false), HostOutcome::RolledBackByHost);
    }

    #[test]
    fn a_run_is_rolled_back_only_when_nothing_serves_the_new_release() {
        use HostOutcome::*;
        assert_eq!(
            run_outcome(&[Succeeded, AlreadyThere]),
            RunOutcome::Succeeded
        );
        assert_eq!(
            run_outcome(&[RolledBack, Failed, NotStarted]),
            RunOutcome::RolledBack
        );
        assert_eq!(run_outcome(&[Failed, NotStarted]), RunOutcome::Failed);
        // --no-rollback: the canary keeps the new release.
        assert_eq!(run_outcome(&[Succeeded, Failed]), RunOutcome::Failed);
        assert_eq!(
            run_outcome(&[RolledBack, RollbackFailed, Failed]),
            RunOutcome::Failed
        );
    }

    #[test]
    fn rollback_goes_back_component_by_component_and_skips_first_deploys() {
        let r = result(
            Outcome::Succeeded,
            &[
                ("backend", Some("v1")),
                ("frontend", Some("v1")),
                ("worker", None),
            ],
        );
        assert_eq!(
            rollback_steps(&r, "v2"),
            vec![
                ("frontend".to_owned(), "v1".to_owned()),
                ("backend".to_owned(), "v1".to_owned())
            ]
        );
    }
}

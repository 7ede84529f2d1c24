//! One wave of a fleet deploy: its hosts deploy at once; at the first failure the others are
//! told to abort. With `strategy = "all_healthy_then_switch"` the one wave holds every host
//! before each component's switch and releases them together once all hold (`plan::Barrier`).

use super::events::{forward, Phase};
use super::plan::{self, Barrier, HostOutcome};
use super::remote::PipelineResult;
use super::run::{DeployRequest, Run};
use super::ssh::SshError;
use crate::protocol::EventKind;
use crate::vocab::now_millis;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a host holds, healthy beside its old release, for the others: the slowest host's
/// start and health gate must fit in it. A host whose ssh session ends stops holding at once
/// (its daemon sees the follower leave), so this bounds only a run that hangs.
pub(super) const FLEET_HOLD: Duration = Duration::from_secs(600);

type Finished = (String, i64, Result<PipelineResult, SshError>);

impl Run<'_> {
    /// Deploys to the hosts of one wave at once; `hold`: they hold before each switch until
    /// all do. At the first failure the others of the wave are told to abort (unless
    /// `--no-rollback`); returns the failure.
    pub(super) async fn wave(
        &mut self,
        hosts: &[String],
        request: &DeployRequest,
        paths: &BTreeMap<String, BTreeMap<String, String>>,
        hold: bool,
        who: &str,
    ) -> Option<String> {
        let report = self.report;
        // Each host's holds, from inside its event stream to this loop.
        let (holds_tx, mut holds) = mpsc::unbounded_channel::<(String, String)>();
        let mut running: FuturesUnordered<_> = hosts
            .iter()
            .map(|name| {
                let host = self.host(name);
                let artifacts = paths.get(name).cloned().unwrap_or_default();
                let started_at = now_millis();
                let holds_tx = holds_tx.clone();
                report.phase(name, Phase::Deploying, None);
                async move {
                    let on_event = |e: &crate::protocol::Event| {
                        forward(report, name, e);
                        if let EventKind::Holding { component, .. } = &e.kind {
                            let _ = holds_tx.send((name.clone(), component.clone()));
                        }
                    };
                    let result = host
                        .deploy(
                            &request.components,
                            &request.release,
                            &artifacts,
                            hold.then_some(FLEET_HOLD),
                            who,
                            on_event,
                        )
                        .await;
                    (name.clone(), started_at, result)
                }
            })
            .collect();
        drop(holds_tx);
        let mut barrier = Barrier::new(hosts);
        let mut finished: Vec<Finished> = Vec::new();
        let mut failure: Option<String> = None;
        let mut aborted: Vec<String> = Vec::new();
        let mut earlier_rolled_back = None;
        let mut switching = false;
        loop {
            let released = tokio::select! {
                done = running.next() => {
                    let Some((name, started_at, result)) = done else { break };
                    let outcome = match &result {
                        Ok(r) => plan::host_outcome(r, aborted.contains(&name)),
                        Err(_) => HostOutcome::Unreachable,
                    };
                    if outcome.is_failure() && failure.is_none() {
                        let why = match &result {
                            Ok(r) => r.reason.clone().unwrap_or_else(|| outcome.label().into()),
                            Err(e) => e.to_string(),
                        };
                        failure = Some(format!("{name}: {why}"));
                    }
                    finished.push((name.clone(), started_at, result));
                    barrier.left(&name)
                }
                Some((name, component)) = holds.recv() => {
                    let first = !barrier.is_holding(&name, &component);
                    let released = barrier.holding(&name, &component);
                    if first && released.is_empty() {
                        report.phase(
                            &name,
                            Phase::Holding,
                            Some(format!("healthy on {component}; waiting for every host")),
                        );
                    }
                    released
                }
            };
            if failure.is_none() {
                for component in released {
                    switching = true;
                    if let Err(why) = self.proceed_all(hosts, &finished, &component, who).await {
                        failure = Some(why);
                    }
                }
            }
            // Hosts held before any switch have nothing to keep: they go even with
            // `--no-rollback`, rather than hold until their timeout.
            let stop_others = !request.no_rollback || (hold && !switching);
            if failure.is_some() && stop_others {
                if earlier_rolled_back.is_none() && !request.no_rollback {
                    // The hosts of this wave that already switched and ended roll back with the
                    // earlier waves' hosts, while the others abort: the time to all-old is one
                    // ssh round trip, not one per step.
                    let switched: Vec<(String, PipelineResult)> = finished
                        .iter()
                        .filter_map(|(name, _, r)| Some((name.clone(), r.as_ref().ok()?.clone())))
                        .filter(|(name, r)| {
                            plan::host_outcome(r, aborted.contains(name)) == HostOutcome::Succeeded
                        })
                        .collect();
                    let aborting = self.abort_others(hosts, &finished, &mut aborted, request, who);
                    let rolling = self.roll_back(&request.release, who, &switched);
                    let (_, done) = tokio::join!(aborting, rolling);
                    earlier_rolled_back = Some(done);
                } else {
                    self.abort_others(hosts, &finished, &mut aborted, request, who)
                        .await;
                }
            }
        }
        drop(running);
        self.record_wave(finished, &aborted);
        if let Some(done) = earlier_rolled_back {
            self.record_rollbacks(done);
        }
        failure
    }

    /// Every host of the wave still deploying switches `component` now, all at once.
    async fn proceed_all(
        &self,
        hosts: &[String],
        finished: &[Finished],
        component: &str,
        who: &str,
    ) -> Result<(), String> {
        let going: Vec<&String> = hosts
            .iter()
            .filter(|h| !finished.iter().any(|f| f.0 == **h))
            .collect();
        for host in &going {
            self.report.phase(
                host,
                Phase::Switching,
                Some(format!("every host is healthy on {component}")),
            );
        }
        let proceeds = going
            .iter()
            .map(|host| async move { (*host, self.host(host).proceed(component, who).await) });
        let mut problems = Vec::new();
        for (host, done) in futures_util::future::join_all(proceeds).await {
            if let Err(e) = done {
                problems.push(format!(
                    "{host}: could not release its hold on {component}: {e}"
                ));
            }
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(problems.join("; ")),
        }
    }

    /// The hosts of the wave still deploying are told to stop: before their switch the new
    /// instance goes, after it traffic swaps back to the warm old one. Each host once, all at once.
    async fn abort_others(
        &self,
        hosts: &[String],
        finished: &[Finished],
        aborted: &mut Vec<String>,
        request: &DeployRequest,
        who: &str,
    ) {
        let others: Vec<&String> = hosts
            .iter()
            .filter(|h| !finished.iter().any(|f| f.0 == **h) && !aborted.contains(h))
            .collect();
        let aborts = others.iter().map(|other| async move {
            self.report
                .phase(other, Phase::Aborting, Some("another host failed".into()));
            for component in &request.components {
                // A deploy that already ended has nothing to abort: ignored.
                let _ = self.host(other).abort(component, who).await;
            }
        });
        futures_util::future::join_all(aborts).await;
        aborted.extend(others.into_iter().cloned());
    }

    /// Each host's outcome, from its pipeline's end.
    fn record_wave(&mut self, finished: Vec<Finished>, aborted: &[String]) {
        for (name, started_at, result) in finished {
            let (outcome, detail, result) = match result {
                Ok(r) => {
                    let outcome = plan::host_outcome(&r, aborted.contains(&name));
                    (outcome, r.reason.clone(), Some(r))
                }
                Err(e) => (HostOutcome::Unreachable, Some(e.to_string()), None),
            };
            let phase = if outcome == HostOutcome::Succeeded {
                Phase::Done
            } else {
                Phase::Failed
            };
            self.report.phase(&name, phase, detail.clone());
            if let Some(state) = self.states.get_mut(&name) {
                state.outcome = outcome;
                state.detail = detail;
                state.result = result;
                state.started_at = Some(started_at);
                state.finished_at = now_millis();
            }
        }
    }
}

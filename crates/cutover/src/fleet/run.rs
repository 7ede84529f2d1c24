//! A fleet deploy carried out: preflight every host, lock them, upload once per host, then the
//! waves, and when a host fails, every host this run moved goes back. The decisions are in
//! `plan.rs`; this file does the I/O and reports each step.

use super::artifacts::prepare;
use super::events::{forward, FleetEvent, Phase, Reporter};
use super::history::{new_run_id, History, HostRecord, RunRecord};
use super::plan::{self, HostOutcome, RunOutcome};
use super::remote::{Host, PipelineResult};
use super::ssh::Ssh;
use crate::config::{FleetConfig, Strategy};
use crate::protocol::StatusResponse;
use crate::vocab::now_millis;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tokio::process::Child;

/// What `cutover fleet deploy` asks for.
pub struct DeployRequest {
    pub components: Vec<String>,
    pub release: String,
    /// Component -> local artifact (absolute; a file, or a directory sent as a tar archive).
    pub artifacts: BTreeMap<String, PathBuf>,
    pub who: String,
    /// Keep the hosts that finished when another fails.
    pub no_rollback: bool,
}

/// How a run ended, for the exit code and the final table.
pub struct RunSummary {
    pub run: String,
    pub outcome: RunOutcome,
    pub reason: Option<String>,
    pub hosts: Vec<HostRecord>,
}

/// Everything a run keeps about one host as it goes.
pub(super) struct HostState {
    pub(super) wave: usize,
    pub(super) outcome: HostOutcome,
    pub(super) detail: Option<String>,
    pub(super) result: Option<PipelineResult>,
    pub(super) started_at: Option<i64>,
    pub(super) finished_at: i64,
}

pub async fn deploy(
    fleet: &FleetConfig,
    history: &History,
    request: DeployRequest,
    report: &Reporter<'_>,
) -> anyhow::Result<RunSummary> {
    let ssh = Ssh::new(fleet.ssh.clone())?;
    let waves = match fleet.strategy {
        Strategy::Waves => plan::waves(&fleet.hosts, fleet.canary, fleet.max_parallel),
        Strategy::AllHealthyThenSwitch => vec![fleet.hosts.clone()],
    };
    let start = Start {
        kind: "deploy",
        release: Some(request.release.clone()),
        components: request.components.clone(),
        who: request.who.clone(),
        waves: waves.clone(),
    };
    let (run_id, mut run) = Run::begin(fleet, &ssh, report, history, start)?;
    let who = format!("{} (fleet run {run_id})", request.who);
    let reason = run.go(&run_id, &request, &waves, &who).await;
    let summary = run.finish(&run_id, history, reason)?;
    ssh.close(&fleet.hosts).await;
    Ok(summary)
}

/// What a run is, as its first event and its history row say.
pub(super) struct Start {
    pub(super) kind: &'static str,
    pub(super) release: Option<String>,
    pub(super) components: Vec<String>,
    pub(super) who: String,
    pub(super) waves: Vec<Vec<String>>,
}

pub(super) struct Run<'a> {
    pub(super) fleet: &'a FleetConfig,
    pub(super) ssh: &'a Ssh,
    pub(super) report: &'a Reporter<'a>,
    pub(super) states: BTreeMap<String, HostState>,
    /// The hosts' lock sessions: held while these live.
    pub(super) locks: Vec<Child>,
}

impl<'a> Run<'a> {
    /// Records and announces a new run; every host starts `NotStarted` in its wave.
    pub(super) fn begin(
        fleet: &'a FleetConfig,
        ssh: &'a Ssh,
        report: &'a Reporter<'a>,
        history: &History,
        start: Start,
    ) -> anyhow::Result<(String, Run<'a>)> {
        let run_id = new_run_id();
        report.send(FleetEvent::RunStarted {
            run: run_id.clone(),
            kind: start.kind.into(),
            release: start.release.clone(),
            components: start.components.clone(),
            waves: start.waves.clone(),
        });
        history.start_run(&RunRecord {
            id: run_id.clone(),
            kind: start.kind.into(),
            release: start.release,
            components: start.components,
            who: start.who,
            started_at: now_millis(),
            finished_at: None,
            outcome: None,
            reason: None,
            hosts: Vec::new(),
        })?;
        let mut states = BTreeMap::new();
        for (i, wave) in start.waves.iter().enumerate() {
            for host in wave {
                states.insert(
                    host.clone(),
                    HostState {
                        wave: i + 1,
                        outcome: HostOutcome::NotStarted,
                        detail: None,
                        result: None,
                        started_at: None,
                        finished_at: now_millis(),
                    },
                );
            }
        }
        let run = Run {
            fleet,
            ssh,
            report,
            states,
            locks: Vec::new(),
        };
        Ok((run_id, run))
    }

    pub(super) fn host<'h>(&'h self, name: &'h str) -> Host<'h> {
        Host {
            name,
            ssh: self.ssh,
            fleet: self.fleet,
        }
    }

    pub(super) fn set(&mut self, host: &str, outcome: HostOutcome, detail: Option<String>) {
        if let Some(state) = self.states.get_mut(host) {
            state.outcome = outcome;
            state.detail = detail;
            state.finished_at = now_millis();
        }
    }

    /// Runs the whole deploy; `Some(reason)` when it did not succeed everywhere.
    async fn go(
        &mut self,
        run_id: &str,
        request: &DeployRequest,
        waves: &[Vec<String>],
        who: &str,
    ) -> Option<String> {
        // The lock first: a host busy with another fleet run says so, not "deploy in progress".
        if let Err(reason) = self.lock_all(run_id).await {
            return Some(reason);
        }
        if let Err(reason) = self.preflight(|s| check_host(s, request)).await {
            return Some(reason);
        }
        let remote_paths = match self.upload_all(request).await {
            Ok(paths) => paths,
            Err(reason) => return Some(reason),
        };
        let mut failure = None;
        for (i, wave) in waves.iter().enumerate() {
            let todo: Vec<String> = wave
                .iter()
                .filter(|h| self.states[*h].outcome != HostOutcome::AlreadyThere)
                .cloned()
                .collect();
            if todo.is_empty() {
                continue;
            }
            self.report.send(FleetEvent::WaveStarted {
                wave: i + 1,
                hosts: todo.clone(),
            });
            let hold = self.fleet.strategy == Strategy::AllHealthyThenSwitch;
            failure = self.wave(&todo, request, &remote_paths, hold, who).await;
            if failure.is_some() {
                break;
            }
        }
        let failure = failure?;
        if !request.no_rollback {
            self.roll_back_switched(&request.release, who).await;
        }
        Some(failure)
    }

    /// Every host answers, its daemon runs, and no deploy is in progress there. A host that
    /// already runs the release on every component is left alone.
    pub(super) async fn preflight(
        &mut self,
        check: impl Fn(&StatusResponse) -> Result<bool, String>,
    ) -> Result<(), String> {
        let names: Vec<String> = self.states.keys().cloned().collect();
        for name in &names {
            self.report.phase(name, Phase::Checking, None);
        }
        let this = &*self;
        let checks = names.iter().map(|name| async move {
            let status = this.host(name).status().await;
            (name.clone(), status)
        });
        let answers = futures_util::future::join_all(checks).await;
        let mut problems = Vec::new();
        for (name, answer) in answers {
            let unreachable = answer.is_err();
            match answer.map_err(|e| e.to_string()).and_then(|s| check(&s)) {
                Ok(true) => {
                    self.set(&name, HostOutcome::AlreadyThere, None);
                    self.report.phase(&name, Phase::AlreadyThere, None);
                }
                Ok(false) => self.report.phase(&name, Phase::Ready, None),
                Err(why) => {
                    problems.push(format!("{name}: {why}"));
                    self.refuse(&name, unreachable, why);
                }
            }
        }
        nothing_changed(problems)
    }

    /// A host that cannot take part, found before any host moved: recorded and shown.
    fn refuse(&mut self, name: &str, unreachable: bool, why: String) {
        let outcome = if unreachable {
            HostOutcome::Unreachable
        } else {
            HostOutcome::Failed
        };
        self.report.phase(name, Phase::Failed, Some(why.clone()));
        self.set(name, outcome, Some(why));
    }

    pub(super) async fn lock_all(&mut self, run_id: &str) -> Result<(), String> {
        let names: Vec<String> = self.states.keys().cloned().collect();
        let this = &*self;
        let locking = names
            .iter()
            .map(|name| async move { (name.clone(), this.host(name).lock(run_id).await) });
        let mut problems = Vec::new();
        for (name, locked) in futures_util::future::join_all(locking).await {
            match locked {
                Ok(child) => self.locks.push(child),
                Err(e) => {
                    problems.push(e.to_string());
                    self.refuse(&name, e.is_unreachable(), e.to_string());
                }
            }
        }
        nothing_changed(problems)
    }

    /// Each artifact onto every host that will deploy, verified by sha256 there; component ->
    /// path on the hosts (the same on all: the cache is named by digest).
    async fn upload_all(
        &mut self,
        request: &DeployRequest,
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, String> {
        let mut packed = Vec::new(); // temp tars of directories, alive until the uploads end
        let mut files = Vec::new();
        for (component, path) in &request.artifacts {
            let (file, digest) = prepare(path)
                .await
                .map_err(|e| format!("artifact {}: {e}", path.display()))?;
            files.push((component.clone(), file.path().to_owned(), digest));
            packed.push(file);
        }
        let targets: Vec<String> = self
            .states
            .iter()
            .filter(|(_, s)| s.outcome == HostOutcome::NotStarted)
            .map(|(h, _)| h.clone())
            .collect();
        for host in &targets {
            self.report.phase(host, Phase::Uploading, None);
        }
        let files = &files;
        let this = &*self;
        let uploads = targets.iter().map(|name| async move {
            let mut paths = BTreeMap::new();
            for (component, file, digest) in files {
                match this.host(name).upload(file, digest).await {
                    Ok(received) => {
                        paths.insert(component.clone(), received.path);
                    }
                    Err(e) => return (name.clone(), Err(e)),
                }
            }
            (name.clone(), Ok(paths))
        });
        let mut paths = BTreeMap::new();
        let mut problems = Vec::new();
        for (name, uploaded) in futures_util::future::join_all(uploads).await {
            match uploaded {
                Ok(p) => {
                    self.report.phase(&name, Phase::Uploaded, None);
                    paths.insert(name, p);
                }
                Err(e) => {
                    problems.push(e.to_string());
                    self.refuse(&name, e.is_unreachable(), e.to_string());
                }
            }
        }
        drop(packed);
        nothing_changed(problems).map(|()| paths)
    }

    /// Every host this run moved to the new release goes back to what it ran before, all at
    /// once.
    async fn roll_back_switched(&mut self, release: &str, who: &str) {
        let done = self.roll_back(release, who, &[]).await;
        self.record_rollbacks(done);
    }

    /// The rollbacks of every host recorded as switched, and of `also` (hosts of the current
    /// wave that switched, not yet recorded), all at once; each host's result, for
    /// [`Run::record_rollbacks`]. Takes `&self` so a wave can run it while its own hosts abort.
    pub(super) async fn roll_back(
        &self,
        release: &str,
        who: &str,
        also: &[(String, PipelineResult)],
    ) -> Vec<(String, Result<(), String>)> {
        let report = self.report;
        let recorded = self
            .states
            .iter()
            .filter(|(_, s)| s.outcome == HostOutcome::Succeeded)
            .filter_map(|(h, s)| Some((h, s.result.as_ref()?)));
        let switched: Vec<(String, Vec<(String, String)>)> = recorded
            .chain(also.iter().map(|(h, r)| (h, r)))
            .map(|(h, r)| (h.clone(), plan::rollback_steps(r, release)))
            .collect();
        let rollbacks = switched.iter().map(|(name, steps)| {
            let host = self.host(name);
            report.phase(name, Phase::RollingBack, None);
            async move {
                for (component, to) in steps {
                    let done = host
                        .rollback(component, Some(to), who, |e| forward(report, name, e))
                        .await;
                    match done {
                        Ok(r) if r.outcome == crate::vocab::Outcome::Succeeded => {}
                        Ok(r) => {
                            return (
                                name.clone(),
                                Err(r.reason.unwrap_or_else(|| "failed".into())),
                            )
                        }
                        Err(e) => return (name.clone(), Err(e.to_string())),
                    }
                }
                (name.clone(), Ok(()))
            }
        });
        futures_util::future::join_all(rollbacks).await
    }

    pub(super) fn record_rollbacks(&mut self, done: Vec<(String, Result<(), String>)>) {
        for (name, done) in done {
            match done {
                Ok(()) => {
                    self.report
                        .phase(&name, Phase::Done, Some("back on its old release".into()));
                    self.set(
                        &name,
                        HostOutcome::RolledBack,
                        Some("moved back by the fleet".into()),
                    );
                }
                Err(why) => {
                    self.report.phase(&name, Phase::Failed, Some(why.clone()));
                    self.set(&name, HostOutcome::RollbackFailed, Some(why));
                }
            }
        }
    }

    pub(super) fn finish(
        &mut self,
        run: &str,
        history: &History,
        reason: Option<String>,
    ) -> anyhow::Result<RunSummary> {
        // Closing their stdin ends the remote lock holders.
        for lock in &mut self.locks {
            drop(lock.stdin.take());
        }
        let mut hosts: Vec<HostRecord> = self
            .states
            .iter()
            .map(|(name, s)| HostRecord {
                host: name.clone(),
                wave: s.wave,
                outcome: s.outcome,
                detail: s.detail.clone(),
                from: s
                    .result
                    .as_ref()
                    .map(|r| r.from.clone())
                    .unwrap_or_default(),
                started_at: s.started_at,
                finished_at: s.finished_at,
            })
            .collect();
        hosts.sort_by_key(|h| (h.wave, self.fleet.hosts.iter().position(|x| *x == h.host)));
        for host in &hosts {
            history.record_host(run, host)?;
        }
        let outcomes: Vec<HostOutcome> = hosts.iter().map(|h| h.outcome).collect();
        let outcome = match reason {
            None => RunOutcome::Succeeded,
            Some(_) => match plan::run_outcome(&outcomes) {
                // A failure reason with every host fine cannot be a success.
                RunOutcome::Succeeded => RunOutcome::Failed,
                other => other,
            },
        };
        history.finish_run(run, outcome, reason.as_deref(), now_millis())?;
        self.report.send(FleetEvent::RunFinished {
            run: run.to_owned(),
            outcome,
            reason: reason.clone(),
            duration_ms: self.report.elapsed_ms(),
            hosts: hosts.clone(),
        });
        Ok(RunSummary {
            run: run.to_owned(),
            outcome,
            reason,
            hosts,
        })
    }
}

/// The end of a step before any switch: every host went on, or the run stops, saying why.
fn nothing_changed(problems: Vec<String>) -> Result<(), String> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "no host was changed, because {}",
            problems.join("; ")
        ))
    }
}

/// Whether the host already runs `request`'s release on every component; an error when it
/// cannot take the deploy (daemon down, unknown component, a deploy in progress).
fn check_host(status: &StatusResponse, request: &DeployRequest) -> Result<bool, String> {
    if status.daemon.is_none() {
        return Err("its cutover daemon is not running".into());
    }
    let mut everywhere = true;
    for name in &request.components {
        let Some(component) = status.components.iter().find(|c| c.name == *name) else {
            return Err(format!("its config has no component {name:?}"));
        };
        if let Some(deploying) = &component.deploying {
            return Err(format!(
                "a deploy of {name} is in progress there ({})",
                deploying.release
            ));
        }
        if component.serving_release.as_deref() != Some(request.release.as_str()) {
            everywhere = false;
        }
    }
    Ok(everywhere)
}

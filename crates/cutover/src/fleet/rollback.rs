//! `cutover fleet rollback COMPONENT [--to ID]`: every host moves back at once (a rollback is
//! to a release that served before, so there is no canary to wait for), each as its own
//! zero-drop `cutover rollback`; a host already serving the target is left alone.

use super::events::{forward, Reporter};
use super::events::{FleetEvent, Phase};
use super::history::History;
use super::plan::HostOutcome;
use super::run::{Run, RunSummary, Start};
use super::ssh::Ssh;
use crate::config::FleetConfig;
use crate::protocol::StatusResponse;
use crate::vocab::{now_millis, Outcome};

pub async fn rollback(
    fleet: &FleetConfig,
    history: &History,
    component: &str,
    to: Option<&str>,
    who: &str,
    report: &Reporter<'_>,
) -> anyhow::Result<RunSummary> {
    let ssh = Ssh::new(fleet.ssh.clone())?;
    let start = Start {
        kind: "rollback",
        release: to.map(str::to_owned),
        components: vec![component.to_owned()],
        who: who.to_owned(),
        // One wave: all hosts at once.
        waves: vec![fleet.hosts.clone()],
    };
    let (run_id, mut run) = Run::begin(fleet, &ssh, report, history, start)?;
    let who = format!("{who} (fleet run {run_id})");
    let reason = go(&mut run, &run_id, component, to, &who).await;
    let summary = run.finish(&run_id, history, reason)?;
    ssh.close(&fleet.hosts).await;
    Ok(summary)
}

async fn go(
    run: &mut Run<'_>,
    run_id: &str,
    component: &str,
    to: Option<&str>,
    who: &str,
) -> Option<String> {
    if let Err(reason) = run.lock_all(run_id).await {
        return Some(reason);
    }
    if let Err(reason) = run.preflight(|s| check_host(s, component, to)).await {
        return Some(reason);
    }
    let report = run.report;
    let todo: Vec<String> = run
        .states
        .iter()
        .filter(|(_, s)| s.outcome == HostOutcome::NotStarted)
        .map(|(h, _)| h.clone())
        .collect();
    report.send(FleetEvent::WaveStarted {
        wave: 1,
        hosts: todo.clone(),
    });
    let started_at = now_millis();
    let rollbacks = todo.iter().map(|name| {
        let host = run.host(name);
        report.phase(name, Phase::RollingBack, None);
        async move {
            let done = host
                .rollback(component, to, who, |e| forward(report, name, e))
                .await;
            (name.clone(), done)
        }
    });
    let results = futures_util::future::join_all(rollbacks).await;
    let mut failures = Vec::new();
    for (name, done) in results {
        let (outcome, detail) = match done {
            Ok(r) if r.outcome == Outcome::Succeeded => (HostOutcome::RolledBack, None),
            Ok(r) => (HostOutcome::RollbackFailed, r.reason.clone()),
            Err(e) => (HostOutcome::Unreachable, Some(e.to_string())),
        };
        let phase = if outcome == HostOutcome::RolledBack {
            Phase::Done
        } else {
            failures.push(format!(
                "{name}: {}",
                detail.as_deref().unwrap_or(outcome.label())
            ));
            Phase::Failed
        };
        report.phase(&name, phase, detail.clone());
        run.set(&name, outcome, detail);
        if let Some(state) = run.states.get_mut(&name) {
            state.started_at = Some(started_at);
        }
    }
    if failures.is_empty() {
        None
    } else {
        Some(failures.join("; "))
    }
}

/// Whether the host already serves `to`; an error when it cannot roll back now.
fn check_host(status: &StatusResponse, component: &str, to: Option<&str>) -> Result<bool, String> {
    if status.daemon.is_none() {
        return Err("its cutover daemon is not running".into());
    }
    let Some(c) = status.components.iter().find(|c| c.name == component) else {
        return Err(format!("its config has no component {component:?}"));
    };
    if let Some(deploying) = &c.deploying {
        return Err(format!(
            "a deploy of {component} is in progress there ({})",
            deploying.release
        ));
    }
    Ok(to.is_some() && c.serving_release.as_deref() == to)
}

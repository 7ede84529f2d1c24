//! What a fleet run reports as it goes: the `--json` lines of `cutover fleet deploy` (each one
//! object, with `t_ms` since the run started and the host it is about), and what the live view
//! draws.

use super::history::HostRecord;
use super::plan::RunOutcome;
use crate::protocol::{Event, EventKind};
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Debug, Serialize)]
pub struct FleetLine {
    pub t_ms: u64,
    #[serde(flatten)]
    pub event: FleetEvent,
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FleetEvent {
    RunStarted {
        run: String,
        kind: String,
        release: Option<String>,
        components: Vec<String>,
        waves: Vec<Vec<String>>,
    },
    /// A host moved to another phase of the run.
    HostPhase {
        host: String,
        phase: Phase,
        detail: Option<String>,
    },
    /// An event of the host's own deploy or rollback, as its daemon sent it.
    HostEvent {
        host: String,
        daemon: Event,
    },
    WaveStarted {
        wave: usize,
        hosts: Vec<String>,
    },
    RunFinished {
        run: String,
        outcome: RunOutcome,
        reason: Option<String>,
        duration_ms: u64,
        hosts: Vec<HostRecord>,
    },
}

/// Where a host is in the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Checking,
    Ready,
    AlreadyThere,
    Uploading,
    Uploaded,
    Deploying,
    Healthy,
    /// Healthy beside its old release, waiting for every host to be (all_healthy_then_switch).
    Holding,
    /// Released from its hold: switching with the others.
    Switching,
    Switched,
    Stabilizing,
    Aborting,
    RollingBack,
    Done,
    Failed,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Phase::Checking => "checking",
            Phase::Ready => "ready",
            Phase::AlreadyThere => "already there",
            Phase::Uploading => "uploading",
            Phase::Uploaded => "uploaded",
            Phase::Deploying => "deploying",
            Phase::Healthy => "healthy",
            Phase::Holding => "holding",
            Phase::Switching => "switching",
            Phase::Switched => "switched",
            Phase::Stabilizing => "stabilizing",
            Phase::Aborting => "aborting",
            Phase::RollingBack => "rolling back",
            Phase::Done => "done",
            Phase::Failed => "failed",
        }
    }
}

/// Sends each event, stamped with the time since the run started.
pub struct Reporter<'a> {
    start: Instant,
    sink: &'a (dyn Fn(FleetLine) + Sync),
}

impl<'a> Reporter<'a> {
    pub fn new(sink: &'a (dyn Fn(FleetLine) + Sync)) -> Self {
        Reporter {
            start: Instant::now(),
            sink,
        }
    }

    pub fn send(&self, event: FleetEvent) {
        (self.sink)(FleetLine {
            t_ms: self.start.elapsed().as_millis() as u64,
            event,
        });
    }

    pub(super) fn phase(&self, host: &str, phase: Phase, detail: Option<String>) {
        self.send(FleetEvent::HostPhase {
            host: host.to_owned(),
            phase,
            detail,
        });
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

/// A host's daemon event goes out as-is, and the phases it implies drive the live view.
pub(super) fn forward(report: &Reporter<'_>, host: &str, event: &Event) {
    let phase = match &event.kind {
        EventKind::Healthy { after_ms, .. } => Some((
            Phase::Healthy,
            Some(format!("after {:.1}s", *after_ms as f64 / 1000.0)),
        )),
        EventKind::Switched { to, .. } => Some((Phase::Switched, Some(format!("to {to}")))),
        EventKind::Stabilizing {
            elapsed_ms,
            total_ms,
            requests,
            failed,
            ..
        } => Some((
            Phase::Stabilizing,
            Some(format!(
                "{:.0}s of {:.0}s, {requests} requests, {failed} failed",
                *elapsed_ms as f64 / 1000.0,
                *total_ms as f64 / 1000.0
            )),
        )),
        _ => None,
    };
    report.send(FleetEvent::HostEvent {
        host: host.to_owned(),
        daemon: event.clone(),
    });
    if let Some((phase, detail)) = phase {
        report.phase(host, phase, detail);
    }
}

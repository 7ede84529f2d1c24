//! How each event reads: the component it is about, and one line for people.

use super::{outcome_words, EventKind};
use crate::vocab::DeployKind;

impl EventKind {
    /// The component an event is about, if any.
    pub fn component(&self) -> Option<&str> {
        use EventKind::*;
        match self {
            DeployStarted { component, .. }
            | Stored { component, .. }
            | InstanceStarted { component, .. }
            | Migrated { component, .. }
            | Migrating { component, .. }
            | Probe { component, .. }
            | Healthy { component, .. }
            | Switched { component, .. }
            | Stabilizing { component, .. }
            | Stable { component, .. }
            | RolledBack { component, .. }
            | Drained { component, .. }
            | Stopped { component, .. }
            | DeployFinished { component, .. }
            | Holding { component, .. }
            | Proceeding { component, .. }
            | Skipped { component, .. } => Some(component),
            Warning { component, .. } => component.as_deref(),
            PipelineStarted { .. } | PipelineFinished { .. } => None,
        }
    }

    /// One line for people: the CLI's plain output and the deploy's stored event log.
    pub fn summary(&self) -> String {
        use EventKind::*;
        let size = |bytes: u64| match bytes {
            b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
            b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
            b => format!("{b} B"),
        };
        match self {
            PipelineStarted {
                pipeline_id,
                release,
                components,
            } => {
                format!(
                    "pipeline #{pipeline_id}: release {release} to {}",
                    components.join(", ")
                )
            }
            DeployStarted {
                kind,
                from,
                to,
                deploy_id,
                ..
            } => {
                let verb = match kind {
                    DeployKind::Deploy => "deploy",
                    DeployKind::Rollback => "rollback",
                };
                format!(
                    "{verb} #{deploy_id}: {} -> {to}",
                    from.as_deref().unwrap_or("(none)")
                )
            }
            Stored {
                release,
                sha256,
                size: bytes,
                reused,
                ..
            } => format!(
                "{}stored {release} (sha256 {}, {})",
                if *reused { "using " } else { "" },
                &sha256[..sha256.len().min(12)],
                size(*bytes)
            ),
            Migrating { detail, .. } => detail.clone(),
            Migrated {
                applied, version, ..
            } => match (applied.is_empty(), version) {
                (true, Some(v)) => format!("schema already at version {v}; nothing to migrate"),
                (true, None) => "no migrations".into(),
                (false, v) => format!(
                    "migrated to version {}: {}",
                    v.map_or("?".into(), |v| v.to_string()),
                    applied.join(", ")
                ),
            },
            InstanceStarted {
                release, pid, port, ..
            } => {
                format!("started {release}: pid {pid} on 127.0.0.1:{port}")
            }
            Probe {
                ok,
                detail,
                consecutive,
                needed,
                ..
            } => {
                let verdict = if *ok { "ok" } else { "failed" };
                format!("health probe {verdict}: {detail} ({consecutive}/{needed})")
            }
            Healthy { after_ms, .. } => format!("healthy after {:.1}s", *after_ms as f64 / 1000.0),
            Switched { from, to, .. } => format!(
                "switched traffic {} -> {to}",
                from.as_deref().unwrap_or("(none)")
            ),
            Stabilizing {
                elapsed_ms,
                total_ms,
                requests,
                failed,
                ..
            } => format!(
                "stabilizing {:.0}/{:.0}s: {requests} requests, {failed} failed",
                *elapsed_ms as f64 / 1000.0,
                *total_ms as f64 / 1000.0
            ),
            Stable {
                requests, failed, ..
            } => {
                format!("stable ({requests} requests, {failed} failed)")
            }
            RolledBack { to, reason, .. } => format!(
                "rolled back to {}: {reason}",
                to.as_deref().unwrap_or("(none)")
            ),
            Drained {
                release, remaining, ..
            } => {
                if *remaining == 0 {
                    format!("drained {release}")
                } else {
                    format!(
                        "drain of {release} timed out with {remaining} requests or tunnels open"
                    )
                }
            }
            Stopped {
                release, status, ..
            } => format!("stopped {release}: {status}"),
            Warning { message, .. } => format!("warning: {message}"),
            DeployFinished {
                outcome, reason, ..
            } => match reason {
                Some(reason) => format!("{}: {reason}", outcome_words(*outcome)),
                None => outcome_words(*outcome).to_owned(),
            },
            Holding {
                component,
                elapsed_ms,
                timeout_ms,
                ..
            } => format!(
                "ready; holding before the switch for `cutover proceed {component}` ({:.0}s of {})",
                *elapsed_ms as f64 / 1000.0,
                humantime::format_duration(std::time::Duration::from_secs(timeout_ms / 1000))
            ),
            Proceeding { who, .. } => format!("released by {who}; switching"),
            Skipped { reason, .. } => format!("skipped: {reason}"),
            PipelineFinished {
                outcome,
                reason,
                duration_ms,
                ..
            } => {
                let took = *duration_ms as f64 / 1000.0;
                let outcome = outcome_words(*outcome);
                match reason {
                    Some(reason) => format!("{outcome} in {took:.1}s: {reason}"),
                    None => format!("{outcome} in {took:.1}s"),
                }
            }
        }
    }
}

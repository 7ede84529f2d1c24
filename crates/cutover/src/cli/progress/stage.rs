//! One stage's status line in the live view: what it is doing now, folded from its events.

use super::super::output::{first_line, printable};
use super::thousands;
use crate::protocol::{outcome_words, EventKind};
use crate::vocab::Outcome;

#[derive(Default)]
pub struct Stage {
    pub name: String,
    releases: String,
    step: String,
    detail: String,
    /// The last stabilization figures: (elapsed_ms, total_ms, requests, failed).
    stabilizing: Option<(u64, u64, u64, u64)>,
    /// Set once the stage ended: later events (a stop, the deploy's end) must not turn a
    /// rollback's line back into something else.
    ended: bool,
}

impl Stage {
    pub fn waiting(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            step: "waiting".into(),
            ..Self::default()
        }
    }

    pub fn apply(&mut self, kind: &EventKind) {
        match kind {
            EventKind::DeployStarted { from, to, .. } => {
                self.releases = format!(
                    "{} -> {}",
                    short(from.as_deref().unwrap_or("(none)")),
                    short(to)
                );
                self.step = "preparing".into();
                self.detail.clear();
                self.stabilizing = None;
                self.ended = false;
            }
            _ if self.ended => {}
            EventKind::Stored { .. } => self.step = "stored".into(),
            EventKind::Migrating { detail, .. } => {
                self.step = "migrating".into();
                self.detail = first_line(detail);
            }
            EventKind::InstanceStarted { pid, .. } => {
                self.step = "starting".into();
                self.detail = format!("pid {pid}");
            }
            EventKind::Probe {
                ok,
                detail,
                consecutive,
                needed,
                ..
            } => {
                let mark = if *ok { "ok" } else { "FAIL" };
                self.detail = format!(
                    "probe {mark} {consecutive}/{needed}: {}",
                    first_line(detail)
                );
            }
            EventKind::Healthy { after_ms, .. } => {
                self.step = "healthy".into();
                self.detail = format!("after {:.1}s", *after_ms as f64 / 1000.0);
            }
            EventKind::Holding {
                component,
                elapsed_ms,
                timeout_ms,
            } => {
                self.step = "holding".into();
                self.detail = format!(
                    "for `cutover proceed {component}`: {}s of {}s",
                    elapsed_ms / 1000,
                    timeout_ms / 1000
                );
            }
            EventKind::Proceeding { who, .. } => {
                self.step = "released".into();
                self.detail = format!("by {who}");
            }
            EventKind::Switched { .. } => {
                self.step = "switched".into();
                self.detail.clear();
            }
            EventKind::Stabilizing {
                elapsed_ms,
                total_ms,
                requests,
                failed,
                ..
            } => {
                self.step = "stabilizing".into();
                self.stabilizing = Some((*elapsed_ms, *total_ms, *requests, *failed));
                self.detail = format!(
                    "{} {:>3}s left  {} req, {} failed",
                    bar(*elapsed_ms, *total_ms, 24),
                    total_ms.saturating_sub(*elapsed_ms).div_ceil(1000),
                    thousands(*requests),
                    thousands(*failed)
                );
            }
            EventKind::Stable {
                requests, failed, ..
            } => {
                self.step = "stable".into();
                self.detail = format!(
                    "{} req, {} failed",
                    thousands(*requests),
                    thousands(*failed)
                );
            }
            EventKind::RolledBack { to, .. } => {
                // The bar stops here, with the figures that caused the rollback.
                let to = to.as_deref().unwrap_or("(none)");
                self.step = "rolled back".into();
                self.detail = match self.stabilizing {
                    Some((elapsed, total, requests, failed)) => format!(
                        "to {to} at {:.1}s of {}s: {} req, {} failed",
                        elapsed as f64 / 1000.0,
                        total / 1000,
                        thousands(requests),
                        thousands(failed)
                    ),
                    None => format!("to {to}"),
                };
                self.ended = true;
            }
            EventKind::DeployFinished {
                outcome, reason, ..
            } => {
                self.ended = true;
                match outcome {
                    Outcome::Succeeded => self.step = "done".into(),
                    other => {
                        self.step = outcome_words(*other).into();
                        self.detail = reason.as_deref().map(first_line).unwrap_or_default();
                    }
                }
            }
            EventKind::Skipped { reason, .. } => {
                self.step = "skipped".into();
                self.detail = reason.clone();
                self.ended = true;
            }
            _ => {}
        }
    }

    /// The status line, uncut (the live view fits it to the terminal).
    pub fn render(&self) -> String {
        format!(
            "  \x1b[1m{:<10}\x1b[0m {:<20} {:<12} {}",
            self.name,
            self.releases,
            self.step,
            printable(&self.detail)
        )
    }
}

/// A release id as the status row shows it: commit SHAs as git abbreviates them, so the row
/// keeps room for what changes.
fn short(id: &str) -> String {
    match id.char_indices().nth(12) {
        Some((cut, _)) => format!("{}…", &id[..cut]),
        None => id.to_owned(),
    }
}

pub fn bar(elapsed: u64, total: u64, width: usize) -> String {
    let filled = (elapsed.min(total) * width as u64)
        .checked_div(total)
        .map_or(width, |f| f as usize);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(stage: &Stage) -> String {
        console::strip_ansi_codes(&stage.render()).into_owned()
    }

    #[test]
    fn a_rollback_freezes_the_bar_with_the_figures_that_caused_it() {
        let mut stage = Stage::waiting("backend");
        let c = || "backend".to_owned();
        stage.apply(&EventKind::Stabilizing {
            component: c(),
            elapsed_ms: 5_000,
            total_ms: 60_000,
            requests: 3_451,
            failed: 0,
        });
        stage.apply(&EventKind::Stabilizing {
            component: c(),
            elapsed_ms: 5_400,
            total_ms: 60_000,
            requests: 4_373,
            failed: 353,
        });
        stage.apply(&EventKind::RolledBack {
            component: c(),
            to: Some("v1".into()),
            reason: "error rate 8.1%".into(),
        });
        stage.apply(&EventKind::Stopped {
            component: c(),
            release: "v2".into(),
            status: "exited 0".into(),
        });
        stage.apply(&EventKind::DeployFinished {
            component: c(),
            deploy_id: 2,
            outcome: Outcome::RolledBack,
            reason: Some("error rate 8.1%".into()),
        });
        let line = plain(&stage);
        assert!(
            line.contains("rolled back  to v1 at 5.4s of 60s: 4,373 req, 353 failed"),
            "{line}"
        );
        assert!(!line.contains("left") && !line.contains('#'), "{line}");
        assert!(
            !line.contains("rolled_back") && !line.contains("ROLLED"),
            "{line}"
        );
    }

    #[test]
    fn skipped_and_failed_stages_say_why() {
        let mut stage = Stage::waiting("frontend");
        stage.apply(&EventKind::Skipped {
            component: "frontend".into(),
            reason: "backend failed".into(),
        });
        assert!(plain(&stage).contains("skipped      backend failed"));
        assert_eq!(bar(30, 60, 10), "[#####-----]");
        assert_eq!(short("3f9c2e1d0b8a7f6e5d4c"), "3f9c2e1d0b8a…");
        assert_eq!(short("v1"), "v1");
    }
}

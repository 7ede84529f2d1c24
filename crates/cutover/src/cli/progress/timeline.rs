//! What each stage did, condensed into the summary printed after the pipeline.

use super::super::output::first_line;
use super::thousands;
use crate::protocol::{outcome_words, Event, EventKind};
use crate::vocab::Outcome;
use std::collections::BTreeMap;

/// What each stage did, condensed into the summary printed at the end:
///
/// ```text
///    0.0s  backend   v1 -> 3f9c2e1  healthy after 0.6s, switched
///    0.6s  backend   stabilizing 60s ... stable (12,408 requests, 0 failed)
///   60.7s  frontend  v1 -> 3f9c2e1  switched
///   60.8s  done in 60.8s
/// ```
#[derive(Default)]
pub struct Timeline {
    /// What the pipeline deploys, as announced.
    components: Vec<String>,
    entries: Vec<(u64, String, String)>,
    open: BTreeMap<String, StageTrace>,
    end: Option<(u64, String)>,
    /// Stages' failure reasons, printed as they failed: the end line does not repeat them.
    shown_reasons: Vec<String>,
}

#[derive(Default)]
struct StageTrace {
    started: u64,
    releases: String,
    healthy_ms: Option<u64>,
    switched: Option<u64>,
    stabilize_total: Option<u64>,
}

impl Timeline {
    pub fn record(&mut self, event: &Event) {
        let t = event.t_ms;
        let name = event.kind.component().unwrap_or_default().to_owned();
        match &event.kind {
            EventKind::PipelineStarted { components, .. } => self.components = components.clone(),
            EventKind::DeployStarted { from, to, .. } => {
                self.open.insert(
                    name,
                    StageTrace {
                        started: t,
                        releases: format!("{} -> {to}", from.as_deref().unwrap_or("(none)")),
                        ..StageTrace::default()
                    },
                );
            }
            EventKind::Healthy { after_ms, .. } => {
                if let Some(trace) = self.open.get_mut(&name) {
                    trace.healthy_ms = Some(*after_ms);
                }
            }
            EventKind::Switched { .. } => {
                if let Some(trace) = self.open.get_mut(&name) {
                    trace.switched = Some(t);
                    let what = match trace.healthy_ms {
                        Some(ms) if ms > 0 => {
                            format!("healthy after {:.1}s, switched", ms as f64 / 1000.0)
                        }
                        _ => "switched".into(),
                    };
                    self.entries.push((
                        trace.started,
                        name.clone(),
                        format!("{}  {what}", trace.releases),
                    ));
                }
            }
            EventKind::Stabilizing { total_ms, .. } => {
                if let Some(trace) = self.open.get_mut(&name) {
                    trace.stabilize_total = Some(*total_ms);
                }
            }
            EventKind::Stable {
                requests, failed, ..
            } => {
                if let Some(trace) = self.open.get(&name) {
                    let total = trace
                        .stabilize_total
                        .map_or(String::new(), |ms| format!(" {}s", ms / 1000));
                    self.entries.push((
                        trace.switched.unwrap_or(t),
                        name.clone(),
                        format!(
                            "stabilizing{total} ... stable ({} requests, {} failed)",
                            thousands(*requests),
                            thousands(*failed)
                        ),
                    ));
                }
            }
            EventKind::RolledBack { to, reason, .. } => {
                let at = self.open.get(&name).and_then(|s| s.switched).unwrap_or(t);
                self.entries.push((
                    at,
                    name.clone(),
                    format!(
                        "{} ... rolled back to {}: {}",
                        if trace_stabilized(self.open.get(&name)) {
                            "stabilizing"
                        } else {
                            "after the switch"
                        },
                        to.as_deref().unwrap_or("(none)"),
                        first_line(reason)
                    ),
                ));
            }
            EventKind::DeployFinished {
                outcome: outcome @ (Outcome::Failed | Outcome::Interrupted),
                reason,
                ..
            } => {
                if let Some(trace) = self.open.get(&name) {
                    // The reason was printed in full as the stage failed, just above.
                    let what = match reason {
                        Some(_) => format!("{} (the reason is above)", outcome_words(*outcome)),
                        None => outcome_words(*outcome).to_owned(),
                    };
                    self.entries.push((
                        trace.started,
                        name.clone(),
                        format!("{}  {what}", trace.releases),
                    ));
                    self.shown_reasons.extend(reason.clone());
                }
            }
            EventKind::DeployFinished {
                outcome: Outcome::Succeeded,
                reason: Some(note),
                ..
            } => {
                if let Some(trace) = self.open.get(&name) {
                    if trace.switched.is_none() {
                        self.entries.push((
                            trace.started,
                            name.clone(),
                            format!("{}  {note}", trace.releases),
                        ));
                    }
                }
            }
            EventKind::Skipped { reason, .. } => {
                self.entries
                    .push((t, name.clone(), format!("skipped: {}", first_line(reason))));
            }
            EventKind::PipelineFinished {
                outcome,
                reason,
                duration_ms,
                ..
            } => {
                let took = format!("{:.1}s", *duration_ms as f64 / 1000.0);
                let text = match (outcome, reason) {
                    (Outcome::Succeeded, _) => format!("done in {took}"),
                    (other, Some(reason)) => format!(
                        "{} in {took}: {}",
                        outcome_words(*other),
                        first_line(&super::without(reason, &self.shown_reasons))
                    ),
                    (other, None) => format!("{} in {took}", outcome_words(*other)),
                };
                self.end = Some((t, text));
            }
            _ => {}
        }
    }

    pub fn components(&self) -> Vec<String> {
        self.components.clone()
    }

    pub fn lines(&self) -> Vec<String> {
        // Stages run in parallel report out of order: the timeline is in time order.
        let mut entries: Vec<&(u64, String, String)> = self.entries.iter().collect();
        entries.sort_by_key(|(t, _, _)| *t);
        let mut lines: Vec<String> = entries
            .into_iter()
            .map(|(t, name, text)| format!("{:>7.1}s  {name:<9} {text}", *t as f64 / 1000.0))
            .collect();
        if let Some((t, text)) = &self.end {
            lines.push(format!("{:>7.1}s  {text}", *t as f64 / 1000.0));
        }
        lines
    }
}

fn trace_stabilized(trace: Option<&StageTrace>) -> bool {
    trace.is_some_and(|t| t.stabilize_total.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::DeployKind;

    fn at(t_ms: u64, kind: EventKind) -> Event {
        Event { t_ms, kind }
    }

    #[test]
    fn timeline_reads_like_the_issue() {
        let mut timeline = Timeline::default();
        let c = |s: &str| s.to_owned();
        for event in [
            at(
                0,
                EventKind::DeployStarted {
                    component: c("backend"),
                    deploy_id: 1,
                    kind: DeployKind::Deploy,
                    from: Some(c("v1")),
                    to: c("3f9c2e1"),
                },
            ),
            at(
                600,
                EventKind::Healthy {
                    component: c("backend"),
                    after_ms: 600,
                },
            ),
            at(
                600,
                EventKind::Switched {
                    component: c("backend"),
                    from: Some(c("v1")),
                    to: c("3f9c2e1"),
                },
            ),
            at(
                1600,
                EventKind::Stabilizing {
                    component: c("backend"),
                    elapsed_ms: 1000,
                    total_ms: 60_000,
                    requests: 10,
                    failed: 0,
                },
            ),
            at(
                60_650,
                EventKind::Stable {
                    component: c("backend"),
                    requests: 12_408,
                    failed: 0,
                },
            ),
            at(
                60_700,
                EventKind::DeployStarted {
                    component: c("frontend"),
                    deploy_id: 2,
                    kind: DeployKind::Deploy,
                    from: Some(c("v1")),
                    to: c("3f9c2e1"),
                },
            ),
            at(
                60_750,
                EventKind::Switched {
                    component: c("frontend"),
                    from: Some(c("v1")),
                    to: c("3f9c2e1"),
                },
            ),
            at(
                60_800,
                EventKind::PipelineFinished {
                    pipeline_id: 1,
                    outcome: Outcome::Succeeded,
                    reason: None,
                    duration_ms: 60_800,
                },
            ),
        ] {
            timeline.record(&event);
        }
        assert_eq!(
            timeline.lines(),
            [
                "    0.0s  backend   v1 -> 3f9c2e1  healthy after 0.6s, switched",
                "    0.6s  backend   stabilizing 60s ... stable (12,408 requests, 0 failed)",
                "   60.7s  frontend  v1 -> 3f9c2e1  switched",
                "   60.8s  done in 60.8s",
            ]
        );
    }
}

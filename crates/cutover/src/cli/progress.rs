//! Deploy progress as the CLI shows it: JSON lines (`--json`), plain timestamped lines (no
//! terminal), or a live view on a terminal; then a timeline of the whole pipeline.
//!
//! The live view keeps one status line per stage at the bottom of the screen (step, probe
//! results, a stabilization countdown bar, requests served and failed by the new release) and
//! prints lasting events above it. Drawn with plain ANSI escapes: a redraw is "cursor up N,
//! clear lines", which no terminal-UI crate would make simpler.

use super::output::first_line;
use crate::protocol::{Event, EventKind};
use crate::store::Outcome;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

pub struct Progress {
    mode: Mode,
    /// Stage status lines, in pipeline order.
    stages: Vec<Stage>,
    /// Lines currently drawn below the scrolling output (live view only).
    drawn: usize,
    last_plain_tick: BTreeMap<String, u64>,
    timeline: Timeline,
    /// Stages' failure reasons printed in full: the final line does not repeat them.
    shown_reasons: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Json,
    Plain,
    Live,
}

#[derive(Default)]
struct Stage {
    name: String,
    releases: String,
    step: String,
    detail: String,
}

impl Progress {
    pub fn new(json: bool) -> Self {
        let mode = if json {
            Mode::Json
        } else if std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
            Mode::Live
        } else {
            Mode::Plain
        };
        Self::with_mode(mode)
    }

    fn with_mode(mode: Mode) -> Self {
        Self {
            mode,
            stages: Vec::new(),
            drawn: 0,
            last_plain_tick: BTreeMap::new(),
            timeline: Timeline::default(),
            shown_reasons: Vec::new(),
        }
    }

    pub fn event(&mut self, event: &Event) {
        self.timeline.record(event);
        let shown = self.shown_reasons.clone();
        if let EventKind::DeployFinished {
            outcome: Outcome::Failed | Outcome::Interrupted,
            reason: Some(reason),
            ..
        } = &event.kind
        {
            self.shown_reasons.push(reason.clone());
        }
        let mut out = std::io::stdout().lock();
        match self.mode {
            Mode::Json => {
                let _ = serde_json::to_writer(&mut out, event);
                let _ = writeln!(out);
            }
            Mode::Plain => {
                if self.plain_worthy(event) {
                    let _ = writeln!(out, "{}", line(event, &shown));
                }
            }
            Mode::Live => {
                self.update_stage(event);
                let lasting = !matches!(
                    event.kind,
                    EventKind::Probe { .. } | EventKind::Stabilizing { .. }
                );
                self.clear(&mut out);
                if lasting {
                    let _ = writeln!(out, "{}", line(event, &shown));
                }
                self.draw(&mut out);
            }
        }
        let _ = out.flush();
    }

    /// Without a terminal, stabilization ticks are thinned to one per 10 s per stage.
    fn plain_worthy(&mut self, event: &Event) -> bool {
        if let EventKind::Stabilizing {
            component,
            elapsed_ms,
            ..
        } = &event.kind
        {
            let last = self.last_plain_tick.entry(component.clone()).or_insert(0);
            if *last != 0 && elapsed_ms - *last < 10_000 {
                return false;
            }
            *last = (*elapsed_ms).max(1);
        }
        true
    }

    fn stage(&mut self, name: &str) -> &mut Stage {
        if let Some(i) = self.stages.iter().position(|s| s.name == name) {
            return &mut self.stages[i];
        }
        self.stages.push(Stage {
            name: name.to_owned(),
            step: "waiting".into(),
            ..Stage::default()
        });
        self.stages.last_mut().expect("just pushed")
    }

    fn update_stage(&mut self, event: &Event) {
        if let EventKind::PipelineStarted { components, .. } = &event.kind {
            for name in components {
                self.stage(name);
            }
            return;
        }
        let Some(name) = event.kind.component().map(str::to_owned) else {
            return;
        };
        let stage = self.stage(&name);
        match &event.kind {
            EventKind::DeployStarted { from, to, .. } => {
                stage.releases = format!("{} -> {to}", from.as_deref().unwrap_or("(none)"));
                stage.step = "preparing".into();
            }
            EventKind::Stored { .. } => stage.step = "stored".into(),
            EventKind::InstanceStarted { pid, .. } => {
                stage.step = "starting".into();
                stage.detail = format!("pid {pid}");
            }
            EventKind::Probe {
                ok,
                detail,
                consecutive,
                needed,
                ..
            } => {
                let mark = if *ok { "ok" } else { "FAIL" };
                stage.detail = format!(
                    "probe {mark} {consecutive}/{needed}: {}",
                    first_line(detail)
                );
            }
            EventKind::Healthy { after_ms, .. } => {
                stage.step = "healthy".into();
                stage.detail = format!("after {:.1}s", *after_ms as f64 / 1000.0);
            }
            EventKind::Switched { .. } => {
                stage.step = "switched".into();
                stage.detail.clear();
            }
            EventKind::Stabilizing {
                elapsed_ms,
                total_ms,
                requests,
                failed,
                ..
            } => {
                stage.step = "stabilizing".into();
                stage.detail = format!(
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
                stage.step = "stable".into();
                stage.detail = format!(
                    "{} req, {} failed",
                    thousands(*requests),
                    thousands(*failed)
                );
            }
            EventKind::RolledBack { .. } => stage.step = "ROLLED BACK".into(),
            EventKind::DeployFinished { outcome, .. } => {
                stage.step = match outcome {
                    Outcome::Succeeded => "done".into(),
                    other => other.as_str().to_uppercase(),
                };
            }
            _ => {}
        }
    }

    fn clear(&mut self, out: &mut impl Write) {
        for _ in 0..self.drawn {
            let _ = write!(out, "\x1b[1A\x1b[2K");
        }
        self.drawn = 0;
    }

    fn draw(&mut self, out: &mut impl Write) {
        for stage in &self.stages {
            let _ = writeln!(
                out,
                "  \x1b[1m{:<10}\x1b[0m {:<20} {:<12} {}",
                stage.name,
                stage.releases,
                stage.step,
                super::output::printable(&stage.detail)
            );
        }
        self.drawn = self.stages.len();
    }

    /// Prints the timeline once the pipeline has finished.
    pub fn finish(&mut self) {
        if self.mode == Mode::Json {
            return;
        }
        let mut out = std::io::stdout().lock();
        if self.mode == Mode::Live {
            self.clear(&mut out);
            self.draw(&mut out);
        }
        let lines = self.timeline.lines();
        if !lines.is_empty() {
            let _ = writeln!(out, "\ntimeline:");
            for entry in lines {
                let _ = writeln!(out, "{}", super::output::printable_lines(&entry));
            }
        }
    }
}

fn bar(elapsed: u64, total: u64, width: usize) -> String {
    let filled = (elapsed.min(total) * width as u64)
        .checked_div(total)
        .map_or(width, |f| f as usize);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

/// 12408 -> "12,408".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One event as a line of output; `shown`: stage failure reasons already on screen, which the
/// pipeline's end does not repeat.
fn line(event: &Event, shown: &[String]) -> String {
    let component = event.kind.component().unwrap_or("");
    let summary = event.kind.summary();
    let (marker, summary) = match &event.kind {
        EventKind::PipelineFinished {
            outcome: Outcome::Succeeded,
            ..
        } => ("", summary),
        EventKind::PipelineFinished { .. } => ("FAILED ", first_line(&without(&summary, shown))),
        _ => ("", summary),
    };
    let text = format!(
        "{:>7.1}s  {component:<10} {marker}{summary}",
        event.t_ms as f64 / 1000.0
    );
    // Reasons and messages carry client-supplied text and instance output.
    super::output::printable_lines(&text).into_owned()
}

/// `text` with each reason already printed replaced by a pointer to it: a pipeline's reason
/// ("frontend: REASON") names the stage, and the stage's line above has the reason itself.
fn without(text: &str, shown: &[String]) -> String {
    shown.iter().fold(text.to_owned(), |text, reason| {
        text.replace(reason.as_str(), "see above")
    })
}

/// What each stage did, condensed into the summary printed at the end:
///
/// ```text
///    0.0s  backend   v1 -> 3f9c2e1  healthy after 0.6s, switched
///    0.6s  backend   stabilizing 60s ... stable (12,408 requests, 0 failed)
///   60.7s  frontend  v1 -> 3f9c2e1  switched
///   60.8s  done in 60.8s
/// ```
#[derive(Default)]
struct Timeline {
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
    fn record(&mut self, event: &Event) {
        let t = event.t_ms;
        let name = event.kind.component().unwrap_or_default().to_owned();
        match &event.kind {
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
                        "stabilizing ... ROLLED BACK to {}: {}",
                        to.as_deref().unwrap_or("(none)"),
                        first_line(reason)
                    ),
                ));
            }
            EventKind::DeployFinished {
                outcome: Outcome::Failed | Outcome::Interrupted,
                reason,
                ..
            } => {
                if let Some(trace) = self.open.get(&name) {
                    // The reason was printed in full as the stage failed, just above.
                    let what = match reason {
                        Some(_) => "FAILED (the reason is above)".to_owned(),
                        None => "FAILED".to_owned(),
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
                        other.as_str(),
                        first_line(&without(reason, &self.shown_reasons))
                    ),
                    (other, None) => format!("{} in {took}", other.as_str()),
                };
                self.end = Some((t, text));
            }
            _ => {}
        }
    }

    fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .entries
            .iter()
            .map(|(t, name, text)| format!("{:>7.1}s  {name:<9} {text}", *t as f64 / 1000.0))
            .collect();
        if let Some((t, text)) = &self.end {
            lines.push(format!("{:>7.1}s  {text}", *t as f64 / 1000.0));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DeployKind;

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

    #[test]
    fn thousands_separators_and_bar() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(12_408), "12,408");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(bar(30, 60, 10), "[#####-----]");
    }
}

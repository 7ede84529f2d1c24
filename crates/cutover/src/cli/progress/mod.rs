//! Deploy progress as the CLI shows it: JSON lines (`--json`), plain timestamped lines (no
//! terminal), or a live view on a terminal (`live.rs`: a status line per stage, `stage.rs`);
//! then a timeline of the whole pipeline (`timeline.rs`).

mod live;

pub(super) use live::{fit, terminal_width};
mod stage;
mod timeline;

use super::output::first_line;
use crate::protocol::{outcome_words, Event, EventKind};
use crate::vocab::Outcome;
use stage::Stage;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use timeline::Timeline;

pub struct Progress {
    mode: Mode,
    /// Stage status lines, in pipeline order (live view only).
    stages: Vec<Stage>,
    live: Option<live::LiveView>,
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

impl Progress {
    pub fn new(json: bool) -> Self {
        let mode = if json {
            Mode::Json
        } else if std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
            Mode::Live
        } else {
            Mode::Plain
        };
        Self {
            mode,
            stages: Vec::new(),
            live: (mode == Mode::Live).then(live::LiveView::new),
            last_plain_tick: BTreeMap::new(),
            timeline: Timeline::default(),
            shown_reasons: Vec::new(),
        }
    }

    /// The components the pipeline deploys, as announced by the daemon.
    pub fn components(&self) -> Vec<String> {
        self.timeline.components()
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
        match self.mode {
            Mode::Json => {
                let mut out = std::io::stdout().lock();
                let _ = serde_json::to_writer(&mut out, event);
                let _ = writeln!(out);
                let _ = out.flush();
            }
            Mode::Plain => {
                if self.plain_worthy(event) {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{}", line(event, &shown));
                    let _ = out.flush();
                }
            }
            Mode::Live => {
                self.update_stage(event);
                // The hold's first tick says it holds; the later ones only move the line.
                let lasting = !matches!(
                    event.kind,
                    EventKind::Probe { .. }
                        | EventKind::Stabilizing { .. }
                        | EventKind::Holding {
                            elapsed_ms: 1..,
                            ..
                        }
                );
                if let Some(live) = self.live.as_mut() {
                    if lasting {
                        live.println(&line(event, &shown));
                    }
                    live.update(&self.stages);
                }
            }
        }
    }

    /// Without a terminal, stabilization and hold ticks are thinned to one per 10 s per stage.
    fn plain_worthy(&mut self, event: &Event) -> bool {
        let (key, elapsed_ms) = match &event.kind {
            EventKind::Stabilizing {
                component,
                elapsed_ms,
                ..
            } => (component.clone(), *elapsed_ms),
            EventKind::Holding {
                component,
                elapsed_ms,
                ..
            } => (format!("{component} (hold)"), *elapsed_ms),
            _ => return true,
        };
        let last = self.last_plain_tick.entry(key).or_insert(0);
        if *last != 0 && elapsed_ms.saturating_sub(*last) < 10_000 {
            return false;
        }
        *last = elapsed_ms.max(1);
        true
    }

    fn stage(&mut self, name: &str) -> &mut Stage {
        if let Some(i) = self.stages.iter().position(|s| s.name == name) {
            return &mut self.stages[i];
        }
        self.stages.push(Stage::waiting(name));
        self.stages.last_mut().expect("just pushed")
    }

    fn update_stage(&mut self, event: &Event) {
        if let EventKind::PipelineStarted { components, .. } = &event.kind {
            for name in components {
                self.stage(name);
            }
            return;
        }
        if let Some(name) = event.kind.component().map(str::to_owned) {
            self.stage(&name).apply(&event.kind);
        }
    }

    /// Leaves the status lines as they are (the CLI stops following: Ctrl-C).
    pub fn stop(&mut self) {
        if let Some(live) = self.live.as_mut() {
            live.finish(&self.stages);
        }
    }

    /// Prints the timeline once the pipeline has finished.
    pub fn finish(&mut self) {
        if self.mode == Mode::Json {
            return;
        }
        self.stop();
        let mut out = std::io::stdout().lock();
        let lines = self.timeline.lines();
        if !lines.is_empty() {
            let _ = writeln!(out, "\ntimeline:");
            for entry in lines {
                let _ = writeln!(out, "{}", super::output::printable_lines(&entry));
            }
        }
        let _ = out.flush();
    }
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

/// One lasting line for an event: the plain output, and the live view's scrolling part.
/// `shown`: stage failure reasons already on screen, which the pipeline's end does not repeat.
fn line(event: &Event, shown: &[String]) -> String {
    let component = event.kind.component().unwrap_or("");
    let summary = match &event.kind {
        // The full reason was printed with the stage that failed; repeat only its first line.
        EventKind::PipelineFinished {
            outcome,
            reason,
            duration_ms,
            ..
        } => {
            let took = *duration_ms as f64 / 1000.0;
            let words = match outcome {
                Outcome::Succeeded => "done",
                other => outcome_words(*other),
            };
            match reason {
                Some(reason) => format!(
                    "{words} in {took:.1}s: {}",
                    first_line(&without(reason, shown))
                ),
                None => format!("{words} in {took:.1}s"),
            }
        }
        kind => kind.summary(),
    };
    let text = format!(
        "{:>7.1}s  {component:<10} {summary}",
        event.t_ms as f64 / 1000.0
    );
    // Reasons and messages carry client-supplied text and instance output.
    super::output::printable_lines(&text).into_owned()
}

/// `text` with each reason already printed replaced by a pointer to it: a pipeline's reason
/// ("frontend: REASON") names the stage, and the stage's line above has the reason itself.
pub(super) fn without(text: &str, shown: &[String]) -> String {
    shown.iter().fold(text.to_owned(), |text, reason| {
        text.replace(reason.as_str(), "see above")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(12_408), "12,408");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn the_last_line_of_a_rollback_says_it_once() {
        let finished = Event {
            t_ms: 5_400,
            kind: EventKind::PipelineFinished {
                pipeline_id: 1,
                outcome: Outcome::RolledBack,
                reason: Some("backend: error rate 8.1%\n  more".into()),
                duration_ms: 5_400,
            },
        };
        assert_eq!(
            line(&finished, &[]),
            "    5.4s             rolled back in 5.4s: backend: error rate 8.1%"
        );
    }
}

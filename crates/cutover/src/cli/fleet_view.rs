//! How `cutover fleet deploy|rollback` shows a run: JSON lines (`--json`, each with its host),
//! plain timestamped lines (no terminal), or on a terminal one live line per host with its
//! phase; then the table of hosts and the fleet's timeline.

use super::output::{printable, table};
use super::progress::{fit, terminal_width};
use crate::fleet::events::{FleetEvent, FleetLine, Phase};
use crate::fleet::run::RunSummary;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;

pub struct FleetView {
    mode: Mode,
    state: Mutex<State>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Json,
    Plain,
    Live,
}

#[derive(Default)]
struct State {
    multi: Option<MultiProgress>,
    bars: BTreeMap<String, ProgressBar>,
    /// Host order as the run announced it (waves in order).
    order: Vec<String>,
    wave_of: BTreeMap<String, usize>,
    /// (t_ms, host, phase, detail): the timeline printed at the end.
    timeline: Vec<(u64, String, Phase, Option<String>)>,
}

impl FleetView {
    pub fn new(json: bool) -> Self {
        let mode = if json {
            Mode::Json
        } else if std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
            Mode::Live
        } else {
            Mode::Plain
        };
        FleetView {
            mode,
            state: Mutex::new(State::default()),
        }
    }

    pub fn show(&self, line: FleetLine) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if self.mode == Mode::Json {
            let mut out = std::io::stdout().lock();
            let _ = serde_json::to_writer(&mut out, &line);
            let _ = writeln!(out);
            let _ = out.flush();
            return;
        }
        let t = line.t_ms as f64 / 1000.0;
        match line.event {
            FleetEvent::RunStarted {
                run,
                kind,
                release,
                components,
                waves,
            } => {
                for (i, wave) in waves.iter().enumerate() {
                    for host in wave {
                        state.order.push(host.clone());
                        state.wave_of.insert(host.clone(), i + 1);
                    }
                }
                let what = match release {
                    Some(r) => format!("{kind} of {} to {r}", components.join(", ")),
                    None => format!("{kind} of {}", components.join(", ")),
                };
                let waves: Vec<String> = waves.iter().map(|w| w.join(" ")).collect();
                let line = format!(
                    "fleet run {run}: {} on {} hosts, waves: {}",
                    printable(&what),
                    state.order.len(),
                    printable(&waves.join(" | "))
                );
                self.lasting(&mut state, &line);
                if self.mode == Mode::Live {
                    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
                    let style = ProgressStyle::with_template("{msg}").expect("static template");
                    for host in state.order.clone() {
                        let bar = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
                        state.bars.insert(host, bar);
                    }
                    state.multi = Some(multi);
                }
            }
            FleetEvent::HostPhase {
                host,
                phase,
                detail,
            } => {
                let wave = state.wave_of.get(&host).copied().unwrap_or(0);
                let text = format!(
                    "  {:<12} wave {wave}  {}{}",
                    printable(&host),
                    phase.label(),
                    detail
                        .as_deref()
                        .map(|d| format!(": {}", printable(d)))
                        .unwrap_or_default()
                );
                if let Some(bar) = state.bars.get(&host) {
                    bar.set_message(fit(&text, terminal_width()));
                } else {
                    self.lasting(&mut state, &format!("{t:>7.1}s{text}"));
                }
                if phase != Phase::Stabilizing {
                    state.timeline.push((line.t_ms, host, phase, detail));
                }
            }
            FleetEvent::HostEvent { .. } => {}
            FleetEvent::WaveStarted { wave, hosts } => {
                self.lasting(
                    &mut state,
                    &format!("{t:>7.1}s  wave {wave}: {}", printable(&hosts.join(", "))),
                );
            }
            FleetEvent::RunFinished { .. } => {
                for bar in state.bars.values() {
                    bar.finish();
                }
            }
        }
    }

    fn lasting(&self, state: &mut State, line: &str) {
        match &state.multi {
            Some(multi) => {
                let _ = multi.println(line);
            }
            None => println!("{line}"),
        }
    }

    /// The table of hosts and the timeline, once the run is over (not with `--json`: its last
    /// line, `run_finished`, carries the same).
    pub fn finish(&self, summary: &RunSummary) {
        if self.mode == Mode::Json {
            return;
        }
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let rows: Vec<Vec<String>> = summary
            .hosts
            .iter()
            .map(|h| {
                let took = match h.started_at {
                    Some(s) => format!("{:.1}s", (h.finished_at - s).max(0) as f64 / 1000.0),
                    None => "-".into(),
                };
                let from: Vec<String> = h
                    .from
                    .iter()
                    .map(|(c, f)| format!("{c}: {}", f.as_deref().unwrap_or("none")))
                    .collect();
                vec![
                    printable(&h.host).into_owned(),
                    h.wave.to_string(),
                    h.outcome.label().to_owned(),
                    if from.is_empty() {
                        "-".into()
                    } else {
                        from.join(", ")
                    },
                    took,
                    printable(h.detail.as_deref().unwrap_or("")).into_owned(),
                ]
            })
            .collect();
        print!(
            "{}",
            table(&["HOST", "WAVE", "OUTCOME", "WAS", "TOOK", "DETAIL"], &rows)
        );
        println!("timeline:");
        for (t_ms, host, phase, detail) in &state.timeline {
            println!(
                "  {:>7.1}s  {:<12} {}{}",
                *t_ms as f64 / 1000.0,
                printable(host),
                phase.label(),
                detail
                    .as_deref()
                    .map(|d| format!(": {}", printable(d)))
                    .unwrap_or_default()
            );
        }
        match &summary.reason {
            Some(reason) => println!(
                "fleet run {}: {}: {}",
                summary.run,
                summary.outcome.label(),
                printable(reason)
            ),
            None => println!("fleet run {}: {}", summary.run, summary.outcome.label()),
        }
    }
}

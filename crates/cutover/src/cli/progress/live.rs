//! The live view on a terminal: one status line per stage at the bottom of the screen, lasting
//! events printed above them.
//!
//! indicatif's `MultiProgress` does the drawing: it erases what it drew by counting the rows a
//! line took (wrapped or not), and prints lasting lines above the bars. Each status line is also
//! cut to the terminal's width with an ellipsis, the width read again at every redraw (the
//! daemon sends at least one event a second while a stage waits), so a resized window
//! (SIGWINCH) gets lines that fit it from the next event on.

use super::stage::Stage;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct LiveView {
    multi: MultiProgress,
    /// One per stage, in the order of `Progress::stages`.
    bars: Vec<ProgressBar>,
}

impl LiveView {
    pub fn new() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            bars: Vec::new(),
        }
    }

    /// A lasting line above the status lines (it may wrap: it is never redrawn).
    pub fn println(&self, line: &str) {
        if self.multi.println(line).is_err() {
            // The terminal went away; nothing else is worth doing with the line.
        }
    }

    /// Redraws the status lines from `stages`.
    pub fn update(&mut self, stages: &[Stage]) {
        let width = terminal_width();
        for (i, stage) in stages.iter().enumerate() {
            if i == self.bars.len() {
                let style = ProgressStyle::with_template("{msg}").expect("static template");
                let bar = self.multi.add(ProgressBar::new_spinner().with_style(style));
                self.bars.push(bar);
            }
            self.bars[i].set_message(fit(&stage.render(), width));
        }
    }

    /// Leaves the final status lines on the screen.
    pub fn finish(&mut self, stages: &[Stage]) {
        self.update(stages);
        for bar in &self.bars {
            bar.finish();
        }
    }
}

pub fn terminal_width() -> usize {
    let (_rows, cols) = console::Term::stdout().size();
    usize::from(cols).max(20)
}

/// `line` cut to fit in `width` columns (escape codes take none), ending with "…" if cut. One
/// column is kept free: a line that fills the last column leaves some terminals about to wrap.
pub fn fit(line: &str, width: usize) -> String {
    console::truncate_str(line, width.saturating_sub(1), "…").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_to_the_width_with_an_ellipsis() {
        let line = "  \x1b[1mbackend\x1b[0m    v1 -> v2  probe FAIL 0/2: connection refused";
        let cut = fit(line, 30);
        assert_eq!(console::measure_text_width(&cut), 29);
        assert!(cut.ends_with('…'), "{cut:?}");
        assert_eq!(fit("short", 30), "short");
    }
}

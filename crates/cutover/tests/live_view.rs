//! The live view of `cutover deploy`, read back from a real terminal (tmux) of 80 and 120
//! columns: one status row per stage at the end, cut to the width, no stale rows left above.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Commit-like release ids make the status rows as wide as they get in CI.
const SHA_OK: &str = "3f9c2e1d0b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e";
const SHA_BAD: &str = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b";

fn tmux_available() -> bool {
    let found = Command::new("tmux").arg("-V").output().is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "tmux is needed for the live view tests (.ci/run installs it)"
        );
        eprintln!("skipped: tmux is not installed");
    }
    found
}

/// A tmux server of its own, killed on drop.
struct Terminal {
    socket: String,
}

impl Terminal {
    /// Runs `command` in a fresh `width`x24 terminal and returns every row it left: the
    /// scrollback and the screen, as a user scrolling up would see them.
    fn run(width: u16, command: &str) -> Vec<String> {
        let terminal = Terminal {
            socket: format!("cutover-live-{}-{width}", std::process::id()),
        };
        let script = format!("{command}; echo EXIT=$?; sleep 120");
        let started = terminal
            .tmux(&["-f", "/dev/null", "new-session", "-d", "-s", "t"])
            .args(["-x", &width.to_string(), "-y", "24", &script])
            .status()
            .unwrap();
        assert!(started.success(), "tmux new-session failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = terminal.capture();
            if screen.iter().any(|l| l.starts_with("EXIT=")) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the deploy did not end:\n{}",
                screen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn tmux(&self, args: &[&str]) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.socket]).args(args);
        command
    }

    fn capture(&self) -> Vec<String> {
        let out = self
            .tmux(&["capture-pane", "-p", "-t", "t", "-S", "-"])
            .output()
            .unwrap();
        text(&out.stdout).lines().map(str::to_owned).collect()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]).status();
    }
}

/// A daemon serving v1 (deployed without a stabilization wait), then restarted with
/// `stabilize` for the deploy under test.
fn serving_v1(stabilize: &str) -> Daemon {
    let mut daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    daemon.terminate();
    let config = std::fs::read_to_string(&daemon.config).unwrap();
    let config = config.replace(
        "stabilize = \"0s\"",
        &format!("stabilize = \"{stabilize}\""),
    );
    std::fs::write(&daemon.config, config).unwrap();
    daemon.spawn();
    daemon
}

fn deploy_command(daemon: &Daemon, release: &str, artifact: &Path) -> String {
    format!(
        "env -u NO_COLOR {} deploy backend --release {release} --artifact {} --config {}",
        CUTOVER,
        artifact.display(),
        daemon.config.display()
    )
}

/// The status rows of `backend` (the live view draws them as "  backend ..."; event lines
/// start with a time).
fn status_rows(screen: &[String]) -> Vec<&String> {
    screen
        .iter()
        .filter(|l| l.starts_with("  backend "))
        .collect()
}

fn check_screen(width: u16, screen: &[String]) -> String {
    let shown = screen.join("\n");
    let rows = status_rows(screen);
    assert_eq!(
        rows.len(),
        1,
        "{width} columns: one status row, no stale copies above it:\n{shown}"
    );
    let row = rows[0].trim_end();
    assert!(
        row.chars().count() < usize::from(width),
        "{width} columns: the status row must fit: {row:?}"
    );
    assert!(screen.iter().any(|l| l.starts_with("timeline:")), "{shown}");
    row.to_owned()
}

#[test]
fn the_live_view_leaves_one_row_per_stage_at_80_and_120_columns() {
    if !tmux_available() {
        return;
    }
    for width in [80u16, 120] {
        let daemon = serving_v1("3s");
        // Refused probes while it starts, then a stabilization countdown with a bar.
        let slow = daemon.demo_with_env("slow", "DEMO_STARTUP_DELAY_MS=700");
        let screen = Terminal::run(width, &deploy_command(&daemon, SHA_OK, &slow));
        let shown = screen.join("\n");
        assert!(shown.contains("EXIT=0"), "{shown}");
        let row = check_screen(width, &screen);
        assert!(row.contains("done"), "{width} columns: {row:?}\n{shown}");
        assert!(!row.contains("left"), "{width} columns: {row:?}");
    }
}

#[test]
fn after_a_rollback_the_row_shows_the_figures_that_caused_it_once() {
    if !tmux_available() {
        return;
    }
    for width in [80u16, 120] {
        let daemon = serving_v1("30s");
        let failing = daemon.demo_with_env("failing", "DEMO_FAIL_AFTER_MS=1200");
        let screen = Terminal::run(width, &deploy_command(&daemon, SHA_BAD, &failing));
        let shown = screen.join("\n");
        assert!(shown.contains("EXIT=1"), "{shown}");
        let row = check_screen(width, &screen);
        assert!(
            row.contains("rolled back"),
            "{width} columns: {row:?}\n{shown}"
        );
        if width >= 120 {
            assert!(row.contains("to v1 at "), "{row:?}");
            assert!(
                row.contains(" failed"),
                "the figures at the rollback: {row:?}"
            );
        }
        assert!(
            !row.contains("left") && !row.contains('#'),
            "{width} columns: {row:?}"
        );
        assert!(
            !shown.contains("rolled_back") && !shown.contains("ROLLED"),
            "{shown}"
        );
        let last = screen
            .iter()
            .rfind(|l| l.contains("rolled back in "))
            .unwrap_or_else(|| panic!("no final line:\n{shown}"));
        assert!(!last.contains("FAILED"), "{last}");
    }
}

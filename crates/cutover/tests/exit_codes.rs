//! Exit codes as the README states them: 2 for bad usage (found by the CLI, or answered 400/404
//! by the daemon), and a quiet 141 when stdout is closed by its reader.

mod common;

use common::*;
use std::process::{Command, Stdio};

fn two_components() -> String {
    format!(
        "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \".cutover/control.sock\"\n\n\
         [components.backend]\nlisten = \"127.0.0.1:0\"\n{FAST_COMPONENT}\n\
         [components.frontend]\nkind = \"static\"\nlisten = \"127.0.0.1:0\"\nafter = [\"backend\"]\n"
    )
}

fn assert_usage(out: &std::process::Output, says: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "bad usage must exit 2:\n{stderr}{}",
        text(&out.stdout)
    );
    assert!(stderr.contains(says), "expected {says:?} in:\n{stderr}");
}

#[test]
fn bad_usage_exits_2_and_nothing_is_deployed() {
    let daemon = Daemon::start_with_config(&two_components());
    let api = demo_api();
    let api = api.to_str().unwrap();
    let backend = format!("backend={api}");
    assert_usage(
        &daemon.cli(&["deploy", "nope", "--release", "v1", "--artifact", api]),
        "unknown component \"nope\"; configured: backend, frontend",
    );
    assert_usage(
        &daemon.cli(&[
            "deploy",
            "backend",
            "--release",
            "bad id!",
            "--artifact",
            api,
        ]),
        "invalid release id \"bad id!\"",
    );
    assert_usage(
        &daemon.cli(&[
            "deploy",
            "backend",
            "--release",
            "v1",
            "--artifact",
            "/nonexistent",
        ]),
        "artifact /nonexistent does not exist",
    );
    assert_usage(
        &daemon.cli(&["deploy", "all", "--release", "v1", "--artifact", &backend]),
        "no artifact given for frontend",
    );
    assert_usage(
        &daemon.cli(&[
            "deploy",
            "all",
            "backend",
            "--release",
            "v1",
            "--artifact",
            &backend,
        ]),
        "`all` cannot be combined",
    );
    let history: serde_json::Value =
        serde_json::from_slice(&daemon.cli(&["history", "--json"]).stdout).unwrap();
    assert_eq!(history["deploys"], serde_json::json!([]), "{history}");
}

#[test]
fn the_daemons_400_and_404_answers_are_bad_usage_too() {
    let daemon = Daemon::start(FAST_COMPONENT);
    // A config edited after the daemon started: the CLI knows `pyapp`, the daemon does not.
    let newer = daemon.dir.path().join("newer.toml");
    let config = std::fs::read_to_string(&daemon.config).unwrap();
    std::fs::write(
        &newer,
        format!("{config}\n[components.pyapp]\nlisten = \"127.0.0.1:0\"\n{FAST_COMPONENT}"),
    )
    .unwrap();
    let out = Command::new(CUTOVER)
        .args(["deploy", "pyapp", "--release", "v1", "--artifact"])
        .arg(demo_api())
        .arg("--config")
        .arg(&newer)
        .output()
        .unwrap();
    assert_usage(&out, "unknown component \"pyapp\"");
    // A rollback to a release that is not kept: the daemon's 404.
    daemon.deploy_ok("v1", &demo_api());
    assert_usage(
        &daemon.cli(&["rollback", "backend", "--to", "v9"]),
        "release v9 of backend is not kept",
    );
    // Busy or nothing to roll back to is a failed operation, not bad usage.
    let out = daemon.cli(&["rollback", "backend"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

/// Runs the CLI with a stdout whose reader is already gone (what `| head -1` leaves once head
/// has its line); returns (exit code, stderr).
fn with_closed_stdout(daemon: &Daemon, args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(CUTOVER)
        .args(args)
        .arg("--config")
        .arg(&daemon.config)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (out.status.code(), text(&out.stderr))
}

#[test]
fn a_closed_stdout_ends_any_command_quietly_with_141() {
    let daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    for args in [
        &["history", "--json"][..],
        &["history"],
        &["status"],
        &["releases", "backend", "--json"],
        &["check"],
        &["generate", "config"],
    ] {
        let (code, stderr) = with_closed_stdout(&daemon, args);
        assert_eq!(code, Some(141), "cutover {args:?}: {stderr}");
        assert_eq!(stderr, "", "cutover {args:?} must end quietly");
    }
}

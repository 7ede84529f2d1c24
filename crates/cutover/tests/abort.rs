//! `cutover abort COMPONENT` and Ctrl-C during `cutover deploy`, with the real daemon.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn stabilizing(seconds: u32) -> String {
    FAST_COMPONENT.replace("stabilize = \"0s\"", &format!("stabilize = \"{seconds}s\""))
}

fn serving(daemon: &Daemon) -> (String, i64) {
    let status = daemon.component_status("backend");
    (
        status["serving_release"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        status["serving"]["pid"].as_i64().unwrap_or_default(),
    )
}

fn last_deploy(daemon: &Daemon) -> serde_json::Value {
    let history: serde_json::Value =
        serde_json::from_slice(&daemon.cli(&["history", "--json"]).stdout).unwrap();
    history["deploys"][0].clone()
}

#[test]
fn abort_during_stabilization_swaps_back_to_the_warm_release() {
    let mut daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    // Only v2's deploy stabilizes (for longer than the test takes).
    daemon.terminate();
    let config = std::fs::read_to_string(&daemon.config).unwrap();
    std::fs::write(
        &daemon.config,
        config.replace("stabilize = \"0s\"", "stabilize = \"60s\""),
    )
    .unwrap();
    daemon.spawn();
    let (_, v1_pid) = serving(&daemon);
    let deploying = daemon.deploy_in_background("v2", &demo_api());
    eventually(Duration::from_secs(20), "v2 to get the traffic", || {
        serving(&daemon).0 == "v2"
    });
    let out = daemon.cli(&["abort", "backend", "--who", "alice"]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    assert!(said.contains("rolled back: aborted by alice"), "{said}");
    let deploy = deploying.join().unwrap();
    let shown = text(&deploy.stdout);
    assert_eq!(deploy.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("rolled back to v1: aborted by alice"),
        "{shown}"
    );
    assert_eq!(
        serving(&daemon),
        ("v1".to_owned(), v1_pid),
        "the warm v1 serves again"
    );
    assert_eq!(get(daemon.public, "/version").2, "v1");
    assert_eq!(daemon.component_status("backend")["active"], "v1");
    let last = last_deploy(&daemon);
    assert_eq!(last["outcome"], "rolled_back", "{last}");
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .starts_with("aborted by alice (uid "),
        "{last}"
    );
    eventually(Duration::from_secs(10), "v2's instance to stop", || {
        daemon.instances_of("backend", "v2").is_empty()
    });
}

#[test]
fn abort_during_the_health_gate_stops_the_new_instance() {
    let daemon =
        Daemon::start(&FAST_COMPONENT.replace("start_timeout = \"5s\"", "start_timeout = \"60s\""));
    daemon.deploy_ok("v1", &demo_api());
    let before = serving(&daemon);
    let never = daemon.demo_with_env("never", "DEMO_NEVER_HEALTHY=1");
    let deploying = daemon.deploy_in_background("v2", &never);
    eventually(Duration::from_secs(20), "v2's instance to start", || {
        !daemon.instances_of("backend", "v2").is_empty()
    });
    let out = daemon.cli(&["abort", "backend", "--who", "bob"]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    assert!(said.contains("failed: aborted by bob"), "{said}");
    let deploy = deploying.join().unwrap();
    assert_eq!(deploy.status.code(), Some(1), "{}", text(&deploy.stdout));
    assert!(
        daemon.instances_of("backend", "v2").is_empty(),
        "stopped before the answer"
    );
    assert_eq!(serving(&daemon), before, "v1 never noticed");
    let last = last_deploy(&daemon);
    assert_eq!(last["outcome"], "failed", "{last}");
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .starts_with("aborted by bob (uid "),
        "{last}"
    );
}

#[test]
fn abort_without_a_deploy_in_progress_says_so() {
    let daemon = Daemon::start(FAST_COMPONENT);
    let out = daemon.cli(&["abort", "backend"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no deploy of backend is in progress"),
        "{}",
        text(&out.stderr)
    );
    let out = daemon.cli(&["abort", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn ctrl_c_stops_following_and_says_how_to_follow_or_stop_the_deploy() {
    let daemon = Daemon::start(&stabilizing(2));
    daemon.deploy_ok("v1", &demo_api());
    let cli = Command::new(CUTOVER)
        .args(["deploy", "backend", "--release", "v2", "--artifact"])
        .arg(demo_api())
        .arg("--config")
        .arg(&daemon.config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(20), "the deploy to start", || {
        !daemon.component_status("backend")["deploying"].is_null()
    });
    unsafe { libc::kill(cli.id() as i32, libc::SIGINT) };
    let out = cli.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains(
            "the deploy goes on in the daemon; `cutover status` follows it; `cutover abort backend` stops it"
        ),
        "{stderr}"
    );
    eventually(
        Duration::from_secs(20),
        "the deploy to finish in the daemon",
        || daemon.component_status("backend")["active"] == "v2",
    );
}

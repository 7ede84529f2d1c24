//! `cutover deploy --hold` and `cutover proceed`, with the real daemon: the new release waits,
//! healthy, beside the old one (which keeps serving every request) until released; an abort,
//! the timeout, or the follower going away stops it and the old release never notices.

mod common;

use common::*;
use cutover::loadgen::{ClientKind, Load};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `cutover deploy backend --release R --hold --json [extra]`, its stdout read line by line.
struct Held {
    child: Child,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl Held {
    fn start(daemon: &Daemon, release: &str, extra: &[&str]) -> Held {
        let mut child = Command::new(CUTOVER)
            .args(["deploy", "backend", "--release", release, "--artifact"])
            .arg(demo_api())
            .args(["--hold", "--json", "--who", "tester"])
            .args(extra)
            .arg("--config")
            .arg(&daemon.config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str(&line) {
                    let _ = tx.send(event);
                }
            }
        });
        Held { child, lines }
    }

    /// Events until one named `name` arrives (within 30 s); returns it.
    fn until(&self, name: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no `{name}` event within 30 s"));
            if event["event"] == name {
                return event;
            }
        }
    }

    fn wait(mut self) -> Option<i32> {
        self.child.wait().unwrap().code()
    }
}

fn last_deploy(daemon: &Daemon) -> serde_json::Value {
    let history: serde_json::Value =
        serde_json::from_slice(&daemon.cli(&["history", "--json"]).stdout).unwrap();
    history["deploys"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_deploy_waits_beside_the_old_release_then_switches_on_proceed() {
    let daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    let load = Load::start(
        daemon.public,
        "/version",
        &[ClientKind::KeepAlive, ClientKind::NewConnection],
    );

    let held = Held::start(&daemon, "v2", &[]);
    let holding = held.until("holding");
    assert_eq!(holding["component"], "backend", "{holding}");
    // Ready and held: v2 runs and is healthy, v1 serves every request, for a few ticks.
    assert_eq!(daemon.instances_of("backend", "v2").len(), 1);
    let tick = held.until("holding");
    assert!(tick["elapsed_ms"].as_u64().unwrap() >= 1000, "{tick}");
    assert_eq!(get(daemon.public, "/version").2, "v1");
    let status = daemon.component_status("backend");
    assert_eq!(status["serving_release"], "v1", "{status}");
    assert_eq!(status["deploying"]["release"], "v2", "{status}");

    let out = daemon.cli(&["proceed", "backend", "--who", "carol"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("it switches now"));
    let proceeding = held.until("proceeding");
    assert!(
        proceeding["who"].as_str().unwrap().starts_with("carol"),
        "{proceeding}"
    );
    held.until("switched");
    assert_eq!(held.wait(), Some(0));
    assert_eq!(get(daemon.public, "/version").2, "v2");
    let report = load.stop().await;
    assert_eq!(report.failed, 0, "{:?}", report.failures);
    assert!(report.by_release.get("v1").copied().unwrap_or(0) > 20);
    assert!(report.by_release.get("v2").copied().unwrap_or(0) > 0);
    assert_eq!(last_deploy(&daemon)["outcome"], "succeeded");

    // Nothing holds any more: proceed says so.
    let out = daemon.cli(&["proceed", "backend"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no deploy of backend is in progress"),
        "{}",
        text(&out.stderr)
    );
}

/// Whatever ends a hold other than go, the new instance stops and v1 (same pid) keeps serving.
#[test]
fn abort_timeout_and_a_vanished_follower_end_the_hold_and_v1_never_notices() {
    let daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    let v1_pid = daemon.component_status("backend")["serving"]["pid"].clone();
    let still_v1 = |case: &str| {
        assert_eq!(get(daemon.public, "/version").2, "v1", "{case}");
        assert_eq!(
            daemon.component_status("backend")["serving"]["pid"],
            v1_pid,
            "{case}"
        );
        eventually(Duration::from_secs(10), "v2's instance to stop", || {
            daemon.instances_of("backend", "v2").is_empty()
        });
        let last = last_deploy(&daemon);
        assert_eq!(last["outcome"], "failed", "{case}: {last}");
        last["reason"].as_str().unwrap().to_owned()
    };

    // An abort.
    let held = Held::start(&daemon, "v2", &[]);
    held.until("holding");
    let out = daemon.cli(&["abort", "backend", "--who", "dave"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(held.wait(), Some(1));
    let why = still_v1("abort");
    assert!(why.starts_with("aborted by dave"), "{why}");

    // The timeout.
    let held = Held::start(&daemon, "v2", &["--hold-timeout", "2s"]);
    held.until("holding");
    assert_eq!(held.wait(), Some(1));
    let why = still_v1("timeout");
    assert!(why.contains("nobody released the hold within 2s"), "{why}");

    // The follower killed: nobody could release it, so it stops within a tick or two.
    let mut held = Held::start(&daemon, "v2", &[]);
    held.until("holding");
    held.child.kill().unwrap();
    held.child.wait().unwrap();
    eventually(Duration::from_secs(10), "the held deploy to end", || {
        daemon.component_status("backend")["deploying"].is_null()
    });
    let why = still_v1("follower killed");
    assert!(why.contains("went away"), "{why}");
}

#[test]
fn proceed_refuses_a_deploy_that_does_not_hold() {
    let daemon =
        Daemon::start(&FAST_COMPONENT.replace("stabilize = \"0s\"", "stabilize = \"30s\""));
    let deploying = daemon.deploy_in_background("v1", &demo_api());
    eventually(Duration::from_secs(20), "v1 to stabilize", || {
        daemon.component_status("backend")["serving_release"] == "v1"
    });
    let out = daemon.cli(&["proceed", "backend"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("does not hold (it was started without --hold)"),
        "{}",
        text(&out.stderr)
    );
    daemon.cli(&["abort", "backend"]);
    deploying.join().unwrap();

    let out = daemon.cli(&["proceed", "nosuch"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    let out = daemon.cli(&[
        "deploy",
        "backend",
        "--release",
        "v3",
        "--hold-timeout",
        "1m",
    ]);
    assert_eq!(out.status.code(), Some(2), "--hold-timeout needs --hold");
}

#[test]
fn a_hook_cannot_hold_its_command_is_its_switch() {
    let daemon = Daemon::start_with_config(
        "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \".cutover/control.sock\"\n\n\
         [components.docs]\nkind = \"hook\"\nrun = [\"true\"]\n\
         verify = { url = \"http://127.0.0.1:9/version\", timeout = \"1s\" }\n",
    );
    let out = daemon.cli(&["deploy", "docs", "--release", "v1", "--hold"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("docs is a hook: its command is its switch"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        last_deploy(&daemon).is_null(),
        "nothing ran: {}",
        last_deploy(&daemon)
    );
}

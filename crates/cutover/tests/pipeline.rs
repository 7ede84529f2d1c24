//! Staged pipelines: stabilization with automatic rollback, order, failure policies.

mod common;

use common::*;
use cutover::loadgen::{ClientKind, Load};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Backend (process) then frontend (static, after backend).
fn config(backend: &str, on_failure: &str) -> String {
    format!(
        "[daemon]\ndata_dir = \".cutover\"\n\n\
         [components.backend]\nlisten = \"127.0.0.1:0\"\n{backend}\n\
         [components.frontend]\nkind = \"static\"\nlisten = \"127.0.0.1:0\"\nafter = [\"backend\"]\n\
         spa_fallback = \"index.html\"\n\n\
         [pipeline]\non_failure = \"{on_failure}\"\n"
    )
}

fn stabilizing(seconds: u32) -> String {
    stabilizing_with(seconds, 20)
}

fn stabilizing_with(seconds: u32, min_requests: u64) -> String {
    FAST_COMPONENT.replace(
        "stabilize = \"0s\"",
        &format!(
            "stabilize = \"{seconds}s\"\nstabilize_checks = {{ unhealthy_threshold = 3, max_error_rate = 0.05, min_requests = {min_requests} }}"
        ),
    )
}

/// A static site whose index says which version it is.
fn site(dir: &Path, version: &str) -> PathBuf {
    let root = dir.join(format!("site-{version}"));
    std::fs::create_dir_all(root.join("assets")).unwrap();
    std::fs::write(
        root.join("index.html"),
        format!("<h1>site {version}</h1>\n"),
    )
    .unwrap();
    std::fs::write(
        root.join("assets/app.js"),
        format!("console.log('{version}');\n"),
    )
    .unwrap();
    root
}

fn deploy_all(daemon: &Daemon, release: &str, api: &Path, site: &Path) -> std::process::Output {
    daemon.cli(&[
        "deploy",
        "all",
        "--release",
        release,
        "--artifact",
        &format!("backend={}", api.display()),
        "--artifact",
        &format!("frontend={}", site.display()),
    ])
}

fn history(daemon: &Daemon) -> serde_json::Value {
    serde_json::from_slice(&daemon.cli(&["history", "--json"]).stdout).unwrap()
}

/// Starts load on the backend, deploys `bad` (which must be rolled back automatically) and
/// returns the load report, the deploy output, and whether v1's instance stayed the same.
fn rolled_back_under_load(
    bad_env: &str,
    min_requests: u64,
) -> (cutover::loadgen::LoadReport, String, bool) {
    let daemon = Arc::new(Daemon::start(&stabilizing_with(4, min_requests)));
    daemon.deploy_ok("v1", &demo_api());
    let v1_pid = daemon.status_json()["components"][0]["serving"]["pid"]
        .as_i64()
        .unwrap();
    let bad = daemon.demo_with_env("bad", bad_env);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let load = runtime.block_on(async {
        let mut clients = vec![ClientKind::KeepAlive; 6];
        clients.extend([ClientKind::NewConnection; 2]);
        Load::start(daemon.public, "/version", &clients)
    });
    let out = daemon.deploy("v2", &bad);
    let at_rollback = load.snapshot();
    std::thread::sleep(Duration::from_millis(700));
    let report = runtime.block_on(load.stop());
    let text = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(1),
        "an automatic rollback fails the deploy:\n{text}"
    );
    assert!(text.contains("rolled back to v1"), "{text}");
    assert_eq!(
        report.failed, at_rollback.failed,
        "requests failed after the swap back: {:?}",
        report.failures
    );
    assert_eq!(get(daemon.public, "/version").2, "v1");
    let status = daemon.status_json();
    assert_eq!(status["components"][0]["active"], "v1");
    let same_instance = status["components"][0]["serving"]["pid"].as_i64().unwrap() == v1_pid;
    let last = &history(&daemon)["deploys"][0];
    assert_eq!(last["outcome"], "rolled_back", "{last}");
    eventually(Duration::from_secs(5), "the bad instance to stop", || {
        daemon.instances_of("backend", "v2").is_empty()
    });
    (report, text, same_instance)
}

#[test]
fn probe_failures_during_stabilization_roll_back_to_the_warm_release() {
    // The error-rate check would fire first under load; take it out of the picture.
    let (report, text, same_instance) =
        rolled_back_under_load("DEMO_FAIL_AFTER_MS=600", 1_000_000_000);
    assert!(text.contains("health probes failed in a row"), "{text}");
    assert!(
        same_instance,
        "the old instance was kept warm, not restarted"
    );
    // Failures are the bad release's own 500s; the swaps themselves lost nothing.
    let unexpected: Vec<_> = report
        .failures_by_kind
        .keys()
        .filter(|k| *k != "HTTP 500 from v2")
        .collect();
    assert!(unexpected.is_empty(), "{:?}", report.failures_by_kind);
    assert!(report.by_release.get("v1").copied().unwrap_or(0) > 0);
}

#[test]
fn error_rate_during_stabilization_rolls_back() {
    let (report, text, same_instance) = rolled_back_under_load("DEMO_ERROR_RATE=0.5", 20);
    assert!(
        text.contains("error rate") && text.contains("is above the 5.0% limit"),
        "{text}"
    );
    assert!(same_instance);
    let unexpected: Vec<_> = report
        .failures_by_kind
        .keys()
        .filter(|k| *k != "HTTP 500 from v2")
        .collect();
    assert!(unexpected.is_empty(), "{:?}", report.failures_by_kind);
    assert!(
        report.by_release.get("v2").copied().unwrap_or(0) > 0,
        "v2 did serve before the rollback"
    );
}

#[test]
fn an_exit_during_stabilization_rolls_back() {
    let (_report, text, same_instance) =
        rolled_back_under_load("DEMO_CRASH_AFTER_MS=800", 1_000_000_000);
    assert!(
        text.contains("the new instance exited with code 3"),
        "{text}"
    );
    assert!(same_instance);
}

#[test]
fn frontend_waits_until_the_backend_is_stable() {
    let daemon = Arc::new(Daemon::start_with_config(&config(&stabilizing(3), "keep")));
    let dir = daemon.dir.path().to_owned();
    let out = deploy_all(&daemon, "v1", &demo_api(), &site(&dir, "v1"));
    assert!(out.status.success(), "{}", text(&out.stdout));
    let frontend = daemon.listen_of("frontend");
    assert!(get(frontend, "/").2.contains("site v1"));

    let pipeline = {
        let (daemon, site) = (daemon.clone(), site(&dir, "v2"));
        std::thread::spawn(move || deploy_all(&daemon, "v2", &demo_api(), &site))
    };
    // While the backend stabilizes on v2, the frontend still serves the v1 site.
    eventually(Duration::from_secs(10), "backend serving v2", || {
        get(daemon.public, "/version").2 == "v2"
    });
    assert!(get(frontend, "/").2.contains("site v1"));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        get(frontend, "/").2.contains("site v1"),
        "the frontend must wait for the backend to be stable"
    );
    let out = pipeline.join().unwrap();
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(get(frontend, "/").2.contains("site v2"));
    assert!(shown.contains("timeline:"), "{shown}");
    let backend_stable = shown.find("stable (").expect("stable line");
    let frontend_switch = shown.rfind("frontend").unwrap();
    assert!(backend_stable < frontend_switch, "{shown}");

    let history = history(&daemon);
    let pipeline = &history["pipelines"][0];
    assert_eq!(
        pipeline["components"],
        serde_json::json!(["backend", "frontend"])
    );
    assert_eq!(pipeline["outcome"], "succeeded");
}

/// Deploys v1 of both, then v2 whose frontend artifact is not a site: the backend stage
/// finalizes, the frontend stage fails. Returns the daemon to inspect.
fn frontend_fails_after_backend(on_failure: &str) -> Daemon {
    let daemon = Daemon::start_with_config(&config(FAST_COMPONENT, on_failure));
    let dir = daemon.dir.path().to_owned();
    assert!(deploy_all(&daemon, "v1", &demo_api(), &site(&dir, "v1"))
        .status
        .success());
    let broken = dir.join("not-a-site.txt");
    std::fs::write(&broken, "just text").unwrap();
    let out = deploy_all(&daemon, "v2", &demo_api(), &broken);
    let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("frontend: ") && shown.contains("is not a tar archive"),
        "{shown}"
    );
    daemon
}

#[test]
fn a_failed_frontend_keeps_the_stable_backend_with_keep() {
    let daemon = frontend_fails_after_backend("keep");
    assert_eq!(
        get(daemon.public, "/version").2,
        "v2",
        "keep: the backend stays on v2"
    );
    assert!(get(daemon.listen_of("frontend"), "/").2.contains("site v1"));
}

#[test]
fn a_failed_frontend_rolls_the_backend_back_with_rollback_all() {
    let daemon = frontend_fails_after_backend("rollback_all");
    assert_eq!(
        get(daemon.public, "/version").2,
        "v1",
        "rollback_all: the backend went back to v1"
    );
    let status = daemon.status_json();
    assert_eq!(status["components"][0]["active"], "v1");
    let deploys = history(&daemon)["deploys"].as_array().unwrap().clone();
    assert_eq!(deploys[0]["kind"], "rollback");
    assert_eq!(deploys[0]["component"], "backend");
    assert_eq!(deploys[0]["pipeline_id"], deploys[1]["pipeline_id"]);
}

#[test]
fn deploying_only_the_frontend_leaves_the_backend_alone() {
    let daemon = Daemon::start_with_config(&config(FAST_COMPONENT, "keep"));
    let dir = daemon.dir.path().to_owned();
    assert!(deploy_all(&daemon, "v1", &demo_api(), &site(&dir, "v1"))
        .status
        .success());
    let pid = daemon.status_json()["components"][0]["serving"]["pid"]
        .as_i64()
        .unwrap();
    let out = daemon.cli(&[
        "deploy",
        "frontend",
        "--release",
        "v2",
        "--artifact",
        site(&dir, "v2").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(get(daemon.listen_of("frontend"), "/").2.contains("site v2"));
    let status = daemon.status_json();
    assert_eq!(status["components"][0]["active"], "v1");
    assert_eq!(
        status["components"][0]["serving"]["pid"].as_i64().unwrap(),
        pid
    );
}

#[test]
fn json_progress_is_one_event_per_line() {
    let daemon = Daemon::start(FAST_COMPONENT);
    let out = daemon.cli(&[
        "deploy",
        "backend",
        "--release",
        "v1",
        "--artifact",
        demo_api().to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success());
    let events: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"pipeline_started"));
    assert_eq!(kinds.last(), Some(&"pipeline_finished"));
    for expected in [
        "deploy_started",
        "stored",
        "instance_started",
        "probe",
        "healthy",
        "switched",
        "deploy_finished",
    ] {
        assert!(
            kinds.contains(&expected),
            "{expected} missing from {kinds:?}"
        );
    }
    assert_eq!(events.last().unwrap()["outcome"], "succeeded");
}

//! Crash consistency: `kill -9` of the daemon at each step of a pipeline, then a restart, leaves
//! every component on exactly one healthy release (the old one, unless the new one had finished
//! stabilizing) and the run recorded as interrupted.

mod common;

use common::*;
use std::time::Duration;

fn config() -> String {
    let backend = FAST_COMPONENT.replace("stabilize = \"0s\"", "stabilize = \"1s\"");
    format!(
        "[daemon]\ndata_dir = \".cutover\"\n\n[components.backend]\nlisten = \"127.0.0.1:0\"\n{backend}\n\
         [components.frontend]\nkind = \"static\"\nlisten = \"127.0.0.1:0\"\nafter = [\"backend\"]\n"
    )
}

fn site(dir: &std::path::Path, version: &str) -> std::path::PathBuf {
    let root = dir.join(format!("site-{version}"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), format!("site {version}")).unwrap();
    root
}

/// Pauses the v2 pipeline right after `step` is committed, kills the daemon, restarts it and
/// checks what serves.
fn crash_at(step: &str, backend_after: &str, frontend_after: &str) {
    let pause = format!("{step}:v2");
    let mut daemon = Daemon::start_with_env(&config(), &[("CUTOVER_TEST_PAUSE_AFTER", &pause)]);
    let dir = daemon.dir.path().to_owned();
    let deploy_all = |daemon: &Daemon, release: &str| {
        let mut cmd = std::process::Command::new(CUTOVER);
        cmd.args(["deploy", "all", "--release", release, "--artifact"])
            .arg(format!("backend={}", demo_api().display()))
            .arg("--artifact")
            .arg(format!("frontend={}", site(&dir, release).display()))
            .arg("--config")
            .arg(&daemon.config);
        cmd
    };
    let out = deploy_all(&daemon, "v1").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stdout));

    let mut pipeline = deploy_all(&daemon, "v2")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(15),
        &format!("the pipeline to reach {step}"),
        || {
            daemon
                .log()
                .contains(&format!("failpoint: pausing after {pause}"))
        },
    );
    daemon.kill9();
    let status = pipeline.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "the CLI must not report success when the daemon dies"
    );

    daemon.env.clear();
    daemon.spawn();
    let backend = daemon.public;
    let frontend = daemon.listen_of("frontend");
    eventually(
        Duration::from_secs(2),
        &format!("backend serving {backend_after}"),
        || get(backend, "/version").2 == backend_after,
    );
    assert_eq!(get(frontend, "/").2, format!("site {frontend_after}"));

    // Exactly one backend instance runs.
    eventually(
        Duration::from_secs(3),
        "leftover instances to be gone",
        || {
            processes_matching(&format!(
                "{}/releases/backend/",
                dir.join(".cutover").display()
            ))
            .len()
                == 1
        },
    );
    let status = daemon.status_json();
    let components = status["components"].as_array().unwrap();
    assert_eq!(components[0]["active"], backend_after);
    assert_eq!(components[1]["active"], frontend_after);
    let history: serde_json::Value =
        serde_json::from_slice(&daemon.cli(&["history", "--json"]).stdout).unwrap();
    assert_eq!(
        history["pipelines"][0]["outcome"], "interrupted",
        "{}",
        history["pipelines"][0]
    );
    assert_eq!(history["deploys"][0]["outcome"], "interrupted");
}

#[test]
fn kill9_after_backend_preparing() {
    crash_at("backend:preparing", "v1", "v1");
}

#[test]
fn kill9_after_backend_starting() {
    crash_at("backend:starting", "v1", "v1");
}

#[test]
fn kill9_after_backend_switching() {
    crash_at("backend:switching", "v1", "v1");
}

#[test]
fn kill9_during_backend_stabilizing() {
    crash_at("backend:stabilizing", "v1", "v1");
}

#[test]
fn kill9_after_backend_finalizing_began() {
    crash_at("backend:finalizing", "v1", "v1");
}

#[test]
fn kill9_after_frontend_preparing() {
    crash_at("frontend:preparing", "v2", "v1");
}

#[test]
fn kill9_after_frontend_switching() {
    crash_at("frontend:switching", "v2", "v1");
}

#[test]
fn kill9_after_frontend_finalizing_began() {
    crash_at("frontend:finalizing", "v2", "v1");
}

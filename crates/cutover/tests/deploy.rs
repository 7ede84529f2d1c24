//! Deploy, rollback, refusal of bad releases, one deploy at a time, config errors.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

#[test]
fn deploy_then_rollback_by_the_same_switch() {
    let daemon = Daemon::start(FAST_COMPONENT);
    let api = demo_api();
    let (status, _, _) = get(daemon.public, "/version");
    assert_eq!(status, 503, "no release yet: the proxy answers 503");

    daemon.deploy_ok("v1", &api);
    assert_eq!(get(daemon.public, "/version").2, "v1");
    daemon.deploy_ok("v2", &api);
    assert_eq!(get(daemon.public, "/version").2, "v2");

    let status = daemon.status_json();
    assert_eq!(status["components"][0]["active"], "v2");
    assert_eq!(status["components"][0]["previous"], "v1");
    assert_eq!(status["components"][0]["serving"]["release"], "v2");

    let (ids, releases) = daemon.releases_json();
    assert_eq!(ids, ["v2", "v1"]);
    assert_eq!(releases["releases"][0]["active"], true);
    assert_eq!(
        releases["releases"][0]["sha256"].as_str().unwrap().len(),
        64
    );
    let table = text(&daemon.cli(&["releases", "backend"]).stdout);
    assert!(
        table.contains("RELEASE") && table.contains("active") && table.contains("previous"),
        "{table}"
    );

    let out = daemon.cli(&["rollback", "backend"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("switched traffic v2 -> v1"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(get(daemon.public, "/version").2, "v1");

    let out = daemon.cli(&["rollback", "backend", "--to", "v2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(get(daemon.public, "/version").2, "v2");

    let out = daemon.cli(&["rollback", "backend", "--to", "nope"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a release that is not kept is bad usage"
    );
    assert!(
        text(&out.stderr).contains("release nope of backend is not kept"),
        "{}",
        text(&out.stderr)
    );

    let out = daemon.cli(&["history", "--json"]);
    let history: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let deploys = history["deploys"].as_array().unwrap();
    assert_eq!(deploys.len(), 4);
    assert_eq!(deploys[0]["kind"], "rollback");
    assert_eq!(deploys[0]["from_release"], "v1");
    assert_eq!(deploys[0]["to_release"], "v2");
    assert_eq!(deploys[0]["outcome"], "succeeded");
    assert!(deploys[0]["who"].as_str().unwrap().contains("uid"));
    assert!(deploys[3]["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "switched"));
    assert_eq!(history["pipelines"].as_array().unwrap().len(), 4);
}

#[test]
fn old_instance_is_stopped_after_the_switch() {
    let daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    let first = daemon.status_json()["components"][0]["serving"]["pid"]
        .as_i64()
        .unwrap() as i32;
    daemon.deploy_ok("v2", &demo_api());
    eventually(
        Duration::from_secs(5),
        "the v1 process to exit",
        || unsafe { libc::kill(first, 0) } != 0,
    );
}

/// Each failure leaves v1 serving and names the check, the last probe and the log.
#[test]
fn failed_deploys_leave_the_old_release_serving() {
    let daemon = Daemon::start(
        // A probe may not outlast the start window (a config error since issue 12).
        &FAST_COMPONENT.replace(
            "timeout = \"2s\", healthy_threshold = 2, start_timeout = \"5s\"",
            "timeout = \"1s\", healthy_threshold = 2, start_timeout = \"1500ms\"",
        ),
    );
    daemon.deploy_ok("v1", &demo_api());
    let dir = daemon.dir.path();

    let crash = daemon.script("crash", "echo 'panic: config missing' >&2; exit 3");
    let never = daemon.demo_with_env("never", "DEMO_NEVER_HEALTHY=1");
    let empty = dir.join("empty");
    std::fs::write(&empty, b"").unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o755)).unwrap();
    let noexec = dir.join("noexec");
    std::fs::copy(demo_api(), &noexec).unwrap();
    std::fs::set_permissions(&noexec, std::fs::Permissions::from_mode(0o644)).unwrap();
    let foreign = dir.join("foreign");
    let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0".to_vec();
    let machine: u16 = if std::env::consts::ARCH == "aarch64" {
        62
    } else {
        183
    };
    elf.extend_from_slice(&machine.to_le_bytes());
    elf.extend_from_slice(&[0; 64]);
    std::fs::write(&foreign, elf).unwrap();
    std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o755)).unwrap();

    let cases: Vec<(&str, std::path::PathBuf, Vec<&str>)> = vec![
        (
            "crash",
            crash,
            vec![
                "exited with code 3 before it became healthy",
                "panic: config missing",
            ],
        ),
        (
            "never",
            never,
            vec![
                "was not healthy within 1s 500ms",
                "last probe: HTTP 503",
                "listening on",
            ],
        ),
        (
            "missing",
            dir.join("does-not-exist"),
            vec!["does-not-exist does not exist"],
        ),
        ("empty", empty, vec!["is empty"]),
        ("noexec", noexec, vec!["is not executable (mode 644)"]),
        (
            "foreign",
            foreign,
            vec!["is built for", "but this machine is"],
        ),
    ];
    for (release, artifact, expected) in cases {
        let out = daemon.deploy(release, &artifact);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        // A missing file is found by the CLI before anything is sent: bad usage.
        let code = if release == "missing" { 2 } else { 1 };
        assert_eq!(out.status.code(), Some(code), "{release} must fail:\n{all}");
        for needle in expected {
            assert!(
                all.contains(needle),
                "{release}: expected {needle:?} in:\n{all}"
            );
        }
        assert_eq!(
            get(daemon.public, "/version").2,
            "v1",
            "v1 must still serve after {release}"
        );
        assert_eq!(daemon.status_json()["components"][0]["active"], "v1");
    }
    // No instance of a failed release is left running.
    for release in ["crash", "never"] {
        let leftovers = daemon.instances_of("backend", release);
        assert!(
            leftovers.is_empty(),
            "{release} left processes {leftovers:?}"
        );
    }
    let out = daemon.cli(&["history", "--json"]);
    let history: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed = history["deploys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["outcome"] == "failed")
        .count();
    // A missing artifact is refused by the CLI before it reaches the daemon: five reached it.
    assert_eq!(failed, 5);
}

#[test]
fn a_second_concurrent_deploy_is_refused_at_once() {
    let daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    let slow = daemon.demo_with_env("slow", "DEMO_STARTUP_DELAY_MS=2500");
    let first = daemon.deploy_in_background("v2", &slow);
    eventually(Duration::from_secs(5), "the first deploy to start", || {
        !daemon.status_json()["components"][0]["deploying"].is_null()
    });
    let started = std::time::Instant::now();
    let second = daemon.deploy("v3", &demo_api());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refusal must be immediate"
    );
    assert_eq!(second.status.code(), Some(1));
    let message = text(&second.stderr);
    assert!(
        message.contains("deploy #2 of backend to v2 is in progress"),
        "{message}"
    );
    let first = first.join().unwrap();
    assert!(first.status.success(), "{}", text(&first.stdout));
    assert_eq!(get(daemon.public, "/version").2, "v2");
}

#[test]
fn config_errors_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[components.backend]\nlisten = \"127.0.0.1:0\"\ncommand = [\"x\"]\nhealth = { interval = \"soon\" }\n",
    )
    .unwrap();
    let out = std::process::Command::new(CUTOVER)
        .args(["status", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let message = text(&out.stderr);
    let expected = format!(
        "{}:4:23: components.backend.health.interval: invalid duration \"soon\"",
        path.display()
    );
    assert!(message.contains(&expected), "{message}");

    // Found through $CUTOVER_CONFIG too.
    std::fs::write(&path, "[daemon]\ndata_dir = \"d\"\n[components.api]\nlisten = \"127.0.0.1:0\"\ncommand = [\"x\"]\ncolour = 1\n").unwrap();
    let out = std::process::Command::new(CUTOVER)
        .arg("status")
        .env("CUTOVER_CONFIG", &path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("bad.toml:6:1: components.api.colour: unknown field `colour`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn status_reads_state_while_the_daemon_is_down() {
    let mut daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    daemon.deploy_ok("v2", &demo_api());
    assert_eq!(daemon.terminate(), Some(0));
    let out = daemon.cli(&["status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("NOT RUNNING") && shown.contains("v2"),
        "{shown}"
    );
    let status: serde_json::Value =
        serde_json::from_slice(&daemon.cli(&["status", "--json"]).stdout).unwrap();
    assert!(status["daemon"].is_null());
    assert_eq!(status["components"][0]["active"], "v2");
    let history = daemon.cli(&["history"]);
    assert!(
        text(&history.stdout).contains("v1 -> v2"),
        "{}",
        text(&history.stdout)
    );
}

#[test]
fn retention_keeps_active_and_previous() {
    let daemon = Daemon::start(&FAST_COMPONENT.replace("keep_releases = 5", "keep_releases = 2"));
    for release in ["r1", "r2", "r3", "r4"] {
        daemon.deploy_ok(release, &demo_api());
    }
    let (ids, _) = daemon.releases_json();
    assert_eq!(ids, ["r4", "r3"]);
    assert!(!daemon
        .dir
        .path()
        .join(".cutover/releases/backend/r1")
        .exists());
    assert!(daemon
        .dir
        .path()
        .join(".cutover/releases/backend/r3/artifact")
        .exists());
}

#[test]
fn artifacts_are_sent_over_the_socket_and_cleaned_up() {
    let daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    let uploads = daemon.dir.path().join(".cutover/uploads");
    eventually(Duration::from_secs(5), "the upload to be removed", || {
        std::fs::read_dir(&uploads)
            .map(|d| d.count() == 0)
            .unwrap_or(true)
    });
    // The stored release is a copy: the deployer's file can change or go away.
    let stored = daemon
        .dir
        .path()
        .join(".cutover/releases/backend/v1/artifact");
    assert_eq!(
        std::fs::read(&stored).unwrap(),
        std::fs::read(demo_api()).unwrap()
    );

    // --no-upload: the daemon reads the path itself.
    let out = daemon.cli(&[
        "deploy",
        "backend",
        "--release",
        "v2",
        "--no-upload",
        "--artifact",
        demo_api().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(get(daemon.public, "/version").2, "v2");
}

#[test]
fn other_bytes_under_the_active_release_id_are_refused() {
    let daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    let other = daemon.script("other", &format!("exec {}", demo_api().display()));
    let out = daemon.deploy("v1", &other);
    let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("release v1 of backend is already stored with sha256"),
        "{shown}"
    );
    // The same bytes again: nothing to do.
    let out = daemon.deploy("v1", &demo_api());
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("v1 is already active; nothing to do"),
        "{}",
        text(&out.stdout)
    );
}

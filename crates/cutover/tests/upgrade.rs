//! `cutover upgrade`: the daemon hands its sockets and instances to a new daemon process under
//! load, without a failed request or an application restart; a failed upgrade changes nothing;
//! a kill -9 of either daemon during the handoff leaves the component served by one instance.

mod common;

use common::ws::{websocket_client, WsCounts};
use common::*;
use cutover::loadgen::{ClientKind, Load};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn serving_instance_pid(daemon: &Daemon) -> i64 {
    daemon.component_status("backend")["serving"]["pid"]
        .as_i64()
        .expect("an instance serves")
}

fn upgrade(daemon: &Daemon, args: &[&str]) -> std::process::Output {
    let mut all = vec!["upgrade"];
    all.extend_from_slice(args);
    daemon.cli(&all)
}

/// Waits until only one `cutover serve` of this config is left (the old one has finished).
fn one_daemon_left(daemon: &Daemon) {
    eventually(Duration::from_secs(30), "the old daemon exits", || {
        daemon.daemon_processes().len() == 1
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_upgrades_under_load_fail_no_request_and_keep_the_instance() {
    let daemon = Arc::new(Daemon::start(FAST_COMPONENT));
    daemon.deploy_ok("v1", &demo_api());
    let instance = serving_instance_pid(&daemon);
    let first_daemon = daemon.serving_daemon_pid().unwrap();

    let mut clients = vec![ClientKind::KeepAlive; 8];
    clients.extend([ClientKind::NewConnection; 4]);
    clients.extend([ClientKind::Slow { ms: 400 }; 3]);
    let load = Load::start(daemon.public, "/version", &clients);
    let ws_counts = Arc::new(WsCounts::default());
    let (stop_ws, stop_rx) = tokio::sync::watch::channel(false);
    let ws = tokio::spawn(websocket_client(daemon.public, ws_counts.clone(), stop_rx));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut daemons = vec![first_daemon];
    for _ in 0..10 {
        let d = daemon.clone();
        let out = tokio::task::spawn_blocking(move || upgrade(&d, &[]))
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "upgrade failed: {}\n{}",
            text(&out.stderr),
            daemon.log()
        );
        let now = daemon.serving_daemon_pid().unwrap();
        assert!(!daemons.contains(&now), "a new daemon serves each time");
        daemons.push(now);
        assert_eq!(
            serving_instance_pid(&daemon),
            instance,
            "the application instance was not restarted"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = load.stop().await;
    let _ = stop_ws.send(true);
    ws.await.unwrap();

    assert_eq!(report.failed, 0, "failed requests: {:?}", report.failures);
    assert!(report.ok > 1000, "too little load: {}", report.ok);
    assert_eq!(
        ws_counts.failures.load(Ordering::Relaxed),
        0,
        "websocket sessions failed"
    );
    assert!(ws_counts.echoes.load(Ordering::Relaxed) >= 60);
    assert_eq!(daemon.instances_of("backend", "v1"), vec![instance as i32]);
    one_daemon_left(&daemon);
    // The last daemon is a full one: it deploys, and its status names it.
    daemon.deploy_ok("v2", &demo_api());
    assert_eq!(get(daemon.public, "/version").2, "v2");
    assert_eq!(daemon.serving_daemon_pid(), daemons.last().copied());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upgrade_leaves_the_old_daemon_serving_unchanged() {
    let daemon = Arc::new(Daemon::start(FAST_COMPONENT));
    daemon.deploy_ok("v1", &demo_api());
    let instance = serving_instance_pid(&daemon);
    let pid = daemon.pid();
    let load = Load::start(
        daemon.public,
        "/version",
        &[
            ClientKind::KeepAlive,
            ClientKind::KeepAlive,
            ClientKind::NewConnection,
        ],
    );

    let crash = daemon.script("crash.sh", "echo 'fatal: this build is broken' >&2\nexit 3");
    let hang = daemon.script("hang.sh", "sleep 300");
    let not_executable = daemon.dir.path().join("not-executable");
    std::fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    let missing = daemon.dir.path().join("missing");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--binary".into(), missing.display().to_string()], "No such file"),
        (
            vec!["--binary".into(), not_executable.display().to_string()],
            "Permission denied",
        ),
        (
            vec!["--binary".into(), crash.display().to_string()],
            "exited with code 3 before taking over\nits last log lines:\n  fatal: this build is broken",
        ),
        (
            vec![
                "--binary".into(),
                hang.display().to_string(),
                "--timeout".into(),
                "1s".into(),
            ],
            "was not ready within 1s; killed it",
        ),
    ];
    for (args, why) in &cases {
        let d = daemon.clone();
        let args = args.clone();
        let out = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            upgrade(&d, &args)
        })
        .await
        .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(stderr.contains(why), "expected {why:?} in:\n{stderr}");
        assert!(
            stderr.contains("the running daemon goes on serving"),
            "{stderr}"
        );
        assert_eq!(daemon.serving_daemon_pid(), Some(pid));
        assert_eq!(serving_instance_pid(&daemon), instance);
    }
    assert!(
        processes_matching(hang.to_str().unwrap()).is_empty()
            && processes_matching("sleep 300").is_empty(),
        "the timed-out new daemon is killed with what it started"
    );

    // The config on disk is not the one the daemon runs: the new daemon must refuse it.
    let config = std::fs::read_to_string(&daemon.config).unwrap();
    std::fs::write(&daemon.config, format!("{config}\n# edited\n")).unwrap();
    let d = daemon.clone();
    let out = tokio::task::spawn_blocking(move || upgrade(&d, &[]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(
            "changed since the running daemon loaded it; apply it with `cutover reload` first"
        ),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(&daemon.config, config).unwrap();

    // A state database newer than the new binary knows (as when "upgrading" to an older
    // cutover): it refuses before writing anything.
    let db = daemon.dir.path().join(".cutover/state.db");
    let set_version = |v: i64| {
        rusqlite::Connection::open(&db)
            .unwrap()
            .pragma_update(None, "user_version", v)
            .unwrap()
    };
    let real: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    set_version(999);
    let d = daemon.clone();
    let out = tokio::task::spawn_blocking(move || upgrade(&d, &[]))
        .await
        .unwrap();
    set_version(real);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("written by a newer cutover (schema v999"),
        "{}",
        text(&out.stderr)
    );

    let report = load.stop().await;
    assert_eq!(report.failed, 0, "failed requests: {:?}", report.failures);
    assert_eq!(daemon.serving_daemon_pid(), Some(pid));
    assert_eq!(daemon.daemon_processes(), vec![pid as i32]);
    // Nothing was left half-changed: the next upgrade works.
    let d = daemon.clone();
    let out = tokio::task::spawn_blocking(move || upgrade(&d, &[]))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(serving_instance_pid(&daemon), instance);
}

/// The new daemon's pid once it exists (a `cutover serve` of this config other than `old`).
fn wait_for_successor(daemon: &Daemon, old: u32) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(pid) = daemon
            .daemon_processes()
            .into_iter()
            .find(|p| *p != old as i32)
        {
            return Some(pid);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// After a kill, whatever survives (or a restart) serves the component with exactly one
/// healthy instance.
fn served_by_one_instance(daemon: &mut Daemon) {
    let answers = (0..40).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        daemon.serving_daemon_pid().is_some()
    });
    if !answers {
        daemon.spawn();
    }
    eventually(Duration::from_secs(15), "the component serves", || {
        get(daemon.public, "/version").0 == 200
    });
    eventually(Duration::from_secs(15), "one instance runs", || {
        daemon.instances_of("backend", "v1").len() == 1
    });
    one_daemon_left(daemon);
}

#[test]
fn kill9_of_the_new_daemon_during_the_handoff_leaves_one_serving() {
    let mut daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    for delay_ms in [0, 2, 5, 10, 20] {
        let old = daemon.serving_daemon_pid().unwrap();
        let config = daemon.config.clone();
        let upgrading = std::thread::spawn(move || {
            std::process::Command::new(CUTOVER)
                .args(["upgrade", "--config"])
                .arg(&config)
                .output()
                .unwrap()
        });
        if let Some(new) = wait_for_successor(&daemon, old) {
            std::thread::sleep(Duration::from_millis(delay_ms));
            unsafe { libc::kill(new, libc::SIGKILL) };
        }
        let out = upgrading.join().unwrap();
        if !out.status.success() {
            assert!(text(&out.stderr).contains("the running daemon goes on serving"));
            assert_eq!(daemon.serving_daemon_pid(), Some(old));
        }
        served_by_one_instance(&mut daemon);
    }
}

#[test]
fn kill9_of_the_old_daemon_during_the_handoff_leaves_one_serving() {
    let mut daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    for delay_ms in [0, 2, 5, 10, 20] {
        let old = daemon.serving_daemon_pid().unwrap();
        let config = daemon.config.clone();
        let upgrading = std::thread::spawn(move || {
            std::process::Command::new(CUTOVER)
                .args(["upgrade", "--config"])
                .arg(&config)
                .output()
                .unwrap()
        });
        if wait_for_successor(&daemon, old).is_some() {
            std::thread::sleep(Duration::from_millis(delay_ms));
            unsafe { libc::kill(old as i32, libc::SIGKILL) };
        }
        let _ = upgrading.join().unwrap();
        served_by_one_instance(&mut daemon);
    }
}

//! Crash consistency: `kill -9` of the daemon, then a restart.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[test]
fn after_kill9_the_same_release_serves_again_within_2s() {
    let mut daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    daemon.deploy_ok("v2", &demo_api());
    let pid = daemon.status_json()["components"][0]["serving"]["pid"]
        .as_i64()
        .unwrap();

    daemon.kill9();
    let restarted = Instant::now();
    daemon.spawn();
    eventually(Duration::from_secs(2), "v2 serving again", || {
        get(daemon.public, "/version").2 == "v2"
    });
    assert!(
        restarted.elapsed() < Duration::from_secs(2),
        "took {:?}",
        restarted.elapsed()
    );

    let status = daemon.status_json();
    assert_eq!(status["components"][0]["active"], "v2");
    // The instance outlived the daemon and was adopted, not restarted.
    assert_eq!(
        status["components"][0]["serving"]["pid"].as_i64().unwrap(),
        pid
    );
    assert!(
        daemon.log().contains("adopted the instance"),
        "{}",
        daemon.log()
    );

    // The adopted instance is still managed: the next deploy stops it.
    daemon.deploy_ok("v3", &demo_api());
    eventually(
        Duration::from_secs(5),
        "the adopted v2 to be stopped",
        || unsafe { libc::kill(pid as i32, 0) } != 0,
    );
    assert_eq!(get(daemon.public, "/version").2, "v3");
}

#[test]
fn an_interrupted_deploy_is_recorded_and_leaves_one_release() {
    let mut daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    let slow = daemon.demo_with_env("slow-start", "DEMO_STARTUP_DELAY_MS=4000");
    let deploy = daemon.deploy_in_background("v2", &slow);
    eventually(Duration::from_secs(5), "the v2 instance to start", || {
        !daemon.instances_of("backend", "v2").is_empty()
    });
    daemon.kill9();
    let out = deploy.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the CLI must not report success"
    );
    assert!(
        text(&out.stderr).contains("closed the stream before the deploy finished"),
        "{}",
        text(&out.stderr)
    );

    daemon.spawn();
    eventually(Duration::from_secs(2), "v1 serving", || {
        get(daemon.public, "/version").2 == "v1"
    });
    let status = daemon.status_json();
    assert_eq!(status["components"][0]["active"], "v1");
    // Exactly one release runs: the half-started v2 was killed.
    eventually(Duration::from_secs(3), "the v2 instance to be gone", || {
        daemon.instances_of("backend", "v2").is_empty()
    });
    let history: serde_json::Value =
        serde_json::from_slice(&daemon.cli(&["history", "--json"]).stdout).unwrap();
    let last = &history["deploys"][0];
    assert_eq!(last["to_release"], "v2");
    assert_eq!(last["outcome"], "interrupted");
    assert_eq!(history["pipelines"][0]["outcome"], "interrupted");
}

#[test]
fn a_dead_serving_instance_is_restarted() {
    let daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    let pid = daemon.status_json()["components"][0]["serving"]["pid"]
        .as_i64()
        .unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    eventually(Duration::from_secs(5), "a new v1 instance", || {
        let status = daemon.status_json();
        status["components"][0]["serving"]["pid"]
            .as_i64()
            .is_some_and(|p| p != pid)
    });
    assert_eq!(get(daemon.public, "/version").2, "v1");
}

#[test]
fn sigterm_finishes_in_flight_requests_and_stops_instances() {
    let mut daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    let pid = daemon.status_json()["components"][0]["serving"]["pid"]
        .as_i64()
        .unwrap() as i32;
    let public = daemon.public;
    let slow = std::thread::spawn(move || get(public, "/slow?ms=1000"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(daemon.terminate(), Some(0));
    let (status, _, body) = slow.join().unwrap();
    assert_eq!((status, body.as_str()), (200, "slept 1000 ms"));
    assert!(
        unsafe { libc::kill(pid, 0) } != 0,
        "the instance must be stopped with the daemon"
    );
    assert!(
        std::net::TcpStream::connect(public).is_err(),
        "the listener is closed"
    );
}

/// A release that keeps crashing is restarted with a growing backoff, and never locks the
/// operator out: a fixed release can be deployed over it.
#[test]
fn a_crash_looping_release_can_be_replaced() {
    let daemon = Daemon::start(FAST_COMPONENT);
    let flaky = daemon.demo_with_env("flaky", "DEMO_CRASH_AFTER_MS=700");
    daemon.deploy_ok("v1", &flaky);
    std::thread::sleep(Duration::from_millis(2500));
    // A restart may hold the component for the moment it takes to start one instance.
    let mut deployed = false;
    for _ in 0..20 {
        let out = daemon.deploy("v2", &demo_api());
        if out.status.success() {
            deployed = true;
            break;
        }
        assert!(
            text(&out.stderr).contains("restart after exit"),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(deployed, "the operator was locked out by the restart loop");
    assert_eq!(get(daemon.public, "/version").2, "v2");
    assert!(
        daemon.log().contains("restarting it in"),
        "{}",
        daemon.log()
    );
}

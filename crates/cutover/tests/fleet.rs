//! `cutover fleet` against three real hosts (network namespaces with their own sshd and
//! `cutover serve`, tests/common/fleet.rs), over real ssh, under load from the test.

mod common;

use common::fleet::TestFleet;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Short timings; `stabilize` long enough for the waves to be told apart.
fn component(stabilize: &str) -> String {
    format!(
        r#"
command = ["{{artifact}}"]
env = {{ API_ADDR = "127.0.0.1:{{port}}", RELEASE = "{{release}}" }}
health = {{ path = "/health", interval = "100ms", timeout = "2s", healthy_threshold = 2, start_timeout = "3s" }}
drain_timeout = "5s"
stop_timeout = "5s"
keep_releases = 5
stabilize = "{stabilize}"
stabilize_checks = {{ unhealthy_threshold = 2, max_error_rate = 0.05, min_requests = 5 }}
"#
    )
}

/// Three hosts, each serving v1.
fn fleet_on_v1(stabilize: &str) -> Option<TestFleet> {
    let fleet = TestFleet::start(3, &component(stabilize))?;
    let api = demo_api();
    for i in 0..3 {
        fleet.deploy_on_host(i, "v1", &api);
    }
    Some(fleet)
}

fn fleet_cli(config: &Path, args: &[&str]) -> Output {
    Command::new(CUTOVER)
        .arg("--config")
        .arg(config)
        .arg("fleet")
        .args(args)
        .output()
        .unwrap()
}

/// `cutover fleet deploy backend --release RELEASE --artifact demo-api [--json]`.
fn fleet_deploy(config: &Path, release: &str, json: bool) -> Output {
    let api = demo_api();
    let mut args = vec![
        "deploy",
        "backend",
        "--release",
        release,
        "--artifact",
        api.to_str().unwrap(),
    ];
    if json {
        args.push("--json");
    }
    fleet_cli(config, &args)
}

/// The JSON lines of a `--json` run.
fn events(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn finished(events: &[Value]) -> &Value {
    events
        .iter()
        .find(|e| e["event"] == "run_finished")
        .unwrap_or_else(|| panic!("no run_finished in {events:#?}"))
}

fn host_outcome<'a>(finished: &'a Value, host: &str) -> &'a str {
    finished["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == host)
        .and_then(|h| h["outcome"].as_str())
        .unwrap_or_else(|| panic!("no {host} in {finished:#}"))
}

/// When `host`'s own daemon said `event` (first time), in ms since the run started.
fn t_of(events: &[Value], host: &str, event: &str) -> Option<u64> {
    events
        .iter()
        .find(|e| e["event"] == "host_event" && e["host"] == host && e["daemon"]["event"] == event)
        .and_then(|e| e["t_ms"].as_u64())
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

#[test]
fn a_three_host_waves_deploy_moves_every_host_with_no_failed_request() {
    let Some(fleet) = fleet_on_v1("1s") else {
        return;
    };
    let config = fleet.operator_config("canary = 1\nmax_parallel = 2\n");
    let api = demo_api();
    let load = fleet.start_load(2, Duration::from_secs(60));
    let out = fleet_deploy(&config, "v2", true);
    let report = load.stop();
    assert!(out.status.success(), "{}", describe(&out));
    let events = events(&out);
    let end = finished(&events);
    assert_eq!(end["outcome"], "succeeded", "{end:#}");
    for i in 0..3 {
        assert_eq!(fleet.active_release(i, "backend").as_deref(), Some("v2"));
        assert_eq!(fleet.get(i, "/").1.trim(), "demo-api v2");
    }
    // The canary stabilized before the second wave started anywhere.
    let canary_stable = t_of(&events, "h1", "stable").expect("h1 stabilized");
    for later in ["h2", "h3"] {
        let started = t_of(&events, later, "deploy_started").expect("deployed");
        assert!(
            started > canary_stable,
            "{later} started at {started} ms, before the canary was stable at {canary_stable} ms"
        );
    }
    // The second wave ran side by side (max_parallel = 2): each started before the other ended.
    let (h2_start, h3_start) = (
        t_of(&events, "h2", "deploy_started").unwrap(),
        t_of(&events, "h3", "deploy_started").unwrap(),
    );
    let (h2_end, h3_end) = (
        t_of(&events, "h2", "deploy_finished").unwrap(),
        t_of(&events, "h3", "deploy_finished").unwrap(),
    );
    assert!(h2_start < h3_end && h3_start < h2_end, "{events:#?}");
    assert_eq!(report.failed(), 0, "{report:?}");
    for host in fleet.hosts() {
        assert!(report.of(&host.name).ok > 0, "{report:?}");
    }
    // Each host received the artifact itself, verified by its digest.
    let digest = sha256_hex(&std::fs::read(&api).unwrap());
    for host in fleet.hosts() {
        let copy = host
            .dir
            .join("upload-cache/cutover/uploads")
            .join(format!("{digest}.artifact"));
        assert!(
            copy.is_file(),
            "{} has no upload at {}",
            host.name,
            copy.display()
        );
    }
    // One id ties the hosts' deploys together, in each host's own history.
    let run = end["run"].as_str().unwrap();
    for i in 0..3 {
        let history = fleet.host_cli(i, &["history", "--json"]);
        assert!(
            text(&history.stdout).contains(&format!("fleet run {run}")),
            "host {i}: {}",
            text(&history.stdout)
        );
    }
    let status = fleet_cli(&config, &["status"]);
    assert!(status.status.success(), "{}", describe(&status));
    assert!(text(&status.stdout).contains("every host serves the same releases"));
    let history = fleet_cli(&config, &["history"]);
    assert!(
        text(&history.stdout).contains(run),
        "{}",
        describe(&history)
    );
}

#[test]
fn a_host_that_fails_its_health_gate_in_wave_two_rolls_the_canary_back() {
    let Some(mut fleet) = fleet_on_v1("0s") else {
        return;
    };
    // h2's next release never turns healthy (a host-specific setting gone wrong).
    fleet.set_host_env(1, "DEMO_NEVER_HEALTHY", "1");
    let config = fleet.operator_config("canary = 1\nmax_parallel = 2\n");
    let load = fleet.start_load(2, Duration::from_secs(60));
    let out = fleet_deploy(&config, "v2", true);
    let report = load.stop();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let events = events(&out);
    let end = finished(&events);
    assert_eq!(end["outcome"], "rolled_back", "{end:#}");
    assert!(end["reason"].as_str().unwrap().contains("h2"), "{end:#}");
    assert_eq!(host_outcome(end, "h1"), "rolled_back");
    assert_eq!(host_outcome(end, "h2"), "failed");
    // h3 (wave 2, no stabilization) switched and ended before h2's verdict: it goes back
    // together with the canary, not after the canary's rollback has finished.
    assert_eq!(host_outcome(end, "h3"), "rolled_back", "{end:#}");
    let h3_starts = phase_at(&events, "h3", "rolling_back", None).expect("h3 rolls back");
    let h1_back = phase_at(&events, "h1", "done", Some("back on its old release")).unwrap();
    assert!(
        h3_starts < h1_back,
        "h3 began its rollback at {h3_starts} ms, after h1's ended at {h1_back} ms"
    );
    for i in 0..3 {
        assert_eq!(
            fleet.active_release(i, "backend").as_deref(),
            Some("v1"),
            "host {i} after the run"
        );
    }
    // Every request was answered through it all, on every host.
    assert_eq!(report.failed(), 0, "{report:?}");
}

#[test]
fn a_host_that_degrades_during_stabilization_rolls_every_host_back() {
    let Some(mut fleet) = fleet_on_v1("4s") else {
        return;
    };
    // h3's next release answers 500 after 300 ms: its own stabilization catches it.
    fleet.set_host_env(2, "DEMO_FAIL_AFTER_MS", "300");
    let config = fleet.operator_config("canary = 1\nmax_parallel = 2\n");
    let load = fleet.start_load(2, Duration::from_secs(90));
    let out = fleet_deploy(&config, "v2", true);
    let report = load.stop();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let events = events(&out);
    let end = finished(&events);
    assert_eq!(end["outcome"], "rolled_back", "{end:#}");
    assert_eq!(host_outcome(end, "h3"), "rolled_back_by_host");
    assert_eq!(host_outcome(end, "h1"), "rolled_back");
    // h2 was stabilizing beside h3: swapped back to its warm old instance.
    assert!(
        ["aborted", "rolled_back"].contains(&host_outcome(end, "h2")),
        "{end:#}"
    );
    for i in 0..3 {
        assert_eq!(fleet.active_release(i, "backend").as_deref(), Some("v1"));
    }
    // h3's failures are its release's own 500s; the other hosts answered everything.
    for host in ["h1", "h2"] {
        assert_eq!(report.of(host).failed, 0, "{host}: {report:?}");
    }
}

#[test]
fn an_unreachable_host_fails_the_deploy_before_any_host_switches() {
    let Some(fleet) = fleet_on_v1("0s") else {
        return;
    };
    fleet.disconnect(2);
    let config = fleet.operator_config("canary = 1\nmax_parallel = 2\n");
    let out = fleet_deploy(&config, "v2", false);
    fleet.reconnect(2);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let printed = text(&out.stdout);
    assert!(
        printed.contains("h3") && printed.contains("ssh to h3 failed"),
        "{printed}"
    );
    assert!(printed.contains("no host was changed"), "{printed}");
    for i in 0..2 {
        assert_eq!(fleet.active_release(i, "backend").as_deref(), Some("v1"));
        let history = fleet.host_cli(i, &["history", "--json"]);
        assert!(
            !text(&history.stdout).contains("\"v2\""),
            "host {i} started a deploy: {}",
            text(&history.stdout)
        );
    }
}

#[test]
fn a_killed_fleet_deploy_leaves_a_visible_mixed_state_that_a_rerun_completes() {
    // Long enough that the refused second deploy below (two seconds on a busy machine) and
    // the kill both land inside the canary's stabilization, so wave 2 never starts.
    let Some(fleet) = fleet_on_v1("8s") else {
        return;
    };
    let config = fleet.operator_config("canary = 1\nmax_parallel = 2\n");
    let api = demo_api();
    let mut first = Command::new(CUTOVER)
        .arg("--config")
        .arg(&config)
        .args([
            "fleet",
            "deploy",
            "backend",
            "--release",
            "v2",
            "--artifact",
        ])
        .arg(&api)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed while the canary is stabilizing: h1 finishes on its own, h2 and h3 never start.
    let lines = read_lines_until(&mut first, Duration::from_secs(30), |line| {
        line.contains("\"host\":\"h1\"") && line.contains("\"event\":\"stabilizing\"")
    });
    assert!(!lines.is_empty(), "the canary never stabilized");

    // While it runs, a second fleet deploy is refused: the hosts are locked.
    let second = fleet_deploy(&config, "v3", false);
    assert_eq!(second.status.code(), Some(1), "{}", describe(&second));
    assert!(
        text(&second.stdout).contains("another fleet run holds this host"),
        "{}",
        describe(&second)
    );

    first.kill().unwrap();
    let _ = first.wait();
    eventually(
        Duration::from_secs(20),
        "h1's deploy to end on its own",
        || fleet.status_json(0)["components"][0]["deploying"].is_null(),
    );
    assert_eq!(fleet.active_release(0, "backend").as_deref(), Some("v2"));
    let status = fleet_cli(&config, &["status"]);
    assert_eq!(status.status.code(), Some(1), "{}", describe(&status));
    let shown = text(&status.stdout);
    assert!(
        shown.contains("backend is mixed") && shown.contains("v2 on h1") && shown.contains("h3"),
        "{shown}"
    );
    let history = fleet_cli(&config, &["history"]);
    assert!(
        text(&history.stdout).contains("no end recorded"),
        "{}",
        describe(&history)
    );

    // The lock went with the killed run's ssh sessions; the same deploy again completes it.
    let rerun = fleet_deploy(&config, "v2", true);
    assert!(rerun.status.success(), "{}", describe(&rerun));
    let events = events(&rerun);
    let end = finished(&events);
    assert_eq!(host_outcome(end, "h1"), "already_there");
    for i in 0..3 {
        assert_eq!(fleet.active_release(i, "backend").as_deref(), Some("v2"));
    }
    let status = fleet_cli(&config, &["status"]);
    assert!(status.status.success(), "{}", describe(&status));
}

#[test]
fn a_fleet_rollback_moves_every_host_back() {
    let Some(fleet) = fleet_on_v1("0s") else {
        return;
    };
    let config = fleet.operator_config("canary = 1\nmax_parallel = 2\n");
    let out = fleet_deploy(&config, "v2", false);
    assert!(out.status.success(), "{}", describe(&out));
    let load = fleet.start_load(2, Duration::from_secs(60));
    let out = fleet_cli(&config, &["rollback", "backend", "--to", "v1"]);
    let report = load.stop();
    assert!(out.status.success(), "{}", describe(&out));
    for i in 0..3 {
        assert_eq!(fleet.active_release(i, "backend").as_deref(), Some("v1"));
    }
    assert_eq!(report.failed(), 0, "{report:?}");
}

/// Reads `child`'s stdout lines until one matches (returned with those before it); empty if
/// none did within `within`.
fn read_lines_until(
    child: &mut std::process::Child,
    within: Duration,
    done: impl Fn(&str) -> bool + Send + 'static,
) -> Vec<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let matched = done(&line);
            seen.push(line);
            if matched {
                let _ = tx.send(seen);
                return;
            }
        }
    });
    let deadline = Instant::now() + within;
    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .unwrap_or_default()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every host that said `event`, with when (ms since the run started).
/// When `host` first entered `phase` (with `detail`, if given), in ms since the run started.
fn phase_at(events: &[Value], host: &str, phase: &str, detail: Option<&str>) -> Option<u64> {
    events
        .iter()
        .find(|e| {
            e["event"] == "host_phase"
                && e["host"] == host
                && e["phase"] == phase
                && detail.is_none_or(|d| e["detail"] == d)
        })
        .map(|e| e["t_ms"].as_u64().unwrap())
}

fn times_of(events: &[Value], event: &str) -> Vec<(String, u64)> {
    events
        .iter()
        .filter(|e| e["event"] == "host_event" && e["daemon"]["event"] == event)
        .map(|e| {
            (
                e["host"].as_str().unwrap().to_owned(),
                e["t_ms"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn all_healthy_then_switch_switches_no_host_before_every_host_is_healthy() {
    let Some(fleet) = fleet_on_v1("1s") else {
        return;
    };
    let config = fleet.operator_config("strategy = \"all_healthy_then_switch\"\n");
    let load = fleet.start_load(2, Duration::from_secs(60));
    let out = fleet_deploy(&config, "v2", true);
    let report = load.stop();
    assert!(out.status.success(), "{}", describe(&out));
    let events = events(&out);
    let end = finished(&events);
    assert_eq!(end["outcome"], "succeeded", "{end:#}");
    let started = events.iter().find(|e| e["event"] == "run_started").unwrap();
    assert_eq!(started["waves"], serde_json::json!([["h1", "h2", "h3"]]));
    let holding = times_of(&events, "holding");
    let switched = times_of(&events, "switched");
    let first_switch = switched.iter().map(|s| s.1).min().expect("switched");
    for host in ["h1", "h2", "h3"] {
        let held = holding
            .iter()
            .find(|h| h.0 == host)
            .unwrap_or_else(|| panic!("{host} never held: {events:#?}"))
            .1;
        assert!(
            held < first_switch,
            "{host} held at {held} ms, after a host switched at {first_switch} ms"
        );
        assert!(
            t_of(&events, host, "proceeding").is_some(),
            "{host} was not released"
        );
    }
    for i in 0..3 {
        assert_eq!(fleet.active_release(i, "backend").as_deref(), Some("v2"));
    }
    assert_eq!(report.failed(), 0, "{report:?}");
}

#[test]
fn all_healthy_then_switch_moves_no_host_when_one_is_never_healthy() {
    let Some(mut fleet) = fleet_on_v1("0s") else {
        return;
    };
    fleet.set_host_env(1, "DEMO_NEVER_HEALTHY", "1");
    let config = fleet.operator_config("strategy = \"all_healthy_then_switch\"\n");
    let load = fleet.start_load(2, Duration::from_secs(60));
    let out = fleet_deploy(&config, "v2", true);
    let report = load.stop();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let events = events(&out);
    let end = finished(&events);
    assert_eq!(end["outcome"], "failed", "{end:#}");
    assert!(end["reason"].as_str().unwrap().contains("h2"), "{end:#}");
    assert_eq!(host_outcome(end, "h2"), "failed");
    for host in ["h1", "h3"] {
        // Healthy and held, then stopped: the new instance went, the old never stopped serving.
        assert!(t_of(&events, host, "holding").is_some(), "{events:#?}");
        assert_eq!(host_outcome(end, host), "aborted", "{end:#}");
    }
    assert!(
        times_of(&events, "switched").is_empty(),
        "a host switched: {events:#?}"
    );
    for i in 0..3 {
        assert_eq!(fleet.active_release(i, "backend").as_deref(), Some("v1"));
    }
    assert_eq!(report.failed(), 0, "{report:?}");
}

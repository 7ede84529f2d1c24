//! `[daemon] proxy_threads`: public connections are served on that many threads of their own,
//! each accepting on the same listeners, without a failed request; a reload cannot change the
//! count (it is read at start-up), a restart does.

mod common;

use common::*;
use cutover::loadgen::{ClientKind, Load};
use std::time::Duration;

fn config(threads: Option<usize>) -> String {
    let threads = threads.map_or(String::new(), |n| format!("proxy_threads = {n}\n"));
    format!(
        "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \".cutover/control.sock\"\n{threads}\n\
         [components.backend]\nlisten = \"127.0.0.1:0\"\n{FAST_COMPONENT}"
    )
}

/// The names of `pid`'s proxy threads, sorted.
fn proxy_threads(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|comm| comm.trim().to_owned())
        .filter(|comm| comm.starts_with("cutover-proxy-"))
        .collect();
    names.sort();
    names
}

fn named(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("cutover-proxy-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_served_on_the_configured_threads_and_a_restart_changes_them() {
    let daemon = std::sync::Arc::new(Daemon::start_with_config(&config(Some(3))));
    daemon.deploy_ok("v1", &demo_api());
    assert_eq!(proxy_threads(daemon.pid()), named(3));
    assert!(
        daemon
            .log()
            .contains("public connections are served on 3 thread(s)"),
        "{}",
        daemon.log()
    );

    // Keep-alive and new connections, all answered while three loops share the listener.
    let mut clients = vec![ClientKind::KeepAlive; 4];
    clients.extend([ClientKind::NewConnection; 4]);
    let load = Load::start(daemon.public, "/version", &clients);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A reload cannot change the count: refused with the key, nothing changes.
    std::fs::write(&daemon.config, config(Some(1))).unwrap();
    let d = daemon.clone();
    let out = tokio::task::spawn_blocking(move || d.cli(&["reload"]))
        .await
        .unwrap();
    let said = text(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("daemon.proxy_threads"), "{said}");
    assert_eq!(proxy_threads(daemon.pid()), named(3));

    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = load.stop().await;
    assert_eq!(report.failed, 0, "failed requests: {:?}", report.failures);
    assert!(report.ok > 100, "too little load: {}", report.ok);

    // It is read at start-up: a restarted daemon serves on one thread.
    let mut daemon = std::sync::Arc::into_inner(daemon).expect("no other holder");
    daemon.terminate();
    daemon.spawn();
    assert_eq!(proxy_threads(daemon.pid()), named(1));
    assert_eq!(get(daemon.public, "/version").0, 200);
}

#[test]
fn the_default_is_half_the_cpus_at_least_one() {
    let daemon = Daemon::start_with_config(&config(None));
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(proxy_threads(daemon.pid()), named((cpus / 2).max(1)));
}

//! `cutover reload`: the running daemon takes a changed config live. Components are added,
//! changed, moved and removed under load without a failed request; a config that is invalid,
//! or asks for what cannot change live, or touches a component mid-deploy, changes nothing.

mod common;

use common::*;
use cutover::loadgen::{ClientKind, Load};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const HEAD: &str =
    "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \".cutover/control.sock\"\n";

fn backend() -> String {
    format!("\n[components.backend]\nlisten = \"127.0.0.1:0\"\n{FAST_COMPONENT}")
}

fn api2(listen: &str, extra: &str) -> String {
    format!("\n[components.api2]\nlisten = \"{listen}\"\n{FAST_COMPONENT}{extra}\n")
}

fn reload(daemon: &Daemon) -> std::process::Output {
    daemon.cli(&["reload"])
}

fn write(daemon: &Daemon, config: &str) {
    std::fs::write(&daemon.config, config).unwrap();
}

fn listen_of(daemon: &Daemon, name: &str) -> SocketAddr {
    daemon.component_status(name)["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_changes_moves_and_removes_components_under_load() {
    let config = format!("{HEAD}{}", backend());
    let daemon = Arc::new(Daemon::start_with_config(&config));
    daemon.deploy_ok("v1", &demo_api());
    let backend_instance = daemon.component_status("backend")["serving"]["pid"].clone();
    let mut clients = vec![ClientKind::KeepAlive; 6];
    clients.extend([ClientKind::NewConnection; 4]);
    let load = Load::start(daemon.public, "/version", &clients);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Add a component: it gets its listener at once and serves from its first deploy.
    write(&daemon, &format!("{config}{}", api2("127.0.0.1:0", "")));
    let out = reload(&daemon);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        daemon.log()
    );
    assert!(
        text(&out.stdout)
            .contains("added component api2: applies now (it serves from its first deploy)"),
        "{}",
        text(&out.stdout)
    );
    let d = daemon.clone();
    let out = tokio::task::spawn_blocking(move || {
        d.cli(&[
            "deploy",
            "api2",
            "--release",
            "a1",
            "--artifact",
            demo_api().to_str().unwrap(),
        ])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let old_addr = listen_of(&daemon, "api2");
    assert_eq!(get(old_addr, "/version").2, "a1");

    // Move its listener and change settings: the new address is bound before the old one
    // closes, a request in flight on the old one finishes, settings wait for the next deploy.
    let new_port = free_port();
    let in_flight = tokio::task::spawn_blocking(move || get(old_addr, "/slow?ms=1500"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    write(
        &daemon,
        &format!(
            "{}{}",
            config
                .replace("drain_timeout = \"5s\"", "drain_timeout = \"4s\"")
                .replace(
                    "control.sock\"\n",
                    "control.sock\"\nbody_read_timeout = \"1s\"\n"
                ),
            api2(
                &format!("127.0.0.1:{new_port}"),
                "upstream_timeout = \"20s\""
            )
        ),
    );
    let d = daemon.clone();
    let out = tokio::task::spawn_blocking(move || reload(&d))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = text(&out.stdout);
    for expected in [
        format!("api2: listen 127.0.0.1:0 -> 127.0.0.1:{new_port}: applies now"),
        "api2: upstream_timeout: applies now".to_owned(),
        "backend: drain_timeout: applies at the next deploy".to_owned(),
        "daemon.body_read_timeout: applies now".to_owned(),
    ] {
        assert!(
            lines.contains(&expected),
            "expected {expected:?} in\n{lines}"
        );
    }
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "slept 1500 ms"),
        "the request in flight on the old address finished"
    );
    // The body timeout applies to a listener that was open all along: 1 s, not 30 s.
    let stalled = tokio::task::spawn_blocking({
        let addr = daemon.public;
        move || {
            use std::io::{Read, Write};
            let mut conn = std::net::TcpStream::connect(addr).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            conn.write_all(
                b"POST /echo?collect=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n",
            )
            .unwrap();
            let started = std::time::Instant::now();
            let mut answer = String::new();
            let _ = conn.read_to_string(&mut answer);
            (answer, started.elapsed())
        }
    });
    let (answer, after) = stalled.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(after < Duration::from_secs(5), "cut off after {after:?}");
    let new_addr: SocketAddr = format!("127.0.0.1:{new_port}").parse().unwrap();
    assert_eq!(get(new_addr, "/version").2, "a1");
    assert_eq!(listen_of(&daemon, "api2"), new_addr);
    assert!(
        std::net::TcpStream::connect(old_addr).is_err(),
        "the old address is closed"
    );

    // Remove it: its listener closes and its instance stops; backend never noticed.
    let api2_instances = daemon.instances_of("api2", "a1");
    assert_eq!(api2_instances.len(), 1);
    write(&daemon, &config);
    let d = daemon.clone();
    let out = tokio::task::spawn_blocking(move || reload(&d))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("removed component api2: applies now"));
    eventually(Duration::from_secs(10), "api2's instance stops", || {
        daemon.instances_of("api2", "a1").is_empty()
    });
    assert!(std::net::TcpStream::connect(new_addr).is_err());
    assert_eq!(
        daemon.status_json()["components"].as_array().unwrap().len(),
        1
    );

    // Added back, it serves from its next deploy: its old release is not started behind the
    // operator's back (which would also make that deploy wait for it).
    write(&daemon, &format!("{config}{}", api2("127.0.0.1:0", "")));
    let d = daemon.clone();
    let out = tokio::task::spawn_blocking(move || {
        let reloaded = reload(&d);
        assert!(reloaded.status.success(), "{}", text(&reloaded.stderr));
        d.cli(&[
            "deploy",
            "api2",
            "--release",
            "a2",
            "--artifact",
            demo_api().to_str().unwrap(),
        ])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(get(listen_of(&daemon, "api2"), "/version").2, "a2");
    assert!(daemon.instances_of("api2", "a1").is_empty());

    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = load.stop().await;
    assert_eq!(report.failed, 0, "failed requests: {:?}", report.failures);
    assert!(report.ok > 500, "too little load: {}", report.ok);
    assert_eq!(
        daemon.component_status("backend")["serving"]["pid"],
        backend_instance,
        "backend's instance kept running through every reload"
    );
    let history = text(&daemon.cli(&["history"]).stdout);
    assert!(history.contains("added api2"), "{history}");
    assert!(history.contains("removed api2"), "{history}");
    assert!(
        history.contains(&format!("api2: listen 127.0.0.1:0 -> {new_addr}")),
        "{history}"
    );
}

#[test]
fn a_reload_that_cannot_apply_changes_nothing() {
    let config = format!("{HEAD}{}", backend());
    let daemon = Daemon::start_with_config(&config);
    daemon.deploy_ok("v1", &demo_api());
    let before = daemon.status_json();

    // Invalid: the CLI says where (file:line:key, exit 2), and so does the daemon on SIGHUP.
    write(
        &daemon,
        &format!("{config}{}bogus = 1\n", api2("127.0.0.1:0", "")),
    );
    let out = reload(&daemon);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cutover.toml:")
            && text(&out.stderr).contains("components.api2.bogus"),
        "{}",
        text(&out.stderr)
    );
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGHUP) };
    eventually(
        Duration::from_secs(5),
        "the daemon logs the refusal",
        || daemon.log().contains("reload (SIGHUP) refused"),
    );
    assert!(daemon.log().contains("components.api2.bogus"));

    // Valid but not live-changeable, together with an addition that must not happen either.
    write(
        &daemon,
        &format!(
            "{}{}",
            config.replace("data_dir = \".cutover\"", "data_dir = \".elsewhere\""),
            api2("127.0.0.1:0", "")
        ),
    );
    let out = reload(&daemon);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("daemon.data_dir cannot change while the daemon runs"),
        "{}",
        text(&out.stderr)
    );

    // A component mid-deploy is not changed under its deploy.
    write(&daemon, &config);
    let slow = daemon.script(
        "slow-start.sh",
        &format!("sleep 2\nexec {}", demo_api().display()),
    );
    let deploying = daemon.deploy_in_background("v2", &slow);
    eventually(Duration::from_secs(5), "the deploy starts", || {
        !daemon.component_status("backend")["deploying"].is_null()
    });
    write(
        &daemon,
        &config.replace("drain_timeout = \"5s\"", "drain_timeout = \"4s\""),
    );
    let out = reload(&daemon);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is in progress"),
        "{}",
        text(&out.stderr)
    );
    assert!(deploying.join().unwrap().status.success());

    let after = daemon.status_json();
    assert_eq!(after["components"].as_array().unwrap().len(), 1);
    assert_eq!(
        after["daemon"]["config"]["sha256"],
        before["daemon"]["config"]["sha256"]
    );
    assert!(!text(&daemon.cli(&["history"]).stdout).contains("reload"));
}

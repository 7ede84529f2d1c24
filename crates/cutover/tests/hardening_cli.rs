//! The CLI against a daemon that does not answer, a user who may not talk to it, hostile
//! strings in its tables, secrets in env files, and public addresses already taken (issue 12).

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `command` to completion, or kills it and fails after `within`: a CLI that hangs is
/// the bug these tests look for.
fn run_within(command: &mut Command, within: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > within {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{command:?} still running after {within:?}; stderr so far: {}",
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), started.elapsed())
}

fn cli(daemon: &Daemon, args: &[&str]) -> Command {
    let mut command = Command::new(CUTOVER);
    command.args(args).arg("--config").arg(&daemon.config);
    command
}

/// SIGSTOPs a process, and SIGCONTs it when dropped (also when the test fails).
struct Stopped(i32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        let pid = pid as i32;
        // SAFETY: kill(2) on a child of this test.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[test]
fn read_only_commands_of_a_stopped_daemon_fall_back_to_the_database() {
    let daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    let socket = daemon.dir.path().join(".cutover/control.sock");
    let stopped = Stopped::new(daemon.pid());

    let (out, took) = run_within(&mut cli(&daemon, &["status"]), Duration::from_secs(30));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(
        stdout.contains("NOT ANSWERING") && stdout.contains("v1"),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!(
            "warning: the cutover daemon (pid {}) is not answering on {}",
            daemon.pid(),
            socket.display()
        )),
        "{stderr}"
    );

    let (out, _) = run_within(
        &mut cli(&daemon, &["history", "--json"]),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let history: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(history["deploys"][0]["to_release"], "v1");

    let (out, _) = run_within(
        &mut cli(&daemon, &["releases", "backend"]),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("v1"));

    // A deploy does not hang either; it says why and changes nothing.
    let api = demo_api();
    let (out, _) = run_within(
        &mut cli(
            &daemon,
            &[
                "deploy",
                "backend",
                "--release",
                "v2",
                "--artifact",
                api.to_str().unwrap(),
            ],
        ),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not answering on"),
        "{}",
        text(&out.stderr)
    );

    drop(stopped);
    assert_eq!(daemon.component_status("backend")["active"], "v1");
}

#[test]
fn a_user_who_may_not_open_the_socket_is_told_so() {
    let root = unsafe { libc::geteuid() } == 0;
    let setpriv = std::path::Path::new("/usr/bin/setpriv").is_file();
    if !(root && setpriv) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "this test needs root and setpriv (util-linux) under CI"
        );
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    // The config is readable by everyone; the data dir (and the socket in it) is not.
    std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&daemon.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let socket = daemon.dir.path().join(".cutover/control.sock");
    for args in [&["status"][..], &["history"], &["releases", "backend"]] {
        let mut command = Command::new("/usr/bin/setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", CUTOVER])
            .args(args)
            .arg("--config")
            .arg(&daemon.config);
        let (out, _) = run_within(&mut command, Duration::from_secs(30));
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout}{stderr}");
        assert_eq!(
            stderr,
            format!(
                "error: permission denied on {}: run as the cutover user or join its group\n",
                socket.display()
            ),
            "{args:?}"
        );
        assert!(!stdout.contains("NOT RUNNING"), "{stdout}");
    }
}

#[test]
fn client_supplied_strings_are_printed_with_control_characters_escaped() {
    let daemon = Daemon::start(FAST_COMPONENT);
    let hostile = "mallory\x1b[2J\x1b[31m\nDEPLOY  #99 forged\r\x07";
    let api = demo_api();
    let (out, _) = run_within(
        cli(
            &daemon,
            &[
                "deploy",
                "backend",
                "--release",
                "v1",
                "--artifact",
                api.to_str().unwrap(),
            ],
        )
        .env("USER", hostile)
        .env_remove("GITHUB_ACTOR")
        .env_remove("SUDO_USER"),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        !shown.chars().any(|c| c.is_control() && c != '\n'),
        "the deploy output: {shown:?}"
    );
    for args in [&["history"][..], &["status"]] {
        let out = daemon.cli(args);
        let shown = text(&out.stdout);
        let raw: Vec<char> = shown
            .chars()
            .filter(|c| c.is_control() && *c != '\n')
            .collect();
        assert!(raw.is_empty(), "{args:?} printed {raw:?}:\n{shown}");
        assert!(
            !shown.lines().any(|l| l.starts_with("DEPLOY  #99")),
            "a forged line: {shown}"
        );
        if args == ["history"] {
            assert!(
                shown.contains(r"mallory\x1b[2J\x1b[31m\nDEPLOY  #99 forged\r\x07"),
                "{shown}"
            );
        }
    }
    // JSON keeps the string as it was recorded (JSON escapes it).
    let history = daemon.cli(&["history", "--json"]);
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    assert!(history["deploys"][0]["who"]
        .as_str()
        .unwrap()
        .starts_with(hostile));
}

#[test]
fn env_check_shows_no_character_of_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "sk_live_4f9a8b7c6d5e";
    std::fs::write(
        dir.path().join("app.env"),
        format!("API_TOKEN={secret}\nPORT_NAME=x\n"),
    )
    .unwrap();
    std::fs::set_permissions(
        dir.path().join("app.env"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let config = dir.path().join("cutover.toml");
    std::fs::write(
        &config,
        format!("[components.backend]\nlisten = \"127.0.0.1:0\"\n{FAST_COMPONENT}env_file = \"app.env\"\n"),
    )
    .unwrap();
    for json in [false, true] {
        let mut args = vec!["env", "check"];
        if json {
            args.push("--json");
        }
        let out = Command::new(CUTOVER)
            .args(&args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let shown = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{shown}{}", text(&out.stderr));
        assert!(shown.contains("API_TOKEN"), "{shown}");
        assert!(shown.contains("(20 chars, sha256 "), "{shown}");
        for prefix in ["sk", "s*", "5e"] {
            assert!(!shown.contains(&format!("{prefix}****")), "{shown}");
        }
        assert!(!shown.contains("sk_"), "{shown}");
    }
}

#[test]
fn an_address_in_use_names_its_listen_line_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cutover.toml");
    std::fs::write(
        &config,
        format!("[daemon]\ndata_dir = \".cutover\"\n\n[components.backend]\nlisten = \"{addr}\"\n{FAST_COMPONENT}"),
    )
    .unwrap();
    let (out, _) = run_within(
        Command::new(CUTOVER)
            .args(["serve", "--config"])
            .arg(&config)
            .env("CUTOVER_LOG", "error"),
        Duration::from_secs(30),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected = format!(
        "error: {}:5:1: components.backend.listen: cannot listen on {addr} for backend: ",
        config.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert_eq!(
        stderr.matches("in use").count(),
        1,
        "the cause is said once: {stderr}"
    );
}

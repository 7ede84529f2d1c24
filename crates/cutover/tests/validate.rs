//! `cutover validate` catches what `serve` would fail on (issue 12), with exit code 2 and the
//! file:line:col: key of the mistake; and a control socket that points at a file never
//! deletes that file.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const COMPONENT: &str = r#"command = ["{artifact}"]
env = { API_ADDR = "127.0.0.1:{port}" }
"#;

fn run(args: &[&str], config: &Path) -> Output {
    Command::new(CUTOVER)
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `cutover serve` must refuse at once; a daemon that starts is killed and fails the test.
fn serve_refuses(config: &Path) -> String {
    let mut child = Command::new(CUTOVER)
        .args(["serve", "--config"])
        .arg(config)
        .env("CUTOVER_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            // SAFETY: SIGTERM to our own child, so it shuts down as it would under systemd.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let out = child.wait_with_output().unwrap();
            panic!("serve started with a bad config: {}", text(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    text(&out.stderr)
}

#[test]
fn control_socket_on_the_config_file_is_a_config_error_and_the_file_survives() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cutover.toml");
    let written = format!(
        "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \"cutover.toml\"\n\n\
         [components.backend]\nlisten = \"127.0.0.1:0\"\n{COMPONENT}"
    );
    std::fs::write(&config, &written).unwrap();
    let expected = format!(
        "error: {}:3:1: daemon.control_socket: {} exists and is not a socket",
        config.display(),
        config.display()
    );
    let out = run(&["validate"], &config);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).starts_with(&expected),
        "{}",
        text(&out.stderr)
    );
    let stderr = serve_refuses(&config);
    assert!(stderr.starts_with(&expected), "{stderr}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), written);
}

#[test]
fn validate_reports_what_serve_would_fail_on() {
    let dir = tempfile::tempdir().unwrap();
    let long_dir = format!("/tmp/{}", "d".repeat(100));
    // Never bound (validate binds nothing), but any port must be one nobody else uses.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cases: Vec<(String, String)> = vec![
        (
            format!(
                "[components.a]\nlisten = \"0.0.0.0:{port}\"\n{COMPONENT}\n\
                 [components.b]\nlisten = \"127.0.0.1:{port}\"\n{COMPONENT}"
            ),
            format!("7:1: components.b.listen: 127.0.0.1:{port} overlaps 0.0.0.0:{port}"),
        ),
        (
            format!(
                "[daemon]\nadmin_listen = \"127.0.0.1:{port}\"\n\
                 [components.a]\nlisten = \"127.0.0.1:{port}\"\n{COMPONENT}"
            ),
            format!("2:1: daemon.admin_listen: 127.0.0.1:{port} is already the listen address of a"),
        ),
        (
            format!(
                "[daemon]\ncontrol_socket = \"{long_dir}/control.sock\"\n\
                 [components.a]\nlisten = \"127.0.0.1:0\"\n{COMPONENT}"
            ),
            "2:1: daemon.control_socket: control socket path".to_owned(),
        ),
        (
            "[daemon]\ndata_dir = \".cutover\"\n".to_owned(),
            "1:1: components: no components configured".to_owned(),
        ),
        (
            "[components.a]\nlisten = \"127.0.0.1:0\"\ncommand = [\"{artifact}\", \"--port\", \"{port\"]\n"
                .to_owned(),
            "3:1: components.a.command: unclosed placeholder \"{port\"".to_owned(),
        ),
        (
            format!(
                "[components.a]\nlisten = \"127.0.0.1:0\"\n{COMPONENT}health = {{ timeout = \"1h\" }}\n"
            ),
            "5:12: components.a.health.timeout: a probe timeout of 1h is longer than start_timeout".to_owned(),
        ),
        (
            format!(
                "[components.a]\nlisten = \"127.0.0.1:0\"\n{COMPONENT}keep_releases = 99999999999999999999\n"
            ),
            "5:17: components.a.keep_releases: ".to_owned(),
        ),
    ];
    for (i, (text_of_config, expected)) in cases.iter().enumerate() {
        let config = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&config, text_of_config).unwrap();
        let out = run(&["validate"], &config);
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "case {i} passed validate:\n{text_of_config}\n{}{stderr}",
            text(&out.stdout)
        );
        let located = format!("error: {}:{expected}", config.display());
        assert!(
            stderr.starts_with(&located),
            "case {i}: {stderr}\nwanted: {located}"
        );
    }
}

#[test]
fn validate_warns_about_a_command_that_cannot_learn_its_port() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cutover.toml");
    std::fs::write(
        &config,
        "[components.a]\nlisten = \"127.0.0.1:0\"\ncommand = [\"/bin/sh\", \"-c\", \"sleep 1\"]\n",
    )
    .unwrap();
    let out = run(&["validate"], &config);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!(
            "WARN   {}:3:1: components.a.command: neither command nor env mentions {{port}}",
            config.display()
        )),
        "{stdout}"
    );
}

//! Issue 14 item 4: the daemon says which config it runs, and every command says when the file
//! it read is not that one.

mod common;

use common::*;
use sha2::{Digest, Sha256};

fn sha256_of(path: &std::path::Path) -> String {
    Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const NOTICE_START: &str = "warning: the daemon runs an older version of ";
const REMEDY: &str = ": apply it with `cutover reload` (or `systemctl reload cutover`)\n";

#[test]
fn status_reports_the_config_the_daemon_runs() {
    let daemon = Daemon::start(FAST_COMPONENT);
    let status = daemon.status_json();
    let config = &status["daemon"]["config"];
    assert_eq!(config["path"], daemon.config.to_str().unwrap(), "{status}");
    assert_eq!(config["sha256"], sha256_of(&daemon.config), "{status}");
    let loaded_at = config["loaded_at"].as_i64().unwrap();
    let started_at = status["daemon"]["started_at"].as_i64().unwrap();
    assert!(
        (loaded_at - started_at).abs() < 60_000,
        "loaded at {loaded_at}, started at {started_at}"
    );

    let out = daemon.cli(&["status"]);
    let stdout = text(&out.stdout);
    let sha = sha256_of(&daemon.config);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("config: "))
        .unwrap_or_else(|| panic!("no config line in:\n{stdout}"));
    assert!(
        line.starts_with(&format!(
            "config: {} (sha256 {}, loaded at ",
            daemon.config.display(),
            &sha[..12]
        )),
        "{line}"
    );
    // The file is the one the daemon runs: nothing to warn about.
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn every_command_says_when_the_daemon_runs_an_older_config() {
    let mut daemon = Daemon::start(FAST_COMPONENT);
    let api = demo_api();
    let api = api.to_str().unwrap();
    daemon.deploy_ok("v1", std::path::Path::new(api));
    let original = std::fs::read_to_string(&daemon.config).unwrap();
    std::fs::write(
        &daemon.config,
        format!("{original}\n[components.pyapp]\nlisten = \"127.0.0.1:0\"\n{FAST_COMPONENT}"),
    )
    .unwrap();
    let notice = format!("{NOTICE_START}{} (loaded at ", daemon.config.display());

    // The component the file has and the daemon does not: the error says why.
    let out = daemon.cli(&["deploy", "pyapp", "--release", "v1", "--artifact", api]);
    let stderr = text(&out.stderr);
    // An unknown component is bad usage (exit 2), even when only the daemon knows it is.
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with(&notice), "{stderr}");
    assert!(
        stderr.lines().next().unwrap().ends_with(REMEDY.trim_end()),
        "{stderr}"
    );
    let error = stderr.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(
        error.starts_with(
            "error: unknown component \"pyapp\"; configured: backend (the daemon runs an older version of "
        ) && error.ends_with(": apply it with `cutover reload` (or `systemctl reload cutover`))"),
        "{error}"
    );

    let pyapp_artifact = format!("pyapp={api}");
    let backend_artifact = format!("backend={api}");
    let out = daemon.cli(&[
        "deploy",
        "all",
        "--release",
        "v2",
        "--artifact",
        &backend_artifact,
        "--artifact",
        &pyapp_artifact,
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with(&notice), "{stderr}");
    assert!(
        stderr.contains(
            "error: an artifact was given for pyapp, which is not being deployed (the daemon runs an older version of "
        ),
        "{stderr}"
    );

    // Read-only commands, and commands that never otherwise ask the daemon, warn the same way
    // and still work.
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["history"],
        &["releases", "backend"],
        &["validate"],
        &["env", "check"],
    ] {
        let out = daemon.cli(args);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&notice) && first.ends_with(REMEDY.trim_end()),
            "{args:?}: {stderr}"
        );
        assert_eq!(
            stderr.matches("the daemon runs").count(),
            1,
            "{args:?}: said once: {stderr}"
        );
    }

    // After the restart the notice names the components' errors no more, and pyapp deploys.
    daemon.terminate();
    daemon.spawn();
    let out = daemon.cli(&["status"]);
    assert_eq!(text(&out.stderr), "");
    let out = daemon.cli(&["deploy", "pyapp", "--release", "v1", "--artifact", api]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("the daemon runs"),
        "{}",
        text(&out.stderr)
    );
}

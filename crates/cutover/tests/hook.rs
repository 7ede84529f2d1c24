//! Hook components: a command triggers a deploy hosted elsewhere, a URL confirms it.

mod common;

use common::*;

/// A backend on a fixed free port, and a hook whose verify URL is that backend's /version: the
/// hook is "live" once the backend serves the same release.
fn start(run: &str, timeout: &str) -> Daemon {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    Daemon::start_with_config(&format!(
        "[daemon]\ndata_dir = \".cutover\"\n\
         [components.backend]\nlisten = \"127.0.0.1:{port}\"\n{FAST_COMPONENT}\n\
         [components.docs]\nkind = \"hook\"\nafter = [\"backend\"]\nrun = {run}\n\
         verify = {{ url = \"http://127.0.0.1:{port}/version\", body_contains = \"{{release}}\", timeout = \"{timeout}\", interval = \"100ms\" }}\n"
    ))
}

#[test]
fn hook_runs_then_verifies_the_new_release() {
    let daemon = start(
        r#"["sh", "-c", "echo triggered {release} >> hook-calls.txt"]"#,
        "10s",
    );
    let out = daemon.cli(&[
        "deploy",
        "all",
        "--release",
        "v7",
        "--artifact",
        &format!("backend={}", demo_api().display()),
    ]);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}{}", text(&out.stderr));
    let calls = std::fs::read_to_string(daemon.dir.path().join("hook-calls.txt")).unwrap();
    assert_eq!(
        calls, "triggered v7\n",
        "the hook ran once, in the config's directory"
    );
    assert!(
        shown.contains("docs") && shown.contains("switched traffic (none) -> v7"),
        "{shown}"
    );
    assert_eq!(daemon.component_status("docs")["active"], "v7");
}

#[test]
fn a_failing_hook_command_fails_the_stage() {
    let daemon = start(
        r#"["sh", "-c", "echo 'build hook rejected: 401' >&2; exit 4"]"#,
        "10s",
    );
    daemon.deploy_ok("v1", &demo_api());
    let out = daemon.cli(&["deploy", "docs", "--release", "v1"]);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("failed (exit status: 4)") && shown.contains("build hook rejected: 401"),
        "{shown}"
    );
}

#[test]
fn a_release_that_never_shows_up_fails_verification() {
    let daemon = start(r#"["true"]"#, "1s");
    daemon.deploy_ok("v1", &demo_api());
    let out = daemon.cli(&["deploy", "docs", "--release", "v9"]);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("did not pass within 1s")
            && shown.contains("body does not contain \"v9\" yet"),
        "{shown}"
    );
}

/// Review finding: `cutover abort` did not stop a hook whose verify URL never showed the
/// release; the deploy polled on for the whole verify timeout.
#[test]
fn abort_stops_a_hook_that_waits_for_its_verify_url() {
    let daemon = start(r#"["true"]"#, "10m");
    let (config, done) = (daemon.config.clone(), std::sync::mpsc::channel());
    std::thread::spawn(move || {
        let out = std::process::Command::new(CUTOVER)
            .args(["deploy", "docs", "--release", "v9", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let _ = done.0.send(out);
    });
    eventually(
        std::time::Duration::from_secs(10),
        "the hook deploy to be in progress",
        || !daemon.component_status("docs")["deploying"].is_null(),
    );
    let out = daemon.cli(&["abort", "docs", "--who", "carol"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let deploy = done
        .1
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the hook deploy went on after the abort");
    assert_eq!(deploy.status.code(), Some(1), "{}", text(&deploy.stdout));
    let history: serde_json::Value =
        serde_json::from_slice(&daemon.cli(&["history", "--json"]).stdout).unwrap();
    let last = &history["deploys"][0];
    assert_eq!(last["outcome"], "failed", "{last}");
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .starts_with("aborted by carol"),
        "{last}"
    );
}

//! Issue 14 item 6: the apps of docs/apps.md, from examples/, deployed for real: each passes its
//! health gate behind cutover, serves, starts with the clean environment `env_clear` gives it,
//! and exits by itself (code 0) on the SIGTERM that retires it.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// A tool the example needs; a missing one fails under CI (`.ci/run` installs it).
fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is missing: apt-get install {package}"
        );
        eprintln!("skipped: {name} is missing (apt-get install {package})");
    }
    found
}

/// The example's config with test timings and a free port, under a daemon whose own
/// environment holds a secret the releases must not see.
fn daemon_for(example: &str) -> Daemon {
    let text = std::fs::read_to_string(examples().join(example).join("cutover.toml")).unwrap();
    let mut doc: toml_edit::DocumentMut = text.parse().unwrap();
    let backend = doc["components"]["backend"].as_table_mut().unwrap();
    backend["listen"] = toml_edit::value("127.0.0.1:0");
    backend["stabilize"] = toml_edit::value("0s");
    let health = backend["health"].as_inline_table_mut().unwrap();
    health.insert("interval", "100ms".into());
    health.insert("start_timeout", "30s".into());
    health.insert("healthy_threshold", 2.into());
    let config = format!(
        "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \".cutover/control.sock\"\n\n{doc}"
    );
    Daemon::start_with_env(
        &config,
        &[
            ("CUTOVER_TEST_DAEMON_SECRET", "do-not-leak"),
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ],
    )
}

/// Deploys v1 then v2 of `artifact`; checks what every example promises.
fn deploy_twice_and_check(daemon: &Daemon, artifact: &Path, greeting: &str, kept_env: &[&str]) {
    daemon.deploy_ok("v1", artifact);
    let (status, _, body) = get(daemon.public, "/");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(greeting), "{body}");

    // The serving process sees its config's variables and what inherit_env keeps, nothing else.
    let serving = daemon.component_status("backend")["serving"]["pid"]
        .as_i64()
        .unwrap();
    let environ = std::fs::read(format!("/proc/{serving}/environ")).unwrap();
    let names: Vec<String> = environ
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| text(v).split('=').next().unwrap().to_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n == "CUTOVER_TEST_DAEMON_SECRET" || n == "CUTOVER_LOG"),
        "the daemon's environment leaked: {names:?}"
    );
    for name in ["CUTOVER_PORT", "CUTOVER_RELEASE", "CUTOVER_COMPONENT"]
        .iter()
        .chain(kept_env)
    {
        assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
    }

    let out = daemon.cli(&[
        "deploy",
        "backend",
        "--release",
        "v2",
        "--artifact",
        artifact.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stopped: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "stopped" && e["release"] == "v1")
        .collect();
    assert_eq!(stopped.len(), 1, "one stop of v1: {}", text(&out.stdout));
    assert_eq!(
        stopped[0]["status"], "exited with code 0",
        "v1 shut down by itself on SIGTERM"
    );
    eventually(Duration::from_secs(10), "v1's processes gone", || {
        daemon.instances_of("backend", "v1").is_empty()
    });
    assert_eq!(get(daemon.public, "/health").0, 200);
}

/// A bundle directory: the example's files plus `extra` written by the test.
fn bundle_of(daemon: &Daemon, example: &str) -> PathBuf {
    let bundle = daemon.dir.path().join(format!("{example}-bundle"));
    let out = Command::new("cp")
        .arg("-r")
        .arg(examples().join(example))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    bundle
}

#[test]
fn a_python_app_under_gunicorn_with_vendored_dependencies() {
    let Some(_) = tool("python3", "python3") else {
        return;
    };
    let system = Path::new("/usr/lib/python3/dist-packages/gunicorn");
    if !system.is_dir() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "gunicorn is missing: apt-get install python3-gunicorn"
        );
        eprintln!("skipped: apt-get install python3-gunicorn");
        return;
    }
    let daemon = daemon_for("python-gunicorn");
    let bundle = bundle_of(&daemon, "python-gunicorn");
    // What `pip install --target vendor gunicorn` leaves, without a network: the package
    // directory, importable from vendor/ only (the start script puts it on PYTHONPATH).
    std::fs::create_dir(bundle.join("vendor")).unwrap();
    let out = Command::new("cp")
        .arg("-r")
        .arg(system)
        .arg(bundle.join("vendor/gunicorn"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    deploy_twice_and_check(&daemon, &bundle, "hello from python", &["PATH", "PORT"]);
}

#[test]
fn a_node_app() {
    let Some(_) = tool("node", "nodejs") else {
        return;
    };
    let daemon = daemon_for("node");
    let bundle = bundle_of(&daemon, "node");
    deploy_twice_and_check(&daemon, &bundle, "hello from node", &["PATH", "NODE_ENV"]);
}

#[test]
fn a_go_binary() {
    let Some(go) = tool("go", "golang-go") else {
        return;
    };
    let daemon = daemon_for("go");
    let binary = daemon.dir.path().join("api");
    let cache = daemon.dir.path().join("go-cache");
    let out = Command::new(go)
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(examples().join("go"))
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", &cache)
        .env("GOPATH", cache.join("path"))
        .env("GOFLAGS", "-buildvcs=false")
        .output()
        .unwrap();
    assert!(out.status.success(), "go build: {}", text(&out.stderr));
    deploy_twice_and_check(&daemon, &binary, "hello from go", &["API_ADDR"]);
}

#[test]
fn a_rust_binary() {
    let daemon = daemon_for("rust");
    deploy_twice_and_check(&daemon, &demo_api(), "", &["API_ADDR"]);
}

#[test]
fn a_bundle_archived_with_its_top_directory_is_explained() {
    let daemon = daemon_for("python-gunicorn");
    let parent = daemon.dir.path().join("packed");
    std::fs::create_dir(&parent).unwrap();
    let out = Command::new("cp")
        .arg("-r")
        .arg(examples().join("python-gunicorn"))
        .arg(parent.join("app"))
        .output()
        .unwrap();
    assert!(out.status.success());
    // The mistake: `tar -czf app.tar.gz app` instead of `-C app .`.
    let archive = daemon.dir.path().join("app.tar.gz");
    let out = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&parent)
        .arg("app")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = daemon.deploy("v1", &archive);
    // The deploy's own report (stdout) and its error (stderr).
    let stderr = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("/bundle/bin/start does not exist: the bundle's only top-level entry is the directory app/"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`tar -czf app.tar.gz -C app .`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("or start `{release_dir}/app/bin/start`"),
        "{stderr}"
    );
}

//! The smaller things a new user met (issue 14, item 8), each through the real binary: the
//! generated units and `init` agree on the config path, every key `generate config` prints is in
//! the README, the daemon's log file is plain text, `who` falls back to the passwd name, the
//! wording of adopted stops and rollbacks, a static site's traffic in `status`, a dirty database
//! in `migrate status`, a failed health gate's reason printed once, and `services up` checking
//! for an engine before it says what it runs.

mod common;
mod support;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const TEMPLATE: &str = include_str!("../src/cli/templates/cutover.toml");
const README: &str = include_str!("../../../README.md");

fn cutover(args: &[&str]) -> std::process::Output {
    Command::new(CUTOVER)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn exec_start(unit: &str) -> String {
    unit.lines()
        .find(|l| l.starts_with("ExecStart="))
        .unwrap_or_else(|| panic!("no ExecStart in:\n{unit}"))
        .to_owned()
}

#[test]
fn generate_systemd_and_init_point_the_unit_at_the_same_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cutover.toml");
    std::fs::write(&config, TEMPLATE).unwrap();
    let generated = cutover(&["generate", "systemd", "--config", config.to_str().unwrap()]);
    assert!(generated.status.success(), "{}", text(&generated.stderr));
    let init_dir = dir.path().join("project");
    let init = cutover(&["init", "--dir", init_dir.to_str().unwrap()]);
    assert!(init.status.success(), "{}", text(&init.stderr));
    let written = std::fs::read_to_string(init_dir.join("deploy/systemd/cutover.service")).unwrap();
    let (generated, written) = (exec_start(&text(&generated.stdout)), exec_start(&written));
    assert_eq!(generated, written);
    assert!(
        generated.contains("--config /etc/cutover/cutover.toml"),
        "{generated}"
    );

    // Another place on the server: both the unit and the workflow follow --server-config.
    let elsewhere = "/srv/app/cutover.toml";
    for what in ["systemd", "github-workflow"] {
        let out = cutover(&[
            "generate",
            what,
            "--config",
            config.to_str().unwrap(),
            "--server-config",
            elsewhere,
        ]);
        assert!(out.status.success(), "{what}: {}", text(&out.stderr));
        let shown = text(&out.stdout);
        assert!(shown.contains(elsewhere), "{what}:\n{shown}");
        assert!(
            !shown.contains("/etc/cutover/cutover.toml"),
            "{what}:\n{shown}"
        );
    }
}

/// Every key (`table.key`, components and services folded) of a TOML document.
fn keys(doc: &toml_edit::Table, prefix: &str, out: &mut Vec<(String, String)>) {
    for (key, item) in doc.iter() {
        let section = match prefix {
            "components" => "components.<name>".to_owned(),
            "services" => "services.<name>".to_owned(),
            _ => prefix.to_owned(),
        };
        match item {
            toml_edit::Item::Table(t) => {
                let next = if prefix.is_empty() {
                    key.to_owned()
                } else if prefix == "components" || prefix == "services" {
                    section.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                keys(t, &next, out);
            }
            _ => out.push((section, key.to_owned())),
        }
    }
}

/// What `generate config` says: every key it writes is documented in the README, as a `key =`
/// line of one of its TOML examples (commented or not).
#[test]
fn every_key_of_the_generated_config_is_in_the_readme() {
    let out = cutover(&["generate", "config"]);
    assert!(out.status.success());
    let generated = text(&out.stdout);
    assert!(generated.contains("Every key is documented in the README"));
    let doc: toml_edit::DocumentMut = generated.parse().unwrap();
    let mut found = Vec::new();
    keys(doc.as_table(), "", &mut found);
    // The README's TOML blocks, by the section each line is under.
    let mut documented: Vec<(String, String)> = Vec::new();
    let mut in_toml = false;
    let mut section = String::new();
    for line in README.lines() {
        if line.starts_with("```") {
            in_toml = line == "```toml";
            section.clear();
            continue;
        }
        if !in_toml {
            continue;
        }
        let line = line.trim_start_matches(['#', ' ']);
        // `[section]`, `[[section]]`, or a comment such as "and in [components.backend]:".
        let header = if line.starts_with('[') {
            Some(line.trim_start_matches('['))
        } else {
            line.split_once(" in [").map(|(_, rest)| rest)
        };
        if let Some(header) = header {
            let name = header.split(']').next().unwrap_or_default();
            section = match name.split_once('.') {
                Some(("components", _)) => "components.<name>".into(),
                Some(("services", _)) => "services.<name>".into(),
                _ => name.to_owned(),
            };
            continue;
        }
        // `key = value` and the keys of inline tables on the line.
        for part in line.split(['{', ',']) {
            if let Some((key, _)) = part.split_once('=') {
                let key = key.trim();
                if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    documented.push((section.clone(), key.to_owned()));
                }
            }
        }
    }
    let missing: Vec<String> = found
        .iter()
        .filter(|entry| !documented.contains(entry))
        .map(|(section, key)| format!("[{section}] {key}"))
        .collect();
    assert!(
        missing.is_empty(),
        "not in the README's config examples: {missing:?}"
    );
}

#[test]
fn the_daemon_log_in_a_file_is_plain_text() {
    let daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    let log = daemon.log();
    assert!(log.contains("serving"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "ANSI escapes in a log file:\n{log:?}"
    );
    assert!(!log.contains("Some("), "Rust Debug text in the log:\n{log}");
    let serving = log.lines().find(|l| l.contains("serving")).unwrap();
    assert!(
        serving.contains(&format!("listen={}", daemon.public)),
        "{serving}"
    );
}

#[test]
fn the_daemon_log_has_colours_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cutover.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \".cutover/control.sock\"\n\
             [components.backend]\nlisten = \"127.0.0.1:0\"\n{FAST_COMPONENT}"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut child = Command::new(CUTOVER)
        .args(["serve", "--color", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let path = dir.path().join("daemon.log");
    let ready = std::time::Instant::now() + Duration::from_secs(15);
    while !std::fs::read_to_string(&path)
        .unwrap_or_default()
        .contains("serving")
    {
        if std::time::Instant::now() > ready {
            let _ = child.kill();
            panic!(
                "the daemon did not start:\n{}",
                std::fs::read_to_string(&path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let log = std::fs::read_to_string(&path).unwrap();
    assert!(log.contains("\x1b["), "--color: {log:?}");
}

/// The passwd name of this process's uid, as `id -un` says.
fn user_name() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    text(&out.stdout).trim().to_owned()
}

#[test]
fn who_without_user_in_the_environment_is_the_passwd_name() {
    let daemon = Daemon::start(FAST_COMPONENT);
    let out = Command::new(CUTOVER)
        .args(["deploy", "backend", "--release", "v1", "--artifact"])
        .arg(demo_api())
        .arg("--config")
        .arg(&daemon.config)
        .env_remove("USER")
        .env_remove("LOGNAME")
        .env_remove("SUDO_USER")
        .env_remove("GITHUB_ACTOR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let history = daemon.cli(&["history", "--json"]);
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let who = history.to_string();
    let uid = unsafe { libc::getuid() };
    let expected = format!("{} (uid {uid})", user_name());
    assert!(who.contains(&expected), "want {expected:?} in {who}");
    assert!(!who.contains("unknown (uid"), "{who}");
}

#[test]
fn stopping_an_adopted_instance_reads_as_one_sentence() {
    let mut daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    daemon.kill9();
    daemon.spawn();
    let out = daemon.deploy("v2", &demo_api());
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}{}", text(&out.stderr));
    let stopped = shown
        .lines()
        .find(|l| l.contains("stopped v1"))
        .unwrap_or_else(|| panic!("no stop of v1:\n{shown}"));
    assert!(!stopped.contains("(exited ("), "{stopped}");
    assert!(
        stopped.ends_with(
            "stopped v1: exited (adopted after a daemon restart: its exit status is unknown)"
        ),
        "{stopped}"
    );
}

#[test]
fn a_rollback_says_it_uses_the_stored_release() {
    let daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    let deploy = text(&daemon.deploy("v2", &demo_api()).stdout);
    assert!(deploy.contains("  stored v2 (sha256 "), "{deploy}");
    let out = daemon.cli(&["rollback", "backend"]);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}{}", text(&out.stderr));
    assert!(shown.contains("using stored v1 (sha256 "), "{shown}");
    assert!(!shown.contains("  stored v1"), "{shown}");
    let json = daemon.cli(&["rollback", "backend", "--to", "v2", "--json"]);
    let stored: serde_json::Value = text(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "stored")
        .expect("a stored event");
    assert_eq!(stored["reused"], true, "{stored}");
}

#[test]
fn status_shows_the_requests_a_static_site_served() {
    let daemon = Daemon::start_with_config(
        "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \".cutover/control.sock\"\n\
         [components.site]\nkind = \"static\"\nlisten = \"127.0.0.1:0\"\n",
    );
    let site = daemon.dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("index.html"), "hello\n").unwrap();
    let out = daemon.cli(&[
        "deploy",
        "site",
        "--release",
        "s1",
        "--artifact",
        site.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let addr = daemon.listen_of("site");
    for _ in 0..3 {
        assert_eq!(get(addr, "/").0, 200);
    }
    assert_eq!(get(addr, "/missing.css").0, 404);
    let stats = &daemon.component_status("site")["stats"];
    assert_eq!(stats["requests"], 4, "{stats}");
    assert_eq!(stats["failed"], 0, "{stats}");
    let shown = text(&daemon.cli(&["status"]).stdout);
    let row = shown.lines().find(|l| l.starts_with("site")).unwrap();
    assert!(row.contains("4 req, 0 failed"), "{shown}");
}

#[test]
fn a_failed_health_gate_prints_its_reason_once() {
    let daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    let broken = daemon.demo_with_env("broken.sh", "DEMO_NEVER_HEALTHY=1");
    let out = daemon.deploy("v2", &broken);
    assert_eq!(out.status.code(), Some(1));
    let shown = text(&out.stdout);
    let reason = "the new instance was not healthy within";
    assert_eq!(shown.matches(reason).count(), 1, "{shown}");
    assert!(
        shown.contains("last lines of"),
        "the log tail stays: {shown}"
    );
}

#[test]
fn services_up_checks_for_an_engine_before_saying_what_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("compose.yml"), "services: {}\n").unwrap();
    let config = dir.path().join("cutover.toml");
    std::fs::write(
        &config,
        "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \".cutover/control.sock\"\n\
         [components.site]\nkind = \"static\"\nlisten = \"127.0.0.1:0\"\n\
         [services.redis]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:1\"\n\
         compose = { file = \"compose.yml\", service = \"redis\" }\n",
    )
    .unwrap();
    // A PATH with no docker on it.
    let empty = dir.path().join("bin");
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(CUTOVER)
        .args(["services", "up", "--config"])
        .arg(&config)
        .env("PATH", &empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no Docker Compose found: tried `docker compose version`"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !text(&out.stdout).contains("running:"),
        "{}",
        text(&out.stdout)
    );
}

fn write(dir: &Path, name: &str, sql: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), sql).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_status_after_a_failed_migration_says_dirty() {
    let Some(pg) = support::Postgres::start().await else {
        return;
    };
    let url = pg.create_app("app", "Sm4ll-s3cret", "app").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cutover.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \".cutover/control.sock\"\n\
             [components.backend]\nlisten = \"127.0.0.1:0\"\ncommand = [\"{{artifact}}\"]\n\
             env = {{ API_ADDR = \"127.0.0.1:{{port}}\" }}\n\
             migrations = {{ dir = \"migrations\", service = \"db\" }}\n\
             [services.db]\nkind = \"postgres\"\nurl = \"{url}\"\n"
        ),
    )
    .unwrap();
    // The active release's files stop at 1; the new release's 2 fails part-way.
    let old = dir.path().join("old");
    let new = dir.path().join("new");
    for d in [&old, &new] {
        write(d, "000001_a.up.sql", "CREATE TABLE a (id int);\n");
    }
    write(
        &new,
        "000002_b.up.sql",
        "CREATE TABLE b (id int);\nSELECT * FROM nope;\n",
    );
    let config = config.to_str().unwrap().to_owned();
    let run = move |args: Vec<String>| {
        let config = config.clone();
        std::thread::spawn(move || {
            let mut all = args;
            all.extend(["--config".to_owned(), config]);
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            cutover(&all)
        })
        .join()
        .unwrap()
    };
    let dir_arg = |d: &Path| d.to_str().unwrap().to_owned();
    let up = run(vec![
        "migrate".into(),
        "up".into(),
        "--dir".into(),
        dir_arg(&new),
    ]);
    assert_eq!(up.status.code(), Some(1), "{}", text(&up.stderr));
    let status = run(vec![
        "migrate".into(),
        "status".into(),
        "--dir".into(),
        dir_arg(&old),
    ]);
    let shown = text(&status.stdout);
    assert!(!shown.contains("ahead of these files"), "{shown}");
    assert!(shown.contains("version: 2 (DIRTY"), "{shown}");
    assert!(
        shown.contains("dirty at version 2, which has no file here"),
        "{shown}"
    );
}

#[test]
fn the_shared_edge_listeners_get_socket_units_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cutover.toml");
    std::fs::write(
        &config,
        "[edge]\nhttp = \"0.0.0.0:80\"\nhttps = \"0.0.0.0:443\"\n\
         [components.web]\nhosts = [\"example.com\"]\ncommand = [\"{artifact}\"]\n",
    )
    .unwrap();
    let service = cutover(&["generate", "systemd", "--config", config.to_str().unwrap()]);
    assert!(service.status.success(), "{}", text(&service.stderr));
    let out = cutover(&["generate", "socket", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let units = format!("{}{}", text(&service.stdout), text(&out.stdout));
    assert!(
        units.contains("Sockets=cutover-edge-http.socket cutover-edge-https.socket"),
        "{units}"
    );
    for expected in [
        "cutover-edge-http.socket",
        "FileDescriptorName=edge-http",
        "ListenStream=0.0.0.0:80",
        "cutover-edge-https.socket",
        "FileDescriptorName=edge-https",
        "ListenStream=0.0.0.0:443",
    ] {
        assert!(units.contains(expected), "no {expected:?} in:\n{units}");
    }
}

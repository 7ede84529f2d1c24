//! Pipelines as a DAG of `after`: independent stages run at the same time, a failed stage's
//! later stages are reported skipped (text and --json).

mod common;

use common::*;
use std::path::{Path, PathBuf};

fn process(name: &str, after: &[&str], stabilize: &str) -> String {
    let after: Vec<String> = after.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[components.{name}]\nlisten = \"127.0.0.1:0\"\nafter = [{}]\n{}\n",
        after.join(", "),
        FAST_COMPONENT.replace(
            "stabilize = \"0s\"",
            &format!("stabilize = \"{stabilize}\"")
        )
    )
}

fn config(components: &[String]) -> String {
    format!(
        "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \".cutover/control.sock\"\n\n{}",
        components.concat()
    )
}

fn site(dir: &Path) -> PathBuf {
    let root = dir.join("site");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "<h1>site</h1>\n").unwrap();
    root
}

fn events(out: &std::process::Output) -> Vec<serde_json::Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Index of the first event of `kind` about `component`.
fn position(events: &[serde_json::Value], kind: &str, component: &str) -> usize {
    events
        .iter()
        .position(|e| e["event"] == kind && e["component"] == component)
        .unwrap_or_else(|| panic!("no {kind} of {component} in {events:#?}"))
}

#[test]
fn stages_after_a_failed_one_are_reported_skipped() {
    let frontend = "[components.frontend]\nkind = \"static\"\nlisten = \"127.0.0.1:0\"\nafter = [\"backend\"]\n";
    let daemon = Daemon::start_with_config(&config(&[
        process("backend", &[], "0s"),
        frontend.to_owned(),
    ]));
    let broken = daemon.script("broken", "echo cannot start >&2; exit 1");
    let site = site(daemon.dir.path());
    let args = |json: bool| {
        let mut args = vec![
            "deploy".to_owned(),
            "all".into(),
            "--release".into(),
            "v1".into(),
            "--artifact".into(),
            format!("backend={}", broken.display()),
            "--artifact".into(),
            format!("frontend={}", site.display()),
        ];
        if json {
            args.push("--json".into());
        }
        args
    };
    let run = |json: bool| {
        let args = args(json);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        daemon.cli(&args)
    };
    let out = run(true);
    assert_eq!(out.status.code(), Some(1));
    let events = events(&out);
    let skipped = &events[position(&events, "skipped", "frontend")];
    assert_eq!(skipped["reason"], "backend failed", "{skipped}");
    assert!(
        events.last().unwrap()["event"] == "pipeline_finished",
        "skipped comes before the end: {events:#?}"
    );
    assert!(!events
        .iter()
        .any(|e| e["event"] == "deploy_started" && e["component"] == "frontend"));

    let out = run(false);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    let timeline = shown
        .split("timeline:")
        .nth(1)
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(
        timeline
            .lines()
            .any(|l| l.contains("frontend") && l.contains("skipped: backend failed")),
        "{shown}"
    );
}

#[test]
fn independent_stages_run_at_the_same_time_and_after_is_respected() {
    // api and worker depend on nothing; web comes after api.
    let daemon = Daemon::start_with_config(&config(&[
        process("api", &[], "2s"),
        process("web", &["api"], "0s"),
        process("worker", &[], "2s"),
    ]));
    let api = demo_api();
    let artifact = |name: &str| format!("{name}={}", api.display());
    let out = daemon.cli(&[
        "deploy",
        "all",
        "--release",
        "v1",
        "--json",
        "--artifact",
        &artifact("api"),
        "--artifact",
        &artifact("web"),
        "--artifact",
        &artifact("worker"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let events = events(&out);
    assert!(
        position(&events, "deploy_started", "worker") < position(&events, "deploy_finished", "api"),
        "worker waited for api, which it does not come after"
    );
    assert!(
        position(&events, "deploy_started", "web") > position(&events, "deploy_finished", "api"),
        "web started before api finalized"
    );
    assert_eq!(events.last().unwrap()["event"], "pipeline_finished");
}

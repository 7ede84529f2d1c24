//! The generated workflow targets a fleet (issue 10, requirement 6): it lints clean, keeps
//! expressions out of its scripts, and its steps, run here as a runner would run them
//! (tests/common/workflow.rs), call `cutover fleet deploy` with the right argv and an ssh
//! setup that checks host keys; against real hosts (real sshd and `cutover serve` in network
//! namespaces, tests/common/fleet.rs) they copy cutover from the first host and deploy.

mod common;

use common::fleet::TestFleet;
use common::workflow::{actionlint, job_env, step, steps, Runner, Step};
use common::{demo_api, text, CUTOVER};
use cutover::ops::workflow::{
    github_workflow, FleetTarget, RunnerCutover, WorkflowComponent, WorkflowOptions,
};
use std::path::Path;
use std::process::{Command, Output};

const SHA: &str = "3f9c2e1a4b5c6d7e8f9012345678901234567890";

fn component(name: &str, build: &[&str], artifact: Option<&str>) -> WorkflowComponent {
    WorkflowComponent {
        name: name.into(),
        paths: vec![format!("{name}/**")],
        build: build.iter().map(|s| s.to_string()).collect(),
        working_directory: None,
        artifact: artifact.map(String::from),
    }
}

fn fleet_options(cutover: RunnerCutover) -> WorkflowOptions {
    WorkflowOptions {
        components: vec![
            component("backend", &["make", "api"], Some("dist/api")),
            component("frontend", &["make", "web"], Some("frontend/dist")),
            component("migrations", &[], None),
        ],
        repo_config: Some("deploy/cutover.toml".into()),
        fleet: Some(FleetTarget {
            ssh: vec!["ssh".into(), "-p".into(), "2222".into()],
            cutover,
        }),
        ..WorkflowOptions::default()
    }
}

fn copy_from_web1() -> RunnerCutover {
    RunnerCutover::CopyFrom {
        host: "web1".into(),
        binary: "cutover".into(),
    }
}

fn names(steps: &[Step]) -> Vec<&str> {
    steps.iter().map(|s| s.name.as_str()).collect()
}

#[test]
fn fleet_workflows_lint_clean_and_keep_the_safety_properties() {
    for cutover in [
        copy_from_web1(),
        RunnerCutover::Install("cargo install cutover --locked --root \"$RUNNER_TEMP\"".into()),
    ] {
        let install = matches!(cutover, RunnerCutover::Install(_));
        let yaml = github_workflow(&fleet_options(cutover)).unwrap();
        actionlint(&yaml);
        let has = |line: &str| yaml.lines().any(|l| l.trim() == line);
        for line in [
            "contents: read",
            "group: cutover-deploy",
            "cancel-in-progress: false",
            "timeout-minutes: 10",
            "timeout-minutes: 30",
            "persist-credentials: false",
            "DEPLOY_SSH_KEY: ${{ secrets.DEPLOY_SSH_KEY }}",
            "DEPLOY_KNOWN_HOSTS: ${{ secrets.DEPLOY_KNOWN_HOSTS }}",
            "echo '  StrictHostKeyChecking yes'",
            "cmd=(cutover --config deploy/cutover.toml fleet deploy)",
        ] {
            assert!(has(line), "missing {line:?}:\n{yaml}");
        }
        // One server's machinery is not there: the fleet deploy uploads by itself.
        for absent in [
            "scp",
            "DEPLOY_HOST",
            "UPLOAD_DIR",
            "StrictHostKeyChecking no",
        ] {
            assert!(!yaml.contains(absent), "{absent:?} in:\n{yaml}");
        }
        let steps = steps(&yaml, "deploy");
        for s in &steps {
            let script = s.run.as_deref().unwrap_or_default();
            assert!(
                !script.contains("${{"),
                "expression in {:?}:\n{script}",
                s.name
            );
        }
        let at = |name: &str| names(&steps).iter().position(|n| *n == name);
        let key = at("Configure SSH (host keys are checked)").unwrap();
        // Everything that runs code of the repository or from outside runs before the key is
        // on disk; the copy needs the key.
        assert!(at("Build backend").unwrap() < key && at("Build frontend").unwrap() < key);
        assert_eq!(at("Install cutover").is_some_and(|i| i < key), install);
        assert_eq!(
            at("Copy cutover from the first fleet host").is_some_and(|i| i > key),
            !install
        );
        assert_eq!(at("Deploy to the fleet"), Some(steps.len() - 1));
    }
}

/// A `cutover` that records its argv (one per line) and working directory in `dir/argv`.
fn recording_cutover(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = bin.join("cutover");
    let record = dir.join("argv");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'cutover (recording)'; exit 0; fi\n\
             {{ pwd; printf '%s\\n' \"$@\"; }} > '{}'\n",
            record.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn recorded(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("argv"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// Answers the expressions of the deploy job: the detect job's outputs and the secrets.
fn answers(components: &str, secrets: &[(&str, &str)]) -> impl Fn(&str) -> String + 'static {
    let components = components.to_owned();
    let secrets: Vec<(String, String)> = secrets
        .iter()
        .map(|(k, v)| (format!("secrets.{k}"), v.to_string()))
        .collect();
    move |expr: &str| match expr {
        "needs.detect.outputs.components" => components.clone(),
        "needs.detect.outputs.release" => SHA.into(),
        other => secrets
            .iter()
            .find(|(k, _)| k == other)
            .map(|(_, v)| v.clone())
            // A secret that is not set reads as empty on GitHub.
            .unwrap_or_else(|| {
                assert!(other.starts_with("secrets."), "unknown expression {other}");
                String::new()
            }),
    }
}

/// The job's env, as the runner sets it for every step.
fn with_job_env(mut runner: Runner, yaml: &str) -> Runner {
    for (key, value) in job_env(yaml, "deploy") {
        let value = value
            .strip_prefix("${{")
            .and_then(|v| v.strip_suffix("}}"))
            .map(|e| (runner.expression)(e.trim()))
            .unwrap_or(value);
        runner.env.insert(key, value);
    }
    runner.env.insert("GITHUB_ACTOR".into(), "octocat".into());
    runner
}

fn ssh_effective(config: &Path, host: &str) -> String {
    let out = Command::new("ssh")
        .arg("-G")
        .arg("-F")
        .arg(config)
        .arg(host)
        .output()
        .expect("ssh is installed");
    assert!(out.status.success(), "ssh -G: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn the_deploy_step_runs_fleet_deploy_and_ssh_checks_host_keys() {
    let dir = tempfile::tempdir().unwrap();
    let fake = recording_cutover(dir.path());
    let yaml = github_workflow(&fleet_options(copy_from_web1())).unwrap();
    let all = steps(&yaml, "deploy");
    // A block of DEPLOY_SSH_CONFIG that tries to turn checking off loses to the workflow's.
    let secrets = [
        ("DEPLOY_SSH_KEY", "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n"),
        ("DEPLOY_KNOWN_HOSTS", "10.0.0.1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOf"),
        (
            "DEPLOY_SSH_CONFIG",
            "Host web1\n  HostName 10.0.0.1\n  User deploy\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null",
        ),
    ];
    let mut runner = with_job_env(
        Runner::new(dir.path(), answers("backend frontend", &secrets)),
        &yaml,
    );
    runner.base_path = format!("{}:{}", fake.parent().unwrap().display(), runner.base_path);
    runner.run_ok(step(&all, "Configure SSH (host keys are checked)"));
    let ssh_dir = runner.home.join(".ssh");
    use std::os::unix::fs::PermissionsExt;
    for file in ["deploy_key", "known_hosts", "config"] {
        let mode = std::fs::metadata(ssh_dir.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{file} is private");
    }
    let effective = ssh_effective(&ssh_dir.join("config"), "web1");
    let option = |name: &str| {
        effective
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in:\n{effective}"))
            .to_owned()
    };
    assert_eq!(option("stricthostkeychecking"), "true");
    assert!(option("userknownhostsfile").ends_with(".ssh/known_hosts"));
    assert_eq!(option("globalknownhostsfile"), "/dev/null");
    assert_eq!(option("batchmode"), "yes");
    assert!(option("identityfile").ends_with(".ssh/deploy_key"));
    // The alias block still says where web1 is.
    assert_eq!(option("hostname"), "10.0.0.1");
    assert_eq!(option("user"), "deploy");

    // The deploy names each selected component and its artifact.
    runner.run_ok(step(&all, "Deploy to the fleet"));
    let argv = recorded(dir.path());
    assert_eq!(
        argv[0],
        runner.workspace.display().to_string(),
        "runs in the checkout"
    );
    assert_eq!(
        argv[1..],
        [
            "--config",
            "deploy/cutover.toml",
            "fleet",
            "deploy",
            "backend",
            "frontend",
            "--release",
            SHA,
            "--json",
            "--artifact",
            "backend=dist/api",
            "--artifact",
            "frontend=frontend/dist",
        ]
    );

    // One component, and a hook: no artifact for the hook.
    let mut runner = with_job_env(
        Runner::new(
            &dir.path().join("2"),
            answers("migrations backend", &secrets),
        ),
        &yaml,
    );
    runner.base_path = format!("{}:{}", fake.parent().unwrap().display(), runner.base_path);
    // Builds are selected by COMPONENTS too (this one would fail if it ran: no Makefile).
    assert!(
        runner.run(step(&all, "Build frontend")).is_none(),
        "not selected"
    );
    runner.run_ok(step(&all, "Deploy to the fleet"));
    let argv = recorded(dir.path());
    let expected = [
        "--config",
        "deploy/cutover.toml",
        "fleet",
        "deploy",
        "migrations",
        "backend",
        "--release",
        SHA,
        "--json",
        "--artifact",
        "backend=dist/api",
    ];
    assert_eq!(argv[1..], expected);
}

/// `--install-cutover`: the command's `cutover` (in `$RUNNER_TEMP/bin`) is the one the deploy
/// step runs, through `$GITHUB_PATH`; a command that installs nothing fails its step.
#[test]
fn an_install_command_puts_cutover_on_the_path_of_the_later_steps() {
    let dir = tempfile::tempdir().unwrap();
    let fake = recording_cutover(dir.path());
    let install = format!("cp {} \"$RUNNER_TEMP/bin/cutover\"", fake.display());
    let yaml = github_workflow(&fleet_options(RunnerCutover::Install(install))).unwrap();
    let all = steps(&yaml, "deploy");
    let mut runner = with_job_env(Runner::new(dir.path(), answers("backend", &[])), &yaml);
    let out = runner.run_ok(step(&all, "Install cutover"));
    assert!(text(&out.stdout).contains("cutover (recording)"), "{out:?}");
    runner.run_ok(step(&all, "Deploy to the fleet"));
    let argv = recorded(dir.path());
    assert_eq!(
        argv[1..5],
        ["--config", "deploy/cutover.toml", "fleet", "deploy"]
    );

    let yaml = github_workflow(&fleet_options(RunnerCutover::Install("true".into()))).unwrap();
    let all = steps(&yaml, "deploy");
    let mut runner = Runner::new(&dir.path().join("2"), answers("backend", &[]));
    // Only the system's PATH: no cutover there to be found by accident.
    runner.base_path = "/usr/bin:/bin".into();
    let out = runner.run(step(&all, "Install cutover")).unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stdout).contains("::error::the install command left no cutover"));
    // Secrets missing: the SSH step says which.
    let out = runner
        .run(step(&all, "Configure SSH (host keys are checked)"))
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stdout).contains("repository secret DEPLOY_SSH_KEY is not set"));
}

fn generate(dir: &Path, args: &[&str]) -> Output {
    Command::new(CUTOVER)
        .args(["generate", "github-workflow"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

const CONFIG: &str = "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \".cutover/c.sock\"\n\n\
    [components.backend]\nlisten = \"127.0.0.1:0\"\ncommand = [\"{artifact}\"]\n\
    env = { API_ADDR = \"127.0.0.1:{port}\" }\npaths = [\"backend/**\"]\n\
    build = [\"make\"]\nartifact = \"dist/api\"\n";

#[test]
fn the_cli_targets_the_fleet_of_the_config() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(repo.path().join(".git")).unwrap();
    std::fs::create_dir_all(repo.path().join("deploy")).unwrap();
    let config = repo.path().join("deploy/cutover.toml");
    let fleet = "\n[fleet]\nhosts = [\"web1\", \"deploy@10.0.0.2\"]\nssh = [\"ssh\", \"-p\", \"2222\"]\nremote_binary = \"/usr/local/bin/cutover\"\n";
    std::fs::write(&config, format!("{CONFIG}{fleet}")).unwrap();
    // Run from a subdirectory: the path is from the repository's root all the same.
    let out = generate(&repo.path().join("deploy"), &["--config", "cutover.toml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    for line in [
        "cmd=(cutover --config deploy/cutover.toml fleet deploy)",
        "ssh_cmd=(ssh -p 2222)",
        "host=web1",
        "binary=/usr/local/bin/cutover",
    ] {
        assert!(
            yaml.lines().any(|l| l.trim() == line),
            "missing {line:?}:\n{yaml}"
        );
    }
    actionlint(&yaml);
    let out = generate(
        repo.path(),
        &[
            "--config",
            "deploy/cutover.toml",
            "--install-cutover",
            "make cutover",
        ],
    );
    let yaml = text(&out.stdout);
    assert!(
        yaml.contains("bash -euo pipefail -c 'make cutover'"),
        "{yaml}"
    );
    assert!(!yaml.contains("Copy cutover"), "{yaml}");

    // An ssh argv that would bypass the workflow's host key checking is refused.
    for ssh in [
        r#"["ssh", "-F", "ci_ssh_config"]"#,
        r#"["ssh", "-o", "StrictHostKeyChecking=no"]"#,
    ] {
        let text_of = format!("{CONFIG}\n[fleet]\nhosts = [\"web1\"]\nssh = {ssh}\n");
        std::fs::write(&config, text_of).unwrap();
        let out = generate(repo.path(), &["--config", "deploy/cutover.toml"]);
        assert!(!out.status.success(), "{ssh} accepted");
        assert!(out.stdout.is_empty());
        assert!(
            text(&out.stderr).contains("[fleet] ssh"),
            "{}",
            text(&out.stderr)
        );
    }

    // --fleet without [fleet]: only with a way to get cutover.
    std::fs::write(&config, CONFIG).unwrap();
    let out = generate(repo.path(), &["--config", "deploy/cutover.toml", "--fleet"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--install-cutover"),
        "{}",
        text(&out.stderr)
    );
    let out = generate(
        repo.path(),
        &[
            "--config",
            "deploy/cutover.toml",
            "--fleet",
            "--install-cutover",
            "make cutover",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("fleet deploy"));
    // Without either, the one-server workflow, as before.
    let out = generate(repo.path(), &["--config", "deploy/cutover.toml"]);
    assert!(text(&out.stdout).contains("ssh deploy-target"));
    let out = Command::new(CUTOVER)
        .args(["generate", "systemd", "--fleet"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The fleet's component on every test host: quick health checks and a short stabilization.
const HOST_COMPONENT: &str = r#"
command = ["{artifact}"]
env = { API_ADDR = "127.0.0.1:{port}", RELEASE = "{release}" }
health = { path = "/health", interval = "100ms", timeout = "2s", healthy_threshold = 2, start_timeout = "3s" }
drain_timeout = "5s"
stop_timeout = "5s"
stabilize = "1s"
"#;

/// The repository: the operator's config of the test fleet, with `ssh` left to the workflow's
/// `~/.ssh/config` and `history` to the runner's default, and a build of the backend.
fn write_repo(fleet: &TestFleet, workspace: &Path) {
    let operator = std::fs::read_to_string(fleet.operator_config("")).unwrap();
    let mut config: toml::Table = operator.parse().unwrap();
    let table = config["fleet"].as_table_mut().unwrap();
    table.remove("ssh");
    table.remove("history");
    let backend = config["components"]["backend"].as_table_mut().unwrap();
    let build = format!("mkdir -p dist && cp {} dist/api", demo_api().display());
    backend.insert(
        "build".into(),
        toml::Value::try_from(["sh", "-c", &build]).unwrap(),
    );
    backend.insert("artifact".into(), "dist/api".into());
    backend.insert(
        "paths".into(),
        toml::Value::try_from(["backend/**"]).unwrap(),
    );
    std::fs::write(
        workspace.join("cutover.toml"),
        toml::to_string(&config).unwrap(),
    )
    .unwrap();
}

/// A runner in `dir` whose `~` is its own: steps run in a mount namespace with `dir/home` bound
/// over /root (ssh reads the passwd entry's home, not $HOME).
fn isolated_runner(dir: &Path, fleet: &TestFleet, known_hosts: &str) -> Runner {
    let key = std::fs::read_to_string(fleet.dir().join("operator_key")).unwrap();
    let aliases: String = fleet
        .hosts()
        .iter()
        .map(|h| {
            // Each host keeps its uploads apart, as separate machines would (see the harness).
            format!(
                "Host {}\n  HostName {}\n  User root\n  SetEnv XDG_CACHE_HOME={}\n",
                h.name,
                h.ip,
                h.dir.join("upload-cache").display()
            )
        })
        .collect();
    let secrets = [
        ("DEPLOY_SSH_KEY", key.as_str()),
        ("DEPLOY_KNOWN_HOSTS", known_hosts),
        ("DEPLOY_SSH_CONFIG", aliases.as_str()),
    ];
    let mut runner = Runner::new(dir, answers("backend", &secrets));
    runner.wrap = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
    ]
    .map(String::from)
    .to_vec();
    runner
        .wrap
        .push("mount --bind \"$0\" /root && HOME=/root exec \"$@\"".into());
    runner.wrap.push(runner.home.display().to_string());
    runner
}

#[test]
fn the_fleet_workflow_deploys_to_real_hosts_over_checked_ssh() {
    let Some(fleet) = TestFleet::start(2, HOST_COMPONENT) else {
        return;
    };
    let api = demo_api();
    for i in 0..2 {
        fleet.deploy_on_host(i, "v1", &api);
    }
    let runs = fleet.dir().join("runners");
    let good_known_hosts = std::fs::read_to_string(fleet.dir().join("known_hosts")).unwrap();

    // A known_hosts with other keys for the hosts' addresses: ssh refuses, nothing moves.
    let stranger = runs.join("stranger_key");
    std::fs::create_dir_all(&runs).unwrap();
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap();
    assert!(keygen.success());
    let stranger_key = std::fs::read_to_string(stranger.with_extension("pub")).unwrap();
    let wrong: String = fleet
        .hosts()
        .iter()
        .map(|h| format!("{} {stranger_key}", h.ip))
        .collect();
    let runner = isolated_runner(&runs.join("wrong"), &fleet, &wrong);
    write_repo(&fleet, &runner.workspace);
    let out = generate(&runner.workspace, &["--config", "cutover.toml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    actionlint(&yaml);
    let all = steps(&yaml, "deploy");
    let mut runner = with_job_env(runner, &yaml);
    runner.run_ok(step(&all, "Configure SSH (host keys are checked)"));
    let out = runner
        .run(step(&all, "Copy cutover from the first fleet host"))
        .unwrap();
    assert!(!out.status.success(), "copied over an unverified host key");
    assert!(
        text(&out.stderr).contains("Host key verification failed"),
        "{}",
        text(&out.stderr)
    );

    // The real secrets: every step of the deploy job, in order, as GitHub runs them.
    let mut runner = with_job_env(
        isolated_runner(&runs.join("good"), &fleet, &good_known_hosts),
        &yaml,
    );
    write_repo(&fleet, &runner.workspace);
    let run: Vec<&Step> = all.iter().filter(|s| s.run.is_some()).collect();
    assert_eq!(
        run.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        [
            "Build backend",
            "Configure SSH (host keys are checked)",
            "Copy cutover from the first fleet host",
            "Deploy to the fleet",
        ]
    );
    let mut last = None;
    for s in run {
        last = Some(runner.run_ok(s));
    }
    let copied = std::fs::read(runner.temp.join("bin/cutover")).unwrap();
    assert!(
        copied == std::fs::read(CUTOVER).unwrap(),
        "the host's binary, byte for byte"
    );
    let deploy = last.expect("the deploy step ran");
    let events: Vec<serde_json::Value> = text(&deploy.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let end = events
        .iter()
        .find(|e| e["event"] == "run_finished")
        .unwrap_or_else(|| panic!("no run_finished:\n{}", text(&deploy.stdout)));
    assert_eq!(end["outcome"], "succeeded", "{end:#}");
    for i in 0..2 {
        assert_eq!(fleet.active_release(i, "backend").as_deref(), Some(SHA));
    }
    // The runner's fleet history went to its own home, not the machine's.
    assert!(runner
        .home
        .join(".local/state/cutover/fleet.sqlite")
        .is_file());
}

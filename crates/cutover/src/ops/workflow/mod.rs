//! The GitHub Actions workflow `.github/workflows/deploy.yml`: detect what changed, build it,
//! upload it over SSH and run `cutover deploy` on the server.
//!
//! Why it exists: the workflow this replaces looked at the last commit of a push only (so its
//! change detection never fired on a multi-commit push or a merge), disabled SSH host key
//! checking, and could run two deploys at once. The generated one:
//!
//! - runs on a push to the branch and on manual dispatch, with a `target` choice (`auto`, each
//!   component, and `both` for two components or `all` otherwise) and a `release` id that
//!   defaults to the commit SHA;
//! - `detect` job: for `auto` on a push, the components whose paths changed over the whole
//!   pushed range `github.event.before..github.sha` (a tree diff over a full clone, renames
//!   counted on both sides); every component when `before` is all zeros (new branch), unknown or
//!   not in the history (force push), or on a manual run. It runs `cutover changed --json` when
//!   `cutover` and `jq` are on the runner and the repository holds the config; otherwise an inline
//!   bash equivalent with the same glob semantics ([`bash_pattern`] translates each glob, and a
//!   test checks the translation against [`crate::ops::changes::glob`]);
//! - `deploy` job: builds each selected component with its argv (before the SSH key is on
//!   disk, and with no git credentials persisted, so build scripts see neither), uploads
//!   artifacts with `scp -p` (modes kept; directories as `.tar.gz` bundles) to `upload_dir/<release>/<component>`, runs
//!   `cutover deploy <components> --release <id> --artifact name=path ... --json` over `ssh`,
//!   then removes the upload;
//! - secrets `DEPLOY_SSH_KEY`, `DEPLOY_HOST`, `DEPLOY_USER`, `DEPLOY_KNOWN_HOSTS` (the output of
//!   `ssh-keyscan` checked by hand) and optionally `DEPLOY_PORT`; host keys are always checked
//!   (`StrictHostKeyChecking yes`);
//! - one `concurrency` group with `cancel-in-progress: false` (a running deploy is never
//!   cancelled), `timeout-minutes` on each job, `permissions: contents: read`;
//! - no `${{ }}` expression inside a `run:` script: event data, inputs and secrets reach the
//!   scripts through `env:` (script injection), and values from options are shell-quoted.
//!
//! Known limit of a push-range base: GitHub keeps one *pending* run per concurrency group, so
//! when three pushes arrive while a deploy runs, the middle one is cancelled before it starts,
//! and the last one's range (`before` = the middle push) misses the middle push's changes.
//! Run the workflow with `target: all` after such a burst, or deploy by hand.

mod detect;

pub use detect::bash_pattern;
use detect::detect_script;

/// One component as the workflow sees it.
#[derive(Debug, Clone)]
pub struct WorkflowComponent {
    pub name: String,
    /// Globs relative to the repository root (see [`crate::ops::changes`]).
    pub paths: Vec<String>,
    /// The build argv, run from `working_directory` (e.g. `["go", "build", "-o", "dist/api",
    /// "./cmd/api"]`, or `["sh", "-c", "npm ci && npm run build"]`). Empty: nothing to build.
    pub build: Vec<String>,
    /// Where the build runs, relative to the repository root; `None` for the root.
    pub working_directory: Option<String>,
    /// The artifact after the build, relative to the repository root: an executable, a
    /// directory (sent as a `.tar.gz` bundle) or an archive. `None` for components that take
    /// no artifact (hooks).
    pub artifact: Option<String>,
}

#[derive(Debug, Clone)]
pub struct WorkflowOptions {
    pub components: Vec<WorkflowComponent>,
    /// The branch whose pushes deploy.
    pub branch: String,
    /// The config file on the server (`cutover --config`).
    pub server_config: String,
    /// Where artifacts are uploaded on the server: a directory the SSH user can write and the
    /// daemon's user can read (not `/tmp` or `/home`: the daemon's unit hides them; not inside
    /// the daemon's `StateDirectory`, mode 0750). Default `/srv/cutover/uploads`, created with
    /// `install -d -o DEPLOY_USER -g cutover -m 2750 /srv/cutover/uploads`.
    pub upload_dir: String,
    /// How to run cutover on the server, e.g. `["cutover"]` or
    /// `["sudo", "-n", "-u", "cutover", "cutover"]` when the SSH user may not use the control
    /// socket itself.
    pub remote_cutover: Vec<String>,
    /// The config file in the repository, used by `cutover changed` when the runner has
    /// `cutover`; `None` always uses the inline detection.
    pub repo_config: Option<String>,
    /// `timeout-minutes` of the deploy job (detection gets 10).
    pub timeout_minutes: u32,
    /// A GitHub environment for the deploy job (protection rules, environment secrets).
    pub environment: Option<String>,
    pub runs_on: String,
}

impl Default for WorkflowOptions {
    fn default() -> Self {
        WorkflowOptions {
            components: Vec::new(),
            branch: "main".into(),
            server_config: "/etc/cutover/cutover.toml".into(),
            upload_dir: "/srv/cutover/uploads".into(),
            remote_cutover: vec!["cutover".into()],
            repo_config: Some("cutover.toml".into()),
            timeout_minutes: 30,
            environment: None,
            runs_on: "ubuntu-latest".into(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkflowError {
    #[error("no components to deploy")]
    NoComponents,
    #[error("invalid component name {0:?}: use a-z, 0-9, '-' or '_', starting with a letter")]
    ComponentName(String),
    #[error("component name {0:?} is reserved for the workflow's target input")]
    Reserved(String),
    #[error("component {0:?} is listed twice")]
    Duplicate(String),
    #[error("{what} {value:?} cannot go into the workflow: {why}")]
    Unwritable {
        what: String,
        value: String,
        why: &'static str,
    },
    #[error("component {component}: invalid path glob {glob:?}: {message}")]
    Glob {
        component: String,
        glob: String,
        message: String,
    },
}

/// The workflow file's contents (`.github/workflows/deploy.yml`).
pub fn github_workflow(opts: &WorkflowOptions) -> Result<String, WorkflowError> {
    validate(opts)?;
    let names: Vec<&str> = opts.components.iter().map(|c| c.name.as_str()).collect();
    let every = if names.len() == 2 { "both" } else { "all" };
    let mut y = String::new();
    let w = &mut y;

    line(w, 0, "# Generated by `cutover generate github-workflow`.");
    line(
        w,
        0,
        "# Repository secrets: DEPLOY_SSH_KEY (private key), DEPLOY_HOST, DEPLOY_USER,",
    );
    line(
        w,
        0,
        "# DEPLOY_KNOWN_HOSTS (`ssh-keyscan HOST`, checked by hand), DEPLOY_PORT (optional).",
    );
    line(w, 0, "name: deploy");
    line(w, 0, "");
    line(w, 0, "on:");
    line(w, 1, "push:");
    line(w, 2, &format!("branches: [{}]", yq(&opts.branch)));
    line(w, 1, "workflow_dispatch:");
    line(w, 2, "inputs:");
    line(w, 3, "target:");
    line(
        w,
        4,
        "description: 'What to deploy: auto = the components whose paths changed'",
    );
    line(w, 4, "type: choice");
    line(w, 4, "default: auto");
    line(w, 4, "options:");
    line(w, 5, "- auto");
    for name in &names {
        line(w, 5, &format!("- {name}"));
    }
    line(w, 5, &format!("- {every}"));
    line(w, 3, "release:");
    line(w, 4, "description: 'Release id (default: the commit SHA)'");
    line(w, 4, "type: string");
    line(w, 4, "required: false");
    line(w, 4, "default: ''");
    line(w, 0, "");
    line(w, 0, "permissions:");
    line(w, 1, "contents: read");
    line(w, 0, "");
    line(
        w,
        0,
        "# One deploy at a time; a running deploy is never cancelled.",
    );
    line(w, 0, "concurrency:");
    line(w, 1, "group: cutover-deploy");
    line(w, 1, "cancel-in-progress: false");
    line(w, 0, "");
    line(w, 0, "defaults:");
    line(w, 1, "run:");
    line(w, 2, "shell: bash");
    line(w, 0, "");
    line(w, 0, "jobs:");

    // detect
    line(w, 1, "detect:");
    line(w, 2, &format!("runs-on: {}", yq(&opts.runs_on)));
    line(w, 2, "timeout-minutes: 10");
    line(w, 2, "outputs:");
    line(w, 3, "components: ${{ steps.detect.outputs.components }}");
    line(w, 3, "release: ${{ steps.detect.outputs.release }}");
    line(w, 2, "steps:");
    line(w, 3, "- uses: actions/checkout@v5");
    line(w, 4, "with:");
    line(w, 5, "fetch-depth: 0");
    line(w, 5, "persist-credentials: false");
    line(w, 3, "- id: detect");
    line(w, 4, "name: Components to deploy");
    line(w, 4, "env:");
    line(w, 5, "EVENT: ${{ github.event_name }}");
    line(w, 5, "TARGET: ${{ inputs.target }}");
    line(w, 5, "RELEASE_INPUT: ${{ inputs.release }}");
    line(w, 5, "BEFORE: ${{ github.event.before }}");
    line(w, 5, "HEAD_SHA: ${{ github.sha }}");
    line(w, 4, "run: |");
    detect_script(w, opts, every)?;

    // deploy
    line(w, 0, "");
    line(w, 1, "deploy:");
    line(w, 2, "needs: detect");
    line(w, 2, "if: needs.detect.outputs.components != ''");
    line(w, 2, &format!("runs-on: {}", yq(&opts.runs_on)));
    line(w, 2, &format!("timeout-minutes: {}", opts.timeout_minutes));
    if let Some(env) = &opts.environment {
        line(w, 2, &format!("environment: {}", yq(env)));
    }
    line(w, 2, "env:");
    line(w, 3, "COMPONENTS: ${{ needs.detect.outputs.components }}");
    line(w, 3, "RELEASE: ${{ needs.detect.outputs.release }}");
    line(w, 3, &format!("UPLOAD_DIR: {}", yq(&opts.upload_dir)));
    line(w, 2, "steps:");
    line(w, 3, "- uses: actions/checkout@v5");
    line(w, 4, "with:");
    line(w, 5, "persist-credentials: false");
    line(
        w,
        3,
        "# Builds run before the SSH key is written, so build scripts never see it.",
    );
    line(
        w,
        3,
        "# Set up toolchains here (actions/setup-go, actions/setup-node, ...) if the",
    );
    line(
        w,
        3,
        "# runner's preinstalled ones are not the versions you build with.",
    );
    for c in &opts.components {
        if c.build.is_empty() {
            continue;
        }
        line(w, 3, &format!("- name: Build {}", c.name));
        line(
            w,
            4,
            &format!(
                "if: contains(format(' {{0}} ', needs.detect.outputs.components), ' {} ')",
                c.name
            ),
        );
        if let Some(dir) = &c.working_directory {
            line(w, 4, &format!("working-directory: {}", yq(dir)));
        }
        let argv: Vec<String> = c.build.iter().map(|a| sq(a)).collect();
        line(w, 4, "run: |");
        line(w, 5, &argv.join(" "));
    }

    line(w, 3, "- name: Configure SSH (host keys are checked)");
    line(w, 4, "env:");
    line(w, 5, "DEPLOY_SSH_KEY: ${{ secrets.DEPLOY_SSH_KEY }}");
    line(
        w,
        5,
        "DEPLOY_KNOWN_HOSTS: ${{ secrets.DEPLOY_KNOWN_HOSTS }}",
    );
    line(w, 5, "DEPLOY_HOST: ${{ secrets.DEPLOY_HOST }}");
    line(w, 5, "DEPLOY_USER: ${{ secrets.DEPLOY_USER }}");
    line(w, 5, "DEPLOY_PORT: ${{ secrets.DEPLOY_PORT }}");
    line(w, 4, "run: |");
    for text in [
        "set -euo pipefail",
        "for v in DEPLOY_SSH_KEY DEPLOY_KNOWN_HOSTS DEPLOY_HOST DEPLOY_USER; do",
        "  if [ -z \"${!v:-}\" ]; then echo \"::error::repository secret $v is not set\"; exit 1; fi",
        "done",
        "umask 077",
        "mkdir -p ~/.ssh",
        "printf '%s\\n' \"$DEPLOY_SSH_KEY\" > ~/.ssh/deploy_key",
        "printf '%s\\n' \"$DEPLOY_KNOWN_HOSTS\" > ~/.ssh/known_hosts",
        "{",
        "  echo 'Host deploy-target'",
        "  echo \"  HostName $DEPLOY_HOST\"",
        "  echo \"  User $DEPLOY_USER\"",
        "  echo \"  Port ${DEPLOY_PORT:-22}\"",
        "  echo '  IdentityFile ~/.ssh/deploy_key'",
        "  echo '  IdentitiesOnly yes'",
        "  echo '  UserKnownHostsFile ~/.ssh/known_hosts'",
        "  echo '  StrictHostKeyChecking yes'",
        "  echo '  BatchMode yes'",
        "  echo '  ConnectTimeout 30'",
        "  echo '  ServerAliveInterval 15'",
        "} > ~/.ssh/config",
    ] {
        line(w, 5, text);
    }

    let with_artifact: Vec<&WorkflowComponent> = opts
        .components
        .iter()
        .filter(|c| c.artifact.is_some())
        .collect();
    // Components without an artifact (hooks) have nothing to upload: no step, and no unused
    // `dir` variable for shellcheck to report (SC2034).
    if !with_artifact.is_empty() {
        upload_step(w, &with_artifact);
    }

    line(w, 3, "- name: Deploy");
    line(w, 4, "run: |");
    line(w, 5, "set -euo pipefail");
    if !with_artifact.is_empty() {
        line(w, 5, "dir=\"$UPLOAD_DIR/$RELEASE\"");
    }
    let remote: Vec<String> = opts.remote_cutover.iter().map(|a| sq(a)).collect();
    line(
        w,
        5,
        &format!(
            "cmd=({} --config {} deploy)",
            remote.join(" "),
            sq(&opts.server_config)
        ),
    );
    line(w, 5, "for c in $COMPONENTS; do cmd+=(\"$c\"); done");
    line(
        w,
        5,
        "cmd+=(--release \"$RELEASE\" --who \"github:${GITHUB_ACTOR//[^A-Za-z0-9_.-]/}\" --json)",
    );
    if !with_artifact.is_empty() {
        let names: Vec<&str> = with_artifact.iter().map(|c| c.name.as_str()).collect();
        line(w, 5, "for c in $COMPONENTS; do");
        line(w, 5, "  case \"$c\" in");
        line(
            w,
            5,
            &format!(
                "    {}) cmd+=(--artifact \"$c=$dir/$c\") ;;",
                names.join("|")
            ),
        );
        line(w, 5, "  esac");
        line(w, 5, "done");
    }
    line(
        w,
        5,
        "ssh deploy-target -- \"$(printf '%q ' \"${cmd[@]}\")\"",
    );

    if !with_artifact.is_empty() {
        line(w, 3, "- name: Remove the uploaded artifacts");
        line(w, 4, "if: always()");
        line(w, 4, "run: |");
        line(
            w,
            5,
            "ssh deploy-target -- \"$(printf '%q ' rm -rf -- \"$UPLOAD_DIR/$RELEASE\")\" || true",
        );
    }
    Ok(y)
}

/// Uploads each selected component's artifact to `UPLOAD_DIR/RELEASE/COMPONENT` (directories
/// as `.tar.gz` bundles, modes kept).
fn upload_step(w: &mut String, with_artifact: &[&WorkflowComponent]) {
    line(w, 3, "- name: Upload artifacts");
    line(w, 4, "run: |");
    line(w, 5, "set -euo pipefail");
    line(w, 5, "dir=\"$UPLOAD_DIR/$RELEASE\"");
    line(
        w,
        5,
        "ssh deploy-target -- \"$(printf '%q ' mkdir -p -- \"$dir\")\"",
    );
    line(w, 5, "for c in $COMPONENTS; do");
    line(w, 5, "  case \"$c\" in");
    for c in with_artifact {
        let artifact = c.artifact.as_deref().unwrap_or_default();
        line(w, 5, &format!("    {}) src={} ;;", c.name, sq(artifact)));
    }
    line(w, 5, "    *) continue ;;");
    line(w, 5, "  esac");
    line(w, 5, "  if [ -d \"$src\" ]; then");
    line(
        w,
        5,
        "    tar -C \"$src\" -czf \"$RUNNER_TEMP/$c.tar.gz\" .",
    );
    line(w, 5, "    src=\"$RUNNER_TEMP/$c.tar.gz\"");
    line(w, 5, "  fi");
    line(w, 5, "  scp -q -p \"$src\" \"deploy-target:$dir/$c\"");
    line(w, 5, "done");
}

fn validate(opts: &WorkflowOptions) -> Result<(), WorkflowError> {
    if opts.components.is_empty() {
        return Err(WorkflowError::NoComponents);
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in &opts.components {
        let name = &c.name;
        let ok = name.len() <= 48
            && name.starts_with(|ch: char| ch.is_ascii_lowercase())
            && name
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_');
        if !ok {
            return Err(WorkflowError::ComponentName(name.clone()));
        }
        if matches!(name.as_str(), "auto" | "all" | "both") {
            return Err(WorkflowError::Reserved(name.clone()));
        }
        if !seen.insert(name.as_str()) {
            return Err(WorkflowError::Duplicate(name.clone()));
        }
        for (i, arg) in c.build.iter().enumerate() {
            text(&format!("components.{name}.build[{i}]"), arg)?;
        }
        for (i, glob) in c.paths.iter().enumerate() {
            text(&format!("components.{name}.paths[{i}]"), glob)?;
        }
        if let Some(dir) = &c.working_directory {
            relative(&format!("components.{name}.working_directory"), dir)?;
        }
        if let Some(artifact) = &c.artifact {
            relative(&format!("components.{name}.artifact"), artifact)?;
        }
    }
    text("branch", &opts.branch)?;
    text("runs_on", &opts.runs_on)?;
    absolute("server_config", &opts.server_config)?;
    absolute("upload_dir", &opts.upload_dir)?;
    if opts.remote_cutover.is_empty() {
        return Err(WorkflowError::Unwritable {
            what: "remote_cutover".into(),
            value: String::new(),
            why: "empty command",
        });
    }
    for arg in &opts.remote_cutover {
        text("remote_cutover", arg)?;
    }
    if let Some(config) = &opts.repo_config {
        relative("repo_config", config)?;
    }
    if let Some(env) = &opts.environment {
        text("environment", env)?;
    }
    Ok(())
}

/// Text that becomes part of the YAML or a script: one line, no Actions expression.
fn text(what: &str, value: &str) -> Result<(), WorkflowError> {
    let why = if value.is_empty() {
        "empty"
    } else if value.chars().any(char::is_control) {
        "contains a newline or control character"
    } else if value.contains("${{") {
        "contains `${{`, which GitHub Actions would evaluate"
    } else {
        return Ok(());
    };
    Err(WorkflowError::Unwritable {
        what: what.to_owned(),
        value: value.to_owned(),
        why,
    })
}

fn relative(what: &str, value: &str) -> Result<(), WorkflowError> {
    text(what, value)?;
    if value.starts_with('/') || value.split('/').any(|part| part == "..") {
        return Err(WorkflowError::Unwritable {
            what: what.to_owned(),
            value: value.to_owned(),
            why: "must be a path inside the repository",
        });
    }
    Ok(())
}

fn absolute(what: &str, value: &str) -> Result<(), WorkflowError> {
    text(what, value)?;
    if !value.starts_with('/') {
        return Err(WorkflowError::Unwritable {
            what: what.to_owned(),
            value: value.to_owned(),
            why: "must be an absolute path on the server",
        });
    }
    Ok(())
}

fn line(w: &mut String, indent: usize, text: &str) {
    if !text.is_empty() {
        for _ in 0..indent {
            w.push_str("  ");
        }
        w.push_str(text);
    }
    w.push('\n');
}

/// A single-quoted YAML scalar.
fn yq(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A single-quoted shell word (quotes only when needed, for readable scripts).
fn sq(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_expressions_and_reserved_names() {
        let component = |name: &str| WorkflowComponent {
            name: name.into(),
            paths: vec!["x/**".into()],
            build: vec![],
            working_directory: None,
            artifact: None,
        };
        let mut opts = WorkflowOptions {
            components: vec![component("auto")],
            ..WorkflowOptions::default()
        };
        assert_eq!(
            github_workflow(&opts),
            Err(WorkflowError::Reserved("auto".into()))
        );
        opts.components = vec![component("api")];
        opts.components[0].build = vec![
            "echo".into(),
            "${{ github.event.head_commit.message }}".into(),
        ];
        assert!(matches!(
            github_workflow(&opts),
            Err(WorkflowError::Unwritable { .. })
        ));
        opts.components = vec![component("api")];
        opts.components[0].artifact = Some("../x".into());
        assert!(github_workflow(&opts).is_err());
    }
}

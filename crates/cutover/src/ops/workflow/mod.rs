//! The GitHub Actions workflow `.github/workflows/deploy.yml`: detect what changed, build it,
//! upload it over SSH and run `cutover deploy` on the server, or, for a fleet, run `cutover
//! fleet deploy` on the runner.
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
//! With [`WorkflowOptions::fleet`] (the CLI sets it when the repository's config has `[fleet]`,
//! or for `--fleet`) the runner is the operator's machine: after the builds the deploy job
//! writes the SSH key and known hosts (secrets `DEPLOY_SSH_KEY`, `DEPLOY_KNOWN_HOSTS` covering
//! every host, optional `DEPLOY_SSH_CONFIG` with `Host` blocks for aliases; `Host *` with
//! `StrictHostKeyChecking yes` comes first, so no later block can loosen it), gets a `cutover`
//! and runs `cutover --config <repo_config> fleet deploy <components> --release <id> --artifact
//! name=path ... --json` in the checkout, which uploads to every host itself (sha256-checked);
//! there is no scp step and no `DEPLOY_HOST`. The `cutover` is by default copied from the first
//! `[fleet]` host over the fleet's own ssh argv (`command -v <remote_binary>` there, then its
//! bytes, then `--version` here), which assumes the runner has the hosts' OS and architecture;
//! [`RunnerCutover::Install`] runs a command instead (before the key is written). A `[fleet]
//! ssh` argv that would bypass the workflow's host key settings (`-F`, a host key `-o`) is
//! refused. No `--who`: cutover on the runner reads `GITHUB_ACTOR` itself. The runner's fleet
//! history (`fleet.sqlite`) is the runner's and goes with it (a hosted runner keeps nothing);
//! each host's own history names the run. See
//! `fleet.rs` and `templates/fleet-steps.yml`.
//!
//! The workflow is written as it reads: `templates/deploy.yml` (its detect script
//! `templates/detect.sh`) with the options filled in by `fill.rs`, quoted for YAML or the shell.
//!
//! Known limit of a push-range base: GitHub keeps one *pending* run per concurrency group, so
//! when three pushes arrive while a deploy runs, the middle one is cancelled before it starts,
//! and the last one's range (`before` = the middle push) misses the middle push's changes.
//! Run the workflow with `target: all` after such a burst, or deploy by hand.

mod detect;
mod fill;
mod fleet;

pub use detect::bash_pattern;
use detect::detect_script;
use fill::Fill;
pub use fleet::{FleetTarget, RunnerCutover};

/// The workflow, with `%{...}` placeholders (see `fill.rs`).
const DEPLOY_TEMPLATE: &str = include_str!("templates/deploy.yml");
/// One component's build step in it.
const BUILD_STEP_TEMPLATE: &str = include_str!("templates/build-step.yml");

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
    /// Deploy to the hosts of the repository config's `[fleet]` (`cutover fleet deploy` run on
    /// the runner) instead of one server; `server_config`, `upload_dir` and `remote_cutover`
    /// are then unused.
    pub fleet: Option<FleetTarget>,
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
            fleet: None,
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
    #[error("the fleet workflow runs `cutover --config` with the repository's config, and none is given (repo_config)")]
    FleetWithoutConfig,
    #[error("[fleet] ssh {arg:?} cannot go into the workflow: {why}")]
    FleetSsh { arg: String, why: &'static str },
}

/// The workflow file's contents (`.github/workflows/deploy.yml`).
pub fn github_workflow(opts: &WorkflowOptions) -> Result<String, WorkflowError> {
    validate(opts)?;
    let names: Vec<&str> = opts.components.iter().map(|c| c.name.as_str()).collect();
    let every = if names.len() == 2 { "both" } else { "all" };
    let with_artifact: Vec<&WorkflowComponent> = opts
        .components
        .iter()
        .filter(|c| c.artifact.is_some())
        .collect();
    let build_steps: String = opts
        .components
        .iter()
        .filter(|c| !c.build.is_empty())
        .map(build_step)
        .collect();
    let artifact_sources: Vec<String> = with_artifact
        .iter()
        .map(|c| {
            let artifact = c.artifact.as_deref().unwrap_or_default();
            format!("{}) src={} ;;", c.name, sq(artifact))
        })
        .collect();
    let fleet_steps = match &opts.fleet {
        Some(target) => fleet::fleet_steps(target, opts.repo_config.as_deref(), &artifact_sources)?,
        None => String::new(),
    };
    let remote: Vec<String> = opts.remote_cutover.iter().map(|a| sq(a)).collect();
    let yaml = Fill::default()
        .flag("single_host", opts.fleet.is_none())
        .flag("fleet", opts.fleet.is_some())
        .text("branch", yq(&opts.branch))
        .lines("component_options", names.iter().map(|n| format!("- {n}")))
        .text("every", every)
        .text("runs_on", yq(&opts.runs_on))
        .block("detect_script", &detect_script(opts, every)?)
        .text("timeout_minutes", opts.timeout_minutes.to_string())
        .optional("environment", opts.environment.as_deref().map(yq))
        .text("upload_dir", yq(&opts.upload_dir))
        .block("build_steps", &build_steps)
        .block("fleet_steps", &fleet_steps)
        .flag("artifacts", !with_artifact.is_empty())
        .lines("artifact_sources", artifact_sources)
        .text(
            "artifact_names",
            with_artifact
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join("|"),
        )
        .text("remote_cutover", remote.join(" "))
        .text("server_config", sq(&opts.server_config))
        .render(DEPLOY_TEMPLATE);
    Ok(yaml)
}

/// The step that builds a component with its argv.
fn build_step(c: &WorkflowComponent) -> String {
    let argv: Vec<String> = c.build.iter().map(|a| sq(a)).collect();
    Fill::default()
        .text("name", c.name.as_str())
        .optional("working_directory", c.working_directory.as_deref().map(yq))
        .text("build", argv.join(" "))
        .render(BUILD_STEP_TEMPLATE)
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

    /// A quote in any value stays inside its YAML scalar or shell word: nothing a config holds
    /// can end one early.
    #[test]
    fn quotes_in_values_stay_quoted() {
        let opts = WorkflowOptions {
            components: vec![WorkflowComponent {
                name: "api".into(),
                paths: vec!["it's/**".into()],
                build: vec!["echo".into(), "it's".into(), "$HOME".into()],
                working_directory: Some("sub dir/it's".into()),
                artifact: Some("out dir/it's".into()),
            }],
            branch: "release/it's".into(),
            repo_config: Some("deploy/it's.toml".into()),
            environment: Some("it's".into()),
            ..WorkflowOptions::default()
        };
        let yaml = github_workflow(&opts).unwrap();
        for line in [
            "branches: ['release/it''s']",
            "environment: 'it''s'",
            "working-directory: 'sub dir/it''s'",
            r"echo 'it'\''s' '$HOME'",
            r"api) src='out dir/it'\''s' ;;",
            r"api) pats=('it'\''s/*') ;;",
        ] {
            assert!(
                yaml.lines().any(|l| l.trim() == line),
                "missing {line:?}:\n{yaml}"
            );
        }
        assert!(yaml.contains(r"[ -f 'deploy/it'\''s.toml' ]"), "{yaml}");
    }

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

//! `cutover generate github-workflow`: the workflow's options from the config (and the
//! `--fleet`/`--install-cutover` flags), and what the config lacks for one.

use super::UsageError;
use crate::config::{ComponentKind, Config};
use crate::ops::workflow;
use anyhow::Context;
use std::path::{Path, PathBuf};

/// The flags of `generate` that only the workflow reads.
#[derive(Debug, Default)]
pub struct WorkflowFlags {
    /// Target a fleet even when the config has no `[fleet]` (yet).
    pub fleet: bool,
    /// How the runner gets cutover for `fleet deploy`; none: copied from the first host.
    pub install_cutover: Option<String>,
}

impl WorkflowFlags {
    pub fn given(&self) -> bool {
        self.fleet || self.install_cutover.is_some()
    }
}

/// What the workflow needs of each component that takes an artifact, missing from the config:
/// one line per component, at its place in the file. Without `artifact` the workflow would
/// upload nothing for it and deploy without `--artifact`.
fn workflow_gaps(config: &Config) -> Vec<String> {
    config
        .components
        .iter()
        .filter(|c| !matches!(c.kind, ComponentKind::Hook(_)) && c.artifact.is_none())
        .map(|c| {
            let name = c.name.as_str();
            let place = config
                .locate_key(&["components", name])
                .unwrap_or_else(|| format!("{}: components.{name}", config.path.display()));
            let missing = if c.build.is_empty() {
                "no `artifact` and no `build`"
            } else {
                "no `artifact`"
            };
            format!(
                "{place}: {missing}: the workflow would deploy nothing for it; set `artifact` \
                 to the file or directory CI uploads (relative to the repository root) and \
                 `build` to the command that makes it"
            )
        })
        .collect()
}

/// Prints the gaps as errors; `true` when there were any.
pub fn refuse_gaps(config: &Config) -> bool {
    let gaps = workflow_gaps(config);
    for gap in &gaps {
        eprintln!("error: {}", super::output::printable_lines(gap));
    }
    if !gaps.is_empty() {
        eprintln!("no workflow generated: it would not deploy every component");
    }
    !gaps.is_empty()
}

/// The workflow for `config`, which `located` names (the path as given, or the default); a
/// fleet one when the config has `[fleet]` or `flags` ask for it.
pub fn github_workflow(
    config: &Config,
    located: &Path,
    server_config: &Path,
    flags: &WorkflowFlags,
) -> anyhow::Result<String> {
    let components = config
        .components
        .iter()
        .map(|c| workflow::WorkflowComponent {
            name: c.name.to_string(),
            paths: c.paths.clone(),
            build: c.build.clone(),
            working_directory: None,
            artifact: match c.kind {
                ComponentKind::Hook(_) => None,
                _ => c.artifact.clone(),
            },
        })
        .collect();
    let server_config = server_config
        .to_str()
        .with_context(|| format!("{} is not UTF-8", server_config.display()))?;
    let mut options = workflow::WorkflowOptions {
        components,
        server_config: server_config.to_owned(),
        ..workflow::WorkflowOptions::default()
    };
    if config.fleet.is_some() || flags.given() {
        options.fleet = Some(fleet_target(config, located, flags)?);
        // The runner runs `cutover --config` with this file, from the checkout's root.
        options.repo_config = Some(repo_path(located)?);
    }
    Ok(workflow::github_workflow(&options)?)
}

fn fleet_target(
    config: &Config,
    located: &Path,
    flags: &WorkflowFlags,
) -> Result<workflow::FleetTarget, UsageError> {
    let fleet = config.fleet.as_ref();
    let cutover = match (&flags.install_cutover, fleet) {
        (Some(command), _) => workflow::RunnerCutover::Install(command.clone()),
        (None, Some(fleet)) => workflow::RunnerCutover::CopyFrom {
            host: fleet.hosts[0].clone(),
            binary: fleet.remote_binary.clone(),
        },
        (None, None) => {
            return Err(UsageError(format!(
                "the fleet workflow copies cutover to the runner from the first [fleet] host, \
                 and {} has no [fleet]: add one, or give --install-cutover COMMAND",
                located.display()
            )))
        }
    };
    Ok(workflow::FleetTarget {
        ssh: fleet.map_or_else(|| vec!["ssh".into()], |f| f.ssh.clone()),
        cutover,
    })
}

/// `located` from the repository's root: the nearest directory above it holding `.git`, or
/// else the current directory (`generate` runs in the repository).
fn repo_path(located: &Path) -> anyhow::Result<String> {
    let file = std::path::absolute(located)
        .with_context(|| format!("cannot resolve {}", located.display()))?;
    let root: PathBuf = match file.ancestors().skip(1).find(|d| d.join(".git").exists()) {
        Some(root) => root.to_owned(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let inside = file.strip_prefix(&root).map_err(|_| {
        UsageError(format!(
            "{} is outside the repository ({}): the workflow runs `cutover --config` with the \
             config in the checkout; run `generate` in the repository",
            located.display(),
            root.display()
        ))
    })?;
    let inside = inside
        .to_str()
        .with_context(|| format!("{} is not UTF-8", inside.display()))?;
    Ok(inside.to_owned())
}

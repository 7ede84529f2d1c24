//! The deploy job's steps when the workflow targets a fleet (`templates/fleet-steps.yml`), and
//! the checks of what they are given: the `[fleet] ssh` argv must leave host key checking to
//! the workflow's `~/.ssh/config`.

use super::fill::Fill;
use super::{relative, sq, text, WorkflowError};

/// The fleet's steps, with `%{...}` placeholders (see `fill.rs`).
const FLEET_STEPS_TEMPLATE: &str = include_str!("templates/fleet-steps.yml");

/// ssh's options that take a value (from its getopt string), to read an argv as ssh does.
const SSH_VALUE_OPTIONS: &str = "bceilmopBDEFIJLOPQRSwW";
/// `-o` options that decide which host keys are trusted: the workflow sets them itself, and a
/// command-line `-o` would beat its `~/.ssh/config`.
const HOST_KEY_OPTIONS: [&str; 4] = [
    "stricthostkeychecking",
    "userknownhostsfile",
    "globalknownhostsfile",
    "knownhostscommand",
];

/// A workflow that deploys to the hosts of the repository config's `[fleet]`: the runner runs
/// `cutover --config <repo_config> fleet deploy`.
#[derive(Debug, Clone)]
pub struct FleetTarget {
    /// `[fleet] ssh` of the repository's config (`["ssh"]` by default): `fleet deploy` runs it,
    /// so it is checked here, and the copy of cutover uses it too.
    pub ssh: Vec<String>,
    pub cutover: RunnerCutover,
}

/// How the runner gets the `cutover` that runs `fleet deploy`.
#[derive(Debug, Clone)]
pub enum RunnerCutover {
    /// Copied over ssh from a fleet host (the first of `[fleet] hosts`): `command -v binary`
    /// there (`[fleet] remote_binary`), then its bytes. The hosts run the same binary, so this
    /// needs no download source; it assumes the runner's OS and architecture are the hosts'.
    CopyFrom { host: String, binary: String },
    /// A shell command run on the runner, before the SSH key is written, that puts `cutover`
    /// on PATH or in `$RUNNER_TEMP/bin` (a download, `cargo install`, ...).
    Install(String),
}

/// The steps (a YAML block at the steps' indent).
pub(super) fn fleet_steps(
    fleet: &FleetTarget,
    repo_config: Option<&str>,
    artifact_sources: &[String],
) -> Result<String, WorkflowError> {
    let repo_config = repo_config.ok_or(WorkflowError::FleetWithoutConfig)?;
    relative("repo_config", repo_config)?;
    check_ssh(&fleet.ssh)?;
    let (install, copy_from, binary) = match &fleet.cutover {
        RunnerCutover::Install(command) => {
            text("install_cutover", command)?;
            (Some(sq(command)), None, None)
        }
        RunnerCutover::CopyFrom { host, binary } => {
            text("fleet.hosts[0]", host)?;
            text("fleet.remote_binary", binary)?;
            (None, Some(sq(host)), Some(sq(binary)))
        }
    };
    let ssh: Vec<String> = fleet.ssh.iter().map(|a| sq(a)).collect();
    Ok(Fill::default()
        .optional("install", install)
        .optional("copy_from", copy_from)
        .optional("binary", binary)
        .text("ssh", ssh.join(" "))
        .text("repo_config", sq(repo_config))
        .flag("artifacts", !artifact_sources.is_empty())
        .lines("artifact_sources", artifact_sources.iter().cloned())
        .render(FLEET_STEPS_TEMPLATE))
}

/// Refuses an ssh argv that would bypass the workflow's SSH settings: `-F` (ssh would not read
/// `~/.ssh/config`, where the key, the known hosts and `StrictHostKeyChecking yes` are) or a
/// host key option given with `-o` (it would win over that file).
fn check_ssh(argv: &[String]) -> Result<(), WorkflowError> {
    let refuse = |arg: &str, why| {
        Err(WorkflowError::FleetSsh {
            arg: arg.to_owned(),
            why,
        })
    };
    match argv.first() {
        None => return refuse("", "no ssh program"),
        Some(program) => text("fleet.ssh[0]", program)?,
    }
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        text("fleet.ssh", arg)?;
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty() && *f != "-") else {
            continue;
        };
        // Flags may be bundled (`-qF file`); the first one that takes a value ends the word,
        // its value being the rest of the word or else the next argument.
        for (at, flag) in flags.char_indices() {
            if !SSH_VALUE_OPTIONS.contains(flag) {
                continue;
            }
            let rest = &flags[at + flag.len_utf8()..];
            let value = if rest.is_empty() {
                let next = args.next().map(String::as_str).unwrap_or_default();
                text("fleet.ssh", next)?;
                next
            } else {
                rest
            };
            if flag == 'F' {
                return refuse(
                    arg,
                    "-F replaces the ~/.ssh/config where the workflow puts its key, known hosts \
                     and StrictHostKeyChecking yes; give host aliases in the DEPLOY_SSH_CONFIG \
                     secret instead",
                );
            }
            let key = value
                .split(|c: char| c == '=' || c.is_whitespace())
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if flag == 'o' && HOST_KEY_OPTIONS.contains(&key.as_str()) {
                return refuse(
                    value,
                    "the workflow decides which host keys are trusted (DEPLOY_KNOWN_HOSTS, \
                     StrictHostKeyChecking yes); a -o here would override it",
                );
            }
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn ssh_options_that_bypass_host_key_checking_are_refused() {
        for bad in [
            &["ssh", "-F", "ci_ssh_config"][..],
            &["ssh", "-Fci_ssh_config"],
            &["ssh", "-qF", "x"],
            &["ssh", "-o", "StrictHostKeyChecking=no"],
            &["ssh", "-oStrictHostKeyChecking=accept-new"],
            &["ssh", "-o", "userknownhostsfile /dev/null"],
            &["ssh", "-v", "-o", "KnownHostsCommand=/bin/echo"],
            &[],
        ] {
            assert!(
                matches!(check_ssh(&argv(bad)), Err(WorkflowError::FleetSsh { .. })),
                "{bad:?} accepted"
            );
        }
        for good in [
            &["ssh"][..],
            &["ssh", "-p", "2222", "-J", "bastion"],
            // The value of -o here is not an option of its own.
            &["ssh", "-o", "ProxyJump=-F"],
            &["ssh", "-i", "-F"],
            &["/usr/bin/ssh", "-4", "-oServerAliveInterval=5"],
        ] {
            assert_eq!(check_ssh(&argv(good)), Ok(()), "{good:?} refused");
        }
    }
}

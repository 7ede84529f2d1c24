//! The command line: argument types, settings, and one function per subcommand.
//!
//! `args.rs` holds the clap types; `run` here dispatches each subcommand to the module that
//! carries it out.

mod args;
mod artifacts;
mod client;
mod demo;
mod drift;
mod export;
mod fleet;
mod fleet_view;
mod infra;
mod lifecycle;
mod operate;
mod output;
mod pipeline;
mod progress;
mod services;
mod views;
mod workflow;

pub use args::Cli;

use crate::config::Config;
use crate::protocol::*;
use args::{Command, EnvCommand, ExportCommand, ServicesCommand};
use clap::Parser;
use client::Client;
use std::process::ExitCode;

/// Exit codes that mean something to scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// The operation ran and failed (deploy failed or rolled back, daemon refused).
    Failed = 1,
    /// Bad usage or configuration: nothing was attempted.
    Usage = 2,
    /// Ctrl-C: the CLI stopped following (the daemon goes on); 128 + SIGINT, as shells report.
    Interrupted = 130,
    /// Stdout was closed by its reader (`| head`): 128 + SIGPIPE, what the shell reports for
    /// any tool ended by a closed pipe.
    BrokenPipe = 141,
}

/// Bad usage found by the CLI before anything was sent: exit 2, like a config error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { Exit::Usage as u8 } else { 0 });
        }
    };
    init_tracing(matches!(cli.command, Command::Serve), cli.color);
    // Read before any thread starts: the socket-activation environment is ours alone.
    let inherited = crate::listener::Inherited::from_env();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Failed as u8);
        }
    };
    let result = runtime.block_on(run(cli, inherited));
    match result {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(e) if is_broken_pipe(&e) => ExitCode::from(Exit::BrokenPipe as u8),
        Err(e) => {
            eprintln!("error: {}", output::printable_lines(&error_text(&e)));
            let usage = e
                .chain()
                .any(|c| c.is::<crate::config::ConfigError>() || c.is::<UsageError>());
            ExitCode::from(if usage { Exit::Usage } else { Exit::Failed } as u8)
        }
    }
}

/// Whether the command failed because its stdout reader went away (`cutover history | head`).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .and_then(|j| j.io_error_kind())
                .is_some_and(|k| k == std::io::ErrorKind::BrokenPipe)
    })
}

/// `println!` panics when stdout is a closed pipe. The daemon ignores SIGPIPE (sockets), so
/// commands see EPIPE instead of dying of the signal: end them as quietly as the signal would,
/// with the exit code a shell reports for it.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(Exit::BrokenPipe as i32);
        }
        default(info);
    }));
}

/// An error and its causes on one line, each cause once: many errors already include their
/// source's text in their own message, so printing every link of the chain would repeat it.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// A public socket that cannot be bound is a problem of one line in the config: name it.
fn locate_bind_error(config: &Config, e: anyhow::Error) -> anyhow::Error {
    let Some(crate::listener::ListenerError::Bind {
        component, addr, ..
    }) = e
        .chain()
        .find_map(|c| c.downcast_ref::<crate::listener::ListenerError>())
    else {
        return e;
    };
    let key: Vec<&str> = match config.component(component) {
        Some(c) if c.listen == Some(*addr) => vec!["components", component, "listen"],
        _ if config.daemon.admin_listen == Some(*addr) => vec!["daemon", "admin_listen"],
        _ => return e,
    };
    match config.locate_key(&key) {
        Some(location) => e.context(location),
        None => e,
    }
}

/// Log lines go to stderr: coloured on a terminal (unless `NO_COLOR` is set) or with `--color`,
/// plain text otherwise, so a log file or the journal gets no escape sequences.
fn init_tracing(daemon: bool, color: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let default = if daemon { "info" } else { "warn" };
    let filter = EnvFilter::try_from_env("CUTOVER_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = color || (std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
}

async fn run(cli: Cli, inherited: crate::listener::Inherited) -> anyhow::Result<Exit> {
    match &cli.command {
        Command::Demo { keep } => return demo::run(*keep).await,
        Command::Init { dir, force } => return operate::init(dir, *force),
        Command::Generate {
            what,
            server_config,
            fleet,
            install_cutover,
        } => {
            let flags = workflow::WorkflowFlags {
                fleet: *fleet,
                install_cutover: install_cutover.clone(),
            };
            return operate::generate(cli.config.as_deref(), *what, server_config, &flags);
        }
        _ => {}
    }
    let path = Config::locate(cli.config.as_deref());
    let config = Config::load(&path)?;
    let client = Client::new(&config.daemon.control_socket).comparing(&config);
    if reads_config_without_daemon(&cli.command) {
        client.compare_config().await;
    }
    match cli.command {
        Command::Serve => {
            for warning in &config.warnings {
                tracing::warn!("{warning}");
            }
            crate::edge::install(config.edge.clone());
            crate::daemon::serve(config.clone(), inherited)
                .await
                .map_err(|e| locate_bind_error(&config, e))?;
            Ok(Exit::Ok)
        }
        Command::Deploy {
            components,
            release,
            artifacts,
            json,
            who,
            no_upload,
            hold,
            hold_timeout,
        } => {
            let mut artifacts = artifacts::parse(&config, &components, &artifacts)
                .map_err(|e| UsageError(e.to_string()))?;
            pipeline::check_deploy(&config, &components, &release, &artifacts, !no_upload)?;
            // A stopped daemon would take the upload into its socket buffer and never answer.
            client.ping().await?;
            if !no_upload {
                for path in artifacts.values_mut() {
                    *path = artifacts::upload(&client, path).await?;
                }
            }
            let request = DeployRequest {
                components,
                release,
                artifacts,
                who: who.unwrap_or_else(default_who),
                hold_ms: hold.then_some(hold_timeout.as_millis() as u64),
            };
            pipeline::stream(&client, "/v1/deploy", &request, json).await
        }
        Command::Reload { who } => {
            lifecycle::reload(&client, who.unwrap_or_else(default_who)).await
        }
        Command::Upgrade {
            binary,
            timeout,
            who,
        } => lifecycle::upgrade(&client, binary, timeout, who.unwrap_or_else(default_who)).await,
        Command::Abort { component, who } => {
            pipeline::abort(&client, &component, who.unwrap_or_else(default_who)).await
        }
        Command::Proceed { component, who } => {
            pipeline::proceed(&client, &component, who.unwrap_or_else(default_who)).await
        }
        Command::Rollback {
            component,
            to,
            json,
            who,
        } => {
            client.ping().await?;
            let request = RollbackRequest {
                component,
                to,
                who: who.unwrap_or_else(default_who),
            };
            pipeline::stream(&client, "/v1/rollback", &request, json).await
        }
        Command::Status { json } => views::status(&config, &client, json).await,
        Command::Certs { json } => views::certs(&config, &client, json).await,
        Command::Releases { component, json } => {
            views::releases(&config, &client, &component, json).await
        }
        Command::History { json, limit } => views::history(&config, &client, limit, json).await,
        Command::Check { json } => infra::check(&config, &client, json).await,
        Command::Services { command } => match command {
            ServicesCommand::Up { services, timeout } => {
                services::up(&config, &services, timeout).await
            }
            ServicesCommand::Status { json } => services::status(&config, json).await,
            ServicesCommand::Logs {
                service,
                follow,
                lines,
            } => services::logs(&config, &service, follow, lines).await,
            ServicesCommand::Recreate { service, yes, who } => {
                services::recreate(&config, &service, yes, who.unwrap_or_else(default_who)).await
            }
        },
        Command::Migrate { target, command } => infra::migrate(&config, &target, &command).await,
        Command::Changed { base, head, json } => operate::changed(&config, &base, &head, json),
        Command::Env {
            command: EnvCommand::Check { json },
        } => operate::env_check(&config, json),
        Command::Validate => operate::validate(&config),
        Command::Fleet { command } => fleet::run(&config, command, default_who).await,
        Command::Export {
            command: ExportCommand::Kubernetes(args),
        } => export::kubernetes(&config, &args),
        Command::Logs {
            component,
            release,
            follow,
            lines,
        } => {
            operate::logs(
                &config,
                &client,
                &component,
                release.as_deref(),
                follow,
                lines,
            )
            .await
        }
        Command::Demo { .. } | Command::Init { .. } | Command::Generate { .. } => {
            unreachable!("handled above")
        }
    }
}

/// Commands that read the config but never ask the daemon anything: they ask it once which
/// config it runs (the others learn it from the daemon's answers).
fn reads_config_without_daemon(command: &Command) -> bool {
    matches!(
        command,
        Command::Validate
            | Command::Env { .. }
            | Command::Changed { .. }
            | Command::Migrate { .. }
            | Command::Services { .. }
    )
}

fn default_who() -> String {
    if let Ok(actor) = std::env::var("GITHUB_ACTOR") {
        return format!("github:{actor}");
    }
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .or_else(|| {
            // No login variables (cron, `env -i`, some containers): the passwd entry of our uid.
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|user| user.name)
        })
        .unwrap_or_else(|| "unknown".into())
}

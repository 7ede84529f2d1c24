//! The command line: argument types, settings, and one function per subcommand.

mod client;
mod demo;
mod drift;
mod infra;
mod operate;
mod output;
mod pipeline;
mod progress;
mod services;

use crate::config::Config;
use crate::protocol::*;
use crate::store::Store;
use anyhow::Context;
use clap::{Parser, Subcommand};
use client::{Client, ClientError};
use std::collections::BTreeMap;
use std::path::PathBuf;
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

#[derive(Parser, Debug)]
#[command(
    name = "cutover",
    version,
    about = "Zero-downtime staged deploys to plain Linux servers"
)]
pub struct Cli {
    /// Config file [default: $CUTOVER_CONFIG, then ./cutover.toml]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Colour log lines even when stderr is not a terminal
    #[arg(long, global = true)]
    color: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon in the foreground: owns the public sockets, proxies, supervises releases
    Serve,
    /// Deploy a release of one or more components (`all` = every component, in order)
    Deploy {
        /// Components to deploy, or `all`
        #[arg(required = true, value_name = "COMPONENT")]
        components: Vec<String>,
        /// Release id (e.g. a commit SHA)
        #[arg(long)]
        release: String,
        /// Artifact to deploy: PATH for a single component, or COMPONENT=PATH (hooks need none)
        #[arg(long = "artifact", value_name = "[COMPONENT=]PATH")]
        artifacts: Vec<String>,
        /// One JSON event per line instead of text
        #[arg(long)]
        json: bool,
        /// Who is deploying, for the history [default: $GITHUB_ACTOR or $USER]
        #[arg(long)]
        who: Option<String>,
        /// Let the daemon read the artifact paths itself instead of sending the files (they
        /// must then be readable by the daemon's user)
        #[arg(long)]
        no_upload: bool,
    },
    /// Show what is active and serving
    Status {
        #[arg(long)]
        json: bool,
    },
    /// List the kept releases of a component
    Releases {
        component: String,
        #[arg(long)]
        json: bool,
    },
    /// Show recent pipelines and deploys
    History {
        #[arg(long)]
        json: bool,
        /// How many entries
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
    },
    /// Stop the deploy in progress on a component, safely: before the switch the new instance
    /// is stopped; after it, traffic swaps back to the warm old release. Stages not started are
    /// skipped.
    Abort {
        component: String,
        /// Who is aborting, for the history [default: $GITHUB_ACTOR or $USER]
        #[arg(long)]
        who: Option<String>,
    },
    /// Move a component back to its previous release (or --to a kept one)
    Rollback {
        component: String,
        #[arg(long, value_name = "RELEASE")]
        to: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        who: Option<String>,
    },
    /// Check services, components and disk; exit 1 if anything required is unhealthy
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Infrastructure services under Docker Compose: up, status, logs, recreate
    Services {
        #[command(subcommand)]
        command: ServicesCommand,
    },
    /// Database migrations (golang-migrate compatible)
    Migrate {
        #[command(flatten)]
        target: infra::MigrateTarget,
        #[command(subcommand)]
        command: infra::MigrateCommand,
    },
    /// Scaffold cutover.toml, .env.production.example, systemd units and a GitHub workflow
    Init {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Overwrite files that exist
        #[arg(long)]
        force: bool,
    },
    /// Print a systemd unit, socket units, the GitHub workflow or a documented config
    Generate {
        #[arg(value_enum)]
        what: operate::Generated,
        /// Where the config lives on the server: the unit's and the workflow's `--config`
        #[arg(long, value_name = "PATH", default_value = operate::SERVER_CONFIG)]
        server_config: PathBuf,
    },
    /// Components whose files changed between two commits (what CI should deploy)
    Changed {
        #[arg(long)]
        base: String,
        #[arg(long)]
        head: String,
        #[arg(long)]
        json: bool,
    },
    /// Environment files: `cutover env check`
    Env {
        #[command(subcommand)]
        command: EnvCommand,
    },
    /// Check the config and everything it points at; exit 1 on any error
    Validate,
    /// Show an instance's output (the serving one by default)
    Logs {
        component: String,
        #[arg(long)]
        release: Option<String>,
        /// Keep printing new lines, across switches to new instances
        #[arg(short, long)]
        follow: bool,
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
    },
    /// Run the demo: a daemon on embedded defaults in a temp dir, load, deploys and a rollback
    Demo {
        /// Keep the temp dir afterwards
        #[arg(long)]
        keep: bool,
    },
}

#[derive(Subcommand, Debug)]
enum EnvCommand {
    /// Validate env files against what components require (values are shown masked)
    Check {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ServicesCommand {
    /// `compose up -d --no-recreate` the listed services (or all with `compose`), then wait
    /// until each passes cutover's check and its container's healthcheck
    Up {
        services: Vec<String>,
        /// How long to wait for all of them to be ready
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Each service's container, state, health and uptime beside cutover's own check
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The container's output (`compose logs`)
    Logs {
        service: String,
        /// Keep printing new lines
        #[arg(short, long)]
        follow: bool,
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
    },
    /// Replace the service's container with one from the current compose file (restarts it;
    /// volumes are kept). Asks first; recorded in history
    Recreate {
        service: String,
        /// Do not ask
        #[arg(long)]
        yes: bool,
        /// Who is doing it, for the history [default: $GITHUB_ACTOR or $USER]
        #[arg(long)]
        who: Option<String>,
    },
}

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
        } => return operate::generate(cli.config.as_deref(), *what, server_config),
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
        } => {
            let mut artifacts = parse_artifacts(&config, &components, &artifacts)
                .map_err(|e| UsageError(e.to_string()))?;
            pipeline::check_deploy(&config, &components, &release, &artifacts, !no_upload)?;
            // A stopped daemon would take the upload into its socket buffer and never answer.
            client.ping().await?;
            if !no_upload {
                for path in artifacts.values_mut() {
                    *path = upload(&client, path).await?;
                }
            }
            let request = DeployRequest {
                components,
                release,
                artifacts,
                who: who.unwrap_or_else(default_who),
            };
            pipeline::stream(&client, "/v1/deploy", &request, json).await
        }
        Command::Abort { component, who } => {
            pipeline::abort(&client, &component, who.unwrap_or_else(default_who)).await
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
        Command::Status { json } => {
            let (status, text): (StatusResponse, fn(&StatusResponse) -> String) =
                match client.get::<StatusResponse>("/v1/status").await {
                    Ok(status) => (status, output::status),
                    Err(e) if e.is_unreachable() || e.is_not_answering() => {
                        let status = match offline_store(&config, &e)? {
                            Some(store) => crate::status::offline(&config, &store)?,
                            None => crate::status::offline_empty(&config),
                        };
                        let text = if e.is_not_answering() {
                            output::status_not_answering
                        } else {
                            output::status
                        };
                        (status, text)
                    }
                    Err(e) => return Err(e.into()),
                };
            output::print(json, &status, text)?;
            Ok(Exit::Ok)
        }
        Command::Releases { component, json } => {
            let releases = match client
                .get::<ReleasesResponse>(&format!("/v1/releases/{component}"))
                .await
            {
                Ok(releases) => releases,
                Err(e) if e.is_unreachable() || e.is_not_answering() => {
                    let store = offline_store(&config, &e)?
                        .ok_or_else(|| crate::store::StoreError::Missing(db_path(&config)))?;
                    crate::status::releases(&store, &config, &component)
                        .map_err(anyhow::Error::msg)?
                }
                Err(e) => return Err(e.into()),
            };
            output::print(json, &releases, output::releases)?;
            Ok(Exit::Ok)
        }
        Command::History { json, limit } => {
            let history = match client
                .get::<HistoryResponse>(&format!("/v1/history?limit={limit}"))
                .await
            {
                Ok(history) => history,
                Err(e) if e.is_unreachable() || e.is_not_answering() => {
                    let store = offline_store(&config, &e)?
                        .ok_or_else(|| crate::store::StoreError::Missing(db_path(&config)))?;
                    crate::status::history(&store, limit)?
                }
                Err(e) => return Err(e.into()),
            };
            output::print(json, &history, output::history)?;
            Ok(Exit::Ok)
        }
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

fn db_path(config: &Config) -> PathBuf {
    crate::store::db_path(&config.daemon.data_dir)
}

/// The state database for the offline view of a read-only command, after `why` the daemon could
/// not answer (said on stderr when a daemon runs but does not answer). `None`: nothing has been
/// deployed yet. A database this user may not read is an error, never "nothing deployed".
fn offline_store(config: &Config, why: &ClientError) -> anyhow::Result<Option<Store>> {
    if why.is_not_answering() {
        eprintln!(
            "warning: {}; showing the last committed state from the database",
            output::printable(&why.to_string())
        );
    }
    let path = db_path(config);
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => anyhow::bail!(
            "permission denied on {}: run as the cutover user or join its group",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        _ => {}
    }
    match Store::open_read_only(&config.daemon.data_dir) {
        Ok(store) => Ok(Some(store)),
        Err(crate::store::StoreError::Missing(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `--artifact PATH` (one component) or `--artifact COMPONENT=PATH`, made absolute.
fn parse_artifacts(
    config: &Config,
    components: &[String],
    given: &[String],
) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let targets: Vec<String> = if components.iter().any(|c| c == "all") {
        config
            .components
            .iter()
            .map(|c| c.name.to_string())
            .collect()
    } else {
        components.to_vec()
    };
    let mut artifacts = BTreeMap::new();
    for item in given {
        let (name, path) = match item.split_once('=') {
            Some((name, path)) if config.component(name).is_some() => (name.to_owned(), path),
            _ => match targets.as_slice() {
                [only] => (only.clone(), item.as_str()),
                _ => anyhow::bail!(
                    "--artifact {item}: with several components, write COMPONENT=PATH (components: {})",
                    targets.join(", ")
                ),
            },
        };
        let path =
            std::path::absolute(path).with_context(|| format!("bad artifact path {path}"))?;
        if artifacts.insert(name.clone(), path).is_some() {
            anyhow::bail!("two artifacts given for {name}");
        }
    }
    Ok(artifacts)
}

/// Sends one artifact to the daemon: a file as it is, a directory as a tar archive (links kept
/// as links, for the daemon to check).
async fn upload(client: &Client, path: &std::path::Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            anyhow::anyhow!("artifact {} does not exist", path.display())
        }
        _ => anyhow::anyhow!("cannot read artifact {}: {e}", path.display()),
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "artifact".into());
    if meta.is_dir() {
        let tar = tempfile::NamedTempFile::new().context("cannot create a temporary file")?;
        let dir = path.to_owned();
        let file = tar.reopen()?;
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
            builder.follow_symlinks(false);
            builder.append_dir_all(".", &dir)?;
            builder
                .into_inner()?
                .into_inner()
                .map_err(|e| e.into_error())?
                .sync_all()
        })
        .await??;
        return Ok(client
            .upload(tar.path(), &format!("{name}.tar"), 0o644)
            .await?);
    }
    Ok(client
        .upload(path, &name, meta.permissions().mode() & 0o777)
        .await?)
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

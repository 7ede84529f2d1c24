//! The command line's clap types: every subcommand with its flags and their help text.

use super::{export, fleet, infra, operate};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "cutover",
    version,
    about = "Zero-downtime staged deploys to plain Linux servers"
)]
pub struct Cli {
    /// Config file [default: $CUTOVER_CONFIG, then ./cutover.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    /// Colour log lines even when stderr is not a terminal
    #[arg(long, global = true)]
    pub(super) color: bool,
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Subcommand, Debug)]
pub(super) enum Command {
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
        /// Once the new release is healthy (beside the old one, which still serves everything),
        /// wait for `cutover proceed COMPONENT` before switching; `cutover abort`, the timeout,
        /// or this command going away stops the new instance instead
        #[arg(long)]
        hold: bool,
        /// The longest a `--hold` waits
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, requires = "hold")]
        hold_timeout: std::time::Duration,
    },
    /// Show what is active and serving
    Status {
        #[arg(long)]
        json: bool,
    },
    /// List the https listener's certificates: expiry, renewal and the last error
    Certs {
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
    /// Re-read the config and apply it to the running daemon without dropping a request
    /// (also SIGHUP, `systemctl reload cutover`)
    Reload {
        /// Who is reloading, for the history [default: $GITHUB_ACTOR or $USER]
        #[arg(long)]
        who: Option<String>,
    },
    /// Replace the running daemon by a new one (a newer binary) without closing a socket or
    /// restarting an application: it hands over its sockets and instances, then exits
    Upgrade {
        /// The new binary [default: the one the daemon was started from]
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// How long the new daemon gets to be ready before it is killed (at most 50s)
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Who is upgrading, for the log [default: $GITHUB_ACTOR or $USER]
        #[arg(long)]
        who: Option<String>,
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
    /// Release a deploy held before its switch (`cutover deploy --hold`): it switches now
    Proceed {
        component: String,
        /// Who releases it, for the history [default: $GITHUB_ACTOR or $USER]
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
        /// github-workflow: deploy to the hosts of `[fleet]` with `cutover fleet deploy` run on
        /// the runner (the default when the config has `[fleet]`)
        #[arg(long)]
        fleet: bool,
        /// github-workflow, fleet: a shell command that puts `cutover` on the runner's PATH or
        /// in $RUNNER_TEMP/bin [default: copy it over ssh from the first `[fleet]` host]
        #[arg(long, value_name = "COMMAND")]
        install_cutover: Option<String>,
    },
    /// One deploy across several hosts over SSH: `cutover fleet deploy|status|rollback|history`
    Fleet {
        #[command(subcommand)]
        command: fleet::FleetCommand,
    },
    /// Manifests to run a component elsewhere: `cutover export kubernetes COMPONENT`
    Export {
        #[command(subcommand)]
        command: ExportCommand,
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
pub(super) enum ExportCommand {
    /// A Deployment and a Service (YAML) that roll out a process component as cutover does:
    /// probes from `health`, maxUnavailable 0, minReadySeconds from `stabilize`, graceful stop
    Kubernetes(export::KubernetesArgs),
}

#[derive(Subcommand, Debug)]
pub(super) enum EnvCommand {
    /// Validate env files against what components require (values are shown masked)
    Check {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum ServicesCommand {
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

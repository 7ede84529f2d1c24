//! `cutover fleet ...`: the operator's side (deploy, status, rollback, history) and the two
//! commands the operator's side runs on each host over ssh (receive, lock). See `crate::fleet`.

use super::fleet_view::FleetView;
use super::output::{self, printable, table};
use super::{artifacts, pipeline, Exit, UsageError};
use crate::config::{Config, FleetConfig};
use crate::fleet::events::Reporter;
use crate::fleet::history::History;
use crate::fleet::plan::RunOutcome;
use crate::fleet::run::{DeployRequest, RunSummary};
use clap::Subcommand;
use std::io::Write;

#[derive(Subcommand, Debug)]
pub enum FleetCommand {
    /// Deploy to every host of `[fleet]`: upload, then the canary wave, then waves of
    /// max_parallel, each health-gated and stabilized by its host (with strategy =
    /// "all_healthy_then_switch": every host at once, switched only when all are healthy);
    /// if a host fails, every host this run moved goes back to its old release
    Deploy {
        /// Components to deploy, or `all`
        #[arg(required = true)]
        components: Vec<String>,
        /// Release id (e.g. a commit SHA)
        #[arg(long)]
        release: String,
        /// Artifact: PATH for a single component, or COMPONENT=PATH
        #[arg(long = "artifact", value_name = "[COMPONENT=]PATH")]
        artifacts: Vec<String>,
        /// One JSON event per line (each with its host) instead of text
        #[arg(long)]
        json: bool,
        /// Keep the hosts that finished when another fails (no cross-host rollback)
        #[arg(long)]
        no_rollback: bool,
        /// Who is deploying, for the history [default: $GITHUB_ACTOR or $USER]
        #[arg(long)]
        who: Option<String>,
    },
    /// Each host: daemon up?, the release each component serves, its health; and whether the
    /// fleet is mixed
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Move a component back on every host at once: to each host's previous release, or --to
    /// a kept one
    Rollback {
        component: String,
        #[arg(long, value_name = "RELEASE")]
        to: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        who: Option<String>,
    },
    /// Recent fleet runs (from this machine's fleet history) with each host's outcome
    History {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// (Run on a host by `fleet deploy`.) Store the artifact read from stdin if its sha256 is
    /// the one given; print where it is
    #[command(hide = true)]
    Receive {
        #[arg(long)]
        sha256: String,
        #[arg(long)]
        executable: bool,
        /// Only say whether it is already there
        #[arg(long)]
        check: bool,
    },
    /// (Run on a host by `fleet deploy`.) Hold this host's fleet lock until stdin closes
    #[command(hide = true)]
    Lock {
        #[arg(long)]
        run: String,
    },
}

pub(super) async fn run(
    config: &Config,
    command: FleetCommand,
    default_who: impl Fn() -> String,
) -> anyhow::Result<Exit> {
    match command {
        FleetCommand::Receive {
            sha256,
            executable,
            check,
        } => {
            let received = crate::fleet::receive::receive(
                &sha256,
                executable,
                check,
                std::io::stdin().lock(),
            )?;
            println!("{}", serde_json::to_string(&received)?);
            Ok(Exit::Ok)
        }
        FleetCommand::Lock { run } => {
            use crate::fleet::host_lock::{hold, LockError, HELD_ELSEWHERE};
            match hold(
                &config.daemon.data_dir,
                &run,
                &mut std::io::stdout().lock(),
                std::io::stdin().lock(),
            ) {
                Ok(()) => Ok(Exit::Ok),
                Err(e @ LockError::Held(_)) => {
                    eprintln!("cutover: {e}");
                    std::process::exit(HELD_ELSEWHERE)
                }
                Err(e) => Err(e.into()),
            }
        }
        FleetCommand::Deploy {
            components,
            release,
            artifacts,
            json,
            no_rollback,
            who,
        } => {
            let fleet = fleet_of(config)?;
            let artifacts = artifacts::parse(config, &components, &artifacts)
                .map_err(|e| UsageError(e.to_string()))?;
            pipeline::check_deploy(config, &components, &release, &artifacts, true)?;
            let components = if crate::protocol::names_all(&components) {
                config
                    .components
                    .iter()
                    .map(|c| c.name.to_string())
                    .collect()
            } else {
                components
            };
            let history = open_history(fleet)?;
            let request = DeployRequest {
                components,
                release,
                artifacts,
                who: who.unwrap_or_else(default_who),
                no_rollback,
            };
            let view = FleetView::new(json);
            let sink = |line| view.show(line);
            let report = Reporter::new(&sink);
            let summary = crate::fleet::run::deploy(fleet, &history, request, &report).await?;
            view.finish(&summary);
            Ok(exit_of(&summary))
        }
        FleetCommand::Rollback {
            component,
            to,
            json,
            who,
        } => {
            let fleet = fleet_of(config)?;
            if config.component(&component).is_none() {
                return Err(UsageError(format!("unknown component {component:?}")).into());
            }
            if let Some(to) = &to {
                crate::release::ReleaseId::parse(to)
                    .map_err(|e| UsageError(format!("--to: {e}")))?;
            }
            let history = open_history(fleet)?;
            let view = FleetView::new(json);
            let sink = |line| view.show(line);
            let report = Reporter::new(&sink);
            let who = who.unwrap_or_else(default_who);
            let summary = crate::fleet::rollback::rollback(
                fleet,
                &history,
                &component,
                to.as_deref(),
                &who,
                &report,
            )
            .await?;
            view.finish(&summary);
            Ok(exit_of(&summary))
        }
        FleetCommand::Status { json } => {
            let fleet = fleet_of(config)?;
            let status = crate::fleet::status::status(fleet).await?;
            let reachable = status.hosts.iter().all(|h| h.status.is_some());
            output::print(json, &status, status_text)?;
            Ok(if reachable && status.mixed.is_empty() {
                Exit::Ok
            } else {
                Exit::Failed
            })
        }
        FleetCommand::History { json, limit } => {
            let fleet = fleet_of(config)?;
            let runs = open_history(fleet)?.recent(limit)?;
            output::print(json, &runs, |runs| history_text(runs))?;
            Ok(Exit::Ok)
        }
    }
}

fn fleet_of(config: &Config) -> Result<&FleetConfig, UsageError> {
    config.fleet.as_ref().ok_or_else(|| {
        UsageError(format!(
            "{} has no [fleet] table: add one with the hosts, e.g.\n\n  [fleet]\n  hosts = [\"web1\", \"web2\"]",
            config.path.display()
        ))
    })
}

fn open_history(fleet: &FleetConfig) -> anyhow::Result<History> {
    let path = fleet.history.clone().unwrap_or_else(History::default_path);
    Ok(History::open(&path)?)
}

fn exit_of(summary: &RunSummary) -> Exit {
    match summary.outcome {
        RunOutcome::Succeeded => Exit::Ok,
        RunOutcome::RolledBack | RunOutcome::Failed => Exit::Failed,
    }
}

fn status_text(status: &crate::fleet::status::FleetStatus) -> String {
    let mut rows = Vec::new();
    for host in &status.hosts {
        let name = printable(&host.host).into_owned();
        let Some(s) = &host.status else {
            let error = host.error.as_deref().unwrap_or("no answer");
            rows.push(vec![
                name,
                "unreachable".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                printable(error).into_owned(),
            ]);
            continue;
        };
        let daemon = match &s.daemon {
            Some(d) => format!("up (pid {})", d.pid),
            None => "down".into(),
        };
        for c in &s.components {
            let health = c
                .health
                .as_ref()
                .map(|h| format!("{:?}", h.state).to_lowercase())
                .unwrap_or_else(|| "-".into());
            let deploying = c
                .deploying
                .as_ref()
                .map(|d| format!("deploying {}", d.release))
                .unwrap_or_default();
            rows.push(vec![
                name.clone(),
                daemon.clone(),
                printable(&c.name).into_owned(),
                printable(c.serving_release.as_deref().unwrap_or("none")).into_owned(),
                health,
                printable(&deploying).into_owned(),
            ]);
        }
    }
    let mut text = table(
        &["HOST", "DAEMON", "COMPONENT", "SERVING", "HEALTH", "NOTE"],
        &rows,
    );
    if status.mixed.is_empty() && status.hosts.iter().all(|h| h.status.is_some()) {
        text.push_str("every host serves the same releases\n");
    }
    for sentence in &status.mixed {
        text.push_str(&printable(sentence));
        text.push('\n');
    }
    text
}

fn history_text(runs: &[crate::fleet::history::RunRecord]) -> String {
    if runs.is_empty() {
        return "no fleet runs yet\n".into();
    }
    let mut out = Vec::new();
    for run in runs {
        let outcome = run
            .outcome
            .map(|o| o.label().to_owned())
            .unwrap_or_else(|| "no end recorded (killed or cut off?)".into());
        let _ = writeln!(
            out,
            "{}  {}  {} {}{}  by {}  {}",
            output::time(run.started_at),
            run.id,
            run.kind,
            printable(&run.components.join(",")),
            run.release
                .as_deref()
                .map(|r| format!(" -> {}", printable(r)))
                .unwrap_or_default(),
            printable(&run.who),
            outcome
        );
        if let Some(reason) = &run.reason {
            let _ = writeln!(out, "    {}", printable(reason));
        }
        for host in &run.hosts {
            let _ = writeln!(
                out,
                "    {:<12} wave {}  {}{}",
                printable(&host.host),
                host.wave,
                host.outcome.label(),
                host.detail
                    .as_deref()
                    .map(|d| format!(": {}", printable(d)))
                    .unwrap_or_default()
            );
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

//! `cutover services up | status | logs | recreate`: services under Docker Compose.
//!
//! `up` never replaces a container (`--no-recreate`): a changed compose definition is reported,
//! and applied only by `recreate`, which asks first and is recorded in history.

use super::output::{print, printable, table};
use super::Exit;
use crate::config::{ComposeRef, Config, ServiceConfig};
use crate::services::compose::{shown, Project};
use crate::services::engine::{Container, Engine};
use crate::services::stack::{self, Drift, Readiness};
use crate::services::ServiceHealth;
use anyhow::{bail, Context};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

const POLL: Duration = Duration::from_millis(500);

/// The services named (all with `compose` when none are), each with its compose setting.
fn chosen<'a>(
    config: &'a Config,
    names: &[String],
) -> anyhow::Result<Vec<(&'a ServiceConfig, &'a ComposeRef)>> {
    let services: Vec<&ServiceConfig> = if names.is_empty() {
        config
            .services
            .iter()
            .filter(|s| s.compose.is_some())
            .collect()
    } else {
        names
            .iter()
            .map(|n| {
                config.service(n).with_context(|| {
                    format!(
                        "unknown service {n:?} (configured: {})",
                        config
                            .services
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let with_compose = services
        .into_iter()
        .map(|s| match &s.compose {
            Some(c) => Ok((s, c)),
            None => bail!(
                "service {} has no `compose` setting; cutover does not know how to start it",
                s.name
            ),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if with_compose.is_empty() {
        bail!("no service has a `compose` setting");
    }
    Ok(with_compose)
}

/// Services that share a compose file and CLI run in one compose command.
type Group<'a> = Vec<(&'a ServiceConfig, &'a ComposeRef)>;

fn grouped<'a>(
    services: Vec<(&'a ServiceConfig, &'a ComposeRef)>,
) -> BTreeMap<(PathBuf, Option<Vec<String>>), Group<'a>> {
    let mut groups: BTreeMap<_, Group<'a>> = BTreeMap::new();
    for (service, compose) in services {
        groups
            .entry((compose.file.clone(), compose.command.clone()))
            .or_default()
            .push((service, compose));
    }
    groups
}

/// `compose up -d --no-recreate` per compose file, then wait until each service is ready.
pub async fn up(config: &Config, names: &[String], timeout: Duration) -> anyhow::Result<Exit> {
    let groups = grouped(chosen(config, names)?);
    let mut started = Vec::new();
    for group in groups.into_values() {
        let (project, engine) = stack::connect(group[0].1).await?;
        let mut drifted = Vec::new();
        for (service, compose) in &group {
            if let Some(container) = stack::container(&project, &engine, &compose.service).await? {
                if stack::drift(&project, &compose.service, &container)
                    .await?
                    .is_some()
                {
                    drifted.push(service.name.clone());
                }
            }
        }
        let compose_names: Vec<String> = group.iter().map(|(_, c)| c.service.clone()).collect();
        println!("running: {}", shown(&project.up_argv(&compose_names)));
        project.up(&compose_names).await?;
        for name in drifted {
            println!("{}", stack::drift_message(&name));
        }
        started.push((group, project, engine));
    }

    let deadline = Instant::now() + timeout;
    let mut failed = false;
    for (group, project, engine) in &started {
        for (service, compose) in group {
            println!("waiting for {}", service.name);
            let result =
                stack::wait_ready(service, compose, project, engine, deadline, POLL, |look| {
                    println!("  {}: {}", service.name, look_line(look))
                })
                .await;
            match result {
                Ok(look) => println!("ok    {}; {}", look.health, look.container_summary()),
                Err(look) => {
                    failed = true;
                    let why = if Instant::now() >= deadline {
                        format!(
                            " (not ready within {})",
                            humantime::format_duration(timeout)
                        )
                    } else {
                        String::new()
                    };
                    println!(
                        "FAIL  {}; {}{why}; see `cutover services logs {}`",
                        look.health,
                        look.container_summary(),
                        service.name
                    );
                }
            }
        }
    }
    Ok(if failed { Exit::Failed } else { Exit::Ok })
}

fn look_line(look: &Readiness) -> String {
    format!("{}; {}", look.health.status, look.container_summary())
}

#[derive(Serialize)]
pub struct ServicesStatus {
    pub ok: bool,
    pub services: Vec<ServiceRow>,
}

#[derive(Serialize)]
pub struct ServiceRow {
    pub name: String,
    pub required: bool,
    /// The compose service, when the service is under compose.
    pub compose_service: Option<String>,
    pub container: Option<Container>,
    pub uptime_seconds: Option<u64>,
    /// Why the container could not be looked at (no compose, no engine, ...).
    pub container_problem: Option<String>,
    /// Set when the container was created from an older compose definition.
    pub drift: Option<Drift>,
    pub check: ServiceHealth,
}

/// Every configured service: container, state, health and uptime beside cutover's own check.
pub async fn status(config: &Config, json: bool) -> anyhow::Result<Exit> {
    let mut rows = Vec::new();
    for service in &config.services {
        let check = crate::checks::check_service(service).await;
        let mut row = ServiceRow {
            name: service.name.clone(),
            required: service.required,
            compose_service: service.compose.as_ref().map(|c| c.service.clone()),
            container: None,
            uptime_seconds: None,
            container_problem: None,
            drift: None,
            check,
        };
        if let Some(compose) = &service.compose {
            if let Err(e) = look_at_container(compose, &mut row).await {
                row.container_problem = Some(e.to_string());
            }
        }
        rows.push(row);
    }
    let ok = rows.iter().all(|r| {
        !r.required
            || (r.check.ok
                && r.container_problem.is_none()
                && r.container.as_ref().is_none_or(|c| {
                    c.state == "running" && c.health.as_deref().is_none_or(|h| h == "healthy")
                }))
    });
    let report = ServicesStatus { ok, services: rows };
    print(json, &report, render_status)?;
    Ok(if ok { Exit::Ok } else { Exit::Failed })
}

async fn look_at_container(compose: &ComposeRef, row: &mut ServiceRow) -> anyhow::Result<()> {
    let (project, engine) = stack::connect(compose).await?;
    match stack::container(&project, &engine, &compose.service).await? {
        Some(container) => {
            row.uptime_seconds = container.uptime(SystemTime::now()).map(|d| d.as_secs());
            row.drift = stack::drift(&project, &compose.service, &container).await?;
            row.container = Some(container);
        }
        None => {
            row.container_problem = Some(format!(
                "no container yet: `cutover services up {}`",
                row.name
            ))
        }
    }
    Ok(())
}

fn render_status(report: &ServicesStatus) -> String {
    let rows: Vec<Vec<String>> = report
        .services
        .iter()
        .map(|r| {
            let (container, state, health) = match &r.container {
                Some(c) => (
                    format!("{} ({})", c.short_id(), c.name),
                    c.state.clone(),
                    c.health.clone().unwrap_or_else(|| "-".into()),
                ),
                None if r.compose_service.is_none() => {
                    ("not under compose".into(), "-".into(), "-".into())
                }
                None => ("-".into(), "-".into(), "-".into()),
            };
            let uptime = r
                .uptime_seconds
                .map(|s| humantime::format_duration(Duration::from_secs(s)).to_string())
                .unwrap_or_else(|| "-".into());
            let mut notes = vec![r.check.to_string()];
            notes.extend(r.container_problem.clone());
            if r.drift.is_some() {
                notes.push(stack::drift_message(&r.name));
            }
            vec![
                r.name.clone(),
                container,
                state,
                health,
                uptime,
                if r.check.ok { "ok" } else { "FAIL" }.into(),
                notes.join("; "),
            ]
        })
        .collect();
    table(
        &[
            "SERVICE",
            "CONTAINER",
            "STATE",
            "HEALTH",
            "UPTIME",
            "CHECK",
            "DETAIL",
        ],
        &rows,
    )
}

/// `compose logs [-f] SERVICE`, printed straight to this terminal.
pub async fn logs(config: &Config, name: &str, follow: bool, lines: usize) -> anyhow::Result<Exit> {
    let (_, compose) = chosen(config, &[name.to_string()])?.remove(0);
    let (project, _) = stack::connect(compose).await?;
    let argv = project.logs_argv(&compose.service, lines, follow);
    let status = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(project.file.parent().unwrap_or(std::path::Path::new(".")))
        .status()
        .await
        .with_context(|| format!("cannot run `{}`", shown(&argv)))?;
    Ok(if status.success() {
        Exit::Ok
    } else {
        Exit::Failed
    })
}

/// Replaces the service's container with one from the current compose file, after the
/// operator said yes; recorded in history before it runs, its outcome after.
pub async fn recreate(config: &Config, name: &str, yes: bool, who: String) -> anyhow::Result<Exit> {
    let (service, compose) = chosen(config, &[name.to_string()])?.remove(0);
    let (project, engine) = stack::connect(compose).await?;
    let before = stack::container(&project, &engine, &compose.service).await?;
    let what = match &before {
        Some(c) => format!("container {} ({}, {})", c.short_id(), c.name, c.state),
        None => "no container yet".into(),
    };
    if !yes && !confirm(name, service, &what)? {
        println!("nothing done");
        return Ok(Exit::Failed);
    }
    let history = History::begin(config, name, &who)?;
    println!(
        "running: {}",
        shown(&project.recreate_argv(&compose.service))
    );
    if let Err(e) = project.recreate(&compose.service).await {
        history.finish(crate::vocab::Outcome::Failed, &e.to_string());
        return Err(e.into());
    }
    let after = stack::container(&project, &engine, &compose.service).await?;
    let replaced = format!(
        "{} replaced by {}",
        before.as_ref().map_or("nothing", |c| c.short_id()),
        after.as_ref().map_or("nothing", |c| c.short_id())
    );
    println!("{name}: container {replaced}");
    let result = wait_one(service, compose, &project, &engine).await;
    match &result {
        Ok(look) => {
            history.finish(crate::vocab::Outcome::Succeeded, &replaced);
            println!("ok    {}; {}", look.health, look.container_summary());
        }
        Err(look) => {
            history.finish(
                crate::vocab::Outcome::Failed,
                &format!("{replaced}; not ready: {}", look.health),
            );
            println!("FAIL  {}; {}", look.health, look.container_summary());
        }
    }
    Ok(if result.is_ok() {
        Exit::Ok
    } else {
        Exit::Failed
    })
}

async fn wait_one(
    service: &ServiceConfig,
    compose: &ComposeRef,
    project: &Project,
    engine: &Engine,
) -> Result<Readiness, Readiness> {
    let deadline = Instant::now() + Duration::from_secs(120);
    stack::wait_ready(service, compose, project, engine, deadline, POLL, |look| {
        println!("  {}: {}", service.name, look_line(look))
    })
    .await
}

/// Asks on the terminal; without one, refuses (a script must say `--yes`).
fn confirm(name: &str, service: &ServiceConfig, what: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("`services recreate {name}` restarts {name} ({what}): confirm on a terminal or pass --yes; nothing was done");
    }
    print!(
        "recreate {name} ({} service, {})? This stops and replaces its container; its volumes are kept. Type yes to go on: ",
        service.kind,
        printable(what)
    );
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "yes" | "y"))
}

/// The history record of a recreate: a pipeline named `services recreate` over the service,
/// written by the CLI (the daemon has no part in compose). No database yet: nothing to record.
struct History {
    store: Option<(crate::store::Store, i64)>,
}

impl History {
    fn begin(config: &Config, name: &str, who: &str) -> anyhow::Result<History> {
        let path = crate::store::db_path(&config.daemon.data_dir);
        if !path.exists() {
            eprintln!(
                "note: not recorded in history: no state database at {} yet",
                path.display()
            );
            return Ok(History { store: None });
        }
        let store = crate::store::Store::open(&config.daemon.data_dir)
            .context("cannot record the recreate in history; nothing was done")?;
        let id = store
            .begin_pipeline("services recreate", &[name.to_string()], who)
            .context("cannot record the recreate in history; nothing was done")?;
        Ok(History {
            store: Some((store, id)),
        })
    }

    fn finish(&self, outcome: crate::vocab::Outcome, reason: &str) {
        if let Some((store, id)) = &self.store {
            if let Err(e) = store.finish_pipeline(*id, outcome, Some(reason)) {
                eprintln!("warning: cannot record the outcome in history: {e}");
            }
        }
    }
}

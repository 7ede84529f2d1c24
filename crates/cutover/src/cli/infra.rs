//! `cutover check`, `cutover migrate ...`: the infrastructure commands (`services` is in
//! `services.rs`).

use super::client::Client;
use super::output::{print, table};
use super::Exit;
use crate::checks::{self, human_bytes, DiskReport};
use crate::config::Config;
use crate::migrate::{self, Migrations};
use crate::protocol::StatusResponse;
use crate::services::ServiceHealth;
use anyhow::{bail, Context};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Serialize)]
pub struct CheckReport {
    pub ok: bool,
    pub services: Vec<ServiceCheck>,
    pub components: Vec<ComponentCheck>,
    pub disk: Vec<DiskReport>,
    /// Warnings only: they never fail the check (left out without certificates).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateCheck>,
}

#[derive(Serialize)]
pub struct CertificateCheck {
    pub name: String,
    /// False: worth a warning (expiring soon, or its last renewal failed).
    pub ok: bool,
    pub detail: String,
}

#[derive(Serialize)]
pub struct ServiceCheck {
    pub required: bool,
    #[serde(flatten)]
    pub health: ServiceHealth,
}

#[derive(Serialize)]
pub struct ComponentCheck {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

pub async fn check(config: &Config, client: &Client, json: bool) -> anyhow::Result<Exit> {
    let mut services = Vec::new();
    for service in &config.services {
        services.push(ServiceCheck {
            required: service.required,
            health: checks::check_service(service).await,
        });
    }
    let answer = client.get::<StatusResponse>("/v1/status").await;
    // Down, not allowed, not answering: each says so, not all "not running".
    let unreachable = match &answer {
        Err(super::client::ClientError::Unreachable { .. }) => {
            Some("the daemon is not running".to_owned())
        }
        Err(e) => Some(e.to_string()),
        Ok(_) => None,
    };
    let status = answer.ok();
    let components = config
        .components
        .iter()
        .map(|c| {
            let live = status
                .as_ref()
                .and_then(|s| s.components.iter().find(|x| x.name == c.name.as_str()));
            match (&status, live) {
                (None, _) => ComponentCheck {
                    name: c.name.to_string(),
                    ok: false,
                    detail: unreachable.clone().unwrap_or_default(),
                },
                (Some(_), Some(live)) => match (&live.active, &live.serving_release) {
                    (None, _) => ComponentCheck {
                        name: c.name.to_string(),
                        ok: true,
                        detail: "nothing deployed yet".into(),
                    },
                    (Some(_), Some(_)) if checks::serving_health_problem(live).is_some() => {
                        ComponentCheck {
                            name: c.name.to_string(),
                            ok: false,
                            detail: checks::serving_health_problem(live).unwrap_or_default(),
                        }
                    }
                    (Some(active), Some(serving)) => ComponentCheck {
                        name: c.name.to_string(),
                        ok: true,
                        detail: if active == serving {
                            format!("serving {serving}")
                        } else {
                            format!("serving {serving} (active {active}, deploy in progress)")
                        },
                    },
                    (Some(active), None) => ComponentCheck {
                        name: c.name.to_string(),
                        ok: false,
                        detail: format!("{active} is active but nothing is serving"),
                    },
                },
                (Some(_), None) => ComponentCheck {
                    name: c.name.to_string(),
                    ok: false,
                    detail: "unknown to the running daemon (restart it to load the new config)"
                        .into(),
                },
            }
        })
        .collect::<Vec<_>>();
    let disk = checks::check_disks(config);
    let certificates = certificate_checks(
        status
            .as_ref()
            .map(|s| s.certificates.clone())
            .unwrap_or_else(|| crate::status::certificates_offline(config)),
    );
    let ok = services.iter().all(|s| s.health.ok || !s.required)
        && components.iter().all(|c| c.ok)
        && disk.iter().all(|d| d.ok);
    let report = CheckReport {
        ok,
        services,
        components,
        disk,
        certificates,
    };
    print(json, &report, render_check)?;
    Ok(if ok { Exit::Ok } else { Exit::Failed })
}

fn certificate_checks(
    certificates: Vec<crate::protocol::CertificateInfo>,
) -> Vec<CertificateCheck> {
    let now = crate::vocab::now_millis();
    certificates
        .into_iter()
        .map(|cert| {
            let warning = checks::certificates::certificate_warning(&cert, now);
            CertificateCheck {
                ok: warning.is_none(),
                detail: warning.unwrap_or_else(|| match cert.not_after {
                    Some(at) => format!("expires {}", super::output::expires(at, now)),
                    None => "not issued yet".into(),
                }),
                name: cert.name,
            }
        })
        .collect()
}

fn verdict(ok: bool, required: bool) -> &'static str {
    match (ok, required) {
        (true, _) => "ok",
        (false, true) => "FAIL",
        (false, false) => "warn",
    }
}

fn render_check(report: &CheckReport) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    for s in &report.services {
        let h = &s.health;
        let mut detail = h.detail.clone();
        if let Some(version) = &h.version {
            detail = format!("{detail} (version {version})");
        }
        rows.push(vec![
            verdict(h.ok, s.required).into(),
            "service".into(),
            h.name.clone().unwrap_or_default(),
            format!("{} {}", h.kind, h.target),
            h.latency_ms.map_or("-".into(), |ms| format!("{ms:.1} ms")),
            detail,
        ]);
    }
    for c in &report.components {
        rows.push(vec![
            verdict(c.ok, true).into(),
            "component".into(),
            c.name.clone(),
            String::new(),
            "-".into(),
            c.detail.clone(),
        ]);
    }
    for d in &report.disk {
        let detail = match (d.free, &d.error) {
            (Some(free), _) => format!(
                "{} free (minimum {})",
                human_bytes(free),
                human_bytes(d.min_free)
            ),
            (None, Some(e)) => e.clone(),
            (None, None) => String::new(),
        };
        rows.push(vec![
            verdict(d.ok, true).into(),
            "disk".into(),
            d.path.display().to_string(),
            String::new(),
            "-".into(),
            detail,
        ]);
    }
    for c in &report.certificates {
        rows.push(vec![
            verdict(c.ok, false).into(),
            "certificate".into(),
            c.name.clone(),
            String::new(),
            "-".into(),
            c.detail.clone(),
        ]);
    }
    let mut out = table(&["", "CHECK", "NAME", "TARGET", "LATENCY", "DETAIL"], &rows);
    out.push_str(if report.ok {
        "\nall required checks pass\n"
    } else {
        "\nsome required checks FAIL\n"
    });
    out
}

#[derive(clap::Subcommand, Debug)]
pub enum MigrateCommand {
    /// The database's version, pending and changed files
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Apply pending migrations (all, or the next N)
    Up { n: Option<usize> },
    /// Revert the last N migrations (never automatic)
    Down { n: usize },
    /// Set the version and clear the dirty flag after a manual fix
    Force { version: u64 },
    /// Write the next {version}_{name}.up.sql / .down.sql pair
    Create { name: String },
}

#[derive(clap::Args, Debug)]
pub struct MigrateTarget {
    /// The component whose migrations to use [default: the one with `migrations` configured]
    #[arg(long, global = true)]
    component: Option<String>,
    /// Migrations directory [default: the active release's, or ./<dir> for `create`]
    #[arg(long, global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub async fn migrate(
    config: &Config,
    target: &MigrateTarget,
    command: &MigrateCommand,
) -> anyhow::Result<Exit> {
    let candidates: Vec<_> = config
        .components
        .iter()
        .filter_map(|c| {
            c.process()
                .and_then(|p| p.migrations.as_ref())
                .map(|m| (c, m))
        })
        .filter(|(c, _)| {
            target
                .component
                .as_deref()
                .is_none_or(|name| c.name.as_str() == name)
        })
        .collect();
    let (component, migrations) = match candidates.as_slice() {
        [one] => *one,
        [] => bail!(
            "no component has `migrations` configured{}",
            target
                .component
                .as_deref()
                .map(|c| format!(" (looked for {c})"))
                .unwrap_or_default()
        ),
        _ => bail!("several components have migrations; choose one with --component"),
    };
    let dir = match (&target.dir, command) {
        (Some(dir), _) => dir.clone(),
        (None, MigrateCommand::Create { .. }) => migrations.dir.clone(),
        (None, _) => active_migrations_dir(config, component.name.as_str(), &migrations.dir)?,
    };
    if let MigrateCommand::Create { name } = command {
        let (up, down) = migrate::create(&dir, name)?;
        println!("created {}\ncreated {}", up.display(), down.display());
        return Ok(Exit::Ok);
    }
    let service = config
        .service(&migrations.service)
        .expect("validated at load");
    let url = service.url().map_err(anyhow::Error::msg)?;
    let files = if dir.is_dir() {
        Migrations::scan(&dir)?
    } else {
        bail!("no migrations directory at {}", dir.display())
    };
    let mut options = migrate::Options::new(migrations.lock_timeout.get());
    options.progress = Some(std::sync::Arc::new(|p: &migrate::Progress| {
        if let migrate::Progress::WaitingForLock { holders } = p {
            eprintln!("waiting for the migration lock (held by {holders:?})");
        }
    }));
    match command {
        MigrateCommand::Status { json } => {
            let status = migrate::status(&url, &files, &options).await?;
            print(*json, &status, render_status)?;
            Ok(if status.dirty || !status.changed.is_empty() {
                Exit::Failed
            } else {
                Exit::Ok
            })
        }
        MigrateCommand::Up { n } => {
            let steps = migrate::up(&url, &files, *n, &options).await?;
            report_steps("applied", &steps);
            Ok(Exit::Ok)
        }
        MigrateCommand::Down { n } => {
            let steps = migrate::down(&url, &files, *n, &options).await?;
            report_steps("reverted", &steps);
            Ok(Exit::Ok)
        }
        MigrateCommand::Force { version } => {
            migrate::force(&url, Some(*version), &options).await?;
            println!("version forced to {version}; the dirty flag is cleared");
            Ok(Exit::Ok)
        }
        MigrateCommand::Create { .. } => unreachable!("handled above"),
    }
}

fn report_steps(verb: &str, steps: &[migrate::Step]) {
    if steps.is_empty() {
        println!("nothing to do");
    }
    for step in steps {
        let file = step
            .file
            .clone()
            .unwrap_or_else(|| format!("version {}", step.version));
        println!(
            "{verb} {file} ({:.0} ms); now at {}",
            step.duration_ms,
            step.now_at.map_or("no version".into(), |v| v.to_string())
        );
    }
}

fn render_status(status: &migrate::MigrateStatus) -> String {
    let mut out = format!(
        "version: {}{}\nnewest file: {}\n",
        status.version.map_or("none".into(), |v| v.to_string()),
        if status.dirty {
            " (DIRTY: fix the database by hand, then `cutover migrate force VERSION`)"
        } else {
            ""
        },
        status.latest.map_or("none".into(), |v| v.to_string()),
    );
    match (status.ahead_of_files(), status.dirty) {
        // A failed migration of a release that never became active: not a rollback.
        (true, true) => out.push_str(&format!(
            "the database is dirty at version {}, which has no file here: a migration of a newer release failed part-way\n",
            status.version.map_or("none".into(), |v| v.to_string())
        )),
        (true, false) => out
            .push_str("the database is ahead of these files (a rollback to an older release?)\n"),
        (false, _) => {}
    }
    for p in &status.pending {
        out.push_str(&format!(
            "pending: {}\n",
            p.file.clone().unwrap_or_else(|| p.version.to_string())
        ));
    }
    for c in &status.changed {
        out.push_str(&format!(
            "CHANGED since applied: {} (recorded {}, now {})\n",
            c.file,
            &c.recorded_sha256[..12],
            &c.sha256[..12]
        ));
    }
    out
}

/// The migrations of the active release of `component`, from the release store.
fn active_migrations_dir(config: &Config, component: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    let store = crate::store::Store::open_read_only(&config.daemon.data_dir)?;
    let active = store
        .component_state(component)?
        .active
        .with_context(|| format!("{component} has no active release yet; pass --dir"))?;
    Ok(config
        .daemon
        .data_dir
        .join("releases")
        .join(component)
        .join(active)
        .join("bundle")
        .join(dir))
}

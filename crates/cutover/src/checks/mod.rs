//! What `cutover check` reports and what a deploy must pass before it starts: service health
//! with the real protocols, and disk headroom (a full disk is the classic outage);
//! [`env`](mod@env): the env files and `env` tables of components; [`certificates`]: the
//! https listener's certificates (warnings only).

pub mod certificates;
pub mod env;

use crate::config::Config;
use serde::Serialize;
use std::path::PathBuf;

/// Why the instance serving a component is not fine, as the daemon's watchdog reports it.
pub fn serving_health_problem(status: &crate::protocol::ComponentStatus) -> Option<String> {
    use crate::protocol::HealthState;
    let health = status.health.as_ref()?;
    if health.state != HealthState::Unhealthy {
        return None;
    }
    let release = status.serving_release.as_deref().unwrap_or("the release");
    let why = health
        .reason
        .clone()
        .or_else(|| health.last_probe.clone())
        .unwrap_or_else(|| "failing health probes".into());
    Some(format!(
        "{release} is UNHEALTHY: {why} (restarted {} times recently; a restart is under way)",
        health.restarts
    ))
}

/// Free space of one configured path.
#[derive(Clone, Debug, Serialize)]
pub struct DiskReport {
    pub path: PathBuf,
    pub free: Option<u64>,
    pub min_free: u64,
    pub ok: bool,
    pub error: Option<String>,
}

pub use crate::services::check_service;

pub use crate::diskspace::disk_free;

pub fn check_disks(config: &Config) -> Vec<DiskReport> {
    config
        .checks
        .disk
        .iter()
        .map(|check| match disk_free(&check.path) {
            Ok(free) => DiskReport {
                path: check.path.clone(),
                free: Some(free),
                min_free: check.min_free,
                ok: free >= check.min_free,
                error: None,
            },
            Err(e) => DiskReport {
                path: check.path.clone(),
                free: None,
                min_free: check.min_free,
                ok: false,
                error: Some(e.to_string()),
            },
        })
        .collect()
}

pub use crate::vocab::human_bytes;

/// Why a deploy of a component may not start now.
#[derive(Debug, thiserror::Error)]
pub enum GateRefusal {
    #[error("its environment is not ready: {}", .0.join("; "))]
    Env(Vec<String>),
    #[error("only {free} free on {} (at least {} required by [checks] disk); free some space first", path.display(), human_bytes(*min_free))]
    Disk {
        /// The free space, or why it could not be measured.
        free: String,
        path: std::path::PathBuf,
        min_free: u64,
    },
    #[error("required service {name} is unhealthy: {health}")]
    Service {
        name: String,
        health: crate::services::ServiceHealth,
    },
}

/// Whether a deploy of a component may start now: not with low disk, a bad env, or a required
/// service down.
pub async fn deploy_gate(
    config: &Config,
    component: &crate::config::ComponentConfig,
) -> Result<(), GateRefusal> {
    let requires = component
        .process()
        .map(|p| p.requires.as_slice())
        .unwrap_or_default();
    let env = component_env(config, component);
    let errors = env.error_messages();
    if !errors.is_empty() {
        return Err(GateRefusal::Env(errors));
    }
    for disk in check_disks(config) {
        if !disk.ok {
            let free = disk
                .free
                .map_or_else(|| disk.error.clone().unwrap_or_default(), human_bytes);
            return Err(GateRefusal::Disk {
                free,
                path: disk.path.clone(),
                min_free: disk.min_free,
            });
        }
    }
    for name in requires {
        let Some(service) = config.service(name) else {
            continue;
        };
        let health = check_service(service).await;
        if !health.ok {
            return Err(GateRefusal::Service {
                name: name.clone(),
                health,
            });
        }
    }
    Ok(())
}

/// The env checks of one component: its env file (permissions, placeholders, required keys
/// not set in `env`) and its `env` table (placeholders). Values are never included.
#[derive(Clone, Debug, Serialize)]
pub struct ComponentEnv {
    pub component: String,
    pub file: Option<env::EnvReport>,
    pub problems: Vec<env::Problem>,
}

impl ComponentEnv {
    pub fn error_messages(&self) -> Vec<String> {
        use env::Severity;
        self.file
            .iter()
            .flat_map(|f| f.problems.iter())
            .chain(self.problems.iter())
            .filter(|p| p.severity == Severity::Error)
            .map(|p| p.message.clone())
            .collect()
    }
}

pub fn component_env(config: &Config, component: &crate::config::ComponentConfig) -> ComponentEnv {
    let name = component.name.to_string();
    let (table, env_file) = match component.process() {
        Some(p) => (p.env.clone(), p.env_file.clone()),
        None => Default::default(),
    };
    let pairs: Vec<(String, String)> = table.into_iter().collect();
    let production = config.daemon.production;
    let from_file: Vec<String> = component
        .required_env
        .iter()
        .filter(|k| !pairs.iter().any(|(key, v)| key == *k && !v.is_empty()))
        .cloned()
        .collect();
    let file = env_file
        .as_deref()
        .map(|path| env::check_env_file(path, &from_file, production));
    // Without an env file, required keys can only come from the table.
    let required_here: &[String] = if env_file.is_none() { &from_file } else { &[] };
    let problems = env::check_vars(
        &format!("components.{name}.env"),
        &pairs,
        required_here,
        production,
    );
    ComponentEnv {
        component: name,
        file,
        problems,
    }
}

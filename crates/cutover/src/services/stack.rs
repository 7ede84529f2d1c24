//! A configured service under compose: its project, its container, whether the container still
//! matches the compose file, and waiting until it is ready.
//!
//! Ready means both: cutover's own protocol check passes (`SELECT 1`, `PING`) and the container
//! runs and, when it has a healthcheck, the engine reports it `healthy`. The protocol check is
//! what the app will see; the healthcheck is what the operator wrote in the compose file.

use super::compose::{ComposeCli, ComposeError, Project};
use super::engine::{Container, Engine, EngineError};
use super::ServiceHealth;
use crate::config::{ComposeRef, ServiceConfig};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(transparent)]
    Compose(#[from] ComposeError),
    #[error("{source} (compose CLI: {cli}); start Docker (`systemctl start docker`) or point DOCKER_HOST at a running engine")]
    NoEngine {
        cli: String,
        #[source]
        source: EngineError,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The compose project of `compose` (its CLI detected or configured) after checking that an
/// engine answers, so a stopped engine gets its own error before any compose command runs.
pub async fn connect(compose: &ComposeRef) -> Result<(Project, Engine), StackError> {
    let cli = ComposeCli::detect(compose.command.as_deref()).await?;
    let project = Project::new(cli, &compose.file)?;
    let engine = Engine::from_env()?;
    engine.ping().await.map_err(|source| StackError::NoEngine {
        cli: project.cli.to_string(),
        source,
    })?;
    Ok((project, engine))
}

/// The service's container, when compose created one.
pub async fn container(
    project: &Project,
    engine: &Engine,
    service: &str,
) -> Result<Option<Container>, StackError> {
    match project.container_id(service).await? {
        Some(id) => Ok(Some(engine.inspect(&id).await?)),
        None => Ok(None),
    }
}

/// A container created from an older definition of its service than the compose file's.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Drift {
    pub created_from: String,
    pub file_now: String,
}

/// Whether `container` was created from another definition than the file's current one.
/// Containers without compose's hash label (created by hand) are not judged.
pub async fn drift(
    project: &Project,
    service: &str,
    container: &Container,
) -> Result<Option<Drift>, StackError> {
    let Some(created_from) = &container.config_hash else {
        return Ok(None);
    };
    let file_now = project.config_hash(service).await?;
    Ok((*created_from != file_now).then(|| Drift {
        created_from: created_from.clone(),
        file_now,
    }))
}

/// The message for a drifted service, naming the one command that applies the change.
pub fn drift_message(name: &str) -> String {
    format!(
        "{name}: the compose definition changed since the container was created; \
         `cutover services recreate {name}` restarts the database"
    )
}

/// One look at a service: its protocol check and its container.
#[derive(Clone, Debug)]
pub struct Readiness {
    pub health: ServiceHealth,
    pub container: Option<Container>,
    /// Why the container could not be looked at, when it could not.
    pub container_problem: Option<String>,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.health.ok && self.container_problem.is_none() && self.container_ok()
    }

    fn container_ok(&self) -> bool {
        self.container.as_ref().is_some_and(|c| {
            c.state == "running" && c.health.as_deref().is_none_or(|h| h == "healthy")
        })
    }

    /// Waiting cannot help: the container is gone or exited, or the check failed for a reason
    /// that needs a person (a wrong password).
    fn hopeless(&self) -> bool {
        let exited = self
            .container
            .as_ref()
            .is_some_and(|c| matches!(c.state.as_str(), "exited" | "dead"));
        exited || !(self.health.ok || self.health.status.is_transient())
    }

    /// The container's side in a few words: `3f2a1b0c9d8e running, healthy`.
    pub fn container_summary(&self) -> String {
        match (&self.container, &self.container_problem) {
            (_, Some(problem)) => problem.clone(),
            (None, None) => "no container".into(),
            (Some(c), None) => match &c.health {
                Some(health) => format!("container {} {}, {health}", c.short_id(), c.state),
                None => format!("container {} {} (no healthcheck)", c.short_id(), c.state),
            },
        }
    }
}

/// Looks at the service once. `id` caches the container's id between looks (compose is asked
/// only until it names one: a CLI start costs more than the engine's answer).
pub async fn readiness(
    service: &ServiceConfig,
    compose: &ComposeRef,
    project: &Project,
    engine: &Engine,
    id: &mut Option<String>,
) -> Readiness {
    let health = super::check_service(service).await;
    let container = async {
        if id.is_none() {
            *id = project.container_id(&compose.service).await?;
        }
        match id {
            Some(id) => Ok::<_, StackError>(Some(engine.inspect(id).await?)),
            None => Ok(None),
        }
    };
    let (container, container_problem) = match container.await {
        Ok(c) => (c, None),
        Err(e) => (None, Some(e.to_string())),
    };
    Readiness {
        health,
        container,
        container_problem,
    }
}

/// Looks every `interval` until the service is ready (`Ok`), hopeless or `deadline` passes
/// (`Err` with the last look); `progress` gets each look whose summary differs from the one
/// before, so a person sees what it waits for without a line per poll.
pub async fn wait_ready(
    service: &ServiceConfig,
    compose: &ComposeRef,
    project: &Project,
    engine: &Engine,
    deadline: Instant,
    interval: Duration,
    mut progress: impl FnMut(&Readiness),
) -> Result<Readiness, Readiness> {
    let mut last_summary = String::new();
    let mut id = None;
    loop {
        let look = readiness(service, compose, project, engine, &mut id).await;
        if look.ready() {
            return Ok(look);
        }
        if look.hopeless() {
            return Err(look);
        }
        let summary = format!("{} {}", look.health.status, look.container_summary());
        if summary != last_summary {
            progress(&look);
            last_summary = summary;
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(look);
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
    }
}

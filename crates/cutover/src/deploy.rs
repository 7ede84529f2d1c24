//! Deploys: moving one component to a release, and pipelines of them.
//!
//! ```text
//!            commit phase            action
//!  prepare   preparing     store + verify the artifact (old release serving, untouched)
//!  start     starting      launch the instance on a private port, health gate
//!  switch    switching     atomic route swap to the new instance
//!  drain                   wait for the old instance's in-flight requests and tunnels
//!  stabilize stabilizing   probes, 5xx/error ratio, liveness; old instance kept warm
//!     |  failure ──> rolling_back: swap back to the warm old instance, stop the new one
//!  finalize  finalizing    commit the new release as active, close pool, stop the old one
//! ```
//!
//! Each phase is committed to the state database before its action, and the release recorded
//! as active changes only in `finalize`: after a crash at any point, recovery brings the
//! component back to the committed active release (see [`crate::daemon`]).

use crate::component::{ComponentRuntime, DeployClaim, Serving};
use crate::config::Config;
use crate::health::{self, GateFailure};
use crate::protocol::{Event, EventKind};
use crate::proxy::{StatsSnapshot, Upstream};
use crate::release::{now_millis, ReleaseError, ReleaseId, ReleaseStore};
use crate::store::{DeployKind, InstanceRecord, InstanceState, Outcome, Phase, Store, StoreError};
use crate::supervisor::{self, Instance, LaunchSpec};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the daemon shares with every deploy.
pub struct Shared {
    pub config: Arc<Config>,
    pub store: Store,
    pub releases: ReleaseStore,
}

/// Sends progress events to the client that asked (if still connected) and keeps the
/// significant ones in the deploy's event log.
#[derive(Clone)]
pub struct EventSink {
    tx: Option<mpsc::UnboundedSender<Event>>,
    started: Instant,
    store: Store,
}

impl EventSink {
    pub fn new(tx: Option<mpsc::UnboundedSender<Event>>, store: Store) -> Self {
        Self {
            tx,
            started: Instant::now(),
            store,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn send(&self, kind: EventKind) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Event {
                t_ms: self.started.elapsed().as_millis() as u64,
                kind,
            });
        }
    }

    /// Streams the event and records it under `deploy_id`.
    fn emit(&self, deploy_id: i64, kind: EventKind) {
        let name = serde_json::to_value(&kind)
            .ok()
            .and_then(|v| v.get("event").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_default();
        if let Err(e) = self.store.add_event(deploy_id, &name, &kind.summary()) {
            tracing::warn!("cannot record event: {e}");
        }
        tracing::info!(
            deploy = deploy_id,
            "{}: {}",
            kind.component().unwrap_or("-"),
            kind.summary()
        );
        self.send(kind);
    }

    /// Streams the event only (progress ticks not worth keeping).
    fn progress(&self, kind: EventKind) {
        self.send(kind);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    Release(#[from] ReleaseError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("cannot start the new instance: {0:#}")]
    Launch(anyhow::Error),
    #[error("health gate failed: {failure}{}", log_excerpt(log, tail))]
    Unhealthy {
        failure: GateFailure,
        log: PathBuf,
        tail: String,
    },
    #[error("{0}")]
    Refused(String),
}

fn log_excerpt(log: &std::path::Path, tail: &str) -> String {
    if tail.trim().is_empty() {
        format!("\n  (the instance wrote nothing to {})", log.display())
    } else {
        let indented: Vec<String> = tail.lines().map(|l| format!("  | {l}")).collect();
        format!(
            "\n  last lines of {}:\n{}",
            log.display(),
            indented.join("\n")
        )
    }
}

/// One component's part of a pipeline.
pub struct DeployPlan {
    pub component: Arc<ComponentRuntime>,
    pub claim: DeployClaim,
    pub kind: DeployKind,
    pub release: ReleaseId,
    /// The artifact to store; None when the release is already stored (rollback).
    pub artifact: Option<PathBuf>,
}

/// Runs the stages in order; a stage starts only when the one before it finalized.
pub async fn run_pipeline(
    shared: Arc<Shared>,
    pipeline_id: i64,
    release: String,
    plans: Vec<DeployPlan>,
    who: String,
    sink: EventSink,
) -> Outcome {
    sink.send(EventKind::PipelineStarted {
        pipeline_id,
        release,
        components: plans
            .iter()
            .map(|p| p.component.name().to_owned())
            .collect(),
    });
    let mut outcome = Outcome::Succeeded;
    let mut reason = None;
    for plan in plans {
        let name = plan.component.name().to_owned();
        let (result, why) = deploy_one(&shared, Some(pipeline_id), plan, &who, &sink).await;
        if result != Outcome::Succeeded {
            outcome = result;
            reason = Some(format!("{name}: {}", why.unwrap_or_default()));
            break;
        }
    }
    if let Err(e) = shared
        .store
        .finish_pipeline(pipeline_id, outcome, reason.as_deref())
    {
        tracing::error!("cannot record the end of pipeline #{pipeline_id}: {e}");
    }
    sink.send(EventKind::PipelineFinished {
        pipeline_id,
        outcome,
        reason,
        duration_ms: sink.elapsed().as_millis() as u64,
    });
    outcome
}

/// Runs one deploy to its end and records the outcome. Returns the outcome and its reason.
pub async fn deploy_one(
    shared: &Shared,
    pipeline_id: Option<i64>,
    plan: DeployPlan,
    who: &str,
    sink: &EventSink,
) -> (Outcome, Option<String>) {
    let component = plan.component.clone();
    let from = shared
        .store
        .component_state(component.name())
        .ok()
        .and_then(|s| s.active)
        .and_then(|a| ReleaseId::parse(&a).ok());
    let deploy_id = match shared.store.begin_deploy(
        pipeline_id,
        &component.config.name,
        plan.kind,
        from.as_ref(),
        &plan.release,
        who,
    ) {
        Ok(id) => id,
        Err(e) => return (Outcome::Failed, Some(e.to_string())),
    };
    plan.claim.set_deploy_id(deploy_id);
    sink.emit(
        deploy_id,
        EventKind::DeployStarted {
            component: component.name().to_owned(),
            deploy_id,
            kind: plan.kind,
            from: from.as_ref().map(ToString::to_string),
            to: plan.release.to_string(),
        },
    );
    let run = Run {
        shared,
        component: &component,
        deploy_id,
        sink,
    };
    let (outcome, reason) = match run.execute(&plan, from.as_ref()).await {
        Ok((outcome, reason)) => (outcome, reason),
        Err(e) => (Outcome::Failed, Some(e.to_string())),
    };
    if let Err(e) = shared
        .store
        .finish_deploy(deploy_id, outcome, reason.as_deref())
    {
        tracing::error!("cannot record the end of deploy #{deploy_id}: {e}");
    }
    sink.emit(
        deploy_id,
        EventKind::DeployFinished {
            component: component.name().to_owned(),
            deploy_id,
            outcome,
            reason: reason.clone(),
        },
    );
    (outcome, reason)
}

/// One deploy in progress.
struct Run<'a> {
    shared: &'a Shared,
    component: &'a Arc<ComponentRuntime>,
    deploy_id: i64,
    sink: &'a EventSink,
}

impl Run<'_> {
    fn name(&self) -> String {
        self.component.name().to_owned()
    }

    fn phase(&self, phase: Phase) -> Result<(), DeployError> {
        Ok(self.shared.store.set_phase(self.deploy_id, phase)?)
    }

    async fn execute(
        &self,
        plan: &DeployPlan,
        from: Option<&ReleaseId>,
    ) -> Result<(Outcome, Option<String>), DeployError> {
        let config = &self.component.config;
        let serving = self.component.serving();
        if from == Some(&plan.release)
            && serving
                .as_ref()
                .is_some_and(|s| s.instance.release == plan.release)
        {
            return Ok((
                Outcome::Succeeded,
                Some(format!("{} is already active; nothing to do", plan.release)),
            ));
        }

        // prepare: store and verify, while the old release keeps serving untouched.
        self.phase(Phase::Preparing)?;
        let stored = match &plan.artifact {
            Some(source) => {
                let releases = self.shared.releases.clone();
                let (name, id, source) =
                    (config.name.clone(), plan.release.clone(), source.clone());
                let runnable = config.executes_artifact();
                tokio::task::spawn_blocking(move || {
                    releases.store_file(&name, &id, &source, runnable)
                })
                .await
                .map_err(|e| DeployError::Launch(e.into()))??
            }
            None => self.shared.releases.get(&config.name, &plan.release)?,
        };
        self.shared.store.insert_release(&stored)?;
        self.sink.emit(
            self.deploy_id,
            EventKind::Stored {
                component: self.name(),
                release: stored.id.to_string(),
                sha256: stored.sha256.clone(),
                size: stored.size,
            },
        );

        // start + health gate
        self.phase(Phase::Starting)?;
        let deploy_id = self.deploy_id;
        let sink = self.sink.clone();
        let name = self.name();
        let needed = config.health.healthy_threshold;
        let (instance, healthy_after) = start_healthy(
            self.shared,
            self.component,
            &plan.release,
            |instance| {
                sink.emit(
                    deploy_id,
                    EventKind::InstanceStarted {
                        component: name.clone(),
                        release: instance.release.to_string(),
                        pid: instance.pid,
                        port: instance.addr.port(),
                        log: instance.log_path.display().to_string(),
                    },
                )
            },
            |probe, consecutive| {
                sink.progress(EventKind::Probe {
                    component: name.clone(),
                    ok: probe.ok,
                    detail: probe.to_string(),
                    consecutive,
                    needed,
                })
            },
        )
        .await?;
        self.sink.emit(
            self.deploy_id,
            EventKind::Healthy {
                component: self.name(),
                after_ms: healthy_after.as_millis() as u64,
            },
        );

        // switch
        self.phase(Phase::Switching)?;
        let new = Serving {
            upstream: Upstream::new(instance.addr, plan.release.clone()),
            instance,
        };
        let old = self.component.switch_to(Some(new.clone()));
        self.sink.emit(
            self.deploy_id,
            EventKind::Switched {
                component: self.name(),
                from: old.as_ref().map(|o| o.instance.release.to_string()),
                to: plan.release.to_string(),
            },
        );
        if let Some(old) = &old {
            let remaining = old.upstream.drain(config.drain_timeout.get()).await;
            self.sink.emit(
                self.deploy_id,
                EventKind::Drained {
                    component: self.name(),
                    release: old.instance.release.to_string(),
                    remaining,
                },
            );
        }

        // stabilize (manual rollbacks skip it: the operator has already decided)
        let watch = config.stabilize.get();
        if plan.kind == DeployKind::Deploy && !watch.is_zero() {
            self.phase(Phase::Stabilizing)?;
            match self.stabilize(&new, watch).await {
                Ok(stats) => self.sink.emit(
                    self.deploy_id,
                    EventKind::Stable {
                        component: self.name(),
                        requests: stats.requests,
                        failed: stats.failed,
                    },
                ),
                Err(reason) => return self.roll_back(new, old, reason).await,
            }
        }

        // finalize
        self.phase(Phase::Finalizing)?;
        self.shared
            .store
            .set_active(self.component.name(), plan.release.as_str())?;
        self.shared
            .store
            .set_instance_state(new.instance.id, InstanceState::Serving)?;
        if let Some(old) = old {
            self.retire(&old).await;
        }
        if let Err(e) = prune(self.shared, self.component) {
            self.sink.emit(
                self.deploy_id,
                EventKind::Warning {
                    component: Some(self.name()),
                    message: format!("release retention failed: {e}"),
                },
            );
        }
        Ok((Outcome::Succeeded, None))
    }

    /// Watches the new instance for the stabilization period.
    async fn stabilize(&self, new: &Serving, period: Duration) -> Result<StatsSnapshot, String> {
        let config = &self.component.config;
        let checks = &config.stabilize_checks;
        let started = Instant::now();
        let deadline = started + period;
        let interval = config.health.interval.get().max(Duration::from_millis(50));
        let mut failures = 0u32;
        let mut last_report = Instant::now();
        loop {
            let probe = tokio::select! {
                status = new.instance.exited() => return Err(format!("the new instance {status}")),
                probe = health::probe(new.instance.addr, &config.health.path, config.health.timeout.get()) => probe,
            };
            if probe.ok {
                failures = 0;
            } else {
                failures += 1;
                if failures >= checks.unhealthy_threshold {
                    return Err(format!(
                        "{failures} health probes failed in a row (last: {probe})"
                    ));
                }
            }
            let stats = new.upstream.stats.snapshot();
            if stats.requests >= checks.min_requests.max(1) {
                let rate = stats.failed as f64 / stats.requests as f64;
                if rate > checks.max_error_rate {
                    return Err(format!(
                        "error rate {:.1}% ({} of {} requests failed) is above the {:.1}% limit",
                        rate * 100.0,
                        stats.failed,
                        stats.requests,
                        checks.max_error_rate * 100.0
                    ));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(stats);
            }
            if now.duration_since(last_report) >= Duration::from_secs(1) {
                last_report = now;
                self.sink.progress(EventKind::Stabilizing {
                    component: self.name(),
                    elapsed_ms: now.duration_since(started).as_millis() as u64,
                    total_ms: period.as_millis() as u64,
                    requests: stats.requests,
                    failed: stats.failed,
                });
            }
            let next = (now + interval).min(deadline);
            tokio::select! {
                status = new.instance.exited() => return Err(format!("the new instance {status}")),
                _ = tokio::time::sleep_until(next.into()) => {}
            }
        }
    }

    /// Swaps traffic back to the warm old instance and stops the new one.
    async fn roll_back(
        &self,
        new: Serving,
        old: Option<Serving>,
        reason: String,
    ) -> Result<(Outcome, Option<String>), DeployError> {
        self.phase(Phase::RollingBack)?;
        let config = &self.component.config;
        let back = match old {
            Some(old) if old.instance.exit_status().is_none() => Some(old),
            Some(old) => {
                // The warm instance died meanwhile: start its release again, cold.
                self.sink.emit(
                    self.deploy_id,
                    EventKind::Warning {
                        component: Some(self.name()),
                        message: format!(
                            "the old instance {}; restarting {} before rolling back",
                            old.instance.exit_status().unwrap_or_default(),
                            old.instance.release
                        ),
                    },
                );
                let release = old.instance.release.clone();
                match start_healthy(self.shared, self.component, &release, |_| {}, |_, _| {}).await
                {
                    Ok((instance, _)) => Some(Serving {
                        upstream: Upstream::new(instance.addr, release),
                        instance,
                    }),
                    Err(e) => {
                        return Ok((
                            Outcome::Failed,
                            Some(format!("{reason}; rollback impossible: {e}")),
                        ))
                    }
                }
            }
            None => None,
        };
        let Some(back) = back else {
            if new.instance.exit_status().is_some() {
                self.component.switch_to(None);
            } else {
                self.shared
                    .store
                    .set_active(self.component.name(), new.instance.release.as_str())?;
            }
            return Ok((
                Outcome::Failed,
                Some(format!(
                    "{reason}; there is no previous release to roll back to"
                )),
            ));
        };
        let to = back.instance.release.to_string();
        self.component.switch_to(Some(back));
        self.sink.emit(
            self.deploy_id,
            EventKind::RolledBack {
                component: self.name(),
                to: Some(to),
                reason: reason.clone(),
            },
        );
        let _ = config;
        self.retire(&new).await;
        Ok((Outcome::RolledBack, Some(reason)))
    }

    /// Drains an instance that no longer gets traffic, closes our pooled connections to it,
    /// then stops it.
    async fn retire(&self, old: &Serving) {
        let config = &self.component.config;
        let remaining = old.upstream.drain(config.drain_timeout.get()).await;
        if remaining > 0 {
            self.sink.emit(
                self.deploy_id,
                EventKind::Drained {
                    component: self.name(),
                    release: old.instance.release.to_string(),
                    remaining,
                },
            );
        }
        old.upstream.close_pool();
        let status = old.instance.stop(config.stop_timeout.get()).await;
        if let Err(e) = self
            .shared
            .store
            .set_instance_state(old.instance.id, InstanceState::Stopped)
        {
            tracing::warn!("cannot record stopped instance: {e}");
        }
        self.sink.emit(
            self.deploy_id,
            EventKind::Stopped {
                component: self.name(),
                release: old.instance.release.to_string(),
                status,
            },
        );
    }
}

/// Launches an instance of a stored release and waits for its health gate. On failure the
/// instance is stopped and the error carries the last probe and log lines.
pub async fn start_healthy(
    shared: &Shared,
    component: &ComponentRuntime,
    release: &ReleaseId,
    on_started: impl FnOnce(&Instance),
    on_probe: impl FnMut(&health::Probe, u32),
) -> Result<(Instance, Duration), DeployError> {
    let config = &component.config;
    let release_dir = shared.releases.release_dir(&config.name, release);
    let artifact = shared.releases.artifact_path(&config.name, release);
    if !artifact.exists() {
        return Err(ReleaseError::NotStored {
            component: config.name.clone(),
            id: release.clone(),
        }
        .into());
    }
    let started_at = now_millis();
    let spec = LaunchSpec {
        component: config,
        release,
        release_dir: &release_dir,
        artifact: &artifact,
        data_dir: &shared.config.daemon.data_dir,
        log_path: shared
            .releases
            .logs_dir(&config.name, release)
            .join(format!("instance-{started_at}.log")),
    };
    let store = &shared.store;
    let instance = supervisor::launch(&spec, |pid, start_ticks, port| {
        store.insert_instance(&InstanceRecord {
            id: 0,
            component: config.name.to_string(),
            release: release.to_string(),
            pid,
            start_ticks,
            port,
            log_path: spec.log_path.display().to_string(),
            state: InstanceState::Starting,
            started_at,
        })
    })
    .map_err(DeployError::Launch)?;
    on_started(&instance);
    match health::wait_healthy(&instance, &config.health, on_probe).await {
        Ok(after) => Ok((instance, after)),
        Err(failure) => {
            instance.stop(config.stop_timeout.get()).await;
            let _ = store.set_instance_state(instance.id, InstanceState::Stopped);
            Err(DeployError::Unhealthy {
                failure,
                tail: instance.log_tail(12),
                log: instance.log_path.clone(),
            })
        }
    }
}

/// Keeps `keep_releases` stored releases, always including the active and previous ones and
/// whatever is serving; removes the oldest others.
fn prune(shared: &Shared, component: &ComponentRuntime) -> Result<(), DeployError> {
    let name = component.name();
    let state = shared.store.component_state(name)?;
    let serving = component.serving().map(|s| s.instance.release.to_string());
    let protected = |id: &str| {
        Some(id) == state.active.as_deref()
            || Some(id) == state.previous.as_deref()
            || Some(id) == serving.as_deref()
    };
    let releases = shared.store.releases(name)?;
    let protected_count = releases.iter().filter(|r| protected(r.id.as_str())).count();
    let room = component
        .config
        .keep_releases
        .saturating_sub(protected_count);
    for release in releases
        .iter()
        .filter(|r| !protected(r.id.as_str()))
        .skip(room)
    {
        shared.store.mark_pruned(name, release.id.as_str())?;
        shared
            .releases
            .remove(&component.config.name, &release.id)?;
        tracing::info!(component = name, release = %release.id, "pruned release");
    }
    Ok(())
}

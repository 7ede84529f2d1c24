//! The deploy of a process component: a new instance beside the old one, health gate, switch,
//! drain, stabilization with the old instance warm, finalize.

use super::{DeployError, DeployPlan, Run, Shared};
use crate::component::{ComponentRuntime, Serving};
use crate::config::{MigrationsConfig, ProcessConfig};
use crate::health;
use crate::migrate::{self, Migrations};
use crate::protocol::EventKind;
use crate::proxy::{StatsSnapshot, Upstream};
use crate::release::{now_millis, ArtifactKind, ReleaseError, ReleaseId};
use crate::store::InstanceRecord;
use crate::supervisor::{self, Instance, LaunchSpec};
use crate::vocab::{DeployKind, InstanceState, Outcome, Phase};
use std::path::PathBuf;
use std::time::{Duration, Instant};

impl Run<'_> {
    /// start -> health gate -> switch -> drain -> stabilize -> finalize, for a process.
    pub(super) async fn run_process(
        &self,
        plan: &DeployPlan,
        process: &ProcessConfig,
    ) -> Result<(Outcome, Option<String>), DeployError> {
        let config = &self.component.config;
        // migrate: before the new instance starts, while the old release keeps serving.
        if let Some(migrations) = &process.migrations {
            match plan.kind {
                DeployKind::Deploy => self.migrate(plan, migrations).await?,
                DeployKind::Rollback => self.warn_if_schema_ahead(plan, migrations).await,
            }
        }

        // start + health gate
        self.phase(Phase::Starting).await?;
        let deploy_id = self.deploy_id;
        let sink = self.sink.clone();
        let name = self.name();
        let needed = process.health.healthy_threshold;
        let (instance, healthy_after) = start_healthy_unless_aborted(
            self.shared,
            self.component,
            &plan.release,
            self.abort,
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
        if let Err(e) = self.phase(Phase::Switching).await {
            // Nothing routes to the new instance yet: stop it, the old release never noticed.
            instance.stop(process.stop_timeout.get()).await;
            let _ = self
                .shared
                .store
                .set_instance_state(instance.id, InstanceState::Stopped);
            return Err(e);
        }
        let new = Serving {
            upstream: Upstream::new(self.component.name(), instance.addr, plan.release.clone()),
            instance,
        };
        let old = self.component.switch_to(Some(new.clone()));
        // One drain per switch: what finalize still waits for is what is left of it.
        let drain_deadline = Instant::now() + config.drain_timeout.get();
        self.sink.emit(
            self.deploy_id,
            EventKind::Switched {
                component: self.name(),
                from: old.as_ref().map(|o| o.instance.release.to_string()),
                to: plan.release.to_string(),
            },
        );
        if let Some(old) = &old {
            // The new instance is watched while the old one drains (a WebSocket may keep the
            // drain going for drain_timeout): if it dies, traffic goes back at once.
            let drained = tokio::select! {
                remaining = old.upstream.drain(config.drain_timeout.get()) => Some(remaining),
                status = new.instance.exited() => {
                    let reason = format!("the new instance {status} while the old one drained");
                    return self.roll_back(new, Some(old.clone()), reason).await;
                }
                reason = self.abort.raised() => {
                    return self.roll_back(new, Some(old.clone()), reason).await;
                }
            };
            if let Some(remaining) = drained {
                self.drained(&old.instance.release, remaining);
            }
        }

        // stabilize (manual rollbacks skip it: the operator has already decided)
        let watch = config.stabilize.get();
        if plan.kind == DeployKind::Deploy && !watch.is_zero() {
            if let Err(e) = self.phase(Phase::Stabilizing).await {
                return self
                    .roll_back(new, old, format!("cannot record the stabilization: {e}"))
                    .await;
            }
            let stabilizing = Instant::now();
            let verdict = self.stabilize(&new, watch).await;
            crate::metrics::global()
                .stabilization_duration
                .get_or_create(&crate::metrics::ComponentLabels {
                    component: self.name(),
                })
                .observe(stabilizing.elapsed().as_secs_f64());
            match verdict {
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

        // finalize: the new release is committed as active, then the old instance goes.
        // If the new release cannot be committed, it must not stay serving uncommitted (the next
        // daemon start would silently go back): swap back while the old instance is warm.
        let committed = match self
            .shared
            .store
            .set_instance_state(new.instance.id, InstanceState::Serving)
        {
            Ok(()) => self.finalize(&plan.release).await,
            Err(e) => Err(e.into()),
        };
        let finalized = match committed {
            Ok(finalized) => finalized,
            Err(e) if old.is_some() => {
                return self
                    .roll_back(new, old, format!("cannot commit {}: {e}", plan.release))
                    .await;
            }
            Err(e) => return Err(e),
        };
        if let Some(old) = old {
            self.retire(&old, drain_deadline).await;
        }
        Ok(finalized)
    }

    /// Watches the new instance for the stabilization period. A verdict against it is preceded
    /// by one last `stabilizing` tick with the figures at that moment, so what the CLI shows
    /// last is what caused the rollback, not the previous second's count.
    pub(super) async fn stabilize(
        &self,
        new: &Serving,
        period: Duration,
    ) -> Result<StatsSnapshot, String> {
        let started = Instant::now();
        let verdict = tokio::select! {
            verdict = self.watch_stabilizing(new, period) => verdict,
            reason = self.abort.raised() => Err(reason),
        };
        if verdict.is_err() {
            let stats = new.upstream.stats.snapshot();
            self.sink.progress(EventKind::Stabilizing {
                component: self.name(),
                elapsed_ms: started.elapsed().as_millis() as u64,
                total_ms: period.as_millis() as u64,
                requests: stats.requests,
                failed: stats.failed,
            });
        }
        verdict
    }

    async fn watch_stabilizing(
        &self,
        new: &Serving,
        period: Duration,
    ) -> Result<StatsSnapshot, String> {
        let config = &self.component.config;
        let process = config.process().expect("only processes stabilize");
        let checks = &config.stabilize_checks;
        let started = Instant::now();
        let deadline = started + period;
        let interval = process.health.interval.get().max(Duration::from_millis(50));
        let mut failures = 0u32;
        let mut last_report = Instant::now();
        loop {
            let probe = tokio::select! {
                status = new.instance.exited() => return Err(format!("the new instance {status}")),
                probe = health::probe(new.instance.addr, &process.health.path, process.health.timeout.get()) => probe,
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
            if let Some((waiting, since)) = new.upstream.stats.stall() {
                if since >= checks.stall_timeout.get() {
                    return Err(format!(
                        "no response for {} while {waiting} request(s) waited for one",
                        humantime::format_duration(Duration::from_secs(since.as_secs()))
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
    pub(super) async fn roll_back(
        &self,
        new: Serving,
        old: Option<Serving>,
        reason: String,
    ) -> Result<(Outcome, Option<String>), DeployError> {
        // Best effort: a rollback must happen even if the database cannot record it.
        if let Err(e) = self.phase(Phase::RollingBack).await {
            tracing::error!("cannot record the rollback phase: {e}");
        }
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
                        upstream: Upstream::new(self.component.name(), instance.addr, release),
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
        self.retire(&new, Instant::now() + config.drain_timeout.get())
            .await;
        Ok((Outcome::RolledBack, Some(reason)))
    }

    /// Drains an instance that no longer gets traffic (until `drain_deadline`), closes the
    /// tunnels still open and our pooled connections to it, then stops it.
    pub(super) async fn retire(&self, old: &Serving, drain_deadline: Instant) {
        let config = &self.component.config;
        let stop_timeout = config
            .process()
            .map_or(Duration::from_secs(10), |p| p.stop_timeout.get());
        let left = drain_deadline.saturating_duration_since(Instant::now());
        let remaining = old.upstream.drain(left).await;
        // With no time left, the drain after the switch already said what remained.
        if remaining > 0 && !left.is_zero() {
            self.drained(&old.instance.release, remaining);
        }
        old.upstream.close_tunnels();
        old.upstream.close_pool();
        let status = old.instance.stop(stop_timeout).await;
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

impl Run<'_> {
    fn migrations_of(
        &self,
        plan: &DeployPlan,
        migrations: &MigrationsConfig,
    ) -> Result<(String, Migrations), DeployError> {
        let config = &self.component.config;
        let service = self
            .shared
            .config
            .service(&migrations.service)
            .ok_or_else(|| {
                DeployError::Refused(format!("unknown service {}", migrations.service))
            })?;
        let url = service.url().map_err(|e| {
            DeployError::Refused(format!("cannot find the URL of {}: {e}", service.name))
        })?;
        let dir = self
            .shared
            .releases
            .bundle_dir(&config.name, &plan.release)
            .join(&migrations.dir);
        let files = if dir.is_dir() {
            Migrations::scan(&dir).map_err(|e| DeployError::Refused(e.to_string()))?
        } else {
            Migrations::empty(&dir)
        };
        Ok((url, files))
    }

    async fn migrate(
        &self,
        plan: &DeployPlan,
        migrations: &MigrationsConfig,
    ) -> Result<(), DeployError> {
        self.phase(Phase::Migrating).await?;
        let (url, files) = self.migrations_of(plan, migrations)?;
        let mut options = migrate::Options::new(migrations.lock_timeout.get());
        let sink = self.sink.clone();
        let name = self.name();
        options.progress = Some(std::sync::Arc::new(move |progress: &migrate::Progress| {
            let detail = match progress {
                migrate::Progress::WaitingForLock { holders } => {
                    format!("waiting for the migration lock (held by {holders:?})")
                }
                migrate::Progress::LockAcquired => "migration lock acquired".into(),
                migrate::Progress::Running { version, file, .. } => {
                    format!(
                        "applying {}",
                        file.clone().unwrap_or_else(|| version.to_string())
                    )
                }
                migrate::Progress::Done(step) => format!(
                    "applied version {} in {:.0} ms",
                    step.version, step.duration_ms
                ),
            };
            sink.progress(EventKind::Migrating {
                component: name.clone(),
                detail,
            });
        }));
        let steps = migrate::up(&url, &files, None, &options)
            .await
            .map_err(|e| {
                DeployError::Refused(format!(
                    "migration failed; the new release was not started: {e}"
                ))
            })?;
        let applied: Vec<String> = steps.iter().filter_map(|s| s.file.clone()).collect();
        self.sink.emit(
            self.deploy_id,
            EventKind::Migrated {
                component: self.name(),
                applied,
                version: steps.last().and_then(|s| s.now_at).or(files.latest()),
            },
        );
        Ok(())
    }

    /// A rollback never runs `down`; it says so when the schema is newer than the target knows.
    async fn warn_if_schema_ahead(&self, plan: &DeployPlan, migrations: &MigrationsConfig) {
        let Ok((url, files)) = self.migrations_of(plan, migrations) else {
            return;
        };
        let options = migrate::Options::new(migrations.lock_timeout.get());
        if let Ok(status) = migrate::status(&url, &files, &options).await {
            if status.ahead_of_files() {
                self.warn(format!(
                    "the database schema is at version {}, newer than {}'s newest migration ({}); cutover never runs down migrations by itself: make sure {} works with the newer schema, or run `cutover migrate down`",
                    status.version.unwrap_or_default(),
                    plan.release,
                    files.latest().map_or("none".into(), |v| v.to_string()),
                    plan.release
                ));
            }
        }
    }
}

/// `{release_dir}` of a release: the unpacked tree of a bundle, else the release directory.
pub fn launch_dir(shared: &Shared, component: &ComponentRuntime, release: &ReleaseId) -> PathBuf {
    let name = &component.config.name;
    match shared.releases.get(name, release).map(|r| r.kind) {
        Ok(ArtifactKind::Bundle) => shared.releases.bundle_dir(name, release),
        _ => shared.releases.release_dir(name, release),
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
    let never = super::AbortSignal::default();
    start_healthy_unless_aborted(shared, component, release, &never, on_started, on_probe).await
}

/// [`start_healthy`], where `cutover abort` during the health gate stops the new instance.
async fn start_healthy_unless_aborted(
    shared: &Shared,
    component: &ComponentRuntime,
    release: &ReleaseId,
    abort: &super::AbortSignal,
    on_started: impl FnOnce(&Instance),
    on_probe: impl FnMut(&health::Probe, u32),
) -> Result<(Instance, Duration), DeployError> {
    let config = &component.config;
    let process = config
        .process()
        .expect("only process components have instances");
    let release_dir = launch_dir(shared, component, release);
    let artifact = shared.releases.artifact_path(&config.name, release);
    if !shared
        .releases
        .release_dir(&config.name, release)
        .join("release.json")
        .exists()
    {
        return Err(ReleaseError::NotStored {
            component: config.name.clone(),
            id: release.clone(),
        }
        .into());
    }
    let started_at = now_millis();
    let spec = LaunchSpec {
        component: &config.name,
        process,
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
        let recorded = store.insert_instance(&InstanceRecord {
            id: 0,
            component: config.name.to_string(),
            release: release.to_string(),
            pid,
            start_ticks,
            port,
            log_path: spec.log_path.display().to_string(),
            state: InstanceState::Starting,
            started_at,
        });
        match recorded {
            // A full disk (or a state database opened read-only because of one): serving the
            // release matters more than recording its instance. A deploy never gets here on a
            // full disk: it is refused before its artifact is copied.
            Err(e) if store.degraded() || e.is_disk_full() => {
                tracing::warn!(release = %release, "instance not recorded: {e}");
                Ok(0)
            }
            recorded => recorded,
        }
    })
    .map_err(DeployError::Launch)?;
    on_started(&instance);
    let gate = tokio::select! {
        gate = health::wait_healthy(&instance, &process.health, on_probe) => gate,
        reason = abort.raised() => {
            instance.stop(process.stop_timeout.get()).await;
            let _ = store.set_instance_state(instance.id, InstanceState::Stopped);
            return Err(DeployError::Aborted(format!(
                "{reason} during the health gate; the new instance was stopped"
            )));
        }
    };
    match gate {
        Ok(after) => Ok((instance, after)),
        Err(failure) => {
            instance.stop(process.stop_timeout.get()).await;
            let _ = store.set_instance_state(instance.id, InstanceState::Stopped);
            Err(DeployError::Unhealthy {
                failure,
                tail: instance.log_tail(12),
                log: instance.log_path.clone(),
            })
        }
    }
}

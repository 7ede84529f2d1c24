//! The effects of a process deploy: a new instance beside the old one, health gate, switch,
//! drain, stabilization with the old instance warm, finalize or swap back. What happens next
//! is the machine's decision; these only act and report.

use super::machine::{Effect, Event, Failure, Observation, State};
use super::run::{step_failed, Run};
use super::{DeployError, Shared};
use crate::component::{ComponentRuntime, Serving};
use crate::config::ProcessConfig;
use crate::health;
use crate::protocol::EventKind;
use crate::release::{now_millis, ArtifactKind, ReleaseError, ReleaseId};
use crate::store::InstanceRecord;
use crate::supervisor::{self, Instance, LaunchSpec};
use crate::vocab::InstanceState;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What a process deploy holds between effects.
pub(super) struct ProcessSteps<'c> {
    process: &'c ProcessConfig,
    /// Started and healthy, not yet switched to.
    started: Option<Instance>,
    /// Switched to.
    new: Option<Serving>,
    /// What served before the switch, kept warm until finalize.
    old: Option<Serving>,
    /// When the last stabilization progress tick went out.
    last_tick: Option<Instant>,
}

impl<'c> ProcessSteps<'c> {
    pub(super) fn new(process: &'c ProcessConfig) -> Self {
        Self {
            process,
            started: None,
            new: None,
            old: None,
            last_tick: None,
        }
    }

    /// The instance started and healthy, before the switch.
    pub(super) fn started(&self) -> Option<&Instance> {
        self.started.as_ref()
    }

    /// start + health gate. An abort during the gate leaves the instance to `StopNew`.
    pub(super) async fn start(&mut self, run: &Run<'_>) -> Event {
        let instance = match launch(run.shared, run.component, run.release) {
            Ok(instance) => instance,
            Err(e) => return step_failed(e),
        };
        run.emit(EventKind::InstanceStarted {
            component: run.name(),
            release: instance.release.to_string(),
            pid: instance.pid,
            port: instance.addr.port(),
            log: instance.log_path.display().to_string(),
        });
        let needed = self.process.health.healthy_threshold;
        let on_probe = |probe: &health::Probe, consecutive| {
            run.sink.progress(EventKind::Probe {
                component: run.name(),
                ok: probe.ok,
                detail: probe.to_string(),
                consecutive,
                needed,
            })
        };
        let gate = tokio::select! {
            gate = health::wait_healthy(&instance, self.process, on_probe) => gate,
            who = run.abort.raised_by() => {
                self.started = Some(instance);
                return Event::Abort { who };
            }
        };
        match gate {
            Ok(after) => {
                run.emit(EventKind::Healthy {
                    component: run.name(),
                    after_ms: after.as_millis() as u64,
                });
                self.started = Some(instance);
                Event::Started
            }
            Err(failure) => {
                stop(run.shared, &instance, self.process).await;
                step_failed(DeployError::Unhealthy {
                    failure,
                    tail: instance.log_tail(12),
                    log: instance.log_path.clone(),
                })
            }
        }
    }

    /// The atomic switch: the route points at the new instance from the next request on.
    pub(super) fn switch(&mut self, run: &Run<'_>) -> Event {
        let Some(instance) = self.started.take() else {
            return Event::Failed(Failure::Step("internal error: nothing started".into()));
        };
        let new = run.component.new_serving(instance);
        self.old = run.component.switch_to(Some(new.clone()));
        run.emit(EventKind::Switched {
            component: run.name(),
            from: self.old.as_ref().map(|o| o.instance.release.to_string()),
            to: run.release.to_string(),
        });
        self.new = Some(new);
        Event::Switched
    }

    /// Before the switch: nothing routes to the new instance, the old release never noticed.
    pub(super) async fn stop_new(&mut self, run: &Run<'_>) -> Event {
        if let Some(instance) = self.started.take() {
            stop(run.shared, &instance, self.process).await;
        }
        Event::Stopped
    }

    /// The new instance and its release become the committed serving ones.
    pub(super) fn commit(&self, run: &Run<'_>) -> Result<(), DeployError> {
        let store = &run.shared.store;
        let Some(new) = &self.new else {
            unreachable!("the machine commits only after the switch");
        };
        store
            .set_instance_state(new.instance.id, InstanceState::Serving)
            .and_then(|()| store.set_active(run.component.name(), run.release.as_str()))
            .map_err(|source| DeployError::Commit {
                release: run.release.clone(),
                source,
            })
    }

    /// The effects that only a process has.
    pub(super) async fn perform(&mut self, run: &Run<'_>, state: &State, effect: &Effect) -> Event {
        let Some(new) = self.new.clone() else {
            return Event::Failed(Failure::Step(format!(
                "internal error: {effect:?} before the switch"
            )));
        };
        match effect {
            Effect::DrainOld { until } => self.drain_old(run, &new, *until).await,
            Effect::Observe { at } => self.observe(run, state, &new, *at).await,
            Effect::RetireOld { drain_until } => {
                if let Some(old) = self.old.take() {
                    retire(run, &old, *drain_until).await;
                }
                Event::Stopped
            }
            Effect::SwapBack => self.swap_back(run, state).await,
            Effect::KeepOrDropNew => {
                if new.instance.exit_status().is_some() {
                    run.component.switch_to(None);
                } else if let Err(e) = run
                    .shared
                    .store
                    .set_active(run.component.name(), new.instance.release.as_str())
                {
                    tracing::error!("cannot commit {} as active: {e}", new.instance.release);
                }
                Event::Stopped
            }
            Effect::RetireNew => {
                let drain = run.config.drain_timeout.get();
                retire(run, &new, Instant::now() + drain).await;
                Event::Stopped
            }
            other => Event::Failed(Failure::Step(format!(
                "internal error: {other:?} is not a process step"
            ))),
        }
    }

    /// The new instance is watched while the old one drains (a WebSocket may keep the drain
    /// going for drain_timeout): if it dies, traffic goes back at once.
    async fn drain_old(&self, run: &Run<'_>, new: &Serving, until: Instant) -> Event {
        let Some(old) = &self.old else {
            return Event::Drained { remaining: 0 };
        };
        let left = until.saturating_duration_since(Instant::now());
        tokio::select! {
            remaining = old.upstream.drain(left) => {
                run.drained(&old.instance.release, remaining);
                Event::Drained { remaining }
            }
            status = new.instance.exited() => Event::NewExited { status },
            who = run.abort.raised_by() => Event::Abort { who },
        }
    }

    /// Waits until `at`, then one probe and one read of the traffic counters. A progress tick
    /// goes out at most once a second.
    async fn observe(&mut self, run: &Run<'_>, state: &State, new: &Serving, at: Instant) -> Event {
        tokio::select! {
            status = new.instance.exited() => return Event::NewExited { status },
            who = run.abort.raised_by() => return Event::Abort { who },
            _ = tokio::time::sleep_until(at.into()) => {}
        }
        let health = &self.process.health;
        let probe = tokio::select! {
            status = new.instance.exited() => return Event::NewExited { status },
            who = run.abort.raised_by() => return Event::Abort { who },
            probe = health::probe(new.instance.addr, self.process, health.timeout.get()) => probe,
        };
        let stall = new.upstream.stats.stall();
        let stats = new.upstream.stats.snapshot();
        let now = Instant::now();
        if let State::Stabilizing { since, until, .. } = state {
            let last = *self.last_tick.get_or_insert(*since);
            if now.duration_since(last) >= Duration::from_secs(1) {
                self.last_tick = Some(now);
                run.sink.progress(EventKind::Stabilizing {
                    component: run.name(),
                    elapsed_ms: now.duration_since(*since).as_millis() as u64,
                    total_ms: until.duration_since(*since).as_millis() as u64,
                    requests: stats.requests,
                    failed: stats.failed,
                });
            }
        }
        Event::Observed(Observation {
            probe_ok: probe.ok,
            probe: probe.to_string(),
            stats,
            stall,
        })
    }

    /// Points traffic back at the old release: its warm instance, or, if that died meanwhile,
    /// a cold start of it.
    async fn swap_back(&mut self, run: &Run<'_>, state: &State) -> Event {
        let Some(old) = self.old.take() else {
            return Event::Failed(Failure::Step("nothing to swap back to".into()));
        };
        let back = if old.instance.exit_status().is_none() {
            old
        } else {
            run.warn(format!(
                "the old instance {}; restarting {} before rolling back",
                old.instance.exit_status().unwrap_or_default(),
                old.instance.release
            ));
            let release = old.instance.release.clone();
            match start_healthy(run.shared, run.component, &release, |_| {}, |_, _| {}).await {
                Ok((instance, _)) => run.component.new_serving(instance),
                Err(e) => return Event::Failed(Failure::Step(e.to_string())),
            }
        };
        let to = back.instance.release.to_string();
        run.component.switch_to(Some(back));
        let reason = match state {
            State::RollingBack { reason, .. } => reason.to_string(),
            _ => String::new(),
        };
        run.emit(EventKind::RolledBack {
            component: run.name(),
            to: Some(to),
            reason,
        });
        Event::SwappedBack
    }
}

/// Drains an instance that no longer gets traffic (until `drain_deadline`), closes the tunnels
/// still open and our pooled connections to it, then stops it.
async fn retire(run: &Run<'_>, old: &Serving, drain_deadline: Instant) {
    let stop_timeout = run
        .config
        .process()
        .map_or(Duration::from_secs(10), |p| p.stop_timeout.get());
    let left = drain_deadline.saturating_duration_since(Instant::now());
    let remaining = old.upstream.drain(left).await;
    // With no time left, the drain after the switch already said what remained.
    if remaining > 0 && !left.is_zero() {
        run.drained(&old.instance.release, remaining);
    }
    old.upstream.close_tunnels();
    old.upstream.close_pool();
    let status = old.instance.stop(stop_timeout).await;
    if let Err(e) = run
        .shared
        .store
        .set_instance_state(old.instance.id, InstanceState::Stopped)
    {
        tracing::warn!("cannot record stopped instance: {e}");
    }
    run.emit(EventKind::Stopped {
        component: run.name(),
        release: old.instance.release.to_string(),
        status,
    });
}

/// Stops an instance that never served and records it.
async fn stop(shared: &Shared, instance: &Instance, process: &ProcessConfig) {
    instance.stop(process.stop_timeout.get()).await;
    let _ = shared
        .store
        .set_instance_state(instance.id, InstanceState::Stopped);
}

/// `{release_dir}` of a release: the unpacked tree of a bundle, else the release directory.
pub fn launch_dir(shared: &Shared, component: &ComponentRuntime, release: &ReleaseId) -> PathBuf {
    let name = &component.config().name;
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
    let config = component.config();
    let process = config
        .process()
        .expect("only process components have instances");
    let instance = launch(shared, component, release)?;
    on_started(&instance);
    match health::wait_healthy(&instance, process, on_probe).await {
        Ok(after) => Ok((instance, after)),
        Err(failure) => {
            stop(shared, &instance, process).await;
            Err(DeployError::Unhealthy {
                failure,
                tail: instance.log_tail(12),
                log: instance.log_path.clone(),
            })
        }
    }
}

/// Starts an instance of a stored release on a private port and records it (state `starting`).
fn launch(
    shared: &Shared,
    component: &ComponentRuntime,
    release: &ReleaseId,
) -> Result<Instance, DeployError> {
    let config = &component.config();
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
    })?;
    Ok(instance)
}

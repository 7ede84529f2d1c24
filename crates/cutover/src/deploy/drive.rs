//! Runs one deploy by driving [`machine`]: perform the effect it names, feed back the event the
//! effect ended with, until it says `Finish`. Everything a deploy decides is in the machine;
//! this file and the per-kind runners (`process.rs`, `site.rs`, `hook.rs`) only act.

use super::machine::{self, Effect, Event, Failure, Spec, State};
use super::process::ProcessSteps;
use super::run::{step_failed, HookEnd, Run};
use super::site::StaticSteps;
use super::{failpoint, DeployError, DeployPlan};
use crate::config::{ComponentKind, HookConfig};
use crate::protocol::EventKind;
use crate::release::{ReleaseError, ReleaseId, StoredRelease};
use crate::vocab::{DeployKind, Outcome, Phase};
use std::time::{Duration, Instant};

/// The part of a deploy that depends on the component's kind, with what it holds between
/// effects (the instance it started, the site it loaded).
pub(super) enum KindSteps<'c> {
    Process(ProcessSteps<'c>),
    Static(StaticSteps<'c>),
    Hook(&'c HookConfig),
}

/// How a deploy ended: the outcome and, unless it succeeded plainly, why.
pub(super) type Ended = (Outcome, Option<String>);

impl Run<'_> {
    /// The deploy of `plan`, from the gate to its outcome.
    pub(super) async fn execute(&self, plan: &DeployPlan, from: Option<&ReleaseId>) -> Ended {
        let config = &self.config;
        let serving = self.component.serving_release(&self.shared.store);
        // Deploying what already serves is a no-op, once the artifact proved to be the same
        // bytes (storing refuses different bytes under a stored id).
        let already_active = from == Some(&plan.release) && serving.as_ref() == Some(&plan.release);
        if already_active && plan.artifact.is_none() {
            return (Outcome::Succeeded, Some(nothing_to_do(&plan.release)));
        }
        // The gate: nothing starts while the disk is nearly full, the env is not ready, or a
        // required service is down.
        if plan.kind == DeployKind::Deploy && !already_active {
            if let Err(why) = crate::checks::deploy_gate(&self.shared.config, config).await {
                return (
                    Outcome::Failed,
                    Some(DeployError::Gate(Box::new(why)).to_string()),
                );
            }
        }
        let process = config.process();
        let spec = Spec {
            kind: plan.kind,
            runs_instance: process.is_some(),
            has_old: serving.is_some(),
            migrations: process.is_some_and(|p| p.migrations.is_some()),
            already_active,
            stabilize: config.stabilize.get(),
            drain: config.drain_timeout.get(),
            probe_every: process.map_or(Duration::from_secs(1), |p| {
                p.health.interval.get().max(Duration::from_millis(50))
            }),
            checks: (&config.stabilize_checks).into(),
            // A hook's start is its switch: there is nothing to hold before (the daemon
            // refuses `--hold` for one; this keeps the machine from waiting on it anyway).
            holds: plan.hold.is_some() && !matches!(config.kind, ComponentKind::Hook(_)),
        };
        let mut steps = match &config.kind {
            ComponentKind::Process(process) => KindSteps::Process(ProcessSteps::new(process)),
            ComponentKind::Static(site) => KindSteps::Static(StaticSteps::new(site)),
            ComponentKind::Hook(hook) => KindSteps::Hook(hook),
        };
        self.drive(plan, &spec, &mut steps).await
    }

    async fn drive(&self, plan: &DeployPlan, spec: &Spec, steps: &mut KindSteps<'_>) -> Ended {
        let (mut state, mut effect) = machine::start();
        loop {
            if let Effect::Finish { outcome, reason } = effect {
                let reason = match (&reason, spec.already_active) {
                    (None, true) => Some(nothing_to_do(&plan.release)),
                    _ => reason.map(|r| r.to_string()),
                };
                return (outcome, reason);
            }
            // An abort is looked at before every step (the waits also watch for it): where the
            // machine takes it, it goes first; where it does not (committing, retiring), the
            // step goes on.
            if let Some(who) = self.abort.who() {
                if let Some(next) =
                    machine::apply(spec, &state, Event::Abort { who }, Instant::now())
                {
                    self.on_transition(&state, &next.0);
                    (state, effect) = next;
                    continue;
                }
            }
            let event = self.perform(plan, spec, &state, &effect, steps).await;
            let Some(next) = machine::apply(spec, &state, event.clone(), Instant::now()) else {
                // Each effect ends in an event its state takes: this is a bug, not bad input.
                tracing::error!(state = ?state, event = ?event, "the deploy machine ignored its own step's event");
                return (
                    Outcome::Failed,
                    Some(format!("internal error: {event:?} in {state:?}")),
                );
            };
            self.on_transition(&state, &next.0);
            (state, effect) = next;
        }
    }

    /// What is said when a state is left rather than done: the last stabilization tick before
    /// a verdict against the new release (so the figures shown last are what caused the
    /// rollback), and how long stabilization took.
    fn on_transition(&self, from: &State, to: &State) {
        let State::Stabilizing {
            committed: true,
            since,
            until,
            ..
        } = from
        else {
            return;
        };
        if matches!(to, State::Stabilizing { .. }) {
            return;
        }
        crate::metrics::global()
            .stabilization_duration
            .get_or_create(&crate::metrics::ComponentLabels {
                component: self.name(),
            })
            .observe(since.elapsed().as_secs_f64());
        if let (State::RollingBack { .. }, Some(new)) = (to, self.component.serving()) {
            let stats = new.upstream.stats.snapshot();
            self.sink.progress(EventKind::Stabilizing {
                component: self.name(),
                elapsed_ms: since.elapsed().as_millis() as u64,
                total_ms: until.duration_since(*since).as_millis() as u64,
                requests: stats.requests,
                failed: stats.failed,
            });
        }
    }

    async fn perform(
        &self,
        plan: &DeployPlan,
        spec: &Spec,
        state: &State,
        effect: &Effect,
        steps: &mut KindSteps<'_>,
    ) -> Event {
        match (effect, steps) {
            (Effect::CommitPhase(phase), _) => self.commit_phase(*phase).await,
            (Effect::Store, _) => match self.store(plan, spec.already_active).await {
                Ok(()) => Event::Stored,
                Err(e) => step_failed(e),
            },
            (Effect::Migrate { apply }, _) => self.migrate_step(plan, *apply).await,
            (Effect::CommitActive { stable }, steps) => {
                if let Some(stats) = stable {
                    self.emit(EventKind::Stable {
                        component: self.name(),
                        requests: stats.requests,
                        failed: stats.failed,
                    });
                }
                let committed = match steps {
                    KindSteps::Process(p) => p.commit(self),
                    _ => self
                        .shared
                        .store
                        .set_active(self.component.name(), self.release.as_str())
                        .map_err(DeployError::from),
                };
                match committed {
                    Ok(()) => Event::Committed,
                    Err(e) => step_failed(e),
                }
            }
            (Effect::Start, KindSteps::Process(p)) => p.start(self).await,
            (Effect::Start, KindSteps::Static(s)) => s.load(self),
            (Effect::Start, KindSteps::Hook(hook)) => match self.run_hook(hook).await {
                Ok(()) => Event::Started,
                Err(HookEnd::Aborted(who)) => Event::Abort { who },
                Err(HookEnd::Failed(e)) => step_failed(e),
            },
            (Effect::AwaitGo, KindSteps::Process(p)) => self.await_go(p.started()).await,
            (Effect::AwaitGo, _) => self.await_go(None).await,
            (Effect::Switch, KindSteps::Process(p)) => p.switch(self),
            (Effect::Switch, KindSteps::Static(s)) => s.switch(self),
            (Effect::Switch, KindSteps::Hook(_)) => {
                self.emit(EventKind::Switched {
                    component: self.name(),
                    from: None,
                    to: self.release.to_string(),
                });
                crate::metrics::active(self.component.name(), Some(self.release.as_str()));
                Event::Switched
            }
            (Effect::StopNew, KindSteps::Process(p)) => p.stop_new(self).await,
            (Effect::StopNew, _) => Event::Stopped,
            (effect, KindSteps::Process(p)) => p.perform(self, state, effect).await,
            (effect, _) => Event::Failed(Failure::Step(format!(
                "internal error: {effect:?} for a component without instances"
            ))),
        }
    }

    /// Commits the phase before its action starts.
    async fn commit_phase(&self, phase: Phase) -> Event {
        if let Err(e) = self.shared.store.set_phase(self.deploy_id, phase) {
            return Event::PhaseNotCommitted(e.to_string());
        }
        failpoint(&format!(
            "{}:{}:{}",
            self.component.name(),
            phase.as_str(),
            self.release
        ))
        .await;
        Event::PhaseCommitted
    }

    /// prepare: store and verify, while the old release keeps serving untouched.
    async fn store(&self, plan: &DeployPlan, already_active: bool) -> Result<(), DeployError> {
        let config = &self.config;
        // `reused`: the release was already stored (a rollback): nothing is copied.
        let (stored, reused) = match &plan.artifact {
            Some(source) => (self.store_artifact(source).await?, false),
            None => match self.shared.releases.get(&config.name, &plan.release) {
                Ok(stored) => (stored, true),
                // A hook may have nothing to store: the release lives elsewhere.
                Err(ReleaseError::NotStored { .. })
                    if matches!(config.kind, ComponentKind::Hook(_)) =>
                {
                    let stored = self
                        .shared
                        .releases
                        .store_metadata_only(&config.name, &plan.release)?;
                    (stored, false)
                }
                Err(e) => return Err(e.into()),
            },
        };
        if already_active {
            return Ok(());
        }
        self.shared.store.insert_release(&stored)?;
        self.emit(EventKind::Stored {
            component: self.name(),
            release: stored.id.to_string(),
            sha256: stored.sha256.clone(),
            size: stored.size,
            reused,
        });
        Ok(())
    }

    /// Stores the artifact the way the component kind needs it (blocking I/O off the runtime).
    async fn store_artifact(&self, source: &std::path::Path) -> Result<StoredRelease, DeployError> {
        let releases = self.shared.releases.clone();
        let config = (*self.config).clone();
        let (id, source) = (self.release.clone(), source.to_owned());
        let data_dir = self.shared.config.daemon.data_dir.clone();
        let headroom = crate::diskspace::headroom(&self.shared.config);
        tokio::task::spawn_blocking(move || -> Result<StoredRelease, DeployError> {
            // Refused before a byte is copied: a store that fills the disk takes the state
            // database (and so every later deploy) down with it.
            crate::diskspace::ensure_room(&data_dir, &source, headroom)
                .map_err(DeployError::NoRoom)?;
            let name = &config.name;
            let stored = match &config.kind {
                ComponentKind::Static(_) => releases.store_bundle(name, &id, &source)?,
                _ if crate::bundle::is_bundle(&source) => {
                    releases.store_bundle(name, &id, &source)?
                }
                ComponentKind::Process(process) => {
                    releases.store_file(name, &id, &source, process.executes_artifact())?
                }
                ComponentKind::Hook(_) => releases.store_file(name, &id, &source, false)?,
            };
            // A bundle must carry the program its command names.
            if let (ComponentKind::Process(process), crate::release::ArtifactKind::Bundle) =
                (&config.kind, stored.kind)
            {
                let dir = releases.bundle_dir(name, &id);
                let program =
                    process.command[0].replace("{release_dir}", &dir.display().to_string());
                if std::path::Path::new(&program).starts_with(&dir) {
                    crate::release::check_bundle_program(&dir, std::path::Path::new(&program))?;
                }
            }
            Ok(stored)
        })
        .await?
    }
}

fn nothing_to_do(release: &ReleaseId) -> String {
    format!("{release} is already active; nothing to do")
}

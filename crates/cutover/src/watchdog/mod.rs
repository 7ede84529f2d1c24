//! The watchdog: watches the serving instance of a process component for as long as it serves,
//! outside deploys (a deploy watches its own instance until it finalizes).
//!
//! It probes the instance with its health config and watches its process. An instance that
//! exits, or fails `stabilize_checks.unhealthy_threshold` probes in a row (frozen, or answering
//! 5xx), is reported (status, `cutover check`, the `instance_healthy` metric, the `unhealthy`
//! webhook) and replaced: while the replacement starts, new requests are held by the route
//! (up to `restart.hold_requests`) instead of failing at once; the replacement must pass the
//! health gate before it gets traffic; then the old process group gets SIGCONT (a SIGSTOPped
//! process ignores SIGTERM until then), SIGTERM, and SIGKILL after `stop_timeout`. After
//! `restart.max_restarts` restarts within `restart.window` it rolls back to the previous
//! release, if kept, recorded as a deploy of kind rollback by "cutover (crash loop)".
//!
//! The decisions are in [`policy`] (pure, unit tested); this module carries them out.

mod policy;

pub use policy::{Effect, Input, Policy, Watch};

use crate::component::{ComponentRuntime, Serving};
use crate::config::ProcessConfig;
use crate::deploy::{self, Shared};
use crate::health;
use crate::notify::EventKind as Notify;
use crate::protocol::{HealthState, HealthStatus};
use crate::release::{now_millis, ReleaseId};
use crate::shutdown::Shutdown;
use crate::vocab::{DeployKind, InstanceState, Outcome, Phase};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Who a crash-loop rollback is recorded as (history, and the rollback target's choice).
const CRASH_LOOP: &str = "cutover (crash loop)";

/// Starts the watchdog of a process component; it ends with the daemon.
pub fn spawn(shared: Arc<Shared>, component: Arc<ComponentRuntime>, shutdown: Shutdown) {
    let Some(process) = component.config().process().cloned() else {
        return;
    };
    let policy = Policy {
        unhealthy_threshold: component.config().stabilize_checks.unhealthy_threshold,
        max_restarts: process.restart.max_restarts,
        window: process.restart.window.get(),
        rollback: process.restart.rollback,
    };
    let runner = Runner {
        shared,
        component,
        process,
        shutdown,
        watch: Watch::new(policy),
        watched: None,
        last_probe: None,
        confirmed: false,
        reason: None,
        last_probe_answered: true,
    };
    tokio::spawn(runner.run());
}

/// Why the watched instance is being replaced.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cause {
    Exited,
    Unhealthy,
}

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Cause::Exited => "exited",
            Cause::Unhealthy => "unhealthy",
        }
    }
}

struct Runner {
    shared: Arc<Shared>,
    component: Arc<ComponentRuntime>,
    process: ProcessConfig,
    shutdown: Shutdown,
    watch: Watch,
    /// The instance the watch is about (None: nothing serves).
    watched: Option<i64>,
    /// The last probe: when, whether it passed, what it saw.
    last_probe: Option<(i64, bool, String)>,
    /// The instance proved healthy (a probe passed, or it passed a restart's health gate).
    confirmed: bool,
    /// Why the instance is unhealthy.
    reason: Option<String>,
    /// The last probe got an HTTP answer (a 500, say): the instance still serves, so requests
    /// are not held while it is replaced. No answer (frozen, hung) means held.
    last_probe_answered: bool,
}

impl Runner {
    fn name(&self) -> &str {
        self.component.name()
    }

    async fn run(mut self) {
        let interval = self.process.health.interval.get();
        loop {
            if self.shutdown.is_triggered() {
                return;
            }
            // A deploy watches its own instance; look again once it is over.
            if self.component.deploying().is_some() {
                let mut shutdown = self.shutdown.clone();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    _ = shutdown.wait() => return,
                }
            }
            let serving = self.component.serving();
            let id = serving.as_ref().map(|s| s.instance.id);
            if id != self.watched {
                self.start_watching(id);
            }
            let input = match &serving {
                Some(serving) => match self.observe(serving).await {
                    Some(input) => input,
                    None => return,
                },
                // Nothing serves although a release is active (it could not be started at
                // start-up, or a deploy's rollback found nothing to go back to): start it.
                // Unless a reload added the component back: it serves from its next deploy.
                None if !self.component.awaiting_deploy()
                    && self.shared.store.active_release(self.name()).is_some() =>
                {
                    self.reason = Some("nothing serves the active release".into());
                    Input::Exited
                }
                None => {
                    if !self.pause(Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            };
            // A deploy that started meanwhile owns the component now.
            if self.component.deploying().is_some()
                || self.component.serving().map(|s| s.instance.id) != id
                || self.shutdown.is_triggered()
            {
                continue;
            }
            let exited = input == Input::Exited;
            let mut next = Some(input);
            while let Some(input) = next.take() {
                let effects = self.watch.apply(input, Instant::now());
                self.publish();
                for effect in effects {
                    if let Some(follow_up) = self.carry_out(effect, serving.as_ref()).await {
                        next = Some(follow_up);
                    }
                }
            }
            self.publish();
            if !exited && !self.pause(interval).await {
                return;
            }
        }
    }

    fn start_watching(&mut self, id: Option<i64>) {
        self.watched = id;
        self.watch.apply(Input::Reset, Instant::now());
        self.last_probe = None;
        self.confirmed = false;
        self.reason = None;
        self.publish();
    }

    /// One probe of the serving instance, or its exit; None when the daemon shuts down.
    async fn observe(&mut self, serving: &Serving) -> Option<Input> {
        let health = &self.process.health;
        let probe = tokio::select! {
            status = serving.instance.exited() => {
                self.reason = Some(format!("the serving instance {status}"));
                return Some(Input::Exited);
            }
            probe = health::probe(serving.instance.addr, &self.process, health.timeout.get()) => probe,
            _ = self.shutdown.wait() => return None,
        };
        self.last_probe = Some((now_millis(), probe.ok, probe.to_string()));
        self.last_probe_answered = probe.status.is_some();
        if probe.ok {
            self.confirmed = true;
        } else {
            self.reason = Some(format!(
                "{} health probes failed in a row (last: {probe})",
                self.watch.consecutive_failures() + 1
            ));
        }
        Some(Input::Probe { ok: probe.ok })
    }

    /// Sleeps, unless the daemon shuts down (false) or the watched instance exits (true, early).
    async fn pause(&mut self, period: Duration) -> bool {
        let serving = self.component.serving();
        let exited = async {
            match &serving {
                Some(s) if Some(s.instance.id) == self.watched => {
                    s.instance.exited().await;
                }
                _ => std::future::pending::<()>().await,
            }
        };
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(period) => true,
            _ = exited => true,
            _ = shutdown.wait() => false,
        }
    }

    fn publish(&self) {
        let Some(id) = self.watched else { return };
        let now = Instant::now();
        let state = if self.watch.is_unhealthy() {
            HealthState::Unhealthy
        } else if self.confirmed {
            HealthState::Healthy
        } else {
            HealthState::Unknown
        };
        let (at, ok, detail) = match &self.last_probe {
            Some((at, ok, detail)) => (Some(*at), Some(*ok), Some(detail.clone())),
            None => (None, None, None),
        };
        self.component.health.set(
            id,
            HealthStatus {
                state,
                consecutive_failures: self.watch.consecutive_failures(),
                last_probe_at: at,
                last_probe_ok: ok,
                last_probe: detail,
                reason: (state == HealthState::Unhealthy)
                    .then(|| self.reason.clone())
                    .flatten(),
                restarts: self.watch.restarts_within_window(now),
            },
        );
        if state != HealthState::Unknown {
            crate::metrics::global()
                .instance_healthy
                .get_or_create(&crate::metrics::ComponentLabels {
                    component: self.name().to_owned(),
                })
                .set(i64::from(state == HealthState::Healthy));
        }
    }

    /// Carries out one decision; returns what came of a restart, to be decided on in turn.
    async fn carry_out(&mut self, effect: Effect, watched: Option<&Serving>) -> Option<Input> {
        let release = watched.map(|s| s.instance.release.to_string());
        match effect {
            Effect::ReportUnhealthy => {
                let why = self.reason.clone().unwrap_or_default();
                tracing::error!(
                    component = self.name(),
                    release = release.as_deref().unwrap_or("-"),
                    "unhealthy: {why}"
                );
                self.publish();
                self.shared.notify(
                    Notify::Unhealthy,
                    self.name(),
                    release.as_deref(),
                    format!("{} is unhealthy: {why}; restarting it", self.name()),
                );
                None
            }
            Effect::ReportRecovered => {
                tracing::info!(component = self.name(), "healthy again");
                let serving = self.component.serving();
                let release = serving.as_ref().map(|s| s.instance.release.to_string());
                self.shared.notify(
                    Notify::Recovered,
                    self.name(),
                    release.as_deref(),
                    format!(
                        "{} is healthy again ({})",
                        self.name(),
                        release.as_deref().unwrap_or("-")
                    ),
                );
                None
            }
            Effect::Restart {
                delay,
                roll_back,
                restarts,
            } => Some(self.replace(watched, delay, roll_back, restarts).await),
        }
    }

    /// Replaces the watched instance (None: nothing serves) after `delay`, with the active
    /// release again or, when `roll_back`, with the previous one. New requests are held
    /// meanwhile.
    async fn replace(
        &mut self,
        watched: Option<&Serving>,
        delay: Duration,
        roll_back: bool,
        restarts: u32,
    ) -> Input {
        let cause = match watched {
            Some(s) if s.instance.exit_status().is_none() => Cause::Unhealthy,
            _ => Cause::Exited,
        };
        let Some(route) = self.component.route().cloned() else {
            return Input::Reset; // only process components are watched
        };
        // An instance that died answers nothing at all: requests wait (each up to
        // hold_requests) for the replacement, through the backoff too, rather than failing at
        // once (a crash loop's gaps were thousands of 502s).
        if cause == Cause::Exited {
            route.hold(self.process.restart.hold_requests.get());
        }
        if let Some(dead) = watched.filter(|_| cause == Cause::Exited) {
            // Whatever the leader left behind in its group goes too (it may hold the port).
            dead.instance.stop(Duration::ZERO).await;
            let _ = self
                .shared
                .store
                .set_instance_state(dead.instance.id, InstanceState::Stopped);
        }
        let active = self.shared.store.active_release(self.name());
        let Some(current) = active.or_else(|| watched.map(|s| s.instance.release.clone())) else {
            route.release_hold();
            return Input::Reset;
        };
        let target = if roll_back {
            self.rollback_target(&current)
        } else {
            None
        };
        if target.is_none() {
            tracing::error!(component = self.name(), release = %current,
                "the serving instance {}; restarting it in {delay:?}",
                self.reason.as_deref().unwrap_or("failed"));
        }
        // Back off without holding the component: an operator's deploy or rollback may go first
        // (its switch ends the hold).
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait() => {
                route.release_hold();
                return Input::Reset;
            }
        }
        let who = match (&target, cause) {
            (Some(_), _) => CRASH_LOOP,
            (None, Cause::Exited) => "cutover (restart after exit)",
            (None, Cause::Unhealthy) => "cutover (restart: unhealthy)",
        };
        let to = target.clone().unwrap_or_else(|| current.clone());
        let claim = match self.component.claim(&to, who) {
            Ok(claim) => claim,
            Err(_) => {
                // A deploy got there first; it decides what serves now.
                route.release_hold();
                return Input::Reset;
            }
        };
        let watched_id = watched.map(|s| s.instance.id);
        if self.component.serving().map(|s| s.instance.id) != watched_id {
            route.release_hold();
            return Input::Reset; // a deploy switched meanwhile
        }
        // A frozen or hung instance answers nothing: its requests are held while the
        // replacement starts. One that answers (5xx, say) keeps getting them meanwhile.
        if cause == Cause::Unhealthy && !self.last_probe_answered {
            route.hold(self.process.restart.hold_requests.get());
        }
        let outcome = match &target {
            Some(previous) => {
                let reason = format!(
                    "{current} was restarted {restarts} times within {} and failed again ({}); rolled back to {previous}",
                    humantime::format_duration(self.process.restart.window.get()),
                    self.reason.as_deref().unwrap_or("unhealthy"),
                );
                self.roll_back(&claim, &current, previous, reason).await
            }
            None => self.start(&to).await.map_err(|e| {
                tracing::error!(component = self.name(), release = %to, "restart failed: {e}");
            }),
        };
        drop(claim);
        match outcome {
            Ok(new) => {
                crate::metrics::global()
                    .restarts
                    .get_or_create(&crate::metrics::CauseLabels {
                        component: self.name().to_owned(),
                        cause: cause.as_str().to_owned(),
                    })
                    .inc();
                if let Some(old) = self.component.switch_to(Some(new.clone())) {
                    retire(old, &self.shared, &self.process);
                }
                tracing::info!(component = self.name(), release = %new.instance.release, pid = new.instance.pid, "restarted");
                // The replacement is ours: keep the restart count across it.
                self.watched = Some(new.instance.id);
                self.last_probe = None;
                self.confirmed = true;
                Input::Replaced {
                    rolled_back: target.is_some(),
                }
            }
            Err(()) => {
                // Nothing better is coming soon: requests fail fast again until the next try.
                route.release_hold();
                Input::RestartFailed
            }
        }
    }

    /// The release to roll a crash loop back to: the one most recently active before, still
    /// kept, and not itself rolled away from by a crash loop since (after a rollback from v3 to
    /// v2, v3 is the committed `previous`: a crash loop of v2 must not go back to it).
    fn rollback_target(&self, current: &ReleaseId) -> Option<ReleaseId> {
        let store = &self.shared.store;
        let abandoned = store
            .rolled_back_from(self.name(), CRASH_LOOP)
            .unwrap_or_default();
        let mut candidates: Vec<_> = store
            .release_records(self.name())
            .ok()?
            .into_iter()
            .filter_map(|r| Some((r.last_active_at?, r.release.id)))
            .filter(|(active_at, id)| {
                id != current
                    && abandoned
                        .get(id.as_str())
                        .is_none_or(|left| left < active_at)
                    && self
                        .shared
                        .releases
                        .get(&self.component.config().name, id)
                        .is_ok()
            })
            .collect();
        candidates.sort_by_key(|(active_at, _)| std::cmp::Reverse(*active_at));
        let target = candidates.into_iter().next().map(|(_, id)| id);
        if target.is_none() {
            tracing::warn!(
                component = self.name(),
                "{current} keeps failing, but no earlier good release is kept to roll back to; restarting it"
            );
        }
        target
    }

    /// A healthy instance of `release`, not yet serving.
    async fn start(&self, release: &ReleaseId) -> Result<Serving, deploy::DeployError> {
        let (instance, _) =
            deploy::start_healthy(&self.shared, &self.component, release, |_| {}, |_, _| {})
                .await?;
        let _ = self
            .shared
            .store
            .set_instance_state(instance.id, InstanceState::Serving);
        Ok(self.component.new_serving(instance))
    }

    /// The crash-loop rollback, recorded like an operator's `cutover rollback`: a deploy of
    /// kind rollback from `current` to `previous`, with the reason.
    async fn roll_back(
        &self,
        claim: &crate::component::DeployClaim,
        current: &ReleaseId,
        previous: &ReleaseId,
        reason: String,
    ) -> Result<Serving, ()> {
        let store = &self.shared.store;
        let who = CRASH_LOOP;
        let deploy_id = match store.begin_deploy(
            None,
            &self.component.config().name,
            DeployKind::Rollback,
            Some(current),
            previous,
            who,
        ) {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(component = self.name(), "cannot record the rollback: {e}");
                return Err(());
            }
        };
        claim.set_deploy_id(deploy_id);
        tracing::error!(component = self.name(), "{reason}");
        let _ = store.add_event(deploy_id, "crash_loop", &reason);
        let _ = store.set_phase(deploy_id, Phase::Starting);
        let started = Instant::now();
        let result = self.start(previous).await;
        let (outcome, recorded) = match &result {
            Ok(_) => {
                // Commit before the switch: a daemon crash right after must not go back to
                // the crash-looping release.
                let _ = store.set_phase(deploy_id, Phase::Finalizing);
                match store.set_active(self.name(), previous.as_str()) {
                    Ok(()) => (Outcome::Succeeded, reason.clone()),
                    Err(e) => (
                        Outcome::Failed,
                        format!("{reason}; cannot commit {previous}: {e}"),
                    ),
                }
            }
            Err(e) => (
                Outcome::Failed,
                format!("{reason}; but {previous} did not start: {e}"),
            ),
        };
        let _ = store.add_event(deploy_id, "deploy_finished", &recorded);
        if let Err(e) = store.finish_deploy(deploy_id, outcome, Some(&recorded)) {
            tracing::error!("cannot record the end of deploy #{deploy_id}: {e}");
        }
        deploy::record_outcome(
            self.name(),
            DeployKind::Rollback,
            outcome,
            started.elapsed(),
            (outcome == Outcome::Succeeded).then_some("crash_loop"),
        );
        match (outcome, result) {
            (Outcome::Succeeded, Ok(new)) => {
                self.shared.notify(
                    Notify::Rollback,
                    self.name(),
                    Some(previous.as_str()),
                    recorded,
                );
                Ok(new)
            }
            (_, result) => {
                if let Ok(new) = result {
                    retire(new, &self.shared, &self.process);
                }
                self.shared.notify(
                    Notify::DeployFailed,
                    self.name(),
                    Some(previous.as_str()),
                    recorded,
                );
                Err(())
            }
        }
    }
}

/// Stops an instance that no longer gets traffic, in the background: SIGCONT first (a
/// SIGSTOPped process would not see SIGTERM, and its in-flight requests may still finish), then
/// SIGTERM to its group and SIGKILL after `stop_timeout`.
fn retire(old: Serving, shared: &Arc<Shared>, process: &ProcessConfig) {
    let shared = shared.clone();
    let stop_timeout = process.stop_timeout.get();
    tokio::spawn(async move {
        // No drain: the instance is dead, frozen or failing its health checks; what it still
        // holds ends with it (tunnels first, so their clients learn at once).
        old.upstream.close_tunnels();
        old.upstream.close_pool();
        if old.instance.exit_status().is_none() {
            // SAFETY: kill(2) on the instance's own process group; no memory is involved.
            unsafe {
                libc::kill(-old.instance.pid, libc::SIGCONT);
            }
        }
        let status = old.instance.stop(stop_timeout).await;
        let _ = shared
            .store
            .set_instance_state(old.instance.id, InstanceState::Stopped);
        tracing::info!(component = %old.instance.component, release = %old.instance.release,
            pid = old.instance.pid, "replaced instance stopped ({status})");
    });
}

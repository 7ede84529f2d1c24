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
//!
//! The order above, and every decision on failure, abort and rollback, is [`machine`]'s (pure,
//! unit tested); `drive.rs` performs its effects, with the per-kind steps in `process.rs`,
//! `site.rs`, `hook.rs` and `migrations.rs`.

mod await_go;
mod drive;
mod error;
mod failure;
mod hook;
pub mod machine;
mod migrations;
mod pipeline;
mod process;
pub mod recovery;
mod run;
mod site;

pub use crate::abort::AbortSignal;
pub use error::DeployError;
pub use pipeline::run_pipeline;
pub use process::{launch_dir, start_healthy};
pub use site::load_site;

use crate::component::{ComponentRuntime, DeployClaim};
use crate::config::Config;
use crate::protocol::{Event, EventKind};
use crate::release::{ReleaseId, ReleaseStore};
use crate::store::Store;
use crate::vocab::{DeployKind, Outcome};
use run::Run;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the daemon shares with every deploy.
pub struct Shared {
    pub config: Arc<Config>,
    pub store: Store,
    pub releases: ReleaseStore,
    /// Webhooks; a failing one never blocks or fails a deploy.
    pub notifier: Option<crate::notify::Notifier>,
}

impl Shared {
    pub fn notify(
        &self,
        kind: crate::notify::EventKind,
        component: &str,
        release: Option<&str>,
        message: String,
    ) {
        if let Some(notifier) = &self.notifier {
            notifier.notify(crate::notify::NotifyEvent::new(
                kind,
                component,
                release.map(str::to_owned),
                message,
            ));
        }
    }
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

/// One component's part of a pipeline.
pub struct DeployPlan {
    pub component: Arc<ComponentRuntime>,
    /// Held for the whole pipeline; `None` for the undo steps of rollback_all, which run under
    /// the claim of the stage they undo.
    pub claim: Option<DeployClaim>,
    pub kind: DeployKind,
    pub release: ReleaseId,
    /// The artifact to store; None when the release is already stored (rollback).
    pub artifact: Option<PathBuf>,
    /// Raised by `cutover abort`; the runners check it in their waits.
    pub abort: AbortSignal,
    /// `cutover deploy --hold`: wait before the switch until released.
    pub hold: Option<crate::hold::SwitchHold>,
}

/// Runs one deploy to its end and records the outcome. Returns the outcome and its reason.
pub async fn deploy_one(
    shared: &Shared,
    pipeline_id: Option<i64>,
    plan: &DeployPlan,
    who: &str,
    sink: &EventSink,
) -> (Outcome, Option<String>) {
    let component = plan.component.clone();
    let from = shared.store.active_release(component.name());
    let deploy_id = match shared.store.begin_deploy(
        pipeline_id,
        &component.config().name,
        plan.kind,
        from.as_ref(),
        &plan.release,
        who,
    ) {
        Ok(id) => id,
        Err(e) => return (Outcome::Failed, Some(e.to_string())),
    };
    if let Some(claim) = &plan.claim {
        claim.set_deploy_id(deploy_id);
    }
    let started = Instant::now();
    use crate::notify::EventKind as Notify;
    let from_text = from
        .as_ref()
        .map_or("(none)".to_owned(), ToString::to_string);
    shared.notify(
        Notify::DeployStarted,
        component.name(),
        Some(plan.release.as_str()),
        format!(
            "{} {} {from_text} -> {} by {who}",
            plan.kind.as_str(),
            component.name(),
            plan.release
        ),
    );
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
        config: component.config(),
        deploy_id,
        release: &plan.release,
        sink,
        abort: &plan.abort,
        hold: plan.hold.as_ref(),
    };
    let (outcome, reason) = run.execute(plan, from.as_ref()).await;
    if let Err(e) = shared
        .store
        .finish_deploy(deploy_id, outcome, reason.as_deref())
    {
        tracing::error!("cannot record the end of deploy #{deploy_id}: {e}");
    }
    if let Err(e) = prune(shared, &component, &plan.release) {
        run.warn(format!("release retention failed: {e}"));
    }
    record_metrics(component.name(), plan.kind, outcome, started.elapsed());
    let (kind, what) = match outcome {
        Outcome::Succeeded => (Notify::DeploySucceeded, "is live".to_owned()),
        Outcome::RolledBack => (Notify::Rollback, "was rolled back automatically".to_owned()),
        Outcome::Failed | Outcome::Interrupted => (Notify::DeployFailed, "failed".to_owned()),
    };
    let why = reason
        .as_deref()
        .map(|r| format!(": {}", r.lines().next().unwrap_or_default()))
        .unwrap_or_default();
    shared.notify(
        kind,
        component.name(),
        Some(plan.release.as_str()),
        format!("{} {} {what}{why}", component.name(), plan.release),
    );
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

fn record_metrics(component: &str, kind: DeployKind, outcome: Outcome, took: Duration) {
    let rollback = match (kind, outcome) {
        (_, Outcome::RolledBack) => Some("automatic"),
        (DeployKind::Rollback, Outcome::Succeeded) => Some("manual"),
        _ => None,
    };
    record_outcome(component, kind, outcome, took, rollback);
}

/// The metrics of one finished deploy; `rollback`: how it rolled back, if it did.
pub(crate) fn record_outcome(
    component: &str,
    kind: DeployKind,
    outcome: Outcome,
    took: Duration,
    rollback: Option<&str>,
) {
    let m = crate::metrics::global();
    let labels = |outcome: &str| crate::metrics::OutcomeLabels {
        component: component.to_owned(),
        kind: kind.as_str().to_owned(),
        outcome: outcome.to_owned(),
    };
    m.deploys.get_or_create(&labels(outcome.as_str())).inc();
    if let Some(how) = rollback {
        m.rollbacks.get_or_create(&labels(how)).inc();
    }
    m.deploy_duration
        .get_or_create(&crate::metrics::ComponentLabels {
            component: component.to_owned(),
        })
        .observe(took.as_secs_f64());
}

/// Test builds only: `CUTOVER_TEST_PAUSE_AFTER=component:phase:release` parks a deploy right
/// after that phase is committed, so the crash-consistency tests can `kill -9` the daemon at
/// each step. Compiled out of release builds.
async fn failpoint(step: &str) {
    if cfg!(debug_assertions) {
        if let Ok(target) = std::env::var("CUTOVER_TEST_PAUSE_AFTER") {
            if target == step {
                tracing::warn!("failpoint: pausing after {target}");
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        }
    }
}

/// Applies retention (see [`crate::retention`]) after a deploy of `component` to `latest` ended,
/// whatever its outcome: failed releases must not pile up on the disk either.
fn prune(
    shared: &Shared,
    component: &ComponentRuntime,
    latest: &ReleaseId,
) -> Result<(), DeployError> {
    let name = component.name();
    let state = shared.store.component_state(name)?;
    let serving = component.serving_release(&shared.store);
    let committed: Vec<ReleaseId> = [state.active, state.previous]
        .into_iter()
        .flatten()
        .filter_map(|id| ReleaseId::parse(&id).ok())
        .collect();
    let mut protected: Vec<&ReleaseId> = committed.iter().chain(serving.as_ref()).collect();
    protected.push(latest);
    let records = shared.store.release_records(name)?;
    let candidates: Vec<crate::retention::Candidate> = records.iter().map(Into::into).collect();
    for id in crate::retention::to_prune(&candidates, &protected, component.config().keep_releases)
    {
        // Files first, then the mark; one release failing to go does not stop the others.
        if let Err(e) = shared.releases.remove(&component.config().name, &id) {
            tracing::warn!(component = name, release = %id, "cannot prune: {e}");
            continue;
        }
        shared.store.mark_pruned(name, id.as_str())?;
        tracing::info!(component = name, release = %id, "pruned release");
    }
    Ok(())
}

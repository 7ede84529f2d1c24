//! A pipeline: the deploys of several components, ordered by `after` as a DAG.
//!
//! A stage starts once every stage it comes `after` (among those being deployed) finalized;
//! stages that do not depend on each other run at the same time. Once a stage fails (or the
//! pipeline is aborted) no further stage starts: the running ones go on to their own end, the
//! others are reported `skipped`; then `on_failure = "rollback_all"` undoes the stages that
//! finalized, newest first.

use super::{deploy_one, DeployPlan, EventSink, Shared};
use crate::config::OnFailure;
use crate::protocol::{outcome_words, EventKind};
use crate::release::ReleaseId;
use crate::vocab::{DeployKind, Outcome};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::sync::Arc;

#[derive(Clone, Copy, PartialEq, Eq)]
enum StageState {
    Pending,
    Running,
    Succeeded,
    Failed,
}

/// For each plan, the plans (by index) it must wait for. A component named in `after` but not
/// being deployed is not waited for: it already serves its release.
fn dependencies(plans: &[DeployPlan]) -> Vec<Vec<usize>> {
    plans
        .iter()
        .map(|plan| {
            plan.component
                .config()
                .after
                .iter()
                .filter_map(|dep| {
                    plans
                        .iter()
                        .position(|p| p.component.name() == dep.as_str())
                })
                .collect()
        })
        .collect()
}

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
    let deps = dependencies(&plans);
    let mut state = vec![StageState::Pending; plans.len()];
    let mut outcome = Outcome::Succeeded;
    let mut reason: Option<String> = None;
    // Why no further stage may start: a stage failed, or the pipeline was aborted.
    let mut halted: Option<String> = None;
    // Stages that finalized, in that order, with the release each had before: what
    // rollback_all undoes.
    let mut done: Vec<(usize, Option<ReleaseId>)> = Vec::new();
    let mut running = FuturesUnordered::new();
    loop {
        if halted.is_none() {
            // Every plan shares the pipeline's abort signal.
            halted = plans.first().and_then(|p| p.abort.reason());
        }
        if halted.is_none() {
            for (i, plan) in plans.iter().enumerate() {
                let ready = deps[i].iter().all(|d| state[*d] == StageState::Succeeded);
                if state[i] != StageState::Pending || !ready {
                    continue;
                }
                state[i] = StageState::Running;
                let before = shared.store.active_release(plan.component.name());
                let (shared, who, sink) = (&shared, &who, &sink);
                running.push(async move {
                    let (result, why) =
                        deploy_one(shared, Some(pipeline_id), plan, who, sink).await;
                    (i, before, result, why)
                });
            }
        }
        let Some((i, before, result, why)) = running.next().await else {
            break;
        };
        let name = plans[i].component.name();
        if result == Outcome::Succeeded {
            state[i] = StageState::Succeeded;
            done.push((i, before));
            continue;
        }
        state[i] = StageState::Failed;
        let why = format!("{name}: {}", why.unwrap_or_default());
        if outcome == Outcome::Succeeded {
            outcome = result;
            reason = Some(why);
        } else {
            // Parallel stages can fail together: each says why.
            reason = Some(format!("{}; {why}", reason.unwrap_or_default()));
        }
        let aborted = plans[i].abort.reason();
        halted.get_or_insert_with(|| {
            aborted.unwrap_or_else(|| format!("{name} {}", outcome_words(result)))
        });
    }
    for (i, plan) in plans.iter().enumerate() {
        if state[i] == StageState::Pending {
            sink.send(EventKind::Skipped {
                component: plan.component.name().to_owned(),
                reason: halted.clone().unwrap_or_default(),
            });
        }
    }
    if outcome != Outcome::Succeeded && shared.config.pipeline.on_failure == OnFailure::RollbackAll
    {
        for (i, before) in done.into_iter().rev() {
            let plan = &plans[i];
            let Some(before) = before else {
                sink.send(EventKind::Warning {
                    component: Some(plan.component.name().to_owned()),
                    message: "rollback_all: nothing to roll back to (this was the first release)"
                        .into(),
                });
                continue;
            };
            // The way back is not abortable: it runs under the claim of the stage it undoes.
            let undo = DeployPlan {
                component: plan.component.clone(),
                claim: None,
                kind: DeployKind::Rollback,
                release: before,
                artifact: None,
                abort: Default::default(),
                hold: None,
            };
            let (result, why) = deploy_one(&shared, Some(pipeline_id), &undo, &who, &sink).await;
            if result != Outcome::Succeeded {
                let note = format!(
                    "; rollback_all of {} failed: {}",
                    plan.component.name(),
                    why.unwrap_or_default()
                );
                reason = Some(reason.unwrap_or_default() + &note);
            }
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

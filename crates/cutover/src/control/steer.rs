//! Steering a deploy in progress: `cutover abort` stops it safely, `cutover proceed` releases
//! one held before its switch (`cutover deploy --hold`).

use super::respond::{error, json, who, Body};
use crate::component::ComponentRuntime;
use crate::protocol::*;
use crate::runtime::DaemonState;
use http::{Response, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// The longest a deploy may hold: a hold keeps a second instance of the component running.
const MAX_HOLD: Duration = Duration::from_secs(24 * 3600);

/// How long each stage of a deploy asked to hold may wait; refuses a hold that cannot be.
pub(super) fn hold(
    targets: &[Arc<ComponentRuntime>],
    hold_ms: Option<u64>,
) -> Result<Option<Duration>, String> {
    let Some(ms) = hold_ms else {
        return Ok(None);
    };
    let timeout = Duration::from_millis(ms);
    if timeout.is_zero() || timeout > MAX_HOLD {
        return Err(format!(
            "a hold lasts more than 0s and at most {}",
            humantime::format_duration(MAX_HOLD)
        ));
    }
    if let Some(hook) = targets
        .iter()
        .find(|c| matches!(c.config().kind, crate::config::ComponentKind::Hook(_)))
    {
        return Err(format!(
            "{} is a hook: its command is its switch, so there is no point to hold at before it",
            hook.name()
        ));
    }
    Ok(Some(timeout))
}

/// Raises the abort signal of the pipeline deploying `request.component`; the deploy stops at
/// its next safe point and records "aborted by WHO".
pub(super) fn abort(
    state: &Arc<DaemonState>,
    request: AbortRequest,
    uid: Option<u32>,
) -> Response<Body> {
    let Some(component) = state.component(&request.component) else {
        return error(
            StatusCode::NOT_FOUND,
            super::unknown_component(state, &request.component),
        );
    };
    let who = who(&request.who, uid);
    match component.abort(&who) {
        Ok(info) => json(
            StatusCode::OK,
            &AbortResponse {
                component: component.name().to_owned(),
                deploy_id: info.deploy_id,
                release: info.release,
                reason: format!("aborted by {who}"),
            },
        ),
        Err(why) => error(StatusCode::CONFLICT, why.to_string()),
    }
}

/// Releases the held deploy of `request.component`: it switches next.
pub(super) fn proceed(
    state: &Arc<DaemonState>,
    request: ProceedRequest,
    uid: Option<u32>,
) -> Response<Body> {
    let Some(component) = state.component(&request.component) else {
        return error(
            StatusCode::NOT_FOUND,
            super::unknown_component(state, &request.component),
        );
    };
    match component.proceed(&who(&request.who, uid)) {
        Ok(info) => json(
            StatusCode::OK,
            &ProceedResponse {
                component: component.name().to_owned(),
                deploy_id: info.deploy_id,
                release: info.release,
            },
        ),
        Err(why) => error(StatusCode::CONFLICT, why.to_string()),
    }
}

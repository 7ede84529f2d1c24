//! `cutover reload` and `cutover upgrade` as control requests: changes to the daemon itself.

use super::respond::{error, json, who, Body};
use crate::protocol::*;
use crate::runtime::DaemonState;
use http::{Response, StatusCode};

pub(super) async fn reload(
    state: &DaemonState,
    request: ReloadRequest,
    uid: Option<u32>,
) -> Response<Body> {
    use crate::reload::ReloadError;
    match crate::reload::reload(state, &who(&request.who, uid)).await {
        Ok(done) => json(
            StatusCode::OK,
            &ReloadResponse {
                lines: done.lines,
                summary: done.summary,
            },
        ),
        Err(e @ ReloadError::Invalid(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ ReloadError::Busy(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

pub(super) async fn upgrade(
    state: &DaemonState,
    request: UpgradeRequest,
    uid: Option<u32>,
) -> Response<Body> {
    let who = who(&request.who, uid);
    tracing::info!(%who, "upgrade requested");
    let timeout = request
        .timeout_ms
        .map_or(DEFAULT_UPGRADE_TIMEOUT, std::time::Duration::from_millis)
        .min(MAX_UPGRADE_TIMEOUT);
    match state.upgrade(request.binary, timeout, &who).await {
        Ok(done) => upgraded(done),
        Err(e @ crate::handoff::give::UpgradeError::Busy(_)) => {
            error(StatusCode::CONFLICT, e.to_string())
        }
        Err(e) => {
            tracing::error!("upgrade failed; this daemon goes on serving: {e}");
            error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
    }
}

fn upgraded(done: crate::runtime::Upgraded) -> Response<Body> {
    json(
        StatusCode::OK,
        &UpgradeResponse {
            old_pid: done.old_pid,
            new_pid: done.new_pid,
        },
    )
}

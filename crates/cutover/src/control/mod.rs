//! The control API server: HTTP/1.1 + JSON on a unix socket (mode 0600, or 0660 with
//! `[daemon] socket_group`). See [`crate::protocol`].

mod lifecycle;
mod respond;
mod steer;

use crate::conn_limit::{AcceptBackoff, ConnLimit, Counted};
use crate::deploy::{self, DeployPlan, EventSink};
use crate::fdlimit::CONTROL_CONNECTIONS;
use crate::protocol::*;
use crate::release::ReleaseId;
use crate::runtime::DaemonState;
use crate::shutdown::Shutdown;
use crate::status;
use crate::vocab::DeployKind;
use anyhow::Context;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use respond::{error, json, read_json, who, Body};
use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::UnixListener;
use tokio::sync::mpsc;

/// Binds the control socket: mode 0600 (the daemon's user only), or 0660 owned by `group` so
/// that deployers in that group may use it without becoming the daemon's user.
pub fn bind(path: &Path, group: Option<&str>) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // Never follow a link, and never remove anything but a socket: a live daemon holds the
    // data_dir lock, so a socket here is one left by a daemon that died. Anything else (the
    // config file, a link to it) is a mistake in `control_socket` and must survive it.
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?,
        Ok(_) => anyhow::bail!(
            "control socket {} exists and is not a socket; refusing to replace it (set [daemon] control_socket to a path of its own)",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot listen on control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    if let Some(group) = group {
        share_with_group(path, group)?;
    }
    Ok(listener)
}

/// Gives the socket to `group`, then opens it to that group (in this order: never 0660 with
/// the daemon's own group by mistake).
fn share_with_group(path: &Path, group: &str) -> anyhow::Result<()> {
    let gid = match nix::unistd::Group::from_name(group) {
        Ok(Some(found)) => found.gid,
        Ok(None) => anyhow::bail!(
            "[daemon] socket_group: no group {group:?} on this machine (create it with `groupadd {group}`)"
        ),
        Err(e) => anyhow::bail!("[daemon] socket_group: cannot look up group {group:?}: {e}"),
    };
    nix::unistd::chown(path, None, Some(gid)).map_err(|e| {
        anyhow::anyhow!(
            "[daemon] socket_group: cannot give {} to group {group:?}: {e} (the daemon's user must be a member of it)",
            path.display()
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot open {} to group {group}", path.display()))
}

/// Removes the control socket at shutdown, if a socket is still what is there.
pub fn unbind(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

/// Answers control requests until shutdown. At most [`CONTROL_CONNECTIONS`] are open at once
/// (more wait in the socket backlog): the fd budget reserves that many for the control socket,
/// so it stays serviceable whatever the public load.
pub async fn serve(
    listener: UnixListener,
    state: Arc<DaemonState>,
    mut shutdown: Shutdown,
    gate: crate::accept_gate::AcceptGate,
) -> OpenConnections {
    // Every connection task holds a clone: the receiver sees the channel close when all end.
    let (open_tx, open_rx) = mpsc::channel::<()>(1);
    let limit = ConnLimit::new(CONTROL_CONNECTIONS);
    let mut backoff = AcceptBackoff::new("control");
    loop {
        let accepting = tokio::select! {
            accepting = gate.enter() => accepting,
            _ = shutdown.wait() => break,
        };
        let slot = tokio::select! {
            slot = limit.slot() => slot,
            _ = shutdown.wait() => break,
            _ = gate.closing() => continue,
        };
        let stream = tokio::select! {
            _ = gate.closing() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    backoff.succeeded();
                    stream
                }
                Err(e) => {
                    drop(slot);
                    let delay = backoff.failed(&e);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => continue,
                        _ = shutdown.wait() => break,
                    }
                }
            },
            _ = shutdown.wait() => break,
        };
        drop(accepting);
        let uid = stream.peer_cred().map(|c| c.uid()).ok();
        let stream = Counted::new(stream, slot);
        let state = state.clone();
        let open = open_tx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move {
                    let mut response = route(&state, req, uid).await;
                    stamp_config(&mut response, &state.shared().config);
                    Ok::<_, Infallible>(response)
                }
            });
            // A client that never finishes its request must not keep a slot.
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("control connection ended: {e}");
            }
            drop(open);
        });
    }
    OpenConnections(open_rx)
}

/// The control connections still open when the accept loop stopped.
pub struct OpenConnections(mpsc::Receiver<()>);

impl OpenConnections {
    /// Waits (up to `limit`) until they have all ended, e.g. until the answer to the
    /// `cutover upgrade` that handed this daemon over has gone out.
    pub async fn finish(mut self, limit: std::time::Duration) {
        let _ = tokio::time::timeout(limit, self.0.recv()).await;
    }
}

/// Every answer says which version of the config this daemon runs, so any command can tell
/// its user that the file it read is newer (see `cli/drift.rs`).
fn stamp_config(response: &mut Response<Body>, config: &crate::config::Config) {
    let headers = response.headers_mut();
    for (name, value) in [
        (CONFIG_SHA256_HEADER, config.sha256.clone()),
        (CONFIG_LOADED_AT_HEADER, config.loaded_at.to_string()),
    ] {
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}

async fn route(
    state: &Arc<DaemonState>,
    req: Request<Incoming>,
    uid: Option<u32>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["v1", "status"]) => json(StatusCode::OK, &status::online(state)),
        (Method::GET, ["v1", "certs"]) => certs(state),
        (Method::POST, ["v1", "uploads"]) => match state.uploads.receive(req).await {
            Ok(path) => json(StatusCode::OK, &UploadResponse { path }),
            Err(e) => error(e.status(), e.to_string()),
        },
        (Method::GET, ["v1", "releases", component]) => {
            let shared = state.shared();
            match status::releases(&shared.store, &shared.config, component) {
                Ok(releases) => json(StatusCode::OK, &releases),
                Err(e) => error(e.status(), e.to_string()),
            }
        }
        (Method::GET, ["v1", "history"]) => {
            let limit = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("limit=")))
                .and_then(|n| n.parse().ok())
                .unwrap_or(50usize);
            match status::history(&state.shared().store, limit) {
                Ok(history) => json(StatusCode::OK, &history),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        (Method::POST, ["v1", "deploy"]) => match read_json::<DeployRequest>(req).await {
            Ok(request) => {
                // Only files this daemon received are uploads; a path the deployer named
                // (`--no-upload`) is never removed, wherever it points.
                let uploads: Vec<PathBuf> = request
                    .artifacts
                    .values()
                    .filter(|p| state.uploads.claim(p))
                    .cloned()
                    .collect();
                let response = start_deploy(state, request, &uploads, uid);
                // A refused deploy never runs: its uploads go now, not at the next restart.
                if !response.status().is_success() {
                    for path in &uploads {
                        state.uploads.remove(path);
                    }
                }
                response
            }
            Err(response) => response,
        },
        (Method::POST, ["v1", "rollback"]) => match read_json::<RollbackRequest>(req).await {
            Ok(request) => start_rollback(state, request, uid),
            Err(response) => response,
        },
        (Method::POST, ["v1", "abort"]) => match read_json::<AbortRequest>(req).await {
            Ok(request) => steer::abort(state, request, uid),
            Err(response) => response,
        },
        (Method::POST, ["v1", "proceed"]) => match read_json::<ProceedRequest>(req).await {
            Ok(request) => steer::proceed(state, request, uid),
            Err(response) => response,
        },
        (Method::POST, ["v1", "reload"]) => match read_json::<ReloadRequest>(req).await {
            Ok(request) => lifecycle::reload(state, request, uid).await,
            Err(response) => response,
        },
        (Method::POST, ["v1", "upgrade"]) => match read_json::<UpgradeRequest>(req).await {
            Ok(request) => lifecycle::upgrade(state, request, uid).await,
            Err(response) => response,
        },
        (
            _,
            ["v1", "status" | "certs" | "history" | "deploy" | "rollback" | "abort" | "proceed"
            | "upgrade" | "reload"],
        )
        | (_, ["v1", "releases", _]) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed on {path}", req.method()),
        ),
        _ => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    }
}

fn certs(state: &DaemonState) -> Response<Body> {
    let answer = CertsResponse {
        online: true,
        certificates: status::certificates_online(state),
    };
    json(StatusCode::OK, &answer)
}

/// Validates a deploy request, claims its components and starts the pipeline in the
/// background; the response streams its events.
/// `uploads`: the request's artifacts that were sent over the socket; the pipeline removes them
/// when it ends (the caller removes them if the deploy is refused).
fn start_deploy(
    state: &Arc<DaemonState>,
    request: DeployRequest,
    uploads: &[PathBuf],
    uid: Option<u32>,
) -> Response<Body> {
    let release = match ReleaseId::parse(&request.release) {
        Ok(release) => release,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let targets: Vec<_> = if crate::protocol::names_all(&request.components) {
        if request.components.len() > 1 {
            return error(StatusCode::BAD_REQUEST, crate::protocol::ALL_WITH_NAMES);
        }
        state.components().to_vec()
    } else {
        if request.components.is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                "name at least one component (or `all`)",
            );
        }
        for name in &request.components {
            if state.component(name).is_none() {
                return error(StatusCode::NOT_FOUND, unknown_component(state, name));
            }
        }
        // Config order is dependency order.
        state
            .components()
            .iter()
            .filter(|c| request.components.iter().any(|n| n == c.name()))
            .cloned()
            .collect()
    };
    for name in request.artifacts.keys() {
        if !targets.iter().any(|c| c.name() == name) {
            return error(
                StatusCode::BAD_REQUEST,
                format!("an artifact was given for {name}, which is not being deployed"),
            );
        }
    }
    for path in request.artifacts.values() {
        if path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return error(
                StatusCode::BAD_REQUEST,
                format!("artifact path {} must not contain `..`", path.display()),
            );
        }
        if !path.is_absolute() {
            return error(
                StatusCode::BAD_REQUEST,
                format!("artifact path {} must be absolute", path.display()),
            );
        }
    }
    let hold = match steer::hold(&targets, request.hold_ms) {
        Ok(hold) => hold,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let who = who(&request.who, uid);
    let abort = deploy::AbortSignal::default();
    let mut plans = Vec::new();
    for component in &targets {
        let artifact = request.artifacts.get(component.name()).cloned();
        // A hook's release may live elsewhere entirely; every other kind needs its files.
        let is_hook = matches!(
            component.config().kind,
            crate::config::ComponentKind::Hook(_)
        );
        if artifact.is_none() && !is_hook {
            return error(
                StatusCode::BAD_REQUEST,
                format!("no artifact given for {}", component.name()),
            );
        }
        let claim = match component.claim_abortable(&release, &who, &abort) {
            Ok(claim) => claim,
            Err(busy) => return error(StatusCode::CONFLICT, busy.to_string()),
        };
        // Each stage holds on its own: `cutover proceed` releases one component.
        let hold = hold.map(crate::hold::SwitchHold::new);
        if let Some(hold) = &hold {
            claim.holdable(hold);
        }
        plans.push(DeployPlan {
            component: component.clone(),
            claim: Some(claim),
            kind: DeployKind::Deploy,
            release: release.clone(),
            artifact,
            abort: abort.clone(),
            hold,
        });
    }
    let names: Vec<String> = targets.iter().map(|c| c.name().to_owned()).collect();
    launch_pipeline(
        state,
        uploads.to_vec(),
        release.to_string(),
        names,
        plans,
        who,
    )
}

fn unknown_component(state: &DaemonState, name: &str) -> String {
    let components = state.components();
    let known: Vec<&str> = components.iter().map(|c| c.name()).collect();
    format!(
        "unknown component {name:?}; configured: {}",
        known.join(", ")
    )
}

fn start_rollback(
    state: &Arc<DaemonState>,
    request: RollbackRequest,
    uid: Option<u32>,
) -> Response<Body> {
    let Some(component) = state.component(&request.component) else {
        return error(
            StatusCode::NOT_FOUND,
            unknown_component(state, &request.component),
        );
    };
    let shared = state.shared();
    let store = &shared.store;
    let current = match store.component_state(component.name()) {
        Ok(current) => current,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let target = match (&request.to, &current.previous) {
        (Some(to), _) => to.clone(),
        (None, Some(previous)) => previous.clone(),
        (None, None) => {
            return error(
                StatusCode::CONFLICT,
                format!(
                    "{} has no previous release to roll back to; name one with --to (see `cutover releases {}`)",
                    component.name(),
                    component.name()
                ),
            )
        }
    };
    let release = match ReleaseId::parse(&target) {
        Ok(release) => release,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match store.release(component.name(), release.as_str()) {
        Ok(Some(_)) => {}
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                format!(
                    "release {release} of {} is not kept; see `cutover releases {}`",
                    component.name(),
                    component.name()
                ),
            )
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
    if current.active.as_deref() == Some(release.as_str()) {
        return error(
            StatusCode::CONFLICT,
            format!(
                "{release} is already the active release of {}",
                component.name()
            ),
        );
    }
    let who = who(&request.who, uid);
    let abort = deploy::AbortSignal::default();
    let claim = match component.claim_abortable(&release, &who, &abort) {
        Ok(claim) => claim,
        Err(busy) => return error(StatusCode::CONFLICT, busy.to_string()),
    };
    let plan = DeployPlan {
        component: component.clone(),
        claim: Some(claim),
        kind: DeployKind::Rollback,
        release: release.clone(),
        artifact: None,
        abort,
        hold: None,
    };
    launch_pipeline(
        state,
        Vec::new(),
        release.to_string(),
        vec![component.name().to_owned()],
        vec![plan],
        who,
    )
}

/// Records the pipeline, runs it in its own task (it goes on if the client disconnects) and
/// streams its events as NDJSON.
fn launch_pipeline(
    state: &Arc<DaemonState>,
    uploads: Vec<PathBuf>,
    release: String,
    names: Vec<String>,
    plans: Vec<DeployPlan>,
    who: String,
) -> Response<Body> {
    let shared = state.shared();
    let pipeline_id = match shared.store.begin_pipeline(&release, &names, &who) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sink = EventSink::new(Some(tx), shared.store.clone());
    let holds: Vec<_> = plans.iter().filter_map(|p| p.hold.clone()).collect();
    let state = state.clone();
    tokio::spawn(async move {
        deploy::run_pipeline(shared.clone(), pipeline_id, release, plans, who, sink).await;
        for path in uploads {
            state.uploads.remove(&path);
        }
        crate::sd::status(&crate::runtime::status_line(&state));
    });

    let (mut body_tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(16);
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            let mut line = serde_json::to_vec(&event).expect("events serialize");
            line.push(b'\n');
            if body_tx.send_data(Bytes::from(line)).await.is_err() {
                // The client went away; the pipeline goes on regardless, except where it
                // holds for a go only that client could give.
                for hold in &holds {
                    hold.follower_left();
                }
                while rx.recv().await.is_some() {}
                return;
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/x-ndjson")
        .body(body.boxed_unsync())
        .expect("static response parts are valid")
}

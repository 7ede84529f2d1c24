//! `deploy`/`rollback` as the CLI runs them: what is checked before anything is sent (bad usage
//! exits 2), following the event stream (Ctrl-C stops following, not the deploy), and `abort`.

use super::client::{Client, ClientError};
use super::{output, progress, Exit, UsageError};
use crate::config::{ComponentKind, Config};
use crate::protocol::{
    names_all, AbortRequest, AbortResponse, EventKind, HistoryResponse, ProceedRequest,
    ProceedResponse, StatusResponse, ALL_COMPONENTS, ALL_WITH_NAMES,
};
use crate::vocab::Outcome;
use http::StatusCode;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What `cutover deploy` can tell is wrong without the daemon: unknown components, a bad release
/// id, a component without an artifact, an artifact that does not exist here.
pub fn check_deploy(
    config: &Config,
    components: &[String],
    release: &str,
    artifacts: &BTreeMap<String, PathBuf>,
    uploading: bool,
) -> Result<(), UsageError> {
    crate::release::ReleaseId::parse(release).map_err(|e| UsageError(format!("--release: {e}")))?;
    let all = names_all(components);
    if all && components.len() > 1 {
        return Err(UsageError(ALL_WITH_NAMES.into()));
    }
    for name in components.iter().filter(|c| *c != ALL_COMPONENTS) {
        if config.component(name).is_none() {
            let known: Vec<&str> = config.components.iter().map(|c| c.name.as_str()).collect();
            return Err(UsageError(format!(
                "unknown component {name:?}; configured: {}",
                known.join(", ")
            )));
        }
    }
    let targets = config
        .components
        .iter()
        .filter(|c| all || components.iter().any(|n| n == c.name.as_str()));
    for component in targets {
        let name = component.name.as_str();
        let is_hook = matches!(component.kind, ComponentKind::Hook(_));
        if !is_hook && !artifacts.contains_key(name) {
            return Err(UsageError(format!(
                "no artifact given for {name}: add --artifact {name}=PATH"
            )));
        }
    }
    // With --no-upload the daemon reads the paths, and may see other files than we do.
    if uploading {
        for path in artifacts.values() {
            if !path.exists() {
                return Err(UsageError(format!(
                    "artifact {} does not exist",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

/// Follows a deploy's or rollback's events until the pipeline finishes. Ctrl-C stops following
/// only: the deploy goes on in the daemon, and the message says how to follow or stop it.
pub async fn stream<B: serde::Serialize>(
    client: &Client,
    path: &str,
    request: &B,
    json: bool,
) -> anyhow::Result<Exit> {
    let mut renderer = progress::Progress::new(json);
    let mut finished = None;
    let streaming = client.stream(path, request, |event| {
        if let EventKind::PipelineFinished { outcome, .. } = &event.kind {
            finished = Some(*outcome);
        }
        renderer.event(&event);
    });
    let result = tokio::select! {
        result = streaming => result,
        _ = tokio::signal::ctrl_c() => {
            renderer.stop();
            let components = renderer.components();
            let component = match components.as_slice() {
                [one] => one.clone(),
                _ => "COMPONENT".to_owned(),
            };
            eprintln!(
                "\ninterrupted: the deploy goes on in the daemon; `cutover status` follows it; `cutover abort {component}` stops it"
            );
            return Ok(Exit::Interrupted);
        }
    };
    match result {
        Ok(()) => {}
        Err(ClientError::Refused { status, message }) => {
            eprintln!("error: {}", output::printable_lines(&message));
            return Ok(refusal_exit(status));
        }
        Err(ClientError::Http(e)) => {
            eprintln!("error: the daemon closed the stream before the deploy finished ({e}); see `cutover history`");
            return Ok(Exit::Failed);
        }
        Err(e) => return Err(e.into()),
    }
    renderer.finish();
    match finished {
        Some(Outcome::Succeeded) => Ok(Exit::Ok),
        Some(_) => Ok(Exit::Failed),
        None => {
            eprintln!("error: the daemon closed the stream before the deploy finished; see `cutover history`");
            Ok(Exit::Failed)
        }
    }
}

/// The daemon's 400 and 404 answer requests that could never run (a name or id it does not
/// know): bad usage, as if the CLI had found it. A 409 (busy, nothing to roll back to) is an
/// operation that failed.
fn refusal_exit(status: StatusCode) -> Exit {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => Exit::Usage,
        _ => Exit::Failed,
    }
}

/// `cutover abort COMPONENT`: raises the abort, then waits until the deploy has stopped and
/// says how it ended.
pub async fn abort(client: &Client, component: &str, who: String) -> anyhow::Result<Exit> {
    let request = AbortRequest {
        component: component.to_owned(),
        who,
    };
    let answer: AbortResponse = match client.post("/v1/abort", &request).await {
        Ok(answer) => answer,
        Err(ClientError::Refused { status, message }) => {
            eprintln!("error: {}", output::printable_lines(&message));
            return Ok(refusal_exit(status));
        }
        Err(e) => return Err(e.into()),
    };
    println!(
        "aborting the deploy of {component} to {} ({})",
        answer.release, answer.reason
    );
    // The deploy stops at its next safe point: within a probe interval, or once the swap back
    // and the new instance's stop (stop_timeout) are done.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let status: StatusResponse = client.get("/v1/status").await?;
        let busy = status
            .components
            .iter()
            .find(|c| c.name == component)
            .and_then(|c| c.deploying.as_ref())
            .is_some();
        if !busy {
            break;
        }
        if Instant::now() >= deadline {
            eprintln!("error: the deploy of {component} has not stopped yet; see `cutover status`");
            return Ok(Exit::Failed);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let history: HistoryResponse = client.get("/v1/history?limit=20").await?;
    let ended = history
        .deploys
        .iter()
        .find(|d| answer.deploy_id > 0 && d.deploy.id == answer.deploy_id);
    match ended {
        Some(d) => {
            let outcome = d
                .deploy
                .outcome
                .map_or("running", crate::protocol::outcome_words);
            let reason = d.deploy.reason.as_deref().unwrap_or_default();
            println!(
                "deploy #{} of {component}: {outcome}: {}",
                d.deploy.id,
                output::printable_lines(&output::first_line(reason))
            );
        }
        _ => println!("the pipeline stopped before {component}'s stage started: it was skipped"),
    }
    Ok(Exit::Ok)
}

/// `cutover proceed COMPONENT`: releases the held deploy; the command following it shows the
/// switch and what comes after.
pub async fn proceed(client: &Client, component: &str, who: String) -> anyhow::Result<Exit> {
    let request = ProceedRequest {
        component: component.to_owned(),
        who,
    };
    match client
        .post::<_, ProceedResponse>("/v1/proceed", &request)
        .await
    {
        Ok(answer) => {
            println!(
                "released deploy #{} of {component} to {}: it switches now",
                answer.deploy_id, answer.release
            );
            Ok(Exit::Ok)
        }
        Err(ClientError::Refused { status, message }) => {
            eprintln!("error: {}", output::printable_lines(&message));
            Ok(refusal_exit(status))
        }
        Err(e) => Err(e.into()),
    }
}

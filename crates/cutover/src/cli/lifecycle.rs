//! `cutover reload` and `cutover upgrade`: changes to the daemon itself.

use super::client::{Client, ClientError};
use super::output;
use super::Exit;
use crate::protocol::{
    ReloadRequest, ReloadResponse, UpgradeRequest, UpgradeResponse, MAX_UPGRADE_TIMEOUT,
};
use std::path::PathBuf;

pub async fn reload(client: &Client, who: String) -> anyhow::Result<Exit> {
    match client
        .post::<_, ReloadResponse>("/v1/reload", &ReloadRequest { who })
        .await
    {
        Ok(done) => {
            println!("reloaded:");
            for line in &done.lines {
                println!("  {line}");
            }
            Ok(Exit::Ok)
        }
        Err(ClientError::Refused { status, message }) => {
            eprintln!("error: {}", output::printable_lines(&message));
            eprintln!("the daemon goes on with the config it runs, unchanged");
            Ok(if status == http::StatusCode::BAD_REQUEST {
                Exit::Usage
            } else {
                Exit::Failed
            })
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn upgrade(
    client: &Client,
    binary: Option<PathBuf>,
    timeout: std::time::Duration,
    who: String,
) -> anyhow::Result<Exit> {
    if timeout > MAX_UPGRADE_TIMEOUT {
        return Err(super::UsageError(format!(
            "--timeout {}: at most {}",
            humantime::format_duration(timeout),
            humantime::format_duration(MAX_UPGRADE_TIMEOUT)
        ))
        .into());
    }
    let binary = match binary {
        // The daemon resolves the path in its own working directory: make it absolute here.
        Some(path) => Some(std::path::absolute(&path)?),
        None => None,
    };
    let request = UpgradeRequest {
        binary,
        timeout_ms: Some(timeout.as_millis() as u64),
        who,
    };
    match client
        .post::<_, UpgradeResponse>("/v1/upgrade", &request)
        .await
    {
        Ok(done) => {
            println!(
                "upgraded: the daemon is now pid {} (was {}); every socket stayed open and every instance runs on",
                done.new_pid, done.old_pid
            );
            Ok(Exit::Ok)
        }
        Err(ClientError::Refused { message, .. }) => {
            eprintln!("error: {}", output::printable_lines(&message));
            eprintln!("the running daemon goes on serving, unchanged");
            Ok(Exit::Failed)
        }
        Err(e) => Err(e.into()),
    }
}

//! Why a step of a deploy failed: one variant per cause, worded for the person who deployed.
//! The state machine carries the rendered text ([`super::machine::Failure::Step`]) so that its
//! states stay comparable in unit tests; the cause is typed up to that point.

use crate::health::GateFailure;
use crate::migrate::MigrateError;
use crate::release::{ReleaseError, ReleaseId};
use crate::store::StoreError;
use crate::supervisor::SupervisorError;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    Release(#[from] ReleaseError),
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The deploy gate: the disk is nearly full, the env is not ready, or a required service
    /// is down. Nothing was stored or started.
    #[error("refused before starting: {0}")]
    Gate(Box<crate::checks::GateRefusal>),
    /// Storing the artifact would leave too little free space on the data_dir.
    #[error("{0}")]
    NoRoom(#[from] crate::diskspace::DiskError),
    /// Storing ran on a blocking thread that did not come back (a panic).
    #[error("storing the artifact was interrupted: {0}")]
    StoreTask(#[from] tokio::task::JoinError),
    #[error("cannot start the new instance: {0}")]
    Launch(#[from] SupervisorError),
    #[error("health gate failed: {failure}{}", log_excerpt(log, tail))]
    Unhealthy {
        failure: GateFailure,
        log: PathBuf,
        tail: String,
    },
    /// The new release serves but could not be recorded as active.
    #[error("cannot commit {release}: {source}")]
    Commit {
        release: ReleaseId,
        source: StoreError,
    },
    #[error("unknown service {0}")]
    UnknownService(String),
    #[error("cannot find the URL of {service}: {why}")]
    ServiceUrl { service: String, why: String },
    /// The release's migration files cannot be read.
    #[error("{0}")]
    MigrationFiles(Box<MigrateError>),
    #[error("migration failed; the new release was not started: {0}")]
    Migration(Box<MigrateError>),
    #[error("release {release} has no {fallback}, which spa_fallback names")]
    MissingFallback {
        release: ReleaseId,
        fallback: String,
    },
    #[error("invalid cache glob: {0}")]
    CacheGlob(#[from] globset::Error),
    #[error("cannot run the hook: {0}")]
    HookIo(String),
    #[error("hook `{command}` did not finish within {timeout}")]
    HookTimedOut { command: String, timeout: String },
    #[error("hook `{command}` failed ({status}){}", log_excerpt(log, tail))]
    HookFailed {
        command: String,
        status: std::process::ExitStatus,
        log: PathBuf,
        tail: String,
    },
    /// The verify URL never showed the new release; `url` is masked.
    #[error("verify of {url} did not pass within {timeout} ({attempts} attempts; last: {last})")]
    VerifyFailed {
        url: String,
        timeout: String,
        attempts: u32,
        last: String,
    },
}

/// The last lines an instance (or hook) wrote, indented under the error.
pub(super) fn log_excerpt(log: &Path, tail: &str) -> String {
    if tail.trim().is_empty() {
        format!("\n  (the instance wrote nothing to {})", log.display())
    } else {
        let indented: Vec<String> = tail.lines().map(|l| format!("  | {l}")).collect();
        format!(
            "\n  last lines of {}:\n{}",
            log.display(),
            indented.join("\n")
        )
    }
}

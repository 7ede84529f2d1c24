//! The control protocol: JSON over HTTP/1.1 on the daemon's unix socket, shared by both ends.
//!
//! | method | path                      | body              | answer                       |
//! |--------|---------------------------|-------------------|------------------------------|
//! | GET    | /v1/status                |                   | [`StatusResponse`]           |
//! | GET    | /v1/releases/{component}  |                   | [`ReleasesResponse`]         |
//! | GET    | /v1/history?limit=N       |                   | [`HistoryResponse`]          |
//! | POST   | /v1/uploads               | artifact bytes    | [`UploadResponse`]           |
//! | POST   | /v1/deploy                | [`DeployRequest`] | NDJSON stream of [`Event`]   |
//! | POST   | /v1/rollback              | [`RollbackRequest`]| NDJSON stream of [`Event`]  |
//! | POST   | /v1/abort                 | [`AbortRequest`]  | [`AbortResponse`]            |
//! | POST   | /v1/proceed               | [`ProceedRequest`]| [`ProceedResponse`]          |
//! | GET    | /v1/certs                 |                   | [`CertsResponse`]            |
//!
//! Errors answer 4xx/5xx with an [`ErrorBody`]. A stream always ends with a
//! `pipeline_finished` event; a stream that ends without one means the daemon went away.

mod certs;
mod event_text;
mod lifecycle;
mod proceed;

pub use certs::*;
pub use lifecycle::*;
pub use proceed::*;

use crate::proxy::StatsSnapshot;
use crate::store::{DeployRecord, EventRecord, PipelineRecord};
use crate::vocab::{DeployKind, Outcome};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// Component names in any order, or `["all"]`.
    pub components: Vec<String>,
    pub release: String,
    /// Absolute artifact path per component; the daemon reads it.
    pub artifacts: BTreeMap<String, PathBuf>,
    /// Who asked, as the client describes itself (the daemon adds the peer's uid).
    pub who: String,
    /// `--hold`: wait before each switch for `cutover proceed`, at most this long. Sent only
    /// when set, so an older daemon (which refuses unknown fields) says it cannot hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_ms: Option<u64>,
}

/// The component name that stands for every configured component (deployed in config order).
pub const ALL_COMPONENTS: &str = "all";

/// Why a deploy naming `all` and components too is refused, by the CLI and by the daemon.
pub const ALL_WITH_NAMES: &str = "`all` cannot be combined with component names";

/// Whether a deploy's component names ask for every component.
pub fn names_all(components: &[String]) -> bool {
    components.iter().any(|c| c == ALL_COMPONENTS)
}

/// The answer to `POST /v1/uploads`: where the daemon stored the artifact; a `DeployRequest`
/// then names this path.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UploadResponse {
    pub path: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    pub component: String,
    /// A kept release; the previous active release when absent.
    pub to: Option<String>,
    pub who: String,
}

/// Stops the deploy in progress on a component, safely: before the switch the new instance is
/// stopped; after it, traffic swaps back to the warm old instance (like an automatic rollback).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbortRequest {
    pub component: String,
    pub who: String,
}

/// The abort was handed to the deploy; it ends (and is recorded) a moment later.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AbortResponse {
    pub component: String,
    pub deploy_id: i64,
    pub release: String,
    /// The reason the deploy will record: "aborted by WHO".
    pub reason: String,
}

/// An outcome as people read it ("rolled back"); `--json` and the database keep `as_str`.
pub fn outcome_words(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::Failed => "failed",
        Outcome::RolledBack => "rolled back",
        Outcome::Interrupted => "interrupted",
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub version: String,
    pub started_at: i64,
    /// The config file the daemon runs (none from a daemon older than this field).
    #[serde(default)]
    pub config: Option<ConfigInfo>,
}

/// Which version of the config a daemon runs. Every control answer also carries it in the
/// `cutover-config-sha256` / `cutover-config-loaded-at` headers, so each command can say when
/// the file it reads differs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConfigInfo {
    pub path: PathBuf,
    /// sha256 of the file's bytes when the daemon read them.
    pub sha256: String,
    /// When it read them (ms since the epoch).
    pub loaded_at: i64,
}

pub const CONFIG_SHA256_HEADER: &str = "cutover-config-sha256";
pub const CONFIG_LOADED_AT_HEADER: &str = "cutover-config-loaded-at";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub release: String,
    pub pid: i32,
    pub port: u16,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeployInProgress {
    pub deploy_id: i64,
    pub release: String,
    pub who: String,
    pub started_at: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ComponentStatus {
    pub name: String,
    /// The public address, as bound (or as configured when the daemon is down).
    pub listen: String,
    pub active: Option<String>,
    pub previous: Option<String>,
    /// The instance receiving traffic (process components, daemon up only).
    pub serving: Option<InstanceInfo>,
    /// The release answering requests now (any kind; daemon up only).
    pub serving_release: Option<String>,
    pub deploying: Option<DeployInProgress>,
    /// Requests answered by the serving instance since it started serving.
    pub stats: Option<StatsSnapshot>,
    /// What the watchdog saw of the serving instance (process components, daemon up, no deploy
    /// in progress).
    #[serde(default)]
    pub health: Option<HealthStatus>,
}

/// Health of the serving instance as the watchdog probes it between deploys.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HealthStatus {
    pub state: HealthState,
    /// Failed probes in a row (0 after a success).
    pub consecutive_failures: u32,
    /// The last probe: when (ms since the epoch), whether it passed, and what it saw.
    pub last_probe_at: Option<i64>,
    pub last_probe_ok: Option<bool>,
    pub last_probe: Option<String>,
    /// Why it is unhealthy (a failing probe, or how the process ended).
    pub reason: Option<String>,
    /// Restarts by the watchdog within the restart window.
    pub restarts: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Not probed yet since it started serving.
    Unknown,
    Healthy,
    /// Dead, or failed `unhealthy_threshold` probes in a row; a restart is pending or running.
    Unhealthy,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Unknown => "unknown",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusResponse {
    /// None when read from the state database while the daemon is down.
    pub daemon: Option<DaemonInfo>,
    pub components: Vec<ComponentStatus>,
    /// The shared https listener's certificates (left out when there are none, so the answer
    /// of a config without `[edge]` certificates is as before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateInfo>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReleaseEntry {
    pub id: String,
    pub sha256: String,
    pub size: u64,
    pub stored_at: i64,
    pub active: bool,
    pub previous: bool,
    /// Whether it was ever the active release (retention keeps these first).
    #[serde(default)]
    pub was_active: bool,
    /// How the latest finished deploy to it ended (`succeeded`, `failed`, `rolled_back`,
    /// `interrupted`); none for a release stored by an older cutover.
    #[serde(default)]
    pub outcome: Option<crate::vocab::Outcome>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReleasesResponse {
    pub component: String,
    pub releases: Vec<ReleaseEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeployHistory {
    #[serde(flatten)]
    pub deploy: DeployRecord,
    pub events: Vec<EventRecord>,
}

/// One entry of a pipeline's timeline: an event of one of its deploys.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at: i64,
    pub component: String,
    pub deploy_id: i64,
    pub kind: String,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PipelineHistory {
    #[serde(flatten)]
    pub pipeline: PipelineRecord,
    /// Deploy ids of its stages (and of rollback_all's undo steps), in order.
    pub deploys: Vec<i64>,
    pub timeline: Vec<TimelineEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HistoryResponse {
    pub pipelines: Vec<PipelineHistory>,
    pub deploys: Vec<DeployHistory>,
    /// Reloads and upgrades of the daemon, newest first (none from an older daemon).
    #[serde(default)]
    pub daemon: Vec<crate::store::DaemonEvent>,
}

/// One progress event of a pipeline, as streamed to the CLI (`--json` prints these as is).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the pipeline started.
    pub t_ms: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    PipelineStarted {
        pipeline_id: i64,
        release: String,
        components: Vec<String>,
    },
    DeployStarted {
        component: String,
        deploy_id: i64,
        kind: DeployKind,
        from: Option<String>,
        to: String,
    },
    Stored {
        component: String,
        release: String,
        sha256: String,
        size: u64,
        /// The release was already in the store (a rollback, or a redeploy of a kept id):
        /// nothing was copied.
        #[serde(default)]
        reused: bool,
    },
    /// A migration step in progress (lock wait, file being applied).
    Migrating {
        component: String,
        detail: String,
    },
    Migrated {
        component: String,
        /// Files applied by this deploy (none: the schema was already current).
        applied: Vec<String>,
        version: Option<u64>,
    },
    InstanceStarted {
        component: String,
        release: String,
        pid: i32,
        port: u16,
        log: String,
    },
    Probe {
        component: String,
        ok: bool,
        detail: String,
        consecutive: u32,
        needed: u32,
    },
    Healthy {
        component: String,
        after_ms: u64,
    },
    Switched {
        component: String,
        from: Option<String>,
        to: String,
    },
    Stabilizing {
        component: String,
        elapsed_ms: u64,
        total_ms: u64,
        requests: u64,
        failed: u64,
    },
    Stable {
        component: String,
        requests: u64,
        failed: u64,
    },
    RolledBack {
        component: String,
        to: Option<String>,
        reason: String,
    },
    Drained {
        component: String,
        release: String,
        remaining: usize,
    },
    Stopped {
        component: String,
        release: String,
        status: String,
    },
    Warning {
        component: Option<String>,
        message: String,
    },
    DeployFinished {
        component: String,
        deploy_id: i64,
        outcome: Outcome,
        reason: Option<String>,
    },
    /// Ready before the switch and held there (`cutover deploy --hold`): on arrival, then once
    /// a second until released.
    Holding {
        component: String,
        elapsed_ms: u64,
        timeout_ms: u64,
    },
    /// The hold was released by `who`; the switch comes next.
    Proceeding {
        component: String,
        who: String,
    },
    /// A stage of the pipeline that did not run, and why (an earlier stage failed, or the
    /// pipeline was aborted).
    Skipped {
        component: String,
        reason: String,
    },
    PipelineFinished {
        pipeline_id: i64,
        outcome: Outcome,
        reason: Option<String>,
        duration_ms: u64,
    },
}

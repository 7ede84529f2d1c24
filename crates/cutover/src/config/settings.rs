//! The typed settings the rest of the crate reads: what `cutover.toml` means once validated,
//! defaults applied and paths resolved. Tables that serde alone can check (`[systemd]`,
//! `health`, `restart`, `verify`, ...) are deserialized straight into these types; the others
//! are built from the file as written (`raw.rs`) by `validate.rs`.

use super::{EdgePolicy, HumanDuration};
use serde::{de, Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The name of a component: used in paths, socket names and URLs, so kept to a safe alphabet.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ComponentName(String);

impl ComponentName {
    pub fn parse(text: &str) -> Result<Self, String> {
        let ok = !text.is_empty()
            && text.len() <= 48
            && text.starts_with(|c: char| c.is_ascii_lowercase())
            && text
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "invalid component name {text:?}: use 1-48 characters a-z, 0-9, '-' or '_', starting with a letter"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ComponentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ComponentName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ComponentName::parse(&text).map_err(de::Error::custom)
    }
}

/// The whole, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from (absolute), for messages.
    pub path: PathBuf,
    pub daemon: DaemonConfig,
    /// Components in deploy order (dependencies first).
    pub components: Vec<ComponentConfig>,
    pub pipeline: PipelineConfig,
    /// Infrastructure the components depend on (databases, caches), by name.
    pub services: Vec<ServiceConfig>,
    pub checks: ChecksConfig,
    pub systemd: SystemdConfig,
    pub notify: Vec<NotifyConfig>,
    /// `[edge]`: what cutover believes of the peers that connect to it.
    pub edge: EdgePolicy,
    /// `[edge]`: the shared listeners (`http`, `https`) and what goes with them.
    pub front: super::edge::FrontConfig,
    /// `[fleet]`: the hosts `cutover fleet` deploys to (operator side only).
    pub fleet: Option<super::fleet::FleetConfig>,
    /// Located (`file:line:col: key: message`) doubts that do not stop the config from working;
    /// `validate` prints them and `serve` logs them.
    pub warnings: Vec<String>,
    /// sha256 of the file's bytes as read, and when (ms since the epoch): the daemon reports
    /// what it runs, and the CLI compares it with the file it reads (see `cli/drift.rs`).
    pub sha256: String,
    pub loaded_at: i64,
}

impl Config {
    pub fn component(&self, name: &str) -> Option<&ComponentConfig> {
        self.components.iter().find(|c| c.name.as_str() == name)
    }

    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }
}

#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub data_dir: PathBuf,
    pub control_socket: PathBuf,
    /// Where `/metrics` (Prometheus) is served, if anywhere.
    pub admin_listen: Option<SocketAddr>,
    /// Production refuses placeholder secrets in env files (see `cutover env check`).
    pub production: bool,
    /// An instance log larger than this is rotated (copied to `.1`, then truncated).
    pub log_max_size: u64,
    /// Most a bundle may unpack to: a bomb is refused, not unpacked until the disk is full.
    pub bundle_limits: BundleLimits,
    /// Connections one public listener holds open at once; `None`: derived from the fd limit
    /// (see [`crate::fdlimit`]).
    pub max_connections: Option<usize>,
    /// Threads the public connections are served on ([`crate::proxy_threads`]); `None`: half the
    /// CPUs, at least one.
    pub proxy_threads: Option<usize>,
    /// A request body that sends nothing for this long is cut off (408).
    pub body_read_timeout: HumanDuration,
    /// The group that may use the control socket (mode 0660 then, else 0600): deployers join
    /// it instead of becoming the daemon's user.
    pub socket_group: Option<String>,
}

/// The most one bundle may unpack to (`[daemon] bundle_max_size` / `bundle_max_entries`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BundleLimits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

impl Default for BundleLimits {
    fn default() -> Self {
        BundleLimits {
            max_bytes: 4 << 30,
            max_entries: 200_000,
        }
    }
}

/// How `cutover generate systemd` / `init` write the service unit.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SystemdConfig {
    pub user: String,
    pub group: String,
    pub binary: PathBuf,
    /// Relax MemoryDenyWriteExecute for JIT runtimes (Node.js, JVM, .NET): releases run under
    /// the daemon's hardening.
    pub allow_jit: bool,
    pub read_write_paths: Vec<PathBuf>,
}

impl Default for SystemdConfig {
    fn default() -> Self {
        Self {
            user: "cutover".into(),
            group: "cutover".into(),
            binary: PathBuf::from("/usr/local/bin/cutover"),
            allow_jit: false,
            read_write_paths: Vec::new(),
        }
    }
}

/// A webhook that hears about deploys.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    pub url: String,
    /// Event names (deploy_started, deploy_succeeded, deploy_failed, rollback, interrupted);
    /// empty: all.
    #[serde(default)]
    pub events: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct ComponentConfig {
    pub name: ComponentName,
    /// Its own public address, if it has one (hooks never do; a component with `hosts` may
    /// have none).
    pub listen: Option<SocketAddr>,
    /// `listen` also accepts HTTP/2 without TLS, by prior knowledge (`h2c = true`): what
    /// plaintext gRPC clients speak.
    pub h2c: bool,
    /// `access_log = true`: one JSON line per request it answers (on any listener), in
    /// `data_dir/logs/<name>.access.log`.
    pub access_log: bool,
    /// Its names on the shared `[edge]` listeners.
    pub routes: Option<super::edge::HostRoutes>,
    pub drain_timeout: HumanDuration,
    pub keep_releases: usize,
    pub stabilize: HumanDuration,
    pub stabilize_checks: StabilizeChecks,
    pub after: Vec<ComponentName>,
    pub kind: ComponentKind,
    /// Repository globs whose changes mean this component must be deployed (`cutover changed`).
    pub paths: Vec<String>,
    /// How CI builds the artifact (argv), and where the artifact is after the build.
    pub build: Vec<String>,
    pub artifact: Option<String>,
    /// Variables that must be set (in `env` or `env_file`) before a deploy starts.
    pub required_env: Vec<String>,
}

impl ComponentConfig {
    pub fn process(&self) -> Option<&ProcessConfig> {
        match &self.kind {
            ComponentKind::Process(process) => Some(process),
            _ => None,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            ComponentKind::Process(_) => "process",
            ComponentKind::Static(_) => "static",
            ComponentKind::Hook(_) => "hook",
        }
    }
}

/// How a component's releases are run and served.
// A config is built once and never copied on a hot path: the size of a variant costs nothing,
// and boxing the process variant would change every match on it.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum ComponentKind {
    /// A server process per release, proxied by cutover.
    Process(ProcessConfig),
    /// A directory of files per release, served by cutover itself.
    Static(StaticConfig),
    /// Hosted elsewhere: a command triggers the deploy, a URL confirms it.
    Hook(HookConfig),
}

#[derive(Clone, Debug)]
pub struct ProcessConfig {
    /// argv template; placeholders are expanded per instance (see [`crate::supervisor`]).
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub env_file: Option<PathBuf>,
    pub health: HealthConfig,
    pub stop_timeout: HumanDuration,
    /// Services that must be healthy before a deploy of this component starts.
    pub requires: Vec<String>,
    pub migrations: Option<MigrationsConfig>,
    /// How long the proxy waits for an instance's response headers before it answers 504
    /// (and counts a failure): a request that hangs must not hang forever.
    pub upstream_timeout: HumanDuration,
    /// The protocol spoken to the instances (`upstream`): the health probe speaks it too.
    pub upstream: UpstreamProtocol,
    /// What the watchdog does when the serving instance dies or stays unhealthy.
    pub restart: RestartPolicy,
    /// `env_clear = true`: releases start with an empty environment instead of the daemon's,
    /// keeping only the variables named here (`inherit_env`), plus `env`, `env_file` and the
    /// CUTOVER_* ones. `None`: the daemon's whole environment.
    pub clean_env: Option<Vec<String>>,
}

impl ProcessConfig {
    /// Whether the stored artifact itself is what gets executed (then it must be a runnable
    /// binary or script for this machine).
    pub fn executes_artifact(&self) -> bool {
        self.command.first().map(String::as_str) == Some("{artifact}")
    }
}

/// `upstream = "http1" | "h2c"`: how the proxy and the health probe talk to an instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1, one request at a time per pooled connection.
    #[default]
    Http1,
    /// HTTP/2 without TLS, by prior knowledge: gRPC servers and other HTTP/2 backends. Every
    /// request to an instance is a stream on one shared connection; trailers pass through.
    H2c,
}

/// Placeholders that `command` and `env` values may use.
pub const PLACEHOLDERS: &[&str] = &[
    "artifact",
    "port",
    "release",
    "release_dir",
    "component",
    "data_dir",
];

/// `restart = { max_restarts = 5, window = "5m", rollback = true, hold_requests = "5s" }`: the
/// watchdog restarts a dead or unhealthy serving instance; after `max_restarts` restarts within
/// `window` it rolls back to the previous release (when `rollback` and that release is kept).
/// While a restart is pending, new requests wait up to `hold_requests` for the replacement.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestartPolicy {
    pub max_restarts: u32,
    pub window: HumanDuration,
    pub rollback: bool,
    pub hold_requests: HumanDuration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: HumanDuration::from_secs(300),
            rollback: true,
            hold_requests: HumanDuration::from_secs(5),
        }
    }
}

/// Database migrations shipped inside each release bundle.
#[derive(Clone, Debug)]
pub struct MigrationsConfig {
    /// Directory inside the release bundle.
    pub dir: PathBuf,
    /// The PostgreSQL service they run against.
    pub service: String,
    pub lock_timeout: HumanDuration,
}

/// A service (database, cache) that cutover checks with its real protocol.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub name: String,
    pub kind: crate::vocab::ServiceKind,
    pub url: UrlSource,
    pub compose: Option<ComposeRef>,
    /// Whether `cutover check` fails when this service is unhealthy.
    pub required: bool,
    pub timeout: HumanDuration,
}

/// Where a service's URL comes from; resolved when used, so secrets stay in their files.
#[derive(Clone, Debug, PartialEq)]
pub enum UrlSource {
    Literal(String),
    /// `url_env`, looked up in `env_file` first, then in the environment.
    Env {
        var: String,
        env_file: Option<PathBuf>,
    },
}

impl ServiceConfig {
    /// The service's URL (may hold a password: never print it; see `services::redact_url`).
    pub fn url(&self) -> Result<String, String> {
        match &self.url {
            UrlSource::Literal(url) => Ok(url.clone()),
            UrlSource::Env { var, env_file } => {
                if let Some(file) = env_file {
                    let pairs = crate::envfile::read(file).map_err(|e| e.to_string())?;
                    if let Some((_, value)) = pairs.into_iter().find(|(k, _)| k == var) {
                        return Ok(value);
                    }
                }
                std::env::var(var).map_err(|_| {
                    let from = env_file
                        .as_ref()
                        .map(|f| format!(" in {} or", f.display()))
                        .unwrap_or_default();
                    format!("{var} is not set{from} in the environment")
                })
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeRef {
    pub file: PathBuf,
    pub service: String,
    /// The compose CLI to run instead of detecting one (`["docker-compose"]`,
    /// `["/usr/bin/docker", "compose"]`).
    #[serde(default, deserialize_with = "compose_command")]
    pub command: Option<Vec<String>>,
}

/// A compose command names at least a program.
fn compose_command<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    let command = Vec::<String>::deserialize(deserializer)?;
    if command
        .first()
        .is_none_or(|program| program.trim().is_empty())
    {
        return Err(serde::de::Error::custom(
            "give the compose CLI to run, e.g. [\"docker-compose\"] or [\"docker\", \"compose\"]",
        ));
    }
    Ok(Some(command))
}

#[derive(Clone, Debug, Default)]
pub struct ChecksConfig {
    pub disk: Vec<DiskCheck>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DiskCheck {
    pub path: PathBuf,
    pub min_free: u64,
}

#[derive(Clone, Debug, Default)]
pub struct StaticConfig {
    /// Served for unknown paths without a file extension (single-page apps).
    pub spa_fallback: Option<String>,
    /// Cache-Control by glob over the request path (first match wins).
    pub cache: Vec<CacheRule>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRule {
    pub glob: String,
    pub control: String,
}

#[derive(Clone, Debug)]
pub struct HookConfig {
    /// argv template run from the config file's directory; `{release}` and `{component}`.
    pub run: Vec<String>,
    pub verify: VerifyConfig,
    /// Where `run` runs: the config file's directory.
    pub workdir: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    pub url: String,
    pub body_contains: Option<String>,
    #[serde(default = "default_verify_timeout")]
    pub timeout: HumanDuration,
    #[serde(default = "default_verify_interval")]
    pub interval: HumanDuration,
}

fn default_verify_timeout() -> HumanDuration {
    HumanDuration::from_secs(600)
}
fn default_verify_interval() -> HumanDuration {
    HumanDuration::from_secs(5)
}

/// What a later stage's failure does to earlier stages of the same pipeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Stages already finalized stay on their new release.
    #[default]
    Keep,
    /// Stages already finalized are rolled back to the release they had before.
    RollbackAll,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    #[serde(default)]
    pub on_failure: OnFailure,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    pub path: String,
    /// Probe with the standard gRPC health check (`grpc.health.v1.Health/Check`, passing on
    /// SERVING) instead of `GET path`; needs `upstream = "h2c"`.
    pub grpc: bool,
    pub interval: HumanDuration,
    pub timeout: HumanDuration,
    pub healthy_threshold: u32,
    pub start_timeout: HumanDuration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            path: "/health".into(),
            grpc: false,
            interval: HumanDuration::from_millis(250),
            timeout: HumanDuration::from_secs(2),
            healthy_threshold: 2,
            start_timeout: HumanDuration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StabilizeChecks {
    /// Consecutive failed probes that trigger an automatic rollback.
    pub unhealthy_threshold: u32,
    /// Highest tolerated share of 5xx responses plus connection errors.
    pub max_error_rate: f64,
    /// Requests needed before the error rate is judged at all (avoids 1-of-1 = 100%).
    pub min_requests: u64,
    /// Requests waiting this long for response headers while none arrives fail the release:
    /// one that accepts connections and never answers serves nothing, so its error rate alone
    /// would never judge it.
    pub stall_timeout: HumanDuration,
}

impl Default for StabilizeChecks {
    fn default() -> Self {
        Self {
            unhealthy_threshold: 3,
            max_error_rate: 0.05,
            min_requests: 20,
            stall_timeout: HumanDuration::from_secs(10),
        }
    }
}

//! `cutover.toml`: typed settings, parsed once at the boundary.
//!
//! Unknown keys are rejected; every error names the file, line, column and key. Relative paths
//! are resolved against the directory of the config file, so the daemon and the CLI agree no
//! matter where they were started from.

mod duration;
mod edge;
mod environment;
mod error;
mod rules;

pub use duration::HumanDuration;
pub use edge::EdgePolicy;
pub use error::ConfigError;
use rules::placeholder_problem;

use serde::{de, Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where the config is looked for when `--config` is not given.
pub const CONFIG_ENV: &str = "CUTOVER_CONFIG";
pub const DEFAULT_CONFIG_FILE: &str = "cutover.toml";

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
    /// Located (`file:line:col: key: message`) doubts that do not stop the config from working;
    /// `validate` prints them and `serve` logs them.
    pub warnings: Vec<String>,
    /// sha256 of the file's bytes as read, and when (ms since the epoch): the daemon reports
    /// what it runs, and the CLI compares it with the file it reads (see `cli/drift.rs`).
    pub sha256: String,
    pub loaded_at: i64,
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
#[derive(Clone, Debug, Deserialize)]
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
    /// The public address; `None` only for hook components (hosted elsewhere).
    pub listen: Option<SocketAddr>,
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
    /// What the watchdog does when the serving instance dies or stays unhealthy.
    pub restart: RestartPolicy,
    /// `env_clear = true`: releases start with an empty environment instead of the daemon's,
    /// keeping only the variables named here (`inherit_env`), plus `env`, `env_file` and the
    /// CUTOVER_* ones. `None`: the daemon's whole environment.
    pub clean_env: Option<Vec<String>>,
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMigrations {
    dir: PathBuf,
    service: String,
    #[serde(default = "default_lock_timeout")]
    lock_timeout: HumanDuration,
}

fn default_lock_timeout() -> HumanDuration {
    HumanDuration::from_secs(60)
}

/// A service (database, cache) that cutover checks with its real protocol.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub name: String,
    pub kind: crate::services::ServiceKind,
    pub url: UrlSource,
    pub compose: Option<ComposeRef>,
    /// Whether `cutover check` fails when this service is unhealthy.
    pub required: bool,
    pub timeout: HumanDuration,
}

/// Where a service's URL comes from; resolved when used, so secrets stay in their files.
#[derive(Clone, Debug)]
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

#[derive(Clone, Debug, Deserialize)]
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    kind: crate::services::ServiceKind,
    url: Option<String>,
    url_env: Option<String>,
    env_file: Option<PathBuf>,
    compose: Option<ComposeRef>,
    #[serde(default = "default_true")]
    required: bool,
    #[serde(default = "default_service_timeout")]
    timeout: HumanDuration,
}

fn default_true() -> bool {
    true
}
fn default_service_timeout() -> HumanDuration {
    HumanDuration::from_secs(5)
}

#[derive(Clone, Debug, Default)]
pub struct ChecksConfig {
    pub disk: Vec<DiskCheck>,
}

#[derive(Clone, Debug)]
pub struct DiskCheck {
    pub path: PathBuf,
    pub min_free: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawChecks {
    #[serde(default)]
    disk: Vec<RawDiskCheck>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiskCheck {
    path: PathBuf,
    #[serde(deserialize_with = "byte_size")]
    min_free: u64,
}

/// "1GiB", "500 MB", "1048576": sizes as people write them.
fn byte_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(u64),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Number(n) => Ok(n),
        Size::Text(text) => text
            .trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|_| {
                de::Error::custom(format!(
                    "invalid size {text:?}; write a number and a unit, e.g. \"1GiB\" or \"500MB\""
                ))
            }),
    }
}

impl ProcessConfig {
    /// Whether the stored artifact itself is what gets executed (then it must be a runnable
    /// binary or script for this machine).
    pub fn executes_artifact(&self) -> bool {
        self.command.first().map(String::as_str) == Some("{artifact}")
    }
}

#[derive(Clone, Debug, Default)]
pub struct StaticConfig {
    /// Served for unknown paths without a file extension (single-page apps).
    pub spa_fallback: Option<String>,
    /// Cache-Control by glob over the request path (first match wins).
    pub cache: Vec<CacheRule>,
}

#[derive(Clone, Debug, Deserialize)]
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
    pub interval: HumanDuration,
    pub timeout: HumanDuration,
    pub healthy_threshold: u32,
    pub start_timeout: HumanDuration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            path: "/health".into(),
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

// --- the file as written -------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    components: BTreeMap<String, RawComponent>,
    #[serde(default)]
    pipeline: PipelineConfig,
    #[serde(default)]
    services: BTreeMap<String, RawService>,
    #[serde(default)]
    checks: RawChecks,
    #[serde(default)]
    systemd: SystemdConfig,
    #[serde(default)]
    notify: Vec<NotifyConfig>,
    #[serde(default)]
    edge: RawEdge,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEdge {
    /// CIDRs (or single addresses) of proxies in front of cutover whose forwarding headers
    /// (X-Forwarded-For and friends) are kept; everyone else's are replaced.
    #[serde(default)]
    trusted_proxies: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    control_socket: Option<PathBuf>,
    admin_listen: Option<SocketAddr>,
    #[serde(default = "default_true")]
    production: bool,
    #[serde(default = "default_log_max_size", deserialize_with = "byte_size")]
    log_max_size: u64,
    #[serde(default = "default_bundle_max_size", deserialize_with = "byte_size")]
    bundle_max_size: u64,
    #[serde(default = "default_bundle_max_entries")]
    bundle_max_entries: u64,
    max_connections: Option<usize>,
    #[serde(default = "default_body_read_timeout")]
    body_read_timeout: HumanDuration,
    socket_group: Option<String>,
}

fn default_body_read_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}

fn default_bundle_max_size() -> u64 {
    BundleLimits::default().max_bytes
}

fn default_bundle_max_entries() -> u64 {
    BundleLimits::default().max_entries
}

fn default_log_max_size() -> u64 {
    10 << 20
}

impl Default for RawDaemon {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            control_socket: None,
            admin_listen: None,
            production: true,
            log_max_size: default_log_max_size(),
            bundle_max_size: default_bundle_max_size(),
            bundle_max_entries: default_bundle_max_entries(),
            max_connections: None,
            body_read_timeout: default_body_read_timeout(),
            socket_group: None,
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".cutover")
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum RawKind {
    #[default]
    Process,
    Static,
    Hook,
}

/// Every key any kind accepts; which ones apply is checked per kind in [`Validator`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    #[serde(default)]
    kind: RawKind,
    listen: Option<SocketAddr>,
    command: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    env_file: Option<PathBuf>,
    health: Option<HealthConfig>,
    #[serde(default = "default_drain_timeout")]
    drain_timeout: HumanDuration,
    stop_timeout: Option<HumanDuration>,
    upstream_timeout: Option<HumanDuration>,
    #[serde(default = "default_keep_releases")]
    keep_releases: usize,
    stabilize: Option<HumanDuration>,
    stabilize_checks: Option<StabilizeChecks>,
    #[serde(default)]
    after: Vec<ComponentName>,
    spa_fallback: Option<String>,
    cache: Option<Vec<CacheRule>>,
    run: Option<Vec<String>>,
    verify: Option<VerifyConfig>,
    requires: Option<Vec<String>>,
    migrations: Option<RawMigrations>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    build: Vec<String>,
    artifact: Option<String>,
    #[serde(default)]
    required_env: Vec<String>,
    restart: Option<RestartPolicy>,
    env_clear: Option<bool>,
    inherit_env: Option<Vec<String>>,
}

impl RawComponent {
    /// Keys that are set but mean nothing for this kind.
    fn foreign_keys(&self) -> Vec<&'static str> {
        let set = [
            ("listen", self.listen.is_some()),
            ("command", self.command.is_some()),
            ("env", self.env.is_some()),
            ("env_file", self.env_file.is_some()),
            ("health", self.health.is_some()),
            ("stop_timeout", self.stop_timeout.is_some()),
            ("upstream_timeout", self.upstream_timeout.is_some()),
            ("stabilize", self.stabilize.is_some()),
            ("stabilize_checks", self.stabilize_checks.is_some()),
            ("spa_fallback", self.spa_fallback.is_some()),
            ("cache", self.cache.is_some()),
            ("run", self.run.is_some()),
            ("verify", self.verify.is_some()),
            ("requires", self.requires.is_some()),
            ("migrations", self.migrations.is_some()),
            ("restart", self.restart.is_some()),
            ("env_clear", self.env_clear.is_some()),
            ("inherit_env", self.inherit_env.is_some()),
        ];
        let allowed: &[&str] = match self.kind {
            RawKind::Process => &[
                "listen",
                "command",
                "env",
                "env_file",
                "health",
                "stop_timeout",
                "upstream_timeout",
                "stabilize",
                "stabilize_checks",
                "requires",
                "migrations",
                "restart",
                "env_clear",
                "inherit_env",
            ],
            RawKind::Static => &["listen", "spa_fallback", "cache"],
            RawKind::Hook => &["run", "verify"],
        };
        set.iter()
            .filter(|(key, present)| *present && !allowed.contains(key))
            .map(|(key, _)| *key)
            .collect()
    }
}

fn default_drain_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_stop_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn kind_label(kind: RawKind) -> &'static str {
    match kind {
        RawKind::Process => "process",
        RawKind::Static => "static",
        RawKind::Hook => "hook",
    }
}
fn default_keep_releases() -> usize {
    5
}
fn default_stabilize() -> HumanDuration {
    HumanDuration::from_secs(60)
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

impl Config {
    /// Which file to read: the flag, then `$CUTOVER_CONFIG`, then `./cutover.toml`.
    pub fn locate(flag: Option<&Path>) -> PathBuf {
        if let Some(path) = flag {
            return path.to_owned();
        }
        match std::env::var_os(CONFIG_ENV) {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => PathBuf::from(DEFAULT_CONFIG_FILE),
        }
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            source: e,
        })?;
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        Self::parse(&absolute, &text)
    }

    /// Parse config text; `path` is used for messages and to resolve relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| {
                let key = e.path().to_string();
                let inner = e.into_inner();
                ConfigError::at_span(path, text, inner.span(), &key, inner.message())
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = Validator { path, text, base }.validate(raw)?;
        config.sha256 = environment::sha256_hex(text.as_bytes());
        config.loaded_at = crate::vocab::now_millis();
        Ok(config)
    }

    /// `file:line:col: key` of `key` as written in the config file now (for errors found at run
    /// time, such as a listen address that cannot be bound).
    pub fn locate_key(&self, key: &[&str]) -> Option<String> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let located = ConfigError::at_key(&self.path, &text, key, String::new());
        located
            .located()
            .map(|l| format!("{}:{}:{}: {}", l.path.display(), l.line, l.column, l.key))
    }

    pub fn component(&self, name: &str) -> Option<&ComponentConfig> {
        self.components.iter().find(|c| c.name.as_str() == name)
    }

    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// Checks that need more than one value at a time, with positions looked up in the source.
struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
    base: &'a Path,
}

impl Validator<'_> {
    fn error(&self, key: &[&str], message: impl Into<String>) -> ConfigError {
        ConfigError::at_key(self.path, self.text, key, message.into())
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base.join(path)
        }
    }

    fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        if raw.daemon.max_connections == Some(0) {
            return Err(self.error(
                &["daemon", "max_connections"],
                "must be at least 1 (leave it out to derive it from the fd limit)",
            ));
        }
        if raw.daemon.body_read_timeout.get().is_zero() {
            return Err(self.error(&["daemon", "body_read_timeout"], "must be more than 0s"));
        }
        let data_dir = self.resolve(&raw.daemon.data_dir);
        let control_socket = match &raw.daemon.control_socket {
            Some(p) => self.resolve(p),
            None => data_dir.join("control.sock"),
        };
        let socket_key: &[&str] = match raw.daemon.control_socket {
            Some(_) => &["daemon", "control_socket"],
            None => &["daemon", "data_dir"],
        };
        self.check_control_socket(&control_socket, socket_key)?;
        if raw.components.is_empty() {
            return Err(self.error(
                &["components"],
                "no components configured; add a [components.NAME] table with at least `listen` and `command`",
            ));
        }
        let mut components = Vec::new();
        for (name, component) in raw.components {
            components.push(self.component(&name, component)?);
        }
        self.check_listen_unique(&components, raw.daemon.admin_listen)?;
        let warnings = self.warnings(&components);
        let components = self.order(components)?;
        let mut services = Vec::new();
        for (name, service) in raw.services {
            services.push(self.service(&name, service)?);
        }
        self.check_service_refs(&components, &services)?;
        let checks = ChecksConfig {
            disk: raw
                .checks
                .disk
                .into_iter()
                .map(|d| DiskCheck {
                    path: self.resolve(&d.path),
                    min_free: d.min_free,
                })
                .collect(),
        };
        Ok(Config {
            path: self.path.to_owned(),
            daemon: DaemonConfig {
                data_dir,
                control_socket,
                admin_listen: raw.daemon.admin_listen,
                production: raw.daemon.production,
                log_max_size: raw.daemon.log_max_size,
                bundle_limits: BundleLimits {
                    max_bytes: raw.daemon.bundle_max_size,
                    max_entries: raw.daemon.bundle_max_entries,
                },
                max_connections: raw.daemon.max_connections,
                body_read_timeout: raw.daemon.body_read_timeout,
                socket_group: self.socket_group(raw.daemon.socket_group)?,
            },
            components,
            pipeline: raw.pipeline,
            services,
            checks,
            systemd: raw.systemd,
            notify: self.notify(raw.notify)?,
            edge: self.edge(&raw.edge)?,
            warnings,
            // Set by `parse`, which has the text.
            sha256: String::new(),
            loaded_at: 0,
        })
    }

    fn component(&self, name: &str, raw: RawComponent) -> Result<ComponentConfig, ConfigError> {
        let key = |field: &'static str| ["components", name, field];
        let name_parsed =
            ComponentName::parse(name).map_err(|e| self.error(&["components", name], e))?;
        if let Some(foreign) = raw.foreign_keys().first() {
            return Err(self.error(
                &key(foreign),
                format!(
                    "`{foreign}` does not apply to kind = \"{}\"",
                    kind_label(raw.kind)
                ),
            ));
        }
        if raw.kind != RawKind::Hook && raw.listen.is_none() {
            return Err(self.error(&["components", name], "missing field `listen`"));
        }
        if raw.keep_releases < 2 {
            return Err(self.error(
                &key("keep_releases"),
                "keep_releases must be at least 2 (the active release and the one to roll back to)",
            ));
        }
        let checks = raw.stabilize_checks.clone().unwrap_or_default();
        if !(0.0..=1.0).contains(&checks.max_error_rate) {
            return Err(self.error(
                &["components", name, "stabilize_checks", "max_error_rate"],
                "max_error_rate is a fraction between 0 and 1",
            ));
        }
        if checks.unhealthy_threshold == 0 {
            return Err(self.error(
                &[
                    "components",
                    name,
                    "stabilize_checks",
                    "unhealthy_threshold",
                ],
                "unhealthy_threshold must be at least 1",
            ));
        }
        for glob in &raw.paths {
            if let Err(e) = globset::Glob::new(glob) {
                return Err(self.error(&key("paths"), format!("invalid glob {glob:?}: {e}")));
            }
        }
        let kind = match raw.kind {
            RawKind::Process => ComponentKind::Process(self.process(name, &raw)?),
            RawKind::Static => ComponentKind::Static(self.static_site(name, &raw)?),
            RawKind::Hook => ComponentKind::Hook(self.hook(name, &raw)?),
        };
        Ok(ComponentConfig {
            name: name_parsed,
            listen: raw.listen,
            drain_timeout: raw.drain_timeout,
            keep_releases: raw.keep_releases,
            // Only processes are watched after the switch: files and hooks have nothing to watch.
            stabilize: match raw.kind {
                RawKind::Process => raw.stabilize.unwrap_or_else(default_stabilize),
                _ => HumanDuration::from_secs(0),
            },
            stabilize_checks: checks,
            after: raw.after,
            kind,
            paths: raw.paths,
            build: raw.build,
            artifact: raw.artifact,
            required_env: raw.required_env,
        })
    }

    fn process(&self, name: &str, raw: &RawComponent) -> Result<ProcessConfig, ConfigError> {
        let key = |field: &'static str| ["components", name, field];
        let command = raw.command.clone().unwrap_or_default();
        if raw.command.is_none() {
            return Err(self.error(&["components", name], "missing field `command`"));
        }
        if command.is_empty() || command[0].trim().is_empty() {
            return Err(self.error(&key("command"), "command must name a program to run"));
        }
        let env = raw.env.clone().unwrap_or_default();
        for (field, values) in [
            ("command", &command),
            ("env", &env.values().cloned().collect()),
        ] {
            if let Some(problem) = values
                .iter()
                .find_map(|v| placeholder_problem(v, PLACEHOLDERS))
            {
                return Err(self.error(&key(field), problem));
            }
        }
        let clean_env = self.release_environment(name, raw)?;
        let health = raw.health.clone().unwrap_or_default();
        if !health.path.starts_with('/') {
            return Err(self.error(
                &["components", name, "health", "path"],
                format!("health path {:?} must start with '/'", health.path),
            ));
        }
        if health.healthy_threshold == 0 {
            return Err(self.error(
                &["components", name, "health", "healthy_threshold"],
                "healthy_threshold must be at least 1",
            ));
        }
        if health.interval.get().is_zero() {
            return Err(self.error(
                &["components", name, "health", "interval"],
                "interval must be greater than zero",
            ));
        }
        if health.timeout.get() > health.start_timeout.get() {
            return Err(self.error(
                &["components", name, "health", "timeout"],
                format!(
                    "a probe timeout of {} is longer than start_timeout ({}): no probe could ever pass in time",
                    health.timeout, health.start_timeout
                ),
            ));
        }
        Ok(ProcessConfig {
            command,
            env,
            env_file: raw.env_file.as_ref().map(|p| self.resolve(p)),
            health,
            stop_timeout: raw.stop_timeout.unwrap_or_else(default_stop_timeout),
            upstream_timeout: raw
                .upstream_timeout
                .unwrap_or_else(|| HumanDuration::from_secs(60)),
            requires: raw.requires.clone().unwrap_or_default(),
            migrations: match &raw.migrations {
                None => None,
                Some(m) => {
                    let inside = m.dir.components().all(|c| {
                        matches!(
                            c,
                            std::path::Component::Normal(_) | std::path::Component::CurDir
                        )
                    });
                    if !inside || m.dir.as_os_str().is_empty() {
                        return Err(self.error(
                            &["components", name, "migrations", "dir"],
                            format!("migrations dir {:?} must be a relative path inside the release bundle", m.dir),
                        ));
                    }
                    Some(MigrationsConfig {
                        dir: m.dir.clone(),
                        service: m.service.clone(),
                        lock_timeout: m.lock_timeout,
                    })
                }
            },
            restart: self.restart_policy(name, raw)?,
            clean_env,
        })
    }

    fn restart_policy(&self, name: &str, raw: &RawComponent) -> Result<RestartPolicy, ConfigError> {
        let policy = raw.restart.clone().unwrap_or_default();
        let key = |field: &'static str| ["components", name, "restart", field];
        if policy.max_restarts == 0 {
            return Err(self.error(&key("max_restarts"), "max_restarts must be at least 1"));
        }
        if policy.window.get().is_zero() {
            return Err(self.error(&key("window"), "window must be greater than zero"));
        }
        Ok(policy)
    }

    fn notify(&self, hooks: Vec<NotifyConfig>) -> Result<Vec<NotifyConfig>, ConfigError> {
        const EVENTS: &[&str] = &[
            "deploy_started",
            "deploy_succeeded",
            "deploy_failed",
            "rollback",
            "interrupted",
            "unhealthy",
            "recovered",
        ];
        for hook in &hooks {
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                return Err(
                    self.error(&["notify"], "notify url must be an http:// or https:// URL")
                );
            }
            if let Some(unknown) = hook.events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
                return Err(self.error(
                    &["notify"],
                    format!("unknown event {unknown:?}; known: {}", EVENTS.join(", ")),
                ));
            }
        }
        Ok(hooks)
    }

    fn service(&self, name: &str, raw: RawService) -> Result<ServiceConfig, ConfigError> {
        let url = match (raw.url, raw.url_env) {
            (Some(url), None) => {
                if raw.env_file.is_some() {
                    return Err(self.error(
                        &["services", name, "env_file"],
                        "env_file only applies with url_env",
                    ));
                }
                UrlSource::Literal(url)
            }
            (None, Some(var)) => UrlSource::Env {
                var,
                env_file: raw.env_file.as_ref().map(|p| self.resolve(p)),
            },
            (Some(_), Some(_)) => {
                return Err(self.error(
                    &["services", name, "url_env"],
                    "give either url or url_env, not both",
                ))
            }
            (None, None) => {
                return Err(self.error(&["services", name], "missing field `url` or `url_env`"))
            }
        };
        Ok(ServiceConfig {
            name: name.to_owned(),
            kind: raw.kind,
            url,
            compose: raw.compose.map(|c| ComposeRef {
                file: self.resolve(&c.file),
                service: c.service,
                command: c.command,
            }),
            required: raw.required,
            timeout: raw.timeout,
        })
    }

    /// `requires` and `migrations.service` name configured services of the right kind.
    fn check_service_refs(
        &self,
        components: &[ComponentConfig],
        services: &[ServiceConfig],
    ) -> Result<(), ConfigError> {
        let known = || {
            services
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        for component in components {
            let Some(process) = component.process() else {
                continue;
            };
            for required in &process.requires {
                if !services.iter().any(|s| &s.name == required) {
                    return Err(self.error(
                        &["components", component.name.as_str(), "requires"],
                        format!(
                            "unknown service {required:?} in `requires`; configured: {}",
                            known()
                        ),
                    ));
                }
            }
            if let Some(migrations) = &process.migrations {
                match services.iter().find(|s| s.name == migrations.service) {
                    Some(s) if s.kind == crate::services::ServiceKind::Postgres => {}
                    Some(_) => {
                        return Err(self.error(
                            &["components", component.name.as_str(), "migrations"],
                            format!(
                                "migrations need a postgres service; {:?} is not one",
                                migrations.service
                            ),
                        ))
                    }
                    None => {
                        return Err(self.error(
                            &["components", component.name.as_str(), "migrations"],
                            format!(
                                "unknown service {:?} in `migrations`; configured: {}",
                                migrations.service,
                                known()
                            ),
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    fn static_site(&self, name: &str, raw: &RawComponent) -> Result<StaticConfig, ConfigError> {
        if let Some(fallback) = &raw.spa_fallback {
            if fallback.is_empty()
                || fallback.starts_with('/')
                || fallback.split('/').any(|p| p == "..")
            {
                return Err(self.error(
                    &["components", name, "spa_fallback"],
                    format!("spa_fallback {fallback:?} must be a relative path inside the site, e.g. \"index.html\""),
                ));
            }
        }
        let cache = raw.cache.clone().unwrap_or_default();
        for rule in &cache {
            if let Err(e) = globset::Glob::new(&rule.glob) {
                return Err(self.error(
                    &["components", name, "cache"],
                    format!("invalid glob {:?}: {e}", rule.glob),
                ));
            }
            if http::HeaderValue::from_str(&rule.control).is_err() {
                return Err(self.error(
                    &["components", name, "cache"],
                    format!("invalid Cache-Control value {:?}", rule.control),
                ));
            }
        }
        Ok(StaticConfig {
            spa_fallback: raw.spa_fallback.clone(),
            cache,
        })
    }

    fn hook(&self, name: &str, raw: &RawComponent) -> Result<HookConfig, ConfigError> {
        let (Some(run), Some(verify)) = (raw.run.clone(), raw.verify.clone()) else {
            let missing = if raw.run.is_none() { "run" } else { "verify" };
            return Err(self.error(
                &["components", name],
                format!("missing field `{missing}` for kind = \"hook\""),
            ));
        };
        if run.is_empty() || run[0].trim().is_empty() {
            return Err(self.error(
                &["components", name, "run"],
                "run must name a program to run",
            ));
        }
        const HOOK_PLACEHOLDERS: &[&str] = &["release", "component"];
        for value in run
            .iter()
            .chain(std::iter::once(&verify.url))
            .chain(verify.body_contains.iter())
        {
            if let Some(problem) = placeholder_problem(value, HOOK_PLACEHOLDERS) {
                return Err(self.error(&["components", name, "run"], problem));
            }
        }
        if !(verify.url.starts_with("http://") || verify.url.starts_with("https://")) {
            return Err(self.error(
                &["components", name, "verify", "url"],
                "verify.url must be an http:// or https:// URL",
            ));
        }
        Ok(HookConfig {
            run,
            verify,
            workdir: self.base.to_owned(),
        })
    }

    /// Topological order by `after`; unknown names and cycles are errors.
    fn order(
        &self,
        mut pending: Vec<ComponentConfig>,
    ) -> Result<Vec<ComponentConfig>, ConfigError> {
        for component in &pending {
            for dep in &component.after {
                if !pending.iter().any(|c| &c.name == dep) {
                    return Err(self.error(
                        &["components", component.name.as_str(), "after"],
                        format!("unknown component \"{dep}\" in `after`"),
                    ));
                }
                if dep == &component.name {
                    return Err(self.error(
                        &["components", component.name.as_str(), "after"],
                        "a component cannot come after itself",
                    ));
                }
            }
        }
        let mut ordered: Vec<ComponentConfig> = Vec::new();
        while !pending.is_empty() {
            let ready = pending
                .iter()
                .position(|c| c.after.iter().all(|d| ordered.iter().any(|o| &o.name == d)));
            match ready {
                Some(i) => ordered.push(pending.remove(i)),
                None => {
                    let names: Vec<_> = pending.iter().map(|c| c.name.as_str()).collect();
                    return Err(self.error(
                        &["components", pending[0].name.as_str(), "after"],
                        format!("`after` forms a cycle among: {}", names.join(", ")),
                    ));
                }
            }
        }
        Ok(ordered)
    }
}

#[cfg(test)]
mod tests;

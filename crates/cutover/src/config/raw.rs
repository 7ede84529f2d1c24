//! The file as written: serde types that mirror `cutover.toml` key for key (unknown keys
//! rejected, the order of fields is the order `expected one of` lists them in), with the
//! defaults of keys left out. Read only inside `config/`: `validate.rs` turns them into the
//! typed settings.

use super::settings::{
    CacheRule, ComponentName, ComposeRef, HealthConfig, NotifyConfig, PipelineConfig,
    RestartPolicy, StabilizeChecks, SystemdConfig, VerifyConfig,
};
use super::{BundleLimits, HumanDuration};
use serde::{de, Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) daemon: RawDaemon,
    #[serde(default)]
    pub(super) components: BTreeMap<String, RawComponent>,
    #[serde(default)]
    pub(super) pipeline: PipelineConfig,
    #[serde(default)]
    pub(super) services: BTreeMap<String, RawService>,
    #[serde(default)]
    pub(super) checks: RawChecks,
    #[serde(default)]
    pub(super) systemd: SystemdConfig,
    #[serde(default)]
    pub(super) notify: Vec<NotifyConfig>,
    #[serde(default)]
    pub(super) edge: RawEdge,
    pub(super) fleet: Option<super::fleet::RawFleet>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEdge {
    /// CIDRs (or single addresses) of proxies in front of cutover whose forwarding headers
    /// (X-Forwarded-For and friends) are kept; everyone else's are replaced.
    #[serde(default)]
    pub(super) trusted_proxies: Vec<String>,
    /// Shared listeners, routed by host: plain HTTP and TLS.
    pub(super) http: Option<SocketAddr>,
    pub(super) https: Option<SocketAddr>,
    pub(super) hsts: Option<String>,
    /// Where requests for a host no component names go (default: a plain 404).
    pub(super) default_component: Option<String>,
    pub(super) acme: Option<super::edge::RawAcme>,
    /// The shared listeners read a PROXY protocol (v1/v2) header first on every connection.
    pub(super) proxy_protocol: Option<bool>,
    /// One JSON line per request on the shared listeners, in data_dir/logs/access.log.
    pub(super) access_log: Option<bool>,
    /// The shared http listener also accepts HTTP/2 without TLS (prior knowledge).
    pub(super) h2c: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    #[serde(default = "default_data_dir")]
    pub(super) data_dir: PathBuf,
    pub(super) control_socket: Option<PathBuf>,
    pub(super) admin_listen: Option<SocketAddr>,
    #[serde(default = "default_true")]
    pub(super) production: bool,
    #[serde(default = "default_log_max_size", deserialize_with = "byte_size")]
    pub(super) log_max_size: u64,
    #[serde(default = "default_bundle_max_size", deserialize_with = "byte_size")]
    pub(super) bundle_max_size: u64,
    #[serde(default = "default_bundle_max_entries")]
    pub(super) bundle_max_entries: u64,
    pub(super) max_connections: Option<usize>,
    pub(super) proxy_threads: Option<usize>,
    #[serde(default = "default_body_read_timeout")]
    pub(super) body_read_timeout: HumanDuration,
    pub(super) socket_group: Option<String>,
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
            proxy_threads: None,
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
pub(super) enum RawKind {
    #[default]
    Process,
    Static,
    Hook,
}

/// Every key any kind accepts; which ones apply is checked per kind (`validate.rs` refuses
/// the [`RawComponent::foreign_keys`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawComponent {
    #[serde(default)]
    pub(super) kind: RawKind,
    pub(super) listen: Option<SocketAddr>,
    pub(super) command: Option<Vec<String>>,
    pub(super) env: Option<BTreeMap<String, String>>,
    pub(super) env_file: Option<PathBuf>,
    pub(super) health: Option<HealthConfig>,
    #[serde(default = "default_drain_timeout")]
    pub(super) drain_timeout: HumanDuration,
    pub(super) stop_timeout: Option<HumanDuration>,
    pub(super) upstream_timeout: Option<HumanDuration>,
    #[serde(default = "default_keep_releases")]
    pub(super) keep_releases: usize,
    pub(super) stabilize: Option<HumanDuration>,
    pub(super) stabilize_checks: Option<StabilizeChecks>,
    #[serde(default)]
    pub(super) after: Vec<ComponentName>,
    pub(super) spa_fallback: Option<String>,
    pub(super) cache: Option<Vec<CacheRule>>,
    pub(super) run: Option<Vec<String>>,
    pub(super) verify: Option<VerifyConfig>,
    pub(super) requires: Option<Vec<String>>,
    pub(super) migrations: Option<RawMigrations>,
    #[serde(default)]
    pub(super) paths: Vec<String>,
    #[serde(default)]
    pub(super) build: Vec<String>,
    pub(super) artifact: Option<String>,
    #[serde(default)]
    pub(super) required_env: Vec<String>,
    pub(super) restart: Option<RestartPolicy>,
    pub(super) env_clear: Option<bool>,
    pub(super) inherit_env: Option<Vec<String>>,
    /// Names it answers on the shared `[edge]` listeners, instead of or besides `listen`.
    pub(super) hosts: Option<Vec<String>>,
    pub(super) path_prefix: Option<String>,
    pub(super) strip_prefix: Option<bool>,
    pub(super) tls: Option<super::edge::TlsFiles>,
    /// How cutover talks to the instances: HTTP/1.1 (default) or HTTP/2 without TLS.
    pub(super) upstream: Option<super::settings::UpstreamProtocol>,
    /// Its own `listen` listener also accepts HTTP/2 without TLS (prior knowledge).
    pub(super) h2c: Option<bool>,
    /// One JSON line per request it answers, in data_dir/logs/<name>.access.log.
    pub(super) access_log: Option<bool>,
}

impl RawComponent {
    /// Keys that are set but mean nothing for this kind.
    pub(super) fn foreign_keys(&self) -> Vec<&'static str> {
        let set = [
            ("listen", self.listen.is_some()),
            ("hosts", self.hosts.is_some()),
            ("path_prefix", self.path_prefix.is_some()),
            ("strip_prefix", self.strip_prefix.is_some()),
            ("tls", self.tls.is_some()),
            ("h2c", self.h2c.is_some()),
            ("upstream", self.upstream.is_some()),
            ("access_log", self.access_log.is_some()),
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
                "hosts",
                "path_prefix",
                "strip_prefix",
                "tls",
                "h2c",
                "upstream",
                "access_log",
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
            RawKind::Static => &[
                "listen",
                "hosts",
                "path_prefix",
                "strip_prefix",
                "tls",
                "h2c",
                "access_log",
                "spa_fallback",
                "cache",
            ],
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
pub(super) fn default_stop_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}
pub(super) fn kind_label(kind: RawKind) -> &'static str {
    match kind {
        RawKind::Process => "process",
        RawKind::Static => "static",
        RawKind::Hook => "hook",
    }
}
fn default_keep_releases() -> usize {
    5
}
pub(super) fn default_stabilize() -> HumanDuration {
    HumanDuration::from_secs(60)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMigrations {
    pub(super) dir: PathBuf,
    pub(super) service: String,
    #[serde(default = "default_lock_timeout")]
    pub(super) lock_timeout: HumanDuration,
}

fn default_lock_timeout() -> HumanDuration {
    HumanDuration::from_secs(60)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) kind: crate::vocab::ServiceKind,
    pub(super) url: Option<String>,
    pub(super) url_env: Option<String>,
    pub(super) env_file: Option<PathBuf>,
    pub(super) compose: Option<ComposeRef>,
    #[serde(default = "default_true")]
    pub(super) required: bool,
    #[serde(default = "default_service_timeout")]
    pub(super) timeout: HumanDuration,
}

fn default_true() -> bool {
    true
}
fn default_service_timeout() -> HumanDuration {
    HumanDuration::from_secs(5)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChecks {
    #[serde(default)]
    pub(super) disk: Vec<RawDiskCheck>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDiskCheck {
    pub(super) path: PathBuf,
    #[serde(deserialize_with = "byte_size")]
    pub(super) min_free: u64,
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

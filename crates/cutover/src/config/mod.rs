//! `cutover.toml`: typed settings, parsed once at the boundary.
//!
//! Unknown keys are rejected; every error names the file, line, column and key. Relative paths
//! are resolved against the directory of the config file, so the daemon and the CLI agree no
//! matter where they were started from.

mod duration;
mod error;

pub use duration::HumanDuration;
pub use error::ConfigError;

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
}

#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub data_dir: PathBuf,
    pub control_socket: PathBuf,
}

#[derive(Clone, Debug)]
pub struct ComponentConfig {
    pub name: ComponentName,
    pub listen: SocketAddr,
    /// argv template; placeholders are expanded per instance (see [`crate::supervisor`]).
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub env_file: Option<PathBuf>,
    pub health: HealthConfig,
    pub drain_timeout: HumanDuration,
    pub stop_timeout: HumanDuration,
    pub keep_releases: usize,
    pub stabilize: HumanDuration,
    pub stabilize_checks: StabilizeChecks,
    pub after: Vec<ComponentName>,
}

impl ComponentConfig {
    /// Whether the stored artifact itself is what gets executed (then it must be a runnable
    /// binary or script for this machine).
    pub fn executes_artifact(&self) -> bool {
        self.command.first().map(String::as_str) == Some("{artifact}")
    }
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
}

impl Default for StabilizeChecks {
    fn default() -> Self {
        Self {
            unhealthy_threshold: 3,
            max_error_rate: 0.05,
            min_requests: 20,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    control_socket: Option<PathBuf>,
}

impl Default for RawDaemon {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            control_socket: None,
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".cutover")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    listen: SocketAddr,
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    env_file: Option<PathBuf>,
    #[serde(default)]
    health: HealthConfig,
    #[serde(default = "default_drain_timeout")]
    drain_timeout: HumanDuration,
    #[serde(default = "default_stop_timeout")]
    stop_timeout: HumanDuration,
    #[serde(default = "default_keep_releases")]
    keep_releases: usize,
    #[serde(default = "default_stabilize")]
    stabilize: HumanDuration,
    #[serde(default)]
    stabilize_checks: StabilizeChecks,
    #[serde(default)]
    after: Vec<ComponentName>,
}

fn default_drain_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_stop_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
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
        Validator { path, text, base }.validate(raw)
    }

    pub fn component(&self, name: &str) -> Option<&ComponentConfig> {
        self.components.iter().find(|c| c.name.as_str() == name)
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
        let data_dir = self.resolve(&raw.daemon.data_dir);
        let control_socket = match &raw.daemon.control_socket {
            Some(p) => self.resolve(p),
            None => data_dir.join("control.sock"),
        };
        let mut components = Vec::new();
        for (name, component) in raw.components {
            components.push(self.component(&name, component)?);
        }
        self.check_listen_unique(&components)?;
        let components = self.order(components)?;
        Ok(Config {
            path: self.path.to_owned(),
            daemon: DaemonConfig {
                data_dir,
                control_socket,
            },
            components,
        })
    }

    fn component(&self, name: &str, raw: RawComponent) -> Result<ComponentConfig, ConfigError> {
        let key = |field: &'static str| ["components", name, field];
        let name_parsed =
            ComponentName::parse(name).map_err(|e| self.error(&["components", name], e))?;
        if raw.command.is_empty() || raw.command[0].trim().is_empty() {
            return Err(self.error(&key("command"), "command must name a program to run"));
        }
        for value in raw.command.iter().chain(raw.env.values()) {
            if let Some(unknown) = unknown_placeholder(value) {
                let field = if raw.command.contains(value) {
                    "command"
                } else {
                    "env"
                };
                return Err(self.error(
                    &key(field),
                    format!(
                        "unknown placeholder {{{unknown}}}; known: {}",
                        PLACEHOLDERS
                            .iter()
                            .map(|p| format!("{{{p}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        if !raw.health.path.starts_with('/') {
            return Err(self.error(
                &["components", name, "health", "path"],
                format!("health path {:?} must start with '/'", raw.health.path),
            ));
        }
        if raw.health.healthy_threshold == 0 {
            return Err(self.error(
                &["components", name, "health", "healthy_threshold"],
                "healthy_threshold must be at least 1",
            ));
        }
        if raw.health.interval.get().is_zero() {
            return Err(self.error(
                &["components", name, "health", "interval"],
                "interval must be greater than zero",
            ));
        }
        if raw.keep_releases < 2 {
            return Err(self.error(
                &key("keep_releases"),
                "keep_releases must be at least 2 (the active release and the one to roll back to)",
            ));
        }
        let checks = &raw.stabilize_checks;
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
        Ok(ComponentConfig {
            name: name_parsed,
            listen: raw.listen,
            command: raw.command,
            env: raw.env,
            env_file: raw.env_file.map(|p| self.resolve(&p)),
            health: raw.health,
            drain_timeout: raw.drain_timeout,
            stop_timeout: raw.stop_timeout,
            keep_releases: raw.keep_releases,
            stabilize: raw.stabilize,
            stabilize_checks: raw.stabilize_checks,
            after: raw.after,
        })
    }

    fn check_listen_unique(&self, components: &[ComponentConfig]) -> Result<(), ConfigError> {
        for (i, a) in components.iter().enumerate() {
            for b in &components[..i] {
                if a.listen == b.listen && a.listen.port() != 0 {
                    return Err(self.error(
                        &["components", a.name.as_str(), "listen"],
                        format!("{} is already the listen address of {}", a.listen, b.name),
                    ));
                }
            }
        }
        Ok(())
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

/// The first `{name}` in `value` that is not a known placeholder.
fn unknown_placeholder(value: &str) -> Option<String> {
    let mut rest = value;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}')?;
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Some(name.to_owned());
        }
        rest = &after[close + 1..];
    }
    None
}

#[cfg(test)]
mod tests;

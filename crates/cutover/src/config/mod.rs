//! `cutover.toml`: typed settings, parsed once at the boundary.
//!
//! Unknown keys are rejected; every error names the file, line, column and key. Relative paths
//! are resolved against the directory of the config file, so the daemon and the CLI agree no
//! matter where they were started from.
//!
//! Three stages, one file each: `raw.rs` is the file as written (serde), `validate.rs` turns it
//! into the typed settings of `settings.rs` with located errors (`rules.rs`: rules across
//! tables and the warnings; `environment.rs`: the keys about environment and access). The rest
//! of the crate sees only the settings, re-exported here. `diff.rs` compares two loaded configs
//! for a reload: what changed, and whether it applies now, at the next deploy, or not live.

mod diff;
mod diff_keys;
mod duration;
mod edge;
mod environment;
mod error;
mod fleet;
mod placeholders;
mod raw;
mod rules;
mod settings;
mod validate;

pub use diff::{Applies, Change, Refusal, ReloadPlan};
pub use duration::HumanDuration;
pub use edge::{
    AcmeChallenge, AcmeSettings, EdgePolicy, FrontConfig, HostPattern, HostRoutes, TlsFiles,
};
pub use error::ConfigError;
pub use fleet::{FleetConfig, Strategy, DEFAULT_REMOTE_CONFIG};
pub use settings::{
    BundleLimits, CacheRule, ChecksConfig, ComponentConfig, ComponentKind, ComponentName,
    ComposeRef, Config, DaemonConfig, DiskCheck, HealthConfig, HookConfig, MigrationsConfig,
    NotifyConfig, OnFailure, PipelineConfig, ProcessConfig, RestartPolicy, ServiceConfig,
    StabilizeChecks, StaticConfig, SystemdConfig, UpstreamProtocol, UrlSource, VerifyConfig,
    PLACEHOLDERS,
};

use raw::RawConfig;
use std::path::{Path, PathBuf};
use validate::Validator;

/// Where the config is looked for when `--config` is not given.
pub const CONFIG_ENV: &str = "CUTOVER_CONFIG";
pub const DEFAULT_CONFIG_FILE: &str = "cutover.toml";

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
}

#[cfg(test)]
mod tests;

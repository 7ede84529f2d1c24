//! Keys about who sees what: the environment a release starts with (`env_clear`,
//! `inherit_env`), the group that may use the control socket (`socket_group`), and the hash
//! that tells which version of the file a daemon runs.

use super::raw::RawComponent;
use super::validate::Validator;
use super::ConfigError;
use sha2::{Digest, Sha256};

impl Validator<'_> {
    /// A process component's `env_clear` and `inherit_env`: what a release keeps of the
    /// daemon's environment (`None`: all of it).
    pub(super) fn release_environment(
        &self,
        name: &str,
        raw: &RawComponent,
    ) -> Result<Option<Vec<String>>, ConfigError> {
        let env_clear = raw.env_clear.unwrap_or(false);
        let inherit = raw.inherit_env.clone().unwrap_or_default();
        let key = ["components", name, "inherit_env"];
        if !inherit.is_empty() && !env_clear {
            return Err(self.error(
                &key,
                "inherit_env applies only with env_clear = true (without it a release inherits the daemon's whole environment)",
            ));
        }
        for variable in &inherit {
            if !is_variable_name(variable) {
                return Err(self.error(
                    &key,
                    format!(
                        "{variable:?} is not an environment variable name (letters, digits and `_`, not starting with a digit)"
                    ),
                ));
            }
        }
        Ok(env_clear.then_some(inherit))
    }

    pub(super) fn socket_group(
        &self,
        group: Option<String>,
    ) -> Result<Option<String>, ConfigError> {
        let Some(group) = group else {
            return Ok(None);
        };
        // What useradd/groupadd accept; the group's existence is checked where the daemon runs
        // (the machine that validates may not have it).
        let valid = !group.is_empty()
            && group.len() <= 32
            && !group.starts_with('-')
            && group
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            return Err(self.error(
                &["daemon", "socket_group"],
                format!("{group:?} is not a group name"),
            ));
        }
        Ok(Some(group))
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

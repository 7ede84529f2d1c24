//! The release store: immutable artifacts under `data_dir/releases/<component>/<release-id>/`.
//!
//! A release directory is built under a temporary name, fsynced, then renamed into place, so a
//! crash never leaves a half-written release under a real name. Layout of one release:
//!
//! ```text
//! releases/backend/v2/
//!   artifact        the stored executable (mode 0755)
//!   release.json    id, sha256, size, stored time
//!   logs/           one log file per instance of this release (not part of the artifact)
//! ```
//!
//! `release_store.rs` is the [`ReleaseStore`] itself, `artifact.rs` checks that an artifact can
//! run here, `durable.rs` writes files that survive a crash.

mod artifact;
mod bundle_program;
mod durable;
mod release_store;

pub use artifact::check_program;
pub use bundle_program::check_bundle_program;
pub use durable::sha256_file;
pub use release_store::ReleaseStore;

use crate::config::ComponentName;
use serde::{de, Deserialize, Deserializer, Serialize};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// A release identifier, usually a commit SHA or a version; safe to use as a directory name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ReleaseId(String);

impl ReleaseId {
    pub fn parse(text: &str) -> Result<Self, String> {
        let ok = !text.is_empty()
            && text.len() <= 64
            && text.starts_with(|c: char| c.is_ascii_alphanumeric())
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "invalid release id {text:?}: use 1-64 characters A-Z, a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ReleaseId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ReleaseId::parse(&text).map_err(de::Error::custom)
    }
}

/// What a release holds: one executable file, or an unpacked tree (bundle or static site).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    #[default]
    File,
    Bundle,
}

/// Metadata of a stored release, as kept in `release.json` and in the state database.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredRelease {
    pub component: ComponentName,
    pub id: ReleaseId,
    /// Of the file, or for a bundle of its sorted file manifest (see [`crate::bundle::tree_sha256`]).
    pub sha256: String,
    pub size: u64,
    /// Unix time in milliseconds.
    pub stored_at: i64,
    #[serde(default)]
    pub kind: ArtifactKind,
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("artifact {} does not exist", .0.display())]
    Missing(PathBuf),
    #[error("artifact {} is not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("artifact {} is empty", .0.display())]
    Empty(PathBuf),
    #[error("artifact {} is not executable (mode {mode:o}); run `chmod +x` on it", path.display())]
    NotExecutable { path: PathBuf, mode: u32 },
    #[error("artifact {} is built for {found}, but this machine is {expected}", path.display())]
    WrongMachine {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("artifact {} is neither an ELF executable nor a script with a #! line", .0.display())]
    NotRunnable(PathBuf),
    #[error(
        "release {id} of {component} is already stored with sha256 {stored}, but this artifact has sha256 {new}; use a new release id"
    )]
    Conflict {
        component: ComponentName,
        id: ReleaseId,
        stored: String,
        new: String,
    },
    #[error("release {id} of {component} is not in the release store")]
    NotStored {
        component: ComponentName,
        id: ReleaseId,
    },
    #[error("{0}")]
    Bundle(#[from] crate::bundle::BundleError),
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ReleaseError + 'a {
    move |source| ReleaseError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

pub use crate::vocab::now_millis;

#[cfg(test)]
mod tests;

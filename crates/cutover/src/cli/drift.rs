//! Whether the daemon runs the config file this command read. Editing `cutover.toml` changes
//! nothing until the daemon reads it again; without a word about that, a component added to the
//! file is "unknown" to `deploy` and nobody says why.

use crate::protocol::{CONFIG_LOADED_AT_HEADER, CONFIG_SHA256_HEADER};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// What to do about it. One place, so that `cutover reload` can be named here once it exists.
pub const APPLY_CHANGES: &str = "apply it with `cutover reload` (or `systemctl reload cutover`)";

/// The config file this command read, compared with what the daemon says it runs.
pub struct Drift {
    path: PathBuf,
    sha256: String,
    /// Set by the first answer that names the daemon's config: the notice when it differs.
    found: OnceLock<Option<String>>,
}

impl Drift {
    pub fn new(path: &Path, sha256: &str) -> Self {
        Self {
            path: path.to_owned(),
            sha256: sha256.to_owned(),
            found: OnceLock::new(),
        }
    }

    /// Looks at an answer's headers; the first time they show a different config, says so on
    /// stderr (once per command).
    pub fn observe(&self, headers: &http::HeaderMap) {
        if self.found.get().is_some() {
            return;
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        // A daemon older than these headers says nothing: nothing to compare.
        let Some(theirs) = header(CONFIG_SHA256_HEADER) else {
            return;
        };
        let loaded_at = header(CONFIG_LOADED_AT_HEADER).and_then(|v| v.parse::<i64>().ok());
        let notice = (theirs != self.sha256).then(|| self.notice(loaded_at));
        if let Some(notice) = &notice {
            eprintln!("warning: {}", super::output::printable(notice));
        }
        let _ = self.found.set(notice);
    }

    /// The notice, when an answer showed that the daemon runs another version of the file.
    pub fn notice_if_differs(&self) -> Option<&str> {
        self.found.get().and_then(|n| n.as_deref())
    }

    fn notice(&self, loaded_at: Option<i64>) -> String {
        let modified_since = |at: i64| {
            std::fs::metadata(&self.path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .is_some_and(|t| t.as_millis() as i64 >= at)
        };
        // Edited after the daemon read it: older. Otherwise (another copy of the file, or one
        // put back from elsewhere) all that is known is that the two differ.
        let which = match loaded_at {
            Some(at) if !modified_since(at) => "a different version",
            _ => "an older version",
        };
        let when = loaded_at
            .map(|at| format!(" (loaded at {})", super::output::time(at)))
            .unwrap_or_default();
        format!(
            "the daemon runs {which} of {}{when}: {APPLY_CHANGES}",
            self.path.display()
        )
    }
}

/// Whether a refusal is about components the daemon does not know or does not deploy: the
/// errors a component added to the file but not yet loaded produces.
pub fn is_about_unknown_components(message: &str) -> bool {
    message.starts_with("unknown component") || message.contains("which is not being deployed")
}

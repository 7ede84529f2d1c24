//! Words every layer shares, at the bottom of the crate: it imports nothing else of it.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// The wall clock, as Unix milliseconds: what the state database and the protocol record.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A byte count for people ("40.3 MiB").
pub fn human_bytes(bytes: u64) -> String {
    bytesize::ByteSize(bytes).to_string_as(true)
}

/// Where a deploy is; committed before the step starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Preparing,
    Migrating,
    Starting,
    Switching,
    Stabilizing,
    Finalizing,
    RollingBack,
    Done,
}

/// How a deploy or pipeline ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    /// Switched, then swapped back automatically during stabilization.
    RolledBack,
    /// The daemon stopped (crash or shutdown) while it ran.
    Interrupted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployKind {
    Deploy,
    Rollback,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    Starting,
    Serving,
    Stopped,
}

macro_rules! text_enum {
    ($ty:ty { $($variant:ident = $text:literal),* $(,)? }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(Self::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

text_enum!(Phase { Preparing = "preparing",
        Migrating = "migrating", Starting = "starting", Switching = "switching",
    Stabilizing = "stabilizing", Finalizing = "finalizing", RollingBack = "rolling_back", Done = "done" });
text_enum!(Outcome { Succeeded = "succeeded", Failed = "failed", RolledBack = "rolled_back",
    Interrupted = "interrupted" });
text_enum!(DeployKind { Deploy = "deploy", Rollback = "rollback" });
text_enum!(InstanceState { Starting = "starting", Serving = "serving", Stopped = "stopped" });

/// Which protocol a service speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    Postgres,
    Redis,
}

impl std::fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServiceKind::Postgres => "postgres",
            ServiceKind::Redis => "redis",
        })
    }
}

/// Declares [`NotifyKind`] from one table: each webhook event with its name (in `[[notify]]
/// events`, checked by config, and the JSON) and its one-line summary, so a new event cannot
/// miss one of them.
macro_rules! event_kinds {
    ($($(#[$doc:meta])* $kind:ident => $name:literal, $icon:literal, $what:literal;)*) => {
        /// The events a webhook can ask for.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum NotifyKind {
            $($(#[$doc])* $kind,)*
        }

        impl NotifyKind {
            pub const ALL: [NotifyKind; [$($name),*].len()] = [$(NotifyKind::$kind),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(NotifyKind::$kind => $name,)*
                }
            }

            pub fn summary(self) -> (&'static str, &'static str) {
                match self {
                    $(NotifyKind::$kind => ($icon, $what),)*
                }
            }
        }
    };
}

event_kinds! {
    DeployStarted => "deploy_started", "🚀", "deploy started";
    DeploySucceeded => "deploy_succeeded", "✅", "deployed";
    DeployFailed => "deploy_failed", "❌", "deploy failed";
    /// An automatic rollback (stabilization failed and traffic went back to the old release).
    Rollback => "rollback", "↩️", "rolled back";
    /// A deploy interrupted by a crash or a shutdown of the daemon.
    Interrupted => "interrupted", "⚠️", "deploy interrupted";
    /// The serving instance died or failed `unhealthy_threshold` health probes in a row
    /// outside a deploy (the watchdog restarts it).
    Unhealthy => "unhealthy", "🚑", "unhealthy";
    /// The serving instance is healthy again (it answered, or a restart replaced it).
    Recovered => "recovered", "💚", "recovered";
}

impl NotifyKind {
    pub fn parse(name: &str) -> Option<NotifyKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl serde::Serialize for NotifyKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for NotifyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

//! `[fleet]`: the hosts `cutover fleet ...` deploys to over SSH, and how. Read on the operator's
//! machine (or CI) only; the daemons on the hosts ignore it, so a reload never looks at it.

use serde::Deserialize;
use std::path::PathBuf;

/// Where each host's daemon reads its config, when `remote_config` is not given: the path the
/// generated systemd unit uses.
pub const DEFAULT_REMOTE_CONFIG: &str = "/etc/cutover/cutover.toml";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    hosts: Vec<String>,
    remote_config: Option<PathBuf>,
    canary: Option<usize>,
    max_parallel: Option<usize>,
    ssh: Option<Vec<String>>,
    remote_binary: Option<String>,
    history: Option<PathBuf>,
    strategy: Option<String>,
}

/// How a fleet deploy moves traffic across its hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// The canary wave deploys and stabilizes first, then waves of `max_parallel`: a bad
    /// release reaches the canary only.
    Waves,
    /// Every host starts the release and passes its health gate while the old release still
    /// serves, holding before its switch; only when all are healthy do all switch, at once. No
    /// host serves the new release unless every host can: for releases that must not run
    /// beside the old one across hosts (a changed wire format between services).
    AllHealthyThenSwitch,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Waves => "waves",
            Strategy::AllHealthyThenSwitch => "all_healthy_then_switch",
        }
    }
}

/// The validated `[fleet]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetConfig {
    /// SSH destinations, as `ssh` takes them: an alias of `~/.ssh/config`, `host`, `user@host`,
    /// or `ssh://user@host:port`. Unique, in deploy order.
    pub hosts: Vec<String>,
    /// The config file of the daemon on every host.
    pub remote_config: PathBuf,
    /// Hosts in the first wave, which deploys and stabilizes before any other host moves.
    pub canary: usize,
    /// Hosts per later wave.
    pub max_parallel: usize,
    /// The ssh command and its leading options (`["ssh", "-F", "ci_ssh_config"]`); cutover adds
    /// its own options after these, so the user's win where both set one.
    pub ssh: Vec<String>,
    /// The cutover binary on the hosts (a name looked up in the remote PATH, or a path).
    pub remote_binary: String,
    /// The operator-side history of fleet runs (SQLite); none: the default under
    /// `$XDG_STATE_HOME` (see `fleet::history`).
    pub history: Option<PathBuf>,
    pub strategy: Strategy,
}

/// A refused `[fleet]` key (the field under `fleet`) and why; `validate.rs` locates it.
pub(super) type FleetError = (&'static str, String);

impl RawFleet {
    /// The typed table; `resolve` makes `history` absolute against the config's directory.
    pub(super) fn build(
        self,
        resolve: impl Fn(&std::path::Path) -> PathBuf,
    ) -> Result<FleetConfig, FleetError> {
        let raw = self;
        if raw.hosts.is_empty() {
            return Err(("hosts", String::from("no hosts: list the ssh destinations, e.g. hosts = [\"web1\", \"deploy@10.0.0.2\"]")));
        }
        for (i, host) in raw.hosts.iter().enumerate() {
            if let Err(why) = check_destination(host) {
                return Err(("hosts", format!("{host:?}: {why}")));
            }
            if raw.hosts[..i].contains(host) {
                return Err(("hosts", format!("{host:?} is listed twice")));
            }
        }
        let strategy = match raw.strategy.as_deref() {
            None | Some("waves") => Strategy::Waves,
            Some("all_healthy_then_switch") => Strategy::AllHealthyThenSwitch,
            Some(other) => {
                return Err((
                    "strategy",
                    format!(
                        "unknown strategy {other:?}: use \"waves\" or \"all_healthy_then_switch\""
                    ),
                ))
            }
        };
        if strategy == Strategy::AllHealthyThenSwitch {
            // Silently ignoring them would let a user believe a canary protects them.
            for (key, given) in [("canary", raw.canary), ("max_parallel", raw.max_parallel)] {
                if given.is_some() {
                    return Err((
                        key,
                        String::from(
                            "has no meaning with strategy = \"all_healthy_then_switch\": every host deploys at once and none switches before all are healthy",
                        ),
                    ));
                }
            }
        }
        let count = raw.hosts.len();
        let canary = raw.canary.unwrap_or(1);
        if canary == 0 || canary > count {
            return Err((
                "canary",
                format!("must be between 1 and the number of hosts ({count}), not {canary}"),
            ));
        }
        let max_parallel = raw.max_parallel.unwrap_or(2);
        if max_parallel == 0 {
            return Err(("max_parallel", String::from("must be at least 1")));
        }
        let ssh = raw.ssh.unwrap_or_else(|| vec!["ssh".into()]);
        if ssh.first().is_none_or(|program| program.trim().is_empty()) {
            return Err((
                "ssh",
                String::from(
                    "needs the ssh program first, e.g. ssh = [\"ssh\", \"-F\", \"ssh_config\"]",
                ),
            ));
        }
        let remote_binary = raw.remote_binary.unwrap_or_else(|| "cutover".into());
        if remote_binary.trim().is_empty() {
            return Err(("remote_binary", String::from("must not be empty")));
        }
        let remote_config = raw
            .remote_config
            .unwrap_or_else(|| DEFAULT_REMOTE_CONFIG.into());
        if !remote_config.is_absolute() {
            return Err((
                "remote_config",
                String::from(
                    "must be an absolute path on the hosts, e.g. \"/etc/cutover/cutover.toml\"",
                ),
            ));
        }
        Ok(FleetConfig {
            hosts: raw.hosts,
            remote_config,
            canary,
            max_parallel,
            ssh,
            remote_binary,
            history: raw.history.map(|p| resolve(&p)),
            strategy,
        })
    }
}

/// What ssh itself would refuse, or take as an option: caught here with the key named.
fn check_destination(host: &str) -> Result<(), &'static str> {
    if host.is_empty() {
        return Err("empty destination");
    }
    if host.starts_with('-') {
        return Err("a destination cannot start with '-' (ssh would read it as an option)");
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a destination cannot contain spaces or control characters");
    }
    Ok(())
}

//! The config's unit tests, by topic; the helpers and the reference config are here.

use super::*;
use std::time::Duration;

mod components;
mod daemon;
mod diff;
mod fleet;
mod located;
mod services;

/// The config from the core issue, accepted exactly as written.
const ISSUE_CONFIG: &str = r#"
[daemon]
data_dir = ".cutover"                      # release store, state database, logs
control_socket = ".cutover/control.sock"

[components.backend]
listen = "127.0.0.1:8080"                  # public address; cutover owns it
command = ["{artifact}"]                   # how to start a release; {artifact} = stored release file
env = { API_ADDR = "127.0.0.1:{port}" }    # {port} = free loopback port picked for this instance
# env_file = ".env.production"             # optional, dotenv format
health = { path = "/health", interval = "250ms", timeout = "2s", healthy_threshold = 2, start_timeout = "30s" }
drain_timeout = "30s"
stop_timeout = "10s"
keep_releases = 5
"#;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(Path::new("/srv/app/cutover.toml"), text).map_err(|e| e.to_string())
}

/// Asserts the error message, position included, for a config text.
fn check_error(text: &str, expected: &str) {
    let err = parse(text).expect_err("config should be rejected");
    assert_eq!(err, expected, "for config:\n{text}");
}

/// A process component listening on `listen`, with `extra` lines.
fn component(name: &str, listen: &str, extra: &str) -> String {
    format!(
        "[components.{name}]\nlisten = \"{listen}\"\ncommand = [\"x\", \"--port={{port}}\"]\n{extra}"
    )
}

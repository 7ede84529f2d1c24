use super::*;
use std::time::Duration;

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

#[test]
fn accepts_the_issue_config_and_resolves_paths() {
    let config = parse(ISSUE_CONFIG).unwrap();
    assert_eq!(config.daemon.data_dir, Path::new("/srv/app/.cutover"));
    assert_eq!(
        config.daemon.control_socket,
        Path::new("/srv/app/.cutover/control.sock")
    );
    let backend = config.component("backend").unwrap();
    assert_eq!(backend.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(backend.health.interval.get(), Duration::from_millis(250));
    assert_eq!(backend.health.healthy_threshold, 2);
    assert_eq!(backend.keep_releases, 5);
    assert!(backend.executes_artifact());
    assert_eq!(backend.stabilize.get(), Duration::from_secs(60));
}

#[test]
fn unknown_key_names_file_line_and_key() {
    check_error(
        "[components.backend]\nlisten = \"127.0.0.1:1\"\ncommand = [\"x\"]\ncolour = \"blue\"\n",
        "/srv/app/cutover.toml:4:1: components.backend.colour: unknown field `colour`, expected one of \
         `listen`, `command`, `env`, `env_file`, `health`, `drain_timeout`, `stop_timeout`, \
         `keep_releases`, `stabilize`, `stabilize_checks`, `after`",
    );
}

#[test]
fn bad_duration_names_the_nested_key() {
    check_error(
        "[components.backend]\nlisten = \"127.0.0.1:1\"\ncommand = [\"x\"]\nhealth = { interval = \"fast\" }\n",
        "/srv/app/cutover.toml:4:23: components.backend.health.interval: invalid duration \"fast\" \
         (expected number at 0); write a number and a unit, e.g. \"250ms\", \"60s\", \"10m\"",
    );
}

#[test]
fn bad_address_and_types_are_located() {
    check_error(
        "[components.api]\nlisten = \"localhost\"\ncommand = [\"x\"]\n",
        "/srv/app/cutover.toml:2:10: components.api.listen: invalid socket address syntax",
    );
    check_error(
        "[components.api]\nlisten = \"127.0.0.1:1\"\ncommand = \"x\"\n",
        "/srv/app/cutover.toml:3:11: components.api.command: invalid type: string \"x\", expected a sequence",
    );
    check_error(
        "[components.api]\ncommand = [\"x\"]\n",
        "/srv/app/cutover.toml:1:1: components.api: missing field `listen`",
    );
}

#[test]
fn semantic_errors_point_at_the_key() {
    check_error(
        "[components.api]\nlisten = \"127.0.0.1:1\"\ncommand = [\"{artfact}\"]\n",
        "/srv/app/cutover.toml:3:1: components.api.command: unknown placeholder {artfact}; known: \
         {artifact}, {port}, {release}, {release_dir}, {component}, {data_dir}",
    );
    check_error(
        "[components.api]\nlisten = \"127.0.0.1:1\"\ncommand = [\"x\"]\nkeep_releases = 1\n",
        "/srv/app/cutover.toml:4:1: components.api.keep_releases: keep_releases must be at least 2 \
         (the active release and the one to roll back to)",
    );
    check_error(
        "[components.Api]\nlisten = \"127.0.0.1:1\"\ncommand = [\"x\"]\n",
        "/srv/app/cutover.toml:1:13: components.Api: invalid component name \"Api\": use 1-48 \
         characters a-z, 0-9, '-' or '_', starting with a letter",
    );
}

#[test]
fn after_orders_components_and_rejects_cycles() {
    let config = parse(
        "[components.web]\nlisten = \"127.0.0.1:2\"\ncommand = [\"x\"]\nafter = [\"api\"]\n\
         [components.api]\nlisten = \"127.0.0.1:1\"\ncommand = [\"x\"]\n",
    )
    .unwrap();
    let order: Vec<_> = config.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(order, ["api", "web"]);

    check_error(
        "[components.a]\nlisten = \"127.0.0.1:1\"\ncommand = [\"x\"]\nafter = [\"b\"]\n\
         [components.b]\nlisten = \"127.0.0.1:2\"\ncommand = [\"x\"]\nafter = [\"a\"]\n",
        "/srv/app/cutover.toml:4:1: components.a.after: `after` forms a cycle among: a, b",
    );
    check_error(
        "[components.a]\nlisten = \"127.0.0.1:1\"\ncommand = [\"x\"]\nafter = [\"nope\"]\n",
        "/srv/app/cutover.toml:4:1: components.a.after: unknown component \"nope\" in `after`",
    );
}

#[test]
fn duplicate_listen_is_rejected() {
    check_error(
        "[components.a]\nlisten = \"127.0.0.1:9\"\ncommand = [\"x\"]\n\
         [components.b]\nlisten = \"127.0.0.1:9\"\ncommand = [\"x\"]\n",
        "/srv/app/cutover.toml:5:1: components.b.listen: 127.0.0.1:9 is already the listen address of a",
    );
}

#[test]
fn syntax_error_is_located() {
    check_error(
        "[daemon]\ndata_dir = \n",
        "/srv/app/cutover.toml:2:12: invalid string\nexpected `\"`, `'`",
    );
}

//! Errors of the file as written name `file:line:col: key`, down to nested keys.

use super::*;

#[test]
fn unknown_key_names_file_line_and_key() {
    check_error(
        "[components.backend]\nlisten = \"127.0.0.1:1\"\ncommand = [\"x\"]\ncolour = \"blue\"\n",
        "/srv/app/cutover.toml:4:1: components.backend.colour: unknown field `colour`, expected one of \
         `kind`, `listen`, `command`, `env`, `env_file`, `health`, `drain_timeout`, `stop_timeout`, `upstream_timeout`, \
         `keep_releases`, `stabilize`, `stabilize_checks`, `after`, `spa_fallback`, `cache`, `run`, `verify`, `requires`, `migrations`, `paths`, `build`, \
         `artifact`, `required_env`, `restart`, `env_clear`, `inherit_env`, `hosts`, `path_prefix`, `strip_prefix`, `tls`, `upstream`, `h2c`, `access_log`",
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
        "/srv/app/cutover.toml:1:13: components.api: missing field `listen` (or `hosts`, to be served on the shared [edge] listeners)",
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
fn syntax_error_is_located() {
    check_error(
        "[daemon]\ndata_dir = \n",
        "/srv/app/cutover.toml:2:12: daemon.data_dir: invalid string\nexpected `\"`, `'`",
    );
}

#[test]
fn numbers_too_large_name_their_key() {
    check_error(
        &component(
            "api",
            "127.0.0.1:1",
            "health = { healthy_threshold = 4294967296 }\n",
        ),
        "/srv/app/cutover.toml:4:32: components.api.health.healthy_threshold: invalid value: \
         integer `4294967296`, expected u32",
    );
    let err = parse(&component(
        "api",
        "127.0.0.1:1",
        "keep_releases = 99999999999999999999\n",
    ))
    .unwrap_err();
    assert!(
        err.starts_with("/srv/app/cutover.toml:4:17: components.api.keep_releases: "),
        "{err}"
    );
}

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
    assert_eq!(backend.listen, Some("127.0.0.1:8080".parse().unwrap()));
    let process = backend.process().unwrap();
    assert_eq!(process.health.interval.get(), Duration::from_millis(250));
    assert_eq!(process.health.healthy_threshold, 2);
    assert_eq!(backend.keep_releases, 5);
    assert!(process.executes_artifact());
    assert_eq!(backend.stabilize.get(), Duration::from_secs(60));
}

#[test]
fn unknown_key_names_file_line_and_key() {
    check_error(
        "[components.backend]\nlisten = \"127.0.0.1:1\"\ncommand = [\"x\"]\ncolour = \"blue\"\n",
        "/srv/app/cutover.toml:4:1: components.backend.colour: unknown field `colour`, expected one of \
         `kind`, `listen`, `command`, `env`, `env_file`, `health`, `drain_timeout`, `stop_timeout`, `upstream_timeout`, \
         `keep_releases`, `stabilize`, `stabilize_checks`, `after`, `spa_fallback`, `cache`, `run`, `verify`, `requires`, `migrations`, `paths`, `build`, \
         `artifact`, `required_env`, `restart`, `env_clear`, `inherit_env`",
    );
}

#[test]
fn a_clean_release_environment_and_the_socket_group_are_checked() {
    let base = "[components.backend]\nlisten = \"127.0.0.1:1\"\ncommand = [\"x\"]\n";
    let config = parse(&format!(
        "{base}env_clear = true\ninherit_env = [\"PATH\", \"LANG\"]\n"
    ))
    .unwrap();
    let process = config.component("backend").unwrap().process().unwrap();
    assert_eq!(
        process.clean_env,
        Some(vec!["PATH".to_owned(), "LANG".to_owned()])
    );
    assert_eq!(
        parse(base)
            .unwrap()
            .component("backend")
            .unwrap()
            .process()
            .unwrap()
            .clean_env,
        None
    );
    check_error(
        &format!("{base}inherit_env = [\"PATH\"]\n"),
        "/srv/app/cutover.toml:4:1: components.backend.inherit_env: inherit_env applies only with \
         env_clear = true (without it a release inherits the daemon's whole environment)",
    );
    check_error(
        &format!("{base}env_clear = true\ninherit_env = [\"PA TH\"]\n"),
        "/srv/app/cutover.toml:5:1: components.backend.inherit_env: \"PA TH\" is not an environment \
         variable name (letters, digits and `_`, not starting with a digit)",
    );
    check_error(
        &format!("[daemon]\nsocket_group = \"a b\"\n{base}"),
        "/srv/app/cutover.toml:2:1: daemon.socket_group: \"a b\" is not a group name",
    );
}

#[test]
fn restart_policy_has_defaults_and_checked_values() {
    let config = parse(ISSUE_CONFIG).unwrap();
    let restart = &config
        .component("backend")
        .unwrap()
        .process()
        .unwrap()
        .restart;
    assert_eq!(
        (restart.max_restarts, restart.window.get(), restart.rollback),
        (5, std::time::Duration::from_secs(300), true)
    );
    assert_eq!(
        restart.hold_requests.get(),
        std::time::Duration::from_secs(5)
    );
    let custom = parse(&format!(
        "{ISSUE_CONFIG}restart = {{ max_restarts = 2, window = \"1m\", rollback = false }}\n"
    ))
    .unwrap();
    let restart = &custom
        .component("backend")
        .unwrap()
        .process()
        .unwrap()
        .restart;
    assert_eq!((restart.max_restarts, restart.rollback), (2, false));
    check_error(
        "[components.backend]\nlisten = \"127.0.0.1:1\"\ncommand = [\"x\"]\nrestart = { max_restarts = 0 }\n",
        "/srv/app/cutover.toml:4:13: components.backend.restart.max_restarts: max_restarts must be at least 1",
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
        "/srv/app/cutover.toml:1:13: components.api: missing field `listen`",
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
        "/srv/app/cutover.toml:2:12: daemon.data_dir: invalid string\nexpected `\"`, `'`",
    );
}

/// The additions of the staged-pipeline issue, accepted as written.
const PIPELINE_CONFIG: &str = r#"
[components.backend]
listen = "127.0.0.1:8080"
command = ["{artifact}"]
stabilize = "60s"                  # watch period after the switch; "0s" turns it off
stabilize_checks = { unhealthy_threshold = 3, max_error_rate = 0.05, min_requests = 20 }

[components.frontend]
kind = "static"                    # "process" (the default) or "static" or "hook"
listen = "127.0.0.1:3000"
after = ["backend"]                # start only once backend is finalized and stable
spa_fallback = "index.html"        # optional: unknown paths without a file extension get this file
cache = [ { glob = "assets/**", control = "public, max-age=31536000, immutable" } ]

[components.docs]
kind = "hook"
after = ["frontend"]
run = ["./trigger.sh", "{release}"]
verify = { url = "http://127.0.0.1:9/version", body_contains = "{release}", timeout = "10m", interval = "5s" }

[pipeline]
on_failure = "keep"                # or "rollback_all": a failed later stage also rolls back earlier ones
"#;

#[test]
fn accepts_static_hook_and_pipeline_settings() {
    let config = parse(PIPELINE_CONFIG).unwrap();
    let order: Vec<_> = config.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(order, ["backend", "frontend", "docs"]);
    let frontend = config.component("frontend").unwrap();
    let ComponentKind::Static(site) = &frontend.kind else {
        panic!("static expected")
    };
    assert_eq!(site.spa_fallback.as_deref(), Some("index.html"));
    assert_eq!(site.cache[0].glob, "assets/**");
    let docs = config.component("docs").unwrap();
    assert!(docs.listen.is_none());
    let ComponentKind::Hook(hook) = &docs.kind else {
        panic!("hook expected")
    };
    assert_eq!(hook.run, ["./trigger.sh", "{release}"]);
    assert_eq!(hook.verify.timeout.get(), Duration::from_secs(600));
    assert_eq!(hook.workdir, Path::new("/srv/app"));
    assert_eq!(config.pipeline.on_failure, OnFailure::Keep);
    let rollback_all =
        parse(&PIPELINE_CONFIG.replace("on_failure = \"keep\"", "on_failure = \"rollback_all\""))
            .unwrap();
    assert_eq!(rollback_all.pipeline.on_failure, OnFailure::RollbackAll);
}

#[test]
fn keys_of_another_kind_are_refused() {
    check_error(
        "[components.web]\nkind = \"static\"\nlisten = \"127.0.0.1:1\"\ncommand = [\"x\"]\n",
        "/srv/app/cutover.toml:4:1: components.web.command: `command` does not apply to kind = \"static\"",
    );
    check_error(
        "[components.web]\nkind = \"hook\"\nrun = [\"x\"]\n",
        "/srv/app/cutover.toml:1:13: components.web: missing field `verify` for kind = \"hook\"",
    );
    check_error(
        "[components.web]\nkind = \"blue\"\n",
        "/srv/app/cutover.toml:2:8: components.web.kind: unknown variant `blue`, expected one of `process`, `static`, `hook`",
    );
    check_error(
        "[pipeline]\non_failure = \"panic\"\n",
        "/srv/app/cutover.toml:2:14: pipeline.on_failure: unknown variant `panic`, expected `keep` or `rollback_all`",
    );
}

/// The additions of the infrastructure issue, accepted as written.
const SERVICES_CONFIG: &str = r#"
[services.db]
kind = "postgres"
url_env = "DATABASE_URL"            # looked up in env_file, then the environment; or url = "postgres://..."
env_file = ".env.production"
compose = { file = "docker-compose.prod.yml", service = "db" }   # optional
required = true

[services.redis]
kind = "redis"
url = "redis://127.0.0.1:6379"
compose = { file = "docker-compose.prod.yml", service = "redis" }

[components.backend]
listen = "127.0.0.1:8080"
command = ["{release_dir}/bin/api"]  # a release may be a bundle: tar archive or directory
requires = ["db", "redis"]           # deploy refused while a required service is unhealthy
migrations = { dir = "migrations", service = "db", lock_timeout = "60s" }  # dir inside the release

[checks]
disk = [ { path = ".", min_free = "1GiB" } ]
"#;

#[test]
fn accepts_services_checks_and_migrations() {
    let config = parse(SERVICES_CONFIG).unwrap();
    let db = config.service("db").unwrap();
    assert_eq!(db.kind, crate::services::ServiceKind::Postgres);
    let UrlSource::Env { var, env_file } = &db.url else {
        panic!("url_env expected")
    };
    assert_eq!(var, "DATABASE_URL");
    assert_eq!(
        env_file.as_deref(),
        Some(Path::new("/srv/app/.env.production"))
    );
    assert_eq!(
        db.compose.as_ref().unwrap().file,
        Path::new("/srv/app/docker-compose.prod.yml")
    );
    let process = config.component("backend").unwrap().process().unwrap();
    assert_eq!(process.requires, ["db", "redis"]);
    let migrations = process.migrations.as_ref().unwrap();
    assert_eq!(
        (migrations.dir.as_path(), migrations.service.as_str()),
        (Path::new("migrations"), "db")
    );
    assert_eq!(config.checks.disk[0].min_free, 1 << 30);
    assert_eq!(config.checks.disk[0].path, Path::new("/srv/app/."));
}

#[test]
fn service_references_are_checked() {
    check_error(
        &SERVICES_CONFIG.replace("requires = [\"db\", \"redis\"]", "requires = [\"db\", \"cache\"]"),
        "/srv/app/cutover.toml:17:1: components.backend.requires: unknown service \"cache\" in `requires`; configured: db, redis",
    );
    check_error(
        &SERVICES_CONFIG.replace("service = \"db\", lock_timeout", "service = \"redis\", lock_timeout"),
        "/srv/app/cutover.toml:18:1: components.backend.migrations: migrations need a postgres service; \"redis\" is not one",
    );
    check_error(
        &SERVICES_CONFIG.replace("min_free = \"1GiB\"", "min_free = \"lots\""),
        "/srv/app/cutover.toml:21:35: checks.disk[0].min_free: invalid size \"lots\"; write a number and a unit, e.g. \"1GiB\" or \"500MB\"",
    );
}

#[test]
fn connection_limits_have_defaults_and_are_checked() {
    let config = parse(&format!("[daemon]\n{}", component("a", "127.0.0.1:9", ""))).unwrap();
    assert_eq!(config.daemon.max_connections, None);
    assert_eq!(
        config.daemon.body_read_timeout.get(),
        Duration::from_secs(30)
    );
    let set = parse(&format!(
        "[daemon]\nmax_connections = 500\nbody_read_timeout = \"5s\"\n{}",
        component("a", "127.0.0.1:9", "")
    ))
    .unwrap();
    assert_eq!(set.daemon.max_connections, Some(500));
    assert_eq!(set.daemon.body_read_timeout.get(), Duration::from_secs(5));
    check_error(
        &format!(
            "[daemon]\nmax_connections = 0\n{}",
            component("a", "127.0.0.1:9", "")
        ),
        "/srv/app/cutover.toml:2:1: daemon.max_connections: must be at least 1 (leave it out to \
         derive it from the fd limit)",
    );
    check_error(
        &format!(
            "[daemon]\nbody_read_timeout = \"0s\"\n{}",
            component("a", "127.0.0.1:9", "")
        ),
        "/srv/app/cutover.toml:2:1: daemon.body_read_timeout: must be more than 0s",
    );
}

// --- issue 12: what `serve` would fail on, caught by `validate` ------------------------------

/// A process component listening on `listen`, with `extra` lines.
fn component(name: &str, listen: &str, extra: &str) -> String {
    format!(
        "[components.{name}]\nlisten = \"{listen}\"\ncommand = [\"x\", \"--port={{port}}\"]\n{extra}"
    )
}

#[test]
fn overlapping_listen_addresses_are_rejected() {
    check_error(
        &format!(
            "{}{}",
            component("a", "0.0.0.0:9", ""),
            component("b", "127.0.0.1:9", "")
        ),
        "/srv/app/cutover.toml:5:1: components.b.listen: 127.0.0.1:9 overlaps 0.0.0.0:9, the \
         listen address of a (one port, and an unspecified address takes it on every address)",
    );
    // [::] is dual-stack on Linux: it takes IPv4 addresses too.
    check_error(
        &format!(
            "{}{}",
            component("a", "127.0.0.1:9", ""),
            component("b", "[::]:9", "")
        ),
        "/srv/app/cutover.toml:5:1: components.b.listen: [::]:9 overlaps 127.0.0.1:9, the \
         listen address of a (one port, and an unspecified address takes it on every address)",
    );
    // Different ports, or two specific addresses, are fine.
    parse(&format!(
        "{}{}{}",
        component("a", "0.0.0.0:9", ""),
        component("b", "127.0.0.1:10", ""),
        component("c", "127.0.0.2:10", "")
    ))
    .unwrap();
}

#[test]
fn admin_listen_may_not_take_a_component_address() {
    check_error(
        &format!(
            "[daemon]\nadmin_listen = \"0.0.0.0:9\"\n{}",
            component("a", "127.0.0.1:9", "")
        ),
        "/srv/app/cutover.toml:2:1: daemon.admin_listen: 0.0.0.0:9 overlaps 127.0.0.1:9, the \
         listen address of a (one port, and an unspecified address takes it on every address)",
    );
    check_error(
        &format!(
            "[daemon]\nadmin_listen = \"127.0.0.1:9\"\n{}",
            component("a", "127.0.0.1:9", "")
        ),
        "/srv/app/cutover.toml:2:1: daemon.admin_listen: 127.0.0.1:9 is already the listen \
         address of a",
    );
}

#[test]
fn control_socket_longer_than_sun_path_is_rejected() {
    let long = format!("/run/{}/control.sock", "d".repeat(100));
    check_error(
        &format!(
            "[daemon]\ncontrol_socket = \"{long}\"\n{}",
            component("a", "127.0.0.1:9", "")
        ),
        &format!(
            "/srv/app/cutover.toml:2:1: daemon.control_socket: control socket path {long} is \
             {} bytes; a unix socket path holds at most 107",
            long.len()
        ),
    );
    // The default socket lives in data_dir: then data_dir is what to shorten.
    let data_dir = format!("/var/lib/{}", "d".repeat(100));
    let err = parse(&format!(
        "[daemon]\ndata_dir = \"{data_dir}\"\n{}",
        component("a", "127.0.0.1:9", "")
    ))
    .unwrap_err();
    assert!(
        err.starts_with("/srv/app/cutover.toml:2:1: daemon.data_dir: control socket path "),
        "{err}"
    );
}

#[test]
fn control_socket_on_an_existing_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cutover.toml");
    let text = format!(
        "[daemon]\ncontrol_socket = \"cutover.toml\"\n{}",
        component("a", "127.0.0.1:9", "")
    );
    std::fs::write(&path, &text).unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}:2:1: daemon.control_socket: {} exists and is not a socket; a control socket \
             needs a path of its own",
            path.display(),
            path.display()
        )
    );
    // A link is judged as a link, never followed (even to a socket).
    let link = dir.path().join("link.sock");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let text = text.replace("cutover.toml\"", "link.sock\"");
    std::fs::write(&path, &text).unwrap();
    assert!(Config::load(&path)
        .unwrap_err()
        .to_string()
        .contains("is not a socket"));
    // A socket (a stale one, or the running daemon's) is fine.
    let socket = dir.path().join("live.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::write(&path, text.replace("link.sock\"", "live.sock\"")).unwrap();
    Config::load(&path).unwrap();
}

#[test]
fn a_config_without_components_is_an_error() {
    check_error(
        "[daemon]\ndata_dir = \".cutover\"\n",
        "/srv/app/cutover.toml:1:1: components: no components configured; add a \
         [components.NAME] table with at least `listen` and `command`",
    );
}

#[test]
fn unclosed_placeholders_are_errors() {
    check_error(
        "[components.api]\nlisten = \"127.0.0.1:1\"\ncommand = [\"x\", \"--port={port\"]\n",
        "/srv/app/cutover.toml:3:1: components.api.command: unclosed placeholder \"{port\"; \
         write {port}",
    );
    check_error(
        "[components.api]\nlisten = \"127.0.0.1:1\"\ncommand = [\"x\"]\nenv = { ADDR = \"127.0.0.1:{port\" }\n",
        "/srv/app/cutover.toml:4:1: components.api.env: unclosed placeholder \"{port\"; \
         write {port}",
    );
}

#[test]
fn a_command_that_never_gets_its_port_is_warned_about() {
    let config = parse("[components.api]\nlisten = \"127.0.0.1:1\"\ncommand = [\"x\"]\n").unwrap();
    assert_eq!(
        config.warnings,
        [
            "/srv/app/cutover.toml:3:1: components.api.command: neither command nor env mentions \
          {port}: the instance is told its port only in $CUTOVER_PORT, and a server that does \
          not read it cannot listen where cutover sends requests"
        ]
    );
    let config = parse(&component("api", "127.0.0.1:1", "")).unwrap();
    assert_eq!(config.warnings, Vec::<String>::new());
}

#[test]
fn health_timeouts_must_fit_their_windows() {
    check_error(
        &component(
            "api",
            "127.0.0.1:1",
            "health = { timeout = \"1h\", start_timeout = \"30s\" }\n",
        ),
        "/srv/app/cutover.toml:4:12: components.api.health.timeout: a probe timeout of 1h is \
         longer than start_timeout (30s): no probe could ever pass in time",
    );
    let config = parse(&component(
        "api",
        "127.0.0.1:1",
        "health = { interval = \"1s\", timeout = \"5s\" }\n",
    ))
    .unwrap();
    assert_eq!(
        config.warnings,
        [
            "/srv/app/cutover.toml:4:29: components.api.health.timeout: a probe timeout of 5s is \
          longer than the interval (1s): a hanging instance is noticed only after the timeout"
        ]
    );
    // The defaults (2s timeout, 250ms interval) are not worth a warning.
    assert!(parse(&component("api", "127.0.0.1:1", ""))
        .unwrap()
        .warnings
        .is_empty());
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

#[test]
fn edge_trusted_proxies_are_networks() {
    let config = parse(&format!(
        "[edge]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"fd00::/8\"]\n{}",
        component("a", "127.0.0.1:9", "")
    ))
    .unwrap();
    assert!(config.edge.trusts("10.9.8.7".parse().unwrap()));
    assert!(config.edge.trusts("192.0.2.7".parse().unwrap()));
    assert!(!config.edge.trusts("192.0.2.8".parse().unwrap()));
    check_error(
        &format!(
            "[edge]\ntrusted_proxies = [\"10.0.0.0/33\"]\n{}",
            component("a", "127.0.0.1:9", "")
        ),
        "/srv/app/cutover.toml:2:1: edge.trusted_proxies: invalid network \"10.0.0.0/33\"; write a \
         CIDR like \"10.0.0.0/8\" or an address like \"192.0.2.7\"",
    );
}

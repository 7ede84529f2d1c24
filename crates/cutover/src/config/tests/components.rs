//! Components: the kinds and their keys, defaults, placeholders, `after` order, the release
//! environment, and the warnings about what would work badly.

use super::*;

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
fn grpc_backends_are_h2c_upstreams_with_a_grpc_health_check() {
    let config = parse(&component(
        "api",
        "127.0.0.1:1",
        "upstream = \"h2c\"\nh2c = true\nhealth = { grpc = true }\n",
    ))
    .unwrap();
    let api = &config.components[0];
    assert!(api.h2c);
    let process = api.process().unwrap();
    assert_eq!(process.upstream, UpstreamProtocol::H2c);
    assert!(process.health.grpc);
    // By default: HTTP/1.1 both ways, the health check a GET.
    let plain = parse(&component("api", "127.0.0.1:1", "")).unwrap();
    assert!(!plain.components[0].h2c);
    assert_eq!(
        plain.components[0].process().unwrap().upstream,
        UpstreamProtocol::Http1
    );
    check_error(
        &component("api", "127.0.0.1:1", "health = { grpc = true }\n"),
        "/srv/app/cutover.toml:4:12: components.api.health.grpc: the gRPC health check speaks \
         HTTP/2: set `upstream = \"h2c\"` on this component",
    );
    check_error(
        &component("api", "127.0.0.1:1", "upstream = \"grpc\"\n"),
        "/srv/app/cutover.toml:4:12: components.api.upstream: unknown variant `grpc`, expected \
         `http1` or `h2c`",
    );
    check_error(
        "[components.site]\nkind = \"static\"\nlisten = \"127.0.0.1:1\"\nupstream = \"h2c\"\n",
        "/srv/app/cutover.toml:4:1: components.site.upstream: `upstream` does not apply to \
         kind = \"static\"",
    );
}

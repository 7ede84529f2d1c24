//! The reload plan: which changes apply now, at the next deploy, or not live, and how the plan
//! reads in history and in `cutover reload`'s output.

use super::*;

/// A process, a static site and a hook, with a service: the config the daemon runs.
const RUNNING: &str = r#"
[daemon]
data_dir = "/var/lib/cutover"
control_socket = "/run/cutover/control.sock"

[components.backend]
listen = "127.0.0.1:8080"
command = ["{artifact}"]
env = { API_ADDR = "127.0.0.1:{port}" }
health = { path = "/health" }
drain_timeout = "30s"

[components.web]
kind = "static"
listen = "127.0.0.1:8090"
cache = [{ glob = "*.js", control = "max-age=60" }]

[components.cdn]
kind = "hook"
run = ["./purge.sh", "{release}"]
verify = { url = "http://127.0.0.1:9/version" }

[services.db]
kind = "postgres"
url = "postgres://localhost/app"
"#;

fn plan_between(running: &str, loaded: &str) -> ReloadPlan {
    ReloadPlan::between(&parse(running).unwrap(), &parse(loaded).unwrap())
}

/// `RUNNING` with `from` replaced by `to` (which must be there).
fn edited(from: &str, to: &str) -> String {
    assert!(
        RUNNING.contains(from),
        "{from:?} is not in the running config"
    );
    RUNNING.replacen(from, to, 1)
}

/// The plan for reloading `RUNNING` with one edit.
fn reload(from: &str, to: &str) -> ReloadPlan {
    plan_between(RUNNING, &edited(from, to))
}

fn name(text: &str) -> ComponentName {
    ComponentName::parse(text).unwrap()
}

fn change(key: &str, applies: Applies) -> Change {
    Change {
        key: key.to_owned(),
        applies,
    }
}

#[test]
fn the_same_file_loaded_again_changes_nothing() {
    // Loaded twice: the load times differ, and they are not settings.
    let plan = plan_between(RUNNING, RUNNING);
    assert!(plan.is_empty(), "{plan:?}");
    assert!(!plan.refused());
    assert_eq!(plan.summary(), "no changes");
    assert_eq!(plan.lines(), ["no changes"]);
}

#[test]
fn components_are_added_and_removed_by_name() {
    let loaded = edited(
        "[components.web]\nkind = \"static\"\nlisten = \"127.0.0.1:8090\"\n",
        "[components.api2]\nlisten = \"127.0.0.1:8091\"\ncommand = [\"x\"]\n\n\
         [components.website]\nkind = \"static\"\nlisten = \"127.0.0.1:8090\"\n",
    );
    let plan = plan_between(RUNNING, &loaded);
    assert_eq!(plan.added, [name("api2"), name("website")]);
    assert_eq!(plan.removed, [name("web")]);
    assert!(plan.changed.is_empty() && plan.relisten.is_empty() && plan.settings.is_empty());
    assert_eq!(plan.summary(), "added api2, website; removed web");
    assert_eq!(
        plan.lines(),
        [
            "added component api2: applies now (it serves from its first deploy)",
            "added component website: applies now (it serves from its first deploy)",
            "removed component web: applies now",
        ]
    );
}

#[test]
fn a_new_listen_address_is_a_relisten_not_a_setting() {
    let plan = reload("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:8081\"");
    assert_eq!(
        plan.relisten,
        [(
            name("backend"),
            Some("127.0.0.1:8080".parse().unwrap()),
            Some("127.0.0.1:8081".parse().unwrap())
        )]
    );
    assert!(plan.changed.is_empty(), "{plan:?}");
    assert_eq!(
        plan.summary(),
        "backend: listen 127.0.0.1:8080 -> 127.0.0.1:8081"
    );
    assert_eq!(
        plan.lines(),
        ["backend: listen 127.0.0.1:8080 -> 127.0.0.1:8081: applies now"]
    );
}

#[test]
fn what_the_deploy_reads_applies_at_the_next_deploy() {
    let loaded = edited("path = \"/health\"", "path = \"/ready\"").replacen(
        "drain_timeout = \"30s\"",
        "drain_timeout = \"5s\"",
        1,
    );
    let plan = plan_between(RUNNING, &loaded);
    assert_eq!(
        plan.changed,
        [(
            name("backend"),
            vec![
                change("health.path", Applies::NextDeploy),
                change("drain_timeout", Applies::NextDeploy)
            ]
        )]
    );
    assert_eq!(
        plan.summary(),
        "backend: health.path, drain_timeout (next deploy)"
    );
    assert_eq!(
        plan.lines(),
        [
            "backend: health.path: applies at the next deploy",
            "backend: drain_timeout: applies at the next deploy",
        ]
    );
}

#[test]
fn what_the_proxy_reads_per_request_applies_now() {
    let plan = reload(
        "path = \"/health\" }",
        "path = \"/ready\" }\nupstream_timeout = \"5s\"",
    );
    assert_eq!(
        plan.changed,
        [(
            name("backend"),
            vec![
                change("health.path", Applies::NextDeploy),
                change("upstream_timeout", Applies::Now),
            ]
        )]
    );
    assert_eq!(
        plan.summary(),
        "backend: upstream_timeout (now), health.path (next deploy)"
    );
    assert_eq!(
        plan.lines(),
        [
            "backend: health.path: applies at the next deploy",
            "backend: upstream_timeout: applies now",
        ]
    );
}

#[test]
fn each_component_key_is_named_as_written_with_when_it_applies() {
    use Applies::{NextDeploy, Now};
    let drain = "drain_timeout = \"30s\"";
    let cases: &[(&str, &str, &str, &str, Applies)] = &[
        (
            "[\"{artifact}\"]",
            "[\"{artifact}\", \"-v\"]",
            "backend",
            "command",
            NextDeploy,
        ),
        (
            "127.0.0.1:{port}\" }",
            "127.0.0.1:{port}\", X = \"1\" }",
            "backend",
            "env",
            NextDeploy,
        ),
        (
            drain,
            "drain_timeout = \"30s\"\nenv_file = \"app.env\"",
            "backend",
            "env_file",
            NextDeploy,
        ),
        (
            drain,
            "drain_timeout = \"30s\"\nenv_clear = true",
            "backend",
            "env_clear",
            NextDeploy,
        ),
        (
            drain,
            "drain_timeout = \"30s\"\nstop_timeout = \"3s\"",
            "backend",
            "stop_timeout",
            NextDeploy,
        ),
        (
            drain,
            "drain_timeout = \"30s\"\nkeep_releases = 3",
            "backend",
            "keep_releases",
            NextDeploy,
        ),
        (
            drain,
            "drain_timeout = \"30s\"\nstabilize = \"2m\"",
            "backend",
            "stabilize",
            NextDeploy,
        ),
        (
            drain,
            "drain_timeout = \"30s\"\nstabilize_checks = { max_error_rate = 0.5 }",
            "backend",
            "stabilize_checks.max_error_rate",
            NextDeploy,
        ),
        (
            drain,
            "drain_timeout = \"30s\"\nrestart = { max_restarts = 2 }",
            "backend",
            "restart.max_restarts",
            NextDeploy,
        ),
        (
            drain,
            "drain_timeout = \"30s\"\nrequires = [\"db\"]",
            "backend",
            "requires",
            NextDeploy,
        ),
        (
            drain,
            "drain_timeout = \"30s\"\nmigrations = { dir = \"migrations\", service = \"db\" }",
            "backend",
            "migrations",
            NextDeploy,
        ),
        (
            drain,
            "drain_timeout = \"30s\"\nafter = [\"web\"]",
            "backend",
            "after",
            NextDeploy,
        ),
        (
            drain,
            "drain_timeout = \"30s\"\nrequired_env = [\"X\"]",
            "backend",
            "required_env",
            NextDeploy,
        ),
        (
            drain,
            "drain_timeout = \"30s\"\npaths = [\"api/**\"]",
            "backend",
            "paths",
            Now,
        ),
        (
            drain,
            "drain_timeout = \"30s\"\nbuild = [\"make\"]",
            "backend",
            "build",
            Now,
        ),
        (
            drain,
            "drain_timeout = \"30s\"\nartifact = \"target/api\"",
            "backend",
            "artifact",
            Now,
        ),
        ("max-age=60", "max-age=600", "web", "cache", NextDeploy),
        (
            "8090\"\n",
            "8090\"\nspa_fallback = \"index.html\"\n",
            "web",
            "spa_fallback",
            NextDeploy,
        ),
        ("./purge.sh", "./purge-all.sh", "cdn", "run", NextDeploy),
        (
            "127.0.0.1:9/version",
            "127.0.0.1:9/v",
            "cdn",
            "verify.url",
            NextDeploy,
        ),
    ];
    for (from, to, component, key, applies) in cases {
        let plan = reload(from, to);
        assert_eq!(
            plan.changed,
            [(name(component), vec![change(key, *applies)])],
            "{from:?} -> {to:?}"
        );
        assert!(plan.refusals.is_empty() && plan.settings.is_empty());
    }
}

#[test]
fn a_clean_environment_s_kept_variables_and_migrations_keys_are_named() {
    let clean = "drain_timeout = \"30s\"\nenv_clear = true\ninherit_env = [\"PATH\"]\n\
                 migrations = { dir = \"migrations\", service = \"db\" }";
    let running = edited("drain_timeout = \"30s\"", clean);
    let loaded = running
        .replacen("[\"PATH\"]", "[\"PATH\", \"LANG\"]", 1)
        .replacen("\"migrations\", service", "\"db/migrations\", service", 1);
    let plan = plan_between(&running, &loaded);
    assert_eq!(
        plan.changed,
        [(
            name("backend"),
            vec![
                change("inherit_env", Applies::NextDeploy),
                change("migrations.dir", Applies::NextDeploy),
            ]
        )]
    );
}

#[test]
fn daemon_wide_settings_are_named_from_the_top_of_the_file() {
    use Applies::{NextDeploy, Now};
    let data_dir = "data_dir = \"/var/lib/cutover\"";
    let cases: &[(&str, &str, &str, Applies)] = &[
        (
            data_dir,
            "data_dir = \"/var/lib/cutover\"\nlog_max_size = \"1MiB\"",
            "daemon.log_max_size",
            Now,
        ),
        (
            data_dir,
            "data_dir = \"/var/lib/cutover\"\nbody_read_timeout = \"5s\"",
            "daemon.body_read_timeout",
            Now,
        ),
        (
            data_dir,
            "data_dir = \"/var/lib/cutover\"\nproduction = false",
            "daemon.production",
            NextDeploy,
        ),
        (
            data_dir,
            "data_dir = \"/var/lib/cutover\"\nbundle_max_size = \"1GiB\"",
            "daemon.bundle_max_size",
            NextDeploy,
        ),
        (
            data_dir,
            "data_dir = \"/var/lib/cutover\"\nbundle_max_entries = 10",
            "daemon.bundle_max_entries",
            NextDeploy,
        ),
        (
            "[daemon]",
            "[edge]\ntrusted_proxies = [\"10.0.0.0/8\"]\n\n[daemon]",
            "edge.trusted_proxies",
            Now,
        ),
        (
            "[daemon]",
            "[[notify]]\nurl = \"https://hooks.example/x\"\n\n[daemon]",
            "notify",
            Now,
        ),
        (
            "[daemon]",
            "[pipeline]\non_failure = \"rollback_all\"\n\n[daemon]",
            "pipeline.on_failure",
            NextDeploy,
        ),
        (
            "[daemon]",
            "[[checks.disk]]\npath = \"/\"\nmin_free = \"1GiB\"\n\n[daemon]",
            "checks.disk",
            NextDeploy,
        ),
        (
            "[daemon]",
            "[systemd]\nuser = \"web\"\n\n[daemon]",
            "systemd.user",
            Now,
        ),
        (
            "localhost/app",
            "localhost/other",
            "services.db.url",
            NextDeploy,
        ),
        (
            "\"postgres\"\nurl",
            "\"postgres\"\nrequired = false\nurl",
            "services.db.required",
            NextDeploy,
        ),
        (
            "url = \"postgres://localhost/app\"",
            "url_env = \"DATABASE_URL\"",
            "services.db.url_env",
            NextDeploy,
        ),
        (
            "[services.db]",
            "[services.cache]\nkind = \"redis\"\nurl = \"redis://localhost\"\n\n[services.db]",
            "services.cache",
            NextDeploy,
        ),
    ];
    for (from, to, key, applies) in cases {
        let plan = reload(from, to);
        assert_eq!(plan.settings, [change(key, *applies)], "{from:?} -> {to:?}");
        assert!(plan.changed.is_empty() && plan.refusals.is_empty());
    }
    let removed = plan_between(
        RUNNING,
        &RUNNING.replacen(
            "[services.db]\nkind = \"postgres\"\nurl = \"postgres://localhost/app\"\n",
            "",
            1,
        ),
    );
    assert_eq!(removed.settings, [change("services.db", NextDeploy)]);
    assert_eq!(removed.summary(), "services.db (next deploy)");
}

#[test]
fn what_the_daemon_opened_at_start_up_is_refused_with_the_key_and_what_to_do() {
    let data_dir = "data_dir = \"/var/lib/cutover\"";
    let cases = [
        (data_dir, "data_dir = \"/srv/cutover\"", "daemon.data_dir"),
        (
            "/run/cutover/control.sock",
            "/run/cutover/c.sock",
            "daemon.control_socket",
        ),
        (
            data_dir,
            "data_dir = \"/var/lib/cutover\"\nsocket_group = \"deploy\"",
            "daemon.socket_group",
        ),
        (
            data_dir,
            "data_dir = \"/var/lib/cutover\"\nadmin_listen = \"127.0.0.1:9100\"",
            "daemon.admin_listen",
        ),
        (
            data_dir,
            "data_dir = \"/var/lib/cutover\"\nmax_connections = 100",
            "daemon.max_connections",
        ),
        (
            data_dir,
            "data_dir = \"/var/lib/cutover\"\nproxy_threads = 2",
            "daemon.proxy_threads",
        ),
    ];
    for (from, to, key) in cases {
        let plan = reload(from, to);
        let keys: Vec<&str> = plan.refusals.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, [key], "{from:?} -> {to:?}");
        assert!(plan.refused() && !plan.is_empty());
        assert_eq!(plan.summary(), format!("refused {key}"));
    }
    assert_eq!(
        reload(data_dir, "data_dir = \"/srv/cutover\"").lines(),
        [
            "refused: daemon.data_dir cannot change while the daemon runs (it holds the state \
          database and the releases): restart it (`systemctl restart cutover`)"
        ]
    );
}

#[test]
fn a_component_that_changes_kind_is_refused_not_replaced() {
    let loaded = edited("kind = \"static\"", "kind = \"process\"").replacen(
        "cache = [{ glob = \"*.js\", control = \"max-age=60\" }]",
        "command = [\"x\"]",
        1,
    );
    let plan = plan_between(RUNNING, &loaded);
    assert_eq!(
        plan.refusals,
        [Refusal {
            key: "components.web.kind".to_owned(),
            message: "components.web.kind changed from static to process: remove the component \
                      in one reload and add it back in another"
                .to_owned(),
        }]
    );
    // Its other settings are not compared: they belong to the other kind.
    assert!(plan.changed.is_empty() && plan.added.is_empty() && plan.removed.is_empty());
    assert_eq!(plan.summary(), "refused components.web.kind");
}

#[test]
fn the_summary_is_one_line_and_the_lines_one_change_each() {
    let edits = [
        (
            "[components.cdn]\nkind = \"hook\"\nrun = [\"./purge.sh\", \"{release}\"]\n\
             verify = { url = \"http://127.0.0.1:9/version\" }\n",
            "[components.api2]\nlisten = \"127.0.0.1:8091\"\ncommand = [\"x\"]\n",
        ),
        (
            "[services.db]",
            "[[notify]]\nurl = \"https://x.example\"\n\n[services.db]",
        ),
        ("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:8081\""),
        (
            "drain_timeout = \"30s\"",
            "drain_timeout = \"5s\"\nupstream_timeout = \"5s\"",
        ),
        ("max-age=60", "max-age=600"),
    ];
    let loaded = edits.iter().fold(RUNNING.to_owned(), |text, (from, to)| {
        assert!(text.contains(from), "{from:?}");
        text.replacen(from, to, 1)
    });
    let plan = plan_between(RUNNING, &loaded);
    assert_eq!(
        plan.summary(),
        "added api2; removed cdn; backend: listen 127.0.0.1:8080 -> 127.0.0.1:8081; \
         backend: upstream_timeout (now), drain_timeout (next deploy); web: cache (next deploy); \
         notify (now)"
    );
    assert_eq!(
        plan.lines(),
        [
            "added component api2: applies now (it serves from its first deploy)",
            "removed component cdn: applies now",
            "backend: listen 127.0.0.1:8080 -> 127.0.0.1:8081: applies now",
            "backend: upstream_timeout: applies now",
            "backend: drain_timeout: applies at the next deploy",
            "web: cache: applies at the next deploy",
            "notify: applies now",
        ]
    );
}

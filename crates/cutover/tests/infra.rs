//! Services, the deploy gate and migrations inside deploys, against real PostgreSQL and Redis.

mod common;
mod support;

use common::*;
use cutover::loadgen::{ClientKind, Load};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use support::{Postgres, Redis};

const DB_PASSWORD: &str = "Infr4-s3cret";

/// A release bundle: the demo-api binary at bin/api and the given migration files.
fn bundle(dir: &Path, name: &str, migrations: &[(&str, &str)]) -> PathBuf {
    let root = dir.join(format!("bundle-{name}"));
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("migrations")).unwrap();
    std::fs::copy(demo_api(), root.join("bin/api")).unwrap();
    for (file, sql) in migrations {
        std::fs::write(root.join("migrations").join(file), sql).unwrap();
    }
    root
}

/// demo-api's own migrations, as shipped in its crate.
fn demo_migrations() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo-api/migrations");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&path).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

fn with_demo_migrations<'a>(
    extra: &'a [(&'a str, &'a str)],
    demo: &'a [(String, String)],
) -> Vec<(&'a str, &'a str)> {
    demo.iter()
        .map(|(f, s)| (f.as_str(), s.as_str()))
        .chain(extra.iter().copied())
        .collect()
}

struct World {
    daemon: Arc<Daemon>,
    _pg: Postgres,
    redis: Redis,
}

async fn world(extra_config: &str) -> Option<World> {
    let pg = Postgres::start().await?;
    let redis = Redis::start(None)?;
    let db_url = pg.create_app("app", DB_PASSWORD, "app").await;
    let config = format!(
        "[daemon]\ndata_dir = \".cutover\"\n\n\
         [services.db]\nkind = \"postgres\"\nurl_env = \"DATABASE_URL\"\nenv_file = \"app.env\"\n\n\
         [services.redis]\nkind = \"redis\"\nurl = \"{}\"\n\n\
         [components.backend]\nlisten = \"127.0.0.1:0\"\ncommand = [\"{{release_dir}}/bin/api\"]\n\
         env = {{ API_ADDR = \"127.0.0.1:{{port}}\" }}\nenv_file = \"app.env\"\n\
         health = {{ path = \"/health\", interval = \"100ms\", timeout = \"2s\", healthy_threshold = 2, start_timeout = \"5s\" }}\n\
         drain_timeout = \"5s\"\nstop_timeout = \"5s\"\nstabilize = \"0s\"\n\
         requires = [\"db\", \"redis\"]\n\
         migrations = {{ dir = \"migrations\", service = \"db\", lock_timeout = \"3s\" }}\n{extra_config}",
        redis.url()
    );
    // The env file sits beside the config, as it would on a server; written before the daemon starts.
    let daemon = Daemon::start_with_config_and(&config, |root| {
        let env = root.join("app.env");
        std::fs::write(
            &env,
            format!("DATABASE_URL={db_url}\nREDIS_URL={}\n", redis.url()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o600)).unwrap();
    });
    Some(World {
        daemon: Arc::new(daemon),
        _pg: pg,
        redis,
    })
}

fn all_output(out: &std::process::Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

fn post(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_migrates_then_serves_with_its_table() {
    let Some(w) = world("").await else { return };
    let demo = demo_migrations();
    let v1 = bundle(w.daemon.dir.path(), "v1", &with_demo_migrations(&[], &demo));
    let out = w.daemon.deploy("v1", &v1);
    let shown = all_output(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("migrated to version 2: 000001_create_visits.up.sql, 000002_index_visits_by_release.up.sql"), "{shown}");
    assert_eq!(post(w.daemon.public, "/visits"), "1\n");
    assert_eq!(post(w.daemon.public, "/visits"), "2\n");

    let status = w.daemon.cli(&["migrate", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        (status["version"].as_u64(), status["dirty"].as_bool()),
        (Some(2), Some(false))
    );

    let check = w.daemon.cli(&["check", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(check.status.code(), Some(0), "{report}");
    assert_eq!(report["services"][0]["status"], "up");
    assert!(report["services"][0]["version"]
        .as_str()
        .unwrap()
        .starts_with("15"));
    assert!(
        !text(&check.stdout).contains(DB_PASSWORD),
        "secrets never printed"
    );
    let table = text(&w.daemon.cli(&["check"]).stdout);
    assert!(
        table.contains("postgres://app:") && !table.contains(DB_PASSWORD),
        "{table}"
    );

    // Redeploying the same schema applies nothing.
    let v2 = bundle(w.daemon.dir.path(), "v2", &with_demo_migrations(&[], &demo));
    let out = w.daemon.deploy("v2", &v2);
    assert!(
        all_output(&out).contains("schema already at version 2"),
        "{}",
        all_output(&out)
    );

    // CLI migrations: down one, up again, create the next pair.
    let down = w.daemon.cli(&["migrate", "down", "1"]);
    assert!(
        all_output(&down).contains("reverted 000002_index_visits_by_release.down.sql"),
        "{}",
        all_output(&down)
    );
    let up = w.daemon.cli(&["migrate", "up"]);
    assert!(
        all_output(&up).contains("applied 000002_index_visits_by_release.up.sql"),
        "{}",
        all_output(&up)
    );
    let src = w.daemon.dir.path().join("src-migrations");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("000007_old.up.sql"), "").unwrap();
    let create = w.daemon.cli(&[
        "migrate",
        "create",
        "add_notes",
        "--dir",
        src.to_str().unwrap(),
    ]);
    assert!(create.status.success(), "{}", all_output(&create));
    assert!(
        src.join("000008_add_notes.up.sql").exists()
            && src.join("000008_add_notes.down.sql").exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_service_down_refuses_the_deploy() {
    let Some(mut w) = world("").await else { return };
    let demo = demo_migrations();
    let v1 = bundle(w.daemon.dir.path(), "v1", &with_demo_migrations(&[], &demo));
    assert!(w.daemon.deploy("v1", &v1).status.success());
    w.redis.stop();
    let out = w.daemon.deploy("v2", &v1);
    let shown = all_output(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("refused before starting: required service redis is unhealthy"),
        "{shown}"
    );
    assert_eq!(get(w.daemon.public, "/version").2, "v1");
    let check = w.daemon.cli(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check.stdout));
    assert!(
        text(&check.stdout).contains("FAIL"),
        "{}",
        text(&check.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_migration_under_load_keeps_the_old_release_and_drops_nothing() {
    let Some(w) = world("").await else { return };
    let demo = demo_migrations();
    let dir = w.daemon.dir.path().to_owned();
    let v1 = bundle(&dir, "v1", &with_demo_migrations(&[], &demo));
    assert!(w.daemon.deploy("v1", &v1).status.success());

    let load = Load::start(
        w.daemon.public,
        "/version",
        &[
            ClientKind::KeepAlive,
            ClientKind::KeepAlive,
            ClientKind::NewConnection,
        ],
    );
    let bad_sql = "ALTER TABLE visits ADD COLUMN note text;\nSELECT * FROM no_such_table;\n";
    let v2 = bundle(
        &dir,
        "v2",
        &with_demo_migrations(&[("000003_add_note.up.sql", bad_sql)], &demo),
    );
    let daemon = w.daemon.clone();
    let out = tokio::task::spawn_blocking(move || daemon.deploy("v2", &v2))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let report = load.stop().await;
    let shown = all_output(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("000003_add_note.up.sql"), "{shown}");
    assert!(shown.contains("line 2"), "the statement position: {shown}");
    assert!(
        shown.contains("relation \"no_such_table\" does not exist"),
        "PostgreSQL's message: {shown}"
    );
    assert!(
        !shown.contains("started v2"),
        "the new instance never started: {shown}"
    );
    assert_eq!(report.failed, 0, "{:?}", report.failures);
    assert_eq!(get(w.daemon.public, "/version").2, "v1");

    // The database is dirty: every deploy with migrations is refused until `migrate force`.
    let fixed = "ALTER TABLE visits ADD COLUMN IF NOT EXISTS note text;\n";
    let v3 = bundle(
        &dir,
        "v3",
        &with_demo_migrations(&[("000003_add_note.up.sql", fixed)], &demo),
    );
    let out = w.daemon.deploy("v3", &v3);
    assert!(all_output(&out).contains("dirty"), "{}", all_output(&out));
    let force = w.daemon.cli(&[
        "migrate",
        "force",
        "2",
        "--dir",
        v3.join("migrations").to_str().unwrap(),
    ]);
    assert!(force.status.success(), "{}", all_output(&force));
    let out = w.daemon.deploy("v3", &v3);
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(
        all_output(&out).contains("migrated to version 3"),
        "{}",
        all_output(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_applied_file_is_refused_and_rollback_warns_about_the_schema() {
    let Some(w) = world("").await else { return };
    let demo = demo_migrations();
    let dir = w.daemon.dir.path().to_owned();
    let first_only: Vec<(String, String)> = demo
        .iter()
        .filter(|(f, _)| f.starts_with("000001"))
        .cloned()
        .collect();
    let v1 = bundle(&dir, "v1", &with_demo_migrations(&[], &first_only));
    assert!(w.daemon.deploy("v1", &v1).status.success());
    let v2 = bundle(&dir, "v2", &with_demo_migrations(&[], &demo));
    assert!(w.daemon.deploy("v2", &v2).status.success());

    let mut edited = demo.clone();
    let up = edited
        .iter_mut()
        .find(|(f, _)| f == "000001_create_visits.up.sql")
        .unwrap();
    up.1.push_str("-- edited after it was applied\n");
    let v3 = bundle(&dir, "v3", &with_demo_migrations(&[], &edited));
    let out = w.daemon.deploy("v3", &v3);
    let shown = all_output(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("000001_create_visits.up.sql") && shown.contains("changed"),
        "{shown}"
    );
    assert_eq!(get(w.daemon.public, "/version").2, "v2");

    let out = w.daemon.cli(&["rollback", "backend", "--to", "v1"]);
    let shown = all_output(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("the database schema is at version 2, newer than v1's newest migration (1)"),
        "{shown}"
    );
    assert_eq!(get(w.daemon.public, "/version").2, "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nearly_full_disk_refuses_deploys() {
    let Some(w) = world("\n[checks]\ndisk = [ { path = \".\", min_free = \"1000TiB\" } ]\n").await
    else {
        return;
    };
    let demo = demo_migrations();
    let v1 = bundle(w.daemon.dir.path(), "v1", &with_demo_migrations(&[], &demo));
    let out = w.daemon.deploy("v1", &v1);
    let shown = all_output(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("free on") && shown.contains("free some space first"),
        "{shown}"
    );
    let check = w.daemon.cli(&["check", "--json"]);
    assert_eq!(check.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(report["disk"][0]["ok"], false);
}

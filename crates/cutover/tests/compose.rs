//! Docker Compose for real: a `dockerd` of the test's own, an image built from this machine's
//! PostgreSQL 15 and Redis binaries, Debian's `docker-compose`, the real `cutover` binary and
//! daemon, and demo-api's migrations deployed against the containerized database.

mod common;
#[path = "support/docker.rs"]
mod docker;
mod support;

use common::*;
use docker::Dockerd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const DB_PASSWORD: &str = "C0mpose-db-pw";

fn compose_yaml(image: &str, pg_port: u16, redis_port: u16, db_extra: &str) -> String {
    format!(
        r#"# The seed's shape: a database with a volume, an env file and a health check; a cache.
services:
  db:
    image: {image}
    network_mode: host
    env_file: db.env
    command: ["/bin/postgres-entrypoint", "-p", "{pg_port}"]
    volumes:
      - pgdata:/var/lib/postgresql/data
    healthcheck:
      test: ["CMD", "/usr/lib/postgresql/15/bin/pg_isready", "-h", "127.0.0.1", "-p", "{pg_port}", "-U", "app"]
      interval: 1s
      timeout: 3s
      retries: 60
{db_extra}  redis:
    image: {image}
    network_mode: host
    command: ["/usr/bin/redis-server", "--port", "{redis_port}", "--bind", "127.0.0.1", "--dir", "/tmp"]
    healthcheck:
      test: ["CMD", "/usr/bin/redis-cli", "-p", "{redis_port}", "ping"]
      interval: 1s
      timeout: 3s
      retries: 60
volumes:
  pgdata:
"#
    )
}

struct Stack {
    daemon: Daemon,
    engine: Dockerd,
    image: String,
    pg_port: u16,
    redis_port: u16,
    db_url: String,
}

impl Stack {
    fn compose_file(&self) -> PathBuf {
        self.daemon.dir.path().join("docker-compose.prod.yml")
    }

    fn write_compose(&self, db_extra: &str) {
        std::fs::write(
            self.compose_file(),
            compose_yaml(&self.image, self.pg_port, self.redis_port, db_extra),
        )
        .unwrap();
    }

    /// `cutover services ARGS` with this engine in DOCKER_HOST, plus `env`.
    fn services(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(CUTOVER)
            .arg("services")
            .args(args)
            .arg("--config")
            .arg(&self.daemon.config)
            .env("DOCKER_HOST", &self.engine.host)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// The full id of the service's container, asked of the engine directly.
    fn container_id(&self, service: &str) -> String {
        let (ok, out) = self.engine.docker(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
        ]);
        assert!(ok, "{out}");
        let ids: Vec<&str> = out.lines().collect();
        assert_eq!(ids.len(), 1, "one container for {service}: {out}");
        ids[0].to_string()
    }

    fn started_at(&self, id: &str) -> String {
        let (ok, out) = self
            .engine
            .docker(&["inspect", "-f", "{{.State.StartedAt}}", id]);
        assert!(ok, "{out}");
        out.trim().to_string()
    }

    async fn db(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.db_url, tokio_postgres::NoTls)
            .await
            .expect("connect to the containerized database");
        tokio::spawn(connection);
        client
    }

    async fn kept_rows(&self) -> Vec<String> {
        self.db()
            .await
            .query("SELECT v FROM kept ORDER BY v", &[])
            .await
            .expect("the kept table")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

/// The engine, the image and a cutover daemon whose config points at the compose file (not
/// yet up); `None` when something is missing outside CI.
fn stack() -> Option<Stack> {
    let rootfs = docker::services_image()?;
    let engine = Dockerd::start()?;
    let image = "cutover-test/services:local".to_string();
    engine.import(&rootfs, &image);
    let pg_port = support::free_port();
    let redis_port = support::free_port();
    let db_url = format!("postgres://app:{DB_PASSWORD}@127.0.0.1:{pg_port}/app?sslmode=disable");
    let config = format!(
        "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \".cutover/control.sock\"\n\n\
         [services.db]\nkind = \"postgres\"\nurl_env = \"DATABASE_URL\"\nenv_file = \"app.env\"\n\
         compose = {{ file = \"docker-compose.prod.yml\", service = \"db\" }}\n\n\
         [services.redis]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{redis_port}\"\n\
         compose = {{ file = \"docker-compose.prod.yml\", service = \"redis\" }}\n\n\
         [components.backend]\nlisten = \"127.0.0.1:0\"\ncommand = [\"{{release_dir}}/bin/api\"]\n\
         env = {{ API_ADDR = \"127.0.0.1:{{port}}\" }}\nenv_file = \"app.env\"\n\
         health = {{ path = \"/health\", interval = \"100ms\", timeout = \"2s\", healthy_threshold = 2, start_timeout = \"10s\" }}\n\
         drain_timeout = \"5s\"\nstop_timeout = \"5s\"\nstabilize = \"0s\"\n\
         requires = [\"db\", \"redis\"]\n\
         migrations = {{ dir = \"migrations\", service = \"db\", lock_timeout = \"5s\" }}\n"
    );
    let url = db_url.clone();
    let daemon = Daemon::start_with_config_and(&config, |root| {
        use std::os::unix::fs::PermissionsExt;
        let app_env = root.join("app.env");
        std::fs::write(
            &app_env,
            format!("DATABASE_URL={url}\nREDIS_URL=redis://127.0.0.1:{redis_port}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&app_env, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(
            root.join("db.env"),
            format!("POSTGRES_USER=app\nPOSTGRES_PASSWORD={DB_PASSWORD}\nPOSTGRES_DB=app\n"),
        )
        .unwrap();
    });
    let stack = Stack {
        daemon,
        engine,
        image,
        pg_port,
        redis_port,
        db_url,
    };
    stack.write_compose("");
    Some(stack)
}

fn shown(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// A release bundle: demo-api at bin/api and demo-api's own migrations.
fn bundle(dir: &Path, name: &str) -> PathBuf {
    let root = dir.join(format!("bundle-{name}"));
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(demo_api(), root.join("bin/api")).unwrap();
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo-api/migrations");
    std::fs::create_dir_all(root.join("migrations")).unwrap();
    for entry in std::fs::read_dir(migrations).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            root.join("migrations").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    root
}

/// A directory holding only `docker-compose`, for a PATH without the `docker` CLI.
fn path_with_only_docker_compose(dir: &Path) -> PathBuf {
    let bin = dir.join("only-compose");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink("/usr/bin/docker-compose", bin.join("docker-compose")).unwrap();
    bin
}

/// What detection should pick on this machine, asked of the tools themselves.
fn expected_cli() -> &'static str {
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if plugin {
        "docker compose"
    } else {
        "docker-compose"
    }
}

/// Runs `command` on a real terminal (util-linux `script` gives it a pty), typing `input`.
fn on_a_terminal(command: &str, input: &str) -> Output {
    let mut child = Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script (util-linux)");
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    // The prompt is printed before cutover reads; the pty buffers the answer until then.
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// Issue 11: services up brings PostgreSQL and Redis to healthy (the container's healthcheck and
/// cutover's own check); check and the deploy gate see them; a deploy with migrations runs
/// against the container; `services up` again and after a compose edit never recreates the
/// database (same container, same start time, same data) and says so; `services recreate`
/// does, only after confirmation on a terminal, and is recorded in history; the data survives
/// all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_services_come_up_healthy_and_the_database_is_never_restarted_implicitly() {
    let Some(s) = stack() else { return };
    let dir = s.daemon.dir.path().to_owned();

    // Before anything runs: status says there is no container, and check fails.
    let status = s.services(&["status"], &[]);
    assert_eq!(status.status.code(), Some(1), "{}", shown(&status));
    assert!(
        shown(&status).contains("no container yet: `cutover services up db`"),
        "{}",
        shown(&status)
    );

    // 1. With a PATH where only docker-compose exists: detection picks it.
    let only = path_with_only_docker_compose(&dir);
    let up = s.services(&["up"], &[("PATH", only.to_str().unwrap())]);
    let out = shown(&up);
    assert!(up.status.success(), "{out}\n{}", s.engine.log());
    let file = s.compose_file();
    assert!(
        out.contains(&format!(
            "running: docker-compose -f {} up -d --no-recreate db redis",
            file.display()
        )),
        "{out}"
    );
    for name in ["db", "redis"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("ok    {name} (")))
            .unwrap_or_else(|| panic!("no ready line for {name}: {out}"));
        assert!(
            line.contains(": up") && line.contains("running, healthy"),
            "{line}"
        );
    }
    assert!(out.contains("waiting for db"), "{out}");
    let db_before = s.container_id("db");
    let redis_before = s.container_id("redis");
    let db_started = s.started_at(&db_before);
    eprintln!("containers after the first `services up`: db {db_before}, redis {redis_before}");

    // The engine agrees: both containers report healthy themselves.
    for id in [&db_before, &redis_before] {
        let (_, health) = s
            .engine
            .docker(&["inspect", "-f", "{{.State.Health.Status}}", id]);
        assert_eq!(health.trim(), "healthy");
    }

    // status: container, state, health, uptime beside cutover's own check.
    let status = s.services(&["status", "--json"], &[]);
    assert!(status.status.success(), "{}", shown(&status));
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let db = &report["services"][0];
    assert_eq!(db["name"], "db");
    assert_eq!(db["container"]["id"], db_before.as_str());
    assert_eq!(db["container"]["state"], "running");
    assert_eq!(db["container"]["health"], "healthy");
    assert!(db["uptime_seconds"].as_u64().is_some(), "{db}");
    assert_eq!(db["check"]["status"], "up");
    assert!(db["drift"].is_null(), "{db}");
    assert!(!text(&status.stdout).contains(DB_PASSWORD));
    let table = text(&s.services(&["status"], &[]).stdout);
    assert!(
        table.contains(&db_before[..12]) && table.contains("healthy"),
        "{table}"
    );

    // check and the deploy gate see them.
    let check = s.daemon.cli(&["check", "--json"]);
    assert_eq!(check.status.code(), Some(0), "{}", shown(&check));

    // A row written by hand, and a deploy whose migrations run against the container.
    s.db()
        .await
        .batch_execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before')")
        .await
        .unwrap();
    let v1 = bundle(&dir, "v1");
    let deploy = s.daemon.deploy("v1", &v1);
    assert!(deploy.status.success(), "{}", shown(&deploy));
    assert!(
        shown(&deploy).contains("migrated to version 2"),
        "{}",
        shown(&deploy)
    );
    let visits = s
        .db()
        .await
        .query_one("SELECT count(*) FROM visits", &[])
        .await;
    assert!(visits.is_ok(), "demo-api's table exists in the container");

    // 2. `services up` again, now with the full PATH (this machine's detection): nothing
    // recreated, nothing said about a change.
    let up = s.services(&["up"], &[]);
    let out = shown(&up);
    assert!(up.status.success(), "{out}");
    assert!(
        out.contains(&format!("running: {} -f ", expected_cli())),
        "{out}"
    );
    assert!(!out.contains("definition changed"), "{out}");
    assert_eq!(s.container_id("db"), db_before);
    assert_eq!(s.started_at(&db_before), db_started, "db was not restarted");

    // 3. The compose file changes (a new environment variable for db): `services up` keeps the
    // database container and says how to apply the change. Run through the override.
    s.write_compose("    environment:\n      TZ: UTC\n");
    let config = std::fs::read_to_string(&s.daemon.config).unwrap().replace(
        "service = \"db\" }",
        "service = \"db\", command = [\"docker-compose\"] }",
    );
    std::fs::write(&s.daemon.config, config).unwrap();
    let up = s.services(&["up", "db"], &[]);
    let out = shown(&up);
    assert!(up.status.success(), "{out}");
    assert!(out.contains("running: docker-compose -f "), "{out}");
    assert!(
        out.contains("db: the compose definition changed since the container was created; `cutover services recreate db` restarts the database"),
        "{out}"
    );
    assert_eq!(s.container_id("db"), db_before, "same container");
    assert_eq!(s.started_at(&db_before), db_started, "not restarted");
    assert_eq!(s.kept_rows().await, ["before"]);
    let status = s.services(&["status", "--json"], &[]);
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        report["services"][0]["drift"]["created_from"].is_string(),
        "{report}"
    );

    // 4. recreate: refused without a terminal or --yes; "no" on a terminal does nothing.
    let refused = s.services(&["recreate", "db"], &[]);
    assert_eq!(refused.status.code(), Some(1), "{}", shown(&refused));
    assert!(
        shown(&refused).contains("pass --yes; nothing was done"),
        "{}",
        shown(&refused)
    );
    let command = format!(
        "DOCKER_HOST={} {CUTOVER} services recreate db --who tester --config {}",
        s.engine.host,
        s.daemon.config.display()
    );
    let no = on_a_terminal(&command, "no\n");
    assert!(
        text(&no.stdout).contains("Type yes to go on") && text(&no.stdout).contains("nothing done"),
        "{}",
        shown(&no)
    );
    assert_eq!(s.container_id("db"), db_before);

    // "yes" on a terminal: a new container from the new definition, the same volume.
    let yes = on_a_terminal(&command, "yes\n");
    let out = shown(&yes);
    assert!(yes.status.success(), "{out}");
    let db_after = s.container_id("db");
    assert_ne!(db_after, db_before, "{out}");
    assert!(
        out.contains(&format!(
            "db: container {} replaced by {}",
            &db_before[..12],
            &db_after[..12]
        )),
        "{out}"
    );
    assert!(out.contains("running, healthy"), "{out}");
    eprintln!("db container: {db_before} before the recreate, {db_after} after");
    assert_eq!(s.kept_rows().await, ["before"], "the volume kept the data");
    assert_eq!(s.container_id("redis"), redis_before, "redis untouched");
    let history = s.daemon.cli(&["history", "--json"]);
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let recorded = history["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["release"] == "services recreate")
        .unwrap_or_else(|| panic!("no recreate in history: {history}"));
    assert_eq!(recorded["components"][0], "db", "{recorded}");
    assert_eq!(recorded["who"], "tester", "{recorded}");
    assert_eq!(recorded["outcome"], "succeeded", "{recorded}");

    // A deploy after all that: the schema is still there, compose is never touched.
    let db_started = s.started_at(&db_after);
    let v2 = bundle(&dir, "v2");
    let deploy = s.daemon.deploy("v2", &v2);
    assert!(deploy.status.success(), "{}", shown(&deploy));
    assert!(
        shown(&deploy).contains("schema already at version 2"),
        "{}",
        shown(&deploy)
    );
    assert_eq!(s.container_id("db"), db_after);
    assert_eq!(s.started_at(&db_after), db_started);
    assert_eq!(s.kept_rows().await, ["before"]);

    // logs: the container's own output.
    let logs = s.services(&["logs", "db", "-n", "50"], &[]);
    assert!(logs.status.success(), "{}", shown(&logs));
    assert!(
        shown(&logs).contains("database system is ready to accept connections"),
        "{}",
        shown(&logs)
    );
}

/// Without an engine or a compose CLI, `services up` says what it tried and how to fix it, and
/// runs nothing.
#[test]
fn without_compose_or_engine_the_error_names_what_was_tried() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cutover.toml");
    let write_config = |command: &str| {
        std::fs::write(
            &config,
            format!(
                "[daemon]\ndata_dir = \".cutover\"\n\n[services.db]\nkind = \"postgres\"\n\
                 url = \"postgres://app:pw@127.0.0.1:1/app\"\n\
                 compose = {{ file = \"compose.yml\", service = \"db\"{command} }}\n\n\
                 [components.backend]\nlisten = \"127.0.0.1:0\"\ncommand = [\"/bin/true\"]\n"
            ),
        )
        .unwrap();
    };
    write_config("");
    std::fs::write(
        dir.path().join("compose.yml"),
        "services:\n  db:\n    image: x\n",
    )
    .unwrap();
    let run = |path: &Path, docker_host: &str| {
        Command::new(CUTOVER)
            .args(["services", "up", "--config"])
            .arg(&config)
            .env("PATH", path)
            .env("DOCKER_HOST", docker_host)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let nowhere = format!("unix://{}/nope.sock", dir.path().display());

    // Nothing on PATH.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = run(&empty, &nowhere);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        text(&out.stderr).contains("no Docker Compose found: tried `docker compose version` (docker is not on PATH) and `docker-compose version` (docker-compose is not on PATH); install"),
        "{}",
        shown(&out)
    );

    // A Docker CLI without the compose plugin (this machine's /usr/local/bin/docker or Debian's).
    let docker_only = dir.path().join("docker-only");
    std::fs::create_dir(&docker_only).unwrap();
    let docker = ["/usr/local/bin/docker", "/usr/bin/docker"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("a docker CLI; .ci/run installs docker.io");
    std::os::unix::fs::symlink(docker, docker_only.join("docker")).unwrap();
    let plugin_missing = !Command::new(docker)
        .args(["compose", "version"])
        .output()
        .unwrap()
        .status
        .success();
    if plugin_missing {
        let out = run(&docker_only, &nowhere);
        let err = text(&out.stderr);
        assert!(
            err.contains("tried `docker compose version` (")
                && !err.contains("docker is not on PATH"),
            "{err}"
        );
        assert!(
            err.contains("`docker-compose version` (docker-compose is not on PATH)"),
            "{err}"
        );
    }

    // docker-compose alone, and no engine at DOCKER_HOST: the engine error, before any compose
    // command runs.
    let only = path_with_only_docker_compose(dir.path());
    let out = run(&only, &nowhere);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "no Docker engine answers at {nowhere} (from DOCKER_HOST)"
        )),
        "{err}"
    );
    assert!(err.contains("(compose CLI: docker-compose)"), "{err}");
    assert!(
        err.contains("point DOCKER_HOST at a running engine"),
        "{err}"
    );
    assert!(!text(&out.stdout).contains("running:"), "{}", shown(&out));

    // A configured command that does not run.
    write_config(", command = [\"/nonexistent/compose\"]");
    let out = run(&only, &nowhere);
    assert!(
        text(&out.stderr).contains("`compose.command` (/nonexistent/compose) does not run"),
        "{}",
        shown(&out)
    );

    // An empty one is a config error with its position.
    write_config(", command = []");
    let out = run(&only, &nowhere);
    assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
    assert!(
        text(&out.stderr).contains("services.db.compose.command: give the compose CLI to run"),
        "{}",
        shown(&out)
    );
}

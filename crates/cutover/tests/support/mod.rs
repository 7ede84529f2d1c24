//! Real PostgreSQL 15 and Redis servers for integration tests, each in its own temp dir on a free
//! loopback port, stopped on drop.
//!
//! - PostgreSQL: `initdb` (scram-sha-256 for every connection, so a wrong password really fails)
//!   and `postgres` from /usr/lib/postgresql/15/bin (override with `CUTOVER_TEST_PG_BIN`). initdb
//!   refuses to run as root, so as root the binaries run as the `postgres` system user (or
//!   `nobody`) through `setpriv`, with the temp dir chowned to it.
//! - Redis: `redis-server` from PATH, no persistence, optionally `--requirepass`.
//!
//! Servers are started through `setpriv --pdeathsig`, so they die with the test thread that
//! started them even if the test process is killed. When a server binary is missing, a test
//! prints a skip note and returns, except under `CI=true`, where it fails.

#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
pub const SUPERUSER: &str = "postgres";
pub const SUPERUSER_PASSWORD: &str = "harness-superuser-pw";

/// How long a server may take to accept its first real request.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether tests must fail instead of skipping when a server binary is missing.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `Some(())` when `binary` exists; otherwise fails the test under CI, or prints a skip note.
fn require(binary: &Path, what: &str) -> Option<()> {
    if binary.is_file() {
        return Some(());
    }
    let message = format!(
        "{what} is not installed ({} is missing); .ci/run must install it",
        binary.display()
    );
    if in_ci() {
        panic!("{message}");
    }
    eprintln!("SKIP: {message}");
    None
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// A free loopback port (free now; a server that loses the race is restarted on another one).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The uid and gid to run PostgreSQL as: none when not root.
fn unprivileged_user() -> Option<(u32, u32)> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    for name in ["postgres", "nobody"] {
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() >= 4 && fields[0] == name {
                if let (Ok(uid), Ok(gid)) = (fields[2].parse(), fields[3].parse()) {
                    return Some((uid, gid));
                }
            }
        }
    }
    panic!(
        "running as root, and neither a `postgres` nor a `nobody` user exists to run PostgreSQL as"
    );
}

/// A command for `program`, run as `user` when given, dying with the calling thread.
fn command(program: &Path, user: Option<(u32, u32)>) -> Command {
    let setpriv = which("setpriv");
    match (setpriv, user) {
        (Some(setpriv), user) => {
            let mut cmd = Command::new(setpriv);
            cmd.arg("--pdeathsig=SIGQUIT");
            if let Some((uid, gid)) = user {
                cmd.args([
                    format!("--reuid={uid}"),
                    format!("--regid={gid}"),
                    "--clear-groups".to_string(),
                ]);
            }
            cmd.arg(program);
            cmd
        }
        (None, None) => Command::new(program),
        (None, Some(_)) => panic!(
            "running as root needs `setpriv` (util-linux) to start PostgreSQL as another user"
        ),
    }
}

fn stop_child(child: &mut Child, signal: libc::c_int) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A PostgreSQL 15 server of its own.
pub struct Postgres {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub port: u16,
}

impl Postgres {
    /// Starts a fresh server, or returns `None` (after a skip note) when PostgreSQL 15 is not
    /// installed and `CI` is not `true`.
    pub async fn start() -> Option<Postgres> {
        let bin = std::env::var_os("CUTOVER_TEST_PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(PG_BIN));
        require(&bin.join("initdb"), "PostgreSQL 15 (initdb)")?;
        require(&bin.join("postgres"), "PostgreSQL 15 (postgres)")?;
        let user = unprivileged_user();
        let dir = tempfile::Builder::new()
            .prefix("cutover-pg-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pwfile");
        fs::write(&pwfile, format!("{SUPERUSER_PASSWORD}\n")).unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).unwrap();
        }
        let output = command(&bin.join("initdb"), user)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                SUPERUSER,
                "-A",
                "scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );

        let mut server = Postgres {
            dir,
            child: None,
            port: 0,
        };
        for attempt in 1..=3 {
            let port = free_port();
            let log_path = server.dir.path().join("postgres.log");
            let log = fs::File::create(&log_path).unwrap();
            let child = command(&bin.join("postgres"), user)
                .arg("-D")
                .arg(&data)
                .arg("-p")
                .arg(port.to_string())
                .args(["-c", "listen_addresses=127.0.0.1"])
                .arg("-c")
                .arg(format!(
                    "unix_socket_directories={}",
                    server.dir.path().display()
                ))
                .args([
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ])
                .args(["-c", "shared_buffers=16MB", "-c", "max_connections=50"])
                .current_dir(server.dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start postgres");
            server.child = Some(child);
            server.port = port;
            match server.wait_ready().await {
                Ok(()) => return Some(server),
                Err(why) if attempt < 3 => {
                    eprintln!(
                        "postgres on port {port} did not start ({why}); retrying on another port"
                    );
                    server.stop();
                }
                Err(why) => panic!(
                    "postgres did not start: {why}\n--- log ---\n{}",
                    tail(&log_path)
                ),
            }
        }
        unreachable!()
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("postgres exited with {status}"));
            }
            match tokio_postgres::connect(&self.admin_url("postgres"), tokio_postgres::NoTls).await
            {
                Ok((client, connection)) => {
                    let driver = tokio::spawn(connection);
                    let ok = client.simple_query("SELECT 1").await.is_ok();
                    drop(client);
                    let _ = driver.await;
                    if ok {
                        return Ok(());
                    }
                }
                Err(e) if Instant::now() > deadline => return Err(format!("not ready: {e}")),
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `postgres://user:password@127.0.0.1:PORT/db?sslmode=disable`.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    pub fn admin_url(&self, db: &str) -> String {
        self.url(SUPERUSER, SUPERUSER_PASSWORD, db)
    }

    /// A superuser connection to `db`.
    pub async fn admin(&self, db: &str) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.admin_url(db), tokio_postgres::NoTls)
                .await
                .expect("connect as the superuser");
        tokio::spawn(connection);
        client
    }

    /// Creates a login role with a password and a database it owns; returns its URL.
    pub async fn create_app(&self, role: &str, password: &str, db: &str) -> String {
        let admin = self.admin("postgres").await;
        // Two batches: CREATE DATABASE cannot run in a multi-statement (implicit) transaction.
        admin
            .batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
            .await
            .expect("create role");
        admin
            .batch_execute(&format!("CREATE DATABASE {db} OWNER {role}"))
            .await
            .expect("create database");
        self.url(role, password, db)
    }

    /// Stops the server (fast shutdown) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, libc::SIGINT);
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis server of its own.
pub struct Redis {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub port: u16,
    pub password: Option<String>,
}

impl Redis {
    /// Starts `redis-server`, with `--requirepass` when `password` is given; `None` (after a
    /// skip note) when it is not installed and `CI` is not `true`.
    pub fn start(password: Option<&str>) -> Option<Redis> {
        let binary =
            which("redis-server").unwrap_or_else(|| PathBuf::from("/usr/bin/redis-server"));
        require(&binary, "redis-server")?;
        let dir = tempfile::Builder::new()
            .prefix("cutover-redis-")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let mut server = Redis {
            dir,
            child: None,
            port: 0,
            password: password.map(str::to_string),
        };
        for attempt in 1..=3 {
            let port = free_port();
            let log_path = server.dir.path().join("redis.log");
            let mut cmd = command(&binary, None);
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(server.dir.path())
                .arg("--logfile")
                .arg(&log_path);
            if let Some(password) = password {
                cmd.args(["--requirepass", password]);
            }
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server");
            server.child = Some(child);
            server.port = port;
            match server.wait_ready() {
                Ok(()) => return Some(server),
                Err(why) if attempt < 3 => {
                    eprintln!(
                        "redis on port {port} did not start ({why}); retrying on another port"
                    );
                    server.stop();
                }
                Err(why) => panic!(
                    "redis-server did not start: {why}\n--- log ---\n{}",
                    tail(&log_path)
                ),
            }
        }
        unreachable!()
    }

    /// Ready when a PING gets any reply (`+PONG`, or `-NOAUTH` with a password set).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("redis-server exited with {status}"));
            }
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                stream
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .unwrap();
                if stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_ok() {
                    let mut line = String::new();
                    if BufReader::new(&mut stream).read_line(&mut line).is_ok()
                        && (line.starts_with('+') || line.starts_with('-'))
                    {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err("no PING reply".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT` (no credentials).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis://[user]:password@127.0.0.1:PORT`.
    pub fn url_with(&self, user: Option<&str>, password: &str) -> String {
        format!(
            "redis://{}:{password}@127.0.0.1:{}",
            user.unwrap_or(""),
            self.port
        )
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, libc::SIGTERM);
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether a Docker engine answers `docker info`.
pub fn docker_engine_answers() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A loopback listener that accepts connections and never answers (for timeouts).
pub fn black_hole() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// A loopback server that answers every connection with `reply` after reading a little, for
/// protocol replies a real server cannot easily be made to give (`-LOADING`).
pub fn canned_server(reply: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(reply);
                std::thread::sleep(Duration::from_millis(200));
            });
        }
    });
    port
}

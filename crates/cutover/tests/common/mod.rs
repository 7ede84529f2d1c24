//! Test harness: a real `cutover serve` daemon in a temp dir, the real CLI, the real demo-api.
//!
//! Ports are never hard-coded: the public listener binds port 0 and the harness reads the bound
//! address from `status`. Waits use deadlines, not fixed sleeps.

#![allow(dead_code)]

pub mod disk;
pub mod fleet;
pub mod tls;
pub mod tls_load;
pub mod webhook;
pub mod workflow;
pub mod ws;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const CUTOVER: &str = env!("CARGO_BIN_EXE_cutover");

/// demo-api is a binary of another workspace member, built into the same target directory.
pub fn demo_api() -> PathBuf {
    let path = Path::new(CUTOVER).with_file_name("demo-api");
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (`cargo build --workspace`)",
        path.display()
    );
    path
}

/// Timings small enough for tests, the rest as in the core issue.
pub const FAST_COMPONENT: &str = r#"
command = ["{artifact}"]
env = { API_ADDR = "127.0.0.1:{port}", RELEASE = "{release}" }
health = { path = "/health", interval = "100ms", timeout = "2s", healthy_threshold = 2, start_timeout = "5s" }
drain_timeout = "5s"
stop_timeout = "5s"
keep_releases = 5
stabilize = "0s"
"#;

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    child: Option<Child>,
    pub public: SocketAddr,
    /// Extra environment for the next `spawn`.
    pub env: Vec<(String, String)>,
}

impl Daemon {
    /// A daemon with one `backend` component configured by `component` (TOML lines).
    pub fn start(component: &str) -> Daemon {
        let config = format!(
            "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \".cutover/control.sock\"\n\n\
             [components.backend]\nlisten = \"127.0.0.1:0\"\n{component}"
        );
        Self::start_with_config(&config)
    }

    pub fn start_with_config(config: &str) -> Daemon {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_full(config, env, |_| {})
    }

    /// Like `start_with_config`, with `prepare` run on the temp dir before the daemon starts.
    pub fn start_with_config_and(config: &str, prepare: impl FnOnce(&Path)) -> Daemon {
        Self::start_full(config, &[], prepare)
    }

    fn start_full(config: &str, env: &[(&str, &str)], prepare: impl FnOnce(&Path)) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("cutover-test-")
            .tempdir()
            .unwrap();
        let path = dir.path().join("cutover.toml");
        std::fs::write(&path, config).unwrap();
        prepare(dir.path());
        let mut daemon = Daemon {
            dir,
            config: path,
            child: None,
            public: "127.0.0.1:1".parse().unwrap(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        daemon.spawn();
        daemon
    }

    /// (Re)starts `cutover serve` and waits until its control API answers.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        let child = Command::new(CUTOVER)
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("CUTOVER_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.public = self.wait_ready(Duration::from_secs(15));
    }

    fn wait_ready(&mut self, within: Duration) -> SocketAddr {
        let deadline = Instant::now() + within;
        loop {
            let out = self.cli(&["status", "--json"]);
            if out.status.success() {
                let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                if !status["daemon"].is_null() {
                    // A hook-only config has no public address: keep the placeholder.
                    let listen = status["components"][0]["listen"]
                        .as_str()
                        .unwrap_or_default();
                    return listen.parse().unwrap_or(self.public);
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(exit)) = child.try_wait() {
                    panic!("daemon exited early ({exit}):\n{}", self.log());
                }
            }
            assert!(
                Instant::now() < deadline,
                "daemon not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// The pid of whichever daemon answers now (after `cutover upgrade`, not our child).
    pub fn serving_daemon_pid(&self) -> Option<u32> {
        let out = self.cli(&["status", "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        status["daemon"]["pid"].as_u64().map(|p| p as u32)
    }

    /// Live `cutover serve` processes of this daemon's config (old and new during an upgrade).
    pub fn daemon_processes(&self) -> Vec<i32> {
        processes_matching(self.config.to_str().unwrap())
            .into_iter()
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                cmdline.split(|b| *b == 0).any(|arg| arg == b"serve")
            })
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Runs the CLI against this daemon's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(CUTOVER)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn deploy(&self, release: &str, artifact: &Path) -> Output {
        self.cli(&[
            "deploy",
            "backend",
            "--release",
            release,
            "--artifact",
            artifact.to_str().unwrap(),
        ])
    }

    /// Runs `cutover deploy` on its own thread, for tests that act while it runs.
    pub fn deploy_in_background(
        &self,
        release: &str,
        artifact: &Path,
    ) -> std::thread::JoinHandle<Output> {
        let (config, release, artifact) =
            (self.config.clone(), release.to_owned(), artifact.to_owned());
        std::thread::spawn(move || {
            Command::new(CUTOVER)
                .args(["deploy", "backend", "--release", &release, "--artifact"])
                .arg(&artifact)
                .arg("--config")
                .arg(config)
                .output()
                .unwrap()
        })
    }

    /// The kept release ids of `backend`, newest first, and the whole `releases --json`.
    pub fn releases_json(&self) -> (Vec<String>, serde_json::Value) {
        let out = self.cli(&["releases", "backend", "--json"]);
        let releases: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ids = releases["releases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        (ids, releases)
    }

    /// Deploys and asserts success.
    pub fn deploy_ok(&self, release: &str, artifact: &Path) {
        let out = self.deploy(release, artifact);
        assert!(
            out.status.success(),
            "deploy {release} failed:\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    pub fn status_json(&self) -> serde_json::Value {
        let out = self.cli(&["status", "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// One component's entry of `status --json`.
    pub fn component_status(&self, name: &str) -> serde_json::Value {
        let status = self.status_json();
        let found = status["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned();
        found.unwrap_or_else(|| panic!("no component {name} in {status}"))
    }

    /// The bound public address of a component.
    pub fn listen_of(&self, name: &str) -> SocketAddr {
        self.component_status(name)["listen"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Live instances of `release` of `component` started by this daemon.
    pub fn instances_of(&self, component: &str, release: &str) -> Vec<i32> {
        processes_matching(&format!(
            "{}/.cutover/releases/{component}/{release}",
            self.dir.path().display()
        ))
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "daemon did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A script artifact in the temp dir.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// An artifact that runs demo-api with extra environment (knobs).
    pub fn demo_with_env(&self, name: &str, env: &str) -> PathBuf {
        self.script(name, &format!("{env} exec {}", demo_api().display()))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        // Anything a test left behind (adopted or orphaned instances) dies with the temp dir.
        kill_processes_under(self.dir.path());
    }
}

/// Kills processes whose command line mentions `dir` (scripts and instances of this test).
pub fn kill_processes_under(dir: &Path) {
    for pid in processes_matching(dir.to_str().unwrap()) {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Pids of live processes whose command line, executable or working directory contains
/// `needle` (instances run in their release directory, whatever their command line).
pub fn processes_matching(needle: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'));
        if !zombie
            && (String::from_utf8_lossy(&cmdline).contains(needle)
                || exe.to_string_lossy().contains(needle)
                || cwd.to_string_lossy().contains(needle))
        {
            found.push(pid);
        }
    }
    found
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A blocking GET on a fresh connection; returns (status, x-release, body).
pub fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let response = text(&raw);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let release = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("x-release:"))
        .map(|l| l["x-release:".len()..].trim().to_owned())
        .unwrap_or_default();
    (status, release, body.to_owned())
}

/// Waits until `check` holds, or panics with `what`.
pub fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port free right now (for a listener the test configures before it starts: a
/// daemon that is restarted, or a load that must find it at the same place).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

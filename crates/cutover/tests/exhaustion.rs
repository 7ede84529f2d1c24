//! Issue 12, item 7: file-descriptor exhaustion never freezes the daemon.
//!
//! The daemon runs under a low fd limit (soft 128, hard 256, set in the child before exec) and
//! the test opens more slow connections than that limit allows. The control socket and the
//! admin listener must keep answering, the public port must serve again as soon as the slow
//! clients go away, the log must not fill with accept errors, and a client that stalls in the
//! middle of a request body must be disconnected after the configured body timeout.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The daemon's hard fd limit; its soft limit starts at half of it.
const HARD_FD_LIMIT: u64 = 256;
const SOFT_FD_LIMIT: u64 = 128;
/// More connections than the daemon could ever hold open.
const SLOW_CLIENTS: usize = 400;

/// A `cutover serve` started under a low RLIMIT_NOFILE, with the admin listener enabled.
struct LimitedDaemon {
    dir: tempfile::TempDir,
    config: PathBuf,
    child: Option<Child>,
    public: SocketAddr,
    admin: SocketAddr,
}

impl LimitedDaemon {
    fn start(extra_daemon_keys: &str) -> LimitedDaemon {
        let dir = tempfile::Builder::new()
            .prefix("cutover-test-")
            .tempdir()
            .unwrap();
        let admin = free_port();
        let config = dir.path().join("cutover.toml");
        std::fs::write(
            &config,
            format!(
                "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \".cutover/control.sock\"\n\
                 admin_listen = \"{admin}\"\n{extra_daemon_keys}\n\n\
                 [components.backend]\nlisten = \"127.0.0.1:0\"\n{FAST_COMPONENT}"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let mut command = Command::new(CUTOVER);
        command
            .args(["serve", "--config"])
            .arg(&config)
            .env("CUTOVER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: SOFT_FD_LIMIT,
                    rlim_max: HARD_FD_LIMIT,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        let mut daemon = LimitedDaemon {
            dir,
            config,
            child: Some(child),
            public: "127.0.0.1:1".parse().unwrap(),
            admin,
        };
        daemon.public = daemon.wait_ready();
        daemon
    }

    fn wait_ready(&mut self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = self.cli(&["status", "--json"]);
            if out.status.success() {
                let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                if !status["daemon"].is_null() {
                    return status["components"][0]["listen"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                }
            }
            if let Ok(Some(exit)) = self.child.as_mut().unwrap().try_wait() {
                panic!("daemon exited early ({exit}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "daemon not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(CUTOVER)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn deploy_demo(&self) {
        let artifact = demo_api();
        let out = self.cli(&[
            "deploy",
            "backend",
            "--release",
            "v1",
            "--artifact",
            artifact.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "deploy failed:\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    /// `cutover status --json` must answer, from the live daemon, within `within`.
    fn status_within(&self, within: Duration) -> serde_json::Value {
        let mut child = Command::new(CUTOVER)
            .args(["status", "--json", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if started.elapsed() > within {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`cutover status` did not answer within {within:?} under load:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "status failed: {}", text(&out.stderr));
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            !status["daemon"].is_null(),
            "status did not come from the live daemon: {status}"
        );
        status
    }

    /// The daemon's current soft RLIMIT_NOFILE, from /proc.
    fn soft_fd_limit(&self) -> u64 {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid())).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        line.split_whitespace().nth(3).unwrap().parse().unwrap()
    }

    fn accept_error_lines(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("accept failed") || l.contains("accept still failing"))
            .count()
    }
}

impl Drop for LimitedDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        kill_processes_under(self.dir.path());
    }
}

/// A port nobody listens on right now (the admin listener needs a known address).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Sends `request` on a fresh connection and reads the whole answer within `within`;
/// returns the status code and body, or why there was none.
fn request_within(
    addr: SocketAddr,
    request: &str,
    within: Duration,
) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect_timeout(&addr, within).map_err(|e| e.to_string())?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    read_response(&mut stream, Instant::now() + within)
}

fn read_response(stream: &mut TcpStream, deadline: Instant) -> Result<(u16, String), String> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no complete answer in time (got {:?})", text(&raw)));
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => return Err(format!("{e} (got {:?})", text(&raw))),
        }
    }
    let response = text(&raw);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
    Ok((status, body.to_owned()))
}

/// Opens up to `count` connections that send a partial request head and then nothing.
fn open_slow_header_clients(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut clients = Vec::with_capacity(count);
    while clients.len() < count && Instant::now() < deadline {
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            continue;
        };
        // Queued in the kernel if the daemon does not accept: the write still succeeds.
        let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: ");
        clients.push(stream);
    }
    assert_eq!(
        clients.len(),
        count,
        "could not open {count} connections in 30 s"
    );
    clients
}

#[test]
fn slow_header_flood_leaves_control_admin_and_public_serviceable() {
    let daemon = LimitedDaemon::start("");
    assert_eq!(
        daemon.soft_fd_limit(),
        HARD_FD_LIMIT,
        "the soft fd limit is raised to the hard limit at start"
    );
    daemon.deploy_demo();

    let slow = open_slow_header_clients(daemon.public, SLOW_CLIENTS);
    // More clients than fds: the daemon is at its connection cap (or, before the fix, out of
    // fds). Give it a moment to reach that state, measured by what it has accepted.
    eventually(
        Duration::from_secs(10),
        "the daemon to take on the flood",
        || {
            let fds = std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
                .map(|d| d.count())
                .unwrap_or(0);
            fds > 60
        },
    );
    std::thread::sleep(Duration::from_millis(500)); // let any accept-error spin show in the log

    // (a) The control socket answers, from the live daemon, whatever the public load.
    let status = daemon.status_within(Duration::from_secs(5));
    assert_eq!(status["components"][0]["serving_release"], "v1", "{status}");

    // The admin listener too.
    let admin = request_within(
        daemon.admin,
        "GET /health HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(
        admin.as_ref().map(|r| r.0),
        Ok(200),
        "admin /health: {admin:?}"
    );

    // (b) A normal request sent while the public listener is at its cap waits in the kernel
    // backlog (it is neither refused nor failed) and is answered once the slow clients go.
    let mut normal = TcpStream::connect_timeout(&daemon.public, Duration::from_secs(2)).unwrap();
    normal
        .write_all(b"GET /version HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    drop(slow);
    let answer = read_response(&mut normal, Instant::now() + Duration::from_secs(10));
    assert_eq!(
        answer,
        Ok((200, "v1".to_owned())),
        "a request queued during the flood is served once the flood ends:\n{}",
        daemon.log()
    );
    let after = request_within(
        daemon.public,
        "GET /version HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(after, Ok((200, "v1".to_owned())));

    // (c) No accept-error spin: the cap keeps the daemon from running out of fds at all.
    let accept_errors = daemon.accept_error_lines();
    assert!(
        accept_errors <= 10,
        "{accept_errors} accept-error lines in the log:\n{}",
        daemon
            .log()
            .lines()
            .filter(|l| l.contains("accept"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let cap_lines = daemon.log().matches("at the connection cap").count();
    assert!(
        (1..=3).contains(&cap_lines),
        "the cap is reported, at most once per 10 s: {cap_lines} lines"
    );
}

#[test]
fn stalled_request_bodies_are_cut_off_after_the_body_timeout() {
    let daemon = LimitedDaemon::start("body_read_timeout = \"2s\"");
    daemon.deploy_demo();

    // A slow but steady upload (a byte every 700 ms, 4.2 s in all) is not a stalled one.
    let mut steady = TcpStream::connect_timeout(&daemon.public, Duration::from_secs(2)).unwrap();
    steady
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 6\r\n\r\n",
        )
        .unwrap();
    for byte in b"steady" {
        std::thread::sleep(Duration::from_millis(700));
        steady.write_all(&[*byte]).unwrap();
    }
    let answer = read_response(&mut steady, Instant::now() + Duration::from_secs(10));
    assert_eq!(answer, Ok((200, "steady".to_owned())), "{}", daemon.log());

    // Stalled uploads: more than the daemon has fds for. Each declares 10 MB, sends one byte,
    // then nothing.
    let stalled_count = 300;
    let opened = Instant::now();
    let mut stalled = Vec::new();
    while stalled.len() < stalled_count && opened.elapsed() < Duration::from_secs(30) {
        let Ok(mut stream) = TcpStream::connect_timeout(&daemon.public, Duration::from_secs(2))
        else {
            continue;
        };
        let _ = stream
            .write_all(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 10000000\r\n\r\nx");
        stalled.push(stream);
    }
    assert_eq!(stalled.len(), stalled_count);

    // Every one of them is disconnected by the daemon: the first batch after the body timeout,
    // the queued ones after theirs. None is held beyond that.
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut first_closed = None;
    for (i, stream) in stalled.iter_mut().enumerate() {
        let mut sink = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "stalled upload {i} of {stalled_count} still open {:?} after the flood began:\n{}",
                opened.elapsed(),
                daemon.log()
            );
            stream.set_read_timeout(Some(left)).unwrap();
            match stream.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    continue
                }
                Err(_) => break, // reset: closed as well
            }
        }
        first_closed.get_or_insert_with(|| opened.elapsed());
    }
    let first_closed = first_closed.unwrap();
    assert!(
        first_closed >= Duration::from_millis(1500),
        "stalled uploads were closed after {first_closed:?}, before the 2 s body timeout"
    );
    drop(stalled);

    // The public port serves normally afterwards, and the control socket answered all along.
    let after = request_within(
        daemon.public,
        "GET /version HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(after, Ok((200, "v1".to_owned())));
    daemon.status_within(Duration::from_secs(5));
}

/// A release that reads the whole request body before it answers, as most APIs do.
const BODY_READING_BACKEND: &str = r#"#!/usr/bin/env python3
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.answer(b"ok")

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.answer(b"%d bytes" % len(body))

    def answer(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

host, port = os.environ["API_ADDR"].rsplit(":", 1)
ThreadingHTTPServer((host, int(port)), Handler).serve_forever()
"#;

#[test]
fn a_stalled_body_gets_408_and_does_not_count_against_the_release() {
    let daemon = LimitedDaemon::start("body_read_timeout = \"1s\"");
    let backend = daemon.dir.path().join("backend.py");
    std::fs::write(&backend, BODY_READING_BACKEND).unwrap();
    std::fs::set_permissions(
        &backend,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = daemon.cli(&[
        "deploy",
        "backend",
        "--release",
        "v1",
        "--artifact",
        backend.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let mut stalled = Vec::new();
    for _ in 0..5 {
        let mut stream =
            TcpStream::connect_timeout(&daemon.public, Duration::from_secs(2)).unwrap();
        stream
            .write_all(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\nabc")
            .unwrap();
        stalled.push(stream);
    }
    for stream in &mut stalled {
        let answer = read_response(stream, Instant::now() + Duration::from_secs(10));
        assert_eq!(answer.map(|a| a.0), Ok(408), "{}", daemon.log());
    }
    let ok = request_within(
        daemon.public,
        "POST /upload HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
        Duration::from_secs(5),
    );
    assert_eq!(ok, Ok((200, "3 bytes".to_owned())));
    let status = daemon.status_within(Duration::from_secs(5));
    assert_eq!(
        status["components"][0]["stats"]["failed"], 0,
        "a client that stalls is not the release's failure: {status}"
    );
}

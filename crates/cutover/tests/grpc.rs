//! gRPC through cutover with real grpcio clients and servers: an `upstream = "h2c"` component
//! behind its own plaintext listener (`h2c = true`, prior knowledge) and behind the shared
//! https listener (h2 by ALPN). Unary, server-streaming and bidirectional calls keep their
//! trailers; the gRPC health check gates deploys; a stream open across a deploy finishes on the
//! release it started on while new calls go to the new one, none failing.

mod common;

use common::tls::certificate;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const PYTHON: &str = "/usr/bin/python3";
const HOST: &str = "grpc.example.test";

fn support(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support/grpc")
        .join(name)
}

/// Whether Debian's python3-grpcio is there; under CI it must be (scripts/test installs it).
fn grpcio_available() -> bool {
    let found = Command::new(PYTHON)
        .args(["-c", "import grpc"])
        .status()
        .is_ok_and(|s| s.success());
    if !found && std::env::var("CI").as_deref() == Ok("true") {
        panic!("{PYTHON} cannot import grpc: apt-get install python3-grpcio (scripts/test does)");
    }
    if !found {
        eprintln!("skipped: {PYTHON} cannot import grpc (apt-get install python3-grpcio)");
    }
    found
}

fn config(https: u16) -> String {
    format!(
        r#"[daemon]
data_dir = ".cutover"
control_socket = ".cutover/control.sock"

[edge]
https = "127.0.0.1:{https}"

[components.backend]
listen = "127.0.0.1:0"
h2c = true
upstream = "h2c"
hosts = ["{HOST}"]
tls = {{ cert = "cert.pem", key = "key.pem" }}
command = ["{PYTHON}", "{{artifact}}", "{{port}}", "{{release}}"]
health = {{ grpc = true, interval = "100ms", timeout = "2s", healthy_threshold = 2, start_timeout = "15s" }}
drain_timeout = "30s"
stop_timeout = "5s"
stabilize = "0s"
"#
    )
}

/// Where a client reaches the component: its own h2c listener, or the edge over TLS.
#[derive(Clone)]
enum Via {
    H2c(String),
    Tls { target: String, ca: PathBuf },
}

impl Via {
    fn args(&self) -> Vec<String> {
        match self {
            Via::H2c(target) => vec![target.clone()],
            Via::Tls { target, ca } => vec![
                target.clone(),
                "--tls".into(),
                ca.display().to_string(),
                HOST.into(),
            ],
        }
    }
}

fn client(via: &Via, mode: &[&str]) -> Command {
    let mut command = Command::new(PYTHON);
    command
        .arg(support("client.py"))
        .args(via.args())
        .args(mode);
    command
}

/// Runs a client to its end: one JSON line per call.
fn calls(via: &Via, mode: &[&str]) -> Vec<Value> {
    let out = client(via, mode).output().expect("the gRPC client runs");
    assert!(out.status.success(), "client failed: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .filter(|line: &Value| line.get("call").is_some())
        .collect()
}

fn answers(call: &Value) -> Vec<String> {
    call["answers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

fn assert_ok_from(call: &Value, release: &str) {
    assert_eq!(call["ok"], true, "{call}");
    assert_eq!(
        call["trailer"], release,
        "the x-release trailer came through: {call}"
    );
    assert!(
        answers(call)
            .iter()
            .all(|a| a.starts_with(&format!("{release}:"))),
        "{call}"
    );
}

/// A bidirectional stream running in the background, already answered once.
struct OpenStream(std::process::Child, BufReader<std::process::ChildStdout>);

impl OpenStream {
    fn start(via: &Via, messages: u32, interval: &str) -> OpenStream {
        let mut child = client(via, &["bidi", &messages.to_string(), interval])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        assert_eq!(first.trim(), r#"{"started": true}"#, "the stream opened");
        OpenStream(child, out)
    }

    fn finish(mut self) -> Value {
        let mut last = String::new();
        self.1.read_line(&mut last).unwrap();
        assert!(self.0.wait().unwrap().success());
        serde_json::from_str(&last).unwrap()
    }
}

#[test]
fn grpc_unary_and_streaming_pass_through_an_h2c_upstream_across_a_deploy() {
    if !grpcio_available() {
        return;
    }
    let https = free_port();
    let daemon = Daemon::start_with_config_and(&config(https), |dir| certificate(dir, &[HOST]));
    let server = support("echo_server.py");
    // The gRPC health check (not an HTTP GET, which a gRPC server cannot answer) gates it.
    daemon.deploy_ok("g1", &server);
    let plain = Via::H2c(daemon.listen_of("backend").to_string());
    let tls = Via::Tls {
        target: format!("127.0.0.1:{https}"),
        ca: daemon.dir.path().join("ca.pem"),
    };

    for via in [&plain, &tls] {
        let unary = calls(via, &["unary", "3"]);
        assert_eq!(unary.len(), 3);
        for (i, call) in unary.iter().enumerate() {
            assert_ok_from(call, "g1");
            assert_eq!(answers(call), [format!("g1:u{i}")]);
        }
        let count = calls(via, &["count", "200"]);
        assert_ok_from(&count[0], "g1");
        assert_eq!(
            answers(&count[0]).len(),
            200,
            "every streamed message arrived"
        );
    }

    // Streams open on both paths, a deploy, and unary calls all through it.
    let streams = [
        OpenStream::start(&plain, 30, "0.1"),
        OpenStream::start(&tls, 30, "0.1"),
    ];
    let during = {
        let plain = plain.clone();
        std::thread::spawn(move || calls(&plain, &["unary", "400"]))
    };
    let deploy = daemon.deploy_in_background("g2", &server);
    let deployed = deploy.join().unwrap();
    assert!(deployed.status.success(), "{}", text(&deployed.stderr));
    for stream in streams {
        let call = stream.finish();
        // Drained, not cut: the whole stream on the release it started on.
        assert_ok_from(&call, "g1");
        let expected: Vec<String> = (0..30).map(|i| format!("g1:m{i}")).collect();
        assert_eq!(answers(&call), expected);
    }
    let during = during.join().unwrap();
    let failed: Vec<&Value> = during.iter().filter(|c| c["ok"] != true).collect();
    assert!(
        failed.is_empty(),
        "calls failed during the deploy: {failed:?}"
    );
    assert_eq!(during.len(), 400);
    let releases: std::collections::BTreeSet<&str> = during
        .iter()
        .map(|c| c["trailer"].as_str().unwrap())
        .collect();
    assert!(
        releases.contains("g2"),
        "the new release answered: {releases:?}"
    );
    for via in [&plain, &tls] {
        assert_ok_from(&calls(via, &["unary", "1"])[0], "g2");
    }

    // A release whose health check answers NOT_SERVING never gets traffic.
    let sick = daemon.deploy("sick3", &server);
    assert!(!sick.status.success());
    let said = text(&sick.stdout) + &text(&sick.stderr);
    assert!(said.contains("gRPC health NOT_SERVING"), "{said}");
    assert_ok_from(&calls(&plain, &["unary", "1"])[0], "g2");
}

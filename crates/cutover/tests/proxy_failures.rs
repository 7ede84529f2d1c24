//! The proxy sees every failure: a release that hangs or cuts its responses short fails its
//! stabilization and is rolled back, and no request through cutover hangs forever.

mod common;

use common::*;
use cutover::loadgen::{ClientKind, Load};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn watched(stabilize: &str) -> String {
    FAST_COMPONENT.replace(
        "stabilize = \"0s\"",
        &format!(
            "stabilize = \"{stabilize}\"\nupstream_timeout = \"3s\"\n\
             stabilize_checks = {{ unhealthy_threshold = 3, max_error_rate = 0.05, min_requests = 20, stall_timeout = \"2s\" }}"
        ),
    )
}

/// A GET on a fresh connection with a client-side deadline: (status, elapsed), or the error.
fn get_within(
    addr: std::net::SocketAddr,
    path: &str,
    limit: Duration,
) -> Result<(u16, Duration), String> {
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(limit)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("{e} after {:?}", started.elapsed()))?;
    let head = String::from_utf8_lossy(&raw);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, started.elapsed()))
}

// The first deploy stabilizes too: keep the window short, the failures show within it.

/// Regression: a release that accepts connections and never answers was declared
/// "stable (0 requests, 0 failed)", and then every request hung.
#[test]
fn a_release_that_hangs_is_rolled_back_and_requests_get_a_timely_504() {
    let daemon = Daemon::start(&watched("8s"));
    daemon.deploy_ok("v1", &demo_api());
    let hanging = daemon.demo_with_env("hanging", "DEMO_HANG=1");
    let deploy = daemon.deploy_in_background("v2", &hanging);
    eventually(Duration::from_secs(10), "v2 to be switched in", || {
        daemon.component_status("backend")["serving"]["release"] == "v2"
    });
    // A request the hanging release takes: answered by cutover, not left hanging.
    let (status, took) = get_within(daemon.public, "/version", Duration::from_secs(15)).unwrap();
    assert_eq!(status, 504, "a request to a hanging release");
    assert!(took < Duration::from_secs(10), "the 504 took {took:?}");

    let out = deploy.join().unwrap();
    let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("rolled back to v1"), "{shown}");
    assert!(shown.contains("no response for"), "{shown}");
    assert_eq!(get(daemon.public, "/version").2, "v1");
    let history: serde_json::Value =
        serde_json::from_slice(&daemon.cli(&["history", "--json"]).stdout).unwrap();
    assert_eq!(history["deploys"][0]["outcome"], "rolled_back");
}

/// Regression: a release that closes mid-response was "stable (287 requests, 0 failed)"
/// while every client got a truncated body.
#[test]
fn a_release_that_cuts_responses_short_is_rolled_back() {
    let daemon = Daemon::start(&watched("8s"));
    daemon.deploy_ok("v1", &demo_api());
    let truncating = daemon.demo_with_env("truncating", "DEMO_TRUNCATE=1");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let load = runtime.block_on(async {
        Load::start(daemon.public, "/version", &[ClientKind::NewConnection; 4])
    });
    let out = daemon.deploy("v2", &truncating);
    let report = runtime.block_on(load.stop());
    let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("rolled back to v1"), "{shown}");
    assert!(shown.contains("error rate"), "{shown}");
    assert!(report.by_release.get("v1").copied().unwrap_or(0) > 0);
    assert_eq!(get(daemon.public, "/version").2, "v1");
}

/// Regression: an open WebSocket made a deploy wait for drain_timeout twice (after the switch,
/// then again at finalize) and then for the old instance's own shutdown grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_tunnel_is_drained_once_then_closed() {
    use futures_util::StreamExt;
    let config = FAST_COMPONENT
        .replace("drain_timeout = \"5s\"", "drain_timeout = \"2s\"")
        .replace("stabilize = \"0s\"", "stabilize = \"2s\"");
    let daemon = std::sync::Arc::new(Daemon::start(&config));
    daemon.deploy_ok("v1", &demo_api());
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", daemon.public))
        .await
        .unwrap();
    let deployer = {
        let daemon = daemon.clone();
        tokio::task::spawn_blocking(move || {
            let api = demo_api();
            daemon.cli(&[
                "deploy",
                "backend",
                "--release",
                "v2",
                "--json",
                "--artifact",
                api.to_str().unwrap(),
            ])
        })
    };
    // The tunnel is closed by cutover once the drain is over, not left to the old release.
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(message)) if message.is_close() => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the tunnel to v1 was never closed");
    let out = deployer.await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let drained: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "drained" && e["release"] == "v1")
        .collect();
    assert_eq!(
        drained.len(),
        1,
        "one bounded drain per switch: {drained:?}"
    );
    assert_eq!(
        drained[0]["remaining"], 1,
        "the tunnel was still open at the timeout"
    );
    assert_eq!(get(daemon.public, "/version").2, "v2");
}

fn timed(upstream_timeout: &str) -> String {
    FAST_COMPONENT.replace(
        "stabilize = \"0s\"",
        &format!("stabilize = \"0s\"\nupstream_timeout = \"{upstream_timeout}\""),
    )
}

/// Review finding: the response-head timeout also ran while the client was still uploading, so
/// a long upload got a 504 and counted against the release.
#[test]
fn a_slow_upload_is_not_taken_for_a_slow_upstream() {
    let daemon = Daemon::start(&timed("2s"));
    daemon.deploy_ok("v1", &demo_api());
    let mut stream = std::net::TcpStream::connect(daemon.public).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    write!(stream, "POST /echo?collect=1 HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 8\r\n\r\n").unwrap();
    // 8 bytes over ~4 s: twice the upstream timeout, each gap well inside the body timeout.
    for byte in b"12345678" {
        std::thread::sleep(Duration::from_millis(500));
        stream.write_all(&[*byte]).unwrap();
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let response = String::from_utf8_lossy(&raw);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("12345678"), "{response}");
    let stats = &daemon.component_status("backend")["stats"];
    assert_eq!(stats["failed"], 0, "{stats}");
}

/// Review finding: a response that stalled after its head hung the client for as long as the
/// upstream liked and counted as a success.
#[test]
fn a_response_that_stalls_after_its_head_is_cut_and_counted() {
    let daemon = Daemon::start(&timed("2s"));
    daemon.deploy_ok("v1", &demo_api());
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(daemon.public).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The first chunk at once, the next after 20 s.
    write!(
        stream,
        "GET /stream?chunks=2&ms=20000 HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let took = started.elapsed();
    let response = String::from_utf8_lossy(&raw);
    assert!(
        response.starts_with("HTTP/1.1 200") && response.contains("chunk 0"),
        "{response}"
    );
    assert!(!response.contains("chunk 1"), "{response}");
    assert!(
        took < Duration::from_secs(10),
        "the stalled response held the client {took:?}"
    );
    eventually(
        Duration::from_secs(5),
        "the cut response to count as failed",
        || daemon.component_status("backend")["stats"]["failed"] == 1,
    );
}

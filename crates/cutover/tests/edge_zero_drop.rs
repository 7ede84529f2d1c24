//! The zero-drop promise on the edge's https listener: deploys, a rollback, a certificate
//! renewal and a deploy right after `cutover upgrade` under TLS load (HTTP/1.1 keep-alive, a
//! handshake per request, HTTP/2 streams multiplexed on one connection) fail no request;
//! HTTP/2 streams are drained, counted and released exactly like HTTP/1.1 requests.

mod common;

use common::tls::{leaf_of_pem_file, write_whole, Fingerprint, TestCa};
use common::tls_load::{
    Answer, Connection, ConnectionRecord, Protocol, TlsClient, TlsLoad, TlsReport, TlsTarget,
};
use common::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOST: &str = "api.example.test";

/// The backend on the shared https listener only, by host, with a certificate of its own;
/// `daemon`: more `[daemon]` lines.
fn edge_config(https: u16, daemon: &str, component: &str) -> String {
    format!(
        "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \".cutover/control.sock\"\n{daemon}\n\
         [edge]\nhttps = \"127.0.0.1:{https}\"\n\
         [components.backend]\nhosts = [\"{HOST}\"]\n\
         tls = {{ cert = \"cert.pem\", key = \"key.pem\" }}\n{component}\n"
    )
}

struct Edge {
    daemon: Arc<Daemon>,
    target: TlsTarget,
    ca: TestCa,
    /// The leaf the daemon starts with.
    leaf: Fingerprint,
}

fn edge(component: &str) -> Edge {
    edge_with("", component)
}

fn edge_with(daemon: &str, component: &str) -> Edge {
    let https = free_port();
    let mut issued = None;
    let daemon = Daemon::start_with_config_and(&edge_config(https, daemon, component), |dir| {
        let ca = TestCa::new(dir);
        let leaf = ca.issue(dir, &[HOST]);
        issued = Some((ca, leaf));
    });
    let (ca, leaf) = issued.unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{https}").parse().unwrap();
    let target = TlsTarget::new(addr, HOST, &daemon.dir.path().join("ca.pem"));
    Edge {
        daemon: Arc::new(daemon),
        target,
        ca,
        leaf,
    }
}

/// Runs a blocking harness call (the CLI) off the runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Waits (bounded) until `check` holds on the load's report, or panics with `what`.
async fn until_load(
    load: &TlsLoad,
    within: Duration,
    what: &str,
    check: impl Fn(&TlsReport) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        let report = load.snapshot();
        if check(&report) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}, failures {:?}",
            report.by_release,
            report.failures
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn served_both(report: &TlsReport, release: &str, since: &TlsReport) -> bool {
    [Protocol::Http1, Protocol::Http2]
        .into_iter()
        .all(|p| report.answers(release, p) > since.answers(release, p))
}

/// One request on a fresh connection of `protocol`: (answer, leaf served).
async fn fresh_get(target: &TlsTarget, protocol: Protocol, path: &str) -> (Answer, Fingerprint) {
    let mut conn = Connection::open(target, protocol)
        .await
        .unwrap_or_else(|e| panic!("{protocol:?} connection: {e}"));
    let answer = conn
        .get(path, true)
        .await
        .unwrap_or_else(|e| panic!("{protocol:?} GET {path}: {e}"));
    (answer, conn.leaf)
}

/// The one connection of each keep-alive and HTTP/2 client (asserting it never made another).
fn kept_connections<'a>(report: &'a TlsReport, clients: &[TlsClient]) -> Vec<&'a ConnectionRecord> {
    let mut kept = Vec::new();
    for (index, kind) in clients.iter().enumerate() {
        if *kind == TlsClient::NewConnection {
            continue;
        }
        let opened: Vec<_> = report
            .connections
            .iter()
            .filter(|c| c.client == index)
            .collect();
        assert_eq!(
            opened.len(),
            1,
            "client {index} ({kind:?}) reconnected: {opened:?}"
        );
        kept.push(opened[0]);
    }
    kept
}

/// 4 keep-alive, 2 handshake-per-request and 2 HTTP/2 clients of 4 streams each.
fn mixed_clients() -> Vec<TlsClient> {
    let mut clients = vec![TlsClient::KeepAlive; 4];
    clients.extend([TlsClient::NewConnection; 2]);
    clients.extend([TlsClient::Http2 { streams: 4 }; 2]);
    clients
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_and_rollbacks_under_tls_and_http2_load_fail_no_request() {
    let edge = edge(FAST_COMPONENT);
    let api = demo_api();
    edge.daemon.deploy_ok("v1", &api);

    let clients = mixed_clients();
    let load = TlsLoad::start(&edge.target, "/version", &clients);
    // Requests in flight at every switch, as HTTP/2 streams and on HTTP/1.1: the drains
    // must wait for them.
    let slow_clients = [
        TlsClient::Http2 { streams: 4 },
        TlsClient::KeepAlive,
        TlsClient::KeepAlive,
    ];
    let slow = TlsLoad::start(&edge.target, "/slow?ms=300", &slow_clients);
    let nothing = TlsReport::default();
    until_load(
        &load,
        Duration::from_secs(10),
        "v1 over both protocols",
        |r| served_both(r, "v1", &nothing),
    )
    .await;

    let releases = ["v2", "v3", "v4", "v5", "v6"];
    for release in releases {
        let (daemon, api) = (edge.daemon.clone(), api.clone());
        blocking(move || daemon.deploy_ok(release, &api)).await;
        // The next switch only once this release has really served both protocols.
        until_load(&load, Duration::from_secs(5), release, |r| {
            served_both(r, release, &nothing)
        })
        .await;
    }
    // A rollback switches back to v5's kept release, under the same load.
    let before_rollback = load.snapshot();
    let daemon = edge.daemon.clone();
    let out = blocking(move || daemon.cli(&["rollback", "backend"])).await;
    assert!(
        out.status.success(),
        "rollback: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    until_load(
        &load,
        Duration::from_secs(5),
        "v5 again after the rollback",
        |r| served_both(r, "v5", &before_rollback),
    )
    .await;
    // Past any /version request v6 still had in flight at the switch.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let at_rollback = load.snapshot();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (report, slow_report) = tokio::join!(load.stop(), slow.stop());
    eprintln!(
        "{} answered, {} failed, {} connections, slowest {:?}: {:?}",
        report.ok,
        report.failed,
        report.connections.len(),
        report.slowest,
        report.by_release
    );
    eprintln!(
        "slow requests: {} answered: {:?}",
        slow_report.ok, slow_report.by_release
    );

    assert_eq!(report.failed, 0, "failed requests: {:?}", report.failures);
    // No connection closed under a request either (that would have been sent again).
    assert_eq!(report.resent + slow_report.resent, 0);
    assert_eq!(
        slow_report.failed, 0,
        "failed slow requests: {:?}",
        slow_report.failures
    );
    assert!(
        slow_report.ok > 50,
        "too few slow requests: {:?}",
        slow_report.by_release
    );
    assert!(
        report.ok > 1000,
        "too little load to mean anything: {} ({:?})",
        report.ok,
        report.by_release
    );
    for release in ["v1", "v2", "v3", "v4", "v5", "v6"] {
        for protocol in [Protocol::Http1, Protocol::Http2] {
            assert!(
                report.answers(release, protocol) > 0,
                "{release} never answered over {protocol:?}: {:?}",
                report.by_release
            );
        }
    }
    // After the rollback had taken effect, v6 answered nothing more.
    assert_eq!(
        report.answers("v6", Protocol::Http1) + report.answers("v6", Protocol::Http2),
        at_rollback.answers("v6", Protocol::Http1) + at_rollback.answers("v6", Protocol::Http2),
        "v6 still answered after the rollback: {:?}",
        report.by_release
    );
    // The clients that keep their connection kept it: the switches happen behind the edge.
    for conn in kept_connections(&report, &clients) {
        assert_eq!(conn.ended, None, "{conn:?}");
    }
    for conn in kept_connections(&slow_report, &slow_clients) {
        assert_eq!(conn.ended, None, "{conn:?}");
    }
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let (answer, _) = fresh_get(&edge.target, protocol, "/version").await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (200, "v5"),
            "{protocol:?}"
        );
    }
    assert_eq!(edge.daemon.component_status("backend")["active"], "v5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_renewal_under_tls_load_drops_no_connection() {
    let edge = edge(FAST_COMPONENT);
    edge.daemon.deploy_ok("v1", &demo_api());
    let dir = edge.daemon.dir.path().to_owned();
    assert_eq!(leaf_of_pem_file(&dir.join("cert.pem")), edge.leaf);

    let mut clients = vec![TlsClient::KeepAlive; 3];
    clients.extend([TlsClient::Http2 { streams: 3 }; 2]);
    clients.extend([TlsClient::NewConnection; 2]);
    let long_lived = clients
        .iter()
        .filter(|k| **k != TlsClient::NewConnection)
        .count();
    let load = TlsLoad::start(&edge.target, "/version", &clients);
    until_load(
        &load,
        Duration::from_secs(10),
        "every connection answering",
        |r| r.connections.iter().filter(|c| c.answers > 0).count() > long_lived,
    )
    .await;
    let (_, served) = fresh_get(&edge.target, Protocol::Http2, "/version").await;
    assert_eq!(served, edge.leaf, "the first certificate is served");

    // Renewed by another tool: a new key and leaf from the same CA, replaced on disk.
    let renewed_at = Instant::now();
    let renewed = edge.ca.issue(&dir, &[HOST]);
    assert_ne!(renewed, edge.leaf);
    // The daemon looks every ~2 s; a fresh handshake of each protocol tells when it did.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut served_new_at = None;
    while served_new_at.is_none() {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        let started = Instant::now();
        let (_, h1) = fresh_get(&edge.target, Protocol::Http1, "/version").await;
        let (_, h2) = fresh_get(&edge.target, Protocol::Http2, "/version").await;
        if h1 == renewed && h2 == renewed {
            served_new_at = Some(started);
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let served_new_at = served_new_at.unwrap();
    // Enough time after the change for every client to go on (and the handshake clients to
    // make a few handshakes with the new certificate).
    let changed = load.snapshot();
    until_load(
        &load,
        Duration::from_secs(5),
        "load after the renewal",
        |r| r.ok > changed.ok + 200,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = load.stop().await;
    eprintln!(
        "{} answered, {} failed, {} connections, slowest {:?}: {:?}",
        report.ok,
        report.failed,
        report.connections.len(),
        report.slowest,
        report.by_release
    );

    assert_eq!(report.failed, 0, "failed requests: {:?}", report.failures);
    assert_eq!(report.resent, 0, "a connection closed under a request");
    // Every keep-alive and HTTP/2 connection was opened before the renewal, kept the first
    // certificate, never ended and went on answering after the new one was served.
    for conn in kept_connections(&report, &clients) {
        let kind = conn.kind;
        assert!(conn.opened < renewed_at, "{conn:?}");
        assert_eq!(conn.leaf, edge.leaf, "{conn:?}");
        assert_eq!(conn.ended, None, "{kind:?} connection ended: {conn:?}");
        let last = conn.last_answer.expect("answers on the connection");
        assert!(
            last > served_new_at,
            "{kind:?} connection answered nothing after the renewal was served at \
             {served_new_at:?}: {conn:?}"
        );
    }
    // New handshakes: the old leaf before the change, only the new one after it was seen.
    let handshakes = report.connections_of(TlsClient::NewConnection);
    assert!(
        handshakes
            .iter()
            .any(|c| c.opened < renewed_at && c.leaf == edge.leaf),
        "no handshake before the renewal"
    );
    let after: Vec<_> = handshakes
        .iter()
        .filter(|c| c.opened > served_new_at)
        .collect();
    assert!(
        after.len() >= 10,
        "too few handshakes after the renewal: {}",
        after.len()
    );
    assert!(
        after.iter().all(|c| c.leaf == renewed),
        "a handshake after the renewal got the old certificate"
    );
}

/// `cutover_inflight_requests` of the backend, from the admin listener's `/metrics`.
fn inflight(admin: SocketAddr) -> f64 {
    let (status, _, body) = get(admin, "/metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix("cutover_inflight_requests{component=\"backend\"} "))
        .unwrap_or_else(|| panic!("no in-flight gauge in {body}"))
        .trim()
        .parse()
        .unwrap()
}

/// `count` requests on `conn` (HTTP/2: `streams` at a time on it): every answer.
async fn requests(conn: &mut Connection, count: usize, streams: usize) -> Vec<Answer> {
    let mut answers = Vec::new();
    while answers.len() < count {
        if conn.protocol == Protocol::Http1 {
            answers.push(conn.get("/version", false).await.unwrap());
            continue;
        }
        let batch = (0..streams).map(|_| {
            let mut stream = conn.stream();
            async move { stream.get("/version", false).await.unwrap() }
        });
        answers.extend(futures_util::future::join_all(batch).await);
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_are_drained_and_counted_like_http1_requests() {
    let admin_port = free_port();
    // A drain long enough for the slow streams (the switch may come late on a busy machine),
    // and a stabilization window to read the counts of.
    let component = FAST_COMPONENT
        .replace("drain_timeout = \"5s\"", "drain_timeout = \"10s\"")
        .replace("stabilize = \"0s\"", "stabilize = \"2s\"");
    let edge = edge_with(
        &format!("admin_listen = \"127.0.0.1:{admin_port}\""),
        &component,
    );
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let api = demo_api();
    edge.daemon.deploy_ok("v1", &api);
    assert_eq!(blocking(move || inflight(admin)).await, 0.0);

    // Six slow requests in flight to v1 as six streams of one HTTP/2 connection.
    const SLOW: usize = 6;
    const SLOW_MS: u64 = 4000;
    let slow_conn = Connection::open(&edge.target, Protocol::Http2)
        .await
        .unwrap();
    let slow: Vec<_> = (0..SLOW)
        .map(|_| {
            let mut stream = slow_conn.stream();
            tokio::spawn(async move {
                let started = Instant::now();
                let answer = stream.get(&format!("/slow?ms={SLOW_MS}"), false).await;
                (answer, started.elapsed(), Instant::now())
            })
        })
        .collect();
    // The in-flight accounting sees each stream as a request.
    let deadline = Instant::now() + Duration::from_secs(2);
    while blocking(move || inflight(admin)).await != SLOW as f64 {
        assert!(
            Instant::now() < deadline,
            "the slow streams never were all in flight"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The CLI on a thread of its own: it returns when the deploy is over (drain included).
    let deploy = {
        let daemon = edge.daemon.clone();
        std::thread::spawn(move || {
            let api = demo_api();
            let out = daemon.cli(&[
                "deploy",
                "backend",
                "--release",
                "v2",
                "--json",
                "--artifact",
                api.to_str().unwrap(),
            ]);
            (out, Instant::now())
        })
    };
    // New requests go to v2 at once, over both protocols, while the old streams still run.
    let mut h2 = Connection::open(&edge.target, Protocol::Http2)
        .await
        .unwrap();
    let mut h1 = Connection::open(&edge.target, Protocol::Http1)
        .await
        .unwrap();
    let mut to_v2 = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = h2.get("/version", false).await.unwrap();
        if answer.release == "v2" {
            to_v2 += 1;
            break;
        }
        assert!(Instant::now() < deadline, "v2 was never switched in");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        slow.iter().all(|s| !s.is_finished()),
        "the slow streams ended before the switch: the test proves nothing"
    );
    assert!(
        !deploy.is_finished(),
        "the deploy did not wait for the streams to drain"
    );
    assert_eq!(
        blocking(move || inflight(admin)).await,
        SLOW as f64,
        "the old streams are still counted in flight after the switch"
    );

    // Counted requests to v2 while it stabilizes: 24 HTTP/2 streams (4 at a time on one
    // connection) and 12 HTTP/1.1 requests on a keep-alive connection.
    let (h2_answers, h1_answers) = tokio::join!(requests(&mut h2, 24, 4), requests(&mut h1, 12, 1));
    for answer in h2_answers.iter().chain(&h1_answers) {
        assert_eq!(
            (answer.status, answer.release.as_str()),
            (200, "v2"),
            "{answer:?}"
        );
    }
    assert!(h2_answers
        .iter()
        .all(|a| a.version == http::Version::HTTP_2));
    assert!(h1_answers
        .iter()
        .all(|a| a.version == http::Version::HTTP_11));
    let sent_to_v2 = (to_v2 + h2_answers.len() + h1_answers.len()) as u64;

    // The slow streams finish on v1, whole, after the switch.
    let mut slow_done = Vec::new();
    for task in slow {
        let (answer, took, done) = task.await.unwrap();
        let answer = answer.expect("a slow stream failed");
        assert_eq!(
            (answer.status, answer.release.as_str()),
            (200, "v1"),
            "{answer:?}"
        );
        assert!(took >= Duration::from_millis(SLOW_MS), "{took:?}");
        slow_done.push(done);
    }
    let (out, deployed_at) = blocking(move || deploy.join().unwrap()).await;
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}\n{}", text(&out.stderr));
    let events: Vec<serde_json::Value> = shown
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let drained: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "drained" && e["release"] == "v1")
        .collect();
    assert_eq!(drained.len(), 1, "{shown}");
    assert_eq!(
        drained[0]["remaining"], 0,
        "the drain waited for every stream: {shown}"
    );
    assert!(
        slow_done.iter().all(|done| *done <= deployed_at),
        "the deploy ended before the slow streams"
    );
    // Stabilization and status count each stream as one request, like each HTTP/1.1 one.
    let stable: Vec<_> = events.iter().filter(|e| e["event"] == "stable").collect();
    assert_eq!(stable.len(), 1, "{shown}");
    assert_eq!(stable[0]["requests"], sent_to_v2, "{shown}");
    assert_eq!(stable[0]["failed"], 0, "{shown}");
    let daemon = edge.daemon.clone();
    let status = blocking(move || daemon.component_status("backend")).await;
    assert_eq!(status["serving"]["release"], "v2", "{status}");
    assert_eq!(status["stats"]["requests"], sent_to_v2, "{status}");
    assert_eq!(status["stats"]["failed"], 0, "{status}");
    assert_eq!(blocking(move || inflight(admin)).await, 0.0);
    drop(slow_conn);
}

/// A renewal is two files, and no tool replaces both in one step: when the daemon looks
/// between the two (here: the key is new, the certificate not yet), it must keep serving the
/// old pair rather than a certificate with a key that does not match it, which fails every
/// new handshake until the second file arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_seen_half_written_keeps_the_old_pair_served() {
    let edge = edge(FAST_COMPONENT);
    edge.daemon.deploy_ok("v1", &demo_api());
    let dir = edge.daemon.dir.path().to_owned();
    let renewed = edge.ca.leaf(&[HOST]);
    write_whole(&dir.join("key.pem"), &renewed.key_pem);
    // Until the daemon says it looked (loaded or refused), or for 2.5 of its 2 s polls.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let log = edge.daemon.log();
        if log.contains("certificate file changed")
            || log.contains("a changed certificate file cannot be loaded")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let leaf = Connection::open(&edge.target, protocol)
            .await
            .map(|c| c.leaf);
        assert_eq!(
            leaf,
            Ok(edge.leaf),
            "{protocol:?}: a new handshake while only the key is renewed\n{}",
            edge.daemon.log()
        );
    }
    // The second half arrives: the renewed pair is served.
    write_whole(&dir.join("cert.pem"), &renewed.cert_pem);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let leaf = Connection::open(&edge.target, Protocol::Http2)
            .await
            .map(|c| c.leaf);
        if leaf == Ok(renewed.fingerprint) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed pair was never served: {leaf:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// After `cutover upgrade` the old daemon finishes its open connections: an HTTP/1.1 one
/// after its next response (`Connection: close`). An HTTP/2 connection, which no header can
/// end, must be told to go away (GOAWAY) as promptly, or its new streams go on being routed
/// by the old daemon, to the release that daemon knew, which the new daemon is free to
/// deploy over and stop: every such stream is then a 502 until the old daemon's grace (the
/// longest drain_timeout, up to 30 s) runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_right_after_an_upgrade_fails_no_http2_request() {
    let edge = edge(FAST_COMPONENT);
    let api = demo_api();
    edge.daemon.deploy_ok("v1", &api);
    let clients = mixed_clients();
    let load = TlsLoad::start(&edge.target, "/version", &clients);
    let nothing = TlsReport::default();
    until_load(
        &load,
        Duration::from_secs(10),
        "v1 over both protocols",
        |r| served_both(r, "v1", &nothing),
    )
    .await;

    let daemon = edge.daemon.clone();
    let out = blocking(move || daemon.cli(&["upgrade"])).await;
    assert!(out.status.success(), "upgrade: {}", text(&out.stderr));
    let (daemon, deployed) = (edge.daemon.clone(), api.clone());
    blocking(move || daemon.deploy_ok("v2", &deployed)).await;
    until_load(
        &load,
        Duration::from_secs(10),
        "v2 over both protocols",
        |r| served_both(r, "v2", &nothing),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = load.stop().await;
    eprintln!(
        "{} answered, {} failed, {} resent: {:?}",
        report.ok, report.failed, report.resent, report.by_release
    );

    assert_eq!(
        report.failed,
        0,
        "failed requests: {:?}\n{}",
        report.failures,
        edge.daemon.log()
    );
    assert!(report.ok > 500, "too little load: {:?}", report.by_release);
}

/// Waits (bounded) until the backend's in-flight gauge reads `expected`.
async fn until_inflight(admin: SocketAddr, expected: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = blocking(move || inflight(admin)).await;
        if now == expected as f64 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {now} in flight, not {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A stream the client resets (RST_STREAM, its connection staying open) leaves the in-flight
/// count at once, as an HTTP/1.1 request does when its client goes: a drain never waits for a
/// request nobody waits for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_http2_streams_leave_the_in_flight_count_like_dropped_http1_requests() {
    let admin_port = free_port();
    // A drain long enough to tell "waited for a leaked count" from "had nothing to wait for".
    let component = FAST_COMPONENT.replace("drain_timeout = \"5s\"", "drain_timeout = \"20s\"");
    let edge = edge_with(
        &format!("admin_listen = \"127.0.0.1:{admin_port}\""),
        &component,
    );
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    edge.daemon.deploy_ok("v1", &demo_api());

    let h2 = Connection::open(&edge.target, Protocol::Http2)
        .await
        .unwrap();
    let streams: Vec<_> = (0..6)
        .map(|_| {
            let mut stream = h2.stream();
            tokio::spawn(async move { stream.get("/slow?ms=15000", false).await })
        })
        .collect();
    let mut h1 = Connection::open(&edge.target, Protocol::Http1)
        .await
        .unwrap();
    let h1_request = tokio::spawn(async move { h1.get("/slow?ms=15000", false).await });
    until_inflight(admin, 7, "six streams and one HTTP/1.1 request").await;

    // Dropping a stream's response future makes hyper reset that stream.
    for stream in streams {
        stream.abort();
        assert!(stream.await.unwrap_err().is_cancelled());
    }
    until_inflight(admin, 1, "the streams reset").await;
    assert!(!h2.is_closed(), "the HTTP/2 connection itself stays open");
    // Dropping the HTTP/1.1 request closes its connection.
    h1_request.abort();
    until_inflight(admin, 0, "the HTTP/1.1 request dropped").await;

    let started = Instant::now();
    let daemon = edge.daemon.clone();
    blocking(move || daemon.deploy_ok("v2", &demo_api())).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the deploy waited {:?} to drain requests nobody waits for",
        started.elapsed()
    );
    drop(h2);
}

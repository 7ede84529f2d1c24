//! The zero-drop promise on the edge's https listener: deploys, a rollback and a certificate
//! renewal under TLS load (HTTP/1.1 keep-alive, a handshake per request, HTTP/2 streams
//! multiplexed on one connection) fail no request; HTTP/2 streams are drained and counted
//! exactly like HTTP/1.1 requests.

mod common;

use common::tls_load::{
    leaf_of_pem_file, Connection, Fingerprint, Protocol, TestCa, TlsClient, TlsLoad, TlsReport,
    TlsTarget,
};
use common::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOST: &str = "api.example.test";

/// The backend on the shared https listener only, by host, with a certificate of its own.
fn edge_config(https: u16, component: &str) -> String {
    format!(
        "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \".cutover/control.sock\"\n\
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
    let https = free_port();
    let mut issued = None;
    let daemon = Daemon::start_with_config_and(&edge_config(https, component), |dir| {
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
async fn fresh_get(
    target: &TlsTarget,
    protocol: Protocol,
    path: &str,
) -> (common::tls_load::Answer, Fingerprint) {
    let mut conn = Connection::open(target, protocol)
        .await
        .unwrap_or_else(|e| panic!("{protocol:?} connection: {e}"));
    let answer = conn
        .get(path, true)
        .await
        .unwrap_or_else(|e| panic!("{protocol:?} GET {path}: {e}"));
    (answer, conn.leaf)
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
    // Every keep-alive and HTTP/2 connection was opened before the renewal, kept the first
    // certificate, never ended and went on answering after the new one was served.
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
        let conn = opened[0];
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

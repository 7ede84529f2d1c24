//! Trust at the edge (issue 12): what a client says about where a request came from is not
//! believed unless it is a trusted proxy, and Host must be there exactly once.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// Sends `request` as written on a fresh connection; returns (status, body).
fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = text(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// The request headers demo-api received, one `name: value` per line, names lower case.
fn headers_seen(addr: SocketAddr, extra: &str) -> Vec<String> {
    let (status, body) = raw(
        addr,
        &format!("GET /headers HTTP/1.1\r\nHost: api.example\r\n{extra}Connection: close\r\n\r\n"),
    );
    assert_eq!(status, 200, "{body}");
    body.lines().map(str::to_owned).collect()
}

fn values<'a>(seen: &'a [String], name: &str) -> Vec<&'a str> {
    seen.iter()
        .filter_map(|l| l.strip_prefix(&format!("{name}: ")))
        .collect()
}

const SPOOFED: &str = "X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\
                       X-Forwarded-Host: evil.example\r\nForwarded: for=6.6.6.6;proto=https\r\nVia: 1.1 evil\r\n";

#[test]
fn forwarding_headers_from_clients_are_replaced_by_what_cutover_saw() {
    let daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    let seen = headers_seen(daemon.public, SPOOFED);
    assert_eq!(values(&seen, "x-forwarded-for"), ["127.0.0.1"], "{seen:?}");
    assert_eq!(values(&seen, "x-real-ip"), ["127.0.0.1"], "{seen:?}");
    assert_eq!(values(&seen, "x-forwarded-proto"), ["http"], "{seen:?}");
    assert_eq!(
        values(&seen, "x-forwarded-host"),
        ["api.example"],
        "{seen:?}"
    );
    assert_eq!(
        values(&seen, "forwarded"),
        ["for=127.0.0.1;proto=http"],
        "{seen:?}"
    );
    assert_eq!(values(&seen, "via"), ["1.1 cutover"], "{seen:?}");
    assert!(
        !seen
            .iter()
            .any(|l| l.contains("6.6.6.6") || l.contains("evil")),
        "{seen:?}"
    );
}

#[test]
fn trusted_proxies_keep_their_chain() {
    let daemon = Daemon::start_with_config(&format!(
        "[daemon]\ndata_dir = \".cutover\"\n\n[edge]\ntrusted_proxies = [\"127.0.0.0/8\"]\n\n\
         [components.backend]\nlisten = \"127.0.0.1:0\"\n{FAST_COMPONENT}"
    ));
    daemon.deploy_ok("v1", &demo_api());
    let seen = headers_seen(
        daemon.public,
        "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\nForwarded: for=203.0.113.9\r\n",
    );
    assert_eq!(
        values(&seen, "x-forwarded-for"),
        ["203.0.113.9, 127.0.0.1"],
        "{seen:?}"
    );
    assert_eq!(values(&seen, "x-real-ip"), ["203.0.113.9"], "{seen:?}");
    assert_eq!(values(&seen, "x-forwarded-proto"), ["https"], "{seen:?}");
    assert_eq!(
        values(&seen, "forwarded"),
        ["for=203.0.113.9, for=127.0.0.1;proto=http"],
        "{seen:?}"
    );
}

#[test]
fn host_must_be_there_exactly_once_for_proxied_and_static_components() {
    let daemon = Daemon::start_with_config(&format!(
        "[daemon]\ndata_dir = \".cutover\"\n\n[components.backend]\nlisten = \"127.0.0.1:0\"\n\
         {FAST_COMPONENT}\n[components.frontend]\nkind = \"static\"\nlisten = \"127.0.0.1:0\"\n"
    ));
    daemon.deploy_ok("v1", &demo_api());
    let site = daemon.dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("index.html"), "<h1>v1</h1>\n").unwrap();
    let out = daemon.cli(&[
        "deploy",
        "frontend",
        "--release",
        "v1",
        "--artifact",
        site.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    for name in ["backend", "frontend"] {
        let addr = daemon.listen_of(name);
        let path = if name == "backend" { "/headers" } else { "/" };
        let two = raw(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(two.0, 400, "{name}, two Host headers: {}", two.1);
        let none = raw(
            addr,
            &format!("GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(none.0, 400, "{name}, HTTP/1.1 without Host: {}", none.1);
        // HTTP/1.0 did not require Host.
        let old = raw(addr, &format!("GET {path} HTTP/1.0\r\n\r\n"));
        assert_eq!(old.0, 200, "{name}, HTTP/1.0: {}", old.1);
        let one = raw(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(one.0, 200, "{name}: {}", one.1);
    }

    // `Connection: host` names Host as hop-by-hop; the backend still gets it.
    let seen = headers_seen(daemon.listen_of("backend"), "Connection: host\r\n");
    assert_eq!(values(&seen, "host"), ["api.example"], "{seen:?}");
}

//! The shared `[edge]` listeners: several components on one port by host and path prefix, an
//! unknown host, HTTPS with a certificate of the component's own (SNI), HTTP/2 by ALPN with a
//! real client (curl), the redirect from http and HSTS; a deploy behind a host route.

mod common;

use common::tls::certificate;
use common::*;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `GET path` with `Host: host` on plain HTTP: (status, headers, body).
fn get_host(addr: SocketAddr, host: &str, path: &str) -> (u16, String, String) {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// curl over HTTPS to `host` (resolved to loopback): (exit ok, HTTP version, headers, body).
fn curl_https(
    dir: &Path,
    port: u16,
    host: &str,
    path: &str,
    http2: bool,
) -> (bool, String, String) {
    curl_https_trusting(&dir.join("ca.pem"), port, host, path, http2)
}

fn curl_https_trusting(
    ca: &Path,
    port: u16,
    host: &str,
    path: &str,
    http2: bool,
) -> (bool, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-D", "-", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .arg(if http2 { "--http2" } else { "--http1.1" })
        .args(["-w", "\nversion=%{http_version}"])
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .expect("curl runs");
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn config(http: u16, https: u16) -> String {
    format!(
        "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \".cutover/control.sock\"\n\
         [edge]\nhttp = \"127.0.0.1:{http}\"\nhttps = \"127.0.0.1:{https}\"\nhsts = \"max-age=600\"\n\
         [components.backend]\nhosts = [\"api.example.test\", \"*.tenants.example.test\"]\n{FAST_COMPONENT}\n\
         [components.web]\nhosts = [\"example.test\"]\n{FAST_COMPONENT}\n\
         [components.admin]\nhosts = [\"example.test\"]\npath_prefix = \"/admin\"\nstrip_prefix = true\n\
         tls = {{ cert = \"cert.pem\", key = \"key.pem\" }}\n{FAST_COMPONENT}\n"
    )
}

#[test]
fn components_share_the_edge_listeners_by_host_and_path() {
    let (http, https) = (free_port(), free_port());
    let daemon = Daemon::start_with_config_and(&config(http, https), |dir| {
        certificate(dir, &["example.test"]);
    });
    let api = demo_api();
    for (component, release) in [("backend", "b1"), ("web", "w1"), ("admin", "a1")] {
        let out = daemon.cli(&[
            "deploy",
            component,
            "--release",
            release,
            "--artifact",
            api.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{component}: {}\n{}",
            text(&out.stderr),
            daemon.log()
        );
    }
    let plain: SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();

    // By host, wildcard included; the host is matched without case or port.
    assert_eq!(get_host(plain, "api.example.test", "/version").2, "b1");
    assert_eq!(
        get_host(plain, "acme.tenants.example.test", "/version").2,
        "b1"
    );
    assert_eq!(get_host(plain, "API.Example.Test:80", "/version").2, "b1");
    // An unknown host: a plain 404 naming it.
    let (status, _, body) = get_host(plain, "unknown.example.test", "/version");
    assert_eq!(status, 404);
    assert!(
        body.contains("no component serves unknown.example.test"),
        "{body}"
    );

    // example.test has a certificate: http redirects there (308), path and query kept.
    let (status, head, _) = get_host(plain, "example.test", "/admin/version?x=1");
    assert_eq!(status, 308, "{head}");
    assert!(
        head.contains(&format!(
            "location: https://example.test:{https}/admin/version?x=1"
        )),
        "{head}"
    );

    // Over TLS: the longest prefix wins and is stripped; HSTS on every answer.
    let dir = daemon.dir.path();
    let (ok, out, err) = curl_https(dir, https, "example.test", "/admin/version", false);
    assert!(ok, "{err}\n{}", daemon.log());
    assert!(out.ends_with("a1\nversion=1.1"), "{out}");
    assert!(
        out.to_lowercase()
            .contains("strict-transport-security: max-age=600"),
        "{out}"
    );
    let (ok, out, err) = curl_https(dir, https, "example.test", "/version", true);
    assert!(ok, "{err}");
    assert!(out.ends_with("w1\nversion=2"), "HTTP/2 by ALPN: {out}");
    // The backend saw the scheme the client used.
    let (ok, out, _) = curl_https(dir, https, "example.test", "/admin/headers", true);
    assert!(ok);
    assert!(
        out.to_lowercase().contains("x-forwarded-proto: https"),
        "{out}"
    );
    // An HTTP/2 client names its host in `:authority`: the HTTP/1.1 backend gets it as Host.
    assert!(out.to_lowercase().contains("\nhost: example.test"), "{out}");
    // A name the certificate does not cover gets no certificate: the handshake fails.
    let (ok, _, err) = curl_https(dir, https, "api.example.test", "/version", false);
    assert!(!ok, "no certificate for api.example.test: {err}");

    // The certificate files change on disk (renewed by another tool): new handshakes get the
    // new certificate, without a reload.
    std::fs::copy(dir.join("ca.pem"), dir.join("old-ca.pem")).unwrap();
    certificate(dir, &["example.test"]);
    eventually(
        Duration::from_secs(10),
        "the new certificate is served",
        || curl_https(dir, https, "example.test", "/version", true).0,
    );
    let (ok, _, _) = curl_https_trusting(
        &dir.join("old-ca.pem"),
        https,
        "example.test",
        "/version",
        true,
    );
    assert!(!ok, "the old certificate is no longer served");

    // A deploy behind a host route switches it like any other.
    daemon.deploy_ok("b2", &api);
    assert_eq!(get_host(plain, "api.example.test", "/version").2, "b2");
    let (_, out, _) = curl_https(dir, https, "example.test", "/version", true);
    assert!(out.ends_with("w1\nversion=2"), "{out}");
}

#[test]
fn hosts_are_validated_where_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cutover.toml");
    let cases = [
        (
            "[components.a]\nhosts = [\"api.example.test\"]\ncommand = [\"x\"]\n",
            "components.a.hosts: hosts are served on the shared listeners: set [edge] http and/or https",
        ),
        (
            "[edge]\nhttp = \"127.0.0.1:8080\"\n[components.a]\nhosts = [\"https://api\"]\ncommand = [\"x\"]\n",
            "components.a.hosts: invalid host \"https://api\"",
        ),
        (
            "[edge]\nhttp = \"127.0.0.1:8080\"\n[components.a]\nhosts = [\"x.test\"]\ncommand = [\"x\"]\n\
             [components.b]\nhosts = [\"X.test\"]\ncommand = [\"x\"]\n",
            "components.b.hosts: x.test is already routed to a",
        ),
        (
            "[edge]\nhttp = \"127.0.0.1:8080\"\n[components.a]\nlisten = \"127.0.0.1:8080\"\ncommand = [\"x\"]\n",
            "components.a.listen: 127.0.0.1:8080 is already the listen address of [edge] http",
        ),
        (
            "[edge]\nhttp = \"127.0.0.1:8080\"\n[components.a]\nhosts = [\"x.test\"]\ntls = { cert = \"c\", key = \"k\" }\ncommand = [\"x\"]\n",
            "components.a.tls: a certificate needs the https listener: set [edge] https",
        ),
    ];
    for (body, expected) in cases {
        std::fs::write(&path, body).unwrap();
        let out = Command::new(CUTOVER)
            .args(["validate", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{body}");
        assert!(
            text(&out.stderr).contains(expected),
            "expected {expected:?}, got {}",
            text(&out.stderr)
        );
    }
}

/// Sends `head` (a PROXY header, or nothing) then a GET for `path` on `host`: the raw answer.
fn get_behind_proxy(addr: SocketAddr, head: &[u8], host: &str, path: &str) -> String {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(head).unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    answer
}

#[test]
fn behind_a_load_balancer_the_proxy_protocol_names_the_client_and_the_access_log_records_it() {
    let http = free_port();
    let config = format!(
        "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \".cutover/control.sock\"\n\
         [edge]\nhttp = \"127.0.0.1:{http}\"\nproxy_protocol = true\naccess_log = true\n\
         [components.backend]\nhosts = [\"api.example.test\"]\n{FAST_COMPONENT}\n"
    );
    let daemon = Daemon::start_with_config(&config);
    daemon.deploy_ok("b1", &demo_api());
    let addr: SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();

    // v1: the client is the header's source, not the balancer's address.
    let v1 = get_behind_proxy(
        addr,
        b"PROXY TCP4 203.0.113.7 127.0.0.1 55555 80\r\n",
        "api.example.test",
        "/headers",
    );
    assert!(v1.starts_with("HTTP/1.1 200"), "{v1}");
    let lower = v1.to_lowercase();
    assert!(lower.contains("x-forwarded-for: 203.0.113.7"), "{v1}");
    let request_id = lower
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("a request id on the answer")
        .trim()
        .to_owned();
    assert!(
        lower.contains(&format!("x-request-id: {request_id}")),
        "passed upstream too: {v1}"
    );

    // v2 (binary): TCP over IPv4 from 198.51.100.9:4242.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend([
        0x21, 0x11, 0, 12, 198, 51, 100, 9, 127, 0, 0, 1, 0x10, 0x92, 0, 80,
    ]);
    let answer = get_behind_proxy(addr, &v2, "api.example.test", "/headers");
    assert!(
        answer
            .to_lowercase()
            .contains("x-forwarded-for: 198.51.100.9"),
        "{answer}"
    );

    // Without the header the connection is refused: nothing else is accepted there.
    let bare = get_behind_proxy(addr, b"", "api.example.test", "/version");
    assert!(bare.is_empty(), "answered without a PROXY header: {bare}");

    // One JSON object per request, within the writer's flush interval.
    let log = daemon.dir.path().join(".cutover/logs/access.log");
    let mut lines = Vec::new();
    eventually(Duration::from_secs(5), "two access log lines", || {
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("each line is JSON"))
            .collect();
        lines.len() >= 2
    });
    let first = &lines[0];
    assert_eq!(first["host"], "api.example.test");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/headers");
    assert_eq!(first["status"], 200);
    assert_eq!(first["component"], "backend");
    assert_eq!(first["release"], "b1");
    assert_eq!(first["client"], "203.0.113.7");
    assert_eq!(first["request_id"], request_id.as_str());
    assert_eq!(first["protocol"], "HTTP/1.1");
    assert!(first["bytes_out"].as_u64().unwrap() > 0, "{first}");
    assert_eq!(lines[1]["client"], "198.51.100.9");
}

/// curl with HTTP/2 by prior knowledge on plain HTTP: (exit ok, headers + body + version).
fn curl_h2c(port: u16, host: &str, path: &str) -> (bool, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-D",
            "-",
            "--max-time",
            "10",
            "--http2-prior-knowledge",
        ])
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(["-w", "\nversion=%{http_version}"])
        .arg(format!("http://{host}:{port}{path}"))
        .output()
        .expect("curl runs");
    (out.status.success(), text(&out.stdout))
}

#[test]
fn plain_listeners_take_http2_by_prior_knowledge_when_asked() {
    let http = free_port();
    let config = |own_h2c: bool| {
        format!(
            "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \".cutover/control.sock\"\n\
             [edge]\nhttp = \"127.0.0.1:{http}\"\nh2c = true\n\
             [components.backend]\nlisten = \"127.0.0.1:0\"\nhosts = [\"api.example.test\"]\n\
             h2c = {own_h2c}\n{FAST_COMPONENT}\n"
        )
    };
    let daemon = Daemon::start_with_config(&config(false));
    daemon.deploy_ok("b1", &demo_api());
    let (ok, out) = curl_h2c(http, "api.example.test", "/version");
    assert!(ok && out.ends_with("b1\nversion=2"), "{out}");
    // HTTP/1.1 still works on the same listener.
    assert_eq!(
        get_host(
            ([127, 0, 0, 1], http).into(),
            "api.example.test",
            "/version"
        )
        .2,
        "b1"
    );

    // The component's own listener was not asked to: HTTP/2's preface is no HTTP/1.1 request.
    let own = daemon.listen_of("backend").port();
    let (ok, out) = curl_h2c(own, "127.0.0.1", "/version");
    assert!(!(ok && out.ends_with("version=2")), "{out}");
    // A reload asks it to, for the next connections.
    std::fs::write(&daemon.config, config(true)).unwrap();
    let reload = daemon.cli(&["reload"]);
    assert!(reload.status.success(), "{}", text(&reload.stderr));
    assert!(
        text(&reload.stdout).contains("backend: h2c: applies now"),
        "{}",
        text(&reload.stdout)
    );
    let (ok, out) = curl_h2c(own, "127.0.0.1", "/version");
    assert!(ok && out.ends_with("b1\nversion=2"), "{out}");
    // The client's `:authority` reaches the HTTP/1.1 backend as its Host.
    let (ok, out) = curl_h2c(own, "api.example.test", "/headers");
    let host = format!("\nhost: api.example.test:{own}\n");
    assert!(ok && out.to_lowercase().contains(&host), "{out}");
}

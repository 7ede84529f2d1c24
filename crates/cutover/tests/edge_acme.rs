//! `[edge] acme`: the daemon gets certificates for its hosts from a real ACME server (Pebble,
//! Debian `pebble`, on loopback, its DNS answering every name with 127.0.0.1), answering the
//! CA's check on its own listeners: HTTP-01 on the http one, TLS-ALPN-01 on the https one; then
//! serves them by SNI and redirects http to https.

mod common;
#[path = "support/pebble.rs"]
mod pebble;
mod support;

use common::*;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

fn config(http: u16, https: u16, pebble: &pebble::Pebble, challenge: &str, host: &str) -> String {
    let acme = pebble.config();
    format!(
        "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \".cutover/control.sock\"\n\
         [edge]\nhttp = \"127.0.0.1:{http}\"\nhttps = \"127.0.0.1:{https}\"\n\
         acme = {{ directory = \"{}\", email = \"ops@cutover.test\", ca_file = \"{}\", challenge = \"{challenge}\" }}\n\
         [components.backend]\nhosts = [\"{host}\"]\n{FAST_COMPONENT}\n",
        acme.directory,
        acme.ca_file.unwrap().display()
    )
}

/// `curl https://host:port/version` trusting only `root`: the body, once it works.
fn https_version(root: &std::path::Path, host: &str, port: u16) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(root)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .arg(format!("https://{host}:{port}/version"))
        .output()
        .ok()?;
    out.status.success().then(|| text(&out.stdout))
}

async fn issued_and_served(challenge: &str, host: &str) {
    let (http, https) = (free_port(), free_port());
    // Pebble checks HTTP-01 on the http listener's port and TLS-ALPN-01 on the https one's.
    let Some(pebble) = pebble::Pebble::start(http, https) else {
        return;
    };
    let daemon = Daemon::start_with_config(&config(http, https, &pebble, challenge, host));
    daemon.deploy_ok("v1", &demo_api());
    let root = daemon.dir.path().join("pebble-root.pem");
    std::fs::write(&root, pebble.root_pem().await).unwrap();

    let mut served = None;
    for _ in 0..200 {
        served = https_version(&root, host, https);
        if served.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        served.as_deref(),
        Some("v1"),
        "no certificate from Pebble by {challenge}:\n{}\n{}",
        daemon.log(),
        pebble.log("pebble")
    );
    let cert = daemon
        .dir
        .path()
        .join(format!(".cutover/certs/{host}/cert.pem"));
    let mode = std::fs::metadata(&cert).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", cert.display());
    // Plain http now redirects the host to https.
    let plain: SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    let mut conn = std::net::TcpStream::connect(plain).unwrap();
    use std::io::{Read, Write};
    write!(
        conn,
        "GET /version HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_issued_through_http01_and_served() {
    issued_and_served("http-01", "api.acme.test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_issued_through_tls_alpn01_and_served() {
    issued_and_served("tls-alpn-01", "tls.acme.test").await;
}

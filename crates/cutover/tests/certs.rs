//! `cutover certs`, the certificates part of `status`, `check`'s warnings and the certificate
//! gauges on `/metrics`, with certificates issued for real by Pebble (Debian `pebble`): one
//! host gets its certificate, one whose challenge cannot reach cutover keeps failing (and the
//! first is issued all the same), and one component brings its own `tls` files.

mod common;
#[path = "support/pebble.rs"]
mod pebble;
mod support;

use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const GOOD: &str = "good.certs.test";
const BAD: &str = "bad.certs.test";
const OWN: &str = "own.certs.test";

fn config(http: u16, https: u16, admin: u16, pebble: &pebble::Pebble) -> String {
    let acme = pebble.config();
    format!(
        "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \".cutover/control.sock\"\n\
         admin_listen = \"127.0.0.1:{admin}\"\n\
         [edge]\nhttp = \"127.0.0.1:{http}\"\nhttps = \"127.0.0.1:{https}\"\n\
         acme = {{ directory = \"{}\", email = \"ops@cutover.test\", ca_file = \"{}\", challenge = \"http-01\" }}\n\
         [components.good]\nhosts = [\"{GOOD}\"]\n{FAST_COMPONENT}\n\
         [components.bad]\nhosts = [\"{BAD}\"]\n{FAST_COMPONENT}\n\
         [components.own]\nhosts = [\"{OWN}\"]\ntls = {{ cert = \"own-cert.pem\", key = \"own-key.pem\" }}\n\
         {FAST_COMPONENT}\n",
        acme.directory,
        acme.ca_file.unwrap().display()
    )
}

/// A self-signed certificate for `host` in `dir` (own-cert.pem, own-key.pem).
fn own_certificate(dir: &Path, host: &str) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![host.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("own-cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("own-key.pem"), key.serialize_pem()).unwrap();
}

fn certs_json(daemon: &Daemon) -> Value {
    let out = daemon.cli(&["certs", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn named<'a>(certs: &'a Value, name: &str) -> &'a Value {
    certs["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no certificate {name} in {certs:#}"))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_listed_with_expiry_errors_and_gauges_online_and_offline() {
    let (http, https, admin) = (free_port(), free_port(), free_port());
    let Some(pebble) = pebble::Pebble::start(http, https) else {
        return;
    };
    // Pebble's check of this host goes where nothing answers: every order of it fails.
    pebble.point_at(BAD, "127.0.0.2");
    let mut daemon = Daemon::start_with_config_and(&config(http, https, admin, &pebble), |dir| {
        own_certificate(dir, OWN)
    });

    let deadline = Instant::now() + Duration::from_secs(90);
    let certs = loop {
        let certs = certs_json(&daemon);
        let done = !named(&certs, GOOD)["not_after"].is_null()
            && !named(&certs, BAD)["last_error"].is_null();
        if done {
            break certs;
        }
        assert!(
            Instant::now() < deadline,
            "no certificate and no failure yet: {certs:#}\n{}\n{}",
            daemon.log(),
            pebble.log("pebble")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(certs["online"], true);
    let now = now_ms();

    let good = named(&certs, GOOD);
    assert_eq!(good["source"], "acme", "{good:#}");
    assert_eq!(good["challenge"], "http-01");
    assert_eq!(good["hosts"], serde_json::json!([GOOD]));
    assert!(good["not_after"].as_i64().unwrap() > now, "{good:#}");
    assert!(good["renew_at"].as_i64().unwrap() > now, "{good:#}");
    assert!(good["last_error"].is_null(), "{good:#}");
    assert_eq!(good["failures"], 0);
    assert!(good["path"]
        .as_str()
        .unwrap()
        .ends_with(&format!(".cutover/certs/{GOOD}/cert.pem")));

    let bad = named(&certs, BAD);
    let error = bad["last_error"].as_str().unwrap();
    assert!(
        error.contains(BAD) && error.contains("http-01"),
        "the error names the host and the challenge: {error}"
    );
    assert!(bad["failures"].as_u64().unwrap() >= 1, "{bad:#}");
    assert!(bad["not_after"].is_null(), "{bad:#}");
    assert!(
        bad["next_attempt"].as_i64().unwrap() > now - 1000,
        "{bad:#}"
    );

    let own = named(&certs, "own");
    assert_eq!(own["source"], "file", "{own:#}");
    assert_eq!(own["hosts"], serde_json::json!([OWN]));
    assert!(
        own["path"].as_str().unwrap().ends_with("own-cert.pem"),
        "{own:#}"
    );
    assert!(own["not_after"].as_i64().unwrap() > now, "{own:#}");
    assert!(own["last_error"].is_null(), "{own:#}");

    let out = daemon.cli(&["certs"]);
    let table = text(&out.stdout);
    eprintln!("cutover certs:\n{table}");
    assert!(table.starts_with("NAME"), "{table}");
    for expected in [GOOD, "acme (http-01)", "days left", "file ", "own-cert.pem"] {
        assert!(table.contains(expected), "{expected:?} in\n{table}");
    }
    assert!(
        table.contains(&format!("\n{BAD}: ")),
        "the failure below the table:\n{table}"
    );
    assert!(table.contains("next attempt"), "{table}");

    // `status`: a short certificates part, in text and JSON.
    let status = daemon.status_json();
    let listed: Vec<&str> = status["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [BAD, GOOD, "own"], "{status:#}");
    let out = daemon.cli(&["status"]);
    let text_status = text(&out.stdout);
    assert!(text_status.contains("CERTIFICATE"), "{text_status}");
    assert!(
        text_status.contains("the http-01 challenge failed"),
        "{text_status}"
    );

    // `check`: the failing certificate is a warning, which does not fail the check.
    let out = daemon.cli(&["check", "--json"]);
    let check: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{check:#}");
    let warned: Vec<&str> = check["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(warned, [BAD], "{check:#}");
    let out = daemon.cli(&["check"]);
    let rendered = text(&out.stdout);
    assert!(
        rendered
            .lines()
            .any(|l| l.starts_with("warn") && l.contains("certificate") && l.contains(BAD)),
        "{rendered}"
    );

    // `/metrics`: the expiry of each certificate served, the failures of each.
    let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let (code, _, metrics) = get(admin, "/metrics");
    assert_eq!(code, 200);
    let expiry = format!(
        "cutover_certificate_expiry_seconds{{name=\"{GOOD}\"}} {}",
        good["not_after"].as_i64().unwrap() / 1000
    );
    assert!(metrics.contains(&expiry), "{expiry} in\n{metrics}");
    assert!(
        metrics.contains("cutover_certificate_expiry_seconds{name=\"own\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains(&format!(
            "cutover_certificate_expiry_seconds{{name=\"{BAD}\"}}"
        )),
        "no expiry for a certificate never issued:\n{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "cutover_certificate_renewal_failures{{name=\"{GOOD}\"}} 0"
        )),
        "{metrics}"
    );
    let bad_failures = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                "cutover_certificate_renewal_failures{{name=\"{BAD}\"}} "
            ))
        })
        .unwrap_or_else(|| panic!("no failures of {BAD} in\n{metrics}"));
    assert!(bad_failures.parse::<u64>().unwrap() >= 1, "{metrics}");

    // With the daemon stopped: what is on disk, said to be offline.
    assert_eq!(daemon.terminate(), Some(0));
    let offline = certs_json(&daemon);
    assert_eq!(offline["online"], false, "{offline:#}");
    assert_eq!(named(&offline, GOOD)["not_after"], good["not_after"]);
    assert!(named(&offline, BAD)["not_after"].is_null());
    assert_eq!(named(&offline, "own")["source"], "file");
    let out = daemon.cli(&["certs"]);
    let table = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(table.starts_with("daemon: NOT RUNNING"), "{table}");
    assert!(
        table.contains(GOOD) && table.contains("days left"),
        "{table}"
    );
    eprintln!("cutover certs (offline):\n{table}");
}

//! A component's own access log (`access_log = true`): one JSON line per request it answers,
//! on its own listener and on the shared edge listener alike, with the bytes really read and
//! sent (a chunked upload has no Content-Length to trust) and the request id the component saw;
//! a reload turns it off.

mod common;

use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

fn config(http: u16, access_log: bool) -> String {
    format!(
        "[daemon]\ndata_dir = \".cutover\"\ncontrol_socket = \".cutover/control.sock\"\n\
         [edge]\nhttp = \"127.0.0.1:{http}\"\n\
         [components.backend]\nlisten = \"127.0.0.1:0\"\nhosts = [\"api.example.test\"]\n\
         access_log = {access_log}\n{FAST_COMPONENT}\n"
    )
}

/// Sends `request` whole and reads the answer to its end (the request says Connection: close).
fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(request).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    answer
}

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

#[test]
fn a_components_access_log_records_its_requests_on_every_listener() {
    let http = free_port();
    let daemon = Daemon::start_with_config(&config(http, true));
    daemon.deploy_ok("b1", &demo_api());
    let own = daemon.listen_of("backend");

    // 3 chunks, 4 + 6 + 5 = 15 bytes, no Content-Length.
    let upload = b"POST /echo HTTP/1.1\r\nHost: own.test\r\nTransfer-Encoding: chunked\r\n\
                   Connection: close\r\n\r\n4\r\nabcd\r\n6\r\nefghij\r\n5\r\nklmno\r\n0\r\n\r\n";
    let answer = exchange(own, upload);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let request_id = answer
        .to_lowercase()
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: ").map(str::to_owned))
        .expect("the answer carries the request id");
    let on_edge = exchange(
        ([127, 0, 0, 1], http).into(),
        b"GET /version HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n",
    );
    assert!(on_edge.ends_with("b1"), "{on_edge}");

    let log = daemon.dir.path().join(".cutover/logs/backend.access.log");
    eventually(
        Duration::from_secs(5),
        "two lines in the component's log",
        || lines(&log).len() >= 2,
    );
    let logged = lines(&log);
    let upload = &logged[0];
    assert_eq!(upload["host"], "own.test");
    assert_eq!(upload["method"], "POST");
    assert_eq!(upload["path"], "/echo");
    assert_eq!(upload["status"], 200);
    assert_eq!(upload["component"], "backend");
    assert_eq!(upload["release"], "b1");
    assert_eq!(upload["client"], "127.0.0.1");
    assert_eq!(
        upload["bytes_in"], 15,
        "the bytes read, not a header's claim"
    );
    assert!(upload["bytes_out"].as_u64().unwrap() >= 15, "{upload}");
    assert_eq!(upload["request_id"], request_id.as_str());
    assert_eq!(upload["protocol"], "HTTP/1.1");
    let edge = &logged[1];
    assert_eq!(edge["host"], "api.example.test");
    assert_eq!(edge["path"], "/version");
    assert_eq!(edge["bytes_in"], 0);
    assert_eq!(edge["bytes_out"], 2);
    // The edge's own log was not asked for.
    assert!(!daemon.dir.path().join(".cutover/logs/access.log").exists());

    // Off by a reload: nothing more is written.
    std::fs::write(&daemon.config, config(http, false)).unwrap();
    let reload = daemon.cli(&["reload"]);
    assert!(reload.status.success(), "{}", text(&reload.stderr));
    let answer = exchange(
        own,
        b"GET /version HTTP/1.1\r\nHost: own.test\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.ends_with("b1"), "{answer}");
    assert!(
        !answer.to_lowercase().contains("x-request-id"),
        "no log, no id on its own listener: {answer}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines(&log).len(), 2, "nothing logged after the reload");
}

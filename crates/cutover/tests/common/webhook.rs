//! A webhook receiver on loopback for the end-to-end tests: what the daemon POSTs, as JSON.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Listens on a loopback port; every request body it gets is sent to the channel as JSON, and
/// answered 200.
pub fn receiver() -> (u16, Receiver<serde_json::Value>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or_default());
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, rx)
}

/// Waits (up to 20 s) for a webhook whose `event` is `kind`; returns it.
pub fn wait_for(events: &Receiver<serde_json::Value>, kind: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match events.recv_timeout(left) {
            Ok(event) if event["event"] == kind => return event,
            Ok(event) => seen.push(event["event"].clone()),
            Err(_) => break,
        }
    }
    panic!("no {kind} webhook; got {seen:?}");
}

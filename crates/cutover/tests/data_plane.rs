//! What the proxy carries: forwarding headers, large and streaming bodies, WebSocket tunnels;
//! and what the control socket accepts.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

#[test]
fn forwards_headers_bodies_and_streams() {
    let daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());

    let (status, release, headers) = get(daemon.public, "/headers");
    assert_eq!((status, release.as_str()), (200, "v1"));
    let headers = headers.to_ascii_lowercase();
    assert!(headers.contains("x-forwarded-for: 127.0.0.1"), "{headers}");
    assert!(headers.contains("x-forwarded-proto: http"), "{headers}");
    assert!(headers.contains("via: 1.1 cutover"), "{headers}");
    assert!(
        headers.contains("host: test"),
        "the original Host is kept: {headers}"
    );

    // The backend gets the request target in origin-form, as a client sent it to an origin
    // server: an app that matches `req.url == "/target"` (Node's http, Python's http.server)
    // must not see `http://127.0.0.1:port/target`, nor learn its own internal port.
    let (status, _, target) = get(daemon.public, "/target?a=1&b=%20");
    assert_eq!((status, target.as_str()), (200, "/target?a=1&b=%20"));
    let mut stream = std::net::TcpStream::connect(daemon.public).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "POST /target?with=body HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n/target?with=body"), "{answer}");

    // An HTTP/1.0 client may name no host; the HTTP/1.1 request upstream must.
    let mut stream = std::net::TcpStream::connect(daemon.public).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"GET /headers HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(answer.contains("\nhost: 127.0.0.1:"), "{answer}");

    // A 20 MiB upload, chunked, echoed back byte for byte.
    let payload: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let mut stream = std::net::TcpStream::connect(daemon.public).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // Read while writing: the echo streams back as it reads, so a client that sent all 20 MiB
    // before reading would wait on full socket buffers both ways (it hung a CI run once the
    // buffers happened to be smaller than the payload).
    let mut reading = stream.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let mut raw = Vec::new();
        reading.read_to_end(&mut raw).unwrap();
        raw
    });
    write!(stream, "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").unwrap();
    for chunk in payload.chunks(1 << 20) {
        write!(stream, "{:x}\r\n", chunk.len()).unwrap();
        stream.write_all(chunk).unwrap();
        stream.write_all(b"\r\n").unwrap();
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let raw = reader.join().unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(&raw[split + 4..])
    } else {
        raw[split + 4..].to_vec()
    };
    assert_eq!(body.len(), payload.len());
    assert_eq!(Sha256::digest(&body), Sha256::digest(&payload));

    // A streamed response arrives chunk by chunk, not buffered to the end.
    let mut stream = std::net::TcpStream::connect(daemon.public).unwrap();
    write!(
        stream,
        "GET /stream?chunks=3&ms=400 HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let started = std::time::Instant::now();
    let mut first = [0u8; 256];
    let n = stream.read(&mut first).unwrap();
    assert!(n > 0);
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&first[..n]),
        String::from_utf8_lossy(&rest)
    );
    assert!(all.contains("chunk 0") && all.contains("chunk 2"), "{all}");
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "the whole stream took {:?}",
        started.elapsed()
    );
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnel_survives_a_switch_and_is_drained() {
    let daemon = std::sync::Arc::new(Daemon::start(FAST_COMPONENT));
    let api = demo_api();
    daemon.deploy_ok("v1", &api);
    let (mut ws, response) = tokio_tungstenite::connect_async(format!("ws://{}/ws", daemon.public))
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    ws.send(tokio_tungstenite::tungstenite::Message::text("before"))
        .await
        .unwrap();
    assert_eq!(
        ws.next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .as_str(),
        "before"
    );

    // Deploy v2 while the tunnel to v1 is open: the deploy waits for the drain.
    let deployer = {
        let (daemon, api) = (daemon.clone(), api.clone());
        tokio::task::spawn_blocking(move || daemon.deploy_ok("v2", &api))
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        get(daemon.public, "/version").2,
        "v2",
        "new requests go to v2 at once"
    );
    ws.send(tokio_tungstenite::tungstenite::Message::text("during"))
        .await
        .unwrap();
    assert_eq!(
        ws.next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .as_str(),
        "during",
        "the open tunnel still works"
    );
    assert!(
        !deployer.is_finished(),
        "the deploy waits for the tunnel to drain"
    );
    ws.close(None).await.unwrap();
    deployer.await.unwrap();
}

#[test]
fn control_socket_is_private_and_rejects_malformed_requests() {
    let daemon = Daemon::start(FAST_COMPONENT);
    let socket = daemon.dir.path().join(".cutover/control.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let ask = |request: &str| {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).unwrap();
        out
    };
    let body = "{\"components\": \"backend\"}";
    let answer = ask(&format!(
        "POST /v1/deploy HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("malformed request: invalid type: string"),
        "{answer}"
    );
    let answer = ask("GET /v1/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(
        answer.starts_with("HTTP/1.1 404") && answer.contains("no such endpoint"),
        "{answer}"
    );
    let answer = ask("DELETE /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    let out = daemon.cli(&[
        "deploy",
        "nope",
        "--release",
        "v1",
        "--artifact",
        "/bin/true",
    ]);
    assert_eq!(out.status.code(), Some(2), "bad usage");
    assert!(
        text(&out.stderr).contains("unknown component \"nope\"; configured: backend"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn systemd_socket_activation_is_used_and_close_on_exec() {
    let activate = std::path::Path::new("/usr/bin/systemd-socket-activate");
    if !activate.exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "systemd-socket-activate is required under CI"
        );
        eprintln!("skipping: systemd-socket-activate is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("cutover.toml");
    std::fs::write(
        &config,
        format!("[daemon]\ndata_dir = \"d\"\n[components.backend]\nlisten = \"127.0.0.1:1\"\n{FAST_COMPONENT}"),
    )
    .unwrap();
    let launcher = std::process::Command::new(activate)
        .args([
            "-l",
            &format!("127.0.0.1:{port}"),
            "--fdname=backend",
            CUTOVER,
            "serve",
            "--config",
        ])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Stops the launcher (by then the daemon, which it execs into) even if an assertion fails.
    struct Stop(std::process::Child, std::path::PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let _ = self.0.wait();
            kill_processes_under(&self.1);
        }
    }
    let _launcher = Stop(launcher, dir.path().to_owned());
    let cli = |args: &[&str]| {
        std::process::Command::new(CUTOVER)
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap()
    };
    // The socket exists before the daemon runs: systemd-socket-activate starts it on the first connection.
    let public: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    eventually(Duration::from_secs(5), "the launcher to listen", || {
        std::net::TcpStream::connect(public).is_ok()
    });
    let (status, _, _) = get(public, "/version");
    assert_eq!(status, 503);
    let out = cli(&[
        "deploy",
        "backend",
        "--release",
        "v1",
        "--artifact",
        demo_api().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(get(public, "/version").2, "v1");
    let status: serde_json::Value =
        serde_json::from_slice(&cli(&["status", "--json"]).stdout).unwrap();
    assert_eq!(
        status["components"][0]["listen"],
        format!("127.0.0.1:{port}")
    );
    // The release did not inherit the public socket.
    let pid = status["components"][0]["serving"]["pid"].as_i64().unwrap();
    let inherited = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                let inode = target.to_string_lossy().to_string();
                inode.starts_with("socket:") && fd.file_name() == "3"
            })
        });
    assert!(
        !inherited,
        "fd 3 (the public socket) leaked into the release"
    );

    // An upgrade passes systemd's socket on to the new daemon, which knows it came from
    // systemd: a component added by a later reload is bound by the daemon, and it says so.
    let out = cli(&["upgrade"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(get(public, "/version").2, "v1");
    let body = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{body}\n[components.api2]\nlisten = \"127.0.0.1:0\"\n{FAST_COMPONENT}"),
    )
    .unwrap();
    let out = cli(&["reload"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(
            "api2: its socket is bound by the daemon, not systemd: add cutover-api2.socket"
        ),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(get(public, "/version").2, "v1");
}

//! Operator features end to end: env checks, logs, sd_notify, metrics, webhooks, secrets,
//! change detection and a daemon crash under socket activation.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "s3cr3t-Pa55w0rd-never-shown";

fn write_env(dir: &Path, body: &str, mode: u32) {
    let path = dir.join("app.env");
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn with_env_file(extra: &str) -> String {
    format!("{FAST_COMPONENT}env_file = \"app.env\"\nrequired_env = [\"DATABASE_URL\", \"API_TOKEN\"]\n{extra}")
}

#[test]
fn env_check_refuses_readable_secrets_placeholders_and_missing_keys() {
    let daemon = Daemon::start_with_config_and(
        &format!(
            "[daemon]\ndata_dir = \".cutover\"\n[components.backend]\nlisten = \"127.0.0.1:0\"\n{}",
            with_env_file("")
        ),
        |dir| {
            write_env(
                dir,
                &format!("DATABASE_URL=postgres://app:{SECRET}@db/app\nAPI_TOKEN=changeme\n"),
                0o644,
            )
        },
    );
    let out = daemon.cli(&["env", "check"]);
    let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains(&format!(
            "chmod 600 {}",
            daemon.dir.path().join("app.env").display()
        )),
        "{shown}"
    );
    assert!(
        shown.contains("API_TOKEN") && shown.contains("placeholder"),
        "{shown}"
    );
    assert!(!shown.contains(SECRET), "a secret leaked: {shown}");

    // The deploy is refused for the same reasons, before anything starts.
    let out = daemon.deploy("v1", &demo_api());
    let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("its environment is not ready") && shown.contains("chmod 600"),
        "{shown}"
    );
    assert!(!shown.contains(SECRET));

    // Fixed: a private file, a real token, nothing missing.
    write_env(
        daemon.dir.path(),
        &format!("DATABASE_URL=postgres://app:{SECRET}@db/app\nAPI_TOKEN=tok_{SECRET}\n"),
        0o600,
    );
    let out = daemon.cli(&["env", "check", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(!text(&out.stdout).contains(SECRET));
    daemon.deploy_ok("v1", &demo_api());

    // Secrets appear nowhere: not in any output, the daemon's log or the state database.
    let mut everything = String::new();
    for args in [
        &["status", "--json"][..],
        &["history", "--json"],
        &["releases", "backend"],
        &["validate"],
        &["check", "--json"],
    ] {
        let out = daemon.cli(args);
        everything.push_str(&text(&out.stdout));
        everything.push_str(&text(&out.stderr));
    }
    everything.push_str(&daemon.log());
    everything.push_str(&String::from_utf8_lossy(
        &std::fs::read(daemon.dir.path().join(".cutover/state.db")).unwrap(),
    ));
    assert!(!everything.contains(SECRET), "a secret leaked");
}

#[test]
fn logs_show_the_serving_instance_and_follow_a_switch() {
    let daemon = Daemon::start(FAST_COMPONENT);
    daemon.deploy_ok("v1", &demo_api());
    let out = daemon.cli(&["logs", "backend", "-n", "5"]);
    assert!(
        text(&out.stdout).contains("demo-api v1 listening on"),
        "{}",
        text(&out.stdout)
    );

    let mut follower = Command::new(CUTOVER)
        .args(["logs", "backend", "-f", "--config"])
        .arg(&daemon.config)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    daemon.deploy_ok("v2", &demo_api());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while Instant::now() < deadline
        && !seen
            .iter()
            .any(|l: &String| l.contains("demo-api v2 listening"))
    {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(
        seen.iter().any(|l| l.contains("now following backend v2")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|l| l.contains("demo-api v2 listening")),
        "{seen:?}"
    );
}

#[test]
fn instance_logs_are_rotated_when_too_large() {
    let daemon = Daemon::start_with_config(&format!(
        "[daemon]\ndata_dir = \".cutover\"\nlog_max_size = \"64KiB\"\n[components.backend]\nlisten = \"127.0.0.1:0\"\n{FAST_COMPONENT}"
    ));
    // An "app" that writes 256 KiB of logs, then serves as demo-api.
    let chatty = daemon.script(
        "chatty",
        &format!(
            "head -c 262144 /dev/zero | tr '\\0' 'x' | fold -w 100; echo; exec {}",
            demo_api().display()
        ),
    );
    daemon.deploy_ok("v1", &chatty);
    let logs = daemon.dir.path().join(".cutover/releases/backend/v1/logs");
    // Rotated means copied to .log.1 and then truncated: wait for both, not the instant
    // between them (a clean-clone CI run caught the test looking there).
    eventually(Duration::from_secs(25), "the log to be rotated", || {
        let entries: Vec<_> = std::fs::read_dir(&logs).unwrap().flatten().collect();
        entries
            .iter()
            .any(|e| e.file_name().to_string_lossy().ends_with(".log.1"))
            && entries
                .iter()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .all(|e| e.metadata().is_ok_and(|m| m.len() < 64 * 1024))
    });
    for entry in std::fs::read_dir(&logs).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".log") {
            assert!(
                entry.metadata().unwrap().len() < 64 * 1024,
                "{name} was not truncated"
            );
        }
    }
}

#[test]
fn sd_notify_ready_status_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let config = format!("[daemon]\ndata_dir = \".cutover\"\n[components.backend]\nlisten = \"127.0.0.1:0\"\n{FAST_COMPONENT}");
    let mut daemon = Daemon::start_with_env(
        &config,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "300000"),
        ],
    );
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && !(messages.iter().any(|m: &String| m.contains("READY=1"))
            && messages.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2)
    {
        let n = socket.recv(&mut buf).unwrap();
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let ready = messages
        .iter()
        .find(|m| m.contains("READY=1"))
        .expect("READY=1");
    assert!(ready.contains("STATUS=serving backend=-"), "{ready}");
    assert!(
        messages.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2,
        "{messages:?}"
    );

    daemon.deploy_ok("v1", &demo_api());
    let mut status = String::new();
    while !status.contains("backend=v1") {
        let n = socket.recv(&mut buf).unwrap();
        status = String::from_utf8_lossy(&buf[..n]).into_owned();
    }
    // Releases never see the daemon's notify socket.
    let pid = daemon.status_json()["components"][0]["serving"]["pid"]
        .as_i64()
        .unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(!String::from_utf8_lossy(&environ).contains("NOTIFY_SOCKET"));

    unsafe { libc::kill(daemon.pid() as i32, libc::SIGTERM) };
    let mut stopping = false;
    while let Ok(n) = socket.recv(&mut buf) {
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "STOPPING=1 on SIGTERM");
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn metrics_are_valid_prometheus_text() {
    let admin = free_port();
    let daemon = Daemon::start_with_config(&format!(
        "[daemon]\ndata_dir = \".cutover\"\nadmin_listen = \"127.0.0.1:{admin}\"\n[components.backend]\nlisten = \"127.0.0.1:0\"\n{FAST_COMPONENT}"
    ));
    daemon.deploy_ok("v1", &demo_api());
    for _ in 0..20 {
        assert_eq!(get(daemon.public, "/version").0, 200);
    }
    assert_eq!(get(daemon.public, "/nope").0, 404);
    let broken = daemon.script("broken", "exit 3");
    assert_eq!(daemon.deploy("v2", &broken).status.code(), Some(1));

    let (status, _, body) = get(format!("127.0.0.1:{admin}").parse().unwrap(), "/metrics");
    assert_eq!(status, 200);
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("parses as Prometheus text");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    assert!(
        value(
            "cutover_requests_total",
            &[
                ("component", "backend"),
                ("release", "v1"),
                ("class", "2xx")
            ]
        ) >= 20.0,
        "{body}"
    );
    assert!(
        value("cutover_requests_total", &[("class", "4xx")]) >= 1.0,
        "{body}"
    );
    assert_eq!(
        value(
            "cutover_active_release",
            &[("component", "backend"), ("release", "v1")]
        ),
        1.0,
        "{body}"
    );
    assert_eq!(
        value("cutover_deploys_total", &[("outcome", "succeeded")]),
        1.0,
        "{body}"
    );
    assert_eq!(
        value("cutover_deploys_total", &[("outcome", "failed")]),
        1.0,
        "{body}"
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "cutover_request_duration_seconds"),
        "{body}"
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "cutover_deploy_duration_seconds"),
        "{body}"
    );
    assert!(body.contains("cutover_inflight_requests"), "{body}");
}

#[test]
fn webhooks_hear_deploys_and_a_dead_one_does_not_slow_them() {
    let (port, events) = webhook::receiver();
    // A second hook that accepts connections and never answers.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = black_hole.local_addr().unwrap().port();
    let daemon = Daemon::start_with_config(&format!(
        "[daemon]\ndata_dir = \".cutover\"\n\n[[notify]]\nurl = \"http://127.0.0.1:{port}/hook\"\n\n\
         [[notify]]\nurl = \"http://127.0.0.1:{dead}/hook?token=hidden\"\nevents = [\"deploy_failed\"]\n\n\
         [components.backend]\nlisten = \"127.0.0.1:0\"\n{FAST_COMPONENT}"
    ));
    daemon.deploy_ok("v1", &demo_api());
    let broken = daemon.script("broken", "exit 3");
    let started = Instant::now();
    assert_eq!(daemon.deploy("v2", &broken).status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a dead webhook slowed the deploy: {:?}",
        started.elapsed()
    );
    let mut seen = Vec::new();
    while let Ok(event) = events.recv_timeout(Duration::from_secs(5)) {
        seen.push(event);
        if seen.len() == 4 {
            break;
        }
    }
    // Each event is delivered on its own (a slow receiver never holds the next one back), so
    // two events a few ms apart may arrive in either order; their `at` says which came first.
    seen.sort_by_key(|e| e["at"].as_str().unwrap_or("").to_owned());
    let kinds: Vec<&str> = seen
        .iter()
        .map(|e| e["event"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds,
        [
            "deploy_started",
            "deploy_succeeded",
            "deploy_started",
            "deploy_failed"
        ],
        "{seen:?}"
    );
    let failed = &seen[3];
    assert_eq!(failed["component"], "backend");
    assert_eq!(failed["release"], "v2");
    assert!(
        failed["text"].as_str().unwrap().contains("failed"),
        "{failed}"
    );
    assert!(
        !daemon.log().contains("token=hidden"),
        "webhook secrets are masked in logs"
    );
    drop(black_hole);
}

#[test]
fn changed_reports_components_over_a_range() {
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["config", "user.email", "t@example.invalid"]);
    git(&["config", "user.name", "t"]);
    std::fs::write(
        dir.path().join("cutover.toml"),
        "[components.backend]\nlisten = \"127.0.0.1:1\"\ncommand = [\"x\"]\npaths = [\"backend/**\"]\n\
         [components.frontend]\nkind = \"static\"\nlisten = \"127.0.0.1:2\"\npaths = [\"frontend/**\"]\n",
    )
    .unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-qm", "root"]);
    let base = git(&["rev-parse", "HEAD"]);
    std::fs::create_dir_all(dir.path().join("frontend")).unwrap();
    std::fs::write(dir.path().join("frontend/app.js"), "1").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-qm", "frontend"]);
    let head = git(&["rev-parse", "HEAD"]);
    let config = dir.path().join("cutover.toml");
    let out = Command::new(CUTOVER)
        .args([
            "changed", "--base", &base, "--head", &head, "--json", "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let changed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(changed["kind"], "components");
    assert_eq!(changed["components"][0]["name"], "frontend");
    assert_eq!(changed["components"].as_array().unwrap().len(), 1);
    let out = Command::new(CUTOVER)
        .args([
            "changed",
            "--base",
            "0000000000000000000000000000000000000000",
            "--head",
            &head,
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).starts_with("all: backend frontend"),
        "{}",
        text(&out.stdout)
    );
}

/// Launches the daemon on an inherited listening socket, like systemd does: the socket stays
/// open in the test across daemon crashes.
fn launch_with_socket(
    listener: &std::net::TcpListener,
    config: &Path,
    log: &Path,
) -> std::process::Child {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = listener.as_raw_fd();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut command = Command::new("sh");
    command
        .args([
            "-c",
            "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=backend exec \"$0\" serve --config \"$1\"",
        ])
        .arg(CUTOVER)
        .arg(config)
        .env("CUTOVER_LOG", "info")
        .stderr(log);
    // SAFETY: only dup2/fcntl (async-signal-safe) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec set: clear it instead.
            let ok = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) >= 0
            } else {
                libc::dup2(fd, 3) >= 0
            };
            if !ok {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().unwrap()
}

#[test]
fn a_daemon_crash_under_socket_activation_refuses_no_connection() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let public = listener.local_addr().unwrap();
    let config = dir.path().join("cutover.toml");
    std::fs::write(
        &config,
        format!("[daemon]\ndata_dir = \".cutover\"\n[components.backend]\nlisten = \"127.0.0.1:1\"\n{FAST_COMPONENT}"),
    )
    .unwrap();
    let log = dir.path().join("daemon.log");
    let mut daemon = launch_with_socket(&listener, &config, &log);
    let cli = |args: &[&str]| {
        Command::new(CUTOVER)
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap()
    };
    eventually(Duration::from_secs(10), "the daemon", || {
        cli(&["status", "--json"]).status.success()
            && text(&cli(&["status", "--json"]).stdout).contains("\"pid\"")
    });
    let out = cli(&[
        "deploy",
        "backend",
        "--release",
        "v1",
        "--artifact",
        demo_api().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stdout));

    daemon.kill().unwrap();
    daemon.wait().unwrap();
    // While no daemon runs, clients connect and send: the kernel queues them on the socket.
    let clients: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let sent = Instant::now();
                let answer = get(public, "/version");
                (answer, sent.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let restarted = Instant::now();
    let mut daemon = launch_with_socket(&listener, &config, &log);
    for client in clients {
        let ((status, release, body), _) = client.join().unwrap();
        assert_eq!(
            (status, release.as_str(), body.as_str()),
            (200, "v1", "v1"),
            "a queued request was lost"
        );
    }
    assert!(
        restarted.elapsed() < Duration::from_secs(2),
        "serving resumed after {:?}",
        restarted.elapsed()
    );
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
    kill_processes_under(dir.path());
}

/// A TLS server on loopback with a certificate from a throwaway CA; it records request bodies
/// and answers every request with `live v7`.
fn tls_server(dir: &Path) -> (u16, std::sync::mpsc::Receiver<String>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();

    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    // Headers, then as many body bytes as Content-Length says.
                    loop {
                        let Ok(n) = tls.read(&mut buf).await else { return };
                        if n == 0 {
                            break;
                        }
                        request.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&request).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length = text[..end]
                                .lines()
                                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                                .unwrap_or(0);
                            if request.len() >= end + 4 + length {
                                let _ = tx.send(text[end + 4..].to_owned());
                                break;
                            }
                        }
                    }
                    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nlive v7").await;
                    let _ = tls.shutdown().await;
                });
            }
        });
    });
    (port, rx)
}

#[test]
fn https_webhooks_and_verify_urls_use_the_system_trust_store() {
    let certs = tempfile::tempdir().unwrap();
    let (port, requests) = tls_server(certs.path());
    let config = format!(
        "[daemon]\ndata_dir = \".cutover\"\n\n[[notify]]\nurl = \"https://localhost:{port}/hooks/T000/B000/{SECRET}\"\n\n\
         [components.docs]\nkind = \"hook\"\nrun = [\"true\"]\n\
         verify = {{ url = \"https://127.0.0.1:{port}/version\", body_contains = \"{{release}}\", timeout = \"5s\", interval = \"200ms\" }}\n"
    );
    let ca = certs.path().join("ca.pem");
    let daemon = Daemon::start_with_env(&config, &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let out = daemon.cli(&["deploy", "docs", "--release", "v7"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let mut events = Vec::new();
    while let Ok(body) = requests.recv_timeout(Duration::from_secs(5)) {
        if let Ok(event) = serde_json::from_str::<serde_json::Value>(&body) {
            events.push(event["event"].as_str().unwrap_or_default().to_owned());
        }
        if events.len() == 2 {
            break;
        }
    }
    assert_eq!(events, ["deploy_started", "deploy_succeeded"]);
    assert!(
        !daemon.log().contains(SECRET),
        "the webhook's secret path is masked in logs"
    );

    // Without the CA in the trust store, the same URL is refused as untrusted.
    let untrusted = Daemon::start_with_env(&config, &[("SSL_CERT_FILE", "/dev/null")]);
    let out = untrusted.cli(&["deploy", "docs", "--release", "v7"]);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.to_ascii_lowercase().contains("certificate"),
        "{shown}"
    );
}

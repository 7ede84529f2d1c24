//! `cutover demo`: the main job, end to end, on embedded defaults in a temp dir.
//!
//! Starts a real daemon (this same binary, `serve`), deploys demo-api v1, puts load on it, then
//! deploys v2, tries a broken release (refused; v2 keeps serving), rolls back to v1, and prints
//! what the load clients saw.

use super::client::{Client, ClientError};
use super::progress::Progress;
use super::Exit;
use crate::loadgen::{ClientKind, Load};
use crate::protocol::*;
use crate::vocab::Outcome;
use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The embedded default config: one backend, short timings so the demo takes seconds.
const DEMO_CONFIG: &str = r#"# cutover demo config (embedded default)
[daemon]
data_dir = ".cutover"
control_socket = ".cutover/control.sock"

[components.backend]
listen = "127.0.0.1:0"
command = ["{artifact}"]
env = { API_ADDR = "127.0.0.1:{port}", RELEASE = "{release}" }
health = { path = "/health", interval = "100ms", timeout = "2s", healthy_threshold = 2, start_timeout = "5s" }
drain_timeout = "10s"
stop_timeout = "5s"
keep_releases = 5
stabilize = "2s"
"#;

/// A release that cannot work: it dies at start-up, as a build with a missing config would.
const BROKEN_RELEASE: &str = "#!/bin/sh\necho 'fatal: DATABASE_URL is not set' >&2\nexit 3\n";

pub async fn run(keep: bool) -> anyhow::Result<Exit> {
    let demo_api = find_demo_api()?;
    let dir = tempfile::Builder::new().prefix("cutover-demo-").tempdir()?;
    let root = dir.path().to_owned();
    let config_path = root.join("cutover.toml");
    std::fs::write(&config_path, DEMO_CONFIG)?;
    let broken = root.join("broken-api");
    std::fs::write(&broken, BROKEN_RELEASE)?;
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755))?;
    println!("demo dir: {}", root.display());

    let daemon_log = std::fs::File::create(root.join("daemon.log"))?;
    let mut daemon = tokio::process::Command::new(std::env::current_exe()?)
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .env("CUTOVER_LOG", "info")
        .stderr(daemon_log)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start `cutover serve`")?;
    let client = Client::new(&root.join(".cutover/control.sock"));
    let public = wait_ready(&client).await?;
    println!(
        "daemon: pid {} serving backend on http://{public}\n",
        daemon.id().unwrap_or(0)
    );

    let mut steps = Vec::new();
    let deploy = |release: &str, artifact: &Path| DeployRequest {
        components: vec!["backend".into()],
        release: release.into(),
        artifacts: BTreeMap::from([("backend".to_owned(), artifact.to_owned())]),
        who: "demo".into(),
        hold_ms: None,
    };

    println!("== deploy v1 (first release)");
    steps.push((
        "deploy v1",
        pipeline(&client, "/v1/deploy", &deploy("v1", &demo_api)).await?,
        Outcome::Succeeded,
    ));

    let load = Load::start(
        public,
        "/version",
        &[
            ClientKind::KeepAlive,
            ClientKind::KeepAlive,
            ClientKind::KeepAlive,
            ClientKind::KeepAlive,
            ClientKind::NewConnection,
            ClientKind::NewConnection,
            ClientKind::Slow { ms: 300 },
            ClientKind::Slow { ms: 300 },
        ],
    );
    println!(
        "\nload: 8 clients (4 keep-alive, 2 new-connection, 2 slow) on http://{public}/version\n"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!("== deploy v2 under load");
    steps.push((
        "deploy v2",
        pipeline(&client, "/v1/deploy", &deploy("v2", &demo_api)).await?,
        Outcome::Succeeded,
    ));
    println!("\n== deploy v3-broken (dies at start-up: must be refused, v2 keeps serving)");
    steps.push((
        "deploy v3-broken",
        pipeline(&client, "/v1/deploy", &deploy("v3-broken", &broken)).await?,
        Outcome::Failed,
    ));
    println!("\n== rollback to the previous release");
    let rollback = RollbackRequest {
        component: "backend".into(),
        to: None,
        who: "demo".into(),
    };
    steps.push((
        "rollback",
        pipeline(&client, "/v1/rollback", &rollback).await?,
        Outcome::Succeeded,
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = load.stop().await;

    let status: StatusResponse = client.get("/v1/status").await?;
    let active = status.components[0].active.clone().unwrap_or_default();

    // Graceful stop of the daemon, as systemd would.
    if let Some(pid) = daemon.id() {
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let _ = tokio::time::timeout(Duration::from_secs(20), daemon.wait()).await;

    println!("\n== summary");
    let mut ok = true;
    for (name, got, want) in &steps {
        let verdict = if got == want {
            "as expected"
        } else {
            ok = false;
            "UNEXPECTED"
        };
        println!("  {name:<18} {:<12} ({verdict})", got.as_str());
    }
    let served: Vec<String> = report
        .by_release
        .iter()
        .map(|(r, n)| format!("{r}: {n}"))
        .collect();
    println!("  active release now: {active}");
    println!("  served by release:  {}", served.join(", "));
    println!("  {} requests, {} failed", report.total(), report.failed);
    for failure in &report.failures {
        println!("    failure: {failure}");
    }
    if keep {
        let kept = dir.keep();
        println!("  kept {}", kept.display());
    }
    ok &= report.failed == 0 && active == "v1" && report.ok > 0;
    Ok(if ok { Exit::Ok } else { Exit::Failed })
}

/// demo-api is built into the same target directory as this binary.
fn find_demo_api() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("binary has no directory")?;
    for candidate in [dir.join("demo-api"), dir.join("../demo-api")] {
        if candidate.is_file() {
            return Ok(candidate.canonicalize()?);
        }
    }
    bail!(
        "demo-api not found next to {}; build both with `cargo build --release`",
        exe.display()
    )
}

async fn wait_ready(client: &Client) -> anyhow::Result<SocketAddr> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match client.get::<StatusResponse>("/v1/status").await {
            Ok(status) => return Ok(status.components[0].listen.parse()?),
            Err(e) if Instant::now() > deadline => bail!("the daemon did not come up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn pipeline<B: serde::Serialize>(
    client: &Client,
    path: &str,
    request: &B,
) -> anyhow::Result<Outcome> {
    let mut progress = Progress::new(false);
    let mut outcome = None;
    let result = client
        .stream(path, request, |event| {
            if let EventKind::PipelineFinished { outcome: o, .. } = &event.kind {
                outcome = Some(*o);
            }
            progress.event(&event);
        })
        .await;
    match result {
        Ok(()) => Ok(outcome.unwrap_or(Outcome::Interrupted)),
        Err(ClientError::Refused { message, .. }) => {
            println!("refused: {message}");
            Ok(Outcome::Failed)
        }
        Err(e) => Err(e.into()),
    }
}

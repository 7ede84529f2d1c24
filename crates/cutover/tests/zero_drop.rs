//! The promise: 20 deploys under mixed load, zero failed requests.

mod common;

use common::*;
use cutover::loadgen::{ClientKind, Load};
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[derive(Default)]
struct WsCounts {
    sessions: AtomicU64,
    echoes: AtomicU64,
    failures: AtomicU64,
}

/// WebSocket sessions of ~1.5 s each, back to back: every switch happens while one is open.
async fn websocket_client(
    addr: std::net::SocketAddr,
    counts: Arc<WsCounts>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let result: Result<(), String> = async {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
                .await
                .map_err(|e| format!("connect: {e}"))?;
            for i in 0..30 {
                let text = format!("message {i}");
                ws.send(Message::text(text.clone()))
                    .await
                    .map_err(|e| format!("send: {e}"))?;
                let reply = tokio::time::timeout(Duration::from_secs(10), ws.next())
                    .await
                    .map_err(|_| "echo timed out".to_string())?
                    .ok_or("closed by the server")?
                    .map_err(|e| format!("receive: {e}"))?;
                if reply.into_text().map_err(|e| e.to_string())?.as_str() != text {
                    return Err("wrong echo".into());
                }
                counts.echoes.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ws.close(None).await.map_err(|e| format!("close: {e}"))?;
            Ok(())
        }
        .await;
        counts.sessions.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = result {
            eprintln!("websocket failure: {e}");
            counts.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_failed_requests_across_20_deploys_under_load() {
    let daemon = Arc::new(Daemon::start(FAST_COMPONENT));
    let api = demo_api();
    daemon.deploy_ok("v1", &api);

    // 15 HTTP clients + 1 WebSocket client = 16 concurrent clients.
    let mut clients = vec![ClientKind::KeepAlive; 8];
    clients.extend([ClientKind::NewConnection; 4]);
    clients.extend([ClientKind::Slow { ms: 400 }; 3]);
    let load = Load::start(daemon.public, "/version", &clients);
    let ws_counts = Arc::new(WsCounts::default());
    let (stop_ws, stop_rx) = tokio::sync::watch::channel(false);
    let ws = tokio::spawn(websocket_client(daemon.public, ws_counts.clone(), stop_rx));
    tokio::time::sleep(Duration::from_millis(300)).await;

    for i in 0..20 {
        let release = if i % 2 == 0 { "v2" } else { "v1" };
        let (daemon, api) = (daemon.clone(), api.clone());
        tokio::task::spawn_blocking(move || daemon.deploy_ok(release, &api))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = load.stop().await;
    let _ = stop_ws.send(true);
    ws.await.unwrap();

    assert_eq!(report.failed, 0, "failed requests: {:?}", report.failures);
    assert!(
        report.ok > 1000,
        "too little load to mean anything: {}",
        report.ok
    );
    assert!(
        report.by_release.get("v1").copied().unwrap_or(0) > 0,
        "{:?}",
        report.by_release
    );
    assert!(
        report.by_release.get("v2").copied().unwrap_or(0) > 0,
        "{:?}",
        report.by_release
    );
    assert_eq!(
        ws_counts.failures.load(Ordering::Relaxed),
        0,
        "websocket sessions failed"
    );
    assert!(ws_counts.sessions.load(Ordering::Relaxed) >= 3);
    assert!(ws_counts.echoes.load(Ordering::Relaxed) >= 60);
    assert_eq!(get(daemon.public, "/version").2, "v1");
}

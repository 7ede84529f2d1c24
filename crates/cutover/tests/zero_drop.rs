//! The promise: 20 deploys under mixed load, zero failed requests.

mod common;

use common::ws::{websocket_client, WsCounts};
use common::*;
use cutover::loadgen::{ClientKind, Load};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

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

//! A WebSocket client held open across switches: sessions of ~1.5 s through demo-api's echo.

use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[derive(Default)]
pub struct WsCounts {
    pub sessions: AtomicU64,
    pub echoes: AtomicU64,
    pub failures: AtomicU64,
}

/// WebSocket sessions of ~1.5 s each, back to back: every switch happens while one is open.
pub async fn websocket_client(
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

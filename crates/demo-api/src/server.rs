//! Accept loop, per-connection serving and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

use crate::routes::{self, App};
use crate::tracker::{Guard, Tracker};

/// How long open WebSocket sessions may keep the process alive after a stop signal.
const WEBSOCKET_GRACE: Duration = Duration::from_secs(5);

/// SIGTERM and SIGINT. Installed before the address is announced, so a signal
/// sent right after startup takes the graceful path instead of killing us.
pub struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    pub fn install() -> std::io::Result<Self> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Serves until a stop signal, then drains: in-flight requests and streaming
/// bodies run to completion, WebSocket sessions get [`WEBSOCKET_GRACE`].
pub async fn run(listener: TcpListener, app: Arc<App>, mut signals: StopSignals) {
    let connections = Tracker::new();
    let (stop_tx, stop_rx) = watch::channel(false);

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let conn = serve(stream, app.clone(), stop_rx.clone(), connections.enter());
                    tokio::spawn(conn);
                }
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning on the error.
                    eprintln!("demo-api: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = signals.recv() => break,
        }
    }

    drop(listener);
    let _ = stop_tx.send(true);
    let websockets = async {
        let grace = tokio::time::timeout(WEBSOCKET_GRACE, app.ws_sessions.idle()).await;
        if grace.is_err() {
            let open = app.ws_sessions.active();
            eprintln!("demo-api: closing {open} WebSocket session(s) still open after {WEBSOCKET_GRACE:?}");
        }
    };
    tokio::join!(connections.idle(), websockets);
}

async fn serve(stream: TcpStream, app: Arc<App>, mut stop: watch::Receiver<bool>, _conn: Guard) {
    // Streamed chunks and small echoes should not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| routes::handle(app.clone(), req));
    let conn = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);

    // Connection errors are clients hanging up early: not worth logging here.
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stopping(&mut stop) => {
            // Finishes the response in flight (if any), then closes; idle
            // keep-alive connections close right away.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn stopping(stop: &mut watch::Receiver<bool>) {
    // Drop the returned borrow here: it must not live across later awaits.
    let _ = stop.wait_for(|stopping| *stopping).await;
}

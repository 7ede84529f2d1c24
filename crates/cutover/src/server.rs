//! The public HTTP/1.1 servers: one accept loop per component listener, dispatching to the
//! proxy (process components) or the static file server (static components).

use crate::proxy::{self, Route};
use crate::shutdown::Shutdown;
use crate::site::{self, SiteRoute};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// What answers requests on a public socket.
#[derive(Clone)]
pub enum Frontend {
    Proxy(Arc<Route>),
    Static {
        component: String,
        site: Arc<SiteRoute>,
    },
    /// The admin listener: `/metrics`, `/health`.
    Admin,
}

impl Frontend {
    fn component(&self) -> &str {
        match self {
            Frontend::Proxy(route) => route.component.as_str(),
            Frontend::Static { component, .. } => component,
            Frontend::Admin => "admin",
        }
    }
}

/// Accepts connections on `listener` and answers them until shutdown, then asks open
/// connections to finish their current request and close (waiting up to `grace`).
pub async fn serve(
    listener: TcpListener,
    frontend: Frontend,
    mut shutdown: Shutdown,
    grace: Duration,
) {
    // Every connection task holds a clone; when all are dropped, every connection has ended.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(component = frontend.component(), "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service_frontend = frontend.clone();
        let service = hyper::service::service_fn(move |mut req| {
            let frontend = service_frontend.clone();
            async move {
                if let Some(refused) = crate::edge::admit(&mut req, peer) {
                    return Ok::<_, std::convert::Infallible>(refused);
                }
                let response = match &frontend {
                    Frontend::Proxy(route) => proxy::handle(route, req, peer).await,
                    Frontend::Static { site, .. } => site::handle(site, req).await,
                    Frontend::Admin => crate::admin::handle(&req),
                };
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let mut conn_shutdown = shutdown.clone();
        let open = open_tx.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = conn_shutdown.wait() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(client.addr = %peer, "connection ended: {e}");
            }
            drop(open);
        });
    }
    drop(listener);
    drop(open_tx);
    tracing::debug!(
        component = frontend.component(),
        "listener closed; finishing open connections"
    );
    let _ = tokio::time::timeout(grace, open_rx.recv()).await;
}

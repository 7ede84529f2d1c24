//! The public HTTP/1.1 servers: one accept loop per component listener, dispatching to the
//! proxy (process components) or the static file server (static components).

use crate::accept_gate::AcceptGate;
use crate::body_timeout::IdleTimeout;
use crate::component::{ComponentRuntime, Plane};
use crate::conn_limit::{AcceptBackoff, CapReport, Counted};
use crate::proxy;
use crate::shutdown::Shutdown;
use crate::site;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// What answers requests on a public socket.
#[derive(Clone)]
pub enum Frontend {
    /// A component's own `listen` listener: its proxy route or its site, by kind.
    Component(Arc<ComponentRuntime>),
    /// The admin listener: `/metrics`, `/health`.
    Admin,
    /// A shared `[edge]` listener: routed by host; `tls`: the https one.
    Edge {
        front: Arc<crate::front::Front>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    },
}

impl Frontend {
    fn component(&self) -> &str {
        match self {
            Frontend::Component(component) => component.name(),
            Frontend::Admin => "admin",
            Frontend::Edge { tls: None, .. } => "edge http",
            Frontend::Edge { tls: Some(_), .. } => "edge https",
        }
    }

    /// Whether plain connections may speak HTTP/2 by prior knowledge (`h2c = true`), read per
    /// connection so a reload applies to the next one.
    fn accepts_h2c(&self) -> bool {
        match self {
            Frontend::Component(component) => component.config().h2c,
            Frontend::Edge { front, tls: None } => front.accepts_h2c(),
            Frontend::Admin | Frontend::Edge { tls: Some(_), .. } => false,
        }
    }
}

pub use crate::conn_limit::Limits;

/// Accepts connections on `listener` and answers them until shutdown, then asks open
/// connections to finish their current request and close (waiting up to `grace`).
///
/// While `gate` is closed (a new daemon is taking the socket over) it does not accept.
///
/// At most `limits.connections` are open at once: at the cap the loop stops accepting and new
/// connections wait in the kernel backlog, which costs no fd (see [`crate::conn_limit`]).
pub async fn serve(
    listener: TcpListener,
    frontend: Frontend,
    shutdown: Shutdown,
    grace: Duration,
    limits: Limits,
    gate: AcceptGate,
) {
    let planes = crate::proxy_threads::handles();
    if planes.is_empty() {
        return accept_loop(listener, frontend, shutdown, grace, limits, gate).await;
    }
    let shared = match listener.into_std() {
        Ok(shared) => shared,
        Err(e) => {
            // Deregistering failed and the listener is gone with it: nothing left to serve.
            tracing::error!(
                component = frontend.component(),
                "cannot hand the listener to the proxy threads: {e}"
            );
            return;
        }
    };
    let loops = crate::proxy_threads::Spawned::on_each(planes, || {
        let listener = shared.try_clone();
        let (frontend, shutdown, limits, gate) = (
            frontend.clone(),
            shutdown.clone(),
            limits.clone(),
            gate.clone(),
        );
        async move {
            // Registered with the reactor of the thread it runs on.
            match listener.and_then(TcpListener::from_std) {
                Ok(listener) => {
                    accept_loop(listener, frontend, shutdown, grace, limits, gate).await
                }
                Err(e) => tracing::error!(
                    component = frontend.component(),
                    "cannot accept on a proxy thread: {e}"
                ),
            }
        }
    });
    drop(shared);
    loops.finished().await;
}

/// One accept loop of [`serve`], with the connections it accepted.
async fn accept_loop(
    listener: TcpListener,
    frontend: Frontend,
    mut shutdown: Shutdown,
    grace: Duration,
    limits: Limits,
    gate: AcceptGate,
) {
    // Every connection task holds a clone; when all are dropped, every connection has ended.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    let mut backoff = AcceptBackoff::new(frontend.component());
    let mut cap_report = CapReport::new(frontend.component());
    loop {
        if limits.connections.open() >= limits.connections.max() {
            cap_report.at_cap(limits.connections.max());
        }
        let accepting = tokio::select! {
            accepting = gate.enter() => accepting,
            _ = shutdown.wait() => break,
        };
        let slot = tokio::select! {
            slot = limits.connections.slot() => slot,
            _ = shutdown.wait() => break,
            _ = gate.closing() => continue,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait() => break,
            _ = gate.closing() => continue,
        };
        drop(accepting);
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff.succeeded();
                pair
            }
            Err(e) => {
                drop(slot);
                let delay = backoff.failed(&e);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = shutdown.wait() => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let (tls, proxy_protocol) = match &frontend {
            Frontend::Edge { tls, front } => (tls.clone(), front.proxy_protocol()),
            _ => (None, false),
        };
        let frontend = frontend.clone();
        let body_read_timeout = limits.body_read_timeout.clone();
        let (conn_shutdown, conn_gate, open) = (shutdown.clone(), gate.clone(), open_tx.clone());
        // Everything that reads from the client happens here, never in the accept loop: a slow
        // client delays only itself.
        tokio::spawn(async move {
            let mut stream = stream;
            let mut client_addr = peer;
            if proxy_protocol {
                match crate::proxy_protocol::read_header(&mut stream, PROXY_HEADER_TIMEOUT).await {
                    Ok(Some(addrs)) => client_addr = addrs.source,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::info!(client.addr = %peer, "closed: no valid PROXY protocol header ({e})");
                        drop(open);
                        return;
                    }
                }
            }
            // Only listeners that ask for h2c look at the first bytes for HTTP/2's preface.
            let h2c = tls.is_none()
                && frontend.accepts_h2c()
                && starts_with_h2_preface(&stream, PREFACE_TIMEOUT).await;
            let stream = Counted::new(stream, slot);
            let result = match tls {
                None => {
                    let client = Arc::new(crate::edge::Peer::with_scheme(client_addr, false));
                    let service = service(frontend, client, body_read_timeout, conn_gate.clone());
                    if h2c {
                        drive(http2(stream, service), conn_shutdown, conn_gate, grace).await
                    } else {
                        drive(http1(stream, service), conn_shutdown, conn_gate, grace).await
                    }
                }
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    else {
                        tracing::debug!(client.addr = %peer, "TLS handshake failed or timed out");
                        drop(open);
                        return;
                    };
                    let session = stream.get_ref().1;
                    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
                    if alpn.as_deref() == Some(crate::acme::ACME_TLS_ALPN) {
                        // A CA's TLS-ALPN-01 check: the handshake was all it wanted.
                        drop(open);
                        return;
                    }
                    let mut client = crate::edge::Peer::with_scheme(client_addr, true);
                    client.tls_version = session.protocol_version().map(tls_version_name);
                    let service = service(
                        frontend,
                        Arc::new(client),
                        body_read_timeout,
                        conn_gate.clone(),
                    );
                    if alpn.as_deref() == Some(b"h2") {
                        drive(http2(stream, service), conn_shutdown, conn_gate, grace).await
                    } else {
                        drive(http1(stream, service), conn_shutdown, conn_gate, grace).await
                    }
                }
            };
            finished(result, peer, open);
        });
    }
    drop(listener);
    drop(open_tx);
    tracing::debug!(
        component = frontend.component(),
        "listener closed; finishing open connections"
    );
    // Handed over, connections first linger up to `grace` for their last request.
    let wait = if gate.is_retiring() { grace * 2 } else { grace };
    let _ = tokio::time::timeout(wait, open_rx.recv()).await;
}

/// How long a client gets to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a load balancer gets to send its PROXY protocol header.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

fn tls_version_name(version: rustls::ProtocolVersion) -> &'static str {
    match version {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "TLS",
    }
}

/// What answers each request of one connection from `client`.
fn service(
    frontend: Frontend,
    client: Arc<crate::edge::Peer>,
    body_read_timeout: crate::live::LiveDuration,
    gate: AcceptGate,
) -> impl hyper::service::Service<
    http::Request<Incoming>,
    Response = http::Response<proxy::ProxyBody>,
    Error = std::convert::Infallible,
    Future: Send + 'static,
> + Send
       + 'static {
    hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let frontend = frontend.clone();
        let client = client.clone();
        let gate = gate.clone();
        let body_read_timeout = body_read_timeout.get();
        let (req, body_timed_out) = {
            let (parts, body) = req.into_parts();
            let (body, timed_out) = IdleTimeout::new(body, body_read_timeout);
            (http::Request::from_parts(parts, body), timed_out)
        };
        let mut req = req;
        async move {
            if let Some(refused) = crate::edge::admit(&mut req, &client) {
                return Ok::<_, std::convert::Infallible>(refused);
            }
            let response = match &frontend {
                Frontend::Component(component) => {
                    let logged = component.access_log.get().and_then(|log| {
                        let (request_id, trusted) = crate::request_log::tag(&mut req, &client);
                        let seen = || crate::request_log::Seen {
                            host: crate::request_log::request_host(&req).unwrap_or_default(),
                            component: Arc::from(component.name()),
                            release: component.serving_release_name(),
                            request_id,
                            trusted,
                        };
                        crate::request_log::begin(vec![log], &req, &client, seen)
                    });
                    let response = match &component.plane {
                        Plane::Process(plane) => proxy::handle(&plane.route, req, &client).await,
                        Plane::Static(site) => site::handle(site, req).await,
                        // Hooks have no listener; answered all the same if one ever gets here.
                        Plane::Hook => crate::response::plain(
                            http::StatusCode::NOT_FOUND,
                            "cutover: nothing is served here",
                        ),
                    };
                    match logged {
                        Some(pending) => pending.finish(response),
                        None => response,
                    }
                }
                Frontend::Admin => crate::admin::handle(&req),
                Frontend::Edge { front, tls } => front.handle(req, &client, tls.is_some()).await,
            };
            if body_timed_out.get() {
                tracing::info!(client.addr = %client.addr, "request body timed out after {body_read_timeout:?}");
                return Ok(body_timeout_response(body_read_timeout));
            }
            let mut response = response;
            if gate.is_retiring() && response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, std::convert::Infallible>(response)
        }
    })
}

/// An HTTP/1.1 connection (with upgrades: WebSocket tunnels).
fn http1<I, S>(
    io: I,
    service: S,
) -> hyper::server::conn::http1::UpgradeableConnection<TokioIo<I>, S>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming>,
    S::ResBody: 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(proxy::MAX_BUF_SIZE)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
}

/// An HTTP/2 connection (from TLS with ALPN `h2`, or h2c by prior knowledge).
fn http2<I, S>(
    io: I,
    service: S,
) -> hyper::server::conn::http2::Connection<TokioIo<I>, S, hyper_util::rt::TokioExecutor>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming>,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as http_body::Body>::Data: Send,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .serve_connection(TokioIo::new(io), service)
}

/// What a client speaking HTTP/2 by prior knowledge sends first (RFC 9113 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a client on an h2c listener gets to send its first bytes.
const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the connection starts with HTTP/2's preface, read without consuming it (the server
/// then reads it again). An HTTP/1.1 request differs from it by its third byte at the latest
/// ("PRI" is no method hyper serves), so only a preface split across segments is waited for.
async fn starts_with_h2_preface(stream: &tokio::net::TcpStream, within: Duration) -> bool {
    let peek = async {
        let mut seen = [0u8; 24];
        loop {
            let n = match stream.peek(&mut seen).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if seen[..n] != H2_PREFACE[..n] {
                return false;
            }
            if n == H2_PREFACE.len() {
                return true;
            }
            // A prefix only: the rest is on its way (peek would return the same bytes at once).
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(within, peek).await.unwrap_or(false)
}

/// Serves a connection until it ends or the listener stops: then asks it to finish its
/// current requests (HTTP/2: streams) and close.
async fn drive<C, E>(
    conn: C,
    mut shutdown: Shutdown,
    gate: AcceptGate,
    grace: Duration,
) -> Result<(), BoxError>
where
    C: Graceful + std::future::Future<Output = Result<(), E>>,
    E: Into<BoxError>,
{
    tokio::pin!(conn);
    // Biased: the connection is polled first on each wake-up (nearly all of them are its
    // sockets'), without drawing a random branch order per poll.
    let result = tokio::select! {
        biased;
        result = conn.as_mut() => result,
        _ = shutdown.wait() => 'ended: {
            if gate.is_retiring() && !C::SAYS_GOAWAY {
                // Handed over: the connection ends after its next response; an idle one gets
                // until `grace` to send that request or go.
                if let Ok(result) = tokio::time::timeout(grace, conn.as_mut()).await {
                    break 'ended result;
                }
            }
            conn.as_mut().shut_down();
            conn.await
        }
    };
    result.map_err(Into::into)
}

/// A connection that can be asked to finish what it is doing and close: hyper's HTTP/1.1 (with
/// upgrades) and HTTP/2 connections both can, under different names and bounds.
trait Graceful {
    /// HTTP/2 says GOAWAY: the client sends no new stream and retries any it raced, so a
    /// retiring daemon asks at once. An idle HTTP/1.1 connection closed under a client's next
    /// request would fail it: a retiring daemon lets it end after that request instead
    /// (`Connection: close`).
    const SAYS_GOAWAY: bool;
    fn shut_down(self: std::pin::Pin<&mut Self>);
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<I, B, S> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
{
    const SAYS_GOAWAY: bool = false;
    fn shut_down(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, B, S, E> Graceful for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    const SAYS_GOAWAY: bool = true;
    fn shut_down(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

fn finished(result: Result<(), BoxError>, peer: std::net::SocketAddr, open: mpsc::Sender<()>) {
    if let Err(e) = result {
        tracing::debug!(client.addr = %peer, "connection ended: {e}");
    }
    drop(open);
}

/// 408, and the connection closes: the rest of the body will never be read.
fn body_timeout_response(after: Duration) -> http::Response<proxy::ProxyBody> {
    crate::response::plain_and_close(
        http::StatusCode::REQUEST_TIMEOUT,
        &format!("cutover: no request body data for {after:?}"),
    )
}

//! The data plane: each component's public listener reverse-proxies HTTP/1.1 to the instance
//! that is active right now.
//!
//! The active instance is an [`Upstream`] behind an `ArcSwapOption`: a switch is one atomic
//! pointer store, and a request that already picked an upstream finishes on it. Each upstream
//! counts its in-flight requests and tunnels, so a switch can wait for the old one to drain, and
//! owns its connection pool, so the pooled keep-alive connections to an instance are closed by us
//! before that instance is told to stop (a reused connection never races the backend's close).

use crate::config::ComponentName;
use crate::release::ReleaseId;
use arc_swap::ArcSwapOption;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

pub use crate::response::{BoxError, ProxyBody};

type UpstreamClient = Client<HttpConnector, crate::body_timeout::RequestBody>;

/// Counters of what one upstream answered; read by stabilization and status.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    pub requests: AtomicU64,
    /// Responses with a 5xx status.
    pub server_errors: AtomicU64,
    /// Requests that got no response at all (connection refused, reset).
    pub connect_errors: AtomicU64,
    /// Requests whose response headers did not come within `upstream_timeout` (answered 504).
    pub timeouts: AtomicU64,
    /// Responses cut short: the body ended before its declared length or last chunk, or the
    /// connection broke mid-body. The client already had the head, so only we can count it.
    pub broken_bodies: AtomicU64,
    /// Requests sent that have no response headers yet.
    waiting: AtomicUsize,
    /// When a response head last arrived, or waiting went from none to some (ms on
    /// [`clock_ms`]): with `waiting`, says how long the instance has answered nothing.
    last_progress_ms: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub failed: u64,
}

impl UpstreamStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let unanswered =
            self.connect_errors.load(Ordering::Relaxed) + self.timeouts.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed) + unanswered,
            failed: self.server_errors.load(Ordering::Relaxed)
                + unanswered
                + self.broken_bodies.load(Ordering::Relaxed),
        }
    }

    // The time is stored before the count changes, so a check never sees a request waiting
    // with a timestamp older than its wait.
    fn begin_wait(&self) {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            self.last_progress_ms.store(clock_ms(), Ordering::SeqCst);
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
    }

    fn end_wait(&self, answered: bool) {
        // Progress matters only to requests still waiting: when none is, the next wait starts
        // the clock afresh (and the common case reads no clock at all).
        if answered && self.waiting.load(Ordering::SeqCst) > 1 {
            self.last_progress_ms.store(clock_ms(), Ordering::SeqCst);
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }

    /// Requests waiting for response headers, and for how long no response head has arrived
    /// while some waited; None when nothing waits.
    pub fn stall(&self) -> Option<(usize, Duration)> {
        let waiting = self.waiting.load(Ordering::SeqCst);
        if waiting == 0 {
            return None;
        }
        let since = self.last_progress_ms.load(Ordering::SeqCst);
        Some((
            waiting,
            Duration::from_millis(clock_ms().saturating_sub(since)),
        ))
    }
}

/// Milliseconds on a monotonic clock local to this process (atomics cannot hold an `Instant`).
fn clock_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Counts one request as waiting for its response head until dropped (a client that goes
/// away mid-wait drops the future, and with it this).
struct WaitGuard<'a> {
    stats: &'a UpstreamStats,
    answered: bool,
}

impl<'a> WaitGuard<'a> {
    fn new(stats: &'a UpstreamStats) -> Self {
        stats.begin_wait();
        WaitGuard {
            stats,
            answered: false,
        }
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.stats.end_wait(self.answered);
    }
}

/// One instance as the proxy sees it.
pub struct Upstream {
    pub addr: SocketAddr,
    pub release: ReleaseId,
    pub stats: UpstreamStats,
    /// Requests and tunnels using this upstream right now.
    inflight: AtomicUsize,
    idle: Notify,
    /// Set once the drain of this upstream is over: open tunnels close then (see
    /// [`Upstream::close_tunnels`]).
    tunnels_closing: std::sync::atomic::AtomicBool,
    tunnels_close: Notify,
    /// Pooled connections to the instance; taken (and so closed) by [`Upstream::close_pool`].
    client: ArcSwapOption<UpstreamClient>,
    /// `addr` as a URI authority, built once: every proxied request needs it.
    authority: http::uri::Authority,
    metrics: crate::metrics::UpstreamMetrics,
}

impl Upstream {
    pub fn new(component: &str, addr: SocketAddr, release: ReleaseId) -> Arc<Self> {
        Arc::new(Self {
            metrics: crate::metrics::UpstreamMetrics::new(component, release.as_str()),
            addr,
            release,
            stats: UpstreamStats::default(),
            inflight: AtomicUsize::new(0),
            idle: Notify::new(),
            tunnels_closing: std::sync::atomic::AtomicBool::new(false),
            tunnels_close: Notify::new(),
            client: ArcSwapOption::empty(),
            authority: addr
                .to_string()
                .parse()
                .expect("a socket address is a valid authority"),
        })
    }

    /// The pool of connections to this instance, created on first use. Lock-free: it is read
    /// on every request.
    fn client(&self) -> Arc<UpstreamClient> {
        if let Some(client) = self.client.load_full() {
            return client;
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Arc::new(
            Client::builder(TokioExecutor::new())
                // Shorter than common backend keep-alive timeouts (Node's is 5 s): a pooled
                // connection is dropped by us before the backend closes it under a request.
                .pool_idle_timeout(Duration::from_secs(4))
                .build(connector),
        );
        // Two first requests racing may each build one; the loser's pool is simply dropped.
        self.client.store(Some(client.clone()));
        client
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::SeqCst)
    }

    /// Waits until no request or tunnel uses this upstream, up to `timeout`. Returns how many
    /// were still in flight when it gave up (0 = fully drained).
    pub async fn drain(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.idle.notified();
            let n = self.inflight();
            if n == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline.into(), notified)
                .await
                .is_err()
            {
                return self.inflight();
            }
        }
    }

    /// Ends the tunnels (WebSockets) still open on this upstream: the drain gave them their
    /// time, and they must not keep the old instance's shutdown waiting.
    pub fn close_tunnels(&self) {
        self.tunnels_closing.store(true, Ordering::SeqCst);
        self.tunnels_close.notify_waiters();
    }

    async fn tunnels_closed(&self) {
        loop {
            let notified = self.tunnels_close.notified();
            if self.tunnels_closing.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    /// Drops the connection pool: idle keep-alive connections to the instance are closed now,
    /// before the instance gets SIGTERM. A later request would open a fresh pool.
    pub fn close_pool(&self) {
        self.client.store(None);
    }
}

/// Marks one request or tunnel in flight on an upstream until dropped.
struct InflightGuard(Arc<Upstream>);

impl InflightGuard {
    fn new(upstream: Arc<Upstream>) -> InflightGuard {
        upstream.inflight.fetch_add(1, Ordering::SeqCst);
        upstream.metrics.inflight.inc();
        InflightGuard(upstream)
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.metrics.inflight.dec();
        if self.0.inflight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The proxy's state for one component: which upstream gets the next request.
pub struct Route {
    pub component: ComponentName,
    current: ArcSwapOption<Upstream>,
    /// How long a request waits for response headers before the client gets a 504.
    upstream_timeout: Duration,
    /// Milliseconds a request may wait for a replacement while the serving instance is down
    /// and the watchdog restarts it (0: not held). One atomic load per request when unset.
    hold_ms: AtomicU64,
    /// Wakes held requests when the route changes or the hold ends.
    changed: Notify,
}

impl Route {
    pub fn new(component: ComponentName, upstream_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            component,
            current: ArcSwapOption::empty(),
            upstream_timeout,
            hold_ms: AtomicU64::new(0),
            changed: Notify::new(),
        })
    }

    pub fn current(&self) -> Option<Arc<Upstream>> {
        self.current.load_full()
    }

    /// The atomic switch: every request from now on goes to `next`. Returns the previous one.
    /// Ends a hold: held requests go to `next` at once.
    pub fn switch(&self, next: Option<Arc<Upstream>>) -> Option<Arc<Upstream>> {
        let previous = self.current.swap(next);
        self.release_hold();
        previous
    }

    /// From now on new requests wait (each up to `limit`) for the next [`Route::switch`] or
    /// [`Route::release_hold`] instead of going to the current upstream, which is down.
    pub fn hold(&self, limit: Duration) {
        self.hold_ms.store(
            limit.as_millis().clamp(1, u64::MAX as u128) as u64,
            Ordering::SeqCst,
        );
    }

    /// Held requests go on to whatever the route points at now.
    pub fn release_hold(&self) {
        self.hold_ms.store(0, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub fn is_held(&self) -> bool {
        self.hold_ms.load(Ordering::SeqCst) != 0
    }

    /// [`Route::acquire`], after waiting out a hold (bounded by the hold's limit).
    async fn acquire_after_hold(&self) -> Option<InflightGuard> {
        let limit = self.hold_ms.load(Ordering::SeqCst);
        if limit != 0 {
            let deadline = Instant::now() + Duration::from_millis(limit);
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                // Registered before the check, so a release between the two is not missed.
                changed.as_mut().enable();
                if !self.is_held() {
                    break;
                }
                if tokio::time::timeout_at(deadline.into(), changed)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
        self.acquire()
    }

    /// Picks the current upstream and counts the request in flight on it. The re-check after
    /// counting closes the race with a switch: a drain that starts after the switch either sees
    /// this request counted, or the request sees the switch and moves to the new upstream.
    fn acquire(&self) -> Option<InflightGuard> {
        loop {
            let guard = InflightGuard::new(self.current.load_full()?);
            let still_current = self
                .current
                .load()
                .as_ref()
                .is_some_and(|now| Arc::ptr_eq(now, &guard.0));
            if still_current {
                return Some(guard);
            }
        }
    }
}

/// Hop-by-hop headers (RFC 9110 7.6.1): they describe one connection and are not forwarded.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    // `Connection: host` must not take the Host away: the backend needs it, and it is not
    // a hop's header whatever the client says.
    for name in named
        .iter()
        .filter(|n| **n != header::HOST)
        .chain(HOP_BY_HOP)
    {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

fn local_response(status: StatusCode, message: &str) -> Response<ProxyBody> {
    crate::response::plain(status, message)
}

pub async fn handle(
    route: &Route,
    mut req: Request<crate::body_timeout::RequestBody>,
    peer: SocketAddr,
) -> Response<ProxyBody> {
    let Some(guard) = route.acquire_after_hold().await else {
        return local_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cutover: no active release of {}", route.component),
        );
    };
    let upstream = guard.0.clone();

    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let upgrade_protocol = req.headers().get(header::UPGRADE).cloned();

    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let uri = Uri::builder()
        .scheme(http::uri::Scheme::HTTP)
        .authority(upstream.authority.clone())
        .path_and_query(path)
        .build();
    let uri: Uri = match uri {
        Ok(uri) => uri,
        Err(_) => {
            return local_response(StatusCode::BAD_REQUEST, "cutover: invalid request target")
        }
    };
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_11;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    add_forwarding_headers(headers, peer);
    if let (true, Some(protocol)) = (upgrade, upgrade_protocol) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }

    let started = std::time::Instant::now();
    let mut response = match send(route, &upstream, req).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) if crate::body_timeout::caused(&e) => {
            // The client stopped sending its body: not the upstream's failure (server.rs
            // answers 408).
            return local_response(
                StatusCode::REQUEST_TIMEOUT,
                "cutover: request body timed out",
            );
        }
        Ok(Err(e)) => {
            upstream
                .stats
                .connect_errors
                .fetch_add(1, Ordering::Relaxed);
            upstream.metrics.errors.inc();
            tracing::warn!(component = %route.component, release = %upstream.release,
                upstream = %upstream.addr, "upstream request failed: {e}");
            return local_response(
                StatusCode::BAD_GATEWAY,
                &format!("cutover: upstream {} unavailable", route.component),
            );
        }
        Err(_) => {
            upstream.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            upstream.metrics.errors.inc();
            tracing::warn!(component = %route.component, release = %upstream.release,
                upstream = %upstream.addr, "no response headers within {:?}", route.upstream_timeout);
            return local_response(
                StatusCode::GATEWAY_TIMEOUT,
                &format!(
                    "cutover: upstream {} did not answer within {}",
                    route.component,
                    humantime::format_duration(route.upstream_timeout)
                ),
            );
        }
    };
    upstream.stats.requests.fetch_add(1, Ordering::Relaxed);
    upstream.metrics.response(response.status().as_u16());
    upstream
        .metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
    if response.status().is_server_error() {
        upstream.stats.server_errors.fetch_add(1, Ordering::Relaxed);
    }

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(tunnel(client_upgrade, upstream_upgrade, guard));
            let (parts, _) = response.into_parts();
            return Response::from_parts(
                parts,
                http_body_util::Empty::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            );
        }
    }

    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = TrackedBody {
        inner: body,
        guard,
        broken: false,
        idle: route.upstream_timeout,
        waiting: None,
    };
    Response::from_parts(parts, body.boxed_unsync())
}

/// Sends a request upstream. The wait for the response head is timed (`upstream_timeout`) and
/// counted as waiting only once the request body is fully sent: a long upload is the client's
/// time, not a slow upstream (the body's own idle timeout bounds a stalled one).
async fn send(
    route: &Route,
    upstream: &Upstream,
    req: Request<crate::body_timeout::RequestBody>,
) -> Result<
    Result<Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>,
    tokio::time::error::Elapsed,
> {
    // Most requests have no body: no signal to share for them.
    let body_sent = (!req.body().is_end_stream()).then(|| req.body().sent());
    let response = upstream.client().request(req);
    tokio::pin!(response);
    if let Some(body_sent) = body_sent.filter(|sent| !sent.is_done()) {
        tokio::select! {
            biased;
            early = &mut response => return Ok(early),
            _ = body_sent.wait() => {}
        }
    }
    let mut waiting = WaitGuard::new(&upstream.stats);
    let answer = tokio::time::timeout(route.upstream_timeout, response).await;
    waiting.answered = matches!(answer, Ok(Ok(_)));
    answer
}

fn add_forwarding_headers(headers: &mut HeaderMap, peer: SocketAddr) {
    crate::edge::forwarding_headers(headers, peer, crate::edge::policy());
}

/// Copies bytes both ways between an upgraded client and upstream; holds the in-flight guard
/// so a drain waits for open tunnels too.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    guard: InflightGuard,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!("upgrade failed: {e}");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = copied {
                tracing::debug!("tunnel closed: {e}");
            }
        }
        _ = guard.0.tunnels_closed() => {
            tracing::debug!(release = %guard.0.release, "tunnel closed: its drain is over");
        }
    }
    drop(guard);
}

/// The upstream sent nothing of a response body for this long (`upstream_timeout`, as nginx's
/// proxy_read_timeout counts between two reads).
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent no response body data for {0:?}")]
struct UpstreamBodyIdle(Duration);

/// A response body that keeps its request counted in flight until it is fully sent or dropped,
/// and counts a body the upstream cut short (hyper reports a premature end as an error) or
/// left idle for `idle`: a response that stalls after its head must not hang forever.
struct TrackedBody<B> {
    inner: B,
    guard: InflightGuard,
    broken: bool,
    idle: Duration,
    /// Armed only when a read finds nothing (a body that arrives at once costs no timer).
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> TrackedBody<B> {
    fn count_broken(&mut self, why: &str) {
        if !self.broken {
            self.broken = true;
            let upstream = &self.guard.0;
            upstream.stats.broken_bodies.fetch_add(1, Ordering::Relaxed);
            upstream.metrics.errors.inc();
            tracing::warn!(release = %upstream.release, upstream = %upstream.addr,
                "the upstream {why}");
        }
    }
}

impl<B> Body for TrackedBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                self.count_broken("cut a response short");
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(frame) => {
                self.waiting = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = self.idle;
                match crate::body_timeout::IdleTimer::poll(&mut self.waiting, idle, cx) {
                    Poll::Ready(()) => {
                        self.count_broken("left a response body idle");
                        Poll::Ready(Some(Err(UpstreamBodyIdle(idle).into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        let names: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn connection_cannot_name_host_away() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("host, close"));
        headers.insert(header::HOST, HeaderValue::from_static("api.example"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers[header::HOST], "api.example");
    }

    #[tokio::test]
    async fn a_held_route_waits_for_the_switch_within_its_limit() {
        let route = Route::new(
            ComponentName::parse("api").unwrap(),
            Duration::from_secs(60),
        );
        let dead = Upstream::new(
            "api",
            "127.0.0.1:1".parse().unwrap(),
            ReleaseId::parse("a").unwrap(),
        );
        let fresh = Upstream::new(
            "api",
            "127.0.0.1:2".parse().unwrap(),
            ReleaseId::parse("a").unwrap(),
        );
        route.switch(Some(dead.clone()));
        route.hold(Duration::from_secs(10));
        let waiting = {
            let route = route.clone();
            tokio::spawn(async move { route.acquire_after_hold().await.map(|g| g.0.addr) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a held request waits");
        route.switch(Some(fresh.clone()));
        assert_eq!(waiting.await.unwrap(), Some(fresh.addr));
        assert!(!route.is_held());

        // The limit bounds the wait: then the request goes to what the route has.
        route.hold(Duration::from_millis(30));
        let started = Instant::now();
        let got = route.acquire_after_hold().await.map(|g| g.0.addr);
        assert_eq!(got, Some(fresh.addr));
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn acquire_follows_switch_and_drain_waits() {
        let route = Route::new(
            ComponentName::parse("api").unwrap(),
            Duration::from_secs(60),
        );
        assert!(route.acquire().is_none());
        let a = Upstream::new(
            "api",
            "127.0.0.1:1".parse().unwrap(),
            ReleaseId::parse("a").unwrap(),
        );
        let b = Upstream::new(
            "api",
            "127.0.0.1:2".parse().unwrap(),
            ReleaseId::parse("b").unwrap(),
        );
        route.switch(Some(a.clone()));
        let held = route.acquire().unwrap();
        assert!(Arc::ptr_eq(&held.0, &a));
        route.switch(Some(b.clone()));
        assert!(Arc::ptr_eq(&route.acquire().unwrap().0, &b));
        assert_eq!(a.inflight(), 1);
        assert_eq!(a.drain(Duration::from_millis(20)).await, 1);
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(held);
        });
        assert_eq!(a.drain(Duration::from_secs(5)).await, 0);
        release.await.unwrap();
    }
}

//! One instance as the proxy sees it: its connection pool, its in-flight count and its stats.

use super::stats::UpstreamStats;
use crate::config::UpstreamProtocol;
use crate::release::ReleaseId;
use arc_swap::ArcSwapOption;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

type UpstreamClient = Client<HttpConnector, crate::body_timeout::RequestBody>;

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
    tunnels_closing: AtomicBool,
    tunnels_close: Notify,
    /// HTTP/1.1 requests without a body: the proxy's own connections ([`super::pool`]).
    pub(super) pool: super::pool::Pool,
    /// The rest: hyper-util's pooled client, whose connections run in tasks of their own (a
    /// request body keeps flowing upstream while the response streams back, whoever reads
    /// it); for h2c one HTTP/2 connection carries every request. Taken (and so closed) by
    /// [`Upstream::close_pool`].
    client: ArcSwapOption<UpstreamClient>,
    /// HTTP/1.1 or HTTP/2 (h2c), fixed for the instance's lifetime.
    pub(super) protocol: UpstreamProtocol,
    /// `addr` as a URI authority, built once: every proxied request needs it.
    pub(super) authority: http::uri::Authority,
    pub(super) metrics: crate::metrics::UpstreamMetrics,
}

impl Upstream {
    pub fn new(
        component: &str,
        addr: SocketAddr,
        release: ReleaseId,
        protocol: UpstreamProtocol,
    ) -> Arc<Self> {
        Arc::new(Self {
            metrics: crate::metrics::UpstreamMetrics::new(component, release.as_str()),
            addr,
            release,
            stats: UpstreamStats::default(),
            inflight: AtomicUsize::new(0),
            idle: Notify::new(),
            tunnels_closing: AtomicBool::new(false),
            tunnels_close: Notify::new(),
            pool: super::pool::Pool::new(addr),
            client: ArcSwapOption::empty(),
            protocol,
            authority: addr
                .to_string()
                .parse()
                .expect("a socket address is a valid authority"),
        })
    }

    /// The pooled client, created on first use. Lock-free: it is read on every request that
    /// uses it.
    pub(super) fn client(&self) -> Arc<UpstreamClient> {
        if let Some(client) = self.client.load_full() {
            return client;
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let mut builder = Client::builder(TokioExecutor::new());
        // Shorter than common backend keep-alive timeouts (Node's is 5 s): a pooled
        // connection is dropped by us before the backend closes it under a request.
        builder.pool_idle_timeout(Duration::from_secs(4));
        match self.protocol {
            // hyper lets a connection's read buffer grow to about 400 KiB; a response head
            // needs far less, and a body streams through in pieces of this size.
            UpstreamProtocol::Http1 => builder.http1_max_buf_size(super::MAX_BUF_SIZE),
            // One connection carries every request as a stream; pings find a dead peer that a
            // long gRPC stream would otherwise wait on forever.
            UpstreamProtocol::H2c => builder
                .http2_only(true)
                .timer(TokioTimer::new())
                .http2_keep_alive_interval(Duration::from_secs(20))
                .http2_keep_alive_timeout(Duration::from_secs(10)),
        };
        let client = Arc::new(builder.build(connector));
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

    pub(super) async fn tunnels_closed(&self) {
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
        self.pool.close();
        self.client.store(None);
    }
}

/// Marks one request or tunnel in flight on an upstream until dropped.
pub(super) struct InflightGuard(pub(super) Arc<Upstream>);

impl InflightGuard {
    pub(super) fn new(upstream: Arc<Upstream>) -> InflightGuard {
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

//! The data plane: each component's public listener reverse-proxies HTTP/1.1 to the instance
//! that is active right now.
//!
//! The active instance is an [`Upstream`] behind an `ArcSwapOption`: a switch is one atomic
//! pointer store, and a request that already picked an upstream finishes on it. Each upstream
//! counts its in-flight requests and tunnels, so a switch can wait for the old one to drain, and
//! owns its connection pool, so the pooled keep-alive connections to an instance are closed by us
//! before that instance is told to stop (a reused connection never races the backend's close).
//!
//! `route.rs` picks the upstream (the switch, the hold), `upstream.rs` is one instance (pool,
//! in-flight count, drain), `stats.rs` counts what it answered, `tracked_body.rs` keeps a
//! response counted until its body is sent, `headers.rs` reads hop-by-hop and upgrade headers.

mod headers;
mod pool;
mod route;
mod stats;
mod tracked_body;
mod upstream;

pub use crate::response::{BoxError, ProxyBody};
pub use route::Route;
pub use stats::{StatsSnapshot, UpstreamStats};
pub use upstream::Upstream;

use crate::config::UpstreamProtocol;
use headers::{accepts_trailers, is_upgrade, strip_hop_by_hop};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use stats::WaitGuard;
use std::sync::atomic::Ordering;
use tracked_body::TrackedBody;
use upstream::InflightGuard;

/// The most a connection's read buffer may hold (hyper's default lets it grow to about
/// 400 KiB per connection, which 256 busy connections kept long after the load): request heads
/// fit (nginx allows 32 KiB), bodies stream through in pieces of this size.
pub const MAX_BUF_SIZE: usize = 64 * 1024;

fn local_response(status: StatusCode, message: &str) -> Response<ProxyBody> {
    crate::response::plain(status, message)
}

pub async fn handle(
    route: &Route,
    mut req: Request<crate::body_timeout::RequestBody>,
    peer: &crate::edge::Peer,
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

    // A request the proxy's own HTTP/1.1 connections carry (`pool.rs`); the rest go through
    // hyper-util's client (h2c upstreams, request bodies: see `send`).
    let own_connection = upstream.protocol == UpstreamProtocol::Http1 && req.body().is_end_stream();
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    // An HTTP/1.1 request must name its host; an HTTP/2 client names it in `:authority` (the
    // URI), an HTTP/1.0 one may not at all: the backend gets the client's host when there is
    // one, as nginx's `proxy_set_header Host $host`, else the instance's address.
    if !req.headers().contains_key(header::HOST) {
        let host = req
            .uri()
            .authority()
            .unwrap_or(&upstream.authority)
            .as_str();
        if let Ok(host) = HeaderValue::from_str(host) {
            req.headers_mut().insert(header::HOST, host);
        }
    }
    // Origin-form on our own connections (`GET /path?q HTTP/1.1`): what an origin server
    // expects, and hyper's `client::conn` writes the URI as it is given. hyper-util's client
    // needs the absolute URI to pick a connection (and writes origin-form itself).
    let uri = if own_connection {
        Ok(Uri::from(path))
    } else {
        Uri::builder()
            .scheme(http::uri::Scheme::HTTP)
            .authority(upstream.authority.clone())
            .path_and_query(path)
            .build()
    };
    let uri: Uri = match uri {
        Ok(uri) => uri,
        Err(_) => {
            return local_response(StatusCode::BAD_REQUEST, "cutover: invalid request target")
        }
    };
    *req.uri_mut() = uri;
    let h2c = upstream.protocol == UpstreamProtocol::H2c;
    *req.version_mut() = if h2c {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    };
    let headers = req.headers_mut();
    let trailers = h2c && accepts_trailers(headers);
    strip_hop_by_hop(headers);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    add_forwarding_headers(headers, peer);
    if let (true, Some(protocol)) = (upgrade, upgrade_protocol) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }

    let started = std::time::Instant::now();
    let (mut response, lease) = match send(route, &upstream, req, own_connection).await {
        Ok(Ok(answered)) => answered,
        Ok(Err(e)) if crate::body_timeout::caused(&*e) => {
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
                upstream = %upstream.addr, "no response headers within {:?}", route.upstream_timeout());
            return local_response(
                StatusCode::GATEWAY_TIMEOUT,
                &format!(
                    "cutover: upstream {} did not answer within {}",
                    route.component,
                    humantime::format_duration(route.upstream_timeout())
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
            if let Some(lease) = lease {
                lease.drive_to_end();
            }
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
    let body = TrackedBody::new(body, guard, route.upstream_timeout(), lease);
    Response::from_parts(parts, body.boxed_unsync())
}

/// Sends a request upstream. The wait for the response head is timed (`upstream_timeout`) and
/// counted as waiting only once the request body is fully sent: a long upload is the client's
/// time, not a slow upstream (the body's own idle timeout bounds a stalled one).
async fn send(
    route: &Route,
    upstream: &Upstream,
    req: Request<crate::body_timeout::RequestBody>,
    own_connection: bool,
) -> Result<
    Result<(Response<hyper::body::Incoming>, Option<pool::Lease>), BoxError>,
    tokio::time::error::Elapsed,
> {
    // Most requests have no body: no signal to share for them.
    let body_sent = (!req.body().is_end_stream()).then(|| req.body().sent());
    let response = async {
        // A request body must keep flowing upstream even while nobody reads the response
        // (a client that sends all before it reads, an endpoint that answers as it reads):
        // only a connection in a task of its own does that. Bodiless requests, most of them,
        // are driven by their own task (`pool.rs`).
        if own_connection {
            let (response, lease) = upstream.pool.send(req).await?;
            Ok((response, Some(lease)))
        } else {
            match upstream.client().request(req).await {
                Ok(response) => Ok((response, None)),
                Err(e) => Err(e.into()),
            }
        }
    };
    tokio::pin!(response);
    if let Some(body_sent) = body_sent.filter(|sent| !sent.is_done()) {
        tokio::select! {
            biased;
            early = &mut response => return Ok(early),
            _ = body_sent.wait() => {}
        }
    }
    let mut waiting = WaitGuard::new(&upstream.stats);
    let answer = tokio::time::timeout(route.upstream_timeout(), response).await;
    waiting.answered = matches!(answer, Ok(Ok(_)));
    answer
}

fn add_forwarding_headers(headers: &mut HeaderMap, peer: &crate::edge::Peer) {
    crate::edge::forwarding_headers(headers, peer, &crate::edge::policy());
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

//! What cutover, as the edge, accepts from clients before any frontend sees a request.
//!
//! Clients can write any header. Forwarding headers (`X-Forwarded-*`, `X-Real-IP`,
//! `Forwarded`, `Via`) are believed only from peers in `[edge] trusted_proxies`; from anyone
//! else they are dropped here, and the proxy then writes what cutover itself saw
//! ([`crate::proxy`]'s `add_forwarding_headers`). A request with two `Host` headers, or an
//! HTTP/1.1 request without one, is answered 400: backends and caches would each pick a
//! different host, which is how cache poisoning and routing confusion start.

use crate::proxy::ProxyBody;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

/// Headers that say where a request came from; only trusted peers may send them.
pub const FORWARDING_HEADERS: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "forwarded",
    "via",
];

/// Which peers' forwarding headers are believed.
#[derive(Clone, Debug, Default)]
pub struct EdgePolicy {
    pub trusted_proxies: Vec<IpNet>,
}

/// The daemon's policy: set once at start-up from the config (which is never reloaded), read by
/// every connection without threading it through each listener.
static POLICY: OnceLock<EdgePolicy> = OnceLock::new();

impl EdgePolicy {
    /// Makes `policy` the daemon's; the first call wins.
    pub fn install(policy: EdgePolicy) {
        let _ = POLICY.set(policy);
    }

    /// The daemon's policy (nobody trusted until one is installed).
    pub fn current() -> &'static EdgePolicy {
        POLICY.get_or_init(EdgePolicy::default)
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: walking the chain (earlier hops, then the peer) from the right,
    /// the first address that is not a trusted proxy. Everything left of it could be forged.
    pub fn client_ip(&self, chain: &[IpAddr], peer: IpAddr) -> IpAddr {
        std::iter::once(peer)
            .chain(chain.iter().rev().copied())
            .find(|ip| !self.trusts(*ip))
            .or_else(|| chain.first().copied())
            .unwrap_or(peer)
    }
}

/// IPv4 clients of a dual-stack socket appear as `::ffff:a.b.c.d`; CIDRs are written in v4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Checks a request before dispatch: the answer to send instead if it is refused (`None`: go
/// on). Forwarding headers from an untrusted peer are removed.
pub fn admit<B>(req: &mut Request<B>, peer: SocketAddr) -> Option<Response<ProxyBody>> {
    if let Err(why) = check_host(req.version(), req.headers()) {
        return Some(bad_request(why));
    }
    if !EdgePolicy::current().trusts(peer.ip()) {
        remove_forwarding_headers(req.headers_mut());
    }
    None
}

fn check_host(version: Version, headers: &HeaderMap) -> Result<(), &'static str> {
    match headers.get_all(header::HOST).iter().count() {
        0 if version == Version::HTTP_11 => Err("cutover: an HTTP/1.1 request needs a Host header"),
        0 | 1 => Ok(()),
        _ => Err("cutover: more than one Host header"),
    }
}

pub fn remove_forwarding_headers(headers: &mut HeaderMap) {
    for name in FORWARDING_HEADERS {
        headers.remove(HeaderName::from_static(name));
    }
}

fn bad_request(message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(format!("{message}\n")))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = StatusCode::BAD_REQUEST;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // The request may have been framed in a way the next one on this connection is not.
    headers.insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(nets: &[&str]) -> EdgePolicy {
        EdgePolicy {
            trusted_proxies: nets.iter().map(|n| n.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn client_is_the_rightmost_untrusted_address() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let edge = policy(&["10.0.0.0/8"]);
        let chain = [ip("203.0.113.9"), ip("198.51.100.7"), ip("10.1.1.1")];
        assert_eq!(edge.client_ip(&chain, ip("10.0.0.2")), ip("198.51.100.7"));
        assert_eq!(edge.client_ip(&chain, ip("192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(edge.client_ip(&[], ip("10.0.0.2")), ip("10.0.0.2"));
        assert!(
            edge.trusts(ip("::ffff:10.2.3.4")),
            "v4-mapped peers match v4 nets"
        );
        assert!(!policy(&[]).trusts(ip("127.0.0.1")));
    }

    #[test]
    fn host_must_be_there_once() {
        let mut headers = HeaderMap::new();
        assert!(check_host(Version::HTTP_11, &headers).is_err());
        assert!(check_host(Version::HTTP_10, &headers).is_ok());
        headers.append(header::HOST, "a.example".parse().unwrap());
        assert!(check_host(Version::HTTP_11, &headers).is_ok());
        headers.append(header::HOST, "b.example".parse().unwrap());
        assert!(check_host(Version::HTTP_10, &headers).is_err());
        let mut req = Request::new(());
        *req.headers_mut() = headers;
        let refused = admit(&mut req, "127.0.0.1:1".parse().unwrap()).expect("refused");
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    }
}

//! What cutover, as the edge, accepts from clients before any frontend sees a request.
//!
//! Clients can write any header. Forwarding headers (`X-Forwarded-*`, `X-Real-IP`,
//! `Forwarded`, `Via`) are believed only from peers in `[edge] trusted_proxies`; from anyone
//! else they are dropped here, and the proxy then writes what cutover itself saw
//! ([`crate::proxy`]'s `add_forwarding_headers`). A request with two `Host` headers, or an
//! HTTP/1.1 request without one, is answered 400: backends and caches would each pick a
//! different host, which is how cache poisoning and routing confusion start.

use crate::response::ProxyBody;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use std::net::{IpAddr, SocketAddr};

// Not standard names, so `http` has no constants for them; a `HeaderName` built from a static
// string is parsed and copied at every use, these are not.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Headers that say where a request came from; only trusted peers may send them.
pub const FORWARDING_HEADERS: [HeaderName; 6] = [
    X_FORWARDED_FOR,
    X_FORWARDED_HOST,
    X_FORWARDED_PROTO,
    X_REAL_IP,
    header::FORWARDED,
    header::VIA,
];

/// The client end of one connection, with the forwarding header values cutover writes for it
/// when it is not a trusted proxy: the same for every request on the connection, so made once
/// at accept and cloned per request (a reference count, no copy).
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    /// Whether the connection is TLS (cutover terminated it): the scheme it reports.
    pub tls: bool,
    /// Its TLS version (`TLSv1.3`), for the access log.
    pub tls_version: Option<&'static str>,
    /// The peer's address: `X-Forwarded-For` and `X-Real-IP` of an untrusted peer.
    ip: HeaderValue,
    /// Its RFC 7239 element, `for=ADDR;proto=http`.
    forwarded: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Peer {
        Self::with_scheme(addr, false)
    }

    pub fn with_scheme(addr: SocketAddr, tls: bool) -> Peer {
        let ip = addr.ip();
        let text = |s: String| HeaderValue::from_str(&s).expect("an address is a header value");
        let proto = if tls { "https" } else { "http" };
        Peer {
            addr,
            tls,
            tls_version: None,
            ip: text(ip.to_string()),
            forwarded: text(format!("for={};proto={proto}", forwarded_node(ip))),
        }
    }

    fn proto(&self) -> HeaderValue {
        HeaderValue::from_static(if self.tls { "https" } else { "http" })
    }
}

/// RFC 7239: IPv6 addresses are quoted and bracketed.
fn forwarded_node(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

pub use crate::config::EdgePolicy;

/// The daemon's policy: set at start-up from the config and again by `cutover reload`, read by
/// every request without threading it through each listener.
static POLICY: std::sync::LazyLock<arc_swap::ArcSwap<EdgePolicy>> =
    std::sync::LazyLock::new(|| arc_swap::ArcSwap::from_pointee(EdgePolicy::default()));

/// Makes `policy` the daemon's, for every request from now on.
pub fn install(policy: EdgePolicy) {
    POLICY.store(std::sync::Arc::new(policy));
}

/// The daemon's policy (nobody trusted until one is installed).
pub fn policy() -> arc_swap::Guard<std::sync::Arc<EdgePolicy>> {
    POLICY.load()
}

/// The hops of an X-Forwarded-For chain that can be read, from the right up to the first that
/// cannot: whatever stands left of a hop that is not an address (or `address:port`) cannot be
/// attributed, so it is never taken for the client.
fn trusted_suffix(hops: &[String]) -> Vec<IpAddr> {
    let mut chain: Vec<IpAddr> = hops
        .iter()
        .rev()
        .map_while(|hop| {
            hop.parse::<IpAddr>()
                .ok()
                .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
        })
        .collect();
    chain.reverse();
    chain
}

/// Checks a request before dispatch: the answer to send instead if it is refused (`None`: go
/// on). Forwarding headers from an untrusted peer are removed.
pub fn admit<B>(req: &mut Request<B>, peer: &Peer) -> Option<Response<ProxyBody>> {
    if let Err(why) = check_host(req.version(), req.headers()) {
        return Some(bad_request(why));
    }
    if !policy().trusts(peer.addr.ip()) {
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
        headers.remove(name);
    }
}

/// Writes what cutover saw of the client. Earlier hops' headers are kept (and extended) only
/// when the peer is a trusted proxy; otherwise they are replaced, so a client cannot choose the
/// address or scheme the backend believes.
pub fn forwarding_headers(headers: &mut HeaderMap, peer: &Peer, edge: &EdgePolicy) {
    if !edge.trusts(peer.addr.ip()) {
        // Every value is cutover's own: each insert replaces whatever the client sent.
        headers.insert(X_FORWARDED_FOR, peer.ip.clone());
        headers.insert(X_REAL_IP, peer.ip.clone());
        headers.insert(X_FORWARDED_PROTO, peer.proto());
        match headers.get(header::HOST).cloned() {
            Some(host) => headers.insert(X_FORWARDED_HOST, host),
            None => headers.remove(X_FORWARDED_HOST),
        };
        headers.insert(header::FORWARDED, peer.forwarded.clone());
        headers.insert(header::VIA, HeaderValue::from_static("1.1 cutover"));
        return;
    }
    let peer_ip = peer.addr.ip();
    // Every earlier hop, across however many header lines it came in.
    let previous: Vec<String> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|hop| hop.trim().to_owned())
        .filter(|hop| !hop.is_empty())
        .collect();
    let chain = trusted_suffix(&previous);
    let client_ip = edge.client_ip(&chain, peer_ip);
    let forwarded_for = previous
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(peer_ip.to_string().as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if let Ok(value) = HeaderValue::from_str(&client_ip.to_string()) {
        headers.insert(X_REAL_IP, value);
    }
    // What cutover accepted; a trusted proxy in front may have terminated TLS and said so.
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, peer.proto());
    }
    if !headers.contains_key(&X_FORWARDED_HOST) {
        if let Some(host) = headers.get(header::HOST).cloned() {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }
    let proto = if peer.tls { "https" } else { "http" };
    let element = format!("for={};proto={proto}", forwarded_node(peer_ip));
    let forwarded = match headers
        .get_all(header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
    {
        earlier if earlier.is_empty() => element,
        earlier => format!("{}, {element}", earlier.join(", ")),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded) {
        headers.insert(header::FORWARDED, value);
    }
    headers.append(header::VIA, HeaderValue::from_static("1.1 cutover"));
}

fn bad_request(message: &str) -> Response<ProxyBody> {
    // The request may have been framed in a way the next one on this connection is not.
    crate::response::plain_and_close(StatusCode::BAD_REQUEST, message)
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
        let hops = |list: &[&str]| list.iter().map(|h| h.to_string()).collect::<Vec<_>>();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // A hop that is no address ends what can be attributed: the forged left part is not
        // taken for the client; a trusted proxy writing `ip:port` is read.
        assert_eq!(
            trusted_suffix(&hops(&[
                "6.6.6.6",
                "garbage",
                "198.51.100.7:5123",
                "10.0.0.3"
            ])),
            [ip("198.51.100.7"), ip("10.0.0.3")]
        );
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
    fn client_forwarding_headers_are_replaced_unless_the_peer_is_trusted() {
        let client_headers = || {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
            headers.append("x-forwarded-for", HeaderValue::from_static("198.51.100.7"));
            headers.insert("x-real-ip", HeaderValue::from_static("203.0.113.9"));
            headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
            headers.insert(
                header::FORWARDED,
                HeaderValue::from_static("for=203.0.113.9"),
            );
            headers.insert(header::VIA, HeaderValue::from_static("1.1 evil"));
            headers.insert(header::HOST, HeaderValue::from_static("api.example"));
            headers
        };
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();

        let untrusted = EdgePolicy::default();
        let mut headers = client_headers();
        forwarding_headers(&mut headers, &Peer::new(peer), &untrusted);
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(headers["x-real-ip"], "127.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "api.example");
        assert_eq!(headers[header::FORWARDED], "for=127.0.0.1;proto=http");
        let via: Vec<_> = headers.get_all(header::VIA).iter().collect();
        assert_eq!(via, ["1.1 cutover"]);

        let trusted = EdgePolicy {
            trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        };
        let mut headers = client_headers();
        forwarding_headers(&mut headers, &Peer::new(peer), &trusted);
        assert_eq!(
            headers["x-forwarded-for"],
            "203.0.113.9, 198.51.100.7, 127.0.0.1"
        );
        assert_eq!(headers["x-real-ip"], "198.51.100.7");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(
            headers[header::FORWARDED],
            "for=203.0.113.9, for=127.0.0.1;proto=http"
        );
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
        let peer = Peer::new("127.0.0.1:1".parse().unwrap());
        let refused = admit(&mut req, &peer).expect("refused");
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    }
}

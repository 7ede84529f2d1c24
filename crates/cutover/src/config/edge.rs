//! `[edge]`: which peers' forwarding headers cutover believes.

use ipnet::IpNet;
use std::net::IpAddr;

/// Which peers' forwarding headers are believed.
#[derive(Clone, Debug, Default)]
pub struct EdgePolicy {
    pub trusted_proxies: Vec<IpNet>,
}

impl EdgePolicy {
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

/// `[edge] http` / `https` and what goes with them: listeners shared by every component that
/// names `hosts`, routed by the request's host (and path prefix).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FrontConfig {
    /// Plain HTTP: answers ACME HTTP-01 challenges and redirects to https (308) the hosts
    /// that have a certificate; serves the others.
    pub http: Option<std::net::SocketAddr>,
    /// TLS: the certificate by SNI, ALPN `h2` and `http/1.1`.
    pub https: Option<std::net::SocketAddr>,
    /// `Strict-Transport-Security` value added to every https response, if set.
    pub hsts: Option<String>,
    /// Where unknown hosts go; none: a plain 404.
    pub default_component: Option<super::ComponentName>,
    /// Certificates issued automatically for the hosts that bring none of their own.
    pub acme: Option<AcmeSettings>,
    /// Every connection to the shared listeners starts with a PROXY protocol header (a load
    /// balancer in front sends it); its source address is the client's.
    pub proxy_protocol: bool,
    /// `data_dir/logs/access.log`: one JSON object per request on the shared listeners.
    pub access_log: bool,
    /// The http listener also accepts HTTP/2 without TLS, by prior knowledge.
    pub h2c: bool,
}

/// `[edge] acme = { directory, email, ca_file, challenge }`.
#[derive(Clone, Debug, PartialEq)]
pub struct AcmeSettings {
    pub directory: String,
    pub email: Option<String>,
    /// Roots to trust for the ACME server's own HTTPS (a private or test CA).
    pub ca_file: Option<std::path::PathBuf>,
    pub challenge: AcmeChallenge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// Answered on the http listener (the CA connects to port 80).
    Http01,
    /// Answered on the https listener (the CA connects to port 443, ALPN `acme-tls/1`).
    TlsAlpn01,
}

#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    pub directory: String,
    pub email: Option<String>,
    pub ca_file: Option<std::path::PathBuf>,
    /// `http-01` (the default when there is an http listener) or `tls-alpn-01`.
    pub challenge: Option<String>,
}

/// A name a shared listener routes: exact, or `*.example.com` (any one or more labels before
/// the suffix, as DNS wildcards do not; `*.example.com` does not match `example.com`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    Exact(String),
    /// The suffix with its leading dot: `.example.com`.
    Wildcard(String),
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let lower = text.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let labels: Vec<&str> = name.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if name.len() > 253 || !labels.iter().all(label_ok) {
            return Err(format!(
                "invalid host {text:?}: write a DNS name like \"api.example.com\" or a wildcard like \"*.example.com\" (no port, no scheme)"
            ));
        }
        if wildcard && labels.len() < 2 {
            return Err(format!(
                "invalid host {text:?}: a wildcard needs a domain under it, like \"*.example.com\""
            ));
        }
        Ok(if wildcard {
            HostPattern::Wildcard(format!(".{name}"))
        } else {
            HostPattern::Exact(name.to_owned())
        })
    }

    /// Whether `host` (lowercase, no port) is this name.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => name == host,
            HostPattern::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// How a component is reached on the shared listeners.
#[derive(Clone, Debug, PartialEq)]
pub struct HostRoutes {
    pub hosts: Vec<HostPattern>,
    /// `/` or `/api` (no trailing slash): the longest prefix that matches wins.
    pub path_prefix: String,
    /// Whether the prefix is removed before the request goes to the component.
    pub strip_prefix: bool,
    /// A certificate of its own for its hosts (PEM files, reloaded when they change).
    pub tls: Option<TlsFiles>,
}

#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

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

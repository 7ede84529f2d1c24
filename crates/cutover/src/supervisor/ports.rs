//! Loopback ports for new instances.
//!
//! A port taken by binding port 0 comes from the kernel's ephemeral range
//! (`net.ipv4.ip_local_port_range`), the same range every outgoing connection on the machine
//! draws its source port from. Between the moment the daemon releases the probe socket and the
//! moment the release binds it, any `connect()` may take that port, and the release dies with
//! "Address already in use" (seen on a busy machine: a deploy failed its health gate that way).
//! So instance ports come from below the ephemeral range, where the kernel never hands out
//! ports by itself (Nomad's dynamic ports, 20000-32000, sit there for the same reason); only a
//! program binding that exact port can collide, and the probe bind sees it first.

use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::RangeInclusive;
use std::sync::Mutex;

/// Where instance ports are looked for, when it lies outside the ephemeral range.
const PREFERRED: RangeInclusive<u16> = 20000..=32767;
/// A range smaller than this is not worth using: random picks would collide too often.
const MIN_RANGE: u32 = 1000;

/// Ports handed out recently, so two instances started at the same moment never get the same
/// one before either has bound it.
static RECENT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free loopback port for a new instance.
pub fn pick() -> io::Result<u16> {
    match instance_range(ephemeral_range()) {
        Some(range) => pick_in(range),
        None => pick_ephemeral(),
    }
}

/// The kernel's ephemeral range; its documented default when /proc cannot say.
fn ephemeral_range() -> RangeInclusive<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some(parts.next()??..=parts.next()??)
        })
        .unwrap_or(32768..=60999)
}

/// The range instance ports come from: [`PREFERRED`] cut below the ephemeral range, or the
/// ports above it; `None` when the ephemeral range leaves no room (then only port 0 is left).
fn instance_range(ephemeral: RangeInclusive<u16>) -> Option<RangeInclusive<u16>> {
    let (low, high) = (*ephemeral.start(), *ephemeral.end());
    let below_end = (*PREFERRED.end()).min(low.saturating_sub(1));
    let below_start = *PREFERRED.start();
    if below_end >= below_start && u32::from(below_end - below_start) + 1 >= MIN_RANGE {
        return Some(below_start..=below_end);
    }
    let above_start = high.saturating_add(1);
    if high < u16::MAX && u32::from(u16::MAX - above_start) + 1 >= MIN_RANGE {
        return Some(above_start..=u16::MAX);
    }
    None
}

/// A port of `range` that binds now and was not handed out recently, starting from a random
/// place so that daemons on one machine (and restarts of one) spread out.
fn pick_in(range: RangeInclusive<u16>) -> io::Result<u16> {
    let (start, len) = (*range.start(), u32::from(range.end() - range.start()) + 1);
    let offset = random_u32() % len;
    for step in 0..len {
        let port = start + ((offset + step) % len) as u16;
        if !remember(port) {
            continue;
        }
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            Ok(_) => return Ok(port),
            Err(_) => forget(port),
        }
    }
    Err(io::Error::other(format!(
        "every port of {}-{} is in use",
        range.start(),
        range.end()
    )))
}

/// The old way, for a kernel whose ephemeral range covers everything: port 0.
fn pick_ephemeral() -> io::Result<u16> {
    for _ in 0..16 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        if remember(port) {
            return Ok(port);
        }
    }
    Err(io::Error::other("no unused port after 16 tries"))
}

/// Records `port` as handed out; false if it already was.
fn remember(port: u16) -> bool {
    let mut recent = RECENT.lock().unwrap_or_else(|p| p.into_inner());
    let recent = recent.get_or_insert_with(HashSet::new);
    if recent.len() > 4096 {
        // Old entries are instances that have long bound their port (or died): the bind
        // probe protects those.
        recent.clear();
    }
    recent.insert(port)
}

fn forget(port: u16) {
    if let Some(recent) = RECENT.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        recent.remove(&port);
    }
}

fn random_u32() -> u32 {
    let mut bytes = [0u8; 4];
    // Only the spread of picks depends on it; a failure falls back to a fixed start.
    let _ = getrandom::getrandom(&mut bytes);
    u32::from_ne_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picked_ports_lie_outside_the_kernels_ephemeral_range() {
        let ephemeral = ephemeral_range();
        for _ in 0..200 {
            let port = pick().unwrap();
            assert!(
                !ephemeral.contains(&port),
                "port {port} is in the ephemeral range {ephemeral:?}, where any outgoing \
                 connection can take it before the instance binds it"
            );
        }
    }

    #[test]
    fn two_picks_in_a_row_differ() {
        assert_ne!(pick().unwrap(), pick().unwrap());
    }

    #[test]
    fn a_port_someone_listens_on_is_skipped() {
        let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        let err = pick_in(port..=port).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
    }

    #[test]
    fn the_range_follows_the_ephemeral_one() {
        assert_eq!(instance_range(32768..=60999), Some(20000..=32767));
        // Ephemeral ports starting low: what is left below is used, if it is big enough.
        assert_eq!(instance_range(25000..=60999), Some(20000..=24999));
        // Nothing useful below: above it.
        assert_eq!(instance_range(10000..=60999), Some(61000..=65535));
        // Everything ephemeral: port 0 it is.
        assert_eq!(instance_range(1024..=65535), None);
    }
}

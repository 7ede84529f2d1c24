//! The PROXY protocol (v1 text, v2 binary) on a freshly accepted connection: a load balancer in
//! front writes the client's address before the first byte of the request.
//!
//! Only the header's bytes are consumed: the socket is peeked, the header's length found, and
//! exactly that many bytes read, so the HTTP (or TLS) bytes after it stay in the socket for the
//! server that reads next. The bytes are parsed by the `ppp` crate (a small parser of both
//! versions, its only dependency `thiserror`); finding where the header ends is done here,
//! because reading it off a socket without over-reading is this module's job.
//!
//! A listener that asks for the PROXY protocol accepts nothing else: every error here means
//! "close the connection" (the header is not optional, or a client could forge its address by
//! writing a header of its own on a connection that skipped the balancer).

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A v1 header is at most 107 bytes, CRLF included (the spec's worst case, TCP6 with full
/// addresses); a receiver may wait for that many before giving up on the line.
pub const V1_MAX_LEN: usize = 107;
/// The v2 header's fixed part: the 12-byte signature, version and command, family and
/// protocol, the 16-bit length of what follows.
const V2_FIXED_LEN: usize = 16;
/// The largest v2 header accepted, TLVs included. The format allows 16 + 65,535 bytes; real
/// balancers send tens (AWS adds a VPC endpoint id, some an SSL TLV). This is HAProxy's default
/// buffer size, so a header HAProxy's own receivers take is taken here.
pub const V2_MAX_LEN: usize = 16 * 1024;

const V1_SIGNATURE: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// The addresses a PROXY header carries: the client as the balancer saw it, and the address the
/// client connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxiedAddrs {
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

/// Why a connection's PROXY header was refused; the listener closes the connection on any.
#[derive(Debug, Error)]
pub enum ProxyProtocolError {
    #[error("the connection did not start with a PROXY protocol header (this listener requires one: v1 `PROXY ...` or the v2 signature)")]
    Missing,
    #[error("malformed PROXY protocol v{version} header: {reason}")]
    Malformed { version: u8, reason: String },
    #[error("PROXY protocol v{version} header longer than {limit} bytes")]
    Oversized { version: u8, limit: usize },
    #[error("the peer closed the connection after {received} bytes, before the PROXY protocol header was complete")]
    Truncated { received: usize },
    #[error("no complete PROXY protocol header within {}", humantime::format_duration(*timeout))]
    Slow { timeout: Duration },
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the PROXY header at the start of `stream`, within `timeout` for the whole header.
/// `None` when the header says to use the connection's own addresses (v1 `UNKNOWN`, v2 `LOCAL`
/// such as a balancer's health check, or an address family other than TCP over IPv4/IPv6).
pub async fn read_header(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<Option<ProxiedAddrs>, ProxyProtocolError> {
    match tokio::time::timeout(timeout, read_header_bytes(stream)).await {
        Ok(header) => parse(&header?),
        Err(_) => Err(ProxyProtocolError::Slow { timeout }),
    }
}

/// How much of a header the bytes seen so far make.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// The header is the first `n` bytes.
    Complete(usize),
    /// A v2 header of `n` bytes, not all of which have arrived.
    Length(usize),
    /// Not enough bytes to know where the header ends.
    Incomplete,
}

/// Where the header in `seen` (the first bytes of the connection) ends, as far as can be told.
fn scan(seen: &[u8]) -> Result<Scan, ProxyProtocolError> {
    let starts_like = |signature: &[u8]| {
        let n = seen.len().min(signature.len());
        seen[..n] == signature[..n]
    };
    match seen.first() {
        None => Ok(Scan::Incomplete),
        Some(b'P') if starts_like(V1_SIGNATURE) => scan_v1(seen),
        Some(b'\r') if starts_like(V2_SIGNATURE) => scan_v2(seen),
        Some(_) => Err(ProxyProtocolError::Missing),
    }
}

fn scan_v1(seen: &[u8]) -> Result<Scan, ProxyProtocolError> {
    match seen.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(at) if seen[at] == b'\n' => Err(malformed_v1("a line feed without carriage return")),
        Some(at) if at + 1 == seen.len() => Ok(Scan::Incomplete),
        // `seen` is never longer than V1_MAX_LEN, so a line found in it is within the limit.
        Some(at) if seen[at + 1] == b'\n' => Ok(Scan::Complete(at + 2)),
        Some(_) => Err(malformed_v1(
            "a carriage return not followed by a line feed",
        )),
        None if seen.len() >= V1_MAX_LEN => Err(ProxyProtocolError::Oversized {
            version: 1,
            limit: V1_MAX_LEN,
        }),
        None => Ok(Scan::Incomplete),
    }
}

fn scan_v2(seen: &[u8]) -> Result<Scan, ProxyProtocolError> {
    if seen.len() < V2_FIXED_LEN {
        return Ok(Scan::Incomplete);
    }
    let total = V2_FIXED_LEN + usize::from(u16::from_be_bytes([seen[14], seen[15]]));
    if total > V2_MAX_LEN {
        return Err(ProxyProtocolError::Oversized {
            version: 2,
            limit: V2_MAX_LEN,
        });
    }
    Ok(if seen.len() >= total {
        Scan::Complete(total)
    } else {
        Scan::Length(total)
    })
}

fn malformed_v1(reason: &str) -> ProxyProtocolError {
    ProxyProtocolError::Malformed {
        version: 1,
        reason: reason.to_owned(),
    }
}

/// The header's bytes, consumed from the socket and nothing after them.
///
/// Peeking shows what has arrived without taking it; once the header's end is known exactly
/// that many bytes are read. While it is not, the peeked bytes are all header bytes, so they
/// are consumed: the next peek then waits for new bytes instead of returning the same ones.
async fn read_header_bytes(stream: &mut TcpStream) -> Result<Vec<u8>, ProxyProtocolError> {
    // Holds the consumed bytes, then what a peek shows after them. V1_MAX_LEN bytes are enough
    // to finish any v1 header and to learn any v2 header's length.
    let mut window = [0u8; V1_MAX_LEN];
    let mut consumed = 0;
    loop {
        let peeked = stream.peek(&mut window[consumed..]).await?;
        if peeked == 0 {
            return Err(ProxyProtocolError::Truncated { received: consumed });
        }
        let seen = consumed + peeked;
        match scan(&window[..seen])? {
            Scan::Complete(total) => {
                stream.read_exact(&mut window[consumed..total]).await?;
                return Ok(window[..total].to_vec());
            }
            Scan::Length(total) => {
                let mut header = Vec::with_capacity(total);
                header.extend_from_slice(&window[..consumed]);
                header.resize(total, 0);
                read_all(stream, &mut header[consumed..], consumed).await?;
                return Ok(header);
            }
            Scan::Incomplete => {
                read_all(stream, &mut window[consumed..seen], consumed).await?;
                consumed = seen;
            }
        }
    }
}

/// `read_exact`, with the peer closing early reported as a truncated header.
async fn read_all(
    stream: &mut TcpStream,
    buf: &mut [u8],
    before: usize,
) -> Result<(), ProxyProtocolError> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]).await? {
            0 => {
                return Err(ProxyProtocolError::Truncated {
                    received: before + filled,
                })
            }
            n => filled += n,
        }
    }
    Ok(())
}

/// The addresses in a complete header (as delimited by `scan`).
fn parse(header: &[u8]) -> Result<Option<ProxiedAddrs>, ProxyProtocolError> {
    if header.starts_with(V1_SIGNATURE) {
        parse_v1(header)
    } else {
        parse_v2(header)
    }
}

fn parse_v1(header: &[u8]) -> Result<Option<ProxiedAddrs>, ProxyProtocolError> {
    use ppp::v1::{Addresses, Header};
    let parsed = Header::try_from(header).map_err(|e| ProxyProtocolError::Malformed {
        version: 1,
        reason: e.to_string(),
    })?;
    Ok(match parsed.addresses {
        Addresses::Tcp4(ip) => Some(ProxiedAddrs {
            source: (ip.source_address, ip.source_port).into(),
            destination: (ip.destination_address, ip.destination_port).into(),
        }),
        Addresses::Tcp6(ip) => Some(ProxiedAddrs {
            source: (ip.source_address, ip.source_port).into(),
            destination: (ip.destination_address, ip.destination_port).into(),
        }),
        Addresses::Unknown => None,
    })
}

fn parse_v2(header: &[u8]) -> Result<Option<ProxiedAddrs>, ProxyProtocolError> {
    use ppp::v2::{Addresses, Command, Header};
    let malformed = |e: ppp::v2::ParseError| ProxyProtocolError::Malformed {
        version: 2,
        reason: e.to_string(),
    };
    let parsed = Header::try_from(header).map_err(malformed)?;
    if parsed.command == Command::Local {
        return Ok(None);
    }
    // A header whose addresses are used must be well formed to the end: the TLVs, skipped,
    // must still fill what follows the addresses exactly. (`ppp` checks them lazily.)
    if matches!(parsed.addresses, Addresses::IPv4(_) | Addresses::IPv6(_)) {
        if let Some(Err(e)) = parsed.tlvs().find(Result::is_err) {
            return Err(malformed(e));
        }
    }
    Ok(match parsed.addresses {
        Addresses::IPv4(ip) => Some(ProxiedAddrs {
            source: (ip.source_address, ip.source_port).into(),
            destination: (ip.destination_address, ip.destination_port).into(),
        }),
        Addresses::IPv6(ip) => Some(ProxiedAddrs {
            source: (ip.source_address, ip.source_port).into(),
            destination: (ip.destination_address, ip.destination_port).into(),
        }),
        // The spec: a family the receiver does not handle means "use the real endpoints".
        Addresses::Unspecified | Addresses::Unix(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    const REQUEST: &[u8] = b"GET /hello HTTP/1.1\r\nHost: example.com\r\n\r\n";
    const GENEROUS: Duration = Duration::from_secs(5);

    /// Both ends of a loopback connection: (the client, the accepted side).
    async fn connection() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        (client, accepted)
    }

    /// Sends `chunks` (each written and flushed separately, a little apart, so the receiver
    /// sees them as separate arrivals), reads the header, then expects REQUEST byte for byte.
    async fn roundtrip(chunks: Vec<Vec<u8>>) -> Result<Option<ProxiedAddrs>, ProxyProtocolError> {
        let (mut client, mut accepted) = connection().await;
        let writer = tokio::spawn(async move {
            let n = chunks.len();
            for (i, chunk) in chunks.into_iter().enumerate() {
                client.write_all(&chunk).await.unwrap();
                client.flush().await.unwrap();
                if i + 1 < n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            client
        });
        let header = read_header(&mut accepted, GENEROUS).await;
        let mut client = writer.await.unwrap();
        if header.is_ok() {
            let mut rest = vec![0u8; REQUEST.len()];
            accepted.read_exact(&mut rest).await.unwrap();
            assert_eq!(rest, REQUEST, "the request after the header is intact");
            client.shutdown().await.unwrap();
            let mut extra = Vec::new();
            accepted.read_to_end(&mut extra).await.unwrap();
            assert!(extra.is_empty(), "nothing beyond the request: {extra:?}");
        }
        header
    }

    fn with_request(header: &[u8]) -> Vec<u8> {
        [header, REQUEST].concat()
    }

    fn addrs(source: &str, destination: &str) -> Option<ProxiedAddrs> {
        Some(ProxiedAddrs {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        })
    }

    /// A v2 header: `command` 0x0 LOCAL / 0x1 PROXY, `family` 0x11 TCP4 / 0x21 TCP6 / 0x00.
    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        let len = u16::try_from(addresses.len() + tlvs.len()).unwrap();
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(addresses);
        out.extend_from_slice(tlvs);
        out
    }

    fn v2_ipv4_addresses() -> Vec<u8> {
        let mut a = vec![203, 0, 113, 7, 10, 0, 0, 1];
        a.extend_from_slice(&51234u16.to_be_bytes());
        a.extend_from_slice(&443u16.to_be_bytes());
        a
    }

    /// Two TLVs: an authority (0x02) and an AWS-style custom one (0xEA).
    fn tlvs() -> Vec<u8> {
        let mut t = vec![0x02, 0x00, 11];
        t.extend_from_slice(b"example.com");
        t.extend_from_slice(&[0xEA, 0x00, 0x04, 1, 2, 3, 4]);
        t
    }

    #[tokio::test]
    async fn v1_tcp4_then_the_request() {
        let header = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n";
        let got = roundtrip(vec![with_request(header)]).await.unwrap();
        assert_eq!(got, addrs("203.0.113.7:51234", "10.0.0.1:443"));
    }

    #[tokio::test]
    async fn v1_tcp6_then_the_request() {
        let header = b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 443\r\n";
        let got = roundtrip(vec![with_request(header)]).await.unwrap();
        assert_eq!(got, addrs("[2001:db8::7]:51234", "[2001:db8::1]:443"));
    }

    #[tokio::test]
    async fn v1_unknown_uses_the_connection() {
        let got = roundtrip(vec![with_request(b"PROXY UNKNOWN\r\n")]).await;
        assert_eq!(got.unwrap(), None);
        // UNKNOWN may carry addresses, which are ignored.
        let header = b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
        assert_eq!(roundtrip(vec![with_request(header)]).await.unwrap(), None);
    }

    #[tokio::test]
    async fn v1_longest_header_is_accepted() {
        let header =
            b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(header.len(), 104);
        let got = roundtrip(vec![with_request(header)]).await.unwrap();
        assert_eq!(got.unwrap().source.port(), 65535);
    }

    #[tokio::test]
    async fn v1_arriving_byte_by_byte_then_the_request() {
        let header = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n";
        let mut chunks: Vec<Vec<u8>> = header.iter().map(|&b| vec![b]).collect();
        chunks.push(REQUEST.to_vec());
        let got = roundtrip(chunks).await.unwrap();
        assert_eq!(got, addrs("203.0.113.7:51234", "10.0.0.1:443"));
    }

    #[tokio::test]
    async fn v2_ipv4_with_tlvs_then_the_request() {
        let header = v2(0x1, 0x11, &v2_ipv4_addresses(), &tlvs());
        let got = roundtrip(vec![with_request(&header)]).await.unwrap();
        assert_eq!(got, addrs("203.0.113.7:51234", "10.0.0.1:443"));
    }

    #[tokio::test]
    async fn v2_ipv6_with_tlvs_then_the_request() {
        let source: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
        let destination: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mut a = source.octets().to_vec();
        a.extend_from_slice(&destination.octets());
        a.extend_from_slice(&51234u16.to_be_bytes());
        a.extend_from_slice(&443u16.to_be_bytes());
        let header = v2(0x1, 0x21, &a, &tlvs());
        let got = roundtrip(vec![with_request(&header)]).await.unwrap();
        assert_eq!(got, addrs("[2001:db8::7]:51234", "[2001:db8::1]:443"));
    }

    #[tokio::test]
    async fn v2_local_uses_the_connection() {
        // A balancer's health check: LOCAL, here with addresses and TLVs that must be skipped.
        let header = v2(0x0, 0x11, &v2_ipv4_addresses(), &tlvs());
        assert_eq!(roundtrip(vec![with_request(&header)]).await.unwrap(), None);
        let bare = v2(0x0, 0x00, &[], &[]);
        assert_eq!(roundtrip(vec![with_request(&bare)]).await.unwrap(), None);
    }

    #[tokio::test]
    async fn v2_longer_than_the_peek_window_in_pieces() {
        // 16 + 12 + 3 + 1000 bytes: more than one peek window, split mid-signature and mid-TLV.
        let mut big = vec![0x04, 0x03, 0xE8];
        big.extend(std::iter::repeat_n(b'x', 1000));
        let header = v2(0x1, 0x11, &v2_ipv4_addresses(), &big);
        let chunks = vec![
            header[..5].to_vec(),
            header[5..300].to_vec(),
            with_request(&header[300..]),
        ];
        let got = roundtrip(chunks).await.unwrap();
        assert_eq!(got, addrs("203.0.113.7:51234", "10.0.0.1:443"));
    }

    #[tokio::test]
    async fn plain_http_is_refused() {
        let got = roundtrip(vec![REQUEST.to_vec()]).await;
        assert!(matches!(got, Err(ProxyProtocolError::Missing)), "{got:?}");
        // A request starting with P is told apart at the first byte that differs.
        let got = roundtrip(vec![b"POST / HTTP/1.1\r\n\r\n".to_vec()]).await;
        assert!(matches!(got, Err(ProxyProtocolError::Missing)), "{got:?}");
        // So is a TLS client hello.
        let got = roundtrip(vec![vec![0x16, 0x03, 0x01, 0x02, 0x00]]).await;
        assert!(matches!(got, Err(ProxyProtocolError::Missing)), "{got:?}");
    }

    #[tokio::test]
    async fn garbage_after_the_signature_is_malformed() {
        for header in [
            &b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
            b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.4\rX",
        ] {
            let got = roundtrip(vec![with_request(header)]).await;
            assert!(
                matches!(got, Err(ProxyProtocolError::Malformed { version: 1, .. })),
                "{:?}: {got:?}",
                String::from_utf8_lossy(header)
            );
        }
        let bad_version = {
            let mut h = v2(0x1, 0x11, &v2_ipv4_addresses(), &[]);
            h[12] = 0x31;
            h
        };
        // A TLV claiming more bytes than the header has.
        let bad_tlv = v2(0x1, 0x11, &v2_ipv4_addresses(), &[0x02, 0x00, 0x09, b'a']);
        // Too short for the IPv4 addresses it announces.
        let short = v2(0x1, 0x11, &[1, 2, 3, 4], &[]);
        // Bytes after the last TLV too few to be one.
        let leftover = v2(0x1, 0x11, &v2_ipv4_addresses(), &[0x04, 0x00]);
        for header in [bad_version, bad_tlv, short, leftover] {
            let got = roundtrip(vec![with_request(&header)]).await;
            assert!(
                matches!(got, Err(ProxyProtocolError::Malformed { version: 2, .. })),
                "{header:?}: {got:?}"
            );
        }
    }

    #[tokio::test]
    async fn oversized_headers_are_refused() {
        let long_line = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        let got = roundtrip(vec![long_line]).await;
        assert!(
            matches!(got, Err(ProxyProtocolError::Oversized { version: 1, .. })),
            "{got:?}"
        );
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
        let got = roundtrip(vec![huge]).await;
        assert!(
            matches!(got, Err(ProxyProtocolError::Oversized { version: 2, .. })),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn truncated_headers_are_refused() {
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1".to_vec();
        let v2_cut = v2(0x1, 0x11, &v2_ipv4_addresses(), &tlvs())[..20].to_vec();
        for (partial, fixed) in [(v1, 31), (v2_cut, 20), (b"\r\n\r\n".to_vec(), 4)] {
            let (mut client, mut accepted) = connection().await;
            client.write_all(&partial).await.unwrap();
            client.shutdown().await.unwrap();
            let got = read_header(&mut accepted, GENEROUS).await;
            assert!(
                matches!(got, Err(ProxyProtocolError::Truncated { received }) if received == fixed),
                "{got:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_slow_header_times_out() {
        let (mut client, mut accepted) = connection().await;
        client.write_all(b"PROXY TCP4 203.0.").await.unwrap();
        let started = Instant::now();
        let got = read_header(&mut accepted, Duration::from_millis(150)).await;
        assert!(
            matches!(got, Err(ProxyProtocolError::Slow { .. })),
            "{got:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert!(started.elapsed() < GENEROUS);
        // And one that never starts.
        let (_idle, mut accepted) = connection().await;
        let got = read_header(&mut accepted, Duration::from_millis(50)).await;
        assert!(
            matches!(got, Err(ProxyProtocolError::Slow { .. })),
            "{got:?}"
        );
        drop(client);
    }

    #[test]
    fn errors_say_what_was_wrong() {
        let slow = ProxyProtocolError::Slow {
            timeout: Duration::from_secs(5),
        };
        assert_eq!(
            slow.to_string(),
            "no complete PROXY protocol header within 5s"
        );
        let oversized = ProxyProtocolError::Oversized {
            version: 1,
            limit: V1_MAX_LEN,
        };
        assert_eq!(
            oversized.to_string(),
            "PROXY protocol v1 header longer than 107 bytes"
        );
    }

    #[test]
    fn scan_finds_the_end_without_looking_past_it() {
        assert_eq!(scan(b"PRO").unwrap(), Scan::Incomplete);
        assert_eq!(scan(b"PROXY UNKNOWN\r").unwrap(), Scan::Incomplete);
        assert_eq!(scan(b"PROXY UNKNOWN\r\nGET").unwrap(), Scan::Complete(15));
        let header = v2(0x1, 0x11, &v2_ipv4_addresses(), &[]);
        assert_eq!(scan(&header[..10]).unwrap(), Scan::Incomplete);
        assert_eq!(scan(&header[..16]).unwrap(), Scan::Length(28));
        assert_eq!(scan(&with_request(&header)).unwrap(), Scan::Complete(28));
    }
}

//! Redis health: `AUTH` (when the URL has a password), `PING`, then `INFO server` for the version.
//!
//! The RESP exchange is written by hand: a check needs three commands and one reply line each
//! (plus one bulk string for the version), and the `redis` crate would bring a connection
//! manager, a URL parser and dozens of dependencies for that. Commands go out as RESP arrays of
//! bulk strings, so a password with spaces or CRLF cannot break the framing.
//!
//! Replies are classified by their RESP type and the error's code (its first word, the
//! protocol's own classification): `-NOAUTH`, `-WRONGPASS`, `-LOADING`. Redis before 6 answered a
//! wrong password with the generic `-ERR invalid password`: any error reply to `AUTH` is an
//! authentication failure.

use super::url::ServiceUrl;
use super::{elapsed_ms, redact_url, scrub, ServiceHealth, ServiceKind, ServiceStatus};
use std::io;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest reply line accepted; a real reply to these commands is a few dozen bytes.
const MAX_LINE: usize = 4096;
/// Largest `INFO server` bulk reply read (a real one is about 1 KiB).
const MAX_BULK: usize = 64 * 1024;

/// Checks the Redis server at `url` (`redis://[[user]:password@]host[:port][/db]`): `AUTH` when
/// the URL has a password, `PING` expecting `+PONG`, and `INFO server` for the version (its
/// failure is ignored). The whole check is bounded by `timeout`.
pub async fn check_redis(url: &str, timeout: Duration) -> ServiceHealth {
    let target = redact_url(url);
    let parsed = match ServiceUrl::parse(url) {
        Ok(parsed) => parsed,
        Err(reason) => {
            return ServiceHealth::new(
                ServiceKind::Redis,
                target,
                ServiceStatus::InvalidUrl,
                format!("cannot parse the Redis URL: {reason}"),
            )
        }
    };
    match parsed.scheme.as_str() {
        "redis" => {}
        "rediss" => {
            return ServiceHealth::new(
                ServiceKind::Redis,
                target,
                ServiceStatus::InvalidUrl,
                "rediss:// (TLS) is not supported by this check",
            )
        }
        other => {
            return ServiceHealth::new(
                ServiceKind::Redis,
                target,
                ServiceStatus::InvalidUrl,
                format!("the URL scheme {other:?} is not redis://"),
            )
        }
    }
    let started = Instant::now();
    let secret = parsed.password.clone();
    let outcome = tokio::time::timeout(timeout, exchange(&parsed)).await;
    let mut health = match outcome {
        Ok(Ok(version)) => {
            let mut up = ServiceHealth::new(ServiceKind::Redis, target, ServiceStatus::Up, "PONG");
            up.version = version;
            up.latency_ms = Some(elapsed_ms(started));
            up
        }
        Ok(Err(failure)) => {
            let mut failed =
                ServiceHealth::new(ServiceKind::Redis, target, failure.status, failure.detail);
            if failure.answered {
                failed.latency_ms = Some(elapsed_ms(started));
            }
            failed
        }
        Err(_) => ServiceHealth::new(
            ServiceKind::Redis,
            target,
            ServiceStatus::TimedOut,
            format!(
                "no answer from {} within {}",
                address(&parsed),
                humantime::format_duration(timeout)
            ),
        ),
    };
    health.detail = scrub(&health.detail, secret.as_deref());
    health
}

struct Failure {
    status: ServiceStatus,
    detail: String,
    /// The server answered (so the latency means something).
    answered: bool,
}

fn address(url: &ServiceUrl) -> String {
    let port = url.port.unwrap_or(6379);
    if url.host.contains(':') {
        format!("[{}]:{port}", url.host)
    } else {
        format!("{}:{port}", url.host)
    }
}

async fn exchange(url: &ServiceUrl) -> Result<Option<String>, Failure> {
    let addr = address(url);
    let stream = TcpStream::connect((url.host.as_str(), url.port.unwrap_or(6379)))
        .await
        .map_err(|e| Failure {
            status: if e.kind() == io::ErrorKind::TimedOut {
                ServiceStatus::TimedOut
            } else {
                ServiceStatus::Unreachable
            },
            detail: format!("cannot connect to {addr}: {e}"),
            answered: false,
        })?;
    let mut conn = Conn {
        stream: BufReader::new(stream),
    };

    if let Some(password) = &url.password {
        let mut command: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(user) = &url.user {
            command.push(user.as_bytes());
        }
        command.push(password.as_bytes());
        match conn.call(&command).await? {
            Reply::Simple(_) => {}
            Reply::Error(e) if e.code() == "LOADING" => {
                return Err(e.failure(ServiceStatus::Loading))
            }
            Reply::Error(e) => {
                let who = match &url.user {
                    Some(user) => format!("user {user:?}"),
                    None => "the default user".to_string(),
                };
                return Err(Failure {
                    status: ServiceStatus::AuthFailed,
                    detail: format!("authentication failed for {who}: {}", e.0),
                    answered: true,
                });
            }
            other => return Err(other.unexpected("AUTH")),
        }
    }

    match conn.call(&[b"PING"]).await? {
        Reply::Simple(s) if s == "PONG" => {}
        Reply::Error(e) => {
            let status = match e.code() {
                "NOAUTH" => ServiceStatus::AuthRequired,
                "WRONGPASS" => ServiceStatus::AuthFailed,
                "LOADING" => ServiceStatus::Loading,
                _ => ServiceStatus::ServerError,
            };
            let mut failure = e.failure(status);
            if status == ServiceStatus::AuthRequired {
                failure.detail = format!(
                    "the server requires a password and the URL has none: {}",
                    failure.detail
                );
            }
            return Err(failure);
        }
        other => return Err(other.unexpected("PING")),
    }

    // The version is a courtesy: an ACL may forbid INFO, and that is not a health problem.
    let version = match conn.call(&[b"INFO", b"server"]).await {
        Ok(Reply::Bulk(Some(text))) => text
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map(|v| v.trim().to_string()),
        _ => None,
    };
    Ok(version)
}

struct Conn {
    stream: BufReader<TcpStream>,
}

impl Conn {
    async fn call(&mut self, args: &[&[u8]]) -> Result<Reply, Failure> {
        let io_failure = |e: io::Error| Failure {
            status: ServiceStatus::ProtocolError,
            detail: format!("connection failed during the exchange: {e}"),
            answered: true,
        };
        self.stream
            .get_mut()
            .write_all(&encode_command(args))
            .await
            .map_err(io_failure)?;
        let line = read_line(&mut self.stream).await.map_err(io_failure)?;
        let reply = parse_reply_line(&line).map_err(|detail| Failure {
            status: ServiceStatus::ProtocolError,
            detail,
            answered: true,
        })?;
        match reply {
            Line::Simple(s) => Ok(Reply::Simple(s)),
            Line::Error(e) => Ok(Reply::Error(RedisError(e))),
            Line::Integer(i) => Ok(Reply::Other(format!(":{i}"))),
            Line::BulkLen(None) => Ok(Reply::Bulk(None)),
            Line::BulkLen(Some(len)) if len > MAX_BULK => Err(Failure {
                status: ServiceStatus::ProtocolError,
                detail: format!("bulk reply of {len} bytes is larger than expected"),
                answered: true,
            }),
            Line::BulkLen(Some(len)) => {
                let mut body = vec![0; len + 2];
                self.stream
                    .read_exact(&mut body)
                    .await
                    .map_err(io_failure)?;
                body.truncate(len);
                Ok(Reply::Bulk(Some(
                    String::from_utf8_lossy(&body).into_owned(),
                )))
            }
            Line::Array(n) => Ok(Reply::Other(format!("an array of {n:?} elements"))),
        }
    }
}

/// One reply, as far as these checks care.
enum Reply {
    Simple(String),
    Error(RedisError),
    Bulk(Option<String>),
    Other(String),
}

impl Reply {
    fn unexpected(&self, command: &str) -> Failure {
        let got = match self {
            Reply::Simple(s) => format!("+{s}"),
            Reply::Error(e) => format!("-{}", e.0),
            Reply::Bulk(_) => "a bulk string".to_string(),
            Reply::Other(s) => s.clone(),
        };
        Failure {
            status: ServiceStatus::ProtocolError,
            detail: format!("unexpected reply to {command}: {got}"),
            answered: true,
        }
    }
}

/// An error reply's text, without the leading `-`.
struct RedisError(String);

impl RedisError {
    /// The error code: the first word, by Redis convention (`NOAUTH`, `WRONGPASS`, `ERR`).
    fn code(&self) -> &str {
        self.0.split_whitespace().next().unwrap_or("")
    }

    fn failure(&self, status: ServiceStatus) -> Failure {
        Failure {
            status,
            detail: self.0.clone(),
            answered: true,
        }
    }
}

/// A RESP array of bulk strings: `*2\r\n$4\r\nAUTH\r\n$6\r\nsecret\r\n`.
pub(crate) fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The first line of a reply, parsed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    Simple(String),
    Error(String),
    Integer(i64),
    /// `$len`, or `$-1` (nil).
    BulkLen(Option<usize>),
    /// `*len`, or `*-1` (nil).
    Array(Option<usize>),
}

/// Reads one CRLF-terminated line (without the CRLF), at most [`MAX_LINE`] bytes.
async fn read_line(reader: &mut BufReader<TcpStream>) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut limited = (&mut *reader).take(MAX_LINE as u64);
    let n = limited.read_until(b'\n', &mut line).await?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "reply line is not terminated by CRLF (or is too long)",
        ));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

/// Parses one reply line (CRLF already removed). The error is a one-line description that
/// quotes at most 60 bytes of the reply, escaped.
pub(crate) fn parse_reply_line(line: &[u8]) -> Result<Line, String> {
    let not_resp = || {
        let shown: String = line
            .iter()
            .take(60)
            .flat_map(|b| std::ascii::escape_default(*b))
            .map(char::from)
            .collect();
        format!("the server did not answer in the Redis protocol (got {shown:?}); is this a Redis server?")
    };
    let (&kind, rest) = line.split_first().ok_or_else(not_resp)?;
    let text = std::str::from_utf8(rest).map_err(|_| not_resp())?;
    let length = |text: &str| -> Result<Option<usize>, String> {
        if text == "-1" {
            return Ok(None);
        }
        text.parse::<usize>().map(Some).map_err(|_| not_resp())
    };
    match kind {
        b'+' => Ok(Line::Simple(text.to_string())),
        b'-' => Ok(Line::Error(text.to_string())),
        b':' => text.parse().map(Line::Integer).map_err(|_| not_resp()),
        b'$' => length(text).map(Line::BulkLen),
        b'*' => length(text).map(Line::Array),
        _ => Err(not_resp()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands_as_resp_arrays() {
        assert_eq!(encode_command(&[b"PING"]), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            encode_command(&[b"AUTH", b"app", b"p w\r\nd"]),
            b"*3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n$6\r\np w\r\nd\r\n"
        );
    }

    #[test]
    fn parses_reply_lines() {
        assert_eq!(parse_reply_line(b"+PONG"), Ok(Line::Simple("PONG".into())));
        assert_eq!(
            parse_reply_line(b"-NOAUTH Authentication required."),
            Ok(Line::Error("NOAUTH Authentication required.".into()))
        );
        assert_eq!(parse_reply_line(b":42"), Ok(Line::Integer(42)));
        assert_eq!(parse_reply_line(b"$5"), Ok(Line::BulkLen(Some(5))));
        assert_eq!(parse_reply_line(b"$-1"), Ok(Line::BulkLen(None)));
        assert_eq!(parse_reply_line(b"*2"), Ok(Line::Array(Some(2))));
        let err = parse_reply_line(b"HTTP/1.1 400 Bad Request").unwrap_err();
        assert!(err.contains("HTTP/1.1 400"), "{err}");
        assert!(parse_reply_line(b"").is_err());
        assert!(parse_reply_line(b"$abc").is_err());
    }

    #[test]
    fn error_codes_are_the_first_word() {
        assert_eq!(
            RedisError("LOADING Redis is loading the dataset in memory".into()).code(),
            "LOADING"
        );
        assert_eq!(RedisError("ERR invalid password".into()).code(), "ERR");
        assert_eq!(RedisError(String::new()).code(), "");
    }
}

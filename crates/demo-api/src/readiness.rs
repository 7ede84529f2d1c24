//! `/health/ready` probes for the backing services named by `DATABASE_URL` and
//! `REDIS_URL`. Deliberately shallow (TCP connect, Redis `PING`): enough to make
//! a deploy wait for or fail on a missing dependency without any client crate.

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const POSTGRES_PORT: u16 = 5432;
const REDIS_PORT: u16 = 6379;

/// A server `/health/ready` must reach.
#[derive(Debug, PartialEq)]
pub struct Dependency {
    pub kind: Kind,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, PartialEq)]
pub enum Kind {
    Postgres,
    Redis { auth: Option<RedisAuth> },
}

#[derive(PartialEq)]
pub struct RedisAuth {
    /// Redis 6 ACL user; `None` for the classic `AUTH password`.
    pub user: Option<String>,
    pub password: String,
}

// Hand-written so a password can never end up in a log or assertion message.
impl fmt::Debug for RedisAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Shown in `/health/ready` bodies: names the server, never the credentials.
impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.kind {
            Kind::Postgres => "postgres",
            Kind::Redis { .. } => "redis",
        };
        if self.host.contains(':') {
            write!(f, "{name} [{}]:{}", self.host, self.port)
        } else {
            write!(f, "{name} {}:{}", self.host, self.port)
        }
    }
}

impl Dependency {
    /// `postgres://user:pass@host:port/db` (also `postgresql://`); port defaults to 5432.
    pub fn postgres(url: &str) -> Result<Self, String> {
        let url = Url::parse(url, &["postgres", "postgresql"])?;
        Ok(Dependency {
            kind: Kind::Postgres,
            host: url.host,
            port: url.port.unwrap_or(POSTGRES_PORT),
        })
    }

    /// `redis://[[user]:pass@]host:port[/db]`; port defaults to 6379.
    pub fn redis(url: &str) -> Result<Self, String> {
        let url = Url::parse(url, &["redis"])?;
        let auth = url.password.map(|password| RedisAuth {
            user: url.user,
            password,
        });
        Ok(Dependency {
            kind: Kind::Redis { auth },
            host: url.host,
            port: url.port.unwrap_or(REDIS_PORT),
        })
    }

    /// `Err` says why the server counts as unreachable.
    pub async fn probe(&self) -> Result<(), String> {
        match tokio::time::timeout(PROBE_TIMEOUT, self.probe_inner()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
        }
    }

    async fn probe_inner(&self) -> Result<(), String> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect failed: {e}"))?;
        match &self.kind {
            Kind::Postgres => Ok(()),
            Kind::Redis { auth } => redis_ping(stream, auth.as_ref())
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

/// Probes all dependencies concurrently; returns one line per failure.
pub async fn failures(deps: &[Dependency]) -> Vec<String> {
    let results = futures_util::future::join_all(
        deps.iter()
            .map(|dep| async move { (dep, dep.probe().await) }),
    )
    .await;
    results
        .into_iter()
        .filter_map(|(dep, result)| result.err().map(|why| format!("{dep} unreachable: {why}")))
        .collect()
}

async fn redis_ping(mut stream: TcpStream, auth: Option<&RedisAuth>) -> std::io::Result<()> {
    let mut request = Vec::new();
    if let Some(auth) = auth {
        // RESP array form, so passwords with spaces or quotes need no escaping.
        let mut args = vec!["AUTH"];
        args.extend(auth.user.as_deref());
        args.push(&auth.password);
        request.extend(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            request.extend(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
    }
    request.extend(b"PING\r\n");
    stream.write_all(&request).await?;

    let mut reader = BufReader::new(stream);
    if auth.is_some() {
        let reply = read_reply(&mut reader).await?;
        if !reply.starts_with("+OK") {
            return Err(other(format!("AUTH rejected: {reply}")));
        }
    }
    let reply = read_reply(&mut reader).await?;
    if reply.starts_with("+PONG") {
        Ok(())
    } else {
        Err(other(format!("unexpected reply to PING: {reply}")))
    }
}

async fn read_reply(reader: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut line = String::new();
    // Bounded so a misbehaving peer can't make us buffer without limit.
    reader.take(512).read_line(&mut line).await?;
    if line.is_empty() {
        return Err(other("connection closed without a reply".into()));
    }
    Ok(line.trim_end().to_owned())
}

fn other(message: String) -> std::io::Error {
    std::io::Error::other(message)
}

/// The parts of a `scheme://user:pass@host:port/...` URL the probes need.
#[derive(Debug, PartialEq)]
struct Url {
    user: Option<String>,
    password: Option<String>,
    host: String,
    port: Option<u16>,
}

impl Url {
    fn parse(url: &str, schemes: &[&str]) -> Result<Self, String> {
        let expected = || format!("expected {}://[user:password@]host[:port]", schemes[0]);
        let (scheme, rest) = url.split_once("://").ok_or_else(expected)?;
        if !schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
            return Err(format!("unsupported scheme {scheme:?}; {}", expected()));
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        // The last '@' ends the credentials: an unencoded '@' in a password still works.
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let (user, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
            Some((user, password)) => (
                Some(percent_decode(user)).filter(|u| !u.is_empty()),
                Some(percent_decode(password)).filter(|p| !p.is_empty()),
            ),
            None => (None, None),
        };
        let (host, port) = split_host_port(host_port)?;
        if host.is_empty() {
            return Err(format!(
                "missing host (Unix sockets are not supported); {}",
                expected()
            ));
        }
        Ok(Url {
            user,
            password,
            host: host.to_owned(),
            port,
        })
    }
}

fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        // IPv6 literal: [::1]:5432
        let (host, after) = rest.split_once(']').ok_or("unclosed '[' in host")?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(after.strip_prefix(':').ok_or("junk after ']' in host")?),
            ),
        }
    } else {
        match s.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(
            p.parse::<u16>()
                .map_err(|_| format!("invalid port {p:?}"))?,
        ),
    };
    Ok((host, port))
}

/// Decodes `%XX` escapes (credentials with reserved characters must be encoded);
/// malformed escapes are kept literally.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls() {
        let dep = Dependency::postgres("postgres://app:s3cret@db.internal:6543/app").unwrap();
        assert_eq!(dep.kind, Kind::Postgres);
        assert_eq!((dep.host.as_str(), dep.port), ("db.internal", 6543));
        assert_eq!(dep.to_string(), "postgres db.internal:6543");

        let dep = Dependency::postgres("postgresql://localhost/app?sslmode=disable").unwrap();
        assert_eq!((dep.host.as_str(), dep.port), ("localhost", 5432));

        let dep = Dependency::postgres("postgres://u:p@[::1]:5433/db").unwrap();
        assert_eq!((dep.host.as_str(), dep.port), ("::1", 5433));
        assert_eq!(dep.to_string(), "postgres [::1]:5433");
    }

    #[test]
    fn redis_urls() {
        let dep = Dependency::redis("redis://cache:6380").unwrap();
        assert_eq!((dep.host.as_str(), dep.port), ("cache", 6380));
        assert_eq!(dep.kind, Kind::Redis { auth: None });

        let dep = Dependency::redis("redis://:p%40ss@127.0.0.1/0").unwrap();
        assert_eq!(dep.port, 6379);
        let auth = RedisAuth {
            user: None,
            password: "p@ss".into(),
        };
        assert_eq!(dep.kind, Kind::Redis { auth: Some(auth) });

        let dep = Dependency::redis("redis://alice:pw@cache:6379").unwrap();
        let Kind::Redis { auth: Some(auth) } = &dep.kind else {
            panic!("expected auth")
        };
        assert_eq!(auth.user.as_deref(), Some("alice"));
        assert!(!format!("{dep} {dep:?}").contains("pw"));
    }

    #[test]
    fn bad_urls() {
        assert!(Dependency::postgres("db:5432").is_err());
        assert!(Dependency::postgres("mysql://db:3306/x").is_err());
        assert!(Dependency::postgres("postgres:///db").is_err());
        assert!(Dependency::postgres("postgres://db:port/x").is_err());
        assert!(Dependency::postgres("postgres://[::1/x").is_err());
        assert!(Dependency::redis("rediss://cache:6379").is_err());
        assert!(Dependency::redis("redis://cache:99999").is_err());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2Fc"), "a b/c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[tokio::test]
    async fn unreachable_server_is_reported() {
        // Grab a free port, then close it so connecting is refused.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let deps = [Dependency::postgres(&format!("postgres://u:pw@127.0.0.1:{port}/db")).unwrap()];
        let failures = failures(&deps).await;
        assert_eq!(failures.len(), 1);
        assert!(failures[0].starts_with(&format!("postgres 127.0.0.1:{port} unreachable")));
        assert!(!failures[0].contains("pw"));
    }
}

//! Infrastructure services (PostgreSQL, Redis): health checked with their real protocols, and
//! brought up under Docker Compose.
//!
//! # Layout
//! - [`postgres`]: connect with tokio-postgres, `SELECT 1`, `SHOW server_version`; failures
//!   classified by SQLSTATE and error type, never by message text.
//! - [`redis`]: a hand-written RESP exchange: `AUTH` when the URL has a password, then `PING`.
//! - [`compose`]: which compose CLI (`docker compose` or `docker-compose`, or `compose.command`)
//!   and every compose command line cutover runs: `up -d --no-recreate`, the explicit
//!   `--force-recreate` of `services recreate`, and read-only queries. Never a destructive verb
//!   (a test scans this crate's sources for one).
//! - [`engine`]: the Docker engine's API, read-only (`/_ping`, container inspect).
//! - [`stack`]: a configured service under compose: its container, drift from the compose file,
//!   waiting until both the protocol check and the container's healthcheck pass.
//! - [`url`]: [`redact_url`], the only way a service URL is ever shown.
//!
//! Secrets: no type in this module stores a URL with its password. Every URL that reaches an
//! output, a log line or an error goes through [`redact_url`] first, and server replies that are
//! quoted back are scrubbed of the password (a misbehaving server could echo it).

pub mod compose;
pub mod engine;
pub mod postgres;
pub mod redis;
pub mod stack;
pub mod url;

use crate::config::ServiceConfig;
pub use crate::vocab::ServiceKind;
pub use postgres::check_postgres;
pub use redis::check_redis;
pub use url::redact_url;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

/// What one health check found. Only [`ServiceStatus::Up`] is healthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    /// Answered the check (`SELECT 1`, `+PONG`).
    Up,
    /// Nothing accepts connections at the address (refused, no route, unknown host).
    Unreachable,
    /// No complete answer within the check's timeout.
    TimedOut,
    /// The server rejected the credentials (wrong password, unknown role or user).
    AuthFailed,
    /// The server wants credentials and the URL has none (`-NOAUTH`, PostgreSQL asking for a
    /// password the URL does not carry).
    AuthRequired,
    /// PostgreSQL: the database named in the URL does not exist (SQLSTATE 3D000).
    NoSuchDatabase,
    /// Redis is loading its dataset into memory (`-LOADING`); it will answer later.
    Loading,
    /// PostgreSQL is starting up or shutting down (SQLSTATE 57P03); it will answer later.
    Starting,
    /// The server answered with an error not covered above (too many connections, ...).
    ServerError,
    /// The peer does not speak the expected protocol.
    ProtocolError,
    /// The URL cannot be used (malformed, or a feature this check does not support, like TLS).
    InvalidUrl,
}

impl ServiceStatus {
    /// Failures that may clear up by themselves while a service starts; the others need a
    /// person (a wrong password does not fix itself), so [`wait_healthy`] stops at them.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ServiceStatus::Unreachable
                | ServiceStatus::TimedOut
                | ServiceStatus::Loading
                | ServiceStatus::Starting
                | ServiceStatus::ServerError
                | ServiceStatus::ProtocolError
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Up => "up",
            ServiceStatus::Unreachable => "unreachable",
            ServiceStatus::TimedOut => "timed out",
            ServiceStatus::AuthFailed => "authentication failed",
            ServiceStatus::AuthRequired => "authentication required",
            ServiceStatus::NoSuchDatabase => "no such database",
            ServiceStatus::Loading => "loading",
            ServiceStatus::Starting => "starting",
            ServiceStatus::ServerError => "server error",
            ServiceStatus::ProtocolError => "protocol error",
            ServiceStatus::InvalidUrl => "invalid url",
        }
    }
}

impl fmt::Display for ServiceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one health check of one service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceHealth {
    /// The service's name in the config (`db`), when the caller set one with [`Self::named`].
    pub name: Option<String>,
    pub kind: ServiceKind,
    /// The URL checked, password masked: what a person needs to see which server this was.
    pub target: String,
    /// `status == Up`; kept as a field so JSON consumers need not know the status list.
    pub ok: bool,
    pub status: ServiceStatus,
    /// One line for a person: what was found, or what failed and why.
    pub detail: String,
    /// Server version, when the server told it (`SHOW server_version`, `INFO server`).
    pub version: Option<String>,
    /// Time for the whole check (connect, authenticate, query), when it got that far.
    pub latency_ms: Option<f64>,
}

impl ServiceHealth {
    pub(crate) fn new(
        kind: ServiceKind,
        target: String,
        status: ServiceStatus,
        detail: impl Into<String>,
    ) -> ServiceHealth {
        ServiceHealth {
            name: None,
            kind,
            target,
            ok: status == ServiceStatus::Up,
            status,
            detail: detail.into(),
            version: None,
            latency_ms: None,
        }
    }

    /// Sets the config name shown in tables and messages.
    pub fn named(mut self, name: impl Into<String>) -> ServiceHealth {
        self.name = Some(name.into());
        self
    }
}

impl fmt::Display for ServiceHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} ({} {})", self.kind, self.target)?,
            None => write!(f, "{} {}", self.kind, self.target)?,
        }
        // The detail of a failure already says what the status says, in words.
        match (self.ok, self.detail.is_empty()) {
            (false, false) => write!(f, ": {}", self.detail)?,
            _ => write!(f, ": {}", self.status)?,
        }
        let mut extra = Vec::new();
        if self.ok {
            if let Some(version) = &self.version {
                extra.push(version.clone());
            }
        }
        if let Some(ms) = self.latency_ms {
            extra.push(format!("{ms:.1} ms"));
        }
        if !extra.is_empty() {
            write!(f, " ({})", extra.join(", "))?;
        }
        Ok(())
    }
}

pub(crate) fn elapsed_ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// Runs `check` every `interval` until it reports [`ServiceStatus::Up`] (returned as `Ok`), a
/// failure that will not clear up by itself ([`ServiceStatus::is_transient`] is false), or
/// `timeout` passes; both of those return the last result as `Err`.
///
/// Each check should bound itself (the checks in this module take a timeout); a check still
/// running at the deadline is not cut short.
pub async fn wait_healthy<F, Fut>(
    mut check: F,
    timeout: Duration,
    interval: Duration,
) -> Result<ServiceHealth, ServiceHealth>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ServiceHealth>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let health = check().await;
        if health.ok {
            return Ok(health);
        }
        if !health.status.is_transient() {
            return Err(health);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(health);
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
    }
}

/// Replaces every occurrence of `secret` in `text` (server replies quoted in a detail).
pub(crate) fn scrub(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(secret) if !secret.is_empty() => text.replace(secret, "****"),
        _ => text.to_string(),
    }
}

/// Checks one service; a URL that cannot be resolved is reported, never printed.
pub async fn check_service(service: &ServiceConfig) -> ServiceHealth {
    let timeout = service.timeout.get();
    let health = match service.url() {
        Ok(url) => match service.kind {
            ServiceKind::Postgres => check_postgres(&url, timeout).await,
            ServiceKind::Redis => check_redis(&url, timeout).await,
        },
        Err(why) => ServiceHealth {
            name: None,
            kind: service.kind,
            target: String::new(),
            ok: false,
            status: ServiceStatus::InvalidUrl,
            detail: why,
            version: None,
            latency_ms: None,
        },
    };
    health.named(&service.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn health(status: ServiceStatus) -> ServiceHealth {
        ServiceHealth::new(ServiceKind::Redis, "redis://h".into(), status, "")
    }

    #[tokio::test]
    async fn wait_healthy_retries_transient_failures() {
        let calls = AtomicU32::new(0);
        let result = wait_healthy(
            || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        health(ServiceStatus::Loading)
                    } else {
                        health(ServiceStatus::Up)
                    }
                }
            },
            Duration::from_secs(5),
            Duration::from_millis(1),
        )
        .await;
        assert!(result.unwrap().ok);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn wait_healthy_stops_at_a_permanent_failure() {
        let calls = AtomicU32::new(0);
        let result = wait_healthy(
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { health(ServiceStatus::AuthFailed) }
            },
            Duration::from_secs(5),
            Duration::from_millis(1),
        )
        .await;
        assert_eq!(result.unwrap_err().status, ServiceStatus::AuthFailed);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn wait_healthy_gives_up_at_the_deadline() {
        let started = Instant::now();
        let result = wait_healthy(
            || async { health(ServiceStatus::Unreachable) },
            Duration::from_millis(50),
            Duration::from_millis(10),
        )
        .await;
        assert_eq!(result.unwrap_err().status, ServiceStatus::Unreachable);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn display_and_json() {
        let mut h = health(ServiceStatus::Up).named("cache");
        h.latency_ms = Some(1.26);
        h.version = Some("7.0.15".into());
        assert_eq!(
            h.to_string(),
            "cache (redis redis://h): up (7.0.15, 1.3 ms)"
        );
        let mut down = health(ServiceStatus::Unreachable);
        down.detail = "cannot connect to h:6379: refused".into();
        assert_eq!(
            down.to_string(),
            "redis redis://h: cannot connect to h:6379: refused"
        );
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["status"], "up");
        assert_eq!(json["kind"], "redis");
        assert_eq!(json["ok"], true);
    }
}

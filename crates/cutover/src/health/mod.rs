//! HTTP health probes and the start-up health gate.
//!
//! A probe is `GET path` on a fresh connection to the instance's private port: a new connection
//! each time also proves the instance still accepts. 2xx within the timeout passes. It speaks
//! the protocol the proxy speaks to the instance (`upstream`): HTTP/1.1, or HTTP/2 without TLS;
//! with `health.grpc` it is the standard gRPC health check instead (`grpc.rs`).

mod grpc;
mod request;

use crate::config::{ProcessConfig, UpstreamProtocol};
use crate::supervisor::Instance;
use bytes::Bytes;
use http_body_util::Empty;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The result of one probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub ok: bool,
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// What went wrong, when no response arrived.
    pub error: Option<String>,
    pub elapsed_ms: u64,
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.status, &self.error) {
            // An answer that still fails: a gRPC health check's NOT_SERVING, say.
            (Some(status), Some(error)) => {
                write!(f, "HTTP {status}, {error} in {} ms", self.elapsed_ms)
            }
            (Some(status), None) => write!(f, "HTTP {status} in {} ms", self.elapsed_ms),
            (None, Some(error)) => write!(f, "{error} after {} ms", self.elapsed_ms),
            (None, None) => write!(f, "no answer after {} ms", self.elapsed_ms),
        }
    }
}

/// One probe of the instance at `addr`, as `process` configures it.
pub async fn probe(addr: SocketAddr, process: &ProcessConfig, timeout: Duration) -> Probe {
    let path = process.health.path.as_str();
    let asked = async {
        match (process.upstream, process.health.grpc) {
            (_, true) => grpc::check(addr).await,
            (UpstreamProtocol::H2c, false) => request::get_status_h2c(addr, path).await,
            (UpstreamProtocol::Http1, false) => request::get_status(addr, path).await,
        }
    };
    let started = Instant::now();
    let outcome = tokio::time::timeout(timeout, asked).await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(Ok(request::Answer { status, failure })) => Probe {
            ok: (200..300).contains(&status) && failure.is_none(),
            status: Some(status),
            error: failure,
            elapsed_ms,
        },
        Ok(Err(error)) => Probe {
            ok: false,
            status: None,
            error: Some(error),
            elapsed_ms,
        },
        Err(_) => Probe {
            ok: false,
            status: None,
            error: Some(format!("timed out after {timeout:?}")),
            elapsed_ms,
        },
    }
}

/// The watchdog's last view of the serving instance, read by `status`.
#[derive(Default)]
pub struct HealthBoard(std::sync::Mutex<Option<(i64, crate::protocol::HealthStatus)>>);

impl HealthBoard {
    /// The health of instance `instance_id`, if that is the instance the watchdog watches.
    pub fn get(&self, instance_id: i64) -> Option<crate::protocol::HealthStatus> {
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref()
            .filter(|(id, _)| *id == instance_id)
            .map(|(_, status)| status.clone())
    }

    pub(crate) fn set(&self, instance_id: i64, status: crate::protocol::HealthStatus) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((instance_id, status));
    }
}

/// Why an instance did not pass the start-up gate.
#[derive(Debug)]
pub enum GateFailure {
    Exited {
        status: String,
        last: Option<Probe>,
    },
    TimedOut {
        after: Duration,
        last: Option<Probe>,
    },
}

impl fmt::Display for GateFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = |p: &Option<Probe>| match p {
            Some(p) => format!("last probe: {p}"),
            None => "no probe answered".into(),
        };
        match self {
            GateFailure::Exited { status, last: l } => {
                write!(
                    f,
                    "the new instance {status} before it became healthy ({})",
                    last(l)
                )
            }
            GateFailure::TimedOut { after, last: l } => write!(
                f,
                "the new instance was not healthy within {} ({})",
                humantime::format_duration(*after),
                last(l)
            ),
        }
    }
}

/// Probes every `interval` until `healthy_threshold` consecutive successes, the process exits,
/// or `start_timeout` passes. `on_probe` sees every result (for progress events).
pub async fn wait_healthy(
    instance: &Instance,
    process: &ProcessConfig,
    mut on_probe: impl FnMut(&Probe, u32),
) -> Result<Duration, GateFailure> {
    let config = &process.health;
    let started = Instant::now();
    let deadline = started + config.start_timeout.get();
    let mut consecutive = 0u32;
    let mut last = None;
    loop {
        if let Some(status) = instance.exit_status() {
            return Err(GateFailure::Exited { status, last });
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timeout = config
            .timeout
            .get()
            .min(remaining.max(Duration::from_millis(1)));
        let result = tokio::select! {
            result = probe(instance.addr, process, timeout) => result,
            status = instance.exited() => return Err(GateFailure::Exited { status, last }),
        };
        if result.ok {
            consecutive += 1;
        } else {
            consecutive = 0;
        }
        on_probe(&result, consecutive);
        last = Some(result);
        if consecutive >= config.healthy_threshold {
            return Ok(started.elapsed());
        }
        let next = Instant::now() + config.interval.get();
        if next >= deadline {
            // One last chance to exit cleanly before reporting a timeout.
            if let Some(status) = instance.exit_status() {
                return Err(GateFailure::Exited { status, last });
            }
            return Err(GateFailure::TimedOut {
                after: config.start_timeout.get(),
                last,
            });
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            status = instance.exited() => return Err(GateFailure::Exited { status, last }),
        }
    }
}

/// GET an http:// or https:// URL and return its status and body (at most 1 MiB), for hook
/// verification.
pub async fn fetch_text(url: &str, timeout: Duration) -> Result<(u16, String), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {}: {e}", crate::notify::mask_url(url)))?;
    let client = crate::https::client::<Empty<Bytes>>(timeout)?;
    let request = http::Request::get(uri)
        .header(http::header::USER_AGENT, "cutover-verify")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let fetch = async {
        let response = client.request(request).await.map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                text = format!("{text}: {cause}");
                source = cause.source();
            }
            text
        })?;
        let status = response.status().as_u16();
        let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(
            response.into_body(),
            1 << 20,
        ))
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {timeout:?}")))
}

//! The Docker engine's own API, read-only: is an engine there (`GET /_ping`), and what is a
//! container doing (`GET /containers/{id}/json`: state, health, start time, compose labels).
//!
//! Why not `docker inspect`: the standalone `docker-compose` works without the `docker` CLI, so
//! a machine may have only compose; the engine's socket is always there when an engine is. Only
//! GET requests exist in this module: nothing here can change a container.
//!
//! The engine is found like the Docker CLIs find it: `DOCKER_HOST` (`unix://PATH` or
//! `tcp://HOST:PORT` without TLS), else `/var/run/docker.sock`.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};

/// The socket every Docker engine listens on by default.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// Both calls are local and small.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the engine listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DockerHost {
    Unix(PathBuf),
    Tcp(String),
}

impl DockerHost {
    /// From `DOCKER_HOST`, like the Docker CLIs; `Err` names what cannot be used.
    pub fn from_env() -> Result<DockerHost, EngineError> {
        match std::env::var("DOCKER_HOST") {
            Ok(value) if !value.is_empty() => DockerHost::parse(&value),
            _ => Ok(DockerHost::Unix(PathBuf::from(DEFAULT_SOCKET))),
        }
    }

    pub fn parse(value: &str) -> Result<DockerHost, EngineError> {
        if let Some(path) = value.strip_prefix("unix://") {
            return Ok(DockerHost::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = value.strip_prefix("tcp://") {
            if std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty()) {
                return Err(EngineError::Unsupported(format!(
                    "DOCKER_HOST={value} with DOCKER_TLS_VERIFY (TLS to the engine is not supported)"
                )));
            }
            return Ok(DockerHost::Tcp(addr.trim_end_matches('/').to_string()));
        }
        Err(EngineError::Unsupported(format!(
            "DOCKER_HOST={value} (only unix:// and tcp:// are supported)"
        )))
    }
}

impl fmt::Display for DockerHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DockerHost::Unix(path) => write!(f, "unix://{}", path.display()),
            DockerHost::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot talk to the Docker engine: {0}")]
    Unsupported(String),
    #[error("no Docker engine answers at {host}{}: {detail}", from_env(host))]
    Unreachable { host: DockerHost, detail: String },
    #[error("the Docker engine at {host} answered {status}: {detail}")]
    Api {
        host: DockerHost,
        status: StatusCode,
        detail: String,
    },
}

/// Says whether the address came from `DOCKER_HOST`: the fix differs.
fn from_env(host: &DockerHost) -> &'static str {
    match std::env::var("DOCKER_HOST") {
        Ok(v) if !v.is_empty() && DockerHost::parse(&v).is_ok_and(|h| &h == host) => {
            " (from DOCKER_HOST)"
        }
        _ => " (the default; set DOCKER_HOST for another engine)",
    }
}

/// What the engine says about one container.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    /// `running`, `exited`, `restarting`, `created`, ...
    pub state: String,
    /// The container's own healthcheck: `starting`, `healthy`, `unhealthy`; `None` without one.
    pub health: Option<String>,
    /// When the container's process started (RFC 3339), while it runs.
    pub started_at: Option<String>,
    /// The compose definition's hash when compose created it (`com.docker.compose.config-hash`).
    pub config_hash: Option<String>,
}

impl Container {
    /// How long the container has been running, when it is.
    pub fn uptime(&self, now: SystemTime) -> Option<Duration> {
        if self.state != "running" {
            return None;
        }
        let started = humantime::parse_rfc3339_weak(self.started_at.as_deref()?).ok()?;
        now.duration_since(started).ok()
    }

    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawContainer {
    id: String,
    name: String,
    state: RawState,
    config: RawConfig,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawState {
    status: String,
    started_at: Option<String>,
    health: Option<RawHealth>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawHealth {
    status: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawConfig {
    labels: Option<BTreeMap<String, String>>,
}

pub struct Engine {
    host: DockerHost,
}

impl Engine {
    pub fn from_env() -> Result<Engine, EngineError> {
        Ok(Engine {
            host: DockerHost::from_env()?,
        })
    }

    pub fn host(&self) -> &DockerHost {
        &self.host
    }

    /// `Ok` when an engine answers `GET /_ping`.
    pub async fn ping(&self) -> Result<(), EngineError> {
        self.get("/_ping").await.map(drop)
    }

    /// The container `id` (a full or short id, or a name).
    pub async fn inspect(&self, id: &str) -> Result<Container, EngineError> {
        let body = self.get(&format!("/containers/{id}/json")).await?;
        let raw: RawContainer = serde_json::from_slice(&body).map_err(|e| EngineError::Api {
            host: self.host.clone(),
            status: StatusCode::OK,
            detail: format!("unexpected container JSON: {e}"),
        })?;
        let running = raw.state.status == "running";
        Ok(Container {
            id: raw.id,
            name: raw.name.trim_start_matches('/').to_string(),
            state: raw.state.status,
            health: raw.state.health.map(|h| h.status),
            started_at: raw.state.started_at.filter(|_| running),
            config_hash: raw
                .config
                .labels
                .and_then(|mut l| l.remove("com.docker.compose.config-hash")),
        })
    }

    async fn get(&self, path: &str) -> Result<Bytes, EngineError> {
        let unreachable = |detail: String| EngineError::Unreachable {
            host: self.host.clone(),
            detail,
        };
        let exchange = async {
            match &self.host {
                DockerHost::Unix(socket) => {
                    let stream = tokio::net::UnixStream::connect(socket)
                        .await
                        .map_err(|e| unreachable(format!("connect {}: {e}", socket.display())))?;
                    self.exchange(stream, path).await
                }
                DockerHost::Tcp(addr) => {
                    let stream = tokio::net::TcpStream::connect(addr.as_str())
                        .await
                        .map_err(|e| unreachable(format!("connect {addr}: {e}")))?;
                    self.exchange(stream, path).await
                }
            }
        };
        tokio::time::timeout(API_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(unreachable(format!(
                    "no answer within {}s",
                    API_TIMEOUT.as_secs()
                )))
            })
    }

    async fn exchange<S>(&self, stream: S, path: &str) -> Result<Bytes, EngineError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let failed = |detail: String| EngineError::Unreachable {
            host: self.host.clone(),
            detail,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(e.to_string()))?;
        tokio::spawn(connection);
        let request = Request::get(path)
            .header(http::header::HOST, "docker")
            .body(Empty::<Bytes>::new())
            .expect("a valid request");
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| failed(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(EngineError::Api {
                host: self.host.clone(),
                status,
                detail: String::from_utf8_lossy(&body).trim().to_string(),
            });
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_forms() {
        assert_eq!(
            DockerHost::parse("unix:///run/d.sock").unwrap(),
            DockerHost::Unix("/run/d.sock".into())
        );
        assert_eq!(
            DockerHost::parse("tcp://127.0.0.1:2375")
                .unwrap()
                .to_string(),
            "tcp://127.0.0.1:2375"
        );
        let err = DockerHost::parse("ssh://me@host").unwrap_err().to_string();
        assert!(err.contains("only unix:// and tcp://"), "{err}");
    }

    #[test]
    fn uptime_of_a_running_container() {
        let mut c = Container {
            id: "0123456789abcdef".into(),
            name: "p_db_1".into(),
            state: "running".into(),
            health: None,
            started_at: Some("2026-01-01T00:00:00.123456789Z".into()),
            config_hash: None,
        };
        let now = humantime::parse_rfc3339("2026-01-01T00:01:00Z").unwrap();
        let up = c.uptime(now).unwrap();
        assert!(up > Duration::from_secs(59) && up < Duration::from_secs(60));
        assert_eq!(c.short_id(), "0123456789ab");
        c.state = "exited".into();
        assert_eq!(c.uptime(now), None);
    }
}

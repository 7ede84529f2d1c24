//! The CLI's side of the control protocol.

use crate::protocol::{ErrorBody, Event};
use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::UnixStream;

/// How long connecting to the control socket may take. A daemon that is alive but stopped
/// (SIGSTOP, swapped out, wedged) still gets connections queued by the kernel, so this mostly
/// bounds a full backlog; [`ANSWER_TIMEOUT`] bounds the rest.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a read-only request may wait for its whole answer, and a deploy or rollback for the
/// start of its event stream (the daemon answers both at once when it is alive).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a request that changes things (a deploy, a rollback) may take to start answering:
/// the daemon commits the pipeline to SQLite (fsync) first, which a busy disk can slow down.
/// The CLI pinged the daemon just before, so a daemon that is down is still told at once.
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the cutover daemon at {}: {source} (is `cutover serve` running?)", socket.display())]
    Unreachable {
        socket: PathBuf,
        // Not a `#[source]`: the message already says it, and error chains would repeat it.
        source: std::io::Error,
    },
    /// The socket exists but this user may not open it (or its directory).
    #[error("permission denied on {}: run as the cutover user or join its group", socket.display())]
    PermissionDenied { socket: PathBuf },
    /// Connected (or connecting), but no answer in time: the daemon is stopped or wedged.
    #[error("the cutover daemon{} is not answering on {} (no answer within {}s)",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(), socket.display(), waited.as_secs())]
    NotAnswering {
        socket: PathBuf,
        pid: Option<i32>,
        waited: Duration,
    },
    #[error("control connection failed: {0}")]
    Http(#[from] hyper::Error),
    /// The daemon refused the request; the message is its own.
    #[error("{message}")]
    Refused { status: StatusCode, message: String },
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
}

impl ClientError {
    /// No daemon is running there: read-only commands show the database instead.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. })
    }

    /// A daemon runs but does not answer: read-only commands show the database, with a warning.
    pub fn is_not_answering(&self) -> bool {
        matches!(self, ClientError::NotAnswering { .. })
    }
}

/// One connection to the daemon: the request sender, and who is listening (for messages).
struct Connection<B> {
    sender: hyper::client::conn::http1::SendRequest<B>,
    daemon_pid: Option<i32>,
}

pub struct Client {
    socket: PathBuf,
    /// The config file this command read, compared with every answer's.
    drift: Option<super::drift::Drift>,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
            drift: None,
        }
    }

    /// Compares the daemon's config with `config` on every answer; see [`super::drift`].
    pub fn comparing(mut self, config: &crate::config::Config) -> Self {
        self.drift = Some(super::drift::Drift::new(&config.path, &config.sha256));
        self
    }

    /// For commands that otherwise never talk to the daemon (`validate`, `env check`, ...):
    /// asks it once, briefly, which config it runs. No daemon, or a slow one, is not an error
    /// here.
    pub async fn compare_config(&self) {
        if self.drift.is_some() {
            let ask = self.send(Method::GET, "/v1/status", None);
            let _ = tokio::time::timeout(Duration::from_secs(1), ask).await;
        }
    }

    fn observe(&self, headers: &http::HeaderMap) {
        if let Some(drift) = &self.drift {
            drift.observe(headers);
        }
    }

    /// The daemon's own refusal, with the config notice when it is about components that the
    /// file this command read has and the daemon's version lacks.
    fn refused(&self, status: StatusCode, message: String) -> ClientError {
        let notice = self.drift.as_ref().and_then(|d| d.notice_if_differs());
        let message = match notice {
            Some(notice) if super::drift::is_about_unknown_components(&message) => {
                format!("{message} ({notice})")
            }
            _ => message,
        };
        ClientError::Refused { status, message }
    }

    fn not_answering(&self, pid: Option<i32>, waited: Duration) -> ClientError {
        ClientError::NotAnswering {
            socket: self.socket.clone(),
            pid,
            waited,
        }
    }

    /// One HTTP/1.1 connection to the daemon's control socket.
    async fn connect<B>(&self) -> Result<Connection<B>, ClientError>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let connecting = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&self.socket));
        let stream = match connecting.await {
            Err(_elapsed) => return Err(self.not_answering(None, CONNECT_TIMEOUT)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(ClientError::PermissionDenied {
                    socket: self.socket.clone(),
                })
            }
            Ok(Err(source)) => {
                return Err(ClientError::Unreachable {
                    socket: self.socket.clone(),
                    source,
                })
            }
            Ok(Ok(stream)) => stream,
        };
        // The listener's credentials: known even when the daemon is stopped and accepts nothing.
        let daemon_pid = stream.peer_cred().ok().and_then(|c| c.pid());
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Connection { sender, daemon_pid })
    }

    /// Asks for the status with the read-only timeout: fails fast when the daemon is stopped,
    /// before a deploy uploads anything to a socket nobody reads.
    pub async fn ping(&self) -> Result<(), ClientError> {
        self.get::<serde_json::Value>("/v1/status").await.map(drop)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(hyper::Response<hyper::body::Incoming>, Option<i32>), ClientError> {
        let Connection {
            mut sender,
            daemon_pid,
        } = self.connect().await?;
        let head_timeout = if method == Method::GET {
            ANSWER_TIMEOUT
        } else {
            START_TIMEOUT
        };
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "cutover")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("request parts are valid");
        let response = tokio::time::timeout(head_timeout, sender.send_request(request))
            .await
            .map_err(|_| self.not_answering(daemon_pid, head_timeout))??;
        self.observe(response.headers());
        if response.status().is_success() {
            return Ok((response, daemon_pid));
        }
        let status = response.status();
        let bytes = tokio::time::timeout(ANSWER_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| self.not_answering(daemon_pid, ANSWER_TIMEOUT))??
            .to_bytes();
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        Err(self.refused(status, message))
    }

    /// Streams a file to `POST /v1/uploads`; returns where the daemon stored it.
    pub async fn upload(&self, file: &Path, name: &str, mode: u32) -> Result<PathBuf, ClientError> {
        let mut sender = self.connect().await?.sender;
        let reader = tokio::fs::File::open(file)
            .await
            .map_err(|e| ClientError::Protocol(format!("cannot read {}: {e}", file.display())))?;
        let body = http_body_util::StreamBody::new(futures_util::StreamExt::map(
            tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024),
            |chunk| chunk.map(hyper::body::Frame::data),
        ));
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/uploads")
            .header(http::header::HOST, "cutover")
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .header("x-cutover-name", name)
            .header("x-cutover-mode", format!("{mode:o}"))
            .body(body)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let response = sender.send_request(request).await?;
        self.observe(response.headers());
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(self.refused(status, message));
        }
        serde_json::from_slice::<crate::protocol::UploadResponse>(&bytes)
            .map(|r| r.path)
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let (response, daemon_pid) = self.send(Method::GET, path, None).await?;
        let bytes = tokio::time::timeout(ANSWER_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| self.not_answering(daemon_pid, ANSWER_TIMEOUT))??
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// POSTs `body` and reads the JSON answer (within the read-only timeout).
    pub async fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let payload = serde_json::to_vec(body).expect("requests serialize");
        let (response, daemon_pid) = self.send(Method::POST, path, Some(payload)).await?;
        let bytes = tokio::time::timeout(ANSWER_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| self.not_answering(daemon_pid, ANSWER_TIMEOUT))??
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// POSTs `body` and calls `on_event` for each streamed event, in order.
    pub async fn stream<B: serde::Serialize>(
        &self,
        path: &str,
        body: &B,
        mut on_event: impl FnMut(Event),
    ) -> Result<(), ClientError> {
        let payload = serde_json::to_vec(body).expect("requests serialize");
        let mut response = self
            .send(Method::POST, path, Some(payload))
            .await?
            .0
            .into_body();
        let mut buffer = BytesMut::new();
        while let Some(frame) = response.frame().await {
            let frame = frame?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buffer.extend_from_slice(&data);
            while let Some(newline) = buffer.iter().position(|b| *b == b'\n') {
                let line = buffer.split_to(newline + 1);
                let line = &line.chunk()[..newline];
                if line.is_empty() {
                    continue;
                }
                let event = serde_json::from_slice(line)
                    .map_err(|e| ClientError::Protocol(format!("bad event: {e}")))?;
                on_event(event);
            }
        }
        Ok(())
    }
}

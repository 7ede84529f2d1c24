//! The CLI's side of the control protocol.

use crate::protocol::{ErrorBody, Event};
use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the cutover daemon at {}: {source} (is `cutover serve` running?)", socket.display())]
    Unreachable {
        socket: PathBuf,
        source: std::io::Error,
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
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. })
    }
}

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
        }
    }

    /// One HTTP/1.1 connection to the daemon's control socket.
    async fn connect<B>(&self) -> Result<hyper::client::conn::http1::SendRequest<B>, ClientError>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Unreachable {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(sender)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let mut sender = self.connect().await?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "cutover")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("request parts are valid");
        let response = sender.send_request(request).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        Err(ClientError::Refused { status, message })
    }

    /// Streams a file to `POST /v1/uploads`; returns where the daemon stored it.
    pub async fn upload(&self, file: &Path, name: &str, mode: u32) -> Result<PathBuf, ClientError> {
        let mut sender = self.connect().await?;
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
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ClientError::Refused { status, message });
        }
        serde_json::from_slice::<crate::protocol::UploadResponse>(&bytes)
            .map(|r| r.path)
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let response = self.send(Method::GET, path, None).await?;
        let bytes = response.into_body().collect().await?.to_bytes();
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

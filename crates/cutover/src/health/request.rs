//! The probe's requests: `GET path` over HTTP/1.1 or over HTTP/2 without TLS, each on a
//! connection of its own.

use bytes::Bytes;
use http_body_util::Empty;
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// An answer to a probe: the HTTP status, and why it fails despite a 2xx (gRPC).
pub(super) struct Answer {
    pub status: u16,
    pub failure: Option<String>,
}

pub(super) async fn get_status(addr: SocketAddr, path: &str) -> Result<Answer, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let driver = tokio::spawn(conn);
    let request = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::USER_AGENT, "cutover-health")
        .header(http::header::CONNECTION, "close")
        .body(Empty::new())
        .map_err(|e| format!("bad health path {path:?}: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    driver.abort();
    Ok(Answer {
        status: response.status().as_u16(),
        failure: None,
    })
}

/// `GET path` over HTTP/2 without TLS (prior knowledge), on a connection of its own.
pub(super) async fn get_status_h2c(addr: SocketAddr, path: &str) -> Result<Answer, String> {
    let mut sender = h2c_connect::<Empty<Bytes>>(addr).await?;
    let request = http::Request::get(format!("http://{addr}{path}"))
        .header(http::header::USER_AGENT, "cutover-health")
        .body(Empty::new())
        .map_err(|e| format!("bad health path {path:?}: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    Ok(Answer {
        status: response.status().as_u16(),
        failure: None,
    })
}

/// A fresh HTTP/2 connection (prior knowledge) to `addr`; its driver ends with the sender.
pub(super) async fn h2c_connect<B>(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http2::SendRequest<B>, String>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .handshake(io)
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

//! `GET /ws`: a WebSocket echo session, upgraded through hyper so it exercises
//! a proxy's `Upgrade` handling exactly like a real application would.

use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Message, Role};
use tokio_tungstenite::WebSocketStream;

use crate::routes::{text, Body, BoxError};
use crate::tracker::Tracker;

pub fn upgrade(mut req: Request<Incoming>, sessions: &Tracker) -> Response<Body> {
    let Some(key) = handshake_key(req.headers()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade request\n",
        );
    };
    let accept = derive_accept_key(key);
    let on_upgrade = hyper::upgrade::on(&mut req);
    // Counted from now, so shutdown also waits for a handshake still in progress.
    let session = sessions.enter();
    tokio::spawn(async move {
        let _session = session;
        // Failures here are clients going away mid-handshake or mid-session:
        // routine for a test backend, so not logged.
        if let Ok(upgraded) = on_upgrade.await {
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            let _ = echo(ws).await;
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Empty::new().map_err(BoxError::from).boxed_unsync())
        .expect("handshake response parts are valid")
}

async fn echo<S>(mut ws: WebSocketStream<S>) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(message) = ws.next().await {
        match message? {
            message @ (Message::Text(_) | Message::Binary(_)) => ws.send(message).await?,
            // tungstenite answers pings and the closing handshake by itself.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {}
        }
    }
    Ok(())
}

/// The `Sec-WebSocket-Key` of a valid RFC 6455 upgrade request.
fn handshake_key(headers: &HeaderMap) -> Option<&[u8]> {
    let has_token = |name, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    if has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
        && version_ok
    {
        headers
            .get(header::SEC_WEBSOCKET_KEY)
            .map(|key| key.as_bytes())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    header::HeaderName::from_static(k),
                    header::HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    const KEY: (&str, &str) = ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    const VERSION: (&str, &str) = ("sec-websocket-version", "13");

    #[test]
    fn accepts_valid_upgrade() {
        let h = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
            VERSION,
            KEY,
        ]);
        let key = handshake_key(&h).unwrap();
        // The example from RFC 6455 section 1.3.
        assert_eq!(derive_accept_key(key), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn rejects_incomplete_upgrade() {
        assert!(handshake_key(&headers(&[])).is_none());
        assert!(handshake_key(&headers(&[("upgrade", "websocket"), VERSION, KEY])).is_none());
        assert!(handshake_key(&headers(&[
            ("connection", "upgrade"),
            ("upgrade", "h2c"),
            VERSION,
            KEY
        ]))
        .is_none());
        assert!(handshake_key(&headers(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            KEY
        ]))
        .is_none());
        assert!(handshake_key(&headers(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            VERSION
        ]))
        .is_none());
    }
}

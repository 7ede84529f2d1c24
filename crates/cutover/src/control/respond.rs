//! Answers of the control API: JSON bodies, errors, reading a request, who asked.

use crate::protocol::ErrorBody;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use std::convert::Infallible;

pub(super) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body accepted: requests are small JSON documents.
const MAX_REQUEST_BYTES: usize = 1024 * 1024;

pub(super) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("protocol types serialize");
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)).boxed_unsync())
        .expect("static response parts are valid")
}

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json(
        status,
        &ErrorBody {
            error: message.into(),
        },
    )
}

pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, Response<Body>> {
    let body = Limited::new(req.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("cannot read request body: {e}"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("malformed request: {e}")))
}

pub(super) fn who(claimed: &str, uid: Option<u32>) -> String {
    let claimed = if claimed.trim().is_empty() {
        "unknown"
    } else {
        claimed.trim()
    };
    match uid {
        Some(uid) => format!("{claimed} (uid {uid})"),
        None => claimed.to_owned(),
    }
}

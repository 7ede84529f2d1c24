//! The standard gRPC health check (`grpc.health.v1.Health/Check`), as the health probe of a
//! component with `health.grpc = true`.
//!
//! Written by hand rather than with tonic and prost: the request is the empty message (the
//! whole server's health) and the answer is one enum field, while a gRPC stack and a protobuf
//! code generator would be most of the daemon's build.

use super::request::{h2c_connect, Answer};
use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full, Limited};
use std::net::SocketAddr;

const PATH: &str = "/grpc.health.v1.Health/Check";

/// One health check of the gRPC server at `addr`: passes when it answers SERVING.
pub(crate) async fn check(addr: SocketAddr) -> Result<Answer, String> {
    let mut sender = h2c_connect::<Full<Bytes>>(addr).await?;
    // A message is framed by a compressed flag (0) and a 4-byte length: the empty
    // HealthCheckRequest (service "", the whole server) is five zero bytes.
    let request = http::Request::post(format!("http://{addr}{PATH}"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header(http::header::USER_AGENT, "cutover-health")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, 64 * 1024)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    // A call that fails at once may answer "trailers-only": grpc-status among the headers.
    let trailers = body.trailers().cloned().unwrap_or_default();
    let grpc_status = trailers
        .get("grpc-status")
        .or_else(|| parts.headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok());
    let message = trailers
        .get("grpc-message")
        .or_else(|| parts.headers.get("grpc-message"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let failure = match grpc_status {
        None if status == 200 => Some("no grpc-status in the answer: not a gRPC server?".into()),
        None => None,
        Some(0) => match serving_status(body.to_bytes()) {
            Ok(SERVING) => None,
            Ok(other) => Some(format!("gRPC health {}", serving_name(other))),
            Err(malformed) => Some(malformed),
        },
        Some(code) => Some(match message.filter(|m| !m.is_empty()) {
            Some(message) => format!("gRPC status {code} ({}): {message}", status_name(code)),
            None => format!("gRPC status {code} ({})", status_name(code)),
        }),
    };
    Ok(Answer { status, failure })
}

const SERVING: u64 = 1;

/// The `status` field (1) of a framed HealthCheckResponse: an absent field is its default,
/// UNKNOWN (0). `Err`: not a well-formed answer.
fn serving_status(mut framed: Bytes) -> Result<u64, String> {
    if framed.len() < 5 {
        return Err(format!("a {}-byte answer is no gRPC message", framed.len()));
    }
    if framed.get_u8() != 0 {
        return Err("the answer is compressed, which the request did not allow".into());
    }
    let len = framed.get_u32() as usize;
    if framed.len() < len {
        return Err("the answer's message is cut short".into());
    }
    let mut message = framed.split_to(len);
    let mut status = 0;
    while message.has_remaining() {
        let key = varint(&mut message)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = varint(&mut message)?,
            // Fields a newer server may add: skipped by their wire type.
            (_, 0) => {
                varint(&mut message)?;
            }
            (_, 1) => skip(&mut message, 8)?,
            (_, 2) => {
                let n = varint(&mut message)? as usize;
                skip(&mut message, n)?;
            }
            (_, 5) => skip(&mut message, 4)?,
            (_, wire) => return Err(format!("unexpected protobuf wire type {wire}")),
        }
    }
    Ok(status)
}

fn varint(buf: &mut Bytes) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            break;
        }
        let byte = buf.get_u8();
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a malformed protobuf varint".into())
}

fn skip(buf: &mut Bytes, n: usize) -> Result<(), String> {
    if buf.remaining() < n {
        return Err("a protobuf field is cut short".into());
    }
    buf.advance(n);
    Ok(())
}

fn serving_name(status: u64) -> &'static str {
    match status {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "an unknown serving status",
    }
}

fn status_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(code as usize).copied().unwrap_or("unknown code")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(message: &[u8]) -> Bytes {
        let mut out = vec![0];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out.into()
    }

    #[test]
    fn reads_the_serving_status_and_skips_unknown_fields() {
        assert_eq!(serving_status(framed(&[0x08, 0x01])), Ok(SERVING));
        assert_eq!(serving_status(framed(&[0x08, 0x02])), Ok(2));
        // The default (UNKNOWN) is sent as no field at all.
        assert_eq!(serving_status(framed(&[])), Ok(0));
        // Field 2 (a string "ab"), field 3 (varint 300), then the status.
        assert_eq!(
            serving_status(framed(&[0x12, 2, b'a', b'b', 0x18, 0xac, 0x02, 0x08, 0x01])),
            Ok(SERVING)
        );
    }

    #[test]
    fn malformed_answers_are_errors_not_passes() {
        assert!(serving_status(Bytes::from_static(&[0, 0])).is_err());
        assert!(serving_status(Bytes::from_static(&[1, 0, 0, 0, 0])).is_err());
        assert!(serving_status(Bytes::from_static(&[0, 0, 0, 0, 9, 0x08])).is_err());
        assert!(serving_status(framed(&[0x08])).is_err());
        assert!(serving_status(framed(&[0x12, 5, b'a'])).is_err());
    }

    #[test]
    fn status_codes_have_their_names() {
        assert_eq!(status_name(12), "UNIMPLEMENTED");
        assert_eq!(status_name(99), "unknown code");
        assert_eq!(serving_name(2), "NOT_SERVING");
    }
}

//! Access logging around one request: the `X-Request-Id` it carries, and its log line, begun
//! when it arrives and recorded once its response body has been sent (or dropped), to every
//! log that wants it: the shared listeners' (`[edge] access_log`) and its component's
//! (`access_log = true`). The line's format and its writer are [`crate::access_log`]'s.

use crate::access_log::{AccessLog, Entry};
use crate::body_timeout::{BodySent, RequestBody};
use crate::proxy::ProxyBody;
use arc_swap::ArcSwapOption;
use http::{header, HeaderValue, Request, Response};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Rotated access log files kept besides the current one.
const KEEP_ROTATED: usize = 5;

/// An access log that may be open or not, switched by reloads; read on every request.
#[derive(Default)]
pub struct LogSlot(ArcSwapOption<AccessLog>);

impl LogSlot {
    pub fn get(&self) -> Option<AccessLog> {
        self.0.load().as_deref().cloned()
    }

    /// Opens the log at `path` (`None`: closes it), unless it is open there already. A log
    /// that cannot be opened is reported and stays closed: requests are served all the same.
    pub fn set(&self, path: Option<&Path>, max_size: u64) {
        let current = self.0.load();
        if current.as_deref().map(AccessLog::path) == path {
            return;
        }
        let log = path.and_then(|path| match AccessLog::open(path, max_size, KEEP_ROTATED) {
            Ok(log) => Some(Arc::new(log)),
            Err(e) => {
                tracing::error!("cannot open the access log {}: {e}", path.display());
                None
            }
        });
        self.0.store(log);
    }
}

/// Gives `req` its request id, kept from a trusted proxy or made here, so the component sees
/// the id the log records; returns it with whether the peer is a trusted proxy.
pub fn tag(req: &mut Request<RequestBody>, peer: &crate::edge::Peer) -> (HeaderValue, bool) {
    let trusted = crate::edge::policy().trusts(peer.addr.ip());
    let (id, _) = crate::access_log::request_id(req.headers(), trusted);
    req.headers_mut()
        .insert(crate::access_log::REQUEST_ID, id.clone());
    (id, trusted)
}

/// What the router knows of a request besides the request itself.
pub struct Seen {
    pub host: String,
    pub component: Arc<str>,
    pub release: Option<Arc<str>>,
    pub request_id: HeaderValue,
    pub trusted: bool,
}

/// A request's line, waiting for its response to be sent.
pub struct Pending {
    logs: Vec<AccessLog>,
    entry: Entry,
    started: Instant,
    body: BodySent,
}

/// Begins the line of `req` for `logs`; `None` when no log wants it. `seen` is asked only
/// then: an unlogged request pays for no host copy or release name.
pub fn begin(
    logs: Vec<AccessLog>,
    req: &Request<RequestBody>,
    peer: &crate::edge::Peer,
    seen: impl FnOnce() -> Seen,
) -> Option<Pending> {
    if logs.is_empty() {
        return None;
    }
    let seen = seen();
    let entry = Entry {
        time: SystemTime::now(),
        host: seen.host,
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        status: http::StatusCode::OK,
        component: seen.component,
        release: seen.release,
        duration: Duration::ZERO,
        bytes_in: 0,
        bytes_out: 0,
        client: client_ip(req.headers(), peer, seen.trusted),
        request_id: seen.request_id,
        protocol: req.version(),
        tls_version: peer.tls_version,
    };
    Some(Pending {
        logs,
        entry,
        started: Instant::now(),
        body: req.body().sent(),
    })
}

impl Pending {
    /// `response`, whose body records the line once it has been sent or dropped.
    pub fn finish(mut self, response: Response<ProxyBody>) -> Response<ProxyBody> {
        self.entry.status = response.status();
        let (mut parts, inner) = response.into_parts();
        parts
            .headers
            .insert(crate::access_log::REQUEST_ID, self.entry.request_id.clone());
        let body = LoggedBody {
            inner,
            pending: Some(self),
            sent: 0,
        };
        use http_body_util::BodyExt;
        Response::from_parts(parts, body.boxed_unsync())
    }
}

/// The host a request is for: the Host header (HTTP/1.1), or the URI's authority (HTTP/2).
pub fn request_host<B>(req: &Request<B>) -> Option<String> {
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(header::HOST)?
                .to_str()
                .ok()
                .map(str::to_owned)
        })?;
    crate::routing::normalize_host(&authority)
}

/// The client as trusted: the peer, or the first untrusted hop of a trusted peer's chain.
fn client_ip(
    headers: &http::HeaderMap,
    peer: &crate::edge::Peer,
    trusted: bool,
) -> std::net::IpAddr {
    if !trusted {
        return peer.addr.ip();
    }
    let chain: Vec<std::net::IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse().ok())
        .collect();
    crate::edge::policy().client_ip(&chain, peer.addr.ip())
}

/// A response body that records its request's line once it has been sent (or abandoned): the
/// duration and byte counts are known then.
struct LoggedBody {
    inner: ProxyBody,
    pending: Option<Pending>,
    sent: u64,
}

impl http_body::Body for LoggedBody {
    type Data = bytes::Bytes;
    type Error = <ProxyBody as http_body::Body>::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.sent += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(Pending {
            logs,
            mut entry,
            started,
            body,
        }) = self.pending.take()
        {
            entry.duration = started.elapsed();
            entry.bytes_in = body.bytes();
            entry.bytes_out = self.sent;
            let (last, others) = logs.split_last().expect("a pending line has a log");
            for log in others {
                log.record(entry.clone());
            }
            last.record(entry);
        }
    }
}

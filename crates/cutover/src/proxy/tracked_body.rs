//! The response body as the client gets it, counted in flight until it is sent.

use super::pool::Lease;
use super::upstream::InflightGuard;
use super::BoxError;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

/// The upstream sent nothing of a response body for this long (`upstream_timeout`, as nginx's
/// proxy_read_timeout counts between two reads).
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent no response body data for {0:?}")]
struct UpstreamBodyIdle(Duration);

/// A response body that keeps its request counted in flight until it is fully sent or dropped,
/// and counts a body the upstream cut short (hyper reports a premature end as an error) or
/// left idle for `idle`: a response that stalls after its head must not hang forever.
pub(super) struct TrackedBody<B> {
    inner: B,
    guard: InflightGuard,
    broken: bool,
    idle: Duration,
    /// Armed only when a read finds nothing (a body that arrives at once costs no timer).
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The HTTP/1.1 connection the body arrives on, driven here; back to its pool once the
    /// body has ended (none for h2c, whose connection runs in a task of its own).
    lease: Option<Lease>,
    /// Over before it was read: nothing of the message is left on the connection.
    ended: bool,
}

impl<B: Body> TrackedBody<B> {
    pub(super) fn new(
        inner: B,
        guard: InflightGuard,
        idle: Duration,
        lease: Option<Lease>,
    ) -> Self {
        TrackedBody {
            ended: inner.is_end_stream(),
            inner,
            guard,
            broken: false,
            idle,
            waiting: None,
            lease,
        }
    }
}

impl<B> TrackedBody<B> {
    /// The body has ended: its connection may carry the next request.
    fn release_connection(&mut self, cx: &mut Context<'_>) {
        if let Some(mut lease) = self.lease.take() {
            // Lets the connection take in the end of the message before it is reused.
            if !lease.drive(cx) {
                self.guard.0.pool.put_back(lease);
            }
        }
    }

    fn count_broken(&mut self, why: &str) {
        if !self.broken {
            self.broken = true;
            let upstream = &self.guard.0;
            upstream.stats.broken_bodies.fetch_add(1, Ordering::Relaxed);
            upstream.metrics.errors.inc();
            tracing::warn!(release = %upstream.release, upstream = %upstream.addr,
                "the upstream {why}");
        }
    }
}

impl<B> Drop for TrackedBody<B> {
    fn drop(&mut self) {
        // A body that was over before it was read (a 204, a HEAD, a `Content-Length: 0`) is
        // often never polled: its connection is as reusable as one read to the end. The next
        // request to take it drives it to ready first (`pool.rs`).
        if let Some(lease) = self.lease.take().filter(|_| self.ended) {
            self.guard.0.pool.put_back(lease);
        }
    }
}

impl<B> Body for TrackedBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        // The connection reads what the body gets: driven first, so it is there to be read.
        if let Some(lease) = &mut self.lease {
            lease.drive(cx);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                self.lease = None;
                self.count_broken("cut a response short");
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(frame) => {
                self.waiting = None;
                if frame.is_none() || self.inner.is_end_stream() {
                    self.release_connection(cx);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = self.idle;
                match crate::body_timeout::IdleTimer::poll(&mut self.waiting, idle, cx) {
                    Poll::Ready(()) => {
                        self.count_broken("left a response body idle");
                        Poll::Ready(Some(Err(UpstreamBodyIdle(idle).into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

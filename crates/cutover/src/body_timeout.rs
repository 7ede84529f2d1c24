//! The request-body read timeout (`[daemon] body_read_timeout`): a client that stops sending
//! in the middle of a request body is cut off, so it cannot hold a connection (and, once
//! proxied, an upstream connection too) forever. hyper's header timeout covers the head only.
//!
//! The clock runs only while the body is being read and the client has sent nothing: waiting
//! for the upstream to accept more (backpressure) does not count, and a slow but steady upload
//! is never cut off.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

/// The body of a request on a public listener.
pub type RequestBody = IdleTimeout<Incoming>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request body ended early.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body data for {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// Whether `error` (an upstream request's, say) was caused by the client's body timing out:
/// then the client stalled, not the upstream, and it must not count against the release.
pub fn caused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<BodyTimedOut>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// Set once the body of one request has timed out, so its answer can say so (408). A request
/// without a body has none to share (`None`): most requests, and no allocation for them.
#[derive(Clone, Debug, Default)]
pub struct TimedOut(Option<Arc<AtomicBool>>);

impl TimedOut {
    pub fn get(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
    }

    fn set(&self) {
        if let Some(flag) = &self.0 {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

/// Says when a request body has been read to its end (or failed): the proxy starts timing the
/// upstream's answer only then, so a long upload is not taken for a slow upstream. Counts the
/// bytes read too (the access log's `bytes_in`). A request without a body is sent from the
/// start (`None`).
#[derive(Clone, Debug, Default)]
pub struct BodySent(Option<Arc<Progress>>);

#[derive(Debug, Default)]
struct Progress {
    done: AtomicBool,
    ended: tokio::sync::Notify,
    bytes: AtomicU64,
}

impl BodySent {
    pub fn is_done(&self) -> bool {
        self.0
            .as_ref()
            .is_none_or(|sent| sent.done.load(Ordering::SeqCst))
    }

    /// Body bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |sent| sent.bytes.load(Ordering::Relaxed))
    }

    fn read(&self, bytes: usize) {
        if let Some(sent) = &self.0 {
            sent.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    fn done(&self) {
        if let Some(sent) = &self.0 {
            if !sent.done.swap(true, Ordering::SeqCst) {
                sent.ended.notify_waiters();
            }
        }
    }

    /// Resolves once the body has ended.
    pub async fn wait(&self) {
        let Some(sent) = &self.0 else { return };
        loop {
            let notified = sent.ended.notified();
            if self.is_done() {
                return;
            }
            notified.await;
        }
    }
}

/// The timer of a body read that found nothing: armed on the first empty read, cleared (by
/// setting the slot to `None`) by every frame, so a body that flows costs no timer at all.
pub struct IdleTimer;

impl IdleTimer {
    /// Ready once the body has been idle for `idle` since the read that armed the timer.
    pub fn poll(
        slot: &mut Option<Pin<Box<Sleep>>>,
        idle: Duration,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        slot.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)))
            .as_mut()
            .poll(cx)
    }
}

/// A body that fails with [`BodyTimedOut`] when no frame arrives for `idle` while it is read.
pub struct IdleTimeout<B> {
    inner: B,
    idle: Duration,
    /// Armed when a read finds nothing to read; cleared by every frame.
    waiting: Option<Pin<Box<Sleep>>>,
    timed_out: TimedOut,
    sent: BodySent,
}

impl<B> IdleTimeout<B> {
    /// The signal of this body's end.
    pub fn sent(&self) -> BodySent {
        self.sent.clone()
    }
}

impl<B> Drop for IdleTimeout<B> {
    fn drop(&mut self) {
        // Dropped unread (the upstream answered early, or the request went away): nothing more
        // will be sent either way.
        self.sent.done();
    }
}

impl<B: Body> IdleTimeout<B> {
    pub fn new(inner: B, idle: Duration) -> (IdleTimeout<B>, TimedOut) {
        // A body that has ended before it starts can neither stall nor be waited for.
        let (timed_out, sent) = if inner.is_end_stream() {
            (TimedOut(None), BodySent(None))
        } else {
            (
                TimedOut(Some(Arc::default())),
                BodySent(Some(Arc::default())),
            )
        };
        let body = IdleTimeout {
            inner,
            idle,
            waiting: None,
            timed_out: timed_out.clone(),
            sent,
        };
        (body, timed_out)
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.timed_out.get() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.waiting = None;
                if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()) {
                    self.sent.read(data.len());
                }
                if !matches!(frame, Some(Ok(_))) || self.inner.is_end_stream() {
                    self.sent.done();
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = self.idle;
                match IdleTimer::poll(&mut self.waiting, idle, cx) {
                    Poll::Ready(()) => {
                        self.timed_out.set();
                        self.sent.done();
                        Poll::Ready(Some(Err(BodyTimedOut(idle).into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out.get() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn fails_after_idle_and_not_while_data_flows() {
        let (mut tx, rx) = http_body_util::channel::Channel::<Bytes, BoxError>::new(4);
        let (mut body, timed_out) = IdleTimeout::new(rx, Duration::from_millis(300));
        let sender = tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                tx.send_data(Bytes::from_static(b"x")).await.unwrap();
            }
            // Then silence, with the sender kept open.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(tx);
        });
        for _ in 0..3 {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), "x");
        }
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(caused(&*error), "{error}");
        assert!(timed_out.get());
        assert!(body.frame().await.is_none());
        sender.abort();
    }
}

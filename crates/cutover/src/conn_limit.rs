//! Accept loops that cannot exhaust the daemon: a connection cap and a backoff on accept errors.
//!
//! A listener takes a slot before it calls `accept`, so at its cap it simply stops accepting:
//! new connections wait in the kernel backlog (which costs the daemon no fd) until a slot is
//! free. The slot travels with the socket ([`Counted`]), so it is held for as long as the fd is
//! open, including after an HTTP upgrade hands the socket to a WebSocket tunnel.
//!
//! If `accept` fails anyway for want of fds or memory (another listener or a deploy used them),
//! the loop waits with an exponential backoff instead of retrying every few milliseconds, and
//! logs the first failure and then a summary at most every [`REPORT_EVERY`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The most connections one listener holds open at once.
#[derive(Clone, Debug)]
pub struct ConnLimit {
    slots: Arc<Semaphore>,
    max: usize,
}

impl ConnLimit {
    pub fn new(max: usize) -> ConnLimit {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        ConnLimit {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// Waits for a free slot; call before `accept`.
    pub async fn slot(&self) -> Slot {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        Slot(permit)
    }
}

/// One connection's place under its listener's cap; freed when dropped.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

/// A socket that holds its [`Slot`] until it is closed.
pub struct Counted<S> {
    inner: S,
    _slot: Slot,
}

impl<S> Counted<S> {
    pub fn new(inner: S, slot: Slot) -> Counted<S> {
        Counted { inner, _slot: slot }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Says (at most once per [`REPORT_EVERY`]) that a listener is at its cap: under a flood it
/// reaches the cap and leaves it thousands of times a second.
#[derive(Debug)]
pub struct CapReport {
    listener: String,
    last: Option<Instant>,
    since_last: u64,
}

impl CapReport {
    pub fn new(listener: &str) -> CapReport {
        CapReport {
            listener: listener.to_owned(),
            last: None,
            since_last: 0,
        }
    }

    /// Call when the listener has every slot taken.
    pub fn at_cap(&mut self, max: usize) {
        self.since_last += 1;
        if self.last.is_some_and(|at| at.elapsed() < REPORT_EVERY) {
            return;
        }
        tracing::warn!(listener = %self.listener,
            "at the connection cap ({max} open): new connections wait in the backlog \
             ({} times since the last report)", self.since_last);
        self.last = Some(Instant::now());
        self.since_last = 0;
    }
}

const FIRST_DELAY: Duration = Duration::from_millis(10);
const MAX_DELAY: Duration = Duration::from_secs(1);
/// While accept keeps failing, one log line per this long.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// What to do after a failed `accept` on one listener.
#[derive(Debug)]
pub struct AcceptBackoff {
    listener: String,
    delay: Duration,
    failures: u64,
    unreported: u64,
    last_report: Option<Instant>,
}

impl AcceptBackoff {
    pub fn new(listener: &str) -> AcceptBackoff {
        AcceptBackoff {
            listener: listener.to_owned(),
            delay: Duration::ZERO,
            failures: 0,
            unreported: 0,
            last_report: None,
        }
    }

    /// Records a failed accept; returns how long to wait before the next one.
    pub fn failed(&mut self, error: &io::Error) -> Duration {
        if !is_resource_error(error) {
            // A connection that died in the queue (ECONNABORTED and the like): the next
            // accept may well succeed at once.
            tracing::debug!(listener = %self.listener, "accept failed for one connection: {error}");
            return Duration::ZERO;
        }
        self.failures += 1;
        self.unreported += 1;
        self.delay = if self.delay.is_zero() {
            FIRST_DELAY
        } else {
            (self.delay * 2).min(MAX_DELAY)
        };
        match self.last_report {
            None => {
                tracing::warn!(listener = %self.listener,
                    "accept failed: {error}; retrying with backoff (up to {MAX_DELAY:?})");
                self.last_report = Some(Instant::now());
                self.unreported = 0;
            }
            Some(at) if at.elapsed() >= REPORT_EVERY => {
                tracing::warn!(listener = %self.listener,
                    "accept still failing: {error} ({} times in the last {:?})",
                    self.unreported, at.elapsed());
                self.last_report = Some(Instant::now());
                self.unreported = 0;
            }
            Some(_) => {}
        }
        self.delay
    }

    /// Records a successful accept, ending a streak of failures.
    pub fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(listener = %self.listener,
                "accepting again after {} failed attempts", self.failures);
        }
        self.delay = Duration::ZERO;
        self.failures = 0;
        self.unreported = 0;
        self.last_report = None;
    }
}

/// Out of fds (per process or system-wide) or memory: retrying at once cannot help.
fn is_resource_error(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// How much one listener may hold: its connection cap and the request-body read timeout.
#[derive(Clone, Debug)]
pub struct Limits {
    pub connections: ConnLimit,
    /// Read per request: a reload changes it for open connections too.
    pub body_read_timeout: crate::live::LiveDuration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_second_and_resets() {
        let mut backoff = AcceptBackoff::new("test");
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        let delays: Vec<Duration> = (0..10).map(|_| backoff.failed(&emfile)).collect();
        assert_eq!(delays[0], FIRST_DELAY);
        assert_eq!(delays[1], FIRST_DELAY * 2);
        assert!(delays.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*delays.last().unwrap(), MAX_DELAY);
        backoff.succeeded();
        assert_eq!(backoff.failed(&emfile), FIRST_DELAY);
        let aborted = io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert_eq!(backoff.failed(&aborted), Duration::ZERO);
    }

    #[tokio::test]
    async fn slots_are_freed_when_the_socket_closes() {
        let limit = ConnLimit::new(2);
        let a = limit.slot().await;
        let _b = limit.slot().await;
        assert_eq!(limit.open(), 2);
        let waiting = tokio::time::timeout(Duration::from_millis(50), limit.slot()).await;
        assert!(waiting.is_err(), "a third slot while two are held");
        let (client, _server) = tokio::io::duplex(64);
        let counted = Counted::new(client, a);
        drop(counted);
        assert_eq!(limit.open(), 1);
    }
}

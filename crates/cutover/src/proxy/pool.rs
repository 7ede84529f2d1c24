//! The proxy's own HTTP/1.1 connections to one instance: idle ones on a LIFO stack, each driven
//! by the request that holds it.
//!
//! Why not hyper-util's pooled client (which h2c upstreams still use): it runs every connection
//! in a task of its own, so each request hops to that task to be written and back when its
//! answer is read, and the pool's bookkeeping sits on every request; the profile (bench/
//! PROFILE.md) put the two at the top of the proxy's own cost. Here the request's own task
//! drives the connection (hyper's `client::conn`) while it waits for the head, and its
//! response body drives it while the body streams ([`super::tracked_body`]); once the body
//! has ended the connection goes back on the stack. A body dropped before its end closes its
//! connection: nothing half-read is ever reused.

use crate::body_timeout::RequestBody;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Shorter than common backend keep-alive timeouts (Node's is 5 s): an idle connection is
/// dropped by us before the backend closes it under a request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Idle connections kept at most (the rest are closed when they come back).
const MAX_IDLE: usize = 512;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection taken from the stack may take to be ready for its next request (it
/// is at once unless its last answer is still being wound up).
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// One connection, held by the request using it: whoever holds it drives it.
pub(super) struct Lease {
    sender: http1::SendRequest<RequestBody>,
    /// `None` once it has ended (closed, failed, or handed over to an upgrade).
    conn: Option<Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>>,
}

impl Lease {
    /// Lets the connection read and write what it can. True once it has ended.
    pub(super) fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(conn) = &mut self.conn {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                if let Err(e) = result {
                    tracing::debug!("upstream connection ended: {e}");
                }
                self.conn = None;
            }
        }
        self.conn.is_none()
    }

    /// Drives the connection to its end, in a task of its own: for a tunnel (the upgrade
    /// completes only once the connection hands its socket over).
    pub(super) fn drive_to_end(mut self) {
        if self.conn.is_some() {
            tokio::spawn(std::future::poll_fn(move |cx| {
                if self.drive(cx) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }));
        }
    }
}

struct Idle {
    lease: Lease,
    since: Instant,
}

pub(super) struct Pool {
    addr: SocketAddr,
    /// One stack per proxy thread ([`crate::proxy_threads`]): a thread takes back the connections
    /// it used, warm in its cache, and never waits on another thread's lock.
    idle: Box<[Mutex<Vec<Idle>>]>,
    /// Set by [`Pool::close`]: connections coming back are closed instead of kept.
    closed: AtomicBool,
}

impl Pool {
    pub(super) fn new(addr: SocketAddr) -> Pool {
        Pool {
            addr,
            idle: (0..crate::proxy_threads::handles().len().max(1))
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            closed: AtomicBool::new(false),
        }
    }

    /// Closes the idle connections now, and each busy one when its request is done.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for shard in &self.idle {
            let idle = std::mem::take(&mut *locked(shard));
            drop(idle);
        }
    }

    /// Sends `req` on an idle connection (or, when there is none or it turns out closed, a new
    /// one) and drives it until the response head arrives.
    pub(super) async fn send(
        &self,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lease), BoxError> {
        while let Some(mut lease) = self.take_idle() {
            if !ready(&mut lease).await {
                continue;
            }
            match exchange(&mut lease, req).await {
                Ok(response) => return Ok((response, lease)),
                // The backend closed it while it was idle, before it took the request: the
                // request was not sent, so it goes on a fresh connection.
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(failed.into_error().into()),
                },
            }
        }
        let mut lease = self.connect().await?;
        match exchange(&mut lease, req).await {
            Ok(response) => Ok((response, lease)),
            Err(failed) => Err(failed.into_error().into()),
        }
    }

    /// A connection whose response has been read to its end, for the next request.
    pub(super) fn put_back(&self, lease: Lease) {
        if lease.conn.is_none() || lease.sender.is_closed() || self.closed.load(Ordering::SeqCst) {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                lease,
                since: Instant::now(),
            });
        }
    }

    /// The most recently used idle connection; those idle too long (at the bottom) are closed.
    fn take_idle(&self) -> Option<Lease> {
        let mut idle = self.lock();
        let fresh_from = idle
            .iter()
            .position(|i| i.since.elapsed() < IDLE_TIMEOUT)
            .unwrap_or(idle.len());
        let stale: Vec<Idle> = idle.drain(..fresh_from).collect();
        let lease = loop {
            match idle.pop() {
                Some(i) if i.lease.sender.is_closed() => continue,
                other => break other.map(|i| i.lease),
            }
        };
        drop(idle);
        drop(stale);
        lease
    }

    async fn connect(&self) -> Result<Lease, BoxError> {
        let stream =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(self.addr))
                .await
                .map_err(|_| {
                    format!(
                        "connecting to {} timed out after {CONNECT_TIMEOUT:?}",
                        self.addr
                    )
                })?
                .map_err(|e| format!("connecting to {}: {e}", self.addr))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            // hyper lets a connection's read buffer grow to about 400 KiB; a response head
            // needs far less, and a body streams through in pieces of this size.
            .max_buf_size(super::MAX_BUF_SIZE)
            .handshake(TokioIo::new(stream))
            .await?;
        Ok(Lease {
            sender,
            conn: Some(Box::pin(conn.with_upgrades())),
        })
    }

    /// This thread's stack.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        let shard = crate::proxy_threads::current_index() % self.idle.len();
        locked(&self.idle[shard])
    }
}

/// A stack of idle connections, even if a thread panicked holding it (the stack stays valid).
fn locked(shard: &Mutex<Vec<Idle>>) -> std::sync::MutexGuard<'_, Vec<Idle>> {
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits, driving it, until an idle connection takes a request; false if it has ended.
async fn ready(lease: &mut Lease) -> bool {
    let ready = std::future::poll_fn(|cx| {
        if lease.drive(cx) {
            return Poll::Ready(false);
        }
        lease.sender.poll_ready(cx).map(|r| r.is_ok())
    });
    let mut ready = std::pin::pin!(ready);
    // Nearly always ready at once: tried before a timer (a clock read) is set up for it.
    let at_once = std::future::poll_fn(|cx| match ready.as_mut().poll(cx) {
        Poll::Ready(ready) => Poll::Ready(Some(ready)),
        Poll::Pending => Poll::Ready(None),
    });
    if let Some(ready) = at_once.await {
        return ready;
    }
    tokio::time::timeout(READY_TIMEOUT, ready)
        .await
        .unwrap_or(false)
}

/// Sends `req` and drives the connection until its response head arrives.
async fn exchange(
    lease: &mut Lease,
    req: Request<RequestBody>,
) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<RequestBody>>> {
    let mut answer = std::pin::pin!(lease.sender.try_send_request(req));
    std::future::poll_fn(|cx| {
        // Written and read by the connection, answered through `answer`: the connection first,
        // so what it read is there to be answered. An ended connection fails `answer`.
        lease.drive(cx);
        answer.as_mut().poll(cx)
    })
    .await
}

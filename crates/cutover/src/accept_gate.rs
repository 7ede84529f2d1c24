//! Whether the daemon's accept loops may accept: closed while a new daemon takes the listening
//! sockets over (`cutover upgrade`), so that exactly one process accepts on a socket at any
//! moment, and opened again if that new daemon fails.
//!
//! Closing the gate waits until every loop has left `accept` (each holds a read guard while it
//! may accept; closing takes the write lock), and leaves the sockets open: connections that
//! arrive meanwhile wait in the kernel's queue for whoever accepts next.

use std::sync::Arc;
use tokio::sync::{watch, OwnedRwLockReadGuard, RwLock};

#[derive(Clone)]
pub struct AcceptGate {
    open: Arc<watch::Sender<bool>>,
    accepting: Arc<RwLock<()>>,
    retiring: Arc<std::sync::atomic::AtomicBool>,
}

/// Held by an accept loop while it may accept.
pub struct Accepting(#[allow(dead_code)] OwnedRwLockReadGuard<()>);

impl Default for AcceptGate {
    fn default() -> Self {
        Self::new()
    }
}

impl AcceptGate {
    pub fn new() -> AcceptGate {
        Self::starting(true)
    }

    /// Closed until [`AcceptGate::open`]: a daemon taking over gets everything ready to serve
    /// before the old one lets go, so that the handover itself is only a message away.
    pub fn closed() -> AcceptGate {
        Self::starting(false)
    }

    fn starting(open: bool) -> AcceptGate {
        AcceptGate {
            open: Arc::new(watch::channel(open).0),
            accepting: Arc::new(RwLock::new(())),
            retiring: Default::default(),
        }
    }

    /// Waits until the gate is open, then holds it open for one accept.
    pub async fn enter(&self) -> Accepting {
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|open| *open).await;
        Accepting(self.accepting.clone().read_owned().await)
    }

    /// Resolves once the gate starts closing: the loop must drop its [`Accepting`] and go back
    /// to [`AcceptGate::enter`].
    pub async fn closing(&self) {
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|open| !*open).await;
    }

    /// Closes the gate; returns once no loop is inside `accept`.
    pub async fn close(&self) {
        self.open.send_replace(false);
        drop(self.accepting.write().await);
    }

    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// The sockets belong to a new daemon now: each connection still open here closes after
    /// its next response (`Connection: close`), so that its client reconnects to the new one
    /// knowing it must, instead of racing a close of an idle keep-alive connection.
    pub fn retire(&self) {
        self.retiring
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_retiring(&self) -> bool {
        self.retiring.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn close_waits_for_the_loop_to_leave_accept_and_open_lets_it_back() {
        let gate = AcceptGate::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
        let loop_gate = gate.clone();
        tokio::spawn(async move {
            loop {
                let guard = loop_gate.enter().await;
                tokio::select! {
                    result = listener.accept() => { accepted_tx.send(result.unwrap().0).unwrap(); }
                    _ = loop_gate.closing() => {}
                }
                drop(guard);
            }
        });
        let _first = tokio::net::TcpStream::connect(addr).await.unwrap();
        accepted.recv().await.unwrap();

        tokio::time::timeout(Duration::from_secs(5), gate.close())
            .await
            .expect("close returns once the loop left accept");
        // Queued in the kernel while closed, not accepted.
        let _queued = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), accepted.recv())
                .await
                .is_err(),
            "nothing is accepted while the gate is closed"
        );
        gate.open();
        tokio::time::timeout(Duration::from_secs(5), accepted.recv())
            .await
            .expect("the queued connection is accepted once the gate opens")
            .unwrap();
    }
}

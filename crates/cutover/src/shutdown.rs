//! The daemon-wide stop signal, as a clonable handle each task can wait on.

use tokio::sync::watch;

/// Turns true once when the daemon starts shutting down.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// The sending side, held by the daemon's main task.
pub struct ShutdownTrigger(watch::Sender<bool>);

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown has begun (at once if it already has).
    pub async fn wait(&mut self) {
        // The borrow guard is dropped here, before any other await: keeps callers' futures Send.
        let _ = self.0.wait_for(|stop| *stop).await.is_ok();
    }
}

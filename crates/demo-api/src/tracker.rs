//! Counts live tasks (connections, WebSocket sessions) so shutdown can wait for them.

use std::sync::Arc;

use tokio::sync::watch;

#[derive(Clone)]
pub struct Tracker(Arc<watch::Sender<usize>>);

/// Held by a tracked task; dropping it marks the task done.
pub struct Guard(Arc<watch::Sender<usize>>);

impl Tracker {
    pub fn new() -> Self {
        Tracker(Arc::new(watch::channel(0).0))
    }

    pub fn enter(&self) -> Guard {
        self.0.send_modify(|n| *n += 1);
        Guard(self.0.clone())
    }

    pub fn active(&self) -> usize {
        *self.0.borrow()
    }

    /// Resolves once no guard is alive.
    pub async fn idle(&self) {
        // `wait_for` checks the current value first, so there is no missed-wakeup race.
        let _ = self.0.subscribe().wait_for(|n| *n == 0).await;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

//! `cutover abort COMPONENT`: a flag the deploy of that component checks in its waits (health
//! gate, drain, stabilization), so it stops at a point where stopping is safe.

use tokio::sync::watch;

/// Raised once, by whoever aborts; every clone sees it. A signal nobody raises (the undo steps
/// of `rollback_all`, recovery) simply never fires.
#[derive(Clone)]
pub struct AbortSignal {
    tx: std::sync::Arc<watch::Sender<Option<String>>>,
}

impl Default for AbortSignal {
    fn default() -> Self {
        Self {
            tx: std::sync::Arc::new(watch::channel(None).0),
        }
    }
}

impl AbortSignal {
    /// Raises the signal; `who` is the operator, as the daemon names peers. Returns false if it
    /// was raised already (the first one stands).
    pub fn raise(&self, who: &str) -> bool {
        self.tx.send_if_modified(|raised_by| {
            if raised_by.is_some() {
                return false;
            }
            *raised_by = Some(who.to_owned());
            true
        })
    }

    /// Who raised it, once raised.
    pub fn who(&self) -> Option<String> {
        self.tx.borrow().clone()
    }

    /// "aborted by WHO" once raised.
    pub fn reason(&self) -> Option<String> {
        self.who().map(|who| format!("aborted by {who}"))
    }

    /// Resolves with who raised it; never resolves otherwise.
    pub async fn raised_by(&self) -> String {
        let mut rx = self.tx.subscribe();
        let who = match rx.wait_for(Option::is_some).await {
            Ok(who) => who.clone(),
            // The sender lives in `self`: it cannot have gone.
            Err(_) => None,
        };
        match who {
            Some(who) => who,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_abort_gives_the_reason() {
        let signal = AbortSignal::default();
        assert_eq!(signal.reason(), None);
        let waiter = signal.clone();
        let waiting = tokio::spawn(async move { waiter.raised_by().await });
        assert!(signal.raise("alice (uid 1000)"));
        assert!(!signal.raise("bob (uid 1001)"));
        assert_eq!(waiting.await.unwrap(), "alice (uid 1000)");
        assert_eq!(
            signal.reason().as_deref(),
            Some("aborted by alice (uid 1000)")
        );
    }

    #[tokio::test]
    async fn a_signal_never_raised_never_resolves() {
        let signal = AbortSignal::default();
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(50), signal.raised_by()).await;
        assert!(waited.is_err());
    }
}

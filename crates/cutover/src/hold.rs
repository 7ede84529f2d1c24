//! `cutover deploy --hold`: a deploy that stops after its health gate, the new instance ready
//! beside the old one (which still serves every request), until someone says go
//! (`cutover proceed COMPONENT`). It never waits on nobody: an abort, the hold's timeout, or the
//! client following the deploy going away stops the new instance, and the old release never
//! noticed. `cutover fleet deploy` with `strategy = "all_healthy_then_switch"` holds every host
//! this way and lets them all go once all are ready.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Where a held deploy is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum HoldState {
    /// Not at the hold yet (storing, migrating, starting).
    Armed,
    /// Ready, waiting for go.
    Holding,
    /// Released by `who`.
    Go { who: String },
    /// The client following the deploy went away: nobody is left to say go.
    Left,
}

/// How a hold ended, as the deploy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldEnd {
    Go { who: String },
    FollowerLeft,
}

/// Why `cutover proceed` did not release a deploy.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotHolding {
    #[error("the deploy is not ready yet (it holds once its health gate passes); try again then")]
    NotYet,
    #[error("the deploy was released already")]
    Released,
    #[error("the client following the deploy went away; it is stopping")]
    Left,
}

/// One component's hold in one deploy; every clone sees the same state.
#[derive(Clone)]
pub struct SwitchHold {
    tx: Arc<watch::Sender<HoldState>>,
    /// The longest the deploy waits at the hold before it gives up.
    pub timeout: Duration,
}

impl SwitchHold {
    pub fn new(timeout: Duration) -> Self {
        Self {
            tx: Arc::new(watch::channel(HoldState::Armed).0),
            timeout,
        }
    }

    /// The deploy reached the hold.
    pub fn reached(&self) {
        self.tx.send_if_modified(|state| {
            let arrived = *state == HoldState::Armed;
            if arrived {
                *state = HoldState::Holding;
            }
            arrived
        });
    }

    /// `cutover proceed`: releases a deploy that holds.
    pub fn proceed(&self, who: &str) -> Result<(), NotHolding> {
        let mut refused = None;
        self.tx.send_if_modified(|state| match state {
            HoldState::Holding => {
                *state = HoldState::Go {
                    who: who.to_owned(),
                };
                true
            }
            HoldState::Armed => {
                refused = Some(NotHolding::NotYet);
                false
            }
            HoldState::Go { .. } => {
                refused = Some(NotHolding::Released);
                false
            }
            HoldState::Left => {
                refused = Some(NotHolding::Left);
                false
            }
        });
        refused.map_or(Ok(()), Err)
    }

    /// The deploy's follower disconnected. Once released, the deploy goes on without it (as an
    /// unheld one does); before, it will stop at (or right after reaching) the hold.
    pub fn follower_left(&self) {
        self.tx.send_if_modified(|state| {
            let waiting = matches!(state, HoldState::Armed | HoldState::Holding);
            if waiting {
                *state = HoldState::Left;
            }
            waiting
        });
    }

    /// Resolves once released or abandoned.
    pub async fn ended(&self) -> HoldEnd {
        let mut rx = self.tx.subscribe();
        let end = rx
            .wait_for(|s| matches!(s, HoldState::Go { .. } | HoldState::Left))
            .await
            .map(|s| s.clone());
        match end {
            Ok(HoldState::Go { who }) => HoldEnd::Go { who },
            Ok(_) => HoldEnd::FollowerLeft,
            // The sender lives in `self`: it cannot have gone.
            Err(_) => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn proceed_is_refused_before_the_hold_and_once_released() {
        let hold = SwitchHold::new(Duration::from_secs(60));
        assert_eq!(hold.proceed("ops"), Err(NotHolding::NotYet));
        hold.reached();
        assert_eq!(hold.proceed("ops"), Ok(()));
        assert_eq!(hold.proceed("ci"), Err(NotHolding::Released));
        // The first one stands, and a follower leaving after it changes nothing.
        hold.follower_left();
        assert_eq!(hold.ended().await, HoldEnd::Go { who: "ops".into() });
    }

    #[tokio::test]
    async fn a_follower_leaving_before_the_hold_ends_it_on_arrival() {
        let hold = SwitchHold::new(Duration::from_secs(60));
        hold.follower_left();
        hold.reached();
        assert_eq!(hold.ended().await, HoldEnd::FollowerLeft);
        assert_eq!(hold.proceed("ops"), Err(NotHolding::Left));
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_released() {
        let hold = SwitchHold::new(Duration::from_secs(60));
        hold.reached();
        let waiter = tokio::spawn({
            let hold = hold.clone();
            async move { hold.ended().await }
        });
        tokio::task::yield_now().await;
        hold.proceed("fleet").unwrap();
        assert_eq!(
            waiter.await.unwrap(),
            HoldEnd::Go {
                who: "fleet".into()
            }
        );
    }
}

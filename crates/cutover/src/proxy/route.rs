//! Which upstream of a component gets the next request: the atomic switch, and the hold that
//! makes requests wait out a restart.

use super::upstream::{InflightGuard, Upstream};
use crate::config::ComponentName;
use arc_swap::ArcSwapOption;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The proxy's state for one component: which upstream gets the next request.
pub struct Route {
    pub component: ComponentName,
    current: ArcSwapOption<Upstream>,
    /// Milliseconds a request waits for response headers before the client gets a 504
    /// (`upstream_timeout`; a reload changes it for the next request).
    upstream_timeout_ms: AtomicU64,
    /// Milliseconds a request may wait for a replacement while the serving instance is down
    /// and the watchdog restarts it (0: not held). One atomic load per request when unset.
    hold_ms: AtomicU64,
    /// Wakes held requests when the route changes or the hold ends.
    changed: Notify,
}

impl Route {
    pub fn new(component: ComponentName, upstream_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            component,
            current: ArcSwapOption::empty(),
            upstream_timeout_ms: AtomicU64::new(upstream_timeout.as_millis() as u64),
            hold_ms: AtomicU64::new(0),
            changed: Notify::new(),
        })
    }

    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms.load(Ordering::Relaxed))
    }

    pub fn set_upstream_timeout(&self, timeout: Duration) {
        self.upstream_timeout_ms
            .store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn current(&self) -> Option<Arc<Upstream>> {
        self.current.load_full()
    }

    /// The atomic switch: every request from now on goes to `next`. Returns the previous one.
    /// Ends a hold: held requests go to `next` at once.
    pub fn switch(&self, next: Option<Arc<Upstream>>) -> Option<Arc<Upstream>> {
        let previous = self.current.swap(next);
        self.release_hold();
        previous
    }

    /// From now on new requests wait (each up to `limit`) for the next [`Route::switch`] or
    /// [`Route::release_hold`] instead of going to the current upstream, which is down.
    pub fn hold(&self, limit: Duration) {
        self.hold_ms.store(
            limit.as_millis().clamp(1, u64::MAX as u128) as u64,
            Ordering::SeqCst,
        );
    }

    /// Held requests go on to whatever the route points at now.
    pub fn release_hold(&self) {
        self.hold_ms.store(0, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub fn is_held(&self) -> bool {
        self.hold_ms.load(Ordering::SeqCst) != 0
    }

    /// [`Route::acquire`], after waiting out a hold (bounded by the hold's limit).
    pub(super) async fn acquire_after_hold(&self) -> Option<InflightGuard> {
        let limit = self.hold_ms.load(Ordering::SeqCst);
        if limit != 0 {
            let deadline = Instant::now() + Duration::from_millis(limit);
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                // Registered before the check, so a release between the two is not missed.
                changed.as_mut().enable();
                if !self.is_held() {
                    break;
                }
                if tokio::time::timeout_at(deadline.into(), changed)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
        self.acquire()
    }

    /// Picks the current upstream and counts the request in flight on it. The re-check after
    /// counting closes the race with a switch: a drain that starts after the switch either sees
    /// this request counted, or the request sees the switch and moves to the new upstream.
    fn acquire(&self) -> Option<InflightGuard> {
        loop {
            let guard = InflightGuard::new(self.current.load_full()?);
            let still_current = self
                .current
                .load()
                .as_ref()
                .is_some_and(|now| Arc::ptr_eq(now, &guard.0));
            if still_current {
                return Some(guard);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::ReleaseId;

    fn api_route() -> Arc<Route> {
        Route::new(
            ComponentName::parse("api").unwrap(),
            Duration::from_secs(60),
        )
    }

    fn upstream(port: u16, release: &str) -> Arc<Upstream> {
        Upstream::new(
            "api",
            ([127, 0, 0, 1], port).into(),
            ReleaseId::parse(release).unwrap(),
            crate::config::UpstreamProtocol::Http1,
        )
    }

    #[tokio::test]
    async fn a_held_route_waits_for_the_switch_within_its_limit() {
        let route = api_route();
        let dead = upstream(1, "a");
        let fresh = upstream(2, "a");
        route.switch(Some(dead.clone()));
        route.hold(Duration::from_secs(10));
        let waiting = {
            let route = route.clone();
            tokio::spawn(async move { route.acquire_after_hold().await.map(|g| g.0.addr) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a held request waits");
        route.switch(Some(fresh.clone()));
        assert_eq!(waiting.await.unwrap(), Some(fresh.addr));
        assert!(!route.is_held());

        // The limit bounds the wait: then the request goes to what the route has.
        route.hold(Duration::from_millis(30));
        let started = Instant::now();
        let got = route.acquire_after_hold().await.map(|g| g.0.addr);
        assert_eq!(got, Some(fresh.addr));
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn acquire_follows_switch_and_drain_waits() {
        let route = api_route();
        assert!(route.acquire().is_none());
        let a = upstream(1, "a");
        let b = upstream(2, "b");
        route.switch(Some(a.clone()));
        let held = route.acquire().unwrap();
        assert!(Arc::ptr_eq(&held.0, &a));
        route.switch(Some(b.clone()));
        assert!(Arc::ptr_eq(&route.acquire().unwrap().0, &b));
        assert_eq!(a.inflight(), 1);
        assert_eq!(a.drain(Duration::from_millis(20)).await, 1);
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(held);
        });
        assert_eq!(a.drain(Duration::from_secs(5)).await, 0);
        release.await.unwrap();
    }
}

//! One component at run time: its route, the instance serving it, and the deploy claim.

use crate::config::{ComponentConfig, ComponentKind};
use crate::protocol::DeployInProgress;
use crate::proxy::{Route, Upstream};
use crate::release::ReleaseId;
use crate::site::SiteRoute;
use crate::store::Store;
use crate::supervisor::Instance;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub struct ComponentRuntime {
    pub config: ComponentConfig,
    /// Where a process component's requests go.
    pub route: Arc<Route>,
    /// Which files a static component serves.
    pub site: Arc<SiteRoute>,
    /// The public address as actually bound (port 0 in the config becomes a real port); none
    /// for hook components.
    pub listen: Option<SocketAddr>,
    /// The instance the route points at, with its upstream. Changed only together with the
    /// route, by whoever holds the deploy claim (or by recovery before serving starts).
    serving: Mutex<Option<Serving>>,
    /// The deploy that owns this component right now; a second one is refused.
    deploying: Mutex<Option<DeployInProgress>>,
    /// How `cutover abort` reaches that deploy (none for the watchdog's own restarts).
    abort: Mutex<Option<crate::abort::AbortSignal>>,
    /// What the watchdog last saw of the serving instance (process components).
    pub health: crate::health::HealthBoard,
}

#[derive(Clone)]
pub struct Serving {
    pub instance: Instance,
    pub upstream: Arc<Upstream>,
}

/// Exclusive right to change a component; released on drop.
pub struct DeployClaim {
    component: Arc<ComponentRuntime>,
}

impl Drop for DeployClaim {
    fn drop(&mut self) {
        *lock(&self.component.abort) = None;
        *lock(&self.component.deploying) = None;
    }
}

impl DeployClaim {
    /// Lets `cutover abort` stop the deploy holding this claim; the deploy checks the signal.
    /// One signal is shared by every stage of a pipeline: aborting one component stops the
    /// pipeline (its running stages stop safely, the others are skipped).
    pub fn abortable(&self, signal: &crate::abort::AbortSignal) {
        *lock(&self.component.abort) = Some(signal.clone());
    }

    pub fn set_deploy_id(&self, deploy_id: i64) {
        if let Some(info) = lock(&self.component.deploying).as_mut() {
            info.deploy_id = deploy_id;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ComponentRuntime {
    pub fn new(config: ComponentConfig, listen: Option<SocketAddr>) -> Arc<Self> {
        Arc::new(Self {
            route: Route::new(
                config.name.clone(),
                config
                    .process()
                    .map_or(Duration::from_secs(60), |p| p.upstream_timeout.get()),
            ),
            site: Arc::new(SiteRoute::new()),
            config,
            listen,
            serving: Mutex::new(None),
            deploying: Mutex::new(None),
            abort: Mutex::new(None),
            health: Default::default(),
        })
    }

    pub fn name(&self) -> &str {
        self.config.name.as_str()
    }

    /// Claims the component for a deploy, or says which deploy already holds it.
    pub fn claim(self: &Arc<Self>, info: DeployInProgress) -> Result<DeployClaim, String> {
        let mut slot = lock(&self.deploying);
        if let Some(current) = slot.as_ref() {
            let since = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_millis(current.started_at.max(0) as u64),
            );
            let id = if current.deploy_id > 0 {
                format!("deploy #{} ", current.deploy_id)
            } else {
                "a deploy ".to_owned()
            };
            return Err(format!(
                "{id}of {} to {} is in progress (started by {} at {since}); try again when it has finished",
                self.name(),
                current.release,
                current.who
            ));
        }
        *slot = Some(info);
        Ok(DeployClaim {
            component: self.clone(),
        })
    }

    /// Raises the abort signal of the deploy in progress; says why not when there is none.
    pub fn abort(&self, who: &str) -> Result<DeployInProgress, String> {
        let deploying = self.deploying();
        let signal = lock(&self.abort).clone();
        match (deploying, signal) {
            (Some(info), Some(signal)) => {
                signal.raise(who);
                Ok(info)
            }
            (Some(info), None) => Err(format!(
                "{} is busy with {} (not a deploy); nothing to abort",
                self.name(),
                info.who
            )),
            (None, _) => Err(format!("no deploy of {} is in progress", self.name())),
        }
    }

    pub fn deploying(&self) -> Option<DeployInProgress> {
        lock(&self.deploying).clone()
    }

    /// The release answering requests right now (for a hook: the one last confirmed live).
    pub fn serving_release(&self, store: &Store) -> Option<ReleaseId> {
        match &self.config.kind {
            ComponentKind::Process(_) => self.serving().map(|s| s.instance.release),
            ComponentKind::Static(_) => self.site.current().map(|s| s.release.clone()),
            ComponentKind::Hook(_) => store.active_release(self.name()),
        }
    }

    pub fn serving(&self) -> Option<Serving> {
        lock(&self.serving).clone()
    }

    /// Points the route at `next` (atomically) and records it as serving. Returns what served before.
    pub fn switch_to(&self, next: Option<Serving>) -> Option<Serving> {
        let mut slot = lock(&self.serving);
        self.route.switch(next.as_ref().map(|s| s.upstream.clone()));
        crate::metrics::active(
            self.name(),
            next.as_ref().map(|s| s.instance.release.as_str()),
        );
        std::mem::replace(&mut *slot, next)
    }
}

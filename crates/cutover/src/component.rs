//! One component at run time: what answers its requests (by kind), and the deploy claim.

use crate::config::{ComponentConfig, ComponentKind, UpstreamProtocol};
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
    /// Its name never changes; its settings may, by `cutover reload` (see [`Self::config`]).
    name: crate::config::ComponentName,
    settings: arc_swap::ArcSwap<ComponentConfig>,
    /// What answers its requests; each kind holds only its own part.
    pub plane: Plane,
    /// The public address as actually bound (port 0 in the config becomes a real port); none
    /// for hook components. A reload may move it.
    listen: Mutex<Option<SocketAddr>>,
    /// The deploy that owns this component right now; a second one is refused.
    deploying: Mutex<Option<DeployInProgress>>,
    /// How `cutover abort` reaches that deploy (none for the watchdog's own restarts).
    abort: Mutex<Option<crate::abort::AbortSignal>>,
    /// How `cutover proceed` reaches that deploy when it holds before its switch.
    hold: Mutex<Option<crate::hold::SwitchHold>>,
    /// What the watchdog last saw of the serving instance (process components).
    pub health: crate::health::HealthBoard,
    /// Its own access log, open while `access_log = true`; shared with its edge route.
    pub access_log: Arc<crate::request_log::LogSlot>,
    /// Added by a reload and not deployed since: nothing it served before (when it was removed
    /// and added back) is started again behind the operator's back; its first deploy is.
    awaiting_deploy: std::sync::atomic::AtomicBool,
}

/// The data plane of one component, by kind.
pub enum Plane {
    /// A process: requests go through the route to the serving instance.
    Process(ProcessPlane),
    /// A static site: the files of the current release.
    Static(Arc<SiteRoute>),
    /// Hosted elsewhere: cutover answers none of its requests.
    Hook,
}

pub struct ProcessPlane {
    pub route: Arc<Route>,
    /// The instance the route points at, with its upstream. Changed only together with the
    /// route, by whoever holds the deploy claim (or by recovery before serving starts).
    serving: Mutex<Option<Serving>>,
}

#[derive(Clone)]
pub struct Serving {
    pub instance: Instance,
    pub upstream: Arc<Upstream>,
}

impl Serving {
    /// The instance with a fresh upstream (its own connection pool and traffic counters),
    /// spoken to in `protocol`.
    pub fn new(component: &str, protocol: UpstreamProtocol, instance: Instance) -> Self {
        Self {
            upstream: Upstream::new(component, instance.addr, instance.release.clone(), protocol),
            instance,
        }
    }
}

/// A component already claimed: by whom, since when.
#[derive(Debug)]
pub struct Busy {
    component: String,
    holder: DeployInProgress,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = &self.holder;
        let since = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_millis(current.started_at.max(0) as u64),
        );
        if current.deploy_id > 0 {
            write!(f, "deploy #{} ", current.deploy_id)?;
        } else {
            f.write_str("a deploy ")?;
        }
        write!(
            f,
            "of {} to {} is in progress (started by {} at {since}); try again when it has finished",
            self.component, current.release, current.who
        )
    }
}

impl std::error::Error for Busy {}

/// Why `cutover abort` found nothing to stop.
#[derive(Debug, thiserror::Error)]
pub enum NotAbortable {
    #[error("{component} is busy with {who} (not a deploy); nothing to abort")]
    NotADeploy { component: String, who: String },
    #[error("no deploy of {component} is in progress")]
    Idle { component: String },
}

/// Why `cutover proceed` released nothing.
#[derive(Debug, thiserror::Error)]
pub enum NotReleased {
    #[error("{component}: {why}")]
    Hold {
        component: String,
        why: crate::hold::NotHolding,
    },
    #[error("the deploy of {component} in progress does not hold (it was started without --hold)")]
    NotHeld { component: String },
    #[error("no deploy of {component} is in progress")]
    Idle { component: String },
}

/// Exclusive right to change a component; released on drop.
pub struct DeployClaim {
    component: Arc<ComponentRuntime>,
}

impl Drop for DeployClaim {
    fn drop(&mut self) {
        *lock(&self.component.abort) = None;
        *lock(&self.component.hold) = None;
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

    /// Lets `cutover proceed` release the deploy holding this claim.
    pub fn holdable(&self, hold: &crate::hold::SwitchHold) {
        *lock(&self.component.hold) = Some(hold.clone());
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
        let plane = match &config.kind {
            ComponentKind::Process(process) => Plane::Process(ProcessPlane {
                route: Route::new(config.name.clone(), process.upstream_timeout.get()),
                serving: Mutex::new(None),
            }),
            ComponentKind::Static(_) => Plane::Static(Arc::new(SiteRoute::new())),
            ComponentKind::Hook(_) => Plane::Hook,
        };
        Arc::new(Self {
            plane,
            name: config.name.clone(),
            settings: arc_swap::ArcSwap::from_pointee(config),
            listen: Mutex::new(listen),
            deploying: Mutex::new(None),
            abort: Mutex::new(None),
            hold: Mutex::new(None),
            health: Default::default(),
            access_log: Default::default(),
            awaiting_deploy: Default::default(),
        })
    }

    /// A component a reload added: it serves from its first deploy.
    pub fn added(config: ComponentConfig, listen: Option<SocketAddr>) -> Arc<Self> {
        let component = Self::new(config, listen);
        component
            .awaiting_deploy
            .store(true, std::sync::atomic::Ordering::Relaxed);
        component
    }

    /// Whether nothing has been deployed to it since a reload added it.
    pub fn awaiting_deploy(&self) -> bool {
        self.awaiting_deploy
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    pub fn listen(&self) -> Option<SocketAddr> {
        *lock(&self.listen)
    }

    /// After a reload moved its listener (bound at `addr` before the old one closed).
    pub fn moved_to(&self, addr: Option<SocketAddr>) {
        *lock(&self.listen) = addr;
    }

    /// Its settings now. A deploy, rollback or watchdog restart takes them once, when it
    /// starts, and keeps them to its end: a reload changes the next one, never one in progress.
    pub fn config(&self) -> Arc<ComponentConfig> {
        self.settings.load_full()
    }

    /// Replaces its settings (same name and kind: `cutover reload` checked). Only the holder of
    /// the component's claim calls it, so no deploy sees two versions.
    pub fn reconfigure(&self, _claim: &DeployClaim, config: ComponentConfig) {
        debug_assert_eq!(config.name, self.name);
        if let Plane::Process(plane) = &self.plane {
            if let Some(process) = config.process() {
                plane
                    .route
                    .set_upstream_timeout(process.upstream_timeout.get());
            }
        }
        self.settings.store(Arc::new(config));
    }

    /// Claims the component for a change to `release` by `who` (a deploy, a rollback, the
    /// watchdog's restart), or says which one already holds it.
    pub fn claim(self: &Arc<Self>, release: &ReleaseId, who: &str) -> Result<DeployClaim, Busy> {
        let mut slot = lock(&self.deploying);
        if let Some(current) = slot.as_ref() {
            return Err(Busy {
                component: self.name().to_owned(),
                holder: current.clone(),
            });
        }
        *slot = Some(DeployInProgress {
            deploy_id: 0,
            release: release.to_string(),
            who: who.to_owned(),
            started_at: crate::vocab::now_millis(),
        });
        Ok(DeployClaim {
            component: self.clone(),
        })
    }

    /// [`Self::claim`], for a deploy `cutover abort` can stop through `abort`.
    pub fn claim_abortable(
        self: &Arc<Self>,
        release: &ReleaseId,
        who: &str,
        abort: &crate::abort::AbortSignal,
    ) -> Result<DeployClaim, Busy> {
        let claim = self.claim(release, who)?;
        claim.abortable(abort);
        Ok(claim)
    }

    /// Raises the abort signal of the deploy in progress; says why not when there is none.
    pub fn abort(&self, who: &str) -> Result<DeployInProgress, NotAbortable> {
        let deploying = self.deploying();
        let signal = lock(&self.abort).clone();
        match (deploying, signal) {
            (Some(info), Some(signal)) => {
                signal.raise(who);
                Ok(info)
            }
            (Some(info), None) => Err(NotAbortable::NotADeploy {
                component: self.name().to_owned(),
                who: info.who,
            }),
            (None, _) => Err(NotAbortable::Idle {
                component: self.name().to_owned(),
            }),
        }
    }

    /// Releases the deploy in progress from its hold; says why not when it does not hold.
    pub fn proceed(&self, who: &str) -> Result<DeployInProgress, NotReleased> {
        let deploying = self.deploying();
        let hold = lock(&self.hold).clone();
        let component = self.name().to_owned();
        match (deploying, hold) {
            (Some(info), Some(hold)) => match hold.proceed(who) {
                Ok(()) => Ok(info),
                Err(why) => Err(NotReleased::Hold { component, why }),
            },
            (Some(_), None) => Err(NotReleased::NotHeld { component }),
            (None, _) => Err(NotReleased::Idle { component }),
        }
    }

    pub fn deploying(&self) -> Option<DeployInProgress> {
        lock(&self.deploying).clone()
    }

    /// The release answering requests right now (for a hook: the one last confirmed live).
    /// The release answering its requests now, as the access log names it (no store read:
    /// it is asked per request).
    pub fn serving_release_name(&self) -> Option<Arc<str>> {
        match &self.plane {
            Plane::Process(plane) => plane.route.current().map(|u| Arc::from(u.release.as_str())),
            Plane::Static(site) => site.current().map(|s| Arc::from(s.release.as_str())),
            Plane::Hook => None,
        }
    }

    pub fn serving_release(&self, store: &Store) -> Option<ReleaseId> {
        match &self.plane {
            Plane::Process(_) => self.serving().map(|s| s.instance.release),
            Plane::Static(site) => site.current().map(|s| s.release.clone()),
            Plane::Hook => store.active_release(self.name()),
        }
    }

    /// `instance` ready to serve: a fresh upstream in the protocol the component is configured
    /// with now (`upstream`).
    pub fn new_serving(&self, instance: Instance) -> Serving {
        let protocol = self
            .config()
            .process()
            .map_or(UpstreamProtocol::Http1, |process| process.upstream);
        Serving::new(self.name(), protocol, instance)
    }

    /// The instance serving a process component (none for other kinds).
    pub fn serving(&self) -> Option<Serving> {
        match &self.plane {
            Plane::Process(p) => lock(&p.serving).clone(),
            _ => None,
        }
    }

    /// Points the route at `next` (atomically) and records it as serving. Returns what served
    /// before. Only process code calls it: other kinds have no instance to switch to.
    pub fn switch_to(&self, next: Option<Serving>) -> Option<Serving> {
        let Plane::Process(plane) = &self.plane else {
            debug_assert!(false, "switch_to on {}, which runs no process", self.name());
            return None;
        };
        let mut slot = lock(&plane.serving);
        if next.is_some() {
            self.awaiting_deploy
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
        plane
            .route
            .switch(next.as_ref().map(|s| s.upstream.clone()));
        crate::metrics::active(
            self.name(),
            next.as_ref().map(|s| s.instance.release.as_str()),
        );
        std::mem::replace(&mut *slot, next)
    }

    /// Where a process component's requests go.
    pub fn route(&self) -> Option<&Arc<Route>> {
        match &self.plane {
            Plane::Process(p) => Some(&p.route),
            _ => None,
        }
    }

    /// Which files a static component serves.
    pub fn site(&self) -> Option<&Arc<SiteRoute>> {
        match &self.plane {
            Plane::Static(site) => Some(site),
            _ => None,
        }
    }
}

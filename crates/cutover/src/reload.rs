//! `cutover reload` (and SIGHUP): re-read the config and apply it to the running daemon, each
//! change without a failed request. What changed, and when each change applies, is
//! [`crate::config::ReloadPlan`]'s call; this module carries it out:
//!
//! - nothing is changed unless everything can be: a config that does not validate, a refused
//!   change (`data_dir`, a kind, ...), a component busy with a deploy, or an address that
//!   cannot be bound stops the reload before anything moved;
//! - new listeners are bound first (an added component, a moved `listen`); then the new
//!   settings and the new component set are swapped in at once; then added components start
//!   serving (an added process component serves from its first deploy), moved listeners'
//!   old sockets stop accepting and drain, removed components stop accepting, drain, and
//!   their instance stops;
//! - the reload is recorded in the history with its summary.

use crate::component::{Busy, ComponentRuntime, DeployClaim};
use crate::config::{Config, ConfigError, ReloadPlan};
use crate::deploy::Shared;
use crate::handoff::Socket;
use crate::listener::{self, Inherited, ListenerError};
use crate::release::{ReleaseId, ReleaseStore};
use crate::runtime::DaemonState;
use crate::vocab::InstanceState;
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::Arc;
use tokio::net::TcpListener;

/// What a reload did, one line per change.
#[derive(Debug)]
pub struct Reloaded {
    pub lines: Vec<String>,
    pub summary: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not validate: `file:line:key: message`.
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    #[error("this config cannot be applied to the running daemon:\n  {}", .0.join("\n  "))]
    Refused(Vec<String>),
    #[error("cannot reload now: {0}")]
    Busy(#[from] Busy),
    #[error("{0}")]
    Bind(#[from] ListenerError),
    #[error("{0}")]
    Other(String),
}

pub async fn reload(state: &DaemonState, who: &str) -> Result<Reloaded, ReloadError> {
    // Each reload compares against the config the previous one installed.
    let _one = state.changing.lock().await;
    let shared = state.shared();
    let loaded = Config::load(&shared.config.path)?;
    let plan = ReloadPlan::between(&shared.config, &loaded);
    if plan.refused() {
        return Err(ReloadError::Refused(plan.lines()));
    }
    let components = state.components();
    let find = |name: &str| components.iter().find(|c| c.name() == name).cloned();

    // Everything that is changed or removed is held, so no deploy runs with half of it.
    let mut claims: HashMap<String, DeployClaim> = HashMap::new();
    let touched = plan
        .removed
        .iter()
        .chain(plan.changed.iter().map(|(n, _)| n))
        .chain(plan.relisten.iter().map(|(n, _, _)| n));
    for name in touched {
        let Some(component) = find(name.as_str()) else {
            continue;
        };
        if claims.contains_key(component.name()) {
            continue;
        }
        let release = component
            .serving_release(&shared.store)
            .unwrap_or_else(|| ReleaseId::parse("none").expect("a valid id"));
        let claim = component.claim(&release, "cutover reload")?;
        claims.insert(component.name().to_owned(), claim);
    }

    // Bind before anything changes: a taken address stops the reload here.
    let mut bound: HashMap<String, TcpListener> = HashMap::new();
    let new_addresses = plan
        .added
        .iter()
        .filter_map(|n| {
            let config = loaded.components.iter().find(|c| &c.name == n)?;
            Some((n, config.listen?))
        })
        .chain(
            plan.relisten
                .iter()
                .filter_map(|(n, _, new)| Some((n, (*new)?))),
        );
    for (name, addr) in new_addresses {
        let listener = listener::open(name.as_str(), addr, &mut Inherited::none())?;
        bound.insert(name.to_string(), listener);
    }

    let notifier = crate::notify::Notifier::for_config(&loaded)
        .map_err(|e| ReloadError::Other(format!("invalid [[notify]] settings: {e}")))?;
    let mut next = Vec::new();
    let mut added = Vec::new();
    for config in &loaded.components {
        match find(config.name.as_str()) {
            Some(existing) => {
                if let Some(claim) = claims.get(existing.name()) {
                    existing.reconfigure(claim, config.clone());
                }
                next.push(existing);
            }
            None => {
                let addr = bound
                    .get(config.name.as_str())
                    .map(|l| l.local_addr())
                    .transpose()
                    .map_err(|e| ReloadError::Other(e.to_string()))?;
                let runtime = ComponentRuntime::added(config.clone(), addr);
                added.push(runtime.clone());
                next.push(runtime);
            }
        }
    }
    let data_dir = &loaded.daemon.data_dir;
    let next_shared = Arc::new(Shared {
        releases: ReleaseStore::new(data_dir).with_bundle_limits(loaded.daemon.bundle_limits),
        store: shared.store.clone(),
        notifier,
        config: Arc::new(loaded.clone()),
    });
    crate::edge::install(loaded.edge.clone());
    state.replace(next_shared.clone(), next.clone());
    // Hosts and certificates: one new table, swapped in at once.
    state.frontends.route(&loaded, &next);

    let frontends = &state.frontends;
    let grace = crate::frontends::grace(&loaded);
    state.live.apply(&loaded);
    let limits =
        || crate::fdlimit::budget_for(&loaded).public_limits(&state.live.body_read_timeout);
    // Starts serving on the socket bound for `component`, if one was; returns its address.
    let mut serve =
        |component: &Arc<ComponentRuntime>| -> Result<Option<std::net::SocketAddr>, ReloadError> {
            let Some(listener) = bound.remove(component.name()) else {
                return Ok(None);
            };
            let addr = listener
                .local_addr()
                .map_err(|e| ReloadError::Other(e.to_string()))?;
            state
                .lifecycle
                .sockets
                .keep(
                    Socket::Component(component.name().to_owned()),
                    listener.as_fd(),
                )
                .map_err(|e| ReloadError::Other(e.to_string()))?;
            frontends
                .serve(component, listener, grace, limits())
                .map_err(|e| ReloadError::Other(e.to_string()))?;
            Ok(Some(addr))
        };
    for component in &added {
        frontends.watch(&next_shared, component);
        serve(component)?;
    }
    // A changed component's watchdog restarts with its new settings (and the new context).
    for (name, _) in &plan.changed {
        if let Some(component) = find(name.as_str()) {
            frontends.unwatch(name.as_str());
            frontends.watch(&next_shared, &component);
        }
    }
    for (name, _, _) in &plan.relisten {
        let Some(component) = find(name.as_str()) else {
            continue;
        };
        // The address as bound (the config may say port 0).
        let old = component.listen();
        let new = serve(&component)?;
        component.moved_to(new);
        if let Some(old) = old {
            frontends.stop(name.as_str(), Some(old)).await;
        }
    }
    for name in &plan.removed {
        if let Some(component) = find(name.as_str()) {
            retire(state, &shared.store, &component).await;
        }
    }
    drop(claims);

    let summary = plan.summary();
    if let Err(e) = shared.store.record_daemon_event("reload", who, &summary) {
        tracing::warn!("cannot record the reload in the history: {e}");
    }
    tracing::info!(%who, "reloaded {}: {summary}", loaded.path.display());
    let mut lines = plan.lines();
    if lines.is_empty() {
        lines.push("no changes".to_owned());
    }
    if state.lifecycle.socket_activated {
        for component in added.iter().filter(|c| c.listen().is_some()) {
            lines.push(format!(
                "{0}: its socket is bound by the daemon, not systemd: add cutover-{0}.socket (`cutover generate systemd`) so that a restart keeps its queue",
                component.name()
            ));
        }
    }
    Ok(Reloaded { lines, summary })
}

/// A removed component: its listener stops accepting and its connections finish, then its
/// requests and tunnels drain, then its instance stops. Its releases and history stay.
async fn retire(state: &DaemonState, store: &crate::store::Store, component: &ComponentRuntime) {
    let name = component.name();
    state.frontends.stop(name, None).await;
    state.frontends.unwatch(name);
    state
        .lifecycle
        .sockets
        .forget(&Socket::Component(name.to_owned()));
    let config = component.config();
    let Some(process) = config.process() else {
        return;
    };
    if let Some(serving) = component.switch_to(None) {
        let left = serving.upstream.drain(config.drain_timeout.get()).await;
        if left > 0 {
            tracing::warn!(
                component = name,
                "{left} requests or tunnels still open after the drain timeout"
            );
        }
        serving.upstream.close_tunnels();
        serving.upstream.close_pool();
        let status = serving.instance.stop(process.stop_timeout.get()).await;
        let _ = store.set_instance_state(serving.instance.id, InstanceState::Stopped);
        tracing::info!(component = name, release = %serving.instance.release, "removed by reload: stopped ({status})");
    }
}

//! What the running daemon holds, shared by the control API, the status views and start-up:
//! the deploy context, the components, the uploads in flight, and what an upgrade hands over.

use crate::accept_gate::AcceptGate;
use crate::component::ComponentRuntime;
use crate::deploy::Shared;
use crate::handoff::give::{Giver, HandedOver, Sockets, UpgradeError};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Everything the control API needs.
pub struct DaemonState {
    /// The deploy context; a reload replaces it (the config in it), deploys in progress keep
    /// the one they started with.
    shared: arc_swap::ArcSwap<Shared>,
    /// The components served now; a reload adds and removes them.
    components: arc_swap::ArcSwap<Vec<Arc<ComponentRuntime>>>,
    pub started_at: i64,
    /// Artifacts received over the control socket, removed when their pipeline ends.
    pub uploads: crate::upload::Uploads,
    pub lifecycle: Lifecycle,
    /// What serves each component (its listener, its watchdog).
    pub frontends: crate::frontends::Frontends,
    /// Settings running tasks read live.
    pub live: crate::live::LiveSettings,
    /// One change to the daemon itself at a time (a reload, an upgrade): each starts from
    /// what the previous one left.
    pub changing: tokio::sync::Mutex<()>,
}

/// How this daemon hands over to a new one (`cutover upgrade`).
pub struct Lifecycle {
    /// The binary this daemon was started from: the default for `cutover upgrade`.
    pub binary: PathBuf,
    /// Whether its public sockets came from systemd (socket activation).
    pub socket_activated: bool,
    pub sockets: Sockets,
    /// Closed while a new daemon takes the sockets over.
    pub gate: AcceptGate,
    handed: Mutex<Option<HandedOver>>,
    handed_signal: watch::Sender<bool>,
}

impl Lifecycle {
    pub fn new(binary: PathBuf, gate: AcceptGate, socket_activated: bool) -> Lifecycle {
        Lifecycle {
            binary,
            socket_activated,
            sockets: Sockets::default(),
            gate,
            handed: Mutex::new(None),
            handed_signal: watch::channel(false).0,
        }
    }

    /// Resolves once a new daemon serves in this one's place.
    pub async fn handed_over(&self) {
        let _ = self.handed_signal.subscribe().wait_for(|h| *h).await;
    }

    pub fn is_handed_over(&self) -> bool {
        *self.handed_signal.borrow()
    }
}

/// What `cutover upgrade` reports.
#[derive(Debug)]
pub struct Upgraded {
    pub old_pid: u32,
    pub new_pid: u32,
}

impl DaemonState {
    pub fn new(
        shared: Arc<Shared>,
        components: Vec<Arc<ComponentRuntime>>,
        uploads: crate::upload::Uploads,
        lifecycle: Lifecycle,
        frontends: crate::frontends::Frontends,
    ) -> DaemonState {
        DaemonState {
            changing: tokio::sync::Mutex::new(()),
            live: crate::live::LiveSettings::new(&shared.config),
            frontends,
            shared: arc_swap::ArcSwap::new(shared),
            components: arc_swap::ArcSwap::from_pointee(components),
            started_at: crate::vocab::now_millis(),
            uploads,
            lifecycle,
        }
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.load_full()
    }

    pub fn components(&self) -> Arc<Vec<Arc<ComponentRuntime>>> {
        self.components.load_full()
    }

    pub fn component(&self, name: &str) -> Option<Arc<ComponentRuntime>> {
        self.components().iter().find(|c| c.name() == name).cloned()
    }

    /// A reload's new config and component set.
    pub fn replace(&self, shared: Arc<Shared>, components: Vec<Arc<ComponentRuntime>>) {
        self.shared.store(shared);
        self.components.store(Arc::new(components));
    }

    /// Starts `binary` (default: this daemon's own) and hands it the sockets and instances.
    /// On success this daemon stops accepting and will exit once its connections finish; on
    /// any failure it goes on serving as before.
    pub async fn upgrade(
        &self,
        binary: Option<PathBuf>,
        timeout: Duration,
        who: &str,
    ) -> Result<Upgraded, UpgradeError> {
        let _one = self.changing.lock().await;
        let binary = binary.unwrap_or_else(|| self.lifecycle.binary.clone());
        let shared = self.shared();
        let components = self.components();
        let config = &shared.config;
        let giver = Giver {
            binary: &binary,
            config_path: &config.path,
            config_sha256: &config.sha256,
            components: &components,
            sockets: &self.lifecycle.sockets,
            gate: &self.lifecycle.gate,
            timeout,
            socket_activated: self.lifecycle.socket_activated,
        };
        tracing::info!(binary = %binary.display(), "upgrade: starting the new daemon");
        let handed = giver.upgrade().await?;
        let upgraded = Upgraded {
            old_pid: std::process::id(),
            new_pid: handed.new_pid,
        };
        *self
            .lifecycle
            .handed
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(handed);
        let summary = format!(
            "daemon pid {} -> {} ({})",
            upgraded.old_pid,
            upgraded.new_pid,
            binary.display()
        );
        if let Err(e) = shared.store.record_daemon_event("upgrade", who, &summary) {
            tracing::warn!("cannot record the upgrade in the history: {e}");
        }
        self.lifecycle.handed_signal.send_replace(true);
        tracing::info!(
            new_pid = upgraded.new_pid,
            "upgrade: the new daemon serves; finishing open connections, then exiting"
        );
        Ok(upgraded)
    }
}

/// One line for systemd's STATUS=: what each component serves.
pub fn status_line(state: &DaemonState) -> String {
    let store = &state.shared().store;
    let parts: Vec<String> = state
        .components()
        .iter()
        .map(|c| {
            let serving = c.serving_release(store);
            format!(
                "{}={}",
                c.name(),
                serving.map_or("-".into(), |r| r.to_string())
            )
        })
        .collect();
    format!("serving {}", parts.join(" "))
}

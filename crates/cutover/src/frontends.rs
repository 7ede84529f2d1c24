//! The tasks that serve each component: its public listener's accept loop and, for a process,
//! its watchdog. Started at start-up and by `cutover reload`, which also stops them one at a
//! time (a removed component, a listener moved to a new address); all stop at shutdown.

use crate::accept_gate::AcceptGate;
use crate::component::{ComponentRuntime, Plane};
use crate::deploy::Shared;
use crate::server::{self, Frontend, Limits};
use crate::shutdown::{Shutdown, ShutdownTrigger};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The socket names of the shared listeners (systemd's `FileDescriptorName=`, and the handoff).
pub const SHARED_HTTP: &str = "edge-http";
pub const SHARED_HTTPS: &str = "edge-https";
/// How often the components' certificate files are checked for changes (a stat each).
const CERT_FILE_POLL: Duration = Duration::from_secs(2);

/// What the shared listeners' servers are filed under.
const SHARED: &str = "[edge]";

pub struct Frontends {
    daemon_shutdown: Shutdown,
    gate: AcceptGate,
    /// The routes and certificates of the shared `[edge]` listeners.
    pub front: Arc<crate::front::Front>,
    /// Their automatic certificates.
    pub certs: crate::certs::Certs,
    servers: Mutex<Vec<Server>>,
    watchdogs: Mutex<Vec<(String, Arc<ShutdownTrigger>)>>,
}

struct Server {
    component: String,
    addr: SocketAddr,
    stop: Arc<ShutdownTrigger>,
    task: JoinHandle<()>,
}

impl Frontends {
    pub fn new(daemon_shutdown: Shutdown, gate: AcceptGate) -> Frontends {
        Frontends {
            daemon_shutdown,
            gate,
            front: crate::front::Front::new(),
            certs: Default::default(),
            servers: Mutex::new(Vec::new()),
            watchdogs: Mutex::new(Vec::new()),
        }
    }

    /// A stop signal of its own that the daemon's shutdown also raises.
    fn stop_signal(&self) -> (Arc<ShutdownTrigger>, Shutdown) {
        let (trigger, stop) = crate::shutdown::channel();
        let trigger = Arc::new(trigger);
        let (forward, mut daemon, mut own) =
            (trigger.clone(), self.daemon_shutdown.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = daemon.wait() => forward.trigger(),
                _ = own.wait() => {}
            }
        });
        (trigger, stop)
    }

    /// Starts the watchdog of a process component.
    pub fn watch(&self, shared: &Arc<Shared>, component: &Arc<ComponentRuntime>) {
        if !matches!(component.plane, Plane::Process(_)) {
            return;
        }
        let (trigger, stop) = self.stop_signal();
        crate::watchdog::spawn(shared.clone(), component.clone(), stop);
        lock(&self.watchdogs).push((component.name().to_owned(), trigger));
    }

    /// Stops a component's watchdog (removed, or to start one with new settings).
    pub fn unwatch(&self, component: &str) {
        lock(&self.watchdogs).retain(|(name, trigger)| {
            if name == component {
                trigger.trigger();
            }
            name != component
        });
    }

    /// Serves `component` on `listener` until it is stopped (or the daemon stops).
    pub fn serve(
        &self,
        component: &Arc<ComponentRuntime>,
        listener: TcpListener,
        grace: Duration,
        limits: Limits,
    ) -> std::io::Result<()> {
        if matches!(component.plane, Plane::Hook) {
            return Ok(());
        }
        let frontend = Frontend::Component(component.clone());
        let addr = listener.local_addr()?;
        tracing::info!(component = component.name(), listen = %addr, kind = component.config().kind_name(), "serving");
        self.spawn_server(component.name(), addr, listener, frontend, grace, limits);
        Ok(())
    }

    /// Runs one accept loop with a stop signal of its own, filed under `name`.
    fn spawn_server(
        &self,
        name: &str,
        addr: SocketAddr,
        listener: TcpListener,
        frontend: Frontend,
        grace: Duration,
        limits: Limits,
    ) {
        let (stop, shutdown) = self.stop_signal();
        let task = tokio::spawn(server::serve(
            listener,
            frontend,
            shutdown,
            grace,
            limits,
            self.gate.clone(),
        ));
        lock(&self.servers).push(Server {
            component: name.to_owned(),
            addr,
            stop,
            task,
        });
    }

    /// Routes the shared listeners to `components` (those with `hosts`), as `config` says.
    pub fn route(&self, config: &crate::config::Config, components: &[Arc<ComponentRuntime>]) {
        let logs = config.daemon.data_dir.join("logs");
        let configs: Vec<(Arc<crate::config::ComponentConfig>, crate::front::Target)> = components
            .iter()
            .filter_map(|c| {
                let answer = match &c.plane {
                    Plane::Process(plane) => crate::front::Answer::Proxy(plane.route.clone()),
                    Plane::Static(site) => crate::front::Answer::Static(site.clone()),
                    Plane::Hook => return None,
                };
                // Opened, moved or closed here: at start-up and on every reload.
                let log = c
                    .config()
                    .access_log
                    .then(|| logs.join(format!("{}.access.log", c.name())));
                c.access_log.set(log.as_deref(), config.daemon.log_max_size);
                let target = crate::front::Target {
                    component: std::sync::Arc::from(c.name()),
                    answer,
                    log: c.access_log.clone(),
                };
                Some((c.config(), target))
            })
            .collect();
        let routable = configs.iter().filter_map(|(config, target)| {
            let routes = config.routes.as_ref()?;
            Some((
                config.name.as_str(),
                crate::front::Routable {
                    routes,
                    target: target.clone(),
                },
            ))
        });
        for problem in self.front.install(&config.front, routable) {
            tracing::error!("certificate not loaded, its hosts are served without it: {problem}");
        }
        self.front.set_access_log(config);
        if let Err(e) = self.certs.apply(config, &self.front, &self.daemon_shutdown) {
            tracing::error!("automatic certificates are off: {e}");
        }
    }

    /// Watches the components' certificate files, every [`CERT_FILE_POLL`], until the daemon
    /// stops.
    pub fn watch_certificate_files(&self) {
        let front = self.front.clone();
        let mut shutdown = self.daemon_shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(CERT_FILE_POLL) => {}
                    _ = shutdown.wait() => return,
                }
                for problem in front.reload_changed_certificates() {
                    tracing::error!("a changed certificate file cannot be loaded; the one loaded before is served: {problem}");
                }
            }
        });
    }

    /// Serves a shared `[edge]` listener (`tls`: the https one) until the daemon stops.
    pub fn serve_shared(
        &self,
        listener: TcpListener,
        tls: bool,
        grace: Duration,
        limits: Limits,
    ) -> std::io::Result<()> {
        let addr = listener.local_addr()?;
        let tls = tls.then(|| tokio_rustls::TlsAcceptor::from(self.front.tls_config()));
        tracing::info!(listen = %addr, tls = tls.is_some(), "serving the shared edge listener");
        let frontend = Frontend::Edge {
            front: self.front.clone(),
            tls,
        };
        self.spawn_server(SHARED, addr, listener, frontend, grace, limits);
        Ok(())
    }

    /// Stops accepting on `component`'s listener at `addr` (all of its listeners if none),
    /// and waits until its open connections have finished (up to the server's grace).
    pub async fn stop(&self, component: &str, addr: Option<SocketAddr>) {
        let stopping: Vec<Server> = {
            let mut servers = lock(&self.servers);
            let (stopping, kept) = std::mem::take(&mut *servers)
                .into_iter()
                .partition(|s| s.component == component && addr.is_none_or(|a| a == s.addr));
            *servers = kept;
            stopping
        };
        for server in stopping {
            server.stop.trigger();
            let _ = server.task.await;
        }
    }

    /// After the daemon's shutdown was raised: waits for every server to finish.
    pub async fn finished(&self) {
        let servers = std::mem::take(&mut *lock(&self.servers));
        for server in servers {
            let _ = server.task.await;
        }
    }
}

/// How long a stopping listener's connections get to finish: the longest drain timeout, at
/// most 30 s.
pub fn grace(config: &crate::config::Config) -> Duration {
    config
        .components
        .iter()
        .map(|c| c.drain_timeout.get())
        .max()
        .unwrap_or_default()
        .min(Duration::from_secs(30))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

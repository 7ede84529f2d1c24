//! `cutover serve`: start-up, crash recovery, graceful shutdown; the serving instances are
//! watched by [`crate::watchdog`].
//!
//! Start-up order: take the data-dir lock, open state, open public sockets (inherited or bound),
//! recover each component to its committed active release (adopting instances that outlived a
//! crashed daemon, or starting them), then accept traffic and control requests.
//!
//! Invariant after recovery: each component has at most one instance running (its committed
//! active release); every other recorded instance has been killed and every open deploy is
//! recorded as interrupted.

use crate::component::{ComponentRuntime, Plane, Serving};
use crate::config::ComponentKind;
use crate::config::Config;
use crate::control;
use crate::deploy::recovery;
use crate::deploy::{self, Shared};
use crate::health;
use crate::listener::{self, Inherited};
use crate::release::{now_millis, ReleaseId, ReleaseStore};
use crate::runtime::{status_line, DaemonState};
use crate::server::{self, Frontend};
use crate::store::{InstanceRecord, Store, StoreError};
use crate::supervisor;
use crate::vocab::InstanceState;
use anyhow::Context;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::sync::Arc;
use std::time::Duration;

pub async fn serve(config: Config, mut inherited: Inherited) -> anyhow::Result<()> {
    let fd_budget = crate::fdlimit::budget_for(&config);
    let data_dir = config.daemon.data_dir.clone();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let _lock = lock_data_dir(&data_dir)?;
    // Room first: a full disk must not keep the state database from opening.
    if let Some(warning) = crate::diskspace::release_reserve_if_full(&data_dir) {
        tracing::error!("{warning}");
    }
    if let Err(e) = crate::diskspace::ensure_reserve(&data_dir) {
        tracing::warn!("{e}");
    }
    for leftover in ReleaseStore::new(&data_dir).sweep_leftovers() {
        tracing::info!(
            "removed {}, left by an interrupted store",
            leftover.display()
        );
    }
    let store = match Store::open(&data_dir) {
        Ok(store) => store,
        // Not even read: this binary does not know what a newer cutover recorded.
        Err(newer @ StoreError::NewerSchema { .. }) => return Err(newer.into()),
        Err(e) => {
            // The committed releases can still be read and served: better than a closed port.
            tracing::error!("cannot open the state database for writing ({e}); serving the committed releases from a read-only view; deploys are refused until it can be written (free disk space, then restart)");
            Store::open_degraded(&data_dir)?
        }
    };
    let uploads = crate::upload::Uploads::open(&data_dir);
    let hooks: Vec<(String, Vec<String>)> = config
        .notify
        .iter()
        .map(|n| (n.url.clone(), n.events.clone()))
        .collect();
    let notifier = if hooks.is_empty() {
        None
    } else {
        Some(crate::notify::Notifier::new(&hooks).context("invalid [[notify]] settings")?)
    };
    let shared = Arc::new(Shared {
        config: Arc::new(config.clone()),
        store: store.clone(),
        releases: ReleaseStore::new(&data_dir).with_bundle_limits(config.daemon.bundle_limits),
        notifier,
    });

    let mut components = Vec::new();
    let mut listeners = Vec::new();
    for component in &config.components {
        let listener = match component.listen {
            Some(addr) => Some(listener::open(
                component.name.as_str(),
                addr,
                &mut inherited,
            )?),
            None => None,
        };
        let addr = listener.as_ref().map(|l| l.local_addr()).transpose()?;
        components.push(ComponentRuntime::new(component.clone(), addr));
        listeners.push(listener);
    }
    for name in inherited.unclaimed() {
        tracing::warn!("systemd passed a socket named {name:?}, but no component has that name");
    }

    // Serving the committed releases matters more than recording what was interrupted.
    let interrupted = store
        .interrupt_open("the daemon stopped while this ran")
        .unwrap_or_else(|e| {
            tracing::error!(
                "cannot record interrupted deploys (they stay open until the next start): {e}"
            );
            store.mark_degraded();
            Vec::new()
        });
    for deploy in &interrupted {
        shared.notify(
            crate::notify::EventKind::Interrupted,
            &deploy.component,
            Some(&deploy.to_release),
            format!("deploy #{} of {} to {} was interrupted (the daemon stopped); recovered to the committed release", deploy.id, deploy.component, deploy.to_release),
        );
        tracing::warn!(
            component = %deploy.component,
            "deploy #{} to {} was interrupted in phase {:?}; recovering to the committed active release",
            deploy.id, deploy.to_release, deploy.phase
        );
    }
    let live = store.live_instances()?;
    for component in &components {
        recover(&shared, component, &live).await;
    }
    // Instances of components no longer in the config.
    for record in live
        .iter()
        .filter(|r| !components.iter().any(|c| c.name() == r.component))
    {
        supervisor::kill_orphan(record);
        let _ = store.set_instance_state(record.id, InstanceState::Stopped);
    }

    let (shutdown_trigger, shutdown) = crate::shutdown::channel();
    let state = Arc::new(DaemonState {
        shared: shared.clone(),
        components: components.clone(),
        started_at: now_millis(),
        uploads,
    });
    tokio::spawn(sweep_uploads(state.clone(), shutdown.clone()));
    tokio::spawn(crate::memory::return_freed_memory(shutdown.clone()));
    let control = control::bind(
        &config.daemon.control_socket,
        config.daemon.socket_group.as_deref(),
    )?;

    let grace = components
        .iter()
        .map(|c| c.config.drain_timeout.get())
        .max()
        .unwrap_or_default()
        .min(Duration::from_secs(30));
    let mut tasks = tokio::task::JoinSet::new();
    for (component, listener) in components.iter().zip(listeners) {
        let Some(listener) = listener else { continue };
        let frontend = match &component.plane {
            Plane::Process(plane) => {
                crate::watchdog::spawn(shared.clone(), component.clone(), shutdown.clone());
                Frontend::Proxy(plane.route.clone())
            }
            Plane::Static(site) => Frontend::Static {
                component: component.name().to_owned(),
                site: site.clone(),
            },
            Plane::Hook => continue,
        };
        let listen = component.listen.map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(component = component.name(), %listen, kind = component.config.kind_name(), "serving");
        tasks.spawn(server::serve(
            listener,
            frontend,
            shutdown.clone(),
            grace,
            fd_budget.public_limits(&config),
        ));
    }
    if let Some(addr) = config.daemon.admin_listen {
        let admin = listener::open("admin", addr, &mut Inherited::none())?;
        tracing::info!(listen = %admin.local_addr()?, "admin listener: /metrics, /health");
        tasks.spawn(server::serve(
            admin,
            Frontend::Admin,
            shutdown.clone(),
            Duration::from_secs(1),
            fd_budget.admin_limits(&config),
        ));
    }
    crate::admin::spawn_service_checks(shared.config.clone(), shutdown.clone());
    crate::supervisor::rotate_logs(store.clone(), config.daemon.log_max_size, shutdown.clone());
    tokio::spawn(control::serve(control, state.clone(), shutdown.clone()));
    tracing::info!(
        pid = std::process::id(),
        control = %config.daemon.control_socket.display(),
        "cutover daemon ready"
    );
    crate::sd::ready(&status_line(&state));
    crate::sd::spawn_watchdog(shutdown.clone());

    wait_for_signal().await;
    tracing::info!("shutting down: no new connections; draining");
    crate::sd::stopping();
    shutdown_trigger.trigger();
    while tasks.join_next().await.is_some() {}
    for component in &components {
        let Some(process) = component.config.process() else {
            continue;
        };
        if let Some(serving) = component.switch_to(None) {
            serving.upstream.close_pool();
            let status = serving.instance.stop(process.stop_timeout.get()).await;
            let _ = store.set_instance_state(serving.instance.id, InstanceState::Stopped);
            tracing::info!(component = component.name(), release = %serving.instance.release, "stopped ({status})");
        }
    }
    // Instances of deploys still running (a new instance mid-gate, a warm old one).
    for record in store.live_instances()? {
        supervisor::kill_orphan(&record);
        let _ = store.set_instance_state(record.id, InstanceState::Stopped);
    }
    store.interrupt_open("the daemon was shut down while this ran")?;
    control::unbind(&config.daemon.control_socket);
    tracing::info!("stopped");
    Ok(())
}

/// Removes uploads nobody deployed (a CLI that died between its upload and its deploy).
async fn sweep_uploads(state: Arc<DaemonState>, mut shutdown: crate::shutdown::Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {
                state.uploads.sweep(crate::upload::UNUSED_UPLOAD_TTL);
                // Given back on a full disk at start-up; put aside again once there is room.
                if let Err(e) = crate::diskspace::ensure_reserve(&state.shared.config.daemon.data_dir) {
                    tracing::warn!("{e}");
                }
            }
            _ = shutdown.wait() => return,
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// One daemon per data_dir: a second one would fight over sockets and state.
fn lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<fs::File> {
    let path = data_dir.join("daemon.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let _ = file.set_permissions(fs::Permissions::from_mode(0o600));
    use std::os::fd::AsRawFd;
    // SAFETY: flock(2) on an fd we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        anyhow::bail!(
            "another cutover daemon is already running with data_dir {}",
            data_dir.display()
        );
    }
    Ok(file)
}

/// Brings a component back to its committed active release after a start or crash.
async fn recover(shared: &Shared, component: &ComponentRuntime, live: &[InstanceRecord]) {
    let store = &shared.store;
    let active = store.active_release(component.name());
    let health = match (&component.config.kind, &component.plane) {
        (ComponentKind::Process(process), _) => &process.health,
        (ComponentKind::Static(site_config), Plane::Static(route)) => {
            if let Some(release) = &active {
                match deploy::load_site(shared, &component.config, site_config, release) {
                    Ok(site) => {
                        route.switch(Some(Arc::new(site)));
                    }
                    Err(e) => {
                        tracing::error!(component = component.name(), release = %release, "cannot serve the active release: {e}")
                    }
                }
            }
            return;
        }
        _ => return,
    };
    let live: Vec<&InstanceRecord> = live
        .iter()
        .filter(|r| r.component == component.name())
        .collect();
    let releases: Vec<&str> = live.iter().map(|r| r.release.as_str()).collect();
    let active_str = active.as_ref().map(ReleaseId::as_str);
    let plan = recovery::plan(active_str, &releases);
    let mut adopted = None;
    if let (Some(i), Some(release)) = (plan.adopt, &active) {
        let record = live[i];
        if let Some(instance) = supervisor::adopt(record, &component.config.name, release) {
            let probe = health::probe(instance.addr, &health.path, health.timeout.get()).await;
            if probe.ok {
                tracing::info!(component = component.name(), release = %release, pid = instance.pid,
                    "adopted the instance that outlived the previous daemon");
                let _ = store.set_instance_state(record.id, InstanceState::Serving);
                adopted = Some(instance);
            } else {
                tracing::warn!(
                    component = component.name(),
                    pid = record.pid,
                    "surviving instance is unhealthy ({probe}); replacing it"
                );
            }
        }
    }
    let orphans = plan.stop.iter().copied();
    let unadopted = plan.adopt.filter(|_| adopted.is_none());
    for record in orphans.chain(unadopted).map(|i| live[i]) {
        if supervisor::kill_orphan(record) {
            tracing::info!(component = component.name(), release = %record.release, pid = record.pid,
                "killed an instance left over from an interrupted deploy");
        }
        let _ = store.set_instance_state(record.id, InstanceState::Stopped);
    }
    let serving = match (
        recovery::after_probe(&plan, active_str, adopted.is_some()),
        active,
    ) {
        (recovery::Serves::Adopted(_), _) => adopted,
        (recovery::Serves::StartActive, Some(release)) => {
            match deploy::start_healthy(shared, component, &release, |_| {}, |_, _| {}).await {
                Ok((instance, after)) => {
                    let _ = store.set_instance_state(instance.id, InstanceState::Serving);
                    tracing::info!(component = component.name(), release = %release, "started; healthy after {after:?}");
                    Some(instance)
                }
                Err(e) => {
                    tracing::error!(component = component.name(), release = %release, "cannot start the active release: {e}");
                    None
                }
            }
        }
        _ => None,
    };
    if let Some(instance) = serving {
        component.switch_to(Some(Serving::new(component.name(), instance)));
    }
}

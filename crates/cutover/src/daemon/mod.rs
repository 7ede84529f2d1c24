//! `cutover serve`: start-up, crash recovery, graceful shutdown, and both sides of `cutover
//! upgrade`; the serving instances are watched by [`crate::watchdog`].
//!
//! Start-up order: take the data-dir lock, open state, open public sockets (inherited from
//! systemd, handed over by the previous daemon, or bound), recover each component (to its
//! committed active release after a start or crash, adopting instances that outlived a crashed
//! daemon or starting them; to the instances handed over after an upgrade), then accept traffic
//! and control requests.
//!
//! Invariant after recovery: each component has at most one instance running (its committed
//! active release); every other recorded instance has been killed and every open deploy is
//! recorded as interrupted. (After an upgrade there is nothing to kill or interrupt: the old
//! daemon allowed no deploy during the handoff.)

mod recover;

use crate::component::ComponentRuntime;
use crate::config::Config;
use crate::control;
use crate::deploy::Shared;
use crate::handoff::take::Takeover;
use crate::handoff::Socket;
use crate::listener::{self, Inherited};
use crate::release::ReleaseStore;
use crate::runtime::{status_line, DaemonState, Lifecycle};
use crate::server::{self, Frontend};
use crate::store::{Store, StoreError};
use crate::supervisor;
use crate::vocab::InstanceState;
use anyhow::Context;
use std::fs;
use std::os::fd::{AsFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};

pub async fn serve(config: Config, inherited: Inherited) -> anyhow::Result<()> {
    // Read before anything else: the binary may be replaced on disk while this runs.
    let binary = std::env::current_exe().context("cannot tell which binary this daemon runs")?;
    let takeover = Takeover::from_env()
        .await
        .context("cannot receive the sockets of the daemon being upgraded")?;
    let Some(mut takeover) = takeover else {
        let opened = open(&config, inherited, None).await?;
        return run(config, opened, binary, None).await;
    };
    tracing::info!(
        old_pid = takeover.old_pid,
        old_version = %takeover.old_version,
        "taking over from the running daemon"
    );
    let opened = if takeover.config_sha256 != config.sha256 {
        Err(anyhow::anyhow!(
            "{} changed since the running daemon loaded it; apply it with `cutover reload` first, then upgrade",
            config.path.display()
        ))
    } else {
        let inherited = Inherited::from_handoff(takeover.take_components());
        open(&config, inherited, Some(&mut takeover)).await
    };
    let opened = match opened {
        Ok(opened) => opened,
        Err(e) => {
            takeover.fail(&format!("{e:#}")).await;
            return Err(e);
        }
    };
    run(config, opened, binary, Some(takeover)).await
}

/// The daemon with its state open, its sockets in hand and its components recovered: ready to
/// accept.
struct Opened {
    socket_activated: bool,
    /// `[edge] http` / `https`: (socket name, TLS, listener).
    shared_listeners: Vec<(&'static str, bool, TcpListener)>,
    lock: fs::File,
    store: Store,
    shared: Arc<Shared>,
    uploads: crate::upload::Uploads,
    components: Vec<Arc<ComponentRuntime>>,
    listeners: Vec<Option<TcpListener>>,
    control: UnixListener,
    admin: Option<TcpListener>,
}

async fn open(
    config: &Config,
    mut inherited: Inherited,
    mut takeover: Option<&mut Takeover>,
) -> anyhow::Result<Opened> {
    let data_dir = config.daemon.data_dir.clone();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let lock = match takeover.as_deref_mut().and_then(|t| t.take(&Socket::Lock)) {
        // The same open file description as the old daemon's: the lock is already ours too.
        Some(fd) => fs::File::from(fd),
        None => lock_data_dir(&data_dir)?,
    };
    let handed_over = takeover.is_some();
    let socket_activated = match takeover.as_deref() {
        Some(takeover) => takeover.socket_activated,
        None => !inherited.is_empty(),
    };
    // Room first: a full disk must not keep the state database from opening.
    if let Some(warning) = crate::diskspace::release_reserve_if_full(&data_dir) {
        tracing::error!("{warning}");
    }
    if let Err(e) = crate::diskspace::ensure_reserve(&data_dir) {
        tracing::warn!("{e}");
    }
    if !handed_over {
        for leftover in ReleaseStore::new(&data_dir).sweep_leftovers() {
            tracing::info!(
                "removed {}, left by an interrupted store",
                leftover.display()
            );
        }
    }
    let store = match Store::open(&data_dir) {
        Ok(store) => store,
        // Not even read: this binary does not know what a newer cutover recorded.
        Err(newer @ StoreError::NewerSchema { .. }) => return Err(newer.into()),
        Err(e) if handed_over => {
            // The old daemon serves on: better than a degraded successor.
            return Err(e).context("cannot open the state database");
        }
        Err(e) => {
            // The committed releases can still be read and served: better than a closed port.
            tracing::error!("cannot open the state database for writing ({e}); serving the committed releases from a read-only view; deploys are refused until it can be written (free disk space, then restart)");
            Store::open_degraded(&data_dir)?
        }
    };
    // The old daemon's uploads in flight are its own until it exits.
    let uploads = if handed_over {
        crate::upload::Uploads::open_keeping(&data_dir)
    } else {
        crate::upload::Uploads::open(&data_dir)
    };
    let notifier =
        crate::notify::Notifier::for_config(config).context("invalid [[notify]] settings")?;
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
    // The shared `[edge]` listeners, named for systemd and the handoff like components are.
    let mut shared_listeners = Vec::new();
    for (name, addr, tls) in [
        (crate::frontends::SHARED_HTTP, config.front.http, false),
        (crate::frontends::SHARED_HTTPS, config.front.https, true),
    ] {
        if let Some(addr) = addr {
            shared_listeners.push((name, tls, listener::open(name, addr, &mut inherited)?));
        }
    }
    for name in inherited.unclaimed() {
        tracing::warn!(
            "{} passed a socket named {name:?}, but no component has that name",
            inherited.passed_by()
        );
    }
    let control = match takeover
        .as_deref_mut()
        .and_then(|t| t.take(&Socket::Control))
    {
        Some(fd) => unix_listener(fd).context("the control socket handed over is unusable")?,
        None => control::bind(
            &config.daemon.control_socket,
            config.daemon.socket_group.as_deref(),
        )?,
    };
    let admin = match config.daemon.admin_listen {
        Some(addr) => Some(
            match takeover.as_deref_mut().and_then(|t| t.take(&Socket::Admin)) {
                Some(fd) => {
                    tcp_listener(fd).context("the admin listener handed over is unusable")?
                }
                None => listener::open("admin", addr, &mut Inherited::none())?,
            },
        ),
        None => None,
    };

    if let Some(takeover) = takeover {
        for component in &components {
            recover::adopt_handed(&shared, component, &takeover.instances).await?;
        }
    } else {
        recover_after_start(&shared, &components).await?;
    }
    Ok(Opened {
        socket_activated,
        shared_listeners,
        lock,
        store,
        shared,
        uploads,
        components,
        listeners,
        control,
        admin,
    })
}

/// After a start or a crash: record what was interrupted, bring each component back to its
/// committed active release, and stop whatever else still runs.
async fn recover_after_start(
    shared: &Arc<Shared>,
    components: &[Arc<ComponentRuntime>],
) -> anyhow::Result<()> {
    let store = &shared.store;
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
    for component in components {
        recover::recover(shared, component, &live).await;
    }
    // Instances of components no longer in the config.
    for record in live
        .iter()
        .filter(|r| !components.iter().any(|c| c.name() == r.component))
    {
        supervisor::kill_orphan(record);
        let _ = store.set_instance_state(record.id, InstanceState::Stopped);
    }
    Ok(())
}

async fn run(
    config: Config,
    opened: Opened,
    binary: std::path::PathBuf,
    takeover: Option<Takeover>,
) -> anyhow::Result<()> {
    let Opened {
        socket_activated,
        shared_listeners,
        lock,
        store,
        shared,
        uploads,
        components,
        listeners,
        control,
        admin,
    } = opened;
    let fd_budget = crate::fdlimit::budget_for(&config);
    // Before any listener serves: every accept loop and connection runs on these threads.
    let proxy_threads = crate::proxy_threads::start(config.daemon.proxy_threads);
    tracing::info!(
        proxy_threads,
        "public connections are served on {proxy_threads} thread(s)"
    );
    let (shutdown_trigger, shutdown) = crate::shutdown::channel();
    let gate = if takeover.is_some() {
        crate::accept_gate::AcceptGate::closed()
    } else {
        crate::accept_gate::AcceptGate::new()
    };
    let state = Arc::new(DaemonState::new(
        shared.clone(),
        components.clone(),
        uploads,
        Lifecycle::new(binary, gate.clone(), socket_activated),
        crate::frontends::Frontends::new(shutdown.clone(), gate.clone()),
    ));
    let sockets = &state.lifecycle.sockets;
    sockets.keep(Socket::Lock, lock.as_fd())?;
    sockets.keep(Socket::Control, control.as_fd())?;
    tokio::spawn(sweep_uploads(state.clone(), shutdown.clone()));
    tokio::spawn(crate::memory::return_freed_memory(shutdown.clone()));

    let grace = crate::frontends::grace(&config);
    let frontends = &state.frontends;
    for (component, listener) in components.iter().zip(listeners) {
        let Some(listener) = listener else { continue };
        sockets.keep(
            Socket::Component(component.name().to_owned()),
            listener.as_fd(),
        )?;
        let limits = fd_budget.public_limits(&state.live.body_read_timeout);
        frontends.serve(component, listener, grace, limits)?;
    }
    frontends.route(&config, &components);
    frontends.watch_certificate_files();
    for (name, tls, listener) in shared_listeners {
        sockets.keep(Socket::Component(name.to_owned()), listener.as_fd())?;
        let limits = fd_budget.public_limits(&state.live.body_read_timeout);
        frontends.serve_shared(listener, tls, grace, limits)?;
    }
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(admin) = admin {
        sockets.keep(Socket::Admin, admin.as_fd())?;
        tracing::info!(listen = %admin.local_addr()?, "admin listener: /metrics, /health");
        tasks.spawn(server::serve(
            admin,
            Frontend::Admin,
            shutdown.clone(),
            Duration::from_secs(1),
            fd_budget.admin_limits(&config),
            gate.clone(),
        ));
    }
    crate::admin::spawn_service_checks(shared.config.clone(), shutdown.clone());
    crate::supervisor::rotate_logs(
        store.clone(),
        state.live.log_max_size.clone(),
        shutdown.clone(),
    );
    let control_task = tokio::spawn(control::serve(
        control,
        state.clone(),
        shutdown.clone(),
        gate.clone(),
    ));
    let predecessor = takeover.as_ref().map(|t| t.old_pid);
    if let Some(takeover) = takeover {
        // Every server waits at the closed gate: once the old daemon has let go, accepting
        // is one message away.
        if let Err(e) = takeover.ready().await {
            return Err(e).context("the handoff broke before this daemon could serve");
        }
        gate.open();
        takeover.serving().await;
    }
    // Watched from here on: after an upgrade, only once the old daemon has let go of them.
    for component in &components {
        frontends.watch(&shared, component);
    }
    tracing::info!(
        pid = std::process::id(),
        version = env!("CARGO_PKG_VERSION"),
        control = %config.daemon.control_socket.display(),
        "cutover daemon ready"
    );
    crate::sd::ready(&status_line(&state));
    if predecessor.is_some() {
        tracing::info!("took over; the previous daemon finishes its connections and exits");
    }
    crate::sd::spawn_watchdog(shutdown.clone(), predecessor);

    let handed_over = wait_for_stop(&state).await;
    if handed_over {
        gate.retire();
        tracing::info!("handed over: finishing open connections, then exiting; the instances run on under the new daemon");
    } else {
        tracing::info!("shutting down: no new connections; draining");
        crate::sd::stopping();
    }
    shutdown_trigger.trigger();
    state.frontends.finished().await;
    while tasks.join_next().await.is_some() {}
    if handed_over {
        // Tunnels (WebSockets) outlive their HTTP connection: they get the drain timeout too.
        for component in &components {
            if let Some(serving) = component.serving() {
                let left = serving.upstream.drain(grace).await;
                if left > 0 {
                    tracing::warn!(
                        component = component.name(),
                        "{left} requests or tunnels still open after {grace:?}; closing them"
                    );
                }
            }
        }
        // The answer to the `cutover upgrade` that handed this daemon over still goes out.
        if let Ok(open) = control_task.await {
            open.finish(Duration::from_secs(5)).await;
        }
        tracing::info!("exited after the handoff");
        return Ok(());
    }
    for component in &components {
        let config = component.config();
        let Some(process) = config.process() else {
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

/// Waits for SIGTERM/SIGINT (stop) or a completed upgrade, running a reload on SIGHUP and an
/// upgrade on SIGUSR2.
/// Returns whether this daemon was handed over.
async fn wait_for_stop(state: &Arc<DaemonState>) -> bool {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut usr2 = signal(SignalKind::user_defined2()).expect("SIGUSR2 handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = term.recv() => return false,
            _ = int.recv() => return false,
            _ = state.lifecycle.handed_over() => return true,
            _ = hup.recv() => {
                let state = state.clone();
                tokio::spawn(async move {
                    match crate::reload::reload(&state, "SIGHUP").await {
                        Ok(done) => tracing::info!("reload (SIGHUP): {}", done.summary),
                        Err(e) => tracing::error!("reload (SIGHUP) refused; the daemon goes on with the config it runs: {e}"),
                    }
                });
            }
            _ = usr2.recv() => {
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = state.upgrade(None, crate::protocol::DEFAULT_UPGRADE_TIMEOUT, "SIGUSR2").await {
                        tracing::error!("upgrade (SIGUSR2) failed; this daemon goes on serving: {e}");
                    }
                });
            }
        }
    }
}

fn unix_listener(fd: OwnedFd) -> std::io::Result<UnixListener> {
    // SAFETY: the fd came from the old daemon as its control socket and is owned here alone.
    let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd.into_raw_fd()) };
    std_listener.set_nonblocking(true)?;
    UnixListener::from_std(std_listener)
}

fn tcp_listener(fd: OwnedFd) -> std::io::Result<TcpListener> {
    let std_listener = std::net::TcpListener::from(fd);
    std_listener.set_nonblocking(true)?;
    TcpListener::from_std(std_listener)
}

/// Removes uploads nobody deployed (a CLI that died between its upload and its deploy).
async fn sweep_uploads(state: Arc<DaemonState>, mut shutdown: crate::shutdown::Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {
                state.uploads.sweep(crate::upload::UNUSED_UPLOAD_TTL);
                // Given back on a full disk at start-up; put aside again once there is room.
                if let Err(e) = crate::diskspace::ensure_reserve(&state.shared().config.daemon.data_dir) {
                    tracing::warn!("{e}");
                }
            }
            _ = shutdown.wait() => return,
        }
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

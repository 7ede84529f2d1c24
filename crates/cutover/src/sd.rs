//! systemd's notify protocol (sd-notify crate): READY=1 once every component serves, STATUS=
//! with the active releases, STOPPING=1 on shutdown, and WATCHDOG=1 pings when WatchdogSec= is
//! set. Without NOTIFY_SOCKET every call is a no-op.

use crate::shutdown::Shutdown;
use sd_notify::NotifyState;
use std::time::Duration;

/// Also names this process as the service's main one: after `cutover upgrade` the new daemon
/// is, and systemd must follow it (the unit says `NotifyAccess=all` for this).
pub fn ready(status: &str) {
    send(&[
        NotifyState::MainPid(std::process::id()),
        NotifyState::Ready,
        NotifyState::Status(status),
    ]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: draining connections"),
    ]);
}

fn send(states: &[NotifyState]) {
    // Never unset the environment: it is read again for every message, and only the daemon
    // has it (instances get it removed, see supervisor::DAEMON_ONLY_ENV).
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!("sd_notify failed: {e}");
    }
}

/// Pings the watchdog at half its interval until shutdown, if systemd asked for pings.
/// `predecessor`: the daemon this one took over from, whose pid the environment still names.
pub fn spawn_watchdog(mut shutdown: Shutdown, predecessor: Option<u32>) {
    // As sd_watchdog_enabled(3): WATCHDOG_PID, when set, must be ours. (sd-notify's helper
    // also requires it to be set, which launchers other than systemd may not do.)
    let usec: u64 = match std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(usec) if usec > 0 => usec,
        _ => return,
    };
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        let pid = pid.parse::<u32>().ok();
        if pid != Some(std::process::id()) && pid != predecessor {
            return;
        }
    }
    let every = Duration::from_micros(usec / 2);
    tokio::spawn(async move {
        loop {
            send(&[NotifyState::Watchdog]);
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.wait() => return,
            }
        }
    });
}

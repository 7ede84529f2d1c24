//! systemd units for running `cutover serve` on a server: a hardened `cutover.service` and one
//! `cutover-<component>.socket` per component.
//!
//! Why it exists: the service this replaces ran as root in a barely hardened unit (rated 8.5 by
//! `systemd-analyze security`) and refused connections on every restart. The units generated
//! here run the daemon as a dedicated user, rate 1.5 or lower, and hand the public sockets over
//! by socket activation, so a restart (or a crash) of the daemon refuses no connection: the
//! kernel queues them on the socket systemd keeps open.
//!
//! # One `.socket` unit per component
//! systemd.socket(5): `FileDescriptorName=` "assigns a name to *all* file descriptors this socket
//! unit encapsulates". The daemon finds each component's socket by that name
//! (`LISTEN_FDNAMES`, see [`crate::listener`]), so two components in one `.socket` unit would get
//! the same name. Hence [`socket_units`] returns one unit per component,
//! `cutover-<component>.socket` with `FileDescriptorName=<component>` and
//! `Service=cutover.service`, and [`service_unit`] lists all of them in `Sockets=` and
//! `Requires=`. The sockets are not `PartOf=` the service: `systemctl restart cutover` must not
//! close them.
//!
//! # Stopping, crashing, restarting
//! - `KillMode=mixed`: on stop, SIGTERM goes to the daemon only. The daemon drains its public
//!   sockets and stops each release instance itself, in order, with its own `stop_timeout`
//!   (SIGTERM to the instance's process group, SIGKILL later). With the default
//!   `control-group`, systemd would SIGTERM every release at the same moment as the daemon,
//!   cutting requests the daemon is still draining. Once the daemon has exited, systemd SIGKILLs
//!   whatever is left in the cgroup, so nothing outlives a stopped service.
//! - The same rule applies when the daemon *crashes*: systemd SIGKILLs the leftover instances
//!   before `Restart=on-failure` starts it again, so under systemd a restarted daemon starts
//!   the committed active release again rather than adopting the old process. Connections wait
//!   in the socket queues meanwhile. (Adoption would need `KillMode=process`, which systemd
//!   recommends against: instances would escape the unit's lifecycle.)
//! - `TimeoutStopSec=` must cover the drain and the stops: the default
//!   ([`UnitOptions::default`]) is 120 s; the caller should pass at least
//!   `min(max drain_timeout, 30 s) + sum of stop_timeout + 10 s`.
//! - `Type=notify` with `NotifyAccess=all`: the daemon says `MAINPID=` (itself) and `READY=1`
//!   once the listeners are open and every component serves its active release. `all`, because
//!   after `cutover upgrade` that message comes from the new daemon, a process systemd did not
//!   start; releases never see `NOTIFY_SOCKET` (the daemon removes it from their environment).
//!   `WatchdogSec=` makes systemd restart a daemon that stops pinging.
//! - `cutover upgrade` under this unit: the old daemon starts the new one (same cgroup), hands
//!   it the sockets and instances and exits; systemd follows the new main pid. `systemctl
//!   restart cutover` is not an upgrade: the releases are stopped and started again (connections
//!   wait in the socket queues meanwhile, up to the app's start time); use `cutover upgrade`.
//!
//! # Hardening, and what an app may need relaxed
//! Release instances are children of the daemon, so every setting below applies to them too.
//! Most apps (an HTTP server talking to PostgreSQL/Redis) need nothing relaxed; these are the
//! settings worth knowing:
//! - `MemoryDenyWriteExecute=yes` forbids writable+executable memory, which JIT runtimes need:
//!   Node.js (V8), the JVM, .NET, LuaJIT, PHP's opcache JIT. Set [`UnitOptions::allow_jit`]
//!   (the unit then still rates 1.1). Go, Rust, C and CPython work with it.
//! - `ProtectSystem=strict` + `ProtectHome=yes` + `PrivateTmp=yes`: releases write only under
//!   the data directory, `/run/cutover` and [`UnitOptions::read_write_paths`] (e.g. an uploads
//!   or media directory); `/home` is invisible and `/tmp` is private to the service (and
//!   emptied when it stops). Artifacts must therefore be uploaded outside `/tmp` and `/home`,
//!   to a directory the `cutover` user can read: e.g. `/srv/cutover/uploads`, owned by the SSH
//!   user, group `cutover`, mode 2750 (the daemon only reads it, so it needs no
//!   `ReadWritePaths=`).
//! - `RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6`: no netlink, so `getifaddrs(3)` fails
//!   (Node's `os.networkInterfaces()`, some cluster libraries). Add `AF_NETLINK` in a drop-in.
//! - `SystemCallFilter=@system-service ~@privileged ~@resources` with
//!   `SystemCallErrorNumber=EPERM`: changing nice levels, CPU affinity or `setrlimit` fails with
//!   EPERM instead of killing the process (the Go runtime and the JVM ignore that failure).
//! - `RestrictNamespaces=yes`: no sandboxes or containers inside a release (headless Chromium's
//!   sandbox, `docker run`).
//! - `PrivateDevices=yes`, `DevicePolicy=closed`: no GPUs or serial devices.
//! - `CapabilityBoundingSet=` (empty) and `NoNewPrivileges=yes`: no setuid helpers (`sudo`,
//!   `ping`), no binding to ports below 1024 by the daemon itself. Public ports come from the
//!   `.socket` units, which systemd binds as root, so `listen = "0.0.0.0:443"` still works.
//! - `PrivateUsers=yes`: files owned by other users show as `nobody` (permissions still apply).
//! - `ProtectProc=invisible`: only the `cutover` user's processes are visible in `/proc`; the
//!   daemon reads `/proc/<pid>/stat` of its own children, which run as the same user.
//!   `ProcSubset=pid` is *not* set: apps commonly read `/proc/meminfo` or `/proc/cpuinfo`.
//! - No `IPAddressDeny=`/`PrivateNetwork=`: releases connect to databases and APIs elsewhere.
//!
//! Anything else is relaxed with a drop-in (`systemctl edit cutover`), which survives
//! regenerating the unit.
//!
//! The `EnvironmentFile=` of [`UnitOptions::env_file`] is for the *daemon's* variables
//! (`RUST_LOG`) and is parsed by systemd; an app's variables and secrets belong in the
//! component's `env_file`, which cutover reads with its own parser (see [`crate::checks::env`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The service's unit name, named by every socket unit's `Service=`.
pub const SERVICE_NAME: &str = "cutover.service";

/// Everything [`service_unit`] needs. Paths must be absolute.
#[derive(Debug, Clone)]
pub struct UnitOptions {
    /// The `cutover` executable (ExecStart).
    pub binary: PathBuf,
    /// The config file passed as `serve --config`.
    pub config: PathBuf,
    /// Dedicated non-root user and group the daemon and its releases run as.
    pub user: String,
    pub group: String,
    /// The daemon's data directory (release store, state, logs) and working directory. Under
    /// `/var/lib` it becomes `StateDirectory=` (created and chowned by systemd); elsewhere it is
    /// added to `ReadWritePaths=` and must exist.
    pub data_dir: PathBuf,
    /// More writable paths (ProtectSystem=strict makes everything else read-only).
    pub read_write_paths: Vec<PathBuf>,
    /// Relax `MemoryDenyWriteExecute=` for JIT runtimes (Node.js, JVM, .NET, LuaJIT).
    pub allow_jit: bool,
    /// An optional `EnvironmentFile=` for the daemon itself (systemd syntax; e.g. `RUST_LOG`).
    pub env_file: Option<PathBuf>,
    /// Component names that have a public socket; one `cutover-<name>.socket` each.
    pub sockets: Vec<String>,
    /// `WatchdogSec=`; the daemon pings at half of it. Zero disables the watchdog.
    pub watchdog: Duration,
    /// `TimeoutStartSec=`: until `READY=1`, i.e. every active release started and healthy.
    pub start_timeout: Duration,
    /// `TimeoutStopSec=`: graceful drain plus stopping every instance (see the module doc).
    pub stop_timeout: Duration,
}

impl Default for UnitOptions {
    fn default() -> Self {
        UnitOptions {
            binary: PathBuf::from("/usr/local/bin/cutover"),
            config: PathBuf::from("/etc/cutover/cutover.toml"),
            user: "cutover".into(),
            group: "cutover".into(),
            data_dir: PathBuf::from("/var/lib/cutover"),
            read_write_paths: Vec::new(),
            allow_jit: false,
            env_file: None,
            sockets: Vec::new(),
            watchdog: Duration::from_secs(30),
            start_timeout: Duration::from_secs(90),
            stop_timeout: Duration::from_secs(120),
        }
    }
}

/// One generated file: its name (e.g. `cutover-backend.socket`) and contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    pub name: String,
    pub contents: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SystemdError {
    #[error("{what} {path:?} must be an absolute path")]
    RelativePath { what: &'static str, path: PathBuf },
    #[error("{what} {value:?} cannot be written into a unit file: {why}")]
    Unwritable {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("invalid component name {0:?} for a socket unit: use a-z, 0-9, '-' or '_'")]
    ComponentName(String),
    #[error("two sockets for component {0:?}")]
    DuplicateSocket(String),
}

/// The socket unit's file name for a component: `cutover-<component>.socket`.
/// `LimitNOFILE=` of the service (soft and hard): room for tens of thousands of connections.
pub const NOFILE_LIMIT: u64 = 65536;

pub fn socket_unit_name(component: &str) -> String {
    format!("cutover-{component}.socket")
}

/// The service and every socket unit, consistent with each other: `cutover.service` first.
/// `sockets` is `(component, listen address)`; `opts.sockets` is replaced by their names.
pub fn units(
    opts: &UnitOptions,
    sockets: &[(String, String)],
) -> Result<Vec<UnitFile>, SystemdError> {
    let mut opts = opts.clone();
    opts.sockets = sockets.iter().map(|(name, _)| name.clone()).collect();
    let mut files = vec![UnitFile {
        name: SERVICE_NAME.into(),
        contents: service_unit(&opts)?,
    }];
    files.extend(socket_units(sockets)?);
    Ok(files)
}

/// `cutover.service`, hardened (see the module doc for each choice).
pub fn service_unit(opts: &UnitOptions) -> Result<String, SystemdError> {
    let binary = path_value("binary", &opts.binary)?;
    let config = path_value("config", &opts.config)?;
    let data_dir = path_value("data_dir", &opts.data_dir)?;
    let user = account("user", &opts.user)?;
    let group = account("group", &opts.group)?;
    let mut seen = std::collections::BTreeSet::new();
    for name in &opts.sockets {
        check_component(name)?;
        if !seen.insert(name.as_str()) {
            return Err(SystemdError::DuplicateSocket(name.clone()));
        }
    }
    let socket_units: Vec<String> = opts.sockets.iter().map(|n| socket_unit_name(n)).collect();
    let socket_list = socket_units.join(" ");

    let mut writable = Vec::new();
    let state_directory = opts
        .data_dir
        .strip_prefix("/var/lib")
        .ok()
        .filter(|rest| !rest.as_os_str().is_empty())
        .map(|rest| rest.to_string_lossy().into_owned());
    if state_directory.is_none() {
        writable.push(quoted(&data_dir));
    }
    for path in &opts.read_write_paths {
        writable.push(quoted(&path_value("read_write_paths", path)?));
    }

    let mut u = String::new();
    let w = &mut u;
    line(
        w,
        "# Generated by `cutover generate systemd`. Relax settings with a drop-in",
    );
    line(
        w,
        "# (`systemctl edit cutover`) rather than by editing this file.",
    );
    line(w, "[Unit]");
    line(w, "Description=cutover: zero-downtime deploys (daemon)");
    line(w, "Wants=network-online.target");
    if socket_list.is_empty() {
        line(w, "After=network-online.target");
    } else {
        let _ = writeln!(w, "After=network-online.target {socket_list}");
        // The sockets must exist before the daemon starts; stopping the daemon leaves them
        // open (Requires= does not propagate a stop of the service to them).
        let _ = writeln!(w, "Requires={socket_list}");
    }
    line(w, "");
    line(w, "[Service]");
    line(w, "Type=notify");
    line(
        w,
        "# all, not main: after `cutover upgrade` the new daemon names itself MAINPID= and READY=.",
    );
    line(w, "NotifyAccess=all");
    let _ = writeln!(
        w,
        "ExecStart={} serve --config {}",
        quoted(&exec_escape(&binary)),
        quoted(&exec_escape(&config))
    );
    line(
        w,
        "# `systemctl reload cutover`: the config applied live (refused, and the reload failed, if it cannot be).",
    );
    let _ = writeln!(
        w,
        "ExecReload={} reload --config {}",
        quoted(&exec_escape(&binary)),
        quoted(&exec_escape(&config))
    );
    let _ = writeln!(w, "User={user}");
    let _ = writeln!(w, "Group={group}");
    let _ = writeln!(w, "WorkingDirectory={data_dir}");
    if let Some(dir) = &state_directory {
        let _ = writeln!(w, "StateDirectory={}", unit_escape(dir));
        line(w, "StateDirectoryMode=0750");
    }
    line(
        w,
        "# /run/cutover: the control socket (0600, or 0660 with [daemon] socket_group) lives here.",
    );
    line(w, "RuntimeDirectory=cutover");
    line(w, "RuntimeDirectoryMode=0750");
    if let Some(env_file) = &opts.env_file {
        let _ = writeln!(w, "EnvironmentFile={}", path_value("env_file", env_file)?);
    }
    if !socket_list.is_empty() {
        let _ = writeln!(w, "Sockets={socket_list}");
    }
    line(w, "Restart=on-failure");
    line(w, "RestartSec=500ms");
    if !opts.watchdog.is_zero() {
        let _ = writeln!(w, "WatchdogSec={}", duration(opts.watchdog));
    }
    let _ = writeln!(w, "TimeoutStartSec={}", duration(opts.start_timeout));
    let _ = writeln!(w, "TimeoutStopSec={}", duration(opts.stop_timeout));
    line(
        w,
        "# SIGTERM to the daemon only: it drains and stops its releases itself, in order;",
    );
    line(w, "# systemd SIGKILLs whatever is left once it has exited.");
    line(w, "KillMode=mixed");
    line(
        w,
        "# Every connection and upstream request is an fd: the daemon sizes its connection caps",
    );
    line(
        w,
        "# from this limit, keeping a reserve for the control socket and its own files.",
    );
    let _ = writeln!(w, "LimitNOFILE={NOFILE_LIMIT}");
    line(w, "UMask=0077");
    line(w, "");
    line(
        w,
        "# Hardening. Releases are children of the daemon: this applies to them too.",
    );
    line(w, "NoNewPrivileges=yes");
    line(w, "CapabilityBoundingSet=");
    line(w, "AmbientCapabilities=");
    line(w, "PrivateUsers=yes");
    line(w, "ProtectSystem=strict");
    if !writable.is_empty() {
        let _ = writeln!(w, "ReadWritePaths={}", writable.join(" "));
    }
    line(w, "ProtectHome=yes");
    line(w, "PrivateTmp=yes");
    line(w, "PrivateDevices=yes");
    line(w, "DevicePolicy=closed");
    line(w, "PrivateMounts=yes");
    line(w, "ProtectKernelTunables=yes");
    line(w, "ProtectKernelModules=yes");
    line(w, "ProtectKernelLogs=yes");
    line(w, "ProtectControlGroups=yes");
    line(w, "ProtectClock=yes");
    line(w, "ProtectHostname=yes");
    line(w, "ProtectProc=invisible");
    line(w, "RestrictNamespaces=yes");
    line(w, "RestrictRealtime=yes");
    line(w, "RestrictSUIDSGID=yes");
    line(w, "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6");
    line(w, "LockPersonality=yes");
    if opts.allow_jit {
        line(
            w,
            "# allow_jit: JIT runtimes (Node.js, JVM, .NET) need writable+executable memory.",
        );
        line(w, "MemoryDenyWriteExecute=no");
    } else {
        line(w, "MemoryDenyWriteExecute=yes");
    }
    line(w, "RemoveIPC=yes");
    line(w, "SystemCallArchitectures=native");
    line(
        w,
        "# The daemon forks/execs releases, kill(2)s their process groups, uses pidfd_open,",
    );
    line(
        w,
        "# flock and sockets: all in @system-service. Denied calls fail with EPERM.",
    );
    line(w, "SystemCallFilter=@system-service");
    line(w, "SystemCallFilter=~@privileged @resources");
    line(w, "SystemCallErrorNumber=EPERM");
    line(w, "");
    line(w, "[Install]");
    line(w, "WantedBy=multi-user.target");
    Ok(u)
}

/// One `cutover-<component>.socket` per `(component, listen address)`, each with
/// `FileDescriptorName=<component>` (see the module doc for why not one unit).
pub fn socket_units(sockets: &[(String, String)]) -> Result<Vec<UnitFile>, SystemdError> {
    let mut seen = std::collections::BTreeSet::new();
    let mut files = Vec::new();
    for (name, listen) in sockets {
        check_component(name)?;
        if !seen.insert(name.as_str()) {
            return Err(SystemdError::DuplicateSocket(name.clone()));
        }
        if listen.is_empty() || listen.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SystemdError::Unwritable {
                what: "listen address",
                value: listen.clone(),
                why: "empty, or contains whitespace",
            });
        }
        let mut u = String::new();
        let w = &mut u;
        line(w, "# Generated by `cutover generate socket`.");
        line(w, "[Unit]");
        let _ = writeln!(w, "Description=cutover public socket of component {name}");
        line(w, "");
        line(w, "[Socket]");
        let _ = writeln!(w, "ListenStream={}", unit_escape(listen));
        let _ = writeln!(w, "FileDescriptorName={name}");
        let _ = writeln!(w, "Service={SERVICE_NAME}");
        line(w, "NoDelay=yes");
        line(w, "");
        line(w, "[Install]");
        line(w, "WantedBy=sockets.target");
        files.push(UnitFile {
            name: socket_unit_name(name),
            contents: u,
        });
    }
    Ok(files)
}

fn line(w: &mut String, text: &str) {
    w.push_str(text);
    w.push('\n');
}

/// systemd time span: whole seconds as `Ns`, anything else as `Nms`.
fn duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn check_component(name: &str) -> Result<(), SystemdError> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(SystemdError::ComponentName(name.to_owned()))
    }
}

fn account(what: &'static str, name: &str) -> Result<String, SystemdError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !ok {
        return Err(SystemdError::Unwritable {
            what,
            value: name.to_owned(),
            why: "use letters, digits, '-', '_' or '.'",
        });
    }
    if name == "root" || name == "0" {
        return Err(SystemdError::Unwritable {
            what,
            value: name.to_owned(),
            why: "the daemon runs as a dedicated non-root account",
        });
    }
    Ok(name.to_owned())
}

/// An absolute path, with `%` escaped (systemd specifiers).
fn path_value(what: &'static str, path: &Path) -> Result<String, SystemdError> {
    if !path.is_absolute() {
        return Err(SystemdError::RelativePath {
            what,
            path: path.to_owned(),
        });
    }
    let text = path.to_str().ok_or_else(|| SystemdError::Unwritable {
        what,
        value: path.to_string_lossy().into_owned(),
        why: "not UTF-8",
    })?;
    if text
        .chars()
        .any(|c| c.is_control() || c == '"' || c == '\'' || c == '\\')
    {
        return Err(SystemdError::Unwritable {
            what,
            value: text.to_owned(),
            why: "contains a quote, a backslash or a control character",
        });
    }
    Ok(unit_escape(text))
}

/// For settings that split on whitespace (ExecStart=, ReadWritePaths=).
fn quoted(value: &str) -> String {
    if value.contains(' ') {
        format!("\"{value}\"")
    } else {
        value.to_owned()
    }
}

/// Escapes systemd specifiers (`%`).
fn unit_escape(text: &str) -> String {
    text.replace('%', "%%")
}

/// In ExecStart=, `$` also expands environment variables.
fn exec_escape(value: &str) -> String {
    value.replace('$', "$$")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_socket_unit_per_component_named_after_it() {
        let files = socket_units(&[
            ("backend".into(), "127.0.0.1:8080".into()),
            ("frontend".into(), "[::]:80".into()),
        ])
        .unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].name, "cutover-backend.socket");
        assert!(files[0]
            .contents
            .contains("\nListenStream=127.0.0.1:8080\n"));
        assert!(files[0].contents.contains("\nFileDescriptorName=backend\n"));
        assert!(files[0].contents.contains("\nService=cutover.service\n"));
        assert!(files[1]
            .contents
            .contains("\nFileDescriptorName=frontend\n"));
    }

    #[test]
    fn service_lists_every_socket() {
        let files = units(
            &UnitOptions::default(),
            &[
                ("backend".into(), "8080".into()),
                ("frontend".into(), "8081".into()),
            ],
        )
        .unwrap();
        let service = &files[0].contents;
        assert!(service.contains("\nSockets=cutover-backend.socket cutover-frontend.socket\n"));
        assert!(service.contains("\nRequires=cutover-backend.socket cutover-frontend.socket\n"));
        assert!(service.contains("\nStateDirectory=cutover\n"));
        assert!(service.contains("\nLimitNOFILE=65536\n"), "{service}");
        assert!(!service.contains("ReadWritePaths"));
    }

    #[test]
    fn data_dir_outside_var_lib_is_writable_and_paths_are_escaped() {
        let opts = UnitOptions {
            data_dir: "/srv/cut over".into(),
            binary: "/opt/100%/cutover".into(),
            ..UnitOptions::default()
        };
        let unit = service_unit(&opts).unwrap();
        assert!(
            unit.contains("\nReadWritePaths=\"/srv/cut over\"\n"),
            "{unit}"
        );
        assert!(
            unit.contains("\nExecStart=/opt/100%%/cutover serve"),
            "{unit}"
        );
        assert!(!unit.contains("StateDirectory="));
    }

    #[test]
    fn refuses_what_cannot_be_written() {
        let relative = UnitOptions {
            config: "cutover.toml".into(),
            ..UnitOptions::default()
        };
        assert!(matches!(
            service_unit(&relative),
            Err(SystemdError::RelativePath { .. })
        ));
        let root = UnitOptions {
            user: "root".into(),
            ..UnitOptions::default()
        };
        assert!(service_unit(&root).is_err());
        assert!(socket_units(&[("Back end".into(), "80".into())]).is_err());
        assert!(socket_units(&[("a".into(), "80".into()), ("a".into(), "81".into())]).is_err());
    }

    #[test]
    fn jit_relaxes_only_memory_deny_write_execute() {
        let strict = service_unit(&UnitOptions::default()).unwrap();
        let jit = service_unit(&UnitOptions {
            allow_jit: true,
            ..UnitOptions::default()
        })
        .unwrap();
        assert!(strict.contains("\nMemoryDenyWriteExecute=yes\n"));
        assert!(jit.contains("\nMemoryDenyWriteExecute=no\n"));
        assert_eq!(
            strict.lines().filter(|l| !l.starts_with('#')).count(),
            jit.lines().filter(|l| !l.starts_with('#')).count()
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration(Duration::from_secs(30)), "30s");
        assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
    }
}

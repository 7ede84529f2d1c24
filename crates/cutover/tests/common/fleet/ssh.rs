//! Real OpenSSH on every host: a key pair for the operator, a host key and an sshd of its own
//! per host, and the client files (`ssh_config`, `known_hosts`) that make `ssh -F ssh_config
//! hN` log in with full host key checking and no prompt.

use super::process;
use super::slot::Slot;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// An ed25519 key pair without a passphrase at `path` (and `path`.pub); returns the public key.
pub fn keygen(path: &Path, comment: &str) -> Result<String, String> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ssh-keygen: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ssh-keygen -f {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let public = path.with_extension("pub");
    std::fs::read_to_string(&public)
        .map(|key| key.trim().to_owned())
        .map_err(|e| format!("{}: {e}", public.display()))
}

/// A host's sshd: its files live in `dir`.
pub struct Sshd {
    pub child: Child,
    /// The host key's public half, for known_hosts.
    pub host_key: String,
    pub log: PathBuf,
}

impl Sshd {
    /// Starts sshd in `slot`'s namespace, accepting `authorized_keys`, and waits until it
    /// accepts connections from the root namespace.
    pub fn start(slot: Slot, dir: &Path, authorized_keys: &Path) -> Result<Sshd, String> {
        let host_key_path = dir.join("ssh_host_ed25519_key");
        let host_key = keygen(&host_key_path, &slot.namespace())?;
        // The privilege separation directory Debian's sshd insists on.
        std::fs::create_dir_all("/run/sshd").map_err(|e| format!("/run/sshd: {e}"))?;
        let config = dir.join("sshd_config");
        let log = dir.join("sshd.log");
        std::fs::write(
            &config,
            sshd_config(slot.host_ip(), &host_key_path, authorized_keys, dir),
        )
        .map_err(|e| format!("{}: {e}", config.display()))?;
        let child = process::server_in_namespace(&slot.namespace(), SSHD)
            .args(["-D", "-f"])
            .arg(&config)
            .arg("-E")
            .arg(&log)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start sshd: {e}"))?;
        let mut sshd = Sshd {
            child,
            host_key,
            log,
        };
        sshd.wait_listening(SocketAddr::from((slot.host_ip(), 22)))?;
        Ok(sshd)
    }

    fn wait_listening(&mut self, addr: SocketAddr) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                return Err(format!("sshd exited ({exit}):\n{}", self.log_text()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "sshd not listening on {addr} after {START_TIMEOUT:?}:\n{}",
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn sshd_config(ip: Ipv4Addr, host_key: &Path, authorized_keys: &Path, dir: &Path) -> String {
    format!(
        "ListenAddress {ip}:22\n\
         HostKey {}\n\
         AuthorizedKeysFile {}\n\
         PidFile {}\n\
         UsePAM no\n\
         StrictModes no\n\
         PermitRootLogin prohibit-password\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UseDNS no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         X11Forwarding no\n\
         AcceptEnv XDG_CACHE_HOME\n\
         LogLevel VERBOSE\n",
        host_key.display(),
        authorized_keys.display(),
        dir.join("sshd.pid").display(),
    )
}

/// What the client files need to know of one host.
pub struct ClientHost<'a> {
    pub alias: &'a str,
    pub ip: Ipv4Addr,
    pub host_key: &'a str,
    /// Where `cutover fleet receive` keeps uploads on this host: the hosts share one file
    /// system, and each must receive its own copy, as separate machines would.
    pub upload_cache: std::path::PathBuf,
}

/// `ssh_config` with one `Host` block per host. Only this file is read (`-F`), so neither the
/// machine's nor root's own ssh configuration changes what the tests see.
pub fn client_config(hosts: &[ClientHost], identity: &Path, known_hosts: &Path) -> String {
    let mut config = String::new();
    for host in hosts {
        let _ = write!(
            config,
            "Host {}\n\
             \x20   HostName {}\n\
             \x20   User root\n\
             \x20   Port 22\n\
             \x20   IdentityFile {}\n\
             \x20   IdentitiesOnly yes\n\
             \x20   UserKnownHostsFile {}\n\
             \x20   GlobalKnownHostsFile /dev/null\n\
             \x20   StrictHostKeyChecking yes\n\
             \x20   BatchMode yes\n\
             \x20   ConnectTimeout 5\n\
             \x20   SetEnv XDG_CACHE_HOME={}\n\
             \x20   LogLevel ERROR\n\n",
            host.alias,
            host.ip,
            identity.display(),
            known_hosts.display(),
            host.upload_cache.display(),
        );
    }
    config
}

/// known_hosts: each host's key under the address ssh connects to (its HostName).
pub fn known_hosts(hosts: &[ClientHost]) -> String {
    hosts
        .iter()
        .map(|host| format!("{} {}\n", host.ip, host.host_key))
        .collect()
}

//! Slots: the numbers X of 10.231.X.0/24 a test host may use, and every name made from one.
//!
//! Test processes run side by side (nextest starts one per test), so a slot is claimed with a
//! file created with O_EXCL under /run/cutover-test-fleet, holding the owner's pid and start
//! time. A claim whose owner is gone is stale: whatever the dead owner left under the slot's
//! names is removed before the slot is used again. Claims are taken under one flock so that two
//! processes never both decide the same stale claim is theirs to clean.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CLAIMS: &str = "/run/cutover-test-fleet";
/// How long to wait for another process's claiming (a few `ip` commands at most).
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// One X of 10.231.X.0/24. Every name below carries the `cofleet`/`cutover-fleet` prefix, so
/// the harness only ever creates or removes what is its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(pub u8);

impl Slot {
    pub fn namespace(self) -> String {
        format!("cofleet-{}", self.0)
    }

    /// The veth end in the root namespace (interface names are at most 15 bytes).
    pub fn veth_root(self) -> String {
        format!("cofleet-{}", self.0)
    }

    /// The veth end moved into the host's namespace.
    pub fn veth_host(self) -> String {
        format!("cofleet-{}h", self.0)
    }

    pub fn root_ip(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.0, 1)
    }

    pub fn host_ip(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.0, 2)
    }

    /// What `ip netns exec` bind-mounts over /etc for this host's processes.
    pub fn netns_etc(self) -> PathBuf {
        PathBuf::from("/etc/netns").join(self.namespace())
    }

    /// The name, under /etc, of the config directory of a fleet whose first slot is this one.
    pub fn config_dir_name(self) -> String {
        format!("cutover-fleet-{}", self.0)
    }

    /// The empty mountpoint that directory needs in the root namespace.
    pub fn mountpoint(self) -> PathBuf {
        Path::new("/etc").join(self.config_dir_name())
    }
}

/// A slot held by this process; the claim file goes when this is dropped.
#[derive(Debug)]
pub struct Claim {
    pub slot: Slot,
    path: PathBuf,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Claims `n` free slots (cleaning stale ones), recording `dir` (the fleet's temp dir) in
/// each claim for whoever finds it stale later.
pub fn claim(n: usize, dir: &Path) -> Result<Vec<Claim>, String> {
    fs::create_dir_all(CLAIMS).map_err(|e| format!("cannot create {CLAIMS}: {e}"))?;
    let _lock = ClaimLock::take()?;
    let mut claims = Vec::with_capacity(n);
    for x in 1..=254u8 {
        if claims.len() == n {
            break;
        }
        if let Some(claim) = try_claim(Slot(x), dir)? {
            claims.push(claim);
        }
    }
    if claims.len() < n {
        return Err(format!(
            "only {} free slots of 10.231.X.0/24 for {n} hosts",
            claims.len()
        ));
    }
    Ok(claims)
}

fn try_claim(slot: Slot, dir: &Path) -> Result<Option<Claim>, String> {
    let path = Path::new(CLAIMS).join(slot.0.to_string());
    let mut file = match create_new(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            if owner_alive(&fs::read_to_string(&path).unwrap_or_default()) {
                return Ok(None);
            }
            // Its owner died without tearing down (killed): the slot is free again.
            fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            create_new(&path).map_err(|e| format!("{}: {e}", path.display()))?
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let claim = Claim { slot, path };
    // Leftovers under a slot nobody holds are a dead owner's (or a teardown that failed).
    remove_leftovers(slot);
    if subnet_in_use(slot) {
        // Someone else's address in 10.231.X.0/24: not ours to use or touch.
        return Ok(None);
    }
    let record = format!(
        "{} {} {}\n",
        std::process::id(),
        own_start_time(),
        dir.display()
    );
    file.write_all(record.as_bytes())
        .map_err(|e| format!("{}: {e}", claim.path.display()))?;
    Ok(Some(claim))
}

fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

/// Removes everything the harness may have made under `slot`'s names: the processes in its
/// namespace, the veth pair, the namespace, its /etc/netns dir and a fleet config mountpoint.
pub fn remove_leftovers(slot: Slot) {
    let ns = slot.namespace();
    if Path::new("/run/netns").join(&ns).exists() {
        for pid in namespace_pids(&ns) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    // Deleting one end deletes both, even if a process still holds the namespace.
    if Path::new("/sys/class/net").join(slot.veth_root()).exists() {
        ip(&["link", "del", &slot.veth_root()]);
    }
    if Path::new("/run/netns").join(&ns).exists() {
        ip(&["netns", "del", &ns]);
    }
    let etc = slot.netns_etc();
    if etc.exists() {
        let _ = fs::remove_dir_all(&etc);
    }
    // Only ever an empty directory (the mounts over it live in the hosts' mount namespaces).
    let _ = fs::remove_dir(slot.mountpoint());
}

/// Pids of the processes in network namespace `ns`.
pub fn namespace_pids(ns: &str) -> Vec<i32> {
    let out = Command::new("ip")
        .args(["netns", "pids", ns])
        .stderr(Stdio::null())
        .output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Runs `ip ARGS`; a failure is printed, not fatal (teardown goes on with the rest).
fn ip(args: &[&str]) {
    match Command::new("ip").args(args).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "fleet teardown: ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!("fleet teardown: ip {}: {e}", args.join(" ")),
    }
}

fn subnet_in_use(slot: Slot) -> bool {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output();
    let prefix = format!(" inet 10.231.{}.", slot.0);
    out.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(&prefix))
}

/// Whether the process recorded in a claim ("pid start-time dir") still runs: the start time
/// tells a reused pid from the owner.
fn owner_alive(record: &str) -> bool {
    let mut fields = record.split_whitespace();
    let (Some(pid), Some(start)) = (fields.next(), fields.next()) else {
        return false;
    };
    start_time(pid).is_some_and(|now| now == start)
}

fn own_start_time() -> String {
    start_time(&std::process::id().to_string()).unwrap_or_default()
}

/// Field 22 of /proc/PID/stat (after the parenthesised command name, which may hold spaces).
fn start_time(pid: &str) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    after_name.split_whitespace().nth(19).map(str::to_owned)
}

/// The flock every claimer holds while it claims; the kernel drops it if the holder dies.
struct ClaimLock(File);

impl ClaimLock {
    fn take() -> Result<ClaimLock, String> {
        let path = Path::new(CLAIMS).join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let deadline = Instant::now() + LOCK_WAIT;
        while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            if Instant::now() > deadline {
                return Err(format!(
                    "{} stayed locked for {LOCK_WAIT:?}",
                    path.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(ClaimLock(file))
    }
}

"""A fleet of real hosts on this machine for the fleet phase (bench/fleet.py), ported from the Rust
tests' harness (crates/cutover/tests/common/fleet.rs): each host is a network namespace joined to
the root namespace by a veth pair (10.232.X.1 outside, 10.232.X.2 inside), with its own sshd (host
key checked by the operator's ssh) and its own `cutover serve` with one `backend` component on
10.232.X.2:18080.

Every host reads its config at the same path, /etc/cutover-bench/cutover.toml: `ip netns exec`
binds /etc/netns/NS/cutover-bench over that (empty) directory for every process started in the
namespace, the daemon and every ssh session alike.

10.232.X, not the tests' 10.231.X, and names prefixed `cobench-`, so a bench never touches what a
concurrent `cargo test` made; one flock lets only one bench fleet exist at a time, so whatever is
found under our names at start is a killed bench's leftover and is removed. Needs root, iproute2
and OpenSSH (client and server).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import Procs, wait_until

PUBLIC_PORT = 18080
SSHD = "/usr/sbin/sshd"
LOCK_PATH = Path("/run/cutover-bench-fleet.lock")
MOUNTPOINT = Path("/etc/cutover-bench")  # the shared config path's directory, as hosts see it
REMOTE_CONFIG = MOUNTPOINT / "cutover.toml"
SUBNET = "10.232"
START_DEADLINE = 20.0
STOP_GRACE = 15.0

# The single-host bench's component (harness.CUTOVER_CONFIG), except a 3 s start_timeout (so a
# host made never healthy fails in 3 s, not 10) and stabilize_checks for the degrade scenario.
COMPONENT = """\
listen = "{listen}"
command = ["{{artifact}}"]
env = {{ API_ADDR = "127.0.0.1:{{port}}", RELEASE = "{{release}}"{env_extra} }}
health = {{ path = "/health", interval = "100ms", timeout = "2s", healthy_threshold = 2, start_timeout = "3s" }}
drain_timeout = "10s"
stop_timeout = "5s"
keep_releases = 5
stabilize = "{stabilize}"
stabilize_checks = {{ unhealthy_threshold = 2, max_error_rate = 0.05, min_requests = 5 }}
"""

SSHD_CONFIG = """\
ListenAddress {ip}:22
HostKey {dir}/ssh_host_ed25519_key
AuthorizedKeysFile {authorized}
PidFile {dir}/sshd.pid
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AcceptEnv XDG_CACHE_HOME
LogLevel VERBOSE
"""

# Each host gets its own upload cache (XDG_CACHE_HOME): the hosts share one file system, and each
# must receive its own copy of the artifact, as separate machines would.
SSH_HOST = """\
Host {name}
    HostName {ip}
    User root
    IdentityFile {tmp}/operator_key
    IdentitiesOnly yes
    UserKnownHostsFile {tmp}/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 5
    SetEnv XDG_CACHE_HOME={dir}/upload-cache
    LogLevel ERROR

"""


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM when the bench dies, even by SIGKILL (`ip netns exec`
    execs the program, which keeps it), and a session of its own so a terminal's Ctrl-C reaches
    only the bench, which then stops the hosts in order."""
    os.setsid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def missing_prereqs() -> list[str]:
    missing = [] if os.geteuid() == 0 else ["root (network namespaces and sshd need it)"]
    for prog, pkg in (("ip", "iproute2"), ("ssh", "openssh-client"), ("ssh-keygen", "openssh-client")):
        if shutil.which(prog) is None:
            missing.append(f"{prog} ({pkg})")
    if not os.access(SSHD, os.X_OK):
        missing.append(f"{SSHD} (openssh-server)")
    return missing


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")
    return out


@dataclass
class Host:
    name: str  # h1..hN: the ssh alias
    slot: int
    dir: Path
    env: dict = field(default_factory=dict)  # extra env of the backend's next instances
    stabilize: str = "0s"
    sshd: subprocess.Popen | None = None
    daemon: subprocess.Popen | None = None

    @property
    def ns(self) -> str:
        return f"cobench-{self.slot}"

    @property
    def ip(self) -> str:
        return f"{SUBNET}.{self.slot}.2"

    @property
    def config_path(self) -> Path:  # as the root namespace sees it
        return Path("/etc/netns") / self.ns / MOUNTPOINT.name / "cutover.toml"

    @property
    def sshd_log(self) -> Path:
        return self.dir / "sshd.log"

    def component(self) -> str:
        extra = "".join(f', {k} = "{v}"' for k, v in self.env.items())
        return COMPONENT.format(listen=f"{self.ip}:{PUBLIC_PORT}", env_extra=extra, stabilize=self.stabilize)

    def write_config(self) -> None:
        data = self.dir / "data"
        text = f'[daemon]\ndata_dir = "{data}"\ncontrol_socket = "{data}/control.sock"\n\n' \
               f"[components.backend]\n{self.component()}"
        new = self.config_path.with_suffix(".new")
        new.write_text(text)
        new.replace(self.config_path)  # a reload never reads half a file


class Fleet:
    """`n` hosts, each with a daemon and no release yet. Use as a context manager: everything it
    made is removed on exit, also after an exception or Ctrl-C."""

    def __init__(self, bins, n: int, tmp: Path):
        self.bins, self.tmp, self.n = bins, tmp, n
        self.hosts: list[Host] = []
        self.ssh_config = tmp / "ssh_config"
        self._lock = None

    def __enter__(self) -> Fleet:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _setup(self) -> None:
        LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(LOCK_PATH, "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another bench fleet runs ({LOCK_PATH} is locked)") from None
        for slot in range(1, self.n + 1):
            _remove_leftovers(slot)  # a killed bench's: only one bench runs (the lock)
        in_use = _ip("-o", "-4", "addr", "show").stdout
        for slot in range(1, self.n + 1):
            if f" inet {SUBNET}.{slot}." in in_use:
                raise RuntimeError(f"{SUBNET}.{slot}.0/24 is in use here by something else")
        MOUNTPOINT.mkdir(exist_ok=True)
        _keygen(self.tmp / "operator_key")
        Path("/run/sshd").mkdir(exist_ok=True)  # the privilege separation dir Debian's sshd wants
        for slot in range(1, self.n + 1):
            host = Host(f"h{slot}", slot, self.tmp / f"h{slot}")
            self.hosts.append(host)
            (host.dir / "data").mkdir(parents=True)
            self._network(host)
            host.config_path.parent.mkdir(parents=True, exist_ok=True)
            host.write_config()
            self._start_sshd(host)
        self._client_files()
        for host in self.hosts:  # after every sshd: a daemon's start is the slow part
            self._start_daemon(host)

    def _network(self, h: Host) -> None:
        root_end, host_end = h.ns, f"{h.ns}h"
        _ip("netns", "add", h.ns)
        _ip("link", "add", root_end, "type", "veth", "peer", "name", host_end)
        _ip("link", "set", host_end, "netns", h.ns)
        _ip("addr", "add", f"{SUBNET}.{h.slot}.1/24", "dev", root_end)
        _ip("link", "set", root_end, "up")
        _ip("-n", h.ns, "addr", "add", f"{h.ip}/24", "dev", host_end)
        _ip("-n", h.ns, "link", "set", host_end, "up")
        _ip("-n", h.ns, "link", "set", "lo", "up")  # instances listen on 127.0.0.1 there

    def _spawn(self, h: Host, argv: list, log_name: str, env: dict | None = None) -> subprocess.Popen:
        with open(h.dir / log_name, "ab") as out:
            return subprocess.Popen(
                ["ip", "netns", "exec", h.ns, *map(str, argv)], stdin=subprocess.DEVNULL, stdout=out,
                stderr=out, cwd=h.dir, env={**os.environ, **(env or {})}, preexec_fn=_die_with_parent)

    def _start_sshd(self, h: Host) -> None:
        _keygen(h.dir / "ssh_host_ed25519_key")
        conf = h.dir / "sshd_config"
        conf.write_text(SSHD_CONFIG.format(ip=h.ip, dir=h.dir, authorized=self.tmp / "operator_key.pub"))
        h.sshd = self._spawn(h, [SSHD, "-D", "-f", conf, "-E", h.sshd_log], "sshd.out")

        def listening():
            with socket.create_connection((h.ip, 22), timeout=0.2):
                return True

        wait_until(f"sshd on {h.name}", listening, START_DEADLINE, interval=0.02, alive=h.sshd)

    def _client_files(self) -> None:
        # known_hosts: each host's key under the address ssh connects to (its HostName).
        keys = {h.name: " ".join((h.dir / "ssh_host_ed25519_key.pub").read_text().split()[:2]) for h in self.hosts}
        known = "".join(f"{h.ip} {keys[h.name]}\n" for h in self.hosts)
        (self.tmp / "known_hosts").write_text(known)
        self.ssh_config.write_text("".join(SSH_HOST.format(name=h.name, ip=h.ip, tmp=self.tmp, dir=h.dir)
                                           for h in self.hosts))

    def _start_daemon(self, h: Host) -> None:
        h.daemon = self._spawn(h, [self.bins.cutover, "serve", "--config", REMOTE_CONFIG], "daemon.log",
                               env={"CUTOVER_LOG": "info"})

        def answering():
            out = self.cli(h, "status", "--json")
            return out.returncode == 0 and '"daemon":null' not in out.stdout.replace(" ", "")

        wait_until(f"cutover serve on {h.name}", answering, START_DEADLINE, interval=0.05, alive=h.daemon)

    def cli(self, h: Host, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """`cutover --config <shared path> ARGS` on host `h` itself (not over ssh)."""
        return subprocess.run(["ip", "netns", "exec", h.ns, str(self.bins.cutover), "--config", str(REMOTE_CONFIG),
                               *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def reconfigure(self, h: Host, env: dict | None = None, stabilize: str | None = None) -> None:
        """New backend env / stabilize on `h` (for its next deploy), applied by `cutover reload`."""
        if env is not None:
            h.env = env
        if stabilize is not None:
            h.stabilize = stabilize
        h.write_config()
        out = self.cli(h, "reload")
        if out.returncode != 0:
            raise RuntimeError(f"reload on {h.name}: {out.stdout}{out.stderr}")

    def operator_config(self, canary: int, max_parallel: int) -> Path:
        """The operator's cutover.toml: host 1's component, its own data_dir, and `[fleet]`."""
        op = self.tmp / "operator"
        (op / "data").mkdir(parents=True, exist_ok=True)
        hosts = ", ".join(f'"{h.name}"' for h in self.hosts)
        text = (f'[daemon]\ndata_dir = "{op}/data"\ncontrol_socket = "{op}/data/control.sock"\n\n'
                f"[components.backend]\n{self.hosts[0].component()}\n"
                f'[fleet]\nhosts = [{hosts}]\nremote_config = "{REMOTE_CONFIG}"\n'
                f'ssh = ["ssh", "-F", "{self.ssh_config}"]\nremote_binary = "{self.bins.cutover.resolve()}"\n'
                f'history = "{op}/fleet.sqlite"\ncanary = {canary}\nmax_parallel = {max_parallel}\n')
        path = op / "cutover.toml"
        path.write_text(text)
        return path

    def close(self) -> None:
        for h in self.hosts:  # daemons first: they stop their instances on SIGTERM
            if h.daemon is not None:
                Procs.stop(h.daemon, timeout=STOP_GRACE)
        # Instances a daemon left (their executables are in the hosts' stores under tmp), and ssh
        # control masters of an interrupted run (their command lines name our ssh_config).
        Procs.kill_strays(self.tmp)
        _kill_cmdline_containing(str(self.ssh_config))
        for h in self.hosts:
            if h.sshd is not None:
                Procs.stop(h.sshd, timeout=5)
        for h in self.hosts:
            _remove_leftovers(h.slot)
        try:
            MOUNTPOINT.rmdir()  # only ever empty here: the binds live in the hosts' mount namespaces
        except OSError:
            pass
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cutover-bench", "-f", str(path)],
                   check=True, capture_output=True, timeout=15, stdin=subprocess.DEVNULL)


def _kill_cmdline_containing(needle: str) -> None:
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if needle.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass


def _remove_leftovers(slot: int) -> None:
    """Everything under slot's names: processes in its namespace, the veth, the namespace, its
    /etc/netns dir."""
    ns = f"cobench-{slot}"
    if Path("/run/netns", ns).exists():
        pids = _ip("netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline and _ip("netns", "pids", ns, check=False).stdout.split():
            time.sleep(0.05)
    if Path("/sys/class/net", ns).exists():
        _ip("link", "del", ns, check=False)  # deleting one end deletes both
    if Path("/run/netns", ns).exists():
        _ip("netns", "del", ns, check=False)
    shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)

"""Daemon lifecycle (issue 13, "Figures"): what changing the proxy itself costs the clients.

The deploy phase's 16-client load (bench/run.py) runs against one front while the front itself
changes, N times in a row, for four strategies, one after another in one run:
  upgrade        `cutover upgrade`: the running daemon hands its sockets and instances to a new one
  reload         `cutover reload` adding a second demo-api component (its own port), a deploy of
                 it, then a reload removing it again
  nginx-upgrade  nginx's binary upgrade: USR2 (a new master from the same binary), WINCH and QUIT
                 to the old master, wait for it to exit
  restart        SIGTERM `cutover serve`, wait for it to exit, start it again (the port is closed
                 meanwhile: the outage the other three avoid)
Besides the load, one WebSocket (`GET /ws`, an echo) is held open; it is checked with an echo
after every operation and opened again only if it was lost.

Per operation: failed requests by kind, the longest span without a successful response, the
worst successful request against the steady-state p99 before the first operation, whether the
WebSocket survived, and for cutover the daemon pid and the instance pid before and after.

Stdlib only, everything on 127.0.0.1, every wait bounded. See bench/README.md ("Lifecycle").
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness import (
    DAEMON_DEADLINE,
    DEPLOY_DEADLINE,
    EXIT_DEADLINE,
    HOST,
    NGINX_UPSTREAM,
    Bins,
    Procs,
    free_port,
    http_get,
    log,
    start_demo_api,
    wait_healthy,
    wait_until,
)
from proxy_cost import Deployed, deployed_cutover

STRATEGIES = ("upgrade", "reload", "nginx-upgrade", "restart")
WARMUP = 2.0  # load before the first operation: the steady state the operations are compared to
BETWEEN_OPS = 0.5
COOLDOWN = 0.5
# Requests ending this long after an operation still count as its own (a reset can surface late).
OP_TAIL = 0.2
UPGRADE_DEADLINE = 60.0  # `cutover upgrade` and `cutover reload` themselves
OLD_EXIT_DEADLINE = 30.0  # the old daemon or nginx master draining and exiting after a handoff
OP_DEADLINE = UPGRADE_DEADLINE + OLD_EXIT_DEADLINE + DEPLOY_DEADLINE  # bounds the load's lifetime
WS_TIMEOUT = 2.0
# An old nginx worker waits for its open connections to close, a WebSocket included, before it
# exits; without a bound the old master would never exit while the WebSocket is open.
NGINX_WORKER_SHUTDOWN = "3s"

# `daemon on`, unlike the harness's nginx: a master whose parent is still the process that started
# it ignores USR2 ("the changing binary signal is ignored"), so the binary upgrade needs nginx
# detached as it runs in production. The master is then no child of ours: cleanup goes by its
# process group (it calls setsid, and every later master and worker stays in that group).
NGINX_CONFIG = """\
daemon on;
worker_processes 2;
worker_shutdown_timeout {shutdown};
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/upstream.conf;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location = /ws {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 1h;
        }}
    }}
}}
"""

# The component `reload` adds and removes: demo-api again, on its own public port.
EXTRA_COMPONENT = """
[components.extra]
listen = "127.0.0.1:{port}"
command = ["{{artifact}}"]
env = {{ API_ADDR = "127.0.0.1:{{port}}", RELEASE = "{{release}}" }}
health = {{ path = "/health", interval = "100ms", timeout = "2s", healthy_threshold = 2, start_timeout = "10s" }}
drain_timeout = "2s"
stop_timeout = "5s"
keep_releases = 2
stabilize = "0s"
"""


class Unavailable(RuntimeError):
    """The strategy cannot run here (a subcommand this cutover lacks, no nginx): no numbers."""


class OpFailed(RuntimeError):
    """One operation did not do what it should; its figures are still measured."""


class Stuck(OpFailed):
    """The old process did not go away: the next operation would act on a half-finished one."""


@dataclass
class Op:
    """One operation of a strategy: when it ran and what it changed."""
    k: int
    start: float
    end: float
    ok: bool
    note: str = ""
    ws_survived: bool | None = None
    # cutover only: the daemon and the serving instance of `backend`, before and after.
    pids: dict = field(default_factory=dict)


# --- one WebSocket, held open --------------------------------------------------------------


class WebSocket:
    """A minimal RFC 6455 client for demo-api's echo: open, echo a text frame, close."""

    GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, port: int):
        self.sock = socket.create_connection((HOST, port), timeout=WS_TIMEOUT)
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /ws HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = self._read_until(b"\r\n\r\n").decode(errors="replace")
        accept = base64.b64encode(hashlib.sha1((key + self.GUID).encode()).digest()).decode()
        if not head.startswith("HTTP/1.1 101") or accept not in head:
            self.close()
            raise ConnectionError(f"no WebSocket upgrade: {head.splitlines()[0] if head else 'no answer'}")
        self.sent = 0

    def _read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the server")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            if len(self.buf) > 65536:
                raise ConnectionError("handshake answer too long")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(marker, 1)
        return head

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode]) + length + mask + masked)

    def echo(self) -> str | None:
        """None if a text frame came back unchanged, else what went wrong."""
        self.sent += 1
        text = f"lifecycle {self.sent}".encode()
        try:
            self._send(0x1, text)
            for _ in range(8):  # a ping or two may come first; never loop unbounded
                b0, b1 = self._read_exact(2)
                n = b1 & 0x7F
                if n == 126:
                    n = int.from_bytes(self._read_exact(2), "big")
                elif n == 127:
                    n = int.from_bytes(self._read_exact(8), "big")
                payload = self._read_exact(n)
                opcode = b0 & 0x0F
                if opcode == 0x8:
                    return "close frame from the server"
                if opcode == 0x9:
                    self._send(0xA, payload)
                    continue
                return None if payload == text else f"echo mismatch: {payload[:40]!r}"
            return "no echo among the frames received"
        except OSError as e:
            return f"{type(e).__name__}: {e}"

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class HeldWebSocket:
    """The phase's one WebSocket: checked after each operation, reopened only when lost."""

    def __init__(self, port: int):
        self.port = port
        self.ws: WebSocket | None = None
        self.opened = 0
        self.errors: list[str] = []

    def ensure_open(self) -> None:
        """Before an operation: keep the one open if it still echoes, else open a new one."""
        if self.ws is not None:
            err = self.ws.echo()
            if err is None:
                return
            self.errors.append(f"lost between operations: {err}")
            self._drop()
        try:
            self.ws = WebSocket(self.port)
            self.opened += 1
        except OSError as e:
            self.errors.append(f"open: {type(e).__name__}: {e}")

    def survived(self) -> bool | None:
        """After an operation: did the connection opened before it still echo? None: none was open."""
        if self.ws is None:
            return None
        err = self.ws.echo()
        if err:
            self.errors.append(err)
            self._drop()
            return False
        return True

    def _drop(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None

    def close(self) -> None:
        self._drop()


# --- processes we do not parent ------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name, or None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def exited(pid: int) -> bool:
    """Gone or a zombie: an orphan's zombie stays until its new parent reaps it, and a container's
    init may never do so."""
    st = _stat(pid)
    return st is None or st[0] in ("Z", "X")


def wait_exited(what: str, pid: int, deadline_s: float) -> float:
    start = time.monotonic()
    wait_until(what, lambda: exited(pid), deadline_s, interval=0.02)
    return time.monotonic() - start


def group_members(pgid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[0] not in ("Z", "X") and int(st[2]) == pgid:
                out.append(int(entry))
    return out


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[0] not in ("Z", "X") and int(st[1]) == pid:
                out.append(int(entry))
    return out


def stop_pid(pid: int, exe: Path, timeout: float = EXIT_DEADLINE) -> None:
    """SIGTERM a process we did not start ourselves (an upgraded daemon), SIGKILL if it lingers.
    Only if it still runs `exe`, so a reused pid is never hit."""
    try:
        if not os.readlink(f"/proc/{pid}/exe").startswith(str(exe.resolve())):
            return
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return
    try:
        wait_exited(f"pid {pid}", pid, timeout)
    except TimeoutError:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# --- cutover ---------------------------------------------------------------------------------


def require_subcommand(bins: Bins, name: str) -> None:
    out = subprocess.run([bins.cutover, name, "--help"], capture_output=True, text=True, timeout=10)
    if out.returncode != 0:
        first = (out.stderr or out.stdout).strip().splitlines()
        raise Unavailable(f"cutover {name} not available: {first[0] if first else f'exit {out.returncode}'}")


def cutover_pids(deployed: Deployed) -> dict:
    st = deployed.daemon.status()
    if st is None:
        return {"daemon": None, "instance": None}
    backend = next(c for c in st["components"] if c["name"] == "backend")
    return {"daemon": st["daemon"]["pid"], "instance": (backend.get("serving") or {}).get("pid")}


def run_cli(argv: list, deadline: float) -> str | None:
    """None on exit 0, else the exit status and the last lines of its output."""
    try:
        out = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=deadline)
    except subprocess.TimeoutExpired:
        return f"no answer after {deadline}s"
    if out.returncode == 0:
        return None
    tail = " | ".join((out.stdout + out.stderr).strip().splitlines()[-4:])
    return f"exit {out.returncode}: {tail}"


def upgrade_op(deployed: Deployed, bins: Bins) -> Callable[[], str | None]:
    daemon = deployed.daemon

    def op() -> str | None:
        old = cutover_pids(deployed)["daemon"]
        err = run_cli([bins.cutover, "upgrade", "--config", daemon.config], UPGRADE_DEADLINE)
        if err:
            raise OpFailed(f"cutover upgrade: {err}")
        # Exit 0 means the new daemon serves; the old one may still be draining its tunnels.
        try:
            waited = wait_exited("old daemon", old, OLD_EXIT_DEADLINE)
        except TimeoutError:
            raise Stuck(f"old daemon {old} still running {OLD_EXIT_DEADLINE}s after the upgrade") from None
        new = cutover_pids(deployed)["daemon"]
        if new is None or new == old:
            raise OpFailed(f"daemon pid {old} -> {new}: no new daemon serving")
        return f"old daemon exited {waited:.2f}s after the upgrade" if waited > 1 else None

    return op


def reload_op(deployed: Deployed, bins: Bins) -> Callable[[int], str | None]:
    daemon = deployed.daemon
    original = daemon.config.read_text()
    extra_port = free_port()

    def write_config(text: str) -> None:
        new = daemon.config.with_suffix(".toml.new")
        new.write_text(text)
        new.replace(daemon.config)

    def op(k: int) -> str | None:
        release = f"e{k}"
        write_config(original + EXTRA_COMPONENT.format(port=extra_port))
        err = run_cli([bins.cutover, "reload", "--config", daemon.config], UPGRADE_DEADLINE)
        if err:
            write_config(original)
            raise OpFailed(f"reload adding `extra`: {err}")
        err = run_cli([bins.cutover, "deploy", "extra", "--artifact", bins.demo_api, "--release", release,
                       "--config", daemon.config], DEPLOY_DEADLINE)
        served = None
        if not err:
            try:
                served = http_get(extra_port, "/version", timeout=2)
            except OSError as e:
                served = str(e)
        write_config(original)
        removed = run_cli([bins.cutover, "reload", "--config", daemon.config], UPGRADE_DEADLINE)
        if err:
            raise OpFailed(f"deploy of `extra`: {err}" + (f"; reload removing it: {removed}" if removed else ""))
        if removed:
            raise Stuck(f"reload removing `extra`: {removed}")
        if served != (200, release):
            raise OpFailed(f"`extra` on :{extra_port} answered {served!r}, expected {release}")
        try:
            wait_until("`extra` listener closed", lambda: not _accepts(extra_port), OLD_EXIT_DEADLINE, interval=0.05)
        except TimeoutError:
            raise Stuck(f"`extra` still accepts on :{extra_port} after the reload removing it") from None
        return None

    return op


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def restart_op(deployed: Deployed, bins: Bins) -> Callable[[], str | None]:
    daemon = deployed.daemon

    def op() -> str | None:
        rc = Procs.stop(daemon.proc, timeout=30)
        daemon.proc = deployed.procs.start([bins.cutover, "serve", "--config", daemon.config], daemon.log_path,
                                           env={"CUTOVER_LOG": "info"})
        wait_until("restarted daemon", daemon.status, DAEMON_DEADLINE, interval=0.02, alive=daemon.proc)
        wait_healthy(daemon.port, alive=daemon.proc, deadline_s=DEPLOY_DEADLINE)
        return None if rc == 0 else f"old daemon exited {rc}"

    return op


# --- nginx -----------------------------------------------------------------------------------


class DetachedNginx:
    """nginx detached (`daemon on`) in front of one backend, its masters found through the pid file."""

    def __init__(self, tmp: Path, port: int, upstream_port: int):
        self.tmp, self.port = tmp, port
        self.binary = Path(shutil.which("nginx") or "/usr/sbin/nginx").resolve()
        self.pid_file = tmp / "nginx.pid"
        self.conf = tmp / "nginx.conf"
        (tmp / "upstream.conf").write_text(NGINX_UPSTREAM.format(port=upstream_port, keepalive=32, upstream_extra=""))
        self.conf.write_text(NGINX_CONFIG.format(dir=tmp, port=port, shutdown=NGINX_WORKER_SHUTDOWN))
        self.pgid: int | None = None
        # The absolute path: USR2 makes the master exec its own argv[0], which must not need PATH.
        out = subprocess.run([self.binary, "-p", f"{tmp}/", "-c", self.conf, "-e", tmp / "error.log"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            raise RuntimeError(f"nginx did not start: {out.stderr.strip()}")
        try:
            self.pgid = os.getpgid(wait_until("nginx pid file", self.master, 5))
            wait_healthy(port)
        except BaseException:
            self.stop()
            raise

    def master(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def binary_upgrade(self) -> str | None:
        old = self.master()
        if old is None or exited(old):
            raise Stuck("no running nginx master")
        os.kill(old, signal.SIGUSR2)
        oldbin = self.tmp / "nginx.pid.oldbin"
        # The new master writes nginx.pid once it runs, the old one renames its own to .oldbin.
        def new_master() -> int | None:
            pid = self.master()
            return pid if oldbin.exists() and pid not in (None, old) else None

        new = wait_until("new nginx master", new_master, 10)
        wait_until("new nginx workers", lambda: len(children_of(new)) >= 2, 10)
        os.kill(old, signal.SIGWINCH)  # old workers stop accepting, finish and exit
        try:
            # The new master is a child of the old one too.
            wait_until("old nginx workers gone", lambda: set(children_of(old)) <= {new}, OLD_EXIT_DEADLINE,
                       interval=0.02)
        except TimeoutError:
            pass  # QUIT below ends them too; the exit wait says if it does not
        os.kill(old, signal.SIGQUIT)
        try:
            wait_exited("old nginx master", old, OLD_EXIT_DEADLINE)
        except TimeoutError:
            raise Stuck(f"old nginx master {old} still running {OLD_EXIT_DEADLINE}s after QUIT") from None
        wait_until("nginx.pid.oldbin removed", lambda: not oldbin.exists(), 5)
        if self.master() != new or exited(new):
            raise Stuck(f"nginx.pid says {self.master()}, expected the new master {new}")
        status = http_get(self.port, "/health", timeout=2)[0]
        if status != 200:
            raise OpFailed(f"new master answered {status}")
        return None

    def stop(self) -> None:
        """QUIT the current master, then SIGKILL whatever is left of the process group."""
        if self.pgid is None:
            return
        for pid_file in (self.pid_file, self.tmp / "nginx.pid.oldbin"):
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGQUIT)
            except (OSError, ValueError):
                pass
        try:
            wait_until("nginx gone", lambda: not group_members(self.pgid), 10, interval=0.05)
        except TimeoutError:
            for pid in group_members(self.pgid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


# --- measuring ---------------------------------------------------------------------------------


def failure_kind(detail: str) -> str:
    name = detail.split(":", 1)[0]
    if name.startswith("HTTP 5"):
        return "5xx"
    if name.startswith("HTTP "):
        return "other HTTP"
    if name == "ConnectionRefusedError":
        return "refused"
    if name in ("ConnectionResetError", "RemoteDisconnected", "BrokenPipeError", "ConnectionAbortedError",
                "IncompleteRead", "BadStatusLine"):
        return "reset"
    if name in ("TimeoutError", "timeout"):
        return "timeout"
    return "other"


def _p99(values: list[float]) -> float | None:
    values = sorted(values)
    return round(values[int(len(values) * 0.99)], 2) if values else None


def measure(reqs: list, ops: list[Op], steady_end: float) -> dict:
    """Per-operation figures from every request's start, end and result (CLOCK_MONOTONIC)."""
    ends = sorted(r.end for r in reqs if r.ok)
    gaps = list(zip(ends, ends[1:]))
    steady = [r for r in reqs if r.end <= steady_end]
    steady_lat = [(r.end - r.start) * 1000 for r in steady if r.ok]
    steady_gap = max((b - a for a, b in gaps if b <= steady_end), default=0.0)

    starts = [op.start for op in ops]
    failures: list[list] = [[] for _ in ops]
    before = 0
    for r in reqs:
        if not r.ok:
            idx = max((i for i, s in enumerate(starts) if s <= r.end), default=None)
            if idx is None:
                before += 1
            else:
                failures[idx].append(r)

    per_op = []
    for op, fails in zip(ops, failures):
        lo, hi = op.start, op.end + OP_TAIL
        # The longest span without a successful response that overlaps the operation.
        gap = max((b - a for a, b in gaps if b >= lo and a <= hi), default=hi - lo)
        worst = max(((r.end - r.start) * 1000 for r in reqs if r.ok and r.end >= lo and r.start <= hi), default=None)
        kinds: dict[str, int] = {}
        for r in fails:
            kinds[failure_kind(r.detail)] = kinds.get(failure_kind(r.detail), 0) + 1
        per_op.append({
            "k": op.k,
            "ok": op.ok,
            "seconds": round(op.end - op.start, 3),
            "failed": len(fails),
            "failed_by_kind": kinds,
            "max_gap_ms": round(gap * 1000, 1),
            "worst_ms": round(worst, 1) if worst is not None else None,
            "ws_survived": op.ws_survived,
            **({"pids": op.pids} if op.pids else {}),
            **({"note": op.note} if op.note else {}),
            "failure_samples": [f"+{(r.start - op.start) * 1000:.0f}ms {'keep-alive' if r.keepalive else 'new-conn'} "
                                f"{r.detail[:120]}" for r in fails[:5]],
        })

    kinds_total: dict[str, int] = {}
    for o in per_op:
        for kind, n in o["failed_by_kind"].items():
            kinds_total[kind] = kinds_total.get(kind, 0) + n
    worsts = [o["worst_ms"] for o in per_op if o["worst_ms"] is not None]
    steady_p99 = _p99(steady_lat)
    ws = [o["ws_survived"] for o in per_op if o["ws_survived"] is not None]
    pid_ops = [o["pids"] for o in per_op if "pids" in o]
    return {
        "ops": len(ops),
        "ops_ok": sum(op.ok for op in ops),
        "requests": len(reqs),
        "failed": sum(o["failed"] for o in per_op),
        "failed_by_kind": kinds_total,
        "failed_before_first_op": before,
        "steady_p99_ms": steady_p99,
        "steady_max_gap_ms": round(steady_gap * 1000, 1),
        "max_gap_ms": max((o["max_gap_ms"] for o in per_op), default=None),
        "worst_ms": max(worsts, default=None),
        "worst_added_ms": round(max(worsts) - steady_p99, 1) if worsts and steady_p99 is not None else None,
        "ws_survived": f"{sum(ws)}/{len(ws)}" if ws else None,
        "instance_kept": (f"{sum(p['instance_before'] == p['instance_after'] for p in pid_ops)}/{len(pid_ops)}"
                          if pid_ops else None),
        "daemon_pid_changed": (f"{sum(p['daemon_before'] != p['daemon_after'] for p in pid_ops)}/{len(pid_ops)}"
                               if pid_ops else None),
        "per_op": per_op,
    }


def run_ops(name: str, port: int, n: int, tmp: Path, load_cls, op_fn: Callable[[int], str | None],
            pids_fn: Callable[[], dict] | None) -> dict:
    """The load and the WebSocket on `port` while `op_fn(k)` runs for k = 1..n."""
    load = load_cls(port, tmp, WARMUP + COOLDOWN + n * (OP_DEADLINE + BETWEEN_OPS) + 30)
    ws = HeldWebSocket(port)
    ops: list[Op] = []
    try:
        time.sleep(WARMUP)
        steady_end = time.monotonic()
        for k in range(1, n + 1):
            ws.ensure_open()
            before = pids_fn() if pids_fn else {}
            start = time.monotonic()
            stuck = False
            try:
                note, ok = op_fn(k) or "", True
            except Exception as e:  # noqa: BLE001 - a failed operation is a figure, not a crash
                note, ok = f"{type(e).__name__}: {e}", False
                # Anything but a plain OpFailed (a wait that timed out, a Stuck) may have left the
                # front half-changed.
                stuck = isinstance(e, Stuck) or not isinstance(e, OpFailed)
            end = time.monotonic()
            op = Op(k, start, end, ok, note, ws.survived())
            if pids_fn:
                after = pids_fn()
                op.pids = {"daemon_before": before.get("daemon"), "daemon_after": after.get("daemon"),
                           "instance_before": before.get("instance"), "instance_after": after.get("instance")}
            ops.append(op)
            log(f"  [{name}] {k}/{n}: {'ok' if ok else 'FAILED'} in {end - start:.2f}s"
                + (f"  {note}" if note else "") + ("  (WebSocket lost)" if op.ws_survived is False else ""))
            if stuck:
                log(f"  [{name}] stopping here: the next operation would act on a half-finished one")
                break
            time.sleep(BETWEEN_OPS)
        time.sleep(COOLDOWN)
        reqs = load.finish()
    finally:
        load.kill()
        ws.close()
    result = measure(reqs, ops, steady_end)
    result["ws_opened"] = ws.opened
    result["ws_errors"] = ws.errors[:20]
    return result


# --- the strategies --------------------------------------------------------------------------


def bench_cutover(name: str, bins: Bins, n: int, load_cls) -> dict:
    if name in ("upgrade", "reload"):
        require_subcommand(bins, name)
    with deployed_cutover(bins, f"bench-life-{name}-") as deployed:
        pids = lambda: cutover_pids(deployed)  # noqa: E731
        try:
            if name == "upgrade":
                op = upgrade_op(deployed, bins)
                return run_ops(name, deployed.daemon.port, n, deployed.tmp, load_cls, lambda k: op(), pids)
            if name == "reload":
                return run_ops(name, deployed.daemon.port, n, deployed.tmp, load_cls, reload_op(deployed, bins), pids)
            op = restart_op(deployed, bins)
            return run_ops(name, deployed.daemon.port, n, deployed.tmp, load_cls, lambda k: op(), pids)
        finally:
            # After an upgrade the daemon serving is no child of ours: stop it by its pid.
            current = (deployed.daemon.status() or {}).get("daemon") or {}
            if current.get("pid") and current["pid"] != deployed.daemon.proc.pid:
                stop_pid(current["pid"], bins.cutover, timeout=30)


def bench_nginx(bins: Bins, n: int, load_cls) -> dict:
    if shutil.which("nginx") is None and not os.access("/usr/sbin/nginx", os.X_OK):
        raise Unavailable("nginx not installed (apt-get install nginx-light)")
    procs = Procs()
    nginx = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-life-nginx-") as t:
            tmp = Path(t)
            backend_port = free_port()
            backend = start_demo_api(procs, bins, tmp, backend_port, "r0")
            nginx = DetachedNginx(tmp, free_port(), backend_port)

            def pids():  # the backend is ours: its pid is a check that nothing restarted it
                return {"daemon": nginx.master(), "instance": backend.pid}

            try:
                return run_ops("nginx-upgrade", nginx.port, n, tmp, load_cls, lambda k: nginx.binary_upgrade(), pids)
            finally:
                nginx.stop()
    finally:
        procs.stop_all()


def run(bins: Bins, n: int, load_cls, only: tuple = STRATEGIES) -> dict:
    """Every strategy (or those in `only`), one after another; one that cannot run or breaks is
    reported, not fatal."""
    results: dict = {}
    for name in (s for s in STRATEGIES if s in only):
        log(f"[{name}] {n} operations under load")
        try:
            results[name] = bench_nginx(bins, n, load_cls) if name == "nginx-upgrade" else bench_cutover(
                name, bins, n, load_cls)
        except Unavailable as e:
            log(f"  [{name}] {e}")
            results[name] = {"unavailable": str(e)}
        except Exception as e:  # noqa: BLE001 - one broken strategy should not hide the others
            log(f"  [{name}] ERROR: {type(e).__name__}: {e}")
            results[name] = {"error": f"{type(e).__name__}: {e}"}
    return results


def failed_goal(results: dict) -> list[str]:
    """What keeps cutover's two strategies from the issue's goal (0 failed, instances kept)."""
    out = []
    for name in ("upgrade", "reload"):
        if name not in results:
            continue
        s = results[name]
        if "unavailable" in s or "error" in s:
            out.append(f"{name}: {s.get('unavailable') or s['error']}")
        elif s["failed"] or s["ops_ok"] != s["ops"] or s["instance_kept"] != f"{s['ops']}/{s['ops']}":
            out.append(f"{name}: {s['failed']} failed, {s['ops_ok']}/{s['ops']} operations ok, "
                       f"instances kept {s['instance_kept']}")
        elif (s.get("worst_added_ms") or 0) >= 100:
            out.append(f"{name}: worst request {s['worst_added_ms']:.1f} ms over the steady p99 (goal: under 100)")
    return out


def print_table(results: dict) -> None:
    log("\nDaemon lifecycle: the same 16-client load and one WebSocket on each; operations one after another")
    head = (f"{'strategy':<15}{'ops ok':>8}{'failed':>8}{'refused':>9}{'reset':>7}{'5xx':>5}{'timeout':>9}"
            f"{'max gap ms':>12}{'worst ms':>10}{'p99 before':>12}{'ws kept':>9}{'inst kept':>11}{'new pid':>9}")
    log(head)
    log("-" * len(head))
    for name, s in results.items():
        if "unavailable" in s or "error" in s:
            log(f"{name:<15}  {s.get('unavailable') or 'ERROR: ' + s['error']}")
            continue
        k = s["failed_by_kind"]
        other = s["failed"] - sum(k.get(x, 0) for x in ("refused", "reset", "5xx", "timeout"))

        def cell(v, width, fmt="{}"):
            return f"{'-' if v is None else fmt.format(v):>{width}}"

        log(f"{name:<15}{str(s['ops_ok']) + '/' + str(s['ops']):>8}{s['failed']:>8}{k.get('refused', 0):>9}"
            f"{k.get('reset', 0):>7}{k.get('5xx', 0):>5}{k.get('timeout', 0):>9}{cell(s['max_gap_ms'], 12)}"
            f"{cell(s['worst_ms'], 10)}{cell(s['steady_p99_ms'], 12)}{cell(s['ws_survived'], 9)}"
            f"{cell(s['instance_kept'], 11)}{cell(s['daemon_pid_changed'], 9)}"
            + (f"  (+{other} other)" if other else ""))
    log("max gap: longest span without a successful response during an operation (steady state before: "
        + ", ".join(f"{n} {s['steady_max_gap_ms']}" for n, s in results.items() if "steady_max_gap_ms" in s)
        + " ms); worst: slowest successful request during one; new pid: daemon (nginx: master) pid changed")

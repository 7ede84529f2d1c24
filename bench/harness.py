"""Shared pieces of the benchmarks: processes we start (and always stop), readiness waits, the
cutover daemon, nginx and demo-api as children, and wrk's output.

Stdlib only; everything on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import http.client
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
HOST = "127.0.0.1"

# Deadlines for everything we wait on.
HEALTH_DEADLINE = 10.0
DAEMON_DEADLINE = 15.0
DEPLOY_DEADLINE = 60.0
EXIT_DEADLINE = 15.0

CUTOVER_CONFIG = """\
[daemon]
data_dir = "{dir}/.cutover"
control_socket = "{dir}/.cutover/control.sock"
{daemon_extra}
[components.backend]
listen = "127.0.0.1:{port}"
command = ["{{artifact}}"]
env = {{ API_ADDR = "127.0.0.1:{{port}}", RELEASE = "{{release}}" }}
health = {{ path = "/health", interval = "100ms", timeout = "2s", healthy_threshold = 2, start_timeout = "10s" }}
drain_timeout = "10s"
stop_timeout = "5s"
keep_releases = 5
stabilize = "0s"
"""

# `daemon off` keeps the master our child, so cleanup can always find it (and its workers, which
# share its process group). Temp paths are set so nothing is written outside the temp dir.
NGINX_CONFIG = """\
daemon off;
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{http_extra}    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/upstream.conf;
    server {{
        listen 127.0.0.1:{port}{listen_extra};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
{location_extra}        }}
    }}
}}
"""

# The headers cutover's proxy writes on every request (edge.rs: for a client it does not trust),
# set the same way for nginx so both proxies do the same work; `run.py --nginx-plain` leaves
# them out (nginx then sends only Host and Connection).
NGINX_FORWARDING = """\
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header Forwarded "for=$remote_addr;proto=$scheme";
            proxy_set_header Via "1.1 nginx";
"""
NGINX_SETS_FORWARDING = True  # run.py --nginx-plain turns it off


def nginx_forwarding() -> str:
    """The location directives that make nginx write cutover's forwarding headers, or none."""
    return NGINX_FORWARDING if NGINX_SETS_FORWARDING else ""


NGINX_UPSTREAM = "upstream backend {{ server 127.0.0.1:{port}; keepalive {keepalive};{upstream_extra} }}\n"


def log(msg: str) -> None:
    print(msg, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 1.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def https_get(port: int, path: str, host: str, timeout: float = 1.0) -> tuple[int, str]:
    """`GET path` over TLS to 127.0.0.1:port with SNI and Host `host`. The certificate is not
    checked: the benchmarks make their own self-signed ones."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    conn = http.client.HTTPSConnection(HOST, port, timeout=timeout, context=ctx)
    try:
        # Connected here: http.client would send the connect address as SNI, not the host.
        conn.sock = ctx.wrap_socket(socket.create_connection((HOST, port), timeout), server_hostname=host)
        conn.putrequest("GET", path, skip_host=True)
        conn.putheader("Host", host)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def wait_until(what: str, check, deadline_s: float, interval: float = 0.01, alive=None):
    """Polls `check()` until it returns a truthy value; raises after `deadline_s`.

    `alive`, if given, is a Popen that must not exit meanwhile (a crashed server would otherwise
    cost the whole deadline).
    """
    deadline = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {alive.returncode}")
        try:
            result = check()
            if result:
                return result
        except Exception as e:  # noqa: BLE001 - anything means "not yet"
            last = e
        time.sleep(interval)
    raise TimeoutError(f"{what}: not ready after {deadline_s}s (last error: {last})")


def wait_healthy(port: int, alive=None, deadline_s: float = HEALTH_DEADLINE) -> None:
    wait_until(f"/health on :{port}", lambda: http_get(port, "/health")[0] == 200, deadline_s, alive=alive)


# --- processes -------------------------------------------------------------------------------


class Procs:
    """Every process this script starts, so they can all be stopped at the end, even on errors."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.roots: list[Path] = []  # temp dirs whose executables are ours (cutover's instances)

    def start(self, argv, log_path: Path, env=None) -> subprocess.Popen:
        with open(log_path, "ab") as out:
            # Own session: a Ctrl-C on the terminal reaches only this script, which then stops
            # the children in order (graceful first) instead of all at once.
            p = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        self.procs.append(p)
        return p

    @staticmethod
    def stop(p: subprocess.Popen, timeout: float = EXIT_DEADLINE) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL its process group (nginx workers too)."""
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                # Not reaped yet, so its pid (= its group id) cannot have been reused.
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        return p.returncode

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            self.stop(p, timeout=5)
        for root in self.roots:
            self.kill_strays(root)

    @staticmethod
    def kill_strays(root: Path) -> list[int]:
        """cutover starts its instances in their own process groups, from artifacts stored under
        our temp dir; if the daemon did not stop them, find them by executable path."""
        pids = _pids_with_exe_under(root)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids


def _pids_with_exe_under(root: Path) -> list[int]:
    # A deleted temp dir still shows as "<path> (deleted)", which keeps the prefix.
    prefix = str(root.resolve()) + os.sep
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/exe").startswith(prefix):
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


# --- cutover, nginx, demo-api ----------------------------------------------------------------


@dataclass
class Deploy:
    release: str
    start: float
    end: float
    ok: bool
    note: str = ""


@dataclass
class Bins:
    cutover: Path
    demo_api: Path


# `[daemon] proxy_threads` for every daemon the bench starts (`--proxy-threads`); None: the
# daemon's default (half the CPUs).
PROXY_THREADS: int | None = None


class CutoverDaemon:
    def __init__(self, procs: Procs, bins: Bins, tmp: Path, config_extra: str = ""):
        """`config_extra` is appended to the config: more keys of the `backend` component, then
        more tables (e.g. `[edge]`)."""
        self.bins, self.tmp = bins, tmp
        self.port = free_port()
        self.config = tmp / "cutover.toml"
        daemon_extra = f"proxy_threads = {PROXY_THREADS}\n" if PROXY_THREADS else ""
        self.config.write_text(CUTOVER_CONFIG.format(dir=tmp, port=self.port, daemon_extra=daemon_extra)
                               + config_extra)
        self.log_path = tmp / "daemon.log"
        procs.roots.append(tmp)
        self.proc = procs.start(
            [bins.cutover, "serve", "--config", self.config], self.log_path, env={"CUTOVER_LOG": "info"}
        )

        st = wait_until("cutover daemon", self.status, DAEMON_DEADLINE, interval=0.05, alive=self.proc)
        listen = st["components"][0]["listen"]
        if listen != f"{HOST}:{self.port}":
            raise RuntimeError(f"daemon listens on {listen}, configured {HOST}:{self.port}")

    def status(self) -> dict | None:
        """`cutover status --json` while the daemon answers, else None."""
        out = subprocess.run(
            [self.bins.cutover, "status", "--json", "--config", self.config],
            capture_output=True, text=True, timeout=5,
        )
        # With the daemon down, `status` answers from the state database with "daemon": null.
        st = json.loads(out.stdout) if out.returncode == 0 else {}
        return st if st.get("daemon") else None

    def deploy(self, release: str) -> Deploy:
        start = time.monotonic()
        events_path = self.tmp / f"deploy-{release}.jsonl"
        with open(events_path, "wb") as out:
            try:
                rc = subprocess.run(
                    [self.bins.cutover, "deploy", "backend", "--artifact", self.bins.demo_api,
                     "--release", release, "--json", "--config", self.config],
                    stdout=out, stderr=subprocess.STDOUT, timeout=DEPLOY_DEADLINE,
                ).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        end = time.monotonic()
        note = "" if rc == 0 else f"exit {rc}: " + _tail(events_path, 5)
        return Deploy(release, start, end, rc == 0, note)


def _tail(path: Path, n: int) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return ""


def start_demo_api(procs: Procs, bins: Bins, tmp: Path, port: int, release: str) -> subprocess.Popen:
    p = procs.start([bins.demo_api], tmp / f"demo-api-{release}.log",
                    env={"API_ADDR": f"{HOST}:{port}", "RELEASE": release})
    wait_healthy(port, alive=p)
    return p


class Nginx:
    """nginx as our child. `workers`, `keepalive` (idle upstream connections kept per worker) and
    the extra directives default to the availability benchmark's plain setup. `ready(port, proc)`
    waits until it answers (default: plain HTTP `/health`; an `ssl` listener needs its own)."""

    def __init__(self, procs: Procs, tmp: Path, port: int, upstream_port: int, workers: str = "auto",
                 keepalive: int = 32, http_extra: str = "", upstream_extra: str = "", listen_extra: str = "",
                 location_extra: str = "", ready=None):
        self.tmp, self.port = tmp, port
        self.keepalive, self.upstream_extra = keepalive, upstream_extra
        self.conf = tmp / "nginx.conf"
        self.set_upstream(upstream_port)
        self.conf.write_text(NGINX_CONFIG.format(dir=tmp, port=port, workers=workers, http_extra=http_extra,
                                             listen_extra=listen_extra, location_extra=location_extra))
        self.base = ["nginx", "-p", f"{tmp}/", "-c", str(self.conf), "-e", str(tmp / "error.log")]
        self.proc = procs.start(self.base, tmp / "nginx.out")
        (ready or (lambda p, proc: wait_healthy(p, alive=proc)))(port, self.proc)

    def set_upstream(self, port: int) -> None:
        # Write-then-rename so a reload never reads a half-written file.
        new = self.tmp / "upstream.conf.new"
        new.write_text(NGINX_UPSTREAM.format(port=port, keepalive=self.keepalive, upstream_extra=self.upstream_extra))
        new.replace(self.tmp / "upstream.conf")

    def reload(self) -> None:
        subprocess.run(self.base + ["-s", "reload"], check=True, capture_output=True, timeout=10)

    def quit(self) -> None:
        if self.proc.poll() is None:
            subprocess.run(self.base + ["-s", "quit"], capture_output=True, timeout=10)
            try:
                self.proc.wait(EXIT_DEADLINE)
            except subprocess.TimeoutExpired:
                pass
        Procs.stop(self.proc, timeout=1)


# --- wrk -------------------------------------------------------------------------------------

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"unparsable wrk time {text!r}")
    return float(m.group(1)) * _UNIT_MS[m.group(2)]


def parse_wrk(out: str) -> dict:
    def find(pattern, conv=float, default=None):
        m = re.search(pattern, out, re.M)
        return conv(m.group(1)) if m else default

    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": find(r"^Requests/sec:\s+([\d.]+)"),
        "p50_ms": find(r"^\s+50%\s+(\S+)", _ms),
        "p99_ms": find(r"^\s+99%\s+(\S+)", _ms),
        "requests": find(r"^\s+(\d+) requests in", int),
        "non_2xx_3xx": find(r"Non-2xx or 3xx responses: (\d+)", int, 0),
        "socket_errors": sum(map(int, socket_errors.groups())) if socket_errors else 0,
    }


def git_info() -> dict:
    def git(*args):
        r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
        return r.stdout.strip() if r.returncode == 0 else None

    status = git("status", "--porcelain")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}

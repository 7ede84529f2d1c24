"""Proxy cost (issue 9): what a request costs through cutover, next to nginx and to no proxy.

Three targets share one backend, the demo-api instance that `cutover deploy` started:
  direct   wrk -> demo-api
  nginx    wrk -> nginx (2 workers, upstream keep-alive) -> demo-api
  cutover  wrk -> cutover serve -> demo-api
For every load shape (keep-alive or a new connection per request; a small or a 64 KiB response;
1, 32 or 256 connections), each round runs wrk once against each target, back to back, in an order
that rotates from round to round. Ratios are taken within a round (neighbours in time share the
machine's noise) and summarized as medians with their min-max over the rounds.

CPU time per request comes from /proc/PID/stat (utime + stime) of the proxy's processes (nginx:
master and workers) over each wrk run. See bench/README.md for how to read the tables.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import harness
from harness import HOST, Bins, CutoverDaemon, Nginx, Procs, free_port, http_get, log, parse_wrk, wait_healthy

TARGETS = ("direct", "nginx", "cutover")
MODES = ("keep-alive", "new")
SIZES = ("small", "64k")
LARGE_BYTES = 64 * 1024
WRK_TIMEOUT = "5s"  # per request: a slower one is a wrk timeout error, not a hang
WRK_SLACK = 30  # seconds past its duration before a wrk run counts as hung and is killed
RSS_SAMPLE_EVERY = 0.2
AFTER_IDLE_S = 10  # when the last RSS is read after the load
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Not the availability benchmark's plain nginx: a proxy tuned the way one would tune it to be
# measured. Enough idle upstream connections kept for 256 clients over 2 workers, no cap on the
# requests per connection on either side (cutover has none), bodies buffered in memory, never in
# temp files (cutover streams them), and `reuseport` so the kernel spreads connections over both
# workers (without it, one worker often takes all 32 and the split changes from run to run).
NGINX_WORKERS = "2"
NGINX_LISTEN_EXTRA = " reuseport"
NGINX_KEEPALIVE = 1024
NGINX_HTTP_EXTRA = """\
    keepalive_requests 1000000;
    client_body_buffer_size 128k;
    proxy_buffer_size 16k;
    proxy_buffers 16 16k;
    proxy_busy_buffers_size 64k;
    proxy_max_temp_file_size 0;
"""
NGINX_UPSTREAM_EXTRA = " keepalive_requests 1000000; keepalive_timeout 60s;"

# The 64 KiB response: `GET /bytes?n=65536` if demo-api has such an endpoint; otherwise the
# request carries 64 KiB that `POST /echo?collect=1` sends back (so 64 KiB each way).
LARGE_GET_PATH = f"/bytes?n={LARGE_BYTES}"
ECHO_PATH = "/echo?collect=1"
ECHO_SCRIPT = f"""\
wrk.method = "POST"
wrk.body = string.rep("x", {LARGE_BYTES})
wrk.headers["Content-Type"] = "application/octet-stream"
"""


@dataclass(frozen=True)
class Shape:
    mode: str  # "keep-alive" or "new" (a new connection for every request)
    size: str  # "small" or "64k"
    conns: int

    @property
    def key(self) -> str:
        return f"{self.mode} {self.size} c{self.conns}"


class MissingTool(RuntimeError):
    """A program the phase cannot run without; the message says how to install it."""


def require_tools() -> None:
    if shutil.which("nginx") is None and os.access("/usr/sbin/nginx", os.X_OK):
        os.environ["PATH"] += os.pathsep + "/usr/sbin"
    missing = [f"{tool} (apt-get install {package})"
               for tool, package in (("wrk", "wrk"), ("nginx", "nginx-light"))
               if shutil.which(tool) is None]
    if missing:
        raise MissingTool("the proxy-cost phase needs " + " and ".join(missing))


# --- /proc -----------------------------------------------------------------------------------


def cpu_split(pids: list[int]) -> tuple[float, float]:
    """utime and stime of these processes (all their threads), in seconds."""
    user = system = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            # The command name may hold spaces; the fields after it do not.
            fields = f.read().rsplit(")", 1)[1].split()
        user, system = user + int(fields[11]), system + int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes, in seconds."""
    return sum(cpu_split(pids))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                found.append(int(entry))
    return sorted(found)


class RssSampler:
    """The largest RSS of one process while a block runs (sampled; the thread is bounded by the
    block)."""

    def __init__(self, pid: int):
        self.pid, self.max_kib = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.max_kib = max(self.max_kib, rss_kib(self.pid))
            except (OSError, RuntimeError):
                return
            self._stop.wait(RSS_SAMPLE_EVERY)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join(5)


# --- targets and wrk -------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    port: int
    pids: list[int]  # whose CPU time is the proxy's cost (empty for direct)


@dataclass
class Large:
    path: str
    script: Path | None  # wrk Lua script that makes the request a POST with a body
    note: str


def large_request(backend_port: int, tmp: Path) -> Large:
    try:
        status, body = http_get(backend_port, LARGE_GET_PATH, timeout=5)
    except OSError:
        status, body = 0, ""
    if status == 200 and len(body) == LARGE_BYTES:
        return Large(LARGE_GET_PATH, None, f"GET {LARGE_GET_PATH}")
    script = tmp / "echo-64k.lua"
    script.write_text(ECHO_SCRIPT)
    return Large(ECHO_PATH, script,
                 f"POST {ECHO_PATH} with a {LARGE_BYTES}-byte body (demo-api has no GET endpoint of "
                 f"that size: {LARGE_GET_PATH} answered {status}), so 64 KiB go each way")


def wrk_argv(port: int, shape: Shape, seconds: int, large: Large) -> list[str]:
    argv = ["wrk", f"-t{min(2, shape.conns)}", f"-c{shape.conns}", f"-d{seconds}s",
            f"--timeout={WRK_TIMEOUT}", "--latency"]
    if shape.mode == "new":
        argv += ["-H", "Connection: close"]
    path = "/version"
    if shape.size == "64k":
        path = large.path
        if large.script:
            argv += ["-s", str(large.script)]
    return argv + [f"http://{HOST}:{port}{path}"]


def run_wrk(target: Target, backend_pid: int, shape: Shape, seconds: int, large: Large) -> dict:
    argv = wrk_argv(target.port, shape, seconds, large)
    cpu0, backend0 = [cpu_seconds([p]) for p in target.pids], cpu_seconds([backend_pid])
    split0 = cpu_split(target.pids)
    started = time.monotonic()
    with RssSampler(target.pids[0]) if target.name == "cutover" else _nothing() as rss:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + WRK_SLACK)
        except subprocess.TimeoutExpired:
            return {"error": f"wrk did not finish within {seconds + WRK_SLACK}s"}
    wall = time.monotonic() - started
    by_pid = [cpu_seconds([p]) - before for p, before in zip(target.pids, cpu0)]
    user, system = (after - before for after, before in zip(cpu_split(target.pids), split0))
    cpu, backend = sum(by_pid), cpu_seconds([backend_pid]) - backend0
    if out.returncode != 0:
        return {"error": f"wrk exited {out.returncode}: {out.stderr.strip()[:300]}"}
    result = parse_wrk(out.stdout)
    if result["rps"] is None or result["p99_ms"] is None or not result["requests"]:
        return {"error": "cannot parse wrk output: " + out.stdout[-300:]}
    n = result["requests"]
    result.update(
        wall_s=round(wall, 3),
        proxy_cpu_s=round(cpu, 3),
        proxy_cpu_s_by_pid=[round(c, 3) for c in by_pid],  # nginx: master, then the workers
        proxy_cpu_us_per_req=round(cpu / n * 1e6, 2) if target.pids else None,
        # User space is the proxy's own work; kernel time mostly the same syscalls for both.
        proxy_user_us_per_req=round(user / n * 1e6, 2) if target.pids else None,
        proxy_sys_us_per_req=round(system / n * 1e6, 2) if target.pids else None,
        backend_cpu_us_per_req=round(backend / n * 1e6, 2),
    )
    if rss is not None:
        result["daemon_rss_max_kib"] = rss.max_kib
    return result


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *_):
        return None


# --- summary ---------------------------------------------------------------------------------


def _spread(values: list[float]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "n": len(values)}


def _ratio(a, b):
    return a / b if a is not None and b else None


def summarize(runs: list[dict]) -> dict:
    """Per shape: each target's medians, and the medians (min-max) of the per-round ratios."""
    out = {}
    for key in dict.fromkeys(r["shape"] for r in runs):
        rounds: dict[int, dict[str, dict]] = {}
        for r in runs:
            if r["shape"] == key and "error" not in r["result"]:
                rounds.setdefault(r["round"], {})[r["target"]] = r["result"]
        by_target = {
            t: {
                "rps": _spread([rd[t]["rps"] for rd in rounds.values() if t in rd]),
                "p99_ms": _spread([rd[t]["p99_ms"] for rd in rounds.values() if t in rd]),
                "proxy_cpu_us_per_req": _spread([rd[t]["proxy_cpu_us_per_req"] for rd in rounds.values() if t in rd]),
                "proxy_user_us_per_req": _spread([rd[t].get("proxy_user_us_per_req") for rd in rounds.values() if t in rd]),
                "proxy_sys_us_per_req": _spread([rd[t].get("proxy_sys_us_per_req") for rd in rounds.values() if t in rd]),
                "backend_cpu_us_per_req": _spread([rd[t]["backend_cpu_us_per_req"] for rd in rounds.values() if t in rd]),
                "errors": sum(rd[t]["socket_errors"] + rd[t]["non_2xx_3xx"] for rd in rounds.values() if t in rd),
            }
            for t in TARGETS
        }

        def per_round(a, b, field):
            return _spread([_ratio(rd[a][field], rd[b][field]) for rd in rounds.values() if a in rd and b in rd])

        out[key] = {
            "targets": by_target,
            "ratios": {
                "cutover_over_nginx_rps": per_round("cutover", "nginx", "rps"),
                "cutover_over_nginx_p99": per_round("cutover", "nginx", "p99_ms"),
                "cutover_over_nginx_cpu_per_req": per_round("cutover", "nginx", "proxy_cpu_us_per_req"),
                "cutover_over_nginx_user_cpu_per_req": per_round("cutover", "nginx", "proxy_user_us_per_req"),
                "cutover_over_direct_rps": per_round("cutover", "direct", "rps"),
                "nginx_over_direct_rps": per_round("nginx", "direct", "rps"),
                "cutover_over_direct_p99": per_round("cutover", "direct", "p99_ms"),
                "nginx_over_direct_p99": per_round("nginx", "direct", "p99_ms"),
            },
            "failed_runs": sum(1 for r in runs if r["shape"] == key and "error" in r["result"]),
        }
    return out


def goals(summary: dict) -> list[dict]:
    """The issue's figures, row by row: cutover/nginx req/s >= 1, p99 <= 1, CPU per request <= 1
    (issue 9 states them for 32 connections; every row is reported)."""
    rows = []
    for key, s in summary.items():
        r = s["ratios"]

        def med(name):
            return r[name]["median"] if r[name] else None

        rps, p99, cpu = med("cutover_over_nginx_rps"), med("cutover_over_nginx_p99"), med("cutover_over_nginx_cpu_per_req")
        rows.append({"shape": key, "rps_ok": rps is not None and rps >= 1.0, "p99_ok": p99 is not None and p99 <= 1.0,
                     "cpu_ok": cpu is not None and cpu <= 1.0, "stated_in_issue": key.endswith(" c32")})
    return rows


def _fmt(s: dict | None, digits: int = 2, spread: bool = True) -> str:
    if not s:
        return "-"
    m = f"{s['median']:.{digits}f}"
    return f"{m} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]" if spread else m


def print_tables(summary: dict, meta: dict) -> None:
    log(f"\nProxy cost: {meta['rounds']} rounds x {meta['duration_s']} s per target, targets alternating; "
        "medians of per-round ratios [min-max]")
    log(f"64k = {meta['large_request']}")
    head = (f"{'shape':<20}{'direct r/s':>11}{'nginx r/s':>11}{'cutover r/s':>12}  {'cutover/nginx r/s':<20}"
            f"{'cutover/direct':<20}{'nginx/direct':<12}")
    log("\n" + head)
    log("-" * len(head))
    for key, s in summary.items():
        t, r = s["targets"], s["ratios"]
        log(f"{key:<20}{_fmt(t['direct']['rps'], 0, False):>11}{_fmt(t['nginx']['rps'], 0, False):>11}"
            f"{_fmt(t['cutover']['rps'], 0, False):>12}  {_fmt(r['cutover_over_nginx_rps']):<20}"
            f"{_fmt(r['cutover_over_direct_rps']):<20}{_fmt(r['nginx_over_direct_rps'])}")
    head = (f"{'shape':<20}{'p99 ms direct':>14}{'nginx':>8}{'cutover':>9}  {'cutover/nginx p99':<20}"
            f"{'CPU us/req nginx':>17}{'cutover':>9}  {'cutover/nginx CPU':<20}{'errors':>7}")
    log("\n" + head)
    log("-" * len(head))
    for key, s in summary.items():
        t, r = s["targets"], s["ratios"]
        errors = sum(t[x]["errors"] for x in TARGETS)
        failed = f" ({s['failed_runs']} runs failed)" if s["failed_runs"] else ""
        log(f"{key:<20}{_fmt(t['direct']['p99_ms'], 3, False):>14}{_fmt(t['nginx']['p99_ms'], 3, False):>8}"
            f"{_fmt(t['cutover']['p99_ms'], 3, False):>9}  {_fmt(r['cutover_over_nginx_p99']):<20}"
            f"{_fmt(t['nginx']['proxy_cpu_us_per_req'], 1, False):>17}{_fmt(t['cutover']['proxy_cpu_us_per_req'], 1, False):>9}"
            f"  {_fmt(r['cutover_over_nginx_cpu_per_req']):<20}{errors:>7}{failed}")
    head = (f"{'shape':<20}{'user us/req nginx':>18}{'cutover':>9}  {'cutover/nginx user':<20}"
            f"{'sys us/req nginx':>17}{'cutover':>9}")
    log("\n" + head)
    log("-" * len(head))
    for key, s in summary.items():
        t, r = s["targets"], s["ratios"]
        log(f"{key:<20}{_fmt(t['nginx']['proxy_user_us_per_req'], 1, False):>18}"
            f"{_fmt(t['cutover']['proxy_user_us_per_req'], 1, False):>9}  {_fmt(r['cutover_over_nginx_user_cpu_per_req']):<20}"
            f"{_fmt(t['nginx']['proxy_sys_us_per_req'], 1, False):>17}{_fmt(t['cutover']['proxy_sys_us_per_req'], 1, False):>9}")
    rss = meta.get("cutover_rss_kib", {})
    if rss:
        log(f"\ncutover daemon RSS: before load {rss.get('before', 0) / 1024:.1f} MiB, max during load "
            f"{rss.get('during_max', 0) / 1024:.1f} MiB, 2 s after {rss.get('after', 0) / 1024:.1f} MiB, "
            f"{AFTER_IDLE_S} s after {rss.get('after_idle', 0) / 1024:.1f} MiB")
    log("\nGoal (issue 9): cutover/nginx req/s >= 1.0, p99 <= 1.0, CPU/request <= 1.0 (stated for c32):")
    for g in goals(summary):
        marks = " ".join(f"{name} {'met' if g[name + '_ok'] else 'NOT met'}" for name in ("rps", "p99", "cpu"))
        log(f"  {g['shape']:<22}{marks}{'' if g['stated_in_issue'] else '   (reported, not a stated goal)'}")


# --- the phase -------------------------------------------------------------------------------


@dataclass
class Deployed:
    """`cutover serve` in a temp dir with demo-api deployed as its one component (release r0)."""
    procs: Procs
    daemon: CutoverDaemon
    tmp: Path
    backend_port: int
    backend_pid: int


@contextmanager
def deployed_cutover(bins: Bins, prefix: str) -> Iterator[Deployed]:
    """Starts the daemon, deploys r0 and waits for it; stops everything it started after."""
    procs = Procs()
    try:
        with tempfile.TemporaryDirectory(prefix=prefix) as t:
            tmp = Path(t)
            (tmp / "cutover").mkdir()
            daemon = CutoverDaemon(procs, bins, tmp / "cutover")
            try:
                first = daemon.deploy("r0")
                if not first.ok:
                    raise RuntimeError(f"cutover deploy failed: {first.note}")
                wait_healthy(daemon.port)
                serving = daemon.status()["components"][0]["serving"]
                yield Deployed(procs, daemon, tmp, serving["port"], serving["pid"])
            finally:
                Procs.stop(daemon.proc, timeout=30)
                Procs.kill_strays(tmp)
    finally:
        procs.stop_all()


def run(bins: Bins, rounds: int, seconds: int, warmup: int, shapes: list[Shape]) -> dict:
    """Runs the whole phase; returns meta, every run's raw figures and the summary."""
    require_tools()
    with deployed_cutover(bins, "bench-proxy-cost-") as deployed:
        return _measure(deployed, rounds, seconds, warmup, shapes)


def _measure(deployed: Deployed, rounds: int, seconds: int, warmup: int, shapes: list[Shape]) -> dict:
    procs, daemon, tmp = deployed.procs, deployed.daemon, deployed.tmp
    backend_port, backend_pid = deployed.backend_port, deployed.backend_pid
    (tmp / "nginx").mkdir()
    nginx = Nginx(procs, tmp / "nginx", free_port(), backend_port, workers=NGINX_WORKERS,
                  keepalive=NGINX_KEEPALIVE, http_extra=NGINX_HTTP_EXTRA, upstream_extra=NGINX_UPSTREAM_EXTRA,
                  listen_extra=NGINX_LISTEN_EXTRA, location_extra=harness.nginx_forwarding())
    try:
        nginx_pids = [nginx.proc.pid] + children(nginx.proc.pid)
        if len(nginx_pids) != 1 + int(NGINX_WORKERS):
            raise RuntimeError(f"nginx: expected a master and {NGINX_WORKERS} workers, found pids {nginx_pids}")
        targets = [Target("direct", backend_port, []), Target("nginx", nginx.port, nginx_pids),
                   Target("cutover", daemon.port, [daemon.proc.pid])]
        for target in targets:
            status, body = http_get(target.port, "/version", timeout=5)
            if (status, body) != (200, "r0"):
                raise RuntimeError(f"{target.name} on :{target.port} answered {status} {body[:80]!r}, not 200 r0")
        large = large_request(backend_port, tmp)
        log(f"  backend: demo-api pid {backend_pid} on :{backend_port}; nginx pids {nginx_pids}; "
            f"cutover pid {daemon.proc.pid}")
        log(f"  64k request: {large.note}")

        rss = {"before": rss_kib(daemon.proc.pid)}
        for target in targets:  # fills the proxies' upstream pools and warms caches; not measured
            subprocess.run(wrk_argv(target.port, Shape("keep-alive", "small", max(s.conns for s in shapes)),
                                    warmup, large), capture_output=True, timeout=warmup + WRK_SLACK)
        rss["after_warmup"] = rss_kib(daemon.proc.pid)

        runs = []
        total = rounds * len(shapes) * len(targets)
        for rnd in range(rounds):
            for i, shape in enumerate(shapes):
                # Rotating the order, so no target always runs first (or right after another).
                shift = (rnd + i) % len(targets)
                for target in targets[shift:] + targets[:shift]:
                    result = run_wrk(target, backend_pid, shape, seconds, large)
                    runs.append({"round": rnd, "shape": shape.key, "mode": shape.mode, "size": shape.size,
                                 "conns": shape.conns, "target": target.name, "result": result})
                    brief = result.get("error") or f"{result['rps']:.0f} req/s, p99 {result['p99_ms']:.3f} ms"
                    log(f"  [{len(runs)}/{total}] round {rnd + 1} {shape.key:<20} {target.name:<8} {brief}")
        during = [r["result"].get("daemon_rss_max_kib", 0) for r in runs if r["target"] == "cutover"]
        rss["during_max"] = max(during, default=0)
        time.sleep(2)
        rss["after"] = rss_kib(daemon.proc.pid)
        time.sleep(AFTER_IDLE_S - 2)  # past the upstream pools' idle timeout (4 s): idle connections are gone
        rss["after_idle"] = rss_kib(daemon.proc.pid)
        meta = {"rounds": rounds, "duration_s": seconds, "warmup_s": warmup, "large_request": large.note,
                "nginx": {"workers": int(NGINX_WORKERS), "upstream_keepalive": NGINX_KEEPALIVE,
                          "http_extra": NGINX_HTTP_EXTRA.split(), "upstream_extra": NGINX_UPSTREAM_EXTRA.strip(),
                          "listen_extra": NGINX_LISTEN_EXTRA.strip(),
                          "forwarding_headers": harness.NGINX_SETS_FORWARDING},
                "wrk_timeout": WRK_TIMEOUT, "cutover_rss_kib": rss, "backend_port": backend_port}
        return {"meta": meta, "runs": runs, "summary": summarize(runs)}
    finally:
        nginx.quit()


def parse_shapes(modes: str, sizes: str, conns: str) -> list[Shape]:
    def pick(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
        chosen = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in chosen if x not in allowed]
        if bad or not chosen:
            raise ValueError(f"{what}: {', '.join(bad) or 'none given'} (choose from {', '.join(allowed)})")
        return chosen

    counts = []
    for c in conns.split(","):
        if not c.strip().isdigit() or not 1 <= int(c) <= 4096:
            raise ValueError(f"connections: {c!r} is not a number from 1 to 4096")
        counts.append(int(c))
    return [Shape(m, s, c) for m in pick(modes, MODES, "modes") for s in pick(sizes, SIZES, "sizes") for c in counts]


# --- soak (issue 9, requirement 4) -----------------------------------------------------------

SOAK_CHUNK_S = 30  # one wrk run; RSS is read between runs
SOAK_SHAPES = (Shape("keep-alive", "64k", 256), Shape("keep-alive", "small", 256))


def soak(bins: Bins, seconds: int) -> dict:
    """Full load on cutover alone for `seconds` (wrk runs of SOAK_CHUNK_S, bounded), alternating
    64 KiB and small responses at 256 connections; the daemon's RSS before, the largest while
    each run lasted, after each run, and after the load (past the pools' idle timeout)."""
    require_tools()
    with deployed_cutover(bins, "bench-soak-") as deployed:
        large = large_request(deployed.backend_port, deployed.tmp)
        pid = deployed.daemon.proc.pid
        target = Target("cutover", deployed.daemon.port, [pid])
        rss = {"before": rss_kib(pid), "runs": []}
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline:
            chunk = max(1, min(SOAK_CHUNK_S, int(deadline - time.monotonic())))
            shape = SOAK_SHAPES[i % len(SOAK_SHAPES)]
            result = run_wrk(target, deployed.backend_pid, shape, chunk, large)
            after = rss_kib(pid)
            rss["runs"].append({"shape": shape.key, "seconds": chunk,
                                "requests": result.get("requests"), "errors": result.get("error"),
                                "non_2xx_3xx": result.get("non_2xx_3xx"),
                                "rss_max_kib": result.get("daemon_rss_max_kib"), "rss_after_kib": after})
            log(f"  soak run {i + 1} {shape.key:<22} {result.get('rps') or 0:8.0f} req/s  "
                f"RSS max {(result.get('daemon_rss_max_kib') or 0) / 1024:6.1f} MiB, "
                f"after {after / 1024:6.1f} MiB" + (f"  ERROR {result['error']}" if "error" in result else ""))
            i += 1
        time.sleep(AFTER_IDLE_S)
        rss["after_idle"] = rss_kib(pid)
        return {"meta": {"seconds": seconds, "chunk_s": SOAK_CHUNK_S, "large_request": large.note},
                "rss_kib": rss}


def print_soak(results: dict) -> None:
    rss = results["rss_kib"]
    runs = rss["runs"]
    mib = lambda kib: f"{(kib or 0) / 1024:.1f} MiB"  # noqa: E731
    log(f"\ncutover daemon RSS over a {results['meta']['seconds']} s soak ({len(runs)} wrk runs):")
    log(f"  before load {mib(rss['before'])}; largest during load {mib(max((r['rss_max_kib'] or 0) for r in runs))}")
    # Growth: the later half of the runs against the earlier half, each by its largest RSS after a run.
    half = len(runs) // 2
    if half:
        early = max(r["rss_after_kib"] for r in runs[:half])
        late = max(r["rss_after_kib"] for r in runs[half:])
        log(f"  after runs, first half at most {mib(early)}, second half at most {mib(late)} "
            f"({'no growth' if late <= early * 1.05 else 'GROWS'})")
    log(f"  {AFTER_IDLE_S} s after the load {mib(rss['after_idle'])}")
    failed = [r for r in runs if r["errors"]]
    log(f"  wrk runs with errors: {len(failed)}")

#!/usr/bin/env python3
"""Benchmark for cutover: availability during deploys, and proxy cost.

Part 1 (availability): the same closed-loop HTTP load (16 client threads) runs against the public
port while N deploys happen back to back, for three strategies:
  cutover       `cutover deploy` against a running daemon
  stop-start    SIGTERM the server, wait for it to exit, start the new one on the same port
                (what a `systemctl restart` deploy does)
  nginx-reload  blue-green behind nginx: start the new server on the other port, rewrite the
                upstream, `nginx -s reload`, then SIGTERM the old server
Part 2 (proxy cost): wrk against demo-api directly, through cutover and through nginx.

--proxy-only runs instead the full proxy-cost phase (proxy_cost.py): keep-alive and new
connections, small and 64 KiB responses, 1/32/256 connections, rounds alternating targets, CPU time
per request; --profile SECONDS perf-records the daemon under load (perf_profile.py).

--lifecycle runs instead the daemon-lifecycle phase (lifecycle.py): the part 1 load while the
front itself changes: `cutover upgrade`, `cutover reload` adding and removing a component, nginx's
binary upgrade and a plain daemon restart, --cycles times each.

--edge runs instead the edge phase (edge.py): HTTPS through cutover's [edge] listener and through
nginx with the same certificate and backend: keep-alive, new TLS connections, HTTP/2, and deploys
under HTTPS load.

--fleet runs instead the fleet phase (fleet.py): `cutover fleet deploy` to 3 real hosts (network
namespaces with their own sshd and daemon) under load: failed requests, the time against a
single-host deploy, the time from a failing host's verdict to every host on the old release, and
the ssh connections per run. Needs root, iproute2 and OpenSSH; its traffic stays on the veths of
the namespaces it makes.

Only loopback traffic otherwise; stdlib only. See bench/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import pickle
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import edge
import harness
import fleet
import lifecycle
import perf_profile
import proxy_cost
from harness import (
    BENCH_DIR,
    DEPLOY_DEADLINE,
    HOST,
    REPO,
    Bins,
    CutoverDaemon,
    Deploy,
    Nginx,
    Procs,
    free_port,
    git_info,
    http_get,
    log,
    parse_wrk,
    start_demo_api,
    wait_healthy,
    wait_until,
)

# Load shape, identical for every strategy.
KEEPALIVE_CLIENTS = 8
NEWCONN_CLIENTS = 8
REQUEST_TIMEOUT = 5.0  # a request slower than this counts as failed
FAILURE_BACKOFF = 0.01  # after a failure, so refused connects do not spin and starve the servers
WARMUP = 1.0  # load before the first deploy
COOLDOWN = 0.5  # load after the last deploy
BETWEEN_DEPLOYS = 0.5

# --- load generator --------------------------------------------------------------------------


@dataclass
class Req:
    client: int
    keepalive: bool
    start: float  # time.monotonic(): CLOCK_MONOTONIC, shared by all processes on Linux
    end: float
    ok: bool
    detail: str  # release served (body of /version) or the error


def _client_loop(idx, keepalive, port, stop, hard_deadline, out):
    conn = None
    while not stop.is_set() and time.monotonic() < hard_deadline:
        start = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT)
            conn.request("GET", "/version")
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
            ok = 200 <= resp.status < 300
            detail = body if ok else f"HTTP {resp.status}: {body[:80]}"
        except Exception as e:  # noqa: BLE001 - every failure mode is data here
            ok, detail = False, f"{type(e).__name__}: {e}"
            if conn is not None:
                conn.close()
                conn = None
        if not keepalive and conn is not None:
            conn.close()
            conn = None
        out.append((idx, keepalive, start, time.monotonic(), ok, detail))
        if not ok:
            time.sleep(FAILURE_BACKOFF)
    if conn is not None:
        conn.close()


def _load_process(port, stop_evt, ready_evt, result_path, max_seconds):
    """Runs in a child process so the client threads' GIL contention does not slow down the
    orchestrator (its health polls and timing marks)."""
    stop = threading.Event()
    hard_deadline = time.monotonic() + max_seconds
    outs = [[] for _ in range(KEEPALIVE_CLIENTS + NEWCONN_CLIENTS)]
    threads = [
        threading.Thread(
            target=_client_loop,
            args=(i, i < KEEPALIVE_CLIENTS, port, stop, hard_deadline, outs[i]),
            daemon=True,
        )
        for i in range(len(outs))
    ]
    for t in threads:
        t.start()
    ready_evt.set()
    stop_evt.wait(max_seconds)
    stop.set()
    for t in threads:
        t.join(REQUEST_TIMEOUT + 2)
    records = [r for out in outs for r in out]
    with open(result_path, "wb") as f:
        pickle.dump(records, f)


class Load:
    def __init__(self, port: int, tmp: Path, max_seconds: float):
        ctx = multiprocessing.get_context("fork")
        self.stop_evt = ctx.Event()
        ready = ctx.Event()
        self.result_path = tmp / f"load-{port}.pickle"
        self.proc = ctx.Process(
            target=_load_process, args=(port, self.stop_evt, ready, self.result_path, max_seconds), daemon=True
        )
        self.proc.start()
        if not ready.wait(10):
            self.kill()
            raise RuntimeError("load generator did not start")

    def finish(self) -> list[Req]:
        self.stop_evt.set()
        self.proc.join(REQUEST_TIMEOUT + 10)
        if self.proc.is_alive():
            self.kill()
            raise RuntimeError("load generator did not stop")
        with open(self.result_path, "rb") as f:
            return [Req(*r) for r in pickle.load(f)]

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


# --- part 1: deploy strategies ---------------------------------------------------------------


def run_strategy(name: str, port: int, deploy_fn, n: int, tmp: Path) -> tuple[list[Req], list[Deploy]]:
    """Runs the load on `port` while `deploy_fn(k)` is called for k = 1..n."""
    # The load stops itself after this even if the orchestrator hangs.
    max_seconds = WARMUP + COOLDOWN + n * (DEPLOY_DEADLINE + BETWEEN_DEPLOYS) + 30
    load = Load(port, tmp, max_seconds)
    deploys: list[Deploy] = []
    try:
        time.sleep(WARMUP)
        for k in range(1, n + 1):
            d = deploy_fn(k)
            deploys.append(d)
            log(f"  [{name}] deploy {d.release}: {'ok' if d.ok else 'FAILED'} in {d.end - d.start:.3f}s"
                + (f"  {d.note}" if d.note else ""))
            time.sleep(BETWEEN_DEPLOYS)
        time.sleep(COOLDOWN)
        return load.finish(), deploys
    finally:
        load.kill()


def bench_cutover(procs: Procs, bins: Bins, n: int, results_dir: Path, out_stem: str):
    with tempfile.TemporaryDirectory(prefix="bench-cutover-") as t:
        tmp = Path(t)
        daemon = CutoverDaemon(procs, bins, tmp)
        try:
            first = daemon.deploy("r0")  # something must be serving before the load starts
            if not first.ok:
                raise RuntimeError(f"initial cutover deploy failed: {first.note}")
            wait_healthy(daemon.port)
            reqs, deploys = run_strategy("cutover", daemon.port, lambda k: daemon.deploy(f"r{k}"), n, tmp)
        finally:
            Procs.stop(daemon.proc, timeout=30)
            strays = Procs.kill_strays(tmp)
            if strays:
                log(f"  [cutover] WARNING: instances still running after the daemon stopped: {strays}")
            # Kept for diagnosis: the daemon's view of every deploy.
            shutil.copyfile(daemon.log_path, results_dir / f"{out_stem}.cutover-daemon.log")
        return reqs, deploys


def bench_stop_start(procs: Procs, bins: Bins, n: int):
    with tempfile.TemporaryDirectory(prefix="bench-stopstart-") as t:
        tmp = Path(t)
        port = free_port()
        current = [start_demo_api(procs, bins, tmp, port, "r0")]

        def deploy(k):
            release = f"r{k}"
            start = time.monotonic()
            try:
                rc = Procs.stop(current[0])  # graceful: SIGTERM, drains in-flight requests
                current[0] = start_demo_api(procs, bins, tmp, port, release)
                return Deploy(release, start, time.monotonic(), True, "" if rc == 0 else f"old exited {rc}")
            except Exception as e:  # noqa: BLE001
                return Deploy(release, start, time.monotonic(), False, str(e))

        try:
            return run_strategy("stop-start", port, deploy, n, tmp)
        finally:
            Procs.stop(current[0])


def bench_nginx(procs: Procs, bins: Bins, n: int):
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as t:
        tmp = Path(t)
        public, ports = free_port(), [free_port(), free_port()]
        live = {"proc": start_demo_api(procs, bins, tmp, ports[0], "r0"), "slot": 0}
        nginx = Nginx(procs, tmp, public, ports[0])

        def deploy(k):
            release = f"r{k}"
            start = time.monotonic()
            try:
                slot = 1 - live["slot"]
                new = start_demo_api(procs, bins, tmp, ports[slot], release)
                nginx.set_upstream(ports[slot])
                nginx.reload()
                # `-s reload` only signals the master; wait until new workers answer with the new
                # release (fresh connection each probe), then the usual grace period.
                wait_until("nginx reload", lambda: http_get(public, "/version") == (200, release), 5)
                time.sleep(0.3)
                Procs.stop(live["proc"])
                live.update(proc=new, slot=slot)
                return Deploy(release, start, time.monotonic(), True)
            except Exception as e:  # noqa: BLE001
                return Deploy(release, start, time.monotonic(), False, str(e))

        try:
            return run_strategy("nginx-reload", public, deploy, n, tmp)
        finally:
            nginx.quit()
            Procs.stop(live["proc"])


def summarize(reqs: list[Req], deploys: list[Deploy]) -> dict:
    """Counts, plus the unavailability window.

    Each failing request belongs to the last deploy that started before the request *ended*
    (failures before the first deploy are reported separately as `failed_before_first_deploy`).
    The end, not the start: a client thread can record its start, then wait a few ms for the GIL
    before it actually connects, so a request "started" just before a deploy can fail because of
    it. A deploy's window runs from its first failing request's start to its last failing
    request's end; windows are merged (they could overlap) and summed.
    """
    failures = sorted((r for r in reqs if not r.ok), key=lambda r: r.start)
    starts = [d.start for d in deploys]

    def deploy_of(r: Req) -> int | None:
        return max((i for i, s in enumerate(starts) if s <= r.end), default=None)

    per_deploy: list[list[Req]] = [[] for _ in deploys]
    before = []
    for r in failures:
        idx = deploy_of(r)
        (before if idx is None else per_deploy[idx]).append(r)
    windows = [(min(r.start for r in fs), max(r.end for r in fs)) if fs else None for fs in per_deploy]
    merged: list[list[float]] = []
    for w in sorted(w for w in windows if w):
        if merged and w[0] <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], w[1])
        else:
            merged.append(list(w))

    def kinds(rs):
        out: dict[str, int] = {}
        for r in rs:
            # Group by error type and the start of its message (drops ports and counters).
            key = ("keep-alive " if r.keepalive else "new-conn ") + r.detail.split(":")[0]
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    by_release: dict[str, int] = {}
    for r in reqs:
        if r.ok:
            by_release[r.detail] = by_release.get(r.detail, 0) + 1
    last_ok = max((r for r in reqs if r.ok), key=lambda r: r.end, default=None)
    span = (max(r.end for r in reqs) - min(r.start for r in reqs)) if reqs else 0.0
    lat = sorted((r.end - r.start) * 1000 for r in reqs if r.ok)
    return {
        "requests": len(reqs),
        "failed": len(failures),
        "failed_pct": round(100 * len(failures) / len(reqs), 4) if reqs else None,
        "rps": round(len(reqs) / span, 1) if span else None,
        "ok_latency_ms": {
            "p50": round(lat[len(lat) // 2], 2) if lat else None,
            "p99": round(lat[int(len(lat) * 0.99)], 2) if lat else None,
            "max": round(lat[-1], 2) if lat else None,
        },
        "unavailable_ms": round(sum((b - a for a, b in merged), 0.0) * 1000, 1),
        "max_window_ms": round(max(((w[1] - w[0]) for w in windows if w), default=0.0) * 1000, 1),
        "deploys": len(deploys),
        "deploys_ok": sum(d.ok for d in deploys),
        "deploy_seconds_median": round(statistics.median(d.end - d.start for d in deploys), 3) if deploys else None,
        "deploy_seconds_max": round(max(d.end - d.start for d in deploys), 3) if deploys else None,
        "failed_before_first_deploy": len(before),
        "per_deploy": [
            {
                "release": d.release,
                "ok": d.ok,
                "seconds": round(d.end - d.start, 3),
                "failed_requests": len(fs),
                "window_ms": round((w[1] - w[0]) * 1000, 1) if w else 0.0,
                **({"note": d.note} if d.note else {}),
            }
            for d, fs, w in zip(deploys, per_deploy, windows)
        ],
        "failure_kinds": kinds(failures),
        # The first failures verbatim, with time relative to the start of their deploy.
        "failure_samples": [
            {
                "deploy": deploys[i].release if i is not None else None,
                "t_ms": round((r.start - (starts[i] if i is not None else r.start)) * 1000, 1),
                "duration_ms": round((r.end - r.start) * 1000, 1),
                "client": "keep-alive" if r.keepalive else "new-conn",
                "error": r.detail,
            }
            for r in failures[:40]
            for i in [deploy_of(r)]
        ],
        "served_by_release": dict(sorted(by_release.items(), key=lambda kv: int(kv[0][1:]) if kv[0][1:].isdigit() else -1)),
        "last_served_release": last_ok.detail if last_ok else None,
    }


# --- part 2: proxy cost ----------------------------------------------------------------------


def wrk(port: int, seconds: int, warmup: bool = True) -> dict:
    url = f"http://{HOST}:{port}/version"
    if warmup:  # fills connection pools and caches; not measured
        subprocess.run(["wrk", "-t2", "-c32", "-d1s", url], capture_output=True, timeout=30)
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", url],
        capture_output=True, text=True, timeout=seconds + 30,
    )
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip()}")
    result = parse_wrk(out.stdout)
    if result["rps"] is None or result["p99_ms"] is None:
        raise RuntimeError(f"cannot parse wrk output:\n{out.stdout}")
    return result


def bench_proxy_cost(procs: Procs, bins: Bins, seconds: int, have_nginx: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as t:
        tmp = Path(t)
        direct_port = free_port()
        direct = start_demo_api(procs, bins, tmp, direct_port, "direct")
        (tmp / "cutover").mkdir()
        daemon = CutoverDaemon(procs, bins, tmp / "cutover")
        nginx = None
        try:
            first = daemon.deploy("r0")
            if not first.ok:
                raise RuntimeError(f"cutover deploy failed: {first.note}")
            wait_healthy(daemon.port)
            results = {}
            log("  wrk: direct")
            results["direct"] = wrk(direct_port, seconds)
            log("  wrk: cutover")
            results["cutover"] = wrk(daemon.port, seconds)
            if have_nginx:
                # Its own backend, like cutover's, so neither proxy shares a server with another.
                nginx_backend_port = free_port()
                start_demo_api(procs, bins, tmp, nginx_backend_port, "nginx")
                (tmp / "nginx").mkdir()
                nginx = Nginx(procs, tmp / "nginx", free_port(), nginx_backend_port,
                              location_extra=harness.nginx_forwarding())
                log("  wrk: nginx")
                results["nginx"] = wrk(nginx.port, seconds)
                c, n = results["cutover"], results["nginx"]
                results["ratios"] = {
                    "cutover_rps_over_nginx_rps": round(c["rps"] / n["rps"], 3),
                    "cutover_p99_over_nginx_p99": round(c["p99_ms"] / n["p99_ms"], 3),
                }
            return results
        finally:
            if nginx:
                nginx.quit()
            Procs.stop(daemon.proc, timeout=30)
            Procs.kill_strays(tmp)
            Procs.stop(direct)


# --- output ----------------------------------------------------------------------------------


def print_part1(avail: dict) -> None:
    log("\nPart 1: availability during deploys (same 16-client load on each; deploys one after another)")
    head = f"{'strategy':<14}{'requests':>10}{'req/s':>7}{'failed':>8}{'fail %':>8}{'unavail ms':>12}" \
           f"{'max win ms':>12}{'deploys ok':>12}{'deploy s p50':>14}{'req p99 ms':>12}"
    log(head)
    log("-" * len(head))
    for name, s in avail.items():
        if "skipped" in s or "error" in s:
            log(f"{name:<14}  {s.get('skipped') or 'ERROR: ' + s['error']}")
            continue
        log(f"{name:<14}{s['requests']:>10}{s['rps']:>7.0f}{s['failed']:>8}{s['failed_pct']:>8.3f}{s['unavailable_ms']:>12.1f}"
            f"{s['max_window_ms']:>12.1f}{str(s['deploys_ok']) + '/' + str(s['deploys']):>12}"
            f"{s['deploy_seconds_median']:>14.2f}{s['ok_latency_ms']['p99']:>12.1f}")
    for name, s in avail.items():
        if s.get("failed"):
            kinds = ", ".join(f"{k} x{v}" for k, v in s["failure_kinds"].items())
            log(f"  {name} failures: {kinds}")


def print_part2(cost: dict) -> None:
    log("\nPart 2: proxy cost (wrk -t2 -c32 GET /version)")
    if "skipped" in cost or "error" in cost:
        log(f"  {cost.get('skipped') or 'ERROR: ' + cost['error']}")
        return
    head = f"{'target':<10}{'req/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}"
    log(head)
    log("-" * len(head))
    for name in ("direct", "cutover", "nginx"):
        if name in cost:
            r = cost[name]
            log(f"{name:<10}{r['rps']:>12.0f}{r['p50_ms']:>10.3f}{r['p99_ms']:>10.3f}"
                f"{r['socket_errors'] + r['non_2xx_3xx']:>8}")
    if "ratios" in cost:
        r = cost["ratios"]
        log(f"cutover / nginx: req/s x{r['cutover_rps_over_nginx_rps']:.2f}, p99 x{r['cutover_p99_over_nginx_p99']:.2f}")
    elif "nginx" not in cost:
        log("  (nginx not installed: no peer to compare with)")



def run_proxy_only(bins: Bins, args, shapes) -> int:
    out_path = args.out.resolve()
    _prepare_results_dir(out_path)
    results = proxy_cost.run(bins, args.rounds, args.duration, args.warmup, shapes)
    results["meta"].update(time=time.strftime("%Y-%m-%dT%H:%M:%S%z"), host=platform.node(), cpus=os.cpu_count(),
                           git=git_info(), binaries_mtime=_binaries_mtime(bins), proxy_threads=harness.PROXY_THREADS)
    proxy_cost.print_tables(results["summary"], results["meta"])
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    log(f"\nwrote {out_path}")
    failed = sum(1 for r in results["runs"] if "error" in r["result"])
    if failed:
        log(f"FAIL: {failed} wrk runs failed (see \"error\" in the JSON)")
        return 1
    return 0


def run_soak(bins: Bins, seconds: int) -> int:
    out_path = BENCH_DIR / "results" / "soak.json"
    _prepare_results_dir(out_path)
    results = proxy_cost.soak(bins, seconds)
    results["meta"].update(time=time.strftime("%Y-%m-%dT%H:%M:%S%z"), git=git_info())
    proxy_cost.print_soak(results)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    log(f"\nwrote {out_path}")
    return 1 if any(r["errors"] for r in results["rss_kib"]["runs"]) else 0


def run_lifecycle(bins: Bins, cycles: int, only: tuple = lifecycle.STRATEGIES) -> int:
    out_path = BENCH_DIR / "results" / "lifecycle.json"
    _prepare_results_dir(out_path)
    meta = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(), "cpus": os.cpu_count(),
            "cycles": cycles, "git": git_info(), "binaries_mtime": _binaries_mtime(bins),
            "load": {"keepalive_clients": KEEPALIVE_CLIENTS, "new_connection_clients": NEWCONN_CLIENTS,
                     "request_timeout_s": REQUEST_TIMEOUT, "websockets": 1}}
    strategies = lifecycle.run(bins, cycles, Load, only)
    lifecycle.print_table(strategies)
    out_path.write_text(json.dumps({"meta": meta, "strategies": strategies}, indent=2) + "\n")
    log(f"\nwrote {out_path}")
    missed = lifecycle.failed_goal(strategies)
    for m in missed:
        log(f"FAIL: {m}")
    return 1 if missed else 0


def run_edge(bins: Bins, rounds: int, duration: int, warmup: int, deploys: int) -> int:
    out_path = BENCH_DIR / "results" / "edge.json"
    _prepare_results_dir(out_path)
    results = edge.run(bins, rounds, duration, warmup, deploys)
    results["meta"].update(time=time.strftime("%Y-%m-%dT%H:%M:%S%z"), host=platform.node(), cpus=os.cpu_count(),
                           deploys=deploys, git=git_info(), binaries_mtime=_binaries_mtime(bins),
                           proxy_threads=harness.PROXY_THREADS)
    edge.print_tables(results)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    log(f"\nwrote {out_path}")
    problems = edge.failed(results)
    for p in problems:
        log(f"FAIL: {p}")
    return 1 if problems else 0


def _prepare_results_dir(out_path: Path) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    gitignore = out_path.parent / ".gitignore"
    if out_path.parent == BENCH_DIR / "results" and not gitignore.exists():
        gitignore.write_text("*.json\n*.log\n")


def _binaries_mtime(bins: Bins) -> dict:
    return {p.name: time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(p.stat().st_mtime))
            for p in (bins.cutover, bins.demo_api)}


def _interrupt(*_):
    # SIGTERM (e.g. a CI timeout) should clean up like Ctrl-C does.
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deploys", type=int, default=10, help="deploys per strategy in part 1 (default 10)")
    ap.add_argument("--seconds", type=int, default=10, help="wrk duration per target in part 2 (default 10)")
    ap.add_argument("--out", type=Path, help="JSON results path (default bench/results/latest.json, "
                    "with --proxy-only bench/results/proxy-cost.json)")
    ap.add_argument("--build", action="store_true", help="run `cargo build --release` first")
    ap.add_argument("--proxy-threads", type=int, metavar="N",
                    help="`[daemon] proxy_threads` of every cutover daemon started (default: its own, half the CPUs)")
    ap.add_argument("--nginx-plain", action="store_true",
                    help="nginx in the proxy-cost, profile and edge phases sends no forwarding headers "
                         "(by default it writes the ones cutover writes: X-Forwarded-*, Forwarded, Via)")
    proxy = ap.add_argument_group("proxy cost (issue 9): direct vs nginx vs cutover, see bench/README.md")
    proxy.add_argument("--proxy-only", action="store_true", help="run only the proxy-cost phase")
    proxy.add_argument("--rounds", type=int, default=5, help="rounds, each running every target once (default 5)")
    proxy.add_argument("--duration", type=int, default=5, help="seconds of wrk per target and round (default 5)")
    proxy.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured wrk per target first (default 1)")
    proxy.add_argument("--connections", default="1,32,256", help="wrk connection counts (default 1,32,256)")
    proxy.add_argument("--modes", default="keep-alive,new", help="keep-alive and/or new (default both)")
    proxy.add_argument("--sizes", default="small,64k", help="small and/or 64k (default both)")
    proxy.add_argument("--profile", type=int, metavar="SECONDS", default=0,
                       help="instead: perf-record the cutover daemon for SECONDS under keep-alive load "
                            "(writes bench/results/profile/)")
    proxy.add_argument("--soak", type=int, metavar="SECONDS", default=0,
                       help="instead: full load on cutover alone for SECONDS (e.g. 600), reporting the "
                            "daemon's RSS before, during and after (bench/results/soak.json)")
    proxy.add_argument("--profile-mode", choices=proxy_cost.MODES, default="keep-alive",
                       help="the load --profile runs: keep-alive (default) or new connections")
    life = ap.add_argument_group("daemon lifecycle (issue 13): upgrade, reload, nginx's binary upgrade, restart")
    life.add_argument("--lifecycle", action="store_true",
                      help="instead: the part 1 load while the front changes (bench/results/lifecycle.json)")
    life.add_argument("--cycles", type=int, default=20, help="operations per strategy with --lifecycle (default 20)")
    life.add_argument("--strategies", default=",".join(lifecycle.STRATEGIES),
                      help="which lifecycle strategies to run, comma-separated (default: all four)")
    tls = ap.add_argument_group("edge (issue 15): HTTPS through cutover's [edge] listener vs nginx; "
                                "uses --rounds, --duration, --warmup and --deploys")
    tls.add_argument("--edge", action="store_true",
                     help="instead: the edge phase (bench/results/edge.json); needs wrk, nginx, h2load, openssl")
    fl = ap.add_argument_group("fleet (issue 10): `cutover fleet deploy` to real hosts (network namespaces, sshd); "
                               "uses --deploys")
    fl.add_argument("--fleet", action="store_true",
                    help="instead: the fleet phase (bench/results/fleet.json); needs root, iproute2, OpenSSH")
    fl.add_argument("--fleet-hosts", type=int, default=3, help="hosts in the fleet (default 3)")
    fl.add_argument("--failing-runs", type=int, default=3,
                    help="fleet deploys per failure scenario (default 3)")
    fl.add_argument("--fleet-clients", type=int, default=KEEPALIVE_CLIENTS + NEWCONN_CLIENTS,
                    help="load clients per host, half keep-alive (default: part 1's 16; results in "
                         "fleet-cN.json when not the default)")
    args = ap.parse_args()
    if not 2 <= args.fleet_clients <= 64:
        ap.error("--fleet-clients must be 2..64")
    if not 3 <= args.fleet_hosts <= 50 or not 1 <= args.failing_runs <= 20:
        ap.error("--fleet-hosts must be 3..50 and --failing-runs 1..20")
    if not 1 <= args.cycles <= 100:
        ap.error("--cycles must be 1..100")
    if not 1 <= args.deploys <= 100 or not 1 <= args.seconds <= 600:
        ap.error("--deploys must be 1..100 and --seconds 1..600")
    if not 1 <= args.rounds <= 100 or not 1 <= args.duration <= 600 or not 1 <= args.warmup <= 60:
        ap.error("--rounds must be 1..100, --duration 1..600 and --warmup 1..60")
    if not 0 <= args.profile <= 600:
        ap.error("--profile must be 1..600 seconds")
    if not 0 <= args.soak <= 3600:
        ap.error("--soak must be 1..3600 seconds")
    try:
        shapes = proxy_cost.parse_shapes(args.modes, args.sizes, args.connections)
    except ValueError as e:
        ap.error(str(e))
    harness.NGINX_SETS_FORWARDING = not args.nginx_plain
    if args.proxy_threads is not None:
        if not 1 <= args.proxy_threads <= 256:
            ap.error("--proxy-threads must be 1..256")
        harness.PROXY_THREADS = args.proxy_threads
    if args.out is None:
        args.out = BENCH_DIR / "results" / ("proxy-cost.json" if args.proxy_only else "latest.json")

    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release"
    if args.build:
        subprocess.run(["cargo", "build", "--release"], cwd=REPO, check=True, timeout=1800)
    bins = Bins(target / "cutover", target / "demo-api")
    missing = [str(p) for p in (bins.cutover, bins.demo_api) if not os.access(p, os.X_OK)]
    if missing:
        log(f"missing {', '.join(missing)}: run `cargo build --release` in {REPO} (or pass --build)")
        return 2

    if args.fleet:
        signal.signal(signal.SIGTERM, _interrupt)
        return fleet.main(bins, args.fleet_hosts, args.deploys, args.failing_runs, args.fleet_clients, Load, summarize,
                          _prepare_results_dir, _binaries_mtime(bins))
    if args.edge:
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            return run_edge(bins, args.rounds, args.duration, args.warmup, args.deploys)
        except proxy_cost.MissingTool as e:
            log(f"error: {e}")
            return 2
    if args.lifecycle:
        signal.signal(signal.SIGTERM, _interrupt)
        only = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
        unknown = [s for s in only if s not in lifecycle.STRATEGIES]
        if unknown:
            ap.error(f"--strategies: unknown {', '.join(unknown)} (known: {', '.join(lifecycle.STRATEGIES)})")
        return run_lifecycle(bins, args.cycles, only)
    if args.profile or args.proxy_only or args.soak:
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            if args.soak:
                return run_soak(bins, args.soak)
            if args.profile:
                return perf_profile.run(bins, args.profile, BENCH_DIR / "results" / "profile", args.profile_mode)
            return run_proxy_only(bins, args, shapes)
        except proxy_cost.MissingTool as e:
            log(f"error: {e}")
            return 2

    notes = []
    have_nginx = shutil.which("nginx") is not None or os.access("/usr/sbin/nginx", os.X_OK)
    if have_nginx and shutil.which("nginx") is None:
        os.environ["PATH"] += os.pathsep + "/usr/sbin"
    have_wrk = shutil.which("wrk") is not None
    if not have_nginx:
        notes.append("nginx not found (apt-get install nginx): skipped nginx-reload and the nginx peer")
    if not have_wrk:
        notes.append("wrk not found (apt-get install wrk): skipped part 2 (proxy cost)")
    for n in notes:
        log(f"NOTE: {n}")

    out_path = args.out.resolve()
    _prepare_results_dir(out_path)

    results = {
        "meta": {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "deploys_per_strategy": args.deploys,
            "wrk_seconds": args.seconds,
            "load": {"keepalive_clients": KEEPALIVE_CLIENTS, "new_connection_clients": NEWCONN_CLIENTS,
                     "request_timeout_s": REQUEST_TIMEOUT, "between_deploys_s": BETWEEN_DEPLOYS},
            "git": git_info(),
            "binaries_mtime": _binaries_mtime(bins),
        },
        "availability": {},
        "proxy_cost": {},
        "notes": notes,
    }

    procs = Procs()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        log(f"Part 1: {args.deploys} deploys per strategy under load")
        strategies = [
            ("cutover", lambda: bench_cutover(procs, bins, args.deploys, out_path.parent, out_path.stem)),
            ("stop-start", lambda: bench_stop_start(procs, bins, args.deploys)),
            ("nginx-reload", (lambda: bench_nginx(procs, bins, args.deploys)) if have_nginx else None),
        ]
        for name, fn in strategies:
            if fn is None:
                results["availability"][name] = {"skipped": "nginx not installed (apt-get install nginx)"}
                continue
            try:
                results["availability"][name] = summarize(*fn())
            except Exception as e:  # noqa: BLE001 - one broken strategy should not hide the others
                log(f"  [{name}] ERROR: {e}")
                results["availability"][name] = {"error": str(e)}

        log("\nPart 2: proxy cost")
        if have_wrk:
            try:
                results["proxy_cost"] = bench_proxy_cost(procs, bins, args.seconds, have_nginx)
            except Exception as e:  # noqa: BLE001
                log(f"  ERROR: {e}")
                results["proxy_cost"] = {"error": str(e)}
        else:
            results["proxy_cost"] = {"skipped": "wrk not installed (apt-get install wrk)"}
    finally:
        procs.stop_all()

    print_part1(results["availability"])
    print_part2(results["proxy_cost"])
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    log(f"\nwrote {out_path}")

    c = results["availability"].get("cutover", {})
    if "error" in c or c.get("failed") or c.get("deploys_ok") != c.get("deploys"):
        log("FAIL: cutover did not deploy cleanly under load (see the failures above and in the JSON)")
        for s in c.get("failure_samples", []):
            log(f"  {s}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

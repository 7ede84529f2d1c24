"""`run.py --profile SECONDS`: where the cutover daemon's CPU time goes under keep-alive load.

`cutover serve` with demo-api deployed; wrk (keep-alive, 32 connections, GET /version) runs for
SECONDS plus a second on each side, and perf records the daemon's threads for SECONDS in the
middle, then counts its context switches and syscalls for as long again. Written to the output
directory:
  perf.data                 the samples (DWARF call graphs: a release build has no frame pointers)
  report-self.txt           perf report --no-children: the functions that burn the time
  report-children.txt       the same with callees included: which layers cost what
  report-callers.txt        call graphs of the top self-time entries
  stacks.folded             one line per stack (flame graph input)
  flame.svg                 if inferno-flamegraph is on PATH (cargo install inferno)
  summary.json              wrk's figures, CPU, context switches and syscalls per request
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from harness import Bins, CutoverDaemon, Procs, log, parse_wrk, wait_healthy
from proxy_cost import Large, MissingTool, Shape, cpu_seconds, wrk_argv

PERF_FREQ = 499  # Hz; with DWARF stacks, higher rates make perf.data huge
DWARF_STACK = 8192  # bytes of stack copied per sample
CONNECTIONS = 32


def run(bins: Bins, seconds: int, out_dir: Path) -> int:
    if shutil.which("perf") is None:
        raise MissingTool("--profile needs perf (apt-get install linux-perf)")
    if shutil.which("wrk") is None:
        raise MissingTool("--profile needs wrk (apt-get install wrk)")
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = Procs()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-profile-") as t:
            tmp = Path(t)
            daemon = CutoverDaemon(procs, bins, tmp)
            try:
                summary = _record(daemon, seconds, out_dir)
            finally:
                Procs.stop(daemon.proc, timeout=30)
                Procs.kill_strays(tmp)
    finally:
        procs.stop_all()
    _reports(out_dir)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"\n{json.dumps(summary, indent=2)}\nwrote {out_dir}")
    head = (out_dir / "report-self.txt").read_text().splitlines()
    log("\nTop of perf report --no-children:\n" + "\n".join(l for l in head if l and not l.startswith("#"))[:3000])
    return 0


def _record(daemon: CutoverDaemon, seconds: int, out_dir: Path) -> dict:
    first = daemon.deploy("r0")
    if not first.ok:
        raise RuntimeError(f"cutover deploy failed: {first.note}")
    wait_healthy(daemon.port)
    pid = daemon.proc.pid
    shape = Shape("keep-alive", "small", CONNECTIONS)
    no_large = Large("/", None, "")
    subprocess.run(wrk_argv(daemon.port, shape, 1, no_large), capture_output=True, timeout=30)  # warm-up

    # Two back-to-back windows under one wrk run: perf record, then perf stat (counting is cheap,
    # but sampling with DWARF stacks slows the daemon, so its counts would be skewed).
    load_s = 2 * seconds + 2
    wrk_out: dict = {}
    wrk_thread = threading.Thread(target=lambda: wrk_out.update(
        proc=subprocess.run(wrk_argv(daemon.port, shape, load_s, no_large), capture_output=True, text=True,
                            timeout=load_s + 30)), daemon=True)
    cpu0 = cpu_seconds([pid])
    wrk_thread.start()
    time.sleep(1)
    record = subprocess.run(
        ["perf", "record", "-F", str(PERF_FREQ), "--call-graph", f"dwarf,{DWARF_STACK}", "-p", str(pid),
         "-o", str(out_dir / "perf.data"), "--", "sleep", str(seconds)],
        capture_output=True, text=True, timeout=seconds + 60)
    if record.returncode != 0:
        raise RuntimeError(f"perf record failed: {record.stderr.strip()[-500:]}")
    stat = _perf_stat(pid, seconds)
    wrk_thread.join(load_s + 35)
    cpu = cpu_seconds([pid]) - cpu0
    proc = wrk_out.get("proc")
    if proc is None or proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {proc.stderr if proc else 'did not finish'}")
    result = parse_wrk(proc.stdout)
    rps = result["rps"]
    per_req = {k: round(v / (rps * seconds), 3) for k, v in stat.items() if v is not None}
    return {"wrk": result, "load_seconds": load_s, "perf_record_seconds": seconds,
            "daemon_cpu_us_per_req_whole_run": round(cpu / result["requests"] * 1e6, 2),
            "perf_stat_window_seconds": seconds, "perf_stat": stat,
            "perf_stat_per_request_at_wrk_rate": per_req,
            "note": "perf_stat counts over its own window, divided by wrk's mean rate x window; the whole wrk "
                    "run includes the perf record window, where sampling slows the daemon"}


def _perf_stat(pid: int, seconds: int) -> dict:
    events = ["task-clock", "context-switches", "cpu-migrations", "page-faults", "raw_syscalls:sys_enter"]
    out = subprocess.run(["perf", "stat", "-x", ",", "-e", ",".join(events), "-p", str(pid), "--", "sleep",
                          str(seconds)], capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0 and "raw_syscalls" in out.stderr:
        # No tracefs here: count what we can without the syscall tracepoint.
        events.pop()
        out = subprocess.run(["perf", "stat", "-x", ",", "-e", ",".join(events), "-p", str(pid), "--", "sleep",
                              str(seconds)], capture_output=True, text=True, timeout=seconds + 60)
    counts: dict = {e: None for e in events}
    for line in out.stderr.splitlines():
        parts = line.split(",")
        if len(parts) >= 3 and parts[2] in counts:
            try:
                counts[parts[2]] = float(parts[0])
            except ValueError:
                pass  # "<not supported>"
    return counts


def _reports(out_dir: Path) -> None:
    data = str(out_dir / "perf.data")

    def report(name: str, *args: str) -> None:
        out = subprocess.run(["perf", "report", "-i", data, "--stdio", *args], capture_output=True, text=True,
                             timeout=1200)
        (out_dir / name).write_text(out.stdout)

    report("report-self.txt", "--no-children", "-g", "none", "--percent-limit", "0.3")
    report("report-children.txt", "--children", "-g", "none", "--percent-limit", "1")
    report("report-callers.txt", "--no-children", "-g", "caller,0.5,callee,function,percent",
           "--percent-limit", "1.5")
    script = subprocess.run(["perf", "script", "-i", data], capture_output=True, text=True, timeout=1200)
    folded = collapse(script.stdout)
    (out_dir / "stacks.folded").write_text("".join(f"{stack} {n}\n" for stack, n in sorted(folded.items())))
    if shutil.which("inferno-flamegraph"):
        with open(out_dir / "stacks.folded", "rb") as src, open(out_dir / "flame.svg", "wb") as svg:
            subprocess.run(["inferno-flamegraph", "--title", "cutover serve, wrk keep-alive c32 GET /version"],
                           stdin=src, stdout=svg, timeout=300)
    else:
        log("inferno-flamegraph not found (cargo install inferno): no flame.svg, stacks.folded is there")


_FRAME = re.compile(r"^\s+[0-9a-f]+\s+(.+?)\s+\((.*)\)$")


def collapse(perf_script: str) -> dict[str, int]:
    """perf script output -> {"thread;outer;...;inner": samples}, like stackcollapse-perf."""
    stacks: dict[str, int] = {}
    comm, frames = None, []

    def flush():
        if comm is not None:
            key = ";".join([comm] + list(reversed(frames)))
            stacks[key] = stacks.get(key, 0) + 1

    for line in perf_script.splitlines():
        if not line.strip():
            flush()
            comm, frames = None, []
        elif not line[0].isspace():
            comm = line.split()[0]
        else:
            m = _FRAME.match(line)
            if m:
                sym = m.group(1)
                if sym == "[unknown]":
                    sym = f"[{Path(m.group(2)).name}]"
                sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
                frames.append(sym.replace(";", ":"))
    flush()
    return stacks

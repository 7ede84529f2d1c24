"""`run.py --profile SECONDS`: where the cutover daemon's CPU time goes under keep-alive load,
and what cutover and nginx each spend per request.

`cutover serve` with demo-api deployed, and nginx (the proxy-cost phase's config) in front of the
same instance. wrk (keep-alive, or with --profile-mode new a new connection per request; 32
connections; GET /version) loads cutover while perf records
the daemon's threads for SECONDS; then wrk loads each proxy in turn for SECONDS under `perf stat`
(CPU, context switches, syscalls by name), divided by the requests wrk completed. Written to the
output directory:
  perf.data                 the samples (DWARF call graphs: a release build has no frame pointers)
  report-self.txt           perf report --no-children: the functions that burn the time
  report-children.txt       the same with callees included: which layers cost what
  report-callers.txt        call graphs of the top self-time entries
  stacks.folded             one line per stack (flame graph input)
  breakdown.txt             the samples by task (downstream / upstream connection, scheduler) and
                            by kind of work (syscalls, allocator, header maps, ...)
  flame.svg                 if inferno-flamegraph is on PATH (cargo install inferno)
  summary.json              wrk's figures and the per-request counts of both proxies
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import harness
from harness import Bins, Nginx, free_port, log, parse_wrk
from proxy_cost import (NGINX_HTTP_EXTRA, NGINX_KEEPALIVE, NGINX_LISTEN_EXTRA, NGINX_UPSTREAM_EXTRA, NGINX_WORKERS,
                        Deployed, Large, MissingTool, Shape, children, cpu_split, deployed_cutover, require_tools,
                        wrk_argv)

PERF_FREQ = 999  # Hz; with DWARF stacks, higher rates make perf.data huge
DWARF_STACK = 8192  # bytes of stack copied per sample
CONNECTIONS = 32
# Counted for cutover and for nginx under the same load: CPU, scheduler events, and syscalls by
# name (the tracepoints need tracefs; without it perf stat fails and says so).
COUNTED = ["task-clock", "context-switches", "cpu-migrations", "raw_syscalls:sys_enter"] + [
    f"syscalls:sys_enter_{name}" for name in (
        "writev", "write", "sendto", "sendmsg", "read", "readv", "recvfrom", "recvmsg",
        "epoll_wait", "epoll_ctl", "futex", "sched_yield", "accept4", "close", "setsockopt")]


def run(bins: Bins, seconds: int, out_dir: Path, mode: str = "keep-alive") -> int:
    for tool, package in (("perf", "linux-perf"), ("wrk", "wrk")):
        if shutil.which(tool) is None:
            raise MissingTool(f"--profile needs {tool} (apt-get install {package})")
    require_tools()  # nginx too: its counts are the yardstick
    out_dir.mkdir(parents=True, exist_ok=True)
    with deployed_cutover(bins, "bench-profile-") as deployed:
        summary = _record(deployed, seconds, out_dir, mode)
    _reports(out_dir, mode)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"wrote {out_dir}")
    _print_counts(summary["per_request"], mode)
    log("\nWhere the daemon's samples are (breakdown.txt):\n" + (out_dir / "breakdown.txt").read_text())
    return 0


def _record(deployed: Deployed, seconds: int, out_dir: Path, mode: str) -> dict:
    procs, daemon, tmp, backend_port = deployed.procs, deployed.daemon, deployed.tmp, deployed.backend_port
    (tmp / "nginx").mkdir()
    nginx = Nginx(procs, tmp / "nginx", free_port(), backend_port, workers=NGINX_WORKERS,
                  keepalive=NGINX_KEEPALIVE, http_extra=NGINX_HTTP_EXTRA, upstream_extra=NGINX_UPSTREAM_EXTRA,
                  listen_extra=NGINX_LISTEN_EXTRA, location_extra=harness.nginx_forwarding())
    try:
        proxies = {"cutover": (daemon.port, [daemon.proc.pid]),
                   "nginx": (nginx.port, [nginx.proc.pid] + children(nginx.proc.pid))}
        shape = Shape(mode, "small", CONNECTIONS)
        no_large = Large("/", None, "")
        for port, _ in proxies.values():  # warm-up: pools filled, caches warm
            subprocess.run(wrk_argv(port, shape, 1, no_large), capture_output=True, timeout=30)

        # Sampling with DWARF stacks slows the daemon, so the counts come from separate runs.
        port, pids = proxies["cutover"]
        wrk_out: dict = {}
        load_s = seconds + 2
        wrk_thread = threading.Thread(target=lambda: wrk_out.update(proc=subprocess.run(
            wrk_argv(port, shape, load_s, no_large), capture_output=True, text=True, timeout=load_s + 30)),
            daemon=True)
        wrk_thread.start()
        time.sleep(1)
        record = subprocess.run(
            ["perf", "record", "-F", str(PERF_FREQ), "--call-graph", f"dwarf,{DWARF_STACK}", "-p", str(pids[0]),
             "-o", str(out_dir / "perf.data"), "--", "sleep", str(seconds)],
            capture_output=True, text=True, timeout=seconds + 60)
        wrk_thread.join(load_s + 35)
        if record.returncode != 0:
            raise RuntimeError(f"perf record failed: {record.stderr.strip()[-500:]}")
        recorded = _wrk_result(wrk_out.get("proc"))

        counted = {name: _count(port, pids, shape, seconds, no_large) for name, (port, pids) in proxies.items()}
    finally:
        nginx.quit()
    return {"mode": mode, "connections": CONNECTIONS, "perf_record": {"seconds": seconds, "freq_hz": PERF_FREQ, "wrk": recorded},
            "counts": counted, "per_request": {name: c["per_request"] for name, c in counted.items()}}


def _wrk_result(proc) -> dict:
    if proc is None or proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {proc.stderr if proc else 'did not finish'}")
    return parse_wrk(proc.stdout)


def _count(port: int, pids: list[int], shape: Shape, seconds: int, large: Large) -> dict:
    """perf stat over the proxy's processes for a whole wrk run (started just before it, ended
    just after), so the counts divide by exactly the requests wrk completed."""
    stat = subprocess.Popen(["perf", "stat", "-x", ",", "-e", ",".join(COUNTED), "-p", ",".join(map(str, pids)),
                             "--", "sleep", str(seconds + 1)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        time.sleep(0.2)
        user0, sys0 = cpu_split(pids)
        wrk = _wrk_result(subprocess.run(wrk_argv(port, shape, seconds, large), capture_output=True, text=True,
                                         timeout=seconds + 30))
        user1, sys1 = cpu_split(pids)
        _, err = stat.communicate(timeout=seconds + 30)
    finally:
        if stat.poll() is None:
            stat.kill()
            stat.wait(5)
    counts: dict = {}
    for line in err.splitlines():
        parts = line.split(",")
        if len(parts) >= 3 and parts[2] in COUNTED:
            try:
                counts[parts[2]] = float(parts[0])
            except ValueError:
                counts[parts[2]] = None  # "<not supported>"
    n = wrk["requests"]
    per_request = {event: round(v / n, 3) for event, v in counts.items() if v is not None}
    if "task-clock" in per_request:  # milliseconds of CPU -> microseconds per request
        per_request["cpu_us"] = round(counts["task-clock"] * 1000 / n, 2)
        del per_request["task-clock"]
    # From /proc over the wrk run alone: the split perf stat's task-clock does not give.
    per_request["user_cpu_us"] = round((user1 - user0) / n * 1e6, 2)
    per_request["sys_cpu_us"] = round((sys1 - sys0) / n * 1e6, 2)
    return {"wrk": wrk, "counts": counts, "per_request": per_request}


def _print_counts(per_request: dict, mode: str) -> None:
    names = list(per_request)
    log(f"\nPer request, wrk {mode} c{CONNECTIONS} GET /version (perf stat over the proxy's processes):")
    log(f"{'':<34}" + "".join(f"{n:>10}" for n in names))
    events = dict.fromkeys(e for n in names for e in per_request[n])
    for event in events:
        label = event.replace("syscalls:sys_enter_", "  ").replace("raw_syscalls:sys_enter", "syscalls (all)")
        log(f"{label:<34}" + "".join(f"{per_request[n].get(event, float('nan')):>10.3f}" for n in names))


def _reports(out_dir: Path, mode: str) -> None:
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
    user = {stack: n for stack, n in folded.items() if not _in_kernel(stack)}
    (out_dir / "breakdown.txt").write_text(
        "All samples\n===========\n" + breakdown(folded)
        + "User space only (the kernel runs the same syscalls for nginx: see summary.json)\n"
        + "===============================================================================\n" + breakdown(user))
    (out_dir / "stacks.folded").write_text("".join(f"{stack} {n}\n" for stack, n in sorted(folded.items())))
    if shutil.which("inferno-flamegraph"):
        with open(out_dir / "stacks.folded", "rb") as src, open(out_dir / "flame.svg", "wb") as svg:
            subprocess.run(["inferno-flamegraph", "--minwidth", "1", "--title",
                            f"cutover serve, wrk {mode} c{CONNECTIONS} GET /version"],
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


# Which task a sample ran in: the first group with a frame containing one of its substrings.
TASKS = [
    ("downstream connection task (hyper server, edge, proxy::handle, the client request future)",
     ("dispatch::Server", "cutover::server::serve::{{closure}}::{{closure}}", "cutover::proxy::handle")),
    ("upstream connection task (hyper client dispatcher, spawned by hyper-util)",
     ("dispatch::Client", "client::conn::http1::Connection")),
    ("accept loop", ("TcpListener::accept", "conn_limit::ConnLimit::slot")),
    ("scheduler: park, epoll, steal", ("worker::Context::park", "driver::Driver", "epoll_wait", "steal")),
]
# What a sample was doing: the group of the frame nearest the leaf that matches one.
WORK = [
    ("kernel: send (writev/write/sendto; on loopback it includes waking the peer)",
     ("writev", "sendto", "__libc_write", "tcp_sendmsg")),
    ("kernel: recv (recvfrom/read)", ("recvfrom", "__libc_read", "tcp_recvmsg")),
    ("kernel: epoll_wait", ("epoll_wait",)),
    ("kernel: futex (thread park/unpark)", ("futex",)),
    ("kernel: other syscalls", ("do_syscall_64", "entry_SYSCALL")),
    # "=": the whole frame (the kernel's kmalloc and kfree belong to the syscall around them).
    ("malloc/free", ("=malloc", "=_int_malloc", "=_int_free", "=free", "=cfree", "=realloc", "=_int_realloc",
                     "=malloc_consolidate", "=tcache_get", "=unlink_chunk", "__GI___libc_malloc", "__GI___libc_free",
                     "__GI___libc_realloc", "=__rust_alloc", "=__rust_dealloc", "=__rust_realloc")),
    ("memcpy/memmove", ("memmove", "memcpy")),
    ("clock reads", ("clock_gettime", "read_tsc")),
    # "^": a function of that path (not a generic parameter of someone else's; inlined frames have
    # no path and fall through to their caller).
    ("http::HeaderMap (hash, insert, remove)", ("^http::header::map",)),
    ("hyper h1 parse/encode (incl. httparse)",
     ("^httparse", "^hyper::proto::h1::role", "^hyper::proto::h1::encode", "^hyper::proto::h1::decode")),
    ("tokio scheduler, task harness, wakers",
     ("^tokio::runtime::scheduler", "^tokio::runtime::task", "^tokio::runtime::context", "^tokio::runtime::park")),
    ("tokio timers", ("^tokio::runtime::time", "^tokio::time")),
    ("tokio I/O driver (readiness)", ("^tokio::runtime::io", "^tokio::io", "^tokio::net", "^mio::")),
    ("tokio sync (mpsc, oneshot, Notify)", ("^tokio::sync",)),
    ("hyper-util client and pool", ("^hyper_util::client",)),
    ("hyper dispatch/conn/io", ("^hyper::", "^want::")),
    ("cutover's own code", ("^cutover::",)),
    ("bytes", ("^bytes::",)),
    ("http types (Uri, Request, Extensions)", ("^http::",)),
    ("futures-util, http-body-util combinators", ("^futures_util::", "^http_body_util::")),
]
# Named functions, with everything they call (a sample counts once per function).
FUNCTIONS = [
    "cutover::edge::forwarding_headers", "cutover::edge::remove_forwarding_headers",
    "cutover::proxy::strip_hop_by_hop", "hyper_util::client::legacy::client::Client<C,B>::send_request",
    "hyper_util::client::legacy::pool", "hyper_util::client::legacy::client::Client<C,B>::request",
    "hyper_util::rt::tokio::TokioTimer", "tokio::sync::mpsc", "tokio::sync::oneshot", "prometheus_client",
    "http::uri", "http::extensions", "cutover::proxy::Route::acquire", "cutover::body_timeout",
    "hyper::common::date",
]


def _in_kernel(stack: str) -> bool:
    # A sample taken in the kernel has its entry (syscall or interrupt) on the stack.
    return any(f.startswith(("entry_SYSCALL", "asm_", "ret_from_fork")) for f in stack.split(";"))


def _matches(key: str, frame: str) -> bool:
    if key.startswith("="):
        return frame == key[1:]
    if key.startswith("^"):
        return frame.startswith(key[1:]) or frame.startswith("<" + key[1:])
    return key in frame


def breakdown(folded: dict[str, int]) -> str:
    total = sum(folded.values()) or 1
    tasks: dict[str, int] = {}
    work: dict[str, int] = {}
    functions = dict.fromkeys(FUNCTIONS, 0)
    for stack, n in folded.items():
        frames = stack.split(";")[1:]
        task = next((name for name, keys in TASKS if any(k in f for f in frames for k in keys)),
                    "unattributed (stack truncated)")
        what = next((name for f in reversed(frames) for name, keys in WORK if any(_matches(k, f) for k in keys)),
                    "other")
        tasks[task] = tasks.get(task, 0) + n
        work[what] = work.get(what, 0) + n
        for name in FUNCTIONS:
            # Frames of a function's own body start with its path; a match inside a type's
            # generic parameters does not count.
            if any(f.startswith(name) or f.startswith("<" + name) for f in frames):
                functions[name] += n

    def table(title: str, counts: dict[str, int]) -> str:
        rows = sorted(counts.items(), key=lambda kv: -kv[1])
        return title + "\n" + "".join(f"{100 * n / total:6.1f}%  {name}\n" for name, n in rows) + "\n"

    return (f"{total} samples\n\n" + table("By task:", tasks) + table("By kind of work (leaf-most match):", work)
            + table("Named functions, inclusive:", functions))

"""The edge benchmark (issue 15): cutover terminating TLS itself, next to nginx doing the same.

Both fronts serve `https://bench.test` with the same self-signed certificate (ECDSA P-256, made
with openssl) and proxy to the same backend, the demo-api instance that `cutover deploy` started:
  nginx    client -> nginx (2 workers, TLS 1.2/1.3, HTTP/2, upstream keep-alive) -> demo-api
  cutover  client -> cutover's [edge] https listener -> demo-api
Load shapes, all `GET /version` with SNI and Host `bench.test`:
  keep-alive    wrk -t2 -c32 over https (HTTP/1.1 on kept connections)
  new-conn      wrk -t2 -c32 -H 'Connection: close': a TLS connection per request; wrk resumes
                the session (TLS 1.3 ticket) on every reconnect
  full-hs       stdlib clients in HANDSHAKE_CLIENTS processes, a full handshake per request (no
                session is ever offered again)
  h2            h2load -t2 -c32 -m10 over TLS, ALPN h2
Rounds alternate the targets as proxy_cost.py does; ratios are taken within a round and
summarized as medians with their min-max. CPU per request is read from /proc for the daemon and
for nginx's master and workers.

Then deploys under HTTPS load: two bounded wrk loads (keep-alive and new-conn) run while N
deploys happen: `cutover deploy` of the component, and for nginx the blue-green reload that
run.py's part 1 does (new demo-api on the other port, rewrite the upstream, `nginx -s reload`,
stop the old one). Every failed request counts.

Stdlib only; loopback only. See bench/README.md ("Edge") for how to read the output.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import proxy_cost
import harness
from harness import (
    DEPLOY_DEADLINE,
    HEALTH_DEADLINE,
    HOST,
    Bins,
    CutoverDaemon,
    Nginx,
    Procs,
    free_port,
    https_get,
    log,
    parse_wrk,
    start_demo_api,
    wait_until,
)
from proxy_cost import _fmt, _ratio, _spread, children, cpu_seconds, cpu_split, rss_kib

NAME = "bench.test"
TARGETS = ("nginx", "cutover")
CONNS = 32
H2_STREAMS = 10  # h2load -m: concurrent streams per connection
HANDSHAKE_CLIENTS = 4  # processes of the full-handshake client (each one connection at a time)
REQUEST_TIMEOUT = 5.0
TOOL_SLACK = 30  # seconds past its duration before a load tool counts as hung and is killed
BETWEEN_DEPLOYS = 0.5  # as in run.py's part 1
DEPLOY_WARMUP = 1.0
DEPLOY_COOLDOWN = 0.5
DEPLOY_LOAD_CONNS = 16  # per wrk of the deploy phase (one keep-alive, one new-conn)
DEPLOY_H2_CONNS = 8  # h2load's connections in the deploy phase (H2_STREAMS streams each)
# h2load neither stops early with a report nor opens a new connection when the server closes one
# (nginx's reload does, with GOAWAY): the deploy phase runs it in back-to-back runs of this many
# seconds, so a closed connection costs at most the rest of one run.
DEPLOY_H2_RUN_S = 1

SHAPES = {
    "keep-alive": f"wrk -t2 -c{CONNS}, HTTP/1.1 keep-alive",
    "new-conn": f"wrk -t2 -c{CONNS} Connection: close (TLS resumed by wrk)",
    "full-hs": f"{HANDSHAKE_CLIENTS} stdlib clients, full handshake per request",
    "h2": f"h2load -t2 -c{CONNS} -m{H2_STREAMS}, ALPN h2",
}

# wrk takes SNI and Host from the URL (`bench.test`) and gets the addresses to connect to from
# `wrk.resolve`, which a script may replace: this one answers loopback for any name, so no
# /etc/hosts entry is needed.
WRK_RESOLVE = """\
wrk.resolve = function(host, service)
  wrk.addrs = wrk.lookup("127.0.0.1", service)
end
"""

# TLS the way cutover does it (rustls safe defaults: 1.2 and 1.3; tickets plus a session cache)
# on top of proxy_cost.py's tuned proxy. nginx 1.22 defaults to TLS 1.0-1.2, without 1.3.
NGINX_TLS = """\
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;
"""
NGINX_LISTEN = " ssl http2 reuseport"

# A second, idle server in the measured nginx that logs `$ssl_session_reused` ("r" or "."): a
# short run of each client against it shows whether that client resumes sessions on reconnect.
NGINX_RESUMPTION_PROBE = """\
    log_format resumed '$ssl_session_reused';
    server {{
        listen 127.0.0.1:{port} ssl;
        access_log {log} resumed;
        location / {{ return 200 "probe"; }}
    }}
"""

CUTOVER_EDGE = """\
hosts = ["{name}"]
tls = {{ cert = "{cert}", key = "{key}" }}

[edge]
https = "127.0.0.1:{port}"
"""


def require_tools() -> None:
    proxy_cost.require_tools()  # wrk and nginx (and /usr/sbin on PATH)
    missing = [f"{tool} (apt-get install {package})"
               for tool, package in (("h2load", "nghttp2-client"), ("openssl", "openssl"))
               if shutil.which(tool) is None]
    if missing:
        raise proxy_cost.MissingTool("the edge phase needs " + " and ".join(missing))


def make_certificate(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "bench.test.pem", tmp / "bench.test.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "7", "-subj", f"/CN={NAME}",
                    "-addext", f"subjectAltName=DNS:{NAME}"], check=True, capture_output=True, timeout=30)
    return cert, key


def wait_https(port: int, proc=None, want: str | None = None, deadline_s: float = HEALTH_DEADLINE) -> None:
    def ok():
        status, body = https_get(port, "/version", NAME)
        return status == 200 and (want is None or body == want)
    wait_until(f"https://{NAME}:{port}/version" + (f" = {want}" if want else ""), ok, deadline_s, alive=proc)


# --- the full-handshake client ---------------------------------------------------------------


def _handshake_worker(port: int, seconds: float, out) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # self-signed: not checked
    request = f"GET /version HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode()
    done, errors, latencies = 0, 0, []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        start = time.monotonic()
        try:
            # A new SSLSocket without `session=`: a full handshake every time.
            with socket.create_connection((HOST, port), REQUEST_TIMEOUT) as raw, \
                    ctx.wrap_socket(raw, server_hostname=NAME) as tls:
                tls.sendall(request)
                answer = b""
                while chunk := tls.recv(4096):
                    answer += chunk
            ok = answer.startswith(b"HTTP/1.1 2")
        except (OSError, ssl.SSLError):
            ok = False
        if ok:
            done += 1
            latencies.append((time.monotonic() - start) * 1000)
        else:
            errors += 1
            time.sleep(0.01)  # so a refusing server does not make the client spin
    out.put((done, errors, latencies))


def full_handshakes(port: int, seconds: int) -> dict:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    workers = [ctx.Process(target=_handshake_worker, args=(port, seconds, out), daemon=True)
               for _ in range(HANDSHAKE_CLIENTS)]
    started = time.monotonic()
    for w in workers:
        w.start()
    try:
        parts = [out.get(timeout=seconds + TOOL_SLACK) for _ in workers]
    except Exception:  # noqa: BLE001 - a hung client is a failed run
        return {"error": f"handshake clients did not finish within {seconds + TOOL_SLACK}s"}
    finally:
        for w in workers:
            w.join(5)
            if w.is_alive():
                w.kill()
    wall = time.monotonic() - started
    done = sum(p[0] for p in parts)
    lat = sorted(x for p in parts for x in p[2])
    return {"rps": round(done / wall, 1), "requests": done, "errors": sum(p[1] for p in parts),
            "p50_ms": _percentile(lat, 0.5), "p99_ms": _percentile(lat, 0.99)}


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return round(sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))], 3)


# --- wrk and h2load --------------------------------------------------------------------------


def wrk_argv(port: int, shape: str, seconds: int, script: Path, conns: int = CONNS, threads: int = 2) -> list[str]:
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", f"--timeout={int(REQUEST_TIMEOUT)}s",
            "--latency", "-s", str(script)]
    if shape == "new-conn":
        argv += ["-H", "Connection: close"]
    return argv + [f"https://{NAME}:{port}/version"]


def parse_wrk_run(out: subprocess.CompletedProcess) -> dict:
    if out.returncode != 0:
        return {"error": f"wrk exited {out.returncode}: {out.stderr.strip()[:300]}"}
    result = parse_wrk(out.stdout)
    if result["rps"] is None or result["p99_ms"] is None or not result["requests"]:
        return {"error": "cannot parse wrk output: " + out.stdout[-300:]}
    kinds = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out.stdout)
    return {"rps": result["rps"], "requests": result["requests"], "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"], "errors": result["socket_errors"] + result["non_2xx_3xx"],
            "socket_errors": result["socket_errors"], "non_2xx_3xx": result["non_2xx_3xx"],
            # read: the connection closed (or reset) before the response came.
            "socket_errors_by_kind": dict(zip(("connect", "read", "write", "timeout"), map(int, kinds.groups())))
            if kinds else {}}


def h2load(port: int, seconds: int, tmp: Path, threads: int = 2, conns: int = CONNS, keep_latencies: bool = False) -> dict:
    log_file = tmp / "h2load.log"
    log_file.unlink(missing_ok=True)
    argv = ["h2load", f"-t{threads}", f"-c{conns}", f"-m{H2_STREAMS}", f"-D{seconds}", f"--connect-to={HOST}:{port}",
            f"--log-file={log_file}", f"https://{NAME}:{port}/version"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + TOOL_SLACK)
    except subprocess.TimeoutExpired:
        return {"error": f"h2load did not finish within {seconds + TOOL_SLACK}s"}
    return parse_h2load(out, log_file, keep_latencies)


def parse_h2load(out: subprocess.CompletedProcess, log_file: Path, keep_latencies: bool = False) -> dict:
    text = out.stdout
    rps = re.search(r"^finished in \S+, ([\d.]+) req/s", text, re.M)
    counts = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout", text, re.M)
    statuses = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    proto = re.search(r"^Application protocol: (\S+)", text, re.M)
    if out.returncode != 0 or not rps or not counts:
        return {"error": f"h2load exited {out.returncode}: {(out.stderr or text).strip()[-300:]}"}
    if not proto or proto.group(1) != "h2":
        return {"error": f"h2load did not negotiate h2: {proto.group(1) if proto else 'no protocol line'}"}
    # One line per request: start (us since epoch), status, time to the response (us).
    lat = []
    for line in log_file.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1].startswith("2"):
            lat.append(int(parts[2]) / 1000)
    lat.sort()
    _, _, _, succeeded, failed, errored, timeout = map(int, counts.groups())
    non_2xx = sum(map(int, statuses.groups()[1:])) if statuses else 0
    # h2load's "failed" counts every request that did not succeed: responses other than 2xx/3xx,
    # and the "errored" (no response) and "timeout" ones, which it also counts apart.
    return {"rps": float(rps.group(1)), "requests": succeeded, "p50_ms": _percentile(lat, 0.5),
            "p99_ms": _percentile(lat, 0.99), "errors": failed,
            "failed": failed, "errored": errored, "timeout": timeout, "non_2xx": non_2xx,
            **({"latencies_ms": lat} if keep_latencies else {})}


# --- one measured run ------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    port: int
    pids: list[int]  # the front's processes, whose CPU time is its cost


def run_shape(target: Target, backend_pid: int, shape: str, seconds: int, tmp: Path, script: Path) -> dict:
    cpu0, split0, backend0 = cpu_seconds(target.pids), cpu_split(target.pids), cpu_seconds([backend_pid])
    by_pid0 = [cpu_seconds([p]) for p in target.pids]
    started = time.monotonic()
    if shape == "full-hs":
        result = full_handshakes(target.port, seconds)
    elif shape == "h2":
        result = h2load(target.port, seconds, tmp)
    else:
        try:
            out = subprocess.run(wrk_argv(target.port, shape, seconds, script), capture_output=True, text=True,
                                 timeout=seconds + TOOL_SLACK)
            result = parse_wrk_run(out)
        except subprocess.TimeoutExpired:
            result = {"error": f"wrk did not finish within {seconds + TOOL_SLACK}s"}
    if "error" in result:
        return result
    cpu = cpu_seconds(target.pids) - cpu0
    user, system = (a - b for a, b in zip(cpu_split(target.pids), split0))
    n = result["requests"]
    result.update(
        wall_s=round(time.monotonic() - started, 3),
        proxy_cpu_s=round(cpu, 3),
        proxy_cpu_s_by_pid=[round(cpu_seconds([p]) - b, 3) for p, b in zip(target.pids, by_pid0)],
        proxy_cpu_us_per_req=round(cpu / n * 1e6, 2),
        proxy_user_us_per_req=round(user / n * 1e6, 2),
        proxy_sys_us_per_req=round(system / n * 1e6, 2),
        backend_cpu_us_per_req=round((cpu_seconds([backend_pid]) - backend0) / n * 1e6, 2),
    )
    return result


# --- what each front offers ------------------------------------------------------------------


def tls_probe(port: int) -> dict:
    """Version, cipher and ALPN a stdlib client gets, and whether the front resumes a session it
    issued (the second connection offers the first one's ticket)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    request = f"GET /version HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode()

    def connect(session=None):
        with socket.create_connection((HOST, port), REQUEST_TIMEOUT) as raw, \
                ctx.wrap_socket(raw, server_hostname=NAME, session=session) as tls:
            info = {"version": tls.version(), "cipher": tls.cipher()[0], "alpn": tls.selected_alpn_protocol()}
            if info["alpn"] != "h2":  # an h2 server would wait for the HTTP/2 preface
                tls.sendall(request)
                while tls.recv(4096):  # the TLS 1.3 ticket comes after the handshake
                    pass
            return info, tls.session, tls.session_reused

    try:
        ctx.set_alpn_protocols(["http/1.1"])  # to read the response and so the ticket
        first, session, _ = connect()
        _, _, reused = connect(session)
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        offered_h2, _, _ = connect()
        return {**first, "alpn_when_h2_offered": offered_h2["alpn"], "resumes_sessions": reused}
    except (OSError, ssl.SSLError) as e:
        return {"error": f"{type(e).__name__}: {e}"}


def client_resumption(port: int, log_path: Path, script: Path) -> dict:
    """How many of the new-connection clients' connections nginx resumed, in 1 s of each."""
    out = {}
    for client, run_it in (
        ("wrk new-conn", lambda: subprocess.run(wrk_argv(port, "new-conn", 1, script, conns=2, threads=1),
                                                capture_output=True, timeout=1 + TOOL_SLACK)),
        ("full-hs", lambda: full_handshakes(port, 1)),
    ):
        log_path.write_text("")
        run_it()
        time.sleep(0.2)  # nginx writes each line as the request ends; let the last ones land
        marks = log_path.read_text().split()
        out[client] = {"connections": len(marks), "resumed": marks.count("r")}
    return out


# --- the phase -------------------------------------------------------------------------------


def run(bins: Bins, rounds: int, seconds: int, warmup: int, deploys: int) -> dict:
    """Runs the whole phase; returns meta, every run's raw figures, the summary and the deploys."""
    require_tools()
    procs = Procs()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-edge-") as t:
            tmp = Path(t)
            cert, key = make_certificate(tmp)
            script = tmp / "resolve.lua"
            script.write_text(WRK_RESOLVE)
            (tmp / "cutover").mkdir()
            https_port = free_port()
            daemon = CutoverDaemon(procs, bins, tmp / "cutover", CUTOVER_EDGE.format(
                name=NAME, cert=cert, key=key, port=https_port))
            try:
                first = daemon.deploy("r0")
                if not first.ok:
                    raise RuntimeError(f"cutover deploy failed: {first.note}")
                wait_https(https_port, daemon.proc, "r0")
                serving = daemon.status()["components"][0]["serving"]
                result = _measure(procs, tmp, daemon, https_port, serving, cert, key, rounds, seconds, warmup, script)
                log(f"\n  deploys under HTTPS load: {deploys} per front")
                result["deploys"] = {
                    "cutover": _guarded("cutover", lambda: deploys_cutover(daemon, https_port, deploys, script)),
                    "nginx-reload": _guarded("nginx-reload",
                                             lambda: deploys_nginx(procs, bins, tmp, cert, key, deploys, script)),
                }
                return result
            finally:
                Procs.stop(daemon.proc, timeout=30)
                Procs.kill_strays(tmp)
    finally:
        procs.stop_all()


def _guarded(name: str, phase) -> dict:
    """One broken deploy phase should not hide the figures already measured."""
    try:
        return phase()
    except Exception as e:  # noqa: BLE001 - reported in the table and the JSON
        log(f"  [{name}] ERROR: {e}")
        return {"error": f"{type(e).__name__}: {e}"}


def start_nginx(procs: Procs, tmp: Path, backend_port: int, cert: Path, key: Path, probe: str = "") -> Nginx:
    tmp.mkdir()
    return Nginx(procs, tmp, free_port(), backend_port, workers=proxy_cost.NGINX_WORKERS,
                 keepalive=proxy_cost.NGINX_KEEPALIVE,
                 http_extra=proxy_cost.NGINX_HTTP_EXTRA + NGINX_TLS.format(cert=cert, key=key) + probe,
                 upstream_extra=proxy_cost.NGINX_UPSTREAM_EXTRA, listen_extra=NGINX_LISTEN,
                 location_extra=harness.nginx_forwarding(),
                 ready=lambda port, proc: wait_https(port, proc))


def _measure(procs, tmp, daemon, https_port, serving, cert, key, rounds, seconds, warmup, script) -> dict:
    backend_port, backend_pid = serving["port"], serving["pid"]
    probe_port, probe_log = free_port(), tmp / "resumed.log"
    nginx = start_nginx(procs, tmp / "nginx", backend_port, cert, key,
                        NGINX_RESUMPTION_PROBE.format(port=probe_port, log=probe_log))
    try:
        nginx_pids = [nginx.proc.pid] + children(nginx.proc.pid)
        if len(nginx_pids) != 1 + int(proxy_cost.NGINX_WORKERS):
            raise RuntimeError(f"nginx: expected a master and {proxy_cost.NGINX_WORKERS} workers, found {nginx_pids}")
        targets = [Target("nginx", nginx.port, nginx_pids), Target("cutover", https_port, [daemon.proc.pid])]
        probes = {}
        for target in targets:
            status, body = https_get(target.port, "/version", NAME, timeout=5)
            if (status, body) != (200, "r0"):
                raise RuntimeError(f"{target.name} on :{target.port} answered {status} {body[:80]!r}, not 200 r0")
            probes[target.name] = tls_probe(target.port)
            log(f"  {target.name}: pids {target.pids} on :{target.port}; TLS {probes[target.name]}")
        log(f"  backend: demo-api pid {backend_pid} on :{backend_port}")
        resumption = client_resumption(probe_port, probe_log, script)
        log(f"  clients' resumption on reconnect (nginx $ssl_session_reused): {resumption}")

        rss = {"before": rss_kib(daemon.proc.pid)}
        # Other work on the machine moves every figure: the 1-minute load average, for the record.
        loadavg = {"before": round(os.getloadavg()[0], 2)}
        for target in targets:  # fills the upstream pools and warms caches; not measured
            subprocess.run(wrk_argv(target.port, "keep-alive", warmup, script), capture_output=True,
                           timeout=warmup + TOOL_SLACK)
        runs = []
        shapes = list(SHAPES)
        total = rounds * len(shapes) * len(targets)
        for rnd in range(rounds):
            for i, shape in enumerate(shapes):
                # The order alternates from shape to shape and round to round.
                order = targets if (rnd + i) % 2 == 0 else targets[::-1]
                for target in order:
                    result = run_shape(target, backend_pid, shape, seconds, tmp, script)
                    runs.append({"round": rnd, "shape": shape, "target": target.name, "result": result})
                    brief = result.get("error") or (f"{result['rps']:.0f} req/s, p99 {result['p99_ms']:.3f} ms, "
                                                    f"{result['proxy_cpu_us_per_req']:.1f} us CPU/req")
                    log(f"  [{len(runs)}/{total}] round {rnd + 1} {shape:<11} {target.name:<8} {brief}")
        rss["after"] = rss_kib(daemon.proc.pid)
        loadavg["after"] = round(os.getloadavg()[0], 2)
        meta = {"rounds": rounds, "duration_s": seconds, "warmup_s": warmup, "shapes": SHAPES, "name": NAME,
                "certificate": "self-signed ECDSA P-256 (openssl req -x509), not verified by the clients",
                "tls": probes, "client_resumption": resumption, "cutover_rss_kib": rss,
                "loadavg_1min": loadavg,
                "nginx": {"workers": int(proxy_cost.NGINX_WORKERS), "listen_extra": NGINX_LISTEN.strip(),
                          "tls": [d.strip() for d in NGINX_TLS.format(cert="CERT", key="KEY").split(";") if d.strip()],
                          "http_extra": proxy_cost.NGINX_HTTP_EXTRA.split(),
                          "upstream_keepalive": proxy_cost.NGINX_KEEPALIVE},
                "tools": _versions()}
        return {"meta": meta, "runs": runs, "summary": summarize(runs)}
    finally:
        nginx.quit()


def _versions() -> dict:
    def first_line(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return None
    return {"wrk": first_line(["wrk", "-v"]), "h2load": first_line(["h2load", "--version"]),
            "nginx": first_line(["nginx", "-v"]), "openssl": first_line(["openssl", "version"])}


# --- deploys under HTTPS load ----------------------------------------------------------------


class DeployLoad:
    """A keep-alive and a new-connection wrk against the front while deploys run, bounded by
    `-d` and stopped with SIGINT (wrk then prints what it measured) when the deploys are done;
    and HTTP/2 from back-to-back h2load runs in a thread, bounded in count and time as well."""

    def __init__(self, port: int, script: Path, max_seconds: int, tmp: Path):
        self.procs = {
            shape: subprocess.Popen(wrk_argv(port, shape, max_seconds, script, conns=DEPLOY_LOAD_CONNS, threads=1),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for shape in ("keep-alive", "new-conn")
        }
        self.h2_runs: list[dict] = []
        self._stop = threading.Event()
        self._h2 = threading.Thread(target=self._h2_loop, args=(port, max_seconds, tmp), daemon=True)
        self._h2.start()

    def _h2_loop(self, port: int, max_seconds: int, tmp: Path) -> None:
        deadline = time.monotonic() + max_seconds
        for _ in range(max_seconds // DEPLOY_H2_RUN_S):
            if self._stop.is_set() or time.monotonic() >= deadline:
                return
            self.h2_runs.append(h2load(port, DEPLOY_H2_RUN_S, tmp, threads=1, conns=DEPLOY_H2_CONNS,
                                       keep_latencies=True))

    def _h2_result(self) -> dict:
        runs = [r for r in self.h2_runs if "error" not in r]
        if len(runs) != len(self.h2_runs) or not runs:
            return {"error": next((r["error"] for r in self.h2_runs if "error" in r), "no h2load run finished")}
        lat = sorted(x for r in runs for x in r["latencies_ms"])
        total = {k: sum(r[k] for r in runs) for k in ("requests", "errors", "failed", "errored", "timeout", "non_2xx")}
        return {**total, "runs": len(runs), "p50_ms": _percentile(lat, 0.5), "p99_ms": _percentile(lat, 0.99)}

    def finish(self) -> dict:
        results = {}
        for shape, p in self.procs.items():
            p.send_signal(signal.SIGINT)
        for shape, p in self.procs.items():
            try:
                stdout, stderr = p.communicate(timeout=TOOL_SLACK)
            except subprocess.TimeoutExpired:
                p.kill()
                stdout, stderr = p.communicate()
                results[shape] = {"error": "wrk did not stop after SIGINT"}
                continue
            results[shape] = parse_wrk_run(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
        self._stop.set()
        self._h2.join(DEPLOY_H2_RUN_S + TOOL_SLACK)
        results["h2"] = {"error": "h2load did not finish"} if self._h2.is_alive() else self._h2_result()
        return results

    def kill(self) -> None:
        self._stop.set()
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(5)


def _under_load(name: str, port: int, script: Path, n: int, deploy_one, tmp: Path) -> dict:
    # The load stops itself after this even if a deploy hangs.
    max_seconds = int(DEPLOY_WARMUP + DEPLOY_COOLDOWN + n * (DEPLOY_DEADLINE / 4 + BETWEEN_DEPLOYS)) + 10
    load = DeployLoad(port, script, max_seconds, tmp)
    done = []
    try:
        time.sleep(DEPLOY_WARMUP)
        for k in range(1, n + 1):
            start = time.monotonic()
            ok, note = deploy_one(f"r{k}")
            done.append({"release": f"r{k}", "ok": ok, "seconds": round(time.monotonic() - start, 3),
                         **({"note": note} if note else {})})
            log(f"  [{name}] deploy r{k}: {'ok' if ok else 'FAILED'} in {done[-1]['seconds']:.3f}s"
                + (f"  {note}" if note else ""))
            time.sleep(BETWEEN_DEPLOYS)
        time.sleep(DEPLOY_COOLDOWN)
        loads = load.finish()
    finally:
        load.kill()
    try:
        served = https_get(port, "/version", NAME, timeout=5)[1]
    except OSError as e:
        served = f"error: {e}"
    failed = sum(r.get("errors", 0) for r in loads.values())
    return {"deploys": len(done), "deploys_ok": sum(d["ok"] for d in done), "per_deploy": done,
            "loads": loads, "requests": sum(r.get("requests", 0) for r in loads.values()), "failed": failed,
            "load_errors": [f"{s}: {r['error']}" for s, r in loads.items() if "error" in r],
            "last_served_release": served, "expected_release": f"r{n}"}


def deploys_cutover(daemon: CutoverDaemon, https_port: int, n: int, script: Path) -> dict:
    def deploy(release):
        d = daemon.deploy(release)
        return d.ok, d.note
    return _under_load("cutover", https_port, script, n, deploy, daemon.tmp)


def deploys_nginx(procs: Procs, bins: Bins, tmp: Path, cert: Path, key: Path, n: int, script: Path) -> dict:
    """run.py's nginx-reload strategy behind the same TLS nginx: a demo-api pair of its own."""
    apis = tmp / "nginx-deploys"
    apis.mkdir()
    ports = [free_port(), free_port()]
    live = {"proc": start_demo_api(procs, bins, apis, ports[0], "r0"), "slot": 0}
    nginx = start_nginx(procs, apis / "nginx", ports[0], cert, key)

    def deploy(release):
        try:
            slot = 1 - live["slot"]
            new = start_demo_api(procs, bins, apis, ports[slot], release)
            nginx.set_upstream(ports[slot])
            nginx.reload()
            # `-s reload` only signals the master: wait until new workers answer with the new
            # release (a new connection each probe), then the same grace period as run.py.
            wait_https(nginx.port, want=release, deadline_s=5)
            time.sleep(0.3)
            Procs.stop(live["proc"])
            live.update(proc=new, slot=slot)
            return True, ""
        except Exception as e:  # noqa: BLE001 - a failed deploy is data here
            return False, str(e)

    try:
        return _under_load("nginx-reload", nginx.port, script, n, deploy, apis)
    finally:
        nginx.quit()
        Procs.stop(live["proc"])


# --- summary and tables ----------------------------------------------------------------------


def summarize(runs: list[dict]) -> dict:
    """Per shape: each target's medians, and the medians (min-max) of the per-round ratios."""
    out = {}
    for shape in dict.fromkeys(r["shape"] for r in runs):
        rounds: dict[int, dict[str, dict]] = {}
        for r in runs:
            if r["shape"] == shape and "error" not in r["result"]:
                rounds.setdefault(r["round"], {})[r["target"]] = r["result"]

        def field(t, name):
            return _spread([rd[t][name] for rd in rounds.values() if t in rd])

        def per_round(name):
            return _spread([_ratio(rd["cutover"][name], rd["nginx"][name]) for rd in rounds.values()
                            if "cutover" in rd and "nginx" in rd])

        out[shape] = {
            "targets": {t: {"rps": field(t, "rps"), "p50_ms": field(t, "p50_ms"), "p99_ms": field(t, "p99_ms"),
                            "proxy_cpu_us_per_req": field(t, "proxy_cpu_us_per_req"),
                            "proxy_user_us_per_req": field(t, "proxy_user_us_per_req"),
                            "proxy_sys_us_per_req": field(t, "proxy_sys_us_per_req"),
                            "backend_cpu_us_per_req": field(t, "backend_cpu_us_per_req"),
                            "errors": sum(rd[t]["errors"] for rd in rounds.values() if t in rd)}
                        for t in TARGETS},
            "ratios": {"cutover_over_nginx_rps": per_round("rps"), "cutover_over_nginx_p50": per_round("p50_ms"),
                       "cutover_over_nginx_p99": per_round("p99_ms"),
                       "cutover_over_nginx_cpu_per_req": per_round("proxy_cpu_us_per_req")},
            "failed_runs": sum(1 for r in runs if r["shape"] == shape and "error" in r["result"]),
        }
    return out


def goals(results: dict) -> list[str]:
    """The issue's goal, row by row: at or above nginx (req/s >= 1, p99 <= 1); 0 failed during
    cutover's deploys."""
    lines = []
    for shape, s in results["summary"].items():
        r = s["ratios"]
        rps = r["cutover_over_nginx_rps"]["median"] if r["cutover_over_nginx_rps"] else None
        p99 = r["cutover_over_nginx_p99"]["median"] if r["cutover_over_nginx_p99"] else None
        lines.append(f"{shape:<12} req/s {'met' if rps is not None and rps >= 1.0 else 'NOT met'}, "
                     f"p99 {'met' if p99 is not None and p99 <= 1.0 else 'NOT met'}")
    c = results["deploys"]["cutover"]
    if "error" in c:
        lines.append(f"{'deploys':<12} NOT met: {c['error']}")
        return lines
    clean = c["failed"] == 0 and c["deploys_ok"] == c["deploys"] and not c["load_errors"]
    lines.append(f"{'deploys':<12} {'met' if clean else 'NOT met'}: {c['failed']} failed, "
                 f"{c['deploys_ok']}/{c['deploys']} deploys ok")
    return lines


def print_tables(results: dict) -> None:
    meta, summary = results["meta"], results["summary"]
    log(f"\nEdge (HTTPS, {NAME}): {meta['rounds']} rounds x {meta['duration_s']} s per target, targets "
        f"alternating; medians of per-round ratios [min-max]; load average {meta['loadavg_1min']['before']} "
        f"before, {meta['loadavg_1min']['after']} after")
    for shape, what in SHAPES.items():
        log(f"  {shape:<11} {what}")
    for name, probe in meta["tls"].items():
        log(f"  {name:<11} {probe}")
    for client, r in meta["client_resumption"].items():
        log(f"  {client}: nginx resumed {r['resumed']} of its {r['connections']} connections in 1 s")
    head = (f"{'shape':<12}{'nginx r/s':>10}{'cutover r/s':>12}  {'cutover/nginx r/s':<20}{'p50 ms nginx':>13}"
            f"{'cutover':>9}{'p99 ms nginx':>13}{'cutover':>9}  {'cutover/nginx p99':<20}")
    log("\n" + head)
    log("-" * len(head))
    for shape, s in summary.items():
        t, r = s["targets"], s["ratios"]
        log(f"{shape:<12}{_fmt(t['nginx']['rps'], 0, False):>10}{_fmt(t['cutover']['rps'], 0, False):>12}  "
            f"{_fmt(r['cutover_over_nginx_rps']):<20}{_fmt(t['nginx']['p50_ms'], 3, False):>13}"
            f"{_fmt(t['cutover']['p50_ms'], 3, False):>9}{_fmt(t['nginx']['p99_ms'], 3, False):>13}"
            f"{_fmt(t['cutover']['p99_ms'], 3, False):>9}  {_fmt(r['cutover_over_nginx_p99']):<20}")
    head = (f"{'shape':<12}{'CPU us/req nginx':>17}{'cutover':>9}  {'cutover/nginx CPU':<20}"
            f"{'user nginx':>11}{'cutover':>9}{'sys nginx':>10}{'cutover':>9}{'errors':>8}")
    log("\n" + head)
    log("-" * len(head))
    for shape, s in summary.items():
        t, r = s["targets"], s["ratios"]
        failed = f" ({s['failed_runs']} runs failed)" if s["failed_runs"] else ""
        log(f"{shape:<12}{_fmt(t['nginx']['proxy_cpu_us_per_req'], 1, False):>17}"
            f"{_fmt(t['cutover']['proxy_cpu_us_per_req'], 1, False):>9}  {_fmt(r['cutover_over_nginx_cpu_per_req']):<20}"
            f"{_fmt(t['nginx']['proxy_user_us_per_req'], 1, False):>11}{_fmt(t['cutover']['proxy_user_us_per_req'], 1, False):>9}"
            f"{_fmt(t['nginx']['proxy_sys_us_per_req'], 1, False):>10}{_fmt(t['cutover']['proxy_sys_us_per_req'], 1, False):>9}"
            f"{t['nginx']['errors'] + t['cutover']['errors']:>8}{failed}")
    log(f"\nDeploys under HTTPS load (wrk -t1 -c{DEPLOY_LOAD_CONNS} keep-alive, wrk -t1 -c{DEPLOY_LOAD_CONNS} "
        f"Connection: close and h2load -t1 -c{DEPLOY_H2_CONNS} -m{H2_STREAMS} in {DEPLOY_H2_RUN_S} s runs; "
        f"{BETWEEN_DEPLOYS} s between deploys)")
    head = (f"{'front':<14}{'deploys ok':>11}{'deploy s p50':>13}{'requests':>10}{'failed':>8}"
            f"{'keep-alive':>11}{'new-conn':>9}{'h2':>6}{'p99 ms k/n/h2':>20}  last release")
    log(head)
    log("-" * len(head))
    for name, d in results["deploys"].items():
        if "error" in d:
            log(f"{name:<14}  ERROR: {d['error']}")
            continue
        loads = d["loads"]
        p50 = statistics.median(x["seconds"] for x in d["per_deploy"]) if d["per_deploy"] else 0
        p99 = "/".join(f"{loads.get(k, {}).get('p99_ms') or 0:.1f}" for k in ("keep-alive", "new-conn", "h2"))
        errors = "".join(f"{loads.get(k, {}).get('errors', '-'):>{w}}" for k, w in (("keep-alive", 11), ("new-conn", 9),
                                                                                   ("h2", 6)))
        log(f"{name:<14}{str(d['deploys_ok']) + '/' + str(d['deploys']):>11}{p50:>13.2f}{d['requests']:>10}"
            f"{d['failed']:>8}{errors}{p99:>20}  {d['last_served_release']} (want {d['expected_release']})")
        for e in d["load_errors"]:
            log(f"  {name} load error: {e}")
        for shape, r in loads.items():
            if not r.get("errors"):
                continue
            if shape == "h2":
                log(f"  {name} h2 failures: {r['failed']}, of them non-2xx {r['non_2xx']}, no response "
                    f"{r['errored']}, timeout {r['timeout']}")
            else:
                kinds = ", ".join(f"{k} {v}" for k, v in r.get("socket_errors_by_kind", {}).items() if v)
                log(f"  {name} {shape} failures: {kinds or 'no socket errors'}; non-2xx {r['non_2xx_3xx']}")
    log("\nGoal (issue 15): cutover at or above nginx on every row (req/s ratio >= 1.0, p99 ratio <= 1.0); "
        "0 failed during deploys:")
    for line in goals(results):
        log(f"  {line}")


def failed(results: dict) -> list[str]:
    """Why the phase should exit 1: a load run that failed, or cutover not deploying cleanly."""
    out = [f"{r['shape']} {r['target']} round {r['round'] + 1}: {r['result']['error']}"
           for r in results["runs"] if "error" in r["result"]]
    c = results["deploys"]["cutover"]
    if "error" in c:
        return out + [f"cutover deploys under HTTPS load: {c['error']}"]
    if c["failed"] or c["deploys_ok"] != c["deploys"] or c["load_errors"]:
        out.append(f"cutover deploys under HTTPS load: {c['failed']} failed requests, "
                   f"{c['deploys_ok']}/{c['deploys']} deploys ok {c['load_errors'] or ''}".strip())
    if c["last_served_release"] != c["expected_release"]:
        out.append(f"cutover serves {c['last_served_release']!r} after the deploys, not {c['expected_release']}")
    return out

"""Fleet phase (issue 10's figures): `cutover fleet deploy` to real hosts over real ssh, under load.

Hosts: network namespaces with their own sshd and `cutover serve` (fleet_hosts.py, a port of the
Rust tests' harness), canary 1, max_parallel 2. Every host gets the single-host bench's load (run.py:
8 keep-alive and 8 new-connection clients in a process of their own) on its public address, from
the root namespace through its veth. Four parts, each under its own load session:

  fleet        N fleet deploys, releases alternating r1/r2: failed requests (goal 0), time each
  single       N `cutover deploy` of the same artifact on h1 itself (no ssh): the time to compare
  late-fail    h2 (wave 2) made never healthy (DEMO_NEVER_HEALTHY): the canary has switched when
               h2's verdict comes; every host the run moved goes back
  degrade      every host stabilizes 3 s and h3's new release answers 500 after 300 ms
               (DEMO_FAIL_AFTER_MS): h3's own stabilization fails after it switched; h2, beside
               it, is aborted and the canary rolled back

For the failing runs: the time from the failing host's verdict (its daemon's `rolled_back` or
failed `deploy_finished` event, as the operator received it) to the last host serving the old
release again, from the events (its `switched` back or `rolled_back`) and from the clients (the
last answer on any host that was not the old release's). Per run: TCP connections and ssh
sessions per host, from each sshd's log (LogLevel VERBOSE), and the peak of ssh processes on the
operator's side. Stdlib only; see bench/README.md ("Fleet").
"""

from __future__ import annotations

import http.client
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import fleet_hosts
from fleet_hosts import PUBLIC_PORT, Fleet
from harness import DEPLOY_DEADLINE, Deploy, git_info, log

CANARY, MAX_PARALLEL = 1, 2
FLEET_DEADLINE = 120.0  # one `cutover fleet deploy`
WARMUP, BETWEEN, COOLDOWN = 1.0, 0.5, 0.5
DEGRADE_STABILIZE = "3s"
GOAL_ALL_OLD_S = 1.0
FAILED_OUTCOMES = ("failed", "rolled_back_by_host", "unreachable")


@dataclass
class FleetRun:
    release: str
    start: float  # time.monotonic(), as the load's records
    end: float = 0.0
    rc: int | str | None = None
    lines: list = field(default_factory=list)  # (monotonic time received, event)
    ssh: dict = field(default_factory=dict)  # host -> {"connections", "sessions"}
    ssh_procs_peak: int = 0

    def deploy(self) -> Deploy:
        return Deploy(self.release, self.start, self.end, self.rc == 0, "" if self.rc == 0 else f"exit {self.rc}")

    def events(self, kind: str) -> list:
        return [(m, e) for m, e in self.lines if e.get("event") == kind]

    def finished(self) -> dict:
        ends = self.events("run_finished")
        return ends[-1][1] if ends else {}


# --- running things ----------------------------------------------------------------------------


def fleet_deploy(fleet: Fleet, config: Path, release: str) -> FleetRun:
    """`cutover fleet deploy backend --json`, each line stamped with when it arrived."""
    offsets = {h.name: h.sshd_log.stat().st_size for h in fleet.hosts}
    run = FleetRun(release, time.monotonic())
    proc = subprocess.Popen([str(fleet.bins.cutover), "--config", str(config), "fleet", "deploy", "backend",
                             "--release", release, "--artifact", str(fleet.bins.demo_api), "--json"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stop = threading.Event()
    peak = threading.Thread(target=_count_ssh, args=(str(fleet.ssh_config), stop, run), daemon=True)
    peak.start()

    def read():
        for line in proc.stdout:
            try:
                run.lines.append((time.monotonic(), json.loads(line)))
            except ValueError:
                pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        run.rc = proc.wait(FLEET_DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        run.rc = "timeout"
    run.end = time.monotonic()
    reader.join(5)
    stop.set()
    peak.join(5)
    for h in fleet.hosts:  # sshd logs a connection and a session when they start: all in by now
        with open(h.sshd_log, errors="replace") as f:
            f.seek(offsets[h.name])
            new = f.read()
        run.ssh[h.name] = {"connections": new.count("\nConnection from ") + new.startswith("Connection from "),
                           "sessions": new.count("Starting session:")}
    return run


def _count_ssh(ssh_config: str, stop: threading.Event, run: FleetRun) -> None:
    """The peak number of ssh processes of this fleet (masters, sessions) while the run lives."""
    needle = ssh_config.encode()
    while not stop.wait(0.1):
        n = 0
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        n += needle in f.read()
                except OSError:
                    pass
        run.ssh_procs_peak = max(run.ssh_procs_peak, n)


def host_deploy(fleet: Fleet, h, release: str) -> Deploy:
    start = time.monotonic()
    out = fleet.cli(h, "deploy", "backend", "--artifact", str(fleet.bins.demo_api), "--release", release, "--json",
                    timeout=DEPLOY_DEADLINE)
    end = time.monotonic()
    return Deploy(release, start, end, out.returncode == 0, "" if out.returncode == 0 else out.stdout[-300:])


class FleetLoad:
    """run.py's load generator, one per host, each aimed at that host's address."""

    clients = 0  # per host, half keep-alive; 0: run.py's own shape

    def __init__(self, load_cls, fleet: Fleet, tmp: Path, max_seconds: float):
        # run.py's clients connect to its module's HOST, in numbers of its module's constants,
        # all read in the load process, which `load_cls(...)` forks: set just before, they aim
        # that process at one host (and size it).
        module = sys.modules[load_cls.__module__]
        saved = module.HOST, module.KEEPALIVE_CLIENTS, module.NEWCONN_CLIENTS
        self.loads = {}
        try:
            if self.clients:
                module.KEEPALIVE_CLIENTS, module.NEWCONN_CLIENTS = self.clients // 2, self.clients - self.clients // 2
            for h in fleet.hosts:
                d = tmp / f"load-{h.name}"
                d.mkdir(exist_ok=True)
                module.HOST = h.ip
                self.loads[h.name] = load_cls(PUBLIC_PORT, d, max_seconds)
        except BaseException:
            self.kill()
            raise
        finally:
            module.HOST, module.KEEPALIVE_CLIENTS, module.NEWCONN_CLIENTS = saved

    def finish(self) -> dict:
        try:
            return {name: load.finish() for name, load in self.loads.items()}
        finally:
            self.kill()

    def kill(self) -> None:
        for load in self.loads.values():
            load.kill()


# --- measuring ---------------------------------------------------------------------------------


def breakdown(run: FleetRun) -> dict:
    """Where a fleet deploy's time goes, in ms since the run started (cutover's own clock)."""
    waves = [e["t_ms"] for _, e in run.events("wave_started")]
    fin = run.finished()
    out = {"total_ms": round((run.end - run.start) * 1000, 1), "run_ms": fin.get("duration_ms")}
    if waves and fin:
        out["before_wave_1_ms"] = waves[0]  # lock, preflight, upload
        out["waves_ms"] = [b - a for a, b in zip(waves, waves[1:] + [fin["t_ms"]])]
        # Process start to the first event, and run_finished to exit (ssh masters closing).
        first = run.lines[0][0]
        out["outside_run_ms"] = round((first - run.start) * 1000 + (run.end - run.lines[-1][0]) * 1000, 1)
    return out


def timeline(run: FleetRun) -> list:
    """The run in short: [t_ms, host, phase or daemon event]."""
    rows = []
    for _, e in run.lines:
        if e["event"] == "host_phase":
            rows.append([e["t_ms"], e["host"], e["phase"]])
        elif e["event"] == "host_event" and e["daemon"]["event"] not in ("probe", "stabilizing"):
            d = e["daemon"]
            rows.append([e["t_ms"], e["host"], d["event"] + (f" {d['to']}" if d.get("to") else "")])
        elif e["event"] != "host_event":
            rows.append([e["t_ms"], None, e["event"] + (f" {e['wave']}" if "wave" in e else "")])
    return rows


def verdict_to_old(run: FleetRun, old: str, reqs: dict) -> dict:
    """From the failing host's verdict to every host serving `old` again (see the docstring)."""
    fin = run.finished()
    outcomes = {h["host"]: h["outcome"] for h in fin.get("hosts", [])}
    failing = [h for h, o in outcomes.items() if o in FAILED_OUTCOMES]
    verdicts = [(m, e) for m, e in run.events("host_event") if e["host"] in failing and (
        e["daemon"]["event"] == "rolled_back"
        or (e["daemon"]["event"] == "deploy_finished" and e["daemon"]["outcome"] != "succeeded"))]
    res = {"outcome": fin.get("outcome"), "hosts": outcomes, "failing": failing}
    if not verdicts:
        res["error"] = "no failing host's verdict in the events"
        return res
    v_mono, v = verdicts[0]
    back = {}
    for h, outcome in outcomes.items():
        if outcome not in ("rolled_back", "aborted", "rolled_back_by_host"):
            continue
        mine = [(m, e) for m, e in run.events("host_event") if e["host"] == h]
        left_old = any(e["t_ms"] <= v["t_ms"] and e["daemon"]["event"] == "switched" and e["daemon"]["to"] != old
                       for _, e in mine)
        home = [e["t_ms"] for _, e in mine if e["t_ms"] >= v["t_ms"] and (
            e["daemon"]["event"] == "rolled_back"
            or (e["daemon"]["event"] == "switched" and e["daemon"]["to"] == old))]
        back[h] = 0 if not left_old or h in failing else (home[0] - v["t_ms"] if home else None)
    res["verdict_host"], res["verdict_t_ms"] = v["host"], v["t_ms"]
    res["back_ms"] = back
    res["all_old_events_ms"] = None if None in back.values() else max(back.values(), default=0)
    res["run_end_ms"] = fin["t_ms"] - v["t_ms"] if fin else None
    # The clients' view: the last answer after the verdict, on any host, that was not the old
    # release's (a new release's answer, or a failure).
    last = {}
    for host, rs in reqs.items():
        ends = [r.end for r in rs if run.start <= r.start <= run.end and r.end >= v_mono
                and not (r.ok and r.detail == old)]
        last[host] = round((max(ends) - v_mono) * 1000, 1) if ends else 0.0
    res["clients_back_ms"] = last
    res["all_old_clients_ms"] = max(last.values(), default=0.0)
    res["failed_requests"] = {host: sum(1 for r in rs if run.start <= r.end <= run.end + 1 and not r.ok)
                              for host, rs in reqs.items()}
    return res


def _stats(values: list) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "max": None, "n": 0}
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3), "n": len(values)}


def ssh_per_run(runs: list[FleetRun]) -> dict:
    conns = [sum(h["connections"] for h in r.ssh.values()) for r in runs]
    sessions = [sum(h["sessions"] for h in r.ssh.values()) for r in runs]
    per_host_conns = sorted({h["connections"] for r in runs for h in r.ssh.values()})
    return {"connections": _stats(conns), "sessions": _stats(sessions),
            "connections_per_host_seen": per_host_conns,
            "sessions_per_host_seen": sorted({h["sessions"] for r in runs for h in r.ssh.values()}),
            "ssh_processes_peak": max((r.ssh_procs_peak for r in runs), default=0)}


# --- the phases --------------------------------------------------------------------------------


def _under_load(load_cls, fleet, tmp, seconds, body):
    load = FleetLoad(load_cls, fleet, tmp, seconds)
    try:
        time.sleep(WARMUP)
        out = body()
        time.sleep(COOLDOWN)
        return out, load.finish()
    finally:
        load.kill()


def _serving(fleet: Fleet, h) -> str | None:
    st = json.loads(fleet.cli(h, "status", "--json").stdout or "{}")
    return next((c.get("active") for c in st.get("components", []) if c.get("name") == "backend"), None)


def phase_fleet(fleet, config, load_cls, summarize, tmp, n) -> tuple[dict, list[FleetRun]]:
    def body():
        runs = []
        for k in range(1, n + 1):
            run = fleet_deploy(fleet, config, f"r{2 - k % 2}")  # r1, r2, r1, ...
            runs.append(run)
            b = breakdown(run)
            log(f"  [fleet] deploy {run.release}: {run.finished().get('outcome', 'no end')} in "
                f"{b['total_ms'] / 1000:.2f}s (before wave 1 {b.get('before_wave_1_ms')} ms, waves "
                f"{b.get('waves_ms')} ms), ssh {run.ssh}")
            time.sleep(BETWEEN)
        return runs

    runs, reqs = _under_load(load_cls, fleet, tmp, n * (FLEET_DEADLINE + BETWEEN) + 30, body)
    deploys = [r.deploy() for r in runs]
    hosts = {name: summarize(rs, deploys) for name, rs in reqs.items()}
    return {"hosts": hosts, "failed": sum(s["failed"] for s in hosts.values()),
            "requests": sum(s["requests"] for s in hosts.values()),
            "deploys_ok": sum(r.finished().get("outcome") == "succeeded" and r.rc == 0 for r in runs),
            "deploys": len(runs), "runs": [{"release": r.release, "rc": r.rc, "breakdown": breakdown(r),
                                            "ssh": r.ssh, "ssh_processes_peak": r.ssh_procs_peak,
                                            "timeline": timeline(r)} for r in runs],
            "ssh": ssh_per_run(runs)}, runs


def phase_single(fleet, load_cls, summarize, tmp, n, current) -> dict:
    h = fleet.hosts[0]
    other = "r1" if current == "r2" else "r2"

    def body():
        deploys = []
        for k in range(n):
            d = host_deploy(fleet, h, other if k % 2 == 0 else current)
            deploys.append(d)
            log(f"  [single] deploy {d.release} on {h.name}: {'ok' if d.ok else 'FAILED ' + d.note} in "
                f"{d.end - d.start:.2f}s")
            time.sleep(BETWEEN)
        return deploys

    deploys, reqs = _under_load(load_cls, fleet, tmp, n * (DEPLOY_DEADLINE + BETWEEN) + 30, body)
    if _serving(fleet, h) != current:  # back in step with the other hosts (not measured)
        host_deploy(fleet, h, current)
    return {"host": h.name, **summarize(reqs[h.name], deploys),
            "other_hosts_failed": sum(1 for name, rs in reqs.items() if name != h.name for r in rs if not r.ok)}


def phase_failing(name, fleet, config, load_cls, tmp, runs_n, current, setup, teardown) -> dict:
    setup()
    try:
        def body():
            runs = []
            for k in range(1, runs_n + 1):
                runs.append(fleet_deploy(fleet, config, f"{name}-{k}"))
                log(f"  [{name}] run {k}: {runs[-1].finished().get('outcome', 'no end')} in "
                    f"{runs[-1].end - runs[-1].start:.2f}s")
                time.sleep(BETWEEN)
            return runs

        runs, reqs = _under_load(load_cls, fleet, tmp, runs_n * (FLEET_DEADLINE + BETWEEN) + 30, body)
    finally:
        teardown()
    results = []
    for r in runs:
        v = verdict_to_old(r, current, reqs)
        v.update(release=r.release, rc=r.rc, seconds=round(r.end - r.start, 3), ssh=r.ssh, timeline=timeline(r))
        results.append(v)
        log(f"  [{name}] {r.release}: verdict by {v.get('verdict_host')}, all old after "
            f"{v.get('all_old_events_ms')} ms (events) / {v.get('all_old_clients_ms')} ms (clients)")
    after = {h.name: _serving(fleet, h) for h in fleet.hosts}
    return {"runs": results, "serving_after": after,
            "all_old_events_ms": _stats([r.get("all_old_events_ms") for r in results]),
            "all_old_clients_ms": _stats([r.get("all_old_clients_ms") for r in results]),
            "run_end_after_verdict_ms": _stats([r.get("run_end_ms") for r in results]),
            "rolled_back_runs": sum(r.get("outcome") == "rolled_back" for r in results),
            "ssh": ssh_per_run(runs)}


def project(n_hosts: int, fleet: dict, single: dict) -> dict:
    """A fleet deploy and its ssh use at `n_hosts`, from the measured runs (README: "Fleet")."""
    steady = [r["breakdown"] for r in fleet["runs"][1:] or fleet["runs"]]  # run 1 also uploads
    before = statistics.median(b["before_wave_1_ms"] for b in steady)
    canary = statistics.median(b["waves_ms"][0] for b in steady)
    later = statistics.median(w for b in steady for w in b["waves_ms"][1:])
    outside = statistics.median(b["outside_run_ms"] for b in steady)
    waves = 1 + math.ceil((n_hosts - CANARY) / MAX_PARALLEL)
    hosts_measured = len(fleet["hosts"])
    conns = fleet["ssh"]["connections"]["median"] / hosts_measured
    sessions = fleet["ssh"]["sessions"]["median"] / hosts_measured
    total = before + canary + (waves - 1) * later + outside
    return {"hosts": n_hosts, "waves": waves, "before_wave_1_ms": before, "canary_wave_ms": canary,
            "later_wave_ms": later, "outside_run_ms": outside, "total_s": round(total / 1000, 2),
            "per_extra_wave_plus_stabilize": "each wave also waits its hosts' `stabilize`",
            "single_host_deploy_s": single.get("deploy_seconds_median"),
            "ssh_connections_per_host": conns, "ssh_connections": round(conns * n_hosts),
            "ssh_sessions_per_host": sessions, "ssh_sessions": round(sessions * n_hosts),
            "operator_ssh_processes_held": 2 * n_hosts}


# --- entry -------------------------------------------------------------------------------------


def main(bins, n_hosts: int, deploys: int, failing_runs: int, clients: int, load_cls, summarize, prepare_dir,
         binaries_mtime: dict) -> int:
    """The phase as run.py's `--fleet` runs it: the table, bench/results/fleet.json (fleet-cN.json
    with `clients` N per host), exit code."""
    shape = sys.modules[load_cls.__module__]
    if clients == shape.KEEPALIVE_CLIENTS + shape.NEWCONN_CLIENTS:
        clients = 0
    FleetLoad.clients = clients
    out_path = Path(__file__).resolve().parent / "results" / (f"fleet-c{clients}.json" if clients else "fleet.json")
    prepare_dir(out_path)
    results = run(bins, n_hosts, deploys, failing_runs, load_cls, summarize)
    results["meta"].update(time=time.strftime("%Y-%m-%dT%H:%M:%S%z"), cpus=os.cpu_count(), git=git_info(),
                           binaries_mtime=binaries_mtime,
                           load={"keepalive_clients_per_host": clients // 2 or shape.KEEPALIVE_CLIENTS,
                                 "new_connection_clients_per_host": clients - clients // 2 or shape.NEWCONN_CLIENTS,
                                 "request_timeout_s": shape.REQUEST_TIMEOUT})
    print_tables(results)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    log(f"\nwrote {out_path}")
    problems = failed_goals(results)
    for p in problems:
        log(f"FAIL: {p}")
    return 1 if problems else 0


def run(bins, n_hosts: int, deploys: int, failing_runs: int, load_cls, summarize) -> dict:
    missing = fleet_hosts.missing_prereqs()
    if missing:
        raise RuntimeError(f"cannot build a fleet here: missing {', '.join(missing)}")
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as t, Fleet(bins, n_hosts, Path(t)) as fleet:
        tmp = Path(t)
        log(f"Fleet: {n_hosts} hosts up ({', '.join(f'{h.name} {h.ip}' for h in fleet.hosts)})")
        for h in fleet.hosts:
            d = host_deploy(fleet, h, "r0")
            if not d.ok:
                raise RuntimeError(f"first deploy on {h.name}: {d.note}")
        config = fleet.operator_config(CANARY, MAX_PARALLEL)
        out = {"meta": {"hosts": n_hosts, "canary": CANARY, "max_parallel": MAX_PARALLEL, "deploys": deploys,
                        "failing_runs": failing_runs, "component": fleet.hosts[0].component(),
                        "degrade_stabilize": DEGRADE_STABILIZE}}
        log(f"\n{deploys} fleet deploys under load on every host")
        out["fleet"], runs = phase_fleet(fleet, config, load_cls, summarize, tmp, deploys)
        current = runs[-1].release
        log(f"\n{deploys} single-host deploys on h1 under the same load")
        out["single"] = phase_single(fleet, load_cls, summarize, tmp, deploys, current)
        h2, last = fleet.hosts[1], fleet.hosts[-1]
        log(f"\n{failing_runs} fleet deploys with {h2.name} never healthy (late-fail)")
        out["late_fail"] = phase_failing(
            "late-fail", fleet, config, load_cls, tmp, failing_runs, current,
            lambda: fleet.reconfigure(h2, env={"DEMO_NEVER_HEALTHY": "1"}),
            lambda: fleet.reconfigure(h2, env={}))
        log(f"\n{failing_runs} fleet deploys with stabilize {DEGRADE_STABILIZE} and {last.name} degrading (degrade)")

        def degrade_setup():
            for h in fleet.hosts:
                fleet.reconfigure(h, env={"DEMO_FAIL_AFTER_MS": "300"} if h is last else {},
                                  stabilize=DEGRADE_STABILIZE)

        def degrade_teardown():
            for h in fleet.hosts:
                fleet.reconfigure(h, env={}, stabilize="0s")

        out["degrade"] = phase_failing("degrade", fleet, config, load_cls, tmp, failing_runs, current,
                                       degrade_setup, degrade_teardown)
        for h in fleet.hosts:  # the clients' last word: every host answers with the old release
            out.setdefault("version_after", {})[h.name] = http_get_at(h.ip, "/version")
        out["projection_20"] = project(20, out["fleet"], out["single"])
        out["fleet_over_single"] = _ratio(out["fleet"], out["single"])
        return out


def http_get_at(ip: str, path: str) -> str:
    conn = http.client.HTTPConnection(ip, PUBLIC_PORT, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode(errors="replace")
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    finally:
        conn.close()


def _ratio(fleet: dict, single: dict) -> float | None:
    times = [r["breakdown"]["total_ms"] / 1000 for r in fleet["runs"]]
    s = single.get("deploy_seconds_median")
    return round(statistics.median(times) / s, 2) if times and s else None


def failed_goals(r: dict) -> list[str]:
    problems = []
    if r["fleet"]["failed"] or r["fleet"]["deploys_ok"] != r["fleet"]["deploys"]:
        problems.append(f"fleet deploys: {r['fleet']['failed']} failed requests, "
                        f"{r['fleet']['deploys_ok']}/{r['fleet']['deploys']} deploys ok")
    for name in ("late_fail", "degrade"):
        p = r[name]
        worst = max(p["all_old_events_ms"]["max"] or 0, p["all_old_clients_ms"]["max"] or 0)
        if p["rolled_back_runs"] != len(p["runs"]) or worst >= GOAL_ALL_OLD_S * 1000:
            problems.append(f"{name}: {p['rolled_back_runs']}/{len(p['runs'])} runs rolled back, "
                            f"worst verdict-to-all-old {worst} ms (goal < {GOAL_ALL_OLD_S * 1000:.0f})")
    return problems


def print_tables(r: dict) -> None:
    f, s, m = r["fleet"], r["single"], r["meta"]
    ka, nc = m["load"]["keepalive_clients_per_host"], m["load"]["new_connection_clients_per_host"]
    log(f"\nFleet: {m['hosts']} hosts, canary {m['canary']}, max_parallel {m['max_parallel']}; "
        f"{ka + nc} clients per host ({ka} keep-alive, {nc} new connections)")
    head = f"{'deploys':<22}{'ok':>7}{'requests':>10}{'failed':>8}{'s p50':>8}{'s max':>8}" \
           f"{'ssh conns/run':>15}{'sessions/run':>14}"
    log(head)
    log("-" * len(head))
    times = [x["breakdown"]["total_ms"] / 1000 for x in f["runs"]]
    log(f"{'fleet deploy':<22}{str(f['deploys_ok']) + '/' + str(f['deploys']):>7}{f['requests']:>10}{f['failed']:>8}"
        f"{statistics.median(times):>8.2f}{max(times):>8.2f}{f['ssh']['connections']['median']:>15}"
        f"{f['ssh']['sessions']['median']:>14}")
    log(f"{'single-host deploy':<22}{str(s['deploys_ok']) + '/' + str(s['deploys']):>7}{s['requests']:>10}"
        f"{s['failed']:>8}{s['deploy_seconds_median']:>8.2f}{s['deploy_seconds_max']:>8.2f}{'-':>15}{'-':>14}")
    log(f"fleet / single-host (medians): x{r['fleet_over_single']}; first fleet deploy (uploads the artifact): "
        f"{times[0]:.2f}s")
    b = [x["breakdown"] for x in f["runs"][1:] or f["runs"]]
    log(f"fleet deploy, median ms: lock+preflight+upload check {statistics.median(x['before_wave_1_ms'] for x in b)}, "
        f"canary wave {statistics.median(x['waves_ms'][0] for x in b)}, later wave "
        f"{statistics.median(w for x in b for w in x['waves_ms'][1:])}, process start/exit "
        f"{statistics.median(x['outside_run_ms'] for x in b)}; ssh processes peak {f['ssh']['ssh_processes_peak']}")
    log(f"\n{'failing runs':<26}{'rolled back':>12}{'all old, events ms':>22}{'all old, clients ms':>22}"
        f"{'run end ms':>12}  failed requests")
    for name, label in (("late_fail", "h2 never healthy"), ("degrade", "h3 degrades, stab 3 s")):
        p = r[name]
        failed = {}
        for x in p["runs"]:
            for host, c in x["failed_requests"].items():
                failed[host] = failed.get(host, 0) + c
        ev, cl, end = p["all_old_events_ms"], p["all_old_clients_ms"], p["run_end_after_verdict_ms"]
        log(f"{label:<26}{str(p['rolled_back_runs']) + '/' + str(len(p['runs'])):>12}"
            f"{str(ev['median']) + ' / ' + str(ev['max']):>22}{str(cl['median']) + ' / ' + str(cl['max']):>22}"
            f"{str(end['median']):>12}  {' '.join(f'{h}:{c}' for h, c in failed.items())}")
    log("  (median / max over the runs; from the failing host's verdict; run end = run_finished)")
    p = r["projection_20"]
    log(f"\n20 hosts, projected: {p['waves']} waves, ~{p['total_s']} s per fleet deploy (+ stabilize per wave), "
        f"{p['ssh_connections']} ssh connections and {p['ssh_sessions']} sessions per run, "
        f"{p['operator_ssh_processes_held']} ssh processes held on the operator's side")

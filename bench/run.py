"""`python -m bench.run`: every system in its own lab, side by side, measured interleaved; JSON + docs.

What lives here: the plan (quick / full), the order of measurement (for each
figure, each round visits every system, in an order rotated per round, so a
burst of load from elsewhere on the machine hits all systems alike), the
machine-load record, writing bench/results/<timestamp>.json and latest.json,
and calling the report. Labs are always torn down (ExitStack; SIGTERM too).

Examples:
  sudo make bench                              # full run, about 25 min
  sudo make bench BENCH_ARGS=--quick           # a few minutes
  .venv/bin/python -m bench.run --systems routed --figures new_conn --rounds 1 --seconds 1 \\
      --levels 1 --results-dir /tmp/r --docs-dir /tmp/d
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench import control, load, report
from bench.systems import ALL_SYSTEMS, REPO, System, SystemError_, V6nat, write_configs
from v6nat_ebpf.lab import LabError

log = logging.getLogger("bench.run")

TRAFFIC_FIGURES = ("new_conn", "keepalive", "latency", "tcp", "udp")
OTHER_FIGURES = ("run_to_answer", "programming", "datapath")
DATAPATH_SCRIPT = REPO / "bench" / "datapath_ns_per_packet.py"
# Published ports loaded for the micro-benchmarks: the lookup must not care.
DATAPATH_DNAT_ENTRIES = (5000, 50_000)


@dataclass(frozen=True)
class Plan:
    """How much to measure. Every traffic run lasts `seconds`."""

    mode: str
    rounds: int
    seconds: int
    levels: tuple[int, ...]
    answer_runs: int
    program_ports: tuple[int, ...]
    latency_rate_per_s: int = 2000
    connections: int = 32
    figures: tuple[str, ...] = TRAFFIC_FIGURES + OTHER_FIGURES
    systems: tuple[str, ...] = tuple(cls.name for cls in ALL_SYSTEMS)


QUICK = Plan("quick", rounds=2, seconds=2, levels=(1, 5000, 50_000), answer_runs=10, program_ports=(5000,))
FULL = Plan("full", rounds=7, seconds=3, levels=(1, 1000, 5000, 50_000), answer_runs=50,
            program_ports=(5000, 50_000))


class Recorder:
    """Collects samples and errors; one JSON document at the end."""

    def __init__(self) -> None:
        self.samples: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.load_probes: list[dict[str, float]] = []
        self.control: dict[str, Any] = {}
        self.datapath: dict[str, Any] = {}

    def sample(self, metric: str, system: str, ports: int, rnd: int, value: float, **extra: Any) -> None:
        self.samples.append({"metric": metric, "system": system, "ports": ports, "round": rnd,
                             "value": value, **extra})

    def error(self, what: str, exc: BaseException) -> None:
        # A tool's stderr can be a whole traceback: its last line says what happened.
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        msg = f"{what}: {lines[0] if lines else type(exc).__name__}"
        if len(lines) > 1:
            msg += f" ... {lines[-1]}"
        log.warning("%s", msg)
        self.errors.append(msg)

    def probe_load(self, when: str, seconds: float = 2.0) -> None:
        """Machine CPU busy while this harness sends nothing: the other tenants' load."""
        before = load.CpuTimes.now()
        time.sleep(seconds)
        spent = load.CpuTimes.now() - before
        load1, load5, _ = os.getloadavg()
        self.load_probes.append({"when": when, "busy_cores": round(spent.busy_s / seconds, 2),
                                 "loadavg1": load1, "loadavg5": load5, "t": time.time()})
        log.info("machine load %s: %.2f cores busy while idle here, loadavg %.2f", when,
                 spent.busy_s / seconds, load1)


def traffic_figures(plan: Plan) -> dict[str, Callable[[System, Recorder, int], None]]:
    """figure name -> measure(system, recorder, round) at the systems' current port level."""

    def wrk_with_cpu(s: System, rec: Recorder, rnd: int, metric: str, close: bool) -> None:
        """Rate, and CPU per request: wrk's own plus the server side's (robust to other tenants' load)."""
        t = s.target()
        before = s.server_cpu_s()
        r = load.wrk(s.lab.client_ns, t.url, plan.seconds, plan.connections, close=close)
        server_s = s.server_cpu_s() - before
        rec.sample(f"{metric}_per_s", s.name, s.ports, rnd, r.requests_per_s, socket_errors=r.socket_errors)
        if r.requests:
            rec.sample(f"{metric}_cpu_us", s.name, s.ports, rnd, (r.cpu_s + server_s) / r.requests * 1e6,
                       client_cpu_s=r.cpu_s, server_cpu_s=server_s)

    def new_conn(s: System, rec: Recorder, rnd: int) -> None:
        wrk_with_cpu(s, rec, rnd, "new_conn", close=True)

    def keepalive(s: System, rec: Recorder, rnd: int) -> None:
        wrk_with_cpu(s, rec, rnd, "keepalive_req", close=False)

    def latency(s: System, rec: Recorder, rnd: int) -> None:
        t = s.target()
        r = load.wrk(s.lab.client_ns, t.url, plan.seconds * 2, 10, rate_per_s=plan.latency_rate_per_s)
        rec.sample("latency_p50_ms", s.name, s.ports, rnd, r.p50_ms, rate_per_s=r.requests_per_s)
        rec.sample("latency_p99_ms", s.name, s.ports, rnd, r.p99_ms, rate_per_s=r.requests_per_s)

    def tcp(s: System, rec: Recorder, rnd: int) -> None:
        t = s.target()
        for streams in (1, 4):
            r = load.iperf3_tcp(s.lab.client_ns, str(t.host), t.iperf_port, plan.seconds, streams)
            rec.sample(f"tcp{streams}_gbit_per_s", s.name, s.ports, rnd, r.gbit_per_s, retransmits=r.retransmits)
            rec.sample(f"tcp{streams}_softirq_pct_per_gbit", s.name, s.ports, rnd,
                       100 * r.softirq_cores / r.gbit_per_s if r.gbit_per_s > 0 else 0.0)

    def udp(s: System, rec: Recorder, rnd: int) -> None:
        t = s.target()
        r = load.iperf3_udp(s.lab.client_ns, str(t.host), t.iperf_port, plan.seconds)
        rec.sample("udp_pps", s.name, s.ports, rnd, r.received_pps, sent_pps=r.sent_pps,
                   lost_fraction=r.lost_fraction)

    return {"new_conn": new_conn, "keepalive": keepalive, "latency": latency, "tcp": tcp, "udp": udp}


def interleaved(systems: list[System], rounds: int, measure: Callable[[System, Recorder, int], None],
                rec: Recorder, what: str) -> None:
    """Each round visits every system; the starting system rotates per round."""
    for rnd in range(rounds):
        k = rnd % len(systems)
        for s in systems[k:] + systems[:k]:
            try:
                measure(s, rec, rnd)
            except (load.LoadError, SystemError_, LabError) as e:
                rec.error(f"{what} on {s.name} (round {rnd})", e)


def measure_traffic(plan: Plan, systems: list[System], rec: Recorder) -> None:
    figures = traffic_figures(plan)
    for name in ("keepalive", "latency", "tcp", "udp"):
        if name in plan.figures:
            log.info("figure %s, %d rounds", name, plan.rounds)
            interleaved(systems, plan.rounds, figures[name], rec, name)
    if "new_conn" not in plan.figures:
        return
    for level in plan.levels:
        at_level = []
        for s in systems:
            if level > s.max_ports:
                continue
            try:
                s.publish(level)
                at_level.append(s)
            except (SystemError_, LabError, subprocess.CalledProcessError) as e:
                rec.error(f"publishing {level} ports on {s.name}", e)
        log.info("figure new_conn at %d published ports on %s", level, [s.name for s in at_level])
        interleaved(at_level, plan.rounds, figures["new_conn"], rec, f"new_conn at {level} ports")


def measure_control(plan: Plan, systems: list[System], rec: Recorder) -> None:
    if "run_to_answer" in plan.figures:
        rec.control["run_to_answer"] = {}
        for s in systems:
            if s.name == "nftables":
                continue  # a hand-written ruleset: nothing follows `docker run`
            try:
                s.publish(1)
                result = control.run_to_answer(s, plan.answer_runs)
                rec.control["run_to_answer"][s.name] = asdict(result)
                log.info("%s: docker run -> answering median %.1f ms, p99 %.1f ms", s.name, result.median_ms,
                         result.p99_ms)
            except (SystemError_, LabError) as e:
                rec.error(f"run_to_answer on {s.name}", e)
    v6 = next((s for s in systems if isinstance(s, V6nat)), None)
    if "programming" in plan.figures and v6 is not None:
        rec.control["programming"] = []
        for n in plan.program_ports:
            try:
                p = control.program_ports(v6, n)
                rec.control["programming"].append(asdict(p))
                log.info("v6nat: %d ports: docker run %.2f s, then answering after %.3f s", n, p.docker_run_s,
                         p.program_s)
            except (SystemError_, LabError) as e:
                rec.error(f"programming {n} ports on v6nat", e)


def measure_datapath(plan: Plan, rec: Recorder) -> None:
    """The datapath script's BPF_PROG_TEST_RUN figures (its table, parsed) at each DATAPATH_DNAT_ENTRIES."""
    if not DATAPATH_SCRIPT.exists():
        rec.datapath = {"error": f"{DATAPATH_SCRIPT.relative_to(REPO)} is not there"}
        return
    rows: dict[str, dict[str, Any]] = {}
    notes = []
    for entries in DATAPATH_DNAT_ENTRIES:
        argv = [sys.executable, str(DATAPATH_SCRIPT), "--dnat-entries", str(entries)]
        if plan.mode == "quick":
            argv.append("--quick")
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO)
        except subprocess.TimeoutExpired:
            rec.datapath = {"error": f"{DATAPATH_SCRIPT.name} ran over 600 s"}
            return
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            rec.datapath = {"error": f"{DATAPATH_SCRIPT.name} exit {done.returncode}: {lines[-1] if lines else ''}"}
            return
        for line in done.stdout.splitlines():
            m = re.match(r"^(.*?)\s+(repeat|single)\s+(\d+(?:\.\d+)?)$", line.strip())
            if m:
                row = rows.setdefault(m[1], {"path": m[1], "method": m[2]})
                row[f"ns_per_packet_{entries}_ports"] = float(m[3])
            elif line.startswith("("):
                notes.append(line.strip("()"))
    rec.datapath = {"rows": list(rows.values()), "notes": notes}


def machine_facts() -> dict[str, Any]:
    def first_line(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?")
    mem_kb = int(next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines()
                      if ln.startswith("MemTotal")))
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "docker": first_line(["dockerd", "--version"]), "nft": first_line(["nft", "--version"]),
        "ip6tables": first_line(["ip6tables", "--version"]), "wrk": first_line(["wrk", "-v"]),
        "iperf3": first_line(["iperf3", "--version"]),
        "commit": first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "uncommitted_files": len(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"],
                                                capture_output=True, text=True).stdout.splitlines()),
    }


def run(plan: Plan, results_dir: Path, docs_dir: Path | None) -> dict[str, Any]:
    rec = Recorder()
    started = time.time()
    systems_info: dict[str, Any] = {}
    rec.probe_load("before")
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="v6nat-bench-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        conf = write_configs(workdir)
        systems: list[System] = []
        for cls in ALL_SYSTEMS:
            if cls.name not in plan.systems:
                continue
            s = cls(conf)
            own = ExitStack()  # a system that fails to start is torn down at once
            try:
                s.start(own)
            except (SystemError_, LabError) as e:
                own.close()
                rec.error(f"starting {cls.name}", e)
                systems_info[cls.name] = {"title": cls.title, "error": rec.errors[-1].split(": ", 1)[1]}
            else:
                stack.enter_context(own)
                systems.append(s)
        if systems:
            measure_traffic(plan, systems, rec)
            rec.probe_load("after traffic")
            measure_control(plan, systems, rec)
        for s in systems:
            systems_info[s.name] = s.describe()
    if "datapath" in plan.figures:
        measure_datapath(plan, rec)
    rec.probe_load("after")
    doc = {
        "meta": {
            "started": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(timespec="seconds"),
            "duration_s": round(time.time() - started, 1),
            "plan": asdict(plan),
            "machine": machine_facts(),
            "load": rec.load_probes,
        },
        "systems": systems_info,
        "samples": rec.samples,
        "control": rec.control,
        "datapath": rec.datapath,
        "errors": rec.errors,
    }
    write_results(doc, results_dir)
    if docs_dir is not None:
        report.generate(doc, docs_dir)
    return doc


def write_results(doc: dict[str, Any], results_dir: Path) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = doc["meta"]["started"].replace(":", "").replace("+0000", "Z")
    path = results_dir / f"{stamp}.json"
    text = json.dumps(doc, indent=1) + "\n"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    shutil.copyfile(path, results_dir / "latest.json")
    log.info("results in %s", path)
    return path


def parse_args(argv: list[str] | None) -> tuple[Plan, Path, Path | None]:
    p = argparse.ArgumentParser(prog="python -m bench.run",
                                description="Benchmark v6nat against Docker's ip6tables NAT, docker-proxy, nftables "
                                            "and routed no-NAT, each in its own lab, side by side, interleaved; "
                                            "write bench/results/*.json and docs/benchmarks.md.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:" + __doc__.split("Examples:")[1])
    p.add_argument("--quick", action="store_true", help="fewer rounds, shorter runs, fewer levels (a few minutes)")
    p.add_argument("--systems", help=f"comma list out of {','.join(c.name for c in ALL_SYSTEMS)}")
    p.add_argument("--figures", help=f"comma list out of {','.join(TRAFFIC_FIGURES + OTHER_FIGURES)}")
    p.add_argument("--rounds", type=int, help="rounds per figure (each visits every system)")
    p.add_argument("--seconds", type=int, help="duration of each traffic run")
    p.add_argument("--levels", help="published-port levels for new_conn, e.g. 1,1000,5000")
    p.add_argument("--answer-runs", type=int, help="containers started for run_to_answer")
    p.add_argument("--results-dir", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--docs-dir", type=Path, default=REPO / "docs", help="where benchmarks.md and img/ go")
    p.add_argument("--no-docs", action="store_true", help="write the JSON only")
    a = p.parse_args(argv)
    plan = QUICK if a.quick else FULL
    changes: dict[str, Any] = {}
    if a.systems:
        changes["systems"] = tuple(_choices(a.systems, [c.name for c in ALL_SYSTEMS], p))
    if a.figures:
        changes["figures"] = tuple(_choices(a.figures, list(TRAFFIC_FIGURES + OTHER_FIGURES), p))
    if a.levels:
        try:
            changes["levels"] = tuple(int(x) for x in a.levels.split(","))
        except ValueError:
            p.error(f"--levels: not a comma list of integers: {a.levels}")
    for field in ("rounds", "seconds", "answer_runs"):
        value = getattr(a, field)
        if value is not None:
            if value <= 0:
                p.error(f"--{field.replace('_', '-')} must be positive")
            changes[field] = value
    return replace(plan, **changes), a.results_dir, None if a.no_docs else a.docs_dir


def _choices(text: str, allowed: list[str], parser: argparse.ArgumentParser) -> list[str]:
    chosen = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in chosen if x not in allowed]
    if bad:
        parser.error(f"unknown {', '.join(bad)} (choose from {', '.join(allowed)})")
    return chosen


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("docker").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    plan, results_dir, docs_dir = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: must run as root (try: sudo make bench)", file=sys.stderr)
        return 1
    doc = run(plan, results_dir, docs_dir)
    if doc["errors"]:
        print(f"bench: finished with {len(doc['errors'])} errors (listed in the results JSON)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Results JSON -> docs/benchmarks.md and docs/img/bench-*.png.

What lives here: summaries (min/median/max over rounds, ratio to v6nat), the
targets of issue 6 checked against one run, the Markdown, and the matplotlib
plots. Pure over the results document: no lab, no subprocess.
Usable alone: `python -m bench.report bench/results/latest.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REFERENCE = "v6nat"
SYSTEM_ORDER = ("v6nat", "v6nat-policy", "routed", "ip6tables", "nftables", "docker-proxy")


@dataclass(frozen=True)
class Metric:
    """How a metric is shown: its name in tables, unit, and whether higher is better."""

    key: str
    title: str
    unit: str
    higher_is_better: bool
    digits: int = 0


METRICS = (
    Metric("new_conn_per_s", "New TCP connections per second (wrk -t1 -c32, `Connection: close`)", "conn/s", True),
    Metric("new_conn_cpu_us", "CPU per new connection (client + server side)", "µs of CPU per connection", False, 1),
    Metric("keepalive_req_per_s", "Keep-alive requests per second (wrk -t1 -c32)", "req/s", True),
    Metric("keepalive_req_cpu_us", "CPU per keep-alive request (client + server side)", "µs of CPU per request",
           False, 2),
    Metric("latency_p50_ms", "Latency p50 at a fixed rate (keep-alive)", "ms", False, 3),
    Metric("latency_p99_ms", "Latency p99 at a fixed rate (keep-alive)", "ms", False, 3),
    Metric("tcp1_gbit_per_s", "Bulk TCP, 1 stream (iperf3)", "Gbit/s", True, 2),
    Metric("tcp4_gbit_per_s", "Bulk TCP, 4 streams (iperf3 -P 4)", "Gbit/s", True, 2),
    Metric("tcp1_softirq_pct_per_gbit", "softirq CPU per Gbit/s, 1 stream", "% of a core per Gbit/s", False, 2),
    Metric("tcp4_softirq_pct_per_gbit", "softirq CPU per Gbit/s, 4 streams", "% of a core per Gbit/s", False, 2),
    Metric("udp_pps", "UDP datagrams received per second (iperf3 -u -l 64 -b 0)", "packets/s", True),
)
METRIC_BY_KEY = {m.key: m for m in METRICS}


@dataclass(frozen=True)
class Summary:
    """One metric for one system at one published-port level, over the rounds."""

    n: int
    min: float
    median: float
    max: float


def summarise(samples: Iterable[dict[str, Any]]) -> dict[tuple[str, str, int], Summary]:
    """(metric, system, ports) -> min/median/max of the rounds."""
    groups: dict[tuple[str, str, int], list[float]] = {}
    for s in samples:
        groups.setdefault((s["metric"], s["system"], s["ports"]), []).append(float(s["value"]))
    return {k: Summary(len(v), min(v), statistics.median(v), max(v)) for k, v in groups.items()}


def ratio(a: Summary | None, b: Summary | None) -> float | None:
    if a is None or b is None or b.median == 0:
        return None
    return a.median / b.median


@dataclass(frozen=True)
class Target:
    """One target of issue 6 and what this run measured for it."""

    what: str
    wanted: str
    measured: str
    met: bool | None  # None: not measured in this run


def paired_ratio(samples: list[dict[str, Any]], a: tuple[str, str, int], b: tuple[str, str, int]) -> float | None:
    """Median over rounds of a/b, each round's two runs taken minutes apart at most (and usually
    back to back), so a burst of load from elsewhere hits both; None if no round has both."""
    by_round: dict[tuple[str, str, int], dict[int, float]] = {a: {}, b: {}}
    for x in samples:
        key = (x["metric"], x["system"], x["ports"])
        if key in by_round:
            by_round[key][x["round"]] = float(x["value"])
    ratios = [v / by_round[b][r] for r, v in by_round[a].items() if by_round[b].get(r)]
    return statistics.median(ratios) if ratios else None


def check_targets(doc: dict[str, Any]) -> list[Target]:
    s = summarise(doc["samples"])
    out: list[Target] = []

    def measured(a: tuple[str, str, int], b: tuple[str, str, int]) -> float | None:
        if a[2] == b[2]:
            return paired_ratio(doc["samples"], a, b)
        # Two levels are minutes apart: divide each by routed measured in the same rounds, so
        # that a change in the machine's load between the levels cancels out.
        ra = paired_ratio(doc["samples"], a, (a[0], "routed", a[2]))
        rb = paired_ratio(doc["samples"], b, (b[0], "routed", b[2]))
        return ra / rb if ra and rb else ratio(s.get(a), s.get(b))

    def ratio_target(what: str, a: tuple[str, str, int], b: tuple[str, str, int], least: float) -> None:
        r = measured(a, b)
        out.append(Target(what, f">= {least:.2f}x", "not measured" if r is None else f"{r:.2f}x",
                          None if r is None else r >= least))

    def cost_target(what: str, a: tuple[str, str, int], b: tuple[str, str, int], most: float) -> None:
        r = measured(a, b)
        out.append(Target(what, f"<= {most:.2f}x", "not measured" if r is None else f"{r:.2f}x",
                          None if r is None else r <= most))

    ratio_target("v6nat at 5,000 ports vs routed, new connections",
                 ("new_conn_per_s", "v6nat", 5000), ("new_conn_per_s", "routed", 5000), 0.95)
    ratio_target("v6nat at 50,000 ports vs v6nat at 1, new connections",
                 ("new_conn_per_s", "v6nat", 50_000), ("new_conn_per_s", "v6nat", 1), 0.95)
    # The same two targets in CPU per connection, which other tenants' load moves far less than a rate.
    cost_target("(companion) CPU per new connection, v6nat at 5,000 ports vs routed",
                ("new_conn_cpu_us", "v6nat", 5000), ("new_conn_cpu_us", "routed", 5000), 1 / 0.95)
    cost_target("(companion) CPU per new connection, v6nat at 50,000 ports vs v6nat at 1",
                ("new_conn_cpu_us", "v6nat", 50_000), ("new_conn_cpu_us", "v6nat", 1), 1 / 0.95)
    # Issue 16: source policy (1,000 allowlist prefixes on every mapping, 10,000 bans) costs new flows almost nothing.
    ratio_target("v6nat with source policy vs without, new connections at 5,000 ports",
                 ("new_conn_per_s", "v6nat-policy", 5000), ("new_conn_per_s", "v6nat", 5000), 0.95)
    cost_target("(companion) CPU per new connection, v6nat with source policy vs without, 5,000 ports",
                ("new_conn_cpu_us", "v6nat-policy", 5000), ("new_conn_cpu_us", "v6nat", 5000), 1 / 0.95)
    for m in ("tcp1_gbit_per_s", "tcp4_gbit_per_s"):
        ratio_target(f"v6nat vs routed, {METRIC_BY_KEY[m].title}", (m, "v6nat", 1), (m, "routed", 1), 0.95)
    ratio_target("fast path: v6nat vs routed, new connections at 1 port",
                 ("new_conn_per_s", "v6nat", 1), ("new_conn_per_s", "routed", 1), 1.10)
    for rival in ("nftables", "docker-proxy"):
        behind = []
        measured = 0
        for (metric, system, ports), mine in s.items():
            if system != REFERENCE:
                continue
            theirs = s.get((metric, rival, ports))
            if theirs is None:
                continue
            measured += 1
            better = mine.median >= theirs.median if METRIC_BY_KEY[metric].higher_is_better \
                else mine.median <= theirs.median
            if not better:
                behind.append(f"{metric}@{ports}")
        out.append(Target(f"v6nat ahead of {rival} on every figure", "all",
                          "not measured" if not measured else
                          ("ahead on all " + str(measured)) if not behind else "behind on " + ", ".join(behind),
                          None if not measured else not behind))
    answer = doc.get("control", {}).get("run_to_answer", {}).get(REFERENCE)
    out.append(Target("docker run -> port answering, p99", "< 100 ms",
                      "not measured" if not answer or not answer["samples_ms"] else
                      f"{answer['p99_ms']:.1f} ms (median {answer['median_ms']:.1f} ms, {answer['runs']} runs,"
                      f" {answer['failures']} failed)",
                      None if not answer or not answer["samples_ms"] else
                      answer["p99_ms"] < 100 and answer["failures"] == 0))
    prog = {p["ports"]: p for p in doc.get("control", {}).get("programming", [])}
    p5 = prog.get(5000)
    out.append(Target("5,000 mappings programmed", "< 1 s",
                      "not measured" if p5 is None else f"{p5['program_s']:.3f} s after docker run returned",
                      None if p5 is None else p5["program_s"] < 1.0))
    return out


# ---------------------------------------------------------------- Markdown

def _fmt(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def _systems_in(summaries: dict[tuple[str, str, int], Summary]) -> list[str]:
    present = {k[1] for k in summaries}
    return [x for x in SYSTEM_ORDER if x in present] + sorted(present - set(SYSTEM_ORDER))


def _ratio_cell(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}x"


def metric_table(metric: Metric, summaries: dict[tuple[str, str, int], Summary]) -> list[str]:
    rows = sorted(((k[2], k[1]) for k in summaries if k[0] == metric.key),
                  key=lambda pk: (pk[0], SYSTEM_ORDER.index(pk[1]) if pk[1] in SYSTEM_ORDER else 99))
    if not rows:
        return []
    better = "higher" if metric.higher_is_better else "lower"
    lines = [f"### {metric.title}", "",
             f"{metric.unit}, {better} is better; the ratios divide the medians at the same level.", "",
             "| published ports | system | rounds | min | median | max | v6nat / this | this / routed |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for ports, system in rows:
        sm = summaries[(metric.key, system, ports)]
        vs_v6nat = ratio(summaries.get((metric.key, REFERENCE, ports)), sm)
        vs_routed = ratio(sm, summaries.get((metric.key, "routed", ports)))
        lines.append(f"| {ports:,} | {system} | {sm.n} | {_fmt(sm.min, metric.digits)} | "
                     f"**{_fmt(sm.median, metric.digits)}** | {_fmt(sm.max, metric.digits)} | "
                     f"{_ratio_cell(vs_v6nat)} | {_ratio_cell(vs_routed)} |")
    return lines + [""]


def load_note(doc: dict[str, Any]) -> str:
    probes = doc["meta"].get("load", [])
    if not probes:
        return "not recorded"
    busy = [p["busy_cores"] for p in probes]
    la = [p["loadavg1"] for p in probes]
    cores = doc["meta"]["machine"].get("cores") or 0
    each = ", ".join(f"{p['when']}: {p['busy_cores']:.2f}" for p in probes)
    return (f"CPU busy while this harness sent nothing (other tenants): {min(busy):.2f}-{max(busy):.2f} of {cores} "
            f"cores over {len(probes)} probes ({each}); 1-min load average {min(la):.2f}-{max(la):.2f}.")


def render(doc: dict[str, Any], img_rel: str) -> str:
    meta, plan = doc["meta"], doc["meta"]["plan"]
    m = meta["machine"]
    summaries = summarise(doc["samples"])
    out = [
        "# Benchmarks",
        "",
        "Generated by `sudo make bench` (`bench/run.py`) from "
        f"`bench/results/{meta['started'].replace(':', '').replace('+0000', 'Z')}.json` "
        "(also `bench/results/latest.json`); do not edit by hand.",
        "Every system runs in its own hermetic lab (client netns \"internet\" 2001:db8::/32 -> host netns with its own "
        "dockerd -> container on `fd00:ca7e:d09e::/64`), all labs up side by side; each figure is measured in "
        f"{plan['rounds']} rounds, every round visiting every system in a rotated order, so load from elsewhere on "
        "the machine hits all systems alike. **Compare ratios within this run, not absolute figures across runs.**",
        "",
        f"- Run: {meta['started']}, mode `{plan['mode']}`, {meta['duration_s'] / 60:.1f} min, "
        f"{plan['seconds']:g} s per traffic run; code at commit {m.get('commit', '?')} with "
        f"{m.get('uncommitted_files', '?')} files changed on top.",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, kernel {m['kernel']}; {m['docker']}; "
        f"{m['nft']}; {m['ip6tables']}; {m['wrk'].split(' Copyright')[0]}; {m['iperf3']}.",
        f"- Machine load: {load_note(doc)}",
        "",
        "## Systems",
        "",
        "| system | what | notes |",
        "| --- | --- | --- |",
    ]
    for name in SYSTEM_ORDER:
        info = doc["systems"].get(name)
        if info is None:
            continue
        notes = "; ".join(info.get("notes", []))
        if "error" in info:
            notes = f"**not measured: {info['error']}**"
        out.append(f"| {name} | {info['title']} | {notes.replace('|', '/')} |")
    out += ["", "## Targets (issue 6), as ratios in this run", "",
            "Two systems at the same level: the median over rounds of the ratio within each round (the two runs "
            "sit next to each other in time). Two levels of one system (minutes apart): each level's ratio to "
            "routed in the same rounds, divided, so a change of the machine's load in between cancels out.", "",
            "| target | wanted | measured | met |", "| --- | --- | --- | --- |"]
    for t in check_targets(doc):
        met = "—" if t.met is None else ("yes" if t.met else "**no**")
        out.append(f"| {t.what} | {t.wanted} | {t.measured} | {met} |")
    out += ["", "What was tried to reach these targets, what each step gained, and why the fast-path target is out of "
            "reach on this topology: [performance.md](performance.md).",
            "", "## Data plane", "",
            f"![new connections per second against published ports]({img_rel}/bench-new-conn.png)", "",
            f"![throughput]({img_rel}/bench-throughput.png)", ""]
    for metric in METRICS:
        out += metric_table(metric, summaries)
    out += (control_section(doc) + footprint_section(FOOTPRINT_RESULTS) + datapath_section(doc) + hostlocal_section()
            + method_section(doc))
    if doc["errors"]:
        out += ["## Errors in this run", ""] + [f"- {e}" for e in doc["errors"]] + [""]
    return "\n".join(out)


FOOTPRINT_RESULTS = Path(__file__).resolve().parent / "results" / "footprint-latest.json"


def replace_section(page: str, section: list[str]) -> str:
    """`page` with the section headed by section[0] replaced by `section` (up to the next heading of the
    same or a higher level), or with `section` appended when the page has no such heading."""
    heading = section[0]
    level = len(heading) - len(heading.lstrip("#"))
    lines = page.rstrip("\n").split("\n")
    if heading not in lines:
        return "\n".join(lines + [""] + section).rstrip("\n") + "\n"
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith("#") and len(lines[i]) - len(lines[i].lstrip("#")) <= level), len(lines))
    return "\n".join(lines[:start] + section + lines[end:]).rstrip("\n") + "\n"


def footprint_section(path: Path) -> list[str]:
    """The daemon's memory and restart figures of `make bench-footprint` (bench/footprint.py), when it ran."""
    if not path.exists():
        return []
    fp = json.loads(path.read_text())
    daemon, flows, meta = fp["daemon"], fp["flows"], fp["meta"]
    out = ["### v6nat: memory, start and restart (`make bench-footprint`)", "",
           f"From `bench/results/footprint-{meta['started']}.json` (one run, {meta['started']}; 1-min load average "
           f"{meta['load_before'][0]} before, {meta['load_after'][0]} after: a busy machine inflates the times). "
           "The daemon compiles nowhere but in a short-lived child at its first start; it adopts the pinned "
           "programs and maps afterwards and never maps LLVM. Mappings are published by Docker (containers of "
           "5,000 ports); *steady* is after two resyncs and GC sweeps; *ready* is `v6nat run` started until "
           "`/readyz` answers 200 (polled every 20 ms with curl).", "",
           f"- First start on an empty pin path (compiles): ready after {daemon['first_start_s']:.2f} s; "
           f"idle RSS {daemon['idle']['VmRSS'] / 1024:.1f} MiB"
           + (f" ({_rss_kinds(daemon['idle'])})." if "anon_kib" in daemon["idle"] else "."), "",
           "| mappings | daemon RSS MiB, steady | peak (VmHWM) MiB | LLVM mapped | ready after restart s (median) | "
           "restarts that compiled | RSS after restarts MiB |",
           "| ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for row in daemon["levels"]:
        out.append(f"| {row['mappings']:,} | {row['VmRSS'] / 1024:.1f} | {row['VmHWM'] / 1024:.1f} | "
                   f"{'yes' if row['llvm_mapped'] else 'no'} | {row['restart_ready_median_s']:.2f} "
                   f"({', '.join(f'{r:.2f}' for r in row['restart_ready_s'])}) | "
                   f"{row.get('restarts_that_compiled', 0)} of {len(row['restart_ready_s'])} | "
                   f"{row['after_restart']['VmRSS'] / 1024:.1f} |")
    if "extrapolated_50000_kib" in daemon:
        out += ["", f"50,000 mappings, extrapolated from the two levels (Docker 20.10 here cannot publish more than "
                f"about 9,000 ports: a socket per port and family, 20,000 open files per process): "
                f"{daemon['extrapolated_50000_kib'] / 1024:.0f} MiB."]
    base = fp.get("baseline_daemon")
    if base:
        out += ["", f"The same steps for `{base['command']}` (the checkout before this one's memory work), in a lab of "
                "its own in the same run:", "",
                "| | idle RSS MiB | " + " | ".join(f"RSS at {r['mappings']:,} MiB" for r in daemon["levels"])
                + " | per mapping | 50,000 extrapolated MiB |",
                "| --- | ---: | " + " | ".join("---:" for _ in daemon["levels"]) + " | ---: | ---: |"]
        for name, d in (("before", base), ("after", daemon)):
            low, high = d["levels"][0], d["levels"][-1]
            slope = ((high["VmRSS"] - low["VmRSS"]) / (high["mappings"] - low["mappings"]) * 1024
                     if high["mappings"] > low["mappings"] else None)
            out.append(f"| {name} | {d['idle']['VmRSS'] / 1024:.1f} | "
                       + " | ".join(f"{r['VmRSS'] / 1024:.1f}" for r in d["levels"])
                       + f" | {f'{slope:,.0f} bytes' if slope is not None else '—'} | "
                       + (f"{d['extrapolated_50000_kib'] / 1024:.0f}" if "extrapolated_50000_kib" in d else "—") + " |")
        out += ["", FOOTPRINT_ANATOMY]
    out += ["", f"`v6nat flows` over {flows['flows']:,} conntrack flows (a private datapath, one SYN per flow): "
            f"{flows['text']['median_s']:.2f} s, `--json` {flows['json']['median_s']:.2f} s (median of "
            f"{len(flows['text']['runs_s'])})."]
    if flows.get("baseline"):
        out.append(f"The same pins read by `{flows['baseline']}`, interleaved run by run: "
                   f"{flows['text']['baseline_median_s']:.2f} s, `--json` {flows['json']['baseline_median_s']:.2f} s "
                   f"({flows['text']['baseline_median_s'] / flows['text']['median_s']:.1f}x and "
                   f"{flows['json']['baseline_median_s'] / flows['json']['median_s']:.1f}x the time).")
    out.append("")
    return out


# What the daemon's memory is made of: measured with tracemalloc, sys._debugmallocstats() and
# /proc/PID/smaps in the daemon at 5,000 mappings (issue 15, 2026-12-05); fixed text, not this run's.
FOOTPRINT_ANATOMY = (
    "What changed and what is left (measured in the daemon at 5,000 mappings with tracemalloc, "
    "`sys._debugmallocstats()` and `/proc/PID/smaps`). *Before*, the daemon imported pyroute2 (about 280 "
    "modules: asyncio, sqlite3, ndb; 11 MiB) and, for its double-NAT check, the Docker SDK (requests, urllib3, "
    "chardet; 11 MiB); it cached each container's whole inspect document (5.9 MB of Python objects for a "
    "container of 5,000 published ports, parsed again at every resync), and the objects it kept from each "
    "parse held Python's 1 MiB arenas of the whole document resident. *After*: netlink through "
    "`v6nat_ebpf/rtnl.py` (stdlib), Docker's version and info through `docker_api`; the cache keeps only what "
    "model and policy read (2.4 MB at 5,000 ports), rebuilt from its own JSON once the document is freed and "
    "kept as it is when a resync finds it unchanged; `__slots__` on the per-mapping values; the reconciler "
    "keeps its table when the new one is equal. Left: about 30 MiB idle, the interpreter and its modules "
    "(10 MiB of Python objects, 5 MiB of the interpreter binary, 3.5 MiB of OpenSSL's libcrypto that "
    "`http.client`, `hashlib` and prometheus-client load), and per mapping about 1 KB of live objects (the "
    "cached bindings 0.5 KB, the reconciler's dnat table 0.2 KB, metrics labels 0.4 KB) plus what the pass "
    "and the resync use and Python's allocator keeps for the next one: each pass derives the whole desired "
    "state again (0.56 KB per mapping at its peak) and each resync parses every container's whole document "
    "(1.2 KB per published port). That is why the slope per mapping stays at 2.4-3.9 KB and 50,000 mappings "
    "extrapolate to about 200 MiB: cutting it further means deriving only what changed (per container) "
    "instead of the whole state at every pass."
)


def _rss_kinds(kib: dict[str, int]) -> str:
    return f"{kib['anon_kib'] / 1024:.1f} MiB anonymous, {kib['file_kib'] / 1024:.1f} MiB of mapped files"


def control_section(doc: dict[str, Any]) -> list[str]:
    ctl = doc.get("control", {})
    out = ["## Control plane", ""]
    answer = ctl.get("run_to_answer", {})
    if answer:
        out += ["### `docker run` returning -> the published port answers HTTP 200 (from the client)", "",
                "The routed system asks the container's own address: its figure is nginx's start-up, the floor.", "",
                "| system | runs | failed | median ms | p99 ms | max ms |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for name in SYSTEM_ORDER:
            a = answer.get(name)
            if a:
                out.append(f"| {name} | {a['runs']} | {a['failures']} | {a['median_ms']:.1f} | {a['p99_ms']:.1f} | "
                           f"{a['max_ms']:.1f} |")
        out.append("")
    prog = ctl.get("programming", [])
    if prog:
        out += ["### v6nat: one container publishing many ports", "",
                "`docker run` time is Docker's own (it binds a reserving socket per port and address family); "
                "*answering after* is the time from `docker run` returning until 64 of the ports spread over the "
                "range (first and last included) all answer HTTP 200 from the client. Docker here cannot publish "
                "more than about 9,000 ports (20,000 open files per process on this machine): past "
                f"{prog[0]['docker_ports'] if prog else 0:,}, the rest are written straight into the dnat map with "
                "the datapath's batch update (*direct*), so the maps hold the full count; the daemon's RSS is "
                "with the Docker-published ones. Memory is read right then.", "",
                "| ports | via Docker | docker run s | answering after s | direct entries | direct write s | "
                "daemon RSS MiB | BPF maps memlock MiB |",
                "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for p in prog:
            memlock = sum(p["map_memlock_bytes"].values())
            out.append(f"| {p['ports']:,} | {p['docker_ports']:,} | {p['docker_run_s']:.2f} | {p['program_s']:.3f} | "
                       f"{p['direct_entries']:,} | {p['direct_write_s']:.3f} | "
                       f"{p['daemon_rss_bytes'] / 2**20:.1f} | {memlock / 2**20:.1f} |")
        out.append("")
        last = prog[-1]["map_memlock_bytes"]
        if last:
            out += [f"Maps at {prog[-1]['ports']:,} ports (bpftool `bytes_memlock`): " +
                    ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in sorted(last.items())), ""]
    return out


HOSTLOCAL_RESULTS = Path(__file__).resolve().parent / "results" / "hostlocal-latest.json"


def hostlocal_section(path: Path = HOSTLOCAL_RESULTS) -> list[str]:
    """Host-local access (issue 14): the cost of one connect() through the socket hooks, from the latest
    `python -m bench.hostlocal_connect` run (a run of its own: it is not part of `make bench`)."""
    out = ["## Host-local connect (socket hooks)", "",
           "From `bench/hostlocal_connect.py` (a run of its own, not part of `make bench`): a process in the lab's "
           "host namespace times blocking TCP `connect()` calls (handshake included, each socket closed with an RST) "
           "to a container that accepts and closes, the three variants side by side in every round in a rotated "
           "order: *published* asks `[host address]:8080` from a process in the hooks' cgroup (connect6 sends it to "
           "the container), *direct* asks the container's address from the same cgroup (the hook runs, nothing to "
           "do), *no hooks* asks the container's address from a process outside the cgroup (no socket hook at all: "
           "a host without v6nat's hooks).", ""]
    if not path.exists():
        return out + ["Not run.", ""]
    r = json.loads(path.read_text())
    out += [f"Run {r['started']}: {r['rounds']} rounds x {r['connects_per_round']:,} connects per variant; "
            f"the hooks translated {r['translated_connects']:,} connects (every published one).", "",
            "| variant | median us per connect | min (round medians) | max | vs no hooks (median of round ratios) |",
            "| --- | ---: | ---: | ---: | ---: |"]
    for name, row in r["rows"].items():
        out.append(f"| {name} | **{row['median_us']:.1f}** | {row['min_us']:.1f} | {row['max_us']:.1f} | "
                   f"{row['vs_no_hooks']:.2f}x |")
    out += ["", f"One host-local connect through v6nat costs {r['published_extra_us']:.1f} us more than a connect "
            "straight to the container without hooks (median over rounds of the per-round difference).", ""]
    return out


def datapath_section(doc: dict[str, Any]) -> list[str]:
    dp = doc.get("datapath") or {}
    out = ["## Datapath micro-benchmarks (BPF_PROG_TEST_RUN)", "",
           "From `bench/datapath_ns_per_packet.py` (the datapath's own script): the program alone on one packet, "
           "in the kernel; *repeat* paths are timed over many runs of the same packet, *single* ones (new flows) "
           "once per packet with the state reset between runs (median, includes the timer's overhead).", ""]
    if not dp:
        return out + ["Not run.", ""]
    if "error" in dp:
        return out + [f"Not measured: {dp['error']}", ""]
    rows = dp.get("rows", [])
    cols = sorted({k for r in rows for k in r if k.startswith("ns_per_packet_")},
                  key=lambda k: int(k.split("_")[3]))
    out += ["| path | method | " + " | ".join(f"ns/packet, {int(c.split('_')[3]):,} ports" for c in cols) + " |",
            "| --- | --- |" + " ---: |" * len(cols)]
    for r in rows:
        out.append(f"| {r['path']} | {r['method']} | " + " | ".join(f"{r[c]:.0f}" if c in r else "—" for c in cols)
                   + " |")
    out.append("")
    out += [f"({n})" for n in dp.get("notes", [])]
    return out + [""]


def method_section(doc: dict[str, Any]) -> list[str]:
    plan = doc["meta"]["plan"]
    return [
        "## Method", "",
        "- Server: one container running nginx (the host's nginx-light through a read-only /usr mount, "
        "`worker_processes 1`, `return 200`, no access log) on port 80 and `iperf3 -s` on 5201, published as "
        "8080/tcp, 5201/tcp and 5201/udp. The \"1 port\" level is these three; higher levels add filler ports.",
        "- Clients run in the lab's client namespace: `wrk -t1 -c32` for 1 thread and 32 connections; new "
        "connections send `Connection: close` so every request is a TCP connection; the fixed-rate latency run "
        f"paces 10 keep-alive connections with wrk's `delay()` hook to about {plan['latency_rate_per_s']} req/s "
        "(below every system's saturation) and reads wrk's latency percentiles (request write to response).",
        "- CPU per request: wrk's own CPU time (from its rusage) plus the server side's: the lab's container cgroup "
        "(`cpuacct.usage`) and, for docker-proxy, its processes. This kernel accounts CPU by tick, so the softirq "
        "work done in a task's context (on veths, the host's forwarding, netfilter and TC programs run there) is "
        "in that task's time. Another tenant's load slows a system's rate but hardly its CPU per request, so this "
        "is the figure to trust when the machine is busy; softirq run from idle or ksoftirqd is missed (a few %).",
        "- Bulk TCP: `iperf3 -c` 1 and 4 streams; softirq CPU is the machine-wide `/proc/stat` softirq time during "
        "the run (the lab's three namespaces share the CPUs, so it covers client, host and container), divided by "
        "the Gbit/s received. UDP: `iperf3 -u -l 64 -b 0`, datagrams received by the server per second.",
        "- Filler ports: **ip6tables**: Docker's own rules for the server's port 80 (read back with `ip6tables-save`), "
        "copied per filler port and inserted before Docker's with `ip6tables-restore --noflush`, so the measured "
        "port's rule is the last one a new flow reaches (the worst case, and where hosts drift as containers come "
        "and go). **nftables**: elements added to the `dnat ... map` (one hash lookup whatever the count). "
        "**v6nat**: a second container published through Docker with the filler ports; the daemon maps them.",
        "- The levels stop where a system's cost per port is settled or cannot be built: ip6tables and nftables at "
        "5,000; docker-proxy at the server's own ports (one process per published port).",
        "",
    ]


# ---------------------------------------------------------------- plots

def plot(doc: dict[str, Any], img_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_dir.mkdir(parents=True, exist_ok=True)
    summaries = summarise(doc["samples"])
    systems = _systems_in(summaries)
    written = []

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "new_conn_per_s", "new TCP connections / s"),
                           (axes[1], "new_conn_cpu_us", "CPU µs per new connection")):
        for system in systems:
            points = sorted((k[2], v) for k, v in summaries.items() if k[0] == key and k[1] == system)
            if not points:
                continue
            ax.errorbar([p for p, _ in points], [v.median for _, v in points],
                        yerr=[[v.median - v.min for _, v in points], [v.max - v.median for _, v in points]],
                        marker="o", capsize=3, label=system, color=f"C{systems.index(system)}")
        ax.set_xscale("log")
        ax.set_xlabel("published ports on the host")
        ax.set_ylabel(f"{label} (median, min-max)")
        if key == "new_conn_per_s":
            ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    axes[0].set_title("New connections against published ports")
    axes[1].set_yscale("log")  # ip6tables' cost per connection grows 10x; the others stay flat
    axes[1].set_title("CPU per new connection (lower is better)")
    fig.tight_layout()
    path = img_dir / "bench-new-conn.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    panels = [m for m in ("keepalive_req_per_s", "tcp1_gbit_per_s", "tcp4_gbit_per_s", "udp_pps")
              if any(k[0] == m for k in summaries)]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.6), squeeze=False)
        for ax, key in zip(axes[0], panels):
            metric = METRIC_BY_KEY[key]
            names = [s for s in systems if (key, s, 1) in summaries]
            vals = [summaries[(key, s, 1)] for s in names]
            ax.bar(range(len(names)), [v.median for v in vals],
                   yerr=[[v.median - v.min for v in vals], [v.max - v.median for v in vals]], capsize=3,
                   color=[f"C{systems.index(s)}" for s in names])
            ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
            ax.set_title(metric.title.split(" (")[0], fontsize=9)
            ax.set_ylabel(metric.unit)
        fig.tight_layout()
        path = img_dir / "bench-throughput.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def generate(doc: dict[str, Any], docs_dir: Path) -> Path:
    """Write docs_dir/benchmarks.md and docs_dir/img/bench-*.png; return the Markdown's path."""
    plot(doc, docs_dir / "img")
    path = docs_dir / "benchmarks.md"
    path.write_text(render(doc, "img") + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report", description="results JSON -> docs/benchmarks.md")
    p.add_argument("results", type=Path)
    p.add_argument("--docs-dir", type=Path, default=Path(__file__).resolve().parent.parent / "docs")
    a = p.parse_args(argv)
    try:
        doc = json.loads(a.results.read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"bench.report: cannot read {a.results}: {e}", file=sys.stderr)
        return 1
    print(generate(doc, a.docs_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())

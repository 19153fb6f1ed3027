"""`python -m bench.footprint`: what the daemon weighs and how fast it is back (issue 15).

In ONE lab (client netns, host netns with its own dockerd, Docker's iptables and userland
proxy off) and one run:

  1. first start: `v6nat run` on an empty pin path (it compiles, in a child) until /readyz;
  2. for each level (5,000 and 8,000 mappings by default, published by Docker: containers of
     at most 5,000 ports each): the daemon's VmRSS once every mapping is in the dnat map and
     two resyncs and GC sweeps have run (steady), its peak VmHWM, and whether LLVM is mapped.
     Docker 20.10 holds a socket per published port and family, and a process here may open
     20,000 files at most (a hard limit root cannot raise in this sandbox): about 9,000 ports
     is all one dockerd publishes, so 50,000 mappings are extrapolated from the two levels
     (the per-mapping slope), and said so;
  3. restart over the pins: SIGTERM, start again, time until /readyz (`--restarts` times,
     median), at each level;
  4. `v6nat flows` (text and --json) over `--flows` conntrack flows of a private datapath,
     made by running one SYN per flow through the public ingress program (BPF_PROG_TEST_RUN).

With --baseline-v6nat (another checkout's `v6nat`), steps 1-3 run again for it in a lab of its own
(memory is not noisy as times are: one after the other is a fair comparison), and step 4 interleaves
both run by run. The daemon's memory by kind (Python's heap, other anonymous memory, file-backed pages
of the interpreter and libraries) comes from /proc/PID/smaps_rollup.

Ready is polled with curl in the host netns every 20 ms: figures include up to that much.
Output: a table on stdout and bench/results/footprint-<stamp>.json (+ footprint-latest.json).
Timings are noisy on a shared machine: compare within a run.

examples:
  sudo make bench-footprint
  sudo .venv/bin/python -m bench.footprint --levels 5000 --restarts 3 --flows 50000
  sudo .venv/bin/python -m bench.footprint --baseline-v6nat ../main/.venv/bin/v6nat   # old vs new
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from v6nat_ebpf.datapath import Datapath, DatapathConfig, DnatKey, DnatTarget, NetworkEntry
from v6nat_ebpf.lab import Lab, LabConfig
from v6nat_ebpf.lab.daemon import V6NAT, LabDaemon

REPO = Path(__file__).resolve().parent.parent
PORTS_PER_CONTAINER = 5_000
FIRST_PORT = 10_000
RESYNC_S = 5  # steady = two resyncs (and GC sweeps) after the last mapping appeared
POLL_S = 0.02


def status_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def rollup_kib(pid: int) -> dict[str, int]:
    """Resident memory by kind: anonymous (Python objects, malloc) and file-backed (the interpreter,
    shared libraries), from /proc/PID/smaps_rollup."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, value = line.partition(":")
        if name in ("Rss", "Anonymous"):
            fields[name] = int(value.split()[0])
    return {"anon_kib": fields.get("Anonymous", 0), "file_kib": fields.get("Rss", 0) - fields.get("Anonymous", 0)}


def maps_llvm(pid: int) -> bool:
    text = Path(f"/proc/{pid}/maps").read_text()
    return "libLLVM" in text or "libbcc" in text


def start_timed(daemon: LabDaemon, timeout: float = 120) -> float:
    """Start `v6nat run`; seconds from the start until /readyz answers 200."""
    started = time.monotonic()
    daemon.start(wait_ready=False)
    while daemon.http("/readyz") != "200":
        if not daemon.running():
            raise RuntimeError(f"v6nat exited: {daemon.log()[-2000:]}")
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"v6nat not ready within {timeout:.0f} s")
        time.sleep(POLL_S)
    return time.monotonic() - started


def publish(lab: Lab, network: Any, total: int, have: int) -> int:
    """Containers of PORTS_PER_CONTAINER published ports each until `total` are published."""
    while have < total:
        count = min(PORTS_PER_CONTAINER, total - have)
        first = FIRST_PORT + have
        lab.run_container(f"ports{first}", network, "sleep 3600",
                          ports={f"{p}/tcp": p for p in range(first, first + count)}, timeout=300)
        have += count
    return have


def wait_mappings(pin_path: str, count: int, timeout: float = 300) -> float:
    deadline, started = time.monotonic() + timeout, time.monotonic()
    with Datapath.open_pinned(pin_path) as dp:
        while dp.map_fill()["dnat"][0] < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {count} mappings after {timeout:.0f} s")
            time.sleep(0.2)
    return time.monotonic() - started


class CommandDaemon(LabDaemon):
    """A LabDaemon running `command` (another checkout's v6nat) instead of this one's."""

    def __init__(self, lab: Lab, command: str, **kwargs: Any) -> None:
        super().__init__(lab, **kwargs)
        self.command = command

    def argv(self) -> list[str]:
        return [self.command, *super().argv()[1:]]


def measure_daemon(levels: list[int], restarts: int, command: str = V6NAT) -> dict[str, Any]:
    out: dict[str, Any] = {"command": command, "levels": []}
    with Lab(LabConfig(iptables=False, ip6tables=False, userland_proxy=False)) as lab:
        network = lab.create_network("ula", "fd00:f00::/64")
        with CommandDaemon(lab, command, extra=["--resync-interval", str(RESYNC_S)], log_level="info") as daemon:
            out["first_start_s"] = round(start_timed(daemon), 3)
            assert daemon.proc is not None
            time.sleep(2 * RESYNC_S)
            out["idle"] = {**status_kib(daemon.proc.pid), **rollup_kib(daemon.proc.pid),
                           "llvm_mapped": maps_llvm(daemon.proc.pid)}
            published = 0
            for level in levels:
                published = publish(lab, network, level, published)
                programmed = wait_mappings(lab.pin_path, level)
                time.sleep(2 * RESYNC_S)
                assert daemon.proc is not None
                row: dict[str, Any] = {"mappings": level, "programmed_s": round(programmed, 2),
                                       **status_kib(daemon.proc.pid), **rollup_kib(daemon.proc.pid),
                                       "llvm_mapped": maps_llvm(daemon.proc.pid)}
                ready, compiled = [], 0
                for _ in range(restarts):
                    daemon.stop()
                    ready.append(start_timed(daemon))
                    compiled += "compiled" in daemon.log()  # a v6nat before issue 15 compiles at every start
                row["restart_ready_s"] = [round(r, 3) for r in ready]
                row["restarts_that_compiled"] = compiled
                row["restart_ready_median_s"] = round(statistics.median(ready), 3)
                time.sleep(2 * RESYNC_S)
                row["after_restart"] = status_kib(daemon.proc.pid)
                out["levels"].append(row)
                print(f"{'baseline ' if command != V6NAT else ''}mappings {level:>6}: RSS {row['VmRSS'] / 1024:.1f} MiB (peak {row['VmHWM'] / 1024:.1f}), "
                      f"LLVM mapped {row['llvm_mapped']}, ready after restart {row['restart_ready_median_s']:.3f} s "
                      f"(median of {restarts}), RSS after restart {row['after_restart']['VmRSS'] / 1024:.1f} MiB",
                      flush=True)
    return out


def make_flows(pin_path: str, count: int) -> Datapath:
    """A private datapath with `count` DNAT flows: one SYN each, from 2001:db8:9::/64 clients."""
    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    from v6nat_ebpf.lab.testrun import run

    host, ula = IPv6Address("2001:db8:1::1"), IPv6Network("fd00:ca7e:1::/64")
    # Room for `count` flows not yet answered (their table is a quarter of conntrack).
    dp = Datapath.open(pin_path=pin_path, config=DatapathConfig(conntrack_max=max(262144, 8 * count)))
    dp.host_addrs.put(host, 1)
    dp.public_ifaces.put(1, host)
    dp.networks.put(ula, NetworkEntry(network_id=1, bridge_ifindex=2, masquerade=True, icc=True, internal=False,
                                      snat_addr=None))
    dp.dnat.put_many([(DnatKey(proto=6, host_addr=None, host_port=8080),
                       DnatTarget(addr=ula[2], port=80, mapping_id=1))])
    ingress = dp.prog_fd("v6nat_public_ingress")
    syn = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(dst=str(host)) / TCP(dport=8080, flags="S")
    for i in range(count):
        syn[IPv6].src = str(IPv6Address("2001:db8:9::2") + i // 20_000)
        syn[TCP].sport = 20_000 + i % 20_000
        run(ingress, bytes(syn))
    return dp


def measure_flows(count: int, runs: int, baseline: str | None) -> dict[str, Any]:
    """`v6nat flows` (and --json) timed `runs` times; with `baseline` (another v6nat command, e.g. an
    older checkout's), that one too on the same pins, interleaved run by run."""
    pin_path = f"/sys/fs/bpf/v6nat-bench-footprint-{secrets.token_hex(4)}"
    commands = {"this": V6NAT, **({"baseline": baseline} if baseline else {})}
    try:
        with make_flows(pin_path, count) as dp:
            listed = len(dp.flows())
        out: dict[str, Any] = {"flows": listed}
        for name, extra in (("text", []), ("json", ["--json"])):
            times: dict[str, list[float]] = {which: [] for which in commands}
            for _ in range(runs):
                for which, command in commands.items():
                    started = time.monotonic()
                    subprocess.run([command, "flows", "--pin-path", pin_path, *extra], check=True,
                                   stdout=subprocess.DEVNULL)
                    times[which].append(time.monotonic() - started)
            out[name] = {"runs_s": [round(t, 3) for t in times["this"]],
                         "median_s": round(statistics.median(times["this"]), 3)}
            if baseline:
                out[name]["baseline_runs_s"] = [round(t, 3) for t in times["baseline"]]
                out[name]["baseline_median_s"] = round(statistics.median(times["baseline"]), 3)
        out["baseline"] = baseline
        print(f"v6nat flows over {listed} flows: {out['text']['median_s']:.3f} s, --json {out['json']['median_s']:.3f} s "
              f"(median of {runs})" + (f"; baseline {out['text']['baseline_median_s']:.3f} s, --json "
                                        f"{out['json']['baseline_median_s']:.3f} s" if baseline else ""), flush=True)
        return out
    finally:
        Datapath.cleanup(pin_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.footprint", description=__doc__.splitlines()[0],
                                     epilog=__doc__.split("examples:")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="5000,8000", help="mappings published through Docker, comma-separated")
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--flows", type=int, default=50_000)
    parser.add_argument("--flows-runs", type=int, default=5)
    parser.add_argument("--baseline-v6nat", help="another v6nat command to time `flows` against, interleaved")
    parser.add_argument("--results-dir", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--docs-dir", type=Path, default=REPO / "docs", help="where benchmarks.md gets its footprint section")
    parser.add_argument("--no-docs", dest="docs_dir", action="store_const", const=None, help="leave the docs alone")
    args = parser.parse_args(argv)
    started = datetime.now(timezone.utc)
    doc: dict[str, Any] = {"meta": {"started": started.strftime("%Y-%m-%dT%H%M%SZ"),
                                    "load_before": Path("/proc/loadavg").read_text().split()[:3]}}
    levels = [int(n) for n in args.levels.split(",")]
    doc["daemon"] = measure_daemon(levels, args.restarts)
    if args.baseline_v6nat:
        doc["baseline_daemon"] = measure_daemon(levels, args.restarts, args.baseline_v6nat)
    for which in ("daemon", "baseline_daemon"):
        if which not in doc:
            continue
        daemon = doc[which]
        low, high = daemon["levels"][0], daemon["levels"][-1]
        if high["mappings"] > low["mappings"]:
            slope = (high["VmRSS"] - low["VmRSS"]) / (high["mappings"] - low["mappings"])
            daemon["extrapolated_50000_kib"] = round(low["VmRSS"] + slope * (50_000 - low["mappings"]))
            print(f"{which}: RSS per mapping {slope * 1024:.0f} bytes; extrapolated to 50,000 mappings: "
                  f"{daemon['extrapolated_50000_kib'] / 1024:.1f} MiB", flush=True)
        print(f"{which}: first start (compiles): ready after {daemon['first_start_s']:.2f} s; idle RSS "
              f"{daemon['idle']['VmRSS'] / 1024:.1f} MiB", flush=True)
    doc["flows"] = measure_flows(args.flows, args.flows_runs, args.baseline_v6nat)
    doc["meta"]["load_after"] = Path("/proc/loadavg").read_text().split()[:3]
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"footprint-{doc['meta']['started']}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    (args.results_dir / "footprint-latest.json").write_text(path.read_text())
    print(f"results in {path}")
    docs = args.docs_dir / "benchmarks.md" if args.docs_dir is not None else None
    if docs is not None and docs.exists():
        # Only the footprint section is ours: the rest of the page stays as `make bench` and hands left it.
        from bench import report

        docs.write_text(report.replace_section(docs.read_text(), report.footprint_section(path)))
        print(f"wrote the footprint section of {docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

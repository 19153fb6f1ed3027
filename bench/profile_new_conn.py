"""`python -m bench.profile_new_conn`: where the CPU of one new TCP connection goes, v6nat vs routed.

What lives here: bring up the `v6nat` and `routed` systems (bench.systems,
each in its own lab), run wrk with `Connection: close` from the client netns
while `perf record -a -g` samples the whole machine, and sort every sample of
the traffic's own processes (wrk, the lab's container processes, ksoftirqd,
softirq work on an idle CPU) into categories by its kernel call chain:

  forwarding   the host's stack path: ip6_forward and below, bridge (br_*)
  v6nat-prog   inside a BPF program (v6nat_* and the helpers it calls)
  v6nat-redir  the fast path's own move of the packet (skb_do_redirect and below)
  tc-hook      TC hook overhead around the programs (tcf_classify, tcx, sch_handle_*)
  rx-route     route input (ip6_route_input, fib6 lookups) under a receive with
               no frame saying whose: the host's for every forwarded packet, an
               endpoint's only for packets its TCP early demux does not claim
  rx-stem      receive plumbing shared by host and endpoints (backlog dequeue,
               __netif_receive_skb_core, ipv6_rcv) that no frame assigns
  endpoint     everything else: syscalls, TCP/socket, nginx, wrk, the
               endpoints' own ip6 input/output

The innermost (closest to the leaf) frame that names a category wins; a
receive entry frame (net_rx_action, process_backlog, __netif_receive_skb*)
met first means rx-stem. Samples are normalised per 1,000 connections (one
sample is 1/FREQ s of one CPU). Labs are torn down on exit, also on failure.
Must not be imported by the benchmark itself (run, report).

Example: .venv/bin/python -m bench.profile_new_conn --runs 2 --seconds 4
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bench import load
from bench.systems import LAB_CGROUP_PREFIX, Routed, System, V6nat, write_configs

log = logging.getLogger("bench.profile_new_conn")

FREQ_HZ = 2999
WRK_LEAD_S = 0.5  # perf starts this long after wrk, and stops before wrk does
CATEGORIES = ("forwarding", "v6nat-prog", "v6nat-redir", "tc-hook", "rx-route", "rx-stem", "endpoint")
FORWARDING_FRAMES = re.compile(r"^(ip6_forward\w*|__?br_\w+|br_\w+|nbp_\w+|ip6_route_output_flags_noref_x)$")
REDIRECT_FRAMES = re.compile(r"^(skb_do_redirect|__bpf_redirect\w*|bpf_out_neigh_v6|__bpf_tx_skb)$")
HOOK_FRAMES = re.compile(r"^(tcf_classify|tcx_run|sch_handle_ingress|sch_handle_egress|cls_bpf_classify|"
                         r"tc_run|__tcf_classify)$")
ENDPOINT_FRAMES = re.compile(r"^(ip6_input\w*|ip6_protocol_deliver_rcu|tcp_\w+|__tcp_\w+|inet6?_\w+|ip6_xmit|"
                             r"inet6_csk_xmit|__sys_\w+|__x64_sys_\w+|do_syscall_64|sock_\w+|__sock_\w+|"
                             r"sk_\w+|ipv6_rcv_done)$")
RX_ENTRY_FRAMES = re.compile(r"^(net_rx_action|process_backlog|__netif_receive_skb\w*|netif_receive_skb\w*|"
                             r"__napi_poll|napi_\w+|handle_softirqs|__do_softirq|do_softirq|run_ksoftirqd)$")
STEM_FRAMES = re.compile(r"^(ipv6_rcv|ip6_rcv_core|ip6_rcv_finish|ip6_rcv_finish_core\S*|ip6_route_input|"
                         r"ip6_sublist_rcv\w*|ipv6_list_rcv)$")
OUTPUT_FRAMES = re.compile(r"^(ip6_output|__?ip6_finish_output2?|neigh_\w+|__neigh_\w+|__?dev_queue_xmit|"
                           r"dev_hard_start_xmit|veth_xmit|dst_output)$")
ROUTE_INPUT_FRAMES = re.compile(r"^(ip6_route_input\w*|ip6_pol_route\w*|fib6_\w+|__find_rr_leaf|rt6_\w+|"
                                r"ip6_route_input_lookup)$")
SOFTIRQ_FRAMES = re.compile(r"^(net_rx_action|handle_softirqs|__do_softirq)$")


@dataclass
class Profile:
    """One perf window on one system: samples by category and by leaf symbol."""

    system: str
    run: int
    connections: float
    rate_per_s: float
    by_category: Counter[str] = field(default_factory=Counter)
    leaves: dict[str, Counter[str]] = field(default_factory=dict)
    excluded: Counter[str] = field(default_factory=Counter)
    by_context: Counter[str] = field(default_factory=Counter)  # "wrk", "container", "ksoftirqd", ...

    def per_1k(self, n: float) -> float:
        return 1000 * n / self.connections

    def summary(self) -> dict[str, object]:
        total = sum(self.by_category.values())
        return {
            "system": self.system, "run": self.run, "rate_per_s": round(self.rate_per_s),
            "connections_in_window": round(self.connections),
            "per_1k_conn": {c: round(self.per_1k(self.by_category[c]), 1) for c in CATEGORIES},
            "total_per_1k_conn": round(self.per_1k(total), 1),
            "cpu_us_per_conn": round(self.per_1k(total) / 1000 * 1e6 / FREQ_HZ, 2),
            "per_1k_conn_by_context": {w: round(self.per_1k(n), 1) for w, n in self.by_context.most_common()},
            "excluded_samples": dict(self.excluded),
        }


def classify(frames: list[str]) -> str:
    """Category of one sample; frames run leaf first."""
    for i, name in enumerate(frames):
        if name.startswith("bpf_prog_"):
            return "v6nat-prog"
        if REDIRECT_FRAMES.match(name):
            return "v6nat-redir"
        if FORWARDING_FRAMES.match(name):
            return "forwarding"
        if HOOK_FRAMES.match(name):
            return "tc-hook"
        if ENDPOINT_FRAMES.match(name):
            return "endpoint"
        if RX_ENTRY_FRAMES.match(name) or STEM_FRAMES.match(name):
            return stem_category(frames[:i], frames[i:])
    return "endpoint"


def stem_category(deeper: list[str], outer: list[str]) -> str:
    """A sample in receive code that no deeper frame claims.

    Frame-pointer chains lose tail calls, so the host's ip6_forward ->
    ip6_output often shows as ip6_rcv_finish -> ip6_output, and a bridge's
    upper receive (br0's ipv6_rcv) sits under br_* frames further out.
    """
    for name in outer:
        if name in ("process_backlog", "net_rx_action"):
            break  # the start of this packet's receive: what is further out is another packet's
        if FORWARDING_FRAMES.match(name):
            return "forwarding"
    if any(OUTPUT_FRAMES.match(name) for name in deeper):
        return "forwarding"  # an output under a receive with no endpoint frame between: forwarding
    if any(ROUTE_INPUT_FRAMES.match(name) for name in deeper + outer[:1]):
        return "rx-route"
    return "rx-stem"


def parse_perf_script(text: str, pids: dict[int, str], profile: Profile) -> None:
    """Add the samples of `pids`, ksoftirqd and softirq-on-idle to `profile`."""
    for block in text.split("\n\n"):
        lines = block.strip("\n").splitlines()
        if not lines:
            continue
        head = lines[0].split()
        m = next((re.match(r"^(\d+)/(\d+)$", tok) for tok in head if re.match(r"^\d+/\d+$", tok)), None)
        if m is None:
            continue
        comm = lines[0][: lines[0].index(m.group(0))].strip()
        pid = int(m.group(1))
        frames = []
        for ln in lines[1:]:
            parts = ln.split(None, 1)
            if len(parts) == 2:
                frames.append(parts[1].rsplit(" (", 1)[0].split("+0x", 1)[0].strip())
        if pid in pids:
            who = pids[pid]
        elif comm.startswith("ksoftirqd/"):
            who = "ksoftirqd"
        elif comm == "swapper" or pid == 0:
            if not any(SOFTIRQ_FRAMES.match(f) for f in frames):
                profile.excluded["idle"] += 1
                continue
            who = "softirq-on-idle"
        else:
            profile.excluded[f"other:{comm}"] += 1
            continue
        cat = classify(frames)
        profile.by_category[cat] += 1
        profile.by_context[f"{who}:{cat}"] += 1
        leaf = frames[0] if frames else "?"
        if leaf.startswith("bpf_prog_"):
            leaf = "bpf_prog_" + leaf.rsplit("_", 2)[-2] + "_" + leaf.rsplit("_", 1)[-1]
        profile.leaves.setdefault(cat, Counter())[leaf] += 1


def container_pids(system: System) -> set[int]:
    top = Path(f"/sys/fs/cgroup/cpuacct/{LAB_CGROUP_PREFIX}{system.lab.name}")
    pids: set[int] = set()
    for procs in top.rglob("cgroup.procs"):
        pids |= {int(p) for p in procs.read_text().split()}
    return pids


def own_wrk_pids(client_ns: str) -> set[int]:
    """wrk processes in this lab's client netns (others may be benchmarking on the same machine)."""
    want = os.stat(f"/run/netns/{client_ns}").st_ino
    found = set()
    for pid in subprocess.run(["pgrep", "-x", "wrk"], capture_output=True, text=True).stdout.split():
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == want:
                found.add(int(pid))
        except OSError:
            continue
    return found


def profile_once(system: System, run: int, seconds: float, workdir: Path) -> Profile:
    """wrk for seconds + 2*WRK_LEAD_S; perf for `seconds` inside it."""
    data = workdir / f"perf-{system.name}-{run}.data"
    result: dict[str, object] = {}

    def run_wrk() -> None:
        try:
            result["wrk"] = load.wrk(system.lab.client_ns, system.target().url, int(seconds + 2 * WRK_LEAD_S),
                                     32, close=True)
        except load.LoadError as e:
            result["error"] = e

    thread = threading.Thread(target=run_wrk)
    thread.start()
    time.sleep(WRK_LEAD_S)
    wrk_pids = own_wrk_pids(system.lab.client_ns)
    subprocess.run(["perf", "record", "-q", "-a", "-g", "-F", str(FREQ_HZ), "-o", str(data), "--", "sleep",
                    str(seconds)], check=True, capture_output=True, timeout=seconds + 60)
    thread.join(timeout=seconds + load.TOOL_TIMEOUT_SLACK_S + 10)
    if "error" in result:
        raise RuntimeError(f"wrk on {system.name}: {result['error']}")
    wrk: load.WrkResult = result["wrk"]  # type: ignore[assignment]
    profile = Profile(system.name, run, wrk.requests_per_s * seconds, wrk.requests_per_s)
    text = subprocess.run(["perf", "script", "-i", str(data), "-F", "comm,pid,tid,ip,sym", "--no-inline"],
                          capture_output=True, text=True, check=True, timeout=600).stdout
    parse_perf_script(text, {p: "container" for p in container_pids(system)} | {p: "wrk" for p in wrk_pids},
                      profile)
    data.unlink(missing_ok=True)
    log.info("%s run %d: %.0f conn/s, %s", system.name, run, wrk.requests_per_s, profile.summary()["per_1k_conn"])
    return profile


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_new_conn", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=2, help="perf windows per system, alternating (default 2)")
    p.add_argument("--seconds", type=float, default=4.0, help="length of each perf window (default 4)")
    p.add_argument("--top", type=int, default=12, help="leaf symbols listed per category (default 12)")
    p.add_argument("--json", type=Path, help="also write the summaries and top leaves here")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("docker").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    if os.geteuid() != 0 or shutil.which("perf") is None:
        print("profile_new_conn: needs root and perf (linux-perf)", file=sys.stderr)
        return 1
    profiles: list[Profile] = []
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="v6nat-profile-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        conf = write_configs(workdir)
        systems: list[System] = []
        for cls in (V6nat, Routed):
            s = cls(conf)
            s.start(stack)
            systems.append(s)
        for run in range(a.runs):
            for s in systems if run % 2 == 0 else systems[::-1]:
                profiles.append(profile_once(s, run, a.seconds, workdir))
    out = []
    for prof in profiles:
        summary = prof.summary()
        summary["top_leaves_per_1k_conn"] = {
            cat: [(sym, round(prof.per_1k(n), 1)) for sym, n in prof.leaves.get(cat, Counter()).most_common(a.top)]
            for cat in CATEGORIES}
        out.append(summary)
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

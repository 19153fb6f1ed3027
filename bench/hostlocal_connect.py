"""`python -m bench.hostlocal_connect`: the cost of one host-local connect() through v6nat's socket hooks.

What lives here: one job, the figure of issue 14. In ONE lab (host netns with its own dockerd and
v6nat), a container accepts TCP connections on port 80 (published as 8080) and closes them. A client
process in the lab's host netns times connect() calls (each socket closed with an RST, so no
TIME_WAIT piles up), side by side in every round, in a rotated order:

  published   [host address]:8080 from a process in the hooks' cgroup: the connect6 hook sends it to
              the container (v6nat)
  direct      [container address]:80 from a process in the same cgroup: the hook runs and finds
              nothing to do
  no hooks    [container address]:80 from a process outside the cgroup: no socket hook at all (what a
              host without v6nat's hooks does)

The hooks act only on a cgroup of the bench's own (lab.cgroup: a child of the lab's cgroup parent under
the cgroup v2 mount of /proc/mounts) and on the lab's host netns; everything goes with the lab, also on failure.
Output: a table on stdout and bench/results/hostlocal-<stamp>.json (+ hostlocal-latest.json), which
bench/report.py renders into docs/benchmarks.md. Nothing is asserted: compare ratios within one run.

Examples:
  sudo .venv/bin/python -m bench.hostlocal_connect                 # 7 rounds x 2,000 connects, about 1 min
  sudo .venv/bin/python -m bench.hostlocal_connect --rounds 3 --connects 500 --results-dir /tmp/r
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from v6nat_ebpf.datapath import Datapath
from v6nat_ebpf.lab import Lab, LabConfig
from v6nat_ebpf.lab.cgroup import lab_cgroup, python_in
from v6nat_ebpf.lab.daemon import LabDaemon

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PUBLISHED_PORT = 8080
GATEWAY = "fd00:b14::1"

# The container's server: accept and close, from one socket (the host's python3 through the lab image's /usr).
SERVER = """
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 80))
s.listen(4096)
while True:
    c, _ = s.accept()
    c.close()
"""

# The client (run by lab.cgroup.python_in): times `n` connect() calls to [addr]:port; prints the
# nanoseconds of each as one JSON list.
CLIENT = """
import json, socket, struct, sys, time
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rst = struct.pack("ii", 1, 0)
times = []
for _ in range(n):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, rst)
    t0 = time.perf_counter_ns()
    s.connect((addr, port))
    times.append(time.perf_counter_ns() - t0)
    s.close()
print(json.dumps(times))
"""

VARIANTS = ("published", "direct", "no hooks")


def translated(lab: Lab) -> int:
    """connect() calls the socket hooks translated so far (every mapping)."""
    with Datapath.open_pinned(lab.pin_path) as dp:
        return sum(connects for connects, _ in dp.hostlocal_stats().values())


def measure(lab: Lab, cgroup: Path, container_addr: str, rounds: int, connects: int) -> dict[str, list[float]]:
    """variant -> the median connect() time of each round, in microseconds."""
    targets = {
        "published": (cgroup, str(lab.host_addr), PUBLISHED_PORT),
        "direct": (cgroup, container_addr, 80),
        "no hooks": (None, container_addr, 80),
    }
    medians: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(rounds):
        for variant in VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]:
            cg, addr, port = targets[variant]
            out = lab.exec(lab.host_ns, python_in(cg, CLIENT, addr, str(port), str(connects)), nsenter=True,
                           timeout=120).stdout
            medians[variant].append(statistics.median(json.loads(out)) / 1000)
    return medians


def summarise(medians: dict[str, list[float]]) -> dict[str, Any]:
    rows = {v: {"median_us": statistics.median(m), "min_us": min(m), "max_us": max(m)} for v, m in medians.items()}
    rounds = len(medians["published"])
    # ratios within each round (the variants ran next to each other), then their median
    for v in VARIANTS:
        rows[v]["vs_no_hooks"] = statistics.median(medians[v][i] / medians["no hooks"][i] for i in range(rounds))
    extra = statistics.median(medians["published"][i] - medians["no hooks"][i] for i in range(rounds))
    return {"rows": rows, "published_extra_us": extra}


def run(rounds: int, connects: int, results_dir: Path) -> dict[str, Any]:
    started = dt.datetime.now(dt.timezone.utc)
    config = LabConfig(iptables=False, ip6tables=False, userland_proxy=False)
    with Lab(config) as lab, lab_cgroup(lab, "hostlocal-bench") as cgroup:
        with LabDaemon(lab, extra=("--cgroup-path", str(cgroup)), log_level="info").start():
            ula = lab.create_network("ula", "fd00:b14::/64", gateway=GATEWAY)
            server = lab.run_container("server", ula, ["python3", "-S", "-c", SERVER], ports={"80/tcp": PUBLISHED_PORT})
            addr = str(lab.container_addr(server, ula))
            measure(lab, cgroup, addr, 1, 50)  # warm-up (caches, neighbour entries), not counted
            before = translated(lab)
            medians = measure(lab, cgroup, addr, rounds, connects)
            hooked = translated(lab) - before
            server.remove(force=True)
    result = {"started": started.isoformat(timespec="seconds"), "lab": lab.name, "rounds": rounds, "connects_per_round": connects,
              "medians_us": medians, "translated_connects": hooked, **summarise(medians)}
    if hooked != rounds * connects:
        raise SystemExit(f"the hooks translated {hooked} connects, not the {rounds * connects} published ones")
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y-%m-%dT%H%M%SZ")
    for name in (f"hostlocal-{stamp}.json", "hostlocal-latest.json"):
        (results_dir / name).write_text(json.dumps(result, indent=2) + "\n")
    return result


def table(result: dict[str, Any]) -> str:
    lines = [f"{'variant':<10} {'median us':>10} {'min':>8} {'max':>8} {'vs no hooks':>12}"]
    for v in VARIANTS:
        r = result["rows"][v]
        lines.append(f"{v:<10} {r['median_us']:>10.1f} {r['min_us']:>8.1f} {r['max_us']:>8.1f} "
                     f"{r['vs_no_hooks']:>11.2f}x")
    lines.append(f"published - no hooks, per connect (median over rounds): {result['published_extra_us']:.1f} us")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hostlocal_connect", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("Examples:\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--connects", type=int, default=2000, help="connect() calls per variant and round")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    a = p.parse_args(argv)
    print(table(run(a.rounds, a.connects, a.results_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

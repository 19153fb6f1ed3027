"""Time a Prometheus scrape of v6nat with many published mappings (two series each).

A real Datapath is loaded on a private pin path, N TCP mappings are published, one SYN per mapping
is run through the public ingress program by BPF_PROG_TEST_RUN (so every mapping has per-CPU stats
and there are N conntrack flows), and the metrics server is scraped over HTTP on loopback. Prints one
line per size: the median scrape, the first scrape after the mappings were set (it also works out their
series, once per change), the median `take_snapshot` (the datapath reads), and the 1-minute load average
(the figures depend on it):

    mappings  50000  scrape 0.298 s (median of 5)  first 0.451 s  snapshot 0.242 s  body 10.7 MB  load 4.41

A figure, not a pass/fail: compare sizes within one run. Must not import the tests or the daemon.

examples:
    python -m bench.metrics_scrape                 # 1,000 and 50,000 mappings
    python -m bench.metrics_scrape --quick         # 200 mappings, one scrape (what the test runs)
    python -m bench.metrics_scrape --sizes 10000
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import time
import urllib.request
from contextlib import contextmanager
from ipaddress import IPv6Address, IPv6Network
from typing import Callable, Iterator, TypeVar

from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from v6nat_ebpf.datapath import Datapath, DatapathConfig, DnatKey, DnatTarget, NetworkEntry
from v6nat_ebpf.lab.testrun import run
from v6nat_ebpf.observe.server import start_metrics_server
from v6nat_ebpf.observe.snapshot import take_snapshot
from v6nat_ebpf.observe.stats import ControlPlaneStats, MappingLabels

HOST = IPv6Address("2001:db8:1::1")
CLIENT = IPv6Address("2001:db8:9::2")
ULA = IPv6Network("fd00:ca7e:1::/64")
FIRST_PORT = 10000
T = TypeVar("T")


@contextmanager
def published(size: int) -> Iterator[tuple[Datapath, ControlPlaneStats]]:
    """A Datapath on a private pin path with `size` TCP mappings, each with one flow (one SYN run through ingress)."""
    pin_path = f"/sys/fs/bpf/v6nat-bench-metrics-{secrets.token_hex(4)}"
    dp = Datapath.open(pin_path=pin_path, config=DatapathConfig())
    try:
        ingress = dp.prog_fd("v6nat_public_ingress")
        stats = ControlPlaneStats()
        dp.host_addrs.put(HOST, 1)
        dp.public_ifaces.put(1, HOST)
        dp.networks.put(ULA, NetworkEntry(network_id=1, bridge_ifindex=2, masquerade=True, icc=True, internal=False, snat_addr=None))
        ports = range(FIRST_PORT, FIRST_PORT + size)
        dp.dnat.put_many(
            [(DnatKey(proto=6, host_addr=None, host_port=port), DnatTarget(addr=ULA[2 + i], port=80, mapping_id=i + 1)) for i, port in enumerate(ports)]
        )
        stats.set_mappings({i + 1: MappingLabels("tcp", port, f"container-{i}", "ula") for i, port in enumerate(ports)})
        syn = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(src=str(CLIENT), dst=str(HOST)) / TCP(sport=40000, flags="S")
        for port in ports:
            syn[TCP].dport = port
            run(ingress, bytes(syn))
        yield dp, stats
    finally:
        Datapath.cleanup(pin_path)


def measure(size: int, scrapes: int) -> str:
    with published(size) as (dp, stats):
        server = start_metrics_server("[::1]:0", dp, stats, snapshot_max_age_s=0)  # every scrape reads the maps
        try:
            # The first scrape after set_mappings also works out the mappings' series (once per change).
            first_s, body = timed(lambda: scrape(server.url))
            times = [timed(lambda: scrape(server.url))[0] for _ in range(scrapes)]
            snapshot_s = statistics.median(timed(lambda: take_snapshot(dp, stats))[0] for _ in range(scrapes))
        finally:
            server.shutdown()
    return (
        f"mappings {size:6d}  scrape {statistics.median(times):.3f} s (median of {scrapes})  first {first_s:.3f} s  "
        f"snapshot {snapshot_s:.3f} s  body {len(body) / 1e6:.1f} MB  load {os.getloadavg()[0]:.2f}"
    )


def scrape(url: str) -> bytes:
    with urllib.request.urlopen(url + "/metrics", timeout=60) as reply:
        return reply.read()


def timed(work: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.metrics_scrape", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("examples:")[1], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 50000], help="numbers of mappings (default: 1000 50000)")
    parser.add_argument("--scrapes", type=int, default=5, help="scrapes per size (median is printed)")
    parser.add_argument("--quick", action="store_true", help="200 mappings, one scrape")
    args = parser.parse_args()
    sizes, scrapes = ([200], 1) if args.quick else (args.sizes, args.scrapes)
    for size in sizes:
        print(measure(size, scrapes), flush=True)


if __name__ == "__main__":
    main()

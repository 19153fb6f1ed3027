"""Time a Prometheus scrape of v6nat with many published mappings (two series each).

A real Datapath is loaded on a private pin path, N TCP mappings are published, one SYN per mapping
is run through the public ingress program by BPF_PROG_TEST_RUN (so every mapping has per-CPU stats),
and the metrics server is scraped over HTTP on loopback. Prints one line per size:

    mappings  50000  scrape 0.812 s (median of 5)  snapshot 0.201 s  body 10.3 MB

A figure, not a pass/fail: compare sizes within one run. Must not import the tests or the daemon.

examples:
    python -m bench.metrics_scrape                 # 1,000 and 50,000 mappings
    python -m bench.metrics_scrape --quick         # 200 mappings, one scrape (what the test runs)
    python -m bench.metrics_scrape --sizes 10000
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
import urllib.request
from ipaddress import IPv6Address, IPv6Network

from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from v6nat_ebpf.datapath import Datapath, DatapathConfig, DnatKey, DnatTarget, NetworkEntry
from v6nat_ebpf.datapath.testrun import run
from v6nat_ebpf.metrics import ControlPlaneStats, MappingLabels, start_metrics_server, take_snapshot

HOST = IPv6Address("2001:db8:1::1")
CLIENT = IPv6Address("2001:db8:9::2")
ULA = IPv6Network("fd00:ca7e:1::/64")
FIRST_PORT = 10000


def measure(size: int, scrapes: int) -> str:
    pin_path = f"/sys/fs/bpf/v6nat-bench-metrics-{secrets.token_hex(4)}"
    dp = Datapath.open(pin_path=pin_path, config=DatapathConfig())
    ingress = dp.prog_fd("v6nat_public_ingress")
    server = None
    try:
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

        server = start_metrics_server("[::1]:0", dp, stats)
        started = time.perf_counter()
        take_snapshot(dp, stats)
        snapshot_s = time.perf_counter() - started
        times, body = [], b""
        for _ in range(scrapes):
            started = time.perf_counter()
            with urllib.request.urlopen(server.url + "/metrics", timeout=60) as reply:
                body = reply.read()
            times.append(time.perf_counter() - started)
        return (
            f"mappings {size:6d}  scrape {statistics.median(times):.3f} s (median of {scrapes})  "
            f"snapshot {snapshot_s:.3f} s  body {len(body) / 1e6:.1f} MB"
        )
    finally:
        if server:
            server.shutdown()
        Datapath.cleanup(pin_path)


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

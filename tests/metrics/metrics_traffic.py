"""A small published world in a real Datapath, and real packets run through its programs, for the metrics tests and bench.

The packets go through BPF_PROG_TEST_RUN in the calling thread, so pinning the thread to a CPU
(os.sched_setaffinity) decides which per-CPU counter slot they land in.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from typing import Iterator

from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from v6nat_ebpf.datapath import Datapath, DnatKey, DnatTarget, NetworkEntry
from v6nat_ebpf.lab.testrun import RunResult, run
from v6nat_ebpf.observe.stats import ControlPlaneStats, MappingLabels

HOST = IPv6Address("2001:db8:1::1")
CLIENT = IPv6Address("2001:db8:9::2")
ULA = IPv6Network("fd00:ca7e:1::/64")
PUBLIC_IFINDEX = 1  # the programs only compare it with the map's key; nothing is attached by test runs
BRIDGE_IFINDEX = 2
# Explicit MACs: with Ether() scapy would try to resolve the destination (slow, and warns).
CLIENT_MAC, HOST_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"


@dataclass(frozen=True)
class Published:
    mapping_id: int
    host_port: int
    container_addr: IPv6Address
    labels: MappingLabels


def publish_world(dp: Datapath, stats: ControlPlaneStats, count: int = 1, first_port: int = 8080) -> list[Published]:
    """Host address, one ULA network and `count` TCP mappings host_port -> container:80; labels told to `stats`."""
    dp.host_addrs.put(HOST, PUBLIC_IFINDEX)
    dp.public_ifaces.put(PUBLIC_IFINDEX, HOST)
    dp.networks.put(ULA, NetworkEntry(network_id=1, bridge_ifindex=BRIDGE_IFINDEX, masquerade=True, icc=True, internal=False, snat_addr=None))
    published = [
        Published(i + 1, first_port + i, ULA[2 + i], MappingLabels("tcp", first_port + i, f"web{i}", "ula"))
        for i in range(count)
    ]
    dp.dnat.put_many([(DnatKey(proto=6, host_addr=None, host_port=p.host_port), DnatTarget(addr=p.container_addr, port=80, mapping_id=p.mapping_id)) for p in published])
    stats.set_mappings({p.mapping_id: p.labels for p in published})
    return published


def unpublish(dp: Datapath, stats: ControlPlaneStats, published: list[Published]) -> None:
    dp.dnat.delete_many([DnatKey(proto=6, host_addr=None, host_port=p.host_port) for p in published])
    stats.set_mappings({})


def syn_to(port: int, sport: int) -> bytes:
    """A client's TCP SYN to the host's public address: DNAT if `port` is published."""
    return bytes(Ether(src=CLIENT_MAC, dst=HOST_MAC) / IPv6(src=str(CLIENT), dst=str(HOST)) / TCP(sport=sport, dport=port, flags="S"))


def straight_to_ula(sport: int) -> bytes:
    """A client's packet addressed straight to a container's ULA address: dropped as direct_ula."""
    return bytes(Ether(src=CLIENT_MAC, dst=HOST_MAC) / IPv6(src=str(CLIENT), dst=str(ULA[2])) / UDP(sport=sport, dport=53))


def not_ours(sport: int) -> bytes:
    """Traffic between two outside addresses: passed untouched."""
    return bytes(Ether(src=CLIENT_MAC, dst=HOST_MAC) / IPv6(src=str(CLIENT), dst="2001:db8:7::7") / UDP(sport=sport, dport=53))


def public_ingress(dp: Datapath, packet: bytes) -> int:
    """Run the public interface's ingress program on one packet (repeat 1); returns the TC verdict."""
    return run(dp.prog_fd("v6nat_public_ingress"), packet).verdict


@contextmanager
def on_cpu(cpu: int) -> Iterator[None]:
    """Pin the calling thread to one CPU (BPF_PROG_TEST_RUN runs where its caller runs)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def outbound_syn(container: IPv6Address, sport: int, dport: int = 443) -> bytes:
    """A container's TCP SYN to an outside address, as the public interface's egress sees it: masqueraded."""
    return bytes(Ether(src=HOST_MAC, dst=CLIENT_MAC) / IPv6(src=str(container), dst=str(CLIENT)) / TCP(sport=sport, dport=dport, flags="S"))


def public_egress(dp: Datapath, packet: bytes) -> RunResult:
    """Run the public interface's egress program on one packet (repeat 1)."""
    return run(dp.prog_fd("v6nat_public_egress"), packet)

"""Hairpin at bridge ingress, and isolation: what reaches containers from
outside, and everything that is not ours passing byte for byte."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP
from scapy.layers.inet import UDP as UDP4
from scapy.layers.inet6 import ICMPv6MLReport2, ICMPv6ND_NS, ICMPv6ND_RA, IPv6, IPv6ExtHdrHopByHop, RouterAlert
from scapy.layers.l2 import ARP, Ether

from v6nat_ebpf.datapath import Datapath, DnatKey, DnatTarget
from v6nat_ebpf.lab.datapath import ct_halves
from dp_packets import (
    BRIDGE_INGRESS, C1, C2, CLIENT, HOST, INTERNAL1, OTHER, PUBLIC_EGRESS, PUBLIC_INGRESS, ROUTED1, SHOT,
    addr, assert_translated, assert_untouched, eth, go, ping, rewritten, tcp, udp,
)

ALL_HOOKS = (PUBLIC_INGRESS, PUBLIC_EGRESS, BRIDGE_INGRESS)


@pytest.mark.parametrize("target", [C2, C1], ids=["other-container", "itself"])
@pytest.mark.parametrize("make", [tcp, udp])
def test_hairpin_reaches_the_target_and_replies_come_back(dp: Datapath, target: str, make) -> None:
    dp.dnat.put(DnatKey(6 if make is tcp else 17, None, 8080), DnatTarget(addr(target), 80, 5))
    out = make(C1, HOST, 61555, 8080)  # a port of the SNAT range: kept
    r = go(dp, BRIDGE_INGRESS, out)
    assert_translated(r, rewritten(out, src=HOST, dst=target, dport=80))
    reply = make(target, HOST, 80, 61555, **({"flags": "SA"} if make is tcp else {}))
    assert_translated(go(dp, BRIDGE_INGRESS, reply), rewritten(reply, src=HOST, dst=C1, sport=8080))
    c = dp.counters()
    assert (c["hairpin"], c["reverse"]) == (1, 1)
    assert dp.mapping_stats()[5][0] == 2
    [flow] = dp.flows()
    assert flow.kind == "hairpin"


def test_hairpin_picks_another_source_port_when_taken(dp: Datapath) -> None:
    dp.dnat.put(DnatKey(6, None, 8080), DnatTarget(addr(C2), 80, 5))
    assert go(dp, BRIDGE_INGRESS, tcp(C1, HOST, 61555, 8080)).packet[IPv6].payload.sport == 61555
    # The same source port from another container (C2 itself) must not collide.
    r = go(dp, BRIDGE_INGRESS, tcp(C2, HOST, 61555, 8080))
    assert 61000 <= r.packet[IPv6].payload.sport <= 65535 and r.packet[IPv6].payload.sport != 61555


def test_hairpin_flows_are_not_translated_on_public_interfaces(dp: Datapath) -> None:
    dp.dnat.put(DnatKey(6, None, 8080), DnatTarget(addr(C2), 80, 5))
    go(dp, BRIDGE_INGRESS, tcp(C1, HOST, 61555, 8080))
    before = {k: bytes(v) for k, v in ct_halves(dp).items()}
    spoofed = tcp(C2, HOST, 80, 61555, "SA")  # a hairpin reply's tuple, arriving from outside
    assert go(dp, PUBLIC_INGRESS, spoofed).verdict == SHOT  # a managed network's source from outside
    c = dp.counters()
    assert (c["drop_bogon_source"], c["reverse"]) == (1, 0)
    # the hairpin flow is untouched (still waiting for its reply)
    assert {k: bytes(v) for k, v in ct_halves(dp).items()} == before


def test_container_to_unpublished_host_port_and_to_outside_pass_the_bridge(dp: Datapath) -> None:
    dp.dnat.put(DnatKey(6, None, 8080), DnatTarget(addr(C2), 80, 5))
    for pkt in (tcp(C1, HOST, 5555, 22), tcp(C1, OTHER, 5555, 8080), ping(C1, HOST, 3), udp(C1, C2, 1, 2)):
        assert_untouched(go(dp, BRIDGE_INGRESS, pkt), pkt)


@pytest.mark.parametrize("dst", [C1, INTERNAL1])
def test_direct_access_to_natted_containers_is_dropped(dp: Datapath, dst: str) -> None:
    for pkt in (tcp(CLIENT, dst, 40000, 80), udp(CLIENT, dst, 40000, 53), ping(CLIENT, dst, 1)):
        assert go(dp, PUBLIC_INGRESS, pkt).verdict == SHOT
    assert dp.counters()["drop_direct_ula"] == 3


def test_a_network_without_masquerade_is_reachable_directly_at_its_published_ports_only(dp: Datapath) -> None:
    dp.dnat.put(DnatKey(6, addr(ROUTED1), 80), DnatTarget(addr(ROUTED1), 80, 9))  # the container's own port
    pkt = tcp(CLIENT, ROUTED1, 40000, 80)
    assert_untouched(go(dp, PUBLIC_INGRESS, pkt), pkt)
    assert go(dp, PUBLIC_INGRESS, tcp(CLIENT, ROUTED1, 40000, 81)).verdict == SHOT
    assert dp.counters()["drop_unpublished"] == 1


NOT_OURS = {
    "ndp-ns": eth(IPv6(src="fe80::1", dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(tgt=HOST)),
    "ra": eth(IPv6(src="fe80::1", dst="ff02::1", hlim=255) / ICMPv6ND_RA()),
    "mld": eth(IPv6(src="fe80::1", dst="ff02::16", hlim=1) / IPv6ExtHdrHopByHop(options=[RouterAlert()])
               / ICMPv6MLReport2()),
    "link-local-tcp": tcp("fe80::1", "fe80::2", 1000, 8080),
    "multicast-udp": udp("fe80::1", "ff02::fb", 5353, 5353),
    "other-network": tcp(CLIENT, OTHER, 40000, 8080),
    "hosts-own-ping": ping(CLIENT, HOST, 9),
    "ipv4": eth(IP(src="192.0.2.1", dst="192.0.2.2") / UDP4(sport=1, dport=8080)),
    "arp": Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff")
           / ARP(hwsrc="02:00:00:00:00:01", psrc="192.0.2.1", pdst="192.0.2.2"),
}


@pytest.mark.parametrize("name", list(NOT_OURS))
def test_traffic_that_is_not_ours_passes_byte_for_byte(dp: Datapath, name: str) -> None:
    dp.dnat.put(DnatKey(6, None, 8080), DnatTarget(addr(C2), 80, 5))
    dp.dnat.put(DnatKey(17, None, 5353), DnatTarget(addr(C2), 53, 6))
    for hook in ALL_HOOKS:
        assert_untouched(go(dp, hook, NOT_OURS[name]), NOT_OURS[name])

"""enable_icc=false at the host side of a container's veth (v6nat_veth_ingress),
packet by packet: container to container on the same network is dropped and
counted; everything else leaves byte for byte unchanged."""

from __future__ import annotations

from ipaddress import IPv6Network

import pytest
from scapy.layers.inet import IP
from scapy.layers.inet import UDP as UDP4
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6ND_RS, IPv6
from scapy.packet import Packet

from v6nat_ebpf.datapath import Datapath, NetworkEntry
from dp_packets import C1, C2, HOST, OTHER, ROUTED1, SHOT, addr, assert_untouched, eth, go, ping, tcp, udp

VETH_INGRESS = "v6nat_veth_ingress"
NET_NO_ICC = IPv6Network("fd00:4::/64")
GATEWAY = "fd00:4::1"
A = "fd00:4::2"
B = "fd00:4::3"


@pytest.fixture
def no_icc(dp: Datapath) -> Datapath:
    dp.networks.put(NET_NO_ICC, NetworkEntry(4, 13, masquerade=True, icc=False, internal=False, snat_addr=None,
                                             gateway=addr(GATEWAY)))
    return dp


BLOCKED = {
    "tcp": tcp(A, B, 40000, 80),
    "udp": udp(A, B, 5000, 53),
    "ping": ping(A, B, 7),
    "ping-reply": ping(B, A, 7, reply=True),
}


@pytest.mark.parametrize("name", list(BLOCKED))
def test_same_network_is_dropped_and_counted(no_icc: Datapath, name: str) -> None:
    assert go(no_icc, VETH_INGRESS, BLOCKED[name]).verdict == SHOT
    by_hook = no_icc.counters_by_hook()
    assert by_hook["veth_ingress"]["drop_icc_blocked"] == 1
    assert sum(hook["drop_icc_blocked"] for hook in by_hook.values()) == 1


def ndp(src: str, dst: str, message: Packet) -> Packet:
    return eth(IPv6(src=src, dst=dst, hlim=255) / message)


UNCHANGED = {
    "to-gateway-tcp": tcp(A, GATEWAY, 40000, 53),
    "to-gateway-ping": ping(A, GATEWAY, 7),
    "ndp-unicast-ns": ndp(A, B, ICMPv6ND_NS(tgt=B)),
    "ndp-unicast-na": ndp(A, B, ICMPv6ND_NA(tgt=A, R=0, S=1)),
    "ndp-solicited-node-ns": ndp(A, "ff02::1:ff00:3", ICMPv6ND_NS(tgt=B)),
    "ndp-rs": ndp("fe80::2", "ff02::2", ICMPv6ND_RS()),
    "link-local": tcp("fe80::2", "fe80::3", 40000, 80),
    "to-link-local": udp(A, "fe80::3", 5000, 53),
    "multicast": udp(A, "ff02::fb", 5353, 5353),
    "outside": tcp(A, OTHER, 40000, 443),
    "host-address": tcp(A, HOST, 40000, 8080),
    "other-network": tcp(A, C1, 40000, 80),
    "routed-network": udp(A, ROUTED1, 5000, 53),
    "icc-on-network": tcp(C1, C2, 40000, 80),
    "icc-on-network-ping": ping(C1, C2, 7),
    "ipv4": eth(IP(src="192.0.2.1", dst="192.0.2.2") / UDP4(sport=1, dport=53)),
}


@pytest.mark.parametrize("name", list(UNCHANGED))
def test_everything_else_passes_byte_for_byte(no_icc: Datapath, name: str) -> None:
    assert_untouched(go(no_icc, VETH_INGRESS, UNCHANGED[name]), UNCHANGED[name])
    assert no_icc.counters_by_hook()["veth_ingress"]["pass"] == 1
    assert no_icc.counters()["drop_icc_blocked"] == 0


def test_turning_icc_on_lets_the_same_packets_through(no_icc: Datapath) -> None:
    no_icc.networks.put(NET_NO_ICC, NetworkEntry(4, 13, masquerade=True, icc=True, internal=False, snat_addr=None,
                                                 gateway=addr(GATEWAY)))
    for pkt in BLOCKED.values():
        assert_untouched(go(no_icc, VETH_INGRESS, pkt), pkt)

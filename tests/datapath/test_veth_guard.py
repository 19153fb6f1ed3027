"""The guard at the host side of a container's veth (v6nat_veth_ingress),
packet by packet with BPF_PROG_TEST_RUN on lo (ifindex 1), described to the
datapath by a veths entry as the control plane writes it: a packet is judged
by the port it arrives on, never by what it claims.

- anti-spoofing: the source must be one of the container's addresses (or
  link-local, or :: for duplicate address detection);
- enable_icc=false: unicast frames only to the bridge's MAC (whatever the
  addresses: link-local included), and no destination of the container's own
  network but its gateway (the host would route it back);
- isolation: other managed networks are unreachable except their gateway;
- internal networks reach only their own network, link-local, multicast and
  the host's addresses;
- a veth the control plane has not described drops every IPv6 packet.

Every drop is counted once by its reason; everything else leaves byte for byte."""

from __future__ import annotations

from ipaddress import IPv6Network

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6ND_RS, IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from v6nat_ebpf.datapath import Datapath, NetworkEntry
from v6nat_ebpf.datapath.maps import VethEntry
from dp_packets import (
    C1, C2, HOST, INTERNAL1, LO_IFINDEX, NET, OTHER, ROUTED1, SHOT, addr, assert_untouched,
    go,
)

VETH_INGRESS = "v6nat_veth_ingress"
NET_NO_ICC = IPv6Network("fd00:4::/64")
GATEWAY = "fd00:4::1"
A = "fd00:4::2"  # the container behind the veth under test
A2 = "fd00:4::22"  # its second address on the network
B = "fd00:4::3"  # its sibling
GATEWAY_NET = "fd00:1::1"  # NET's gateway
INTERNAL2 = "fd00:2::3"

BRIDGE_MAC = "02:00:00:00:00:02"  # dp_packets.eth()'s destination
SELF_MAC = "02:00:00:00:00:01"
SIBLING_MAC = "02:00:00:00:00:03"


def frame(l3: Packet, dst_mac: str = BRIDGE_MAC) -> Packet:
    return Ether(src=SELF_MAC, dst=dst_mac) / l3


def mcast_mac(group: str) -> str:
    """The Ethernet multicast address of an IPv6 group (33:33 + its last 32 bits)."""
    return "33:33:" + ":".join(f"{b:02x}" for b in addr(group).packed[-4:])


def tcp(src: str, dst: str, mac: str = BRIDGE_MAC) -> Packet:
    return frame(IPv6(src=src, dst=dst) / TCP(sport=61234, dport=80, flags="S"), mac)


def udp(src: str, dst: str, mac: str = BRIDGE_MAC) -> Packet:
    return frame(IPv6(src=src, dst=dst) / UDP(sport=61234, dport=53) / b"q", mac)


def ping(src: str, dst: str, mac: str = BRIDGE_MAC) -> Packet:
    return frame(IPv6(src=src, dst=dst) / ICMPv6EchoRequest(id=7), mac)


def ndp(src: str, dst: str, message: Packet, mac: str) -> Packet:
    return frame(IPv6(src=src, dst=dst, hlim=255) / message, mac)


def veth(network_id: int, addrs: tuple[str, ...], icc: bool = True, internal: bool = False) -> VethEntry:
    return VethEntry(network_id=network_id, bridge_ifindex=LO_IFINDEX, masquerade=not internal, icc=icc,
                     internal=internal, addrs=tuple(addr(a) for a in addrs), bridge_mac=bytes.fromhex("020000000002"))


@pytest.fixture
def guard(dp: Datapath) -> Datapath:
    """A's veth (lo) on a network without ICC; NET has a gateway too."""
    dp.networks.put(NET_NO_ICC, NetworkEntry(4, LO_IFINDEX, masquerade=True, icc=False, internal=False,
                                             snat_addr=None, gateway=addr(GATEWAY)))
    dp.networks.put(NET, NetworkEntry(1, LO_IFINDEX, masquerade=True, icc=True, internal=False, snat_addr=None,
                                      gateway=addr(GATEWAY_NET)))
    dp.veths.put(LO_IFINDEX, veth(4, (A, A2), icc=False))
    return dp


def assert_dropped(dp: Datapath, pkt: Packet, reason: str) -> None:
    assert go(dp, VETH_INGRESS, pkt).verdict == SHOT
    by_hook = dp.counters_by_hook()
    assert by_hook["veth_ingress"][f"drop_{reason}"] == 1, {k: v for k, v in by_hook["veth_ingress"].items() if v}
    assert sum(v for hook in by_hook.values() for k, v in hook.items() if k.startswith("drop_")) == 1


def assert_passed(dp: Datapath, pkt: Packet) -> None:
    assert_untouched(go(dp, VETH_INGRESS, pkt), pkt)
    c = dp.counters_by_hook()["veth_ingress"]
    assert c["pass"] == 1 and not any(v for k, v in c.items() if k.startswith("drop_")), c


SPOOFED = {
    "sibling": tcp(B, OTHER),
    "other-network": udp(C1, OTHER),
    "outside-address": tcp(OTHER, C1),
    "host-address": udp(HOST, OTHER),
    "gateway": ping(GATEWAY, OTHER),
    "sibling-to-gateway": ping(B, GATEWAY),
}


@pytest.mark.parametrize("name", list(SPOOFED))
def test_a_source_that_is_not_the_containers_is_dropped(guard: Datapath, name: str) -> None:
    assert_dropped(guard, SPOOFED[name], "spoofed_source")


ICC_BLOCKED = {
    "tcp-routed-back": tcp(A, B),
    "udp-routed-back": udp(A, B),
    "ping-routed-back": ping(A, B),
    "second-address": tcp(A2, B),
    "link-local-to-siblings-mac": tcp("fe80::2", "fe80::3", SIBLING_MAC),
    "link-local-ping-to-siblings-mac": ping("fe80::2", "fe80::3", SIBLING_MAC),
    "ula-to-siblings-mac": udp(A, B, SIBLING_MAC),
    "outside-address-to-siblings-mac": tcp(A, OTHER, SIBLING_MAC),  # the sibling as a router
    "unicast-ns-to-siblings-mac": ndp(A, B, ICMPv6ND_NS(tgt=B), SIBLING_MAC),
    "unicast-na-to-siblings-mac": ndp("fe80::2", "fe80::3", ICMPv6ND_NA(tgt="fe80::2", R=0, S=1), SIBLING_MAC),
}


@pytest.mark.parametrize("name", list(ICC_BLOCKED))
def test_without_icc_nothing_reaches_a_sibling(guard: Datapath, name: str) -> None:
    assert_dropped(guard, ICC_BLOCKED[name], "icc_blocked")


ISOLATED = {
    "other-network": tcp(A, C1),
    "other-network-ping": ping(A, C2),
    "internal-network": udp(A, INTERNAL1),
    "routed-network": tcp(A, ROUTED1),
}


@pytest.mark.parametrize("name", list(ISOLATED))
def test_other_managed_networks_are_unreachable(guard: Datapath, name: str) -> None:
    assert_dropped(guard, ISOLATED[name], "isolation")


PASSED = {
    "to-gateway-tcp": tcp(A, GATEWAY),
    "to-gateway-ping": ping(A, GATEWAY),
    "second-address-to-gateway": udp(A2, GATEWAY),
    "to-other-networks-gateway": tcp(A, GATEWAY_NET),
    "link-local-to-the-bridge": tcp("fe80::2", "fe80::1"),
    "to-link-local-via-the-bridge": udp(A, "fe80::1"),
    "ndp-solicited-node-ns": ndp(A, "ff02::1:ff00:3", ICMPv6ND_NS(tgt=B), mcast_mac("ff02::1:ff00:3")),
    "ndp-dad-ns": ndp("::", "ff02::1:ff00:2", ICMPv6ND_NS(tgt=A), mcast_mac("ff02::1:ff00:2")),
    "ndp-rs": ndp("fe80::2", "ff02::2", ICMPv6ND_RS(), mcast_mac("ff02::2")),
    "ndp-ns-to-the-gateway": ndp(A, GATEWAY, ICMPv6ND_NS(tgt=GATEWAY), BRIDGE_MAC),
    "multicast": udp(A, "ff02::fb", mcast_mac("ff02::fb")),
    "outside": tcp(A, OTHER),
    "host-address": tcp(A, HOST),
    "ipv4": frame(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1, dport=53)),
}


@pytest.mark.parametrize("name", list(PASSED))
def test_everything_else_passes_byte_for_byte(guard: Datapath, name: str) -> None:
    assert_passed(guard, PASSED[name])


def test_turning_icc_on_lets_the_same_network_through_but_not_the_spoofed_or_isolated(guard: Datapath) -> None:
    guard.veths.put(LO_IFINDEX, veth(4, (A, A2), icc=True))
    for pkt in ICC_BLOCKED.values():
        assert_untouched(go(guard, VETH_INGRESS, pkt), pkt)
    for pkt in (*SPOOFED.values(), *ISOLATED.values()):
        assert go(guard, VETH_INGRESS, pkt).verdict == SHOT
    c = guard.counters()
    assert (c["drop_icc_blocked"], c["drop_spoofed_source"], c["drop_isolation"]) == (0, len(SPOOFED), len(ISOLATED))


INTERNAL = {
    "own-network": (tcp(INTERNAL1, INTERNAL2), None),
    "own-network-ping": (ping(INTERNAL1, INTERNAL2), None),
    "host-address": (tcp(INTERNAL1, HOST), None),
    "link-local": (udp(INTERNAL1, "fe80::1"), None),
    "multicast": (udp(INTERNAL1, "ff02::fb", mcast_mac("ff02::fb")), None),
    "outside": (tcp(INTERNAL1, OTHER), "isolation"),
    "outside-ping": (ping(INTERNAL1, OTHER), "isolation"),
    "other-network": (tcp(INTERNAL1, C1), "isolation"),
    "routed-network": (udp(INTERNAL1, ROUTED1), "isolation"),
    "spoofing-a-masqueraded-source": (tcp(C1, OTHER), "spoofed_source"),
}


@pytest.mark.parametrize("name", list(INTERNAL))
def test_an_internal_network_stays_inside(dp: Datapath, name: str) -> None:
    dp.veths.put(LO_IFINDEX, veth(2, (INTERNAL1,), internal=True))
    pkt, reason = INTERNAL[name]
    if reason is None:
        assert_passed(dp, pkt)
    else:
        assert_dropped(dp, pkt, reason)


def test_a_routed_networks_container_is_guarded_the_same_way(dp: Datapath) -> None:
    dp.veths.put(LO_IFINDEX, veth(3, (ROUTED1,)))
    assert_passed(dp, tcp(ROUTED1, OTHER))
    assert_dropped(dp, tcp("fd00:3::9", OTHER), "spoofed_source")


@pytest.mark.parametrize("pkt", [tcp(A, OTHER), ping(A, GATEWAY), ndp("::", "ff02::1:ff00:2", ICMPv6ND_NS(tgt=A),
                                                                        mcast_mac("ff02::1:ff00:2"))],
                         ids=["tcp", "ping-gateway", "dad"])
def test_a_veth_the_control_plane_did_not_describe_drops_ipv6(dp: Datapath, pkt: Packet) -> None:
    dp.veths.put(LO_IFINDEX + 100, veth(4, (A,), icc=False))  # another port's entry does not count
    assert_dropped(dp, pkt, "veth_unknown")


def test_a_veth_the_control_plane_did_not_describe_passes_ipv4(dp: Datapath) -> None:
    pkt = frame(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1, dport=53))
    assert_untouched(go(dp, VETH_INGRESS, pkt), pkt)


def test_the_entry_reads_back_as_written(dp: Datapath) -> None:
    entry = veth(4, (A, A2), icc=False)
    dp.veths.put(LO_IFINDEX, entry)
    assert dp.veths.get(LO_IFINDEX) == entry

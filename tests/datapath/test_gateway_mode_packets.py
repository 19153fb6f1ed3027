"""Docker's gateway modes in the datapath (bpf/lib/gateway.h), packet by packet.

- routed (here on a global prefix, the case users run): nothing is
  translated; from outside a new flow reaches only a published container port
  (the dnat entry keyed by the container's own address and port) and ICMPv6;
  everything else is dropped and counted (`unpublished`); the container's own
  flows go out and their replies come in; a flow's later packets are conntrack
  hits.
- nat-unprotected: NAT outward, and from outside any port is reachable, its
  replies leaving untranslated.
- nat on a global prefix: translated like ULA, nothing straight in.
- isolated: nothing in from outside or the host, nothing from the container
  to the host.
"""

from __future__ import annotations

from ipaddress import IPv6Network

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6EchoRequest, ICMPv6ND_NS, IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from v6nat_ebpf import model
from v6nat_ebpf.datapath import Datapath, DnatKey, DnatTarget, NetworkEntry
from v6nat_ebpf.datapath.maps import VethEntry
from dp_packets import (
    CLIENT, HOST, LO_IFINDEX, OTHER, PUBLIC_EGRESS, PUBLIC_INGRESS, SHOT, addr, assert_untouched, go, ping, tcp, udp,
)

BRIDGE_EGRESS = "v6nat_bridge_egress"
VETH_INGRESS = "v6nat_veth_ingress"
NET_GUA_ROUTED = IPv6Network("2001:db8:40::/64")
R1 = "2001:db8:40::2"
R2 = "2001:db8:40::3"
NET_UNPROTECTED = IPv6Network("fd00:5::/64")
U1 = "fd00:5::2"
NET_GUA_NAT = IPv6Network("2001:db8:41::/64")
N1 = "2001:db8:41::2"
NET_ISOLATED = IPv6Network("fd00:6::/64")
I1 = "fd00:6::2"
I2 = "fd00:6::3"
BRIDGE_MAC = "02:00:00:00:00:02"  # dp_packets.eth()'s destination: the bridge, i.e. the host
SIBLING_MAC = "02:00:00:00:00:03"
MAPPING = 42


@pytest.fixture
def modes(dp: Datapath) -> Datapath:
    dp.networks.put(NET_GUA_ROUTED, NetworkEntry(5, LO_IFINDEX, masquerade=False, icc=True, internal=False,
                                                 snat_addr=None, mode="routed"))
    dp.networks.put(NET_UNPROTECTED, NetworkEntry(6, LO_IFINDEX, masquerade=True, icc=True, internal=False,
                                                  snat_addr=None, mode="nat-unprotected"))
    dp.networks.put(NET_GUA_NAT, NetworkEntry(7, LO_IFINDEX, masquerade=True, icc=True, internal=False,
                                              snat_addr=None))
    dp.networks.put(NET_ISOLATED, NetworkEntry(8, LO_IFINDEX, masquerade=False, icc=True, internal=True,
                                               snat_addr=None, mode="isolated"))
    # R1 publishes tcp/80 and udp/53 (Docker routed: the container's own port at its own address).
    for proto, port in ((6, 80), (17, 53)):
        dp.dnat.put(DnatKey(proto, addr(R1), port), DnatTarget(addr(R1), port, MAPPING))
    return dp


def drops(dp: Datapath) -> dict[str, int]:
    return {k: v for k, v in dp.counters().items() if k.startswith("drop_") and v}


def assert_dropped(dp: Datapath, prog: str, pkt: Packet, reason: str) -> None:
    before = dp.counters()[f"drop_{reason}"]
    assert go(dp, prog, pkt).verdict == SHOT
    assert dp.counters()[f"drop_{reason}"] == before + 1, drops(dp)


def test_networks_keep_their_mode(modes: Datapath) -> None:
    assert {n: e.mode for n, e in modes.networks.items()}[NET_GUA_ROUTED] == "routed"
    assert {n: e.mode for n, e in modes.networks.items()}[NET_ISOLATED] == "isolated"
    assert modes.networks.get(NET_ISOLATED).internal  # isolated is internal too (Docker: --internal)


@pytest.mark.parametrize("make,proto,port", [(tcp, 6, 80), (udp, 17, 53)])
def test_routed_published_port_is_reached_untranslated_and_answers(modes: Datapath, make, proto, port) -> None:
    first = make(CLIENT, R1, 40000, port)
    assert_untouched(go(modes, PUBLIC_INGRESS, first), first)
    reply = make(R1, CLIENT, port, 40000, **({"flags": "SA", "ack": 1001} if proto == 6 else {}))
    assert_untouched(go(modes, PUBLIC_EGRESS, reply), reply)
    more = make(CLIENT, R1, 40000, port, **({"flags": "A", "ack": 1001} if proto == 6 else {}))
    assert_untouched(go(modes, PUBLIC_INGRESS, more), more)
    c = modes.counters()
    assert (c["new_flow"], c["dnat"], c["reverse"]) == (1, 2, 1)  # the later packets are conntrack hits
    assert modes.mapping_stats()[MAPPING][0] == 3
    assert drops(modes) == {}


UNPUBLISHED = {
    "tcp-other-port": tcp(CLIENT, R1, 40000, 22),
    "udp-other-port": udp(CLIENT, R1, 40000, 54),
    "tcp-published-port-of-another-container": tcp(CLIENT, R2, 40000, 80),
    "udp-to-the-tcp-port": udp(CLIENT, R1, 40000, 80),
}


@pytest.mark.parametrize("name", list(UNPUBLISHED))
def test_routed_unpublished_ports_are_dropped_and_counted(modes: Datapath, name: str) -> None:
    assert_dropped(modes, PUBLIC_INGRESS, UNPUBLISHED[name], "unpublished")
    assert modes.flows() == []


def test_a_host_port_mapping_opens_no_routed_container_port(modes: Datapath) -> None:
    # A wildcard NAT mapping of host port 22 (any host address) must not open port 22 of R1.
    modes.dnat.put(DnatKey(6, None, 22), DnatTarget(addr(R1), 22, 9))
    assert_dropped(modes, PUBLIC_INGRESS, tcp(CLIENT, R1, 40000, 22), "unpublished")


def test_routed_tcp_without_syn_and_without_flow_is_dropped(modes: Datapath) -> None:
    assert_dropped(modes, PUBLIC_INGRESS, tcp(CLIENT, R1, 40000, 22, flags="SA", ack=1001), "unpublished")
    assert_dropped(modes, PUBLIC_INGRESS, tcp(CLIENT, R1, 40000, 80, flags="A", ack=1001), "tcp_no_flow")


def test_routed_outbound_flows_leave_untranslated_and_only_their_replies_come_in(modes: Datapath) -> None:
    syn = tcp(R1, CLIENT, 45000, 443)
    assert_untouched(go(modes, PUBLIC_EGRESS, syn), syn)
    synack = tcp(CLIENT, R1, 443, 45000, flags="SA", ack=1001)
    assert_untouched(go(modes, PUBLIC_INGRESS, synack), synack)
    query = udp(R1, CLIENT, 45001, 53)
    assert_untouched(go(modes, PUBLIC_EGRESS, query), query)
    answer = udp(CLIENT, R1, 53, 45001)
    assert_untouched(go(modes, PUBLIC_INGRESS, answer), answer)
    # The same ports from anyone else are no reply.
    assert_dropped(modes, PUBLIC_INGRESS, udp(OTHER, R1, 53, 45001), "unpublished")
    assert_dropped(modes, PUBLIC_INGRESS, tcp(OTHER, R1, 443, 45000, flags="SA", ack=1001), "unpublished")
    c = modes.counters()
    assert (c["new_flow"], c["snat"], c["reverse"]) == (2, 2, 2)


def test_routed_icmpv6_is_accepted_as_docker_does(modes: Datapath) -> None:
    echo = ping(CLIENT, R1, 77)
    assert_untouched(go(modes, PUBLIC_INGRESS, echo), echo)
    echo_reply = ping(R1, CLIENT, 77, reply=True)
    assert_untouched(go(modes, PUBLIC_EGRESS, echo_reply), echo_reply)
    error = Ether(src="02:00:00:00:00:01", dst=BRIDGE_MAC) / IPv6(src=OTHER, dst=R1) / ICMPv6DestUnreach(code=4) / \
        IPv6(src=R1, dst=OTHER) / UDP(sport=1, dport=2)
    assert go(modes, PUBLIC_INGRESS, error).verdict != SHOT
    assert drops(modes) == {}


def test_routed_prefix_as_a_source_from_outside_is_forged(modes: Datapath) -> None:
    assert_dropped(modes, PUBLIC_INGRESS, tcp(R2, R1, 40000, 80), "bogon_source")


def test_unprotected_any_port_is_reached_directly_and_its_replies_are_not_masqueraded(modes: Datapath) -> None:
    syn = tcp(CLIENT, U1, 40000, 22)
    assert_untouched(go(modes, PUBLIC_INGRESS, syn), syn)
    synack = tcp(U1, CLIENT, 22, 40000, flags="SA", ack=1001)
    assert_untouched(go(modes, PUBLIC_EGRESS, synack), synack)
    # Its own new flows are masqueraded as in nat mode.
    out = udp(U1, CLIENT, 45000, 53)
    r = go(modes, PUBLIC_EGRESS, out)
    assert r.verdict != SHOT and r.packet[IPv6].src == HOST
    assert drops(modes) == {}


def test_nat_mode_on_a_global_prefix_is_translated_and_closed(modes: Datapath) -> None:
    assert_dropped(modes, PUBLIC_INGRESS, tcp(CLIENT, N1, 40000, 80), "direct_ula")
    out = tcp(N1, CLIENT, 45000, 443)
    r = go(modes, PUBLIC_EGRESS, out)
    assert r.verdict != SHOT and r.packet[IPv6].src == HOST


def test_isolated_is_closed_from_outside_and_from_the_host(modes: Datapath) -> None:
    assert_dropped(modes, PUBLIC_INGRESS, tcp(CLIENT, I1, 40000, 80), "direct_ula")
    assert_dropped(modes, BRIDGE_EGRESS, tcp(HOST, I1, 40000, 80), "isolation")
    assert_dropped(modes, BRIDGE_EGRESS, udp("fd00:6::1", I1, 40000, 53), "isolation")  # its would-be gateway
    other = tcp(HOST, "fd00:1::2", 40000, 80)  # a nat network's container: the host reaches it
    assert_untouched(go(modes, BRIDGE_EGRESS, other), other)


def isolated_veth(dp: Datapath) -> None:
    dp.veths.put(LO_IFINDEX, VethEntry(8, LO_IFINDEX, masquerade=False, icc=True, internal=True,
                                       addrs=(addr(I1),), bridge_mac=bytes.fromhex("020000000002"),
                                       mode="isolated"))


def frame(l3: Packet, dst_mac: str) -> Packet:
    return Ether(src="02:00:00:00:00:01", dst=dst_mac) / l3


ISOLATED_OUT = {
    "to-the-host": frame(IPv6(src=I1, dst=HOST) / TCP(sport=40000, dport=22, flags="S"), BRIDGE_MAC),
    "to-the-gateway": frame(IPv6(src=I1, dst="fd00:6::1") / UDP(sport=40000, dport=53), BRIDGE_MAC),
    "link-local-to-the-host": frame(IPv6(src="fe80::2", dst="fe80::1") / TCP(sport=40000, dport=22), BRIDGE_MAC),
    "to-outside": frame(IPv6(src=I1, dst=OTHER) / UDP(sport=40000, dport=53), BRIDGE_MAC),
    "multicast-datagram": frame(IPv6(src=I1, dst="ff02::fb") / UDP(sport=5353, dport=5353), "33:33:00:00:00:fb"),
}


@pytest.mark.parametrize("name", list(ISOLATED_OUT))
def test_isolated_container_reaches_nothing_but_its_network(modes: Datapath, name: str) -> None:
    isolated_veth(modes)
    assert_dropped(modes, VETH_INGRESS, ISOLATED_OUT[name], "isolation")


def test_isolated_containers_still_reach_each_other(modes: Datapath) -> None:
    isolated_veth(modes)
    for pkt in (frame(IPv6(src=I1, dst=I2) / TCP(sport=40000, dport=80, flags="S"), SIBLING_MAC),
                frame(IPv6(src=I1, dst="ff02::1:ff00:3") / ICMPv6ND_NS(tgt=I2), "33:33:ff:00:00:03"),
                frame(IPv6(src=I1, dst=I2) / ICMPv6EchoRequest(id=1), SIBLING_MAC)):
        assert_untouched(go(modes, VETH_INGRESS, pkt), pkt)


def test_isolated_spoofed_source_is_still_refused(modes: Datapath) -> None:
    isolated_veth(modes)
    assert_dropped(modes, VETH_INGRESS, frame(IPv6(src=I2, dst=I1) / UDP(sport=1, dport=2), SIBLING_MAC),
                   "spoofed_source")


def test_routed_spoofed_source_from_a_container_is_refused(modes: Datapath) -> None:
    modes.veths.put(LO_IFINDEX, VethEntry(5, LO_IFINDEX, masquerade=False, icc=True, internal=False,
                                          addrs=(addr(R1),), bridge_mac=bytes.fromhex("020000000002"),
                                          mode="routed"))
    assert_dropped(modes, VETH_INGRESS, frame(IPv6(src=R2, dst=OTHER) / TCP(sport=1, dport=2, flags="S"),
                                              BRIDGE_MAC), "spoofed_source")
    assert_dropped(modes, VETH_INGRESS, frame(IPv6(src=CLIENT, dst=OTHER) / UDP(sport=1, dport=2), BRIDGE_MAC),
                   "spoofed_source")


NET_PLAIN = IPv6Network("fd00:7::/64")
P1 = "fd00:7::2"


def test_a_nat_network_without_masquerade_opens_only_its_published_ports(dp: Datapath) -> None:
    """Docker 28: direct routing to a nat network's unpublished ports is dropped unless the mode is
    nat-unprotected, masquerade or not. The model's entry and mappings for such a network, in the maps."""
    data = {"Name": "plain", "Id": "ab" * 32, "Driver": "bridge", "EnableIPv6": True,
            "IPAM": {"Config": [{"Subnet": str(NET_PLAIN)}]},
            "Options": {model.OPT_MASQUERADE: "false"}}
    network = model.network_from_inspect(data, [])
    assert network is not None and network.mode == "nat" and not network.masquerade
    dp.networks.put(NET_PLAIN, NetworkEntry(9, LO_IFINDEX, masquerade=network.masquerade, icc=True, internal=False,
                                            snat_addr=None, mode=network.datapath_mode))
    container = {"NetworkSettings": {"Ports": {"80/tcp": [{"HostIp": "::", "HostPort": "8080"}]}},
                 "HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}}}
    endpoint = model.Endpoint("c" * 64, "p1", "plain", addr(P1))
    for m in model.mappings_of(container, endpoint, network):
        dp.dnat.put(DnatKey(m.proto, m.host_addr, m.host_port), DnatTarget(m.container_addr, m.container_port,
                                                                            m.mapping_id))
    syn = tcp(CLIENT, P1, 40000, 80)
    assert_untouched(go(dp, PUBLIC_INGRESS, syn), syn)  # the published container port, directly
    assert_dropped(dp, PUBLIC_INGRESS, tcp(CLIENT, P1, 40000, 22), "unpublished")
    assert_dropped(dp, PUBLIC_INGRESS, udp(CLIENT, P1, 40000, 53), "unpublished")
    assert go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40001, 8080)).verdict != SHOT  # the host port still DNATs
    # its own flows leave with its own address, and only their replies come in
    out = udp(P1, OTHER, 5555, 53)
    assert_untouched(go(dp, PUBLIC_EGRESS, out), out)
    back = udp(OTHER, P1, 53, 5555)
    assert_untouched(go(dp, PUBLIC_INGRESS, back), back)

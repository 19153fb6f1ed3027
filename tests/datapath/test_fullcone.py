"""Endpoint-independent UDP filtering (full cone, RFC 4787 REQ-8), a network's option: once a container
sent from a port, a datagram from any remote endpoint to that port's mapping reaches it, counted; never
for a port it did not open outward, never for TCP, never after its flow is gone, never on a network that
did not ask."""

from __future__ import annotations

import pytest
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6

from v6nat_ebpf.datapath import Datapath, NetworkEntry
from v6nat_ebpf.lab.datapath import ct_delete_half, ct_halves
from v6nat_ebpf.datapath import layout
from dp_packets import (C1, CLIENT, HOST, LO_IFINDEX, NET, OTHER, PUBLIC_EGRESS, PUBLIC_INGRESS, SHOT, UNSPEC,
                        assert_untouched, go, l4, tcp, udp)


@pytest.fixture
def cone(dp: Datapath) -> Datapath:
    dp.networks.put(NET, NetworkEntry(1, LO_IFINDEX, masquerade=True, icc=True, internal=False, snat_addr=None,
                                      udp_eif=True))
    return dp


def open_port(dp: Datapath) -> int:
    """C1 sends from port 5555 to a STUN-like server: its external port."""
    return l4(go(dp, PUBLIC_EGRESS, udp(C1, OTHER, 5555, 3478))).sport


def test_any_remote_endpoint_reaches_an_opened_port(cone: Datapath) -> None:
    port = open_port(cone)
    r = go(cone, PUBLIC_INGRESS, udp(CLIENT, HOST, 40000, port))  # never contacted by C1
    assert r.verdict == UNSPEC
    assert (r.packet[IPv6].dst, r.packet[UDP].dport, r.packet[IPv6].src) == (C1, 5555, CLIENT)
    assert cone.counters()["full_cone"] == 1
    back = go(cone, PUBLIC_EGRESS, udp(C1, CLIENT, 5555, 40000))  # its answer leaves by the same mapping
    assert (back.packet[IPv6].src, back.packet[UDP].sport) == (HOST, port)


def test_the_default_filter_keeps_unsolicited_datagrams_out(dp: Datapath) -> None:
    port = open_port(dp)
    pkt = udp(CLIENT, HOST, 40000, port)
    assert_untouched(go(dp, PUBLIC_INGRESS, pkt), pkt)  # to the host, whose port it is not
    assert dp.counters()["full_cone"] == 0 and len(dp.flows()) == 1


def test_never_a_port_the_container_did_not_open(cone: Datapath) -> None:
    port = open_port(cone)
    other = port + 1 if port < 65535 else port - 1
    pkt = udp(CLIENT, HOST, 40000, other)
    assert_untouched(go(cone, PUBLIC_INGRESS, pkt), pkt)
    assert cone.counters()["full_cone"] == 0


def test_never_tcp(cone: Datapath) -> None:
    port = l4(go(cone, PUBLIC_EGRESS, tcp(C1, OTHER, 5555, 443))).sport
    syn = tcp(CLIENT, HOST, 40000, port)
    assert_untouched(go(cone, PUBLIC_INGRESS, syn), syn)
    assert cone.counters()["full_cone"] == 0


def test_closed_once_the_flow_that_opened_it_is_gone(cone: Datapath) -> None:
    port = open_port(cone)
    for kb in ct_halves(cone):  # expired, or forgotten with the container
        ct_delete_half(cone, layout.RawCtKey.from_buffer_copy(kb))
    pkt = udp(CLIENT, HOST, 40000, port)
    assert_untouched(go(cone, PUBLIC_INGRESS, pkt), pkt)
    assert cone.counters()["full_cone"] == 0


def test_a_bad_checksum_opens_nothing(cone: Datapath) -> None:
    port = open_port(cone)
    bad = udp(CLIENT, HOST, 40001, port)
    bad[UDP].chksum = 0x1234
    assert go(cone, PUBLIC_INGRESS, bad).verdict == SHOT
    assert cone.counters()["drop_bad_checksum"] == 1 and cone.counters()["full_cone"] == 0

"""The rows of docs/conformance.md that coturn's natdiscovery (tests/e2e/test_nat_behaviour.py) cannot
show: TCP mapping, simultaneous open, ICMP errors that leave flows alone, and idle timers no shorter than
the RFCs allow. Real programs on real packets (BPF_PROG_TEST_RUN)."""

from __future__ import annotations

import time

import pytest
from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6
from scapy.packet import Raw

from v6nat_ebpf.config import CONNTRACK_TIMEOUT_RFC_MIN
from v6nat_ebpf.datapath import Datapath, DatapathConfig
from v6nat_ebpf.lab.datapath import ct_halves
from dp_packets import C1, CLIENT, HOST, OTHER, PUBLIC_EGRESS, PUBLIC_INGRESS, UNSPEC, eth, go, l4, ping, tcp, udp

S = 1_000_000_000


def last_seen_ns(dp: Datapath) -> int:
    """The one flow's last packet, as the datapath's clock stamped it."""
    return max(half.last_seen_ns for half in ct_halves(dp).values())


def test_tcp_mapping_is_endpoint_independent(dp: Datapath) -> None:
    """RFC 5382 REQ-1: one internal endpoint, one external port, toward every destination."""
    ports = {l4(go(dp, PUBLIC_EGRESS, tcp(C1, remote, 40000, rport))).sport
             for remote in (OTHER, CLIENT) for rport in (443, 8443)}
    assert len(ports) == 1


def test_tcp_simultaneous_open_through_a_masquerade_mapping(dp: Datapath) -> None:
    """RFC 5382 REQ-2a: both ends send a SYN; each side's SYN and SYN-ACK get through, and the flow
    becomes established."""
    out = go(dp, PUBLIC_EGRESS, tcp(C1, OTHER, 40000, 5000, flags="S"))
    port = l4(out).sport
    syn_in = go(dp, PUBLIC_INGRESS, tcp(OTHER, HOST, 5000, port, flags="S"))  # the peer's own SYN
    assert syn_in.verdict == UNSPEC and (syn_in.packet[IPv6].dst, l4(syn_in).dport) == (C1, 40000)
    synack_out = go(dp, PUBLIC_EGRESS, tcp(C1, OTHER, 40000, 5000, flags="SA", ack=1001))
    assert (synack_out.packet[IPv6].src, l4(synack_out).sport) == (HOST, port)
    synack_in = go(dp, PUBLIC_INGRESS, tcp(OTHER, HOST, 5000, port, flags="SA", ack=1001))
    assert (synack_in.packet[IPv6].dst, l4(synack_in).dport) == (C1, 40000)
    [flow] = dp.flows()
    assert flow.state == "established"


@pytest.mark.parametrize("make", [tcp, udp])
def test_an_icmp_error_neither_ends_nor_refreshes_a_flow(dp: Datapath, make) -> None:
    """RFC 4787 REQ-12, RFC 5382 REQ-10, RFC 5508 REQ-6: an error about a flow is translated to the
    container and the flow goes on, with its idle time untouched."""
    out = go(dp, PUBLIC_EGRESS, make(C1, OTHER, 40000, 443))
    port = l4(out).sport
    [before] = dp.flows()
    time.sleep(0.05)
    quote = bytes(out.raw)[14:]
    err = go(dp, PUBLIC_INGRESS, bytes(eth(IPv6(src=OTHER, dst=HOST) / ICMPv6DestUnreach(code=4) / Raw(quote))))
    assert err.verdict == UNSPEC and err.packet[IPv6].dst == C1
    [after] = dp.flows()
    assert (after.packets, after.original) == (before.packets, before.original)  # not counted, not ended
    assert after.idle_s >= before.idle_s + 0.04  # not refreshed
    back = go(dp, PUBLIC_INGRESS, make(OTHER, HOST, 443, port))
    assert back.packet[IPv6].dst == C1


def test_the_default_timers_are_no_shorter_than_the_rfcs_allow() -> None:
    """RFC 4787 REQ-5 (UDP 2 min), RFC 5382 REQ-5 (TCP established 2 h 4 min, transitory 4 min),
    RFC 5508 REQ-2 (ICMP query 60 s)."""
    defaults = DatapathConfig()
    for name, minimum in CONNTRACK_TIMEOUT_RFC_MIN.items():
        assert getattr(defaults, name) >= minimum, name


@pytest.mark.parametrize("flow,timer", [
    (lambda dp: go(dp, PUBLIC_EGRESS, udp(C1, OTHER, 40000, 53)), "udp_s"),
    (lambda dp: go(dp, PUBLIC_EGRESS, ping(C1, OTHER, 7)), "icmp_s"),
    (lambda dp: go(dp, PUBLIC_EGRESS, tcp(C1, OTHER, 40000, 443, flags="S")), "tcp_transitory_s"),
])
def test_an_idle_flow_lives_its_rfc_minimum(dp: Datapath, flow, timer: str) -> None:
    """The datapath's own expiry (conntrack GC) keeps an idle flow for at least the RFC's minimum."""
    flow(dp)
    last_seen = last_seen_ns(dp)
    assert dp.gc(now_ns=last_seen + CONNTRACK_TIMEOUT_RFC_MIN[timer] * S) == 0
    assert len(dp.flows()) == 1
    assert dp.gc(now_ns=last_seen + (getattr(DatapathConfig(), timer) + 2) * S) == 1


def test_an_established_tcp_flow_lives_two_hours_and_four_minutes(dp: Datapath) -> None:
    out = go(dp, PUBLIC_EGRESS, tcp(C1, OTHER, 40000, 443, flags="S"))
    go(dp, PUBLIC_INGRESS, tcp(OTHER, HOST, 443, l4(out).sport, flags="SA", ack=1001))
    [f] = dp.flows()
    assert f.state == "established"
    last_seen = last_seen_ns(dp)
    assert dp.gc(now_ns=last_seen + CONNTRACK_TIMEOUT_RFC_MIN["tcp_established_s"] * S) == 0

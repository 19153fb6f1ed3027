"""Conntrack: TCP state in both halves, per-flow counters, timeouts applied by
gc() to whole pairs, and a half lost to eviction rebuilt from the other."""

from __future__ import annotations

import time

from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6

from v6nat_ebpf.datapath import Datapath, DatapathConfig, DnatKey, DnatTarget
from v6nat_ebpf.datapath.layout import RawCtEntry
from v6nat_ebpf.lab.datapath import ct_halves
from dp_packets import (
    C1, CLIENT, HOST, OTHER, PUBLIC_EGRESS, PUBLIC_INGRESS, addr, assert_translated, delete_ct_half, eth, go, ping,
    rewritten, tcp, udp,
)

S = 1_000_000_000


def now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def published(dp: Datapath) -> None:
    dp.dnat.put(DnatKey(6, None, 8080), DnatTarget(addr(C1), 80, 3))


def state(dp: Datapath) -> str:
    [flow] = dp.flows()
    return flow.state


def test_tcp_states_follow_the_handshake_and_the_close(dp: Datapath) -> None:
    published(dp)
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40000, 8080, "S"))
    assert state(dp) == "syn_sent"
    go(dp, PUBLIC_EGRESS, tcp(C1, CLIENT, 80, 40000, "SA"))
    assert state(dp) == "established"
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40000, 8080, "FA"))
    assert state(dp) == "closing"
    go(dp, PUBLIC_EGRESS, tcp(C1, CLIENT, 80, 40000, "FA"))
    assert state(dp) == "closed"
    assert {RawCtEntry.from_buffer_copy(v).tcp_state for v in _raw_values(dp)} == {4}  # both halves


def test_rst_closes_and_a_new_syn_reopens(dp: Datapath) -> None:
    published(dp)
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40000, 8080, "S"))
    go(dp, PUBLIC_EGRESS, tcp(C1, CLIENT, 80, 40000, "SA"))
    go(dp, PUBLIC_EGRESS, tcp(C1, CLIENT, 80, 40000, "R"))
    assert state(dp) == "closed"
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40000, 8080, "S"))
    assert state(dp) == "syn_sent"


def test_per_flow_packets_bytes_and_last_seen(dp: Datapath) -> None:
    published(dp)
    first = tcp(CLIENT, HOST, 40000, 8080, "S")
    go(dp, PUBLIC_INGRESS, first)
    time.sleep(0.05)
    data = tcp(CLIENT, HOST, 40000, 8080, "A", payload=b"x" * 100)
    go(dp, PUBLIC_INGRESS, data)
    [flow] = dp.flows()
    assert flow.packets == 2
    assert flow.bytes == len(first) + len(data)
    assert flow.age_s >= 0.05 > flow.idle_s


def test_gc_removes_expired_pairs_whole_and_keeps_live_ones(dp: Datapath) -> None:
    published(dp)
    dp.set_config(DatapathConfig(tcp_transitory_s=1, udp_s=2, icmp_s=1, tcp_established_s=60))
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40001, 8080, "S"))  # stays syn_sent: transitory
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40002, 8080, "S"))
    go(dp, PUBLIC_EGRESS, tcp(C1, CLIENT, 80, 40002, "SA"))  # established
    go(dp, PUBLIC_EGRESS, udp(C1, OTHER, 5000, 53))
    go(dp, PUBLIC_EGRESS, ping(C1, OTHER, 5))
    assert dp.gc() == 0
    assert dp.gc(now_ns() + int(1.5 * S)) == 2  # the syn_sent TCP and the ping
    assert sorted(f.proto for f in dp.flows()) == [6, 17]
    assert dp.gc(now_ns() + 3 * S) == 1  # the UDP flow
    assert dp.gc(now_ns() + 61 * S) == 1  # the established TCP
    fill = dp.map_fill()
    assert fill["conntrack"][0] == fill["ct_unassured"][0] == 0  # both halves of every pair went, in both tables


def test_gc_uses_the_later_half_of_a_pair(dp: Datapath) -> None:
    published(dp)
    dp.set_config(DatapathConfig(tcp_transitory_s=1))
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40000, 8080, "S"))
    time.sleep(1.2)
    # The container refuses: a RST that acknowledges the SYN (the only one believed before any
    # reply), so only the reply half is fresh.
    refusal = eth(IPv6(src=C1, dst=CLIENT) / TCP(sport=80, dport=40000, flags="RA", seq=0, ack=1001))
    assert_translated(go(dp, PUBLIC_EGRESS, refusal), rewritten(refusal, src=HOST, sport=8080))
    assert dp.gc() == 0


def _raw_values(dp: Datapath) -> list[bytes]:
    return [bytes(half) for half in ct_halves(dp).values()]


def test_a_half_lost_to_eviction_is_rebuilt_from_the_other(dp: Datapath) -> None:
    published(dp)
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40000, 8080, "S"))
    delete_ct_half(dp, C1, CLIENT, 80, 40000, 6)  # the reply half
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40000, 8080, "A"))
    assert dp.counters()["ct_rebuilt"] == 1
    reply = tcp(C1, CLIENT, 80, 40000, "A")
    assert_translated(go(dp, PUBLIC_EGRESS, reply), rewritten(reply, src=HOST, sport=8080))

    delete_ct_half(dp, CLIENT, HOST, 40000, 8080, 6)  # now the original half
    go(dp, PUBLIC_EGRESS, reply)
    assert dp.counters()["ct_rebuilt"] == 2
    data = tcp(CLIENT, HOST, 40000, 8080, "A")
    assert_translated(go(dp, PUBLIC_INGRESS, data), rewritten(data, dst=C1, dport=80))
    assert len(dp.flows()) == 1


def test_summary_counts_pairs_lone_halves_and_snat_ports_like_flows(dp: Datapath) -> None:
    published(dp)
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40000, 8080, "S"))
    go(dp, PUBLIC_EGRESS, tcp(C1, CLIENT, 80, 40000, "SA"))
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40000, 8080, "A", ack=1001))  # the handshake completes: assured
    go(dp, PUBLIC_EGRESS, tcp(C1, OTHER, 61555, 443))
    go(dp, PUBLIC_EGRESS, tcp(C1, OTHER, 61555, 444))  # the same public (HOST, 61555): one port in use
    go(dp, PUBLIC_EGRESS, udp(C1, OTHER, 5000, 53))
    go(dp, PUBLIC_EGRESS, ping(C1, OTHER, 5))
    delete_ct_half(dp, C1, CLIENT, 80, 40000, 6)  # a DNAT pair without its reply half
    delete_ct_half(dp, C1, OTHER, 61555, 444, 6)  # an SNAT pair of which only the reply half is left

    summary = dp.conntrack_summary()
    assert summary.flows == {
        (6, "dnat", "established"): 1,
        (6, "snat", "syn_sent"): 2,
        (17, "snat", "none"): 1,
        (58, "snat", "none"): 1,
    }
    assert summary.snat_ports == {6: 1, 17: 1, 58: 1}
    # The assured DNAT flow's half is in conntrack, the other flows' halves in ct_unassured.
    fill = dp.map_fill()
    assert (fill["conntrack"][0], fill["ct_unassured"][0]) == (1, 7)
    assert summary.entries == 8
    by_flows: dict[tuple[int, str, str], int] = {}
    for f in dp.flows():
        by_flows[(f.proto, f.kind, f.state)] = by_flows.get((f.proto, f.kind, f.state), 0) + 1
    assert by_flows == summary.flows
    assert dp.map_fill(conntrack_entries=summary.entries) == dp.map_fill()

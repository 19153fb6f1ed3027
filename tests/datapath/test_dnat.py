"""Published ports: DNAT at public ingress, replies back at public egress."""

from __future__ import annotations

import pytest

from v6nat_ebpf.datapath import Datapath, DnatKey, DnatTarget
from dp_packets import (
    C1, C2, CLIENT, HOST, HOST2, OTHER, PUBLIC_EGRESS, PUBLIC_INGRESS, addr, assert_translated,
    assert_untouched, go, rewritten, tcp, udp,
)


def publish(dp: Datapath, proto: int, host_port: int, target: str, port: int, host: str | None = None,
            mapping_id: int = 7) -> None:
    dp.dnat.put(DnatKey(proto, addr(host) if host else None, host_port), DnatTarget(addr(target), port, mapping_id))


@pytest.mark.parametrize("make,proto", [(tcp, 6), (udp, 17)])
def test_published_port_reaches_the_container_and_replies_come_back(dp: Datapath, make, proto) -> None:
    publish(dp, proto, 8080, C1, 80)
    syn = make(CLIENT, HOST, 40000, 8080)
    r = go(dp, PUBLIC_INGRESS, syn)
    assert_translated(r, rewritten(syn, dst=C1, dport=80))  # client source kept

    reply = make(C1, CLIENT, 80, 40000, **({"flags": "SA"} if proto == 6 else {}))
    r = go(dp, PUBLIC_EGRESS, reply)
    assert_translated(r, rewritten(reply, src=HOST, sport=8080))

    c = dp.counters()
    assert (c["dnat"], c["reverse"], c["new_flow"]) == (1, 1, 1)
    assert dp.mapping_stats()[7][0] == 2


def test_exact_host_address_wins_over_the_wildcard(dp: Datapath) -> None:
    publish(dp, 6, 8080, C1, 80)
    publish(dp, 6, 8080, C2, 81, host=HOST2, mapping_id=8)
    to_host2 = tcp(CLIENT, HOST2, 40001, 8080)
    assert_translated(go(dp, PUBLIC_INGRESS, to_host2), rewritten(to_host2, dst=C2, dport=81))
    to_host = tcp(CLIENT, HOST, 40002, 8080)
    assert_translated(go(dp, PUBLIC_INGRESS, to_host), rewritten(to_host, dst=C1, dport=80))


def test_wildcard_applies_only_to_the_hosts_addresses(dp: Datapath) -> None:
    publish(dp, 6, 8080, C1, 80)
    passing = tcp(CLIENT, OTHER, 40000, 8080)
    assert_untouched(go(dp, PUBLIC_INGRESS, passing), passing)


def test_unpublished_ports_and_other_protocols_reach_the_host_untouched(dp: Datapath) -> None:
    publish(dp, 6, 8080, C1, 80)
    for pkt in (tcp(CLIENT, HOST, 40000, 22), udp(CLIENT, HOST, 40000, 8080)):
        assert_untouched(go(dp, PUBLIC_INGRESS, pkt), pkt)
    assert dp.counters()["pass"] == 2
    assert dp.flows() == []


def test_tcp_without_syn_starts_no_flow(dp: Datapath) -> None:
    publish(dp, 6, 8080, C1, 80)
    ack = tcp(CLIENT, HOST, 40000, 8080, flags="A")
    assert_untouched(go(dp, PUBLIC_INGRESS, ack), ack)
    assert dp.flows() == []


def test_established_flow_keeps_its_target_when_the_mapping_changes(dp: Datapath) -> None:
    publish(dp, 6, 8080, C1, 80)
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40000, 8080))
    publish(dp, 6, 8080, C2, 80)
    data = tcp(CLIENT, HOST, 40000, 8080, flags="A", payload=b"GET /")
    assert_translated(go(dp, PUBLIC_INGRESS, data), rewritten(data, dst=C1, dport=80))


def test_flow_record(dp: Datapath) -> None:
    publish(dp, 6, 8080, C1, 80)
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40000, 8080))
    go(dp, PUBLIC_EGRESS, tcp(C1, CLIENT, 80, 40000, flags="SA"))
    [flow] = dp.flows()
    assert (flow.kind, flow.state, flow.proto, flow.packets, flow.mapping_id) == ("dnat", "established", 6, 2, 7)
    assert (str(flow.original.saddr), str(flow.original.daddr), flow.original.dport) == (CLIENT, HOST, 8080)
    assert (str(flow.translated.daddr), flow.translated.dport) == (C1, 80)


@pytest.mark.parametrize("many", [False, True], ids=["delete", "delete_many"])
def test_unpublishing_deletes_the_mapping_stats_and_republishing_starts_from_zero(dp: Datapath, many: bool) -> None:
    publish(dp, 6, 8080, C1, 80)
    publish(dp, 6, 8081, C2, 80, mapping_id=8)
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40000, 8080))
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40000, 8081))
    assert set(dp.mapping_stats()) == {7, 8}

    key = DnatKey(6, None, 8080)
    dp.dnat.delete_many([key]) if many else dp.dnat.delete(key)
    assert set(dp.mapping_stats()) == {8}
    # The flow outlives its mapping (like Linux conntrack) but does not bring the entry back.
    data = tcp(CLIENT, HOST, 40000, 8080, flags="A", payload=b"GET /")
    assert_translated(go(dp, PUBLIC_INGRESS, data), rewritten(data, dst=C1, dport=80))
    assert set(dp.mapping_stats()) == {8}

    publish(dp, 6, 8080, C1, 80)
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40001, 8080))
    assert dp.mapping_stats()[7][0] == 1

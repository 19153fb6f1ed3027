"""`v6nat trace` in the kernel: events for matching packets only, with the tuple before and after, the
verdict, the drop reason and the flow; bounded by the rate and the lease; the filter put back on stop.
Real programs on real packets (BPF_PROG_TEST_RUN); the CLI against a running daemon is in
tests/e2e/test_trace_cli.py."""

from __future__ import annotations

import ctypes as ct
from ipaddress import IPv6Address, IPv6Network
from typing import Iterator

import pytest

from v6nat_ebpf.datapath import Datapath, DnatKey, DnatTarget, layout
from v6nat_ebpf.datapath.trace import Tracer, TraceEvent, TraceFilter
from v6nat_ebpf.errors import V6natError
from dp_packets import C1, CLIENT, HOST, OTHER, PUBLIC_EGRESS, PUBLIC_INGRESS, addr, go, tcp, udp


@pytest.fixture
def tracer(dp: Datapath) -> Iterator[Tracer]:
    t = dp.tracer()
    try:
        yield t
    finally:
        t.stop()


def events(t: Tracer) -> list[TraceEvent]:
    return t.poll(0)


def publish(dp: Datapath, port: int = 8080, mapping_id: int = 7) -> None:
    dp.dnat.put(DnatKey(6, None, port), DnatTarget(addr(C1), 80, mapping_id))


def test_a_dropped_packet_shows_its_hook_tuple_and_reason(dp: Datapath, tracer: Tracer) -> None:
    publish(dp)
    tracer.start(TraceFilter(port=8080))
    go(dp, PUBLIC_INGRESS, tcp("fd00:bad::1", HOST, 40000, 8080))  # a ULA source from outside
    [ev] = events(tracer)
    assert (ev.hook, ev.verdict, ev.drop_reason) == ("public_ingress", "drop", "bogon_source")
    assert ev.before == ev.after
    assert (ev.before.saddr, ev.before.daddr, ev.before.sport, ev.before.dport) == (
        IPv6Address("fd00:bad::1"), IPv6Address(HOST), 40000, 8080)


def test_a_translated_packet_shows_both_tuples_and_its_flow(dp: Datapath, tracer: Tracer) -> None:
    publish(dp)
    tracer.start(TraceFilter(port=8080))
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40000, 8080))
    go(dp, PUBLIC_EGRESS, tcp(C1, CLIENT, 80, 40000, flags="SA", ack=1001))
    syn, reply = events(tracer)
    assert (syn.hook, syn.verdict, syn.drop_reason, syn.kind, syn.direction, syn.mapping_id) == (
        "public_ingress", "continue", None, "dnat", "original", 7)
    assert (syn.after.daddr, syn.after.dport, syn.after.saddr) == (IPv6Address(C1), 80, IPv6Address(CLIENT))
    # the reply matches by its translated end (port 8080 after, 80 before)
    assert (reply.hook, reply.kind, reply.direction) == ("public_egress", "dnat", "reply")
    assert (reply.after.saddr, reply.after.sport) == (IPv6Address(HOST), 8080)


def test_only_matching_packets_are_sent(dp: Datapath, tracer: Tracer) -> None:
    publish(dp)
    publish(dp, 9090, mapping_id=9)
    tracer.start(TraceFilter(prefix=IPv6Network("2001:db8:2::/48"), proto=6, mapping_id=9))
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40000, 8080))  # mapping 7
    go(dp, PUBLIC_INGRESS, udp(CLIENT, HOST, 40000, 9090))  # udp
    go(dp, PUBLIC_INGRESS, tcp(OTHER, HOST, 40000, 9090))  # outside the prefix
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40001, 9090))
    assert [(e.before.saddr, e.before.sport, e.mapping_id) for e in events(tracer)] == [
        (IPv6Address(CLIENT), 40001, 9)]


def test_drops_only(dp: Datapath, tracer: Tracer) -> None:
    publish(dp)
    tracer.start(TraceFilter(drops_only=True))
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40000, 8080))
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, "fd00:1::9", 40000, 80))  # straight to a NAT'd prefix
    assert [(e.verdict, e.drop_reason) for e in events(tracer)] == [("drop", "direct_ula")]


def test_the_kernel_limits_the_rate_and_counts_the_rest(dp: Datapath, tracer: Tracer) -> None:
    tracer.start(TraceFilter(port=22, rate=3))
    for i in range(10):
        go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40000 + i, 22))
    assert len(events(tracer)) == 3  # one CPU runs BPF_PROG_TEST_RUN: one budget
    assert tracer.losses().limited == 7


def test_nothing_is_sent_with_the_trace_off_or_its_lease_run_out(dp: Datapath, tracer: Tracer) -> None:
    tracer.start(TraceFilter(port=22))
    filter_map = dp._maps["trace_filter"]
    expired = TraceFilter(port=22).raw(expires_ns=1)  # a tracer that died long ago
    filter_map.update(ct.c_uint32(0), expired)
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40000, 22))
    filter_map.update(ct.c_uint32(0), layout.RawTraceFilter())
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40001, 22))
    assert events(tracer) == []


def test_stop_puts_the_filter_back_and_one_tracer_at_a_time(dp: Datapath, tracer: Tracer) -> None:
    before = bytes(tracer.current())
    tracer.start(TraceFilter(port=22))
    with pytest.raises(V6natError, match="another `v6nat trace` is running"):
        dp.tracer().start(TraceFilter())
    tracer.stop()
    assert bytes(tracer.current()) == before
    second = dp.tracer()
    second.start(TraceFilter())  # free again
    second.stop()

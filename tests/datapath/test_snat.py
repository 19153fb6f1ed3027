"""Masquerade: SNAT at public egress with port preservation (inside the SNAT
port range only, so host-chosen ports and container ports never meet), atomic port
claims that avoid other flows, host sockets and published ports; replies back
at public ingress; what must never leave a public interface."""

from __future__ import annotations

import socket
from contextlib import closing

import pytest

from v6nat_ebpf.datapath import Datapath, DatapathConfig, DnatKey, DnatTarget, NetworkEntry, SnatAllocations
from dp_packets import (
    C1, C2, CLIENT, HOST, HOST2, INTERNAL1, NET, OTHER, PUBLIC_EGRESS, PUBLIC_INGRESS, ROUTED1, SHOT, addr,
    assert_translated, assert_untouched, go, l4, ping, rewritten, tcp, udp,
)


@pytest.mark.parametrize("make", [tcp, udp])
def test_source_port_kept_when_free_and_replies_come_back(dp: Datapath, make) -> None:
    out = make(C1, OTHER, 61555, 443)
    assert_translated(go(dp, PUBLIC_EGRESS, out), rewritten(out, src=HOST))
    reply = make(OTHER, HOST, 443, 61555, **({"flags": "SA"} if make is tcp else {}))
    assert_translated(go(dp, PUBLIC_INGRESS, reply), rewritten(reply, dst=C1))
    c = dp.counters()
    assert (c["snat"], c["reverse"]) == (1, 1)


@pytest.mark.parametrize("make", [tcp, udp])
@pytest.mark.parametrize("port", [5555, 32768, 60999])
def test_source_port_outside_the_range_is_never_kept(dp: Datapath, make, port: int) -> None:
    """A container port outside the SNAT range could be a port the host picks
    for its own flows (its replies would then reach the container): replaced
    by a port of the range, and the replies still find the container."""
    out = make(C1, OTHER, port, 443)
    r = go(dp, PUBLIC_EGRESS, out)
    public = l4(r).sport
    assert 61000 <= public <= 65535
    assert_translated(r, rewritten(out, src=HOST, sport=public))
    reply = make(OTHER, HOST, 443, public, **({"flags": "SA"} if make is tcp else {}))
    assert_translated(go(dp, PUBLIC_INGRESS, reply), rewritten(reply, dst=C1, dport=port))
    not_ours = make(OTHER, HOST, 443, port, **({"flags": "SA"} if make is tcp else {}))
    assert_untouched(go(dp, PUBLIC_INGRESS, not_ours), not_ours)  # the host's port stays the host's


def test_taken_port_is_replaced_from_the_range_and_replies_find_their_container(dp: Datapath) -> None:
    go(dp, PUBLIC_EGRESS, tcp(C1, OTHER, 61555, 443))
    second = tcp(C2, OTHER, 61555, 443)
    r = go(dp, PUBLIC_EGRESS, second)
    port = l4(r).sport
    assert 61000 <= port <= 65535
    assert_translated(r, rewritten(second, src=HOST, sport=port))
    assert port != 61555
    reply = tcp(OTHER, HOST, 443, port, flags="SA")
    assert_translated(go(dp, PUBLIC_INGRESS, reply), rewritten(reply, dst=C2, dport=61555))
    first_reply = tcp(OTHER, HOST, 443, 61555, flags="SA")
    assert_translated(go(dp, PUBLIC_INGRESS, first_reply), rewritten(first_reply, dst=C1))


@pytest.mark.parametrize("kind,make", [(socket.SOCK_STREAM, tcp), (socket.SOCK_DGRAM, udp)])
def test_port_of_a_host_socket_is_never_used(dp: Datapath, kind, make) -> None:
    with closing(socket.socket(socket.AF_INET6, kind)) as s:
        s.bind(("::", 0))
        if kind == socket.SOCK_STREAM:
            s.listen()
        host_port = s.getsockname()[1]
        r = go(dp, PUBLIC_EGRESS, make(C1, OTHER, host_port, 443))
        assert l4(r).sport != host_port
        assert 61000 <= l4(r).sport <= 65535


def test_published_port_is_never_used_as_a_source(dp: Datapath) -> None:
    dp.dnat.put(DnatKey(6, None, 61555), DnatTarget(addr(C2), 80, 1))
    r = go(dp, PUBLIC_EGRESS, tcp(C1, OTHER, 61555, 443))
    assert 61000 <= l4(r).sport <= 65535 and l4(r).sport != 61555


def test_exhaustion_is_a_counted_drop_never_a_wrong_translation(dp: Datapath) -> None:
    dp.set_config(DatapathConfig(snat_port_min=61000, snat_port_max=61000))
    assert l4(go(dp, PUBLIC_EGRESS, tcp(C1, OTHER, 5555, 443))).sport == 61000  # outside the range: replaced
    second = go(dp, PUBLIC_EGRESS, tcp(C2, OTHER, 61000, 443))  # the range's one port is taken
    assert second.verdict == SHOT
    assert dp.counters()["drop_ports_exhausted"] == 1
    assert l4(go(dp, PUBLIC_EGRESS, tcp(C2, OTHER, 61000, 444))).sport == 61000  # another remote: free
    assert len(dp.flows()) == 2


def test_network_snat_address_overrides_the_interface_address(dp: Datapath) -> None:
    dp.networks.put(NET, NetworkEntry(1, 10, masquerade=True, icc=True, internal=False, snat_addr=addr(HOST2)))
    out = udp(C1, OTHER, 61555, 53)
    assert_translated(go(dp, PUBLIC_EGRESS, out), rewritten(out, src=HOST2))


def test_no_source_address_is_a_counted_drop(dp: Datapath) -> None:
    dp.public_ifaces.delete(1)
    assert go(dp, PUBLIC_EGRESS, udp(C1, OTHER, 5555, 53)).verdict == SHOT
    assert dp.counters()["drop_no_snat_addr"] == 1


def test_network_without_masquerade_leaves_with_its_own_address(dp: Datapath) -> None:
    out = tcp(ROUTED1, OTHER, 5555, 443)
    assert_untouched(go(dp, PUBLIC_EGRESS, out), out)


def test_internal_network_never_leaves(dp: Datapath) -> None:
    assert go(dp, PUBLIC_EGRESS, udp(INTERNAL1, OTHER, 5555, 53)).verdict == SHOT
    assert dp.counters()["drop_internal_egress"] == 1


def test_masqueraded_tcp_without_flow_or_syn_is_dropped_not_leaked(dp: Datapath) -> None:
    assert go(dp, PUBLIC_EGRESS, tcp(C1, OTHER, 5555, 443, flags="A")).verdict == SHOT
    assert dp.counters()["drop_tcp_no_flow"] == 1


def test_hosts_own_traffic_passes_untouched(dp: Datapath) -> None:
    for pkt in (tcp(HOST, OTHER, 5555, 443), udp(HOST, OTHER, 5555, 53), ping(HOST, OTHER, 9)):
        assert_untouched(go(dp, PUBLIC_EGRESS, pkt), pkt)


def test_echo_identifier_is_the_port(dp: Datapath) -> None:
    req = ping(C1, OTHER, 61077)
    assert_translated(go(dp, PUBLIC_EGRESS, req), rewritten(req, src=HOST))
    second = ping(C2, OTHER, 61077)
    r = go(dp, PUBLIC_EGRESS, second)
    ident = l4(r).id
    assert ident != 61077 and 61000 <= ident <= 65535
    assert_translated(r, rewritten(second, src=HOST, ident=ident))
    for reply_id, container in ((61077, C1), (ident, C2)):
        reply = ping(OTHER, HOST, reply_id, reply=True)
        expected = rewritten(reply, dst=container, ident=61077)
        assert_translated(go(dp, PUBLIC_INGRESS, reply), expected)


def test_allocations_are_counted_by_tries_needed(dp: Datapath) -> None:
    # A one-port range: the first claim keeps its port (1 try); the next prefers the range's one port
    # (its own is outside the range) and finds it free toward another remote port (1 try); the third
    # finds it taken toward the same remote endpoint, and the random tries too (exhausted: not a claim).
    dp.set_config(DatapathConfig(snat_port_min=61000, snat_port_max=61000))
    assert l4(go(dp, PUBLIC_EGRESS, tcp(C1, OTHER, 61000, 443))).sport == 61000
    assert l4(go(dp, PUBLIC_EGRESS, tcp(C2, OTHER, 5555, 444))).sport == 61000
    assert go(dp, PUBLIC_EGRESS, tcp(C1, OTHER, 5555, 443)).verdict == SHOT
    assert dp.snat_allocations() == SnatAllocations(buckets=((1, 2), (3, 0), (7, 0), (16, 0)), tries=2)


def test_random_candidates_are_counted_in_the_bucket_of_their_try(dp: Datapath) -> None:
    # Per remote port, 3 of the range's 4 ports are claimed first by other flows (one try each); the
    # measured claims prefer their own port 61000, taken (refused: the first try), so each then hits
    # the free port at a random try: 2 to 16, or never.
    dp.set_config(DatapathConfig(snat_port_min=61000, snat_port_max=61003))
    flows = 300
    for remote in range(1000, 1000 + flows):
        for port in (61000, 61001, 61002):
            assert l4(go(dp, PUBLIC_EGRESS, tcp(C2, OTHER, port, remote))).sport == port
    before = dp.snat_allocations()
    assert before == SnatAllocations(buckets=((1, 3 * flows), (3, 0), (7, 0), (16, 0)), tries=3 * flows)

    translated = 0
    for remote in range(1000, 1000 + flows):
        r = go(dp, PUBLIC_EGRESS, tcp(C1, OTHER, 61000, remote))
        if r.verdict != SHOT:
            assert l4(r).sport == 61003
            translated += 1
    assert translated + dp.counters()["drop_ports_exhausted"] == flows
    after = dp.snat_allocations()
    claims = {most: n - dict(before.buckets)[most] for most, n in after.buckets}
    assert claims[1] == 0 and sum(claims.values()) == translated
    # P(a bucket stays empty) < 1e-20 with 300 claims: 2-3 tries 44 %, 4-7 38 %, 8-16 16 %, exhausted 1.3 %.
    assert claims[3] > 0 and claims[7] > 0 and claims[16] > 0
    tries = after.tries - before.tries
    assert 2 * claims[3] + 4 * claims[7] + 8 * claims[16] <= tries <= 3 * claims[3] + 7 * claims[7] + 16 * claims[16]


def test_an_internal_endpoint_keeps_its_external_port_toward_every_destination(dp: Datapath) -> None:
    """Endpoint-independent mapping (RFC 4787 REQ-1, RFC 5382 REQ-1): a container port outside the SNAT
    range gets one port of the range, the same toward every remote address and port; another
    endpoint gets its own."""
    mapped = {l4(go(dp, PUBLIC_EGRESS, udp(C1, remote, 5555, rport))).sport
              for remote in (OTHER, CLIENT) for rport in (53, 3478, 3479)}
    assert len(mapped) == 1 and 61000 <= mapped.pop() <= 65535
    tcp_ports = {l4(go(dp, PUBLIC_EGRESS, tcp(C1, remote, 5555, 443))).sport for remote in (OTHER, CLIENT)}
    assert len(tcp_ports) == 1
    others = {l4(go(dp, PUBLIC_EGRESS, udp(C1, OTHER, port, 53))).sport for port in range(5556, 5566)}
    assert len(others) >= 9  # ten endpoints: their own ports (a collision in 4,536 is allowed)

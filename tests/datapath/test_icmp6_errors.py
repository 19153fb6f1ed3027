"""ICMPv6 errors quoting a translated flow, both directions: the quoted
addresses and ports (or echo identifier), the quoted L4 checksum whenever the
quote holds it (complete or truncated quote), and the outer checksum. Every
expected packet is what the other side of the NAT really sent, so the bytes
must match exactly. Quotes may carry extension headers (bounded walk)."""

from __future__ import annotations

import pytest
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    PadN,
)
from scapy.layers.inet import UDP
from scapy.packet import Packet, Raw

from v6nat_ebpf.datapath import Datapath, DnatKey, DnatTarget
from dp_packets import (
    C1, C2, CLIENT, HOST, OTHER, PUBLIC_EGRESS, PUBLIC_INGRESS, ROUTER, addr, assert_translated,
    assert_untouched, eth, go, ping, tcp, udp,
)

ERRORS = {
    "ptb": lambda: ICMPv6PacketTooBig(mtu=1280),
    "unreach": lambda: ICMPv6DestUnreach(code=4),
    "time": lambda: ICMPv6TimeExceeded(code=0),
    "param": lambda: ICMPv6ParamProblem(code=0, ptr=6),
}


def l3(pkt: Packet | bytes) -> bytes:
    """The IPv6 packet inside an Ethernet frame, as bytes."""
    return bytes(pkt)[14:]


def error(src: str, dst: str, kind: str, quote: bytes) -> bytes:
    return bytes(eth(IPv6(src=src, dst=dst) / ERRORS[kind]() / Raw(quote)))


def dnat_flow(dp: Datapath, make=tcp) -> tuple[bytes, bytes, bytes, bytes]:
    """A DNAT flow: (client's packet, what C1 got, C1's reply, what the client got)."""
    dp.dnat.put(DnatKey(6 if make is tcp else 17, None, 8080), DnatTarget(addr(C1), 80, 1))
    sent = make(CLIENT, HOST, 40000, 8080, payload=b"q" * 64)
    got = go(dp, PUBLIC_INGRESS, sent).raw
    reply = make(C1, CLIENT, 80, 40000, payload=b"r" * 64)
    reply_out = go(dp, PUBLIC_EGRESS, reply).raw
    return bytes(sent), got, bytes(reply), reply_out


def snat_flow(dp: Datapath, src: str = C1, make=tcp) -> tuple[bytes, bytes]:
    """A masqueraded packet as the container sent it and as it left."""
    sent = make(src, OTHER, 61555, 443, payload=b"s" * 64)
    return bytes(sent), go(dp, PUBLIC_EGRESS, sent).raw


@pytest.mark.parametrize("kind", list(ERRORS))
@pytest.mark.parametrize("make", [tcp, udp])
def test_error_from_outside_about_masqueraded_packet_reaches_the_container(dp: Datapath, kind, make) -> None:
    go(dp, PUBLIC_EGRESS, make(C1, OTHER, 61555, 443))  # the port 61555 goes to C1
    sent, left = snat_flow(dp, C2, make)  # C2 gets another port: the quote changes port too
    r = go(dp, PUBLIC_INGRESS, error(ROUTER, HOST, kind, l3(left)))
    assert_translated(r, error(ROUTER, C2, kind, l3(sent)))
    assert dp.counters()["icmp_error"] == 1


@pytest.mark.parametrize("kind", ["ptb", "unreach"])
def test_ptb_and_unreach_through_dnat_both_ways(dp: Datapath, kind) -> None:
    sent, got, reply, reply_out = dnat_flow(dp)
    # The host, routing towards the container, reports to the client.
    r = go(dp, PUBLIC_EGRESS, error(HOST, CLIENT, kind, l3(got)))
    assert_translated(r, error(HOST, CLIENT, kind, l3(sent)))
    # The container itself reports: the outer source is translated too.
    r = go(dp, PUBLIC_EGRESS, error(C1, CLIENT, kind, l3(got)))
    assert_translated(r, error(HOST, CLIENT, kind, l3(sent)))
    # A router outside reports about the container's reply.
    r = go(dp, PUBLIC_INGRESS, error(ROUTER, HOST, kind, l3(reply_out)))
    assert_translated(r, error(ROUTER, C1, kind, l3(reply)))


def test_error_from_the_container_about_a_reply_to_its_masqueraded_flow(dp: Datapath) -> None:
    snat_flow(dp, C1, udp)
    reply = udp(OTHER, HOST, 443, 61555)
    delivered = go(dp, PUBLIC_INGRESS, reply).raw
    r = go(dp, PUBLIC_EGRESS, error(C1, OTHER, "unreach", l3(delivered)))
    assert_translated(r, error(HOST, OTHER, "unreach", l3(reply)))


@pytest.mark.parametrize("kind", ["time", "ptb"])
def test_error_quoting_an_echo_request(dp: Datapath, kind) -> None:
    go(dp, PUBLIC_EGRESS, ping(C1, OTHER, 77))
    sent = ping(C2, OTHER, 77)  # identifier taken: a new one
    left = go(dp, PUBLIC_EGRESS, sent).raw
    r = go(dp, PUBLIC_INGRESS, error(ROUTER, HOST, kind, l3(left)))
    assert_translated(r, error(ROUTER, C2, kind, l3(sent)))


@pytest.mark.parametrize("cut", [40 + 20, 40 + 20 + 10, 40 + 8, 40 + 4])
def test_truncated_quotes(dp: Datapath, cut: int) -> None:
    """Cut after the TCP header, inside the payload, and before the checksum:
    ports always translated; the quoted checksum updated incrementally when
    present, so it still matches the full packet the container sent."""
    go(dp, PUBLIC_EGRESS, tcp(C1, OTHER, 61555, 443))
    sent, left = snat_flow(dp, C2)
    r = go(dp, PUBLIC_INGRESS, error(ROUTER, HOST, "ptb", l3(left)[:cut]))
    assert_translated(r, error(ROUTER, C2, "ptb", l3(sent)[:cut]))


def test_quote_too_short_for_ports_is_not_translated(dp: Datapath) -> None:
    _, left = snat_flow(dp)
    pkt = error(ROUTER, HOST, "ptb", l3(left)[:42])
    assert_untouched(go(dp, PUBLIC_INGRESS, pkt), pkt)


def test_error_about_a_flow_that_is_not_ours_is_untouched(dp: Datapath) -> None:
    quote = l3(tcp(HOST, OTHER, 5555, 443))
    pkt = error(ROUTER, HOST, "ptb", quote)
    assert_untouched(go(dp, PUBLIC_INGRESS, pkt), pkt)
    pkt = error(HOST, OTHER, "unreach", l3(tcp(OTHER, HOST, 443, 22)))
    assert_untouched(go(dp, PUBLIC_EGRESS, pkt), pkt)


def test_untranslatable_error_from_a_masqueraded_network_does_not_leave(dp: Datapath) -> None:
    pkt = error(C1, OTHER, "unreach", l3(udp(OTHER, C1, 443, 9999)))
    assert go(dp, PUBLIC_EGRESS, pkt).verdict == 2
    assert dp.counters()["drop_unsupported"] == 1


EXTHDRS = {
    "dest-opts": lambda: IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0" * 4)]),
    "hop-by-hop": lambda: IPv6ExtHdrHopByHop(options=[PadN(optdata=b"\0" * 4)]),
    "routing-done": lambda: IPv6ExtHdrRouting(addresses=["2001:db8:7::1"], segleft=0),
    "first-fragment": lambda: IPv6ExtHdrFragment(m=1, offset=0, id=0x1234),
    "two-headers": lambda: IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt(),
}


def with_exthdr(src: str, dst: str, exthdr: Packet, make, sport: int, dport: int) -> bytes:
    """A TCP or UDP packet with extension headers between IPv6 and the ports."""
    l4 = make(src, dst, sport, dport, payload=b"x" * 48)[IPv6].payload
    return bytes(eth(IPv6(src=src, dst=dst) / exthdr / l4))


@pytest.mark.parametrize("ext", list(EXTHDRS))
@pytest.mark.parametrize("make", [tcp, udp])
def test_quote_with_extension_headers_is_translated(dp: Datapath, ext: str, make) -> None:
    go(dp, PUBLIC_EGRESS, make(C1, OTHER, 61555, 443))  # the port 61555 goes to C1
    sent = with_exthdr(C2, OTHER, EXTHDRS[ext](), make, 61555, 443)
    left = go(dp, PUBLIC_EGRESS, sent)
    assert left.verdict == -1 and left.raw != sent
    r = go(dp, PUBLIC_INGRESS, error(ROUTER, HOST, "ptb", l3(left.raw)))
    assert_translated(r, error(ROUTER, C2, "ptb", l3(sent)))
    # and through DNAT: the container's reply, carrying the header, quoted by a router outside
    dp.dnat.put(DnatKey(6 if make is tcp else 17, None, 8080), DnatTarget(addr(C1), 80, 1))
    go(dp, PUBLIC_INGRESS, make(CLIENT, HOST, 40000, 8080))
    reply = with_exthdr(C1, CLIENT, EXTHDRS[ext](), make, 80, 40000)
    reply_out = go(dp, PUBLIC_EGRESS, reply).raw
    r = go(dp, PUBLIC_INGRESS, error(ROUTER, HOST, "unreach", l3(reply_out)))
    assert_translated(r, error(ROUTER, C1, "unreach", l3(reply)))


def test_quote_cut_inside_an_extension_header_is_not_translated(dp: Datapath) -> None:
    go(dp, PUBLIC_EGRESS, tcp(C1, OTHER, 5555, 443))
    sent = with_exthdr(C1, OTHER, IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0" * 12)]), udp, 5555, 443)
    left = go(dp, PUBLIC_EGRESS, sent).raw
    pkt = error(ROUTER, HOST, "ptb", l3(left)[:40 + 12])
    assert_untouched(go(dp, PUBLIC_INGRESS, pkt), pkt)


@pytest.mark.parametrize("exthdr", [
    IPv6ExtHdrFragment(m=0, offset=8, id=0x1234),  # a later fragment quotes no ports
    IPv6ExtHdrRouting(addresses=["2001:db8:7::1"], segleft=1),  # the quoted destination is not the final one
    IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
    / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt(),  # past the bounded walk
], ids=["later-fragment", "routing-segments-left", "seven-headers"])
def test_quotes_we_cannot_read_are_left_untouched(dp: Datapath, exthdr: Packet) -> None:
    snat_flow(dp, C1, udp)
    quote = bytes(IPv6(src=HOST, dst=OTHER) / exthdr / UDP(sport=5555, dport=443) / Raw(b"x" * 8))
    pkt = error(ROUTER, HOST, "ptb", quote)
    assert_untouched(go(dp, PUBLIC_INGRESS, pkt), pkt)

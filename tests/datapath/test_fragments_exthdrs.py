"""Extension headers (bounded walk) and fragments (the first fragment's ports
remembered for the following ones, for flows that have seen a reply: a flood
of first fragments of new flows cannot flush the table); what cannot be
handled is counted."""

from __future__ import annotations

from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, fragment6

from v6nat_ebpf.datapath import Datapath, DnatKey, DnatTarget
from dp_packets import (
    C1, CLIENT, HOST, OTHER, PUBLIC_EGRESS, PUBLIC_INGRESS, SHOT, addr, assert_translated, assert_untouched,
    eth, go, rewritten, udp,
)



def fragments(src: str, dst: str, sport: int, dport: int, ident: int = 0x1234) -> list[bytes]:
    whole = IPv6(src=src, dst=dst) / IPv6ExtHdrFragment(id=ident) / UDP(sport=sport, dport=dport) / (b"z" * 1400)
    return [bytes(eth(f)) for f in fragment6(whole, 600)]


def test_fragmented_datagram_is_masqueraded_whole_and_its_reply_too(dp: Datapath) -> None:
    # A flow that has seen a reply (only those remember a first fragment's ports).
    go(dp, PUBLIC_EGRESS, udp(C1, OTHER, 61555, 53))
    go(dp, PUBLIC_INGRESS, udp(OTHER, HOST, 53, 61555))
    sent = fragments(C1, OTHER, 61555, 53)
    assert len(sent) == 3
    want = fragments(HOST, OTHER, 61555, 53)
    for frag, expected in zip(sent, want):
        assert_translated(go(dp, PUBLIC_EGRESS, frag), expected)
    reply = fragments(OTHER, HOST, 53, 61555, ident=0x9999)
    for frag, expected in zip(reply, fragments(OTHER, C1, 53, 61555, ident=0x9999)):
        assert_translated(go(dp, PUBLIC_INGRESS, frag), expected)
    assert dp.counters()["fragment"] == 4


def test_fragments_to_a_published_port(dp: Datapath) -> None:
    dp.dnat.put(DnatKey(17, None, 5353), DnatTarget(addr(C1), 53, 2))
    go(dp, PUBLIC_INGRESS, udp(CLIENT, HOST, 4000, 5353))
    go(dp, PUBLIC_EGRESS, udp(C1, CLIENT, 53, 4000))  # the container answered
    for frag, expected in zip(fragments(CLIENT, HOST, 4000, 5353), fragments(CLIENT, C1, 4000, 53)):
        assert_translated(go(dp, PUBLIC_INGRESS, frag), expected)
    assert dp.counters()["fragment"] == 2


def test_first_fragment_of_an_unanswered_flow_is_not_remembered(dp: Datapath) -> None:
    """A fragmented first datagram to a published port starts its flow (its
    checksum covers the whole datagram: not checked) and is translated, but
    its ports are not remembered until the flow has a reply: the later
    fragments reach the host untranslated (the stack drops them unreassembled)."""
    dp.dnat.put(DnatKey(17, None, 5353), DnatTarget(addr(C1), 53, 2))
    first, *later = fragments(CLIENT, HOST, 4000, 5353)
    assert_translated(go(dp, PUBLIC_INGRESS, first), fragments(CLIENT, C1, 4000, 53)[0])
    for frag in later:
        assert_untouched(go(dp, PUBLIC_INGRESS, frag), frag)
    assert dp.map_fill()["fragments"][0] == 0 and dp.counters()["fragment"] == 0


def test_later_fragment_without_its_first(dp: Datapath) -> None:
    later = fragments(C1, OTHER, 5555, 53)[1]
    assert go(dp, PUBLIC_EGRESS, later).verdict == SHOT  # a ULA source must not leave
    assert dp.counters()["drop_frag_no_first"] == 1
    to_host = fragments(CLIENT, HOST, 4000, 22)[1]
    assert_untouched(go(dp, PUBLIC_INGRESS, to_host), to_host)  # the host's own, maybe


def test_extension_headers_are_walked(dp: Datapath) -> None:
    dp.dnat.put(DnatKey(6, None, 8080), DnatTarget(addr(C1), 80, 2))
    syn = eth(IPv6(src=CLIENT, dst=HOST) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
              / TCP(sport=40000, dport=8080, flags="S"))
    assert_translated(go(dp, PUBLIC_INGRESS, syn), rewritten(syn, dst=C1, dport=80))


def test_too_many_extension_headers(dp: Datapath) -> None:
    def chain(src: str, dst: str) -> bytes:
        headers = IPv6ExtHdrDestOpt()
        for _ in range(6):
            headers = headers / IPv6ExtHdrDestOpt()
        return bytes(eth(IPv6(src=src, dst=dst) / headers / UDP(sport=5555, dport=53)))

    assert go(dp, PUBLIC_EGRESS, chain(C1, OTHER)).verdict == SHOT
    assert dp.counters()["drop_exthdr_limit"] == 1
    inbound = chain(CLIENT, HOST)
    assert_untouched(go(dp, PUBLIC_INGRESS, inbound), inbound)
    assert dp.counters()["malformed"] == 1

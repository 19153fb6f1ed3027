"""Flow integrity against an attacker who spoofs (issue 12), packet by packet
with BPF_PROG_TEST_RUN: a new flow never takes over a live flow's half
(clash), a blind RST does not close a flow, a packet with a wrong L4
checksum creates or changes no flow, a flood of unanswered flows cannot evict
an answered one, sources no outside host has are dropped, and a SYN on a
closed flow's tuple starts a new flow."""

from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Packet

from v6nat_ebpf.datapath import Datapath, DnatKey, DnatTarget, NetworkEntry
from v6nat_ebpf.datapath.layout import ct_unassured_max
from v6nat_ebpf.lab.datapath import ct_halves
from dp_packets import (
    BRIDGE_INGRESS, C1, C2, CLIENT, HOST, HOST2, INTERNAL1, LO_IFINDEX, NET, OTHER, PUBLIC_EGRESS,
    PUBLIC_INGRESS, SHOT, addr, assert_translated, assert_untouched, eth, go, rewritten,
)
from conftest import TEST_CONFIG

CLIENT_SEQ, SERVER_SEQ = 1000, 50000


def seg(src: str, dst: str, sport: int, dport: int, flags: str, seq: int, ack: int = 0, chksum: int | None = None,
        payload: bytes = b"") -> Packet:
    tcp = TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack)
    if chksum is not None:
        tcp.chksum = chksum
    return eth(IPv6(src=src, dst=dst) / tcp / payload)


def published(dp: Datapath, proto: int = 6) -> None:
    dp.dnat.put(DnatKey(proto, None, 8080), DnatTarget(addr(C1), 80, 1))


def established(dp: Datapath, cport: int = 40000) -> None:
    """CLIENT:cport -> HOST:8080 -> C1:80, handshake done."""
    published(dp)
    assert go(dp, PUBLIC_INGRESS, seg(CLIENT, HOST, cport, 8080, "S", CLIENT_SEQ)).verdict != SHOT
    assert go(dp, PUBLIC_EGRESS, seg(C1, CLIENT, 80, cport, "SA", SERVER_SEQ, CLIENT_SEQ + 1)).verdict != SHOT
    assert go(dp, PUBLIC_INGRESS, seg(CLIENT, HOST, cport, 8080, "A", CLIENT_SEQ + 1, SERVER_SEQ + 1)).verdict != SHOT


def halves(dp: Datapath) -> dict[bytes, bytes]:
    return {k: bytes(v) for k, v in ct_halves(dp).items()}


def state(dp: Datapath) -> str:
    [flow] = dp.flows()
    return flow.state


# -- a pair is only ever inserted -------------------------------------------------------------------------

def test_a_spoofed_syn_whose_reply_tuple_is_a_live_flows_is_a_clash(dp: Datapath) -> None:
    """The forger sends the live client's address and port toward the host's
    other address: its reply tuple (C1:80 -> CLIENT:40000) is the live flow's."""
    established(dp)
    before = halves(dp)
    forged = seg(CLIENT, HOST2, 40000, 8080, "S", 777)
    assert go(dp, PUBLIC_INGRESS, forged).verdict == SHOT
    assert dp.counters()["drop_ct_clash"] == 1
    assert halves(dp) == before  # the live pair, byte for byte
    # The real connection goes on: the container's data still leaves from HOST:8080.
    data = seg(C1, CLIENT, 80, 40000, "A", SERVER_SEQ + 1, CLIENT_SEQ + 1, payload=b"x")
    assert_translated(go(dp, PUBLIC_EGRESS, data), rewritten(data, src=HOST, sport=8080))


def test_a_spoofed_udp_datagram_cannot_move_a_live_udp_flows_replies(dp: Datapath) -> None:
    published(dp, 17)
    go(dp, PUBLIC_INGRESS, eth(IPv6(src=CLIENT, dst=HOST) / UDP(sport=4000, dport=8080) / b"q"))
    go(dp, PUBLIC_EGRESS, eth(IPv6(src=C1, dst=CLIENT) / UDP(sport=80, dport=4000) / b"a"))
    before = halves(dp)
    forged = eth(IPv6(src=CLIENT, dst=HOST2) / UDP(sport=4000, dport=8080) / b"q")
    assert go(dp, PUBLIC_INGRESS, forged).verdict == SHOT
    assert dp.counters()["drop_ct_clash"] == 1 and halves(dp) == before
    answer = eth(IPv6(src=C1, dst=CLIENT) / UDP(sport=80, dport=4000) / b"a")
    assert_translated(go(dp, PUBLIC_EGRESS, answer), rewritten(answer, src=HOST, sport=8080))  # not HOST2


# -- RSTs inside the tracked window only ------------------------------------------------------------------

@pytest.mark.parametrize("seq", [CLIENT_SEQ + 1 + 70000, CLIENT_SEQ + 1 - 70000, CLIENT_SEQ + 1 + 2 ** 31],
                         ids=["ahead", "behind", "opposite"])
def test_a_blind_rst_out_of_the_window_is_dropped_and_the_flow_lives_on(dp: Datapath, seq: int) -> None:
    established(dp)
    assert state(dp) == "established"
    blind = seg(CLIENT, HOST, 40000, 8080, "R", seq % 2 ** 32)
    assert go(dp, PUBLIC_INGRESS, blind).verdict == SHOT
    assert dp.counters()["drop_tcp_window"] == 1
    assert state(dp) == "established"
    # the container's own blind RST (from its side, toward the client) is judged the same way
    inside = seg(C1, CLIENT, 80, 40000, "R", (SERVER_SEQ + 1 + 100000) % 2 ** 32)
    assert go(dp, PUBLIC_EGRESS, inside).verdict == SHOT
    assert state(dp) == "established"


def test_an_in_window_rst_closes(dp: Datapath) -> None:
    established(dp)
    rst = seg(CLIENT, HOST, 40000, 8080, "R", CLIENT_SEQ + 1)
    assert_translated(go(dp, PUBLIC_INGRESS, rst), rewritten(rst, dst=C1, dport=80))
    assert state(dp) == "closed"
    assert dp.counters()["drop_tcp_window"] == 0


def test_an_in_window_rst_with_a_wrong_checksum_changes_nothing(dp: Datapath) -> None:
    established(dp)
    good = seg(CLIENT, HOST, 40000, 8080, "R", CLIENT_SEQ + 1)
    wrong = seg(CLIENT, HOST, 40000, 8080, "R", CLIENT_SEQ + 1, chksum=TCP(bytes(good[TCP])).chksum ^ 0x0101)
    assert go(dp, PUBLIC_INGRESS, wrong).verdict == SHOT
    assert dp.counters()["drop_bad_checksum"] == 1
    assert state(dp) == "established"


def test_the_answer_to_a_syn_must_acknowledge_it_to_reset(dp: Datapath) -> None:
    published(dp)
    go(dp, PUBLIC_INGRESS, seg(CLIENT, HOST, 40000, 8080, "S", CLIENT_SEQ))
    assert go(dp, PUBLIC_EGRESS, seg(C1, CLIENT, 80, 40000, "RA", 0, CLIENT_SEQ + 77)).verdict == SHOT
    assert state(dp) == "syn_sent"
    refusal = seg(C1, CLIENT, 80, 40000, "RA", 0, CLIENT_SEQ + 1)
    assert_translated(go(dp, PUBLIC_EGRESS, refusal), rewritten(refusal, src=HOST, sport=8080))
    assert state(dp) == "closed"


# -- L4 checksums before a flow is created ----------------------------------------------------------------

def pseudo_header_sum(src: str, dst: str, length: int, proto: int) -> int:
    """What a CHECKSUM_PARTIAL packet's checksum field holds: the folded pseudo-header sum."""
    data = addr(src).packed + addr(dst).packed + struct.pack("!II", length, proto)
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def test_a_syn_with_a_bad_checksum_creates_no_flow(dp: Datapath) -> None:
    published(dp)
    good = seg(CLIENT, HOST, 40000, 8080, "S", CLIENT_SEQ)
    bad = seg(CLIENT, HOST, 40000, 8080, "S", CLIENT_SEQ, chksum=TCP(bytes(good[TCP])).chksum ^ 0xFFFF ^ 0x1)
    assert go(dp, PUBLIC_INGRESS, bad).verdict == SHOT
    assert dp.counters()["drop_bad_checksum"] == 1
    assert dp.flows() == [] and halves(dp) == {}
    assert_translated(go(dp, PUBLIC_INGRESS, good), rewritten(good, dst=C1, dport=80))  # the right one does


@pytest.mark.parametrize("chksum", [0, 0x1234], ids=["zero", "wrong"])
def test_a_new_udp_flow_with_a_bad_checksum_creates_no_flow(dp: Datapath, chksum: int) -> None:
    published(dp, 17)
    pkt = eth(IPv6(src=CLIENT, dst=HOST) / UDP(sport=4000, dport=8080, chksum=chksum) / b"q")
    assert go(dp, PUBLIC_INGRESS, pkt).verdict == SHOT
    assert dp.counters()["drop_bad_checksum"] == 1 and halves(dp) == {}


def test_a_checksum_partial_syn_is_accepted(dp: Datapath) -> None:
    """A local sender's packet whose checksum a device still has to fill in
    holds the pseudo-header's sum (veth, tap with tx offload)."""
    published(dp)
    partial = seg(CLIENT, HOST, 40000, 8080, "S", CLIENT_SEQ, chksum=pseudo_header_sum(CLIENT, HOST, 20, 6))
    r = go(dp, PUBLIC_INGRESS, partial)
    assert r.verdict != SHOT and dp.counters()["new_flow"] == 1
    assert r.packet[IPv6].dst == C1 and r.packet[TCP].dport == 80


# -- floods of unanswered flows ---------------------------------------------------------------------------

def test_a_flood_of_unanswered_flows_leaves_answered_flows_alone(dp: Datapath) -> None:
    established(dp)
    answered = halves(dp)
    assert dp.map_fill()["conntrack"][0] == 2
    capacity = ct_unassured_max(TEST_CONFIG.conntrack_max)  # halves
    flood = capacity  # spoofed SYNs to the published port, each a pair: twice the table's halves
    for i in range(flood):
        go(dp, PUBLIC_INGRESS, eth(IPv6(src=OTHER, dst=HOST) / TCP(sport=1024 + i, dport=8080, flags="S")))
    fill = dp.map_fill()
    # Every SYN made its pair (evicting older unanswered ones: the table holds half of them at most).
    assert dp.counters()["new_flow"] == 1 + flood and fill["ct_unassured"][0] <= capacity
    assert fill["conntrack"][0] == 2
    still = halves(dp)
    for key, value in answered.items():
        assert still[key] == value  # the idle answered flow: not evicted, not touched
    data = seg(CLIENT, HOST, 40000, 8080, "A", CLIENT_SEQ + 1, SERVER_SEQ + 1, payload=b"x")
    assert_translated(go(dp, PUBLIC_INGRESS, data), rewritten(data, dst=C1, dport=80))


def test_answered_spoofed_syns_stay_unassured_and_closed_flows_move_back(dp: Datapath) -> None:
    """A forger's SYNs that the server answers (a listening port, syncookies) are not assured: the forger
    never sees the SYN-ACK, so never acknowledges it. A flow that completes its handshake is; once closed,
    it goes back to the evictable table, so the churn of short connections cannot push idle ones out."""
    published(dp)
    for i in range(8):
        go(dp, PUBLIC_INGRESS, seg(OTHER, HOST, 2000 + i, 8080, "S", CLIENT_SEQ))
        go(dp, PUBLIC_EGRESS, seg(C1, OTHER, 80, 2000 + i, "SA", SERVER_SEQ, CLIENT_SEQ + 1))
        # a blind guess of the acknowledgement does not assure it either
        go(dp, PUBLIC_INGRESS, seg(OTHER, HOST, 2000 + i, 8080, "A", CLIENT_SEQ + 1, SERVER_SEQ + 70000 + i))
    assert (dp.map_fill()["conntrack"][0], dp.counters()["ct_promoted"]) == (0, 0)
    established(dp)
    assert (dp.map_fill()["conntrack"][0], dp.counters()["ct_promoted"]) == (2, 1)
    go(dp, PUBLIC_INGRESS, seg(CLIENT, HOST, 40000, 8080, "FA", CLIENT_SEQ + 1, SERVER_SEQ + 1))
    go(dp, PUBLIC_EGRESS, seg(C1, CLIENT, 80, 40000, "FA", SERVER_SEQ + 1, CLIENT_SEQ + 2))
    [closed] = [f for f in dp.flows() if f.original.sport == 40000]
    assert closed.state == "closed" and dp.map_fill()["conntrack"][0] == 0
    last_ack = seg(CLIENT, HOST, 40000, 8080, "A", CLIENT_SEQ + 2, SERVER_SEQ + 2)
    assert_translated(go(dp, PUBLIC_INGRESS, last_ack), rewritten(last_ack, dst=C1, dport=80))
    assert dp.map_fill()["conntrack"][0] == 0  # the last ACK does not assure a closed flow again


# -- sources no outside host has --------------------------------------------------------------------------

@pytest.mark.parametrize("src", [C2, INTERNAL1, HOST2, "ff02::1", "::1", "::ffff:192.0.2.1", "fd99::1"],
                         ids=["managed", "internal", "host-address", "multicast", "loopback", "v4-mapped", "ula"])
def test_bogon_sources_toward_a_published_port_are_dropped(dp: Datapath, src: str) -> None:
    published(dp)
    pkt = seg(src, HOST, 40000, 8080, "S", CLIENT_SEQ)
    assert go(dp, PUBLIC_INGRESS, pkt).verdict == SHOT
    assert dp.counters()["drop_bogon_source"] == 1 and halves(dp) == {}


def test_link_local_and_unspecified_sources_pass_untouched(dp: Datapath) -> None:
    published(dp)
    for src in ("fe80::1", "::"):
        pkt = seg(src, HOST, 40000, 8080, "S", CLIENT_SEQ)
        assert_untouched(go(dp, PUBLIC_INGRESS, pkt), pkt)
    assert halves(dp) == {}


def test_a_managed_source_on_another_networks_bridge_is_spoofed(dp: Datapath) -> None:
    dp.networks.put(NET, NetworkEntry(1, LO_IFINDEX + 100, masquerade=True, icc=True, internal=False,
                                      snat_addr=None))
    published(dp)
    pkt = seg(C1, HOST, 61555, 8080, "S", CLIENT_SEQ)  # a hairpin, but C1's bridge is not this one
    assert go(dp, BRIDGE_INGRESS, pkt).verdict == SHOT
    assert dp.counters()["drop_spoofed_source"] == 1 and halves(dp) == {}


def test_an_internal_network_has_no_hairpin(dp: Datapath) -> None:
    published(dp)
    pkt = seg(INTERNAL1, HOST, 61555, 8080, "S", CLIENT_SEQ)
    assert go(dp, BRIDGE_INGRESS, pkt).verdict == SHOT
    assert dp.counters()["drop_isolation"] == 1 and halves(dp) == {}


def test_without_icc_no_hairpin_to_a_container_of_the_same_network(dp: Datapath) -> None:
    dp.networks.put(NET, NetworkEntry(1, LO_IFINDEX, masquerade=True, icc=False, internal=False, snat_addr=None))
    dp.dnat.put(DnatKey(6, None, 8080), DnatTarget(addr(C2), 80, 1))
    assert go(dp, BRIDGE_INGRESS, seg(C1, HOST, 61555, 8080, "S", CLIENT_SEQ)).verdict == SHOT
    assert dp.counters()["drop_icc_blocked"] == 1 and halves(dp) == {}


# -- a new connection on a closed flow's tuple ------------------------------------------------------------

def test_a_syn_on_a_closed_flows_tuple_starts_a_new_flow(dp: Datapath) -> None:
    established(dp)
    go(dp, PUBLIC_INGRESS, seg(CLIENT, HOST, 40000, 8080, "R", CLIENT_SEQ + 1))
    assert state(dp) == "closed"
    dp.dnat.put(DnatKey(6, None, 8080), DnatTarget(addr(C2), 80, 1))  # the mapping changed meanwhile
    syn = seg(CLIENT, HOST, 40000, 8080, "S", 9000)
    assert_translated(go(dp, PUBLIC_INGRESS, syn), rewritten(syn, dst=C2, dport=80))  # the mapping of now
    assert dp.counters()["ct_restarted"] == 1
    [flow] = dp.flows()
    assert flow.state == "syn_sent" and flow.translated.daddr == addr(C2)
    assert dp.map_fill()["conntrack"][0] == 0  # a new, unanswered flow: back in ct_unassured


def test_a_bad_checksum_syn_does_not_restart_a_closed_flow(dp: Datapath) -> None:
    """Found by the fuzzer: the restart once came before the checksum check."""
    established(dp)
    go(dp, PUBLIC_INGRESS, seg(CLIENT, HOST, 40000, 8080, "R", CLIENT_SEQ + 1))
    before = halves(dp)
    assert go(dp, PUBLIC_INGRESS, seg(CLIENT, HOST, 40000, 8080, "S", 9000, chksum=0x1234)).verdict == SHOT
    assert dp.counters()["drop_bad_checksum"] == 1 and dp.counters()["ct_restarted"] == 0
    assert halves(dp) == before

"""Source policy at public ingress (lib/policy.h): each mapping's allow/deny rules on new flows only, and
bans on new and established flows alike, with expiry decided in the kernel (CLOCK_BOOTTIME)."""

from __future__ import annotations

import time
from ipaddress import IPv6Network

from v6nat_ebpf.datapath import Ban, BanKey, Datapath, DnatKey, DnatTarget, PolicyKey
from dp_packets import (
    C1, CLIENT, HOST, OTHER, PUBLIC_EGRESS, PUBLIC_INGRESS, ROUTED1, SHOT, addr, assert_translated,
    assert_untouched, go, rewritten, tcp, udp,
)
from test_fragments_exthdrs import fragments

OFFICE = IPv6Network("2001:db8:2::/48")  # CLIENT is in it
ELSEWHERE = "2001:db8:7::5"


def publish(dp: Datapath, host_port: int = 587, policy_id: int = 0, default_deny: bool = False,
            mapping_id: int = 7) -> None:
    dp.dnat.put(DnatKey(6, None, host_port), DnatTarget(addr(C1), 25, mapping_id, policy_id, default_deny))


def boot_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def ban(dp: Datapath, prefix: str, port: int = 0, proto: int = 0, expires_ns: int = 0) -> None:
    dp.bans.put(BanKey(IPv6Network(prefix), port, proto), Ban(expires_ns, int(time.time())))
    dp.bans.bump_generation()


def test_an_allowlist_lets_its_prefixes_in_and_drops_the_rest_counted_per_mapping(dp: Datapath) -> None:
    dp.policy.put(PolicyKey(3, OFFICE), True)
    publish(dp, policy_id=3, default_deny=True)
    syn = tcp(CLIENT, HOST, 40000, 587)
    assert_translated(go(dp, PUBLIC_INGRESS, syn), rewritten(syn, dst=C1, dport=25))
    assert go(dp, PUBLIC_INGRESS, tcp(ELSEWHERE, HOST, 40000, 587)).verdict == SHOT
    assert dp.counters()["drop_policy"] == 1
    assert dp.mapping_stats()[7][2] == 1
    assert len(dp.flows()) == 1


def test_a_deny_inside_an_allow_wins_and_a_mapping_without_rules_is_open(dp: Datapath) -> None:
    dp.policy.put(PolicyKey(3, OFFICE), True)
    dp.policy.put(PolicyKey(3, IPv6Network(f"{CLIENT}/128")), False)
    publish(dp, policy_id=3, default_deny=True)
    publish(dp, host_port=25, mapping_id=8)  # no policy: anyone
    assert go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40000, 587)).verdict == SHOT
    assert go(dp, PUBLIC_INGRESS, tcp("2001:db8:2::42", HOST, 40000, 587)).verdict != SHOT
    assert go(dp, PUBLIC_INGRESS, tcp(ELSEWHERE, HOST, 40000, 25)).verdict != SHOT


def test_rules_apply_to_new_flows_only(dp: Datapath) -> None:
    publish(dp)
    go(dp, PUBLIC_INGRESS, tcp(ELSEWHERE, HOST, 40000, 587))
    publish(dp, policy_id=3, default_deny=True)  # nobody may start a flow now
    data = tcp(ELSEWHERE, HOST, 40000, 587, flags="A", payload=b"EHLO")
    assert_translated(go(dp, PUBLIC_INGRESS, data), rewritten(data, dst=C1, dport=25))
    assert go(dp, PUBLIC_INGRESS, tcp(ELSEWHERE, HOST, 40001, 587)).verdict == SHOT


def test_a_ban_drops_new_flows_of_every_port_or_of_one(dp: Datapath) -> None:
    publish(dp)
    publish(dp, host_port=25, mapping_id=8)
    ban(dp, "2001:db8:7::/48", port=587, proto=6)
    assert go(dp, PUBLIC_INGRESS, tcp(ELSEWHERE, HOST, 40000, 587)).verdict == SHOT
    assert go(dp, PUBLIC_INGRESS, tcp(ELSEWHERE, HOST, 40000, 25)).verdict != SHOT
    ban(dp, "2001:db8:7::/48")
    assert go(dp, PUBLIC_INGRESS, tcp(ELSEWHERE, HOST, 40001, 25)).verdict == SHOT
    assert go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40001, 25)).verdict != SHOT
    assert dp.counters()["drop_banned"] == 2


def test_a_ban_cuts_established_flows_at_their_next_packet(dp: Datapath) -> None:
    publish(dp)
    go(dp, PUBLIC_INGRESS, tcp(ELSEWHERE, HOST, 40000, 587))
    go(dp, PUBLIC_EGRESS, tcp(C1, ELSEWHERE, 25, 40000, flags="SA"))
    go(dp, PUBLIC_EGRESS, udp(C1, OTHER, 61555, 53))  # a masqueraded flow to another banned host
    assert len(dp.flows()) == 2
    ban(dp, ELSEWHERE)
    ban(dp, OTHER)
    assert go(dp, PUBLIC_INGRESS, tcp(ELSEWHERE, HOST, 40000, 587, flags="A", payload=b"x")).verdict == SHOT
    assert go(dp, PUBLIC_INGRESS, udp(OTHER, HOST, 53, 61555)).verdict == SHOT
    assert dp.flows() == []  # both halves of both pairs gone
    assert dp.counters()["drop_banned"] == 2


def test_expired_bans_are_ignored_and_do_not_hide_a_shorter_one(dp: Datapath) -> None:
    publish(dp)
    ban(dp, f"{ELSEWHERE}/128", expires_ns=boot_ns() - 1)
    assert go(dp, PUBLIC_INGRESS, tcp(ELSEWHERE, HOST, 40000, 587)).verdict != SHOT
    ban(dp, "2001:db8:7::/48", expires_ns=boot_ns() + 60 * 10**9)
    assert go(dp, PUBLIC_INGRESS, tcp(ELSEWHERE, HOST, 40001, 587)).verdict == SHOT


def test_a_ban_holds_for_routed_networks(dp: Datapath) -> None:
    dp.dnat.put(DnatKey(17, addr(ROUTED1), 53), DnatTarget(addr(ROUTED1), 53, 9))  # routed: its own port
    ban(dp, ELSEWHERE)
    assert go(dp, PUBLIC_INGRESS, udp(ELSEWHERE, ROUTED1, 4000, 53)).verdict == SHOT
    assert go(dp, PUBLIC_INGRESS, udp(CLIENT, ROUTED1, 4000, 53)).verdict != SHOT


def test_a_ban_holds_for_later_fragments_of_an_established_flow(dp: Datapath) -> None:
    dp.dnat.put(DnatKey(17, None, 5353), DnatTarget(addr(C1), 53, 2))
    go(dp, PUBLIC_INGRESS, udp(ELSEWHERE, HOST, 4000, 5353))
    go(dp, PUBLIC_EGRESS, udp(C1, ELSEWHERE, 53, 4000))  # the container answered
    first, *later = fragments(ELSEWHERE, HOST, 4000, 5353)
    assert go(dp, PUBLIC_INGRESS, first).verdict != SHOT  # its ports remembered for the later fragments
    ban(dp, ELSEWHERE)
    results = [go(dp, PUBLIC_INGRESS, frag) for frag in later]
    assert results[0].verdict == SHOT and dp.flows() == []
    # The flow is gone: what follows is left untranslated, to the host, never sent on to the container.
    assert all(r.verdict == SHOT or r.raw == frag for r, frag in zip(results[1:], later[1:]))


def publish_routed(dp: Datapath, policy_id: int = 3, default_deny: bool = True) -> None:
    """ROUTED1 publishes tcp/80 at its own address (a routed network's published port: no DNAT)."""
    dp.dnat.put(DnatKey(6, addr(ROUTED1), 80), DnatTarget(addr(ROUTED1), 80, 9, policy_id, default_deny))


def test_an_allowlist_holds_for_a_routed_published_port(dp: Datapath) -> None:
    dp.policy.put(PolicyKey(3, OFFICE), True)
    publish_routed(dp)
    syn = tcp(CLIENT, ROUTED1, 40000, 80)
    assert_untouched(go(dp, PUBLIC_INGRESS, syn), syn)
    reply = tcp(ROUTED1, CLIENT, 80, 40000, flags="SA", ack=1001)
    assert_untouched(go(dp, PUBLIC_EGRESS, reply), reply)
    assert go(dp, PUBLIC_INGRESS, tcp(ELSEWHERE, ROUTED1, 40000, 80)).verdict == SHOT
    assert go(dp, PUBLIC_INGRESS, udp(ELSEWHERE, ROUTED1, 40000, 80)).verdict == SHOT  # not published at all
    c = dp.counters()
    assert (c["drop_policy"], c["drop_unpublished"]) == (1, 1)
    assert dp.mapping_stats()[9][2] == 1  # the refused flow, counted on its mapping
    assert len(dp.flows()) == 1  # CLIENT's flow only


def test_a_routed_deny_inside_an_allow_wins_and_established_flows_are_not_asked_again(dp: Datapath) -> None:
    dp.policy.put(PolicyKey(3, OFFICE), True)
    publish_routed(dp)
    syn = tcp(CLIENT, ROUTED1, 40000, 80)
    assert_untouched(go(dp, PUBLIC_INGRESS, syn), syn)
    dp.policy.put(PolicyKey(3, IPv6Network(f"{CLIENT}/128")), False)
    more = tcp(CLIENT, ROUTED1, 40000, 80, flags="A", ack=1001)
    assert_untouched(go(dp, PUBLIC_INGRESS, more), more)  # a conntrack hit: rules are for new flows
    assert go(dp, PUBLIC_INGRESS, tcp(CLIENT, ROUTED1, 40001, 80)).verdict == SHOT
    assert go(dp, PUBLIC_INGRESS, tcp("2001:db8:2::42", ROUTED1, 40000, 80)).verdict != SHOT
    assert dp.counters()["drop_policy"] == 1


def test_a_routed_mapping_without_deny_default_lets_unlisted_sources_in(dp: Datapath) -> None:
    dp.policy.put(PolicyKey(4, IPv6Network(f"{ELSEWHERE}/128")), False)  # a denylist only
    publish_routed(dp, policy_id=4, default_deny=False)
    assert go(dp, PUBLIC_INGRESS, tcp(ELSEWHERE, ROUTED1, 40000, 80)).verdict == SHOT
    assert go(dp, PUBLIC_INGRESS, tcp(CLIENT, ROUTED1, 40000, 80)).verdict != SHOT
    assert dp.counters()["drop_policy"] == 1

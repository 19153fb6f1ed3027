"""Real traffic through attached programs: a client namespace (the outside),
a host namespace (public veth pub0, "bridge" veth br0) and a container
namespace, with TCP, UDP and ping for DNAT, masquerade and hairpin, with tx
checksum offload on (CHECKSUM_PARTIAL) and off (checksums in software, checked
by every receiver)."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network
from typing import Iterator

import pytest
from bcc import BPF
from pyroute2 import NetNS

from v6nat_ebpf.datapath import Datapath, DnatKey, DnatTarget, NetworkEntry
from v6nat_ebpf.datapath import tc as tcmod
from v6nat_ebpf.lab.datapath import in_netns
from netns_world import World, namespaces, peer_echo, sh

# CLIENT is not dp_packets.HOST2 (2001:db8:1::2): a host address in the dp fixture's maps, so a bogon
# source at public ingress.
HOST, CLIENT, GATEWAY, CONTAINER = "2001:db8:1::1", "2001:db8:1::42", "fd00:1::1", "fd00:1::2"
DEVICES = {"cli": ["cli0"], "host": ["pub0", "br0"], "ctr": ["c0"]}


@pytest.fixture
def world(loaded: Datapath, request) -> Iterator[tuple[World, Datapath]]:
    with namespaces("cli", "host", "ctr") as names:
        w = World(names)
        try:
            sh("ip", "link", "add", "cli0", "netns", w.cli, "type", "veth", "peer", "name", "pub0", "netns", w.host)
            sh("ip", "link", "add", "c0", "netns", w.ctr, "type", "veth", "peer", "name", "br0", "netns", w.host)
            sh("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", netns=w.host)
            for ns, dev, address in ((w.cli, "cli0", CLIENT), (w.host, "pub0", HOST), (w.host, "br0", GATEWAY),
                                     (w.ctr, "c0", CONTAINER)):
                sh("ip", "addr", "add", f"{address}/64", "dev", dev, "nodad", netns=ns)
                sh("ip", "link", "set", dev, "up", netns=ns)
                if request.param == "tx-off":
                    sh("ethtool", "-K", dev, "tx", "off", netns=ns)
            sh("ip", "route", "add", "default", "via", GATEWAY, netns=w.ctr)

            dp = in_netns(loaded, w.host)
            with tcmod.Tc(w.host) as t:
                pub0, br0 = t.ifindex("pub0"), t.ifindex("br0")
            dp.host_addrs.put(IPv6Address(HOST), pub0)
            dp.public_ifaces.put(pub0, IPv6Address(HOST))
            dp.networks.put(IPv6Network("fd00:1::/64"), NetworkEntry(1, br0, True, True, False, None))
            dp.dnat.put(DnatKey(6, None, 8080), DnatTarget(IPv6Address(CONTAINER), 80, 1))
            dp.dnat.put(DnatKey(17, None, 5353), DnatTarget(IPv6Address(CONTAINER), 53, 2))
            dp.attach_public("pub0")
            dp.attach_bridge("br0")
            yield w, dp
        finally:
            w.stop()


MODES = pytest.mark.parametrize("world", ["tx-on", "tx-off"], indirect=True)


@MODES
def test_published_tcp_and_udp_reach_the_container_with_the_client_address(dp: Datapath, world) -> None:
    w, _ = world
    w.serve(w.ctr, *peer_echo("tcp", 80))
    w.serve(w.ctr, *peer_echo("udp", 53))
    assert w.ask(w.cli, f"[{HOST}]:8080") == CLIENT
    assert w.ask(w.cli, f"[{HOST}]:5353", udp=True) == CLIENT
    assert dp.counters()["dnat"] >= 2


@MODES
def test_masqueraded_tcp_udp_and_ping_leave_with_the_host_address(dp: Datapath, world) -> None:
    w, _ = world
    w.serve(w.cli, *peer_echo("tcp", 443))
    w.serve(w.cli, *peer_echo("udp", 53))
    assert w.ask(w.ctr, f"[{CLIENT}]:443") == HOST
    assert w.ask(w.ctr, f"[{CLIENT}]:53", udp=True) == HOST
    sh("ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", CLIENT, netns=w.ctr)
    c = dp.counters()
    assert c["snat"] >= 3 and c["reverse"] >= 3


@MODES
def test_hairpin_reaches_the_published_container_itself(dp: Datapath, world) -> None:
    w, _ = world
    w.serve(w.ctr, *peer_echo("tcp", 80))
    assert w.ask(w.ctr, f"[{HOST}]:8080") == HOST
    assert dp.counters()["hairpin"] >= 1


@pytest.mark.parametrize("world", ["tx-on"], indirect=True)
def test_filters_behind_ours_still_see_every_packet(dp: Datapath, world) -> None:
    """Our verdict for packets we pass or translate is TC_ACT_UNSPEC: the next
    filter (another tool's, at a later preference) still runs."""
    w, _ = world
    b = BPF(text=b"""
        BPF_ARRAY(seen, u64, 1);
        int othertool(struct __sk_buff *skb) { seen.increment(0); return -1; }""")
    try:
        with NetNS(w.host) as nl:  # another tool's filter, written with pyroute2
            nl.tc("add-filter", "bpf", nl.link_lookup(ifname="pub0")[0], handle=1, name="othertool",
                  prio=tcmod.PREF + 1, fd=b.load_func(b"othertool", BPF.SCHED_CLS).fd,
                  parent=tcmod.PARENTS["ingress"], protocol=0x86DD, direct_action=True)
        w.serve(w.ctr, *peer_echo("tcp", 80))
        assert w.ask(w.cli, f"[{HOST}]:8080") == CLIENT
        assert b[b"seen"][0].value >= 3  # at least the handshake went through both filters
    finally:
        b.cleanup()

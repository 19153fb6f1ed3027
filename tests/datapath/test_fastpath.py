"""The fast path and enable_icc=false with real traffic: a client namespace
(the outside), a host namespace with a public veth and a real Linux bridge, and
two container namespaces behind that bridge (MTU 1280, as a tunnel-backed
network would have), with tx checksum offload on and off.

Proves: TCP, UDP and ping through DNAT and masquerade take the redirect (the
host's netfilter FORWARD chain sees only each flow's first packet in each
direction); Packet Too Big and Time Exceeded still come from the stack; with
icc=False containers of the network cannot reach each other but reach the
gateway and the outside. Each container veth is described to the datapath
(veths map) as the control plane does."""

from __future__ import annotations

import json
import socket
import sys
import time
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Iterator

import pytest

from v6nat_ebpf.datapath import Datapath, DnatKey, DnatTarget, NetworkEntry
from v6nat_ebpf.datapath import layout
from v6nat_ebpf.datapath import tc as tcmod
from v6nat_ebpf.lab.datapath import ct_half, in_netns
from netns_world import World, describe_veth, link_mac, namespaces, peer_echo, sh

HOST, CLIENT = "2001:db8:1::1", "2001:db8:1::42"  # not dp_packets.HOST2: a host address there
NET, GATEWAY, CONTAINER, CONTAINER2 = IPv6Network("fd00:1::/64"), "fd00:1::1", "fd00:1::2", "fd00:1::3"
BRIDGE_MTU = 1280
PROBE = Path(__file__).with_name("udp_probe.py")
CLIENT_PORT = 40001
# Sends from CLIENT_PORT (one flow across runs) until answered, `argv[2]` answers in a row; prints the answer count.
UDP_ASK = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", %d)); s.connect((sys.argv[1], 5353)); s.settimeout(0.5)
answers = 0
for _ in range(20):
    s.send(b"hello")
    try:
        s.recv(100); answers += 1
    except OSError:
        if answers or int(sys.argv[2]) == 0: break
    if answers >= int(sys.argv[2]): break
print(answers)
""" % CLIENT_PORT


def forward_packets(ns: str) -> int:
    """Packets the host routed between pub0 and the bridge, as its netfilter
    FORWARD hook saw them (our counting chain)."""
    out = sh("nft", "-j", "list", "chain", "ip6", "v6dp", "seen", netns=ns).stdout
    rules = [e["rule"] for e in json.loads(out)["nftables"] if "rule" in e]
    return sum(x["counter"]["packets"] for r in rules for x in r["expr"] if "counter" in x)


def build(w: World, offload: str, icc: bool, dp: Datapath) -> Datapath:
    ctr2 = w.more[0]
    for ns in (w.cli, w.host, w.ctr, ctr2):  # link-local addresses usable at once (no 1-2 s of DAD)
        sh("sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0", netns=ns)
    sh("ip", "link", "add", "cli0", "netns", w.cli, "type", "veth", "peer", "name", "pub0", "netns", w.host)
    sh("ip", "link", "add", "brv", "type", "bridge", netns=w.host)
    sh("ip", "link", "set", "brv", "mtu", str(BRIDGE_MTU), "up", netns=w.host)
    for ns, ctr_dev, port in ((w.ctr, "c0", "vc0"), (ctr2, "c1", "vc1")):
        sh("ip", "link", "add", ctr_dev, "netns", ns, "mtu", str(BRIDGE_MTU), "type", "veth", "peer", "name", port,
           "mtu", str(BRIDGE_MTU), "netns", w.host)
        sh("ip", "link", "set", port, "master", "brv", "up", netns=w.host)
    sh("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", netns=w.host)
    for ns, dev, address in ((w.cli, "cli0", CLIENT), (w.host, "pub0", HOST),
                             (w.host, "brv", GATEWAY), (w.ctr, "c0", CONTAINER), (ctr2, "c1", CONTAINER2)):
        sh("ip", "addr", "add", f"{address}/64", "dev", dev, "nodad", netns=ns)
        sh("ip", "link", "set", dev, "up", netns=ns)
        sh("ethtool", "-K", dev, "tx", offload, netns=ns)
    for ns in (w.ctr, ctr2):
        sh("ip", "route", "add", "default", "via", GATEWAY, netns=ns)
    # Routed packets only: with br_netfilter loaded, bridged NDP/MLD crosses this hook too.
    sh("nft", "add table ip6 v6dp; add chain ip6 v6dp seen { type filter hook forward priority 0; };"
              ' add rule ip6 v6dp seen iifname "pub0" oifname "brv" counter;'
              ' add rule ip6 v6dp seen iifname "brv" oifname "pub0" counter', netns=w.host)

    dp = in_netns(dp, w.host)
    with tcmod.Tc(w.host) as t:
        pub0, brv = t.ifindex("pub0"), t.ifindex("brv")
    dp.host_addrs.put(IPv6Address(HOST), pub0)
    dp.public_ifaces.put(pub0, IPv6Address(HOST))
    dp.networks.put(NET, NetworkEntry(1, brv, True, icc, False, None, gateway=IPv6Address(GATEWAY)))
    dp.dnat.put(DnatKey(6, None, 8080), DnatTarget(IPv6Address(CONTAINER), 80, 1))
    dp.dnat.put(DnatKey(17, None, 5353), DnatTarget(IPv6Address(CONTAINER), 53, 2))
    for port, address in (("vc0", CONTAINER), ("vc1", CONTAINER2)):
        describe_veth(dp, w.host, port, "brv", 1, (address,), icc=icc)
    dp.attach_public("pub0")
    dp.attach_bridge("brv")
    dp.attach_veth("vc0")
    dp.attach_veth("vc1")
    return dp


@pytest.fixture
def world(loaded: Datapath, request) -> Iterator[tuple[World, Datapath]]:
    offload, icc = request.param
    with namespaces("cli", "host", "ctr", "ctr2") as names:
        w = World(names)
        try:
            yield w, build(w, offload, icc, loaded)
        finally:
            w.stop()


@pytest.mark.parametrize("world", [("on", True), ("off", True)], indirect=True, ids=["tx-on", "tx-off"])
def test_established_flows_bypass_forwarding_both_ways(dp: Datapath, world) -> None:
    w, hostdp = world
    w.serve(w.ctr, *peer_echo("tcp", 80))
    w.serve(w.ctr, *peer_echo("udp", 53))
    w.serve(w.cli, *peer_echo("tcp", 443))
    assert w.ask(w.cli, f"[{HOST}]:8080") == CLIENT
    assert w.ask(w.cli, f"[{HOST}]:5353", udp=True) == CLIENT
    assert w.ask(w.ctr, f"[{CLIENT}]:443") == HOST
    sh("ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", CLIENT, netns=w.ctr)
    flows = len(hostdp.flows())
    c = hostdp.counters_by_hook()
    # Toward the container: straight into its namespace once its packets taught
    # the way (else to the bridge); from it: out of the public iface from its veth.
    redirected = sum(c[hook]["redirect"] + c[hook]["redirect_peer"] for hook in c)
    assert c["public_ingress"]["redirect_peer"] > 0 and c["veth_ingress"]["redirect"] > 0, {h: {k: v for k, v in x.items() if v} for h, x in c.items()}
    # A flow takes the fast path only once the stack accepted it both ways:
    # its first packet in each direction (FORWARD/DOCKER-USER decide on
    # both) crosses FORWARD, at least one per flow; the other packets of 4+
    # flows (the rest of handshakes, data, FINs, echoes) are redirected.
    assert flows <= forward_packets(w.host) <= 2 * flows < redirected


@pytest.mark.parametrize("world", [("on", True), ("off", True)], indirect=True, ids=["tx-on", "tx-off"])
def test_stack_still_answers_hop_limit_and_mtu(dp: Datapath, world) -> None:
    """An established DNAT flow: hop limit 1 gets Time Exceeded, a datagram
    larger than the bridge's MTU gets Packet Too Big (both from the stack,
    translated back by the public egress program)."""
    w, hostdp = world
    w.serve(w.ctr, *peer_echo("udp", 53))
    r = sh(sys.executable, str(PROBE), HOST, "5353", netns=w.cli)
    got = json.loads(r.stdout)
    assert {"type": 3, "code": 0, "info": 0} in got, got
    assert any(e["type"] == 2 and e["info"] == BRIDGE_MTU for e in got), got
    c = hostdp.counters_by_hook()["public_ingress"]
    assert c["to_stack"] >= 2 and c["icmp_error"] == 0  # errors are seen at public egress
    assert hostdp.counters_by_hook()["public_egress"]["icmp_error"] >= 2


@pytest.mark.parametrize("world", [("on", True)], indirect=True, ids=["tx-on"])
def test_a_cached_route_gives_way_to_a_route_change(dp: Datapath, world) -> None:
    """An established UDP flow's half caches the FIB's answer (output bridge,
    arrival interface); once the route to the container becomes unreachable,
    the next datagram after the cache time asks the FIB again (fib_miss) and
    takes the stack instead of the bridge."""
    w, hostdp = world
    w.serve(w.ctr, *peer_echo("udp", 53))
    assert sh(sys.executable, "-c", UDP_ASK, HOST, "3", netns=w.cli).stdout.split() == ["3"]
    with tcmod.Tc(w.host) as t:
        pub0, brv = t.ifindex("pub0"), t.ifindex("brv")
    key = layout.RawCtKey(layout.Addr(*IPv6Address(CLIENT).packed), layout.Addr(*IPv6Address(HOST).packed),
                          socket.htons(CLIENT_PORT), socket.htons(5353), 17)
    half = ct_half(hostdp, key)
    assert (half.fib_ifindex, half.fib_iif, IPv6Address(bytes(half.fib_nexthop))) == (brv, pub0, IPv6Address(CONTAINER))
    before = hostdp.counters_by_hook()["public_ingress"]

    sh("ip", "-6", "route", "add", "unreachable", f"{CONTAINER}/128", netns=w.host)
    time.sleep(0.3)  # past V6NAT_FIB_CACHE_NS (0.1 s)
    assert sh(sys.executable, "-c", UDP_ASK, HOST, "0", netns=w.cli).stdout.split() == ["0"]
    after = hostdp.counters_by_hook()["public_ingress"]
    assert after["fib_miss"] > before["fib_miss"] and after["redirect"] == before["redirect"]


# Sent from the second container: a datagram that claims to be the first
# container's answer to the client (its source address and port), from the
# second container's own MAC.
SPOOF = """
import sys
from scapy.all import Ether, IPv6, UDP, sendp
sendp(Ether(dst=sys.argv[1]) / IPv6(src=sys.argv[2], dst=sys.argv[3]) / UDP(sport=53, dport=%d) / b"mine",
      iface="c1", count=3, verbose=0)
""" % CLIENT_PORT


@pytest.mark.parametrize("world", [("on", True)], indirect=True, ids=["tx-on"])
def test_the_way_into_a_container_is_learned_from_it_and_not_from_a_forger(dp: Datapath, world) -> None:
    """The client's half of a DNAT flow learns, from the container's answers at
    its veth, to go straight into that container (its veth, its MAC, the
    bridge's MAC). Another container that forges the first one's address on
    the same flow is dropped at its veth (anti-spoofing); and were its veth
    allowed that address (a control plane late after the address moved),
    its forgery would leave translated but still not redirect the flow to
    itself (the way is learned only from the MAC the host's neighbour table
    holds)."""
    w, hostdp = world
    w.serve(w.ctr, *peer_echo("udp", 53))
    assert sh(sys.executable, "-c", UDP_ASK, HOST, "3", netns=w.cli).stdout.split() == ["3"]
    with tcmod.Tc(w.host) as t:
        vc0 = t.ifindex("vc0")
    key = layout.RawCtKey(layout.Addr(*IPv6Address(CLIENT).packed), layout.Addr(*IPv6Address(HOST).packed),
                          socket.htons(CLIENT_PORT), socket.htons(5353), 17)

    def delivery() -> tuple[int, bytes]:
        half = ct_half(hostdp, key)
        return half.peer_ifindex, bytes(half.peer_macs)

    bridge_mac = link_mac(w.host, "brv")
    assert delivery() == (vc0, link_mac(w.ctr, "c0") + bridge_mac)
    assert hostdp.counters_by_hook()["public_ingress"]["redirect_peer"] > 0

    def out_redirects() -> int:
        c = hostdp.counters_by_hook()
        return c["veth_ingress"]["redirect"] + c["bridge_ingress"]["redirect"]

    time.sleep(0.6)  # past half the learned way's life: the next answer may teach it again
    before = out_redirects()
    sh(sys.executable, "-c", SPOOF, bridge_mac.hex(":"), CONTAINER, CLIENT, netns=w.more[0])
    assert delivery() == (vc0, link_mac(w.ctr, "c0") + bridge_mac)
    assert out_redirects() == before
    assert hostdp.counters_by_hook()["veth_ingress"]["drop_spoofed_source"] == 3

    describe_veth(hostdp, w.host, "vc1", "brv", 1, (CONTAINER2, CONTAINER))
    sh(sys.executable, "-c", SPOOF, bridge_mac.hex(":"), CONTAINER, CLIENT, netns=w.more[0])
    assert delivery() == (vc0, link_mac(w.ctr, "c0") + bridge_mac)
    assert out_redirects() - before == 3  # the forgery went out, translated


def fdb_ports_of(ns: str, mac: bytes) -> set[str]:
    entries = json.loads(sh("bridge", "-j", "fdb", "show", "br", "brv", netns=ns).stdout)
    return {e["ifname"] for e in entries if e.get("mac") == mac.hex(":") and "permanent" not in e.get("state", "")}


@pytest.mark.parametrize("world", [("on", True)], indirect=True, ids=["tx-on"])
def test_the_bridge_keeps_learning_a_container_whose_flows_skip_it(dp: Datapath, world) -> None:
    """Established flows leave the container from its veth, past the bridge;
    the one packet per flow and half second that teaches the way in takes the
    bridge instead, so the bridge relearns the container's MAC (and does not
    flood frames for it to the other containers) after forgetting it."""
    w, hostdp = world
    w.serve(w.ctr, *peer_echo("udp", 53))
    assert sh(sys.executable, "-c", UDP_ASK, HOST, "3", netns=w.cli).stdout.split() == ["3"]
    mac = link_mac(w.ctr, "c0")
    sh("bridge", "fdb", "del", mac.hex(":"), "dev", "vc0", "master", netns=w.host)
    assert fdb_ports_of(w.host, mac) == set()
    time.sleep(0.6)  # past half the learned way's life: the next answer teaches again
    before = hostdp.counters_by_hook()
    assert sh(sys.executable, "-c", UDP_ASK, HOST, "3", netns=w.cli).stdout.split() == ["3"]
    after = hostdp.counters_by_hook()
    assert fdb_ports_of(w.host, mac) == {"vc0"}
    # One answer crossed the bridge (and left by the bridge program's fast path), the others skipped it.
    assert after["bridge_ingress"]["redirect"] - before["bridge_ingress"]["redirect"] == 1
    assert after["veth_ingress"]["redirect"] - before["veth_ingress"]["redirect"] == 2


@pytest.mark.parametrize("world", [("on", True)], indirect=True, ids=["tx-on"])
def test_fast_path_off_leaves_every_packet_to_the_stack(dp: Datapath, world) -> None:
    w, hostdp = world
    hostdp.set_config(type(hostdp.config)(**{**hostdp.config.__dict__, "fast_path": False}))
    w.serve(w.ctr, *peer_echo("tcp", 80))
    assert w.ask(w.cli, f"[{HOST}]:8080") == CLIENT
    assert hostdp.counters()["redirect"] == 0
    assert forward_packets(w.host) >= 5  # the whole TCP conversation crossed FORWARD


@pytest.mark.parametrize("world", [("on", False), ("off", False)], indirect=True, ids=["tx-on", "tx-off"])
def test_without_icc_containers_reach_the_gateway_and_outside_not_each_other(dp: Datapath, world) -> None:
    w, hostdp = world
    ctr2 = w.more[0]
    assert hostdp.attached() == {"pub0": "public", "brv": "bridge", "vc0": "veth", "vc1": "veth"}
    sh("ping", "-6", "-c", "1", "-W", "2", GATEWAY, netns=w.ctr)
    sh("ping", "-6", "-c", "1", "-W", "2", CLIENT, netns=w.ctr)
    blocked = sh("ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", CONTAINER2, netns=w.ctr, check=False)
    assert blocked.returncode != 0
    w.serve(ctr2, *peer_echo("tcp", 80))
    assert sh("socat", "-T1", "-", f"TCP6:[{CONTAINER2}]:80,connect-timeout=1", netns=w.ctr, check=False,
              stdin="hello\n").stdout == ""
    assert hostdp.counters_by_hook()["veth_ingress"]["drop_icc_blocked"] >= 3
    hostdp.detach("vc0")
    hostdp.detach("vc1")
    # ICC back once the programs are gone (the neighbour entries the blocked NDP left, failed or
    # waiting to probe, would only delay it by their timers).
    for ns, dev in ((w.ctr, "c0"), (ctr2, "c1")):
        sh("ip", "-6", "neigh", "flush", "dev", dev, netns=ns)
    sh("ping", "-6", "-c", "1", "-W", "2", CONTAINER2, netns=w.ctr)

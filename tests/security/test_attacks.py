"""Issue 12, points 1-10: each attack performed with real packets, each secure outcome asserted.

Every test runs twice (the `world` fixture, conftest.py): against `v6nat run` with Docker's ip6tables off,
and against Docker 20.10's own `--ip6tables` NAT without v6nat, which shows the expected behaviour.
Attackers: the lab client ("the internet"), writing raw frames with any source on its link, and
containers with Docker's default capabilities, writing raw frames (CAP_NET_RAW) from their namespace.
Every test also checks a control (the same path used legitimately works), so that a "nothing arrived"
cannot come from a broken setup.
"""

from __future__ import annotations

import random
import threading
import time
from ipaddress import IPv6Address

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest, ICMPv6PacketTooBig, IPv6
from scapy.layers.l2 import Ether

from conftest import GC_INTERVAL_S, TRANSITORY_S, World
from secsupport import csum_neutral_frames, echo_roundtrip, eventually, in_netns, in_prefix, recv_all

pytestmark = pytest.mark.lab

ULA = "fc00::/7"


def _from_client(world: World, ip: IPv6, l4: object) -> Ether:
    return Ether(src=world.client.mac, dst=world.host.mac) / ip / l4


# ---------------------------------------------------------------------------------------------- 1

def test_01_spoofed_syn_cannot_overwrite_a_live_flow(world: World) -> None:
    """Attack: an off-path host learns (or guesses) a live client's address and port and sends SYNs with
    that source to the host's *other* address and to another published port of the same container, and a
    UDP datagram with a live UDP client's tuple to the other address. The new pair must not replace the
    reply half of the live flows. Secure outcome: the live TCP connection keeps working, and the UDP
    client's replies still come from the address it talks to."""
    cli, srv = world.client, world.ns("srv")
    conn = cli.connect(world.h1, 8080)
    assert echo_roundtrip(conn, b"before the attack\n")
    sport = conn.getsockname()[1]

    dns = srv.udp(53)
    ucli = cli.udp(0)
    ucli.connect((str(world.h1), 5353))
    ucli.send(b"q1")
    data, peer = dns.recvfrom(100)
    dns.sendto(b"a1", peer)
    assert [d for d, _ in recv_all(ucli, 1.0)] == [b"a1"], "control: the UDP client gets its answer"
    usport = ucli.getsockname()[1]

    frames = [_from_client(world, IPv6(src=str(world.c), dst=str(dst)),
                           TCP(sport=sport, dport=dport, flags="S", seq=random.getrandbits(32)))
              for dst, dport in ((world.h2, 8080), (world.h1, 8081))]
    frames.append(_from_client(world, IPv6(src=str(world.c), dst=str(world.h2)), UDP(sport=usport, dport=5353) / b"x"))
    cli.sendp(frames, gap_s=0.05)
    time.sleep(0.5)
    recv_all(dns, 0.2)  # whatever the spoofed datagram became

    assert echo_roundtrip(conn, b"after the spoofed SYNs\n"), "the live TCP connection died"
    time.sleep(0.3)
    assert echo_roundtrip(conn, b"and still later\n"), "the live TCP connection died"
    ucli.send(b"q2")
    got = [d for d, p in recv_all(dns, 1.0)]
    assert b"q2" in got, "the UDP client's datagram no longer reaches the container"
    dns.sendto(b"a2", peer)
    answers = [d for d, _ in recv_all(ucli, 1.5)]
    assert b"a2" in answers, "the UDP client's reply left from another address or port"
    conn.close(), dns.close(), ucli.close()


# ---------------------------------------------------------------------------------------------- 2

def test_02_container_cannot_hijack_the_hosts_replies(world: World) -> None:
    """Attack: a container sends from source port 40000 (in the host's ephemeral range, outside the SNAT
    range) to the host's DNS resolver; later the host itself uses port 40000 toward the same resolver.
    Secure outcome: the resolver's answer to the host reaches the host's socket, not the container."""
    resolver = world.client.udp(5300)
    ctr = world.ns("cx").udp(40000)
    ctr.sendto(b"container-query", (str(world.c), 5300))
    resolver.settimeout(3)
    data, seen = resolver.recvfrom(100)
    public = IPv6Address(seen[0])
    assert public in (world.h1, world.h2), "control: the container is masqueraded behind a host address"
    resolver.sendto(b"answer-for-container", seen)
    assert [d for d, _ in recv_all(ctr, 1.0)] == [b"answer-for-container"], "control: the container's own answer"

    # The host now picks the container's port, from its own ephemeral range, toward the same server. (Where
    # the NAT kept that port for the container, the resolver would answer both on the same tuple.)
    host = world.host.udp(40000, addr=str(public))
    host.sendto(b"host-query", (str(world.c), 5300))
    data, hseen = resolver.recvfrom(100)
    assert data == b"host-query"
    resolver.sendto(b"answer-for-host", hseen)
    to_host = [d for d, _ in recv_all(host, 1.5)]
    to_ctr = [d for d, _ in recv_all(ctr, 0.5)]
    assert b"answer-for-host" not in to_ctr, "the host's DNS answer was delivered into the container"
    assert to_host == [b"answer-for-host"], "the host did not get its own answer"
    for s in (resolver, ctr, host):
        s.close()


# ---------------------------------------------------------------------------------------------- 3

def test_03_networks_are_isolated_and_internal_networks_closed(world: World) -> None:
    """Attacks: (a) a container on one network connects to an unpublished port of a container on another
    network by its ULA address; (b) a container on an `--internal` network sends a raw SYN to a published
    port of the host (hairpin) through its bridge; (c) the same container sends a datagram to the internet
    with a source address of a masqueraded network. Secure outcome: none of them gets through."""
    cx, ic = world.ns("cx"), world.ns("ic")
    ob = world.addr("ob")
    # (a)
    assert world.host.can_connect(ob, 80), "control: the unpublished server answers the host"
    failures = []
    if cx.can_connect(ob, 80):
        failures.append("(a) a container reached an unpublished port of a container on another network")

    # (b): raw frames from the internal container to its bridge's MAC.
    bmac = world.bridge_mac("int")
    sniff = ic.sniffer()
    ping = Ether(src=ic.mac, dst=bmac) / IPv6(src=str(ic.addr), dst=str(world.gateway("ic"))) / \
        ICMPv6EchoRequest(id=0x5ec, seq=1)
    ic.sendp([ping])
    assert sniff.collect(2, lambda p: ICMPv6EchoReply in p and p[ICMPv6EchoReply].id == 0x5ec, stop_at_first=True), \
        "control: raw frames from the internal container reach its gateway"
    syns = [Ether(src=ic.mac, dst=bmac) / IPv6(src=str(ic.addr), dst=str(dst)) /
            TCP(sport=random.randint(20000, 30000), dport=port, flags="S", seq=random.getrandbits(32))
            for dst, port in ((world.h1, 8080), (world.h1, 8082), (world.h2, 8080))]
    ic.sendp(syns, gap_s=0.05)
    answers = sniff.collect(2, lambda p: TCP in p and p[TCP].flags.S and p[TCP].flags.A, incoming_only=True)
    sniff.close()
    if answers:
        failures.append(f"(b) the internal container reached the host's published ports: {answers[0].summary()}")

    # (c)
    sink = world.client.udp(5301)
    legit = cx.udp(0)
    legit.sendto(b"legit", (str(world.c), 5301))
    assert [d for d, _ in recv_all(sink, 1.5)] == [b"legit"], "control: a masqueraded container gets out"
    spoofed = [Ether(src=ic.mac, dst=bmac) / IPv6(src=src, dst=str(world.c)) / UDP(sport=5555, dport=5301) /
               f"from-internal-as-{src}".encode()
               for src in ("fd00:5ec:a::dead", str(world.addr("cx")))]
    ic.sendp(spoofed, gap_s=0.05)
    leaked = recv_all(sink, 1.5)
    if leaked:
        failures.append(f"(c) the internal container got out by spoofing a masqueraded source: {leaked}")
    sink.close(), legit.close()
    assert not failures, "; ".join(failures)


# ---------------------------------------------------------------------------------------------- 4

def test_04_icc_off_holds_for_link_local_and_hairpin(world: World) -> None:
    """Attacks on an `enable_icc=false` network: (a) connect to the sibling by its link-local address
    (fe80::…%eth0); (b) connect to the sibling's published port on the host's address (hairpin).
    Secure outcome: both fail (Docker blocks both)."""
    nx, ns = world.ns("nx"), world.ns("ns")
    ll = ns.link_local()
    bridge_index = in_netns(world.host.path, lambda: __import__("socket").if_nametoindex(world.bridge("noicc")))
    assert world.host.can_connect(ll, 80, scope=bridge_index), "control: the server answers on its link-local address"
    assert world.client.can_connect(world.h1, 8090), "control: the published port answers from outside"
    failures = []
    if nx.can_connect(ll, 80, scope=nx.ifindex()):
        failures.append("(a) ICC bypassed through the sibling's link-local address")
    if nx.can_connect(world.h1, 8090):
        failures.append("(b) ICC bypassed through hairpin to the sibling's published port")
    assert not failures, "; ".join(failures)


# ---------------------------------------------------------------------------------------------- 5

def test_05_spoofed_internal_sources_from_outside_are_not_delivered(world: World) -> None:
    """Attack: datagrams from the internet to a published UDP port with a source inside a managed ULA
    prefix (another network's container, the target's own network) or equal to a host address.
    Secure outcome: none reaches the container (and so no reply is reflected into another network);
    a datagram from the real client does."""
    dns, ob = world.ns("srv").udp(53), world.ns("ob")
    sniff = ob.sniffer()
    sources = [str(world.addr("ob")), "fd00:5ec:a::beef", str(world.h2), str(world.h1)]
    frames = [_from_client(world, IPv6(src=src, dst=str(world.h1)), UDP(sport=5555, dport=5353) / f"spoof {src}".encode())
              for src in sources]
    world.client.sendp(frames, gap_s=0.05)
    legit = world.client.udp(0)
    legit.sendto(b"legit", (str(world.h1), 5353))
    got = recv_all(dns, 1.5)
    for data, peer in got:  # a DNS server answers whoever asked
        dns.sendto(b"answer to " + data, peer[:2])
    reflected = sniff.collect(1.0, lambda p: UDP in p and bytes(p[UDP].payload).startswith(b"answer to spoof"))
    sniff.close()
    delivered = sorted(d.decode() for d, _ in got)
    dns.close(), legit.close()
    assert "legit" in delivered, "control: the real client's datagram arrives"
    assert not reflected, f"a reply was reflected into another network: {reflected[0].summary()}"
    spoofed = [d for d in delivered if d != "legit"]
    if spoofed and world.backend == "docker":
        # Docker 20.10's ip6tables rules never look at the source of a packet from outside (IPv6 has no
        # rp_filter, and Linux accepts a packet with one of its own addresses as source from the wire):
        # the DNAT rule and `DOCKER` ACCEPT deliver it. Its isolation chains stop the reflected reply.
        pytest.xfail(f"Docker itself delivers spoofed internal and host sources from outside: {spoofed}")
    assert not spoofed, f"spoofed sources delivered into the container: {spoofed}"


# ---------------------------------------------------------------------------------------------- 6

def _ip6tables(world: World, *args: str) -> None:
    world.lab.exec(world.lab.host_ns, ["ip6tables", *args])


def test_06_a_new_connection_on_a_closed_tuple_is_judged_by_the_firewall(world: World) -> None:
    """Attack: a client talks to a published port and closes; the admin (or fail2ban) then blocks it
    with `ip6tables -I FORWARD/DOCKER-USER -s CLIENT -j DROP`; the client reconnects at once from the
    same address and port. Secure outcome: the reconnection is blocked like any new one.
    (The rule goes at the top of FORWARD in both backends: Docker 20.10 makes DOCKER-USER for iptables
    only, not for ip6tables, and with Docker's ip6tables off there are no Docker chains at all.)"""
    cli, sport = world.client, 45678
    conn = cli.connect(world.h1, 8082, sport=sport)
    answer = conn.recv(200)
    assert IPv6Address(answer.decode().strip().strip("[]")) == world.c, "control: the server sees the client"
    assert conn.recv(10) == b"", "the server closes first"
    conn.close()
    time.sleep(0.2)
    chain = "FORWARD"
    rule = ["-s", f"{world.c}/128", "-p", "tcp", "-j", "DROP"]
    _ip6tables(world, "-I", chain, "1", *rule)
    try:
        try:
            cli.connect(world.h1, 8082, sport=sport, timeout=3).close()
            reused = True
        except OSError:
            reused = False
        fresh = cli.can_connect(world.h1, 8082, timeout=2)
    finally:
        _ip6tables(world, "-D", chain, *rule)
    assert not fresh, "control: the rule blocks a new connection from a fresh port"
    assert not reused, "the blocked client reconnected on its old tuple, past the firewall"
    assert eventually(lambda: cli.can_connect(world.h1, 8082, timeout=2), timeout=15), "unblocked again"


# ---------------------------------------------------------------------------------------------- 7

def test_07_flows_do_not_outlive_their_container(world: World) -> None:
    """Attack: a UDP client keeps talking to a published port while the container goes; Docker hands its
    address to the next container, which publishes nothing. Secure outcome: the new container receives
    none of the old flow's datagrams."""
    lab = world.lab
    net = lab.create_network("reuse", "fd00:5ec:e::/64")
    u1 = lab.run_container("u1", net, ["sleep", "3600"], ports={"53/udp": 5354})
    u2 = None
    stop = threading.Event()
    try:
        first = world.ns(u1)
        s1 = first.udp(53)
        client = world.client.udp(0)

        def reached() -> bool:
            client.sendto(b"hello", (str(world.h1), 5354))
            return bool(recv_all(s1, 0.3))
        eventually(reached, timeout=20, what="control: the published UDP port reaches the first container")

        def keep_sending() -> None:
            deadline = time.monotonic() + 30
            while not stop.is_set() and time.monotonic() < deadline:
                client.sendto(b"old flow", (str(world.h1), 5354))
                time.sleep(0.05)
        sender = threading.Thread(target=keep_sending, daemon=True)
        sender.start()
        s1.close()
        world.close_namespaces()
        u1.remove(force=True)
        u2 = lab.run_container("u2", net, ["sleep", "3600"])
        second = world.ns(u2)
        assert second.addr == first.addr, "the address was not reused: nothing tested"
        s2 = second.udp(53)
        got = recv_all(s2, 2.5)
        stop.set()
        sender.join()
        assert not got, f"the next container at {second.addr} received the old container's flow: {got[:3]}"
        s2.close(), client.close()
    finally:
        stop.set()
        world.close_namespaces()
        for c in (u1, u2):
            if c is not None:
                try:
                    c.remove(force=True)
                except Exception:
                    pass
        net.remove()


# ---------------------------------------------------------------------------------------------- 8

def test_08_blind_rst_and_bad_checksums_do_not_change_flows(world: World) -> None:
    """Attack: an off-path host sends RSTs with a live connection's tuple: with sequence numbers outside
    the window, and with the exact sequence number but an invalid TCP checksum; and a SYN and a UDP
    datagram with invalid checksums from unused ports. Both backends run with a transitory TCP timeout of
    4 s (v6nat `--conntrack-timeouts tcp-transitory=4`, Linux nf_conntrack_tcp_timeout_close=4), so a
    flow wrongly closed by a RST expires during the test. Secure outcome: the idle connection still works
    after that time, and the invalid SYN/datagram created no flow."""
    cli = world.client
    conn = cli.connect(world.h1, 8080)
    sport = conn.getsockname()[1]
    sniff = cli.sniffer()
    assert echo_roundtrip(conn, b"learn the sequence numbers\n")
    out = sniff.collect(0.5, lambda p: TCP in p and p[TCP].sport == sport and p[IPv6].src == str(world.c))
    sniff.close()
    assert out, "control: the client's own segments were seen"
    assert world.flows_of_port(sport), "control: the live connection's flow is visible where we look for flows"
    nxt = max(p[TCP].seq + len(bytes(p[TCP].payload)) for p in out) & 0xffffffff
    ip = IPv6(src=str(world.c), dst=str(world.h1))
    rsts = [_from_client(world, ip, TCP(sport=sport, dport=8080, flags="R", seq=(nxt + off) & 0xffffffff))
            for off in (0x40000000, 0x80000000, 0xc0000000)]
    rsts.append(_from_client(world, ip, TCP(sport=sport, dport=8080, flags="R", seq=nxt, chksum=0xdead)))
    rsts.append(_from_client(world, ip, TCP(sport=sport, dport=8080, flags="RA", seq=nxt, chksum=0xbeef)))
    bad_syn = _from_client(world, ip, TCP(sport=47001, dport=8080, flags="S", seq=1, chksum=0x1234))
    bad_udp = _from_client(world, ip, UDP(sport=47002, dport=5353, chksum=0x1234) / b"bad checksum")
    cli.sendp([*rsts, bad_syn, bad_udp], gap_s=0.02)
    time.sleep(0.3)
    created = world.flows_of_port(47001) + world.flows_of_port(47002)
    time.sleep(TRANSITORY_S + 2 * GC_INTERVAL_S + 1)
    failures = []
    if not echo_roundtrip(conn, b"still alive after the blind RSTs\n"):
        failures.append("the idle connection was killed by blind RSTs (its flow was closed, then expired)")
    conn.close()
    if created:
        failures.append(f"packets with invalid checksums created flows: {created}")
    assert not failures, "; ".join(failures)


# ---------------------------------------------------------------------------------------------- 9

def test_09_a_flood_of_new_flows_does_not_evict_established_ones(world: World) -> None:
    """Attack: a flood of spoofed SYNs, then UDP datagrams, from ever new sources to published ports:
    8x v6nat's conntrack capacity each, paced and bounded in count and time. Secure outcome: an idle
    established connection opened before the flood still works after it, and new connections succeed.
    v6nat runs with a small table (conntrack.CONNTRACK_MAX halves) so that a bounded flood exceeds it.
    docker: Linux's conntrack capacity (nf_conntrack_max) is machine-wide and settable only from the
    root namespace, so the docker leg cannot be given a table this small (and filling the machine's
    table would disrupt the machine): it faces the same flood, below its capacity; Linux's own answer
    at capacity is early_drop of unassured entries."""
    cli = world.client
    idle = cli.connect(world.h1, 8081)
    assert echo_roundtrip(idle, b"before the flood\n")
    capacity = world.conntrack_max or 2048
    if world.daemon is not None:
        from v6nat_ebpf.datapath import Datapath
        with Datapath.open_pinned(world.lab.pin_path) as dp:
            assert dp.config.conntrack_max == capacity, "v6nat does not run with the small table"
    count = 8 * capacity
    # Sources 2001:db8:ff:i:(ffff-i)::1: each frame another source, the same valid checksum.
    syn = bytes(_from_client(world, IPv6(src="2001:db8:ff:0:ffff::1", dst=str(world.h1)),
                             TCP(sport=33333, dport=8080, flags="S", seq=12345)))
    udp = bytes(_from_client(world, IPv6(src="2001:db8:ff:0:ffff::1", dst=str(world.h1)),
                             UDP(sport=33333, dport=5353) / b"flood"))
    sender = cli.sender()
    started = time.monotonic()
    try:
        for template in (syn, udp):
            frames = csum_neutral_frames(template, 14 + 8 + 6, count)
            for i in range(0, len(frames), 128):
                for frame in frames[i:i + 128]:
                    sender.send(frame)
                time.sleep(0.004)
                assert time.monotonic() - started < 30, "flood took too long"
    finally:
        sender.close()
    flood_s = time.monotonic() - started
    time.sleep(0.5)
    assert echo_roundtrip(idle, b"after the flood\n"), \
        f"the idle established connection died in the flood ({2 * count} packets in {flood_s:.1f} s)"
    idle.close()
    assert cli.can_connect(world.h1, 8080), "a new connection fails after the flood"


# ---------------------------------------------------------------------------------------------- 10

def test_10_icmp_errors_about_another_containers_flow_do_not_leak_ula_sources(world: World) -> None:
    """Attack: a container writes ICMPv6 errors (port unreachable, packet too big) to an internet host,
    quoting the packet that host sent to *another* container's masqueraded flow. Secure outcome: no packet
    with a ULA source reaches the internet (either translated to the host's address or dropped)."""
    cli, cx = world.client, world.ns("cx")
    sink = cli.udp(7000)
    victim = world.ns("srv").udp(41000)
    victim.sendto(b"victim flow", (str(world.c), 7000))
    sink.settimeout(3)
    data, seen = sink.recvfrom(100)
    assert IPv6Address(seen[0]) in (world.h1, world.h2), "control: the victim is masqueraded"
    sniff = cli.sniffer()
    quote = IPv6(src=str(world.c), dst=str(world.addr("srv")), hlim=63) / UDP(sport=7000, dport=41000) / b"reply"
    head = Ether(src=cx.mac, dst=world.bridge_mac("pub")) / IPv6(src=str(cx.addr), dst=str(world.c))
    cx.sendp([head / ICMPv6DestUnreach(code=4) / quote, head / ICMPv6PacketTooBig(mtu=1280) / quote], gap_s=0.05)
    seen_pkts = sniff.collect(1.5, lambda p: True, incoming_only=True)
    sniff.close()
    leaked = [p.summary() for p in seen_pkts if in_prefix(p[IPv6].src, ULA)]
    assert not leaked, f"ICMPv6 errors left with a container's ULA source: {leaked}"
    sink.close(), victim.close()

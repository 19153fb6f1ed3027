"""The fuzzer's small world: host addresses, published ports, networks
(masquerade, internal, routed, one without ICC and with its own SNAT
address), host sockets that SNAT must avoid, and established flows created
by real packets (SYN, the translated SYN through bridge egress, then the
reply: answered and confirmed both ways, so the fast path carries them)
before fuzzing starts. Every container has a port (a veth with a veths
entry); one more port has none.

Each worker runs in its own network namespace (the host sockets and the
socket lookups of the SNAT port claim then see only this world) with its own
pin path under /sys/fs/bpf, removed on exit whatever happens.
"""

from __future__ import annotations

import ctypes
import dataclasses
import shutil
import socket
import subprocess
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

from v6nat_ebpf.datapath import Datapath, DatapathConfig, DnatKey, DnatTarget, NetworkEntry
from v6nat_ebpf.datapath.maps import VethEntry
from v6nat_ebpf.lab.datapath import clear
from v6nat_ebpf.lab.testrun import run

from . import packets as P


def a(s: str) -> bytes:
    return IPv6Address(s).packed


HOST, HOST2 = a("2001:db8:1::1"), a("2001:db8:1::2")
CLIENT, CLIENT2 = a("2001:db8:2::99"), a("2001:db8:2::98")
ROUTER = a("2001:db8:3::1")
OTHER, OTHER2 = a("2001:db8:9::1"), a("2001:db8:9::2")
LO = 1
# Interfaces of the worker's namespace (set by enter_private_netns): the skb of
# each test run is put on an interface its program is attached to (the
# generator picks which: a packet's own bridge or veth mostly, another one
# sometimes), so the fast path's FIB lookups succeed and packets are redirected.
PUB_IF = LO
PUB_MAC = bytes.fromhex("020000000002")  # = packets.MAC_DST: frames to us are PACKET_HOST
# The bridges' MAC as the veths map holds it: the MAC generated frames are sent to.
BRIDGE_MAC = bytes.fromhex("020000000002")
IFINDEX: dict[str, int] = {"lo": LO}  # interface name -> ifindex in the worker's namespace
NEXT_HOP = "fe80::1"

NET = IPv6Network("fd00:1::/64")
NET_INTERNAL = IPv6Network("fd00:2::/64")
NET_ROUTED = IPv6Network("fd00:3::/64")  # gateway mode nat, masquerade off: filtered as routed (Docker 28)
NET_GUA_ROUTED = IPv6Network("2001:db8:40::/64")  # gateway mode routed (issue 13): published container ports only
NET_NOICC = IPv6Network("fd00:4::/64")
C1, C2, C3 = a("fd00:1::2"), a("fd00:1::3"), a("fd00:1::4")
I1 = a("fd00:2::2")
R1 = a("fd00:3::2")
N1, N2, NGW = a("fd00:4::2"), a("fd00:4::3"), a("fd00:4::1")
G1 = a("2001:db8:40::2")

SNAT_MIN, SNAT_MAX = 61000, 61999  # narrow: claims collide and retry


@dataclass(frozen=True)
class Net:
    prefix: IPv6Network
    entry: NetworkEntry


NETWORKS = [
    Net(NET, NetworkEntry(1, 10, masquerade=True, icc=True, internal=False, snat_addr=None)),
    Net(NET_INTERNAL, NetworkEntry(2, 11, masquerade=False, icc=True, internal=True, snat_addr=None)),
    Net(NET_ROUTED, NetworkEntry(3, 12, masquerade=False, icc=True, internal=False, snat_addr=None,
                                 mode="routed")),  # what model.Network.datapath_mode writes for it
    Net(NET_NOICC, NetworkEntry(4, 13, masquerade=True, icc=False, internal=False,
                                snat_addr=IPv6Address(HOST2), gateway=IPv6Address(NGW))),
    Net(NET_GUA_ROUTED, NetworkEntry(5, 14, masquerade=False, icc=True, internal=False, snat_addr=None,
                                     mode="routed")),
]

# (proto, host address or None for any, host port) -> (container, port, mapping id)
PUBLISHED = {
    (P.TCP, None, 8080): (C1, 80, 1),
    (P.UDP, None, 5353): (C1, 53, 2),
    (P.TCP, HOST2, 2222): (C2, 22, 3),
    (P.TCP, None, 8081): (R1, 80, 4),
    (P.TCP, R1, 80): (R1, 80, 10),  # and the same port at R1's own address (no masquerade: filtered as routed)
    (P.UDP, HOST, 9999): (N1, 9999, 5),
    (P.TCP, None, 61500): (C2, 8443, 6),  # inside the SNAT range: never a SNAT port
    (P.UDP, HOST2, 61501): (C3, 61501, 7),
    (P.TCP, G1, 80): (G1, 80, 8),  # routed: the container's own port at its own address
    (P.UDP, G1, 53): (G1, 53, 9),
}
HOST_ADDRS = [HOST, HOST2]
PUBLIC_IFACES = {PUB_IF: HOST}
# Host sockets (bound to ::) whose ports no SNAT or hairpin flow may take.
HOST_SOCKETS = [(P.UDP, 5555), (P.UDP, 61010), (P.TCP, 61011), (P.TCP, 5001)]

CONTAINERS = {  # address -> network prefix
    C1: NET, C2: NET, C3: NET, I1: NET_INTERNAL, R1: NET_ROUTED, N1: NET_NOICC, N2: NET_NOICC, G1: NET_GUA_ROUTED,
}
# Each container's port (the host side of its veth), with a veths entry; "vx"
# is a veth the control plane has not described (every packet dropped).
VETH_OF = {C1: "vc1", C2: "vc2", C3: "vc3", I1: "vi1", R1: "vr1", N1: "vn1", N2: "vn2", G1: "vg1"}
VETH_UNKNOWN = "vx"
VETHS = list(VETH_OF.values()) + [VETH_UNKNOWN]
OUTSIDE = [CLIENT, CLIENT2, ROUTER, OTHER, OTHER2]

PUBLIC_INGRESS = "v6nat_public_ingress"
PUBLIC_EGRESS = "v6nat_public_egress"
BRIDGE_INGRESS = "v6nat_bridge_ingress"
BRIDGE_EGRESS = "v6nat_bridge_egress"
VETH_INGRESS = "v6nat_veth_ingress"
PROGRAMS = (PUBLIC_INGRESS, PUBLIC_EGRESS, BRIDGE_INGRESS, BRIDGE_EGRESS, VETH_INGRESS)
HOOK_OF = {PUBLIC_INGRESS: "public_ingress", PUBLIC_EGRESS: "public_egress",
           BRIDGE_INGRESS: "bridge_ingress", BRIDGE_EGRESS: "bridge_egress", VETH_INGRESS: "veth_ingress"}


def bridge_name(net: "Net") -> str:
    return f"br{net.entry.network_id}"


BRIDGES = ["br1", "br2", "br3", "br4", "br5"]


def net_by_bridge(name: str) -> "Net | None":
    for n in NETWORKS:
        if bridge_name(n) == name:
            return n
    return None


def veth_entry(name: str) -> VethEntry | None:
    """The veths entry of a port (None: the unknown one)."""
    for c, port in VETH_OF.items():
        if port == name:
            n = network_of(c)
            return VethEntry(n.entry.network_id, n.entry.bridge_ifindex, n.entry.masquerade, n.entry.icc,
                             n.entry.internal, (IPv6Address(c),), BRIDGE_MAC, n.entry.mode)
    return None


def default_iface(prog: str, buf: bytes) -> str:
    """Where a packet of `prog` arrives when nothing else is said: a public
    packet on pub0; at a bridge the bridge of its source's (ingress) or
    destination's (egress) network; at a veth its source container's port."""
    src, dst = buf[22:38], buf[38:54]
    if prog in (PUBLIC_INGRESS, PUBLIC_EGRESS):
        return "pub0"
    if prog == VETH_INGRESS:
        return VETH_OF.get(src, VETH_UNKNOWN)
    net = network_of(src if prog == BRIDGE_INGRESS else dst)
    return bridge_name(net) if net else "br1"


def network_of(addr: bytes) -> Net | None:
    ip = IPv6Address(addr)
    best = None
    for n in NETWORKS:
        if ip in n.prefix and (best is None or n.prefix.prefixlen > best.prefix.prefixlen):
            best = n
    return best


def dnat_lookup(proto: int, addr: bytes, port: int) -> tuple[bytes, int, int] | None:
    return PUBLISHED.get((proto, addr, port)) or PUBLISHED.get((proto, None, port))


# --- the flows that exist before fuzzing: (program, packet) sent in order ----

def _t(src, dst, sp, dp_, flags, payload=b"", seq=1000, ack=0) -> bytes:
    return P.eth(P.ip6(src, dst, P.TCP, P.with_checksum(src, dst, P.TCP, P.tcp(sp, dp_, flags, payload, seq, ack))))


def _u(src, dst, sp, dp_, payload=b"x") -> bytes:
    return P.eth(P.ip6(src, dst, P.UDP, P.with_checksum(src, dst, P.UDP, P.udp(sp, dp_, payload))))


def _e(src, dst, ident, request=True) -> bytes:
    return P.eth(P.ip6(src, dst, P.ICMPV6, P.with_checksum(src, dst, P.ICMPV6, P.echo(request, ident))))


S, SA, A = P.TH_SYN, P.TH_SYN | P.TH_ACK, P.TH_ACK


def setup_flows(dp: Datapath) -> None:
    """Create the base flows with real packets, each followed by its reply
    (as translated: the reply is sent to what the first packet became) and
    for TCP and UDP by one more packet of the original side (the ACK of the
    SYN-ACK, a second datagram), so every pair is assured both ways and lives
    in `conntrack` whichever packet the datapath moves it there on."""

    def again(prog: str, proto: int, src, dst, sport, dport) -> None:
        if proto == P.TCP:  # the SYN (seq 1000) and the SYN-ACK (seq 1000) each took one
            go(prog, _t(src, dst, sport, dport, A, seq=1001, ack=1001))
        elif proto == P.UDP:
            go(prog, _u(src, dst, sport, dport))

    def go(prog: str, pkt: bytes) -> bytes:
        r = run(dp.prog_fd(prog), pkt, ifindex=IFINDEX[default_iface(prog, pkt)])
        if r.verdict == P_SHOT:
            raise RuntimeError(f"setup packet dropped by {prog}: {pkt.hex()}")
        return r.raw

    def inward(raw: bytes) -> None:
        """The translated packet toward a container leaves the stack by its
        bridge: bridge egress confirms that direction (the fast path needs
        both). Frames from the stack carry the bridge's MACs (not checked)."""
        go(BRIDGE_EGRESS, raw)

    def tup(raw: bytes):
        v = P.dp_parse(raw)
        return v.src, v.dst, v.sport, v.dport

    # DNAT: client -> host:published, reply from the container.
    for proto, client, cport, host, hport in [
        (P.TCP, CLIENT, 40000, HOST, 8080), (P.TCP, CLIENT, 40001, HOST2, 2222),
        (P.UDP, CLIENT2, 40002, HOST, 5353), (P.UDP, CLIENT, 40003, HOST, 9999),
        (P.TCP, CLIENT2, 40004, HOST2, 8081), (P.TCP, CLIENT, 40005, HOST, 61500),
    ]:
        first = _t(client, host, cport, hport, S) if proto == P.TCP else _u(client, host, cport, hport)
        translated = go(PUBLIC_INGRESS, first)
        inward(translated)
        s, d, sp, dp_ = tup(translated)
        reply = _t(d, s, dp_, sp, SA) if proto == P.TCP else _u(d, s, dp_, sp)
        go(PUBLIC_EGRESS, reply)
        again(PUBLIC_INGRESS, proto, client, host, cport, hport)
    # SNAT: container -> outside, reply to the translated source.
    for proto, c, sport, remote, rport in [
        (P.TCP, C1, 5000, OTHER, 443), (P.TCP, C2, 5000, OTHER, 443),  # the second needs a new port
        (P.UDP, C1, 5555, OTHER, 53),  # a host socket holds 5555
        (P.UDP, C2, 61020, OTHER2, 123), (P.TCP, N1, 6000, OTHER, 80), (P.UDP, C3, 61500, OTHER, 53),
        (ICMPV6_ECHO, C1, 7, OTHER, 0), (ICMPV6_ECHO, C2, 7, OTHER, 0),
    ]:
        if proto == P.TCP:
            first = _t(c, remote, sport, rport, S)
        elif proto == P.UDP:
            first = _u(c, remote, sport, rport)
        else:
            first = _e(c, remote, sport)
        s, d, sp, dp_ = tup(go(PUBLIC_EGRESS, first))
        if proto == P.TCP:
            inward(go(PUBLIC_INGRESS, _t(d, s, dp_, sp, SA)))
        elif proto == P.UDP:
            inward(go(PUBLIC_INGRESS, _u(d, s, dp_, sp)))
        else:
            inward(go(PUBLIC_INGRESS, _e(d, s, sp, request=False)))
        again(PUBLIC_EGRESS, proto, c, remote, sport, rport)
    # Hairpin: container -> host:published, reply from the target.
    for proto, c, sport, host, hport in [(P.TCP, C2, 7000, HOST, 8080), (P.UDP, N2, 7001, HOST, 5353)]:
        first = _t(c, host, sport, hport, S) if proto == P.TCP else _u(c, host, sport, hport)
        s, d, sp, dp_ = tup(go(BRIDGE_INGRESS, first))
        go(BRIDGE_INGRESS, _t(d, s, dp_, sp, SA) if proto == P.TCP else _u(d, s, dp_, sp))
        again(BRIDGE_INGRESS, proto, c, host, sport, hport)


P_SHOT = 2
ICMPV6_ECHO = P.ICMPV6


def configure(dp: Datapath) -> None:
    clear(dp)
    dp.set_config(CONFIG)
    for h in HOST_ADDRS:
        dp.host_addrs.put(IPv6Address(h), PUB_IF)
    for ifindex, addr in PUBLIC_IFACES.items():
        dp.public_ifaces.put(ifindex, IPv6Address(addr))
    for n in NETWORKS:
        dp.networks.put(n.prefix, n.entry)
    for (proto, host, port), (target, tport, mid) in PUBLISHED.items():
        dp.dnat.put(DnatKey(proto, IPv6Address(host) if host else None, port),
                    DnatTarget(IPv6Address(target), tport, mid))
    for name in VETH_OF.values():
        dp.veths.put(IFINDEX[name], veth_entry(name))


CONFIG = DatapathConfig(conntrack_max=16384, dnat_max=4096, snat_port_min=SNAT_MIN, snat_port_max=SNAT_MAX)


# --- the worker's namespace, sockets and pins --------------------------------

CLONE_NEWNET = 0x40000000


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, stdout=subprocess.DEVNULL)


def _link(name: str, mac: str | None = None) -> None:
    """A device that is up with carrier: a veth whose peer is up too (the
    kernel may have no dummy driver)."""
    _ip("link", "add", name, *(("address", mac) if mac else ()), "type", "veth", "peer", "name", f"{name}p")
    _ip("link", "set", f"{name}p", "up")
    _ip("link", "set", name, "up")


def enter_private_netns() -> None:
    """Move this process into a new network namespace and build the world's
    interfaces there (nothing of the root namespace is touched): pub0, the
    public interface (host addresses, a default route); a dummy "bridge" per
    network with its prefix and permanent neighbours for most containers (with
    the MAC their frames carry, so the veth program believes them); a port
    per container (VETH_OF) and one unknown to the datapath (VETH_UNKNOWN).
    Forwarding is on in this namespace only."""
    global PUB_IF, PUBLIC_IFACES
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
    _ip("link", "set", "lo", "up")
    _link("pub0", PUB_MAC.hex(":"))
    for h in HOST_ADDRS:
        _ip("-6", "addr", "add", f"{IPv6Address(h)}/64", "dev", "pub0", "nodad")
    _ip("-6", "neigh", "add", NEXT_HOP, "lladdr", "02:00:00:00:00:99", "dev", "pub0", "nud", "permanent")
    _ip("-6", "route", "add", "default", "via", NEXT_HOP, "dev", "pub0")
    for i, n in enumerate(list(NETWORKS)):
        name = f"br{n.entry.network_id}"
        _link(name)
        gw = n.entry.gateway or IPv6Address(int(n.prefix.network_address) + 1)
        _ip("-6", "addr", "add", f"{gw}/{n.prefix.prefixlen}", "dev", name, "nodad")
        NETWORKS[i] = Net(n.prefix, dataclasses.replace(n.entry, bridge_ifindex=socket.if_nametoindex(name)))
        for c, prefix in CONTAINERS.items():
            if prefix == n.prefix and c != C3:  # C3: no neighbour (bpf_redirect_neigh)
                _ip("-6", "neigh", "add", str(IPv6Address(c)), "lladdr", P.MAC_SRC.hex(":"), "dev", name,
                    "nud", "permanent")
    for name in VETHS:
        _link(name)
    with open("/proc/sys/net/ipv6/conf/all/forwarding", "w") as f:  # this namespace's
        f.write("1")
    PUB_IF = socket.if_nametoindex("pub0")
    PUBLIC_IFACES = {PUB_IF: HOST}
    for name in ["pub0", *BRIDGES, *VETHS]:
        IFINDEX[name] = socket.if_nametoindex(name)


def open_host_sockets() -> list[socket.socket]:
    socks = []
    for proto, port in HOST_SOCKETS:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM if proto == P.UDP else socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", port))
        if proto == P.TCP:
            s.listen(4)
        socks.append(s)
    return socks


def pin_path_for(tag: str) -> str:
    return f"/sys/fs/bpf/v6fuzz-{tag}"


def remove_pins(pin_path: str) -> None:
    """Only our own pin directory (no filters were attached: nothing to detach)."""
    shutil.rmtree(pin_path, ignore_errors=True)

"""Packet builders and assertions shared by the datapath tests (scapy).

The addresses form one small world: a host with two public addresses, an
outside client and router, and managed networks (masquerade, internal, routed).
"""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from v6nat_ebpf.datapath import Datapath
from v6nat_ebpf.datapath.layout import RawCtKey
from v6nat_ebpf.lab.datapath import ct_delete_half
from v6nat_ebpf.lab.testrun import RunResult, run

HOST = "2001:db8:1::1"
HOST2 = "2001:db8:1::2"
CLIENT = "2001:db8:2::99"
ROUTER = "2001:db8:3::1"
OTHER = "2001:db8:9::1"  # an outside address that is not the host's
NET = IPv6Network("fd00:1::/64")  # masquerade
C1 = "fd00:1::2"
C2 = "fd00:1::3"
NET_INTERNAL = IPv6Network("fd00:2::/64")
INTERNAL1 = "fd00:2::2"
NET_ROUTED = IPv6Network("fd00:3::/64")  # no masquerade: its own addresses
ROUTED1 = "fd00:3::2"
LO_IFINDEX = 1  # BPF_PROG_TEST_RUN runs the skb on lo unless told otherwise

PUBLIC_INGRESS = "v6nat_public_ingress"
PUBLIC_EGRESS = "v6nat_public_egress"
BRIDGE_INGRESS = "v6nat_bridge_ingress"

UNSPEC, SHOT = -1, 2


def eth(l3: Packet) -> Packet:
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / l3


def tcp(src: str, dst: str, sport: int, dport: int, flags: str = "S", payload: bytes = b"", ack: int = 0) -> Packet:
    """Every side starts at sequence 1000: the answer to a SYN or SYN-ACK acknowledges 1001."""
    return eth(IPv6(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=1000, ack=ack) / payload)


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes = b"hello") -> Packet:
    return eth(IPv6(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload)


def ping(src: str, dst: str, ident: int, reply: bool = False, payload: bytes = b"ping") -> Packet:
    echo = ICMPv6EchoReply if reply else ICMPv6EchoRequest
    return eth(IPv6(src=src, dst=dst) / echo(id=ident, seq=7, data=payload))


def fresh(pkt: Packet) -> bytes:
    """The packet's bytes with its (outer) upper-layer checksum recomputed by scapy."""
    p = Ether(bytes(pkt))
    layer = p[IPv6].payload
    while isinstance(layer, Packet) and layer.name != "NoPayload":
        for field in ("chksum", "cksum"):
            if field in layer.fields or any(f.name == field for f in layer.fields_desc):
                delattr(layer, field)
                return bytes(p)
        layer = layer.payload
    return bytes(p)


def rewritten(pkt: Packet, src: str | None = None, dst: str | None = None, sport: int | None = None,
              dport: int | None = None, ident: int | None = None) -> bytes:
    """What `pkt` should become: fields changed, checksums recomputed."""
    p = Ether(bytes(pkt))
    if src:
        p[IPv6].src = src
    if dst:
        p[IPv6].dst = dst
    l4 = next(p[c] for c in (TCP, UDP, ICMPv6EchoRequest, ICMPv6EchoReply) if p.haslayer(c))
    if sport is not None:
        l4.sport = sport
    if dport is not None:
        l4.dport = dport
    if ident is not None:
        l4.id = ident
    return fresh(p)


def go(dp: Datapath, prog: str, pkt: Packet | bytes, ifindex: int = LO_IFINDEX) -> RunResult:
    return run(dp.prog_fd(prog), pkt, ifindex=ifindex)


def assert_untouched(result: RunResult, pkt: Packet | bytes) -> None:
    assert result.verdict == UNSPEC, f"verdict {result.verdict}"
    assert result.raw == bytes(pkt), "a packet that is not ours changed"


def assert_translated(result: RunResult, expected: bytes) -> None:
    assert result.verdict == UNSPEC, f"verdict {result.verdict}"
    if result.raw != expected:
        got, want = Ether(result.raw), Ether(expected)
        raise AssertionError(f"got:\n{got.show2(dump=True)}\nwant:\n{want.show2(dump=True)}")


def l4(result: RunResult) -> Packet:
    return result.packet[IPv6].payload


def delete_ct_half(dp: Datapath, saddr: str, daddr: str, sport: int, dport: int, proto: int) -> None:
    """Remove the conntrack half keyed by this tuple, as an LRU eviction would (it must be there)."""
    key = RawCtKey()
    key.saddr[:] = list(addr(saddr).packed)
    key.daddr[:] = list(addr(daddr).packed)
    key.sport = int.from_bytes(sport.to_bytes(2, "big"), "little")
    key.dport = int.from_bytes(dport.to_bytes(2, "big"), "little")
    key.proto = proto
    assert ct_delete_half(dp, key)


def addr(a: str) -> IPv6Address:
    return IPv6Address(a)

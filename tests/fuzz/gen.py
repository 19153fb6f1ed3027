"""Packet generation: templates built from the world and its live flows, then
mutated in Python (no scapy in the loop). Every generated packet is
(program, bytes, family) where family names the template for the figures.

Templates: packets of known flows (every TCP flag mix, payloads, first
fragments), new flows (published ports, masquerade, hairpin; spoofed and
bogon sources), ICMPv6 errors (types 1-4) quoting real flows (full,
truncated, with extension headers, from the quote's destination or a
router) and fake ones, later fragments, packets that are not ours, garbage.
Each packet arrives on an interface its program is attached to: pub0, its
source's (bridge ingress) or destination's (bridge egress) bridge, its source
container's port (veth ingress), or now and then another bridge or port (or
one without a veths entry), so spoofing and isolation are fuzzed too.
Mutations: extension-header chains of 0-8 headers (hop-by-hop, destination
options, routing types 0/2/4 with and without segments left, fragment, AH),
truncation at every layer boundary (payload length kept or fixed), byte
flips in the headers, wrong checksums, UDP checksum 0, Ethernet padding,
wrong payload lengths.
"""

from __future__ import annotations

import random
import struct

from . import packets as P
from . import world as W
from .model import CT_DNAT, CT_HAIRPIN, CT_SNAT, ORIG, REPLY, FlowState, Half

# Which programs see a half's packets (the hook that translates it). Bridge
# egress sees the packets toward a container after their translation: the
# mirror of the container's outward half (DNAT reply, SNAT original).
HOOKS_OF_HALF = {
    (CT_DNAT, ORIG): [W.PUBLIC_INGRESS],
    (CT_SNAT, REPLY): [W.PUBLIC_INGRESS],
    (CT_DNAT, REPLY): [W.PUBLIC_EGRESS, W.VETH_INGRESS, W.BRIDGE_INGRESS],
    (CT_SNAT, ORIG): [W.PUBLIC_EGRESS, W.VETH_INGRESS, W.BRIDGE_INGRESS],
    (CT_HAIRPIN, ORIG): [W.BRIDGE_INGRESS],
    (CT_HAIRPIN, REPLY): [W.BRIDGE_INGRESS],
}
# Where an ICMPv6 error about a half's flow is translated.
ERROR_HOOK_OF_HALF = {
    (CT_DNAT, ORIG): W.PUBLIC_INGRESS, (CT_SNAT, REPLY): W.PUBLIC_INGRESS,
    (CT_DNAT, REPLY): W.PUBLIC_EGRESS, (CT_SNAT, ORIG): W.PUBLIC_EGRESS,
    (CT_HAIRPIN, ORIG): W.BRIDGE_INGRESS, (CT_HAIRPIN, REPLY): W.BRIDGE_INGRESS,
}

TCP_FLAGS = [P.TH_ACK, P.TH_ACK | P.TH_PSH, P.TH_SYN, P.TH_SYN | P.TH_ACK, P.TH_FIN | P.TH_ACK, P.TH_RST,
             P.TH_RST | P.TH_ACK, P.TH_FIN, 0]

FAMILIES = ("flow", "new_flow", "icmp_error", "later_fragment", "not_ours", "garbage")
WEIGHTS = (34, 22, 22, 8, 11, 3)
OUTWARD = ((CT_DNAT, REPLY), (CT_SNAT, ORIG))


class Generator:
    def __init__(self, seed: int, flows: FlowState) -> None:
        self.r = random.Random(seed)
        self.keys = []  # (key, half, proto)
        for k, h in flows.halves.items():
            self.keys.append((k, h, k[36]))
        self.recent_frags: list[tuple[bytes, bytes, int, int]] = []
        self.cum = []
        total = 0
        for w in WEIGHTS:
            total += w
            self.cum.append(total)
        self.total = total

    # -- addresses and ports ----------------------------------------------------

    def rand_addr(self) -> bytes:
        r = self.r
        pick = r.random()
        if pick < 0.25:
            return r.choice(W.OUTSIDE)
        if pick < 0.40:
            return r.choice(W.HOST_ADDRS)
        if pick < 0.60:
            return r.choice(list(W.CONTAINERS))
        if pick < 0.70:  # another address of a managed prefix
            base = r.choice(W.NETWORKS).prefix.network_address.packed
            return base[:8] + r.randbytes(8)
        if pick < 0.78:
            return bytes.fromhex("fe80000000000000") + r.randbytes(8)
        if pick < 0.84:
            return bytes.fromhex("ff02") + bytes(13) + bytes((r.choice((1, 2, 0x16)),))
        if pick < 0.88:
            return bytes.fromhex("fd") + r.randbytes(15)
        if pick < 0.90:
            return bytes(16) if r.random() < 0.5 else bytes(15) + b"\x01"
        return bytes.fromhex("2001") + r.randbytes(14)

    def rand_port(self) -> int:
        r = self.r
        p = r.random()
        if p < 0.3:
            return r.choice([p_ for (_, _, p_) in W.PUBLISHED])
        if p < 0.45:
            return r.randint(W.SNAT_MIN, W.SNAT_MAX)
        if p < 0.5:
            return r.choice([p_ for (_, p_) in W.HOST_SOCKETS])
        if p < 0.52:
            return 0
        return r.randint(1, 65535)

    # -- L4 ------------------------------------------------------------------------

    def payload(self, hi: int = 96) -> bytes:
        n = self.r.choice((0, 0, 1, 4, 17, self.r.randint(0, hi)))
        return self.r.randbytes(n)

    def l4_for(self, proto: int, sport: int, dport: int, request: bool | None = None) -> bytes:
        r = self.r
        if proto == P.TCP:
            flags = r.choice(TCP_FLAGS) if r.random() < 0.9 else r.randint(0, 255)
            return P.tcp(sport, dport, flags, self.payload(), seq=r.getrandbits(32), ack=r.getrandbits(32))
        if proto == P.UDP:
            return P.udp(sport, dport, self.payload())
        if proto == P.ICMPV6:
            if request is None:
                request = sport != 0 or dport == 0
            ident = sport if request else dport
            return P.echo(request, ident, r.randint(0, 65535), self.payload())
        return self.payload()

    # -- extension headers -----------------------------------------------------

    def ext_chain(self, final_nh: int, allow_later: bool = True) -> list[tuple[int, callable]]:
        """A list of (type, builder(nh) -> bytes): 0-8 headers, mostly none."""
        r = self.r
        p = r.random()
        n = 0 if p < 0.65 else r.randint(1, 3) if p < 0.9 else r.randint(4, 8)
        chain = []
        for i in range(n):
            t = r.choice((P.HOP, P.DEST, P.DEST, P.ROUTING, P.FRAGMENT, P.AUTH))
            if t in (P.HOP, P.DEST):
                units = r.choice((0, 0, 1, 3))
                chain.append((t, lambda nh, u=units: P.ext_hbh_or_dest(nh, u)))
            elif t == P.ROUTING:
                rtype = r.choice((0, 2, 4))
                segleft = r.choice((0, 0, 1))
                addrs = [r.choice(W.OUTSIDE + list(W.CONTAINERS)) for _ in range(1 if rtype == 2 else r.randint(1, 2))]
                chain.append((t, lambda nh, a=addrs, rt=rtype, s=segleft: P.ext_routing(nh, rt, s, a)))
            elif t == P.FRAGMENT:
                later = allow_later and r.random() < 0.2
                off = r.randint(1, 100) if later else 0
                more = r.random() < 0.7
                ident = r.getrandbits(32)
                chain.append((t, lambda nh, o=off, m=more, i=ident: P.ext_fragment(nh, o, m, i)))
            else:
                chain.append((t, lambda nh, w=r.choice((1, 3)): P.ext_ah(nh, w)))
        return chain

    @staticmethod
    def assemble(chain, final_nh: int) -> tuple[int, bytes]:
        """(first next header, the headers' bytes) for a chain ending in final_nh."""
        out = b""
        nh = final_nh
        for t, build in reversed(chain):
            out = build(nh) + out
            nh = t
        return nh, out

    # -- a full packet -----------------------------------------------------------

    def packet(self, src: bytes, dst: bytes, proto: int, l4: bytes, chain=None, hlim: int | None = None,
               checksum: bool = True) -> bytes:
        """Ethernet + IPv6 + chain + l4, the L4 checksum right for a receiver
        (pseudo-header with the routing header's final destination)."""
        chain = chain if chain is not None else []
        nh, exts = self.assemble(chain, proto)
        hl = hlim if hlim is not None else self.r.choice((64, 64, 255, 1, 2))
        buf = bytearray(P.eth(P.ip6(src, dst, nh, exts + l4, hlim=hl, flow=self.r.getrandbits(20) if
                                    self.r.random() < 0.2 else 0)))
        if checksum and proto in P.CSUM_AT:
            cv = P.rfc_checksum_view(bytes(buf))
            if cv is not None and not cv.later_fragment and cv.proto == proto:
                at = cv.l4_off + P.CSUM_AT[proto]
                if at + 2 <= len(buf):
                    c = P.l4_checksum(cv.src, cv.final_dst, proto, buf[cv.l4_off:cv.end], P.CSUM_AT[proto])
                    buf[at:at + 2] = struct.pack("!H", c)
        return bytes(buf)

    # -- mutations ------------------------------------------------------------------

    def mutate(self, buf: bytes, proto: int | None) -> tuple[bytes, list[str]]:
        r = self.r
        b = bytearray(buf)
        tags = []
        v = P.dp_parse(buf)
        if proto in P.CSUM_AT and v.csum_off and v.csum_off + 2 <= len(b) and v.proto == proto:
            p = r.random()
            if p < 0.12:
                delta = r.randint(1, 0xFFFE)
                old = b[v.csum_off] << 8 | b[v.csum_off + 1]
                b[v.csum_off:v.csum_off + 2] = struct.pack("!H", (old + delta) & 0xFFFF or 1)
                tags.append("bad_csum")
            elif p < 0.22 and proto == P.UDP:
                b[v.csum_off:v.csum_off + 2] = b"\0\0"
                tags.append("udp_csum0")
        p = r.random()
        if p < 0.10:  # truncation at a layer boundary (or just around it)
            cuts = [14, 54]
            if v.l4_off:
                cuts += [v.l4_off + k for k in (0, 2, 4, 6, 8, 13, 14, 16, 18, 20)]
            off, nh = 54, b[20] if len(b) > 20 else 0
            for _ in range(8):
                if nh not in P.WALKABLE or off + 2 > len(b):
                    break
                nxt = off + (8 if nh == P.FRAGMENT else (b[off + 1] + 2) * 4 if nh == P.AUTH else (b[off + 1] + 1) * 8)
                cuts += [off + 1, nxt]
                nh, off = b[off], nxt
            # BPF_PROG_TEST_RUN refuses IPv6 frames without a full IPv6 header.
            cut = min(max(54, r.choice(cuts) + r.choice((0, 0, 0, -1, 1))), len(b))
            b = b[:cut]
            if len(b) >= 54 and r.random() < 0.5:
                b[18:20] = struct.pack("!H", len(b) - 54)
            tags.append("truncated")
        elif p < 0.18:
            hi = min(len(b), (v.l4_off or 54) + 24)
            for _ in range(r.randint(1, 4)):
                i = r.randrange(12 if r.random() < 0.95 else 0, hi)
                b[i] = r.randrange(256)
            tags.append("flipped")
        elif p < 0.22:
            b += r.randbytes(r.randint(1, 24)) if r.random() < 0.5 else bytes(r.randint(1, 24))
            tags.append("eth_padding")
        elif p < 0.24 and len(b) >= 54:
            b[18:20] = struct.pack("!H", r.randint(0, len(b)))
            tags.append("payload_len")
        elif p < 0.27:  # to a sibling's MAC (not the bridge's), or multicast
            b[0:6] = r.choice((bytes.fromhex("02000000000a"), P.MAC_SRC, bytes.fromhex("333300000001"),
                               bytes.fromhex("3333ff000002")))
            tags.append("dst_mac")
        return bytes(b), tags

    # -- templates --------------------------------------------------------------------

    def pick_half(self) -> tuple[bytes, Half, int]:
        return self.r.choice(self.keys)

    def flow_packet(self) -> tuple[str, bytes]:
        r = self.r
        k, h, proto = self.pick_half()
        src, dst = k[:16], k[16:32]
        sport, dport = struct.unpack_from("!HH", k, 32)
        progs = HOOKS_OF_HALF[(h.kind, h.dir)]
        prog = r.choice(progs) if r.random() < 0.85 else r.choice(W.PROGRAMS)
        if (h.kind, h.dir) in OUTWARD and r.random() < 0.3:  # an inward packet, translated, at bridge egress
            prog = W.BRIDGE_EGRESS
            src, dst, sport, dport = dst, src, dport, sport
        if r.random() < 0.1:
            ident = r.getrandbits(32)
            chain = [(P.FRAGMENT, lambda nh, i=ident: P.ext_fragment(nh, 0, True, i))]
            self.recent_frags.append((src, dst, ident, proto))
            if len(self.recent_frags) > 64:
                self.recent_frags.pop(0)
        else:
            chain = self.ext_chain(proto)
        return prog, self.packet(src, dst, proto, self.l4_for(proto, sport, dport), chain)

    def takeover_packet(self) -> tuple[str, bytes] | None:
        """A new DNAT flow whose reply tuple is a live flow's: a live client's
        address and port toward the other host address of the same published
        port (the forger's SYN of issue 12): a clash, never a take-over."""
        r = self.r
        dnat = [(k, h, proto) for k, h, proto in self.keys if (h.kind, h.dir) == (CT_DNAT, ORIG)]
        if not dnat:
            return None
        k, h, proto = r.choice(dnat)
        client, host = k[:16], k[16:32]
        cport, hport = struct.unpack_from("!HH", k, 32)
        others = [a for a in W.HOST_ADDRS if a != host]
        dst = r.choice(others) if others and r.random() < 0.9 else host
        l4 = self.l4_for(proto, cport, hport)
        if proto == P.TCP:
            l4 = l4[:13] + bytes((P.TH_SYN,)) + l4[14:]
        return W.PUBLIC_INGRESS, self.packet(client, dst, proto, l4, self.ext_chain(proto) if r.random() < 0.2 else [])

    def new_flow_packet(self) -> tuple[str, bytes]:
        r = self.r
        which = r.random()
        proto = r.choice((P.TCP, P.TCP, P.UDP, P.UDP, P.ICMPV6))
        if which < 0.05:
            got = self.takeover_packet()
            if got is not None:
                return got
        if which < 0.35:  # from outside to a published (or any) port
            prog = W.PUBLIC_INGRESS
            src = r.choice(W.OUTSIDE) if r.random() < 0.75 else self.rand_addr()
            dst = r.choice(W.HOST_ADDRS) if r.random() < 0.9 else self.rand_addr()
            sport, dport = self.rand_port(), self.rand_port()
        elif which < 0.75:  # a container to the outside
            prog = W.PUBLIC_EGRESS if r.random() < 0.7 else r.choice((W.VETH_INGRESS, W.BRIDGE_INGRESS,
                                                                       W.BRIDGE_EGRESS))
            src = r.choice(list(W.CONTAINERS)) if r.random() < 0.8 else self.rand_addr()
            dst = r.choice(W.OUTSIDE) if r.random() < 0.7 else self.rand_addr()
            sport, dport = self.rand_port(), self.rand_port()
        else:  # hairpin, and container to container
            prog = W.BRIDGE_INGRESS if r.random() < 0.7 else W.VETH_INGRESS
            src = r.choice(list(W.CONTAINERS))
            dst = r.choice(W.HOST_ADDRS) if r.random() < 0.7 else r.choice(list(W.CONTAINERS) + [W.NGW])
            sport, dport = self.rand_port(), self.rand_port()
        if proto == P.ICMPV6:
            l4 = self.l4_for(proto, sport, 0, request=r.random() < 0.8)
        else:
            l4 = self.l4_for(proto, sport, dport)
            if proto == P.TCP and r.random() < 0.5:
                l4 = l4[:13] + bytes((P.TH_SYN,)) + l4[14:]
        return prog, self.packet(src, dst, proto, l4, self.ext_chain(proto))

    def quote_of(self, src: bytes, dst: bytes, sport: int, dport: int, proto: int) -> bytes:
        """The IPv6 packet an error quotes (no Ethernet header), maybe cut."""
        r = self.r
        chain = []
        if r.random() < 0.2:
            for _ in range(r.randint(1, 3)):
                t = r.choice((P.HOP, P.DEST, P.ROUTING, P.FRAGMENT, P.AUTH))
                if t == P.ROUTING:
                    chain.append((t, lambda nh, s=r.choice((0, 0, 1)): P.ext_routing(nh, 0, s, [W.OTHER])))
                elif t == P.FRAGMENT:
                    chain.append((t, lambda nh, o=r.choice((0, 0, 3)): P.ext_fragment(nh, o, True, 77)))
                elif t == P.AUTH:
                    chain.append((t, lambda nh: P.ext_ah(nh)))
                else:
                    chain.append((t, lambda nh, t_=t: P.ext_hbh_or_dest(nh, 0)))
        l4 = self.l4_for(proto, sport, dport)
        if proto == P.TCP and r.random() < 0.5:
            l4 = l4[:13] + bytes((P.TH_SYN,)) + l4[14:]
        full = self.packet(src, dst, proto, l4, chain, hlim=r.choice((1, 64)))[14:]
        if proto == P.UDP and r.random() < 0.1:  # the quoted datagram had no checksum
            v = P.rfc_checksum_view(full, 0)
            if v and v.l4_off + 8 <= len(full):
                full = full[:v.l4_off + 6] + b"\0\0" + full[v.l4_off + 8:]
        p = r.random()
        if p < 0.25:  # cut somewhere
            full = full[:r.randint(0, len(full))]
        elif p < 0.4:  # cut around the L4 header's fields
            full = full[:min(len(full), 40 + len(chain) * 8 + r.choice((0, 2, 4, 6, 8, 16, 17, 18, 20)))]
        return full

    def icmp_error_packet(self) -> tuple[str, bytes]:
        r = self.r
        typ = r.choice(P.ERROR_TYPES)
        code = r.randint(0, 6) if r.random() < 0.3 else 0
        rest4 = struct.pack("!I", r.choice((1280, 1500, 6, 40, r.getrandbits(32))))
        if r.random() < 0.7:  # quoting a real flow: the mirror of a half's key
            k, h, proto = self.pick_half()
            a, b = k[:16], k[16:32]
            sport, dport = struct.unpack_from("!HH", k, 32)
            qsrc, qdst, qsp, qdp = b, a, dport, sport
            if r.random() < 0.15:  # a fake port or address next to the real flow
                if r.random() < 0.5:
                    qsp = r.randint(0, 65535)
                else:
                    qdst = self.rand_addr()
            prog = ERROR_HOOK_OF_HALF[(h.kind, h.dir)] if r.random() < 0.8 else r.choice(W.PROGRAMS)
            outer_dst = qsrc if r.random() < 0.95 else self.rand_addr()
            p = r.random()
            outer_src = qdst if p < 0.45 else r.choice((W.ROUTER, W.HOST, W.HOST2)) if p < 0.8 else \
                r.choice(list(W.CONTAINERS)) if p < 0.95 else self.rand_addr()
        else:  # a fake flow
            proto = r.choice((P.TCP, P.UDP, P.ICMPV6, 47))
            qsrc, qdst = self.rand_addr(), self.rand_addr()
            qsp, qdp = self.rand_port(), self.rand_port()
            prog = r.choice(W.PROGRAMS)
            outer_src, outer_dst = self.rand_addr(), qsrc if r.random() < 0.8 else self.rand_addr()
        quote = self.quote_of(qsrc, qdst, qsp, qdp, proto)
        l4 = P.icmp6(typ, code, rest4 + quote)
        return prog, self.packet(outer_src, outer_dst, P.ICMPV6, l4, self.ext_chain(P.ICMPV6, allow_later=False)
                                 if r.random() < 0.2 else [])

    def later_fragment_packet(self) -> tuple[str, bytes]:
        r = self.r
        if self.recent_frags and r.random() < 0.7:
            src, dst, ident, proto = r.choice(self.recent_frags)
        else:
            k, h, proto = self.pick_half()
            src, dst, ident = k[:16], k[16:32], r.getrandbits(32)
        prog = r.choice(W.PROGRAMS)
        chain = [(P.FRAGMENT, lambda nh, i=ident, o=r.randint(1, 8000), m=r.random() < 0.5:
                  P.ext_fragment(nh, o, m, i))]
        if r.random() < 0.2:
            chain.insert(0, (P.DEST, lambda nh: P.ext_hbh_or_dest(nh, 0)))
        return prog, self.packet(src, dst, proto, r.randbytes(r.choice((8, 16, 64, 200))), chain, checksum=False)

    def not_ours_packet(self) -> tuple[str, bytes]:
        r = self.r
        src, dst = self.rand_addr(), self.rand_addr()
        p = r.random()
        if p < 0.3:
            nh = r.randint(0, 255)
            l4 = self.payload()
        elif p < 0.5:  # NDP, MLD and other ICMPv6
            nh = P.ICMPV6
            l4 = P.icmp6(r.choice((133, 134, 135, 136, 137, 130, 143, 1, 128, 129, 200)), 0, r.randbytes(20))
        else:
            nh = r.choice((P.TCP, P.UDP, P.ICMPV6))
            l4 = self.l4_for(nh, self.rand_port(), self.rand_port())
        return r.choice(W.PROGRAMS), self.packet(src, dst, nh, l4, self.ext_chain(nh))

    def garbage_packet(self) -> tuple[str, bytes]:
        r = self.r
        n = r.randint(54, 160)
        b = bytearray(r.randbytes(n))
        if r.random() < 0.8 and n >= 14:
            b[12:14] = b"\x86\xdd"
            if n > 14 and r.random() < 0.8:
                b[14] = 0x60 | (b[14] & 0x0F)
        return r.choice(W.PROGRAMS), bytes(b)

    def iface(self, prog: str, buf: bytes) -> str:
        """The interface the skb is on: mostly the packet's own (world.default_iface)."""
        r = self.r
        if prog in (W.PUBLIC_INGRESS, W.PUBLIC_EGRESS):
            return "pub0"
        if prog == W.VETH_INGRESS and buf[22:38] not in W.VETH_OF:  # another source: a known port's spoof
            return r.choice(W.VETHS)
        if r.random() < 0.9:
            return W.default_iface(prog, buf)
        return r.choice(W.VETHS if prog == W.VETH_INGRESS else W.BRIDGES)

    def next(self) -> tuple[str, bytes, str, list[str], str]:
        x = self.r.random() * self.total
        i = 0
        while x >= self.cum[i]:
            i += 1
        family = FAMILIES[i]
        prog, buf = getattr(self, f"{family}_packet")()
        iface = self.iface(prog, buf)
        proto = P.dp_parse(buf).proto
        if family in ("garbage",):
            return prog, buf, family, [], iface
        buf, tags = self.mutate(buf, proto)
        if prog == W.VETH_INGRESS and self.r.random() < 0.15:  # to a sibling (ICC is judged by MAC)
            buf = self.r.choice((bytes.fromhex("02000000000a"), P.MAC_SRC)) + buf[6:]
            tags.append("sibling_mac")
        return prog, buf, family, tags, iface

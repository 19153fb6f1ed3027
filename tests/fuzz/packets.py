"""Raw packet bytes for the fuzzer: builders (struct, no scapy in the hot
loop), one's complement checksums, and two parsers of the same bytes:

* `dp_parse` mirrors bpf/lib/parse.h (what the datapath keys a packet by:
  at most 6 extension headers, AH in 4-byte units, the first/later fragment
  split, `end` from the payload length), so the model can name the conntrack
  half a packet may hit;
* `rfc_checksum_view` finds the L4 header and the pseudo-header the way a
  receiver would (RFC 8200 8.1: the final destination of a routing header
  with segments left), for the checksum checks.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ETH_P_IPV6 = 0x86DD
ETH_HLEN = 14
IP6_HLEN = 40
L3 = ETH_HLEN
OFF_HLIM = ETH_HLEN + 7
OFF_SRC = ETH_HLEN + 8
OFF_DST = ETH_HLEN + 24

HOP, ROUTING, FRAGMENT, AUTH, DEST = 0, 43, 44, 51, 60
TCP, UDP, ICMPV6 = 6, 17, 58
WALKABLE = frozenset((HOP, ROUTING, FRAGMENT, AUTH, DEST))
ECHO_REQUEST, ECHO_REPLY = 128, 129
ERROR_TYPES = (1, 2, 3, 4)

TH_FIN, TH_SYN, TH_RST, TH_PSH, TH_ACK = 0x01, 0x02, 0x04, 0x08, 0x10

MAC_DST = bytes.fromhex("020000000002")
MAC_SRC = bytes.fromhex("020000000001")


# --- checksums ---------------------------------------------------------------

def onesum(data: bytes | bytearray | memoryview) -> int:
    """The 16-bit one's complement sum of `data` (big-endian words), folded.
    Summed as native little-endian words in C, then byte-swapped: the one's
    complement sum commutes with swapping the bytes of every word."""
    if len(data) & 1:
        data = bytes(data) + b"\0"
    s = sum(memoryview(data).cast("H"))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ((s & 0xFF) << 8) | (s >> 8)


def pseudo(src: bytes, dst: bytes, length: int, proto: int) -> bytes:
    return src + dst + struct.pack("!IxxxB", length & 0xFFFFFFFF, proto)


def l4_checksum(src: bytes, dst: bytes, proto: int, l4: bytes | bytearray, csum_at: int) -> int:
    """The checksum field value for `l4` (its field at `csum_at` taken as 0)."""
    b = bytearray(l4)
    b[csum_at:csum_at + 2] = b"\0\0"
    c = (~onesum(pseudo(src, dst, len(b), proto) + bytes(b))) & 0xFFFF
    if proto == UDP and c == 0:
        c = 0xFFFF
    return c


def residual(src: bytes, dst: bytes, proto: int, length: int, l4: bytes | bytearray) -> int:
    """The one's complement sum over pseudo-header + L4 bytes, checksum field
    included: 0xffff for a valid checksum; kept by any correct incremental
    rewrite of addresses, ports and the checksum (0 and 0xffff both mean zero)."""
    r = onesum(pseudo(src, dst, length, proto) + bytes(l4))
    return 0xFFFF if r == 0 else r


# --- builders ----------------------------------------------------------------

def eth(payload: bytes, src: bytes = MAC_SRC, dst: bytes = MAC_DST, ethertype: int = ETH_P_IPV6) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def ip6(src: bytes, dst: bytes, nh: int, payload: bytes, hlim: int = 64, flow: int = 0,
        plen: int | None = None) -> bytes:
    return struct.pack("!IHBB", 0x60000000 | (flow & 0x0FFFFFFF), len(payload) if plen is None else plen,
                       nh, hlim) + src + dst + payload


def tcp(sport: int, dport: int, flags: int, payload: bytes = b"", seq: int = 1000, ack: int = 0,
        window: int = 65535) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, window, 0, 0) + payload


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp6(typ: int, code: int, rest: bytes) -> bytes:
    """An ICMPv6 message; `rest` is everything after type, code, checksum."""
    return struct.pack("!BBH", typ, code, 0) + rest


def echo(request: bool, ident: int, seq: int = 7, payload: bytes = b"ping") -> bytes:
    return icmp6(ECHO_REQUEST if request else ECHO_REPLY, 0, struct.pack("!HH", ident, seq) + payload)


CSUM_AT = {TCP: 16, UDP: 6, ICMPV6: 2}


def with_checksum(src: bytes, dst: bytes, proto: int, l4: bytes) -> bytes:
    """`l4` with its checksum field filled in (over the given pseudo-header)."""
    at = CSUM_AT.get(proto)
    if at is None or len(l4) < at + 2:
        return l4
    c = l4_checksum(src, dst, proto, l4, at)
    return l4[:at] + struct.pack("!H", c) + l4[at + 2:]


def ext_hbh_or_dest(nh: int, units: int = 0) -> bytes:
    """Hop-by-hop / destination options of (units+1)*8 bytes, PadN filled."""
    size = (units + 1) * 8
    pad = size - 2
    return bytes((nh, units)) + (bytes((1, pad - 2)) + bytes(pad - 2) if pad >= 2 else bytes(pad))


def ext_routing(nh: int, rtype: int, segleft: int, addrs: list[bytes]) -> bytes:
    """Routing header: type 0/2 (addresses after 4 reserved bytes) or 4 (SRH:
    last entry, flags, tag, then the segment list, segment list[0] the final)."""
    if rtype == 4:
        body = bytes((len(addrs) - 1 if addrs else 0, 0)) + b"\0\0" + b"".join(addrs)
    else:
        body = b"\0\0\0\0" + b"".join(addrs)
    units = (len(body) + 4) // 8 - 1
    return bytes((nh, units, rtype, segleft)) + body


def ext_fragment(nh: int, offset_units: int, more: bool, ident: int) -> bytes:
    return struct.pack("!BBHI", nh, 0, (offset_units << 3) | int(more), ident)


def ext_ah(nh: int, icv_words: int = 1) -> bytes:
    """AH: its length field counts 4-byte units minus 2 (12 fixed bytes + ICV)."""
    size = 12 + 4 * icv_words
    return bytes((nh, size // 4 - 2)) + b"\0\0" + struct.pack("!II", 0x1234, 1) + bytes(4 * icv_words)


# --- the datapath's view (mirror of bpf/lib/parse.h) -------------------------

NOT_IPV6, MALFORMED, EXTHDR_LIMIT, TUPLE, ICMP_ERROR, FRAGMENT_LATER, OTHER = (
    "not_ipv6", "malformed", "exthdr_limit", "tuple", "icmp_error", "fragment", "other")
FRAG_NONE, FRAG_FIRST, FRAG_LATER = 0, 1, 2


@dataclass
class DpView:
    result: str
    src: bytes = b""
    dst: bytes = b""
    end: int = 0
    proto: int = -1
    l4_off: int = 0
    sport: int = 0
    dport: int = 0
    tcp_flags: int = 0
    icmp_type: int = -1
    frag: int = FRAG_NONE
    frag_id: int = 0
    csum_off: int = 0
    hlim: int = 0


def is_ipv6(buf: bytes) -> bool:
    """What both the datapath and a receiving stack take as IPv6."""
    return len(buf) >= ETH_HLEN + IP6_HLEN and buf[12:14] == b"\x86\xdd" and buf[14] >> 4 == 6


def dp_parse(buf: bytes, max_exthdrs: int = 6) -> DpView:
    n = len(buf)
    if not is_ipv6(buf):
        return DpView(NOT_IPV6)
    v = DpView(MALFORMED, src=buf[OFF_SRC:OFF_SRC + 16], dst=buf[OFF_DST:OFF_DST + 16], hlim=buf[OFF_HLIM])
    v.end = ETH_HLEN + IP6_HLEN + (buf[18] << 8 | buf[19])
    if v.end > n:
        return v
    nh = buf[20]
    off = ETH_HLEN + IP6_HLEN
    for _ in range(max_exthdrs):
        if nh not in WALKABLE:
            break
        if nh == FRAGMENT:
            if off + 8 > n:
                return v
            frag_off = buf[off + 2] << 8 | buf[off + 3]
            v.frag_id = int.from_bytes(buf[off + 4:off + 8], "big")
            nh = buf[off]
            off += 8
            if frag_off & 0xFFF8:
                v.frag = FRAG_LATER
                v.proto, v.l4_off, v.result = nh, off, FRAGMENT_LATER
                return v
            if frag_off & 1:
                v.frag = FRAG_FIRST
            continue
        if off + 2 > n:
            return v
        if nh == AUTH:
            off_next = off + (buf[off + 1] + 2) * 4
        else:
            off_next = off + (buf[off + 1] + 1) * 8
        nh = buf[off]
        off = off_next
    if nh in WALKABLE:
        v.result = EXTHDR_LIMIT
        return v
    v.proto, v.l4_off = nh, off
    end = v.end
    if nh == TCP:
        if off + 20 > end:
            return v
        v.sport, v.dport = struct.unpack_from("!HH", buf, off)
        v.tcp_flags = buf[off + 13]
        v.csum_off = off + 16
        v.result = TUPLE
    elif nh == UDP:
        if off + 8 > end:
            return v
        v.sport, v.dport = struct.unpack_from("!HH", buf, off)
        v.csum_off = off + 6
        v.result = TUPLE
    elif nh == ICMPV6:
        if off + 8 > end:
            return v
        t = buf[off]
        v.icmp_type = t
        v.csum_off = off + 2
        ident = buf[off + 4] << 8 | buf[off + 5]
        if t == ECHO_REQUEST:
            v.sport, v.result = ident, TUPLE
        elif t == ECHO_REPLY:
            v.dport, v.result = ident, TUPLE
        elif t in ERROR_TYPES:
            v.result = ICMP_ERROR if v.frag == FRAG_NONE else OTHER
        else:
            v.result = OTHER
    else:
        v.result = OTHER
    return v


# --- an ICMPv6 error's quote (mirror of bpf/lib/icmp6.h icmp6_quote_parse) ----

@dataclass
class Quote:
    ip_off: int
    src: bytes
    dst: bytes
    proto: int
    l4_off: int
    sport: int = 0
    dport: int = 0
    icmp_type: int = -1
    csum_off: int = 0  # 0: the quote cuts the quoted checksum


def dp_quote(buf: bytes, v: DpView, max_exthdrs: int = 6) -> Quote | None:
    end = v.end
    ip = v.l4_off + 8
    if ip + IP6_HLEN > len(buf) or buf[ip] >> 4 != 6:
        return None
    q = Quote(ip, buf[ip + 8:ip + 24], buf[ip + 24:ip + 40], buf[ip + 6], ip + IP6_HLEN)
    off, nh = q.l4_off, q.proto
    for _ in range(max_exthdrs):
        if nh not in (HOP, DEST, ROUTING, FRAGMENT):
            break
        if off + 8 > end or off + 4 > len(buf):
            return None
        if nh == FRAGMENT:
            if (buf[off + 2] << 8 | buf[off + 3]) & 0xFFF8:
                return None
            nxt = off + 8
        else:
            if nh == ROUTING and buf[off + 3]:
                return None
            nxt = off + (buf[off + 1] + 1) * 8
        nh = buf[off]
        off = nxt
    if nh in WALKABLE:
        return None
    q.proto, q.l4_off = nh, off
    if nh in (TCP, UDP):
        if off + 4 > end:
            return None
        q.sport, q.dport = struct.unpack_from("!HH", buf, off)
        if nh == TCP and off + 18 <= end:
            q.csum_off = off + 16
        if nh == UDP and off + 8 <= end:
            q.csum_off = off + 6
        return q
    if nh == ICMPV6:
        if off + 6 > end:
            return None
        q.icmp_type = buf[off]
        ident = buf[off + 4] << 8 | buf[off + 5]
        if q.icmp_type == ECHO_REQUEST:
            q.sport = ident
        elif q.icmp_type == ECHO_REPLY:
            q.dport = ident
        else:
            return None
        q.csum_off = off + 2
        return q
    return None


# --- a receiver's view, for checksums (RFC 8200) -----------------------------

@dataclass
class CsumView:
    proto: int
    l4_off: int
    end: int
    src: bytes
    final_dst: bytes
    later_fragment: bool = False
    rh_segments_left: bool = False


def rfc_checksum_view(buf: bytes, ip_off: int = ETH_HLEN, end: int | None = None,
                      limit: int = 64) -> CsumView | None:
    """The upper-layer header behind every extension header (no walk limit
    but `limit`), with the pseudo-header's final destination. None if cut."""
    if ip_off + IP6_HLEN > len(buf):
        return None
    if end is None:
        end = min(len(buf), ip_off + IP6_HLEN + (buf[ip_off + 4] << 8 | buf[ip_off + 5]))
    src, final = buf[ip_off + 8:ip_off + 24], buf[ip_off + 24:ip_off + 40]
    nh, off = buf[ip_off + 6], ip_off + IP6_HLEN
    later = rh_left = False
    for _ in range(limit):
        if nh not in WALKABLE:
            break
        if off + 8 > end:
            return None
        if nh == FRAGMENT:
            if (buf[off + 2] << 8 | buf[off + 3]) & 0xFFF8:
                later = True
            nh, off = buf[off], off + 8
            if later:
                break
            continue
        size = (buf[off + 1] + 2) * 4 if nh == AUTH else (buf[off + 1] + 1) * 8
        if nh == ROUTING and buf[off + 3] and off + size <= end:
            rtype, units = buf[off + 2], buf[off + 1]
            rh_left = True
            if rtype == 4 and units >= 2:
                final = buf[off + 8:off + 24]
            elif rtype in (0, 2) and units >= 2:
                n_addr = units // 2
                final = buf[off + 8 + 16 * (n_addr - 1):off + 8 + 16 * n_addr]
        nh, off = buf[off], off + size
    else:
        return None
    return CsumView(nh, off, end, src, final, later, rh_left)

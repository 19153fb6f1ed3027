"""The model: what a program may do to a packet, given the world (published
ports, networks, host addresses and sockets) and the conntrack halves that
existed before the packet.

For each packet the model lists the translations it allows (a known flow's
half, a new flow by the rules of the hook, an ICMPv6 error about a known
flow, a later fragment of a known flow) and checks the program's output is
the input with one of them applied, byte for byte, except:
  * checksum fields, checked on their own: the one's complement residual of
    every rewritten checksum (pseudo-header + L4, the field included) must be
    kept, i.e. a valid checksum stays valid and a wrong one stays wrong by
    the same amount; UDP checksum 0 stays 0 and a nonzero one never becomes 0;
  * MACs and the hop limit (-1), with a redirect verdict only.
Untouched output is always a translation the model allows; the invariants
then decide whether it may pass: no ULA source leaves public egress; nothing
from outside reaches a NAT'd or internal prefix; and under the strict rules:
no forged source passes public ingress, a container's port passes only its
container's sources, within its network (ICC by MAC, the gateway, internal
networks kept in), a bridge only its own network's sources.

The rules that differ between the datapath before issue 12 (`lenient`) and
issue 12's target, which main implements (`strict`, the default), are data
(RULES_*), selected by name: adjust them there.

Not modelled: the per-flow state the datapath keeps beyond the halves'
translations (TCP state, sequence windows, fast-path confirmation, route and
delivery caches). Drops (a RST outside the window) and redirects the model
allows either way; a SYN on a flow may start it anew (a restart, after a RST
or FINs earlier in the sweep), with a new port where one is claimed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from ipaddress import IPv6Address, IPv6Network

from . import packets as P
from . import world as W

UNSPEC, OK, SHOT, REDIRECT = -1, 0, 2, 7
CT_DNAT, CT_SNAT, CT_HAIRPIN = 1, 2, 3
ORIG, REPLY = 0, 1


@dataclass(frozen=True)
class Rules:
    name: str
    verdicts: frozenset = frozenset((UNSPEC, SHOT, REDIRECT))
    # Which halves (kind, dir) each hook translates; "redirect" halves only
    # together with a redirect verdict (the fast path at bridge/veth ingress).
    halves: dict = field(default_factory=lambda: {
        "public_ingress": {(CT_DNAT, ORIG): "any", (CT_SNAT, REPLY): "any"},
        "public_egress": {(CT_DNAT, REPLY): "any", (CT_SNAT, ORIG): "any"},
        "bridge_ingress": {(CT_HAIRPIN, ORIG): "any", (CT_HAIRPIN, REPLY): "any",
                           (CT_DNAT, REPLY): "redirect", (CT_SNAT, ORIG): "redirect"},
        "veth_ingress": {(CT_DNAT, REPLY): "redirect", (CT_SNAT, ORIG): "redirect"},
        "bridge_egress": {},  # never translates, never drops
    })
    # Hooks whose ICMPv6 errors about a flow may be translated.
    icmp_error_hooks: frozenset = frozenset(("public_ingress", "public_egress", "bridge_ingress"))
    # A container's (or hairpin client's) own port may be kept outside the SNAT range.
    keep_port_outside_range: bool = True
    # A new DNAT pair may replace a live half (insert-or-update).
    dnat_may_overwrite: bool = True
    # A new flow (any hook) needs a valid L4 checksum on its first packet, at these hooks
    # (UDP checksum 0 is no checksum: not valid over IPv6, RFC 8200 8.1); so does a
    # TCP SYN, FIN or RST that changes a known flow's state there.
    new_flow_valid_csum_hooks: frozenset = frozenset()
    # Public ingress must drop forged sources (FORGED: ours or impossible) unless
    # they hit a flow, and ULA sources that would start a DNAT flow or reach a
    # managed prefix.
    ingress_drops_bogon_sources: bool = False
    # Containers of an internal network may hairpin to published ports; containers
    # of a network without ICC may hairpin to a port published by their own network.
    hairpin_from_internal: bool = True
    hairpin_icc_bypass: bool = True
    # The veth program enforces its veths entry (source, ICC by MAC, isolation between
    # networks, internal networks) and drops packets of a veth without an entry;
    # bridge ingress drops a managed network's source arriving on another bridge.
    port_isolation: bool = False
    # An ICMPv6 error about a flow sent by someone inside who is neither the flow's
    # endpoint nor the network's gateway may be translated (issue 12 point 10).
    icmp_error_from_anyone: bool = True
    # Maps holding conntrack halves: the harness restores and sweeps those the datapath has (the
    # first is required; the second table is ct_unassured, ct_unreplied in early v5).
    ct_maps: tuple = ("conntrack", "ct_unassured", "ct_unreplied")


# The datapath before issue 12 (a4e70e9): the rules it was measured against.
RULES_LENIENT = Rules("lenient")
# Issue 12's target, which main implements (datapath v5): the default.
RULES_STRICT = replace(
    RULES_LENIENT, name="strict", keep_port_outside_range=False, dnat_may_overwrite=False,
    new_flow_valid_csum_hooks=frozenset(("public_ingress",)), ingress_drops_bogon_sources=True,
    hairpin_from_internal=False, hairpin_icc_bypass=False, port_isolation=True, icmp_error_from_anyone=False,
)
RULESETS = {r.name: r for r in (RULES_STRICT, RULES_LENIENT)}
DEFAULT_RULES = RULES_STRICT.name

# Violation categories the datapath on main is known to have: the short run
# (make test) reports them as an expected failure instead of failing, every
# other category fails it. Remove an entry when its fix lands.

# Sources no packet from outside carries (with the managed prefixes and host
# addresses): public ingress drops them under the strict rules. Not link-local
# (NDP, RAs) and not :: (DAD). ULA sources (fc00::/7) may be a site's own
# routers: they are bogons only for what would reach a container (a new DNAT
# flow, a managed prefix).
FORGED = [IPv6Network(n) for n in ("::1/128", "ff00::/8", "::ffff:0:0/96")]
ULA = IPv6Network("fc00::/7")


def is_forged_source(addr: bytes) -> bool:
    ip = IPv6Address(addr)
    return any(ip in n for n in FORGED) or addr in W.HOST_ADDRS or W.network_of(addr) is not None


def is_bogon_source(addr: bytes) -> bool:
    """A source that may not start a flow to a container from outside."""
    return is_forged_source(addr) or IPv6Address(addr) in ULA


def is_link_local(addr: bytes) -> bool:
    return addr[0] == 0xFE and addr[1] & 0xC0 == 0x80


def veth_violation(name: str, inp: bytes, v: P.DpView) -> tuple[str, str] | None:
    """What a container's port must drop (issue 12 points 2-4), for an IPv6
    packet that passed the veth program on port `name`: the category, or None."""
    entry = W.veth_entry(name)
    if entry is None:
        return ("veth_unknown_passed", f"a packet of veth {name}, which has no veths entry, passed")
    src, dst = IPv6Address(v.src), IPv6Address(v.dst)
    if not (is_link_local(v.src) or src == IPv6Address(0) or src in entry.addrs):
        return ("veth_spoofed_source", f"source {src} passed the port of {entry.addrs[0]}")
    if not entry.icc and not inp[0] & 1 and inp[0:6] != entry.bridge_mac:
        return ("icc_bypass", f"a unicast frame to {inp[0:6].hex(':')} (not the bridge) passed, icc=false")
    if is_link_local(v.dst) or v.dst[0] == 0xFF:
        return None
    net = W.network_of(v.dst)
    if net is not None:
        if net.entry.gateway is not None and dst == net.entry.gateway:
            return None
        if net.entry.network_id != entry.network_id:
            return ("isolation_bypass", f"network {entry.network_id} reached {dst} of network {net.entry.network_id}")
        if not entry.icc:
            return ("icc_bypass", f"container to container {dst} passed, icc=false")
        return None
    if entry.internal and v.dst not in W.HOST_ADDRS:
        return ("internal_escape", f"an internal network's packet to {dst} passed")
    return None


@dataclass(frozen=True)
class Half:
    saddr: bytes
    daddr: bytes
    sport: int
    dport: int
    kind: int
    dir: int


def ct_key(src: bytes, dst: bytes, sport: int, dport: int, proto: int) -> bytes:
    """struct ct_key: ports in network order, as the datapath stores them."""
    return src + dst + struct.pack("!HHB3x", sport, dport, proto)


def decode_half(value: bytes) -> Half:
    sport, dport, kind, dir_ = struct.unpack_from("!HHBB", value, 32)
    return Half(value[:16], value[16:32], sport, dport, kind, dir_)


class FlowState:
    """The conntrack halves before fuzzing: key bytes -> Half (and raw value,
    and the table that holds it: an index into Rules.ct_maps)."""

    def __init__(self, items: list[tuple[bytes, bytes]], tables: dict[bytes, int] | None = None) -> None:
        self.raw = dict(items)
        self.table = tables or {k: 0 for k in self.raw}
        self.halves = {k: decode_half(v) for k, v in items}
        self.by_addrs: dict[tuple[bytes, bytes, int], list[Half]] = {}
        for k, h in self.halves.items():
            self.by_addrs.setdefault((k[:16], k[16:32], k[36]), []).append(h)


@dataclass
class Verdict:
    outcome: str  # untouched | dropped | <label of the translation>
    violations: list[tuple[str, str]]  # (category, detail)
    created: list[bytes]  # conntrack keys a new flow wrote (for the harness to undo)
    csum_checked: int = 0


@dataclass
class Candidate:
    label: str
    fixed: dict  # offset -> bytes the output must hold there
    free: dict  # offset -> (size, predicate(value) -> str | None) : a field the program chooses
    csum_fields: list  # offsets of checksum fields (2 bytes) excluded from the byte comparison
    check: object = None  # callable(inp, out) -> list of violations (checksums)
    creates: object = None  # callable(out) -> conntrack keys written
    needs_redirect: bool = False
    pre_violations: list = field(default_factory=list)


def _port_fields(v: P.DpView, sport: int, dport: int) -> dict:
    if v.proto == P.ICMPV6:
        return {v.l4_off + 4: struct.pack("!H", sport if v.icmp_type == P.ECHO_REQUEST else dport)}
    return {v.l4_off: struct.pack("!H", sport), v.l4_off + 2: struct.pack("!H", dport)}


def _residual_at(buf: bytes, src: bytes, dst: bytes, proto: int, length: int, l4_off: int, end: int) -> int:
    return P.residual(src, dst, proto, length, buf[l4_off:end])


def l4_checksum_check(inp: bytes, out: bytes, v: P.DpView) -> list[tuple[str, str]]:
    """The translated packet's own L4 checksum (pseudo-header of a receiver)."""
    if not v.csum_off or v.csum_off + 2 > v.end:
        return []
    cin, cout = P.rfc_checksum_view(inp), P.rfc_checksum_view(out)
    if cin is None or cout is None or cin.l4_off != v.l4_off:
        return []
    length = v.end - v.l4_off
    field_in = inp[v.csum_off:v.csum_off + 2]
    field_out = out[v.csum_off:v.csum_off + 2]
    if v.proto == P.UDP and field_in == b"\0\0":
        return [] if field_out == b"\0\0" else [("csum_udp_zero", "UDP checksum 0 came out nonzero")]
    if v.proto == P.UDP and field_out == b"\0\0":
        return [("csum_udp_became_zero", "a UDP checksum became 0 (no checksum)")]
    rin = _residual_at(inp, cin.src, cin.final_dst, v.proto, length, v.l4_off, v.end)
    rout = _residual_at(out, cout.src, cout.final_dst, v.proto, length, v.l4_off, v.end)
    if rin != rout:
        cat = "csum_broken" if rin == 0xFFFF else "csum_error_changed"
        if cin.rh_segments_left:
            cat += "_rh_segments_left"
        return [(cat, f"L4 residual {rin:#06x} -> {rout:#06x}")]
    return []


class Model:
    def __init__(self, rules: Rules, flows: FlowState) -> None:
        self.rules = rules
        self.flows = flows

    # -- candidates ---------------------------------------------------------

    def _half_ok(self, hook: str, h: Half) -> str | None:
        return self.rules.halves[hook].get((h.kind, h.dir))

    def _flow_candidate(self, hook: str, v: P.DpView, h: Half, label: str) -> Candidate:
        fixed = {P.OFF_SRC: h.saddr, P.OFF_DST: h.daddr}
        fixed.update(_port_fields(v, h.sport, h.dport))
        return Candidate(label, fixed, {}, [v.csum_off] if v.csum_off else [],
                         check=lambda i, o: l4_checksum_check(i, o, v),
                         needs_redirect=self._half_ok(hook, h) == "redirect")

    @staticmethod
    def _bad_csum(v: P.DpView, inp: bytes) -> str | None:
        """Why the packet's own L4 checksum is wrong, or None (not checkable:
        fragments, whose checksum covers the whole datagram)."""
        cv = P.rfc_checksum_view(inp)
        if cv is None or not v.csum_off or v.frag != P.FRAG_NONE:
            return None
        if v.proto == P.UDP and inp[v.csum_off:v.csum_off + 2] == b"\0\0":
            return "UDP checksum 0"
        r = P.residual(cv.src, cv.final_dst, v.proto, v.end - v.l4_off, inp[v.l4_off:v.end])
        return None if r == 0xFFFF else f"a wrong checksum ({r:#06x})"

    def _port_rule(self, proto: int, nat_addr: bytes, kept: int, out_tuple_reply_key, own=frozenset()):
        rules = self.rules

        def pred(value: int, out: bytes) -> str | None:
            in_range = W.SNAT_MIN <= value <= W.SNAT_MAX
            if not in_range and not (value == kept and rules.keep_port_outside_range):
                return f"port {value} outside the SNAT range (container's {kept})"
            if proto in (P.TCP, P.UDP):
                if (proto, value) in W.HOST_SOCKETS:
                    return f"port {value} is held by a host socket"
                if W.dnat_lookup(proto, nat_addr, value):
                    return f"port {value} is a published port"
            rk = out_tuple_reply_key(out)
            if rk in self.flows.halves and rk not in own:
                return "the new reply half overwrote a live half"
            return None
        return pred

    def _new_flow(self, hook: str, v: P.DpView, inp: bytes, restart: Half | None = None
                  ) -> Candidate | None:
        """A new flow's first packet; `restart`: the live half of its tuple,
        whose pair a SYN on a closed TCP flow replaces (not a take-over)."""
        rules = self.rules
        syn_only = v.proto == P.TCP and (v.tcp_flags & (P.TH_SYN | P.TH_ACK | P.TH_RST)) == P.TH_SYN
        pre: list = []

        def reply_key(out: bytes) -> bytes:
            o = P.dp_parse(out)
            return ct_key(o.dst, o.src, o.dport, o.sport, v.proto)
        in_key = ct_key(v.src, v.dst, v.sport, v.dport, v.proto)
        own = set()
        if restart is not None:
            own = {in_key, ct_key(restart.daddr, restart.saddr, restart.dport, restart.sport, v.proto)}

        if hook == "public_ingress":
            if not (syn_only or v.proto == P.UDP) or v.dst not in W.HOST_ADDRS:
                return None
            target = W.dnat_lookup(v.proto, v.dst, v.dport)
            if not target:
                return None
            taddr, tport, _ = target
            if rules.ingress_drops_bogon_sources and is_bogon_source(v.src):
                pre.append(("new_flow_bogon_source", "a new DNAT flow from a bogon source"))
            rk = ct_key(taddr, v.src, tport, v.sport, v.proto)
            if not rules.dnat_may_overwrite and ({rk, in_key} - own) & self.flows.halves.keys():
                pre.append(("new_flow_overwrote_live_half", "a new DNAT pair replaced a live half"))
            fixed = {P.OFF_DST: taddr, P.OFF_SRC: v.src}
            fixed.update(_port_fields(v, v.sport, tport))
            label, free = "new_dnat", {}
        elif hook == "public_egress":
            net = W.network_of(v.src)
            if not net or not net.entry.masquerade or net.entry.internal:
                return None
            if not (syn_only or v.proto == P.UDP or (v.proto == P.ICMPV6 and v.icmp_type == P.ECHO_REQUEST)):
                return None
            snat = net.entry.snat_addr.packed if net.entry.snat_addr else W.PUBLIC_IFACES[W.PUB_IF]
            fixed = {P.OFF_SRC: snat, P.OFF_DST: v.dst}
            pred = self._port_rule(v.proto, snat, v.sport, reply_key, own)
            if v.proto == P.ICMPV6:
                free = {v.l4_off + 4: pred}
            else:
                free = {v.l4_off: pred}
                fixed[v.l4_off + 2] = struct.pack("!H", v.dport)
            label = "new_snat"
        elif hook == "bridge_ingress":
            if not (syn_only or v.proto == P.UDP) or v.dst not in W.HOST_ADDRS:
                return None
            net = W.network_of(v.src)
            if not net:
                return None
            target = W.dnat_lookup(v.proto, v.dst, v.dport)
            if not target:
                return None
            if net.entry.internal and not rules.hairpin_from_internal:
                pre.append(("hairpin_from_internal", "an internal network's container reached a published port"))
            taddr, tport, _ = target
            tnet = W.network_of(taddr)
            if (not net.entry.icc and tnet is not None and tnet.entry.network_id == net.entry.network_id
                    and not rules.hairpin_icc_bypass):
                pre.append(("hairpin_icc_bypass", "a container of an icc=false network reached a sibling "
                                                  "through a published port"))
            fixed = {P.OFF_SRC: v.dst, P.OFF_DST: taddr, v.l4_off + 2: struct.pack("!H", tport)}
            free = {v.l4_off: self._port_rule(v.proto, v.dst, v.sport, reply_key, own)}
            label = "new_hairpin"
        else:
            return None
        if hook in rules.new_flow_valid_csum_hooks:
            bad = self._bad_csum(v, inp)
            if bad:
                pre.append(("new_flow_bad_csum", f"a new flow from a packet with {bad}"))

        def creates(out: bytes) -> list[bytes]:
            return [in_key, reply_key(out)]
        return Candidate(label, fixed, free, [v.csum_off] if v.csum_off else [],
                         check=lambda i, o: l4_checksum_check(i, o, v), creates=creates, pre_violations=pre)

    def _icmp_error(self, hook: str, v: P.DpView, inp: bytes) -> Candidate | None:
        if hook not in self.rules.icmp_error_hooks:
            return None
        q = P.dp_quote(inp, v)
        if q is None or v.dst != q.src:
            return None
        h = self.flows.halves.get(ct_key(q.dst, q.src, q.dport, q.sport, q.proto))
        if h is None or not self._half_ok(hook, h) or self._half_ok(hook, h) == "redirect":
            return None
        pre = []
        if not self.rules.icmp_error_from_anyone and hook != "public_ingress" and v.src != q.dst:
            net = W.network_of(v.src)
            if net is not None and not (net.entry.gateway and v.src == net.entry.gateway.packed):
                pre.append(("icmp_error_foreign_translated", f"an error about {IPv6Address(q.dst)}'s flow "
                                                              f"from {IPv6Address(v.src)} was translated"))
        fixed = {q.ip_off + 8: h.daddr, q.ip_off + 24: h.saddr, P.OFF_DST: h.daddr,
                 P.OFF_SRC: h.saddr if v.src == q.dst else v.src}
        if q.proto == P.ICMPV6:
            fixed[q.l4_off + 4] = struct.pack("!H", h.dport if q.icmp_type == P.ECHO_REQUEST else h.sport)
        else:
            fixed[q.l4_off] = struct.pack("!HH", h.dport, h.sport)
        csums = [v.csum_off] + ([q.csum_off] if q.csum_off else [])

        def check(i: bytes, o: bytes) -> list:
            bad = []
            length = v.end - v.l4_off
            rin = P.residual(i[P.OFF_SRC:P.OFF_SRC + 16], i[P.OFF_DST:P.OFF_DST + 16], P.ICMPV6, length,
                             i[v.l4_off:v.end])
            rout = P.residual(o[P.OFF_SRC:P.OFF_SRC + 16], o[P.OFF_DST:P.OFF_DST + 16], P.ICMPV6, length,
                              o[v.l4_off:v.end])
            if rin != rout:
                bad.append(("csum_broken" if rin == 0xFFFF else "csum_error_changed",
                            f"ICMPv6 error outer residual {rin:#06x} -> {rout:#06x}"))
            if q.csum_off:
                qf_in, qf_out = i[q.csum_off:q.csum_off + 2], o[q.csum_off:q.csum_off + 2]
                if q.proto == P.UDP and qf_in == b"\0\0":
                    if qf_out != b"\0\0":
                        bad.append(("csum_udp_zero", "quoted UDP checksum 0 came out nonzero"))
                    return bad
                if q.proto == P.UDP and qf_out == b"\0\0":
                    bad.append(("csum_udp_became_zero", "quoted UDP checksum became 0"))
                qlen = i[q.ip_off + 4] << 8 | i[q.ip_off + 5]
                qin = P.residual(i[q.ip_off + 8:q.ip_off + 24], i[q.ip_off + 24:q.ip_off + 40], q.proto, qlen,
                                 i[q.l4_off:v.end])
                qout = P.residual(o[q.ip_off + 8:q.ip_off + 24], o[q.ip_off + 24:q.ip_off + 40], q.proto, qlen,
                                  o[q.l4_off:v.end])
                if qin != qout:
                    bad.append(("csum_quote_broken", f"quoted L4 residual {qin:#06x} -> {qout:#06x}"))
            return bad
        return Candidate("icmp_error", fixed, {}, csums, check=check, pre_violations=pre)

    def _later_fragment(self, hook: str, v: P.DpView) -> list[Candidate]:
        out = []
        for h in self.flows.by_addrs.get((v.src, v.dst, v.proto), []):
            ok = self._half_ok(hook, h)
            if ok:
                out.append(Candidate("fragment", {P.OFF_SRC: h.saddr, P.OFF_DST: h.daddr}, {}, [],
                                     needs_redirect=ok == "redirect"))
        return out

    def candidates(self, hook: str, v: P.DpView, inp: bytes) -> list[Candidate]:
        if v.result == P.TUPLE:
            h = self.flows.halves.get(ct_key(v.src, v.dst, v.sport, v.dport, v.proto))
            if h is not None and self._half_ok(hook, h):
                c = self._flow_candidate(hook, v, h, "flow")
                tcp = v.tcp_flags if v.proto == P.TCP else 0
                if (hook in self.rules.new_flow_valid_csum_hooks and tcp & (P.TH_SYN | P.TH_FIN | P.TH_RST)
                        and (bad := self._bad_csum(v, inp))):
                    c.pre_violations.append(("flow_changed_by_bad_csum",
                                             f"a TCP SYN/FIN/RST with {bad} changed a flow"))
                out = [c]
                # A pure SYN in a flow's original direction on a closed flow (a RST
                # or FINs earlier in this sweep) starts the flow anew.
                if h.dir == ORIG and v.proto == P.TCP and tcp & (P.TH_SYN | P.TH_ACK | P.TH_RST) == P.TH_SYN:
                    n = self._new_flow(hook, v, inp, restart=h)
                    if n is not None:
                        n.label = "restarted"
                        out.append(n)
                return out
            c = self._new_flow(hook, v, inp)
            return [c] if c else []
        if v.result == P.ICMP_ERROR:
            c = self._icmp_error(hook, v, inp)
            return [c] if c else []
        if v.result == P.FRAGMENT_LATER:
            return self._later_fragment(hook, v)
        return []

    # -- invariants ------------------------------------------------------------

    def must_keep(self, prog: str, inp: bytes) -> list[bytes]:
        """Keys that must still be there after the packet: a live flow's pair
        hit by a TCP SYN, FIN or RST with a wrong checksum at a hook that
        checks them (it may neither change nor end the flow)."""
        hook = W.HOOK_OF[prog]
        if hook not in self.rules.new_flow_valid_csum_hooks:
            return []
        v = P.dp_parse(inp)
        if v.result != P.TUPLE or v.proto != P.TCP or not v.tcp_flags & (P.TH_SYN | P.TH_FIN | P.TH_RST):
            return []
        key = ct_key(v.src, v.dst, v.sport, v.dport, v.proto)
        h = self.flows.halves.get(key)
        if h is None or not self._half_ok(hook, h) or not self._bad_csum(v, inp):
            return []
        return [key, ct_key(h.daddr, h.saddr, h.dport, h.sport, v.proto)]

    def _flow_hit(self, hook: str, v: P.DpView) -> bool:
        h = self.flows.halves.get(ct_key(v.src, v.dst, v.sport, v.dport, v.proto)) if v.result == P.TUPLE else None
        return h is not None and self._half_ok(hook, h) is not None

    def invariants(self, hook: str, iface: str, v: P.DpView, inp: bytes, out: bytes, verdict: int
                   ) -> list[tuple[str, str]]:
        bad = []
        if verdict == SHOT:
            return bad
        rules = self.rules
        if hook == "public_egress" and P.is_ipv6(out):
            net = W.network_of(out[P.OFF_SRC:P.OFF_SRC + 16])
            if net and (net.entry.masquerade or net.entry.internal):
                cat = "ula_leak_icmp_error" if v.result == P.ICMP_ERROR else "ula_leak"
                bad.append((cat, f"source {IPv6Address(out[P.OFF_SRC:P.OFF_SRC + 16])} left public egress"))
        if hook == "public_ingress" and P.is_ipv6(inp):
            net = W.network_of(v.dst)
            # Link-local and unspecified sources are never forwarded by the stack (ip6_forward:
            # RFC 4291 2.5.6), nor translated: the datapath leaves them (NDP, MLD) to it.
            crosses = not (is_link_local(v.src) or v.src == bytes(16))
            if net and (net.entry.masquerade or net.entry.internal) and crosses:
                bad.append(("direct_ula_delivered", f"outside packet to {IPv6Address(v.dst)} not dropped"))
            if net and net.entry.mode == "routed" and crosses and not self._flow_hit(hook, v):
                # Issue 13: from outside only a published container port (or ICMPv6) starts a flow. A later
                # fragment passes with its flow's first one (the fragments map, not modelled here).
                published = v.result == P.TUPLE and (v.proto, v.dst, v.dport) in W.PUBLISHED
                if v.proto != P.ICMPV6 and not published and v.result != P.FRAGMENT_LATER:
                    bad.append(("routed_unpublished_delivered", f"outside packet to {IPv6Address(v.dst)} "
                                                                f"port {v.dport} not dropped"))
            if rules.ingress_drops_bogon_sources and not self._flow_hit(hook, v):
                if is_forged_source(v.src):
                    bad.append(("bogon_source_delivered", f"source {IPv6Address(v.src)} from outside not dropped"))
                elif net and IPv6Address(v.src) in ULA:
                    bad.append(("bogon_source_delivered", f"ULA source {IPv6Address(v.src)} to a managed prefix"))
        if hook == "veth_ingress" and P.is_ipv6(inp):
            if rules.port_isolation:
                viol = veth_violation(iface, inp, v)
                if viol:
                    bad.append(viol)
            else:
                src, dst = W.network_of(v.src), W.network_of(v.dst)
                ndp = v.proto == P.ICMPV6 and 133 <= v.icmp_type <= 137
                if (src and dst and src.entry.network_id == dst.entry.network_id and not src.entry.icc
                        and not (src.entry.gateway and v.dst == src.entry.gateway.packed) and not ndp):
                    bad.append(("icc_bypass", "container to container on an icc=false network passed"))
        if hook == "bridge_ingress" and P.is_ipv6(inp) and rules.port_isolation:
            net = W.network_of(v.src)
            if net is not None and W.bridge_name(net) != iface:
                bad.append(("bridge_spoofed_source", f"source {IPv6Address(v.src)} of {W.bridge_name(net)} "
                                                     f"passed {iface}"))
        return bad

    # -- the check ---------------------------------------------------------------

    def judge(self, prog: str, iface: str, inp: bytes, out: bytes, verdict: int) -> Verdict:
        hook = W.HOOK_OF[prog]
        if verdict not in self.rules.verdicts:
            return Verdict("bad_verdict", [("bad_verdict", f"verdict {verdict}")], [])
        if hook == "bridge_egress" and (verdict != UNSPEC or out != inp):
            return Verdict("bad_verdict", [("bridge_egress_acted", f"verdict {verdict}, "
                                                                   f"{'changed' if out != inp else 'untouched'}")], [])
        v = P.dp_parse(inp)
        if verdict == SHOT:
            return Verdict("dropped", [], [])
        inv = self.invariants(hook, iface, v, inp, out, verdict)
        if len(out) != len(inp):
            return Verdict("resized", [("length_changed", f"{len(inp)} -> {len(out)}")] + inv, [])
        if out == inp:
            return Verdict("untouched", inv, [])
        # Redirect: the MACs and a hop limit one lower are the fast path's.
        norm = bytearray(out)
        if verdict == REDIRECT:
            if out[P.OFF_HLIM] != (inp[P.OFF_HLIM] - 1) & 0xFF:
                inv.append(("redirect_hop_limit", f"hop limit {inp[P.OFF_HLIM]} -> {out[P.OFF_HLIM]}"))
            norm[0:12] = inp[0:12]
            norm[P.OFF_HLIM] = inp[P.OFF_HLIM]
            if bytes(norm) == inp:
                return Verdict("redirect_untranslated", inv, [])
        cands = self.candidates(hook, v, inp)
        reasons = []
        for c in cands:
            if c.needs_redirect and verdict != REDIRECT:
                reasons.append(f"{c.label}: only with a redirect")
                continue
            pred = bytearray(inp)
            for off, b in c.fixed.items():
                pred[off:off + len(b)] = b
            free_bad = []
            for off, rule in c.free.items():
                pred[off:off + 2] = norm[off:off + 2]
                why = rule(int.from_bytes(norm[off:off + 2], "big"), bytes(norm))
                if why:
                    free_bad.append(why)
            got = bytearray(norm)
            for off in c.csum_fields:
                got[off:off + 2] = pred[off:off + 2] = inp[off:off + 2]
            if got != pred:
                diff = [i for i in range(len(got)) if got[i] != pred[i]]
                reasons.append(f"{c.label}: bytes differ at {diff[:8]}")
                continue
            viol = list(c.pre_violations) + [("illegal_port", w) for w in free_bad]
            viol += c.check(inp, bytes(norm)) if c.check else []
            created = c.creates(bytes(norm)) if c.creates else []
            return Verdict(c.label, viol + inv, created, 1 if c.check else 0)
        detail = "; ".join(reasons) if reasons else f"no translation allowed for this {v.result} packet"
        cat = "illegal_translation"
        if v.result == P.TUPLE:  # a half of another hook's flows explains it?
            h = self.flows.halves.get(ct_key(v.src, v.dst, v.sport, v.dport, v.proto))
            if h is not None and not self._half_ok(hook, h):
                c = self._flow_candidate(hook, v, h, "other")
                pred = bytearray(inp)
                for off, b in c.fixed.items():
                    pred[off:off + len(b)] = b
                got = bytearray(norm)
                for off in c.csum_fields:
                    got[off:off + 2] = pred[off:off + 2] = inp[off:off + 2]
                if got == pred:
                    cat = "translated_by_other_hooks_half"
                    detail = f"translated at {hook} by a (kind {h.kind}, dir {h.dir}) half"
        return Verdict("illegal", [(cat, detail)] + inv, [])

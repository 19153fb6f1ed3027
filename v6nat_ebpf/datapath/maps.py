"""Typed access to the datapath's maps: values the control plane writes
(DnatKey, DnatTarget, NetworkEntry, DatapathConfig) and what it reads back
(Flow, counters, mapping stats), converted to and from the layouts of
bpf/v6nat.h (mirrored in layout.py). put/delete are idempotent; *_many use
the kernel's batch operations where the map type has them.

Imports the standard library, constants, model, errors and datapath.{bpfsys,flowlist,layout}; never bcc.
"""

from __future__ import annotations

import ctypes as ct
import errno
import logging
import secrets
import struct
import time
from dataclasses import dataclass
from itertools import chain
from ipaddress import IPv6Address, IPv6Network
from typing import Generic, Iterable, Iterator, Mapping, TypeVar

from v6nat_ebpf.constants import CONNTRACK_MAX, CONNTRACK_MAX_FLOOR, SNAT_PORT_FLOOR, SNAT_PORT_MAX, SNAT_PORT_MIN
from v6nat_ebpf.datapath import flowlist, layout
from v6nat_ebpf.datapath.bpfsys import BPF_ANY, BpfMap
from v6nat_ebpf.datapath.flowlist import FlowRecord
from v6nat_ebpf.errors import V6natError
from v6nat_ebpf.model import GATEWAY_ISOLATED, GATEWAY_NAT, GATEWAY_ROUTED, GATEWAY_UNPROTECTED

log = logging.getLogger(__name__)

_NS = 1_000_000_000


def _addr_bytes(addr: IPv6Address | None) -> layout.Addr:
    return layout.Addr.from_buffer_copy(addr.packed if addr else bytes(16))


def _addr(raw: ct.Array) -> IPv6Address:
    return IPv6Address(bytes(raw))


def _be16(port: int) -> int:
    return int.from_bytes(port.to_bytes(2, "big"), "little")


def _port(be: int) -> int:
    return int.from_bytes(be.to_bytes(2, "little"), "big")


@dataclass(frozen=True)
class DatapathConfig:
    """Runtime settings (config map) and map capacities (compiled in)."""

    snat_port_min: int = SNAT_PORT_MIN
    snat_port_max: int = SNAT_PORT_MAX
    tcp_established_s: int = 7440
    tcp_transitory_s: int = 240
    udp_s: int = 300
    icmp_s: int = 60
    conntrack_max: int = CONNTRACK_MAX  # halves (two per flow)
    dnat_max: int = 65536
    fast_path: bool = True  # redirect established flows past the host's forwarding path

    def __post_init__(self) -> None:
        if not SNAT_PORT_FLOOR <= self.snat_port_min <= self.snat_port_max <= 65535:
            raise V6natError(f"bad SNAT port range {self.snat_port_min}-{self.snat_port_max}")
        for name in ("tcp_established_s", "tcp_transitory_s", "udp_s", "icmp_s"):
            if getattr(self, name) <= 0:
                raise V6natError(f"timeout {name} must be positive, not {getattr(self, name)}")
        if self.conntrack_max < CONNTRACK_MAX_FLOOR or self.dnat_max < 1:
            raise V6natError(f"map capacities too small (conntrack_max >= {CONNTRACK_MAX_FLOOR}, dnat_max >= 1)")

    def to_raw(self) -> layout.Config:
        return layout.Config(
            tcp_established_ns=self.tcp_established_s * _NS,
            tcp_transitory_ns=self.tcp_transitory_s * _NS,
            udp_ns=self.udp_s * _NS,
            icmp_ns=self.icmp_s * _NS,
            snat_port_min=self.snat_port_min,
            snat_port_max=self.snat_port_max,
            flags=layout.header().const("V6NAT_CFG_FAST_PATH") if self.fast_path else 0,
        )


@dataclass(frozen=True, slots=True)
class DnatKey:
    """A published port: proto, host address (None = any host address), port."""

    proto: int
    host_addr: IPv6Address | None
    host_port: int


@dataclass(frozen=True, slots=True)
class DnatTarget:
    addr: IPv6Address
    port: int
    mapping_id: int  # 0 = not counted in mapping_stats
    policy_id: int = 0  # the mapping's source rules in the policy table; 0 = none
    default_deny: bool = False  # a source no rule of policy_id matches is refused


@dataclass(frozen=True, order=True)
class PolicyKey:
    """One source rule of a policy (bpf/v6nat.h policy_key)."""

    policy_id: int
    prefix: IPv6Network


@dataclass(frozen=True, order=True)
class BanKey:
    """A banned source prefix; port 0 (and proto 0): every port, else one published port."""

    prefix: IPv6Network
    port: int = 0
    proto: int = 0


@dataclass(frozen=True)
class Ban:
    expires_ns: int  # CLOCK_BOOTTIME; 0 = never
    created_s: int  # Unix time

    def active(self, now_boot_ns: int) -> bool:
        return not self.expires_ns or now_boot_ns < self.expires_ns


@dataclass(frozen=True)
class NetworkEntry:
    network_id: int
    bridge_ifindex: int
    masquerade: bool
    icc: bool
    internal: bool
    snat_addr: IPv6Address | None  # None = the public interface's address
    gateway: IPv6Address | None = None  # the bridge's address: reachable with icc=False
    mode: str = GATEWAY_NAT  # Docker's gateway mode (model.GATEWAY_MODES)
    udp_eif: bool = False  # UDP filtering endpoint-independent (full cone); else address-and-port-dependent


@dataclass(frozen=True)
class VethEntry:
    """What the host side of a container's veth may carry (bpf/v6nat.h veth_info)."""

    network_id: int
    bridge_ifindex: int
    masquerade: bool
    icc: bool
    internal: bool
    addrs: tuple[IPv6Address, ...]  # the container's addresses on this network
    bridge_mac: bytes  # 6 bytes
    mode: str = GATEWAY_NAT  # its network's gateway mode (model.GATEWAY_MODES)


@dataclass(frozen=True)
class FlowTuple:
    saddr: IPv6Address
    daddr: IPv6Address
    sport: int  # ICMPv6 echo: the identifier (request) or 0
    dport: int

    def __str__(self) -> str:
        return f"[{self.saddr}]:{self.sport} -> [{self.daddr}]:{self.dport}"


@dataclass(frozen=True)
class Flow:
    """A conntrack pair as one record: the original direction's tuple and what
    it is translated to, with both halves' counters added up."""

    proto: int
    kind: str  # "dnat" | "snat" | "hairpin"
    state: str  # TCP: syn_sent, established, closing, closed; else "none"
    original: FlowTuple
    translated: FlowTuple
    packets: int
    bytes: int
    age_s: float
    idle_s: float
    mapping_id: int


def flow_of(record: FlowRecord) -> Flow:
    """The Flow of a flow record (an IPv6Address per address)."""
    (proto, kind, state, saddr, daddr, sport, dport, new_saddr, new_daddr, new_sport, new_dport,
     packets, nbytes, age_s, idle_s, mapping_id) = record
    return Flow(proto, kind, state, FlowTuple(IPv6Address(saddr), IPv6Address(daddr), sport, dport),
                FlowTuple(IPv6Address(new_saddr), IPv6Address(new_daddr), new_sport, new_dport),
                packets, nbytes, age_s, idle_s, mapping_id)


@dataclass(frozen=True)
class ConntrackSummary:
    """Counts over the conntrack map, read in one pass without a Flow per pair
    (for metrics and `v6nat status` at full size)."""

    entries: int  # halves in the map (what map_fill() reports for conntrack)
    flows: Mapping[tuple[int, str, str], int]  # (proto, kind, state) -> pairs, counted as flows() does
    snat_ports: Mapping[int, int]  # proto -> distinct (public address, port) held by SNAT flows


@dataclass(frozen=True)
class SnatAllocations:
    """Successful SNAT (and hairpin) port claims by the number of candidate
    ports tried; a claim that failed every try is the ports_exhausted drop."""

    buckets: tuple[tuple[int, int], ...]  # (most tries, claims in this bucket), ascending, not cumulative
    tries: int  # tries of every counted claim added up


K = TypeVar("K")
V = TypeVar("V")


class _Table(Generic[K, V]):
    """A map of typed keys and values; subclasses convert to the raw layouts."""

    key_type: type[ct.Structure] | type[ct._SimpleCData]
    value_type: type[ct.Structure]
    batch = True

    def __init__(self, raw: BpfMap) -> None:
        self.raw = raw

    def _key(self, key: K) -> ct.Structure | ct._SimpleCData:
        raise NotImplementedError

    def _value(self, value: V) -> ct.Structure:
        raise NotImplementedError

    def _unkey(self, raw: bytes) -> K:
        raise NotImplementedError

    def _unvalue(self, raw: bytes) -> V:
        raise NotImplementedError

    def put(self, key: K, value: V) -> None:
        try:
            self.raw.update(self._key(key), self._value(value), BPF_ANY)
        except OSError as exc:
            raise V6natError(f"cannot write {key}: {exc.strerror} (map full?)") from exc

    def get(self, key: K) -> V | None:
        found = self.raw.lookup(self._key(key))
        return None if found is None else self._unvalue(found)

    def delete(self, key: K) -> bool:
        """Remove `key`; False if it was not there."""
        return self.raw.delete(self._key(key))

    def items(self) -> list[tuple[K, V]]:
        return [(self._unkey(kb), self._unvalue(vb)) for kb, vb in self.raw.items()]

    def __len__(self) -> int:
        return self.raw.count()

    def put_many(self, pairs: Iterable[tuple[K, V]]) -> None:
        pairs = list(pairs)
        if not pairs:
            return
        if self.batch:
            keys = b"".join(bytes(self._key(k)) for k, _ in pairs)
            values = b"".join(bytes(self._value(v)) for _, v in pairs)
            try:
                if self.raw.update_batch(keys, values, len(pairs)):
                    return
            except OSError as exc:
                raise V6natError(f"cannot write {len(pairs)} entries: {exc.strerror} (map full?)") from exc
        for key, value in pairs:
            self.put(key, value)

    def delete_many(self, keys: Iterable[K]) -> None:
        keys = list(keys)
        if not keys:
            return
        if self.batch:
            try:
                if self.raw.delete_batch(b"".join(bytes(self._key(k)) for k in keys), len(keys)):
                    return
            except OSError as exc:
                if exc.errno != errno.ENOENT:  # some were absent: finish one by one
                    raise
        for key in keys:
            self.delete(key)


class DnatTable(_Table[DnatKey, DnatTarget]):
    """Published ports. Deleting one also deletes its entries in the per-mapping
    stats maps (mapping_stats, hostlocal_stats; ids are 1:1 with keys), so they
    do not keep every port ever published and a mapping published again starts
    from zero. Adopting the maps after a restart deletes nothing: counters
    survive the daemon."""

    key_type = layout.RawDnatKey
    value_type = layout.RawDnatTarget

    def __init__(self, raw: BpfMap, stats: list[BpfMap]) -> None:
        super().__init__(raw)
        self.stats = stats

    def delete(self, key: DnatKey) -> bool:
        target = self.get(key)
        removed = super().delete(key)
        if target is not None:
            self._forget_stats([target.mapping_id])
        return removed

    def delete_many(self, keys: Iterable[DnatKey]) -> None:
        keys = list(keys)
        targets = [self.get(k) for k in keys]
        super().delete_many(keys)
        self._forget_stats([t.mapping_id for t in targets if t is not None])

    def _forget_stats(self, mapping_ids: list[int]) -> None:
        for mapping_id in mapping_ids:
            if mapping_id:
                for stats in self.stats:
                    stats.delete(layout.u32(mapping_id))

    def _key(self, key: DnatKey) -> layout.RawDnatKey:
        return layout.RawDnatKey(_addr_bytes(key.host_addr), _be16(key.host_port), key.proto, 0)

    def _value(self, value: DnatTarget) -> layout.RawDnatTarget:
        flags = layout.header().const("V6NAT_POLICY_DEFAULT_DENY") if value.default_deny else 0
        return layout.RawDnatTarget(_addr_bytes(value.addr), _be16(value.port), flags, value.mapping_id,
                                    value.policy_id)

    def _unkey(self, raw: bytes) -> DnatKey:
        k = layout.RawDnatKey.from_buffer_copy(raw)
        addr = _addr(k.host_addr)
        return DnatKey(k.proto, None if addr == IPv6Address(0) else addr, _port(k.host_port))

    def _unvalue(self, raw: bytes) -> DnatTarget:
        v = layout.RawDnatTarget.from_buffer_copy(raw)
        return DnatTarget(_addr(v.addr), _port(v.port), v.mapping_id, v.policy_id,
                          bool(v.policy_flags & layout.header().const("V6NAT_POLICY_DEFAULT_DENY")))


class PolicyTable(_Table[PolicyKey, bool]):
    """The mappings' source rules: (policy id, prefix) -> allow (True) or deny (False)."""

    key_type = layout.RawPolicyKey
    value_type = layout.RawPolicyRule
    batch = False  # LPM tries have no batch operations

    def _key(self, key: PolicyKey) -> layout.RawPolicyKey:
        return layout.RawPolicyKey(32 + key.prefix.prefixlen, key.policy_id, _addr_bytes(key.prefix.network_address))

    def _value(self, value: bool) -> layout.RawPolicyRule:
        h = layout.header()
        return layout.RawPolicyRule(h.const("V6NAT_RULE_ALLOW") if value else h.const("V6NAT_RULE_DENY"))

    def _unkey(self, raw: bytes) -> PolicyKey:
        k = layout.RawPolicyKey.from_buffer_copy(raw)
        return PolicyKey(k.policy_id, IPv6Network((_addr(k.addr), k.prefixlen - 32)))

    def _unvalue(self, raw: bytes) -> bool:
        return layout.RawPolicyRule.from_buffer_copy(raw).verdict == layout.header().const("V6NAT_RULE_ALLOW")


class BansTable(_Table[BanKey, Ban]):
    """Banned sources (written by `v6nat ban`, read by the programs and metrics) and the generation
    that tells established flows to look again (ban_state)."""

    key_type = layout.RawBanKey
    value_type = layout.RawBanInfo
    batch = False  # LPM tries have no batch operations

    def __init__(self, raw: BpfMap, state: BpfMap) -> None:
        super().__init__(raw)
        self.state = state

    def _key(self, key: BanKey) -> layout.RawBanKey:
        return layout.RawBanKey(32 + key.prefix.prefixlen, _be16(key.port), key.proto, 0,
                                _addr_bytes(key.prefix.network_address))

    def put(self, key: BanKey, value: Ban) -> None:
        # The value carries its key's prefix length: a lookup that hits an expired ban retries shorter ones.
        try:
            self.raw.update(self._key(key), layout.RawBanInfo(value.expires_ns, value.created_s,
                                                              32 + key.prefix.prefixlen, 0), BPF_ANY)
        except OSError as exc:
            raise V6natError(f"cannot write the ban of {key.prefix}: {exc.strerror} (map full?)") from exc

    def _unkey(self, raw: bytes) -> BanKey:
        k = layout.RawBanKey.from_buffer_copy(raw)
        return BanKey(IPv6Network((_addr(k.addr), k.prefixlen - 32)), _port(k.port), k.proto)

    def _unvalue(self, raw: bytes) -> Ban:
        v = layout.RawBanInfo.from_buffer_copy(raw)
        return Ban(v.expires_ns, v.created_s)

    @property
    def generation(self) -> int:
        found = self.state.lookup(layout.u32(0))
        return layout.RawBanState.from_buffer_copy(found).generation if found else 0

    def bump_generation(self) -> None:
        """Tell every established flow to check its source again (after the new bans are written)."""
        generation = (self.generation + 1) & 0xFFFFFFFF
        if not generation & 0xFFFF:  # flows keep its low 16 bits: 0 is theirs before any ban
            generation += 1
        self.state.update(layout.u32(0), layout.RawBanState(generation, 0), BPF_ANY)

    def active(self, now_boot_ns: int) -> int:
        return sum(1 for _, ban in self.items() if ban.active(now_boot_ns))


class NetworksTable(_Table[IPv6Network, NetworkEntry]):
    key_type = layout.RawNetworkKey
    value_type = layout.RawNetworkInfo
    batch = False  # LPM tries have no batch operations

    def _key(self, key: IPv6Network) -> layout.RawNetworkKey:
        return layout.RawNetworkKey(key.prefixlen, _addr_bytes(key.network_address))

    def _value(self, value: NetworkEntry) -> layout.RawNetworkInfo:
        flags = _net_flags(value.masquerade, value.icc, value.internal, value.mode, value.udp_eif)
        return layout.RawNetworkInfo(_addr_bytes(value.snat_addr), _addr_bytes(value.gateway), value.network_id,
                                     value.bridge_ifindex, flags, 0)

    def _unkey(self, raw: bytes) -> IPv6Network:
        k = layout.RawNetworkKey.from_buffer_copy(raw)
        return IPv6Network((_addr(k.addr), k.prefixlen))

    def _unvalue(self, raw: bytes) -> NetworkEntry:
        v = layout.RawNetworkInfo.from_buffer_copy(raw)
        h = layout.header()
        snat, gateway = _addr(v.snat_addr), _addr(v.gateway)
        return NetworkEntry(
            network_id=v.network_id,
            bridge_ifindex=v.bridge_ifindex,
            masquerade=bool(v.flags & h.const("V6NAT_NET_MASQUERADE")),
            icc=bool(v.flags & h.const("V6NAT_NET_ICC")),
            internal=bool(v.flags & h.const("V6NAT_NET_INTERNAL")),
            udp_eif=bool(v.flags & h.const("V6NAT_NET_UDP_EIF")),
            snat_addr=None if snat == IPv6Address(0) else snat,
            gateway=None if gateway == IPv6Address(0) else gateway,
            mode=_mode_of(v.flags),
        )


class PublicIfacesTable(_Table[int, IPv6Address]):
    """ifindex -> the interface's primary global address (the SNAT source)."""

    key_type = layout.u32
    value_type = layout.RawPublicIface

    def _key(self, key: int) -> layout.u32:
        return layout.u32(key)

    def _value(self, value: IPv6Address) -> layout.RawPublicIface:
        return layout.RawPublicIface(_addr_bytes(value))

    def _unkey(self, raw: bytes) -> int:
        return layout.u32.from_buffer_copy(raw).value

    def _unvalue(self, raw: bytes) -> IPv6Address:
        return _addr(layout.RawPublicIface.from_buffer_copy(raw).snat_addr)


# The flag of each gateway mode but nat (bpf/v6nat.h V6NAT_NET_*); isolated also sets INTERNAL.
_MODE_FLAGS = {GATEWAY_ROUTED: "V6NAT_NET_ROUTED", GATEWAY_UNPROTECTED: "V6NAT_NET_UNPROTECTED",
               GATEWAY_ISOLATED: "V6NAT_NET_ISOLATED"}


def _net_flags(masquerade: bool, icc: bool, internal: bool, mode: str = GATEWAY_NAT,
               udp_eif: bool = False) -> int:
    h = layout.header()
    if mode != GATEWAY_NAT and mode not in _MODE_FLAGS:
        raise V6natError(f"unknown gateway mode {mode!r}")
    return ((h.const("V6NAT_NET_MASQUERADE") if masquerade else 0)
            | (h.const("V6NAT_NET_ICC") if icc else 0)
            | (h.const("V6NAT_NET_INTERNAL") if internal or mode == GATEWAY_ISOLATED else 0)
            | (h.const(_MODE_FLAGS[mode]) if mode in _MODE_FLAGS else 0)
            | (h.const("V6NAT_NET_UDP_EIF") if udp_eif else 0))


def _mode_of(flags: int) -> str:
    h = layout.header()
    return next((mode for mode, name in _MODE_FLAGS.items() if flags & h.const(name)), GATEWAY_NAT)


class VethsTable(_Table[int, VethEntry]):
    """veth ifindex -> its container's addresses, network and bridge MAC."""

    key_type = layout.u32
    value_type = layout.RawVethInfo

    def _key(self, key: int) -> layout.u32:
        return layout.u32(key)

    def _value(self, value: VethEntry) -> layout.RawVethInfo:
        slots = layout.header().const("V6NAT_VETH_ADDRS")
        if len(value.addrs) > slots:
            raise V6natError(f"a container has {len(value.addrs)} addresses on one network; "
                             f"the datapath holds {slots}")
        addrs = (layout.Addr * slots)(*(_addr_bytes(a) for a in value.addrs))
        return layout.RawVethInfo(addrs, value.network_id, value.bridge_ifindex,
                                  _net_flags(value.masquerade, value.icc, value.internal, value.mode),
                                  (layout.u8 * 6)(*value.bridge_mac), 0)

    def _unkey(self, raw: bytes) -> int:
        return layout.u32.from_buffer_copy(raw).value

    def _unvalue(self, raw: bytes) -> VethEntry:
        v = layout.RawVethInfo.from_buffer_copy(raw)
        h = layout.header()
        return VethEntry(
            network_id=v.network_id,
            bridge_ifindex=v.bridge_ifindex,
            masquerade=bool(v.net_flags & h.const("V6NAT_NET_MASQUERADE")),
            icc=bool(v.net_flags & h.const("V6NAT_NET_ICC")),
            internal=bool(v.net_flags & h.const("V6NAT_NET_INTERNAL")),
            addrs=tuple(a for a in (_addr(raw_addr) for raw_addr in v.addrs) if a != IPv6Address(0)),
            bridge_mac=bytes(v.bridge_mac),
            mode=_mode_of(v.net_flags),
        )


class HostAddrsTable(_Table[IPv6Address, int]):
    """Every global address of the public interfaces -> its ifindex."""

    key_type = layout.RawHostAddrKey
    value_type = layout.RawHostAddrInfo

    def _key(self, key: IPv6Address) -> layout.RawHostAddrKey:
        return layout.RawHostAddrKey(_addr_bytes(key))

    def _value(self, value: int) -> layout.RawHostAddrInfo:
        return layout.RawHostAddrInfo(value)

    def _unkey(self, raw: bytes) -> IPv6Address:
        return _addr(layout.RawHostAddrKey.from_buffer_copy(raw).addr)

    def _unvalue(self, raw: bytes) -> int:
        return layout.RawHostAddrInfo.from_buffer_copy(raw).ifindex


def read_config(raw: BpfMap) -> layout.Config:
    found = raw.lookup(layout.u32(0))
    return layout.Config.from_buffer_copy(found) if found else DatapathConfig().to_raw()


def config_from_raw(raw: layout.Config, conntrack_max: int, dnat_max: int) -> DatapathConfig:
    return DatapathConfig(
        snat_port_min=raw.snat_port_min,
        snat_port_max=raw.snat_port_max,
        tcp_established_s=raw.tcp_established_ns // _NS,
        tcp_transitory_s=raw.tcp_transitory_ns // _NS,
        udp_s=raw.udp_ns // _NS,
        icmp_s=raw.icmp_ns // _NS,
        conntrack_max=conntrack_max,
        dnat_max=dnat_max,
        fast_path=bool(raw.flags & layout.header().const("V6NAT_CFG_FAST_PATH")),
    )


def write_config(raw: BpfMap, cfg: DatapathConfig) -> None:
    """Write `cfg`, keeping the port salt already in force (a new random one the first time), so
    that internal endpoints keep their SNAT ports across daemon restarts."""
    value = cfg.to_raw()
    found = raw.lookup(layout.u32(0))
    salt = layout.Config.from_buffer_copy(found).port_salt if found else 0
    value.port_salt = salt or secrets.randbits(32) or 1
    raw.update(layout.u32(0), value)


def _percpu_sums(raw: BpfMap, keys: bytes, values: bytes, n: int, fields: int) -> dict[int, tuple[int, ...]]:
    """u32 key -> its per-CPU value's first `fields` u64s, each summed over every
    possible CPU, for one batch of `n` entries of a per-CPU map."""
    words = raw.slot // 8  # u64s per CPU slot
    per_entry = words * raw.ncpus
    ids = struct.unpack(f"<{n}I", keys)
    flat = struct.unpack(f"<{n * per_entry}Q", values)
    return {
        key: tuple(sum(flat[i * per_entry + f:(i + 1) * per_entry:words]) for f in range(fields))
        for i, key in enumerate(ids)
    }


def _read_percpu(raw: BpfMap, fields: int) -> dict[int, tuple[int, ...]]:
    out: dict[int, tuple[int, ...]] = {}
    for keys, values, n in raw.batches():
        out.update(_percpu_sums(raw, keys, values, n, fields))
    return out


def read_counters(raw: BpfMap) -> dict[str, dict[str, int]]:
    """hook -> counter name -> packets, summed over CPUs, zeros included."""
    h = layout.header()
    values = _read_percpu(raw, 1)
    out: dict[str, dict[str, int]] = {}
    for hook_index, hook in enumerate(h.hooks):
        out[hook] = {}
        for counter_index, name in enumerate(h.counters):
            out[hook][name] = values.get(hook_index * len(h.counters) + counter_index, (0,))[0]
    return out


def read_mapping_stats(raw: BpfMap) -> dict[int, tuple[int, int, int]]:
    """mapping_id -> (packets, bytes, new flows its source rules refused), summed over CPUs."""
    return _read_percpu(raw, 3)  # type: ignore[return-value]


def read_hostlocal_stats(raw: BpfMap) -> dict[int, tuple[int, int]]:
    """mapping_id -> (connects, sendmsgs) translated by the socket hooks, summed over CPUs."""
    return {key: (connects, sendmsgs) for key, (connects, sendmsgs) in _read_percpu(raw, 2).items()}


def read_snat_allocations(raw: BpfMap) -> SnatAllocations:
    values = _read_percpu(raw, 1)
    h = layout.header()
    return SnatAllocations(
        buckets=tuple((most, values.get(slot, (0,))[0]) for most, slot in h.snat_tries_buckets),
        tries=values.get(h.const("V6NAT_TRIES_SUM"), (0,))[0],
    )


def _mirror_key(entry: layout.RawCtEntry, proto: int) -> bytes:
    """The key of the other half of a conntrack half whose value is `entry`."""
    return bytes(layout.RawCtKey(entry.daddr, entry.saddr, entry.dport, entry.sport, proto))


def _records_with(buf: bytes, needle: bytes, stride: int, offsets: tuple[int, ...]) -> Iterator[tuple[int, int]]:
    """(record index, offset) of each place `needle` starts at one of `offsets` of the `stride`-byte records
    packed in `buf`: bytes.find does the walking, Python sees only the hits."""
    start = buf.find(needle)
    while start != -1:
        index, at = divmod(start, stride)
        if at in offsets:
            yield index, start
        start = buf.find(needle, start + 1)


class _ForgetRule:
    """Which conntrack halves Conntrack.forget condemns, found in the raw batch buffers."""

    def __init__(self, addresses: Iterable[IPv6Address], mapping_ids: Iterable[int],
                 prefixes: Iterable[IPv6Network], owned: Iterable[IPv6Address],
                 published: Iterable[int] | None) -> None:
        h = layout.header()
        self.mapped_kinds = (h.const("CT_KIND_DNAT"), h.const("CT_KIND_HAIRPIN"))
        self.addresses = frozenset(a.packed for a in addresses)
        self.mapping_ids = frozenset(mapping_ids)
        self.published = None if published is None else frozenset(published)
        # (the prefix's whole leading bytes: what a match starts with, mask, network)
        self.prefixes = [(p.network_address.packed[:p.prefixlen // 8], int(p.netmask), int(p.network_address))
                         for p in prefixes]
        self.owned = frozenset(a.packed for a in owned)
        self._orphan: dict[bytes, bool] = {}  # address -> in a prefix and not owned (memo: few distinct)
        e, k = layout.RawCtEntry, layout.RawCtKey
        self.key_addrs = (k.saddr.offset, k.daddr.offset)
        self.value_addrs = (e.saddr.offset, e.daddr.offset)
        self.kind_at, self.id_at = e.kind.offset, e.mapping_id.offset

    @property
    def empty(self) -> bool:
        return not (self.addresses or self.mapping_ids or self.prefixes or self.published is not None)

    def _is_orphan(self, addr: bytes) -> bool:
        found = self._orphan.get(addr)
        if found is None:
            value = int.from_bytes(addr, "big")
            found = addr not in self.owned and any(value & mask == net for _, mask, net in self.prefixes)
            self._orphan[addr] = found
        return found

    def condemned(self, keys: bytes, values: bytes, n: int, ks: int, vs: int) -> set[int]:
        """The indexes of the halves of one batch (`n` keys and values packed end to end) to forget."""
        hits: set[int] = set()
        for buf, stride, offsets in ((keys, ks, self.key_addrs), (values, vs, self.value_addrs)):
            for addr in self.addresses:
                hits.update(i for i, _ in _records_with(buf, addr, stride, offsets))
            for lead, _, _ in self.prefixes:
                if lead:
                    candidates: Iterable[tuple[int, int]] = _records_with(buf, lead, stride, offsets)
                else:  # a prefix shorter than a byte: every address is a candidate
                    candidates = ((i, i * stride + at) for i in range(n) for at in offsets)
                hits.update(i for i, at in candidates if i not in hits and self._is_orphan(buf[at:at + 16]))
        if self.mapping_ids or self.published is not None:
            kinds = values[self.kind_at::vs]
            for kind in self.mapped_kinds:
                for i, _ in _records_with(kinds, bytes((kind,)), 1, (0,)):
                    mapping_id = int.from_bytes(values[i * vs + self.id_at:i * vs + self.id_at + 4], "little")
                    if mapping_id in self.mapping_ids or (self.published is not None
                                                          and mapping_id not in self.published):
                        hits.add(i)
        return hits


class ConntrackTable:
    """One conntrack table (assured flows, or not yet / no longer assured ones): reads its
    pairs and expires them (both halves together; a pair lives in one table)."""

    def __init__(self, raw: BpfMap, config: BpfMap) -> None:
        self.raw = raw
        self.config = config

    def _halves(self) -> dict[bytes, layout.RawCtEntry]:
        return {kb: layout.RawCtEntry.from_buffer_copy(vb) for kb, vb in self.raw.items()}

    def _pairs(self) -> list[tuple[bytes, layout.RawCtEntry, bytes, layout.RawCtEntry | None]]:
        """(key, half, peer key, peer half or None), each pair once."""
        halves = self._halves()
        seen: set[bytes] = set()
        out = []
        for kb, entry in halves.items():
            if kb in seen:
                continue
            proto = layout.RawCtKey.from_buffer_copy(kb).proto
            peer_kb = _mirror_key(entry, proto)
            seen.update((kb, peer_kb))
            out.append((kb, entry, peer_kb, halves.get(peer_kb)))
        return out

    def _timeout_ns(self, cfg: layout.Config, proto: int, state: int) -> int:
        h = layout.header()
        if proto == 6:
            return cfg.tcp_established_ns if state == h.const("CT_TCP_ESTABLISHED") else cfg.tcp_transitory_ns
        return cfg.udp_ns if proto == 17 else cfg.icmp_ns

    def flows(self, now_ns: int | None = None) -> list[Flow]:
        return [flow_of(record) for record in self.flow_records(now_ns)]

    def flow_records(self, now_ns: int | None = None) -> Iterator[FlowRecord]:
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) if now_ns is None else now_ns
        return flowlist.flow_records(self.raw, now)

    def summary(self) -> ConntrackSummary:
        """Pairs by (proto, kind, state) and SNAT ports in use, decoded from the
        batch buffers a few bytes per half. A pair is counted by its original
        half, a lone reply half (its original evicted) by itself."""
        ks, vs = self.raw.key_size, self.raw.value_size
        e, k = layout.RawCtEntry, layout.RawCtKey
        kind_at, dir_at, state_at = e.kind.offset, e.dir.offset, e.tcp_state.offset
        proto_at = k.proto.offset
        # The mirror key of a half is its value's (daddr, saddr, dport, sport) then its key's proto and pad.
        e_saddr, e_daddr = slice(e.saddr.offset, e.saddr.offset + 16), slice(e.daddr.offset, e.daddr.offset + 16)
        e_sport, e_dport = slice(e.sport.offset, e.sport.offset + 2), slice(e.dport.offset, e.dport.offset + 2)
        k_tail = slice(proto_at, ks)
        # SNAT: the public (address, port) is the original's new source, or a lone reply's key destination.
        k_public = (slice(k.daddr.offset, k.daddr.offset + 16), slice(k.dport.offset, k.dport.offset + 2))
        h = layout.header()
        reply_dir, snat_kind = h.const("CT_DIR_REPLY"), h.const("CT_KIND_SNAT")

        chunks = list(self.raw.batches())
        present = {keys[i:i + ks] for keys, _, n in chunks for i in range(0, n * ks, ks)}
        counts: dict[tuple[int, int, int], int] = {}
        snat: dict[int, set[bytes]] = {}
        for keys, values, n in chunks:
            for i in range(n):
                key, value = keys[i * ks:(i + 1) * ks], values[i * vs:(i + 1) * vs]
                proto, kind = key[proto_at], value[kind_at]
                if value[dir_at] == reply_dir:
                    if value[e_daddr] + value[e_saddr] + value[e_dport] + value[e_sport] + key[k_tail] in present:
                        continue
                    public = key[k_public[0]] + key[k_public[1]]
                else:
                    public = value[e_saddr] + value[e_sport]
                group = (proto, kind, value[state_at])
                counts[group] = counts.get(group, 0) + 1
                if kind == snat_kind:
                    snat.setdefault(proto, set()).add(public)
        kinds, states = layout.header().names("CT_KIND_"), layout.header().names("CT_TCP_")
        return ConntrackSummary(
            entries=sum(n for _, _, n in chunks),
            flows={(p, kinds.get(kd, str(kd)), states.get(st, str(st))): n for (p, kd, st), n in counts.items()},
            snat_ports={p: len(ports) for p, ports in snat.items()},
        )

    def forget(self, rule: _ForgetRule) -> int:
        """Remove every pair one of whose halves `rule` condemns, both halves (a lone half too);
        returns the pairs removed."""
        ks, vs = self.raw.key_size, self.raw.value_size
        e, k = layout.RawCtEntry, layout.RawCtKey
        e_saddr, e_daddr = slice(e.saddr.offset, e.saddr.offset + 16), slice(e.daddr.offset, e.daddr.offset + 16)
        e_sport, e_dport = slice(e.sport.offset, e.sport.offset + 2), slice(e.dport.offset, e.dport.offset + 2)
        k_tail = slice(k.proto.offset, ks)
        doomed: set[bytes] = set()
        pairs = 0
        for keys, values, n in self.raw.batches():
            for i in sorted(rule.condemned(keys, values, n, ks, vs)):
                key, value = keys[i * ks:(i + 1) * ks], values[i * vs:(i + 1) * vs]
                if key in doomed:  # the other half of a pair already condemned
                    continue
                pairs += 1
                doomed.update((key, value[e_daddr] + value[e_saddr] + value[e_dport] + value[e_sport] + key[k_tail]))
        for kb in doomed:
            self.raw.delete(layout.RawCtKey.from_buffer_copy(kb))
        return pairs

    def cut_sources(self, ban: BanKey) -> int:
        """Remove the pairs whose outside end is in `ban.prefix` (the halves public ingress translates:
        DNAT originals and SNAT replies, keyed by that end's address), only DNAT pairs of the
        published port `ban.port`/`ban.proto` when it names one; returns the pairs removed."""
        ks, vs = self.raw.key_size, self.raw.value_size
        e, k = layout.RawCtEntry, layout.RawCtKey
        h = layout.header()
        dnat, snat = h.const("CT_KIND_DNAT"), h.const("CT_KIND_SNAT")
        original, reply = h.const("CT_DIR_ORIGINAL"), h.const("CT_DIR_REPLY")
        net, mask = int(ban.prefix.network_address), int(ban.prefix.netmask)
        doomed: set[bytes] = set()
        pairs = 0
        for keys, values, n in self.raw.batches():
            for i in range(n):
                key, value = keys[i * ks:(i + 1) * ks], values[i * vs:(i + 1) * vs]
                kind, direction = value[e.kind.offset], value[e.dir.offset]
                if not ((kind == dnat and direction == original) or (kind == snat and direction == reply)):
                    continue
                if int.from_bytes(key[k.saddr.offset:k.saddr.offset + 16], "big") & mask != net:
                    continue
                if ban.port and (kind != dnat or key[k.proto.offset] != ban.proto
                                 or _port(int.from_bytes(key[k.dport.offset:k.dport.offset + 2], "little")) != ban.port):
                    continue
                entry = layout.RawCtEntry.from_buffer_copy(value)
                doomed.update((key, _mirror_key(entry, key[k.proto.offset])))
                pairs += 1
        for kb in doomed:
            self.raw.delete(layout.RawCtKey.from_buffer_copy(kb))
        return pairs

    def gc(self, now_ns: int | None = None) -> int:
        """Remove pairs idle longer than their timeout, both halves together
        (a lone half too); returns the number of pairs removed."""
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) if now_ns is None else now_ns
        cfg = read_config(self.config)
        removed = 0
        for kb, entry, peer_kb, peer in self._pairs():
            last = max(entry.last_seen_ns, peer.last_seen_ns if peer is not None else 0)
            proto = layout.RawCtKey.from_buffer_copy(kb).proto
            if now - last <= self._timeout_ns(cfg, proto, entry.tcp_state):
                continue
            self.raw.delete(layout.RawCtKey.from_buffer_copy(kb))
            if peer is not None:
                self.raw.delete(layout.RawCtKey.from_buffer_copy(peer_kb))
            removed += 1
        if removed:
            log.debug("conntrack gc removed %d pairs", removed)
        return removed


class Conntrack:
    """Both conntrack tables, read as one: `conntrack` (flows that saw a reply)
    and `ct_unassured` (flows that have not yet), see bpf/lib/conntrack.h."""

    def __init__(self, tables: list[BpfMap], config: BpfMap) -> None:
        self.tables = [ConntrackTable(raw, config) for raw in tables]

    def flows(self, now_ns: int | None = None) -> list[Flow]:
        return [flow for table in self.tables for flow in table.flows(now_ns)]

    def flow_records(self, now_ns: int | None = None) -> Iterator[FlowRecord]:
        return chain.from_iterable(table.flow_records(now_ns) for table in self.tables)

    def summary(self) -> ConntrackSummary:
        parts = [table.summary() for table in self.tables]
        flows: dict[tuple[int, str, str], int] = {}
        for part in parts:
            for group, n in part.flows.items():
                flows[group] = flows.get(group, 0) + n
        return ConntrackSummary(
            entries=sum(p.entries for p in parts),
            flows=flows,
            snat_ports={proto: sum(p.snat_ports.get(proto, 0) for p in parts)
                        for proto in {proto for p in parts for proto in p.snat_ports}},
        )

    def gc(self, now_ns: int | None = None) -> int:
        return sum(table.gc(now_ns) for table in self.tables)

    def cut_sources(self, ban: BanKey) -> int:
        """Remove the flows a ban covers (see ConntrackTable.cut_sources), both tables."""
        return sum(table.cut_sources(ban) for table in self.tables)

    def forget(self, addresses: Iterable[IPv6Address] = (), mapping_ids: Iterable[int] = (), *,
               prefixes: Iterable[IPv6Network] = (), owned: Iterable[IPv6Address] = (),
               published: Iterable[int] | None = None) -> int:
        """Remove the flows (both halves, both tables) that must not outlive what Docker removed:
        every pair one of whose halves has one of `addresses` as key or translated source or
        destination; every DNAT/hairpin pair of a mapping in `mapping_ids`, or, with `published`,
        of a mapping not in it; with `prefixes`, every pair with an address in one of them that is
        not in `owned` (a resync's sweep for orphans). One batch read of each table; returns the
        number of pairs removed."""
        rule = _ForgetRule(addresses, mapping_ids, prefixes, owned, published)
        if rule.empty:
            return 0
        removed = sum(table.forget(rule) for table in self.tables)
        if removed:
            log.debug("conntrack: forgot %d pairs", removed)
        return removed

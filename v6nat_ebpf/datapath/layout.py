"""Python's one mirror of bpf/v6nat.h: ctypes structs, the map table, and the
names (hooks, actions, drop reasons) and constants read from the header itself.

tests/datapath/test_layout.py checks every struct here against what the
compiler produced. Imports the standard library and datapath.bpfsys (the map-type numbers).
"""

from __future__ import annotations

import ctypes as ct
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from v6nat_ebpf.datapath import bpfsys


def _bpf_dir() -> Path:
    """The BPF sources: the package data v6nat_ebpf/bpf/ of an installed wheel (pyproject.toml maps the
    repository's top-level bpf/ there), else bpf/ at the top of the checkout (an editable install)."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "bpf"
    return installed if (installed / "v6nat.h").exists() else package.parent / "bpf"


BPF_DIR = _bpf_dir()
HEADER = BPF_DIR / "v6nat.h"

u8, u16, u32, u64 = ct.c_uint8, ct.c_uint16, ct.c_uint32, ct.c_uint64
Addr = ct.c_uint8 * 16


def _xmacro(text: str, name: str) -> list[str]:
    """The second argument of every X(ID, name) entry of `#define name(X)`."""
    match = re.search(rf"#define {name}\(X\)((?:.*\\\n)*.*)", text)
    if not match:
        raise RuntimeError(f"{HEADER}: no X-macro {name}")
    return re.findall(r"X\(\w+,\s*(\w+)\)", match.group(1))


def _constants(text: str) -> dict[str, int]:
    """`#define NAME <int>` and `NAME = <int>,` (enum members) of the header."""
    found = {m[0]: int(m[1], 0) for m in re.findall(r"#define\s+(\w+)\s+(0x[0-9a-fA-F]+|\d+)\b", text)}
    found.update({m[0]: int(m[1], 0) for m in re.findall(r"^\s*(\w+)\s*=\s*(0x[0-9a-fA-F]+|\d+),", text, re.M)})
    return found


@dataclass(frozen=True)
class HeaderNames:
    hooks: tuple[str, ...]
    actions: tuple[str, ...]
    drop_reasons: tuple[str, ...]
    constants: dict[str, int]

    @property
    def counters(self) -> tuple[str, ...]:
        """Counter names in counter-id order: actions, then drop_<reason>."""
        return self.actions + tuple(f"drop_{r}" for r in self.drop_reasons)

    def const(self, name: str) -> int:
        return self.constants[name]

    def names(self, prefix: str) -> dict[int, str]:
        """Value -> name of the constants <prefix><NAME>, lower case ("CT_KIND_": 1 -> "dnat")."""
        return {v: k.removeprefix(prefix).lower() for k, v in self.constants.items() if k.startswith(prefix)}

    @property
    def snat_tries_buckets(self) -> tuple[tuple[int, int], ...]:
        """(most tries, slot) of each snat_tries bucket, ascending, from the
        names V6NAT_TRIES_<n> and V6NAT_TRIES_<first>_<last>."""
        found = []
        for name, slot in self.constants.items():
            match = re.fullmatch(r"V6NAT_TRIES_(?:\d+_)?(\d+)", name)
            if match:
                found.append((int(match.group(1)), slot))
        return tuple(sorted(found))


@cache
def header() -> HeaderNames:
    text = HEADER.read_text()
    return HeaderNames(
        hooks=tuple(_xmacro(text, "V6NAT_HOOKS")),
        actions=tuple(_xmacro(text, "V6NAT_ACTIONS")),
        drop_reasons=tuple(_xmacro(text, "V6NAT_DROP_REASONS")),
        constants=_constants(text),
    )


class Config(ct.Structure):
    _fields_ = [
        ("tcp_established_ns", u64),
        ("tcp_transitory_ns", u64),
        ("udp_ns", u64),
        ("icmp_ns", u64),
        ("snat_port_min", u16),
        ("snat_port_max", u16),
        ("flags", u32),
        ("port_salt", u32),
        ("_pad", u32),
    ]


class RawDnatKey(ct.Structure):
    _fields_ = [("host_addr", Addr), ("host_port", u16), ("proto", u8), ("_pad", u8)]


class RawDnatTarget(ct.Structure):
    _fields_ = [("addr", Addr), ("port", u16), ("policy_flags", u16), ("mapping_id", u32), ("policy_id", u32)]


class RawPolicyKey(ct.Structure):
    _fields_ = [("prefixlen", u32), ("policy_id", u32), ("addr", Addr)]


class RawPolicyRule(ct.Structure):
    _fields_ = [("verdict", u32)]


class RawBanKey(ct.Structure):
    _fields_ = [("prefixlen", u32), ("port", u16), ("proto", u8), ("_pad", u8), ("addr", Addr)]


class RawBanInfo(ct.Structure):
    _fields_ = [("expires_ns", u64), ("created_s", u64), ("prefixlen", u32), ("_pad", u32)]


class RawBanState(ct.Structure):
    _fields_ = [("generation", u32), ("_pad", u32)]


class RawNetworkKey(ct.Structure):
    _fields_ = [("prefixlen", u32), ("addr", Addr)]


class RawNetworkInfo(ct.Structure):
    _fields_ = [
        ("snat_addr", Addr),
        ("gateway", Addr),
        ("network_id", u32),
        ("bridge_ifindex", u32),
        ("flags", u32),
        ("_pad", u32),
    ]


class RawPublicIface(ct.Structure):
    _fields_ = [("snat_addr", Addr)]


class RawHostAddrKey(ct.Structure):
    _fields_ = [("addr", Addr)]


class RawHostAddrInfo(ct.Structure):
    _fields_ = [("ifindex", u32)]


class RawCtKey(ct.Structure):
    _fields_ = [
        ("saddr", Addr),
        ("daddr", Addr),
        ("sport", u16),
        ("dport", u16),
        ("proto", u8),
        ("_pad", u8 * 3),
    ]


class RawCtEntry(ct.Structure):
    _fields_ = [
        ("saddr", Addr),
        ("daddr", Addr),
        ("sport", u16),
        ("dport", u16),
        ("kind", u8),
        ("dir", u8),
        ("tcp_state", u8),
        ("tcp_flags", u8),
        ("mapping_id", u32),
        ("fib_ifindex", u32),
        ("created_ns", u64),
        ("last_seen_ns", u64),
        ("packets", u64),
        ("bytes", u64),
        ("fib_nexthop", Addr),
        ("fib_iif", u32),
        ("peer_ifindex", u32),
        ("fib_until_ns", u64),
        ("peer_macs", u8 * 12),
        ("td_end", u32),
        ("td_ack", u32),
        ("td_known", u8),
        ("_pad", u8),
        ("ban_gen", u16),
        ("peer_until_ns", u64),
    ]


class RawVethInfo(ct.Structure):
    _fields_ = [
        ("addrs", Addr * 4),  # V6NAT_VETH_ADDRS (test_layout checks it)
        ("network_id", u32),
        ("bridge_ifindex", u32),
        ("net_flags", u32),
        ("bridge_mac", u8 * 6),
        ("_pad", u16),
    ]


class RawFragKey(ct.Structure):
    _fields_ = [("saddr", Addr), ("daddr", Addr), ("id", u32), ("proto", u8), ("_pad", u8 * 3)]


class RawFragPorts(ct.Structure):
    _fields_ = [("sport", u16), ("dport", u16)]


class RawMappingStat(ct.Structure):
    _fields_ = [("packets", u64), ("bytes", u64), ("policy_drops", u64)]


class RawHostlocalConfig(ct.Structure):
    _fields_ = [("netns_cookie", u64)]


class RawHostlocalSockKey(ct.Structure):
    _fields_ = [("sock_cookie", u64), ("addr", Addr), ("port", u16), ("_pad", u16 * 3)]


class RawHostlocalPublished(ct.Structure):
    _fields_ = [("addr", Addr), ("port", u16), ("_pad", u16 * 3)]


class RawHostlocalStat(ct.Structure):
    _fields_ = [("connects", u64), ("sendmsgs", u64)]


class RawNatMappingKey(ct.Structure):
    _fields_ = [("nat_addr", Addr), ("port", u16), ("proto", u8), ("_pad", u8)]


class RawNatMapping(ct.Structure):
    _fields_ = [("addr", Addr), ("remote", Addr), ("port", u16), ("remote_port", u16), ("_pad", u32)]


class RawTraceFilter(ct.Structure):
    _fields_ = [
        ("addr", Addr),
        ("prefixlen", u32),
        ("mapping_id", u32),
        ("port", u16),
        ("proto", u8),
        ("_pad", u8),
        ("flags", u32),
        ("rate", u32),
        ("_pad2", u32),
        ("expires_ns", u64),
    ]


class RawTraceEvent(ct.Structure):
    _fields_ = [
        ("ts_ns", u64),
        ("saddr", Addr),
        ("daddr", Addr),
        ("new_saddr", Addr),
        ("new_daddr", Addr),
        ("sport", u16),
        ("dport", u16),
        ("new_sport", u16),
        ("new_dport", u16),
        ("verdict", ct.c_int32),
        ("ifindex", u32),
        ("mapping_id", u32),
        ("drop_reason", u16),
        ("hook", u8),
        ("proto", u8),
        ("kind", u8),
        ("dir", u8),
        ("_pad", u8 * 6),
    ]


class RawTraceState(ct.Structure):
    _fields_ = [("window_ns", u64), ("sent", u32), ("drop_reason", u32), ("limited", u64), ("lost", u64)]


class NoValue(ct.Structure):
    """The key and value of a ring buffer: none (the kernel's sizes are 0)."""

    _fields_: list = []


# bpf_map_type values used here (their one copy is in bpfsys).
HASH, ARRAY, PERCPU_HASH, PERCPU_ARRAY, LRU_HASH, LPM_TRIE, RINGBUF = (
    bpfsys.BPF_MAP_TYPE_HASH, bpfsys.BPF_MAP_TYPE_ARRAY, bpfsys.BPF_MAP_TYPE_PERCPU_HASH,
    bpfsys.BPF_MAP_TYPE_PERCPU_ARRAY, bpfsys.BPF_MAP_TYPE_LRU_HASH, bpfsys.BPF_MAP_TYPE_LPM_TRIE,
    bpfsys.BPF_MAP_TYPE_RINGBUF)
BPF_F_NO_PREALLOC = 1


@dataclass(frozen=True)
class MapSpec:
    """One pinned map as bpf/lib/maps.h declares it."""

    name: str
    type: int
    key: type[ct.Structure] | type[ct._SimpleCData]
    value: type[ct.Structure] | type[ct._SimpleCData]
    max_entries: int
    flags: int = 0

    @property
    def percpu(self) -> bool:
        return self.type in (PERCPU_HASH, PERCPU_ARRAY)


def ct_unassured_max(ct_max: int) -> int:
    """The unassured flows' table: V6NAT_CT_UNASSURED_MAX of bpf/v6nat.h."""
    return max(1, ct_max // 4)


def map_specs(ct_max: int, dnat_max: int) -> dict[str, MapSpec]:
    """Every pinned map, with the capacities the loader compiles in."""
    h = header()
    specs = [
        MapSpec("config", ARRAY, u32, Config, 1),
        MapSpec("dnat", HASH, RawDnatKey, RawDnatTarget, dnat_max),
        MapSpec("networks", LPM_TRIE, RawNetworkKey, RawNetworkInfo, h.const("V6NAT_NETWORKS_MAX"),
                BPF_F_NO_PREALLOC),
        MapSpec("public_ifaces", HASH, u32, RawPublicIface, h.const("V6NAT_PUBLIC_IFACES_MAX")),
        MapSpec("host_addrs", HASH, RawHostAddrKey, RawHostAddrInfo, h.const("V6NAT_HOST_ADDRS_MAX")),
        MapSpec("conntrack", LRU_HASH, RawCtKey, RawCtEntry, ct_max),
        MapSpec("ct_unassured", LRU_HASH, RawCtKey, RawCtEntry, ct_unassured_max(ct_max)),
        MapSpec("veths", HASH, u32, RawVethInfo, h.const("V6NAT_VETHS_MAX")),
        MapSpec("fragments", LRU_HASH, RawFragKey, RawFragPorts, h.const("V6NAT_FRAGS_MAX")),
        MapSpec("counters", PERCPU_ARRAY, u32, u64, len(h.hooks) * len(h.counters)),
        MapSpec("mapping_stats", PERCPU_HASH, u32, RawMappingStat, dnat_max),
        MapSpec("snat_tries", PERCPU_ARRAY, u32, u64, h.const("V6NAT_TRIES_SLOTS")),
        # host-local access (bpf/sock.c)
        MapSpec("hostlocal_config", ARRAY, u32, RawHostlocalConfig, 1),
        MapSpec("hostlocal_socks", LRU_HASH, RawHostlocalSockKey, RawHostlocalPublished,
                h.const("V6NAT_HOSTLOCAL_SOCKS_MAX")),
        MapSpec("hostlocal_stats", PERCPU_HASH, u32, RawHostlocalStat, dnat_max),
        # source policy (bpf/lib/policy.h)
        MapSpec("policy", LPM_TRIE, RawPolicyKey, RawPolicyRule, h.const("V6NAT_POLICY_MAX"), BPF_F_NO_PREALLOC),
        MapSpec("bans", LPM_TRIE, RawBanKey, RawBanInfo, h.const("V6NAT_BANS_MAX"), BPF_F_NO_PREALLOC),
        MapSpec("ban_state", ARRAY, u32, RawBanState, 1),
        MapSpec("nat_mappings", LRU_HASH, RawNatMappingKey, RawNatMapping, h.const("V6NAT_NAT_MAPPINGS_MAX")),
        MapSpec("trace_filter", ARRAY, u32, RawTraceFilter, 1),
        MapSpec("trace_state", PERCPU_ARRAY, u32, RawTraceState, 1),
        # what the programs write into it: RawTraceEvent records
        MapSpec("trace_events", RINGBUF, NoValue, NoValue, h.const("V6NAT_TRACE_RING_BYTES")),
    ]
    return {s.name: s for s in specs}

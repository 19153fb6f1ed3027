"""layout.py (Python's mirror of bpf/v6nat.h) against what the compiler produced:
bcc's ctypes types for every table, and the kernel's view of the pinned maps."""

from __future__ import annotations

import ctypes as ct
from typing import Any, Iterator

import pytest

from v6nat_ebpf.datapath import Datapath, layout, loader


@pytest.fixture(scope="module")
def compiled(loaded: Datapath) -> Iterator[Any]:
    """bcc's view of the sources, compiled here against the session datapath's pins and capacities
    (the daemon compiles only in a child process and keeps no BPF object)."""
    from bcc import BPF

    bpf = BPF(text=loader.program_source().encode(), cflags=loader.cflags(loader.pin_dir(loaded.pin_path), loaded.config))
    yield bpf
    bpf.cleanup()


def layout_of(t: type) -> list[tuple[str, int, int]]:
    """(field, offset, size) of a ctypes struct, or one entry for a scalar."""
    if not issubclass(t, ct.Structure):
        return [("", 0, ct.sizeof(t))]
    return [(name, getattr(t, name).offset, getattr(t, name).size) for name, *_ in t._fields_]


def mismatches(ours: type, compiled: type) -> list[str]:
    problems = []
    if ct.sizeof(ours) != ct.sizeof(compiled):
        problems.append(f"size {ct.sizeof(ours)} != compiled {ct.sizeof(compiled)}")
    theirs = {name: (off, size) for name, off, size in layout_of(compiled)}
    for name, off, size in layout_of(ours):
        if name and theirs.get(name) != (off, size):
            problems.append(f"{name}: ours at {off} size {size}, compiled {theirs.get(name)}")
    return problems


@pytest.mark.parametrize("name", list(layout.map_specs(1024, 1024)))
def test_struct_layouts_match_the_compiler(loaded: Datapath, compiled: Any, name: str) -> None:
    table = compiled.get_table(name.encode())
    spec = loaded.specs[name]
    if spec.type == layout.RINGBUF:  # no key or value: its records are what the C side annotates
        assert mismatches(layout.RawTraceEvent, table.Leaf) == []
        assert table.max_entries == spec.max_entries
        return
    assert mismatches(spec.key, table.Key) == []
    leaf = getattr(table, "sLeaf", table.Leaf)  # per-CPU tables: one CPU's value
    assert mismatches(spec.value, leaf) == []
    assert table.max_entries == spec.max_entries


def test_the_comparison_catches_a_wrong_mirror(compiled: Any) -> None:
    class ShiftedCtKey(ct.Structure):  # forgot a port: proto lands 2 bytes early
        _fields_ = [("saddr", layout.Addr), ("daddr", layout.Addr), ("sport", layout.u16),
                    ("proto", layout.u8), ("_pad", layout.u8 * 5)]

    problems = mismatches(ShiftedCtKey, compiled.get_table(b"conntrack").Key)
    assert any(p.startswith("proto") for p in problems)


def test_pinned_maps_are_what_layout_says(loaded: Datapath) -> None:
    loader.check_pinned_maps(loader.pin_dir(loaded.pin_path), loaded.specs)  # raises on mismatch


def test_counter_names_come_from_the_header(loaded: Datapath, compiled: Any) -> None:
    h = layout.header()
    assert h.hooks == ("public_ingress", "public_egress", "bridge_ingress", "veth_ingress", "bridge_egress")
    assert h.counters[0] == "pass" and "drop_direct_ula" in h.counters
    assert len(set(h.counters)) == len(h.counters)
    counters = loaded.counters()
    assert list(counters) == list(h.counters)
    assert compiled.get_table(b"counters").max_entries == len(h.hooks) * len(h.counters)


def test_network_flags_are_distinct_bits_and_every_gateway_mode_round_trips(loaded: Datapath) -> None:
    from ipaddress import IPv6Network

    from v6nat_ebpf.datapath import NetworkEntry
    from v6nat_ebpf.lab.datapath import clear
    from v6nat_ebpf.model import GATEWAY_MODES

    h = layout.header()
    flags = [h.const(f"V6NAT_NET_{name}") for name in ("MASQUERADE", "ICC", "INTERNAL", "ROUTED", "UNPROTECTED",
                                                       "ISOLATED", "UDP_EIF")]
    assert all(f and f & (f - 1) == 0 for f in flags) and len(set(flags)) == len(flags)
    # issue 14: 6 (host-local maps); issue 13: 7 (gateway-mode flags, the unpublished drop); issue 16 and 17,
    # merged in one landing: 8 (policy and bans maps, ban_gen; trace maps, nat_mappings, the port salt,
    # the full_cone counter and flag)
    assert h.const("V6NAT_LAYOUT_VERSION") == 8
    clear(loaded)
    for i, mode in enumerate(GATEWAY_MODES):
        entry = NetworkEntry(i + 1, 1, masquerade=False, icc=True, internal=mode == "isolated", snat_addr=None,
                             mode=mode)
        loaded.networks.put(IPv6Network(f"fd00:{i + 1}::/64"), entry)
        assert loaded.networks.get(IPv6Network(f"fd00:{i + 1}::/64")) == entry
    clear(loaded)

"""Test-only handles on a loaded `Datapath`: the same programs and maps attaching in another netns,
every map emptied, and conntrack halves read and removed one by one (what LRU eviction does). Used by tests/datapath and bench/; the daemon never needs either.

Imports: v6nat_ebpf.datapath (and reaches into a Datapath's maps, which is why it lives apart).
"""

from __future__ import annotations

import copy
import os

from v6nat_ebpf.datapath import Datapath, layout


def in_netns(dp: Datapath, netns: str | None) -> Datapath:
    """The same programs and maps, attaching in another network namespace
    (one loaded datapath serving several namespaces). Closing the view closes the shared map fds
    and its own copies of the program fds."""
    view = copy.copy(dp)
    view.netns = netns
    view._prog_fds = {name: os.dup(fd) for name, fd in dp._prog_fds.items()}
    return view


def clear(dp: Datapath) -> None:
    """Empty every hash map and zero the arrays but config (set_config's), between tests that share one
    loaded datapath: the trace filter is then off."""
    for name, spec in dp.specs.items():
        m = dp._maps[name]
        if spec.type == layout.RINGBUF or name == "config":
            continue
        if spec.type in (layout.ARRAY, layout.PERCPU_ARRAY):
            zero = bytes(m.slot * m.ncpus)
            for i in range(spec.max_entries):
                m.update(layout.u32(i), zero)
            continue
        for kb in m.keys():
            m.delete(spec.key.from_buffer_copy(kb))


def ct_halves(dp: Datapath) -> dict[bytes, layout.RawCtEntry]:
    """Key bytes -> half, of both conntrack tables."""
    return {kb: half for table in dp.conntrack.tables for kb, half in table._halves().items()}


def ct_half(dp: Datapath, key: layout.RawCtKey) -> layout.RawCtEntry | None:
    for table in dp.conntrack.tables:
        raw = table.raw.lookup(key)
        if raw is not None:
            return layout.RawCtEntry.from_buffer_copy(raw)
    return None


def ct_delete_half(dp: Datapath, key: layout.RawCtKey) -> bool:
    """Remove one half, as LRU eviction does."""
    return any([table.raw.delete(key) for table in dp.conntrack.tables])

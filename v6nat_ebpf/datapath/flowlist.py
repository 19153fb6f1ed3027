"""Listing the conntrack flows (`v6nat flows`): each pair as one flat FlowRecord, decoded straight from
BPF_MAP_LOOKUP_BATCH's buffers with struct.Struct (offsets from layout.py), the halves told apart in C.

Imports the standard library, errors and datapath.{bpfsys,layout,pins}: the command reads the pinned
maps without the loader's or the control plane's imports.
"""

from __future__ import annotations

import ctypes as ct
import struct
import time
from array import array
from dataclasses import dataclass
from functools import cache
from itertools import chain, compress, repeat
from operator import itemgetter
from pathlib import Path
from typing import Any, Iterable, Iterator

from v6nat_ebpf.datapath import layout
from v6nat_ebpf.datapath.bpfsys import BpfMap
from v6nat_ebpf.datapath.pins import open_maps, pinned_specs

_NS = 1_000_000_000

# The two conntrack tables (bpf/lib/conntrack.h): flows that saw a reply, flows that have not yet.
CONNTRACK_TABLES = ("conntrack", "ct_unassured")

# A Flow as one flat tuple, for listing 100,000s of flows (`v6nat flows`) with no object per flow, tuple or
# address: proto, kind, state, the original tuple (saddr, daddr, sport, dport), the translated one (the same
# four), packets, bytes, age_s, idle_s, mapping_id; addresses as their 16 raw bytes.
FlowRecord = tuple[int, str, str, bytes, bytes, int, int, bytes, bytes, int, int, int, int, float, float, int]


def _fields_struct(ctype: type[ct.Structure], fields: Iterable[tuple[str, str]]) -> struct.Struct:
    """A struct.Struct of the size of the ctypes structure `ctype` that unpacks `fields` ((name,
    struct code), in order of offset) in one call, skipping the bytes between and after them (so
    `iter_unpack` walks a buffer of such records)."""
    fmt, at = "<", 0
    for name, code in fields:
        offset = getattr(ctype, name).offset
        if offset < at:
            raise ValueError(f"{ctype.__name__}.{name}: fields must come in order of offset")
        fmt += f"{offset - at}x{code}"
        at = offset + struct.calcsize("<" + code)
    return struct.Struct(f"{fmt}{ct.sizeof(ctype) - at}x")


# What a flow listing reads of a conntrack key and half. Ports are in network order: unpacked as
# little-endian u16 they come byte-swapped, which _CtDecoding.net_port undoes.
_CT_KEY_FIELDS = _fields_struct(layout.RawCtKey, [("saddr", "16s"), ("daddr", "16s"), ("sport", "H"),
                                                  ("dport", "H"), ("proto", "B")])
_CT_HALF_FIELDS = _fields_struct(layout.RawCtEntry, [
    ("saddr", "16s"), ("daddr", "16s"), ("sport", "H"), ("dport", "H"), ("kind", "B"), ("dir", "B"),
    ("tcp_state", "B"), ("mapping_id", "I"), ("created_ns", "Q"), ("last_seen_ns", "Q"), ("packets", "Q"),
    ("bytes", "Q")])
_CT_REPLY_FIELDS = _fields_struct(layout.RawCtEntry, [("last_seen_ns", "Q"), ("packets", "Q"), ("bytes", "Q")])


@dataclass(frozen=True)
class _CtDecoding:
    """What flow_records looks up per half, from the header."""

    kind_names: list[str]  # CT_KIND_* value -> name (the number as text for any other)
    state_names: list[str]  # CT_TCP_* value -> name
    net_port: list[int]  # a network-order port unpacked little-endian -> the port
    dir_at: int  # offset of a half's direction byte
    original: int  # its value in an original half
    is_original: bytes  # bytes.translate tables: direction byte -> 1 for an original half, else 0
    is_reply: bytes  # ... -> 1 for any other (a reply half), else 0


@cache
def _ct_decoding() -> _CtDecoding:
    kinds, states = layout.header().names("CT_KIND_"), layout.header().names("CT_TCP_")
    original = layout.header().const("CT_DIR_ORIGINAL")
    swapped = array("H", range(65536))
    swapped.byteswap()
    return _CtDecoding(
        kind_names=[kinds.get(i, str(i)) for i in range(256)],
        state_names=[states.get(i, str(i)) for i in range(256)],
        net_port=swapped.tolist(),
        dir_at=layout.RawCtEntry.dir.offset,
        original=original,
        is_original=bytes(i == original for i in range(256)),
        is_reply=bytes(i != original for i in range(256)),
    )


def flow_records(raw: BpfMap, now: int) -> Iterator[FlowRecord]:
    """Every pair of one conntrack table (a lone half by itself), its original half first, aged at `now`
    (CLOCK_MONOTONIC ns). Halves are unpacked straight from the batch buffers and told apart by their
    direction byte in C (bytes.translate, itertools.compress): Python sees each pair once, and keeps
    only the counters of reply halves."""
    d = _ct_decoding()
    kinds, states, port = d.kind_names, d.state_names, d.net_port
    ks, vs = raw.key_size, raw.value_size
    whole_key = struct.Struct(f"{ks}s")  # a key's bytes, as the replies' dict holds them
    chunks = [(keys, values, values[d.dir_at::vs]) for keys, values, _ in raw.batches()]
    replies: dict[bytes, tuple[int, int, int]] = {}  # key -> (last_seen, packets, bytes) of each reply half
    for keys, values, directions in chunks:
        is_reply = directions.translate(d.is_reply)
        replies.update(zip(map(itemgetter(0), compress(whole_key.iter_unpack(keys), is_reply)),
                           compress(_CT_REPLY_FIELDS.iter_unpack(values), is_reply)))
    originals = chain.from_iterable(  # unpacked at the offsets of original halves only
        zip(map(_CT_KEY_FIELDS.unpack_from, repeat(keys), compress(range(0, len(keys), ks), is_original)),
            map(_CT_HALF_FIELDS.unpack_from, repeat(values), compress(range(0, len(values), vs), is_original)))
        for keys, values, is_original in ((k, v, dirs.translate(d.is_original)) for k, v, dirs in chunks))

    def lone() -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...]]]:
        """Reply halves whose original is gone (evicted), once the originals took theirs."""
        if replies:
            for keys, values, _ in chunks:
                for whole, key, half in zip(map(itemgetter(0), whole_key.iter_unpack(keys)),
                                            _CT_KEY_FIELDS.iter_unpack(keys), _CT_HALF_FIELDS.iter_unpack(values)):
                    if whole in replies:
                        yield key, half

    mirror, pop, original = _CT_KEY_FIELDS.pack, replies.pop, d.original
    for ((saddr, daddr, sport, dport, proto),
         (new_saddr, new_daddr, new_sport, new_dport, kind, direction, state, mapping_id, created, last,
          packets, nbytes)) in chain(originals, lone()):
        # An original's reply half has the translated tuple, reversed, as its key (ct_key_mirror in
        # bpf/lib/conntrack.h, padding zeroed).
        peer = pop(mirror(new_daddr, new_saddr, new_dport, new_sport, proto), None) if direction == original else None
        if peer is not None:
            peer_last, peer_packets, peer_bytes = peer
            packets += peer_packets
            nbytes += peer_bytes
            if peer_last > last:
                last = peer_last
        yield (proto, kinds[kind], states[state], saddr, daddr, port[sport], port[dport], new_saddr, new_daddr,
               port[new_sport], port[new_dport], packets, nbytes, (now - created) / _NS if now > created else 0.0,
               (now - last) / _NS if now > last else 0.0, mapping_id)


def pinned_flow_records(pin_path: str | Path) -> Iterator[FlowRecord]:
    """Every flow of the datapath pinned under `pin_path` (both tables), after checking the pins."""
    pins, specs = pinned_specs(pin_path)
    tables = open_maps(pins, {name: specs[name] for name in CONNTRACK_TABLES})
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    try:
        for raw in tables.values():
            yield from flow_records(raw, now)
    finally:
        for raw in tables.values():
            raw.close()

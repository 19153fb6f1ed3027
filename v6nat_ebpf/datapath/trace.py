"""The kernel side of `v6nat trace`: the trace_filter record, the trace_events
ring buffer and the trace_state losses of bpf/lib/trace.h, on pinned maps.

A Tracer writes its filter with a lease (expires_ns) that it renews while it
reads, so the programs stop emitting by themselves when a tracer dies without
cleaning up; on exit, also on an exception or a signal turned into one, it
puts the record back as it found it. One tracer at a time per datapath: a
filter that is on and unexpired belongs to another one, and is refused.

Imports bcc's libbcc (the ring buffer consumer) inside functions only, the
standard library, and datapath.{bpfsys,layout}.
"""

from __future__ import annotations

import ctypes as ct
import time
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

from v6nat_ebpf.datapath import bpfsys, layout
from v6nat_ebpf.errors import V6natError

LEASE_NS = 5_000_000_000  # how long a filter stays on without its tracer renewing it
RENEW_NS = 1_000_000_000
DEFAULT_RATE = 200  # events per second and CPU
TC_VERDICTS = {-1: "continue", 0: "ok", 2: "drop", 7: "redirect"}
KINDS = {1: "dnat", 2: "snat", 3: "hairpin"}
DIRS = {0: "original", 1: "reply"}


def _now_ns() -> int:
    """The programs' clock (ktime_get_coarse_ns), within a tick."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def _be16(port: int) -> int:
    return int.from_bytes(port.to_bytes(2, "big"), "little")


def _port(raw: int) -> int:
    return int.from_bytes(raw.to_bytes(2, "little"), "big")


@dataclass(frozen=True)
class TraceFilter:
    """What to show; None matches anything. `prefix` and `port` match either
    end of the packet, before or after translation."""

    prefix: IPv6Network | None = None
    port: int | None = None
    proto: int | None = None
    mapping_id: int | None = None
    drops_only: bool = False
    rate: int = DEFAULT_RATE

    def raw(self, expires_ns: int) -> layout.RawTraceFilter:
        r = layout.RawTraceFilter()
        if self.prefix is not None:
            r.addr = layout.Addr(*self.prefix.network_address.packed)
            r.prefixlen = self.prefix.prefixlen  # ::/0 is 0: no condition
        r.port = _be16(self.port) if self.port else 0
        r.proto = self.proto or 0
        r.mapping_id = self.mapping_id or 0
        h = layout.header()
        r.flags = h.const("V6NAT_TRACE_ON") | (h.const("V6NAT_TRACE_DROPS") if self.drops_only else 0)
        r.rate = self.rate
        r.expires_ns = expires_ns
        return r


@dataclass(frozen=True)
class Tuple:
    saddr: IPv6Address
    daddr: IPv6Address
    sport: int
    dport: int


@dataclass(frozen=True)
class TraceEvent:
    """One packet at one hook: what arrived, what left, and why."""

    ts_ns: int
    hook: str
    ifindex: int
    proto: int
    before: Tuple
    after: Tuple
    verdict: str  # "drop", "redirect", "continue"
    drop_reason: str | None
    kind: str | None  # the flow the arriving tuple belongs to: dnat, snat, hairpin
    direction: str | None  # that flow's half: original, reply
    mapping_id: int

    @property
    def translated(self) -> bool:
        return self.before != self.after

    @classmethod
    def from_raw(cls, raw: layout.RawTraceEvent) -> TraceEvent:
        h = layout.header()
        no_drop = h.const("V6NAT_TRACE_NO_DROP")
        reason = None
        if raw.drop_reason != no_drop:
            index = raw.drop_reason - len(h.actions)
            reason = h.drop_reasons[index] if 0 <= index < len(h.drop_reasons) else str(raw.drop_reason)
        return cls(
            ts_ns=raw.ts_ns,
            hook=h.hooks[raw.hook] if raw.hook < len(h.hooks) else str(raw.hook),
            ifindex=raw.ifindex,
            proto=raw.proto,
            before=Tuple(IPv6Address(bytes(raw.saddr)), IPv6Address(bytes(raw.daddr)), _port(raw.sport),
                         _port(raw.dport)),
            after=Tuple(IPv6Address(bytes(raw.new_saddr)), IPv6Address(bytes(raw.new_daddr)),
                        _port(raw.new_sport), _port(raw.new_dport)),
            verdict=TC_VERDICTS.get(raw.verdict, str(raw.verdict)),
            drop_reason=reason,
            kind=KINDS.get(raw.kind),
            direction=DIRS.get(raw.dir) if raw.kind else None,
            mapping_id=raw.mapping_id,
        )


@dataclass(frozen=True)
class TraceLosses:
    limited: int  # over the rate limit
    lost: int  # the ring buffer was full


class Tracer:
    """The trace_* maps of one datapath (fds owned by the caller's Datapath)."""

    def __init__(self, filter_map: bpfsys.BpfMap, state_map: bpfsys.BpfMap, events_fd: int) -> None:
        self._filter = filter_map
        self._state = state_map
        self._events_fd = events_fd
        self._saved: bytes | None = None
        self._start = TraceLosses(0, 0)
        self._renewed_ns = 0
        self._want: TraceFilter | None = None
        self._ring: int | None = None
        self._batch: list[TraceEvent] = []
        self._discard = False
        self._callback = None  # kept alive as long as the ring buffer that calls it

    def current(self) -> layout.RawTraceFilter:
        raw = self._filter.lookup(ct.c_uint32(0))
        return layout.RawTraceFilter.from_buffer_copy(raw) if raw else layout.RawTraceFilter()

    def start(self, want: TraceFilter) -> None:
        """Turn the trace on with `want`; V6natError when another tracer holds it."""
        cur = self.current()
        if cur.flags & layout.header().const("V6NAT_TRACE_ON") and cur.expires_ns > _now_ns():
            raise V6natError("another `v6nat trace` is running on this datapath (its filter is on); "
                             "stop it first, or wait for its lease to run out (5 s after it died)")
        from bcc.libbcc import _RINGBUF_CB_TYPE, lib

        self._callback = _RINGBUF_CB_TYPE(self._on_event)
        self._ring = lib.bpf_new_ringbuf(self._events_fd, self._callback, None)
        if not self._ring:
            raise V6natError("cannot open the trace_events ring buffer")
        self._discard = True
        lib.bpf_consume_ringbuf(self._ring)  # what an earlier tracer left unread
        self._discard = False
        self._saved = bytes(cur)
        self._start = self.losses()
        self._want = want
        self._renew()

    def _renew(self) -> None:
        assert self._want is not None
        now = _now_ns()
        self._filter.update(ct.c_uint32(0), self._want.raw(now + LEASE_NS))
        self._renewed_ns = now

    def stop(self) -> None:
        """Put the filter back as start() found it (a no-op when not started)."""
        if self._saved is not None:
            self._filter.update(ct.c_uint32(0), self._saved)
            self._saved = None
        if self._ring:
            from bcc.libbcc import lib

            lib.bpf_free_ringbuf(self._ring)
            self._ring = None

    def _on_event(self, _ctx: int, data: int, length: int) -> int:
        size = ct.sizeof(layout.RawTraceEvent)
        if not self._discard and length >= size:
            raw = layout.RawTraceEvent.from_buffer_copy(ct.string_at(data, size))
            self._batch.append(TraceEvent.from_raw(raw))
        return 0

    def __enter__(self) -> Tracer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def losses(self) -> TraceLosses:
        """Events not delivered since start(), over every CPU."""
        raw = self._state.lookup(ct.c_uint32(0)) or b""
        size = ct.sizeof(layout.RawTraceState)
        slot = self._state.slot
        limited = lost = 0
        for cpu in range(len(raw) // slot):
            st = layout.RawTraceState.from_buffer_copy(raw[cpu * slot: cpu * slot + size])
            limited += st.limited
            lost += st.lost
        return TraceLosses(limited - self._start.limited, lost - self._start.lost)

    def poll(self, timeout_ms: int) -> list[TraceEvent]:
        """The events that came within `timeout_ms` (maybe none); renews the
        lease. Only between start() and stop()."""
        from bcc.libbcc import lib

        if not self._ring:
            raise V6natError("the tracer is not started")
        if _now_ns() - self._renewed_ns >= RENEW_NS:
            self._renew()
        lib.bpf_poll_ringbuf(self._ring, timeout_ms)
        batch, self._batch = self._batch, []
        return batch

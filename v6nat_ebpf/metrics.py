"""What a v6nat daemon shows about itself: Prometheus metrics, health endpoints, the status snapshot.

Lives here:
- `ControlPlaneStats`: the few facts only the daemon knows (Docker connection, events, reconcile
  timings, resyncs, GC runs, readiness, the labels of each published mapping). The daemon calls its
  methods; it is thread-safe.
- `take_snapshot(dp, stats)`: every number, read at call time from the datapath's BPF maps and from
  `ControlPlaneStats`, as one frozen `Snapshot`. The collector and `v6nat status` both use it, so a
  person and Prometheus see the same figures.
- `V6natCollector`: a prometheus-client custom collector turning a fresh `Snapshot` into metric
  families on every scrape (no polling loop, no cached copies).
- `render_metrics(snapshot, accept)`: the `/metrics` body, byte for byte what prometheus-client's encoder
  makes of those families, but with the per-mapping samples written from label text worked out once per
  set of mappings (`MappingSeries`): at 50,000 mappings they are 100,000 of a scrape's samples.
- `start_metrics_server(listen, dp, stats)`: `/metrics`, `/healthz`, `/readyz` and `/status`
  (the snapshot as JSON).

Must not import: docker, pyroute2, the daemon, the reconciler or the CLI. It reads the datapath only
through the read methods listed in `DatapathReader`.
"""

from __future__ import annotations

import bisect
import ipaddress
import json
import logging
import platform
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socket import AF_INET, AF_INET6
from typing import Any, Iterable, Iterator, Mapping, Protocol, Sequence

import bcc
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import UNDERSCORES, escape_label_name, escape_metric_name
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from v6nat_ebpf import __version__
from v6nat_ebpf.errors import V6natError

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "[::1]:9661"

# Datapath counter ids (see datapath-api.md) and how they are exported.
TRANSLATION_KINDS = ("dnat", "snat", "hairpin", "reverse")
PASS_COUNTER = "pass"
DROP_PREFIX = "drop_"
SNAT_EXHAUSTED_REASON = "ports_exhausted"
# The other datapath counters (bpf/v6nat.h V6NAT_ACTIONS), each its own metric; a counter missing
# from this table is still exported, as v6nat_datapath_events_total{event="<name>"}.
EVENT_METRICS = {
    "icmp_error": ("v6nat_icmp_errors_translated_total", "ICMPv6 errors quoting a flow, translated."),
    "fragment": ("v6nat_fragments_translated_total", "Non-first fragments of a flow, translated."),
    "malformed": ("v6nat_malformed_packets_total", "Unparsable packets, passed untranslated."),
    "new_flow": ("v6nat_conntrack_created_flows_total", "Conntrack flows (entry pairs) created."),
    "ct_rebuilt": (
        "v6nat_conntrack_rebuilt_halves_total",
        "Conntrack halves found missing (evicted by the LRU) and rebuilt from the other half.",
    ),
    "redirect": ("v6nat_fastpath_redirected_packets_total", "Translated packets sent straight to the target interface (fast path)."),
    "redirect_peer": (
        "v6nat_fastpath_peer_delivered_packets_total",
        "Translated packets delivered straight into the container's namespace (fast path, past the bridge).",
    ),
    "fib_miss": ("v6nat_fastpath_fib_misses_total", "Fast-path candidates with no usable route: left to the host stack."),
    "to_stack": ("v6nat_fastpath_declined_packets_total", "Translated packets the fast path declined: left to the host stack."),
}

PROTOCOL_NAMES = {6: "tcp", 17: "udp", 58: "icmpv6"}

RECONCILE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

MAPPING_LABELS = ("protocol", "host_port", "container", "network")
# The per-mapping counter families (names without _total, as prometheus-client keeps them) and the
# index of their value in a mapping's (packets, bytes).
MAPPING_FAMILIES = {
    "v6nat_mapping_packets": ("Packets through a published mapping (both directions).", 0),
    "v6nat_mapping_bytes": ("Bytes through a published mapping (both directions).", 1),
}


class DatapathReader(Protocol):
    """The read side of `v6nat_ebpf.datapath.Datapath` that metrics use (see datapath-api.md)."""

    def counters(self) -> dict[str, int]: ...
    def mapping_stats(self) -> dict[int, tuple[int, int]]: ...
    def map_fill(self, conntrack_entries: int | None = None) -> dict[str, tuple[int, int]]: ...
    def conntrack_summary(self) -> Any: ...  # ConntrackSummary: entries, flows, snat_ports
    def snat_allocations(self) -> Any: ...  # SnatAllocations: buckets (most tries, claims), tries
    def attached(self) -> dict[str, str]: ...
    @property
    def config(self) -> Any: ...  # DatapathConfig: snat_port_min, snat_port_max


def protocol_name(proto: int) -> str:
    """IP protocol number -> the label value used everywhere in metrics ("tcp", "udp", "icmpv6")."""
    return PROTOCOL_NAMES.get(proto, str(proto))


@dataclass(frozen=True)
class MappingLabels:
    """How one published mapping is labelled: protocol ("tcp"/"udp"), host port, container name, network name."""

    protocol: str
    host_port: int
    container: str
    network: str


@dataclass(frozen=True)
class MappingSeries:
    """The per-mapping series of one set of mappings, worked out once per set (labels change only with it).

    Two mapping ids can share labels (one container port published on two host addresses): their
    series is one, the sum of both. Series are in mapping id order.
    """

    labels: tuple[Mapping[str, str], ...]  # label name -> value, one per series
    label_text: tuple[str, ...]  # the same as the text formats write it: 'container="web",host_port="8080",...'
    mapping_ids: tuple[tuple[int, ...], ...]  # the ids summed into each series

    @classmethod
    def of(cls, mappings: Mapping[int, MappingLabels]) -> MappingSeries:
        ids: dict[MappingLabels, list[int]] = {}
        for mapping_id, labels in sorted(mappings.items()):
            ids.setdefault(labels, []).append(mapping_id)
        label_dicts = tuple(
            dict(zip(MAPPING_LABELS, (m.protocol, str(m.host_port), m.container, m.network))) for m in ids
        )
        return cls(
            labels=label_dicts,
            label_text=tuple(
                ",".join(f'{name}="{_escape_label_value(value)}"' for name, value in sorted(d.items())) for d in label_dicts
            ),
            mapping_ids=tuple(tuple(group) for group in ids.values()),
        )

    def values(self, traffic: Mapping[int, tuple[int, int]]) -> list[tuple[int, int]]:
        """(packets, bytes) of each series from the datapath's per-mapping-id counts."""
        zero = (0, 0)
        return [
            traffic.get(ids[0], zero) if len(ids) == 1
            else (sum(traffic.get(i, zero)[0] for i in ids), sum(traffic.get(i, zero)[1] for i in ids))
            for ids in self.mapping_ids
        ]


def _escape_label_value(value: str) -> str:
    # The exposition formats' escaping of label values (the same in text 0.0.4 and OpenMetrics).
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


@dataclass(frozen=True)
class Histogram:
    """A finished histogram: cumulative counts per upper bound (the last bound is +Inf), sum and count."""

    buckets: tuple[tuple[float, int], ...]
    sum: float
    count: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "buckets": {_bound_text(le): n for le, n in self.buckets},
            "sum": self.sum,
            "count": self.count,
        }


@dataclass
class _HistogramAccumulator:
    bounds: tuple[float, ...]
    counts: list[int] = field(init=False)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def finish(self) -> Histogram:
        cumulative, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts):
            running += n
            cumulative.append((bound, running))
        return Histogram(tuple(cumulative), self.total, running)


@dataclass(frozen=True)
class ControlPlaneView:
    """A consistent copy of `ControlPlaneStats` taken at one instant."""

    maps_adopted: bool
    expected_interfaces: Mapping[str, str]
    docker_connected: bool
    first_sync_done: bool
    last_resync_s: float
    docker_events: Mapping[str, int]
    reconcile: Histogram
    map_write_errors: int
    gc_runs: int
    gc_removed: int
    mappings: Mapping[int, MappingLabels]
    mapping_series: MappingSeries


class ControlPlaneStats:
    """Facts the daemon reports as it runs; read by the collector, `/readyz` and `/status`.

    Every method is cheap and thread-safe; call them from whichever thread does the work.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._maps_adopted = False
        self._expected_interfaces: dict[str, str] = {}
        self._docker_connected = False
        self._first_sync_done = False
        self._last_resync_s = 0.0
        self._docker_events: Counter[str] = Counter()
        self._reconcile = _HistogramAccumulator(RECONCILE_BUCKETS_S)
        self._map_write_errors = 0
        self._gc_runs = 0
        self._gc_removed = 0
        self._mappings: dict[int, MappingLabels] = {}
        self._mapping_series: MappingSeries | None = None  # of _mappings; worked out at the first view after a change

    def maps_adopted(self, adopted: bool = True) -> None:
        """The datapath's maps are created or adopted (after `Datapath.open`)."""
        with self._lock:
            self._maps_adopted = adopted

    def expect_interfaces(self, roles: Mapping[str, str]) -> None:
        """The interfaces the daemon means to have programs on: ifname -> "public" | "bridge" (replaces the set)."""
        with self._lock:
            self._expected_interfaces = dict(roles)

    def docker_connected(self, up: bool) -> None:
        """The Docker event stream is up (True) or lost (False)."""
        with self._lock:
            self._docker_connected = up

    def event_handled(self, kind: str) -> None:
        """One Docker event was handled; `kind` is from a small fixed vocabulary (e.g. "container_start")."""
        with self._lock:
            self._docker_events[kind] += 1

    def observe_reconcile(self, seconds: float, write_errors: int = 0) -> None:
        """One reconcile pass took `seconds`; `write_errors` map writes in it failed."""
        with self._lock:
            self._reconcile.observe(seconds)
            self._map_write_errors += write_errors

    def resynced(self, now: float | None = None) -> None:
        """A full resync with Docker succeeded at `now` (Unix time, default: the current time)."""
        with self._lock:
            self._first_sync_done = True
            self._last_resync_s = time.time() if now is None else now

    def gc_ran(self, removed: int) -> None:
        """One conntrack GC pass ran and removed `removed` flows."""
        with self._lock:
            self._gc_runs += 1
            self._gc_removed += removed

    def set_mappings(self, mappings: Mapping[int, MappingLabels]) -> None:
        """The published mappings now in the datapath: mapping_id -> labels (replaces the set).

        Per-mapping series exist exactly for these ids, so a removed mapping's series go with it.
        """
        with self._lock:
            self._mappings = dict(mappings)
            self._mapping_series = None

    def view(self) -> ControlPlaneView:
        with self._lock:
            if self._mapping_series is None:
                self._mapping_series = MappingSeries.of(self._mappings)
            return ControlPlaneView(
                maps_adopted=self._maps_adopted,
                expected_interfaces=dict(self._expected_interfaces),
                docker_connected=self._docker_connected,
                first_sync_done=self._first_sync_done,
                last_resync_s=self._last_resync_s,
                docker_events=dict(self._docker_events),
                reconcile=self._reconcile.finish(),
                map_write_errors=self._map_write_errors,
                gc_runs=self._gc_runs,
                gc_removed=self._gc_removed,
                mappings=self._mappings,  # replaced, never mutated, by set_mappings
                mapping_series=self._mapping_series,
            )


@dataclass(frozen=True)
class BuildInfo:
    version: str
    kernel: str
    bcc_version: str


def build_info() -> BuildInfo:
    return BuildInfo(version=__version__, kernel=platform.release(), bcc_version=str(bcc.__version__))


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str  # one line; "ready" when ready


@dataclass(frozen=True)
class Snapshot:
    """Every number v6nat exports, read at one time. Counters are totals since the maps were created."""

    taken_at_s: float
    build: BuildInfo
    translations: Mapping[str, int]
    passed: int
    drops: Mapping[str, int]
    events: Mapping[str, int]  # every other datapath counter, by its name in bpf/v6nat.h
    mapping_traffic: Mapping[int, tuple[int, int]]  # mapping id -> (packets, bytes); ids of control.mappings are exported
    conntrack_flows: Mapping[tuple[str, str, str], int]  # (protocol, kind, state) -> flows
    maps: Mapping[str, tuple[int, int]]  # map -> (entries, capacity)
    snat_ports_in_use: Mapping[str, int]  # protocol -> distinct (address, port) in use
    snat_pool_ports: int  # ports per SNAT address and protocol
    snat_allocation_tries: Histogram  # port claims by candidates tried; +Inf also holds the exhausted ones
    interfaces: Mapping[str, tuple[str, bool]]  # ifname -> (role, attached now)
    control: ControlPlaneView
    readiness: Readiness

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for `v6nat status --json` and `/status`)."""
        c = self.control
        return {
            "taken_at": self.taken_at_s,
            "build": vars(self.build),
            "ready": self.readiness.ready,
            "ready_reason": self.readiness.reason,
            "translations": dict(self.translations),
            "passed": self.passed,
            "drops": dict(self.drops),
            "snat": {
                "exhausted": self.drops.get(SNAT_EXHAUSTED_REASON, 0),
                "ports_in_use": dict(self.snat_ports_in_use),
                "pool_ports": self.snat_pool_ports,
                "allocation_tries": self.snat_allocation_tries.as_dict(),
            },
            "events": dict(self.events),
            "mappings": [
                {"mapping_id": mapping_id, **vars(labels), "packets": packets, "bytes": octets}
                for mapping_id, labels in sorted(c.mappings.items())
                for packets, octets in (self.mapping_traffic.get(mapping_id, (0, 0)),)
            ],
            "conntrack_flows": [
                {"protocol": p, "kind": k, "state": s, "flows": n}
                for (p, k, s), n in sorted(self.conntrack_flows.items())
            ],
            "maps": {
                name: {"entries": e, "capacity": cap} for name, (e, cap) in sorted(self.maps.items())
            },
            "interfaces": {
                name: {"role": role, "attached": up} for name, (role, up) in sorted(self.interfaces.items())
            },
            "control_plane": {
                "docker_connected": c.docker_connected,
                "first_sync_done": c.first_sync_done,
                "last_resync": c.last_resync_s or None,
                "docker_events": dict(c.docker_events),
                "reconcile_seconds": c.reconcile.as_dict(),
                "map_write_errors": c.map_write_errors,
                "gc_runs": c.gc_runs,
                "gc_removed_flows": c.gc_removed,
            },
        }


def readiness(control: ControlPlaneView, attached: Mapping[str, str]) -> Readiness:
    """Ready = maps adopted, programs attached on every expected interface, first Docker sync done."""
    if not control.maps_adopted:
        return Readiness(False, "maps not adopted yet")
    if not control.expected_interfaces:
        return Readiness(False, "no interface to attach to yet")
    missing = sorted(set(control.expected_interfaces) - set(attached))
    if missing:
        return Readiness(False, "programs not attached on " + ", ".join(missing))
    if not control.first_sync_done:
        return Readiness(False, "first sync with Docker not done yet")
    return Readiness(True, "ready")


def take_snapshot(dp: DatapathReader, stats: ControlPlaneStats) -> Snapshot:
    """Read every figure now: the BPF maps (per-CPU summed by the datapath) and the control-plane facts."""
    control = stats.view()
    counters = dp.counters()
    translations = {kind: counters.get(kind, 0) for kind in TRANSLATION_KINDS}
    drops = {name[len(DROP_PREFIX):]: n for name, n in counters.items() if name.startswith(DROP_PREFIX)}
    known = {*TRANSLATION_KINDS, PASS_COUNTER}
    events = {name: n for name, n in counters.items() if name not in known and not name.startswith(DROP_PREFIX)}

    conntrack = dp.conntrack_summary()
    conntrack_flows = {(protocol_name(proto), kind, state): n for (proto, kind, state), n in conntrack.flows.items()}

    attached = dp.attached()
    interfaces = {name: (role, name in attached) for name, role in control.expected_interfaces.items()}
    interfaces.update({name: (role, True) for name, role in attached.items()})

    return Snapshot(
        taken_at_s=time.time(),
        build=build_info(),
        translations=translations,
        passed=counters.get(PASS_COUNTER, 0),
        drops=drops,
        events=events,
        mapping_traffic=dp.mapping_stats(),
        conntrack_flows=conntrack_flows,
        maps=dp.map_fill(conntrack_entries=conntrack.entries),
        snat_ports_in_use={protocol_name(proto): n for proto, n in conntrack.snat_ports.items()},
        snat_pool_ports=dp.config.snat_port_max - dp.config.snat_port_min + 1,
        snat_allocation_tries=allocation_tries(dp.snat_allocations(), drops.get(SNAT_EXHAUSTED_REASON, 0)),
        interfaces=interfaces,
        control=control,
        readiness=readiness(control, attached),
    )


def allocation_tries(allocations: Any, exhausted: int) -> Histogram:
    """The datapath's SNAT port claims by tries needed (buckets counted apart) as a histogram; a claim that
    failed all its tries (the ports_exhausted drop) is an observation past the last bound, of that many tries."""
    cumulative, running = [], 0
    for most, claims in allocations.buckets:
        running += claims
        cumulative.append((float(most), running))
    last = allocations.buckets[-1][0]
    cumulative.append((float("inf"), running + exhausted))
    return Histogram(tuple(cumulative), float(allocations.tries + last * exhausted), running + exhausted)


def _bound_text(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class V6natCollector:
    """Prometheus collector: one `take_snapshot` per scrape, turned into `v6nat_*` metric families."""

    def __init__(self, dp: DatapathReader, stats: ControlPlaneStats) -> None:
        self._dp = dp
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        yield from snapshot_metrics(take_snapshot(self._dp, self._stats))


def snapshot_metrics(snap: Snapshot, mapping_samples: bool = True) -> Iterator[Metric]:
    """The metric families of one snapshot (one place that names every exported metric).

    `mapping_samples=False`: the per-mapping families come without samples (`render_metrics` writes them).
    """
    build = GaugeMetricFamily(
        "v6nat_build_info", "Version of v6nat, the kernel and bcc; always 1.", labels=["version", "kernel", "bcc_version"]
    )
    build.add_metric([snap.build.version, snap.build.kernel, snap.build.bcc_version], 1)
    yield build

    yield _labelled(CounterMetricFamily, "v6nat_translations_total", "Packets translated, by kind.", "kind", snap.translations)
    yield CounterMetricFamily("v6nat_passed_packets_total", "Packets the programs left untouched (not ours).", value=snap.passed)
    yield _labelled(CounterMetricFamily, "v6nat_drops_total", "Packets dropped, by reason.", "reason", snap.drops)
    unnamed = {}
    for event, n in snap.events.items():
        if event in EVENT_METRICS:
            yield CounterMetricFamily(*EVENT_METRICS[event], value=n)
        else:
            unnamed[event] = n
    if unnamed:
        yield _labelled(CounterMetricFamily, "v6nat_datapath_events_total", "Other datapath counters, by name.", "event", unnamed)

    yield from _mapping_metrics(snap, mapping_samples)

    flows = GaugeMetricFamily(
        "v6nat_conntrack_flows", "Tracked flows (one per entry pair), by protocol, kind and state.", labels=["protocol", "kind", "state"]
    )
    for labels, n in sorted(snap.conntrack_flows.items()):
        flows.add_metric(list(labels), n)
    yield flows

    entries = GaugeMetricFamily("v6nat_map_entries", "Entries in a BPF map.", labels=["map"])
    capacity = GaugeMetricFamily("v6nat_map_capacity_entries", "Maximum entries of a BPF map.", labels=["map"])
    ratio = GaugeMetricFamily("v6nat_map_fill_ratio", "Entries / capacity of a BPF map.", labels=["map"])
    for name, (n, cap) in sorted(snap.maps.items()):
        entries.add_metric([name], n)
        capacity.add_metric([name], cap)
        ratio.add_metric([name], n / cap if cap else 0.0)
    yield from (entries, capacity, ratio)

    yield _labelled(
        GaugeMetricFamily, "v6nat_snat_ports_in_use", "SNAT (address, port) pairs held by flows, by protocol.", "protocol", snap.snat_ports_in_use
    )
    yield _histogram(
        "v6nat_snat_allocation_tries",
        "SNAT (and hairpin) source port claims by candidate ports tried; +Inf: exhausted (gave up after the last bound).",
        snap.snat_allocation_tries,
    )
    yield GaugeMetricFamily(
        "v6nat_snat_pool_ports", "SNAT ports available per SNAT address and protocol.", value=snap.snat_pool_ports
    )
    c = snap.control
    yield GaugeMetricFamily("v6nat_mappings", "Published mappings in the datapath.", value=len(snap.control.mappings))
    yield GaugeMetricFamily("v6nat_docker_connected", "1 while the Docker event stream is up.", value=int(c.docker_connected))
    yield _labelled(CounterMetricFamily, "v6nat_docker_events_total", "Docker events handled, by kind.", "kind", c.docker_events)
    yield _histogram("v6nat_reconcile_duration_seconds", "Time of one reconcile pass.", c.reconcile)
    yield CounterMetricFamily("v6nat_map_write_errors_total", "BPF map writes that failed.", value=c.map_write_errors)
    yield GaugeMetricFamily(
        "v6nat_last_resync_timestamp_seconds", "Unix time of the last successful full resync with Docker (0: none yet).", value=c.last_resync_s
    )
    yield CounterMetricFamily("v6nat_conntrack_gc_runs_total", "Conntrack GC passes.", value=c.gc_runs)
    yield CounterMetricFamily("v6nat_conntrack_gc_removed_flows_total", "Flows removed by conntrack GC.", value=c.gc_removed)
    attached = GaugeMetricFamily(
        "v6nat_interface_attached", "1 if our programs are attached to the interface, 0 if expected but missing.", labels=["interface", "role"]
    )
    for name, (role, up) in sorted(snap.interfaces.items()):
        attached.add_metric([name, role], int(up))
    yield attached
    yield GaugeMetricFamily("v6nat_ready", "1 when /readyz answers 200.", value=int(snap.readiness.ready))


def _labelled(family: type, name: str, doc: str, label: str, values: Mapping[str, int]) -> Metric:
    metric = family(name, doc, labels=[label])
    for key, n in sorted(values.items()):
        metric.add_metric([key], n)
    return metric


def _histogram(name: str, doc: str, hist: Histogram) -> Metric:
    return HistogramMetricFamily(name, doc, buckets=[(_bound_text(le), n) for le, n in hist.buckets], sum_value=hist.sum)


def _mapping_metrics(snap: Snapshot, with_samples: bool) -> Iterable[Metric]:
    series = snap.control.mapping_series
    values = series.values(snap.mapping_traffic) if with_samples else []
    for name, (doc, index) in MAPPING_FAMILIES.items():
        family = CounterMetricFamily(name, doc, labels=MAPPING_LABELS)
        # Samples made here, not by add_metric: the label dicts are the series' own, made once per set of mappings.
        family.samples = [Sample(name + "_total", labels, v[index], None, None) for labels, v in zip(series.labels, values)]
        yield family


def render_metrics(snap: Snapshot, accept: str) -> tuple[bytes, str]:
    """The /metrics body for an `Accept` header, and its content type.

    Byte for byte what prometheus-client's encoder (text 0.0.4 or OpenMetrics, as negotiated) makes of
    `snapshot_metrics(snap)`; but the encoder gets the per-mapping families without their samples, and
    their lines are written here from the series' precomputed label text: through the encoder they took
    most of a scrape's time at 50,000 mappings. An escaping that renames our metric or label names
    (`escaping=dots`) gets the encoder's output for everything.
    """
    encoder, content_type = choose_encoder(accept)
    escaping = getattr(encoder, "keywords", {}).get("escaping", UNDERSCORES)  # choose_encoder's partial, or the default
    sample_names = [name + "_total" for name in MAPPING_FAMILIES]
    if any(escape_label_name(n, escaping) != n for n in MAPPING_LABELS) or any(
        escape_metric_name(n, escaping) != n for n in sample_names
    ):
        return encoder(_Families(list(snapshot_metrics(snap)))), content_type

    series = snap.control.mapping_series
    values = series.values(snap.mapping_traffic)
    parts: list[bytes] = []
    pending: list[Metric] = []
    for family in snapshot_metrics(snap, mapping_samples=False):
        pending.append(family)
        if family.name in MAPPING_FAMILIES:
            # The encoder writes the family's HELP and TYPE (and OpenMetrics' "# EOF", dropped: it goes last).
            parts.append(encoder(_Families(pending)).removesuffix(b"# EOF\n"))
            pending = []
            index = MAPPING_FAMILIES[family.name][1]
            prefix = family.name + "_total{"
            parts.append(
                "".join(
                    [f"{prefix}{text}}} {_counter_text(v[index])}\n" for text, v in zip(series.label_text, values)]
                ).encode()
            )
    parts.append(encoder(_Families(pending)))
    return b"".join(parts), content_type


def _counter_text(n: int) -> str:
    # floatToGoString(n), without its float checks for the common case: below 10**6 a non-negative int
    # is written as the float repr "n.0"; from 10**6 on Go's exponent form ("1.234567e+06") applies.
    return f"{n}.0" if 0 <= n < 1_000_000 else floatToGoString(n)


@dataclass(frozen=True)
class _Families:
    """Metric families in the shape an encoder reads (a registry: something with `collect()`)."""

    families: list[Metric]

    def collect(self) -> list[Metric]:
        return self.families


def render_status(status: Mapping[str, Any]) -> str:
    """A status dict (`Snapshot.as_dict()`, or `fetch_status()`) as aligned text for a person (`v6nat status`)."""
    build, cp, snat = status["build"], status["control_plane"], status["snat"]
    resync = "never" if not cp["last_resync"] else f"{status['taken_at'] - cp['last_resync']:.0f} s ago"
    exhausted = f"  exhausted: {snat['exhausted']}"
    in_use = ", ".join(f"{p} {n}" for p, n in sorted(snat["ports_in_use"].items())) or "none"
    in_use += f" (pool {snat['pool_ports']} per address and protocol)"
    sections = [
        "\n".join(
            (
                f"v6nat {build['version']}  kernel {build['kernel']}  bcc {build['bcc_version']}",
                f"ready: {'yes' if status['ready'] else 'no, ' + status['ready_reason']}",
                f"docker: {'connected' if cp['docker_connected'] else 'disconnected'}  last resync: {resync}  "
                f"events: {sum(cp['docker_events'].values())}  map write errors: {cp['map_write_errors']}",
                f"snat ports in use: {in_use}{exhausted}  gc runs: {cp['gc_runs']} removed flows: {cp['gc_removed_flows']}",
                f"snat port claims by tries: {_claims_by_tries(snat['allocation_tries'])}",
            )
        ),
        _table(
            ("INTERFACE", "ROLE", "ATTACHED"),
            [(n, i["role"], "yes" if i["attached"] else "NO") for n, i in status["interfaces"].items()],
        ),
        _table(
            ("TRANSLATED", "PACKETS"),
            [*((k, n) for k, n in status["translations"].items()), ("pass", status["passed"])],
        ),
        _table(("DROP REASON", "PACKETS"), sorted(status["drops"].items())),
        _table(
            ("MAP", "ENTRIES", "CAPACITY", "FILL"),
            [
                (n, m["entries"], m["capacity"], f"{m['entries'] / m['capacity']:.1%}" if m["capacity"] else "-")
                for n, m in status["maps"].items()
            ],
        ),
        _table(
            ("PROTO", "KIND", "STATE", "FLOWS"),
            [(f["protocol"], f["kind"], f["state"], f["flows"]) for f in status["conntrack_flows"]],
        ),
        _table(
            ("PROTO", "HOST PORT", "CONTAINER", "NETWORK", "PACKETS", "BYTES"),
            [(m["protocol"], m["host_port"], m["container"], m["network"], m["packets"], m["bytes"]) for m in status["mappings"]],
        ),
    ]
    return "\n\n".join(sections) + "\n"


def _claims_by_tries(histogram: Mapping[str, Any]) -> str:
    """The allocation-tries histogram of a status dict, per range of tries: "1: 5  2-3: 1  ...  exhausted: 0"."""
    parts, below, claims_below = [], 0, 0
    for bound, cumulative in sorted((float(text), n) for text, n in histogram["buckets"].items()):
        label = "exhausted" if bound == float("inf") else f"{below + 1:.0f}-{bound:.0f}" if bound > below + 1 else f"{bound:.0f}"
        parts.append(f"{label}: {cumulative - claims_below}")
        below, claims_below = bound, cumulative
    return "  ".join(parts)


def fetch_status(listen: str, timeout_s: float = 2.0) -> dict[str, Any]:
    """GET /status from the daemon serving on `listen`; V6natError (one line) when it does not answer."""
    host, port = parse_listen(listen)
    url = f"http://[{host}]:{port}/status" if ":" in host else f"http://{host}:{port}/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return json.load(reply)
    except (OSError, ValueError) as e:
        raise V6natError(f"no v6nat daemon answering on {listen}: {getattr(e, 'reason', e)}") from None


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    return "\n".join(
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in (header, *rows)
    )


def parse_listen(listen: str) -> tuple[str, int]:
    """"[addr]:port" (IPv6) or "a.b.c.d:port" -> (address, port); V6natError on anything else."""
    host, sep, port_text = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        addr = ipaddress.ip_address(host)
        port = int(port_text)
    except ValueError:
        raise V6natError(f"--metrics-listen {listen!r}: expected [IPv6-address]:port or IPv4-address:port") from None
    if not sep or not 0 <= port <= 65535 or (addr.version == 6 and not listen.startswith("[")):
        raise V6natError(f"--metrics-listen {listen!r}: expected [IPv6-address]:port or IPv4-address:port")
    return str(addr), port


class MetricsServer:
    """The HTTP server of one daemon; `port` is the bound port (useful with port 0), `shutdown()` stops it."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self.address: str = httpd.server_address[0]
        self.port: int = httpd.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"

    def shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def start_metrics_server(listen: str, dp: DatapathReader, stats: ControlPlaneStats) -> MetricsServer:
    """Serve /metrics, /healthz, /readyz and /status on `listen` ("[::1]:9661") from a thread; returns at once."""
    host, port = parse_listen(listen)
    if not ipaddress.ip_address(host).is_loopback:
        log.warning("metrics listen on non-loopback address %s: exposed beyond this host by explicit choice", listen)
    handler = _handler_class(dp, stats)
    server_class = type("_MetricsHTTPServer", (ThreadingHTTPServer,), {"address_family": AF_INET6 if ":" in host else AF_INET, "daemon_threads": True})
    try:
        httpd = server_class((host, port), handler)
    except OSError as e:
        raise V6natError(f"--metrics-listen {listen}: {e.strerror}") from None
    thread = threading.Thread(target=httpd.serve_forever, name="v6nat-metrics", daemon=True)
    thread.start()
    server = MetricsServer(httpd, thread)
    log.info("metrics on %s/metrics", server.url)
    return server


def _handler_class(dp: DatapathReader, stats: ControlPlaneStats) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            try:
                self._route(self.path.split("?", 1)[0])
            except Exception as e:  # a failed map read must answer 500, not kill the server thread
                log.exception("serving %s", self.path)
                self._reply(500, "text/plain; charset=utf-8", f"error: {e}\n".encode())

        def _route(self, path: str) -> None:
            if path == "/metrics":
                body, content_type = render_metrics(take_snapshot(dp, stats), self.headers.get("Accept", ""))
                self._reply(200, content_type, body)
            elif path == "/healthz":
                self._reply(200, "text/plain; charset=utf-8", b"ok\n")
            elif path == "/readyz":
                ready = readiness(stats.view(), dp.attached())
                self._reply(200 if ready.ready else 503, "text/plain; charset=utf-8", ready.reason.encode() + b"\n")
            elif path == "/status":
                body = json.dumps(take_snapshot(dp, stats).as_dict(), indent=2).encode()
                self._reply(200, "application/json", body)
            else:
                self._reply(404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz, /readyz, /status\n")

        def _reply(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    return Handler

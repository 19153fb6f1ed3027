"""The control plane's own figures: what only the daemon knows, kept thread-safe for the scrape.

Lives here: `ControlPlaneStats` (Docker connection, events, reconcile timings, resyncs, GC runs,
readiness inputs, the labels of each published mapping; the daemon calls its methods from any
thread), the consistent `ControlPlaneView` it hands out, `MappingLabels` and the `MappingSeries`
worked out once per set of mappings, and the `Histogram` values they use.

Imports: stdlib and v6nat_ebpf.model (protocol names) only (no prometheus_client, no datapath, no bcc).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

from v6nat_ebpf.model import protocol_name

RECONCILE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

MAPPING_LABELS = ("protocol", "host_port", "container", "network")


@dataclass(frozen=True, slots=True)
class MappingLabels:
    """How one published mapping is labelled: protocol ("tcp"/"udp"), host port, container name, network name."""

    protocol: str
    host_port: int
    container: str
    network: str

    @classmethod
    def of(cls, proto: int, host_port: int, container: str, network: str) -> MappingLabels:
        """The labels of a mapping of IP protocol `proto` (the one place a mapping's labels are made)."""
        return cls(protocol=protocol_name(proto), host_port=host_port, container=container, network=network)

    def as_dict(self) -> dict[str, str]:
        """Label name -> value, as exported."""
        return dict(zip(MAPPING_LABELS, (self.protocol, str(self.host_port), self.container, self.network)))


@dataclass(frozen=True)
class MappingSeries:
    """The per-mapping series of one set of mappings, worked out once per set (labels change only with it).

    Two mapping ids can share labels (one container port published on two host addresses): their
    series is one, the sum of both. Series are in mapping id order.
    """

    series_labels: tuple[MappingLabels, ...]  # one per series
    label_text: tuple[str, ...]  # the same as the text formats write it: 'container="web",host_port="8080",...'
    mapping_ids: tuple[tuple[int, ...], ...]  # the ids summed into each series

    @classmethod
    def of(cls, mappings: Mapping[int, MappingLabels]) -> MappingSeries:
        ids: dict[MappingLabels, list[int]] = {}
        for mapping_id, labels in sorted(mappings.items()):
            ids.setdefault(labels, []).append(mapping_id)
        return cls(
            series_labels=tuple(ids),
            label_text=tuple(
                ",".join(f'{name}="{_escape_label_value(value)}"' for name, value in sorted(m.as_dict().items()))
                for m in ids
            ),
            mapping_ids=tuple(tuple(group) for group in ids.values()),
        )

    @property
    def labels(self) -> list[dict[str, str]]:
        """Label name -> value, one per series: made on each call (only the encoder's own path, for an
        escaping that renames labels, needs them; the text is `label_text`), not kept for every mapping."""
        return [m.as_dict() for m in self.series_labels]

    def values(self, traffic: Mapping[int, tuple[int, ...]]) -> list[tuple[int, ...]]:
        """Each series' counts (a tuple per mapping id: packets, bytes, policy drops; or host-local connects,
        sendmsgs), from the datapath's per-mapping-id counts; an id without counts counts zero."""
        zero = (0, 0, 0)
        return [
            traffic.get(ids[0], zero) if len(ids) == 1
            else tuple(sum(column) for column in zip(*(traffic.get(i, zero) for i in ids)))
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
            "buckets": {bound_text(le): n for le, n in self.buckets},
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
    flows_forgotten: int
    mappings: Mapping[int, MappingLabels]
    mapping_series: MappingSeries
    networks: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # prefix -> (network name, gateway mode)
    policy_errors: tuple[tuple[str, str, str, str], ...] = ()  # (container, network, label, value) refused


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
        self._flows_forgotten = 0
        self._mappings: dict[int, MappingLabels] = {}
        self._mapping_series: MappingSeries | None = None  # of _mappings; worked out at the first view after a change
        self._networks: dict[str, tuple[str, str]] = {}
        self._policy_errors: tuple[tuple[str, str, str, str], ...] = ()

    def maps_adopted(self, adopted: bool = True) -> None:
        """The datapath's maps are created or adopted (after `Datapath.open`)."""
        with self._lock:
            self._maps_adopted = adopted

    def expect_interfaces(self, roles: Mapping[str, str]) -> None:
        """The interfaces the daemon means to have programs on: ifname -> "public" | "bridge" | "veth" (replaces the set)."""
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

    def flows_forgotten(self, removed: int) -> None:
        """The reconciler removed `removed` flows of containers or mappings Docker removed (or orphans at a resync)."""
        with self._lock:
            self._flows_forgotten += removed

    def set_mappings(self, mappings: Mapping[int, MappingLabels]) -> None:
        """The published mappings now in the datapath: mapping_id -> labels (replaces the set).

        Per-mapping series exist exactly for these ids, so a removed mapping's series go with it.
        """
        with self._lock:
            self._mappings = dict(mappings)
            self._mapping_series = None

    def set_networks(self, networks: Mapping[str, tuple[str, str]]) -> None:
        """The managed networks' prefixes now in the datapath: prefix -> (network name, gateway mode)."""
        with self._lock:
            self._networks = dict(networks)

    def set_policy_errors(self, errors: tuple[tuple[str, str, str, str], ...]) -> None:
        """The source-policy declarations that did not parse now: (container, network, label, value); their
        mappings are not published (replaces the set)."""
        with self._lock:
            self._policy_errors = tuple(errors)

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
                flows_forgotten=self._flows_forgotten,
                mappings=self._mappings,  # replaced, never mutated, by set_mappings
                mapping_series=self._mapping_series,
                networks=self._networks,  # replaced, never mutated, by set_networks
                policy_errors=self._policy_errors,
            )


def bound_text(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)

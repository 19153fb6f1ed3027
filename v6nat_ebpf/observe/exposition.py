"""The Prometheus exposition: metric families from a `Snapshot`, and the `/metrics` body.

- `V6natCollector`: a prometheus-client custom collector turning a fresh `Snapshot` into metric
  families on every scrape (no polling loop, no cached copies).
- `snapshot_metrics(snap)`: the one place that names every exported metric.
- `render_metrics(snapshot, accept)`: the `/metrics` body, byte for byte what prometheus-client's encoder
  makes of those families, but with the per-mapping samples written from label text worked out once per
  set of mappings (`MappingSeries`): at 50,000 mappings they are 100,000 of a scrape's samples.

Imports: stdlib, prometheus_client, observe.stats and observe.snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import UNDERSCORES, escape_label_name, escape_metric_name
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from v6nat_ebpf.observe.snapshot import DatapathReader, Snapshot, take_snapshot
from v6nat_ebpf.observe.stats import MAPPING_LABELS, ControlPlaneStats, Histogram, bound_text

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

# The per-mapping counter families (names without _total, as prometheus-client keeps them), the Snapshot
# field of their per-mapping-id counts, and the index of their value in those counts.
MAPPING_FAMILIES = {
    "v6nat_mapping_packets": ("Packets through a published mapping (both directions).", "mapping_traffic", 0),
    "v6nat_mapping_bytes": ("Bytes through a published mapping (both directions).", "mapping_traffic", 1),
    "v6nat_mapping_policy_drops": ("New flows to a published mapping its source rules refused (docs/policy.md).",
                                   "mapping_traffic", 2),
    "v6nat_hostlocal_connects": ("connect() calls of host processes (TCP, connected UDP) that the socket hooks sent "
                                 "to a published mapping's container.", "hostlocal_calls", 0),
    "v6nat_hostlocal_sendmsgs": ("Unconnected UDP datagrams of host processes that the socket hooks sent to a "
                                 "published mapping's container.", "hostlocal_calls", 1),
}


def _mapping_values(snap: Snapshot) -> dict[str, list[tuple[int, int]]]:
    """Each MAPPING_FAMILIES source's counts, one per series of the snapshot's mappings."""
    series = snap.control.mapping_series
    return {source: series.values(getattr(snap, source)) for source in {s for _, s, _ in MAPPING_FAMILIES.values()}}


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
    yield GaugeMetricFamily("v6nat_bans_active", "Bans in force (v6nat ban), expired ones not counted.",
                            value=snap.bans_active)
    policy_errors = GaugeMetricFamily(
        "v6nat_policy_errors", "Source-policy declarations that do not parse; their mappings are not published.",
        labels=["container", "network", "label", "value"])
    for error in snap.control.policy_errors:
        policy_errors.add_metric(list(error), 1)
    yield policy_errors
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
    yield CounterMetricFamily("v6nat_conntrack_forgotten_flows_total",
                              "Flows removed with the container address or published mapping they belonged to.",
                              value=c.flows_forgotten)
    attached = GaugeMetricFamily(
        "v6nat_interface_attached", "1 if our programs are attached to the interface, 0 if expected but missing.", labels=["interface", "role"]
    )
    for name, (role, up) in sorted(snap.interfaces.items()):
        attached.add_metric([name, role], int(up))
    yield attached
    networks = GaugeMetricFamily(
        "v6nat_network_info", "A managed network's prefix and its Docker gateway mode; always 1.",
        labels=["network", "prefix", "mode"]
    )
    for prefix, (name, mode) in sorted(snap.control.networks.items()):
        networks.add_metric([name, prefix, mode], 1)
    yield networks
    yield GaugeMetricFamily("v6nat_ready", "1 when /readyz answers 200.", value=int(snap.readiness.ready))


def _labelled(family: type, name: str, doc: str, label: str, values: Mapping[str, int]) -> Metric:
    metric = family(name, doc, labels=[label])
    for key, n in sorted(values.items()):
        metric.add_metric([key], n)
    return metric


def _histogram(name: str, doc: str, hist: Histogram) -> Metric:
    return HistogramMetricFamily(name, doc, buckets=[(bound_text(le), n) for le, n in hist.buckets], sum_value=hist.sum)


def _mapping_metrics(snap: Snapshot, with_samples: bool) -> Iterable[Metric]:
    series = snap.control.mapping_series
    values = _mapping_values(snap) if with_samples else {}
    for name, (doc, source, index) in MAPPING_FAMILIES.items():
        family = CounterMetricFamily(name, doc, labels=MAPPING_LABELS)
        # Samples made here, not by add_metric: the label dicts are the series' own, made once per set of mappings.
        family.samples = [Sample(name + "_total", labels, v[index], None, None)
                          for labels, v in zip(series.labels, values.get(source, []))]
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
    values = _mapping_values(snap)
    parts: list[bytes] = []
    pending: list[Metric] = []
    for family in snapshot_metrics(snap, mapping_samples=False):
        pending.append(family)
        if family.name in MAPPING_FAMILIES:
            # The encoder writes the family's HELP and TYPE (and OpenMetrics' "# EOF", dropped: it goes last).
            parts.append(encoder(_Families(pending)).removesuffix(b"# EOF\n"))
            pending = []
            _, source, index = MAPPING_FAMILIES[family.name]
            prefix = family.name + "_total{"
            parts.append(
                "".join(
                    [f"{prefix}{text}}} {_counter_text(v[index])}\n"
                     for text, v in zip(series.label_text, values[source])]
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

"""/metrics writes the per-mapping samples itself: its body must be byte for byte prometheus-client's encoding."""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator

import pytest
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from v6nat_ebpf.datapath import Datapath
from v6nat_ebpf.lab.testrun import TC_ACT_UNSPEC
from v6nat_ebpf.observe.exposition import render_metrics, snapshot_metrics
from v6nat_ebpf.observe.snapshot import Snapshot, take_snapshot
from v6nat_ebpf.observe.stats import ControlPlaneStats, MappingLabels

from metrics_traffic import public_ingress, publish_world, syn_to

PROMETHEUS_2_42_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
ACCEPT_HEADERS = [
    "",
    PROMETHEUS_2_42_ACCEPT,
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=1.0.0;escaping=values",
    "application/openmetrics-text;version=1.0.0;escaping=underscores",
    "application/openmetrics-text;version=1.0.0;escaping=dots",  # renames our names: the encoder does it all
]


class SnapshotCollector:
    def __init__(self, snap: Snapshot) -> None:
        self._snap = snap

    def collect(self) -> Iterator[Metric]:
        return snapshot_metrics(self._snap)


@pytest.fixture
def snapshot(datapath: Datapath) -> Snapshot:
    """Mappings whose labels need escaping, two ids sharing one label set, ids with and without traffic."""
    stats = ControlPlaneStats()
    published = publish_world(datapath, stats, count=5)
    for p in published[:3]:
        assert public_ingress(datapath, syn_to(p.host_port, 45000)) == TC_ACT_UNSPEC
    labels = {p.mapping_id: p.labels for p in published}
    labels[1] = MappingLabels("tcp", 8080, 'we"b\\1\n', "ülä")
    labels[2] = labels[3] = MappingLabels("udp", 53, "dns", "ula")  # one port on two host addresses: one series
    stats.set_mappings(labels)
    return take_snapshot(datapath, stats)


@pytest.mark.parametrize("accept", ACCEPT_HEADERS)
def test_body_is_the_encoders_byte_for_byte(snapshot: Snapshot, accept: str) -> None:
    big = replace(snapshot, mapping_traffic={**snapshot.mapping_traffic, 4: (1_234_567, 98_765_432_109, 3), 5: (999_999, 10**6, 0)})
    for snap in (snapshot, big):
        encoder, content_type = choose_encoder(accept)
        assert render_metrics(snap, accept) == (encoder(SnapshotCollector(snap)), content_type)


@pytest.mark.parametrize("accept", ["", PROMETHEUS_2_42_ACCEPT])
def test_parsers_read_back_the_mapping_series(snapshot: Snapshot, accept: str) -> None:
    body, content_type = render_metrics(snapshot, accept)
    parse = parse_openmetrics if content_type.startswith("application/openmetrics-text") else parse_text
    series = {
        (s.name, s.labels["container"], s.labels["network"]): s.value
        for family in parse(body.decode())
        for s in family.samples
        if s.name.startswith("v6nat_mapping_")
    }
    syn_bytes = len(syn_to(8080, 45000))
    assert series == {
        ("v6nat_mapping_packets_total", 'we"b\\1\n', "ülä"): 1,
        ("v6nat_mapping_bytes_total", 'we"b\\1\n', "ülä"): syn_bytes,
        ("v6nat_mapping_packets_total", "dns", "ula"): 2,
        ("v6nat_mapping_bytes_total", "dns", "ula"): 2 * syn_bytes,
        ("v6nat_mapping_packets_total", "web3", "ula"): 0,
        ("v6nat_mapping_bytes_total", "web3", "ula"): 0,
        ("v6nat_mapping_packets_total", "web4", "ula"): 0,
        ("v6nat_mapping_bytes_total", "web4", "ula"): 0,
        **{("v6nat_mapping_policy_drops_total", c, n): 0
           for c, n in (('we"b\\1\n', "ülä"), ("dns", "ula"), ("web3", "ula"), ("web4", "ula"))},
    }

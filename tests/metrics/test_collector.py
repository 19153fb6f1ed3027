"""The collector against a real loaded Datapath, with real packets run through the programs."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from v6nat_ebpf.datapath import Datapath
from v6nat_ebpf.datapath.testrun import TC_ACT_SHOT, TC_ACT_UNSPEC
from v6nat_ebpf.datapath.layout import header
from v6nat_ebpf.metrics import ControlPlaneStats, V6natCollector

from metrics_traffic import on_cpu, not_ours, public_ingress, publish_world, straight_to_ula, syn_to, unpublish


def scrape(dp: Datapath, stats: ControlPlaneStats) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What /metrics would say now: sample name and sorted labels -> value, parsed back from the text format."""
    registry = CollectorRegistry()
    registry.register(V6natCollector(dp, stats))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def mapping_series(samples: dict, name: str) -> dict[str, float]:
    return {dict(labels)["container"]: v for (n, labels), v in samples.items() if n == name}


def test_counters_are_exact_for_known_packets(datapath: Datapath) -> None:
    stats = ControlPlaneStats()
    [web] = publish_world(datapath, stats)
    syns = [syn_to(web.host_port, sport) for sport in range(40000, 40007)]
    for packet in syns:
        assert public_ingress(datapath, packet) == TC_ACT_UNSPEC
    for sport in range(3):
        assert public_ingress(datapath, straight_to_ula(sport + 1000)) == TC_ACT_SHOT
    for sport in range(5):
        assert public_ingress(datapath, not_ours(sport + 2000)) == TC_ACT_UNSPEC

    samples = scrape(datapath, stats)
    assert samples[("v6nat_translations_total", (("kind", "dnat"),))] == 7
    assert samples[("v6nat_translations_total", (("kind", "snat"),))] == 0
    assert samples[("v6nat_passed_packets_total", ())] == 5
    assert samples[("v6nat_drops_total", (("reason", "direct_ula"),))] == 3
    drops = {dict(labels)["reason"]: v for (n, labels), v in samples.items() if n == "v6nat_drops_total"}
    assert set(drops) == set(header().drop_reasons), "every reason is exported, zero included"
    assert sum(drops.values()) == 3
    labels = (("container", "web0"), ("host_port", str(web.host_port)), ("network", "ula"), ("protocol", "tcp"))
    assert samples[("v6nat_mapping_packets_total", labels)] == 7
    assert samples[("v6nat_mapping_bytes_total", labels)] == sum(len(p) for p in syns)
    assert samples[("v6nat_conntrack_flows", (("kind", "dnat"), ("protocol", "tcp"), ("state", "syn_sent")))] == 7
    assert samples[("v6nat_conntrack_created_flows_total", ())] == 7
    assert samples[("v6nat_map_entries", (("map", "conntrack"),))] == 14, "two halves per flow"
    assert samples[("v6nat_map_entries", (("map", "dnat"),))] == 1
    assert samples[("v6nat_snat_pool_ports", ())] == 65535 - 61000 + 1


def test_per_cpu_counters_are_summed(datapath: Datapath) -> None:
    stats = ControlPlaneStats()
    [web] = publish_world(datapath, stats)
    # 4 packets on CPU 0, 9 on CPU 1: reading one CPU's slot would give 4 or 9, not 13.
    for cpu, count in ((0, 4), (1, 9)):
        with on_cpu(cpu):
            for i in range(count):
                assert public_ingress(datapath, syn_to(web.host_port, 30000 + 100 * cpu + i)) == TC_ACT_UNSPEC
                assert public_ingress(datapath, straight_to_ula(30000 + 100 * cpu + i)) == TC_ACT_SHOT
    samples = scrape(datapath, stats)
    assert samples[("v6nat_translations_total", (("kind", "dnat"),))] == 13
    assert samples[("v6nat_drops_total", (("reason", "direct_ula"),))] == 13
    assert mapping_series(samples, "v6nat_mapping_packets_total") == {"web0": 13}


def test_thousand_mappings_leave_no_stale_series(datapath: Datapath) -> None:
    stats = ControlPlaneStats()
    published = publish_world(datapath, stats, count=1000, first_port=20000)
    for p in published[::100]:
        assert public_ingress(datapath, syn_to(p.host_port, 50000)) == TC_ACT_UNSPEC
    samples = scrape(datapath, stats)
    packets = mapping_series(samples, "v6nat_mapping_packets_total")
    assert len(packets) == 1000 and len(mapping_series(samples, "v6nat_mapping_bytes_total")) == 1000
    assert sum(packets.values()) == 10 and packets["web100"] == 1
    assert samples[("v6nat_mappings", ())] == 1000

    unpublish(datapath, stats, published)
    samples = scrape(datapath, stats)
    assert not [key for key in samples if key[0].startswith("v6nat_mapping_")]
    assert samples[("v6nat_mappings", ())] == 0
    assert samples[("v6nat_map_entries", (("map", "dnat"),))] == 0


def test_removed_mappings_leave_no_stats_behind(datapath: Datapath) -> None:
    stats = ControlPlaneStats()
    published = publish_world(datapath, stats, count=3)
    for p in published:
        assert public_ingress(datapath, syn_to(p.host_port, 50000)) == TC_ACT_UNSPEC
    assert scrape(datapath, stats)[("v6nat_map_entries", (("map", "mapping_stats"),))] == 3

    unpublish(datapath, stats, published)
    # Else mapping_stats fills up with the ids of every port ever published, and new mappings go uncounted.
    assert scrape(datapath, stats)[("v6nat_map_entries", (("map", "mapping_stats"),))] == 0

    # Published again (same ids): the mappings start from zero, not from the old ones' traffic.
    publish_world(datapath, stats, count=3)
    assert mapping_series(scrape(datapath, stats), "v6nat_mapping_packets_total") == {"web0": 0, "web1": 0, "web2": 0}

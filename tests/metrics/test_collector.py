"""The collector against a real loaded Datapath, with real packets run through the programs."""

from __future__ import annotations

from dataclasses import replace

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from scapy.layers.inet import TCP

from v6nat_ebpf.datapath import Datapath
from v6nat_ebpf.lab.testrun import TC_ACT_SHOT, TC_ACT_UNSPEC
from v6nat_ebpf.datapath.layout import header
from v6nat_ebpf.commands.status import render_status
from v6nat_ebpf.observe.exposition import V6natCollector
from v6nat_ebpf.observe.snapshot import take_snapshot
from v6nat_ebpf.observe.stats import ControlPlaneStats

from metrics_traffic import (
    ULA, not_ours, on_cpu, outbound_syn, public_egress, public_ingress, publish_world, straight_to_ula, syn_to, unpublish,
)


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
    assert samples[("v6nat_map_entries", (("map", "ct_unassured"),))] == 14, "two halves per flow, none assured"
    assert samples[("v6nat_map_entries", (("map", "conntrack"),))] == 0
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


def test_snat_allocation_tries_histogram_is_exact(datapath: Datapath) -> None:
    stats = ControlPlaneStats()
    publish_world(datapath, stats)
    # A one-port SNAT range: the first claim keeps its own port, which lies in the range (1 try); the second,
    # whose own port is outside the range, prefers the range's one port and finds it free toward another
    # server port (1 try); the third finds it taken: exhausted, an observation past 16.
    datapath.set_config(replace(datapath.config, snat_port_min=61000, snat_port_max=61000))
    first, second = ULA[2], ULA[3]
    assert public_egress(datapath, outbound_syn(first, 61000)).packet[TCP].sport == 61000
    assert public_egress(datapath, outbound_syn(second, 5555, dport=444)).packet[TCP].sport == 61000
    assert public_egress(datapath, outbound_syn(second, 61000)).verdict == TC_ACT_SHOT

    samples = scrape(datapath, stats)
    buckets = {dict(labels)["le"]: v for (n, labels), v in samples.items() if n == "v6nat_snat_allocation_tries_bucket"}
    assert buckets == {"1.0": 2, "3.0": 2, "7.0": 2, "16.0": 2, "+Inf": 3}
    assert samples[("v6nat_snat_allocation_tries_sum", ())] == 1 + 1 + 16
    assert samples[("v6nat_snat_allocation_tries_count", ())] == 3
    assert samples[("v6nat_drops_total", (("reason", "ports_exhausted"),))] == 1

    # `v6nat status` shows the same claims, per range of tries.
    text = render_status(take_snapshot(datapath, stats).as_dict())
    assert "snat port claims by tries: 1: 2  2-3: 0  4-7: 0  8-16: 0  exhausted: 1" in text

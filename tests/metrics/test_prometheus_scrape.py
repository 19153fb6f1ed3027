"""A real Prometheus server scrapes the metrics server; its query API must show exactly the traffic we sent."""

from __future__ import annotations

from typing import Callable

from v6nat_ebpf.datapath import Datapath
from v6nat_ebpf.lab.testrun import TC_ACT_SHOT, TC_ACT_UNSPEC
from v6nat_ebpf.observe.server import start_metrics_server
from v6nat_ebpf.observe.stats import ControlPlaneStats

from metrics_traffic import public_ingress, publish_world, straight_to_ula, syn_to, unpublish


def test_prometheus_sees_exact_counters(inside_netns: str, datapath: Datapath, start_prometheus: Callable) -> None:
    stats = ControlPlaneStats()
    web, api = publish_world(datapath, stats, count=2)
    server = start_metrics_server("[::1]:0", datapath, stats)
    try:
        prom = start_prometheus(f"[::1]:{server.port}", netns=inside_netns)
        prom.wait_for("up", {(("job", "v6nat"),): 1.0}, labels=("job",))

        sent_bytes = 0
        for sport in range(11):
            packet = syn_to(web.host_port, 41000 + sport)
            sent_bytes += len(packet)
            assert public_ingress(datapath, packet) == TC_ACT_UNSPEC
        for sport in range(4):
            assert public_ingress(datapath, syn_to(api.host_port, 42000 + sport)) == TC_ACT_UNSPEC
        for sport in range(6):
            assert public_ingress(datapath, straight_to_ula(43000 + sport)) == TC_ACT_SHOT

        by_container = ("container", "host_port")
        prom.wait_for(
            "v6nat_mapping_packets_total",
            {(("container", "web0"), ("host_port", str(web.host_port))): 11.0, (("container", "web1"), ("host_port", str(api.host_port))): 4.0},
            labels=by_container,
        )
        prom.wait_for('v6nat_mapping_bytes_total{container="web0"}', {(("container", "web0"),): float(sent_bytes)}, labels=("container",))
        prom.wait_for('v6nat_drops_total{reason="direct_ula"}', {(("reason", "direct_ula"),): 6.0}, labels=("reason",))
        prom.wait_for('v6nat_translations_total{kind="dnat"}', {(("kind", "dnat"),): 15.0}, labels=("kind",))

        # The mapping goes: Prometheus stops receiving its series (no stale series are scraped).
        unpublish(datapath, stats, [api])
        stats.set_mappings({web.mapping_id: web.labels})
        prom.wait_for("count(v6nat_mapping_packets_total)", {(): 1.0}, labels=())
    finally:
        server.shutdown()

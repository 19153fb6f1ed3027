"""Path MTU through a router with a smaller MTU, both directions, through v6nat's DNAT and SNAT."""

from __future__ import annotations

from typing import Iterator

import pytest
from e2e_support import V6nat, eventually, lab_config

from v6nat_ebpf.datapath import Datapath
from v6nat_ebpf.lab import PUBLIC_IFACE, ROUTER_CLIENT_IFACE, ROUTER_HOST_IFACE, Lab

pytestmark = pytest.mark.lab

SIZE = 300_000
ROUTER_MTU = 1280


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(lab_config(router_mtu=ROUTER_MTU)) as lab:
        yield lab


def count_bytes_server(port: int) -> list[str]:
    return ["socat", f"TCP6-LISTEN:{port},fork,reuseaddr", "SYSTEM:wc -c"]


def test_large_transfers_both_ways(lab: Lab, v6nat: V6nat) -> None:
    net = lab.create_network("ula", "fd00:d::/64")
    container = lab.run_container(
        "bulk", net,
        ["sh", "-c", f"socat TCP6-LISTEN:80,fork,reuseaddr 'SYSTEM:head -c {SIZE} /dev/zero' & "
                     "socat TCP6-LISTEN:81,fork,reuseaddr 'SYSTEM:wc -c' & wait"],
        ports={"80/tcp": 8080, "81/tcp": 8081})
    lab.popen(lab.client_ns, count_bytes_server(7002))
    host = f"[{lab.host_addr}]"

    def downloaded() -> int:
        result = lab.exec(lab.client_ns, ["sh", "-c", f"socat -T10 -u TCP6:{host}:8080 - | wc -c"], timeout=60)
        return int(result.stdout)

    # client downloads from the container (its segments meet the small MTU; PTB goes to the container)
    assert eventually(downloaded, what="a download through the router") == SIZE
    # client uploads to the container (the client learns the MTU from the router)
    up = lab.exec(lab.client_ns, ["sh", "-c", f"head -c {SIZE} /dev/zero | socat -T10 -t10 - TCP6:{host}:8081"],
                  timeout=60)
    assert int(up.stdout) == SIZE
    # the container uploads to the outside through SNAT
    code, out = container.exec_run(["sh", "-c", f"head -c {SIZE} /dev/zero | "
                                                f"socat -T10 -t10 - TCP6:[{lab.client_addr}]:7002"])
    assert code == 0 and int(out) == SIZE, out


def set_mtu(lab: Lab, ns: str, iface: str, mtu: int) -> None:
    lab.exec(ns, ["ip", "link", "set", iface, "mtu", str(mtu)])


def test_packet_too_big_from_a_router_beyond_the_host_reaches_the_container(lab: Lab, v6nat: V6nat) -> None:
    """The small link moved past the host: the router, not the host, answers Packet Too Big, to the host's
    address; v6nat translates the error to the container (DNAT replies and SNAT flows, both fast-pathed)."""
    net = lab.create_network("ula-ptb", "fd00:d1::/64")
    server = lab.run_container("ptb-server", net, ["socat", "TCP6-LISTEN:80,fork,reuseaddr",
                                                   f"SYSTEM:head -c {SIZE} /dev/zero"], ports={"80/tcp": 8090})
    uploader = lab.run_container("ptb-uploader", net, "sleep 600")
    lab.popen(lab.client_ns, count_bytes_server(7003))
    dp = Datapath.open_pinned(lab.pin_path)
    # host <-> router at 1500; the router's side toward the client at 1280 (the client's own side stays at
    # 1500, so the client still announces an MSS the small link cannot carry)
    set_mtu(lab, lab.host_ns, PUBLIC_IFACE, 1500)
    set_mtu(lab, lab.router_ns, ROUTER_HOST_IFACE, 1500)
    set_mtu(lab, lab.router_ns, ROUTER_CLIENT_IFACE, ROUTER_MTU)
    try:
        before = dp.counters_by_hook()["public_ingress"]["icmp_error"]

        def downloaded() -> int:
            result = lab.exec(lab.client_ns, ["sh", "-c", f"socat -T10 -u TCP6:[{lab.host_addr}]:8090 - | wc -c"],
                              timeout=60)
            return int(result.stdout)

        assert eventually(downloaded, what="a download through the router") == SIZE
        after_download = dp.counters_by_hook()["public_ingress"]["icmp_error"]
        assert after_download > before  # the router's PTB, translated for the DNAT flow
        code, out = uploader.exec_run(["sh", "-c", f"head -c {SIZE} /dev/zero | "
                                                   f"socat -T10 -t10 - TCP6:[{lab.client_addr}]:7003"])
        assert code == 0 and int(out) == SIZE, out
        assert dp.counters_by_hook()["public_ingress"]["icmp_error"] > after_download  # and for the SNAT flow
    finally:
        set_mtu(lab, lab.router_ns, ROUTER_CLIENT_IFACE, 1500)
        set_mtu(lab, lab.router_ns, ROUTER_HOST_IFACE, ROUTER_MTU)
        set_mtu(lab, lab.host_ns, PUBLIC_IFACE, ROUTER_MTU)
        server.remove(force=True)
        uploader.remove(force=True)

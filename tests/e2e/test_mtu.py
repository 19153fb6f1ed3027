"""Path MTU through a router with a smaller MTU, both directions, through v6nat's DNAT and SNAT."""

from __future__ import annotations

from typing import Iterator

import pytest
from e2e_support import V6nat, eventually, lab_config

from v6nat_ebpf.lab import Lab

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

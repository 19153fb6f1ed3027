"""Docker's enable_icc=false with `v6nat run`: containers on such a network cannot reach each other.

Two networks side by side, one with ICC off and one with ICC on, two containers
on each. On the ICC-off network ping and TCP between the containers fail (the
datapath's program on their veths drops them, counted as icc_blocked), while
the gateway, the outside (masqueraded) and the published port still work; on
the ICC-on network the same probes succeed, so the failures are ICC's doing.
"""

from __future__ import annotations

import time
from ipaddress import IPv6Address
from typing import Iterator

import pytest
from docker.models.containers import Container
from e2e_support import V6nat, address_in, eventually, tcp_echo_server

from v6nat_ebpf.datapath import Datapath
from v6nat_ebpf.lab import Lab

pytestmark = pytest.mark.lab

OUTSIDE_TCP, PUBLISHED = 7000, 8080
ICC_OFF = {"com.docker.network.bridge.enable_icc": "false"}


def reaches(source: Container, addr: IPv6Address) -> dict[str, bool]:
    """Whether `source` gets an answer from `addr` to a ping and to a TCP connection on port 80."""
    ping, _ = source.exec_run(["ping", "-6", "-c", "1", "-W", "1", str(addr)])
    tcp, out = source.exec_run(["socat", "-T2", "-", f"TCP6:[{addr}]:80,connect-timeout=2"])
    return {"ping": ping == 0, "tcp": tcp == 0 and address_in(out.decode()) is not None}


def outside_sees(source: Container, lab: Lab) -> IPv6Address | None:
    code, out = source.exec_run(["socat", "-T3", "-", f"TCP6:[{lab.client_addr}]:{OUTSIDE_TCP}"])
    return address_in(out.decode()) if code == 0 else None


@pytest.fixture(scope="module")
def pairs(lab: Lab, v6nat: V6nat) -> Iterator[dict[str, tuple[Container, Container]]]:
    """name -> (server publishing port 80, client) on an ICC-off and an ICC-on network, started under v6nat."""
    lab.popen(lab.client_ns, tcp_echo_server(OUTSIDE_TCP))
    found = {}
    for name, subnet, options, port in (("icc-off", "fd00:10::/64", ICC_OFF, PUBLISHED),
                                        ("icc-on", "fd00:11::/64", None, PUBLISHED + 1)):
        net = lab.create_network(name, subnet, options=options)
        found[name] = (lab.run_container(f"{name}-server", net, tcp_echo_server(), ports={"80/tcp": port}),
                       lab.run_container(f"{name}-client", net, "sleep 600"))
    time.sleep(0.3)  # the outside echo server
    yield found
    for server, client in found.values():
        server.remove(force=True)
        client.remove(force=True)


def test_icc_off_blocks_container_to_container_and_nothing_else(lab: Lab, v6nat: V6nat,
                                                                 pairs: dict[str, tuple[Container, Container]]) -> None:
    dp = Datapath.open_pinned(lab.pin_path)
    server, client = pairs["icc-off"]
    server_addr = lab.container_addr(server, "icc-off")
    # The published port answers once the daemon has caught up with the new containers.
    eventually(lambda: lab.probe_peer(lab.host_addr, PUBLISHED, timeout_s=1).peer == lab.client_addr,
               what="published port on the ICC-off network")
    before = dp.counters()["drop_icc_blocked"]
    assert reaches(client, server_addr) == {"ping": False, "tcp": False}
    assert reaches(server, lab.container_addr(client, "icc-off"))["ping"] is False  # the other way too
    assert dp.counters()["drop_icc_blocked"] > before
    # The gateway (the bridge) and the outside stay reachable, masqueraded.
    gateway = lab.docker.api.inspect_container(client.id)["NetworkSettings"]["Networks"]["icc-off"]["IPv6Gateway"]
    code, out = client.exec_run(["ping", "-6", "-c", "1", "-W", "2", gateway])
    assert code == 0, out
    assert outside_sees(client, lab) == lab.host_addr
    assert outside_sees(server, lab) == lab.host_addr
    assert lab.probe_peer(lab.host_addr, PUBLISHED).peer == lab.client_addr


def test_icc_on_lets_containers_talk(lab: Lab, pairs: dict[str, tuple[Container, Container]]) -> None:
    server, client = pairs["icc-on"]
    assert reaches(client, lab.container_addr(server, "icc-on")) == {"ping": True, "tcp": True}
    assert outside_sees(client, lab) == lab.host_addr
    eventually(lambda: lab.probe_peer(lab.host_addr, PUBLISHED + 1, timeout_s=1).peer == lab.client_addr,
               what="published port on the ICC-on network")


def test_a_container_started_later_is_isolated_too(lab: Lab, v6nat: V6nat,
                                                   pairs: dict[str, tuple[Container, Container]]) -> None:
    server, _ = pairs["icc-off"]
    late = lab.run_container("icc-off-late", "icc-off", "sleep 600")
    try:
        assert eventually(lambda: reaches(late, lab.container_addr(server, "icc-off")) == {"ping": False, "tcp": False},
                          what="the late container blocked")
        assert outside_sees(late, lab) == lab.host_addr
    finally:
        late.remove(force=True)

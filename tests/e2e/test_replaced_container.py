"""End to end: a container that replaces another at the same address answers at once through v6nat.

Docker gives a new container the lowest free address, so a replaced container
usually gets its predecessor's. The host's neighbour cache may still hold what
it knew or was resolving about the predecessor: packets sent to the address in
between (a flow to the old container, a connection DNAT'd just before its
mapping went) start a resolution nobody answers, whose next solicitation comes
only after the bridge's retrans_time, and which holds every packet to the new
container until then; or the entry keeps the predecessor's MAC. The daemon
renews the entry when the new container appears.

The bridge's neighbour timers are stretched to 30 s here, so an entry left as
it was holds the client's connection far longer than the probe waits: each test
fails without the renewal, whatever the machine's speed.
"""

from __future__ import annotations

from ipaddress import IPv6Address
from typing import Iterator

import pytest
from docker.models.containers import Container
from docker.models.networks import Network

from e2e_support import V6nat, eventually, tcp_echo_server
from v6nat_ebpf.lab import Lab

pytestmark = pytest.mark.lab

PORT = 8090
STRETCHED_TIMERS = {"retrans_time_ms": "30000", "delay_first_probe_time": "30", "base_reachable_time_ms": "60000"}
PROBE_TIMEOUT_S = 8.0  # well below the stretched timers
REPLACEMENTS = 2


@pytest.fixture(scope="module")
def net(lab: Lab) -> Network:
    return lab.create_network("repl", "fd00:b::/64")


@pytest.fixture(scope="module")
def bridge(lab: Lab, net: Network) -> str:
    name = f"br-{net.id[:12]}"
    for key, value in STRETCHED_TIMERS.items():
        lab.exec(lab.host_ns, ["sysctl", "-qw", f"net.ipv6.neigh.{name}.{key}={value}"])
    return name


@pytest.fixture(scope="module")
def anchor(lab: Lab, net: Network) -> Iterator[Container]:
    """Another container on the network, as on any busy host: the bridge keeps its carrier throughout."""
    container = lab.run_container("anchor", net, ["sleep", "3600"])
    yield container
    container.remove(force=True)


def neighbour(lab: Lab, bridge: str, addr: IPv6Address) -> str:
    """The host's neighbour entry for addr on the bridge, as `ip -6 neigh` shows it ("" when none)."""
    return lab.exec(lab.host_ns, ["ip", "-6", "neigh", "show", str(addr), "dev", bridge]).stdout.strip()


def answers(lab: Lab) -> bool:
    probe = lab.probe_peer(lab.host_addr, PORT, timeout_s=PROBE_TIMEOUT_S)
    return probe.peer == lab.client_addr


class EchoSlot:
    """One echo container at a time, publishing PORT (the `echo` fixture removes the last one)."""

    def __init__(self, lab: Lab, net: Network) -> None:
        self.lab, self.net = lab, net
        self.container: Container | None = None

    def start(self, name: str, **kw: object) -> Container:
        self.container = self.lab.run_container(name, self.net, tcp_echo_server(80), ports={"80/tcp": PORT}, **kw)
        return self.container

    def remove(self) -> None:
        if self.container is not None:
            self.container.remove(force=True)
            self.container = None


@pytest.fixture
def echo(lab: Lab, net: Network) -> Iterator[EchoSlot]:
    slot = EchoSlot(lab, net)
    yield slot
    slot.remove()


def test_replacement_answers_while_its_address_was_being_resolved(lab: Lab, v6nat: V6nat, net: Network, bridge: str,
                                                                 anchor: Container, echo: EchoSlot) -> None:
    addr = lab.container_addr(echo.start("held-0"), net)
    eventually(lambda: answers(lab), what="the first container answering")
    for i in range(1, REPLACEMENTS + 1):
        echo.remove()
        # The entry forgotten (as when the bridge loses its last port, or it expires), then a packet to the
        # address while nobody owns it: the host solicits it, in vain.
        lab.exec(lab.host_ns, ["ip", "-6", "neigh", "flush", str(addr), "dev", bridge])
        lab.exec(lab.host_ns, ["socat", "-u", "-", f"UDP6:[{addr}]:9"], input="stray\n")
        assert "INCOMPLETE" in neighbour(lab, bridge, addr)
        assert lab.container_addr(echo.start(f"held-{i}"), net) == addr, "the address was not reused: nothing tested"
        assert answers(lab), f"replacement {i} at {addr} did not answer; host neighbour: {neighbour(lab, bridge, addr)}"


def test_replacement_with_another_mac_answers(lab: Lab, v6nat: V6nat, net: Network, bridge: str,
                                              anchor: Container, echo: EchoSlot) -> None:
    first = echo.start("moved-0")
    addr = lab.container_addr(first, net)
    eventually(lambda: answers(lab), what="the first container answering")
    assert first.attrs["NetworkSettings"]["Networks"][net.name]["MacAddress"] in neighbour(lab, bridge, addr)
    for i in range(1, REPLACEMENTS + 1):
        echo.remove()
        new_mac = f"02:42:0b:00:00:{i:02x}"
        assert lab.container_addr(echo.start(f"moved-{i}", mac_address=new_mac), net) == addr, \
            "the address was not reused: nothing tested"
        assert answers(lab), f"replacement {i} at {addr} did not answer; host neighbour: {neighbour(lab, bridge, addr)}"
        assert new_mac in neighbour(lab, bridge, addr)

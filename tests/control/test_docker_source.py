"""DockerSource against a real dockerd in a lab: inspect, events, Docker going away and coming back."""

from __future__ import annotations

import threading
import time
from ipaddress import IPv6Address
from typing import Callable, Iterator

import pytest

from v6nat_ebpf.docker_source import DockerSource
from v6nat_ebpf.lab import Lab, LabConfig
from v6nat_ebpf.model import DockerState

pytestmark = pytest.mark.lab


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.connected: list[bool] = []
        self.changed = threading.Event()

    def on_event(self, kind: str) -> None:
        self.events.append(kind)
        self.changed.set()

    def on_connection(self, up: bool) -> None:
        self.connected.append(up)


def wait_for(source: DockerSource, predicate: Callable[[DockerState], bool], timeout: float = 10) -> DockerState:
    deadline = time.monotonic() + timeout
    while True:
        state = source.state()
        if predicate(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"state never matched: {state}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(LabConfig(iptables=False)) as lab:
        yield lab


def ports(state: DockerState) -> dict[int, tuple[str, IPv6Address]]:
    return {m.host_port: (m.container_name, m.container_addr) for m in state.mappings if m.proto == 6}


def test_events_follow_containers_and_networks(lab: Lab) -> None:
    rec = Recorder()
    source = DockerSource(lab.docker_url, rec.on_event, rec.on_connection)
    source.start()
    try:
        wait_for(source, lambda s: source.known)
        assert rec.connected and rec.connected[-1] is True and "resync" in rec.events
        net = lab.create_network("evnet", "fd00:e1::/64")
        wait_for(source, lambda s: any(n.name == "evnet" for n in s.networks))
        web = lab.run_container("evweb", net, "sleep 600", ports={"80/tcp": 18080})
        addr = lab.container_addr(web, net)
        wait_for(source, lambda s: ports(s).get(18080) == ("evweb", addr))

        # Replaced by a new container with another address: the port follows it.
        web.remove(force=True)
        wait_for(source, lambda s: 18080 not in ports(s))
        other = lab.run_container("evblock", net, "sleep 600")  # takes the freed address
        web2 = lab.run_container("evweb2", net, "sleep 600", ports={"80/tcp": 18080})
        addr2 = lab.container_addr(web2, net)
        assert addr2 != addr
        wait_for(source, lambda s: ports(s).get(18080) == ("evweb2", addr2))

        # Connected to a second network whose name sorts first: the mapping moves there.
        first = lab.create_network("aaa-first", "fd00:e2::/64")
        first.connect(web2)
        addr3 = lab.container_addr(web2, first)
        wait_for(source, lambda s: ports(s).get(18080) == ("evweb2", addr3))
        first.disconnect(web2)
        wait_for(source, lambda s: ports(s).get(18080) == ("evweb2", addr2))
        first.remove()
        wait_for(source, lambda s: not any(n.name == "aaa-first" for n in s.networks))

        # Stopped and restarted: gone, then back.
        web2.stop(timeout=1)
        wait_for(source, lambda s: 18080 not in ports(s))
        web2.start()
        wait_for(source, lambda s: 18080 in ports(s))
        assert {"container_start", "container_die", "network_connect", "network_disconnect",
                "network_create", "network_destroy"} <= set(rec.events)
        other.remove(force=True)
    finally:
        source.stop()


def test_docker_down_keeps_the_last_state_and_a_restart_resyncs(lab: Lab) -> None:
    rec = Recorder()
    source = DockerSource(lab.docker_url, rec.on_event, rec.on_connection)
    source.start()
    try:
        net = lab.create_network("dnnet", "fd00:e3::/64")
        keep = lab.run_container("keep", net, "sleep 600", ports={"80/tcp": 19080})
        gone = lab.run_container("gone", net, "sleep 600", ports={"80/tcp": 19081})
        wait_for(source, lambda s: {19080, 19081} <= set(ports(s)))
        lab.stop_docker()
        deadline = time.monotonic() + 10
        while rec.connected[-1] is not False:
            assert time.monotonic() < deadline, "the source never noticed Docker going away"
            time.sleep(0.05)
        assert {19080, 19081} <= set(ports(source.state()))  # last known state stays in force
        assert source.resync() is False
        lab.start_docker()  # live-restore: the containers kept running
        lab.docker.containers.get(gone.id).remove(force=True)
        started = time.monotonic()
        wait_for(source, lambda s: 19081 not in ports(s) and 19080 in ports(s), timeout=5)
        assert time.monotonic() - started < 5
        assert rec.connected[-1] is True
        lab.docker.containers.get(keep.id).remove(force=True)
    finally:
        source.stop()

"""Source allowlists end to end (issue 16): labels and network options read from a real dockerd, real
packets from two outside clients on different prefixes, enforced by `v6nat run` before DNAT."""

from __future__ import annotations

import json
from ipaddress import IPv6Address
from typing import Iterator

import pytest
from docker.models.networks import Network
from e2e_support import V6nat, eventually, tcp_echo_server

from v6nat_ebpf.datapath import Datapath
from v6nat_ebpf.lab import Lab

pytestmark = pytest.mark.lab

A_PREFIX = "2001:db8:1::/48"  # the lab's client address 2001:db8:1::2
B = IPv6Address("2001:db8:5::2")  # a second outside client
B_PREFIX = "2001:db8:5::/48"


@pytest.fixture(scope="module")
def ula(lab: Lab) -> Network:
    lab.add_client_address(B)
    return lab.create_network("ula", "fd00:16::/64")


@pytest.fixture(scope="module")
def office(lab: Lab) -> Network:
    """A network whose option lets only B's prefix in by default."""
    return lab.create_network("office", "fd00:17::/64", options={"v6nat.allow": B_PREFIX})


@pytest.fixture
def clean(lab: Lab) -> Iterator[None]:
    yield
    for container in lab.docker.containers.list(all=True):
        container.remove(force=True)


def reaches(lab: Lab, port: int, source: IPv6Address) -> bool:
    """`source` connects to the host's published `port` and the container sees it as the peer."""
    return lab.probe_peer(lab.host_addr, port, timeout_s=1.5, source=source).peer == source


def published(lab: Lab, port: int) -> bool:
    return any(key.host_port == port for key, _ in Datapath.open_pinned(lab.pin_path).dnat.items())


def status(v6nat: V6nat) -> dict:
    return json.loads(v6nat.cli("status", "--json", "--metrics-listen", v6nat.listen, "--pin-path",
                                v6nat.lab.pin_path).stdout)


def test_an_allowlist_label_lets_one_prefix_in_and_drops_the_other_counted(
        lab: Lab, ula: Network, v6nat: V6nat, clean: None) -> None:
    lab.run_container("smtp", ula, tcp_echo_server(25), ports={"25/tcp": 8025}, labels={"v6nat.allow": A_PREFIX})
    eventually(lambda: reaches(lab, 8025, lab.client_addr), what="A reaches smtp")
    before = Datapath.open_pinned(lab.pin_path).counters()["drop_policy"]
    assert not reaches(lab, 8025, B)
    assert Datapath.open_pinned(lab.pin_path).counters()["drop_policy"] > before
    [mapping] = [m for m in status(v6nat)["mappings"] if m["host_port"] == 8025]
    assert mapping["container"] == "smtp" and mapping["policy_drops"] >= 1
    metrics = v6nat.get("/metrics")
    assert 'v6nat_drops_total{reason="policy"}' in metrics
    assert any(line.startswith("v6nat_mapping_policy_drops_total{") and 'container="smtp"' in line
               and not line.endswith(" 0.0") for line in metrics.splitlines())


def test_a_port_label_beats_the_container_label(lab: Lab, ula: Network, v6nat: V6nat, clean: None) -> None:
    """The mail server of docs/policy.md: SMTP for A's prefix, submission only for B's (the "office")."""
    command = ["sh", "-c", "socat TCP6-LISTEN:25,fork,reuseaddr 'SYSTEM:echo $SOCAT_PEERADDR' & "
                           "socat TCP6-LISTEN:587,fork,reuseaddr 'SYSTEM:echo $SOCAT_PEERADDR' & wait"]
    lab.run_container("mail", ula, command, ports={"25/tcp": 8125, "587/tcp": 8587},
                      labels={"v6nat.allow": A_PREFIX, "v6nat.allow.587/tcp": B_PREFIX})
    eventually(lambda: reaches(lab, 8125, lab.client_addr), what="A reaches mail:25")
    eventually(lambda: reaches(lab, 8587, B), what="B reaches mail:587")
    assert not reaches(lab, 8125, B)
    assert not reaches(lab, 8587, lab.client_addr)


def test_a_deny_label_drops_its_prefix_only(lab: Lab, ula: Network, v6nat: V6nat, clean: None) -> None:
    lab.run_container("web", ula, tcp_echo_server(80), ports={"80/tcp": 8080}, labels={"v6nat.deny": str(B)})
    eventually(lambda: reaches(lab, 8080, lab.client_addr), what="A reaches web")
    assert not reaches(lab, 8080, B)


def test_the_network_default_applies_unless_the_container_says_otherwise(
        lab: Lab, office: Network, v6nat: V6nat, clean: None) -> None:
    lab.run_container("intranet", office, tcp_echo_server(80), ports={"80/tcp": 8280})
    lab.run_container("partner", office, tcp_echo_server(80), ports={"80/tcp": 8281},
                      labels={"v6nat.allow": A_PREFIX})
    eventually(lambda: reaches(lab, 8280, B), what="B reaches intranet")
    assert not reaches(lab, 8280, lab.client_addr)
    eventually(lambda: reaches(lab, 8281, lab.client_addr), what="A reaches partner")
    assert not reaches(lab, 8281, B)


def test_a_bad_label_fails_closed_and_is_reported(lab: Lab, ula: Network, v6nat: V6nat, clean: None) -> None:
    lab.run_container("good", ula, tcp_echo_server(80), ports={"80/tcp": 8380})
    lab.run_container("typo", ula, tcp_echo_server(80), ports={"80/tcp": 8381},
                      labels={"v6nat.allow": "2001:db8:1::/48,2001:db8:zz::/48"})
    eventually(lambda: reaches(lab, 8380, lab.client_addr), what="the good container is published")
    assert not published(lab, 8381)
    assert not reaches(lab, 8381, lab.client_addr) and not reaches(lab, 8381, B)
    [error] = status(v6nat)["policy"]["errors"]
    assert (error["container"], error["label"], error["value"]) == ("typo", "v6nat.allow",
                                                                     "2001:db8:1::/48,2001:db8:zz::/48")
    text = v6nat.cli("status", "--metrics-listen", v6nat.listen, "--pin-path", lab.pin_path).stdout
    assert "typo" in text and "2001:db8:zz::/48" in text
    assert ('v6nat_policy_errors{container="typo",label="v6nat.allow",network="",'
            'value="2001:db8:1::/48,2001:db8:zz::/48"} 1.0') in v6nat.get("/metrics")
    assert sum("container typo: v6nat.allow=" in line for line in v6nat.log().splitlines()) == 1


def test_the_host_default_applies_where_nothing_more_specific_does(
        lab: Lab, ula: Network, office: Network, v6nat: V6nat, clean: None) -> None:
    v6nat.stop()
    v6nat.extra = ("--default-allow", A_PREFIX)
    v6nat.start()
    try:
        lab.run_container("plain", ula, tcp_echo_server(80), ports={"80/tcp": 8480})
        lab.run_container("intranet", office, tcp_echo_server(80), ports={"80/tcp": 8481})
        eventually(lambda: reaches(lab, 8480, lab.client_addr), what="A reaches plain")
        assert not reaches(lab, 8480, B)
        eventually(lambda: reaches(lab, 8481, B), what="the network's option beats the host default")
        assert not reaches(lab, 8481, lab.client_addr)
    finally:
        v6nat.stop()
        v6nat.extra = ()
        v6nat.start()


def test_an_allowlist_holds_on_a_routed_network(lab: Lab, ula: Network, v6nat: V6nat, clean: None) -> None:
    """A routed network's published port is the container's own, reached without DNAT: its labels hold too."""
    prefix = "2001:db8:46::/64"
    routed = lab.create_network("routed16", prefix, options={"com.docker.network.bridge.gateway_mode_ipv6": "routed"})
    lab.route_to_host(prefix)
    try:
        smtp = lab.run_container("routed-smtp", routed, tcp_echo_server(25), ports={"25/tcp": 8025},
                                 labels={"v6nat.allow": A_PREFIX})
        addr = lab.container_addr(smtp, "routed16")

        def reaches_routed(source: IPv6Address) -> bool:
            return lab.probe_peer(addr, 25, timeout_s=1.5, source=source).peer == source

        eventually(lambda: reaches_routed(lab.client_addr), what="A reaches the routed smtp")
        before = Datapath.open_pinned(lab.pin_path).counters()["drop_policy"]
        assert not reaches_routed(B)
        assert Datapath.open_pinned(lab.pin_path).counters()["drop_policy"] > before
        [mapping] = [m for m in status(v6nat)["mappings"] if m["container"] == "routed-smtp"]
        assert mapping["policy_drops"] >= 1
    finally:
        for container in lab.docker.containers.list(all=True):
            container.remove(force=True)
        routed.remove()

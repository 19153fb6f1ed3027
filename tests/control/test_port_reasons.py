"""port_reasons.explain: why Docker's side of a published port does or does not give v6nat a mapping,
one reason per line (the cases the lab test of `v6nat check --port` does not build)."""

from __future__ import annotations

from ipaddress import IPv6Address
from typing import Any

import pytest

from v6nat_ebpf.port_reasons import explain, parse_port_spec


def network(net_id: str, name: str, ipv6: bool = True, subnet: str = "fd00:1::/64", internal: bool = False,
            driver: str = "bridge") -> dict[str, Any]:
    return {"Id": net_id, "Name": name, "Driver": driver, "EnableIPv6": ipv6, "Internal": internal,
            "IPAM": {"Config": [{"Subnet": subnet}]}, "Options": {}}


def container(name: str, nets: dict[str, tuple[str, str]], bindings: list[dict[str, str]] | None,
              running: bool = True, requested: bool = True) -> dict[str, Any]:
    return {
        "Id": name * 8, "Name": f"/{name}", "State": {"Running": running, "Status": "running" if running else "exited"},
        "Config": {"Labels": {}},
        "HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]} if requested else {}},
        "NetworkSettings": {"Ports": {"80/tcp": bindings},
                            "Networks": {n: {"NetworkID": nid, "GlobalIPv6Address": addr}
                                         for n, (nid, addr) in nets.items()}},
    }


BOTH = [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}]


def failures(nets: list[dict[str, Any]], ctrs: list[dict[str, Any]]) -> list[str]:
    return [r.text for r in explain(nets, ctrs, 8080, "tcp").reasons if not r.ok]


def test_a_published_port_on_a_managed_network() -> None:
    v = explain([network("n1", "web")], [container("a", {"web": ("n1", "fd00:1::2")}, BOTH)], 8080, "tcp")
    assert [r.ok for r in v.reasons] == [True, True]
    assert v.expected == ((None, IPv6Address("fd00:1::2"), 80),)


@pytest.mark.parametrize("net,why", [
    (network("n1", "web", ipv6=False), "IPv6 off"),
    (network("n1", "web", subnet="fe80::/64"), "no IPv6 subnet v6nat can serve"),
    (network("n1", "web", driver="macvlan"), "driver 'macvlan'"),
])
def test_an_unmanaged_network_says_why(net: dict[str, Any], why: str) -> None:
    [line] = failures([net], [container("a", {"web": ("n1", "fd00:1::2")}, BOTH)])
    assert why in line and "container a" in line


def test_internal_only_stopped_and_unbound() -> None:
    nets = [network("n1", "web", internal=True)]
    assert "only on internal networks" in failures(nets, [container("a", {"web": ("n1", "fd00:1::2")}, BOTH)])[0]
    assert "not running" in failures(nets, [container("b", {}, BOTH, running=False)])[0]
    assert "Docker bound nothing" in failures(nets, [container("c", {}, None)])[0]


def test_no_ipv6_address_on_the_network() -> None:
    [line] = failures([network("n1", "web")], [container("a", {"web": ("n1", "")}, BOTH)])
    assert "no IPv6 address on network web" in line


def test_nobody_publishes_it() -> None:
    assert failures([network("n1", "web")], []) == ["no container publishes 8080/tcp (docker ps --filter publish=8080/tcp)"]


@pytest.mark.parametrize("text", ["8080/sctp", "x/tcp", "0/udp", "70000"])
def test_bad_port_specs(text: str) -> None:
    with pytest.raises(ValueError):
        parse_port_spec(text)

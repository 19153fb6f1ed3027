"""port_reasons.explain: why Docker's side of a published port does or does not give v6nat a mapping,
one reason per line (the cases the lab test of `v6nat check --port` does not build)."""

from __future__ import annotations

from ipaddress import IPv6Address
from typing import Any

import pytest

from v6nat_ebpf.model import OPT_GATEWAY_MODE_IPV6
from v6nat_ebpf.policy import parse_prefixes
from v6nat_ebpf.port_reasons import explain, parse_port_spec


def network(net_id: str, name: str, ipv6: bool = True, subnet: str = "fd00:1::/64", internal: bool = False,
            driver: str = "bridge", options: dict[str, str] | None = None) -> dict[str, Any]:
    return {"Id": net_id, "Name": name, "Driver": driver, "EnableIPv6": ipv6, "Internal": internal,
            "IPAM": {"Config": [{"Subnet": subnet}]}, "Options": options or {}}


def container(name: str, nets: dict[str, tuple[str, str]], bindings: list[dict[str, str]] | None,
              running: bool = True, requested: bool = True, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "Id": name * 8, "Name": f"/{name}", "State": {"Running": running, "Status": "running" if running else "exited"},
        "Config": {"Labels": labels or {}},
        "HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]} if requested else {}},
        "NetworkSettings": {"Ports": {"80/tcp": bindings},
                            "Networks": {n: {"NetworkID": nid, "GlobalIPv6Address": addr}
                                         for n, (nid, addr) in nets.items()}},
    }


BOTH = [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}]


def failures(nets: list[dict[str, Any]], ctrs: list[dict[str, Any]]) -> list[str]:
    return [r.text for r in explain(nets, ctrs, 8080, "tcp").reasons if not r.ok]


def warnings(nets: list[dict[str, Any]], ctrs: list[dict[str, Any]], host_allow: str | None = None) -> list[str]:
    verdict = explain(nets, ctrs, 8080, "tcp", parse_prefixes(host_allow) if host_allow else None)
    return [r.text for r in verdict.reasons if r.warn]


def mode(name: str) -> dict[str, str]:
    return {OPT_GATEWAY_MODE_IPV6: name}


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


def test_a_routed_network_publishes_the_container_port_not_the_host_port() -> None:
    nets = [network("n1", "web", options=mode("routed"))]
    v = explain(nets, [container("a", {"web": ("n1", "fd00:1::2")}, BOTH)], 8080, "tcp")
    assert [r.text for r in v.reasons if not r.ok] == [
        "container a: network web is routed: reach [fd00:1::2]:80/tcp directly, host port 8080 is not used"]
    assert v.expected == ()  # no datapath entry on host port 8080 to look for


def test_an_isolated_network_publishes_nothing() -> None:
    nets = [network("n1", "web", options=mode("isolated"))]
    assert failures(nets, [container("a", {"web": ("n1", "fd00:1::2")}, BOTH)]) == [
        "container a: network web is isolated: Docker publishes nothing on it, not even to the host"]


def test_a_nat_unprotected_network_works_and_says_every_port_is_open() -> None:
    nets = [network("n1", "web", options=mode("nat-unprotected"))]
    v = explain(nets, [container("a", {"web": ("n1", "fd00:1::2")}, BOTH)], 8080, "tcp")
    assert all(r.ok for r in v.reasons) and v.expected == ((None, IPv6Address("fd00:1::2"), 80),)
    assert [r.text for r in v.reasons if r.warn] == [
        "container a: network web is nat-unprotected: besides host port 8080, every port of [fd00:1::2] "
        "is reachable directly from outside"]


def test_a_nat_network_says_nothing_of_its_mode() -> None:
    assert warnings([network("n1", "web", options=mode("nat"))], [container("a", {"web": ("n1", "fd00:1::2")}, BOTH)]) == []


@pytest.mark.parametrize("label,value", [("v6nat.allow", "10.0.0.0/8"), ("v6nat.allow.80/tcp", "2001:db8::1/32"),
                                         ("v6nat.deny.80/sctp", "2001:db8::/32")])
def test_a_bad_declaration_keeps_the_container_unpublished(label: str, value: str) -> None:
    v = explain([network("n1", "web")], [container("a", {"web": ("n1", "fd00:1::2")}, BOTH, labels={label: value})],
                8080, "tcp")
    [line] = [r.text for r in v.reasons if not r.ok]
    assert line.startswith(f"container a: {label}={value!r} is not a list of IPv6 prefixes") and "fail closed" in line
    assert v.expected == ()


def test_a_bad_network_option_keeps_its_containers_unpublished() -> None:
    nets = [network("n1", "web", options={"v6nat.allow": "nonsense"})]
    v = explain(nets, [container("a", {"web": ("n1", "fd00:1::2")}, BOTH)], 8080, "tcp")
    [line] = [r.text for r in v.reasons if not r.ok]
    assert line.startswith("network web: v6nat.allow='nonsense' is not a list of IPv6 prefixes") and v.expected == ()


@pytest.mark.parametrize("labels,net_options,host_allow,line", [
    ({"v6nat.allow.80/tcp": "2001:db8:1::/48", "v6nat.allow": "2001:db8:2::/48"}, {}, None,
     "only 2001:db8:1::/48 may connect (allowlist of label v6nat.allow.80/tcp)"),
    ({"v6nat.allow": "2001:db8:2::/48,2001:db8:3::7"}, {"v6nat.allow": "2001:db8:9::/48"}, None,
     "only 2001:db8:2::/48, 2001:db8:3::7/128 may connect (allowlist of label v6nat.allow)"),
    ({}, {"v6nat.allow": "2001:db8:9::/48"}, "2001:db8:5::/48",
     "only 2001:db8:9::/48 may connect (allowlist of option v6nat.allow of network web)"),
    ({}, {}, "2001:db8:5::/48", "only 2001:db8:5::/48 may connect (allowlist of v6nat run --default-allow)"),
])
def test_the_allowlist_in_force_and_where_it_was_declared(labels: dict[str, str], net_options: dict[str, str],
                                                          host_allow: str | None, line: str) -> None:
    nets = [network("n1", "web", options=net_options)]
    ctrs = [container("a", {"web": ("n1", "fd00:1::2")}, BOTH, labels=labels)]
    assert warnings(nets, ctrs, host_allow) == [f"container a: {line}"]
    assert explain(nets, ctrs, 8080, "tcp").expected  # still published


def test_denied_sources_name_their_labels() -> None:
    labels = {"v6nat.deny": "2001:db8:1::/48", "v6nat.deny.80/tcp": "2001:db8:2::/48", "v6nat.deny.81/tcp": "2001:db8:3::/48"}
    assert warnings([network("n1", "web")], [container("a", {"web": ("n1", "fd00:1::2")}, BOTH, labels=labels)]) == [
        "container a: 2001:db8:1::/48, 2001:db8:2::/48 may not connect (labels v6nat.deny and v6nat.deny.80/tcp)"]


def test_no_allowlist_no_policy_line() -> None:
    assert warnings([network("n1", "web")], [container("a", {"web": ("n1", "fd00:1::2")}, BOTH)]) == []


def ban(prefix: str, port: int | None = None, proto: str | None = None) -> dict[str, Any]:
    return {"prefix": prefix, "port": port, "protocol": proto}  # as commands.bans.ban_records gives them


def test_bans_that_cover_the_port() -> None:
    from v6nat_ebpf.port_check import ban_finding

    records = [ban("2001:db8:1::/48"), ban("2001:db8:2::/48", 8080, "tcp"), ban("2001:db8:3::/48", 8080, "udp"),
               ban("2001:db8:4::/48", 443, "tcp"), ban("2001:db8:5::/48"), ban("2001:db8:6::/48", 8080, "tcp")]
    finding = ban_finding(records, 8080, "tcp")
    assert finding is not None and finding.status == "warn"
    assert finding.detail == ("4 bans cover 8080/tcp, their sources are dropped: 2001:db8:1::/48, 2001:db8:2::/48, "
                              "2001:db8:5::/48 (+1 more) (see `v6nat bans`)")
    assert ban_finding(records[3:4], 8080, "tcp") is None

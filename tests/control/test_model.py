"""The model's Docker semantics, on inspect data captured from a real Docker 20.10 (tests/control/data).

The capture (made with v6nat_ebpf.lab, see tests/control/test_capture.py) holds:
network ula1 fd00:1::/64 (defaults), ula2 fd00:2::/64 (masquerade off, bridge
name brula2, host_binding_ipv6 2001:db8:1::1), v4only (no IPv6), gua (internal,
2001:db8:99::/64); containers "web" (ula1 + ula2; -p 8080:80, -p 53/udp,
-p [::]:9090:90, -p 0.0.0.0:9191:91, -p [2001:db8:1::1]:9292:92,
-p 127.0.0.1:9393:93 -p [::1]:9393:93), "pall" (ula2, -P), "range" (ula1,
-p 30000-30010:80 and -P).
"""

from __future__ import annotations

import copy
import json
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import pytest

from v6nat_ebpf import model
from v6nat_ebpf.model import HostState, Link, PublicInterface, docker_state_from_inspect

DATA = Path(__file__).parent / "data" / "docker-20.10-inspect.json"
HOST = IPv6Address("2001:db8:1::1")


@pytest.fixture()
def inspect() -> dict[str, Any]:
    return json.loads(DATA.read_text())


def container(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in data["containers"] if c["Name"] == "/" + name)


def published(data: dict[str, Any]) -> dict[tuple[str, str | None, int], tuple[str, int, str]]:
    state = docker_state_from_inspect(data["networks_verbose"], data["containers"])
    return {({6: "tcp", 17: "udp"}[m.proto], str(m.host_addr) if m.host_addr else None, m.host_port):
            (m.container_name, m.container_port, m.network_name) for m in state.mappings}


def test_managed_networks_are_ipv6_bridges_ula_or_global(inspect: dict[str, Any]) -> None:
    state = docker_state_from_inspect(inspect["networks_verbose"], inspect["containers"])
    by_name = {n.name: n for n in state.networks}
    assert sorted(by_name) == ["gua", "ula1", "ula2"]  # not v4only (no IPv6), not host/none
    assert by_name["gua"].subnets == (IPv6Network("2001:db8:99::/64"),) and by_name["gua"].internal
    assert {n.mode for n in state.networks} == {"nat"}  # Docker 20.10 has no gateway modes
    ula1, ula2 = by_name["ula1"], by_name["ula2"]
    assert ula1.bridge == "br-" + ula1.id[:12]
    assert ula1.subnets == (IPv6Network("fd00:1::/64"),)
    assert (ula1.masquerade, ula1.icc, ula1.internal, ula1.snat_addr, ula1.host_binding) == (True, True, False, None, None)
    assert ula2.bridge == "brula2"
    assert ula2.masquerade is False
    assert ula2.host_binding == HOST


def test_published_ports_follow_the_actual_bindings(inspect: dict[str, Any]) -> None:
    ports = published(inspect)
    # -p 8080:80 (Docker lists 0.0.0.0 and ::), the ephemeral -p 53/udp, -p [::]:9090:90
    assert ports[("tcp", None, 8080)] == ("web", 80, "ula1")
    assert ports[("tcp", None, 9090)] == ("web", 90, "ula1")
    udp = [k for k, v in ports.items() if k[0] == "udp"]
    assert len(udp) == 1 and ports[udp[0]] == ("web", 53, "ula1") and udp[0][2] >= 32768
    # -p [2001:db8:1::1]:9292:92: only that address
    assert ports[("tcp", str(HOST), 9292)] == ("web", 92, "ula1")
    # -p 0.0.0.0:9191:91 (IPv4 only) and 127.0.0.1:9393: no IPv6 mapping; [::1]:9393 is for the host's
    # own processes (host-local access), under its own key
    assert not [k for k in ports if k[2] == 9191]
    assert [k for k in ports if k[2] == 9393] == [("tcp", "::1", 9393)]
    # the range: Docker picked 30000 of 30000-30010; -P gave ephemeral ports to 81 and 82
    range_ports = {v[1]: k for k, v in ports.items() if v[0] == "range"}
    assert range_ports[80] == ("tcp", None, 30000)
    assert sorted(range_ports) == [80, 81, 82] and all(k[2] >= 32768 for p, k in range_ports.items() if p != 80)


def test_host_binding_ipv6_narrows_wildcard_bindings(inspect: dict[str, Any]) -> None:
    ports = published(inspect)
    pall = {k for k, v in ports.items() if v[0] == "pall" and k[1] == str(HOST)}
    assert len(pall) == 2 and all(k[2] >= 32768 for k in pall)


def test_a_nat_network_without_masquerade_is_filtered_as_routed(inspect: dict[str, Any]) -> None:
    """ula2 (enable_ip_masquerade=false): Docker 28 lets direct routing reach its published container ports
    only, so its mappings are the host ports (DNAT) and the container's own address and port, and the
    datapath filters it as routed (unpublished ports dropped); its own mode stays nat."""
    state = docker_state_from_inspect(inspect["networks_verbose"], inspect["containers"])
    ula1, ula2 = (next(n for n in state.networks if n.name == name) for name in ("ula1", "ula2"))
    assert (ula2.mode, ula2.datapath_mode) == ("nat", "routed")
    assert ula1.datapath_mode == "nat"
    pall = [m for m in state.mappings if m.container_name == "pall"]
    direct = {(m.host_addr, m.host_port) for m in pall if m.host_addr in ula2.subnets[0]}
    assert direct == {(m.container_addr, m.container_port) for m in pall}
    assert len(pall) == 2 * len(direct) == 4
    host = _veth_host(state, {"web": 3, "range": 4, "pall": 5})
    desired = model.desired_state(state, host)
    modes = {r.prefix: r.mode for r in desired.routes}
    assert modes[ula2.subnets[0]] == "routed" and modes[ula1.subnets[0]] == "nat"


def test_a_lone_0000_binding_means_any_only_when_no_ipv4_address_was_asked(inspect: dict[str, Any]) -> None:
    web = container(inspect, "web")
    # An engine that reports only 0.0.0.0 for a plain -p 8080:80 (older Docker, IPv6 binding off).
    web["NetworkSettings"]["Ports"]["80/tcp"] = [{"HostIp": "0.0.0.0", "HostPort": "8080"}]
    ports = published(inspect)
    assert ports[("tcp", None, 8080)] == ("web", 80, "ula1")
    # -p 0.0.0.0:9191:91 asked for IPv4 explicitly: still nothing.
    assert not [k for k in ports if k[2] == 9191]


def test_a_container_on_two_networks_is_published_on_the_first_by_name(inspect: dict[str, Any]) -> None:
    ports = published(inspect)
    assert {v[2] for k, v in ports.items() if v[0] == "web"} == {"ula1"}
    for ep_name in ("ula1", "ula2"):
        assert any(ep.container_name == "web" and ep.network_name == ep_name
                   for ep in docker_state_from_inspect(inspect["networks_verbose"], inspect["containers"]).endpoints)


def test_the_v6nat_network_label_picks_the_network(inspect: dict[str, Any]) -> None:
    container(inspect, "web")["Config"]["Labels"] = {"v6nat.network": "ula2"}
    state = docker_state_from_inspect(inspect["networks_verbose"], inspect["containers"])
    web = [m for m in state.mappings if m.container_name == "web"]
    assert web and {m.network_name for m in web} == {"ula2"}
    assert {m.container_addr for m in web} == {IPv6Address("fd00:2::2")}
    # ula2's host_binding_ipv6 now applies to web's wildcard bindings; [::1]:9393 stays the host's own
    # (and, ula2 being filtered as routed, each public one at web's own address and port too)
    assert {m.host_addr for m in web} == {HOST, IPv6Address("::1"), IPv6Address("fd00:2::2")}


def test_a_label_naming_another_network_falls_back_and_says_so(inspect: dict[str, Any]) -> None:
    container(inspect, "web")["Config"]["Labels"] = {"v6nat.network": "nope"}
    state = docker_state_from_inspect(inspect["networks_verbose"], inspect["containers"])
    assert {m.network_name for m in state.mappings if m.container_name == "web"} == {"ula1"}
    assert any("v6nat.network='nope'" in p for p in state.problems)


def test_stopped_containers_publish_nothing(inspect: dict[str, Any]) -> None:
    container(inspect, "web")["State"]["Running"] = False
    assert not [v for v in published(inspect).values() if v[0] == "web"]


def test_internal_networks_are_managed_but_never_published_on(inspect: dict[str, Any]) -> None:
    net = next(n for n in inspect["networks_verbose"] if n["Name"] == "ula1")
    net["Internal"] = True
    state = docker_state_from_inspect(inspect["networks_verbose"], inspect["containers"])
    assert next(n for n in state.networks if n.name == "ula1").internal
    # web falls back to ula2 (its other network); range has no other network
    assert {m.network_name for m in state.mappings if m.container_name == "web"} == {"ula2"}
    assert not [m for m in state.mappings if m.container_name == "range"]


def test_ids_are_stable_and_distinct(inspect: dict[str, Any]) -> None:
    first = docker_state_from_inspect(inspect["networks_verbose"], inspect["containers"])
    moved = copy.deepcopy(inspect)
    web = container(moved, "web")
    web["Id"] = "f" * 64  # the container replaced by a new one with another address
    web["NetworkSettings"]["Networks"]["ula1"]["GlobalIPv6Address"] = "fd00:1::99"
    second = docker_state_from_inspect(moved["networks_verbose"], moved["containers"])
    ids1 = {m.key: m.mapping_id for m in first.mappings}
    ids2 = {m.key: m.mapping_id for m in second.mappings}
    assert ids1 == ids2 and len(set(ids1.values())) == len(ids1) and 0 not in ids1.values()
    assert {m.container_addr for m in second.mappings if m.container_name == "web"} == {IPv6Address("fd00:1::99")}
    assert [n.network_id for n in first.networks] == [n.network_id for n in second.networks]


def test_desired_state_joins_docker_and_host(inspect: dict[str, Any]) -> None:
    docker = docker_state_from_inspect(inspect["networks_verbose"], inspect["containers"])
    ula1 = next(n for n in docker.networks if n.name == "ula1")
    host = HostState(public=(PublicInterface(2, "pub0", (HOST, IPv6Address("2001:db8:1::2:1"))),),
                     links=(Link("lo", 1), Link("pub0", 2), Link(ula1.bridge, 7, None, (IPv6Address("fd00:1::1"),)),
                            Link("veth1", 8, master=7, kind="veth", peer_netnsid=0)))
    desired = model.desired_state(docker, host)
    # brula2 does not exist yet: no route, no attachment until it appears
    assert desired.bridges == (ula1.bridge,)
    assert [(r.prefix, r.bridge_ifindex, r.masquerade, r.gateway) for r in desired.routes] == [
        (IPv6Network("fd00:1::/64"), 7, True, IPv6Address("fd00:1::1"))]
    assert desired.veths == ("veth1",)  # every veth on a managed bridge: the fast path starts there
    assert desired.public_ifaces == ((2, HOST),)
    assert dict(desired.host_addrs) == {HOST: 2, IPv6Address("2001:db8:1::2:1"): 2}
    assert desired.public_names == ("pub0",)
    assert desired.mappings == docker.mappings


def test_an_interface_without_address_is_reported() -> None:
    desired = model.desired_state(model.DockerState(), HostState(public=(PublicInterface(2, "pub0", ()),)))
    assert desired.public_ifaces == () and desired.public_names == ("pub0",)
    assert any("pub0" in p for p in desired.problems)


def test_the_veth_program_goes_on_every_port_of_managed_bridges_only(inspect: dict[str, Any]) -> None:
    ula1 = next(n for n in inspect["networks_verbose"] if n["Name"] == "ula1")
    ula1["Options"] = {model.OPT_ICC: "false"}
    docker = docker_state_from_inspect(inspect["networks_verbose"], inspect["containers"])
    bridge = next(n.bridge for n in docker.networks if n.name == "ula1")
    host = HostState(links=(Link(bridge, 7, None, (IPv6Address("2001:db8:5::1"), IPv6Address("fd00:1::1"))),
                            Link("brula2", 9), Link("veth-b", 11, master=7, kind="veth", peer_netnsid=1),
                            Link("veth-a", 10, master=7, kind="veth", peer_netnsid=0),
                            Link("tap-a", 15, master=7, kind="tun"), Link("veth-local", 16, master=7, kind="veth"),
                            Link("veth-other", 12, master=9, kind="veth", peer_netnsid=2), Link("br-unmanaged", 13),
                            Link("veth-x", 14, master=13, kind="veth", peer_netnsid=3)))
    desired = model.desired_state(docker, host)
    # icc on or off; only veths with their peer in another namespace (a container to deliver into),
    # not veths of other bridges
    assert desired.veths == ("veth-a", "veth-b", "veth-other")
    route = next(r for r in desired.routes if r.bridge_ifindex == 7)
    assert (route.icc, route.gateway) == (False, IPv6Address("fd00:1::1"))  # the bridge's address in the prefix


def _veth_host(docker: model.DockerState, nsids: dict[str, int]) -> HostState:
    """ula1's bridge (7, with a MAC) and brula2 (9), a veth per (container, network) whose peer is in the
    container's namespace (nsid by container name), and a veth whose namespace no container has."""
    ula1 = next(n for n in docker.networks if n.name == "ula1")
    mac = bytes.fromhex("02420a000001")
    sandbox = {s.container_name: s for s in docker.sandboxes}
    return HostState(
        links=(Link(ula1.bridge, 7, None, (IPv6Address("fd00:1::1"),), kind="bridge", mac=mac),
               Link("brula2", 9, kind="bridge", mac=bytes.fromhex("02420a000002")),
               Link("veth-web1", 20, master=7, kind="veth", peer_netnsid=nsids["web"]),
               Link("veth-range", 21, master=7, kind="veth", peer_netnsid=nsids["range"]),
               Link("veth-web2", 22, master=9, kind="veth", peer_netnsid=nsids["web"]),
               Link("veth-pall", 23, master=9, kind="veth", peer_netnsid=nsids["pall"]),
               Link("veth-stray", 24, master=7, kind="veth", peer_netnsid=99)),
        netns_ids=tuple((sandbox[name].netns, nsid) for name, nsid in nsids.items()))


def test_sandboxes_carry_every_managed_attachment_with_its_addresses(inspect: dict[str, Any]) -> None:
    docker = docker_state_from_inspect(inspect["networks_verbose"], inspect["containers"])
    ids = {n.name: n.id for n in docker.networks}
    by_name = {s.container_name: s for s in docker.sandboxes}
    web = by_name["web"]
    assert web.key.endswith("/netns/d3dc362e2428") and web.pid == 9444
    assert web.addresses_on(ids["ula1"]) == (IPv6Address("fd00:1::2"),)
    assert web.addresses_on(ids["ula2"]) == (IPv6Address("fd00:2::2"),)
    assert by_name["range"].addresses_on(ids["ula2"]) is None  # not attached
    # a container attached without an IPv6 address still has a sandbox (its veth may send link-local only)
    data = copy.deepcopy(inspect)
    container(data, "range")["NetworkSettings"]["Networks"]["ula1"]["GlobalIPv6Address"] = ""
    again = docker_state_from_inspect(data["networks_verbose"], data["containers"])
    assert {s.container_name: s for s in again.sandboxes}["range"].addresses_on(ids["ula1"]) == ()


def test_each_veth_a_container_owns_gets_its_network_and_addresses(inspect: dict[str, Any]) -> None:
    ula2 = next(n for n in inspect["networks_verbose"] if n["Name"] == "ula2")
    ula2["Options"] = {**ula2["Options"], model.OPT_ICC: "false"}
    ula2["Internal"] = True
    docker = docker_state_from_inspect(inspect["networks_verbose"], inspect["containers"])
    nets = {n.name: n for n in docker.networks}
    desired = model.desired_state(docker, _veth_host(docker, {"web": 3, "range": 4, "pall": 5}))
    policies = dict(desired.veth_policies)
    assert sorted(policies) == [20, 21, 22, 23]  # keyed by the veth's ifindex
    assert policies[20] == model.VethPolicy(nets["ula1"].network_id, 7, True, True, False,
                                            (IPv6Address("fd00:1::2"),), bytes.fromhex("02420a000001"))
    assert policies[21].addrs == (IPv6Address("fd00:1::3"),)
    # the same container's veth on the other network: that network's address, flags and bridge
    assert policies[22] == model.VethPolicy(nets["ula2"].network_id, 9, False, False, True,
                                            (IPv6Address("fd00:2::2"),), bytes.fromhex("02420a000002"),
                                            "routed")  # no masquerade: filtered as routed
    assert policies[23].addrs == (IPv6Address("fd00:2::3"),)
    # attached (the veth program), but no entry: its namespace is no container's, so it drops (fail-closed)
    assert "veth-stray" in desired.veths and desired.unowned_veths == ("veth-stray",)
    assert set(desired.container_addrs) == {(ep.container_id, ep.address) for ep in docker.endpoints}


def test_a_veth_gets_no_entry_until_its_container_is_known(inspect: dict[str, Any]) -> None:
    docker = docker_state_from_inspect(inspect["networks_verbose"], inspect["containers"])
    host = _veth_host(docker, {"web": 3, "range": 4, "pall": 5})
    # the host has not (yet) answered for web's namespace: web's veths get nothing, the others keep theirs
    partial = HostState(host.public, host.links, tuple((ref, nsid) for ref, nsid in host.netns_ids if nsid != 3))
    desired = model.desired_state(docker, partial)
    assert sorted(dict(desired.veth_policies)) == [21, 23]
    assert desired.unowned_veths == ("veth-stray", "veth-web1", "veth-web2")
    # Docker no longer lists range (stopped): its veth, still there for a moment, loses its entry
    gone = docker_state_from_inspect(inspect["networks_verbose"],
                                     [c for c in inspect["containers"] if c["Name"] != "/range"])
    assert 21 not in dict(model.desired_state(gone, host).veth_policies)
    # a container whose nsid matches a veth on a network it is not attached to owns nothing there
    swapped = _veth_host(docker, {"web": 3, "range": 5, "pall": 4})
    crossed = HostState(host.public, host.links, swapped.netns_ids)  # range's veth names pall's namespace
    policies = dict(model.desired_state(docker, crossed).veth_policies)
    assert 21 not in policies and 23 not in policies


def test_a_container_without_ipv6_on_the_network_may_send_link_local_only(inspect: dict[str, Any]) -> None:
    container(inspect, "range")["NetworkSettings"]["Networks"]["ula1"]["GlobalIPv6Address"] = ""
    docker = docker_state_from_inspect(inspect["networks_verbose"], inspect["containers"])
    policies = dict(model.desired_state(docker, _veth_host(docker, {"web": 3, "range": 4, "pall": 5})).veth_policies)
    assert policies[21].addrs == ()


def test_container_addresses_change_with_the_container_not_the_address(inspect: dict[str, Any]) -> None:
    """A replacement at the same address is a new (container id, address): the reconciler forgets the
    flows of the old one even though the address is still in use."""
    docker = docker_state_from_inspect(inspect["networks_verbose"], inspect["containers"])
    before = set(model.desired_state(docker, HostState()).container_addrs)
    container(inspect, "range")["Id"] = "f" * 64
    after = set(model.desired_state(docker_state_from_inspect(inspect["networks_verbose"], inspect["containers"]),
                                    HostState()).container_addrs)
    assert {addr for _, addr in before - after} == {IPv6Address("fd00:1::3")}
    assert {addr for _, addr in before} == {addr for _, addr in after}


def test_veth_addresses_fit_the_datapath() -> None:
    from v6nat_ebpf.datapath import layout

    assert model.VETH_ADDRS_MAX == layout.header().const("V6NAT_VETH_ADDRS")


@pytest.mark.parametrize("option,host_wide,eif", [
    (None, "address-and-port-dependent", False),
    (None, "endpoint-independent", True),
    ("endpoint-independent", "address-and-port-dependent", True),
    ("address-and-port-dependent", "endpoint-independent", False),
])
def test_udp_filtering_by_network_option_else_host_wide(inspect: dict[str, Any], option: str | None,
                                                         host_wide: str, eif: bool) -> None:
    """RFC 4787 REQ-8's choice: the network's v6nat.udp_filtering option wins over `--udp-filtering`."""
    data = copy.deepcopy(inspect)
    ula1 = next(n for n in data["networks_verbose"] if n["Name"] == "ula1")
    if option is not None:
        ula1.setdefault("Options", {})[model.OPT_UDP_FILTERING] = option
    docker = docker_state_from_inspect(data["networks_verbose"], data["containers"])
    net = next(n for n in docker.networks if n.name == "ula1")
    host = HostState(public=(PublicInterface(2, "pub0", (HOST,)),), links=(Link(net.bridge, 7),))
    [route] = model.desired_state(docker, host, host_wide).routes
    assert route.udp_eif is eif


def test_a_bad_udp_filtering_option_is_reported_and_the_default_kept(inspect: dict[str, Any]) -> None:
    data = copy.deepcopy(inspect)
    next(n for n in data["networks_verbose"] if n["Name"] == "ula1").setdefault("Options", {})[
        model.OPT_UDP_FILTERING] = "full-cone"
    docker = docker_state_from_inspect(data["networks_verbose"], data["containers"])
    assert next(n for n in docker.networks if n.name == "ula1").udp_filtering == "address-and-port-dependent"
    assert any("v6nat.udp_filtering='full-cone'" in p for p in docker.problems)


def _variants(inspect: dict[str, Any]) -> list[dict[str, Any]]:
    """The capture, and the capture changed the ways the tests above change it (a lone 0.0.0.0 binding, the
    v6nat.network label, source-policy labels, a stopped container, a GwPriority, a network option)."""
    out = [copy.deepcopy(inspect) for _ in range(4)]
    web = container(out[1], "web")
    web["NetworkSettings"]["Ports"]["80/tcp"] = [{"HostIp": "0.0.0.0", "HostPort": "8080"}]
    web["Config"]["Labels"] = {model.NETWORK_LABEL: "ula2", "v6nat.allow": "2001:db8:5::/48",
                               "v6nat.deny.80/tcp": "not a prefix"}
    container(out[2], "pall")["State"]["Running"] = False
    next(iter(container(out[2], "web")["NetworkSettings"]["Networks"].values()))["GwPriority"] = 5
    out[3]["networks_verbose"][0].setdefault("Options", {})["v6nat.allow"] = "2001:db8:7::/48"
    return out


def test_the_inspect_subset_the_docker_source_keeps_decides_as_the_whole_documents(inspect: dict[str, Any]) -> None:
    """DockerSource keeps only model.*_inspect_subset of each document (issue 15: memory): the model and the
    source policy must decide on it exactly as on the whole documents."""
    from v6nat_ebpf.policy import declarations_from_inspect

    host = HostState(public=(PublicInterface(1, "pub0", (HOST,)),))
    for data in _variants(inspect):
        networks = [model.network_inspect_subset(n) for n in data["networks_verbose"]]
        containers = [model.container_inspect_subset(c) for c in data["containers"]]
        whole = docker_state_from_inspect(data["networks_verbose"], data["containers"])
        kept = docker_state_from_inspect(networks, containers)
        assert kept == whole and whole.mappings
        assert model.desired_state(kept, host) == model.desired_state(whole, host)
        assert declarations_from_inspect(networks, containers) == declarations_from_inspect(
            data["networks_verbose"], data["containers"])
    web = container(inspect, "web")
    kept_web = model.container_inspect_subset(web)
    assert "ExposedPorts" not in kept_web["Config"]
    # Beside an IPv6 binding of the same port, the IPv4 one (which gives no IPv6 mapping) is not kept.
    assert kept_web["NetworkSettings"]["Ports"]["80/tcp"] == [b for b in web["NetworkSettings"]["Ports"]["80/tcp"]
                                                             if ":" in b["HostIp"]]

"""Docker 27, 28 and 29 as v6nat sees them, on the hand-written fixtures of docker_fixtures.py: the model
(gateway modes, global subnets, gw-priority, host-local bindings, IPv6-only networks, a default binding
address in host_binding_ipv4) and the preflight's double-NAT decision (ip6tables on by default from 27.0,
explicit settings, FirewallBackend, userland-proxy)."""

from __future__ import annotations

import copy
import subprocess
import sys
from ipaddress import IPv6Address, IPv6Network

import pytest

from docker_fixtures import DUAL, INFO, LOCAL_ONLY, NET_ID_ROUTED, NETWORKS_28, V6ONLY, endpoint, network, version
from v6nat_ebpf import preflight
from v6nat_ebpf.model import HOST_ONLY_ADDR, docker_state_from_inspect


def test_gateway_modes_and_global_subnets_are_read() -> None:
    state = docker_state_from_inspect(NETWORKS_28, [])
    by_name = {n.name: n for n in state.networks}
    assert by_name["web-gua"].mode == "routed" and by_name["web-gua"].masquerade is False
    assert by_name["web-gua"].subnets == (IPv6Network("2001:db8:28::/64"),)
    assert by_name["web-nat"].mode == "nat" and by_name["web-nat"].masquerade is True


@pytest.mark.parametrize("mode, masquerade, internal", [
    ("nat", True, False), ("routed", False, False), ("nat-unprotected", True, False), ("isolated", False, True),
])
def test_each_mode(mode: str, masquerade: bool, internal: bool) -> None:
    net = network("d" * 64, "n", "fd00:30::/64", {"com.docker.network.bridge.gateway_mode_ipv6": mode},
                  internal=mode == "isolated")
    (parsed,) = docker_state_from_inspect([net], []).networks
    assert (parsed.mode, parsed.masquerade, parsed.internal) == (mode, masquerade, internal)


def test_an_unknown_mode_is_reported_and_taken_as_nat() -> None:
    net = network("d" * 64, "n", "fd00:30::/64", {"com.docker.network.bridge.gateway_mode_ipv6": "bogus"})
    state = docker_state_from_inspect([net], [])
    assert state.networks[0].mode == "nat" and "bogus" in state.problems[0]


def test_gw_priority_picks_the_network_before_label_and_name() -> None:
    state = docker_state_from_inspect(NETWORKS_28, [DUAL])
    (mapping,) = state.mappings
    # web-gua has GwPriority 1 (web-nat sorts first by name): routed, the container's own port and address.
    assert (mapping.network_name, mapping.host_addr, mapping.host_port) == (
        "web-gua", IPv6Address("2001:db8:28::2"), 80)
    labelled = copy.deepcopy(DUAL)
    labelled["Config"]["Labels"]["v6nat.network"] = "web-nat"  # the label does not beat a higher priority
    assert docker_state_from_inspect(NETWORKS_28, [labelled]).mappings[0].network_name == "web-gua"
    equal = copy.deepcopy(labelled)
    equal["NetworkSettings"]["Networks"]["web-gua"]["GwPriority"] = 0  # equal priorities: the label decides
    equal["NetworkSettings"]["Ports"]["80/tcp"][1]["HostPort"] = "8080"  # (a nat gateway: Docker binds a host port)
    assert docker_state_from_inspect(NETWORKS_28, [equal]).mappings[0].network_name == "web-nat"


def public(mappings) -> list:
    """The mappings reachable from outside: all but host-only ones (`::1`, issue 14's host-local access)."""
    return [m for m in mappings if m.host_addr != HOST_ONLY_ADDR]


def test_loopback_and_link_local_bindings_are_never_public() -> None:
    mappings = docker_state_from_inspect(NETWORKS_28, [LOCAL_ONLY]).mappings
    assert {m.host_port for m in public(mappings)} == {8083}
    assert {(m.host_addr, m.host_port) for m in mappings if m not in public(mappings)} == {(HOST_ONLY_ADDR, 8081)}


def test_a_host_only_binding_opens_no_routed_container_port() -> None:
    routed_local = copy.deepcopy(LOCAL_ONLY)
    routed_local["NetworkSettings"]["Networks"] = {"web-gua": endpoint(NET_ID_ROUTED, "2001:db8:28::3")}
    mappings = docker_state_from_inspect(NETWORKS_28, [routed_local]).mappings
    assert [(m.host_addr, m.host_port) for m in public(mappings)] == [(IPv6Address("2001:db8:28::3"), 83)]


def test_ipv6_only_network_publishes_at_its_default_binding_address() -> None:
    state = docker_state_from_inspect(NETWORKS_28, [V6ONLY])
    (mapping,) = state.mappings
    assert (mapping.proto, mapping.host_addr, mapping.host_port) == (17, IPv6Address("2001:db8:1::5"), 5353)


@pytest.mark.parametrize("default, published_at", [
    ("2001:db8:1::5", IPv6Address("2001:db8:1::5")), ("::1", HOST_ONLY_ADDR), ("fe80::1", None), ("::", "any"),
    ("127.0.0.1", "any"),
])
def test_host_binding_ipv4_holding_ipv6_is_the_default_binding(default: str, published_at) -> None:
    nets = copy.deepcopy(NETWORKS_28)
    nets[0]["Options"] = {"com.docker.network.bridge.host_binding_ipv4": default}
    only_any = copy.deepcopy(LOCAL_ONLY)
    only_any["NetworkSettings"]["Ports"] = {"83/tcp": [{"HostIp": "::", "HostPort": "8083"}]}
    mappings = docker_state_from_inspect(nets, [only_any]).mappings
    if published_at is None:
        assert mappings == ()  # a link-local default keeps "::" bindings off public interfaces
    else:  # a ::1 default: host-only (issue 14's host-local access), never from outside
        assert [m.host_addr for m in mappings] == [None if published_at == "any" else published_at]


# -- the double-NAT decision ----------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["27", "28", "29"])
def test_ip6tables_is_on_by_default_from_27(engine: str) -> None:
    info = INFO[engine]
    fw = preflight.docker_firewall(version(engine + ".0.0")["Version"], info, {})
    assert fw.ip6tables and "since Docker 27.0" in fw.ip6tables_source
    (ip6, proxy) = preflight.double_nat_problems(fw)
    assert '"ip6tables": false' in ip6 and "--allow-docker-ip6tables" in ip6
    assert '"userland-proxy": false' in proxy and "--allow-docker-userland-proxy" in proxy
    assert fw.backend == info.get("FirewallBackend", {}).get("Driver")
    if fw.backend:
        assert f"backend {fw.backend}" in ip6


@pytest.mark.parametrize("engine", ["27", "28", "29"])
def test_explicit_settings_off_let_run_start(engine: str) -> None:
    fw = preflight.docker_firewall(INFO[engine]["ServerVersion"], INFO[engine],
                                   {"ip6tables": False, "userland-proxy": False})
    assert preflight.double_nat_problems(fw) == []


def test_a_dockerd_that_cannot_be_seen_is_taken_at_its_versions_default() -> None:
    fw = preflight.docker_firewall("28.3.3", INFO["28"], None)
    assert fw.ip6tables and fw.userland_proxy and "not visible" in fw.ip6tables_source
    assert not preflight.docker_firewall("20.10.24+dfsg1", {}, None).ip6tables  # off by default before 27.0


def test_allow_flags_accept_what_the_user_knows() -> None:
    fw = preflight.docker_firewall("29.0.1", INFO["29"], {})
    assert preflight.double_nat_problems(fw, allow_ip6tables=True, allow_userland_proxy=True) == []
    assert len(preflight.double_nat_problems(fw, allow_ip6tables=True)) == 1


@pytest.mark.parametrize("text, expected", [
    ("20.10.24+dfsg1", (20, 10)), ("27.0.3", (27, 0)), ("29.0.0-rc.1", (29, 0)), ("", (0, 0)), ("dev", (0, 0)),
])
def test_engine_version(text: str, expected: tuple[int, int]) -> None:
    assert preflight.engine_version(text) == expected


@pytest.mark.parametrize("hosts, socket, expected", [
    ([], "/var/run/docker.sock", True),
    (["fd://"], "/var/run/docker.sock", True),  # Debian's docker.service: socket activation
    (["fd://", "tcp://0.0.0.0:2375"], "/run/docker.sock", True),
    (["unix:///run/docker.sock"], "/var/run/docker.sock", True),
    (["unix:///srv/lab/docker.sock"], "/srv/lab/docker.sock", True),
    (["unix:///srv/lab/docker.sock"], "/var/run/docker.sock", False),
    (["fd://"], "/srv/lab/docker.sock", False),
    ([], "/srv/lab/docker.sock", False),
])
def test_which_dockerd_serves_a_socket(hosts: list[str], socket: str, expected: bool) -> None:
    assert preflight.dockerd_serves(hosts, socket) is expected


def test_flags_override_the_config_file(tmp_path) -> None:
    config = tmp_path / "daemon.json"
    config.write_text('{"ip6tables": false, "userland-proxy": false}')
    flags = preflight._parse_flags(["--config-file", str(config), "--ip6tables", "--experimental"])
    assert preflight._effective_settings(flags) == {"ip6tables": True, "userland-proxy": False}
    assert preflight._effective_settings(preflight._parse_flags(["--config-file", str(tmp_path / "none")])) == {}
    # A dockerd in another mount namespace: its config file is read through its /proc/PID/root.
    (tmp_path / "etc" / "docker").mkdir(parents=True)
    (tmp_path / "etc" / "docker" / "daemon.json").write_text('{"ip6tables": true}')
    assert preflight._effective_settings({}, root=tmp_path) == {"ip6tables": True}


def test_config_read_where_the_dockerd_root_is_refused(tmp_path) -> None:
    """Under the systemd unit (no CAP_SYS_PTRACE) dockerd's /proc/PID/root is refused: its daemon.json is
    then read at the same path in v6nat's own root, not taken as absent (which meant the default)."""
    config = tmp_path / "daemon.json"
    config.write_text('{"userland-proxy": false}')
    code = ("from pathlib import Path; from v6nat_ebpf import preflight; "
            f"print(preflight._effective_settings({{'--config-file': ['{config}']}}, root=Path('/proc/1/root')))")
    result = subprocess.run(["capsh", "--drop=cap_sys_ptrace", "--", "-c",
                             f"ls /proc/1/root/ >/dev/null 2>&1 && echo readable; {sys.executable} -c \"{code}\""],
                            capture_output=True, text=True, timeout=30)
    assert result.stdout.splitlines() == ["{'userland-proxy': False}"], result.stderr

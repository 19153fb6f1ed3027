"""The "before" picture: what Docker 20.10 does with an IPv6 client and a published port.

Each test prints what it measured (run with -s to see it); README cites these.
"""

from __future__ import annotations

import ipaddress

import pytest

from v6nat_ebpf.lab import PEER_ECHO_COMMAND, PEER_ECHO_PORT, Lab, LabConfig, PeerProbe

pytestmark = pytest.mark.lab

ULA = "fd00:ca7e:d09e::/64"
PUBLISHED = 8080


def probe_published_port(config: LabConfig) -> tuple[Lab, PeerProbe]:
    with Lab(config) as lab:
        net = lab.create_network("ula", ULA)
        lab.run_container("echo", net, PEER_ECHO_COMMAND, ports={f"{PEER_ECHO_PORT}/tcp": PUBLISHED})
        probe = lab.probe_peer(lab.host_addr, PUBLISHED)
        flags = f"userland_proxy={config.userland_proxy} ip6tables={config.ip6tables}"
        print(f"\n[baseline] {flags}: client {lab.client_addr} -> {probe.target}: "
              f"container saw {probe.peer}, connected={probe.connected}, {probe.detail or 'ok'}, "
              f"{probe.elapsed_s:.2f} s")
        return lab, probe


def test_userland_proxy_hides_the_client_address() -> None:
    lab, probe = probe_published_port(LabConfig(userland_proxy=True))
    assert probe.peer is not None, probe
    assert probe.peer != lab.client_addr
    assert probe.peer in ipaddress.IPv6Network(ULA), "docker-proxy connects from the bridge"


def test_without_userland_proxy_ipv6_published_port_is_unreachable() -> None:
    lab, probe = probe_published_port(LabConfig(userland_proxy=False))
    # dockerd holds the port (its placeholder socket completes the handshake), but
    # nothing forwards IPv6 to the container: the client waits and gets nothing.
    assert probe.peer is None, probe


def test_docker_ip6tables_keeps_the_client_address() -> None:
    lab, probe = probe_published_port(LabConfig(userland_proxy=False, ip6tables=True))
    assert probe.peer == lab.client_addr, probe

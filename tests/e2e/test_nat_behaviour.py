"""NAT behaviour as a third-party tool sees it: coturn's `turnutils_natdiscovery` (RFC 5780 NAT behaviour
discovery) in a container, against coturn's `turnserver` as a STUN server on two addresses in the
outside netns. What it reports is what docs/conformance.md claims (the rows name these tests).

The binary and its libraries come from the host's /usr, which every lab container mounts read-only."""

from __future__ import annotations

import shutil
import time
from typing import Iterator

import pytest
from docker.models.containers import Container

from e2e_support import V6nat
from v6nat_ebpf.datapath import Datapath
from v6nat_ebpf.lab import Lab

pytestmark = pytest.mark.lab

STUN_PORT = 3478
SECOND_ADDR = "2001:db8:1::3"  # the STUN server's other address, beside the client's


@pytest.fixture(scope="module")
def stun_server(lab: Lab) -> None:
    for tool in ("turnserver", "turnutils_natdiscovery"):
        assert shutil.which(tool), f"{tool} is missing: scripts/setup installs coturn"
    lab.exec(lab.client_ns, ["ip", "-6", "addr", "add", f"{SECOND_ADDR}/64", "dev", lab.client_iface, "nodad"])
    # STUN only, on both addresses (RFC 5780 needs two) and on the port and the one above it.
    lab.popen(lab.client_ns, ["turnserver", "--stun-only", "--no-tls", "--no-dtls", "--no-cli", "-n",
                              "-L", str(lab.client_addr), "-L", SECOND_ADDR, "--listening-port", str(STUN_PORT),
                              "--log-file", "stdout", "--simple-log"])
    for _ in range(50):  # until both addresses answer
        ss = lab.exec(lab.client_ns, ["ss", "-Hlun"]).stdout
        if f"[{SECOND_ADDR}]:{STUN_PORT + 1}" in ss and f"[{lab.client_addr}]:{STUN_PORT}" in ss:
            break
        time.sleep(0.1)


@pytest.fixture(scope="module")
def client(lab: Lab, v6nat: V6nat, stun_server: None) -> Iterator[Container]:
    net = lab.create_network("natdisc", "fd00:8::/64")
    container = lab.run_container("natdisc", net, "sleep 3600")
    yield container
    container.remove(force=True)


@pytest.fixture(scope="module")
def cone_client(lab: Lab, v6nat: V6nat, stun_server: None) -> Iterator[Container]:
    """A container on a network that asks for endpoint-independent UDP filtering (full cone)."""
    net = lab.create_network("natcone", "fd00:18::/64", options={"v6nat.udp_filtering": "endpoint-independent"})
    container = lab.run_container("natcone", net, "sleep 3600")
    yield container
    container.remove(force=True)


def natdiscovery(lab: Lab, container: Container, *flags: str) -> str:
    code, out = container.exec_run(["turnutils_natdiscovery", *flags, "-p", str(STUN_PORT), str(lab.client_addr)])
    text = out.decode(errors="replace")
    assert code == 0, text
    return text


def test_udp_mapping_is_endpoint_independent(lab: Lab, client: Container) -> None:
    """RFC 4787 REQ-1: one external port for an internal endpoint, whatever the destination."""
    assert "NAT with Endpoint Independent Mapping!" in natdiscovery(lab, client, "-m")


def test_udp_filtering_is_address_and_port_dependent(lab: Lab, client: Container) -> None:
    """RFC 4787 REQ-8: the stringent choice (the default): only the endpoint a mapping was opened toward
    may answer through it."""
    assert "NAT with Address and Port Dependent Filtering!" in natdiscovery(lab, client, "-f")


def test_udp_filtering_is_endpoint_independent_where_a_network_asks(lab: Lab, cone_client: Container) -> None:
    """RFC 4787 REQ-8 (configurable): with v6nat.udp_filtering=endpoint-independent, the server's answers
    from its other address and port reach the container through the mapping, counted as full_cone."""
    assert "NAT with Endpoint Independent Filtering!" in natdiscovery(lab, cone_client, "-f")
    with Datapath.open_pinned(lab.pin_path) as dp:
        assert dp.counters()["full_cone"] >= 1


def test_hairpinning_of_a_masquerade_mapping_is_not_supported(lab: Lab, client: Container) -> None:
    """RFC 4787 REQ-9 is not met (docs/conformance.md says why): a container's packet to its own mapping at
    the host's address does not come back to it."""
    assert "successful hairpinning" not in natdiscovery(lab, client, "-H")


def test_a_mapping_outlives_a_pause(lab: Lab, client: Container) -> None:
    """RFC 4787 REQ-5/6: after 5 s without traffic the server still reaches the first mapping (the
    timer's length against the RFC minimum is tests/datapath/test_conformance.py's)."""
    out = natdiscovery(lab, client, "-t", "-T", "5")
    assert "timeout" not in out.lower() and "5: : IPv6. UDP reflexive addr" in out, out

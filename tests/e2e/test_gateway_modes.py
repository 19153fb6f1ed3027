"""Docker's gateway modes end to end (`com.docker.network.bridge.gateway_mode_ipv6`), real packets.

Docker 20.10 (the engine here) keeps the option on the network without acting
on it, so everything that happens to these packets is v6nat's doing. The lab
has a router between the client and the host; each network's prefix is routed
to the host by that router, as a provider routes a customer's /64.

- routed, on a global prefix (2001:db8:40::/64): the published container port
  is reached at the container's own address, the client's address unchanged;
  an unpublished port of the same container is dropped and counted; the host
  port of `-p` is not used; the container's own connections leave with its
  own address.
- nat-unprotected: any port of the container is reachable at its address;
  its outbound connections are masqueraded.
- isolated: nothing reaches the container, from outside or from the host,
  and it reaches nothing outside its network (the host included).
- a container on two networks of different modes (routed and nat) is
  published on its gateway network (routed) only, and nothing reaches its
  nat address directly.
"""

from __future__ import annotations

import json
import time
from ipaddress import IPv6Address, IPv6Network
from typing import Iterator

import pytest
from docker.models.containers import Container
from e2e_support import V6nat, address_in, eventually, lab_config

from v6nat_ebpf.datapath import Datapath
from v6nat_ebpf.lab import Lab

pytestmark = pytest.mark.lab

OUTSIDE_TCP = 7000
MODE = "com.docker.network.bridge.gateway_mode_ipv6"
ROUTED_PREFIX, UNPROTECTED_PREFIX, ISOLATED_PREFIX, NAT_PREFIX, PLAIN_PREFIX = (
    "2001:db8:40::/64", "fd00:43::/64", "fd00:42::/64", "fd00:44::/64", "2001:db8:45::/64")
# Port 80 published, port 22 not: both answer with the peer address they saw.
TWO_SERVERS = ["sh", "-c", "socat TCP6-LISTEN:22,fork,reuseaddr 'SYSTEM:echo $SOCAT_PEERADDR' & "
                           "exec socat TCP6-LISTEN:80,fork,reuseaddr 'SYSTEM:echo $SOCAT_PEERADDR'"]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(lab_config(router_mtu=1500)) as lab:
        yield lab


@pytest.fixture(scope="module")
def world(lab: Lab, v6nat: V6nat) -> Iterator[dict[str, Container]]:
    lab.popen(lab.client_ns, ["socat", f"TCP6-LISTEN:{OUTSIDE_TCP},fork,reuseaddr", "SYSTEM:echo $SOCAT_PEERADDR"])
    routed = lab.create_network("gw-routed", ROUTED_PREFIX, options={MODE: "routed"})
    unprotected = lab.create_network("gw-unprotected", UNPROTECTED_PREFIX, options={MODE: "nat-unprotected"})
    isolated = lab.create_network("gw-isolated", ISOLATED_PREFIX, options={MODE: "isolated"}, internal=True)
    nat = lab.create_network("gw-x-nat", NAT_PREFIX)
    plain = lab.create_network("gw-plain", PLAIN_PREFIX,
                               options={"com.docker.network.bridge.enable_ip_masquerade": "false"})
    for prefix in (ROUTED_PREFIX, UNPROTECTED_PREFIX, ISOLATED_PREFIX, NAT_PREFIX, PLAIN_PREFIX):
        lab.route_to_host(prefix)
    found = {
        "routed": lab.run_container("routed-web", routed, TWO_SERVERS, ports={"80/tcp": 8080}),
        "unprotected": lab.run_container("unprotected-web", unprotected, TWO_SERVERS, ports={"80/tcp": 8081}),
        "isolated": lab.run_container("isolated-web", isolated, TWO_SERVERS),
        "isolated-peer": lab.run_container("isolated-peer", isolated, "sleep 600"),
        # Docker 20.10 gives a container on two networks its default route on the one whose name sorts
        # first (Docker 28 lets gw-priority choose), and v6nat publishes on that one too: gw-routed.
        "dual": lab.run_container("dual-web", routed, TWO_SERVERS, ports={"80/tcp": 8082}),
        "plain": lab.run_container("plain-web", plain, TWO_SERVERS, ports={"80/tcp": 8083}),
    }
    nat.connect(found["dual"])
    time.sleep(0.3)  # the outside echo server
    yield found
    for container in found.values():
        container.remove(force=True)
    for net in (routed, unprotected, isolated, nat, plain):
        net.remove()


def drops(lab: Lab, reason: str) -> int:
    return Datapath.open_pinned(lab.pin_path).counters()[f"drop_{reason}"]


def outside_sees(container: Container, lab: Lab) -> IPv6Address | None:
    code, out = container.exec_run(["socat", "-T3", "-", f"TCP6:[{lab.client_addr}]:{OUTSIDE_TCP},connect-timeout=3"])
    return address_in(out.decode()) if code == 0 else None


def test_routed_global_prefix_publishes_container_ports_only(lab: Lab, world: dict[str, Container]) -> None:
    web = lab.container_addr(world["routed"], "gw-routed")
    assert web in IPv6Network(ROUTED_PREFIX)
    eventually(lambda: lab.probe_peer(web, 80, timeout_s=1).peer == lab.client_addr,
               what="the routed container's published port 80 at its own address")
    before = drops(lab, "unpublished")
    probe = lab.probe_peer(web, 22, timeout_s=1)
    assert probe.peer is None and not probe.connected, probe
    assert drops(lab, "unpublished") > before
    # The host port of -p 8080:80 is not used in routed mode.
    assert lab.probe_peer(lab.host_addr, 8080, timeout_s=1).peer is None
    # Outbound: the container's own address, both ways.
    assert outside_sees(world["routed"], lab) == web


def test_nat_without_masquerade_opens_published_ports_only(lab: Lab, world: dict[str, Container]) -> None:
    """Docker 28: direct routing to a nat network's unpublished ports is dropped, masquerade or not."""
    web = lab.container_addr(world["plain"], "gw-plain")
    eventually(lambda: lab.probe_peer(web, 80, timeout_s=1).peer == lab.client_addr,
               what="the published port 80 at the container's own address")
    before = drops(lab, "unpublished")
    probe = lab.probe_peer(web, 22, timeout_s=1)
    assert probe.peer is None and not probe.connected, probe
    assert drops(lab, "unpublished") > before
    assert lab.probe_peer(lab.host_addr, 8083, timeout_s=1).peer == lab.client_addr  # the host port too
    assert outside_sees(world["plain"], lab) == web  # no masquerade


def test_routed_established_flows_are_conntrack_hits(lab: Lab, world: dict[str, Container]) -> None:
    web = lab.container_addr(world["routed"], "gw-routed")
    dp = Datapath.open_pinned(lab.pin_path)
    before = dp.counters()
    assert lab.probe_peer(web, 80).peer == lab.client_addr
    after = dp.counters()
    assert after["new_flow"] - before["new_flow"] == 1  # one connection, one pair: its other packets hit it
    assert after["dnat"] - before["dnat"] >= 3 and after["reverse"] - before["reverse"] >= 2


def test_nat_unprotected_reaches_any_port_and_masquerades_outbound(lab: Lab, world: dict[str, Container]) -> None:
    web = lab.container_addr(world["unprotected"], "gw-unprotected")
    eventually(lambda: lab.probe_peer(web, 22, timeout_s=1).peer == lab.client_addr,
               what="an unpublished port of a nat-unprotected container, directly")
    assert lab.probe_peer(web, 80).peer == lab.client_addr
    assert lab.probe_peer(lab.host_addr, 8081).peer == lab.client_addr  # and its published port, as nat
    assert outside_sees(world["unprotected"], lab) == lab.host_addr


def test_isolated_reaches_nothing_and_nothing_reaches_it(lab: Lab, world: dict[str, Container]) -> None:
    iso = lab.container_addr(world["isolated"], "gw-isolated")
    # Its own network still works (once the daemon described both veths).
    eventually(lambda: world["isolated-peer"].exec_run(
        ["socat", "-T2", "-", f"TCP6:[{iso}]:80,connect-timeout=2"])[0] == 0, what="inside the isolated network")
    before = drops(lab, "isolation")
    assert lab.probe_peer(iso, 80, timeout_s=1).peer is None  # from outside
    assert lab.probe_peer(iso, 80, ns=lab.host_ns, timeout_s=1).peer is None  # from the host
    ping_host, _ = world["isolated"].exec_run(["ping", "-6", "-c", "1", "-W", "1", str(lab.host_addr)])
    gateway = lab.docker.api.inspect_container(world["isolated"].id)["NetworkSettings"]["Networks"][
        "gw-isolated"]["IPv6Gateway"]
    ping_gateway, _ = world["isolated"].exec_run(["ping", "-6", "-c", "1", "-W", "1", gateway])
    assert ping_host != 0 and ping_gateway != 0
    assert outside_sees(world["isolated"], lab) is None
    assert drops(lab, "isolation") > before


def test_two_networks_two_modes_one_container(lab: Lab, world: dict[str, Container]) -> None:
    routed_addr = lab.container_addr(world["dual"], "gw-routed")
    nat_addr = lab.container_addr(world["dual"], "gw-x-nat")
    eventually(lambda: lab.probe_peer(routed_addr, 80, timeout_s=1).peer == lab.client_addr,
               what="the dual container's port at its routed address")
    assert lab.probe_peer(routed_addr, 22, timeout_s=1).peer is None
    assert lab.probe_peer(nat_addr, 80, timeout_s=1).peer is None  # nat: nothing straight in
    assert lab.probe_peer(lab.host_addr, 8082, timeout_s=1).peer is None  # published on gw-routed, not gw-x-nat


def test_status_and_metrics_show_each_networks_mode(lab: Lab, world: dict[str, Container], v6nat: V6nat) -> None:
    def modes() -> dict[str, str]:
        status = json.loads(v6nat.cli("status", "--json", "--metrics-listen", v6nat.listen,
                                      "--pin-path", lab.pin_path).stdout)
        return {n["network"]: n["mode"] for n in status["networks"]}

    want = {"gw-routed": "routed", "gw-unprotected": "nat-unprotected", "gw-isolated": "isolated", "gw-x-nat": "nat"}
    eventually(lambda: {k: v for k, v in modes().items() if k in want} == want, what="status networks")
    metrics = v6nat.get("/metrics")
    assert 'v6nat_network_info{mode="routed",network="gw-routed",prefix="2001:db8:40::/64"} 1.0' in metrics
    text = v6nat.cli("status", "--metrics-listen", v6nat.listen, "--pin-path", lab.pin_path).stdout
    assert "gw-isolated" in text and "nat-unprotected" in text

"""The adversarial suite's world: one lab per backend, shared by every test of that backend.

Backends (the `world` fixture's parameter):
- `v6nat`:  dockerd with iptables/ip6tables and the userland proxy off, and `v6nat run` in the lab's
            host netns: v6nat is the only guard;
- `docker`: dockerd with `--experimental --ip6tables --userland-proxy=false` (Docker 20.10's own IPv6
            NAT and isolation rules), no v6nat: the expected behaviour.

Layout (the same in both):

    client netns "the internet": 2001:db8:1::2 (cli0); the attacker writes raw frames on cli0 with any source
    host netns: pub0 2001:db8:1::1 and 2001:db8:1::100 (a second host address)
      net "pub"   fd00:5ec:a::/64  masqueraded: srv (TCP echo :80 published 8080 and 8081, UDP 53 published 5353),
                                   peer (answers with the peer address, then closes; 80 published 8082),
                                   cx (an attacker container)
      net "other" fd00:5ec:b::/64  ob (peer echo on :80, unpublished)
      net "int"   fd00:5ec:c::/64  --internal: ic (an attacker container)
      net "noicc" fd00:5ec:d::/64  enable_icc=false: ns (peer echo :80 published 8090), nx (attacker)

Tests remove what they add. Sockets "in a container" are opened by the test process inside the
container's network namespace (secsupport.in_netns): network-wise the same as a process in it.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from typing import Any, Iterator

import pytest
from docker.models.containers import Container
from docker.models.networks import Network

from secsupport import Ns, eventually
from v6nat_ebpf.lab import Lab, LabConfig
from v6nat_ebpf.lab.daemon import LabDaemon

pytestmark = pytest.mark.lab

HOST_ADDR2 = IPv6Address("2001:db8:1::100")
NETS = {
    "pub": ("fd00:5ec:a::/64", {}, False),
    "other": ("fd00:5ec:b::/64", {}, False),
    "int": ("fd00:5ec:c::/64", {}, True),
    "noicc": ("fd00:5ec:d::/64", {"com.docker.network.bridge.enable_icc": "false"}, False),
}
ECHO = ["socat", "TCP6-LISTEN:80,fork,reuseaddr", "EXEC:cat"]
PEER = ["socat", "TCP6-LISTEN:80,fork,reuseaddr", "SYSTEM:echo $SOCAT_PEERADDR"]
SLEEP = ["sleep", "3600"]
CONTAINERS = {  # name -> (network, command, published ports)
    "srv": ("pub", ECHO, {"80/tcp": [8080, 8081], "53/udp": 5353}),
    "peer": ("pub", PEER, {"80/tcp": 8082}),
    "cx": ("pub", SLEEP, None),
    "ob": ("other", PEER, None),
    "ic": ("int", SLEEP, None),
    "ns": ("noicc", PEER, {"80/tcp": 8090}),
    "nx": ("noicc", SLEEP, None),
}

# v6nat: short transitory TCP timeout and a fast GC, so that a flow wrongly closed (point 8) is seen
# to expire within seconds; a small conntrack (point 9), so that a bounded flood exceeds it.
TRANSITORY_S = 4
GC_INTERVAL_S = 1
CONNTRACK_MAX = 2048


@dataclass
class World:
    backend: str
    lab: Lab
    daemon: LabDaemon | None
    client: Ns
    host: Ns
    nets: dict[str, Network]
    ctrs: dict[str, Container]
    conntrack_max: int | None = None  # v6nat's conntrack capacity (halves), None for docker
    notes: list[str] = field(default_factory=list)
    _ns_cache: dict[str, Ns] = field(default_factory=dict)

    @property
    def h1(self) -> IPv6Address:
        return self.lab.host_addr

    @property
    def h2(self) -> IPv6Address:
        return HOST_ADDR2

    @property
    def c(self) -> IPv6Address:
        return self.lab.client_addr

    def ns(self, container: Container | str) -> Ns:
        """The network namespace of a (running) container, as an attacker inside it sees it."""
        if isinstance(container, str):
            container = self.ctrs[container]
        container.reload()
        pid = container.attrs["State"]["Pid"]
        key = f"{container.id}:{pid}"
        if key not in self._ns_cache:
            net = next(iter(container.attrs["NetworkSettings"]["Networks"].values()))
            self._ns_cache[key] = Ns(container.name, f"/proc/{pid}/ns/net", "eth0",
                                     IPv6Address(net["GlobalIPv6Address"]), net["MacAddress"])
        return self._ns_cache[key]

    def addr(self, name: str) -> IPv6Address:
        return self.ns(name).addr

    def bridge(self, net: str) -> str:
        return f"br-{self.nets[net].id[:12]}"

    def bridge_mac(self, net: str) -> str:
        out = self.lab.exec(self.lab.host_ns, ["ip", "-j", "link", "show", self.bridge(net)]).stdout
        return json.loads(out)[0]["address"]

    def gateway(self, container: str) -> IPv6Address:
        """The IPv6 gateway (the bridge's address) Docker gave a container."""
        self.ctrs[container].reload()
        net = next(iter(self.ctrs[container].attrs["NetworkSettings"]["Networks"].values()))
        return IPv6Address(net["IPv6Gateway"])

    def pub_mac(self) -> str:
        out = self.lab.exec(self.lab.host_ns, ["ip", "-j", "link", "show", self.lab.public_iface]).stdout
        return json.loads(out)[0]["address"]

    def flows(self) -> list[dict[str, Any]]:
        """What the NAT tracks now, as plain dicts: v6nat's flows, or the host netns's nf_conntrack entries."""
        if self.daemon is not None:
            out = self.daemon.cli("flows", "--json", "--pin-path", self.lab.pin_path).stdout
            return json.loads(out)
        lines = self.lab.exec(self.lab.host_ns, ["cat", "/proc/net/nf_conntrack"], check=False).stdout
        return [{"line": line} for line in lines.splitlines() if "ipv6" in line]

    def flows_of_port(self, port: int) -> list[dict[str, Any]]:
        if self.daemon is not None:
            return [f for f in self.flows() if port in (f["original"]["sport"], f["original"]["dport"])]
        return [f for f in self.flows() if f"sport={port} " in f["line"] or f"dport={port} " in f["line"]]

    def counters(self) -> dict[str, int]:
        if self.daemon is None:
            return {}
        from v6nat_ebpf.datapath import Datapath
        dp = Datapath.open_pinned(self.lab.pin_path)
        try:
            return dict(dp.counters())
        finally:
            dp.close()

    def close_namespaces(self) -> None:
        for ns in self._ns_cache.values():
            ns.close()
        self._ns_cache.clear()


def _build_world(backend: str, lab: Lab, daemon: LabDaemon | None) -> World:
    lab.exec(lab.host_ns, ["ip", "-6", "addr", "add", f"{HOST_ADDR2}/64", "dev", lab.public_iface, "nodad"])
    nets = {name: lab.create_network(name, subnet, options=opts, internal=internal)
            for name, (subnet, opts, internal) in NETS.items()}
    ctrs = {name: lab.run_container(name, nets[net], cmd, ports=ports)
            for name, (net, cmd, ports) in CONTAINERS.items()}
    client = Ns(lab.client_ns, f"/run/netns/{lab.client_ns}", lab.client_iface, lab.client_addr)
    host = Ns(lab.host_ns, f"/run/netns/{lab.host_ns}", lab.public_iface, lab.host_addr)
    world = World(backend, lab, daemon, client, host, nets, ctrs,
                  conntrack_max=getattr(daemon, "conntrack_max", None))
    client.mac = json.loads(lab.exec(lab.client_ns, ["ip", "-j", "link", "show", lab.client_iface]).stdout)[0]["address"]
    host.mac = world.pub_mac()
    # Everything published answers before any test starts (v6nat catches up with Docker's events).
    for port in (8080, 8081, 8082, 8090):
        eventually(lambda: client.can_connect(world.h1, port, timeout=1), timeout=30, what=f"published port {port}")
    return world


@pytest.fixture(scope="session", params=["v6nat", "docker"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    backend = request.param
    started = time.monotonic()
    if backend == "v6nat":
        config = LabConfig(iptables=False, ip6tables=False, userland_proxy=False)
    else:
        config = LabConfig(iptables=True, ip6tables=True, userland_proxy=False)
    with Lab(config) as lab:
        daemon: LabDaemon | None = None
        try:
            if backend == "v6nat":
                daemon = LabDaemon(lab, extra=(
                    f"--conntrack-max={CONNTRACK_MAX}", "--gc-interval", str(GC_INTERVAL_S),
                    "--conntrack-timeouts", f"tcp-transitory={TRANSITORY_S}")).start()
            else:
                # The same short close timeout for Linux conntrack (per netns), so both backends are
                # given the same chance to lose a flow wrongly closed by a RST (point 8).
                lab.exec(lab.host_ns, ["sysctl", "-qw", f"net.netfilter.nf_conntrack_tcp_timeout_close={TRANSITORY_S}"],
                         check=False)
            world = _build_world(backend, lab, daemon)
            sys.stderr.write(f"\n[security] {backend} world up in {time.monotonic() - started:.1f} s\n")
            try:
                yield world
            finally:
                world.close_namespaces()
                world.client.close()
                world.host.close()
        finally:
            if daemon is not None:
                if daemon.proc is not None and daemon.proc.poll() not in (None, 0):
                    sys.stderr.write(daemon.log()[-3000:])
                daemon.close()

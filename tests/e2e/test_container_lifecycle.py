"""What the control plane tells the datapath about containers (issue 12): each container's veth is
described (network, its own addresses) in the veths map, flows of a container that goes are forgotten
with it, and the conntrack capacity follows `--conntrack-max`."""

from __future__ import annotations

import json

import pytest

from e2e_support import V6nat, eventually, udp_ask, udp_echo_server
from v6nat_ebpf.datapath import Datapath
from v6nat_ebpf.errors import V6natError
from v6nat_ebpf.lab import Lab

pytestmark = pytest.mark.lab

UDP_PORT = 5356


def udp_flows(daemon: V6nat) -> list[dict]:
    return json.loads(daemon.cli("flows", "--json", "--proto", "udp", "--pin-path", daemon.lab.pin_path).stdout)


def metric(daemon: V6nat, name: str) -> float:
    for line in daemon.get("/metrics").splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not exported")


def test_a_containers_veth_is_described_and_its_flows_go_with_it(lab: Lab) -> None:
    net = lab.create_network("life", "fd00:6d::/64")
    echo = lab.run_container("life-echo", net, udp_echo_server(53), ports={"53/udp": UDP_PORT})
    addr = lab.container_addr(echo, net)
    veth = int(echo.exec_run(["cat", "/sys/class/net/eth0/iflink"]).output)  # its host side's ifindex
    with V6nat(lab).start() as daemon:
        assert eventually(lambda: udp_ask(lab, lab.client_ns, lab.host_addr, UDP_PORT), timeout=15,
                          what="the published UDP port answers") == lab.client_addr
        with Datapath.open_pinned(lab.pin_path) as dp:
            entry = dict(dp.veths.items()).get(veth)
            assert entry is not None and entry.addrs == (addr,)
            assert (entry.masquerade, entry.icc, entry.internal) == (True, True, False)
            route = next(e for p, e in dp.networks.items() if addr in p)
            assert (entry.network_id, entry.bridge_ifindex) == (route.network_id, route.bridge_ifindex)
        flows = udp_flows(daemon)
        assert [f["kind"] for f in flows] == ["dnat"] and str(addr) in json.dumps(flows)
        echo.remove(force=True)
        # Long before the UDP timeout (300 s): the flow went with its container, so its address is clean
        # for the next one.
        eventually(lambda: udp_flows(daemon) == [], timeout=10, what="the container's flow forgotten")
        assert metric(daemon, "v6nat_conntrack_forgotten_flows_total") >= 1
        with Datapath.open_pinned(lab.pin_path) as dp:
            eventually(lambda: veth not in dict(dp.veths.items()), timeout=10, what="the veth's entry removed")
    net.remove()


def test_conntrack_max_sizes_the_table_and_a_restart_adopts_it(lab: Lab) -> None:
    with V6nat(lab, extra=["--conntrack-max", "1024"]).start() as daemon:
        with Datapath.open_pinned(lab.pin_path) as dp:
            assert dp.config.conntrack_max == 1024
            assert dp.map_fill()["conntrack"][1] == 1024
        assert daemon.stop() == 0  # the datapath stays pinned
        daemon.start()  # no flag: the pinned size is adopted
        with Datapath.open_pinned(lab.pin_path) as dp:
            assert dp.config.conntrack_max == 1024
        daemon.stop()
        other = V6nat(lab, env={"V6NAT_CONNTRACK_MAX": "2048"})
        with pytest.raises(V6natError, match="v6nat cleanup"):
            other.start(timeout=30)

"""The daemon's conntrack GC: idle flows expire on the configured timeout, on the daemon's own timer."""

from __future__ import annotations

import json

import pytest

from e2e_support import V6nat, eventually, udp_ask, udp_echo_server
from v6nat_ebpf.lab import Lab

pytestmark = pytest.mark.lab

UDP_PORT = 5353


def udp_flows(daemon: V6nat) -> list[dict]:
    return json.loads(daemon.cli("flows", "--json", "--proto", "udp", "--pin-path", daemon.lab.pin_path).stdout)


def gc_runs(daemon: V6nat) -> float:
    for line in daemon.get("/metrics").splitlines():
        if line.startswith("v6nat_conntrack_gc_runs_total "):
            return float(line.split()[1])
    raise AssertionError("v6nat_conntrack_gc_runs_total is not exported")


def test_idle_udp_flow_expires_and_a_new_one_starts(lab: Lab) -> None:
    net = lab.create_network("gc", "fd00:6c::/64")
    lab.run_container("echo", net, udp_echo_server(53), ports={"53/udp": UDP_PORT})
    with V6nat(lab, extra=["--gc-interval", "0.5", "--conntrack-timeouts", "udp=3"]).start() as daemon:
        assert "conntrack timeout udp=3 (RFC minimum 120)" in daemon.log()
        assert eventually(lambda: udp_ask(lab, lab.client_ns, lab.host_addr, UDP_PORT), timeout=15,
                          what="the published UDP port answers") == lab.client_addr
        assert [f["kind"] for f in udp_flows(daemon)] == ["dnat"]
        eventually(lambda: udp_flows(daemon) == [], timeout=20, what="the idle flow expired")
        assert gc_runs(daemon) >= 1
        # An expired flow is gone, not broken: the next datagram starts a new one.
        assert udp_ask(lab, lab.client_ns, lab.host_addr, UDP_PORT) == lab.client_addr
        assert len(udp_flows(daemon)) == 1

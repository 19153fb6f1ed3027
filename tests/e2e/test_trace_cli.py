"""`v6nat trace` against a running daemon's pinned programs and maps, with real packets through the lab:
a dropped packet shows its hook and reason, a translated one both tuples; the filter is off again when
the command ends (count reached, or SIGTERM)."""

from __future__ import annotations

import json
import signal
import subprocess
from typing import Any, Iterator

import pytest
from docker.models.containers import Container
from docker.models.networks import Network

from e2e_support import V6NAT, V6nat, eventually, tcp_echo_server
from v6nat_ebpf.datapath import Datapath
from v6nat_ebpf.lab import Lab

pytestmark = pytest.mark.lab

WEB_PORT = 8080
BOGON = "fd00:bad::1"  # a ULA source arriving from outside


@pytest.fixture(scope="module")
def web(lab: Lab, v6nat: V6nat) -> Iterator[Container]:
    net: Network = lab.create_network("trace", "fd00:7::/64")
    container = lab.run_container("trace-web", net, tcp_echo_server(), ports={"80/tcp": WEB_PORT})
    eventually(lambda: lab.probe_peer(lab.host_addr, WEB_PORT, timeout_s=1).peer, timeout=10, what="web answers")
    yield container
    container.remove(force=True)


def start_trace(lab: Lab, *args: str) -> subprocess.Popen[str]:
    """`v6nat trace` in the host netns, returned once it says the trace is on."""
    proc = lab.popen(lab.host_ns, [V6NAT, "trace", "--pin-path", lab.pin_path, "--json", *args], nsenter=True,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert first.startswith("v6nat trace: on"), first + proc.stderr.read()
    return proc


def finish(proc: subprocess.Popen[str]) -> tuple[list[dict[str, Any]], str]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return [json.loads(line) for line in out.splitlines()], err


def trace_filter_flags(lab: Lab) -> int:
    with Datapath.open_pinned(lab.pin_path) as dp:
        return dp.tracer().current().flags


def test_a_dropped_packet_shows_its_reason(lab: Lab, web: Container) -> None:
    proc = start_trace(lab, "--drops", "--port", str(WEB_PORT), "--count", "1", "--timeout", "30")
    lab.exec(lab.client_ns, ["ip", "-6", "addr", "add", f"{BOGON}/128", "dev", lab.client_iface, "nodad"])
    try:
        connect = lab.exec(lab.client_ns, ["socat", "-T1", "-", f"TCP6:[{lab.host_addr}]:{WEB_PORT},"
                                           f"bind=[{BOGON}],connect-timeout=1.5"], input="", check=False)
        assert connect.returncode != 0 and connect.stdout == ""
    finally:
        lab.exec(lab.client_ns, ["ip", "-6", "addr", "del", f"{BOGON}/128", "dev", lab.client_iface])
    [event], _ = finish(proc)
    assert (event["hook"], event["verdict"], event["drop_reason"]) == ("public_ingress", "drop", "bogon_source")
    assert (event["before"]["saddr"], event["before"]["dport"], event["proto"]) == (BOGON, WEB_PORT, "tcp")
    assert trace_filter_flags(lab) == 0


def test_a_published_port_shows_the_translation_and_sigterm_ends_it(lab: Lab, web: Container) -> None:
    proc = start_trace(lab, "--container", "trace-web", "--docker-host", lab.docker_url, "--proto", "tcp",
                       "--mapping", f"{WEB_PORT}/tcp")
    assert lab.probe_peer(lab.host_addr, WEB_PORT).peer == lab.client_addr
    eventually(lambda: trace_filter_flags(lab) != 0, what="trace on")  # still running: no count reached
    proc.send_signal(signal.SIGTERM)
    events, err = finish(proc)
    first = events[0]
    assert (first["hook"], first["verdict"], first["kind"], first["direction"], first["translated"]) == (
        "public_ingress", "continue", "dnat", "original", True)
    assert (first["before"]["dport"], first["after"]["dport"]) == (WEB_PORT, 80)
    assert {e["hook"] for e in events} >= {"public_ingress", "public_egress"}  # the replies too
    assert "events shown" in err
    assert trace_filter_flags(lab) == 0

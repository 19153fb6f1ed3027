"""In the lab: a real Prometheus in the host netns scrapes a real `v6nat run`; what it stores must match what we sent.

The daemon (v6nat_ebpf.lab.daemon.LabDaemon) serves on [::1]:port of the lab's host netns; Prometheus runs
there too (nsenter --net), with a temporary config and TSDB, scraping every second.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from typing import Callable, Iterator

import pytest

from v6nat_ebpf.lab import PEER_ECHO_COMMAND, Lab, LabConfig
from v6nat_ebpf.lab.daemon import LabDaemon

pytestmark = pytest.mark.lab

TCP_PORT, UDP_PORT = 8080, 5353
UDP_REQUESTS, TCP_REQUESTS, DIRECT_PACKETS = 7, 4, 5
ULA = "fd00:e7a1::/64"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    # Docker's own iptables/ip6tables and userland proxy off: only v6nat forwards IPv6 to the containers.
    with Lab(LabConfig(iptables=False, ip6tables=False, userland_proxy=False)) as lab:
        yield lab


@pytest.fixture(scope="module")
def daemon(lab: Lab) -> Iterator[LabDaemon]:
    daemon = LabDaemon(lab).start()
    try:
        yield daemon
    finally:
        if daemon.running():
            daemon.stop()
        daemon.cli("cleanup", "--pin-path", lab.pin_path, check=False)


# One datagram out, and its answer back within 10 s (socat's client gives up 0.5 s after its input ends:
# too short for an echo server forking a shell per datagram on a loaded machine).
UDP_ASK = (
    "import socket, sys; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(10); "
    "s.sendto(b'who', (sys.argv[1], int(sys.argv[2]))); print(s.recv(256).decode())"
)


def udp_echo_server(port: int) -> list[str]:
    """Answers every datagram with exactly one datagram."""
    return ["socat", f"UDP6-RECVFROM:{port},fork,reuseaddr", "SYSTEM:echo $SOCAT_PEERADDR"]


def test_prometheus_sees_what_was_sent_through_the_daemon(lab: Lab, daemon: LabDaemon, start_prometheus: Callable) -> None:
    net = lab.create_network("ula", ULA)
    servers = " & ".join(shlex.join(argv) for argv in (PEER_ECHO_COMMAND, udp_echo_server(53)))
    web = lab.run_container("web", net, ["sh", "-c", servers + " & wait"], ports={"80/tcp": TCP_PORT, "53/udp": UDP_PORT})
    prom = start_prometheus(daemon.listen, netns=lab.host_ns)
    web_tcp = (("container", "web"), ("host_port", str(TCP_PORT)), ("network", "ula"), ("protocol", "tcp"))
    web_udp = (("container", "web"), ("host_port", str(UDP_PORT)), ("network", "ula"), ("protocol", "udp"))
    mapping_labels = ("container", "host_port", "network", "protocol")
    # The daemon saw the container: both mappings exported, nothing through them yet.
    prom.wait_for("v6nat_mapping_packets_total", {web_tcp: 0.0, web_udp: 0.0}, labels=mapping_labels, timeout_s=30)
    prom.wait_for('v6nat_drops_total{reason="direct_ula"}', {(): 0.0}, labels=())

    for _ in range(TCP_REQUESTS):
        assert lab.probe_peer(lab.host_addr, TCP_PORT).peer == lab.client_addr
    for _ in range(UDP_REQUESTS):
        answer = lab.exec(lab.client_ns, [sys.executable, "-c", UDP_ASK, str(lab.host_addr), str(UDP_PORT)], check=False, timeout=15)
        assert answer.returncode == 0 and answer.stdout.strip(), f"the UDP echo server answered: {answer.stderr}"
    # Straight to the container's ULA address from outside: dropped by the public ingress program, one count each.
    lab.exec(lab.client_ns, ["ip", "-6", "route", "replace", ULA, "via", str(lab.host_addr)])
    for _ in range(DIRECT_PACKETS):
        lab.exec(lab.client_ns, ["socat", "-u", "-", f"UDP6-SENDTO:[{lab.container_addr(web, net)}]:53"], input="x\n", timeout=15)

    # One request and one reply per UDP exchange, both counted on the mapping.
    prom.wait_for('v6nat_mapping_packets_total{protocol="udp"}', {web_udp: 2.0 * UDP_REQUESTS}, labels=mapping_labels)
    prom.wait_for('v6nat_drops_total{reason="direct_ula"}', {(): float(DIRECT_PACKETS)}, labels=())
    prom.wait_for("v6nat_ready", {(): 1.0}, labels=())
    prom.wait_for("v6nat_docker_connected", {(): 1.0}, labels=())
    prom.wait_for(f'v6nat_interface_attached{{interface="{lab.public_iface}"}}', {(): 1.0}, labels=())
    [resync] = prom.query("v6nat_last_resync_timestamp_seconds")
    assert float(resync["value"][1]) > 0

    # `v6nat status --json` (the daemon's /status) and Prometheus agree on every mapping's packets and bytes.
    status = json.loads(daemon.cli("status", "--json", "--metrics-listen", daemon.listen).stdout)
    for m in status["mappings"]:
        labels = {"container": m["container"], "host_port": str(m["host_port"]), "network": m["network"], "protocol": m["protocol"]}
        selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
        for metric, value in (("v6nat_mapping_packets_total", m["packets"]), ("v6nat_mapping_bytes_total", m["bytes"])):
            prom.wait_for(f"{metric}{{{selector}}}", {(): float(value)}, labels=())
    tcp = next(m for m in status["mappings"] if m["protocol"] == "tcp")
    # Each TCP exchange: at least SYN, ACK, data, FIN from the client and SYN-ACK, data, FIN from the server.
    assert tcp["packets"] >= 6 * TCP_REQUESTS
    assert status["drops"]["direct_ula"] == DIRECT_PACKETS
    table = daemon.cli("status", "--metrics-listen", daemon.listen).stdout
    assert re.search(rf"^udp +{UDP_PORT} +web +ula +{2 * UDP_REQUESTS} ", table, re.M), table
    assert re.search(rf"^direct_ula +{DIRECT_PACKETS}$", table, re.M), table

    # The container goes: its series go too.
    web.remove(force=True)
    prom.wait_for("count(v6nat_mapping_packets_total) or vector(0)", {(): 0.0}, labels=(), timeout_s=30)

"""End to end with a real dockerd and `v6nat run`: published ports, masquerade, isolation, hairpin, following Docker.

One lab and one daemon for the module (Docker's iptables and userland proxy off,
so nothing but v6nat forwards IPv6 to the containers).
"""

from __future__ import annotations

import json
import shlex
import statistics
import time
from ipaddress import IPv6Address
from typing import Iterator

import pytest
from docker.models.containers import Container
from docker.models.networks import Network

from e2e_support import V6nat, address_in, eventually, tcp_echo_server, udp_ask, udp_echo_server
from v6nat_ebpf.datapath import Datapath
from v6nat_ebpf.lab import Lab

pytestmark = pytest.mark.lab

WEB_PORT, UDP_PORT, UNPUBLISHED = 8080, 5353, 81
OUTSIDE_TCP, OUTSIDE_UDP, HOST_SERVICE = 7000, 7001, 2222

SCANNER = """
import selectors, socket, sys
addr, lo, hi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
extra = [int(p) for p in sys.argv[4:]]
open_ports = []
ports = list(range(lo, hi + 1)) + extra
for start in range(0, len(ports), 500):
    sel = selectors.DefaultSelector()
    for port in ports[start:start + 500]:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((addr, port))
        sel.register(s, selectors.EVENT_WRITE, port)
    for key, _ in sel.select(timeout=1.5):
        if key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            open_ports.append(key.data)
    for key in list(sel.get_map().values()):
        key.fileobj.close()
print(" ".join(map(str, sorted(set(open_ports)))))
"""


def servers_command() -> list[str]:
    """TCP 80 (published), TCP 81 (not published) and UDP 53 (published) echo servers in one container."""
    servers = (tcp_echo_server(80), tcp_echo_server(UNPUBLISHED), udp_echo_server(53))
    return ["sh", "-c", " & ".join(shlex.join(argv) for argv in servers) + " & wait"]


@pytest.fixture(scope="module")
def ula(lab: Lab) -> Network:
    return lab.create_network("ula", "fd00:a::/64")


@pytest.fixture(scope="module")
def web(lab: Lab, ula: Network, v6nat: V6nat) -> Iterator[Container]:
    container = lab.run_container("web", ula, servers_command(), ports={"80/tcp": WEB_PORT, "53/udp": UDP_PORT})
    eventually(lambda: lab.probe_peer(lab.host_addr, WEB_PORT, timeout_s=1).peer, timeout=10, what="web answers")
    yield container


@pytest.fixture(scope="module")
def outside(lab: Lab) -> None:
    """Servers 'on the internet' (the client netns) that answer with the peer address they saw."""
    lab.popen(lab.client_ns, tcp_echo_server(OUTSIDE_TCP))
    lab.popen(lab.client_ns, udp_echo_server(OUTSIDE_UDP))
    lab.popen(lab.host_ns, tcp_echo_server(HOST_SERVICE))
    time.sleep(0.3)


def run_in(container: Container, argv: list[str]) -> IPv6Address | str:
    """The address an echo server answered to a command run in `container`, or what went wrong."""
    code, out = container.exec_run(argv)
    text = out.decode(errors="replace")
    return (address_in(text) if code == 0 else None) or f"exit {code}: {text!r}"


def test_published_tcp_port_sees_the_client_address(lab: Lab, web: Container) -> None:
    assert lab.probe_peer(lab.host_addr, WEB_PORT).peer == lab.client_addr


def test_published_udp_port_sees_the_client_address(lab: Lab, web: Container) -> None:
    assert udp_ask(lab, lab.client_ns, lab.host_addr, UDP_PORT) == lab.client_addr


def test_outbound_tcp_udp_and_ping_are_masqueraded(lab: Lab, web: Container, outside: None) -> None:
    client = lab.client_addr
    assert run_in(web, ["socat", "-T3", "-", f"TCP6:[{client}]:{OUTSIDE_TCP}"]) == lab.host_addr
    assert run_in(web, ["sh", "-c", f"echo x | socat -T3 - UDP6:[{client}]:{OUTSIDE_UDP}"]) == lab.host_addr
    code, out = web.exec_run(["ping", "-6", "-c", "2", "-W", "2", str(client)])
    assert code == 0, out


def test_the_hosts_own_services_and_connections_are_untouched(lab: Lab, web: Container, outside: None) -> None:
    assert lab.probe_peer(lab.host_addr, HOST_SERVICE).peer == lab.client_addr
    assert lab.probe_peer(lab.client_addr, OUTSIDE_TCP, ns=lab.host_ns).peer == lab.host_addr


def test_only_published_ports_are_reachable(lab: Lab, web: Container, outside: None) -> None:
    scan = lab.exec(lab.client_ns, ["/work/main/.venv/bin/python", "-c", SCANNER, str(lab.host_addr), "1", "10000",
                                    str(UDP_PORT), "32768", "61000", "65535"], timeout=120)
    assert scan.stdout.split() == sorted([str(HOST_SERVICE), str(WEB_PORT)], key=int)


def test_direct_access_to_container_addresses_is_dropped(lab: Lab, ula: Network, web: Container) -> None:
    addr = lab.container_addr(web, ula)
    lab.exec(lab.client_ns, ["ip", "-6", "route", "replace", "fd00:a::/64", "via", str(lab.host_addr)])
    try:
        for port in (80, UNPUBLISHED):
            probe = lab.probe_peer(addr, port, timeout_s=1.5)
            assert probe.peer is None and not probe.connected, probe
    finally:
        lab.exec(lab.client_ns, ["ip", "-6", "route", "del", "fd00:a::/64"])


def test_hairpin_from_containers_to_the_published_port(lab: Lab, ula: Network, web: Container) -> None:
    other = lab.run_container("hairpin-client", ula, "sleep 600")
    try:
        for source in (other, web):
            answer = run_in(source, ["socat", "-T3", "-", f"TCP6:[{lab.host_addr}]:{WEB_PORT}"])
            assert isinstance(answer, IPv6Address), answer  # answered, through the public address
    finally:
        other.remove(force=True)


def test_ports_follow_replaced_and_restarted_containers(lab: Lab, ula: Network, v6nat: V6nat) -> None:
    first = lab.run_container("moving", ula, tcp_echo_server(), ports={"80/tcp": 8090})
    first_addr = lab.container_addr(first, ula)
    eventually(lambda: lab.probe_peer(lab.host_addr, 8090, timeout_s=1).peer == lab.client_addr, what="first")
    first.remove(force=True)
    blocker = lab.run_container("blocker", ula, "sleep 600")  # takes the freed address: the next one gets another
    try:
        second = lab.run_container("moving", ula, tcp_echo_server(), ports={"80/tcp": 8090})
        assert lab.container_addr(second, ula) != first_addr
        eventually(lambda: lab.probe_peer(lab.host_addr, 8090, timeout_s=1).peer == lab.client_addr, what="second")
        second.restart(timeout=1)
        eventually(lambda: lab.probe_peer(lab.host_addr, 8090, timeout_s=1).peer == lab.client_addr, what="restarted")
        second.remove(force=True)
        eventually(lambda: not lab.probe_peer(lab.host_addr, 8090, timeout_s=1).connected, what="unpublished")
    finally:
        blocker.remove(force=True)


def test_two_ula_networks(lab: Lab, web: Container, outside: None) -> None:
    second_net = lab.create_network("ula-two", "fd00:b::/64")
    other = lab.run_container("web-two", second_net, tcp_echo_server(), ports={"80/tcp": 8081})
    try:
        eventually(lambda: lab.probe_peer(lab.host_addr, 8081, timeout_s=1).peer == lab.client_addr, what="8081")
        assert lab.probe_peer(lab.host_addr, WEB_PORT).peer == lab.client_addr
        assert run_in(other, ["socat", "-T3", "-", f"TCP6:[{lab.client_addr}]:{OUTSIDE_TCP}"]) == lab.host_addr
    finally:
        other.remove(force=True)
        second_net.remove()


def test_status_and_flows_show_the_mapping(lab: Lab, web: Container, v6nat: V6nat) -> None:
    lab.probe_peer(lab.host_addr, WEB_PORT)
    status = json.loads(v6nat.cli("status", "--json", "--metrics-listen", v6nat.listen,
                                  "--pin-path", lab.pin_path).stdout)
    assert status["ready"] is True
    assert any(m["host_port"] == WEB_PORT and m["container"] == "web" and m["packets"] > 0 for m in status["mappings"])
    flows = v6nat.cli("flows", "--pin-path", lab.pin_path, "--proto", "tcp", "--port", str(WEB_PORT)).stdout
    assert f"src={lab.client_addr}" in flows and f"dport={WEB_PORT}" in flows
    text = v6nat.cli("status", "--metrics-listen", v6nat.listen, "--pin-path", lab.pin_path).stdout
    assert "web" in text and str(WEB_PORT) in text


def test_time_from_docker_run_to_answer(lab: Lab, ula: Network, v6nat: V6nat) -> None:
    """Measured, not asserted: printed for the closing note (median and max over 20 runs)."""
    delays = []
    for i in range(20):
        container = lab.docker.containers.run(lab.image, tcp_echo_server(), name=f"timed-{i}", network=ula.name,
                                              ports={"80/tcp": 8100}, volumes={"/usr": {"bind": "/usr", "mode": "ro"}},
                                              detach=True)
        returned = time.monotonic()
        eventually(lambda: lab.probe_peer(lab.host_addr, 8100, timeout_s=0.5).peer == lab.client_addr,
                   interval=0.005, what="timed container")
        delays.append(time.monotonic() - returned)
        container.remove(force=True)
        eventually(lambda: not lab.probe_peer(lab.host_addr, 8100, timeout_s=0.5).connected, what="gone")
    print(f"\nMEASURED docker run returned -> published port answering: median {statistics.median(delays) * 1000:.0f} ms,"
          f" max {max(delays) * 1000:.0f} ms over {len(delays)} runs")


def test_host_address_changes_are_followed(lab: Lab, web: Container, outside: None) -> None:
    extra = IPv6Address("2001:db8:1::99")
    lab.exec(lab.host_ns, ["ip", "-6", "addr", "add", f"{extra}/64", "dev", lab.public_iface, "nodad"])
    try:
        # a new address: published ports answer on it too
        eventually(lambda: lab.probe_peer(extra, WEB_PORT, timeout_s=1).peer == lab.client_addr, what="new address")
        # the old one deprecated: masquerade moves to the preferred address
        lab.exec(lab.host_ns, ["ip", "-6", "addr", "change", f"{lab.host_addr}/64", "dev", lab.public_iface,
                               "preferred_lft", "0", "nodad"])
        eventually(lambda: run_in(web, ["socat", "-T2", "-", f"TCP6:[{lab.client_addr}]:{OUTSIDE_TCP}"]) == extra,
                   what="SNAT from the new preferred address")
    finally:
        lab.exec(lab.host_ns, ["ip", "-6", "addr", "change", f"{lab.host_addr}/64", "dev", lab.public_iface,
                               "preferred_lft", "forever", "nodad"])
        lab.exec(lab.host_ns, ["ip", "-6", "addr", "del", f"{extra}/64", "dev", lab.public_iface])
    eventually(lambda: run_in(web, ["socat", "-T2", "-", f"TCP6:[{lab.client_addr}]:{OUTSIDE_TCP}"])
               == lab.host_addr, what="SNAT back on the original address")


def test_a_container_publishing_5000_ports(lab: Lab, ula: Network, v6nat: V6nat) -> None:
    """Correct at scale: every one of 5,000 ports mapped; the time to program them is printed."""
    first, count = 20000, 5000
    started = time.monotonic()
    container = lab.docker.containers.run(lab.image, tcp_echo_server(), name="many", network=ula.name,
                                          ports={**{f"{p}/tcp": p for p in range(first, first + count - 1)},
                                                 "80/tcp": first + count - 1},
                                          volumes={"/usr": {"bind": "/usr", "mode": "ro"}}, detach=True)
    returned = time.monotonic()
    dnat = Datapath.open_pinned(lab.pin_path).dnat

    def mapped() -> int:
        return sum(1 for key, _ in dnat.items() if first <= key.host_port < first + count)

    try:
        eventually(lambda: mapped() == count, timeout=60, interval=0.05, what="5000 mappings")
        programmed = time.monotonic()
        print(f"\nMEASURED 5,000 ports: docker run took {(returned - started):.1f} s, "
              f"all in the dnat map {(programmed - returned) * 1000:.0f} ms after it returned")
        # the last one leads to the echo server on the container's port 80
        assert lab.probe_peer(lab.host_addr, first + count - 1).peer == lab.client_addr
    finally:
        container.remove(force=True)
    eventually(lambda: mapped() == 0, timeout=60, interval=0.1, what="5000 mappings removed")

"""Host-local access (issue 14): processes on the Docker host reach published ports through the cgroup
socket hooks; real sockets, a real dockerd.

The hooks must never act on this machine's own processes: this module makes a cgroup of its own under the
cgroup v2 mount (found in /proc/mounts), below the lab's cgroup parent (lab.cgroup), moves only its client
processes into it, and runs the daemon in the lab's host netns (whose cookie the hooks compare) with
`--cgroup-path` of that cgroup. The daemon's cleanup detaches the hooks and the cgroup is removed at the
end, also on failure (the lab's sweep removes it too, with the lab's other cgroups).
"""

from __future__ import annotations

import json
import subprocess
import sys
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any, Iterator

import pytest
from docker.models.networks import Network
from e2e_support import V6nat, address_in, eventually, tcp_echo_server, udp_echo_server

from v6nat_ebpf.datapath import Datapath, DnatKey
from v6nat_ebpf.datapath.hostlocal import PROGRAMS
from v6nat_ebpf.lab import Lab
from v6nat_ebpf.lab.cgroup import lab_cgroup, python_in

pytestmark = pytest.mark.lab

WEB_PORT, DNS_PORT, LOCAL_PORT = 8080, 5353, 8081
SUBNET, GATEWAY = "fd00:14::/64", IPv6Address("fd00:14::1")
TCP, UDP = 6, 17
HOOKS = {"cgroup_inet6_connect", "cgroup_udp6_sendmsg", "cgroup_udp6_recvmsg", "cgroup_inet6_getpeername"}

# A client (run by lab.cgroup.python_in): asks [addr]:port over TCP (connect, getpeername, read until EOF)
# or over one unconnected UDP socket (sendto, recvfrom: the reply's source). One JSON line of what it saw.
CLIENT = """
import json, socket, sys, time
kind, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = {}
try:
    if kind == "tcp":
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect((addr, port))
        out["peer"] = list(s.getpeername()[:2])
        data = b""
        try:
            while chunk := s.recv(4096):
                data += chunk
        except TimeoutError:
            pass
        out["answer"] = data.decode().strip()
    else:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and "answer" not in out:
            s.sendto(b"who", (addr, port))
            s.settimeout(0.5)
            try:
                data, source = s.recvfrom(4096)
            except TimeoutError:
                continue
            out["source"] = list(source[:2])
            out["answer"] = data.decode().strip()
except OSError as exc:
    out["error"] = type(exc).__name__
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def cgroup(lab: Lab) -> Iterator[Path]:
    """A cgroup v2 of this module's own, for its client processes only (they run to completion)."""
    with lab_cgroup(lab, "hostlocal-clients") as path:
        yield path


@pytest.fixture(scope="module")
def v6nat(lab: Lab, cgroup: Path) -> Iterator[V6nat]:
    with V6nat(lab, extra=("--cgroup-path", str(cgroup))).start() as daemon:
        yield daemon
    if daemon.proc is not None and daemon.proc.returncode not in (0, None, -9):
        sys.stderr.write(daemon.log())


def ask(lab: Lab, cgroup: Path | None, kind: str, addr: Any, port: int, ns: str | None = None) -> dict[str, Any]:
    """What a CLIENT in netns `ns` (default: the lab's host) and in `cgroup` (None: where the test runs)
    saw when it asked [addr]:port."""
    result = lab.exec(ns or lab.host_ns, python_in(cgroup, CLIENT, kind, str(addr), str(port)), nsenter=True,
                      timeout=30)
    return json.loads(result.stdout)


def answered_by_container(reply: dict[str, Any]) -> bool:
    """The container's echo server answered: it saw the host's address on the bridge (the gateway)."""
    return address_in(reply.get("answer", "")) == GATEWAY


def attached_to(cgroup: Path) -> list[dict[str, Any]]:
    """The BPF programs attached to `cgroup` itself, as the kernel lists them (bpftool)."""
    result = subprocess.run(["bpftool", "-j", "cgroup", "show", str(cgroup)], capture_output=True, text=True,
                            check=True, timeout=30)
    return list(json.loads(result.stdout.strip() or "[]"))


def hooks_on(cgroup: Path) -> set[str]:
    return {entry["attach_type"] for entry in attached_to(cgroup)}


def hook_count(cgroup: Path) -> int:
    return len(attached_to(cgroup))


def hostlocal_counts(lab: Lab, proto: int, port: int, host_addr: IPv6Address | None = None) -> tuple[int, int]:
    """(connects, sendmsgs) the socket hooks counted for a published mapping."""
    with Datapath.open_pinned(lab.pin_path) as dp:
        target = dp.dnat.get(DnatKey(proto, host_addr, port))
        assert target is not None, f"no mapping {proto} [{host_addr}]:{port}"
        return dp.hostlocal_stats().get(target.mapping_id, (0, 0))


@pytest.fixture(scope="module")
def served(lab: Lab, v6nat: V6nat, cgroup: Path) -> Iterator[Network]:
    ula = lab.create_network("ula", SUBNET, gateway=str(GATEWAY))
    lab.run_container("web", ula, tcp_echo_server(), ports={"80/tcp": WEB_PORT})
    lab.run_container("dns", ula, udp_echo_server(DNS_PORT), ports={f"{DNS_PORT}/udp": DNS_PORT})
    lab.run_container("local", ula, tcp_echo_server(), ports={"80/tcp": ("::1", LOCAL_PORT)})
    eventually(lambda: lab.probe_peer(lab.host_addr, WEB_PORT, timeout_s=1).peer == lab.client_addr,
               what="web answers the outside client")
    eventually(lambda: answered_by_container(ask(lab, cgroup, "tcp", "::1", LOCAL_PORT)),
               what="the [::1] binding answers a host process")
    yield ula
    for container in lab.docker.containers.list(all=True):
        container.remove(force=True)


def test_tcp_to_the_host_address_reaches_the_container(lab: Lab, cgroup: Path, served: Network) -> None:
    before = hostlocal_counts(lab, TCP, WEB_PORT)
    reply = ask(lab, cgroup, "tcp", lab.host_addr, WEB_PORT)
    assert answered_by_container(reply), reply
    # getpeername() shows what the application asked for, not the container
    assert reply["peer"] == [str(lab.host_addr), WEB_PORT]
    # a binding to every address covers ::1 as well (where Docker's proxy listened on [::])
    loopback = ask(lab, cgroup, "tcp", "::1", WEB_PORT)
    assert answered_by_container(loopback) and loopback["peer"] == ["::1", WEB_PORT], loopback
    connects, _ = hostlocal_counts(lab, TCP, WEB_PORT)
    assert connects - before[0] == 2


def test_unconnected_udp_reply_comes_from_the_published_address(lab: Lab, cgroup: Path, served: Network) -> None:
    before = hostlocal_counts(lab, UDP, DNS_PORT)
    reply = ask(lab, cgroup, "udp", lab.host_addr, DNS_PORT)
    assert answered_by_container(reply), reply
    # recvfrom() shows the published address as the sender: a resolver (dig) accepts the answer
    assert reply["source"] == [str(lab.host_addr), DNS_PORT]
    _, sendmsgs = hostlocal_counts(lab, UDP, DNS_PORT)
    assert sendmsgs > before[1]


def test_a_loopback_binding_is_for_the_host_only(lab: Lab, cgroup: Path, served: Network) -> None:
    reply = ask(lab, cgroup, "tcp", "::1", LOCAL_PORT)
    assert answered_by_container(reply) and reply["peer"] == ["::1", LOCAL_PORT], reply
    # from outside, the port is closed on the host's address (the mapping is for ::1 only) ...
    outside = lab.probe_peer(lab.host_addr, LOCAL_PORT, timeout_s=2)
    assert not outside.connected and outside.peer is None, outside
    # ... and a host process asking the host's public address is not sent there either
    public = ask(lab, cgroup, "tcp", lab.host_addr, LOCAL_PORT)
    assert not answered_by_container(public), public


def test_processes_outside_the_cgroup_or_in_another_netns_are_untouched(lab: Lab, cgroup: Path,
                                                                        served: Network) -> None:
    before = hostlocal_counts(lab, TCP, WEB_PORT), hostlocal_counts(lab, TCP, LOCAL_PORT, IPv6Address("::1"))
    # Outside the cgroup, in the served netns: Docker's placeholder socket holds the port, nobody answers.
    outside_cgroup = ask(lab, None, "tcp", lab.host_addr, WEB_PORT)
    assert not answered_by_container(outside_cgroup) and outside_cgroup.get("answer", "") == "", outside_cgroup
    # In the cgroup, in another netns (the client's): its own [::1]:8081 answers, not the container.
    own = lab.popen(lab.client_ns, ["socat", f"TCP6-LISTEN:{LOCAL_PORT},bind=[::1],fork,reuseaddr",
                                    "SYSTEM:echo own"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        eventually(lambda: ask(lab, cgroup, "tcp", "::1", LOCAL_PORT, ns=lab.client_ns).get("answer") == "own",
                   what="the client netns's own [::1] listener answers a process of the cgroup there")
    finally:
        own.kill()
        own.wait(10)
    after = hostlocal_counts(lab, TCP, WEB_PORT), hostlocal_counts(lab, TCP, LOCAL_PORT, IPv6Address("::1"))
    assert after == before


def test_status_and_metrics_count_by_mapping(lab: Lab, v6nat: V6nat, cgroup: Path, served: Network) -> None:
    assert answered_by_container(ask(lab, cgroup, "tcp", lab.host_addr, WEB_PORT))
    status = json.loads(v6nat.cli("status", "--json", "--metrics-listen", v6nat.listen).stdout)
    web = [m for m in status["mappings"] if m["host_port"] == WEB_PORT and m["protocol"] == "tcp"]
    assert web and web[0]["host_connects"] >= 1, status["mappings"]
    assert set(status["host_local"]["hooks"]) == set(PROGRAMS)
    text = v6nat.cli("status", "--metrics-listen", v6nat.listen).stdout
    assert f"host-local: 4 socket hooks on {cgroup}" in text, text
    metrics = v6nat.get("/metrics")
    connects = [line for line in metrics.splitlines()
                if line.startswith("v6nat_hostlocal_connects_total{") and f'host_port="{WEB_PORT}"' in line]
    assert connects and float(connects[0].rsplit(" ", 1)[1]) >= 1, connects
    assert "v6nat_hostlocal_sendmsgs_total{" in metrics


def test_kill9_keeps_host_local_access(lab: Lab, v6nat: V6nat, cgroup: Path, served: Network) -> None:
    v6nat.kill9()
    # nobody in charge: the pinned links keep the hooks attached
    assert hooks_on(cgroup) == HOOKS
    assert answered_by_container(ask(lab, cgroup, "tcp", lab.host_addr, WEB_PORT))
    reply = ask(lab, cgroup, "udp", lab.host_addr, DNS_PORT)
    assert answered_by_container(reply) and reply["source"] == [str(lab.host_addr), DNS_PORT], reply
    # a restarted daemon gives the same links its new programs: still one of each
    v6nat.start()
    assert hooks_on(cgroup) == HOOKS and hook_count(cgroup) == len(HOOKS)
    assert answered_by_container(ask(lab, cgroup, "tcp", lab.host_addr, WEB_PORT))


def test_host_local_off_removes_the_hooks(lab: Lab, v6nat: V6nat, cgroup: Path, served: Network) -> None:
    v6nat.stop()
    try:
        v6nat.extra = ("--host-local", "off")
        v6nat.start()
        assert hooks_on(cgroup) == set()
        assert not answered_by_container(ask(lab, cgroup, "tcp", lab.host_addr, WEB_PORT))
        v6nat.stop()
    finally:
        v6nat.extra = ("--cgroup-path", str(cgroup))
    v6nat.start()
    assert hooks_on(cgroup) == HOOKS


def test_a_wrong_cgroup_path_is_one_line(lab: Lab, v6nat: V6nat) -> None:
    result = v6nat.cli("run", "--public-iface", lab.public_iface, "--pin-path", lab.pin_path + "-unused",
                       "--cgroup-path", "/tmp", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "cgroup path /tmp is not inside a cgroup v2 hierarchy" in result.stderr


def test_cleanup_removes_the_attachments(lab: Lab, v6nat: V6nat, cgroup: Path, served: Network) -> None:
    assert hooks_on(cgroup) == HOOKS
    v6nat.kill9()  # a process that holds no link any more: cleanup alone must detach them
    result = v6nat.cli("cleanup", "--pin-path", lab.pin_path)
    assert "socket hook v6nat_sock_connect6" in result.stdout
    assert hooks_on(cgroup) == set()
    assert not answered_by_container(ask(lab, cgroup, "tcp", lab.host_addr, WEB_PORT))

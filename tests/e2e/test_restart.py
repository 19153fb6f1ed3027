"""Restarts without loss: kill -9 of the daemon under a transfer, dockerd restarts, SIGTERM and cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
from docker.models.networks import Network
from e2e_support import V6nat, eventually, tcp_echo_server

from v6nat_ebpf.datapath import Datapath
from v6nat_ebpf.host_effects import PortReservation
from v6nat_ebpf.lab import Lab

pytestmark = pytest.mark.lab

SLOW_PORT, WEB_PORT = 8200, 8080
SLOW_LINES = 60  # one line every 0.1 s: a 6 s transfer


def slow_server() -> list[str]:
    script = f"for i in $(seq {SLOW_LINES}); do echo line$i; sleep 0.1; done"
    return ["socat", "TCP6-LISTEN:80,fork,reuseaddr", f"SYSTEM:{script}"]


@pytest.fixture(scope="module")
def ula(lab: Lab) -> Network:
    return lab.create_network("ula", "fd00:c::/64")


@pytest.fixture(scope="module")
def served(lab: Lab, ula: Network, v6nat: V6nat) -> Iterator[None]:
    lab.run_container("slow", ula, slow_server(), ports={"80/tcp": SLOW_PORT})
    lab.run_container("web", ula, tcp_echo_server(), ports={"80/tcp": WEB_PORT})
    eventually(lambda: answers(lab, WEB_PORT), what="web answers")
    yield
    for container in lab.docker.containers.list(all=True):
        container.remove(force=True)


def answers(lab: Lab, port: int) -> bool:
    return lab.probe_peer(lab.host_addr, port, timeout_s=1).peer == lab.client_addr


def outbound_redirects(dp: Datapath) -> int:
    """Container packets redirected out of the public interface: at their veth, or at the bridge for the
    one per flow and half second that teaches the way in (and lets the bridge learn)."""
    c = dp.counters_by_hook()
    return c["veth_ingress"]["redirect"] + c["bridge_ingress"]["redirect"]


def test_kill9_during_a_transfer_loses_nothing(lab: Lab, ula: Network, v6nat: V6nat, served: None) -> None:
    dp = Datapath.open_pinned(lab.pin_path)
    redirected = outbound_redirects(dp)
    transfer = lab.popen(lab.client_ns, ["socat", "-T20", "-", f"TCP6:[{lab.host_addr}]:{SLOW_PORT}"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1)
    v6nat.kill9()
    # Nobody in charge: established and new connections keep working on the pinned state.
    assert answers(lab, WEB_PORT)
    # A container replaced while the daemon is dead is picked up by the restarted one.
    lab.docker.containers.get("web").remove(force=True)
    blocker = lab.run_container("blocker", ula, "sleep 600")
    lab.run_container("web", ula, tcp_echo_server(), ports={"80/tcp": WEB_PORT})
    v6nat.start()
    eventually(lambda: answers(lab, WEB_PORT), what="replaced web answers after the restart")
    out, err = transfer.communicate(timeout=30)
    lines = out.decode().split()
    print(f"\nMEASURED kill -9 under a {SLOW_LINES * 0.1:.0f} s transfer: {SLOW_LINES - len(lines)} lines lost, "
          f"transfer exit {transfer.returncode}")
    assert lines == [f"line{i}" for i in range(1, SLOW_LINES + 1)], err
    # The transfer's segments took the fast path (past the stack) before and after the kill.
    assert outbound_redirects(dp) - redirected >= SLOW_LINES
    blocker.remove(force=True)


def test_dockerd_restart_keeps_serving_and_converges(lab: Lab, ula: Network, v6nat: V6nat, served: None) -> None:
    doomed = lab.run_container("doomed", ula, tcp_echo_server(), ports={"80/tcp": 8300})
    eventually(lambda: answers(lab, 8300), what="doomed answers")
    pid = lab.docker.api.inspect_container(doomed.id)["State"]["Pid"]
    lab.stop_docker()
    assert answers(lab, WEB_PORT)  # live-restore: containers run on, v6nat keeps serving
    os.kill(pid, signal.SIGKILL)  # dies while Docker cannot tell anyone
    lab.start_docker()
    back = time.monotonic()
    # Docker notices the dead container; the daemon resyncs and drops its mapping.
    dnat = Datapath.open_pinned(lab.pin_path).dnat
    eventually(lambda: all(key.host_port != 8300 for key, _ in dnat.items()), timeout=10,
               what="mapping of the dead container removed")
    print(f"\nMEASURED dockerd back -> stale mapping removed: {(time.monotonic() - back) * 1000:.0f} ms")
    fresh = lab.run_container("fresh", ula, tcp_echo_server(), ports={"80/tcp": 8301})
    eventually(lambda: answers(lab, 8301), what="a container started after the restart answers")
    assert answers(lab, WEB_PORT)
    fresh.remove(force=True)
    lab.docker.containers.get("doomed").remove(force=True)


def test_sighup_resyncs(lab: Lab, v6nat: V6nat, served: None) -> None:
    before = v6nat.log().count("full resync with Docker (SIGHUP)")
    v6nat.send(signal.SIGHUP)
    eventually(lambda: v6nat.log().count("full resync with Docker (SIGHUP)") > before, what="SIGHUP resync logged")
    assert answers(lab, WEB_PORT)


def test_the_daemon_never_maps_llvm_and_a_restart_compiles_nothing(lab: Lab, v6nat: V6nat, served: None) -> None:
    """Compiling happens in a child that exits (LLVM would stay mapped: about 150 MB); a restart over
    the pins of the same build adopts them."""
    def mapped_libraries() -> str:
        assert v6nat.proc is not None
        return Path(f"/proc/{v6nat.proc.pid}/maps").read_text()

    assert "libLLVM" not in mapped_libraries() and "libbcc" not in mapped_libraries()
    assert v6nat.stop() == 0
    v6nat.start()
    assert "datapath adopted" in v6nat.log() and "compiled" not in v6nat.log()
    assert "libLLVM" not in mapped_libraries() and "libbcc" not in mapped_libraries()
    assert answers(lab, WEB_PORT)


def reserved_ports(lab: Lab) -> str:
    return lab.exec(lab.host_ns, ["cat", "/proc/sys/net/ipv4/ip_local_reserved_ports"]).stdout.strip()


def test_sigterm_leaves_the_datapath_and_cleanup_removes_it(lab: Lab, v6nat: V6nat, served: None) -> None:
    assert reserved_ports(lab) == "61000-65535"
    assert v6nat.stop() == 0
    assert answers(lab, WEB_PORT)
    result = v6nat.cli("cleanup", "--pin-path", lab.pin_path)
    assert "removed" in result.stdout
    assert not answers(lab, WEB_PORT)
    for iface in [lab.public_iface] + [n.attrs["Options"].get("com.docker.network.bridge.name") or
                                       "br-" + n.id[:12] for n in lab.docker.networks.list(names=["ula"])]:
        for direction in ("ingress", "egress"):
            shown = lab.exec(lab.host_ns, ["tc", "filter", "show", "dev", iface, direction], check=False).stdout
            assert "v6nat" not in shown, shown
    assert reserved_ports(lab) == "" and not PortReservation(lab.pin_path).state_file.exists()
    assert not os.path.exists(lab.pin_path) or not any(os.scandir(lab.pin_path))
    # and it comes back: a new daemon serves again
    v6nat.start()
    eventually(lambda: answers(lab, WEB_PORT), what="served again after a new start")


def test_closing_the_lab_daemon_leaves_nothing(lab: Lab, v6nat: V6nat, served: None) -> None:
    assert v6nat.running() and PortReservation(lab.pin_path).state_file.exists()
    v6nat.close()
    assert not v6nat.running()
    assert reserved_ports(lab) == "" and not PortReservation(lab.pin_path).state_file.exists()
    assert not os.path.exists(lab.pin_path) or not any(os.scandir(lab.pin_path))

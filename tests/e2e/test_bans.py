"""Bans end to end (issue 16): `v6nat ban` cuts a live TCP connection at its next packet and refuses new
ones, holds across kill -9 of the daemon, works while no daemon runs, expires, and `v6nat unban` lifts it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from ipaddress import IPv6Address
from typing import Iterator

import pytest
from docker.models.networks import Network
from e2e_support import LIVE_CLIENT, V6nat, eventually, tcp_echo_server

from v6nat_ebpf.datapath import Datapath
from v6nat_ebpf.lab import Lab

pytestmark = pytest.mark.lab

B = IPv6Address("2001:db8:5::2")  # a second outside client, on another prefix than the lab's client
ECHO_PORT, WHO_PORT = 8090, 8091



@pytest.fixture(scope="module")
def served(lab: Lab, v6nat: V6nat) -> Iterator[Network]:
    lab.add_client_address(B)
    ula = lab.create_network("ula", "fd00:18::/64")
    lab.run_container("echo", ula, ["socat", "TCP6-LISTEN:80,fork,reuseaddr", "EXEC:cat"],
                      ports={"80/tcp": ECHO_PORT})
    lab.run_container("who", ula, tcp_echo_server(80), ports={"80/tcp": WHO_PORT})
    eventually(lambda: reaches(lab, lab.client_addr) and reaches(lab, B), what="both clients reach who")
    yield ula
    for container in lab.docker.containers.list(all=True):
        container.remove(force=True)


def reaches(lab: Lab, source: IPv6Address) -> bool:
    return lab.probe_peer(lab.host_addr, WHO_PORT, timeout_s=1.5, source=source).peer == source


def v6nat_cmd(lab: Lab, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A v6nat command in the lab's host netns, whether or not a daemon runs."""
    return V6nat(lab).cli(*args, "--pin-path", lab.pin_path, check=check)


def bans(lab: Lab) -> list[dict]:
    return json.loads(v6nat_cmd(lab, "bans", "--json").stdout)


def counters(lab: Lab) -> dict[str, int]:
    with Datapath.open_pinned(lab.pin_path) as dp:
        return dp.counters()


def test_a_ban_cuts_the_live_connection_at_its_next_packet_and_refuses_new_ones(
        lab: Lab, v6nat: V6nat, served: Network) -> None:
    live = lab.popen(lab.client_ns, [sys.executable, "-c", LIVE_CLIENT, str(lab.host_addr), str(ECHO_PORT), str(B)],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert live.stdout.readline().strip() == "echo"
    live.stdin.write("\n")
    live.stdin.flush()
    assert live.stdout.readline().strip() == "echo"  # the connection lives
    banned_before = counters(lab)["drop_banned"]
    result = v6nat_cmd(lab, "ban", str(B))
    assert re.fullmatch(rf"banned {B}/128 on every port until unbanned; [1-9]\d* flows cut", result.stdout.strip())
    live.stdin.write("\n")
    live.stdin.flush()
    assert live.stdout.readline().strip().startswith("cut")  # the first packet after the ban
    live.wait(10)
    assert not reaches(lab, B)
    assert reaches(lab, lab.client_addr)
    assert counters(lab)["drop_banned"] > banned_before
    assert all(flow.original.saddr != B for flow in Datapath.open_pinned(lab.pin_path).flows())
    [listed] = bans(lab)
    assert (listed["prefix"], listed["port"], listed["seconds_left"]) == (f"{B}/128", None, None)
    assert "v6nat_bans_active 1.0" in v6nat.get("/metrics")


def test_the_ban_holds_through_kill9_and_bans_work_without_a_daemon(
        lab: Lab, v6nat: V6nat, served: Network) -> None:
    v6nat.kill9()
    assert not reaches(lab, B)
    # No daemon: the command writes the pinned map itself; a timed ban of A on the published port only.
    v6nat_cmd(lab, "ban", "2001:db8:1::/48", "--port", f"{WHO_PORT}/tcp", "--for", "20")
    assert not reaches(lab, lab.client_addr)
    assert lab.probe_peer(lab.host_addr, ECHO_PORT, timeout_s=1.5).connected  # other ports stay open to A
    v6nat.start()  # (compiling takes seconds: the timed ban outlasts it)
    assert {b["prefix"] for b in bans(lab)} == {f"{B}/128", "2001:db8:1::/48"}
    assert not reaches(lab, B) and not reaches(lab, lab.client_addr)
    # Expiry is the kernel's: A comes back by itself.
    eventually(lambda: reaches(lab, lab.client_addr), timeout=40, interval=0.5, what="the timed ban expires")
    assert {b["prefix"] for b in bans(lab)} == {f"{B}/128"}


def test_unban_restores(lab: Lab, v6nat: V6nat, served: Network) -> None:
    assert "unbanned" in v6nat_cmd(lab, "unban", str(B)).stdout
    assert reaches(lab, B)
    assert bans(lab) == []
    assert "was not banned" in v6nat_cmd(lab, "unban", str(B)).stdout


def test_bad_ban_input_is_one_line(lab: Lab, served: Network) -> None:
    for args in (("ban", "192.0.2.1"), ("ban", "2001:db8::/33x"), ("ban", str(B), "--for", "soon"),
                 ("ban", str(B), "--port", "70000/tcp")):
        result = v6nat_cmd(lab, *args, check=False)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert bans(lab) == []

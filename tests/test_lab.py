"""The lab itself: two at once, nothing left after teardown, killed runs swept, SIGTERM honoured."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from v6nat_ebpf.lab import PEER_ECHO_COMMAND, PEER_ECHO_PORT, Lab, LabConfig, leftovers_of, sweep_leftovers

pytestmark = pytest.mark.lab

ULA = "fd00:ca7e:d09e::/64"

# A process that holds a lab with a running container until it is signalled.
HOLDER = textwrap.dedent("""
    import time
    from v6nat_ebpf.lab import Lab, LabConfig
    with Lab(LabConfig()) as lab:
        net = lab.create_network("ula", "fd00:ca7e:d09e::/64")
        lab.run_container("sleeper", net, ["sleep", "600"])
        print(lab.name, flush=True)
        time.sleep(600)
""")


def start_holder() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    name = proc.stdout.readline().strip()
    assert name.startswith("v6l-"), f"lab holder did not come up (exit {proc.poll()})"
    return proc, name


def test_two_labs_at_once_and_teardown_leaves_nothing() -> None:
    with Lab(LabConfig()) as one, Lab(LabConfig(ip6tables=True)) as two:
        assert one.name != two.name
        for lab in (one, two):
            net = lab.create_network("ula", ULA)  # the same prefix in both: the labs are separate worlds
            lab.run_container("echo", net, PEER_ECHO_COMMAND, ports={f"{PEER_ECHO_PORT}/tcp": 8080})
            lab.exec(lab.client_ns, ["ping", "-6", "-c1", "-W2", str(lab.host_addr)])
            assert [c.name for c in lab.docker.containers.list()] == ["echo"]
            assert leftovers_of(lab.name), "a live lab should be visible"
        names = (one.name, two.name)
    for name in names:
        assert leftovers_of(name) == []


def test_router_between_client_and_host_sends_packet_too_big() -> None:
    with Lab(LabConfig(router_mtu=1280, start_docker=False)) as lab:
        assert lab.router_ns is not None
        host = str(lab.host_addr)
        lab.exec(lab.client_ns, ["ping", "-6", "-c1", "-W2", "-s", "1000", host])
        big = lab.exec(lab.client_ns, ["ping", "-6", "-c1", "-W2", "-M", "do", "-s", "1400", host], check=False)
        assert big.returncode != 0
        route = lab.exec(lab.client_ns, ["ip", "-6", "route", "get", host]).stdout
        assert "mtu 1280" in route, route  # learned from the router's Packet Too Big
        name = lab.name
    assert leftovers_of(name) == []


def test_image_runs_busybox_and_host_binaries_and_survives_dockerd_restart() -> None:
    with Lab(LabConfig()) as lab:
        net = lab.create_network("ula", ULA)
        box = lab.run_container("box", net, ["sleep", "600"])
        for argv in (["busybox", "true"], ["python3", "-c", "print(6 * 7)"], ["socat", "-V"]):
            code, out = box.exec_run(argv)
            assert code == 0, (argv, out)
        lab.restart_docker()  # --live-restore keeps the container running
        assert [(c.name, c.status) for c in lab.docker.containers.list()] == [("box", "running")]


def test_sigkill_leaves_leftovers_that_sweep_removes() -> None:
    proc, name = start_holder()
    proc.kill()
    proc.wait()
    left = leftovers_of(name)
    assert any(item.startswith("netns") for item in left), left
    assert any(item.startswith("process") for item in left), left

    swept = [str(item) for item in sweep_leftovers()]
    assert any(name in item for item in swept), swept
    assert leftovers_of(name) == []


def test_sigterm_tears_the_lab_down() -> None:
    proc, name = start_holder()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert leftovers_of(name) == []


def test_sweep_keeps_labs_of_live_processes() -> None:
    proc, name = start_holder()
    try:
        swept = [str(item) for item in sweep_leftovers()]
        assert not any(name in item for item in swept), swept
        assert leftovers_of(name)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    started = time.monotonic()
    while leftovers_of(name) and time.monotonic() - started < 10:
        time.sleep(0.1)
    assert leftovers_of(name) == []

"""`v6nat demo`'s last step: v6nat fixes the problem, and Ctrl-C while v6nat runs leaves nothing behind."""

from __future__ import annotations

import re
import signal
import subprocess

import pytest
from e2e_support import V6NAT

from v6nat_ebpf.host_effects import PortReservation
from v6nat_ebpf.lab import BPFFS, PIN_PREFIX, leftovers_of

pytestmark = pytest.mark.lab


def left_by(lab_name: str) -> list[str]:
    """What of the lab and of the v6nat that ran in it is left (the netns takes the sysctl along,
    the port reservation's state file stays in /run/v6nat unless `v6nat cleanup` ran)."""
    state_file = PortReservation(str(BPFFS / f"{PIN_PREFIX}{lab_name}")).state_file
    return leftovers_of(lab_name) + ([f"file {state_file}"] if state_file.exists() else [])


def test_demo_shows_the_client_address_and_the_host_address() -> None:
    result = subprocess.run([V6NAT, "demo"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "without v6nat, client -> [2001:db8:1::1]:8080: no answer (the problem)" in out
    assert "container log: connection from 2001:db8:1::2" in out
    assert "which saw 2001:db8:1::1 (the host's address is 2001:db8:1::1)" in out
    assert re.search(r"tcp\s+8080\s+web\s+demo\s+[1-9]", out), out  # `v6nat status`: the mapping carried packets
    assert 'v6nat_translations_total{kind="dnat"}' in out
    for name in re.findall(r"lab (v6l-[0-9a-f]{6})", out):
        assert left_by(name) == []


def sigint_as_in_a_terminal() -> None:
    """In the demo's child before exec: SIGINT at its default, as for a command typed at a terminal.
    A run started in the background (`make test &`, nohup, CI runners) inherits SIGINT ignored,
    and Python keeps an ignored SIGINT ignored: the demo would never see the test's Ctrl-C and
    would finish with 0."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_while_v6nat_runs_tears_down() -> None:
    proc = subprocess.Popen([V6NAT, "demo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_in_a_terminal)
    assert proc.stdout is not None
    name = None
    for line in proc.stdout:
        if match := re.search(r"lab (v6l-[0-9a-f]{6}) up in .* \(Docker's iptables", line):
            name = match[1]
        if name and "v6nat ready" in line:
            break
    assert name, "the demo never reached the v6nat step"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in stderr
    assert left_by(name) == []

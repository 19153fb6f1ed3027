"""`v6nat run` and friends on bad input: one line on stderr, non-zero exit, no traceback."""

from __future__ import annotations

import subprocess
from typing import Iterator

import pytest
from e2e_support import V6NAT, lab_config

from v6nat_ebpf.lab import Lab

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(lab_config(start_docker=False)) as lab:
        yield lab


def run(lab: Lab, argv: list[str], as_user: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """`v6nat argv` in the lab's host netns; `as_user`: the argv prefix of another user's v6nat."""
    return lab.exec(lab.host_ns, [*(as_user or [V6NAT]), *argv], nsenter=True, check=False, timeout=120)


def assert_one_line(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and fragment in lines[0], result.stderr


def test_unknown_interface(lab: Lab) -> None:
    assert_one_line(run(lab, ["run", "--public-iface", "nope0", "--pin-path", lab.pin_path]), "unknown interface 'nope0'")


def test_malformed_values(lab: Lab) -> None:
    assert_one_line(run(lab, ["run", "--public-iface", lab.public_iface, "--snat-ports", "65000-1"]), "port range")
    assert_one_line(run(lab, ["run", "--public-iface", lab.public_iface, "--metrics-listen", "nowhere",
                              "--pin-path", lab.pin_path]), "--metrics-listen")
    assert_one_line(run(lab, ["flows", "--addr", "10.0.0.1"]), "not an IPv6 address")


def test_not_root(lab: Lab, v6nat_as_nobody: list[str]) -> None:
    assert_one_line(run(lab, ["run", "--public-iface", lab.public_iface, "--pin-path", lab.pin_path],
                        as_user=v6nat_as_nobody), "capabilities")


def test_status_without_a_datapath(lab: Lab) -> None:
    result = run(lab, ["status", "--pin-path", lab.pin_path + "-none", "--metrics-listen", "[::1]:1"])
    assert_one_line(result, lab.pin_path + "-none")

"""End-to-end fixtures: a lab (Docker's iptables and userland proxy off) and one `v6nat run` per module.

Labs are module-scoped: tests in one module share one lab and one daemon and
remove the containers they make.
"""

from __future__ import annotations

import sys
from typing import Iterator

import pytest
from e2e_support import V6nat, lab_config

from v6nat_ebpf.lab import Lab


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(lab_config()) as lab:
        yield lab


@pytest.fixture(scope="module")
def v6nat(lab: Lab) -> Iterator[V6nat]:
    with V6nat(lab).start() as daemon:
        yield daemon
    if daemon.proc is not None and daemon.proc.returncode not in (0, None, -9):
        sys.stderr.write(daemon.log())

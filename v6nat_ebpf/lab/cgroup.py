"""A cgroup v2 of a lab's own, for the processes a test or benchmark starts (host-local access).

The socket hooks act on every process of the cgroup they are attached to and below, so tests and
benchmarks attach them only to a cgroup made here: a child of the lab's cgroup parent under the cgroup v2
mount found in /proc/mounts (the lab's teardown and sweep remove the parent with it), holding only the
processes started with `python_in`, never this machine's own.

Imports: stdlib, lab.common, lab.world, datapath.hostlocal (where cgroup v2 is mounted).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from v6nat_ebpf.datapath.hostlocal import cgroup2_mounts
from v6nat_ebpf.lab.common import PIN_PREFIX, LabError
from v6nat_ebpf.lab.world import Lab

# Run before a script: joins the cgroup named by sys.argv[1] ("" : none) before any socket is made (a
# socket belongs to the cgroup it was made in), then drops that argument.
_JOIN = """
import os, sys
if sys.argv[1]:
    with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
del sys.argv[1]
"""


@contextmanager
def lab_cgroup(lab: Lab, name: str) -> Iterator[Path]:
    """A new, empty cgroup v2 `name` below the lab's cgroup parent; removed on leaving (its processes must be
    gone by then)."""
    mounts = cgroup2_mounts()
    if not mounts:
        raise LabError("no cgroup v2 hierarchy is mounted")
    parent = mounts[0] / f"{PIN_PREFIX}{lab.name}"
    path = parent / name
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        path.rmdir()
        try:
            parent.rmdir()
        except OSError:
            pass  # the lab's containers live there too: the lab's teardown removes it


def python_in(cgroup: Path | None, script: str, *args: str) -> list[str]:
    """argv of a Python that joins `cgroup` (None: stays where it is started) and runs `script` with `args`."""
    return [sys.executable, "-I", "-c", _JOIN + script, str(cgroup or ""), *args]

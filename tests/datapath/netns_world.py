"""Named network namespaces and veth pairs for the datapath tests, removed on
teardown (also when a test fails). Names start with "v6dp-" and the pid."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from typing import Iterator


def sh(*args: str, netns: str | None = None, check: bool = True, stdin: str = "") -> subprocess.CompletedProcess[str]:
    cmd = (["ip", "netns", "exec", netns] if netns else []) + list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=60, input=stdin)


@contextmanager
def namespaces(*tags: str) -> Iterator[list[str]]:
    names = [f"v6dp-{tag}-{os.getpid()}" for tag in tags]
    try:
        for name in names:
            sh("ip", "netns", "add", name)
            sh("ip", "link", "set", "lo", "up", netns=name)
        yield names
    finally:
        for name in names:
            sh("ip", "netns", "del", name, check=False)

"""`v6nat` as an unprivileged user (uid 65534), from wherever the checkout lives.

A checkout under /root (mode 0700) cannot be read by uid 65534, and neither can its .venv: the
command would fail before it ran. So the user runs a copy, as a wheel would install it: the package
with bpf/ as its package data, and the files of its runtime dependencies that the venv holds, in a
temporary directory everyone can read, run by the system interpreter (which sees bcc and the other
system packages as the venv does). The code is the checkout's own, byte for byte.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import v6nat_ebpf

NOBODY = 65534
PACKAGE = Path(v6nat_ebpf.__file__).resolve().parent
REPO = PACKAGE.parent
PYTHON = os.path.realpath(sys.executable)  # the venv's python is a link into the (maybe unreadable) checkout


def _runtime_distributions() -> list[importlib.metadata.Distribution]:
    """v6nat_ebpf's dependencies without extras, and theirs, as installed in this interpreter."""
    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = ["v6nat_ebpf"]
    while todo:
        name = re.split(r"[ ;<>=!~\[(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional one, absent here
        seen[name] = dist
        todo += [r for r in dist.requires or [] if "extra ==" not in r]
    return [d for n, d in seen.items() if n != "v6nat-ebpf"]


def readable_install() -> Path:
    """A world-readable directory holding v6nat_ebpf (with its bpf/) and the venv's copies of its
    runtime dependencies; put it on PYTHONPATH. The caller removes it."""
    root = Path(tempfile.mkdtemp(prefix="v6nat-unpriv-"))
    root.chmod(0o755)
    shutil.copytree(PACKAGE, root / "v6nat_ebpf", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "bpf", root / "v6nat_ebpf" / "bpf")
    venv = Path(sys.prefix).resolve()
    for dist in _runtime_distributions():
        for file in dist.files or []:
            source = Path(dist.locate_file(file)).resolve()
            if venv not in source.parents or "__pycache__" in source.parts or not source.is_file():
                continue  # system packages are readable where they are
            target = root / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def as_nobody(install: Path) -> list[str]:
    """The argv prefix running `v6nat` (append its arguments) as uid/gid 65534, no groups, no inheritable
    capabilities, from `install`."""
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all",
            "env", "-C", str(install), f"PYTHONPATH={install}", PYTHON, "-m", "v6nat_ebpf.cli"]

"""Versions that several layers report (`v6nat --version`, build info in metrics, the datapath's
build id), each read without loading anything heavy: importing bcc would load LLVM.

Imports: stdlib, v6nat_ebpf (its __version__); datapath.layout inside `version_text`.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from v6nat_ebpf import __version__


def bcc_version() -> str:
    """The installed bcc's version, read from its package's version.py; "none" without bcc."""
    spec = importlib.util.find_spec("bcc")
    if spec is None or not spec.submodule_search_locations:
        return "none"
    version_file = Path(spec.submodule_search_locations[0]) / "version.py"
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", version_file.read_text()) if version_file.exists() else None
    return match.group(1) if match else "unknown"


def version_text() -> str:
    """What `v6nat --version` prints: v6nat's version and the layout version of its maps (pins of
    another layout need a `v6nat cleanup` before this v6nat adopts them)."""
    from v6nat_ebpf.datapath import layout

    return f"v6nat {__version__} (datapath layout v{layout.header().const('V6NAT_LAYOUT_VERSION')})"

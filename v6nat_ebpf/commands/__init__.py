"""The daemon-facing subcommands: `run`, `status`, `flows`, `cleanup` (one module each).

Each module has `add_parser(subparsers)` for v6nat_ebpf.cli and keeps bcc and
docker imports inside its command function, so `v6nat --help` stays fast.
"""

from __future__ import annotations

from typing import Any


def open_pinned_datapath(pin_path: str) -> Any:
    """The datapath pinned under `pin_path`, opened read-only (V6natError when there is none)."""
    from v6nat_ebpf.datapath import Datapath

    return Datapath.open_pinned(pin_path)

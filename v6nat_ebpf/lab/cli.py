"""`v6nat lab ...`: the lab's commands (only `cleanup` for now).

Imports: stdlib and lab.sweep.
"""

from __future__ import annotations

import argparse
import os

from v6nat_ebpf.errors import V6natError
from v6nat_ebpf.lab.sweep import live_labs, sweep_leftovers


def cmd_lab_cleanup(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise V6natError("lab cleanup needs root")
    removed = sweep_leftovers()
    for leftover in removed:
        print(f"removed  {leftover}")
    kept = live_labs()
    print(f"{len(removed)} leftovers removed" + (f"; kept live labs: {', '.join(kept)}" if kept else ""))
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lab = subparsers.add_parser("lab", help="the hermetic test lab",
                                description="Commands for the hermetic lab used by tests, demo and benchmarks.")
    lab_commands = lab.add_subparsers(dest="lab_command", metavar="LAB_COMMAND", required=True)
    cleanup = lab_commands.add_parser(
        "cleanup", help="remove leftovers of killed labs",
        description="Remove namespaces, dockerd processes, mounts, pins and directories that killed labs "
                    "left behind. Labs whose owning process still runs are kept.")
    cleanup.set_defaults(func=cmd_lab_cleanup)

"""`v6nat cleanup`: remove every filter, pin and sysctl change v6nat made in this namespace, nothing else.

Must not import at module level: bcc, pyroute2 (they load in the command). The sequence itself is
host_effects.uninstall, which `v6nat run --detach-on-exit` uses too.
"""

from __future__ import annotations

import argparse

from v6nat_ebpf.config import add_pin_path_argument


def cmd_cleanup(args: argparse.Namespace) -> int:
    from v6nat_ebpf.host_effects import uninstall

    removed = uninstall(args.pin_path)
    for what in removed:
        print(f"removed {what}")
    if not removed:
        print(f"nothing of v6nat's here (pin path {args.pin_path})")
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "cleanup", help="remove v6nat's filters, pins and port reservation (stop `v6nat run` first)",
        description="Detach every v6nat filter in this network namespace, remove the pins under --pin-path and "
                    "give back the SNAT ports reserved in ip_local_reserved_ports. Other tools' filters, "
                    "qdiscs and sysctls are left alone. Published ports stop working until `v6nat run` again.")
    add_pin_path_argument(parser)
    parser.set_defaults(func=cmd_cleanup)

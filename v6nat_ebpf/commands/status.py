"""`v6nat status`: attached interfaces, networks, mappings with packet counts, conntrack fill.

Asks the running daemon (GET /status on --metrics-listen) so the control-plane
facts (Docker connection, last resync) are included; without a daemon it
reads the pinned maps directly and says the control plane is unknown. Both
print the same snapshot that /metrics exports (v6nat_ebpf.metrics).

Must not import at module level: bcc.
"""

from __future__ import annotations

import argparse
import json
import logging

from v6nat_ebpf.config import DEFAULT_METRICS_LISTEN, add_pin_path_argument, env
from v6nat_ebpf.errors import V6natError

log = logging.getLogger(__name__)


def cmd_status(args: argparse.Namespace) -> int:
    from v6nat_ebpf.metrics import (ControlPlaneStats, MappingLabels, fetch_status, protocol_name, render_status,
                                    take_snapshot)

    try:
        status = fetch_status(args.metrics_listen)
    except V6natError as exc:
        log.info("%s; reading the pinned maps instead", exc)
        from v6nat_ebpf.commands import open_pinned_datapath

        dp = open_pinned_datapath(args.pin_path)
        stats = ControlPlaneStats()
        # Without the daemon, container names are unknown: label each mapping with its target address.
        stats.set_mappings({target.mapping_id: MappingLabels(protocol=protocol_name(key.proto), host_port=key.host_port,
                                                             container=f"[{target.addr}]:{target.port}", network="?")
                            for key, target in dp.dnat.items()})
        status = take_snapshot(dp, stats).as_dict()
    print(json.dumps(status, indent=2, sort_keys=True) if args.json else render_status(status), end="\n" if args.json else "")
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "status", help="interfaces, mappings with packet counts, drops, map fill",
        description="Show what the datapath is doing. Asks the daemon on --metrics-listen; when none answers, "
                    "reads the pinned maps under --pin-path.")
    parser.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    parser.add_argument("--metrics-listen", metavar="[ADDR]:PORT",
                        default=env("METRICS_LISTEN") or DEFAULT_METRICS_LISTEN,
                        help=f"where the daemon serves /status (env V6NAT_METRICS_LISTEN; default {DEFAULT_METRICS_LISTEN})")
    add_pin_path_argument(parser)
    parser.set_defaults(func=cmd_status)

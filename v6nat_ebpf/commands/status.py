"""`v6nat status`: attached interfaces, networks, mappings with packet counts, conntrack fill.

Asks the running daemon (GET /status on --metrics-listen) so the control-plane
facts (Docker connection, last resync) are included; without a daemon it
reads the pinned maps directly and says the control plane is unknown. Both
print the same snapshot that /metrics exports (v6nat_ebpf.observe); `render_status`
turns it into the text a person reads.

Must not import at module level: bcc.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any, Mapping, Sequence

from v6nat_ebpf.config import add_pin_path_argument, env
from v6nat_ebpf.constants import DEFAULT_METRICS_LISTEN
from v6nat_ebpf.errors import V6natError

log = logging.getLogger(__name__)


def cmd_status(args: argparse.Namespace) -> int:
    from v6nat_ebpf.observe.server import fetch_status
    from v6nat_ebpf.observe.snapshot import take_snapshot
    from v6nat_ebpf.observe.stats import ControlPlaneStats, MappingLabels

    try:
        status = fetch_status(args.metrics_listen)
    except V6natError as exc:
        log.info("%s; reading the pinned maps instead", exc)
        from v6nat_ebpf.commands import open_pinned_datapath

        dp = open_pinned_datapath(args.pin_path)
        stats = ControlPlaneStats()
        # Without the daemon, container names are unknown: label each mapping with its target address.
        stats.set_mappings({target.mapping_id: MappingLabels.of(key.proto, key.host_port,
                                                                container=f"[{target.addr}]:{target.port}", network="?")
                            for key, target in dp.dnat.items()})
        stats.set_networks({str(prefix): ("?", entry.mode) for prefix, entry in dp.networks.items()})
        status = take_snapshot(dp, stats).as_dict()
    print(json.dumps(status, indent=2, sort_keys=True) if args.json else render_status(status), end="\n" if args.json else "")
    return 0


def render_status(status: Mapping[str, Any]) -> str:
    """A status dict (`Snapshot.as_dict()`, or `fetch_status()`) as aligned text for a person (`v6nat status`)."""
    build, cp, snat = status["build"], status["control_plane"], status["snat"]
    resync = "never" if not cp["last_resync"] else f"{status['taken_at'] - cp['last_resync']:.0f} s ago"
    exhausted = f"  exhausted: {snat['exhausted']}"
    in_use = ", ".join(f"{p} {n}" for p, n in sorted(snat["ports_in_use"].items())) or "none"
    in_use += f" (pool {snat['pool_ports']} per address and protocol)"
    sections = [
        "\n".join(
            (
                f"v6nat {build['version']}  kernel {build['kernel']}  bcc {build['bcc_version']}",
                f"ready: {'yes' if status['ready'] else 'no, ' + status['ready_reason']}",
                f"docker: {'connected' if cp['docker_connected'] else 'disconnected'}  last resync: {resync}  "
                f"events: {sum(cp['docker_events'].values())}  map write errors: {cp['map_write_errors']}",
                f"snat ports in use: {in_use}{exhausted}  gc runs: {cp['gc_runs']} removed flows: {cp['gc_removed_flows']}",
                f"snat port claims by tries: {_claims_by_tries(snat['allocation_tries'])}",
                _host_local_line(status.get("host_local")),
            )
        ),
        text_table(
            ("INTERFACE", "ROLE", "ATTACHED"),
            [(n, i["role"], "yes" if i["attached"] else "NO") for n, i in status["interfaces"].items()],
        ),
        text_table(
            ("TRANSLATED", "PACKETS"),
            [*((k, n) for k, n in status["translations"].items()), ("pass", status["passed"])],
        ),
        text_table(("DROP REASON", "PACKETS"), sorted(status["drops"].items())),
        text_table(
            ("MAP", "ENTRIES", "CAPACITY", "FILL"),
            [
                (n, m["entries"], m["capacity"], f"{m['entries'] / m['capacity']:.1%}" if m["capacity"] else "-")
                for n, m in status["maps"].items()
            ],
        ),
        text_table(
            ("PROTO", "KIND", "STATE", "FLOWS"),
            [(f["protocol"], f["kind"], f["state"], f["flows"]) for f in status["conntrack_flows"]],
        ),
        text_table(("NETWORK", "PREFIX", "MODE"), [(n["network"], n["prefix"], n["mode"]) for n in status["networks"]]),
        text_table(
            ("PROTO", "HOST PORT", "CONTAINER", "NETWORK", "PACKETS", "BYTES", "REFUSED", "HOST CONNECTS",
             "HOST SENDS"),
            [(m["protocol"], m["host_port"], m["container"], m["network"], m["packets"], m["bytes"],
              m.get("policy_drops", 0), m.get("host_connects", 0), m.get("host_sendmsgs", 0))
             for m in status["mappings"]],
        ),
    ]
    policy = status.get("policy") or {}
    sections.append(f"bans active: {policy.get('bans_active', 0)} (v6nat bans)")
    if policy.get("errors"):
        sections.append(text_table(
            ("NOT PUBLISHED: CONTAINER", "NETWORK", "LABEL", "BAD VALUE"),
            [(e["container"] or "-", e["network"] or "-", e["label"], e["value"]) for e in policy["errors"]]))
    return "\n\n".join(sections) + "\n"


def _host_local_line(host_local: Mapping[str, Any] | None) -> str:
    """"host-local: 4 socket hooks on /sys/fs/cgroup  connects: 3 sendmsgs: 1", or "host-local: off"."""
    from v6nat_ebpf.datapath.hostlocal import cgroup_path_of

    if not host_local or not host_local["hooks"]:
        return "host-local: off"
    cgroups = sorted({str(cgroup_path_of(cg_id) or f"cgroup id {cg_id}") if cg_id else "a removed cgroup"
                      for cg_id in host_local["hooks"].values()})
    return (f"host-local: {len(host_local['hooks'])} socket hooks on {', '.join(cgroups)}  "
            f"connects: {host_local['connects']} sendmsgs: {host_local['sendmsgs']}")


def _claims_by_tries(histogram: Mapping[str, Any]) -> str:
    """The allocation-tries histogram of a status dict, per range of tries: "1: 5  2-3: 1  ...  exhausted: 0"."""
    parts, below, claims_below = [], 0, 0
    for bound, cumulative in sorted((float(text), n) for text, n in histogram["buckets"].items()):
        label = "exhausted" if bound == float("inf") else f"{below + 1:.0f}-{bound:.0f}" if bound > below + 1 else f"{bound:.0f}"
        parts.append(f"{label}: {cumulative - claims_below}")
        below, claims_below = bound, cumulative
    return "  ".join(parts)


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Aligned columns under a header line (status, bans)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    return "\n".join(
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in (header, *rows)
    )


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

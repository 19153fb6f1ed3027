"""`v6nat flows`: the conntrack entries of the datapath, one line per flow, like `conntrack -L`.

Reads the pinned maps (no daemon needed). Filters narrow by protocol, kind,
address (either end, before or after translation) and port.

Must not import at module level: bcc.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import sys
from socket import AF_INET6, inet_ntop
from typing import Any

from v6nat_ebpf.config import add_pin_path_argument
from v6nat_ebpf.model import PROTOCOL_NUMBERS, protocol_name



def _tuple_text(t: tuple[bytes, bytes, int, int]) -> str:
    return f"src={inet_ntop(AF_INET6, t[0])} dst={inet_ntop(AF_INET6, t[1])} sport={t[2]} dport={t[3]}"


def flow_line(flow: Any) -> str:
    """One line of `v6nat flows` for a FlowRow (datapath.maps)."""
    proto = protocol_name(flow.proto)
    return (f"{proto:<6} {flow.proto:<3} {flow.kind:<7} {flow.state:<12} {_tuple_text(flow.original)} "
            f"{_tuple_text(flow.translated)} packets={flow.packets} bytes={flow.bytes} age={flow.age_s:.0f}s")


def _tuple_json(t: tuple[bytes, bytes, int, int]) -> dict[str, Any]:
    return {"saddr": inet_ntop(AF_INET6, t[0]), "daddr": inet_ntop(AF_INET6, t[1]), "sport": t[2], "dport": t[3]}


def flow_json(flow: Any) -> dict[str, Any]:
    """A FlowRow as JSON: the fields of datapath.Flow, addresses as text."""
    return {**flow._asdict(), "original": _tuple_json(flow.original), "translated": _tuple_json(flow.translated)}


def _matches(flow: Any, args: argparse.Namespace) -> bool:
    ends = (flow.original, flow.translated)
    if args.proto is not None and flow.proto != PROTOCOL_NUMBERS[args.proto]:
        return False
    if args.kind is not None and flow.kind != args.kind:
        return False
    if args.addr is not None and not any(args.addr.packed in t[:2] for t in ends):
        return False
    if args.port is not None and not any(args.port in t[2:] for t in ends):
        return False
    return True


def _address(text: str) -> ipaddress.IPv6Address:
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv6 address") from None


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number")
    return int(text)


def cmd_flows(args: argparse.Namespace) -> int:
    from v6nat_ebpf.commands import open_pinned_datapath

    # Rows, not Flows, and one write: an IPv6Address and a print() per flow took most of 1.5 s for
    # 50,000 flows. A short-lived command: the cyclic GC would only rescan the rows it just made.
    gc.disable()
    flows = [f for f in open_pinned_datapath(args.pin_path).flow_rows() if _matches(f, args)]
    if args.json:
        sys.stdout.write(json.dumps([flow_json(f) for f in flows], indent=2) + "\n")
    else:
        sys.stdout.write("".join(flow_line(flow) + "\n" for flow in flows))
        print(f"v6nat flows: {len(flows)} flow entries shown")
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "flows", help="list conntrack entries (like conntrack -L)",
        description="List the datapath's tracked flows: the original tuple, then the translated one.",
        epilog="examples:\n  v6nat flows --proto tcp --port 8080\n  v6nat flows --kind snat --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the flows as JSON")
    parser.add_argument("--proto", choices=sorted(PROTOCOL_NUMBERS), help="only this protocol")
    parser.add_argument("--kind", choices=("dnat", "snat", "hairpin"), help="only this kind of translation")
    parser.add_argument("--addr", type=_address, help="only flows with this address at either end")
    parser.add_argument("--port", type=_port, help="only flows with this port at either end")
    add_pin_path_argument(parser)
    parser.set_defaults(func=cmd_flows)

"""`v6nat flows`: the conntrack entries of the datapath, one line per flow, like `conntrack -L`.

Reads the pinned maps (no daemon needed). Filters narrow by protocol, kind,
address (either end, before or after translation) and port.

Must not import at module level: bcc.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import sys
from socket import AF_INET6, inet_ntop
from typing import TYPE_CHECKING, Callable, Iterable

from v6nat_ebpf.config import add_pin_path_argument
from v6nat_ebpf.model import PROTOCOL_NUMBERS, protocol_name

if TYPE_CHECKING:  # at run time only inside cmd_flows: `v6nat --help` does not load the datapath
    from v6nat_ebpf.datapath.flowlist import FlowRecord

# One line per flow: protocol name and number, kind, state (the columns padded), the original tuple, the
# translated one, both halves' counters, the age in seconds.
_LINE = "%s src=%s dst=%s sport=%d dport=%d src=%s dst=%s sport=%d dport=%d packets=%d bytes=%d age=%.0fs\n"

# One flow of the JSON list, laid out as json.dumps(..., indent=2) lays it out (the test checks byte for byte):
# the fields of datapath.Flow. Its strings need no escaping: names from bpf/v6nat.h and inet_ntop's text.
_JSON_FLOW = """\
  {
    "proto": %d,
    "kind": "%s",
    "state": "%s",
    "original": {
      "saddr": "%s",
      "daddr": "%s",
      "sport": %d,
      "dport": %d
    },
    "translated": {
      "saddr": "%s",
      "daddr": "%s",
      "sport": %d,
      "dport": %d
    },
    "packets": %d,
    "bytes": %d,
    "age_s": %r,
    "idle_s": %r,
    "mapping_id": %d
  }"""


class _AddressText(dict[bytes, str]):
    """16 raw bytes -> the address as text: inet_ntop once per distinct address (few, in most tables)."""

    def __missing__(self, raw: bytes) -> str:
        text = self[raw] = inet_ntop(AF_INET6, raw)
        return text


class _Columns(dict[tuple[int, str, str], str]):
    """(proto, kind, state) -> the first four columns of a line."""

    def __missing__(self, key: tuple[int, str, str]) -> str:
        proto, kind, state = key
        text = self[key] = f"{protocol_name(proto):<6} {proto:<3} {kind:<7} {state:<12}"
        return text


def flow_lines(records: Iterable[FlowRecord]) -> list[str]:
    """The lines of `v6nat flows`, one per flow record."""
    a, columns = _AddressText(), _Columns()
    return [_LINE % (columns[proto, kind, state], a[saddr], a[daddr], sport, dport, a[new_saddr], a[new_daddr],
                     new_sport, new_dport, packets, nbytes, age_s)
            for (proto, kind, state, saddr, daddr, sport, dport, new_saddr, new_daddr, new_sport, new_dport,
                 packets, nbytes, age_s, _, _) in records]


def flows_json(records: Iterable[FlowRecord]) -> str:
    """`v6nat flows --json`: a list of the flows' fields, addresses as text."""
    a = _AddressText()
    items = [_JSON_FLOW % (proto, kind, state, a[saddr], a[daddr], sport, dport, a[new_saddr], a[new_daddr],
                           new_sport, new_dport, packets, nbytes, age_s, idle_s, mapping_id)
             for (proto, kind, state, saddr, daddr, sport, dport, new_saddr, new_daddr, new_sport, new_dport,
                  packets, nbytes, age_s, idle_s, mapping_id) in records]
    return "[\n" + ",\n".join(items) + "\n]\n" if items else "[]\n"


def _wanted(args: argparse.Namespace) -> Callable[[FlowRecord], bool] | None:
    """What the filters keep (None: everything): either end, before or after translation. By position in
    the record: proto 0, kind 1, addresses 3, 4, 7, 8, ports 5, 6, 9, 10."""
    tests: list[Callable[[FlowRecord], bool]] = []
    if args.proto is not None:
        proto = PROTOCOL_NUMBERS[args.proto]
        tests.append(lambda r: r[0] == proto)
    if args.kind is not None:
        tests.append(lambda r: r[1] == args.kind)
    if args.addr is not None:
        packed = args.addr.packed
        tests.append(lambda r: packed in (r[3], r[4], r[7], r[8]))
    if args.port is not None:
        tests.append(lambda r: args.port in (r[5], r[6], r[9], r[10]))
    return (lambda r: all(test(r) for test in tests)) if tests else None


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
    from v6nat_ebpf.datapath.flowlist import pinned_flow_records

    # Flat records, each address formatted once, one write: 50,000 flows were 1.2-1.5 s as a Flow and four
    # IPv6Addresses each and a print() per flow. A short-lived command: the cyclic GC would only rescan the
    # tuples it makes, and the interpreter's last collection at exit everything imported (frozen: skipped).
    gc.disable()
    gc.freeze()
    wanted = _wanted(args)
    records: Iterable[FlowRecord] = pinned_flow_records(args.pin_path)
    if wanted is not None:
        records = filter(wanted, records)
    if args.json:
        sys.stdout.write(flows_json(records))
    else:
        lines = flow_lines(records)
        sys.stdout.write("".join(lines) + f"v6nat flows: {len(lines)} flow entries shown\n")
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

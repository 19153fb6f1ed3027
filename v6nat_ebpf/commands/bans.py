"""`v6nat ban`, `v6nat unban`, `v6nat bans`: banned sources, written straight into the pinned map.

No daemon is involved: the command opens the pinned maps (like `v6nat flows`), so a ban works while
the daemon is stopped or restarting, and survives both. A ban drops every packet of its source that
would reach a container from outside, new flows and established ones (bpf/lib/policy.h): after
writing it the command bumps the ban generation (established flows look again at their next
packet) and removes the conntrack pairs it covers. Expiry is decided by the programs against
CLOCK_BOOTTIME; expired bans are pruned at the next `ban`/`unban`. Writers serialise on a lock of
the pin directory (fail2ban runs actions in parallel).

Must not import at module level: bcc.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import time
from ipaddress import IPv6Network
from typing import Any, Iterator

from v6nat_ebpf.config import add_pin_path_argument
from v6nat_ebpf.model import PROTOCOL_NUMBERS, protocol_name
from v6nat_ebpf.policy import parse_prefixes

_DURATION = re.compile(r"(\d+)([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NS = 1_000_000_000


def parse_duration(text: str) -> int:
    """'90', '90s', '10m', '2h', '1d', '1w' -> seconds (positive)."""
    match = _DURATION.fullmatch(text.strip())
    if not match or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 600, 10m, 2h, 1d)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def parse_port(text: str) -> tuple[int, int]:
    """'587/tcp', '53/udp' (or '587': tcp) -> (port, IP protocol)."""
    port, _, proto = text.partition("/")
    proto = proto or "tcp"
    if not port.isdigit() or not 0 < int(port) <= 65535 or proto not in ("tcp", "udp"):
        raise argparse.ArgumentTypeError(f"{text!r} is not PORT/tcp or PORT/udp")
    return int(port), PROTOCOL_NUMBERS[proto]


def parse_prefix(text: str) -> IPv6Network:
    try:
        [prefix] = parse_prefixes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not one IPv6 prefix or address ({exc})") from None
    return prefix


def boot_ns() -> int:
    """CLOCK_BOOTTIME, the programs' bpf_ktime_get_boot_ns()."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


@contextlib.contextmanager
def _banning(pin_path: str) -> Iterator[Any]:
    """The pinned datapath, with the ban writers' lock held."""
    from v6nat_ebpf.commands import open_pinned_datapath
    from v6nat_ebpf.datapath.loader import pin_dir

    dp = open_pinned_datapath(pin_path)
    fd = os.open(pin_dir(pin_path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield dp
    finally:
        os.close(fd)
        dp.close()


def _prune_expired(dp: Any) -> int:
    now = boot_ns()
    pruned = 0
    for key, ban in dp.bans.items():
        if not ban.active(now):
            dp.bans.delete(key)
            pruned += 1
    return pruned


def _scope(port: int, proto: int) -> str:
    return f"port {port}/{protocol_name(proto)}" if port else "every port"


def cmd_ban(args: argparse.Namespace) -> int:
    from v6nat_ebpf.datapath import Ban, BanKey

    port, proto = args.port or (0, 0)
    key = BanKey(args.prefix, port, proto)
    with _banning(args.pin_path) as dp:
        _prune_expired(dp)
        expires = boot_ns() + args.duration * _NS if args.duration else 0
        dp.bans.put(key, Ban(expires, int(time.time())))
        dp.bans.bump_generation()  # after the write: a flow that reads the new generation sees the ban
        cut = dp.conntrack.cut_sources(key)
    until = f"for {args.duration} s" if args.duration else "until unbanned"
    print(f"banned {args.prefix} on {_scope(port, proto)} {until}; {cut} flows cut")
    return 0


def cmd_unban(args: argparse.Namespace) -> int:
    from v6nat_ebpf.datapath import BanKey

    port, proto = args.port or (0, 0)
    with _banning(args.pin_path) as dp:
        removed = dp.bans.delete(BanKey(args.prefix, port, proto))
        _prune_expired(dp)
    print(f"{'unbanned' if removed else 'was not banned:'} {args.prefix} on {_scope(port, proto)}")
    return 0


def ban_records(dp: Any) -> list[dict[str, Any]]:
    """The bans in force, most recent first, as `v6nat bans --json` prints them."""
    now_boot, now = boot_ns(), time.time()
    records = []
    for key, ban in dp.bans.items():
        if not ban.active(now_boot):
            continue
        left = (ban.expires_ns - now_boot) / _NS if ban.expires_ns else None
        records.append({
            "prefix": str(key.prefix),
            "port": key.port or None,
            "protocol": protocol_name(key.proto) if key.port else None,
            "banned_at": ban.created_s,
            "expires_at": round(now + left) if left is not None else None,
            "seconds_left": round(left) if left is not None else None,
        })
    return sorted(records, key=lambda r: (-r["banned_at"], r["prefix"]))


def cmd_bans(args: argparse.Namespace) -> int:
    from v6nat_ebpf.commands import open_pinned_datapath
    from v6nat_ebpf.commands.status import text_table

    with contextlib.closing(open_pinned_datapath(args.pin_path)) as dp:
        records = ban_records(dp)
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    rows = [(r["prefix"], f"{r['port']}/{r['protocol']}" if r["port"] else "all",
             time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["banned_at"])),
             "never" if r["seconds_left"] is None else f"{r['seconds_left']} s") for r in records]
    print(text_table(("PREFIX", "PORT", "BANNED AT (UTC)", "EXPIRES IN"), rows))
    print(f"v6nat bans: {len(records)} in force")
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ban = subparsers.add_parser(
        "ban", help="drop a source prefix before it reaches any container, live flows included",
        description="Ban an IPv6 source prefix at public ingress, before DNAT: its new flows are dropped and its "
                    "established ones cut at their next packet. Written into the pinned map: works while the "
                    "daemon is down, survives its restarts. See docs/policy.md.",
        epilog="examples:\n  v6nat ban 2001:db8:bad::/48 --for 1h\n  v6nat ban 2001:db8::7 --port 587/tcp\n"
               "  v6nat bans --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ban.add_argument("prefix", type=parse_prefix, metavar="PREFIX", help="IPv6 prefix or address (a /128)")
    ban.add_argument("--for", dest="duration", type=parse_duration, metavar="DURATION",
                     help="expire after this long (600, 10m, 2h, 1d, 1w); default: until unbanned")
    ban.add_argument("--port", type=parse_port, metavar="PORT/PROTO",
                     help="only this published (host) port, e.g. 587/tcp; default: every port")
    add_pin_path_argument(ban)
    ban.set_defaults(func=cmd_ban)

    unban = subparsers.add_parser("unban", help="lift a ban of `v6nat ban`",
                                  description="Remove the ban of PREFIX (with the same --port, if it had one).")
    unban.add_argument("prefix", type=parse_prefix, metavar="PREFIX")
    unban.add_argument("--port", type=parse_port, metavar="PORT/PROTO")
    add_pin_path_argument(unban)
    unban.set_defaults(func=cmd_unban)

    bans = subparsers.add_parser("bans", help="list the bans in force",
                                 description="List the bans in force (expired ones are not shown).")
    bans.add_argument("--json", action="store_true", help="print the bans as JSON")
    add_pin_path_argument(bans)
    bans.set_defaults(func=cmd_bans)

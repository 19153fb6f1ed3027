"""What v6nat changes on the host besides its BPF programs and maps, and the one way to undo it all.

Lives here: `PortReservation`, which keeps the SNAT port range in `net.ipv4.ip_local_reserved_ports`
(it covers IPv6 sockets too) so no host socket ever autobinds into it, and records which ports it
added in /run/v6nat/ so that an uninstall gives back exactly those, even after a `kill -9`;
`renew_neighbours`, which restarts the host's neighbour resolution of a container address that a new
container took (see daemon.py); and `uninstall(pin_path)`, the one sequence that removes v6nat from
this network namespace, for `v6nat cleanup` and `v6nat run --detach-on-exit` alike.

Netlink through v6nat_ebpf.rtnl. Must not import: docker, pyroute2, bcc (the datapath is imported in
`uninstall`, which needs no compiler).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from ipaddress import IPv6Address
from pathlib import Path
from typing import Iterable

from v6nat_ebpf.rtnl import NTF_USE, NUD_NOARP, NUD_NONE, NUD_PERMANENT, NetlinkError, Rtnl

log = logging.getLogger(__name__)

SYSCTL = Path("/proc/sys")
RESERVED_PORTS = SYSCTL / "net/ipv4/ip_local_reserved_ports"
LOCAL_PORT_RANGE = SYSCTL / "net/ipv4/ip_local_port_range"
STATE_DIR = Path("/run/v6nat")


def _read_sysctl(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def parse_port_list(text: str) -> set[int]:
    """'1000,61000-65535' -> the set of ports."""
    ports: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        ports.update(range(int(lo), int(hi or lo) + 1))
    return ports


def format_port_list(ports: Iterable[int]) -> str:
    """The kernel's own syntax: sorted, ranges merged."""
    ranges: list[list[int]] = []
    for port in sorted(ports):
        if ranges and port == ranges[-1][1] + 1:
            ranges[-1][1] = port
        else:
            ranges.append([port, port])
    return ",".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in ranges)


@dataclass(frozen=True)
class PortReservation:
    """The SNAT range in ip_local_reserved_ports, remembered in a state file so `cleanup` undoes exactly it."""

    pin_path: str

    @property
    def state_file(self) -> Path:
        return STATE_DIR / ("reserved-ports" + self.pin_path.replace("/", "_") + ".json")

    def reserve(self, lo: int, hi: int) -> None:
        """Add lo-hi to the reserved ports (only the ports not reserved already) and remember which."""
        current = _read_sysctl(RESERVED_PORTS)
        if current is None:
            log.warning("cannot read %s: SNAT ports not reserved", RESERVED_PORTS)
            return
        port_range = _read_sysctl(LOCAL_PORT_RANGE)
        if port_range:
            first, last = (int(x) for x in port_range.split())
            if first <= hi and lo <= last:
                log.warning("SNAT ports %d-%d overlap ip_local_port_range %d-%d: reserved now, but prefer a "
                            "range outside it (--snat-ports)", lo, hi, first, last)
        reserved = parse_port_list(current)
        previously_added = self._added()
        added = (set(range(lo, hi + 1)) - reserved) | (previously_added & set(range(lo, hi + 1)))
        stale = previously_added - added  # a previous run with another range
        new = (reserved - stale) | added
        if new != reserved:
            try:
                RESERVED_PORTS.write_text(format_port_list(new) or "\n")
            except OSError as exc:  # a container: Docker mounts /proc/sys read-only (docs/install.md)
                log.warning("cannot write %s (%s): SNAT ports %d-%d not reserved; keep them outside "
                            "ip_local_port_range", RESERVED_PORTS, exc.strerror, lo, hi)
                return
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({"added": format_port_list(added)}) + "\n")
        log.info("SNAT ports %d-%d reserved in ip_local_reserved_ports", lo, hi)

    def _added(self) -> set[int]:
        try:
            return parse_port_list(json.loads(self.state_file.read_text())["added"])
        except (OSError, ValueError, KeyError):
            return set()

    def release(self) -> bool:
        """Remove the ports we added (and only those); True if there was anything to undo."""
        added = self._added()
        if not self.state_file.exists():
            return False
        current = _read_sysctl(RESERVED_PORTS)
        if current is not None and added:
            RESERVED_PORTS.write_text(format_port_list(parse_port_list(current) - added) or "\n")
        try:
            os.unlink(self.state_file)
        except FileNotFoundError:
            pass
        return True


def renew_neighbours(neighbours: Iterable[tuple[int, IPv6Address]]) -> None:
    """Restart the host's neighbour resolution of each (ifindex, address) that has an entry.

    The entry goes to NUD_NONE, which stops its timer but keeps the packets it
    holds (deleting it would bounce them with ICMPv6 address unreachable), then
    NTF_USE solicits at once; the owner's answer releases the held packets.
    Static entries (permanent, noarp) are the administrator's: left alone.
    """
    todo = list(neighbours)
    if not todo:
        return  # no netlink socket for nothing
    with Rtnl() as nl:
        for ifindex, addr in todo:
            try:
                entry = nl.neighbour(ifindex, addr.packed)
            except NetlinkError:
                continue  # no entry: the first packet to the address solicits at once
            if entry["state"] & (NUD_PERMANENT | NUD_NOARP):
                continue
            try:
                nl.neighbour_replace(ifindex, addr.packed, NUD_NONE)
                nl.neighbour_replace(ifindex, addr.packed, NUD_NONE, flags=NTF_USE)
            except NetlinkError as exc:
                log.warning("renewing the neighbour entry of %s (ifindex %d) failed: %s", addr, ifindex, exc)
                continue
            log.debug("renewed the neighbour entry of %s (ifindex %d, was state %#x)", addr, ifindex, entry["state"])


def uninstall(pin_path: str) -> list[str]:
    """Detach every v6nat filter in this netns, remove the pins under `pin_path` and give back the SNAT
    ports this pin path reserved (even when a filter or pin could not be removed). What was removed, one
    line each."""
    from v6nat_ebpf.datapath import Datapath

    removed: list[str] = []
    try:
        removed += Datapath.cleanup(pin_path)
    finally:
        if PortReservation(pin_path).release():
            removed.append("SNAT ports from net.ipv4.ip_local_reserved_ports")
    return removed

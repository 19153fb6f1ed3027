"""The host -> model: public interfaces, their global addresses and bridge ifindexes, from netlink.

Lives here: `read_host_state` (one dump of links and one of addresses ->
`HostState`: public interfaces, bridges, their ports and addresses), `HostWatcher`
(a thread that wakes the daemon on any link or IPv6 address change, so a new
address or a new bridge is picked up at once), the forwarding / accept_ra
checks, and `PortReservation`, which keeps the SNAT port range in
`net.ipv4.ip_local_reserved_ports` (it covers IPv6 sockets too) so no host
socket ever autobinds into it; and `renew_neighbours`, which restarts the
host's neighbour resolution of a container address that a new container took
(see daemon.py).

Everything reads the network namespace the process runs in: netlink, and
/proc/sys/net (per-netns), never /sys/class/net (per mount namespace).

Must not import: docker, bcc, datapath, reconciler.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import threading
from dataclasses import dataclass
from ipaddress import IPv6Address
from pathlib import Path
from typing import Callable, Iterable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTMGRP_IPV6_IFADDR, RTMGRP_LINK
from pyroute2.netlink.rtnl.ndmsg import NTF_USE, NUD_NOARP, NUD_NONE, NUD_PERMANENT

from v6nat_ebpf.errors import V6natError
from v6nat_ebpf.model import HostState, Link, PublicInterface

log = logging.getLogger(__name__)

SYSCTL = Path("/proc/sys")
RESERVED_PORTS = SYSCTL / "net/ipv4/ip_local_reserved_ports"
LOCAL_PORT_RANGE = SYSCTL / "net/ipv4/ip_local_port_range"
STATE_DIR = Path("/run/v6nat")

IFA_F_TEMPORARY = 0x01
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40
RT_SCOPE_UNIVERSE = 0


def _global_addresses(ipr: IPRoute) -> dict[int, tuple[IPv6Address, ...]]:
    """ifindex -> usable global addresses, preferred first: not deprecated, not temporary, then by value."""
    found: dict[int, list[tuple[bool, bool, IPv6Address]]] = {}
    for msg in ipr.get_addr(family=socket.AF_INET6):
        flags = msg.get("IFA_FLAGS") or msg["flags"]
        if msg["scope"] != RT_SCOPE_UNIVERSE or flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED):
            continue
        addr = IPv6Address(msg.get("IFA_ADDRESS"))
        found.setdefault(msg["index"], []).append((bool(flags & IFA_F_DEPRECATED), bool(flags & IFA_F_TEMPORARY), addr))
    return {index: tuple(addr for *_, addr in sorted(addrs)) for index, addrs in found.items()}


def read_host_state(public_names: Iterable[str], strict: bool = True) -> HostState:
    """One consistent look at the host.

    A public interface that does not exist is a V6natError when `strict` (at
    start-up), and simply absent otherwise (it went away while running; it is
    picked up again when it comes back).
    """
    with IPRoute() as ipr:
        addresses = _global_addresses(ipr)
        links = {link.name: link for link in (
            Link(msg.get("IFLA_IFNAME"), msg["index"], msg.get("IFLA_MASTER"), addresses.get(msg["index"], ()),
                 msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or "", msg.get("IFLA_LINK_NETNSID"))
            for msg in ipr.get_links())}
    public = []
    for name in public_names:
        if name not in links:
            if strict:
                raise V6natError(f"unknown interface {name!r} (not in this network namespace)")
            continue
        public.append(PublicInterface(links[name].ifindex, name, links[name].addresses))
    return HostState(tuple(public), tuple(sorted(links.values(), key=lambda link: link.ifindex)))


class HostWatcher:
    """Calls `on_change("netlink")` whenever a link or an IPv6 address appears, changes or goes away.

    The daemon then re-reads the whole host state: simpler than applying each
    message, and correct even when messages arrive in bursts.
    """

    def __init__(self, on_change: Callable[[str], None]) -> None:
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="netlink", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        # pyroute2's synchronous IPRoute belongs to the thread that made it: make it here.
        with IPRoute() as ipr:
            ipr.bind(groups=RTMGRP_LINK | RTMGRP_IPV6_IFADDR)
            while not self._stop.is_set():
                ready, _, _ = select.select([ipr.fileno()], [], [], 0.5)
                if not ready:
                    continue
                try:
                    ipr.get()
                except (OSError, NetlinkError) as exc:
                    log.warning("netlink monitor: %s", exc)
                self._on_change("netlink")


def _read_sysctl(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def forwarding_warnings(public_names: Iterable[str]) -> list[str]:
    """What about the host's IPv6 forwarding setup would break v6nat or the host, one line each."""
    warnings = []
    if _read_sysctl(SYSCTL / "net/ipv6/conf/all/forwarding") != "1":
        warnings.append("IPv6 forwarding is off (net.ipv6.conf.all.forwarding=0): containers are unreachable "
                        "until it is on")
    else:
        for name in public_names:
            accept_ra = _read_sysctl(SYSCTL / f"net/ipv6/conf/{name}/accept_ra")
            if accept_ra == "1":
                warnings.append(f"{name}: accept_ra=1 with forwarding on ignores router advertisements; if the "
                                f"default route comes from them, set net.ipv6.conf.{name}.accept_ra=2")
    return warnings


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
            RESERVED_PORTS.write_text(format_port_list(new) or "\n")
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
    with IPRoute() as ipr:
        for ifindex, addr in todo:
            try:
                entry = ipr.neigh("get", dst=str(addr), ifindex=ifindex)[0]
            except NetlinkError:
                continue  # no entry: the first packet to the address solicits at once
            if entry["state"] & (NUD_PERMANENT | NUD_NOARP):
                continue
            try:
                ipr.neigh("replace", dst=str(addr), ifindex=ifindex, state=NUD_NONE)
                ipr.neigh("replace", dst=str(addr), ifindex=ifindex, state=NUD_NONE, flags=NTF_USE)
            except NetlinkError as exc:
                log.warning("renewing the neighbour entry of %s (ifindex %d) failed: %s", addr, ifindex, exc)
                continue
            log.debug("renewed the neighbour entry of %s (ifindex %d, was state %#x)", addr, ifindex, entry["state"])

"""The host -> model: public interfaces, their global addresses and bridge ifindexes, from netlink.

Lives here: `read_host_state` (one dump of links and one of addresses ->
`HostState`: public interfaces, bridges, their veths and addresses) and `HostWatcher`
(a thread that wakes the daemon on any link or IPv6 address change, so a new
address or a new bridge is picked up at once). This module only reads the host:
what v6nat changes on it lives in host_effects.py, the forwarding / accept_ra
checks in preflight.py.

Everything reads the network namespace the process runs in: netlink, never
/sys/class/net (per mount namespace).

Must not import: docker, bcc, datapath, reconciler.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from ipaddress import IPv6Address
from typing import Callable, Iterable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTMGRP_IPV6_IFADDR, RTMGRP_LINK

from v6nat_ebpf.errors import V6natError
from v6nat_ebpf.model import HostState, Link, PublicInterface

log = logging.getLogger(__name__)

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

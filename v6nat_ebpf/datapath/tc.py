"""clsact qdiscs and direct-action bpf filters, through pyroute2.

Our filters sit at one fixed preference and handle (PREF, HANDLE), match IPv6
only, and carry a name starting with "v6nat_" (e.g. "v6nat_public_ingress"):
that is how we find them again after a restart and how we make sure we only
ever replace or delete our own. Replacing ours is `tc filter replace` at our
pref/handle: atomic, no packet sees no filter. Other tools' filters (other
prefs, or other names) are never touched; the clsact qdisc is added when absent
and left in place (removing it would remove their filters too).

Imports pyroute2 and errors only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute, NetNS
from pyroute2.netlink.exceptions import NetlinkError

from v6nat_ebpf.errors import V6natError

log = logging.getLogger(__name__)

PREF = 0x2606  # 9734: our filters' preference on every interface we attach to
HANDLE = 1
NAME_PREFIX = "v6nat_"
ETH_P_IPV6 = 0x86DD
PARENTS = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}
_EEXIST = 17
_ENOENT = 2


@dataclass(frozen=True)
class Filter:
    """A bpf filter found on an interface."""

    ifname: str
    ifindex: int
    direction: str  # "ingress" | "egress"
    pref: int
    handle: int
    name: str

    @property
    def ours(self) -> bool:
        return self.name.startswith(NAME_PREFIX) and self.pref == PREF and self.handle == HANDLE


class Tc:
    """tc operations in the current network namespace, or in a named one."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        try:
            self._nl: Any = NetNS(netns) if netns else IPRoute()
        except (OSError, NetlinkError) as exc:
            raise V6natError(f"cannot open netlink in netns {netns or 'current'}: {exc}") from exc

    def close(self) -> None:
        self._nl.close()

    def __enter__(self) -> Tc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ifindex(self, ifname: str) -> int:
        found = self._nl.link_lookup(ifname=ifname)
        if not found:
            raise V6natError(f"no interface {ifname!r} in netns {self.netns or 'current'}")
        return found[0]

    def ifname(self, ifindex: int) -> str:
        links = self._nl.get_links(ifindex)
        return links[0].get_attr("IFLA_IFNAME") if links else str(ifindex)

    def filters(self, ifname: str, direction: str) -> list[Filter]:
        """Every filter on one hook of one interface (an absent clsact: none)."""
        idx = self.ifindex(ifname)
        try:
            msgs = list(self._nl.get_filters(index=idx, parent=PARENTS[direction]))
        except NetlinkError as exc:
            if exc.code in (_ENOENT, 22):  # no clsact qdisc
                return []
            raise
        out = []
        for msg in msgs:
            options = msg.get_attr("TCA_OPTIONS")
            if not msg["handle"]:
                continue  # the per-pref chain head, not a filter
            name = ""
            if msg.get_attr("TCA_KIND") == "bpf" and options is not None:
                name = options.get_attr("TCA_BPF_NAME") or ""
            out.append(Filter(ifname, idx, direction, msg["info"] >> 16, msg["handle"], name))
        return out

    def attach(self, ifname: str, direction: str, prog_fd: int, name: str) -> None:
        """Add or atomically replace our filter on one hook of `ifname`."""
        idx = self.ifindex(ifname)
        try:
            self._nl.tc("add", "clsact", idx)
        except NetlinkError as exc:
            if exc.code != _EEXIST:
                raise V6natError(f"cannot add clsact qdisc to {ifname}: {exc}") from exc
        for f in self.filters(ifname, direction):
            if f.pref == PREF and not f.ours:
                raise V6natError(
                    f"{ifname} {direction}: tc preference {PREF} is taken by another filter "
                    f"({f.name or 'unnamed'}, handle {f.handle:#x}); remove it or free that preference"
                )
        try:
            self._nl.tc(
                "replace-filter", "bpf", idx, handle=HANDLE, fd=prog_fd, name=name,
                parent=PARENTS[direction], prio=PREF, protocol=ETH_P_IPV6, direct_action=True,
            )
        except NetlinkError as exc:
            raise V6natError(f"cannot attach {name} to {ifname} {direction}: {exc}") from exc
        log.info("attached %s to %s %s", name, ifname, direction)

    def detach(self, ifname: str) -> int:
        """Remove our filters from both hooks of `ifname`; returns how many."""
        removed = 0
        for direction in PARENTS:
            for f in self.filters(ifname, direction):
                if not f.ours:
                    continue
                try:
                    self._nl.tc("del-filter", "bpf", f.ifindex, handle=HANDLE, parent=PARENTS[direction],
                                prio=PREF, protocol=ETH_P_IPV6)
                except NetlinkError as exc:
                    if exc.code != _ENOENT:
                        raise V6natError(f"cannot remove {f.name} from {ifname}: {exc}") from exc
                removed += 1
                log.info("detached %s from %s %s", f.name, ifname, direction)
        return removed

    def ours(self) -> list[Filter]:
        """Our filters on every interface of the namespace."""
        out = []
        for link in self._nl.get_links():
            ifname = link.get_attr("IFLA_IFNAME")
            for direction in PARENTS:
                out += [f for f in self.filters(ifname, direction) if f.ours]
        return out

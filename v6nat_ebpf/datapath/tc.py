"""clsact qdiscs and direct-action bpf filters, through rtnetlink (v6nat_ebpf.rtnl).

Our filters sit at one fixed preference and handle (PREF, HANDLE), match IPv6
only, and carry a name starting with "v6nat_" (e.g. "v6nat_public_ingress"):
that is how we find them again after a restart and how we make sure we only
ever replace or delete our own. Replacing ours is `tc filter replace` at our
pref/handle: atomic, no packet sees no filter. Other tools' filters (other
prefs, or other names) are never touched; the clsact qdisc is added when absent
and left in place (removing it would remove their filters too).

Imports rtnl and errors only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from v6nat_ebpf.errors import V6natError
from v6nat_ebpf.rtnl import IFLA_IFNAME, NetlinkError, Rtnl, iter_filters, text

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
            self._nl = Rtnl(netns)
        except OSError as exc:
            raise V6natError(f"cannot open netlink in netns {netns or 'current'}: {exc}") from exc

    def close(self) -> None:
        self._nl.close()

    def __enter__(self) -> Tc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ifindex(self, ifname: str) -> int:
        try:
            return self._nl.link(ifname=ifname)["index"]
        except NetlinkError as exc:
            raise V6natError(f"no interface {ifname!r} in netns {self.netns or 'current'}") from exc

    def ifname(self, ifindex: int) -> str:
        try:
            return text(self._nl.link(ifindex).attrs.get(IFLA_IFNAME)) or str(ifindex)
        except NetlinkError:
            return str(ifindex)

    def filters(self, ifname: str, direction: str) -> list[Filter]:
        """Every filter on one hook of one interface (an absent clsact: none)."""
        idx = self.ifindex(ifname)
        try:
            msgs = self._nl.filters(idx, PARENTS[direction])
        except NetlinkError as exc:
            if exc.code in (_ENOENT, 22):  # no clsact qdisc
                return []
            raise
        return [Filter(ifname, idx, direction, pref, handle, name) for pref, handle, _, name in iter_filters(msgs)]

    def attach(self, ifname: str, direction: str, prog_fd: int, name: str) -> None:
        """Add or atomically replace our filter on one hook of `ifname`."""
        idx = self.ifindex(ifname)
        try:
            self._nl.clsact_add(idx)
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
            self._nl.bpf_filter_replace(idx, PARENTS[direction], PREF, ETH_P_IPV6, HANDLE, prog_fd, name)
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
                    self._nl.bpf_filter_delete(f.ifindex, PARENTS[direction], PREF, ETH_P_IPV6, HANDLE)
                except NetlinkError as exc:
                    if exc.code != _ENOENT:
                        raise V6natError(f"cannot remove {f.name} from {ifname}: {exc}") from exc
                removed += 1
                log.info("detached %s from %s %s", f.name, ifname, direction)
        return removed

    def ours(self) -> list[Filter]:
        """Our filters on every interface of the namespace."""
        out = []
        for link in self._nl.links():
            ifname = text(link.attrs.get(IFLA_IFNAME)) or ""  # every link has one
            for direction in PARENTS:
                out += [f for f in self.filters(ifname, direction) if f.ours]
        return out

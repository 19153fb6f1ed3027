"""The host -> model: public interfaces, their global addresses and bridge ifindexes, from netlink.

Lives here: `read_host_state` (one dump of links and one of addresses ->
`HostState`: public interfaces, bridges with their MAC, their veths and
addresses; and the host's nsid of each container namespace it is asked about,
which pairs a veth with its container) and `HostWatcher`
(a thread that wakes the daemon on any link or IPv6 address change, so a new
address or a new bridge is picked up at once). This module only reads the host:
what v6nat changes on it lives in host_effects.py, the forwarding / accept_ra
checks in preflight.py.

Everything reads the network namespace the process runs in: netlink, never
/sys/class/net (per mount namespace).

Netlink through v6nat_ebpf.rtnl. Must not import: docker, pyroute2, bcc, datapath, reconciler.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import threading
from ipaddress import IPv6Address
from typing import Callable, Iterable

from v6nat_ebpf import rtnl
from v6nat_ebpf.errors import V6natError
from v6nat_ebpf.model import HostState, Link, NetnsRef, PublicInterface
from v6nat_ebpf.rtnl import Rtnl

log = logging.getLogger(__name__)

IFA_F_TEMPORARY = 0x01
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40
RT_SCOPE_UNIVERSE = 0


def _global_addresses(nl: Rtnl) -> dict[int, tuple[IPv6Address, ...]]:
    """ifindex -> usable global addresses, preferred first: not deprecated, not temporary, then by value."""
    found: dict[int, list[tuple[bool, bool, IPv6Address]]] = {}
    for msg in nl.addresses(socket.AF_INET6):
        flags = rtnl.u32(msg.attrs.get(rtnl.IFA_FLAGS)) or msg["flags"]
        raw = msg.attrs.get(rtnl.IFA_ADDRESS)
        if msg["scope"] != RT_SCOPE_UNIVERSE or flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED) or raw is None:
            continue
        addr = IPv6Address(raw)
        found.setdefault(msg["index"], []).append((bool(flags & IFA_F_DEPRECATED), bool(flags & IFA_F_TEMPORARY), addr))
    return {index: tuple(addr for *_, addr in sorted(addrs)) for index, addrs in found.items()}


def _mac(raw: bytes | None) -> bytes | None:
    return raw if raw is not None and len(raw) == 6 else None


def _link(msg: rtnl.Message, addresses: dict[int, tuple[IPv6Address, ...]]) -> Link:
    attrs = msg.attrs
    kind = rtnl.text(rtnl.nested(attrs.get(rtnl.IFLA_LINKINFO)).get(rtnl.IFLA_INFO_KIND)) or ""
    return Link(rtnl.text(attrs.get(rtnl.IFLA_IFNAME)) or "", msg["index"], rtnl.u32(attrs.get(rtnl.IFLA_MASTER)),
                addresses.get(msg["index"], ()), kind, rtnl.s32(attrs.get(rtnl.IFLA_LINK_NETNSID)),
                _mac(attrs.get(rtnl.IFLA_ADDRESS)))


def _open_netns(ref: NetnsRef) -> int | None:
    """An fd of a container's namespace file (SandboxKey), or None: the file is gone (so is the
    container's sandbox) or this process cannot see it (another mount namespace: see _netns_ids)."""
    key, _ = ref
    if not key:
        return None
    try:
        return os.open(key, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno != errno.ENOENT or os.path.isdir(os.path.dirname(key)):
            log.debug("container namespace %s: %s", key, exc.strerror)
        return None


# (SandboxKey, inode of the namespace it holds) -> nsid: an nsid stays the same for a namespace's life, and
# a SandboxKey path names one sandbox only, so a hit cannot be stale. RTM_GETNSID costs
# about 0.6 ms; with the cache a pass pays it only for containers new since the last one.
_nsid_cache: dict[tuple[str, int], int] = {}
_nsid_lock = threading.Lock()


def _netns_ids(nl: Rtnl, refs: Iterable[NetnsRef]) -> tuple[tuple[NetnsRef, int], ...]:
    """The nsid this namespace gave each container's (the peer_netnsid of the container's veths).

    By the SandboxKey file when this process sees it (no race: a removed sandbox cannot be opened);
    by the container's pid only when the SandboxKey's directory is not visible at all here (v6nat in
    another mount namespace), as a pid may be reused by then."""
    found = []
    seen: set[tuple[str, int]] = set()
    with _nsid_lock:
        for ref in sorted(set(refs)):
            key, pid = ref
            fd = _open_netns(ref)
            query: dict[str, int] = {}
            cache_key = None
            if fd is not None:
                query["fd"] = fd
                cache_key = (key, os.fstat(fd).st_ino)
            elif pid > 0 and (not key or not os.path.isdir(os.path.dirname(key))):
                query["pid"] = pid
            if not query:
                continue
            try:
                nsid = _nsid_cache.get(cache_key) if cache_key is not None else None
                if nsid is None:
                    nsid = nl.netnsid(**query)
            except OSError as exc:
                log.debug("nsid of container namespace %s: %s", ref, exc)
                continue
            finally:
                if fd is not None:
                    os.close(fd)
            if nsid is not None:  # None: not assigned
                found.append((ref, nsid))
                if cache_key is not None:
                    _nsid_cache[cache_key] = nsid
                    seen.add(cache_key)
        for stale in set(_nsid_cache) - seen:
            del _nsid_cache[stale]
    return tuple(found)


def read_host_state(public_names: Iterable[str], strict: bool = True, netns: Iterable[NetnsRef] = ()) -> HostState:
    """One consistent look at the host; `netns`: the containers' namespaces to give the nsids of.

    A public interface that does not exist is a V6natError when `strict` (at
    start-up), and simply absent otherwise (it went away while running; it is
    picked up again when it comes back).
    """
    with Rtnl() as nl:
        addresses = _global_addresses(nl)
        links = {link.name: link for link in (_link(msg, addresses) for msg in nl.links())}
        netns_ids = _netns_ids(nl, netns)
    public = []
    for name in public_names:
        if name not in links:
            if strict:
                raise V6natError(f"unknown interface {name!r} (not in this network namespace)")
            continue
        public.append(PublicInterface(links[name].ifindex, name, links[name].addresses))
    return HostState(tuple(public), tuple(sorted(links.values(), key=lambda link: link.ifindex)), netns_ids)


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
        with Rtnl(groups=rtnl.RTMGRP_LINK | rtnl.RTMGRP_IPV6_IFADDR) as nl:
            while not self._stop.is_set():
                ready, _, _ = select.select([nl.fileno()], [], [], 0.5)
                if not ready:
                    continue
                try:
                    nl.drain()
                except OSError as exc:  # ENOBUFS: messages lost; the re-read below sees the result anyway
                    log.warning("netlink monitor: %s", exc)
                self._on_change("netlink")

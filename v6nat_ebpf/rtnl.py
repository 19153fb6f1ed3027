"""The rtnetlink requests the daemon makes, over a plain NETLINK_ROUTE socket (stdlib only).

Lives here: `Rtnl`, one netlink socket (optionally in a named network namespace, optionally bound to
multicast groups), with the few requests v6nat needs: dump links and IPv6 addresses, a namespace's
nsid, get and replace a neighbour entry, the clsact qdisc and its bpf filters (dump, replace, delete).
Replies come back as `Message`s: the fixed header's fields by name and the attributes by number.

Why not pyroute2: importing it loads about 280 modules (asyncio, sqlite3, ndb, ...), about 11 MiB
of the long-lived daemon's memory, for these dozen requests (issue 15). The lab and tests still use
pyroute2.

Imports: stdlib and errors only.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Iterator

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400

RTM_GETLINK = 18
RTM_GETADDR = 22
RTM_NEWNEIGH, RTM_GETNEIGH = 28, 30
RTM_NEWQDISC = 36
RTM_NEWTFILTER, RTM_DELTFILTER, RTM_GETTFILTER = 44, 45, 46
RTM_GETNSID = 90

RTMGRP_LINK = 0x1
RTMGRP_IPV6_IFADDR = 0x100

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_LINK_NETNSID = 1, 3, 10, 18, 37
IFLA_INFO_KIND = 1
IFA_ADDRESS, IFA_FLAGS = 1, 8
NETNSA_NSID, NETNSA_PID, NETNSA_FD = 1, 2, 3
NDA_DST = 1
NUD_NONE, NUD_NOARP, NUD_PERMANENT = 0x00, 0x40, 0x80
NTF_USE = 0x01
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_BPF_FD, TCA_BPF_NAME, TCA_BPF_FLAGS = 6, 7, 8
TCA_BPF_FLAG_ACT_DIRECT = 1
TC_H_CLSACT = 0xFFFFFFF1
CLSACT_HANDLE = 0xFFFF0000

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBi")  # family, prefixlen, flags, scope, index
_RTGENMSG = struct.Struct("=Bxxx")  # family (rtgenmsg, padded to 4)
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
_TCMSG = struct.Struct("=BxxxiIII")  # family, ifindex, handle, parent, info
_RTA = struct.Struct("=HH")  # len, type
_DUMP_RETRIES = 5  # a dump the kernel marks interrupted (the table changed meanwhile) is asked again
_RECV_BYTES = 1 << 16  # the kernel sends dumps in datagrams of at most 32 KiB

# Reply bodies by message type: (the struct, its field names).
_BODIES = {
    16: (_IFINFOMSG, ("family", "type", "index", "flags", "change")),  # RTM_NEWLINK
    20: (_IFADDRMSG, ("family", "prefixlen", "flags", "scope", "index")),  # RTM_NEWADDR
    RTM_NEWNEIGH: (_NDMSG, ("family", "index", "state", "flags", "type")),
    RTM_NEWTFILTER: (_TCMSG, ("family", "index", "handle", "parent", "info")),
    88: (_RTGENMSG, ("family",)),  # RTM_NEWNSID
}


class NetlinkError(OSError):
    """The kernel refused a request: `code` is the errno (as pyroute2's NetlinkError has it)."""

    def __init__(self, code: int, what: str = "") -> None:
        super().__init__(code, f"{what}: {os.strerror(code)}" if what else os.strerror(code))
        self.code = code


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute (TLV), padded to 4 bytes."""
    length = _RTA.size + len(payload)
    return _RTA.pack(length, kind) + payload + bytes(-length % 4)


def attrs_of(data: bytes) -> dict[int, bytes]:
    """Attribute number -> payload of a run of attributes (NLA_F_NESTED and byte-order bits masked off)."""
    found: dict[int, bytes] = {}
    offset = 0
    while offset + _RTA.size <= len(data):
        length, kind = _RTA.unpack_from(data, offset)
        if length < _RTA.size:
            break
        found[kind & 0x3FFF] = data[offset + _RTA.size:offset + length]
        offset += (length + 3) & ~3
    return found


def text(payload: bytes | None) -> str | None:
    return payload.split(b"\0", 1)[0].decode(errors="replace") if payload is not None else None


def u32(payload: bytes | None) -> int | None:
    return int.from_bytes(payload[:4], "little") if payload is not None and len(payload) >= 4 else None


def s32(payload: bytes | None) -> int | None:
    return int.from_bytes(payload[:4], "little", signed=True) if payload is not None and len(payload) >= 4 else None


@dataclass(frozen=True)
class Message:
    """One reply: its type, the fixed header's fields and the attributes (number -> raw payload)."""

    type: int
    fields: dict[str, int]
    attrs: dict[int, bytes]

    def __getitem__(self, name: str) -> int:
        return self.fields[name]


_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


def _socket_in(netns: str | None) -> socket.socket:
    """A NETLINK_ROUTE socket of this thread's namespace, or of the named one (/run/netns/NAME or a path):
    the thread enters it only to make the socket, which stays of that namespace."""
    if not netns:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    path = netns if "/" in netns else f"/run/netns/{netns}"
    target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


class Rtnl:
    """One rtnetlink socket; requests are synchronous (one thread uses it at a time)."""

    def __init__(self, netns: str | None = None, groups: int = 0) -> None:
        self._sock = _socket_in(netns)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # bursts of monitor messages
            self._sock.bind((0, groups))
        except OSError:
            self._sock.close()
            raise
        self._seq = 0

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def drain(self) -> int:
        """Read and drop every message waiting (of the multicast groups); how many datagrams."""
        count = 0
        while True:
            try:
                self._sock.recv(_RECV_BYTES, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return count
            count += 1

    # ------------------------------------------------------------------ transport

    def request(self, msg_type: int, flags: int, body: bytes, what: str = "") -> list[Message]:
        """Send one request; its replies (a dump's messages, or the one answer), or [] for a bare ack.
        An error reply raises NetlinkError; a dump interrupted by a change is asked again."""
        for _ in range(_DUMP_RETRIES):
            messages, interrupted = self._exchange(msg_type, flags, body, what)
            if not interrupted:
                return messages
        return messages

    def _exchange(self, msg_type: int, flags: int, body: bytes, what: str) -> tuple[list[Message], bool]:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        self._sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, flags | NLM_F_REQUEST, seq, 0) + body)
        dump = flags & NLM_F_DUMP == NLM_F_DUMP
        found: list[Message] = []
        interrupted = False
        while True:
            data = self._sock.recv(_RECV_BYTES)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, mflags, mseq, _ = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    raise NetlinkError(errno.EPROTO, what)
                payload = data[offset + _NLMSGHDR.size:offset + length]
                offset += (length + 3) & ~3
                if mseq != seq:
                    continue  # an answer to an earlier request (or a multicast message)
                interrupted |= bool(mflags & NLM_F_DUMP_INTR)
                if kind == NLMSG_DONE:
                    return found, interrupted
                if kind == NLMSG_ERROR:
                    code = -int.from_bytes(payload[:4], "little", signed=True)
                    if code:
                        raise NetlinkError(code, what)
                    return found, interrupted  # the ack
                found.append(_decode(kind, payload))
                if not dump and not mflags & NLM_F_MULTI and not flags & NLM_F_ACK:
                    return found, interrupted

    # ------------------------------------------------------------------ links and addresses

    def links(self) -> list[Message]:
        return self.request(RTM_GETLINK, NLM_F_DUMP, _IFINFOMSG.pack(0, 0, 0, 0, 0), "links")

    def link(self, ifindex: int = 0, ifname: str | None = None) -> Message:
        """One link by index or name; NetlinkError (ENODEV) when there is none."""
        body = _IFINFOMSG.pack(0, 0, ifindex, 0, 0) + (attr(IFLA_IFNAME, ifname.encode() + b"\0") if ifname else b"")
        return self.request(RTM_GETLINK, 0, body, f"link {ifname or ifindex}")[0]

    def addresses(self, family: int) -> list[Message]:
        return self.request(RTM_GETADDR, NLM_F_DUMP, _IFADDRMSG.pack(family, 0, 0, 0, 0), "addresses")

    def netnsid(self, fd: int | None = None, pid: int | None = None) -> int | None:
        """The nsid this namespace gave the namespace of `fd` (or of process `pid`); None: not assigned."""
        query = attr(NETNSA_FD, struct.pack("=I", fd)) if fd is not None else attr(NETNSA_PID, struct.pack("=I", pid or 0))
        answer = self.request(RTM_GETNSID, 0, _RTGENMSG.pack(socket.AF_UNSPEC) + query, "nsid")
        nsid = s32(answer[0].attrs.get(NETNSA_NSID)) if answer else None
        return None if nsid is None or nsid < 0 else nsid

    # ------------------------------------------------------------------ neighbours

    def neighbour(self, ifindex: int, dst: bytes) -> Message:
        """The neighbour entry of IPv6 address `dst` (16 bytes) on `ifindex`; NetlinkError when there is none."""
        body = _NDMSG.pack(socket.AF_INET6, ifindex, 0, 0, 0) + attr(NDA_DST, dst)
        return self.request(RTM_GETNEIGH, 0, body, "neighbour")[0]

    def neighbour_replace(self, ifindex: int, dst: bytes, state: int, flags: int = 0) -> None:
        body = _NDMSG.pack(socket.AF_INET6, ifindex, state, flags, 0) + attr(NDA_DST, dst)
        self.request(RTM_NEWNEIGH, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, body, "neighbour")

    # ------------------------------------------------------------------ tc: clsact and bpf filters

    def clsact_add(self, ifindex: int) -> None:
        """Add a clsact qdisc; NetlinkError EEXIST when the interface has one."""
        body = _TCMSG.pack(socket.AF_UNSPEC, ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0) + attr(TCA_KIND, b"clsact\0")
        self.request(RTM_NEWQDISC, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body, "clsact")

    def filters(self, ifindex: int, parent: int) -> list[Message]:
        return self.request(RTM_GETTFILTER, NLM_F_DUMP, _TCMSG.pack(socket.AF_UNSPEC, ifindex, 0, parent, 0), "filters")

    def bpf_filter_replace(self, ifindex: int, parent: int, pref: int, protocol: int, handle: int, prog_fd: int,
                           name: str) -> None:
        """Add or atomically replace the direct-action bpf filter at (pref, handle)."""
        options = (attr(TCA_BPF_FD, struct.pack("=I", prog_fd)) + attr(TCA_BPF_NAME, name.encode() + b"\0")
                   + attr(TCA_BPF_FLAGS, struct.pack("=I", TCA_BPF_FLAG_ACT_DIRECT)))
        body = (_TCMSG.pack(socket.AF_UNSPEC, ifindex, handle, parent, _tc_info(pref, protocol))
                + attr(TCA_KIND, b"bpf\0") + attr(TCA_OPTIONS | 0x8000, options))
        self.request(RTM_NEWTFILTER, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, body, f"filter {name}")

    def bpf_filter_delete(self, ifindex: int, parent: int, pref: int, protocol: int, handle: int) -> None:
        body = _TCMSG.pack(socket.AF_UNSPEC, ifindex, handle, parent, _tc_info(pref, protocol)) + attr(TCA_KIND, b"bpf\0")
        self.request(RTM_DELTFILTER, NLM_F_ACK, body, "filter")


def _tc_info(pref: int, protocol: int) -> int:
    """tcm_info of a filter: its preference above, the protocol in network byte order below."""
    return (pref << 16) | socket.htons(protocol)


def _decode(kind: int, payload: bytes) -> Message:
    layout, names = _BODIES.get(kind, (None, ()))
    if layout is None:
        return Message(kind, {}, attrs_of(payload))
    return Message(kind, dict(zip(names, layout.unpack_from(payload))), attrs_of(payload[(layout.size + 3) & ~3:]))


def nested(payload: bytes | None) -> dict[int, bytes]:
    return attrs_of(payload) if payload is not None else {}


def iter_filters(messages: list[Message]) -> Iterator[tuple[int, int, str, str]]:
    """(pref, handle, kind, bpf name or "") of each filter in a filter dump (chain heads, handle 0, left out)."""
    for msg in messages:
        if not msg["handle"]:
            continue
        kind = text(msg.attrs.get(TCA_KIND)) or ""
        name = text(nested(msg.attrs.get(TCA_OPTIONS)).get(TCA_BPF_NAME)) if kind == "bpf" else None
        yield msg["info"] >> 16, msg["handle"], kind, name or ""

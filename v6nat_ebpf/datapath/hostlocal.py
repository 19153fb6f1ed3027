"""Host-local access: bpf/sock.c's cgroup socket-address programs, attached to a cgroup v2 by pinned bpf_links.

A process on the host that connects or sends to a published port never passes
the TC programs; these hooks translate its destination at connect()/sendmsg()
(docs/datapath.md, "Host-local access"). They act on every process of the
cgroup they are attached to and its descendants, so they check the netns
cookie written to `hostlocal_config`: only sockets of the namespace the daemon
serves are touched.

Each attachment is a bpf_link pinned as <pins>/link_<program>: it outlives the
daemon (a restart or kill -9 keeps host-local access working), a restarted
daemon swaps in its newly loaded program atomically (BPF_LINK_UPDATE), and
`v6nat cleanup` detaches it (BPF_LINK_DETACH) before removing the pins.

Imports: stdlib, datapath.bpfsys, datapath.layout, errors.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from v6nat_ebpf.datapath import bpfsys, layout
from v6nat_ebpf.errors import V6natError

log = logging.getLogger(__name__)

# program -> its attach type (enum bpf_attach_type of linux/bpf.h). The hooks that show the published
# address again come first, so no socket is translated before its answers can be restored.
PROGRAMS = {
    "v6nat_sock_getpeername6": 30,  # BPF_CGROUP_INET6_GETPEERNAME
    "v6nat_sock_recvmsg6": 20,  # BPF_CGROUP_UDP6_RECVMSG
    "v6nat_sock_connect6": 11,  # BPF_CGROUP_INET6_CONNECT
    "v6nat_sock_sendmsg6": 15,  # BPF_CGROUP_UDP6_SENDMSG
}
LINK_PREFIX = "link_"
SO_NETNS_COOKIE = 71  # linux/socket.h, kernel >= 5.14


@dataclass(frozen=True)
class Attachment:
    """One pinned link as the kernel sees it."""

    program: str
    cgroup_id: int  # 0: detached (its cgroup was removed)


def cgroup2_mounts() -> list[Path]:
    """Where cgroup v2 is mounted, in /proc/mounts order."""
    return bpfsys.mounts_of_type("cgroup2")


def default_cgroup() -> Path:
    """The root of the cgroup v2 hierarchy: /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a hybrid one."""
    mounts = cgroup2_mounts()
    if not mounts:
        raise V6natError("no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup)")
    return mounts[0]


def check_cgroup(path: Path) -> None:
    """`path` must be a cgroup directory of a cgroup v2 hierarchy."""
    path = Path(os.path.abspath(path))
    if not any(path == m or m in path.parents for m in cgroup2_mounts()):
        raise V6natError(f"cgroup path {path} is not inside a cgroup v2 hierarchy "
                         f"(mounted at: {', '.join(map(str, cgroup2_mounts())) or 'nowhere'})")
    if not (path / "cgroup.procs").exists():
        raise V6natError(f"cgroup path {path} is not a cgroup (no cgroup.procs)")


def netns_cookie() -> int:
    """The cookie of this process's network namespace (the one the socket hooks act in)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            raw = s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
    except OSError as exc:
        raise V6natError(f"cannot read the network namespace's cookie (SO_NETNS_COOKIE needs Linux 5.14): {exc}") from exc
    return int(struct.unpack("=Q", raw)[0])


BPF_PROG_TYPE_CGROUP_SOCK_ADDR = 18
BPF_FUNC_GET_NETNS_COOKIE = 122
# call bpf_get_netns_cookie(ctx); r0 = 1; exit: the kernel feature the hooks need, without bcc.
_PROBE_INSNS = struct.pack("<BBhi", 0x85, 0, 0, BPF_FUNC_GET_NETNS_COOKIE) + struct.pack("<BBhi", 0xB7, 0, 0, 1) \
    + struct.pack("<BBhi", 0x95, 0, 0, 0)


def probe() -> str:
    """Whether this host can have host-local access (for `v6nat check`): a cgroup v2 hierarchy, the netns
    cookie, and a connect6 program calling bpf_get_netns_cookie loads. What was found, or V6natError."""
    cgroup = default_cgroup()
    netns_cookie()
    fd = bpfsys.prog_load(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, PROGRAMS["v6nat_sock_connect6"], _PROBE_INSNS)
    os.close(fd)
    return f"cgroup v2 at {cgroup}; connect6/sendmsg6/recvmsg6/getpeername6 hooks with netns cookies load"


def _links(pins: Path) -> list[Path]:
    return sorted(pins.glob(f"{LINK_PREFIX}*")) if pins.is_dir() else []


def attachments(pins: Path) -> list[Attachment]:
    """The pinned links of the pin directory `pins` (<pin_path>/v<layout>)."""
    found = []
    for path in _links(pins):
        fd = bpfsys.obj_get(str(path))
        try:
            info = bpfsys.cgroup_link_info(fd)
        finally:
            os.close(fd)
        found.append(Attachment(path.name[len(LINK_PREFIX):], info.cgroup_id))
    return found


def write_netns_cookie(config: bpfsys.BpfMap, cookie: int) -> None:
    """The namespace the hooks act in; 0: none (the hooks leave every socket alone)."""
    config.update(layout.u32(0), layout.RawHostlocalConfig(cookie))


def attach(pins: Path, cgroup: Path, prog_fd: Callable[[str, int], int]) -> None:
    """Attach every hook to `cgroup`, or give the links already pinned there the new programs; links
    pinned for another cgroup are detached and made anew. `prog_fd(name, attach_type)` loads a program."""
    check_cgroup(cgroup)
    cg_fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        wanted_id = os.fstat(cg_fd).st_ino  # a cgroup v2's id is its inode number
        for name, attach_type in PROGRAMS.items():
            prog = prog_fd(name, attach_type)
            path = pins / f"{LINK_PREFIX}{name}"
            if path.exists():
                link = bpfsys.obj_get(str(path))
                try:
                    info = bpfsys.cgroup_link_info(link)
                    if info.cgroup_id == wanted_id and info.attach_type == attach_type:
                        bpfsys.link_update(link, prog)
                        continue
                    _detach_link(link)
                finally:
                    os.close(link)
                path.unlink()
            link = bpfsys.link_create(prog, cg_fd, attach_type)
            try:
                bpfsys.obj_pin(link, str(path))
            finally:
                os.close(link)
    finally:
        os.close(cg_fd)
    log.info("host-local access: socket hooks attached to cgroup %s", cgroup)


def _detach_link(link_fd: int) -> None:
    try:
        bpfsys.link_detach(link_fd)
    except V6natError:
        pass  # already detached: its cgroup is gone


def detach(pins: Path) -> list[str]:
    """Detach and unpin every pinned link of `pins`; what was removed."""
    removed = []
    for path in _links(pins):
        fd = bpfsys.obj_get(str(path))
        try:
            _detach_link(fd)
        finally:
            os.close(fd)
        path.unlink()
        removed.append(f"socket hook {path.name[len(LINK_PREFIX):]}")
    return removed


def cgroup_path_of(cg_id: int) -> Path | None:
    """The directory of the cgroup with this id, searched in the cgroup v2 hierarchies (for status)."""
    for mount in cgroup2_mounts():
        for top, _, _ in os.walk(mount):
            if os.stat(top).st_ino == cg_id:
                return Path(top)
    return None


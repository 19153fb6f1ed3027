"""Helpers of the adversarial suite: sockets, raw frames and sniffers inside any network namespace.

Everything runs in the test process: a short-lived thread `setns()`es into the
namespace (a lab namespace, or a container's `/proc/<pid>/ns/net`), creates the
socket there and ends; the socket stays in that namespace for its whole life.
So an attacker "inside a container" is a raw socket in the container's netns
(what a process with Docker's default CAP_NET_RAW can open), and an attacker
"on the internet" is a raw socket on the lab client's link that writes any
source it likes. Frames are built with scapy in this process.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from typing import Any, Callable, Iterable, Sequence, TypeVar

from polling import eventually  # noqa: F401 (the tests take it from here)
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(path: str, fn: Callable[[], T]) -> T:
    """fn() run in a thread that entered the network namespace at `path` (the caller's stays put)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {path}: {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


@dataclass
class Ns:
    """One network namespace seen from the test: its path, its link to the world, its address."""

    name: str
    path: str
    iface: str
    addr: IPv6Address
    mac: str = ""
    _sockets: list[socket.socket] = field(default_factory=list, repr=False)

    # ------------------------------------------------------------ sockets

    def socket(self, family: int, kind: int, proto: int = 0) -> socket.socket:
        sock = in_netns(self.path, lambda: socket.socket(family, kind, proto))
        self._sockets.append(sock)
        return sock

    def ifindex(self) -> int:
        return in_netns(self.path, lambda: socket.if_nametoindex(self.iface))

    def udp(self, port: int = 0, addr: str = "::") -> socket.socket:
        sock = self.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((addr, port))
        return sock

    def connect(self, addr: Any, port: int, sport: int = 0, timeout: float = 3.0,
                scope: int = 0) -> socket.socket:
        """A connected TCP socket (raises OSError / TimeoutError when it cannot connect)."""
        sock = self.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sport:
            sock.bind(("::", sport))
        sock.settimeout(timeout)
        try:
            sock.connect((str(addr), port, 0, scope))
        except BaseException:
            sock.close()
            raise
        return sock

    def can_connect(self, addr: Any, port: int, timeout: float = 2.0, scope: int = 0) -> bool:
        try:
            self.connect(addr, port, timeout=timeout, scope=scope).close()
            return True
        except OSError:
            return False

    def sniffer(self) -> "Sniffer":
        sock = in_netns(self.path, lambda: _packet_socket(self.iface))
        self._sockets.append(sock)
        return Sniffer(sock)

    def sender(self) -> socket.socket:
        sock = in_netns(self.path, lambda: _packet_socket(self.iface))
        self._sockets.append(sock)
        return sock

    def sendp(self, frames: Iterable[Any], gap_s: float = 0.0) -> None:
        """Raw Ethernet frames (scapy packets or bytes) out of this namespace's link, as they are."""
        sock = self.sender()
        try:
            for frame in frames:
                sock.send(bytes(frame))
                if gap_s:
                    time.sleep(gap_s)
        finally:
            sock.close()

    def run(self, argv: Sequence[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["nsenter", f"--net={self.path}", "--", *argv], capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{argv} in {self.name} failed: {result.stderr.strip()}")
        return result

    def link_local(self) -> IPv6Address:
        out = self.run(["ip", "-6", "-o", "addr", "show", "dev", self.iface, "scope", "link"]).stdout
        return IPv6Address(out.split()[3].split("/")[0])

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()


def _packet_socket(iface: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((iface, 0))
    return sock


class Sniffer:
    """Every frame seen on a link (both directions) from the moment it was made."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def collect(self, seconds: float, match: Callable[[Any], bool] = lambda p: True,
                incoming_only: bool = False, stop_at_first: bool = False) -> list[Any]:
        found = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, meta = self.sock.recvfrom(65535)
            except (TimeoutError, socket.timeout):
                break
            if incoming_only and meta[2] == PACKET_OUTGOING:
                continue
            pkt = Ether(data)
            if IPv6 in pkt and match(pkt):
                found.append(pkt)
                if stop_at_first:
                    break
        return found

    def close(self) -> None:
        self.sock.close()


def recv_all(sock: socket.socket, seconds: float) -> list[tuple[bytes, Any]]:
    """Every datagram a UDP socket gets within `seconds`."""
    got = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(sock.recvfrom(65535))
        except (TimeoutError, socket.timeout):
            break
    return got


def echo_roundtrip(sock: socket.socket, data: bytes, timeout: float = 3.0) -> bool:
    """Whether a connected TCP socket to an echo server gets `data` back."""
    try:
        sock.settimeout(timeout)
        sock.sendall(data)
        got = b""
        deadline = time.monotonic() + timeout
        while len(got) < len(data) and time.monotonic() < deadline:
            chunk = sock.recv(65535)
            if not chunk:
                return False
            got += chunk
        return got == data
    except OSError:
        return False


def in_prefix(addr: Any, prefix: str) -> bool:
    return IPv6Address(str(addr)) in IPv6Network(prefix)


def csum_neutral_frames(template: bytes, offset: int, count: int, start: int = 1) -> list[bytes]:
    """`count` copies of a frame whose two 16-bit words at `offset` (in the IPv6 source address) are
    (i, 0xffff - i): every copy has a different source and the same, valid, L4 checksum."""
    frames = []
    head, tail = template[:offset], template[offset + 4:]
    for i in range(start, start + count):
        frames.append(head + struct.pack("!HH", i & 0xffff, 0xffff - (i & 0xffff)) + tail)
    return frames

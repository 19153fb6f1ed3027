"""Run inside a namespace (`ip netns exec NS python udp_probe.py ADDR PORT`):
one UDP flow from a fixed socket to ADDR:PORT. First a datagram that must be
answered (so the flow is established), then one with hop limit 1, then one of
1400 bytes that must not be fragmented; prints as JSON the ICMPv6 errors the
socket got back: [{"type": 3, "code": 0, "info": 0}, {"type": 2, ...}].

Standard library only: the namespace tests run it with the venv's python.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import sys
import time

IPV6_RECVERR = 25
IPV6_MTU_DISCOVER = 23
IPV6_PMTUDISC_DO = 2
MSG_ERRQUEUE = 0x2000


def errors(sock: socket.socket, wait_s: float) -> list[dict[str, int]]:
    """ICMPv6 errors queued on `sock` within `wait_s` (struct sock_extended_err)."""
    found = []
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        select.select([], [], [sock], max(0.0, deadline - time.monotonic()))
        try:
            _, ancdata, _, _ = sock.recvmsg(2048, 512, MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
        for level, kind, data in ancdata:
            if level == socket.IPPROTO_IPV6 and kind == IPV6_RECVERR:
                _errno, _origin, etype, code, _pad, info, _data = struct.unpack("IBBBBII", data[:16])
                found.append({"type": etype, "code": code, "info": info})
        if found:
            break
    return found


def main() -> None:
    addr, port = sys.argv[1], int(sys.argv[2])
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
    sock.connect((addr, port))
    sock.settimeout(1.0)
    for _ in range(20):  # the server may still be starting
        sock.send(b"hello\n")
        try:
            sock.recv(2048)
            break
        except (TimeoutError, ConnectionRefusedError):
            continue
    else:
        sys.exit("no answer")
    # Port Unreachable from attempts before the server listened: not what is asked about.
    sock.settimeout(0.0)
    for _ in range(64):
        try:
            sock.recvmsg(2048, 512, MSG_ERRQUEUE)
        except ConnectionRefusedError:
            continue  # the socket's pending error, reported once
        except BlockingIOError:
            break
    sock.settimeout(1.0)
    report = []
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 1)
    sock.send(b"hop limit 1\n")
    report += errors(sock, 2.0)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 64)
    try:
        sock.send(b"x" * 1400)
    except OSError:
        pass  # EMSGSIZE from an earlier error's path MTU: also an answer
    report += errors(sock, 2.0)
    print(json.dumps(report))


if __name__ == "__main__":
    main()

"""Helpers of the end-to-end tests: the lab configuration, echo servers, polling.

`V6nat` is v6nat_ebpf.lab.daemon.LabDaemon: `v6nat run` as a real process in the lab's host netns.
"""

from __future__ import annotations

import sys
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

from polling import eventually
from peer_echo import UDP_PEER_ECHO

from v6nat_ebpf.lab import Lab, LabConfig
from v6nat_ebpf.lab.daemon import V6NAT, LabDaemon as V6nat

__all__ = ["LIVE_CLIENT", "V6NAT", "V6nat", "address_in", "effective_caps", "eventually", "lab_config", "tcp_echo_server", "udp_echo_server", "udp_ask"]


def lab_config(**kw: Any) -> LabConfig:
    """The e2e lab: Docker's own iptables/ip6tables and userland proxy off, so only v6nat forwards."""
    return LabConfig(iptables=False, ip6tables=False, userland_proxy=False, **kw)


def tcp_echo_server(port: int = 80) -> list[str]:
    """A container command answering every TCP connection with the peer address it saw."""
    return ["socat", f"TCP6-LISTEN:{port},fork,reuseaddr", "SYSTEM:echo $SOCAT_PEERADDR"]


def udp_echo_server(port: int = 53) -> list[str]:
    """A command answering every UDP datagram with the peer address it saw (in a container: the
    host's python3, which the lab image sees through its /usr mount)."""
    return ["python3", "-S", "-c", UDP_PEER_ECHO, str(port)]


def effective_caps(pid: int) -> int:
    """The effective capability set of process `pid`, as its bit mask."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no CapEff in /proc/{pid}/status")


def address_in(text: str) -> IPv6Address | None:
    """The IPv6 address an echo server answered ("[2001:db8::1]" or the long form socat gives for UDP)."""
    try:
        return IPv6Address(text.strip().strip("[]"))
    except ValueError:
        return None


# One socket, so one flow, that sends "who" again (after 0.25, 0.5, then every 1 s) until the answer
# comes or the deadline passes: a first datagram may find the server not bound yet (ICMP port
# unreachable) or be dropped while the daemon has not yet described the container's veth. (socat
# -T2 waited only its half-close time, 0.5 s, for the answer, and sent once.)
UDP_ASK = """
import socket, sys, time
addr, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.connect((addr, port))
deadline, wait = time.monotonic() + timeout, 0.25
while (left := deadline - time.monotonic()) > 0:
    try:
        s.send(b"who\\n")
        s.settimeout(min(wait, left))
        print(s.recv(4096).decode().strip())
        break
    except TimeoutError:
        wait = min(2 * wait, 1.0)
    except ConnectionRefusedError:  # Port Unreachable for an earlier datagram
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
"""


def udp_ask(lab: Lab, ns: str, addr: Any, port: int, timeout_s: float = 5) -> IPv6Address | None:
    """Ask [addr]:port from netns `ns` (one socket) until it answers or `timeout_s` passed: the address
    the echo server saw (None: no answer)."""
    result = lab.exec(ns, [sys.executable, "-c", UDP_ASK, str(addr), str(port), f"{timeout_s:g}"], check=False,
                      timeout=timeout_s + 10)
    return address_in(result.stdout)


# A client that keeps one TCP connection open: it sends a line and reads it back, then waits for a line
# on stdin before each further round; prints "echo" per answered round, "cut: <why>" when one fails.
LIVE_CLIENT = """
import socket, sys
addr, port, source = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection((addr, port), timeout=5, source_address=(source, 0))
s.settimeout(3)
while True:
    try:
        s.sendall(b"ping\\n")
        data = s.recv(100)
        print("echo" if data else "cut: closed", flush=True)
        if not data:
            break
    except OSError as exc:
        print(f"cut: {exc.__class__.__name__}", flush=True)
        break
    if not sys.stdin.readline():
        break
"""

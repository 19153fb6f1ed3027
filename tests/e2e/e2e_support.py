"""Helpers of the end-to-end tests: the lab configuration, echo servers, polling.

`V6nat` is v6nat_ebpf.lab.daemon.LabDaemon: `v6nat run` as a real process in the lab's host netns.
"""

from __future__ import annotations

import time
from ipaddress import IPv6Address
from typing import Any, Callable, TypeVar

from v6nat_ebpf.lab import Lab, LabConfig
from v6nat_ebpf.lab.daemon import V6NAT, LabDaemon as V6nat

__all__ = ["V6NAT", "V6nat", "address_in", "eventually", "lab_config", "tcp_echo_server", "udp_echo_server", "udp_ask"]
T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 10, interval: float = 0.05, what: str = "") -> T:
    """The first truthy result of check() within timeout, else AssertionError with the last one."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or check} never became true within {timeout} s (last: {result!r})")
        time.sleep(interval)


def lab_config(**kw: Any) -> LabConfig:
    """The e2e lab: Docker's own iptables/ip6tables and userland proxy off, so only v6nat forwards."""
    return LabConfig(iptables=False, ip6tables=False, userland_proxy=False, **kw)


def tcp_echo_server(port: int = 80) -> list[str]:
    """A container command answering every TCP connection with the peer address it saw."""
    return ["socat", f"TCP6-LISTEN:{port},fork,reuseaddr", "SYSTEM:echo $SOCAT_PEERADDR"]


def udp_echo_server(port: int = 53) -> list[str]:
    """A container command answering every UDP datagram with the peer address it saw."""
    return ["socat", f"UDP6-RECVFROM:{port},fork,reuseaddr", "SYSTEM:echo $SOCAT_PEERADDR"]


def address_in(text: str) -> IPv6Address | None:
    """The IPv6 address an echo server answered ("[2001:db8::1]" or the long form socat gives for UDP)."""
    try:
        return IPv6Address(text.strip().strip("[]"))
    except ValueError:
        return None


def udp_ask(lab: Lab, ns: str, addr: Any, port: int, timeout_s: float = 2) -> IPv6Address | None:
    """Send one datagram from netns `ns`; the address the echo server saw (None: no answer)."""
    result = lab.exec(ns, ["socat", f"-T{timeout_s:g}", "-", f"UDP6:[{addr}]:{port}"], input="who\n", check=False,
                      timeout=timeout_s + 10)
    return address_in(result.stdout)

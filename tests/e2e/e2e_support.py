"""Helpers of the end-to-end tests: `v6nat run` as a real process in a lab, echo servers, polling.

`V6nat` starts `.venv/bin/v6nat run` inside the lab's host netns with
`nsenter --net` (so it sees /sys/fs/bpf pins), waits for /readyz, and can
kill -9, SIGTERM or restart it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from v6nat_ebpf.lab import Lab, LabConfig

REPO = Path(__file__).resolve().parents[2]
V6NAT = str(REPO / ".venv" / "bin" / "v6nat")
T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        return int(s.getsockname()[1])


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


@dataclass
class V6nat:
    """One `v6nat run` process in a lab's host netns."""

    lab: Lab
    extra: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[Any] | None = None
    log_path: Path | None = None

    @property
    def listen(self) -> str:
        return f"[::1]:{self.metrics_port}"

    def argv(self) -> list[str]:
        return [V6NAT, "run", "--public-iface", self.lab.public_iface, "--docker-host", self.lab.docker_url,
                "--pin-path", self.lab.pin_path, "--metrics-listen", self.listen, "--log-level", "debug",
                *self.extra]

    def start(self, wait_ready: bool = True, timeout: float = 60) -> "V6nat":
        self.log_path = Path(self.lab.state_dir) / f"v6nat-{time.monotonic_ns()}.log"
        log = open(self.log_path, "wb")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.env}
        self.proc = self.lab.popen(self.lab.host_ns, self.argv(), nsenter=True, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env)
        log.close()
        if wait_ready:
            eventually(lambda: self.http("/readyz") == "200" or self._died(), timeout=timeout, interval=0.1,
                       what="v6nat /readyz")
            if self._died():
                raise AssertionError(f"v6nat exited with {self.proc.returncode}:\n{self.log()}")
        return self

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def http(self, path: str) -> str:
        """The HTTP status code of GET path on the metrics listener ("000" when nothing answers)."""
        result = self.lab.exec(self.lab.host_ns, ["curl", "-s", "-m", "2", "-o", "/dev/null", "-w", "%{http_code}",
                                                  f"http://{self.listen}{path}"], check=False)
        return result.stdout.strip()

    def get(self, path: str) -> str:
        return self.lab.exec(self.lab.host_ns, ["curl", "-s", "-m", "5", f"http://{self.listen}{path}"]).stdout

    def send(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill9(self) -> None:
        assert self.proc is not None
        # nsenter execs v6nat, so the process itself is the one killed.
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout: float = 15) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Another v6nat subcommand in the same netns and pin path (status, flows, cleanup)."""
        return self.lab.exec(self.lab.host_ns, [V6NAT, *args], nsenter=True, check=check, timeout=120)


def lab_config(**kw: Any) -> LabConfig:
    """The e2e lab: Docker's own iptables/ip6tables and userland proxy off, so only v6nat forwards."""
    return LabConfig(iptables=False, ip6tables=False, userland_proxy=False, **kw)


def tcp_echo_server(port: int = 80) -> list[str]:
    """A container command answering every TCP connection with the peer address it saw."""
    return ["socat", f"TCP6-LISTEN:{port},fork,reuseaddr", "SYSTEM:echo $SOCAT_PEERADDR"]


def udp_echo_server(port: int = 53) -> list[str]:
    """A container command answering every UDP datagram with the peer address it saw."""
    return ["socat", f"UDP6-RECVFROM:{port},fork,reuseaddr", "SYSTEM:echo $SOCAT_PEERADDR"]


def udp_ask(lab: Lab, ns: str, addr: Any, port: int, timeout_s: float = 2) -> str:
    """Send one datagram from netns `ns` and return the answer ('' if none)."""
    result = lab.exec(ns, ["socat", f"-T{timeout_s:g}", "-", f"UDP6:[{addr}]:{port}"], input="who\n", check=False,
                      timeout=timeout_s + 10)
    return result.stdout.strip().strip("[]")

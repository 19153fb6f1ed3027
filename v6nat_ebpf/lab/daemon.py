"""`v6nat run` as a real process inside a lab's host namespace, for the demo, the tests and benchmarks.

`LabDaemon` starts the installed `v6nat` command with `nsenter --net` (so it
keeps the root mount namespace and sees the /sys/fs/bpf pins), waits until
/readyz answers 200, and can SIGTERM, SIGHUP, kill -9 and start it again. Its
output goes to a log file in the lab's state directory. `close()` (or leaving a
`with` block, or a start that fails) stops it and runs `v6nat cleanup` for its
pin path, so nothing of it outlives the lab: the netns takes the sysctl with
it, but the port reservation's state file in /run/v6nat would stay.

Imports: stdlib, lab.world and errors (the daemon runs as a separate process).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from v6nat_ebpf.errors import V6natError
from v6nat_ebpf.lab.world import Lab

V6NAT = str(Path(sys.executable).with_name("v6nat"))


def free_port() -> int:
    """A TCP port free on ::1 right now (the lab's host netns has its own, empty, port space anyway)."""
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        return int(s.getsockname()[1])


class LabDaemon:
    """One `v6nat run` in `lab`'s host netns, on the lab's public interface, Docker and pin path."""

    def __init__(self, lab: Lab, extra: Sequence[str] = (), env: dict[str, str] | None = None,
                 metrics_port: int | None = None, log_level: str = "debug", log_dir: Path | None = None) -> None:
        self.lab = lab
        self.extra = tuple(extra)
        self.log_level = log_level
        self.log_dir = log_dir  # where its log goes; default: the lab's state directory
        self.env = dict(env or {})
        self.metrics_port = metrics_port or free_port()
        self.proc: subprocess.Popen[Any] | None = None
        self.log_path: Path | None = None

    @property
    def listen(self) -> str:
        return f"[::1]:{self.metrics_port}"

    def argv(self) -> list[str]:
        # Host-local access attaches to a cgroup: never to the default (the root, where this machine's own
        # processes live); only where a test says, with --cgroup-path of a cgroup of its own.
        host_local = [] if {"--cgroup-path", "--host-local"} & set(self.extra) else ["--host-local", "off"]
        return [V6NAT, "run", "--public-iface", self.lab.public_iface, "--docker-host", self.lab.docker_url,
                "--pin-path", self.lab.pin_path, "--metrics-listen", self.listen, "--log-level", self.log_level,
                *host_local, *self.extra]

    def start(self, wait_ready: bool = True, timeout: float = 60) -> "LabDaemon":
        """Start `v6nat run`; with `wait_ready`, return once it is ready (if it never is: closed, then raised)."""
        self.log_path = Path(self.log_dir or self.lab.state_dir) / f"v6nat-{self.lab.name}-{time.monotonic_ns()}.log"
        with open(self.log_path, "wb") as log:
            env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), **self.env}
            self.proc = self.lab.popen(self.lab.host_ns, self.argv(), nsenter=True, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        if wait_ready:
            try:
                self.wait_ready(timeout)
            except BaseException:
                self.close()
                raise
        return self

    def close(self) -> None:
        """Stop the daemon if it runs (SIGTERM, SIGKILL if it lingers) and run `v6nat cleanup` for its
        pin path: filters, pins and the SNAT port reservation (sysctl and state file) go."""
        if self.running():
            try:
                self.stop()
            except subprocess.TimeoutExpired:
                self.kill9()
        result = self.cli("cleanup", "--pin-path", self.lab.pin_path, check=False)
        if result.returncode != 0:
            sys.stderr.write(f"v6nat cleanup --pin-path {self.lab.pin_path} failed: {result.stderr.strip()}\n")

    def __enter__(self) -> "LabDaemon":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.http("/readyz") != "200":
            if self.proc is not None and self.proc.poll() is not None:
                raise V6natError(f"v6nat exited with {self.proc.returncode}: {self.log()[-2000:]}")
            if time.monotonic() > deadline:
                raise V6natError(f"v6nat not ready within {timeout:.0f} s: {self.get('/readyz', check=False)}")
            time.sleep(0.1)

    def http(self, path: str) -> str:
        """The HTTP status code of GET `path` on the metrics listener ("000" when nothing answers)."""
        result = self.lab.exec(self.lab.host_ns, ["curl", "-s", "-m", "2", "-o", "/dev/null", "-w", "%{http_code}",
                                                  f"http://{self.listen}{path}"], check=False)
        return result.stdout.strip()

    def get(self, path: str, check: bool = True) -> str:
        return self.lab.exec(self.lab.host_ns, ["curl", "-s", "-m", "5", f"http://{self.listen}{path}"],
                             check=check).stdout

    def send(self, signum: int) -> None:
        if self.proc is None:
            raise V6natError("v6nat is not running")
        self.proc.send_signal(signum)

    def kill9(self) -> None:
        """SIGKILL the daemon itself (nsenter execs v6nat: the child is the daemon)."""
        self.send(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM and wait; the exit status."""
        self.send(signal.SIGTERM)
        assert self.proc is not None
        return self.proc.wait(timeout)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Another v6nat subcommand (status, flows, cleanup) in the same netns."""
        return self.lab.exec(self.lab.host_ns, [V6NAT, *args], nsenter=True, check=check, timeout=120)

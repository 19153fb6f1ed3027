"""Load generators run from the lab's client namespace, and their parsed results.

What lives here: `wrk` (new connections, keep-alive, paced latency), `iperf3`
(TCP streams, small-packet UDP), the host CPU counters from /proc/stat, and a
thread pool whose one thread lives in another network namespace (for probes
that must time themselves against `docker run`).

Every run is bounded: wrk and iperf3 get a duration and a subprocess timeout.
Must not import the lab, the systems under test or the report.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
# Slack on top of a tool's own duration before we kill it.
TOOL_TIMEOUT_SLACK_S = 30
USER_HZ = os.sysconf("SC_CLK_TCK")


class LoadError(RuntimeError):
    """A load tool failed or printed something we cannot read."""


def netns_argv(netns: str, argv: list[str]) -> list[str]:
    """argv prefixed to run in the named network namespace (only the net namespace)."""
    return ["nsenter", f"--net=/run/netns/{netns}", *argv]


def run_in_netns(netns: str, argv: list[str], timeout_s: float) -> str:
    """Run argv in `netns`, return stdout; LoadError with the tool's stderr on failure."""
    try:
        done = subprocess.run(netns_argv(netns, argv), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        raise LoadError(f"{argv[0]} did not finish within {timeout_s:.0f} s") from e
    if done.returncode != 0:
        raise LoadError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return done.stdout


# ---------------------------------------------------------------- wrk

@dataclass(frozen=True)
class WrkResult:
    """One wrk run: completed requests per second and the latency of each request."""

    requests_per_s: float
    requests: int
    socket_errors: int
    bad_status: int
    p50_ms: float
    p99_ms: float
    cpu_s: float  # wrk's own CPU time (user + system, softirq work done in its context included)


# wrk's Lua `done()` hook prints one JSON line, so no parsing of its human table.
_WRK_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"socket_errors":%d,"bad_status":%d,"p50_us":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _wrk_script(close: bool, delay_ms: int | None) -> str:
    lines = []
    if close:
        lines.append('wrk.headers["Connection"] = "close"')
    if delay_ms is not None:
        # wrk's delay() hook: each connection waits this long before its next
        # request, which paces the total rate to about connections*1000/delay_ms.
        lines.append(f"function delay() return {delay_ms} end")
    return "\n".join(lines) + _WRK_DONE


def wrk(netns: str, url: str, seconds: int, connections: int = 32, close: bool = False,
        rate_per_s: int | None = None) -> WrkResult:
    """Run `wrk -t1` against url from netns.

    close: send `Connection: close` so every request is a new TCP connection.
    rate_per_s: pace the connections to about this many requests/s (for latency
    below saturation); wrk's latency covers request write to response read.
    """
    delay_ms = None
    if rate_per_s is not None:
        delay_ms = max(1, round(connections * 1000 / rate_per_s))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-wrk-", delete=False) as f:
        f.write(_wrk_script(close, delay_ms))
        script = f.name
    try:
        out, cpu_s = _run_timed(
            netns_argv(netns, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "2s", "-s", script,
                               url]),
            seconds + TOOL_TIMEOUT_SLACK_S,
        )
    finally:
        os.unlink(script)
    line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise LoadError(f"wrk printed no result: {out[-300:]}")
    raw = json.loads(line.removeprefix("WRKJSON "))
    duration_s = raw["duration_us"] / 1e6
    good = raw["requests"] - raw["bad_status"]
    return WrkResult(
        requests_per_s=good / duration_s if duration_s > 0 else 0.0,
        requests=raw["requests"],
        socket_errors=raw["socket_errors"],
        bad_status=raw["bad_status"],
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        cpu_s=cpu_s,
    )


def _run_timed(argv: list[str], timeout_s: float) -> tuple[str, float]:
    """Run argv (nsenter execs the tool, so the child is the tool); stdout and the child's CPU seconds."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise LoadError(f"{argv[2]} did not finish within {timeout_s:.0f} s")
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise LoadError(f"{' '.join(argv[2:])} exited {proc.returncode}: {err.read().strip()[-500:]}")
        return out.read(), usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------- CPU counters

@dataclass(frozen=True)
class CpuTimes:
    """Machine-wide CPU time in seconds (all cores summed), from /proc/stat."""

    busy_s: float
    softirq_s: float
    total_s: float

    @staticmethod
    def now() -> CpuTimes:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal guest guest_nice;
        # guest time is already inside user, so only the first eight count.
        user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
        total = user + nice + system + idle + iowait + irq + softirq + steal
        return CpuTimes(
            busy_s=(total - idle - iowait) / USER_HZ,
            softirq_s=softirq / USER_HZ,
            total_s=total / USER_HZ,
        )

    def __sub__(self, earlier: CpuTimes) -> CpuTimes:
        return CpuTimes(self.busy_s - earlier.busy_s, self.softirq_s - earlier.softirq_s,
                        self.total_s - earlier.total_s)


# ---------------------------------------------------------------- iperf3

@dataclass(frozen=True)
class TcpStreamResult:
    """Bulk TCP through the path: received bit rate, and softirq cores spent meanwhile."""

    gbit_per_s: float
    softirq_cores: float
    retransmits: int


def iperf3_tcp(netns: str, host: str, port: int, seconds: float, streams: int) -> TcpStreamResult:
    """iperf3 client from netns to host:port, `streams` parallel TCP streams."""
    before, t0 = CpuTimes.now(), time.monotonic()
    out = run_in_netns(
        netns,
        ["iperf3", "-J", "-c", host, "-p", str(port), "-t", f"{seconds:g}", "-P", str(streams),
         "--connect-timeout", "3000"],
        seconds + TOOL_TIMEOUT_SLACK_S,
    )
    spent, wall = CpuTimes.now() - before, time.monotonic() - t0
    end = _iperf3_end(out)
    return TcpStreamResult(
        gbit_per_s=end["sum_received"]["bits_per_second"] / 1e9,
        softirq_cores=spent.softirq_s / wall,
        retransmits=int(end["sum_sent"].get("retransmits", 0)),
    )


@dataclass(frozen=True)
class UdpResult:
    """Small-packet UDP: datagrams the server received per second, and the loss."""

    received_pps: float
    sent_pps: float
    lost_fraction: float


def iperf3_udp(netns: str, host: str, port: int, seconds: float, payload_bytes: int = 64) -> UdpResult:
    """iperf3 -u from netns at an unlimited rate with small datagrams."""
    out = run_in_netns(
        netns,
        ["iperf3", "-J", "-u", "-c", host, "-p", str(port), "-t", f"{seconds:g}", "-l", str(payload_bytes),
         "-b", "0", "--connect-timeout", "3000"],
        seconds + TOOL_TIMEOUT_SLACK_S,
    )
    end = _iperf3_end(out)
    total = end["sum"]
    packets, lost = int(total["packets"]), int(total["lost_packets"])
    duration = float(total["seconds"])
    return UdpResult(
        received_pps=(packets - lost) / duration,
        sent_pps=packets / duration,
        lost_fraction=lost / packets if packets else 1.0,
    )


def _iperf3_end(out: str) -> dict:
    try:
        doc = json.loads(out)
    except json.JSONDecodeError as e:
        raise LoadError(f"iperf3 printed no JSON: {out[-300:]}") from e
    if "error" in doc:
        raise LoadError(f"iperf3: {doc['error']}")
    return doc["end"]


# ---------------------------------------------------------------- probes from another netns

def _enter_netns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        # setns() on a thread moves only that thread: the pool's single worker.
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def netns_pool(netns: str) -> ThreadPoolExecutor:
    """A one-thread executor whose thread sits in netns (sockets it opens live there)."""
    return ThreadPoolExecutor(max_workers=1, initializer=_enter_netns, initargs=(f"/run/netns/{netns}",))


def http_ok(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """True when GET / on [host]:port returns a 200 status line."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def wait_http_ok(host: str, ports: list[int], deadline_s: float, poll_s: float = 0.001) -> float | None:
    """Poll until every port answers 200 (ports already answering are not asked again).

    Returns time.monotonic() when the last one answered, None at the deadline.
    """
    pending = list(ports)
    stop = time.monotonic() + deadline_s
    while time.monotonic() < stop:
        pending = [p for p in pending if not http_ok(host, p)]
        if not pending:
            return time.monotonic()
        time.sleep(poll_s)
    return None


def wait_http_gone(host: str, port: int, deadline_s: float, poll_s: float = 0.005) -> float | None:
    """Poll until the port stops answering 200; time.monotonic() then, None at the deadline."""
    stop = time.monotonic() + deadline_s
    while time.monotonic() < stop:
        if not http_ok(host, port, timeout_s=0.05):
            return time.monotonic()
        time.sleep(poll_s)
    return None



"""Control-plane figures: how soon a new container's port answers, and programming many ports.

What lives here: timing `docker run` against the first HTTP 200 seen from the
client, for any system (the routed one gives the floor: nginx's own start), and
the v6nat-only figures (a container publishing thousands of ports, daemon and
map memory). Must not import run or report.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass

from bench.load import netns_pool, wait_http_gone, wait_http_ok
from bench.systems import DOCKER_PORTS_MAX, FILLER_BASE, FILLER_CMD, System, V6nat

log = logging.getLogger(__name__)

PROBE_HOST_PORT = 18080
ANSWER_DEADLINE_S = 10.0


@dataclass(frozen=True)
class RunToAnswer:
    """`docker run` returning -> first HTTP 200 from the client, over several runs (ms)."""

    runs: int
    failures: int
    median_ms: float
    p99_ms: float
    max_ms: float
    samples_ms: tuple[float, ...]


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]


def run_to_answer(system: System, runs: int) -> RunToAnswer:
    """Start a container publishing one port `runs` times; time from run's return to HTTP 200.

    Each container is removed before the next (removal is not timed). For the
    routed system the client asks the container's own address on port 80.
    """
    samples: list[float] = []
    failures = 0
    with netns_pool(system.lab.client_ns) as pool:
        for i in range(runs):
            container = system.run_container(f"probe{i}", {"80/tcp": PROBE_HOST_PORT}, FILLER_CMD,
                                             cap_add=["NET_ADMIN"])
            returned = time.monotonic()
            try:
                if system.name == "routed":
                    # From the attributes `run` already fetched: a reload here would be timed.
                    addr = container.attrs["NetworkSettings"]["Networks"][system.network.name]["GlobalIPv6Address"]
                    host, port = addr, 80
                else:
                    host, port = str(system.lab.host_addr), PROBE_HOST_PORT
                answered = pool.submit(wait_http_ok, host, [port], ANSWER_DEADLINE_S).result()
            finally:
                container.remove(force=True)
            # The next container may get the same address: start it only once
            # this one's port is gone, so a stale mapping cannot answer for it.
            if pool.submit(wait_http_gone, host, port, ANSWER_DEADLINE_S).result() is None:
                log.warning("%s: port %d still answers %.0f s after its container was removed", system.name, port,
                            ANSWER_DEADLINE_S)
            if answered is None:
                failures += 1
                log.warning("%s: probe container %d did not answer within %.0f s", system.name, i, ANSWER_DEADLINE_S)
                continue
            samples.append((answered - returned) * 1000)
    if not samples:
        return RunToAnswer(runs, failures, 0.0, 0.0, 0.0, ())
    return RunToAnswer(runs, failures, statistics.median(samples), percentile(samples, 99), max(samples),
                       tuple(round(s, 2) for s in samples))


@dataclass(frozen=True)
class Programming:
    """A container publishing many ports under v6nat (past DOCKER_PORTS_MAX, the rest written directly)."""

    ports: int
    docker_ports: int
    docker_run_s: float
    program_s: float
    direct_entries: int
    direct_write_s: float
    daemon_rss_bytes: int
    map_memlock_bytes: dict[str, int]


def program_ports(system: V6nat, n: int) -> Programming:
    """Publish min(n, DOCKER_PORTS_MAX) ports in one `docker run` and time until a sample answers;
    write the rest straight into the dnat map (timed); then read daemon and map memory."""
    system.publish(1)  # removes the level's filler container and direct entries (same host ports)
    docker_ports = min(n, DOCKER_PORTS_MAX)
    container, run_s, program_s = system.run_filler(range(FILLER_BASE, FILLER_BASE + docker_ports),
                                                    name=f"many{n}")
    try:
        started = time.monotonic()
        system.set_direct_entries(n - docker_ports)
        direct_s = time.monotonic() - started
        rss = system.daemon_rss_bytes()
        memlock = system.map_memlock_bytes()
    finally:
        container.remove(force=True)
        system.set_direct_entries(0)
    return Programming(n, docker_ports, run_s, program_s, n - docker_ports, direct_s, rss, memlock)

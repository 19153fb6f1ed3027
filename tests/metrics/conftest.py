"""Fixtures for the metrics tests: a real Datapath on a unique pin path, a netns to attach in, a real Prometheus."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import pytest
from pyroute2.netns import popns, pushns

from v6nat_ebpf.datapath import Datapath, DatapathConfig
from v6nat_ebpf.observe.exposition import V6natCollector
from v6nat_ebpf.observe.stats import ControlPlaneStats

from metrics_promql import exported_names

CONFIG = DatapathConfig(snat_port_min=61000, snat_port_max=65535, tcp_established_s=7440, tcp_transitory_s=240, udp_s=300, icmp_s=60)


@pytest.fixture
def pin_path() -> Iterator[str]:
    path = f"/sys/fs/bpf/v6nat-test-metrics-{secrets.token_hex(4)}"
    yield path
    Datapath.cleanup(path)


@pytest.fixture
def datapath(pin_path: str) -> Datapath:
    return Datapath.open(pin_path=pin_path, config=CONFIG)


@pytest.fixture
def exported(datapath: Datapath) -> set[str]:
    return exported_names(V6natCollector(datapath, ControlPlaneStats()))


@pytest.fixture
def netns() -> Iterator[str]:
    """A namespace of our own (loopback up) with a veth `pub0` (up, peer `pub0-peer`) to attach programs to."""
    name = f"v6m-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for argv in (["link", "set", "lo", "up"], ["link", "add", "pub0", "type", "veth", "peer", "name", "pub0-peer"], ["link", "set", "pub0", "up"]):
            subprocess.run(["ip", "-n", name, *argv], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


@pytest.fixture
def inside_netns(netns: str) -> Iterator[str]:
    """Run the test's thread (and the threads it starts, e.g. the metrics server) inside `netns`."""
    pushns(netns)
    try:
        yield netns
    finally:
        popns()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """A real Prometheus server (Debian's binary) scraping one target every second, with a temporary TSDB."""

    def __init__(self, target: str, workdir: Path, netns: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir()
        config = workdir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            f"scrape_configs:\n  - job_name: v6nat\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        argv = [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        if netns:
            argv = ["nsenter", f"--net=/run/netns/{netns}", *argv]
        self.log = workdir / "prometheus.log"
        self._proc = subprocess.Popen(argv, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        self._netns = netns
        self._wait_ready()

    def _get(self, path: str) -> bytes:
        if self._netns:  # the API listens inside the namespace: ask from there
            return subprocess.run(
                ["nsenter", f"--net=/run/netns/{self._netns}", "curl", "-sf", self.url + path],
                capture_output=True, check=True, timeout=10,
            ).stdout
        with urllib.request.urlopen(self.url + path, timeout=5) as reply:
            return reply.read()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.log.read_text()}")
            try:
                self._get("/-/ready")
                return
            except (OSError, subprocess.CalledProcessError):
                time.sleep(0.2)
        raise AssertionError(f"prometheus not ready in 30 s: {self.log.read_text()}")

    def query(self, promql: str) -> list[dict]:
        body = json.loads(self._get("/api/v1/query?" + urllib.parse.urlencode({"query": promql})))
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait_for(self, promql: str, expected: dict[tuple[tuple[str, str], ...], float], labels: tuple[str, ...], timeout_s: float = 20) -> None:
        """Poll until the query returns exactly `expected` (label values -> value); assert with the last answer."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = {
                tuple((label, r["metric"].get(label, "")) for label in labels): float(r["value"][1])
                for r in self.query(promql)
            }
            if got == expected or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert got == expected, f"{promql}: got {got}, expected {expected}"

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[..., Prometheus]]:
    started: list[Prometheus] = []

    def start(target: str, netns: str | None = None) -> Prometheus:
        prom = Prometheus(target, tmp_path / f"prom{len(started)}", netns)
        started.append(prom)
        return prom

    yield start
    for prom in started:
        prom.stop()

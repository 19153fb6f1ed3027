"""The metrics server's limits (issue 12, point 11): slow clients hold no worker, a flood of requests is
answered or refused quickly, and a flood of scrapes walks the conntrack tables at most about once per second.

Real sockets on loopback in the test's own namespace; every test bounded in connections and time."""

from __future__ import annotations

import json
import selectors
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Iterator

import pytest

from v6nat_ebpf.datapath import Datapath
from v6nat_ebpf.observe import server as server_module
from v6nat_ebpf.observe.server import MetricsServer, start_metrics_server
from v6nat_ebpf.observe.stats import ControlPlaneStats


class CountingReader:
    """The datapath as metrics read it, counting (and optionally slowing) the conntrack walks."""

    def __init__(self, dp: Datapath, walk_delay_s: float = 0.0) -> None:
        self._dp = dp
        self._delay = walk_delay_s
        self._lock = threading.Lock()
        self.walks: list[float] = []  # time.monotonic() of each walk

    def conntrack_summary(self) -> Any:
        with self._lock:
            self.walks.append(time.monotonic())
        time.sleep(self._delay)
        return self._dp.conntrack_summary()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dp, name)


def timed_get(url: str, timeout_s: float = 5.0) -> tuple[int, float, bytes]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            status, body = reply.status, reply.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    return status, time.monotonic() - started, body


def connect(server: MetricsServer) -> socket.socket:
    return socket.create_connection((server.address, server.port), timeout=10)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_all_at_once(conns: list[socket.socket], started: float, timeout_s: float = 10.0) -> list[tuple[bytes, float]]:
    """Each connection's status line and when its first byte came (seconds after `started`), read side by side."""
    sel = selectors.DefaultSelector()
    got: dict[socket.socket, tuple[bytearray, float]] = {}
    for c in conns:
        sel.register(c, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    open_ = len(conns)
    while open_ and time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            c = key.fileobj
            data, first = got.setdefault(c, (bytearray(), time.monotonic() - started))
            try:
                chunk = c.recv(65536)
            except ConnectionResetError:
                chunk = b""
            data += chunk
            if not chunk:
                sel.unregister(c)
                c.close()
                open_ -= 1
    sel.close()
    return [(bytes(got.get(c, (b"", 0.0))[0]).split(b"\r\n", 1)[0], got.get(c, (b"", timeout_s))[1]) for c in conns]


@pytest.fixture
def reader(inside_netns: str, datapath: Datapath) -> CountingReader:
    return CountingReader(datapath)


@pytest.fixture
def served(reader: CountingReader) -> Iterator[MetricsServer]:
    server = start_metrics_server("[::1]:0", reader, ControlPlaneStats())
    try:
        yield server
    finally:
        server.shutdown()


def test_slow_clients_do_not_stop_healthz_and_metrics(served: MetricsServer) -> None:
    """Twice MAX_READING connections that send half a request and drip one byte a second (slowloris), plus
    connections that send nothing, reopened as the server closes them, for the whole test: a well-behaved
    client's /healthz and /metrics still answer, each in well under a second."""
    stop = threading.Event()
    opened = [0]

    def slowloris() -> None:
        conns: list[socket.socket] = []
        try:
            while not stop.is_set():
                while len(conns) < 2 * server_module.MAX_READING and opened[0] < 2000:
                    try:
                        c = connect(served)
                    except OSError:
                        break
                    c.setblocking(False)
                    if len(conns) % 2:  # half of them never send a byte
                        c.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                    conns.append(c)
                    opened[0] += 1
                for c in list(conns):
                    try:
                        c.send(b"X")
                        if c.recv(1024) == b"":  # closed on us: reopen another
                            raise ConnectionResetError
                    except BlockingIOError:
                        pass
                    except OSError:
                        c.close()
                        conns.remove(c)
                stop.wait(1.0)
        finally:
            for c in conns:
                c.close()

    attacker = threading.Thread(target=slowloris, daemon=True)
    attacker.start()
    try:
        time.sleep(1.0)  # the attack is in place
        assert opened[0] >= 2 * server_module.MAX_READING
        for _ in range(5):
            for path, expected in (("/healthz", b"ok\n"), ("/metrics", b"v6nat_build_info")):
                status, took, body = timed_get(served.url + path)
                assert status == 200 and expected in body, (path, status, body[:200])
                assert took < 1.0, f"{path} took {took:.2f} s under a slowloris"
            time.sleep(0.3)
    finally:
        stop.set()
        attacker.join(10)
    assert opened[0] <= 2000


def test_a_request_dripped_byte_by_byte_is_cut_after_the_request_timeout(served: MetricsServer) -> None:
    """The request timeout is for the whole request line and headers, not per read: a client that sends a
    byte every 0.5 s is answered 408 and closed after REQUEST_TIMEOUT_S."""
    conn = connect(served)
    started = time.monotonic()
    request = b"GET /metrics HTTP/1.1\r\n" + b"X-Slow: " + b"a" * 100
    answer = b""
    try:
        for byte in request:
            conn.send(bytes([byte]))
            conn.settimeout(0.5)
            try:
                answer = conn.recv(1024)
                break
            except TimeoutError:
                continue
            finally:
                conn.settimeout(10)
    except (BrokenPipeError, ConnectionResetError):
        pass
    took = time.monotonic() - started
    conn.close()
    assert answer.startswith(b"HTTP/1.0 408"), answer
    assert server_module.REQUEST_TIMEOUT_S - 0.5 <= took <= server_module.REQUEST_TIMEOUT_S + 1.5, took


def test_oversized_request_is_refused(served: MetricsServer) -> None:
    with connect(served) as conn:
        try:
            conn.sendall(b"GET /metrics HTTP/1.1\r\n" + b"X-Big: " + b"a" * (2 * server_module.MAX_REQUEST_BYTES))
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert read_all(conn).startswith(b"HTTP/1.0 431")


def test_a_flood_of_requests_gets_answers_or_quick_503s_from_a_bounded_pool(inside_netns: str, datapath: Datapath) -> None:
    """While every worker waits on a slow map read (0.5 s), 80 complete requests arrive at once: WORKERS are
    being answered, BACKLOG wait and get their answer, the rest get 503 at once; never more server threads."""
    reader = CountingReader(datapath, walk_delay_s=0.5)
    server = start_metrics_server("[::1]:0", reader, ControlPlaneStats())
    try:
        conns = [connect(server) for _ in range(80)]
        started = time.monotonic()
        for c in conns:
            c.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        answers = read_all_at_once(conns, started)
        threads = [t.name for t in threading.enumerate() if t.name.startswith("v6nat-metrics")]
    finally:
        server.shutdown()
    codes = [line for line, _ in answers]
    ok, busy = codes.count(b"HTTP/1.0 200 OK"), codes.count(b"HTTP/1.0 503 Service Unavailable")
    assert ok + busy == 80, codes
    assert server_module.WORKERS <= ok <= server_module.WORKERS + server_module.BACKLOG + 4, (ok, busy)
    assert busy >= 80 - server_module.WORKERS - server_module.BACKLOG - 4, (ok, busy)
    assert all(took < 0.4 for line, took in answers if b"503" in line), "503s come at once, not after the read"
    assert max(took for _, took in answers) < 3.0
    assert len(reader.walks) == 1, "80 scrapes within a second: one walk"
    assert len(threads) == 1 + server_module.WORKERS, threads


def test_a_flood_of_scrapes_walks_conntrack_about_once_a_second(reader: CountingReader, served: MetricsServer) -> None:
    """8 clients scrape /metrics and /status as fast as they can for 3 s: hundreds of answers, at most one
    conntrack walk per second; a change shows within SNAPSHOT_MAX_AGE_S."""
    stop = time.monotonic() + 3.0
    answered = [0] * 8
    errors: list[str] = []

    def scrape(i: int) -> None:
        path = "/status" if i % 2 else "/metrics"
        while time.monotonic() < stop:
            status, _, body = timed_get(served.url + path)
            if status != 200 or (path == "/status" and "conntrack_flows" not in json.loads(body)):
                errors.append(f"{path}: {status}")
            answered[i] += 1

    first = len(reader.walks)
    clients = [threading.Thread(target=scrape, args=(i,)) for i in range(8)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(10)
    walks = reader.walks[first:]
    assert not errors, errors[:5]
    assert sum(answered) >= 100, answered
    assert 1 <= len(walks) <= 4, f"{len(walks)} walks for {sum(answered)} scrapes in 3 s"
    gaps = [b - a for a, b in zip(walks, walks[1:])]
    assert all(gap >= server_module.SNAPSHOT_MAX_AGE_S for gap in gaps), gaps
    assert served.cache.snapshots_taken == len(reader.walks)

    time.sleep(server_module.SNAPSHOT_MAX_AGE_S)
    timed_get(served.url + "/metrics")
    assert len(reader.walks) == len(walks) + first + 1, "a stale snapshot is read again"

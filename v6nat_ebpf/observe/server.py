"""The daemon's HTTP server: `/metrics`, `/healthz`, `/readyz` and `/status` (the snapshot as JSON),
and `fetch_status`, its client (`v6nat status`).

A local user may connect as often and as slowly as they like, so what a client can cost is bounded
(docs/metrics.md, "Limits of the server"):

- One thread (the selector loop) accepts connections and reads requests without blocking; a client has
  `REQUEST_TIMEOUT_S` in all to send its request line and headers (`MAX_REQUEST_BYTES` at most), at most
  `MAX_READING` connections are being read at once (a new one closes the oldest), so slow clients hold
  no thread.
- Complete requests go to `WORKERS` threads through a queue of `BACKLOG`; past it the answer is a 503 at once.
  A worker writes its reply with a `WRITE_TIMEOUT_S` socket timeout (`sendall`: the whole body).
- `ScrapeCache`: the snapshot (the O(flows) conntrack walk) is read at most once per `SNAPSHOT_MAX_AGE_S`
  and shared by every `/metrics` and `/status` in that time, with their rendered bodies.

Imports: stdlib, prometheus_client (content negotiation), v6nat_ebpf.config (the listen address), errors
and the other observe modules.
"""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import queue
import re
import selectors
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable

from prometheus_client.exposition import choose_encoder

from v6nat_ebpf.config import parse_listen
from v6nat_ebpf.errors import V6natError
from v6nat_ebpf.observe.exposition import render_metrics
from v6nat_ebpf.observe.snapshot import DatapathReader, Snapshot, readiness, take_snapshot
from v6nat_ebpf.observe.stats import ControlPlaneStats

log = logging.getLogger(__name__)

WORKERS = 4  # requests answered at once
BACKLOG = 16  # complete requests waiting for a worker; more get 503
MAX_READING = 64  # connections still sending their request; one more closes the oldest
REQUEST_TIMEOUT_S = 5.0  # to send the request line and headers, in all (not per read)
MAX_REQUEST_BYTES = 16384  # request line and headers
WRITE_TIMEOUT_S = 5.0  # to write the reply (headers, then body: each one sendall)
SNAPSHOT_MAX_AGE_S = 1.0  # /metrics and /status within this share one snapshot
MAX_BODIES = 4  # rendered bodies kept per snapshot (/status, /metrics by negotiated content type)

_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")


def fetch_status(listen: str, timeout_s: float = 2.0) -> dict[str, Any]:
    """GET /status from the daemon serving on `listen`; V6natError (one line) when it does not answer."""
    host, port = parse_listen(listen)
    url = f"http://[{host}]:{port}/status" if ":" in host else f"http://{host}:{port}/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return json.load(reply)
    except (OSError, ValueError) as e:
        raise V6natError(f"no v6nat daemon answering on {listen}: {getattr(e, 'reason', e)}") from None


class ScrapeCache:
    """`take_snapshot` at most once per `max_age_s`, shared: a caller that finds it stale reads the maps
    while the others wait for that read (one walk of the conntrack tables however many scrape at once).
    The rendered bodies of that snapshot are kept too (a few, by key), so a flood of scrapes costs one
    render per second and form. `max_age_s=0`: a new snapshot every time."""

    def __init__(self, dp: DatapathReader, stats: ControlPlaneStats, max_age_s: float = SNAPSHOT_MAX_AGE_S) -> None:
        self._dp = dp
        self._stats = stats
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._read_at = 0.0  # time.monotonic() when the read ended: reads start at least max_age_s apart
        self._bodies: dict[str, tuple[bytes, str]] = {}
        self.snapshots_taken = 0

    def body(self, key: str, render: Callable[[Snapshot], tuple[bytes, str]]) -> tuple[bytes, str]:
        """(body, content type) of `render(snapshot)` for the current snapshot; `key` names the rendering."""
        with self._lock:
            if self._snapshot is None or time.monotonic() - self._read_at >= self._max_age_s:
                self._snapshot = take_snapshot(self._dp, self._stats)
                self._read_at = time.monotonic()
                self._bodies = {}
                self.snapshots_taken += 1
            if key in self._bodies:
                return self._bodies[key]
            rendered = render(self._snapshot)
            if self._max_age_s > 0 and len(self._bodies) < MAX_BODIES:
                self._bodies[key] = rendered
            return rendered


class MetricsServer:
    """The HTTP server of one daemon; `port` is the bound port (useful with port 0), `shutdown()` stops it."""

    def __init__(self, listener: socket.socket, handler: type[BaseHTTPRequestHandler], cache: ScrapeCache) -> None:
        self._listener = listener
        self._handler = handler
        self.cache = cache
        self.address: str = listener.getsockname()[0]
        self.port: int = listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._requests: queue.Queue[tuple[socket.socket, Any, bytes] | None] = queue.Queue()
        self._loop = threading.Thread(target=self._serve, name="v6nat-metrics", daemon=True)
        self._workers = [threading.Thread(target=self._work, name=f"v6nat-metrics-{i}", daemon=True) for i in range(WORKERS)]

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        for thread in (self._loop, *self._workers):
            thread.start()

    def shutdown(self) -> None:
        self._wake_w.send(b"x")
        self._loop.join()
        self._listener.close()
        while True:  # requests not started yet are dropped
            try:
                item = self._requests.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].close()
        for _ in self._workers:
            self._requests.put(None)
        deadline = time.monotonic() + 2 * WRITE_TIMEOUT_S
        for thread in self._workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._wake_r.close()
        self._wake_w.close()

    # The selector loop: accepts, reads requests, hands complete ones to the workers.

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        reading: dict[socket.socket, _Reading] = {}  # oldest first
        try:
            while True:
                now = time.monotonic()
                wait = min((r.deadline for r in reading.values()), default=now + 60) - now
                for key, _ in sel.select(max(0.0, wait)):
                    if key.fileobj is self._wake_r:
                        return
                    if key.fileobj is self._listener:
                        self._accept(sel, reading)
                    elif key.fileobj in reading:  # not closed by an _accept of this round
                        self._read(sel, reading, key.fileobj)  # type: ignore[arg-type]
                now = time.monotonic()
                for conn in [c for c, r in reading.items() if r.deadline <= now]:
                    self._drop(sel, reading, conn, b"408 Request Timeout")
        except Exception:  # never expected: log it, the daemon runs on without metrics
            log.exception("metrics server loop")
        finally:
            for conn in reading:
                conn.close()
            sel.close()

    def _accept(self, sel: selectors.BaseSelector, reading: dict[socket.socket, _Reading]) -> None:
        for _ in range(MAX_READING):
            try:
                conn, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and the like: try again at the next select
                log.warning("metrics server: accept: %s", e)
                return
            if len(reading) >= MAX_READING:
                self._drop(sel, reading, next(iter(reading)), b"503 Service Unavailable")
            conn.setblocking(False)
            sel.register(conn, selectors.EVENT_READ)
            reading[conn] = _Reading(peer, time.monotonic() + REQUEST_TIMEOUT_S)

    def _read(self, sel: selectors.BaseSelector, reading: dict[socket.socket, _Reading], conn: socket.socket) -> None:
        try:
            data = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sel, reading, conn, None)
            return
        r = reading[conn]
        r.head += data
        if _END_OF_HEAD.search(r.head, max(0, len(r.head) - len(data) - 3)):
            if self._requests.qsize() >= BACKLOG:
                self._drop(sel, reading, conn, b"503 Service Unavailable")
                return
            sel.unregister(conn)
            del reading[conn]
            conn.setblocking(True)
            self._requests.put((conn, r.peer, bytes(r.head)))
        elif len(r.head) > MAX_REQUEST_BYTES:
            self._drop(sel, reading, conn, b"431 Request Header Fields Too Large")

    @staticmethod
    def _drop(sel: selectors.BaseSelector, reading: dict[socket.socket, _Reading], conn: socket.socket, status: bytes | None) -> None:
        """Stop reading `conn`: a short answer if it has room in the socket buffer (never waits), then close."""
        sel.unregister(conn)
        del reading[conn]
        if status is not None:
            try:
                conn.send(b"HTTP/1.0 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                conn.shutdown(socket.SHUT_WR)
                for _ in range(4):  # what the client sent and we did not read would make close() a reset
                    if not conn.recv(65536):
                        break
            except OSError:
                pass
        conn.close()

    def _work(self) -> None:
        while (item := self._requests.get()) is not None:
            conn, peer, head = item
            try:
                self._handler((conn, head), peer, self)  # type: ignore[arg-type]
            except Exception as e:  # a client that went away, a reply that timed out
                log.debug("metrics request from %s: %s", peer, e)
            finally:
                try:
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                conn.close()


@dataclass
class _Reading:
    peer: Any
    deadline: float
    head: bytearray = field(default_factory=bytearray)


class _SendAll(io.RawIOBase):
    """The reply side of a connection: every write is one `sendall` (whose timeout bounds the whole write)."""

    def __init__(self, conn: socket.socket) -> None:
        self._conn = conn

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self._conn.sendall(b)
        return len(b)


def start_metrics_server(
    listen: str, dp: DatapathReader, stats: ControlPlaneStats, snapshot_max_age_s: float = SNAPSHOT_MAX_AGE_S
) -> MetricsServer:
    """Serve /metrics, /healthz, /readyz and /status on `listen` ("[::1]:9661") from threads; returns at once."""
    host, port = parse_listen(listen)
    if not ipaddress.ip_address(host).is_loopback:
        log.warning("metrics listen on non-loopback address %s: exposed beyond this host by explicit choice", listen)
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
    except OSError as e:
        listener.close()
        raise V6natError(f"--metrics-listen {listen}: {e.strerror}") from None
    listener.setblocking(False)
    cache = ScrapeCache(dp, stats, snapshot_max_age_s)
    server = MetricsServer(listener, _handler_class(dp, stats, cache), cache)
    server.start()
    log.info("metrics on %s/metrics", server.url)
    return server


def _handler_class(dp: DatapathReader, stats: ControlPlaneStats, cache: ScrapeCache) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = WRITE_TIMEOUT_S

        def setup(self) -> None:
            # The request line and headers were read by the selector loop: `request` is (socket, those bytes).
            self.connection, head = self.request
            self.connection.settimeout(self.timeout)
            self.rfile = io.BytesIO(head)
            self.wfile = _SendAll(self.connection)

        def do_GET(self) -> None:
            try:
                self._route(self.path.split("?", 1)[0])
            except Exception as e:  # a failed map read must answer 500, not kill the worker
                log.exception("serving %s", self.path)
                self._reply(500, "text/plain; charset=utf-8", f"error: {e}\n".encode())

        def _route(self, path: str) -> None:
            if path == "/metrics":
                accept = self.headers.get("Accept", "")
                form = choose_encoder(accept)[1]  # the content type names the encoder: one body per form
                body, content_type = cache.body(form, lambda snap: render_metrics(snap, accept))
                self._reply(200, content_type, body)
            elif path == "/healthz":
                self._reply(200, "text/plain; charset=utf-8", b"ok\n")
            elif path == "/readyz":
                ready = readiness(stats.view(), dp.attached())
                self._reply(200 if ready.ready else 503, "text/plain; charset=utf-8", ready.reason.encode() + b"\n")
            elif path == "/status":
                body, content_type = cache.body("status", lambda snap: (json.dumps(snap.as_dict(), indent=2).encode(), "application/json"))
                self._reply(200, content_type, body)
            else:
                self._reply(404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz, /readyz, /status\n")

        def _reply(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    return Handler

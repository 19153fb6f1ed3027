"""The daemon's HTTP server: `/metrics`, `/healthz`, `/readyz` and `/status` (the snapshot as JSON),
and `fetch_status`, its client (`v6nat status`).

Imports: stdlib, v6nat_ebpf.config (the listen address), errors and the other observe modules.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socket import AF_INET, AF_INET6
from typing import Any

from v6nat_ebpf.config import parse_listen
from v6nat_ebpf.errors import V6natError
from v6nat_ebpf.observe.exposition import render_metrics
from v6nat_ebpf.observe.snapshot import DatapathReader, readiness, take_snapshot
from v6nat_ebpf.observe.stats import ControlPlaneStats

log = logging.getLogger(__name__)


def fetch_status(listen: str, timeout_s: float = 2.0) -> dict[str, Any]:
    """GET /status from the daemon serving on `listen`; V6natError (one line) when it does not answer."""
    host, port = parse_listen(listen)
    url = f"http://[{host}]:{port}/status" if ":" in host else f"http://{host}:{port}/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return json.load(reply)
    except (OSError, ValueError) as e:
        raise V6natError(f"no v6nat daemon answering on {listen}: {getattr(e, 'reason', e)}") from None


class MetricsServer:
    """The HTTP server of one daemon; `port` is the bound port (useful with port 0), `shutdown()` stops it."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self.address: str = httpd.server_address[0]
        self.port: int = httpd.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"

    def shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def start_metrics_server(listen: str, dp: DatapathReader, stats: ControlPlaneStats) -> MetricsServer:
    """Serve /metrics, /healthz, /readyz and /status on `listen` ("[::1]:9661") from a thread; returns at once."""
    host, port = parse_listen(listen)
    if not ipaddress.ip_address(host).is_loopback:
        log.warning("metrics listen on non-loopback address %s: exposed beyond this host by explicit choice", listen)
    handler = _handler_class(dp, stats)
    server_class = type("_MetricsHTTPServer", (ThreadingHTTPServer,), {"address_family": AF_INET6 if ":" in host else AF_INET, "daemon_threads": True})
    try:
        httpd = server_class((host, port), handler)
    except OSError as e:
        raise V6natError(f"--metrics-listen {listen}: {e.strerror}") from None
    thread = threading.Thread(target=httpd.serve_forever, name="v6nat-metrics", daemon=True)
    thread.start()
    server = MetricsServer(httpd, thread)
    log.info("metrics on %s/metrics", server.url)
    return server


def _handler_class(dp: DatapathReader, stats: ControlPlaneStats) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            try:
                self._route(self.path.split("?", 1)[0])
            except Exception as e:  # a failed map read must answer 500, not kill the server thread
                log.exception("serving %s", self.path)
                self._reply(500, "text/plain; charset=utf-8", f"error: {e}\n".encode())

        def _route(self, path: str) -> None:
            if path == "/metrics":
                body, content_type = render_metrics(take_snapshot(dp, stats), self.headers.get("Accept", ""))
                self._reply(200, content_type, body)
            elif path == "/healthz":
                self._reply(200, "text/plain; charset=utf-8", b"ok\n")
            elif path == "/readyz":
                ready = readiness(stats.view(), dp.attached())
                self._reply(200 if ready.ready else 503, "text/plain; charset=utf-8", ready.reason.encode() + b"\n")
            elif path == "/status":
                body = json.dumps(take_snapshot(dp, stats).as_dict(), indent=2).encode()
                self._reply(200, "application/json", body)
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

"""The few Docker Engine API calls the daemon makes, over http.client: ping, version and info (its
double-NAT check), list and inspect containers and networks, and the event stream.

Why not the Docker SDK: importing it (requests, urllib3, ssl, charset_normalizer) costs the
long-lived daemon about 11 MiB of its memory, for a few GET requests. `v6nat check --port`, `v6nat
trace` and the lab still use the SDK. URLs: unix:///path, tcp://host:port and http://host:port (plain HTTP, as the
SDK does without TLS settings); anything else is a one-line error.

Imports: stdlib, errors.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any, Iterator
from urllib.parse import quote, urlencode, urlparse

from v6nat_ebpf.errors import V6natError

# Version negotiation is not needed: every call here exists unchanged since API 1.24 (Docker 1.12).
API_VERSION = "v1.24"


class DockerApiError(Exception):
    """Docker answered with an error status (or not as expected)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Docker API {status}: {message}")
        self.status = status


class NotFound(DockerApiError):
    """404: the container or network is gone."""


# What talking to Docker may raise: an answer that is an error, a broken or refused connection.
ERRORS = (DockerApiError, http.client.HTTPException, OSError, ValueError)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class EventStream:
    """Docker's events, one decoded dict at a time; `close()` from another thread ends the iteration."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._response = response

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            try:
                line = self._response.readline()
            except (AttributeError, ValueError):  # closed under the reader (http.client drops its fp)
                return
            if not line:
                return
            if line.strip():
                yield json.loads(line)

    def close(self) -> None:
        sock = self._conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in readline()
            except OSError:
                pass
        self._conn.close()


class DockerApi:
    """One connection to one dockerd (not thread-safe: one per thread, as the SDK's clients)."""

    def __init__(self, url: str, timeout: float | None = 10.0) -> None:
        self.url = url
        self.timeout = timeout
        parsed = urlparse(url)
        if parsed.scheme == "unix":
            self._socket_path = parsed.path
        elif parsed.scheme in ("tcp", "http") and parsed.hostname:
            self._socket_path = ""
            self._host, self._port = parsed.hostname, parsed.port or 2375
        else:
            raise V6natError(f"Docker URL {url!r}: only unix://PATH, tcp://HOST:PORT and http://HOST:PORT are supported")
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self._socket_path:
            return _UnixConnection(self._socket_path, timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _request(self, conn: http.client.HTTPConnection, path: str,
                 params: dict[str, str] | None = None) -> http.client.HTTPResponse:
        target = f"/{API_VERSION}{path}" + (f"?{urlencode(params)}" if params else "")
        conn.request("GET", target, headers={"Host": "docker"})
        response = conn.getresponse()
        if response.status >= 400:
            body = response.read().decode(errors="replace")
            try:
                message = json.loads(body).get("message", body)
            except ValueError:
                message = body
            raise (NotFound if response.status == 404 else DockerApiError)(response.status, message.strip())
        return response

    def _get_raw(self, path: str, params: dict[str, str] | None = None) -> bytes:
        if self._conn is None:
            self._conn = self._connection(self.timeout)
        try:
            return self._request(self._conn, path, params).read()
        except (http.client.HTTPException, OSError):
            self.close()  # a broken keep-alive connection is not reused
            raise

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        return json.loads(self._get_raw(path, params))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def ping(self) -> None:
        self._get_raw("/_ping")  # "OK", not JSON

    def version(self) -> dict[str, Any]:
        return self._get("/version")

    def info(self) -> dict[str, Any]:
        return self._get("/info")

    def networks(self) -> list[dict[str, Any]]:
        return self._get("/networks")

    def containers(self) -> list[dict[str, Any]]:
        """The running containers (summaries)."""
        return self._get("/containers/json")

    def inspect_container(self, ident: str) -> dict[str, Any]:
        return self._get(f"/containers/{quote(ident, safe='')}/json")

    def inspect_network(self, ident: str) -> dict[str, Any]:
        return self._get(f"/networks/{quote(ident, safe='')}")

    def events(self, filters: dict[str, list[str]]) -> EventStream:
        """The event stream from now on, on a connection of its own without a read timeout."""
        conn = self._connection(None)
        try:
            return EventStream(conn, self._request(conn, "/events", {"filters": json.dumps(filters)}))
        except BaseException:
            conn.close()
            raise

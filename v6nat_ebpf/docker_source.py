"""Docker -> model: a cache of inspect data kept current by the event stream.

Lives here: `DockerSource`, which fetches `docker network inspect` and
`docker container inspect` data through Docker's API (docker_api), follows the event
stream in a thread (reconnecting with exponential backoff; every reconnect
is a full resync), and hands the cached dicts to `model` on request. It
decides nothing about Docker semantics: that is `model`'s job. The cache holds
only the part of each document that model and policy read (model's
`*_inspect_subset`): a container of thousands of published ports would
otherwise keep several times that in the daemon's memory (issue 15).

Docker being down never raises out of here: the source logs, waits and
retries, and the last known state stays in force.

Must not import: pyroute2, bcc, datapath, reconciler.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable

from v6nat_ebpf.config import docker_url
from v6nat_ebpf.docker_api import ERRORS as DOCKER_ERRORS
from v6nat_ebpf.docker_api import DockerApi, NotFound
from v6nat_ebpf.model import DockerState, container_inspect_subset, docker_state_from_inspect, network_inspect_subset
from v6nat_ebpf.policy import Declarations, declarations_from_inspect

log = logging.getLogger(__name__)

# Container actions that can change a container's addresses or published ports.
CONTAINER_ACTIONS = {"start", "restart", "die", "stop", "destroy", "rename", "update", "pause", "unpause"}
NETWORK_ACTIONS = {"create", "destroy", "remove", "connect", "disconnect"}

EventCallback = Callable[[str], None]


class DockerSource:
    """Mirror of one dockerd's networks and running containers.

    `on_event(kind)` is called from the event thread after the cache changed;
    kind is one of "resync", "container_<action>", "network_<action>".
    `on_connection(up)` reports the event stream's state.
    """

    def __init__(self, url: str | None, on_event: EventCallback,
                 on_connection: Callable[[bool], None] | None = None,
                 backoff_initial_s: float = 0.05, backoff_max_s: float = 1.0, timeout_s: float = 10.0) -> None:
        self.url = docker_url(url)  # None: $DOCKER_HOST, else the default socket
        self._on_event = on_event
        self._on_connection = on_connection or (lambda up: None)
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._timeout_s = timeout_s
        self._lock = threading.Lock()  # guards the cache and the inspect client
        self._networks: dict[str, dict[str, Any]] = {}
        self._containers: dict[str, dict[str, Any]] = {}
        self._known = False
        DockerApi(self.url)  # an unsupported URL is a one-line error now, not in the event thread
        self._client: DockerApi | None = None
        self._stream: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ state

    @property
    def known(self) -> bool:
        """True once a full inspect succeeded (the cache then reflects Docker, possibly slightly old)."""
        return self._known

    def state(self) -> DockerState:
        return self.state_and_policy()[0]

    def state_and_policy(self) -> tuple[DockerState, Declarations]:
        """The state and the source-policy declarations (labels, network options), from one read of the
        cache: a mapping never comes without its container's declarations."""
        with self._lock:
            networks = list(self._networks.values())
            containers = list(self._containers.values())
        return docker_state_from_inspect(networks, containers), declarations_from_inspect(networks, containers)

    # ------------------------------------------------------------------ thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="docker-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except DOCKER_ERRORS:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        delay = self._backoff_initial_s
        down_since: float | None = None
        last_report = 0.0
        while not self._stop.is_set():
            try:
                self._follow_events()
                delay = self._backoff_initial_s
            except DOCKER_ERRORS as exc:
                self._on_connection(False)
                now = time.monotonic()
                if down_since is None:
                    down_since = last_report = now
                    log.warning("Docker at %s unreachable (%s); retrying, published ports keep serving",
                                self.url, _one_line(exc))
                elif now - last_report >= 30:
                    last_report = now
                    log.info("still waiting for Docker at %s (%.0f s)", self.url, now - down_since)
                if self._stop.wait(delay):
                    break
                delay = min(delay * 2, self._backoff_max_s)
                continue
            down_since = None

    def _connect(self) -> DockerApi:
        with self._lock:
            if self._client is None:
                self._client = DockerApi(self.url, timeout=self._timeout_s)
            return self._client

    def _drop_client(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = None

    def _follow_events(self) -> None:
        """Open the stream, resync, then apply events until the stream ends (raises on errors)."""
        client = self._connect()
        try:
            client.ping()
            # Opened before the full inspect, so nothing that happens during it is missed.
            self._stream = DockerApi(self.url).events(filters={"type": ["container", "network"]})
            try:
                self.resync()
                self._on_connection(True)
                log.info("following Docker events at %s", self.url)
                for event in self._stream:
                    if self._stop.is_set():
                        return
                    self._handle(event)
            finally:
                self._stream.close()
                self._stream = None
            if not self._stop.is_set():
                raise ConnectionError("Docker event stream ended")
        except DOCKER_ERRORS:
            self._drop_client()
            raise

    # ------------------------------------------------------------------ inspect

    def resync(self) -> bool:
        """Replace the cache with a full inspect; False (and the cache kept) when Docker does not answer."""
        try:
            client = self._connect()
            with self._lock:
                networks = {}
                for n in client.networks():
                    networks[n["Id"]] = _unchanged_or(self._networks.get(n["Id"]), network_inspect_subset(n))
                containers = {}
                for summary in client.containers():
                    data = _kept_inspect(client.inspect_container, summary["Id"], container_inspect_subset)
                    if data is not None:
                        containers[data["Id"]] = _unchanged_or(self._containers.get(data["Id"]), data)
                self._networks, self._containers = networks, containers
                self._known = True
        except DOCKER_ERRORS as exc:
            log.warning("full resync with Docker failed: %s", _one_line(exc))
            self._drop_client()
            return False
        self._on_event("resync")
        return True

    def _handle(self, event: dict[str, Any]) -> None:
        kind, action = event.get("Type"), (event.get("Action") or "").split(":")[0]
        actor = event.get("Actor") or {}
        if kind == "container" and action in CONTAINER_ACTIONS:
            self._refresh_container(actor.get("ID") or event.get("id", ""))
        elif kind == "network" and action in NETWORK_ACTIONS:
            self._refresh_network(actor.get("ID", ""))
            container_id = (actor.get("Attributes") or {}).get("container")
            if container_id:
                self._refresh_container(container_id)
        else:
            return
        log.debug("docker event %s %s %s", kind, action, (actor.get("Attributes") or {}).get("name", ""))
        self._on_event(f"{kind}_{'destroy' if action == 'remove' else action}")

    def _refresh_container(self, container_id: str) -> None:
        client = self._connect()
        with self._lock:
            data = _kept_inspect(client.inspect_container, container_id, container_inspect_subset)
            if data is None or not (data.get("State") or {}).get("Running"):
                self._containers.pop(container_id, None)
                if data is not None:
                    self._containers.pop(data["Id"], None)
            else:
                self._containers[data["Id"]] = _unchanged_or(self._containers.get(data["Id"]), data)

    def _refresh_network(self, network_id: str) -> None:
        client = self._connect()
        with self._lock:
            data = _kept_inspect(client.inspect_network, network_id, network_inspect_subset)
            if data is None:
                self._networks.pop(network_id, None)
            else:
                self._networks[data["Id"]] = _unchanged_or(self._networks.get(data["Id"]), data)


def _inspect_or_none(inspect: Callable[[str], dict[str, Any]], ident: str) -> dict[str, Any] | None:
    """Inspect data, or None when the object is gone (removed between listing and inspecting)."""
    try:
        return inspect(ident)
    except NotFound:
        return None


def _kept_inspect(inspect: Callable[[str], dict[str, Any]], ident: str,
                  subset: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any] | None:
    """What the cache keeps of an object's inspect data (model's subset), or None when it is gone.

    The subset is rebuilt from its own JSON once the whole document is freed, so its objects sit
    together in fresh memory instead of among the document's: there, each would keep one of Python's
    1 MiB object arenas of the document resident (a container of 5,000 published ports: a 6 MB document
    for a 2.4 MB subset; issue 15)."""
    data = _inspect_or_none(inspect, ident)
    if data is None:
        return None
    text = json.dumps(subset(data))
    del data
    return json.loads(text)


def _unchanged_or(cached: dict[str, Any] | None, fresh: dict[str, Any]) -> dict[str, Any]:
    """The cached subset when the fresh one is equal (a resync of an unchanged container): the fresh copy
    then goes at once and its memory is reused, instead of the old one leaving holes between live objects."""
    return cached if cached == fresh else fresh


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

"""`v6nat run`: the daemon that keeps the datapath equal to what Docker and the host say.

Lives here: start-up checks (one-line errors), logging set-up (text or JSON),
and `Daemon`, which wires the sources to the reconciler:

    docker_source thread (events) ─┐
    host_source thread (netlink)  ─┼─> pending kinds + a wake-up pipe ─> main loop:
    SIGHUP, resync timer          ─┘      read host state, DockerState -> desired_state -> Reconciler.apply
    conntrack GC thread: expires flows on its own timer, so events never wait behind a sweep

One loop does every write to the maps the reconciler owns, so there is no write
race; the source threads only refresh their caches and poke the loop. SIGTERM/SIGINT stop cleanly and
leave the datapath serving (unless --detach-on-exit); SIGHUP forces a full
resync with Docker.

The loop also renews the host's neighbour entry of every container address that
appears (`renew_neighbours`): a replaced container usually gets its
predecessor's address, and packets sent to it in between (a flow to the old
container, a new connection DNAT'd before its mapping was removed) leave an
entry that is still resolving, or has the old MAC. An entry started while
nobody owned the address solicits again only after retrans_time (1 s), and
holds every packet to the new container until then; renewed, it solicits at once.

May import everything below it (config, model, sources, reconciler, datapath, metrics).
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from v6nat_ebpf.config import RunOptions, docker_url, parse_listen
from v6nat_ebpf.docker_source import DockerSource
from v6nat_ebpf.errors import V6natError
from v6nat_ebpf.host_effects import PortReservation, renew_neighbours, uninstall
from v6nat_ebpf.host_source import HostWatcher, read_host_state
from v6nat_ebpf.model import DesiredState, EndpointKey, desired_state, new_endpoints
from v6nat_ebpf.policy import resolve as resolve_policy
from v6nat_ebpf.reconciler import Reconciler

log = logging.getLogger(__name__)

RETRY_AFTER_ERROR_S = 1.0
# Passes that read the maps again instead of trusting what the reconciler wrote last (see reconciler).
REREAD_KINDS = frozenset({"startup", "resync", "retry"})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": round(record.created, 3), "level": record.levelname.lower(),
                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(log_format: str, level: int) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # These log every netlink message or HTTP request at debug: far too much even for --log-level debug.
    for chatty in ("asyncio", "urllib3", "docker"):
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))


def check_can_run() -> None:
    """Fail with one line when this process cannot load BPF programs (privileges). bcc and the
    kernel headers are checked by the child that compiles, and only when it must (datapath.build)."""
    from v6nat_ebpf import preflight  # its checks report instead of raising; turn a "fail" into an error

    finding = preflight.check_capabilities()
    if finding.status == "fail":
        raise V6natError(f"{finding.what}: {finding.detail}")


def check_no_double_nat(opts: RunOptions) -> None:
    """Refuse (one line) to start next to a Docker that writes its own IPv6 NAT rules or runs docker-proxy,
    unless told to. A Docker that does not answer yet is checked when it connects (Daemon._docker_connection),
    where a conflict is logged as an error: by then the datapath serves, and keeps serving."""
    from v6nat_ebpf import preflight

    try:
        firewall = preflight.read_docker_firewall(docker_url(opts.docker_host))
    except V6natError as exc:
        log.warning("%s: Docker's ip6tables and userland-proxy settings are checked when it answers", exc)
        return
    problems = preflight.double_nat_problems(firewall, opts.allow_docker_ip6tables, opts.allow_docker_userland_proxy)
    if problems:
        raise V6natError(problems[0])
    for allowed, what in ((opts.allow_docker_ip6tables and firewall.ip6tables, "ip6tables"),
                          (opts.allow_docker_userland_proxy and firewall.userland_proxy, "userland-proxy")):
        if allowed:
            log.warning("Docker's %s is on and allowed: its rules see the same flows as v6nat", what)


class Waker:
    """A self-pipe: any thread (and, through set_wakeup_fd, any signal) wakes the main loop."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)

    def poke(self) -> None:
        try:
            os.write(self.write_fd, b"!")
        except BlockingIOError:
            pass  # already full of pokes: the loop will wake anyway

    def wait(self, timeout: float) -> None:
        ready, _, _ = select.select([self.read_fd], [], [], max(timeout, 0.0))
        if ready:
            try:
                while os.read(self.read_fd, 4096):
                    pass
            except BlockingIOError:
                pass

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


class Daemon:
    """One running v6nat: owns the sources, the reconciler and the timers for an open Datapath."""

    def __init__(self, opts: RunOptions, dp: Any, stats: Any = None) -> None:
        self.opts = opts
        self.dp = dp
        self.stats = stats
        self.reconciler = Reconciler(dp)
        self.waker = Waker()
        self._pending: set[str] = set()
        self._pending_lock = threading.Lock()
        self._stopping = False
        self._hup = False
        self._docker_up = False
        self._gc_stop = threading.Event()
        self._gc_thread = threading.Thread(target=self._gc_loop, name="v6nat-conntrack-gc", daemon=True)
        self._last_problems: frozenset[str] = frozenset()
        self._last_mapping_labels: dict[int, Any] | None = None  # mapping_id -> metrics.MappingLabels
        self._endpoints: frozenset[EndpointKey] | None = None  # as of the last pass with Docker known
        self.docker = DockerSource(opts.docker_host, self._docker_event, self._docker_connection)
        self.watcher = HostWatcher(self._request)
        self.syncs = 0

    # ------------------------------------------------------------ called from other threads

    def _request(self, kind: str) -> None:
        with self._pending_lock:
            self._pending.add(kind)
        self.waker.poke()

    def _docker_event(self, kind: str) -> None:
        if self.stats is not None and kind != "resync":
            self.stats.event_handled(kind)
        self._request(kind)

    def _docker_connection(self, up: bool) -> None:
        self._docker_up = up
        if self.stats is not None:
            self.stats.docker_connected(up)
        if up:  # (re)connected: dockerd may have started, or restarted with other settings, since start-up
            try:
                check_no_double_nat(self.opts)
            except V6natError as exc:
                log.error("%s", exc)

    def _take_pending(self) -> set[str]:
        with self._pending_lock:
            kinds, self._pending = self._pending, set()
        return kinds

    # ------------------------------------------------------------ signals (main thread)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._hup = True

    def stop(self) -> None:
        """Ask the loop to stop (from any thread)."""
        self._stopping = True
        self.waker.poke()

    # ------------------------------------------------------------ the loop

    def serve(self) -> None:
        """Run until SIGTERM/SIGINT or stop(); the datapath keeps serving afterwards."""
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
            signal.signal(signal.SIGTERM, self._on_stop_signal)
            signal.signal(signal.SIGINT, self._on_stop_signal)
            signal.signal(signal.SIGHUP, self._on_hup)
            previous_fd = signal.set_wakeup_fd(self.waker.write_fd)
        try:
            self._loop()
        finally:
            self._gc_stop.set()
            self.watcher.stop()
            self.docker.stop()
            if in_main:
                signal.set_wakeup_fd(previous_fd)
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
            self.waker.close()

    def _loop(self) -> None:
        self.watcher.start()
        self.docker.start()
        self._gc_thread.start()
        self._request("startup")
        next_resync, retry_at = time.monotonic() + self.opts.resync_interval_s, None
        while not self._stopping:
            deadline = min(t for t in (next_resync, retry_at) if t is not None)
            self.waker.wait(deadline - time.monotonic())
            if self._stopping:
                break
            now = time.monotonic()
            if self._hup or (now >= next_resync and self._docker_up):
                log.info("full resync with Docker (%s)", "SIGHUP" if self._hup else "timer")
                self._hup = False
                self.docker.resync()
            if now >= next_resync:
                next_resync = now + self.opts.resync_interval_s
            kinds = self._take_pending()
            if retry_at is not None and now >= retry_at:
                kinds.add("retry")
                retry_at = None
            if kinds:
                try:
                    self.sync(kinds)
                except Exception:  # the daemon must outlive any one failed pass; the next one repairs
                    log.exception("reconcile failed; retrying in %.0f s", RETRY_AFTER_ERROR_S)
                    retry_at = time.monotonic() + RETRY_AFTER_ERROR_S
        log.info("stopping (the datapath keeps serving%s)", ", until cleanup" if not self.opts.detach_on_exit else "")

    def _gc_loop(self) -> None:
        # Its own thread: sweeping a large conntrack takes a good part of a second, and Docker events must
        # not wait behind it. Only the programs and this sweep touch conntrack, never the reconciler.
        while not self._gc_stop.wait(self.opts.gc_interval_s):
            self._collect_garbage()

    def _collect_garbage(self) -> None:
        try:
            removed = self.dp.gc()
        except (OSError, V6natError) as exc:
            log.warning("conntrack GC failed: %s", exc)
            return
        if removed:
            log.debug("conntrack GC removed %d flows", removed)
        if self.stats is not None:
            self.stats.gc_ran(removed)

    def sync(self, kinds: set[str]) -> None:
        """One reconcile pass: the current host and Docker state into the maps, then the neighbour
        entries of container addresses that appeared since the last pass."""
        # `known` before the state: a full inspect that lands in between makes the state newer, never emptier.
        # (Read after, an empty state taken before the first inspect would pass as known and remove every
        # mapping and its flows: seen on restarts under load.)
        docker_known = self.docker.known
        docker, declarations = self.docker.state_and_policy()
        # The containers' namespaces, so that host_source can tell which container each veth belongs to.
        host = read_host_state(self.opts.public_ifaces, strict=False, netns=[s.netns for s in docker.sandboxes])
        # Source policy (issue 16): rules per mapping; mappings with bad declarations are not published.
        resolution = resolve_policy(desired_state(docker, host, self.opts.udp_filtering), declarations,
                                    self.opts.default_allow)
        desired = resolution.desired
        problems = frozenset(desired.problems) | frozenset(map(str, resolution.errors))
        for problem in sorted(problems - self._last_problems):
            log.warning("%s", problem)
        self._last_problems = problems
        if desired.unowned_veths and docker_known:
            log.debug("veths no running container owns (their IPv6 is dropped): %s", ", ".join(desired.unowned_veths))
        summary = self.reconciler.apply(desired, docker_known=docker_known, reread=bool(kinds & REREAD_KINDS),
                                        rules=resolution.rules)
        if self.stats is not None:
            self.stats.set_policy_errors(tuple((e.container, e.network, e.label, e.value) for e in resolution.errors))
        if self.stats is not None and summary.flows_forgotten:
            self.stats.flows_forgotten(summary.flows_forgotten)
        if docker_known:
            # The first pass only learns: what ran before this daemon is not known to be new.
            if self._endpoints is not None:
                renew_neighbours(new_endpoints(docker, host, self._endpoints))
            self._endpoints = frozenset(ep.key for ep in docker.endpoints)
        self.syncs += 1
        if self.stats is not None:
            self._report(desired, summary.seconds, summary.errors, "resync" in kinds and self.docker.known)

    def _report(self, desired: DesiredState, seconds: float, errors: int, resynced: bool) -> None:
        from v6nat_ebpf.observe.stats import MappingLabels

        stats = self.stats
        stats.observe_reconcile(seconds, errors)
        stats.expect_interfaces(desired.interface_roles(self.docker.known))
        # Labels, not only ids: a renamed or replaced container keeps its mapping ids but changes its label.
        labels = {m.mapping_id: MappingLabels.of(m.proto, m.host_port, m.container_name, m.network_name)
                  for m in desired.mappings}
        if self.docker.known and labels != self._last_mapping_labels:
            stats.set_mappings(labels)
            self._last_mapping_labels = labels
        if self.docker.known:
            stats.set_networks({str(r.prefix): (r.name, r.mode) for r in desired.routes})
        if resynced:
            stats.resynced()


def set_up_host_local(dp: Any, opts: RunOptions) -> None:
    """Attach the socket hooks of host-local access, or remove them (--host-local off). Where the host
    cannot have them (no cgroup v2, an old kernel), the daemon warns and serves without."""
    from v6nat_ebpf.datapath import hostlocal

    if not opts.host_local:
        if dp.detach_hostlocal():
            log.info("host-local access off: socket hooks removed")
        return
    try:
        cgroup = opts.cgroup_path or hostlocal.default_cgroup()
        dp.attach_hostlocal(cgroup, hostlocal.netns_cookie())
    except V6natError as exc:
        log.warning("host-local access unavailable (published ports reachable from other hosts only): %s", exc)


def run(opts: RunOptions) -> int:
    """`v6nat run`: check, open (or adopt) the datapath, serve until told to stop."""
    configure_logging(opts.log_format, opts.log_level_number)
    from v6nat_ebpf.observe.server import start_metrics_server
    from v6nat_ebpf.observe.stats import ControlPlaneStats

    if opts.metrics_listen:
        parse_listen(opts.metrics_listen)
    check_can_run()
    if opts.host_local and opts.cgroup_path:
        from v6nat_ebpf.datapath.hostlocal import check_cgroup

        check_cgroup(Path(opts.cgroup_path))  # a wrong --cgroup-path: one line, before anything is loaded
    read_host_state(opts.public_ifaces)  # unknown interface -> one line, before anything is loaded
    check_no_double_nat(opts)
    from v6nat_ebpf.preflight import forwarding_warnings

    for warning in forwarding_warnings(opts.public_ifaces):
        log.warning("%s", warning)
    for timeout in opts.timeouts_below_rfc:
        log.warning("conntrack timeout %s: flows may expire while their peers still consider them open", timeout)

    from v6nat_ebpf.datapath import Datapath, DatapathConfig  # compiles in a child, only if the pins are stale
    from v6nat_ebpf.datapath.loader import pinned_conntrack_max

    lo, hi = opts.snat_ports
    timeouts, defaults = opts.conntrack_timeouts, DatapathConfig()
    # Without --conntrack-max, a restarted daemon adopts the pinned table whatever its size.
    conntrack_max = opts.conntrack_max or pinned_conntrack_max(opts.pin_path) or defaults.conntrack_max
    config = DatapathConfig(
        snat_port_min=lo, snat_port_max=hi, conntrack_max=conntrack_max,
        tcp_established_s=timeouts.tcp_established_s or defaults.tcp_established_s,
        tcp_transitory_s=timeouts.tcp_transitory_s or defaults.tcp_transitory_s,
        udp_s=timeouts.udp_s or defaults.udp_s,
        icmp_s=timeouts.icmp_s or defaults.icmp_s,
    )
    dp = Datapath.open(pin_path=opts.pin_path, config=config)
    set_up_host_local(dp, opts)
    stats = ControlPlaneStats()
    stats.maps_adopted()
    PortReservation(opts.pin_path).reserve(lo, hi)
    server = start_metrics_server(opts.metrics_listen, dp, stats) if opts.metrics_listen else None
    log.info("v6nat serving: public %s, Docker %s, pins %s", ",".join(opts.public_ifaces),
             docker_url(opts.docker_host), opts.pin_path)
    daemon = Daemon(opts, dp, stats)
    try:
        daemon.serve()
    finally:
        if server is not None:
            server.shutdown()
        dp.close()
        if opts.detach_on_exit:
            uninstall(opts.pin_path)
            log.info("detached: programs, pins and port reservation removed")
    return 0

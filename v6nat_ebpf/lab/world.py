"""The hermetic lab: namespaces, links and addresses, with a private dockerd and an offline image.

A `Lab` builds, inside network namespaces of its own, the world that tests, the
demo and the benchmarks need:

    client netns ("the internet")  --veth--  [router netns, smaller MTU]  --veth--  host netns
    2001:db8:1::2 (or 2001:db8:2::2)                                                 public iface 2001:db8:1::1
                                                                                     + its own dockerd

Nothing here changes routes, sysctls or interfaces of the root network
namespace. Every lab has a unique name, so two labs can be up at once, and keeps
all its state under /run/v6nat-lab/<name>/. The dockerd is `lab.dockerd`, the
image `lab.image`, the removal of leftovers `lab.sweep`.

Imports: stdlib, docker and the other lab modules (no datapath, no daemon).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Sequence

import docker
import docker.types
from docker.models.containers import Container
from docker.models.networks import Network

from v6nat_ebpf.lab.common import (BPFFS, NETNS_DIR, PEER_ECHO_COMMAND, PEER_ECHO_PORT, PIN_PREFIX, LAB_PREFIX,
                                   STATE_ROOT, LabConfig, LabError, run)
from v6nat_ebpf.lab.dockerd import Dockerd
from v6nat_ebpf.lab.image import IMAGE
from v6nat_ebpf.lab.sweep import (delete_netns, kill_group, kill_pids, mounts_under, owner_token,
                                  pids_in_namespaces, remove_cgroups, remove_tree, umount)

log = logging.getLogger(__name__)

# Interface names inside the lab's namespaces (each <= 15 characters).
CLIENT_IFACE = "cli0"
PUBLIC_IFACE = "pub0"
ROUTER_CLIENT_IFACE = "rtr-cli0"
ROUTER_HOST_IFACE = "rtr-host0"

HOST_ADDR = ipaddress.IPv6Address("2001:db8:1::1")
HOST_GATEWAY = ipaddress.IPv6Address("2001:db8:1::2")  # client, or the router when there is one
CLIENT_ADDR_DIRECT = ipaddress.IPv6Address("2001:db8:1::2")
CLIENT_ADDR_ROUTED = ipaddress.IPv6Address("2001:db8:2::2")
ROUTER_CLIENT_ADDR = ipaddress.IPv6Address("2001:db8:2::1")




@dataclass(frozen=True)
class PeerProbe:
    """What a client got when it asked a PEER_ECHO_COMMAND server who it is."""

    target: str
    peer: ipaddress.IPv6Address | None  # the address the server saw; None: no answer
    connected: bool  # the TCP handshake completed (someone held the port)
    detail: str  # socat's complaint, if any
    elapsed_s: float


class Lab:
    """A disposable world of namespaces and a private dockerd; use it as a context manager.

    Teardown always runs: on a normal exit, an exception, Ctrl-C, or SIGTERM
    (while a lab is up in the main thread, SIGTERM raises SystemExit(143)).
    """

    def __init__(self, config: LabConfig | None = None) -> None:
        self.config = config or LabConfig()
        self.name = LAB_PREFIX + secrets.token_hex(3)
        self.client_ns = f"{self.name}-cli"
        self.host_ns = f"{self.name}-host"
        self.router_ns: str | None = f"{self.name}-rtr" if self.config.router_mtu else None
        self.client_addr = CLIENT_ADDR_ROUTED if self.router_ns else CLIENT_ADDR_DIRECT
        self.host_addr = HOST_ADDR
        self.client_iface = CLIENT_IFACE
        self.public_iface = PUBLIC_IFACE
        self.image = IMAGE
        self.state_dir = STATE_ROOT / self.name
        self.pin_path = str(BPFFS / f"{PIN_PREFIX}{self.name}")
        self.dockerd = Dockerd(self.name, self.state_dir, self.host_ns, self.config)
        self.docker_url = self.dockerd.url
        self._procs: list[subprocess.Popen[Any]] = []
        self._namespaces: list[str] = []
        self._previous_sigterm: Any = None
        self._sigterm_installed = False

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> "Lab":
        self._install_sigterm()
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def _build(self) -> None:
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=False)
        (self.state_dir / "owner").write_text(owner_token(os.getpid()))
        self._make_namespaces()
        ensure_bpffs()
        Path(self.pin_path).mkdir(parents=True, exist_ok=True)
        if self.config.start_docker:
            self.start_docker()
            self.dockerd.import_image()
        log.info("lab %s up in %.1f s", self.name, time.monotonic() - started)

    def teardown(self) -> None:
        """Remove everything this lab made; safe to call twice; never raises for leftovers."""
        self._restore_sigterm()
        with _signals_deferred():
            if self.dockerd.has_client:
                self.dockerd.remove_containers()
            for proc in self._procs:
                kill_group(proc)
            self._procs.clear()
            self.stop_docker()
            kill_pids(pids_in_namespaces(self._namespaces_on_disk()))
            for mount in mounts_under(self.state_dir):
                umount(mount)
            for ns in self._namespaces_on_disk():
                delete_netns(ns)
            remove_tree(Path(self.pin_path))
            remove_cgroups(self.name)
            remove_tree(self.state_dir)
        log.info("lab %s torn down", self.name)

    # ---------------------------------------------------------------- namespaces

    def _make_namespaces(self) -> None:
        for ns in filter(None, (self.client_ns, self.router_ns, self.host_ns)):
            run(["ip", "netns", "add", ns])
            self._namespaces.append(ns)
            # Set before any interface exists so every lab interface inherits it:
            # addresses are usable at once, without duplicate address detection.
            for scope in ("all", "default"):
                self.exec(ns, ["sysctl", "-qw", f"net.ipv6.conf.{scope}.accept_dad=0"])
            self.exec(ns, ["ip", "link", "set", "lo", "up"])
        for ns in filter(None, (self.router_ns, self.host_ns)):
            self.exec(ns, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])

        if self.router_ns is None:
            self._veth(self.client_ns, CLIENT_IFACE, self.host_ns, PUBLIC_IFACE, mtu=None)
            self._address(self.client_ns, CLIENT_IFACE, self.client_addr)
        else:
            self._veth(self.client_ns, CLIENT_IFACE, self.router_ns, ROUTER_CLIENT_IFACE, mtu=None)
            self._veth(self.router_ns, ROUTER_HOST_IFACE, self.host_ns, PUBLIC_IFACE,
                       mtu=self.config.router_mtu)
            self._address(self.client_ns, CLIENT_IFACE, self.client_addr)
            self._address(self.router_ns, ROUTER_CLIENT_IFACE, ROUTER_CLIENT_ADDR)
            self._address(self.router_ns, ROUTER_HOST_IFACE, HOST_GATEWAY)
            self.exec(self.client_ns, ["ip", "-6", "route", "add", "default", "via", str(ROUTER_CLIENT_ADDR)])
        self._address(self.host_ns, PUBLIC_IFACE, self.host_addr)
        # Containers' outbound traffic leaves toward the client side.
        self.exec(self.host_ns, ["ip", "-6", "route", "add", "default", "via", str(HOST_GATEWAY)])

    def route_to_host(self, prefix: str) -> None:
        """Route `prefix` (a container network's, e.g. a global /64 of a routed network) to the host's public
        address: on the lab's router when there is one (the client's default route goes there), else on the
        client. Gone with the namespaces."""
        self.exec(self.router_ns or self.client_ns, ["ip", "-6", "route", "replace", prefix, "via", str(self.host_addr)])

    def _veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str, mtu: int | None) -> None:
        # Created inside ns_a with its peer born in ns_b: nothing appears in the root netns.
        self.exec(ns_a, ["ip", "link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", ns_b])
        for ns, iface in ((ns_a, if_a), (ns_b, if_b)):
            self.exec(ns, ["ip", "link", "set", iface, *(["mtu", str(mtu)] if mtu else []), "up"])

    def _address(self, ns: str, iface: str, addr: ipaddress.IPv6Address) -> None:
        self.exec(ns, ["ip", "-6", "addr", "add", f"{addr}/64", "dev", iface, "nodad"])

    def _namespaces_on_disk(self) -> list[str]:
        return [ns for ns in (self.client_ns, self.router_ns, self.host_ns)
                if ns and (NETNS_DIR / ns).exists()]

    def exec(self, ns: str, argv: Sequence[str], timeout: float = 30, check: bool = True,
             input: str | bytes | None = None, nsenter: bool = False) -> subprocess.CompletedProcess[str]:
        """Run argv inside netns `ns` and capture its output as text.

        By default through `ip netns exec` (which shows the netns's own /sys);
        `nsenter=True` enters only the network namespace and keeps the root
        mount namespace, for programs that need /sys/fs/bpf pins or cgroups.
        """
        text_input = input.decode() if isinstance(input, bytes) else input
        return run(self._ns_argv(ns, nsenter) + list(argv), timeout=timeout, check=check, input=text_input)

    def popen(self, ns: str, argv: Sequence[str], nsenter: bool = False, **kw: Any) -> subprocess.Popen[Any]:
        """Start argv inside netns `ns` in its own process group; killed at teardown."""
        kw.setdefault("start_new_session", True)
        proc = subprocess.Popen(self._ns_argv(ns, nsenter) + list(argv), **kw)
        self._procs.append(proc)
        return proc

    def _ns_argv(self, ns: str, nsenter: bool) -> list[str]:
        if ns not in self._namespaces:
            raise LabError(f"{ns!r} is not a namespace of lab {self.name}")
        if nsenter:
            return ["nsenter", f"--net={NETNS_DIR / ns}", "--"]
        return ["ip", "netns", "exec", ns]

    # ---------------------------------------------------------------- dockerd (lab.dockerd)

    @property
    def docker(self) -> docker.DockerClient:
        """A client of this lab's dockerd (a new object after each restart)."""
        return self.dockerd.client

    def start_docker(self) -> None:
        """Start this lab's dockerd in the host netns and wait until it answers."""
        self.dockerd.start()

    def stop_docker(self, timeout: float = 30) -> None:
        """Stop dockerd gracefully (containers keep running thanks to --live-restore)."""
        self.dockerd.stop(timeout)

    def restart_docker(self) -> None:
        self.stop_docker()
        self.start_docker()

    # ---------------------------------------------------------------- Docker objects

    def create_network(self, name: str, subnet: str, options: dict[str, str] | None = None,
                       internal: bool = False, gateway: str | None = None) -> Network:
        """A bridge network with IPv6 on the given (ULA) subnet; Docker picks its IPv4 subnet."""
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet, gateway=gateway)])
        return self.docker.networks.create(
            name, driver="bridge", enable_ipv6=True, ipam=ipam, options=options or {}, internal=internal)

    def run_container(self, name: str, network: Network | str | None, command: str | Sequence[str],
                      ports: dict[str, Any] | None = None, timeout: float = 30, **kw: Any) -> Container:
        """Run the lab image detached with the host's /usr read-only; return once it is running."""
        volumes = {"/usr": {"bind": "/usr", "mode": "ro"}}
        volumes.update(kw.pop("volumes", {}) or {})
        net_name = network.name if isinstance(network, Network) else network
        container = self.docker.containers.run(
            self.image, command, name=name, network=net_name, ports=ports or {}, volumes=volumes,
            detach=True, **kw)
        deadline = time.monotonic() + timeout
        while container.status != "running":
            if container.status in ("exited", "dead") or time.monotonic() > deadline:
                logs = container.logs(tail=20).decode(errors="replace")
                raise LabError(f"container {name} is {container.status}, not running: {logs.strip()}")
            time.sleep(0.05)
            container.reload()
        return container

    def container_addr(self, container: Container, network: Network | str) -> ipaddress.IPv6Address:
        """The container's global IPv6 address on `network`."""
        container.reload()
        net_name = network.name if isinstance(network, Network) else network
        addr = container.attrs["NetworkSettings"]["Networks"][net_name]["GlobalIPv6Address"]
        if not addr:
            raise LabError(f"container {container.name} has no IPv6 address on {net_name}")
        return ipaddress.IPv6Address(addr)

    def add_client_address(self, addr: ipaddress.IPv6Address) -> None:
        """Another outside source on the client's interface (a /128: the host's default route, via the
        client, already leads back to it); `probe_peer(..., source=addr)` uses it."""
        self.exec(self.client_ns, ["ip", "-6", "addr", "add", f"{addr}/128", "dev", CLIENT_IFACE, "nodad"])

    def probe_peer(self, addr: ipaddress.IPv6Address, port: int, ns: str | None = None,
                   timeout_s: float = 3.0, source: ipaddress.IPv6Address | None = None) -> PeerProbe:
        """Connect from `ns` (default: the client), from `source` if given, to [addr]:port and read the
        peer echo."""
        target = f"[{addr}]:{port}"
        bind = f",bind=[{source}]" if source else ""
        started = time.monotonic()
        result = self.exec(ns or self.client_ns,
                           ["socat", "-d", "-d", f"-T{timeout_s:g}", f"-t{timeout_s:g}", "-",
                            f"TCP6:{target},connect-timeout={timeout_s:g}{bind}"],
                           input="", check=False, timeout=3 * timeout_s + 5)
        elapsed = time.monotonic() - started
        answer = result.stdout.strip().strip("[]")
        peer = ipaddress.IPv6Address(answer) if answer else None
        connected = "starting data transfer loop" in result.stderr
        errors = [line.split(" E ", 1)[1] for line in result.stderr.splitlines() if " E " in line]
        detail = errors[-1] if errors else ("" if peer else "connected, but no answer" if connected else "")
        return PeerProbe(target=target, peer=peer, connected=connected, detail=detail, elapsed_s=elapsed)

    # ---------------------------------------------------------------- SIGTERM

    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_on_sigterm)
        self._sigterm_installed = True

    def _restore_sigterm(self) -> None:
        if self._sigterm_installed:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._sigterm_installed = False


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


class _signals_deferred:
    """Hold SIGINT/SIGTERM during teardown so a second Ctrl-C cannot leave half a lab;
    a signal that arrived meanwhile is delivered again once teardown is done."""

    def __enter__(self) -> None:
        self._saved: dict[int, Any] = {}
        self._pending: list[int] = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, lambda s, f: self._pending.append(s))

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        if self._pending:
            signal.raise_signal(self._pending[0])


def ensure_bpffs() -> None:
    """Mount bpffs at /sys/fs/bpf when the system has not (systemd normally does)."""
    if not any(line.split()[1] == str(BPFFS) and line.split()[2] == "bpf"
               for line in Path("/proc/mounts").read_text().splitlines()):
        run(["mount", "-t", "bpf", "bpf", str(BPFFS)])

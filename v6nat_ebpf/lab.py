"""The hermetic lab: namespaces, a private dockerd and an offline image.

A `Lab` builds, inside network namespaces of its own, the world that tests, the
demo and the benchmarks need:

    client netns ("the internet")  --veth--  [router netns, smaller MTU]  --veth--  host netns
    2001:db8:1::2 (or 2001:db8:2::2)                                                 public iface 2001:db8:1::1
                                                                                     + its own dockerd

Nothing here changes routes, sysctls or interfaces of the root network
namespace; dockerd is entered into the host netns with `nsenter --net`
(`ip netns exec` remounts /sys and hides the cgroup tree dockerd needs).
Every lab has a unique name, so two labs can be up at once, and keeps all its
state under /run/v6nat-lab/<name>/; `sweep_leftovers()` removes what a killed
run left behind, judging from an owner file whether the lab is still alive.

Imports: stdlib, docker and v6nat_ebpf.errors only (no datapath, no daemon).
"""

from __future__ import annotations

import ctypes
import io
import ipaddress
import logging
import os
import secrets
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Iterator, Sequence

import docker
import docker.errors
import docker.types
from docker.models.containers import Container
from docker.models.networks import Network

from v6nat_ebpf.errors import V6natError

log = logging.getLogger(__name__)

LAB_PREFIX = "v6l-"
STATE_ROOT = Path("/run/v6nat-lab")
BPFFS = Path("/sys/fs/bpf")
PIN_PREFIX = "v6nat-lab-"
CGROUP_ROOT = Path("/sys/fs/cgroup")
IMAGE = "v6nat-lab/busybox"
BUSYBOX = Path("/bin/busybox")
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NETNS_DIR = Path("/run/netns")

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

_MNT_DETACH = 2

# A server that answers every TCP connection with the address it sees as the
# peer, then closes: the probe of "whose address reaches the container".
PEER_ECHO_COMMAND = ["socat", "TCP6-LISTEN:80,fork,reuseaddr", "SYSTEM:echo $SOCAT_PEERADDR"]
PEER_ECHO_PORT = 80


class LabError(V6natError):
    """The lab could not be built or torn down."""


@dataclass(frozen=True)
class LabConfig:
    """What a lab should look like; the Docker flags are passed to its dockerd as given."""

    userland_proxy: bool = False
    ip6tables: bool = False  # Docker's own IPv6 NAT: adds --experimental --ip6tables
    iptables: bool = True
    router_mtu: int | None = None  # a router netns between client and host, this MTU toward the host
    start_docker: bool = True
    docker_start_timeout_s: float = 60.0


@dataclass(frozen=True)
class PeerProbe:
    """What a client got when it asked a PEER_ECHO_COMMAND server who it is."""

    target: str
    peer: ipaddress.IPv6Address | None  # the address the server saw; None: no answer
    connected: bool  # the TCP handshake completed (someone held the port)
    detail: str  # socat's complaint, if any
    elapsed_s: float


@dataclass(frozen=True)
class Leftover:
    """One thing sweep_leftovers() removed."""

    kind: str  # "process", "mount", "netns", "dir", "pins", "cgroup"
    what: str

    def __str__(self) -> str:
        return f"{self.kind:8} {self.what}"


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
        self.docker_sock = self.state_dir / "docker.sock"
        self.docker_url = f"unix://{self.docker_sock}"
        self._dockerd_log = self.state_dir / "dockerd.log"
        self._dockerd_pidfile = self.state_dir / "dockerd.pid"
        self._dockerd: subprocess.Popen[bytes] | None = None
        self._docker: docker.DockerClient | None = None
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
        (self.state_dir / "owner").write_text(_owner_token(os.getpid()))
        self._make_namespaces()
        _ensure_bpffs()
        Path(self.pin_path).mkdir(parents=True, exist_ok=True)
        if self.config.start_docker:
            self.start_docker()
            self._import_image()
        log.info("lab %s up in %.1f s", self.name, time.monotonic() - started)

    def teardown(self) -> None:
        """Remove everything this lab made; safe to call twice; never raises for leftovers."""
        self._restore_sigterm()
        with _signals_deferred():
            if self._docker is not None:
                self._remove_containers()
            for proc in self._procs:
                _kill_group(proc)
            self._procs.clear()
            self.stop_docker()
            _kill_pids(_pids_in_namespaces(self._namespaces_on_disk()))
            for mount in _mounts_under(self.state_dir):
                _umount(mount)
            for ns in self._namespaces_on_disk():
                _delete_netns(ns)
            _remove_tree(Path(self.pin_path))
            _remove_cgroups(self.name)
            _remove_tree(self.state_dir)
        log.info("lab %s torn down", self.name)

    # ---------------------------------------------------------------- namespaces

    def _make_namespaces(self) -> None:
        for ns in filter(None, (self.client_ns, self.router_ns, self.host_ns)):
            _run(["ip", "netns", "add", ns])
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
        return _run(self._ns_argv(ns, nsenter) + list(argv), timeout=timeout, check=check, input=text_input)

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

    # ---------------------------------------------------------------- dockerd

    @property
    def docker(self) -> docker.DockerClient:
        """A client of this lab's dockerd (a new object after each restart)."""
        if self._docker is None:
            raise LabError(f"lab {self.name}: dockerd is not running")
        return self._docker

    def _dockerd_argv(self) -> list[str]:
        cfg = self.config
        argv = [
            "nsenter", f"--net={NETNS_DIR / self.host_ns}", "--",
            "dockerd",
            "--config-file", str(self.state_dir / "daemon.json"),
            "--data-root", str(self.state_dir / "data"),
            "--exec-root", str(self.state_dir / "exec"),
            "--pidfile", str(self._dockerd_pidfile),
            "-H", self.docker_url,
            "--bridge=none",
            "--live-restore",
            f"--iptables={str(cfg.iptables).lower()}",
            f"--userland-proxy={str(cfg.userland_proxy).lower()}",
            # A cgroup parent of our own lets the sweep find what a killed lab left.
            "--exec-opt", "native.cgroupdriver=cgroupfs",
            "--cgroup-parent", f"/{PIN_PREFIX}{self.name}",
        ]
        if cfg.ip6tables:
            argv += ["--experimental", "--ip6tables"]
        return argv

    def start_docker(self) -> None:
        """Start this lab's dockerd in the host netns and wait until it answers."""
        if self._dockerd is not None and self._dockerd.poll() is None:
            return
        (self.state_dir / "daemon.json").write_text("{}\n")
        env = {"PATH": CONTAINER_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
        with open(self._dockerd_log, "ab") as out:
            self._dockerd = subprocess.Popen(
                self._dockerd_argv(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True)
        deadline = time.monotonic() + self.config.docker_start_timeout_s
        while True:
            if self._dockerd.poll() is not None:
                raise LabError(f"lab {self.name}: dockerd exited with {self._dockerd.returncode}\n"
                               f"{self._dockerd_log_tail()}")
            if self.docker_sock.exists():
                # The client asks for the API version as it is made: a socket file left by the previous
                # dockerd refuses that, like the ping, until the new one serves.
                try:
                    client = docker.DockerClient(base_url=self.docker_url, timeout=120)
                except (docker.errors.DockerException, OSError):
                    client = None
                try:
                    if client is not None:
                        client.ping()
                        self._docker = client
                        return
                except (docker.errors.APIError, docker.errors.DockerException, OSError):
                    client.close()
            if time.monotonic() > deadline:
                raise LabError(f"lab {self.name}: dockerd did not answer within "
                               f"{self.config.docker_start_timeout_s:.0f} s\n{self._dockerd_log_tail()}")
            time.sleep(0.1)

    def stop_docker(self, timeout: float = 30) -> None:
        """Stop dockerd gracefully (containers keep running thanks to --live-restore)."""
        if self._docker is not None:
            self._docker.close()
            self._docker = None
        proc, self._dockerd = self._dockerd, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("lab %s: dockerd ignored SIGTERM for %.0f s, killing it", self.name, timeout)
            proc.kill()
            proc.wait()

    def restart_docker(self) -> None:
        self.stop_docker()
        self.start_docker()

    def _dockerd_log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._dockerd_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no dockerd log)"

    def _import_image(self) -> None:
        self.docker.api.import_image_from_data(
            _busybox_image_tar(), repository=self.image, tag="latest",
            changes=[f"ENV PATH={CONTAINER_PATH}"])

    def _remove_containers(self) -> None:
        try:
            for container in self.docker.containers.list(all=True):
                container.remove(force=True)
        except (docker.errors.DockerException, OSError) as exc:
            log.warning("lab %s: could not remove containers through the API: %s", self.name, exc)

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

    def probe_peer(self, addr: ipaddress.IPv6Address, port: int, ns: str | None = None,
                   timeout_s: float = 3.0) -> PeerProbe:
        """Connect from `ns` (default: the client) to [addr]:port and read the peer echo."""
        target = f"[{addr}]:{port}"
        started = time.monotonic()
        result = self.exec(ns or self.client_ns,
                           ["socat", "-d", "-d", f"-T{timeout_s:g}", f"-t{timeout_s:g}", "-",
                            f"TCP6:{target},connect-timeout={timeout_s:g}"],
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


# -------------------------------------------------------------------- image


def _busybox_image_tar() -> bytes:
    """A root filesystem: static busybox with every applet, and links for /usr binaries."""
    if not BUSYBOX.exists():
        raise LabError(f"{BUSYBOX} is missing: install busybox-static (scripts/setup does)")
    head = BUSYBOX.read_bytes()[:4096]
    if b"/lib64/ld-linux" in head or b"/lib/ld-linux" in head:
        raise LabError(f"{BUSYBOX} is dynamically linked: install busybox-static")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add_dir(path: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(path)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)

        def add_link(path: str, target: str) -> None:
            info = tarfile.TarInfo(path)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)

        def add_file(path: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "sbin", "etc", "usr", "root", "var", "var/www", "proc", "sys", "dev"):
            add_dir(d)
        add_dir("tmp", 0o1777)
        # Debian is merged-usr: dynamic binaries from the /usr mount look for
        # their loader and libraries under /lib and /lib64.
        add_link("lib", "usr/lib")
        add_link("lib64", "usr/lib64")
        add_file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
        for applet in applets:
            if applet != "busybox" and "/" not in applet:
                add_link(f"bin/{applet}", "busybox")
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()


# -------------------------------------------------------------------- helpers


def _run(argv: Sequence[str], timeout: float = 30, check: bool = True,
         input: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout:g} s: {' '.join(argv)}") from exc
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _ensure_bpffs() -> None:
    """Mount bpffs at /sys/fs/bpf when the system has not (systemd normally does)."""
    if not any(line.split()[1] == str(BPFFS) and line.split()[2] == "bpf"
               for line in Path("/proc/mounts").read_text().splitlines()):
        _run(["mount", "-t", "bpf", "bpf", str(BPFFS)])


def _owner_token(pid: int) -> str:
    """pid plus its start time, so a reused pid is not taken for the lab's owner."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    start_time = stat.rsplit(")", 1)[1].split()[19]
    return f"{pid} {start_time}\n"


def _owner_alive(state_dir: Path) -> bool:
    try:
        token = (state_dir / "owner").read_text()
        return _owner_token(int(token.split()[0])) == token
    except (OSError, ValueError, IndexError):
        return False


def _proc_table() -> dict[int, int]:
    """pid -> parent pid for every process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            table[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return table


def _pids_in_namespaces(namespaces: Sequence[str]) -> list[int]:
    """Processes in these netns, with all their descendants (container processes
    live in netns of their own, below the shims that live in the host netns)."""
    inodes = set()
    for ns in namespaces:
        try:
            inodes.add(os.stat(NETNS_DIR / ns).st_ino)
        except OSError:
            pass
    if not inodes:
        return []
    table = _proc_table()
    roots = []
    for pid in table:
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino in inodes:
                roots.append(pid)
        except OSError:
            continue
    return _with_descendants(roots, table)


def _with_descendants(roots: Sequence[int], table: dict[int, int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in table.items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in found or pid == os.getpid():
            continue
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def _kill_pids(pids: Sequence[int], grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL what is still there after grace_s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in pids:
            try:
                os.kill(pid, sig)
                alive.append(pid)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in alive if _exists(pid)]
            time.sleep(0.05)
        if not alive:
            return
        pids = alive


def _exists(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below path, deepest first."""
    prefix = str(path).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(path) or point.startswith(prefix):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def _umount(point: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(point.encode(), _MNT_DETACH) != 0:
        log.warning("umount %s: %s", point, os.strerror(ctypes.get_errno()))


def _delete_netns(ns: str) -> None:
    result = _run(["ip", "netns", "delete", ns], check=False)
    if result.returncode != 0:
        log.warning("ip netns delete %s: %s", ns, result.stderr.strip())


def _remove_tree(path: Path) -> None:
    """rm -rf, but never through a mount point (a bind of /usr must not be emptied)."""
    if not path.exists():
        return
    still_mounted = _mounts_under(path)
    if still_mounted:
        log.warning("not removing %s: %s still mounted", path, still_mounted[0])
        return
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        log.warning("could not remove %s completely", path)


def _cgroup_dirs(lab_name: str | None) -> Iterator[Path]:
    """Our cgroup parents in every hierarchy (v1 controllers and v2)."""
    pattern = f"{PIN_PREFIX}{lab_name}" if lab_name else f"{PIN_PREFIX}{LAB_PREFIX}*"
    yield from CGROUP_ROOT.glob(pattern)
    yield from CGROUP_ROOT.glob(f"*/{pattern}")


def _remove_cgroups(lab_name: str) -> None:
    for top in _cgroup_dirs(lab_name):
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            _rmdir_quiet(d)
        _rmdir_quiet(top)


def _rmdir_quiet(path: Path) -> None:
    try:
        path.rmdir()
    except OSError as exc:
        log.warning("rmdir %s: %s", path, exc)


def _cgroup_pids(top: Path) -> list[int]:
    pids: list[int] = []
    for procs in top.rglob("cgroup.procs"):
        try:
            pids += [int(p) for p in procs.read_text().split()]
        except OSError:
            pass
    return pids


# -------------------------------------------------------------------- sweep


def _lab_name_of(entry: str) -> str | None:
    """The lab name in a netns name, state dir name or pin dir name."""
    name = entry.removeprefix(PIN_PREFIX)
    if not name.startswith(LAB_PREFIX):
        return None
    return name[:len(LAB_PREFIX) + 6]


def live_labs() -> list[str]:
    """Names of labs whose owning process still runs."""
    if not STATE_ROOT.exists():
        return []
    return sorted(d.name for d in STATE_ROOT.iterdir() if _owner_alive(d))


def sweep_leftovers() -> list[Leftover]:
    """Remove what killed runs left behind; labs whose owner still runs are kept."""
    alive = set(live_labs())
    dead: set[str] = set()
    netns = sorted(NETNS_DIR.iterdir()) if NETNS_DIR.exists() else []
    states = sorted(STATE_ROOT.iterdir()) if STATE_ROOT.exists() else []
    pins = sorted(BPFFS.glob(f"{PIN_PREFIX}{LAB_PREFIX}*")) if BPFFS.exists() else []
    cgroups = list(_cgroup_dirs(None))
    for path in [*netns, *states, *pins, *cgroups]:
        name = _lab_name_of(path.name)
        if name and name not in alive:
            dead.add(name)

    removed: list[Leftover] = []
    for name in sorted(dead):
        removed += _sweep_lab(name)
    return removed


def _sweep_lab(name: str) -> list[Leftover]:
    removed: list[Leftover] = []
    state_dir = STATE_ROOT / name
    namespaces = [p.name for p in NETNS_DIR.glob(f"{name}-*")] if NETNS_DIR.exists() else []

    table = _proc_table()
    roots = []
    try:
        roots.append(int((state_dir / "dockerd.pid").read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        pass
    for top in _cgroup_dirs(name):
        roots += _cgroup_pids(top)
    pids = sorted(set(_with_descendants([p for p in roots if p in table], table))
                  | set(_pids_in_namespaces(namespaces)))
    if pids:
        comms = {pid: _comm(pid) for pid in pids}
        _kill_pids(pids)
        removed += [Leftover("process", f"{pid} {comms.get(pid, '?')}") for pid in pids]

    for point in _mounts_under(state_dir):
        _umount(point)
        removed.append(Leftover("mount", point))
    for ns in namespaces:
        _delete_netns(ns)
        removed.append(Leftover("netns", ns))
    pin_dir = BPFFS / f"{PIN_PREFIX}{name}"
    if pin_dir.exists():
        _remove_tree(pin_dir)
        removed.append(Leftover("pins", str(pin_dir)))
    cgroups = list(_cgroup_dirs(name))
    if cgroups:
        _remove_cgroups(name)
        removed += [Leftover("cgroup", str(c)) for c in cgroups]
    if state_dir.exists():
        _remove_tree(state_dir)
        removed.append(Leftover("dir", str(state_dir)))
    return removed


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "(gone)"


def leftovers_of(lab_name: str) -> list[str]:
    """What of lab `lab_name` still exists: namespaces, processes, mounts, dirs; empty when clean."""
    found = [f"netns {p.name}" for p in NETNS_DIR.glob(f"{lab_name}-*")] if NETNS_DIR.exists() else []
    state_dir = STATE_ROOT / lab_name
    found += [f"mount {m}" for m in _mounts_under(state_dir)]
    if state_dir.exists():
        found.append(f"dir {state_dir}")
    pin_dir = BPFFS / f"{PIN_PREFIX}{lab_name}"
    if pin_dir.exists():
        found.append(f"pins {pin_dir}")
    found += [f"cgroup {c}" for c in _cgroup_dirs(lab_name)]
    for pid in _proc_table():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(state_dir) + "/" in cmdline and pid != os.getpid():
            found.append(f"process {pid} {cmdline[:80]}")
    return found



"""The systems under test, each in its own lab, and how N published ports are made on each.

What lives here: one class per way of getting a client's packets to a container
(v6nat, Docker's ip6tables NAT, docker-proxy, hand-written nftables, routed with
no NAT), all sharing one shape: `start()` builds the lab, the server container
and the NAT; `publish(n)` grows the published ports to n (the benchmark's own
port last in whatever order the system walks); `target()` says where the client
sends traffic.

The server container runs nginx (host's /usr, config bind-mounted) on port 80
and an iperf3 server on 5201 (TCP and UDP): that is 3 published ports, the
"1 port" level. Filler ports point at a second container.
Must not import the load tools' callers (run, report).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from v6nat_ebpf.lab import PIN_PREFIX, Lab, LabConfig
from v6nat_ebpf.errors import V6natError
from v6nat_ebpf.lab.daemon import V6NAT, LabDaemon

from bench import rules
from bench.load import http_ok, netns_pool, wait_http_ok

log = logging.getLogger(__name__)

SUBNET = IPv6Network("fd00:ca7e:d09e::/64")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LAB_CGROUP_PREFIX = PIN_PREFIX  # the lab's dockerd runs containers under cgroup /<prefix><lab name>
HTTP_HOST_PORT = 8080
IPERF_PORT = 5201
SERVER_PORTS: dict[str, int] = {"80/tcp": HTTP_HOST_PORT, f"{IPERF_PORT}/tcp": IPERF_PORT, f"{IPERF_PORT}/udp": IPERF_PORT}
# Filler host ports: FILLER_BASE, FILLER_BASE+1, ...; clear of the server's ports.
FILLER_BASE = 10000
REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 30.0
# Docker 20.10 holds a listening socket per published port and address family
# even with the userland proxy off, and this machine caps a process at 20,000
# open files: dockerd cannot publish much more than 9,000 ports here. Levels past
# DOCKER_PORTS_MAX add entries straight into v6nat's dnat map (datapath API).
DOCKER_PORTS_MAX = 5_000
# The daemon's periodic resync would remove the direct entries: once an hour
# instead of every 30 s (start, events and SIGHUP still resync).
RESYNC_INTERVAL_S = 3600

NGINX_CONF = """\
worker_processes 1;
daemon off;
user root;
pid /tmp/nginx-bench.pid;
error_log stderr warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path /tmp/nginx-body;
    proxy_temp_path /tmp/nginx-proxy;
    fastcgi_temp_path /tmp/nginx-fastcgi;
    scgi_temp_path /tmp/nginx-scgi;
    uwsgi_temp_path /tmp/nginx-uwsgi;
    server {
        listen [::]:80 ipv6only=off backlog=4096;
        location / { return 200 "ok\\n"; }
    }
}
"""
# In a filler container: every TCP port goes to nginx on 80, so any published
# port answers once its mapping is programmed (control-plane timing).
FILLER_REDIRECT_NFT = """\
table ip6 bench_filler {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        tcp dport != 80 redirect to :80
    }
}
"""
SERVER_CMD = ["sh", "-c", "iperf3 -s -D -p 5201 && exec nginx -e stderr -p /tmp -c /etc/bench/nginx.conf"]
FILLER_CMD = ["sh", "-c", "nft -f /etc/bench/redirect.nft && exec nginx -e stderr -p /tmp -c /etc/bench/nginx.conf"]


class SystemError_(RuntimeError):
    """A system could not be brought up or programmed."""


@dataclass(frozen=True)
class Target:
    """Where the client sends traffic for one system."""

    host: IPv6Address
    http_port: int
    iperf_port: int

    @property
    def url(self) -> str:
        return f"http://[{self.host}]:{self.http_port}/"


def write_configs(workdir: Path) -> Path:
    """The files the containers bind-mount at /etc/bench (read-only)."""
    conf = workdir / "etc-bench"
    conf.mkdir(parents=True, exist_ok=True)
    conf.chmod(0o755)
    for name, text in (("nginx.conf", NGINX_CONF), ("redirect.nft", FILLER_REDIRECT_NFT)):
        (conf / name).write_text(text)
        (conf / name).chmod(0o644)
    return conf


class System:
    """A lab with the server container; subclasses add the NAT."""

    name = ""
    title = ""
    max_ports = 1          # the largest published-ports level measured on this system
    lab_config = LabConfig()

    def __init__(self, conf_dir: Path) -> None:
        self.conf_dir = conf_dir
        self.notes: list[str] = []
        self.ports = 1
        self._lab: Lab | None = None
        self.network: Any = None
        self.server: Any = None
        self.server_addr = IPv6Address(0)

    @property
    def lab(self) -> Lab:
        if self._lab is None:
            raise SystemError_(f"{self.name}: not started")
        return self._lab

    def start(self, stack: ExitStack) -> None:
        """Build the lab (torn down by `stack`), the server container and the NAT; wait until it answers."""
        self.stack = stack
        self._lab = stack.enter_context(Lab(self.lab_config))
        self.network = self.lab.create_network("ula", str(SUBNET))
        self.before_server()
        self.server = self.run_container("srv", SERVER_PORTS, SERVER_CMD)
        self.server_addr = self.lab.container_addr(self.server, self.network)
        self.after_server()
        self.wait_ready(self.target(), [self.target().http_port])

    def run_container(self, name: str, ports: dict[str, Any], command: list[str], **kw: Any) -> Any:
        return self.lab.run_container(
            name, self.network, command, ports=ports,
            volumes={str(self.conf_dir): {"bind": "/etc/bench", "mode": "ro"}}, **kw)

    def before_server(self) -> None:
        """Hook: what must exist before the server container starts."""

    def after_server(self) -> None:
        """Hook: the NAT for the server's ports."""

    def target(self) -> Target:
        return Target(self.lab.host_addr, HTTP_HOST_PORT, IPERF_PORT)

    def publish(self, n: int) -> None:
        """Make n ports published (the netfilter systems only grow: the levels only go up)."""
        if n > self.max_ports:
            raise SystemError_(f"{self.name} is measured up to {self.max_ports} ports, not {n}")
        self.ports = n

    def wait_ready(self, target: Target, ports: list[int], timeout_s: float = READY_TIMEOUT_S) -> None:
        with netns_pool(self.lab.client_ns) as pool:
            deadline = time.monotonic() + timeout_s
            while not all(pool.submit(http_ok, str(target.host), p).result() for p in ports):
                if time.monotonic() > deadline:
                    raise SystemError_(f"{self.name}: {target.host} ports {ports[:3]}... do not answer")
                time.sleep(0.05)

    def server_cpu_s(self) -> float:
        """CPU seconds used so far by everything on the server side that a request passes through.

        The lab's containers (cpuacct of the lab's cgroup parent: precise, and with
        tick accounting it includes the softirq work done in their context, which
        is where the host's forwarding and NAT run on veths) plus `extra_pids()`.
        """
        usage = Path(f"/sys/fs/cgroup/cpuacct/{LAB_CGROUP_PREFIX}{self.lab.name}/cpuacct.usage")
        total_ns = int(usage.read_text())
        ticks = 0
        for pid in self.extra_pids():
            try:
                # utime + stime of all the process's threads, in clock ticks.
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])
            except (OSError, ValueError, IndexError):
                continue  # exited meanwhile
        return total_ns / 1e9 + ticks / CLOCK_TICKS

    def extra_pids(self) -> list[int]:
        """Processes outside the containers that carry the traffic (docker-proxy)."""
        return []

    def describe(self) -> dict[str, Any]:
        return {"title": self.title, "max_ports": self.max_ports, "notes": self.notes,
                "lab": self._lab.name if self._lab else None}


def filler_ports(n: int) -> range:
    """The host ports a system with n published ports adds besides the server's 3."""
    return range(FILLER_BASE, FILLER_BASE + max(0, n - len(SERVER_PORTS)))


class Routed(System):
    """No NAT: the client routes the ULA prefix via the host and talks to the container directly."""

    name = "routed"
    title = "routed, no NAT (ceiling)"
    max_ports = 50_000
    lab_config = LabConfig(iptables=False, ip6tables=False, userland_proxy=False)

    def after_server(self) -> None:
        self.lab.exec(self.lab.client_ns, ["ip", "-6", "route", "add", str(SUBNET), "via", str(self.lab.host_addr)])
        self.notes.append("no published ports involved: the same at every level")

    def target(self) -> Target:
        return Target(self.server_addr, 80, IPERF_PORT)


class DockerIp6tables(System):
    """Docker's own NAT (`--experimental --ip6tables`), filler rules copied from Docker's own."""

    name = "ip6tables"
    title = "Docker ip6tables NAT"
    max_ports = 5_000
    lab_config = LabConfig(iptables=True, ip6tables=True, userland_proxy=False)

    def after_server(self) -> None:
        save = self.lab.exec(self.lab.host_ns, ["ip6tables-save"]).stdout
        self.template = rules.docker_rules_for_port(save, HTTP_HOST_PORT, 80, self.server_addr)
        self.notes.append("rules per filler port, copied from Docker's: "
                          + " | ".join(f"{t}: {ln}" for t, lines in self.template.items() for ln in lines))

    def publish(self, n: int) -> None:
        new = range(filler_ports(self.ports).stop, filler_ports(n).stop)
        super().publish(n)
        if new:
            text = rules.docker_shaped_fillers(self.template, HTTP_HOST_PORT, 80, new)
            self.lab.exec(self.lab.host_ns, ["ip6tables-restore", "--noflush"], input=text, timeout=300)


class DockerProxy(System):
    """Docker's default: the userland proxy (one docker-proxy process per published port)."""

    name = "docker-proxy"
    title = "docker-proxy (Docker default)"
    max_ports = 1
    lab_config = LabConfig(iptables=True, ip6tables=False, userland_proxy=True)

    def after_server(self) -> None:
        self.notes.append("one docker-proxy process per published port: measured with the server's ports only")

    def extra_pids(self) -> list[int]:
        return _pids_in_netns("docker-proxy", self.lab.host_ns)


def _pids_in_netns(comm: str, netns: str) -> list[int]:
    """Processes named `comm` whose network namespace is the named one."""
    want = os.stat(f"/run/netns/{netns}").st_ino
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if Path(entry.path, "comm").read_text().strip() == comm and os.stat(f"{entry.path}/ns/net").st_ino == want:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


class Nftables(System):
    """Hand-written nftables: DNAT through a port map, masquerade, flowtable where the kernel has one."""

    name = "nftables"
    title = "nftables (DNAT map)"
    max_ports = 5_000
    lab_config = LabConfig(iptables=False, ip6tables=False, userland_proxy=False)
    table = "bench_nat"

    def after_server(self) -> None:
        ports = [rules.PortRule("tcp", HTTP_HOST_PORT, self.server_addr, 80),
                 rules.PortRule("tcp", IPERF_PORT, self.server_addr, IPERF_PORT),
                 rules.PortRule("udp", IPERF_PORT, self.server_addr, IPERF_PORT)]
        bridge = self.bridge_name()
        for flowtable in (True, False):
            text = rules.nft_ruleset(self.table, self.lab.public_iface, bridge, self.lab.host_addr, SUBNET,
                                     ports, flowtable)
            done = self.lab.exec(self.lab.host_ns, ["nft", "-f", "-"], input=text, check=False)
            if done.returncode == 0:
                self.flowtable = flowtable
                break
            log.info("nft ruleset with flowtable=%s refused: %s", flowtable, done.stderr.strip()[:200])
        else:
            raise SystemError_(f"nftables ruleset refused: {done.stderr.strip()[:300]}")
        if self.flowtable:
            self.title = "nftables (DNAT map + flowtable)"
        else:
            self.notes.append("no flowtable: this kernel has no CONFIG_NF_FLOW_TABLE (nft refuses `flowtable`); "
                              "DNAT map and masquerade only")

    def bridge_name(self) -> str:
        return "br-" + self.network.id[:12]

    def publish(self, n: int) -> None:
        new = range(filler_ports(self.ports).stop, filler_ports(n).stop)
        super().publish(n)
        if new:
            text = rules.nft_add_ports(self.table, [rules.PortRule("tcp", p, self.server_addr, p) for p in new])
            self.lab.exec(self.lab.host_ns, ["nft", "-f", "-"], input=text, timeout=120)


class V6nat(System):
    """The v6nat daemon on the host, dockerd with --iptables=false and no userland proxy."""

    name = "v6nat"
    title = "v6nat"
    max_ports = 50_000
    lab_config = LabConfig(iptables=False, ip6tables=False, userland_proxy=False)

    def __init__(self, conf_dir: Path) -> None:
        super().__init__(conf_dir)
        self.daemon: LabDaemon | None = None
        self.filler: Any = None
        self.filler_ports = range(0)
        self.datapath: Any = None  # the bench's own handle on the pinned maps, for direct entries
        self.direct_count = 0

    def before_server(self) -> None:
        if not Path(V6NAT).exists():
            raise SystemError_(f"{V6NAT} is missing (run scripts/setup)")
        self.daemon = LabDaemon(self.lab, extra=["--resync-interval", str(RESYNC_INTERVAL_S)], log_level="info",
                                env=self.daemon_env(), log_dir=self.conf_dir.parent)
        self.stack.callback(self.daemon.close)  # before the lab's teardown: `v6nat cleanup` for its pin path
        self.daemon.start(wait_ready=False)

    def daemon_env(self) -> dict[str, str]:
        """Hook: V6NAT_* settings of the daemon."""
        return {}

    def after_server(self) -> None:
        """Wait for the daemon's /readyz (maps adopted, interfaces attached, first resync done)."""
        self.notes.append(f"`v6nat run --resync-interval {RESYNC_INTERVAL_S}`; past {DOCKER_PORTS_MAX:,} ports the "
                          "rest are written straight into the dnat map (dockerd cannot publish much more than "
                          "9,000 ports here: it holds a socket per port and family, 20,000 open files at most)")
        assert self.daemon is not None
        try:
            self.daemon.wait_ready(READY_TIMEOUT_S)
        except V6natError as e:
            raise SystemError_(f"{e}: {self.log_tail()}") from None

    def log_tail(self) -> str:
        lines = [ln.strip() for ln in self.daemon.log().splitlines() if ln.strip()] if self.daemon else []
        return lines[-1] if lines else "(empty log)"

    def publish(self, n: int) -> None:
        """Up to DOCKER_PORTS_MAX through Docker (a filler container); past it, straight into the dnat map."""
        super().publish(n)
        ports = filler_ports(min(n, DOCKER_PORTS_MAX))
        if self.filler is not None and len(self.filler_ports) != len(ports):
            self.filler.remove(force=True)
            self.filler, self.filler_ports = None, range(0)
        if ports and self.filler is None:
            self.filler, _, _ = self.run_filler(ports)
            self.filler_ports = ports
        self.set_direct_entries(max(0, n - DOCKER_PORTS_MAX))

    def set_direct_entries(self, count: int) -> None:
        """Make `count` dnat entries exist that the bench wrote itself (host ports past Docker's fillers).

        They point at the server's port 80, uncounted (mapping id 0); the daemon
        runs with a long resync interval so it does not remove them.
        """
        if count == self.direct_count:
            return
        from v6nat_ebpf.datapath import Datapath, DnatKey, DnatTarget

        if self.datapath is None:
            self.datapath = Datapath.open_pinned(str(self.lab.pin_path))
            self.stack.callback(self.datapath.close)
        first = FILLER_BASE + DOCKER_PORTS_MAX
        keys = [DnatKey(proto=6, host_addr=None, host_port=first + i) for i in range(max(count, self.direct_count))]
        if count > self.direct_count:
            self.datapath.dnat.put_many(
                [(k, DnatTarget(addr=self.server_addr, port=80, mapping_id=0))
                 for k in keys[self.direct_count:]])
        else:
            self.datapath.dnat.delete_many(keys[count:])
        self.direct_count = count
        if count and not any(n.startswith("dnat map with") for n in self.notes):
            entries, capacity = self.datapath.map_fill()["dnat"]
            self.notes.append(f"dnat map with {count:,} direct entries: {entries:,} of {capacity:,} slots used")

    def run_filler(self, ports: range, name: str = "filler") -> tuple[Any, float, float]:
        """Run a container publishing `ports` (host port p -> container port p).

        Returns the container, how long `docker run` took, and the time from its
        return until a sample of the ports (first, last and spread between) answers.
        """
        sample = sorted({ports[0], ports[-1], *ports[:: max(1, len(ports) // 62)]})
        t0 = time.monotonic()
        container = self.run_container(name, {f"{p}/tcp": p for p in ports}, FILLER_CMD,
                                       cap_add=["NET_ADMIN"], timeout=120)
        t_run = time.monotonic()
        with netns_pool(self.lab.client_ns) as pool:
            t_ok = pool.submit(wait_http_ok, str(self.lab.host_addr), sample, 60.0).result()
        if t_ok is None:
            raise SystemError_(f"v6nat: {len(ports)} filler ports not answering within 60 s: {self.log_tail()}")
        return container, t_run - t0, t_ok - t_run

    def daemon_rss_bytes(self) -> int:
        if self.daemon is None or self.daemon.proc is None:
            return 0
        with open(f"/proc/{self.daemon.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def map_memlock_bytes(self) -> dict[str, int]:
        """bytes_memlock of each map pinned under the lab's pin path (bpftool)."""
        out: dict[str, int] = {}
        for root, _, files in os.walk(self.lab.pin_path):
            for f in files:
                path = os.path.join(root, f)
                done = subprocess.run(["bpftool", "-j", "map", "show", "pinned", path], capture_output=True, text=True)
                if done.returncode == 0:
                    info = json.loads(done.stdout)
                    out[info.get("name", f)] = int(info.get("bytes_memlock", 0))
        return out


# Source policy (issue 16) for V6natPolicy: an allowlist of POLICY_PREFIXES /48s (the lab client's among
# them, in the middle) on every mapping, and POLICY_BANS banned /64s (none the client's) in force.
POLICY_PREFIXES = 1_000
POLICY_BANS = 10_000


def policy_allowlist(client: IPv6Address) -> list[IPv6Network]:
    others = [IPv6Network((int(IPv6Address("2001:db8:4000::")) + (i << 80), 48)) for i in range(POLICY_PREFIXES - 1)]
    return others[:len(others) // 2] + [IPv6Network((client, 48), strict=False)] + others[len(others) // 2:]


def policy_bans() -> list[IPv6Network]:
    return [IPv6Network((int(IPv6Address("2001:db8:8000::")) + (i << 64), 64)) for i in range(POLICY_BANS)]


class V6natPolicy(V6nat):
    """v6nat with source policy on every mapping: `--default-allow` of 1,000 prefixes, and 10,000 bans
    written into the pinned map (what `v6nat ban` does), so each new flow asks both tries."""

    name = "v6nat-policy"
    title = f"v6nat, {POLICY_PREFIXES:,} allowlist prefixes + {POLICY_BANS:,} bans"
    max_ports = DOCKER_PORTS_MAX

    def daemon_env(self) -> dict[str, str]:
        return {"V6NAT_DEFAULT_ALLOW": ",".join(map(str, policy_allowlist(self.lab.client_addr)))}

    def after_server(self) -> None:
        super().after_server()
        from v6nat_ebpf.datapath import Ban, BanKey, Datapath

        with Datapath.open_pinned(str(self.lab.pin_path)) as dp:
            for prefix in policy_bans():
                dp.bans.put(BanKey(prefix), Ban(0, int(time.time())))
            dp.bans.bump_generation()
            self.notes.append(f"V6NAT_DEFAULT_ALLOW with {POLICY_PREFIXES:,} /48s (the client's among them); "
                              f"{len(dp.bans):,} bans of /64s (not the client's) in the pinned map: each new flow "
                              "does 2 ban lookups and 1 policy lookup")


ALL_SYSTEMS: tuple[type[System], ...] = (V6nat, V6natPolicy, Routed, DockerIp6tables, Nftables, DockerProxy)

"""Options of `v6nat run` (and the `--pin-path` the other commands share): flags, V6NAT_* env, validation.

Lives here: `RunOptions` (the validated, frozen options of one daemon), the
argparse wiring that gives every flag its `V6NAT_<FLAG>` environment
equivalent, and the parsers of port ranges and listen addresses, each failing
with one line.

Precedence: a flag on the command line beats its environment variable, which
beats the default. Repeatable `--public-iface` takes a comma-separated list
in V6NAT_PUBLIC_IFACE.

Must not import: docker, pyroute2, bcc, datapath (parsing only, so `--help` stays fast).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
from dataclasses import dataclass, fields
from typing import Any, Callable

from v6nat_ebpf.constants import (CONNTRACK_MAX, CONNTRACK_MAX_CEILING, CONNTRACK_MAX_FLOOR, DEFAULT_DOCKER_URL,
                                  DEFAULT_METRICS_LISTEN, DEFAULT_PIN_PATH, SNAT_PORT_FLOOR, SNAT_PORT_MAX,
                                  SNAT_PORT_MIN)
from v6nat_ebpf.errors import V6natError
from v6nat_ebpf.model import UDP_FILTERINGS

DEFAULT_SNAT_PORTS = f"{SNAT_PORT_MIN}-{SNAT_PORT_MAX}"
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
IFNAME = re.compile(r"^[^/\s:]{1,15}$")


@dataclass(frozen=True)
class ConntrackTimeouts:
    """The idle timeouts `--conntrack-timeouts` set, in seconds; None: the datapath's default."""

    tcp_established_s: int | None = None
    tcp_transitory_s: int | None = None
    udp_s: int | None = None
    icmp_s: int | None = None

    def given(self) -> dict[str, int]:
        """The timeouts that were set, by field name, in the order of the fields."""
        return {f.name: value for f in fields(self) if (value := getattr(self, f.name)) is not None}


def _timeout_flag_name(field_name: str) -> str:
    """'tcp_established_s' -> 'tcp-established', as --conntrack-timeouts writes it."""
    return field_name.removesuffix("_s").replace("_", "-")


@dataclass(frozen=True)
class RunOptions:
    """What one `v6nat run` was asked to do."""

    public_ifaces: tuple[str, ...]
    docker_host: str | None = None
    metrics_listen: str | None = DEFAULT_METRICS_LISTEN  # None: no metrics server
    snat_ports: tuple[int, int] = (SNAT_PORT_MIN, SNAT_PORT_MAX)
    pin_path: str = DEFAULT_PIN_PATH
    log_format: str = "text"
    log_level: str = "info"
    detach_on_exit: bool = False
    resync_interval_s: float = 30.0
    gc_interval_s: float = 10.0
    conntrack_timeouts: ConntrackTimeouts = ConntrackTimeouts()
    conntrack_max: int | None = None  # conntrack capacity in halves; None: the pinned maps', else CONNTRACK_MAX
    host_local: bool = True  # socket hooks for host processes (--host-local on|off)
    cgroup_path: str | None = None  # where they attach; None: the root of the cgroup v2 hierarchy
    # issue 13: start even though Docker writes its own IPv6 rules / runs docker-proxy (the user knows)
    allow_docker_ip6tables: bool = False
    allow_docker_userland_proxy: bool = False
    default_allow: tuple[ipaddress.IPv6Network, ...] | None = None  # --default-allow (issue 16); None: open
    udp_filtering: str = UDP_FILTERINGS[0]  # networks without their own v6nat.udp_filtering option

    @property
    def timeouts_below_rfc(self) -> list[str]:
        """The overrides shorter than RFC 5382 / 4787 / 5508 allow, as `name=N (RFC minimum M)`."""
        return [f"{_timeout_flag_name(name)}={seconds} (RFC minimum {CONNTRACK_TIMEOUT_RFC_MIN[name]})"
                for name, seconds in self.conntrack_timeouts.given().items() if seconds < CONNTRACK_TIMEOUT_RFC_MIN[name]]

    @property
    def log_level_number(self) -> int:
        return int(getattr(logging, self.log_level.upper()))


def parse_port_range(text: str) -> tuple[int, int]:
    """'61000-65535' -> (61000, 65535); V6natError unless 1 <= min <= max <= 65535."""
    match = re.fullmatch(r"\s*(\d{1,5})\s*-\s*(\d{1,5})\s*", text)
    if not match:
        raise V6natError(f"malformed port range {text!r}: expected MIN-MAX, e.g. {DEFAULT_SNAT_PORTS}")
    lo, hi = int(match[1]), int(match[2])
    if not SNAT_PORT_FLOOR <= lo <= hi <= 65535:
        raise V6natError(f"port range {text!r}: need {SNAT_PORT_FLOOR} <= MIN <= MAX <= 65535")
    return lo, hi



def parse_listen(listen: str) -> tuple[str, int]:
    """"[addr]:port" (IPv6) or "a.b.c.d:port" -> (address, port); V6natError on anything else."""
    host, sep, port_text = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        addr = ipaddress.ip_address(host)
        port = int(port_text)
    except ValueError:
        raise V6natError(f"--metrics-listen {listen!r}: expected [IPv6-address]:port or IPv4-address:port") from None
    if not sep or not 0 <= port <= 65535 or (addr.version == 6 and not listen.startswith("[")):
        raise V6natError(f"--metrics-listen {listen!r}: expected [IPv6-address]:port or IPv4-address:port")
    return str(addr), port


# Conntrack timeouts settable with --conntrack-timeouts, and the shortest each RFC allows (seconds):
# RFC 5382 (TCP established 2 h 4 min, transitory 4 min), RFC 4787 (UDP 2 min), RFC 5508 (ICMP query 60 s).
CONNTRACK_TIMEOUT_RFC_MIN = {"tcp_established_s": 7440, "tcp_transitory_s": 240, "udp_s": 120, "icmp_s": 60}


def parse_conntrack_timeouts(text: str) -> ConntrackTimeouts:
    """'udp=600,tcp-established=86400' -> ConntrackTimeouts(tcp_established_s=86400, udp_s=600)."""
    names = ", ".join(_timeout_flag_name(n) for n in CONNTRACK_TIMEOUT_RFC_MIN)
    timeouts: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        key = name.strip().replace("-", "_") + "_s"
        if key not in CONNTRACK_TIMEOUT_RFC_MIN:
            raise V6natError(f"unknown conntrack timeout {name.strip()!r}: expected NAME=SECONDS with NAME one of {names}")
        if not value.strip().isdigit() or int(value) <= 0:
            raise V6natError(f"conntrack timeout {item!r}: SECONDS must be a positive whole number")
        timeouts[key] = int(value)
    return ConntrackTimeouts(**timeouts)


def parse_conntrack_max(text: str) -> int:
    """'524288' -> 524288: the conntrack capacity in halves (two per flow), within the bounds."""
    value = text.strip().replace("_", "")
    if not value.isdigit() or not CONNTRACK_MAX_FLOOR <= int(value) <= CONNTRACK_MAX_CEILING:
        raise V6natError(f"conntrack max {text!r}: expected a whole number of entries from {CONNTRACK_MAX_FLOOR} "
                         f"to {CONNTRACK_MAX_CEILING}")
    return int(value)


def parse_ifnames(values: list[str]) -> tuple[str, ...]:
    """Repeated and/or comma-separated interface names, deduplicated in order."""
    names: list[str] = []
    for value in values:
        for name in filter(None, (part.strip() for part in value.split(","))):
            if not IFNAME.match(name):
                raise V6natError(f"malformed interface name {name!r}")
            if name not in names:
                names.append(name)
    return tuple(names)


def docker_url(docker_host: str | None) -> str:
    """The Docker API to use: `--docker-host` (or V6NAT_DOCKER_HOST) when given, else $DOCKER_HOST, else
    DEFAULT_DOCKER_URL. The one resolution `v6nat run` (DockerSource) and `v6nat check` both use."""
    return docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_URL


def env(name: str) -> str | None:
    value = os.environ.get(f"V6NAT_{name}")
    return value if value not in (None, "") else None


def _env_flag(name: str) -> bool:
    value = env(name)
    if value is None:
        return False
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise V6natError(f"V6NAT_{name}={value!r}: expected true or false")


def _flag_or_env(flag: bool | None, name: str) -> bool:
    return flag if flag is not None else _env_flag(name)


def _as_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse `type` from a parser raising V6natError (argparse then prints one usage line)."""
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except V6natError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = parse.__name__
    return convert


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise V6natError(f"{text!r} is not a positive number of seconds")
    return value


def add_pin_path_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pin-path", metavar="DIR", default=env("PIN_PATH") or DEFAULT_PIN_PATH,
                        help=f"bpffs directory of the pinned maps (env V6NAT_PIN_PATH; default {DEFAULT_PIN_PATH})")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--public-iface", metavar="IFACE", action="append", default=[],
                        help="interface facing the outside; repeatable (env V6NAT_PUBLIC_IFACE, comma-separated)")
    parser.add_argument("--docker-host", metavar="URL", default=env("DOCKER_HOST"),
                        help=f"Docker API (env V6NAT_DOCKER_HOST; default $DOCKER_HOST or {DEFAULT_DOCKER_URL})")
    parser.add_argument("--metrics-listen", metavar="[ADDR]:PORT",
                        default=env("METRICS_LISTEN") or DEFAULT_METRICS_LISTEN,
                        help=f"serve /metrics, /healthz, /readyz, /status here, 'off' for none "
                             f"(env V6NAT_METRICS_LISTEN; default {DEFAULT_METRICS_LISTEN})")
    parser.add_argument("--snat-ports", metavar="MIN-MAX", type=_as_type(parse_port_range),
                        default=env("SNAT_PORTS") or DEFAULT_SNAT_PORTS,
                        help=f"source ports for masqueraded flows, kept out of the host's ephemeral range "
                             f"(env V6NAT_SNAT_PORTS; default {DEFAULT_SNAT_PORTS})")
    add_pin_path_argument(parser)
    parser.add_argument("--log-format", choices=LOG_FORMATS, default=env("LOG_FORMAT") or "text",
                        help="log lines as text or one JSON object each (env V6NAT_LOG_FORMAT)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, type=str.lower, default=env("LOG_LEVEL") or "info",
                        help="(env V6NAT_LOG_LEVEL; default info)")
    parser.add_argument("--detach-on-exit", action="store_true", default=None,
                        help="on SIGTERM also remove the programs, pins and port reservation "
                             "(default: leave the datapath serving; env V6NAT_DETACH_ON_EXIT)")
    parser.add_argument("--resync-interval", metavar="SECONDS", type=_as_type(_positive_seconds),
                        default=env("RESYNC_INTERVAL") or "30",
                        help="full resync with Docker this often, to catch a missed event (env V6NAT_RESYNC_INTERVAL)")
    parser.add_argument("--gc-interval", metavar="SECONDS", type=_as_type(_positive_seconds),
                        default=env("GC_INTERVAL") or "10",
                        help="expire conntrack entries this often (env V6NAT_GC_INTERVAL)")
    parser.add_argument("--conntrack-timeouts", metavar="NAME=SECONDS,...", type=_as_type(parse_conntrack_timeouts),
                        default=env("CONNTRACK_TIMEOUTS") or "",
                        help="idle timeouts of tracked flows, any of tcp-established (default 7440), tcp-transitory "
                             "(240), udp (300), icmp (60); shorter than RFC 5382/4787/5508 allow is warned about "
                             "(env V6NAT_CONNTRACK_TIMEOUTS)")
    parser.add_argument("--udp-filtering", choices=UDP_FILTERINGS, default=env("UDP_FILTERING") or UDP_FILTERINGS[0],
                        help="which remote endpoints may send to a container's UDP mapping: only those it sent to "
                             "(address-and-port-dependent, the default) or any (endpoint-independent, full cone: "
                             "for WebRTC, games, P2P; only ports the container opened outward, only while it keeps "
                             "a flow); a network's option v6nat.udp_filtering overrides it (env V6NAT_UDP_FILTERING)")
    parser.add_argument("--conntrack-max", metavar="N", type=_as_type(parse_conntrack_max),
                        default=env("CONNTRACK_MAX"),
                        help=f"conntrack capacity in entries, two per flow (a quarter more holds flows not answered "
                             f"yet); changing it on pinned maps needs `v6nat cleanup` (drops the flows) (env "
                             f"V6NAT_CONNTRACK_MAX; default: the pinned maps' size, else {CONNTRACK_MAX})")
    # issue 13: double NAT
    parser.add_argument("--allow-docker-ip6tables", action="store_true", default=None,
                        help="start even though Docker writes its own IPv6 NAT/filter rules (ip6tables on, the "
                             "default from Docker 27.0): two NATs on one flow (env V6NAT_ALLOW_DOCKER_IP6TABLES)")
    parser.add_argument("--allow-docker-userland-proxy", action="store_true", default=None,
                        help="start even though Docker runs docker-proxy on published ports (its default) "
                             "(env V6NAT_ALLOW_DOCKER_USERLAND_PROXY)")
    add_default_allow_argument(parser, "sources that may open flows to published ports of networks and containers "
                                       "that declare no allowlist (label or network option v6nat.allow; "
                                       "docs/policy.md)")

    # host-local access (issue 14)
    parser.add_argument("--host-local", choices=("on", "off"), type=str.lower, default=env("HOST_LOCAL") or "on",
                        help="let processes on the host reach published ports (cgroup socket hooks; env "
                             "V6NAT_HOST_LOCAL; default on)")
    parser.add_argument("--cgroup-path", metavar="DIR", default=env("CGROUP_PATH"),
                        help="cgroup v2 whose processes get host-local access (env V6NAT_CGROUP_PATH; default: the "
                             "root of the cgroup v2 hierarchy in /proc/mounts)")


def add_default_allow_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """--default-allow, for `v6nat run` and for `v6nat check --port` (which names the allowlist in force)."""
    parser.add_argument("--default-allow", metavar="PREFIX,...", type=_as_type(parse_default_allow),
                        default=env("DEFAULT_ALLOW"),
                        help=f"{what} (env V6NAT_DEFAULT_ALLOW; default: every source)")


def parse_default_allow(text: str) -> tuple[ipaddress.IPv6Network, ...]:
    from v6nat_ebpf.policy import parse_prefixes  # the one syntax of labels and flag

    try:
        return parse_prefixes(text)
    except ValueError as exc:
        raise V6natError(f"--default-allow {text!r}: {exc}") from None


def run_options(args: argparse.Namespace) -> RunOptions:
    """RunOptions from parsed arguments (flags already merged with V6NAT_* defaults)."""
    ifaces = parse_ifnames(args.public_iface or ([env("PUBLIC_IFACE")] if env("PUBLIC_IFACE") else []))
    if not ifaces:
        raise V6natError("--public-iface is required (or V6NAT_PUBLIC_IFACE)")
    if args.log_format not in LOG_FORMATS:
        raise V6natError(f"log format {args.log_format!r}: expected one of {', '.join(LOG_FORMATS)}")
    if args.host_local not in ("on", "off"):
        raise V6natError(f"host-local {args.host_local!r}: expected on or off")
    if args.log_level not in LOG_LEVELS:
        raise V6natError(f"log level {args.log_level!r}: expected one of {', '.join(LOG_LEVELS)}")
    listen = args.metrics_listen
    detach = args.detach_on_exit if args.detach_on_exit is not None else _env_flag("DETACH_ON_EXIT")
    return RunOptions(
        public_ifaces=ifaces,
        docker_host=args.docker_host,
        metrics_listen=None if listen.lower() in ("off", "none", "") else listen,
        snat_ports=args.snat_ports,
        pin_path=args.pin_path,
        log_format=args.log_format,
        log_level=args.log_level,
        detach_on_exit=detach,
        resync_interval_s=args.resync_interval,
        gc_interval_s=args.gc_interval,
        conntrack_timeouts=args.conntrack_timeouts,
        conntrack_max=args.conntrack_max,
        host_local=args.host_local == "on",
        cgroup_path=args.cgroup_path,
        allow_docker_ip6tables=_flag_or_env(args.allow_docker_ip6tables, "ALLOW_DOCKER_IP6TABLES"),
        allow_docker_userland_proxy=_flag_or_env(args.allow_docker_userland_proxy, "ALLOW_DOCKER_USERLAND_PROXY"),
        default_allow=args.default_allow,  # argparse applied parse_default_allow to the env default too
        udp_filtering=args.udp_filtering,
    )

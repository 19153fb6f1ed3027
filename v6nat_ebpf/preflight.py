"""`v6nat check`: can this machine run v6nat, and what would get in its way.

Each check returns one `Finding` (ok / warn / fail, what, detail). Checks only
read the machine's state; the one that needs to create things (clsact and a
cls_bpf filter) does so in a throw-away network namespace (`unshare --net`)
that vanishes with its process. Nothing here touches the root namespace.

Imports: stdlib, v6nat_ebpf.{config,constants,errors} and datapath.{bpfsys,hostlocal} (bpf() through
ctypes, no bcc); bcc and docker_api (Docker's API without the SDK) are imported inside the checks that
need them, so a missing bcc is a finding, not a crash.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal
from urllib.parse import urlparse

from v6nat_ebpf.config import add_default_allow_argument, add_pin_path_argument, docker_url, env
from v6nat_ebpf.constants import DEFAULT_DOCKER_URL, DEFAULT_METRICS_LISTEN
from v6nat_ebpf.datapath import bpfsys
from v6nat_ebpf.errors import V6natError

log = logging.getLogger(__name__)

Status = Literal["ok", "warn", "fail"]

MIN_KERNEL = (5, 10)  # bpf_redirect_neigh, bpf_fib_lookup with TC, BTF-era verifier
CAPS = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21, "CAP_BPF": 39}


@dataclass(frozen=True)
class Finding:
    status: Status
    what: str
    detail: str


def check_kernel() -> Finding:
    release = platform.release()
    match = re.match(r"(\d+)\.(\d+)", release)
    if not match:
        return Finding("warn", "kernel", f"cannot parse version {release!r}")
    version = (int(match[1]), int(match[2]))
    if version >= MIN_KERNEL:
        return Finding("ok", "kernel", release)
    return Finding("fail", "kernel", f"{release}: v6nat needs {MIN_KERNEL[0]}.{MIN_KERNEL[1]} or newer")


def check_btf() -> Finding:
    if Path("/sys/kernel/btf/vmlinux").exists():
        return Finding("ok", "BTF", "/sys/kernel/btf/vmlinux")
    return Finding("warn", "BTF", "no /sys/kernel/btf/vmlinux (not required by bcc; bpftool output is poorer)")


def check_clsact() -> Finding:
    # lo of a fresh netns is enough: clsact plus a classic-BPF cls_bpf filter proves both.
    script = "tc qdisc add dev lo clsact && tc filter add dev lo ingress bpf bytecode '1,6 0 0 0,'"
    try:
        result = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Finding("fail", "clsact/cls_bpf", f"could not try: {exc}")
    if result.returncode == 0:
        return Finding("ok", "clsact/cls_bpf", "qdisc and filter created in a temporary netns")
    return Finding("fail", "clsact/cls_bpf", result.stderr.strip().splitlines()[-1] if result.stderr.strip()
                   else f"tc exited with {result.returncode}")


def check_bpf_syscall() -> Finding:
    try:
        os.close(bpfsys.create_map(bpfsys.BPF_MAP_TYPE_ARRAY, key_size=4, value_size=8, max_entries=1))
    except V6natError as exc:
        return Finding("fail", "bpf() syscall", str(exc))
    return Finding("ok", "bpf() syscall", "created and closed a 1-entry array map")


def check_bcc() -> Finding:
    try:
        import bcc  # noqa: PLC0415 (optional: system package python3-bpfcc)
    except ImportError as exc:
        return Finding("fail", "bcc", f"cannot import bcc ({exc}); install python3-bpfcc and use .venv/bin/v6nat")
    try:
        program = bcc.BPF(text="int probe(struct __sk_buff *skb) { return 0; }")
        program.load_func("probe", bcc.BPF.SCHED_CLS)
        program.cleanup()
    except Exception as exc:  # bcc raises bare Exception on compile/load errors
        return Finding("fail", "bcc", f"cannot compile a SCHED_CLS program: {str(exc).splitlines()[0]}")
    return Finding("ok", "bcc", f"compiled and loaded a SCHED_CLS program (bcc {getattr(bcc, '__version__', '?')})")


def check_host_local() -> Finding:
    from v6nat_ebpf.datapath import hostlocal

    try:
        return Finding("ok", "host-local access", hostlocal.probe())
    except V6natError as exc:
        return Finding("warn", "host-local access", f"{exc}: host processes cannot reach published ports "
                                                    "(`v6nat run --host-local off` says so quietly)")


def check_headers() -> Finding:
    build = Path(f"/lib/modules/{platform.release()}/build")
    if not (build / "include").exists():
        return Finding("fail", "kernel headers", f"{build} missing: install linux-headers-{platform.release()} "
                                                 "(in a container: mount the host's /lib/modules and /usr/src)")
    target = build.resolve()
    if platform.release() in target.name:
        return Finding("ok", "kernel headers", str(target))
    return Finding("ok", "kernel headers", f"{target} (another version; TC programs need only uapi headers)")


def check_capabilities() -> Finding:
    effective = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            effective = int(line.split()[1], 16)
    have = {name for name, bit in CAPS.items() if effective >> bit & 1}
    missing = []
    if "CAP_NET_ADMIN" not in have:
        missing.append("CAP_NET_ADMIN")
    if not have & {"CAP_BPF", "CAP_SYS_ADMIN"}:
        missing.append("CAP_BPF or CAP_SYS_ADMIN")
    if missing:
        return Finding("fail", "capabilities", f"missing {', '.join(missing)} (run as root)")
    return Finding("ok", "capabilities", " ".join(sorted(have)))


# Docker 27.0 turned ip6tables on by default (release notes 27.0.0; docker/docs
# packet-filtering-firewalls.md): from then on, "not set" means on.
IP6TABLES_DEFAULT_ON_FROM = (27, 0)


@dataclass(frozen=True)
class DockerFirewall:
    """Whether Docker itself writes IPv6 NAT/filter rules and runs docker-proxy, and what says so."""

    version: str  # the engine's, from the API
    backend: str | None  # Info.FirewallBackend.Driver (API 1.49, Docker 28.1+): iptables, nftables, ...
    ip6tables: bool
    ip6tables_source: str
    userland_proxy: bool
    userland_proxy_source: str


def engine_version(text: str) -> tuple[int, int]:
    """(major, minor) of a Docker engine version such as "20.10.24+dfsg1" or "29.0.0-rc.1"; (0, 0) if unknown."""
    match = re.match(r"(\d+)\.(\d+)", text or "")
    return (int(match[1]), int(match[2])) if match else (0, 0)


def docker_firewall(version: str, info: dict, settings: dict[str, bool] | None) -> DockerFirewall:
    """Decide from the daemon's API answers (`/version`'s Version, `/info`) and, when the dockerd process
    was found, its explicit settings (flags, then its config file): an explicit setting wins, else the
    default of that engine version. The API reports neither setting; FirewallBackend only names the
    backend that writes the rules."""
    backend = (info.get("FirewallBackend") or {}).get("Driver") or None
    explicit = settings or {}
    seen = "dockerd's flags and config" if settings is not None else "(dockerd process not visible)"
    if "ip6tables" in explicit:
        ip6tables, ip6_source = explicit["ip6tables"], f"set in {seen}"
    elif engine_version(version) >= IP6TABLES_DEFAULT_ON_FROM:
        ip6tables, ip6_source = True, f"not set in {seen}: on by default since Docker 27.0"
    else:
        ip6tables, ip6_source = False, f"not set in {seen}: off by default before Docker 27.0"
    if "userland-proxy" in explicit:
        proxy, proxy_source = explicit["userland-proxy"], f"set in {seen}"
    else:
        proxy, proxy_source = True, f"not set in {seen}: on by default"
    return DockerFirewall(version, backend, ip6tables, ip6_source, proxy, proxy_source)


def double_nat_problems(fw: DockerFirewall, allow_ip6tables: bool = False,
                        allow_userland_proxy: bool = False) -> list[str]:
    """Why `v6nat run` must not start next to this Docker (one line each); empty when it may."""
    problems = []
    if fw.ip6tables and not allow_ip6tables:
        problems.append(f"Docker {fw.version} writes its own IPv6 NAT and filter rules "
                        f"(ip6tables on, {fw.ip6tables_source}{'; backend ' + fw.backend if fw.backend else ''}): "
                        "two NATs on one flow; set \"ip6tables\": false in daemon.json (or dockerd "
                        "--ip6tables=false) and restart dockerd, or pass --allow-docker-ip6tables")
    if fw.userland_proxy and not allow_userland_proxy:
        problems.append(f"Docker {fw.version} runs docker-proxy on published ports (userland-proxy on, "
                        f"{fw.userland_proxy_source}): it answers what v6nat translates and hides client "
                        "addresses; set \"userland-proxy\": false in daemon.json (or dockerd "
                        "--userland-proxy=false) and restart dockerd, or pass --allow-docker-userland-proxy")
    return problems


def read_docker_firewall(url: str) -> DockerFirewall:
    """The DockerFirewall of the daemon at `url`: its API first, its process (flags, config) for the settings
    the API does not report. Raises V6natError when the API does not answer. Through docker_api, not the
    Docker SDK: `v6nat run` asks this too, and the SDK would stay in the daemon's memory (issue 15)."""
    from v6nat_ebpf.docker_api import ERRORS, DockerApi

    api = DockerApi(url)
    try:
        version, info = api.version().get("Version", ""), api.info()
    except ERRORS as exc:
        raise V6natError(f"Docker not reachable at {url}: {(str(exc).splitlines() or [type(exc).__name__])[0][:120]}") from exc
    finally:
        api.close()
    return docker_firewall(version, info, dockerd_settings(url))


def check_docker(docker_host: str | None) -> list[Finding]:
    """Docker reachable, and its settings that would put a second NAT on v6nat's flows."""
    url = docker_url(docker_host)
    try:
        fw = read_docker_firewall(url)
    except V6natError as exc:
        status: Status = "fail" if docker_host else "warn"
        return [Finding(status, "Docker", str(exc))]
    backend = f", firewall backend {fw.backend}" if fw.backend else ""
    findings = [Finding("ok", "Docker", f"{fw.version} at {url}{backend}")]
    proxy, ip6 = double_nat_problems(fw, allow_ip6tables=True), double_nat_problems(fw, allow_userland_proxy=True)
    findings.append(Finding("fail", "Docker ip6tables", ip6[0]) if ip6
                    else Finding("ok", "Docker ip6tables", f"off ({fw.ip6tables_source})"))
    findings.append(Finding("fail", "Docker userland-proxy", proxy[0]) if proxy
                    else Finding("ok", "Docker userland-proxy", f"off ({fw.userland_proxy_source})"))
    return findings


def dockerd_settings(url: str) -> dict[str, bool] | None:
    """userland-proxy and ip6tables of the dockerd process serving `url`, from its flags and config file."""
    socket = urlparse(url).path if url.startswith("unix://") else None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if Path(argv[0]).name != "dockerd":
            continue
        flags = _parse_flags(argv[1:])
        if socket and dockerd_serves(flags.get("-H", []) + flags.get("--host", []), socket):
            return _effective_settings(flags, root=proc / "root")
    # No dockerd serving this socket in sight (v6nat in a container whose socket path is not dockerd's, or
    # without the host's pid namespace): the config file at the default path, where contrib/compose mounts
    # the host's /etc/docker; dockerd's flags cannot be seen then.
    if socket and DEFAULT_DOCKER_CONFIG.is_file():
        return _effective_settings({})
    return None


DEFAULT_DOCKER_CONFIG = Path("/etc/docker/daemon.json")
DEFAULT_DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")  # /var/run is /run on Debian


def dockerd_serves(hosts: list[str], socket: str) -> bool:
    """Does a dockerd started with these -H values listen on the unix socket `socket`? No -H means the
    default socket; `fd://` is systemd socket activation (Debian's and Docker's own units: docker.socket
    listens on the default socket and hands it over)."""
    if not hosts or any(urlparse(h).scheme == "fd" for h in hosts):
        if socket in DEFAULT_DOCKER_SOCKETS:
            return True
    paths = {urlparse(h).path for h in hosts if urlparse(h).scheme == "unix"}
    if socket in DEFAULT_DOCKER_SOCKETS:
        return bool(paths & set(DEFAULT_DOCKER_SOCKETS))
    return socket in paths


def _parse_flags(args: list[str]) -> dict[str, list[str]]:
    flags: dict[str, list[str]] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-"):
            name, eq, value = arg.partition("=")
            if not eq and name in ("-H", "--host", "--config-file") and i + 1 < len(args):
                value, i = args[i + 1], i + 1
            elif not eq:
                value = "true"
            flags.setdefault(name, []).append(value)
        i += 1
    return flags


def _effective_settings(flags: dict[str, list[str]], root: Path = Path("/")) -> dict[str, bool]:
    """The settings dockerd was given explicitly: its config file's (read through `root`, the process's
    /proc/PID/root, so a dockerd in another mount namespace is read where it reads), overridden by its
    flags (a bare `--ip6tables` is true). A key absent means "not set": the engine's default applies."""
    config_file = flags.get("--config-file", [str(DEFAULT_DOCKER_CONFIG)])[-1]
    settings: dict[str, bool] = {}
    try:
        config = json.loads(_read_config(root, config_file))
        settings.update({k: bool(config[k]) for k in ("userland-proxy", "ip6tables") if k in config})
    except (OSError, ValueError):
        pass
    for key in ("userland-proxy", "ip6tables"):
        if f"--{key}" in flags:
            settings[key] = flags[f"--{key}"][-1].lower() in ("true", "1")
    return settings


def _read_config(root: Path, config_file: str) -> str:
    """dockerd's config file through its /proc/PID/root; where that is refused (the systemd unit has no
    CAP_SYS_PTRACE, and dockerd holds capabilities v6nat lacks), at the same path in our own root: a
    dockerd under systemd shares it."""
    try:
        return (root / config_file.lstrip("/")).read_text()
    except PermissionError:
        return Path(config_file).read_text()


IPV6_CONF = Path("/proc/sys/net/ipv6/conf")  # per network namespace


def _ipv6_conf(dev: str, name: str) -> str | None:
    try:
        return (IPV6_CONF / dev / name).read_text().strip()
    except OSError:
        return None


def _accept_ra_warning(dev: str, forwarding: bool) -> str | None:
    """The one accept_ra rule: with forwarding on, accept_ra=1 makes the kernel ignore router
    advertisements, so routes learned from them stop being refreshed. None when `dev` is fine."""
    if _ipv6_conf(dev, "accept_ra") != "1":
        return None
    when = "now that" if forwarding else "once"
    return (f"routes learned from router advertisements stop being refreshed {when} forwarding is on; "
            f"set net.ipv6.conf.{dev}.accept_ra=2")


def check_accept_ra() -> list[Finding]:
    """Interfaces whose router-advertisement config IPv6 forwarding would break."""
    if not IPV6_CONF.exists():
        return [Finding("fail", "IPv6", "IPv6 is disabled in this kernel")]
    forwarding = _ipv6_conf("all", "forwarding") == "1"
    ra_routes = subprocess.run(["ip", "-6", "route", "show", "proto", "ra"], capture_output=True, text=True)
    ra_devs = set(re.findall(r"\bdev (\S+)", ra_routes.stdout))
    findings = []
    for dev in sorted(ra_devs):
        accept_ra = _ipv6_conf(dev, "accept_ra")
        if accept_ra is None or not accept_ra.lstrip("-").isdigit():
            continue
        warning = _accept_ra_warning(dev, forwarding)
        findings.append(Finding("warn", f"accept_ra {dev}", warning) if warning
                        else Finding("ok", f"accept_ra {dev}", f"accept_ra={int(accept_ra)}"))
    if not findings:
        findings.append(Finding("ok", "accept_ra", "no interface relies on router advertisements"))
    return findings


def forwarding_warnings(public_names: Iterable[str]) -> list[str]:
    """What `v6nat run` warns about at start: forwarding off, or a public interface whose accept_ra
    forwarding breaks (the same rule as `v6nat check`); one line each."""
    if _ipv6_conf("all", "forwarding") != "1":
        return ["IPv6 forwarding is off (net.ipv6.conf.all.forwarding=0): containers are unreachable until it is on"]
    return [f"{name}: {warning}" for name in public_names if (warning := _accept_ra_warning(name, True))]


def run_checks(docker_host: str | None = None) -> list[Finding]:
    single: list[Callable[[], Finding]] = [check_kernel, check_btf, check_capabilities, check_bpf_syscall,
                                           check_clsact, check_headers, check_bcc, check_host_local]
    findings = [check() for check in single]
    findings += check_docker(docker_host)
    findings += check_accept_ra()
    return findings


def format_findings(findings: list[Finding]) -> str:
    width = max(len(f.what) for f in findings)
    return "\n".join(f"{f.status:<5} {f.what:<{width}}  {f.detail}" for f in findings)


def cmd_check(args: argparse.Namespace) -> int:
    if args.port:  # one published port, not the machine (port_check.py)
        from v6nat_ebpf.port_check import check_port

        try:
            findings = check_port(args.port, args.docker_host, args.pin_path, args.metrics_listen, args.default_allow)
        except ValueError as exc:
            raise V6natError(f"--port: {exc}") from None
    else:
        findings = run_checks(args.docker_host)
    if args.json:
        print(json.dumps([asdict(f) for f in findings], indent=2))
    else:
        print(format_findings(findings))
    return 1 if any(f.status == "fail" for f in findings) else 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check", help="preflight: kernel, bcc, capabilities, Docker settings",
        description="Check that this machine can run v6nat. One line per finding: ok, warn or fail. "
                    "Exit status 1 if anything fails.")
    parser.add_argument("--docker-host", metavar="URL", default=os.environ.get("V6NAT_DOCKER_HOST"),
                        help=f"Docker API to check (default: $DOCKER_HOST or {DEFAULT_DOCKER_URL}; "
                             "env V6NAT_DOCKER_HOST)")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument("--port", metavar="PORT/PROTO",
                        help="instead: every reason published port PORT/PROTO (e.g. 8080/tcp) could be unreachable")
    parser.add_argument("--metrics-listen", metavar="[ADDR]:PORT", default=env("METRICS_LISTEN") or DEFAULT_METRICS_LISTEN,
                        help=f"with --port: where the daemon answers /readyz (default {DEFAULT_METRICS_LISTEN})")
    add_default_allow_argument(parser, "with --port: the daemon's --default-allow, to name the allowlist in force")
    add_pin_path_argument(parser)
    parser.set_defaults(func=cmd_check)

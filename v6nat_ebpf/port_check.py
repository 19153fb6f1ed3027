"""`v6nat check --port PORT/PROTO`: every reason a published port could be unreachable, one line each.

The daemon (ready?), the datapath (pinned? programs attached? the port's entry there? bans that
cover it?), Docker (who publishes it, on which binding, network and gateway mode, which source
policy applies, and why v6nat does or does not map it: port_reasons.py), and Docker's own rules in
the way (its ip6tables NAT, a FORWARD policy that drops what v6nat hands to the stack). Read-only.

Imports: stdlib, v6nat_ebpf.{config,errors,policy,port_reasons,preflight}; docker, the datapath and
commands.bans inside the functions (a missing one is a finding, not a crash).
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
from typing import Any

from v6nat_ebpf.config import docker_url
from v6nat_ebpf.errors import V6natError
from v6nat_ebpf.model import PROTOCOL_NUMBERS
from v6nat_ebpf.policy import Prefixes
from v6nat_ebpf.port_reasons import PortVerdict, explain, parse_port_spec
from v6nat_ebpf.preflight import Finding, dockerd_settings


def check_daemon(listen: str) -> Finding:
    from v6nat_ebpf.observe.server import parse_listen

    host, port = parse_listen(listen)
    url = f"http://[{host}]:{port}/readyz" if ":" in host else f"http://{host}:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return Finding("ok", "daemon", f"ready ({reply.read().decode(errors='replace').strip()}) on {listen}")
    except urllib.error.HTTPError as e:
        return Finding("fail", "daemon", f"not ready on {listen}: {e.read().decode(errors='replace').strip()}")
    except OSError as e:
        return Finding("fail", "daemon", f"no v6nat daemon answering on {listen} ({getattr(e, 'reason', e)}): "
                                         "is `v6nat run` running, with this --metrics-listen?")


def _docker_inspect(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    import docker

    client = docker.APIClient(base_url=url, timeout=10)
    try:
        networks = [client.inspect_network(n["Id"]) for n in client.networks()]
        containers = [client.inspect_container(c["Id"]) for c in client.containers(all=True)]
    finally:
        client.close()
    return networks, containers


def docker_findings(spec: str, url: str, host_allow: Prefixes | None) -> tuple[list[Finding], PortVerdict | None]:
    port, proto = parse_port_spec(spec)
    try:
        networks, containers = _docker_inspect(url)
    except Exception as exc:  # the SDK raises DockerException, requests and OS errors alike
        return [Finding("fail", "Docker", f"not reachable at {url}: {str(exc).splitlines()[0][:120]}")], None
    verdict = explain(networks, containers, port, proto, host_allow)
    return [Finding("warn" if r.warn else "ok" if r.ok else "fail", "Docker", r.text) for r in verdict.reasons], verdict


def ban_finding(records: list[dict[str, Any]], port: int, proto: str) -> Finding | None:
    """The bans of `v6nat bans` (commands/bans.py's records) that cover the port: every port's and its own."""
    covering = [r["prefix"] for r in records if r["port"] is None or (r["port"] == port and r["protocol"] == proto)]
    if not covering:
        return None
    shown = ", ".join(covering[:3]) + (f" (+{len(covering) - 3} more)" if len(covering) > 3 else "")
    return Finding("warn", "bans", f"{len(covering)} {'ban covers' if len(covering) == 1 else 'bans cover'} "
                                   f"{port}/{proto}, their sources are dropped: {shown} (see `v6nat bans`)")


def datapath_findings(spec: str, pin_path: str, verdict: PortVerdict | None) -> list[Finding]:
    from v6nat_ebpf.commands.bans import ban_records
    from v6nat_ebpf.datapath import Datapath

    port, proto = parse_port_spec(spec)
    try:
        dp = Datapath.open_pinned(pin_path)
    except V6natError as exc:
        return [Finding("fail", "datapath", str(exc))]
    try:
        roles = dp.attached()
        entries = [(key, target) for key, target in dp.dnat.items()
                   if key.host_port == port and key.proto == PROTOCOL_NUMBERS[proto]]
        banned = ban_finding(ban_records(dp), port, proto)
    finally:
        dp.close()
    findings = [banned] if banned else []
    public = sorted(name for name, role in roles.items() if role == "public")
    if public:
        findings.append(Finding("ok", "programs", f"attached: public {', '.join(public)}; "
                                                  f"{sum(r == 'bridge' for r in roles.values())} bridges, "
                                                  f"{sum(r == 'veth' for r in roles.values())} veths"))
    else:
        findings.append(Finding("fail", "programs", "detached: no interface of this netns carries v6nat's public "
                                                    "programs (restart `v6nat run`, or run this in its netns)"))
    held = {(key.host_addr, target.addr, target.port): target.mapping_id for key, target in entries}
    for host_addr, addr, cport in (verdict.expected if verdict else ()):
        on = f"[{host_addr}]" if host_addr else "every host address"
        if (host_addr, addr, cport) in held:
            findings.append(Finding("ok", "datapath", f"{on}:{port}/{proto} -> [{addr}]:{cport} "
                                                      f"(mapping {held.pop((host_addr, addr, cport))})"))
        else:
            findings.append(Finding("fail", "datapath", f"no entry {on}:{port}/{proto} -> [{addr}]:{cport}: the "
                                                        "daemon has not applied it (see its log and `v6nat status`)"))
    for (host_addr, addr, cport), mapping_id in held.items():
        status = "warn" if verdict is not None else "ok"
        findings.append(Finding(status, "datapath", f"[{host_addr or '::'}]:{port}/{proto} -> [{addr}]:{cport} "
                                                    f"(mapping {mapping_id})"
                                                    + (": Docker does not publish this any more" if verdict else "")))
    return findings


def _ip6tables(*args: str) -> list[str] | None:
    if not shutil.which("ip6tables"):
        return None
    result = subprocess.run(["ip6tables", "-w", "5", *args], capture_output=True, text=True, timeout=20)
    return result.stdout.splitlines() if result.returncode == 0 else None


def docker_rules_findings(spec: str, url: str) -> list[Finding]:
    """Docker's own IPv6 rules that would translate the port too, or drop what v6nat sends on."""
    port, proto = parse_port_spec(spec)
    findings = []
    settings = dockerd_settings(url) or {}
    if settings.get("ip6tables"):
        findings.append(Finding("warn", "Docker rules", "Docker's ip6tables is on: its own IPv6 NAT rules also "
                                                        "translate published ports; set \"ip6tables\": false"))
    nat = _ip6tables("-t", "nat", "-S")
    ours = [line for line in nat or [] if f"--dport {port}" in line and f"-p {proto}" in line]
    if ours:
        findings.append(Finding("warn", "Docker rules", f"ip6tables nat rules for {port}/{proto}: "
                                                        f"{ours[0]}" + (f" (+{len(ours) - 1})" if len(ours) > 1 else "")))
    forward = _ip6tables("-S", "FORWARD")
    if forward and "-P FORWARD DROP" in forward:
        accepts = [line for line in forward if "-j ACCEPT" in line or "-j DOCKER" in line]
        findings.append(Finding("warn", "Docker rules", "ip6tables FORWARD policy is DROP: new flows that v6nat "
                                                        "translates are forwarded by the stack first; "
                                                        + ("rules there must accept them" if accepts else
                                                           "no rule accepts them, so they are dropped")))
    if nat is None and forward is None:
        findings.append(Finding("ok", "Docker rules", "no ip6tables here to get in the way"))
    elif not findings:
        findings.append(Finding("ok", "Docker rules", "no ip6tables NAT rule for the port, FORWARD does not drop"))
    return findings


def check_port(spec: str, docker_host: str | None, pin_path: str, metrics_listen: str,
               host_allow: Prefixes | None = None) -> list[Finding]:
    """Every finding for published port `spec` ("8080/tcp"); ValueError for a bad spec. `host_allow`:
    the daemon's --default-allow."""
    parse_port_spec(spec)
    url = docker_url(docker_host)
    findings = [check_daemon(metrics_listen)]
    docker_lines, verdict = docker_findings(spec, url, host_allow)
    findings += docker_lines
    findings += datapath_findings(spec, pin_path, verdict)
    findings += docker_rules_findings(spec, url)
    return findings


__all__ = ["check_port"]

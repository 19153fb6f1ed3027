"""Why a published port would or would not be translated, from Docker's inspect data alone: the
reasons `v6nat check --port` gives for the Docker side (model.py makes the same decisions for the
daemon, and policy.py the source rules; this module names them for a person, one line each).

Imports the standard library, v6nat_ebpf.model and v6nat_ebpf.policy only (pure: no Docker, no BPF).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import Any, Iterable, Mapping

from v6nat_ebpf import model, policy


@dataclass(frozen=True)
class PortReason:
    """One fact about the port: `ok` when it helps the port work, else what is in the way; `warn` when
    it works only for some (an allowlist) or differently than a host port (a network's gateway mode)."""

    ok: bool
    text: str
    warn: bool = False


@dataclass(frozen=True)
class PortVerdict:
    reasons: tuple[PortReason, ...]
    # What the datapath should hold for the port: (host address or None for any, container address,
    # container port), one per IPv6 mapping model.py makes.
    expected: tuple[tuple[IPv6Address | None, IPv6Address, int], ...]


def parse_port_spec(text: str) -> tuple[int, str]:
    """'8080/tcp' (or '8080', TCP) -> (8080, 'tcp'); ValueError with a message otherwise."""
    port_text, _, proto = text.partition("/")
    proto = proto or "tcp"
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535 or proto not in model.DOCKER_PROTOCOLS:
        raise ValueError(f"{text!r} is not PORT[/tcp|udp] (e.g. 8080/tcp)")
    return int(port_text), proto


def why_unmanaged(data: Mapping[str, Any]) -> str:
    """Why model.network_from_inspect would not manage this network."""
    name = data.get("Name") or data.get("Id", "")[:12]
    if data.get("Driver") != "bridge":
        return f"network {name} uses driver {data.get('Driver')!r}; v6nat manages bridge networks"
    if not data.get("EnableIPv6"):
        return f"network {name} has IPv6 off (create it with --ipv6)"
    return f"network {name} has no IPv6 subnet v6nat can serve (link-local and multicast ones are not)"


def _binding_line(host_ip: str, host_port: str, published: bool) -> str:
    where = f"[{host_ip}]" if ":" in host_ip else (host_ip or "every address")
    if published:
        return f"Docker binds it on {where}:{host_port}"
    try:
        addr = ipaddress.ip_address(host_ip)
    except ValueError:
        return f"a binding on {host_ip!r}:{host_port} that is no address"
    if isinstance(addr, ipaddress.IPv4Address):
        return f"Docker binds it on {where}:{host_port} only: an IPv4 address gives no IPv6 mapping"
    return f"Docker binds it on {where}:{host_port}: a loopback, link-local or mapped address never reaches a public interface"


def _mode_line(network: model.Network, address: IPv6Address, port: int, container_port: int, proto: str) -> str:
    """What a network's gateway mode (other than nat) means for a port published on it."""
    if network.mode == model.GATEWAY_ROUTED:
        return (f"network {network.name} is routed: reach [{address}]:{container_port}/{proto} directly, "
                f"host port {port} is not used")
    return (f"network {network.name} is nat-unprotected: besides host port {port}, every port of [{address}] "
            "is reachable directly from outside")


def _allow_source(decl: policy.ContainerDeclaration, declarations: policy.Declarations, network: str,
                  container_port: int, proto: str) -> str:
    """Where the allowlist in force for a container port was declared (most specific first, as policy.py)."""
    if (container_port, model.PROTOCOL_NUMBERS[proto]) in decl.port_allow:
        return f"label {policy.ALLOW}.{container_port}/{proto}"
    if decl.allow is not None:
        return f"label {policy.ALLOW}"
    if network in declarations.networks:
        return f"option {policy.ALLOW} of network {network}"
    return "v6nat run --default-allow"


def _policy_lines(name: str, network: str, container_port: int, proto: str,
                  declarations: policy.Declarations, host_allow: policy.Prefixes | None) -> list[PortReason]:
    """A bad declaration that keeps the container unpublished, or the allowlist in force for the port."""
    bad = [PortReason(False, str(e)) for e in declarations.errors
           if e.container == name or (not e.container and e.network == network)]
    decl = declarations.containers.get(name)
    if bad or decl is None:
        return bad
    rules = decl.rules(container_port, model.PROTOCOL_NUMBERS[proto], declarations.networks.get(network, host_allow))
    lines = []
    if rules.allow is not None:
        source = _allow_source(decl, declarations, network, container_port, proto)
        lines.append(PortReason(True, f"container {name}: only {', '.join(map(str, rules.allow))} may connect "
                                      f"(allowlist of {source})", warn=True))
    if rules.deny:
        own = (container_port, model.PROTOCOL_NUMBERS[proto]) in decl.port_deny
        labels = [policy.DENY] * bool(decl.deny) + [f"{policy.DENY}.{container_port}/{proto}"] * own
        lines.append(PortReason(True, f"container {name}: {', '.join(map(str, rules.deny))} may not connect "
                                      f"(label{'s' * (len(labels) > 1)} {' and '.join(labels)})", warn=True))
    return lines


def explain(networks: Iterable[Mapping[str, Any]], containers: Iterable[Mapping[str, Any]],
            port: int, proto: str, host_allow: policy.Prefixes | None = None) -> PortVerdict:
    """Every container that publishes host port `port`/`proto` and what v6nat makes of it; `host_allow`
    is the daemon's --default-allow."""
    networks = list(networks)
    containers = list(containers)
    declarations = policy.declarations_from_inspect(networks, containers)
    problems: list[str] = []
    managed = {n.id: n for n in (model.network_from_inspect(d, problems) for d in networks) if n is not None}
    by_name = {n.name: n for n in managed.values()}
    raw_by_id = {d.get("Id"): d for d in networks}
    reasons: list[PortReason] = []
    expected: list[tuple[IPv6Address | None, IPv6Address, int]] = []
    for data in containers:
        name = (data.get("Name") or data.get("Id", "")[:12]).lstrip("/")
        ports = (data.get("NetworkSettings") or {}).get("Ports") or {}
        bound = {spec: b for spec, b in ports.items() if spec.endswith(f"/{proto}") and b
                 and any((x.get("HostPort") or "") == str(port) for x in b)}
        requested = {spec for spec, b in ((data.get("HostConfig") or {}).get("PortBindings") or {}).items()
                     if spec.endswith(f"/{proto}") and any((x.get("HostPort") or "") == str(port) for x in b or [])}
        if not bound and not requested:
            continue
        state = data.get("State") or {}
        if not state.get("Running") or state.get("Restarting"):
            reasons.append(PortReason(False, f"container {name} publishes it but is not running "
                                             f"({state.get('Status', 'stopped')})"))
            continue
        if not bound:
            reasons.append(PortReason(False, f"container {name} asked for it but Docker bound nothing "
                                             "(port taken on the host? see `docker port`)"))
            continue
        endpoints = model._endpoints_of(data, managed)
        attached = (data.get("NetworkSettings") or {}).get("Networks") or {}
        if not endpoints:
            for ep in attached.values():
                raw = raw_by_id.get(ep.get("NetworkID", ""))
                if ep.get("NetworkID") in managed:
                    reasons.append(PortReason(False, f"container {name} has no IPv6 address on network "
                                                     f"{managed[ep['NetworkID']].name}"))
                elif raw is not None:
                    reasons.append(PortReason(False, f"container {name}: {why_unmanaged(raw)}"))
            if not attached:
                reasons.append(PortReason(False, f"container {name} is on no network (network mode "
                                                 f"{(data.get('HostConfig') or {}).get('NetworkMode')!r})"))
            continue
        chosen = model.choose_endpoint(data, endpoints, by_name, problems)
        if chosen is None:
            isolated = sorted(ep.network_name for ep in endpoints
                              if by_name[ep.network_name].mode == model.GATEWAY_ISOLATED)
            reasons += [PortReason(False, f"container {name}: network {net} is isolated: Docker publishes "
                                          "nothing on it, not even to the host") for net in isolated]
            nets = ", ".join(sorted(ep.network_name for ep in endpoints if ep.network_name not in isolated))
            if nets:
                reasons.append(PortReason(False, f"container {name} is only on internal networks ({nets}): "
                                                 "Docker publishes no ports there"))
            continue
        network = by_name[chosen.network_name]
        unpublished = False
        for spec, bindings in sorted(bound.items()):
            has_ipv6 = any(":" in (b.get("HostIp") or "") for b in bindings)
            wanted = model._requested_host_ips(data, spec)
            mine = [b for b in bindings if (b.get("HostPort") or "") == str(port)]
            judged = [(b, *model._binding_host_addr(b.get("HostIp") or "", wanted, has_ipv6, network)) for b in mine]
            if not any(published for _, published, _ in judged):  # else an IPv4 twin of an IPv6 binding: fine
                reasons += [PortReason(False, f"container {name}: {_binding_line(b.get('HostIp') or '', str(port), False)}")
                            for b, _, _ in judged]
                continue
            container_port = int(spec.partition("/")[0])
            lines = _policy_lines(name, network.name, container_port, proto, declarations, host_allow)
            reasons += [line for line in lines if line not in reasons]
            unpublished = unpublished or any(not line.ok for line in lines)
            for b, published, host_addr in judged:
                if not published:
                    continue
                reasons.append(PortReason(True, f"container {name}: "
                                                f"{_binding_line(b.get('HostIp') or '', str(port), True)}"))
                if unpublished:
                    continue
                if network.mode == model.GATEWAY_ROUTED and host_addr != model.HOST_ONLY_ADDR:
                    line = PortReason(False, f"container {name}: "
                                             f"{_mode_line(network, chosen.address, port, container_port, proto)}")
                    if line not in reasons:
                        reasons.append(line)
                    continue
                target = (host_addr, chosen.address, container_port)
                if target not in expected:
                    expected.append(target)
                    on = f"[{host_addr}]" if host_addr else "every host address"
                    chosen_of = f" (chosen of several: label {model.NETWORK_LABEL})" if len(endpoints) > 1 else ""
                    reasons.append(PortReason(True, f"container {name}: published on network {network.name}"
                                                    f"{chosen_of} as {on}:{port} -> [{chosen.address}]:{target[2]}"))
                    if network.mode == model.GATEWAY_UNPROTECTED:
                        mode = _mode_line(network, chosen.address, port, container_port, proto)
                        reasons.append(PortReason(True, f"container {name}: {mode}", warn=True))
    for problem in problems:
        if f":{port} " in problem or f":{port} ->" in problem:
            reasons.append(PortReason(False, problem))
    if not reasons:
        reasons.append(PortReason(False, f"no container publishes {port}/{proto} "
                                         f"(docker ps --filter publish={port}/{proto})"))
    return PortVerdict(tuple(reasons), tuple(expected))


"""Who may open a flow to a published port: source rules declared on containers and networks (issue 16).

Lives here, pure: the label and option syntax, parsing it from Docker's inspect dicts
(`declarations_from_inspect`), and `resolve`, which gives every published mapping its rules (most
specific declaration wins) and refuses the mappings of containers whose declarations are bad (fail
closed). The reconciler writes the result into the policy table and the dnat targets; the datapath
asks the rules once per new flow (bpf/lib/policy.h). Bans are not here: `v6nat ban` writes them
into the pinned map itself (commands/bans.py).

Syntax (docs/policy.md):
- container label `v6nat.allow` / `v6nat.deny`: comma-separated IPv6 prefixes (a bare address is a /128)
  for every published port of the container; `v6nat.allow.<port>/<proto>` / `v6nat.deny.<port>/<proto>`
  for one container port.
- network option `v6nat.allow`: the allowlist of every mapping on the network that declares none;
  `v6nat run --default-allow`: the same for every network that declares none.
- Allow: the most specific declaration wins (port label, container label, network, host). Deny: the
  port's and the container's lists add up. Order: deny, then allow, then the default (refuse when an
  allowlist is in force, else accept).

Imports: the standard library and v6nat_ebpf.model (values only).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from functools import cached_property
from ipaddress import IPv6Network, ip_network
from typing import Any, Iterable, Mapping

from v6nat_ebpf.model import PROTOCOL_NUMBERS, DesiredState, PortMapping, is_running

ALLOW = "v6nat.allow"
DENY = "v6nat.deny"
_PORT_LABEL = re.compile(r"v6nat\.(allow|deny)\.(\d{1,5})/(tcp|udp)")
_POLICY_LABEL = re.compile(r"v6nat\.(allow|deny).*")  # a misspelt port label is an error, not ignored

Prefixes = tuple[IPv6Network, ...]


def parse_prefixes(text: str) -> Prefixes:
    """'2001:db8::/32, 2001:db8:1::5' -> prefixes (a bare address is a /128). ValueError, with the
    offending item, on anything else: IPv4, host bits set, empty items."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise ValueError("empty prefix")
    found = []
    for item in items:
        try:
            net = ip_network(item, strict=True)
        except ValueError as exc:
            raise ValueError(f"{item!r}: {exc}") from None
        if not isinstance(net, IPv6Network):
            raise ValueError(f"{item!r} is not IPv6")
        found.append(net)
    return tuple(sorted(set(found)))


@dataclass(frozen=True)
class SourceRules:
    """The rules of one mapping: denied prefixes, and the allowlist in force (None: none, all may come)."""

    deny: Prefixes = ()
    allow: Prefixes | None = None

    @property
    def empty(self) -> bool:
        return not self.deny and self.allow is None

    @property
    def default_deny(self) -> bool:
        return self.allow is not None

    @cached_property
    def entries(self) -> tuple[tuple[IPv6Network, bool], ...]:
        """(prefix, allowed) for the datapath's longest-prefix lookup: every deny, and the allows not
        inside a deny (those could never win: deny comes first)."""
        allows = [(p, True) for p in self.allow or () if not any(p.subnet_of(d) for d in self.deny)]
        return tuple(sorted([(p, False) for p in self.deny] + allows))

    @cached_property
    def policy_id(self) -> int:
        """Stable across restarts (a hash of the entries): mappings with equal rules share one id."""
        text = ";".join(f"{p}={int(a)}" for p, a in self.entries) + f";default_deny={int(self.default_deny)}"
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "little") or 1

    def __str__(self) -> str:
        allow = "any" if self.allow is None else ",".join(map(str, self.allow)) or "nobody"
        return f"allow {allow}" + (f", deny {','.join(map(str, self.deny))}" if self.deny else "")


@dataclass(frozen=True)
class ContainerDeclaration:
    """A container's policy labels, parsed."""

    allow: Prefixes | None = None
    deny: Prefixes = ()
    port_allow: Mapping[tuple[int, int], Prefixes] = field(default_factory=dict)  # (port, proto) -> allow
    port_deny: Mapping[tuple[int, int], Prefixes] = field(default_factory=dict)
    bad: tuple[tuple[str, str], ...] = ()  # (label, value) that did not parse: the container is not published

    def rules(self, port: int, proto: int, inherited: Prefixes | None) -> SourceRules:
        allow = self.port_allow.get((port, proto), self.allow if self.allow is not None else inherited)
        return SourceRules(tuple(sorted(set(self.deny) | set(self.port_deny.get((port, proto), ())))), allow)


@dataclass(frozen=True)
class PolicyError:
    """A declaration that did not parse: what `v6nat status` and the metrics name."""

    container: str  # the container, or "" for a network's option
    network: str  # the network of an option, else ""
    label: str
    value: str
    reason: str

    def __str__(self) -> str:
        where = f"container {self.container}" if self.container else f"network {self.network}"
        return (f"{where}: {self.label}={self.value!r} is not a list of IPv6 prefixes ({self.reason}); "
                f"its published ports are not published (fail closed)")


@dataclass(frozen=True)
class Declarations:
    """Every running container's and every network's policy declarations (by name)."""

    containers: Mapping[str, ContainerDeclaration] = field(default_factory=dict)
    networks: Mapping[str, Prefixes] = field(default_factory=dict)  # network name -> its allowlist
    errors: tuple[PolicyError, ...] = ()


def container_declaration(name: str, labels: Mapping[str, str]) -> tuple[ContainerDeclaration, list[PolicyError]]:
    allow: Prefixes | None = None
    deny: Prefixes = ()
    port_allow: dict[tuple[int, int], Prefixes] = {}
    port_deny: dict[tuple[int, int], Prefixes] = {}
    errors = []
    for label, value in sorted(labels.items()):
        if not _POLICY_LABEL.fullmatch(label):
            continue
        try:
            port_match = _PORT_LABEL.fullmatch(label)
            if label not in (ALLOW, DENY) and (port_match is None or not 0 < int(port_match.group(2)) <= 65535):
                raise ValueError("the label names no <port>/<tcp|udp>")
            prefixes = parse_prefixes(value)
        except ValueError as exc:
            errors.append(PolicyError(name, "", label, value, str(exc)))
            continue
        if label == ALLOW:
            allow = prefixes
        elif label == DENY:
            deny = prefixes
        else:
            assert port_match is not None
            key = (int(port_match.group(2)), PROTOCOL_NUMBERS[port_match.group(3)])
            (port_allow if port_match.group(1) == "allow" else port_deny)[key] = prefixes
    bad = tuple((e.label, e.value) for e in errors)
    return ContainerDeclaration(allow, deny, port_allow, port_deny, bad), errors


def declarations_from_inspect(networks: Iterable[Mapping[str, Any]],
                              containers: Iterable[Mapping[str, Any]]) -> Declarations:
    """Declarations from `docker network inspect` and `docker container inspect` dicts."""
    errors: list[PolicyError] = []
    by_network: dict[str, Prefixes] = {}
    for data in networks:
        name = data.get("Name") or data.get("Id", "")[:12]
        value = (data.get("Options") or {}).get(ALLOW)
        if value is None:
            continue
        try:
            by_network[name] = parse_prefixes(value)
        except ValueError as exc:
            errors.append(PolicyError("", name, ALLOW, value, str(exc)))
    by_container = {}
    for data in filter(is_running, containers):  # only running containers publish anything
        name = (data.get("Name") or data.get("Id", "")[:12]).lstrip("/")
        labels = (data.get("Config") or {}).get("Labels") or {}
        by_container[name], found = container_declaration(name, labels)
        errors.extend(found)
    return Declarations(by_container, by_network, tuple(errors))


@dataclass(frozen=True)
class Resolution:
    """The desired state with the refused mappings taken out, and every kept mapping's rules."""

    desired: DesiredState
    rules: Mapping[int, SourceRules]  # mapping id -> its rules (mappings without any are absent)
    errors: tuple[PolicyError, ...]


def resolve(desired: DesiredState, declarations: Declarations, host_allow: Prefixes | None) -> Resolution:
    """Give each mapping of `desired` its rules; a mapping of a container (or on a network) whose
    declaration is bad is not published (fail closed), and one whose container has no declaration at
    all (it appeared after `declarations` was read) neither, until the next pass."""
    bad_networks = {e.network for e in declarations.errors if not e.container}
    kept: list[PortMapping] = []
    rules: dict[int, SourceRules] = {}
    by_id: dict[int, SourceRules] = {}
    # One SourceRules per (container, port with labels of its own, network): the mappings of a container
    # publishing thousands of ports share one object, whose entries and id are worked out once.
    shared: dict[tuple[str, tuple[int, int] | None, str], SourceRules] = {}
    problems = list(desired.problems)
    for mapping in desired.mappings:
        container = declarations.containers.get(mapping.container_name)
        if container is None or container.bad or mapping.network_name in bad_networks:
            continue
        port = (mapping.container_port, mapping.proto)
        own = port if port in container.port_allow or port in container.port_deny else None
        key = (mapping.container_name, own, mapping.network_name)
        found = shared.get(key)
        if found is None:
            inherited = declarations.networks.get(mapping.network_name, host_allow)
            found = shared[key] = container.rules(*port, inherited)
        if not found.empty:
            prior = by_id.setdefault(found.policy_id, found)
            if prior is not found and prior != found:  # two rule sets, one hash: never mix them
                problems.append(f"{mapping}: its source rules collide with others' policy id; not published")
                continue
            rules[mapping.mapping_id] = found
        kept.append(mapping)
    return Resolution(replace(desired, mappings=tuple(kept), problems=tuple(problems)), rules,
                      declarations.errors)

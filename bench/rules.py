"""Netfilter rulesets for the competitors: Docker-shaped ip6tables rules and a hand-written nftables NAT.

What lives here: pure text generators (no subprocess, no lab).
- `docker_shaped_fillers`: copies of the rules Docker wrote for one real
  published port, re-targeted to other ports, as `ip6tables-restore --noflush`
  input that inserts them *before* Docker's own rules (the target port's rule is
  then the last one a new flow reaches: the worst case, and where a host ends up
  as containers come and go).
- `nft_ruleset`: what an operator would write by hand: DNAT through a
  verdict map keyed by port (one lookup, whatever the number of ports),
  masquerade for the ULA network, and (where the kernel has it) a software
  flowtable for established flows.
Must not import the lab, the load tools or the report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network


@dataclass(frozen=True)
class PortRule:
    """One published port: host port -> container address and port."""

    proto: str  # "tcp" or "udp"
    host_port: int
    container_addr: IPv6Address
    container_port: int


def docker_rules_for_port(save: str, host_port: int, container_port: int,
                          container_addr: IPv6Address) -> dict[str, list[str]]:
    """The `-A` lines of `ip6tables-save` output that Docker wrote for one TCP published port, per table.

    Docker writes: nat DOCKER DNAT on the host port, nat POSTROUTING MASQUERADE
    (hairpin, container to itself) and filter DOCKER ACCEPT on the container port.
    """
    addr = str(container_addr)
    rules: dict[str, list[str]] = {}
    table = ""
    for line in save.splitlines():
        if line.startswith("*"):
            table = line[1:]
            continue
        if not line.startswith("-A ") or "-p tcp" not in line:
            continue
        dnat = f"--dport {host_port} " in line and "DNAT" in line
        per_container = addr in line and f"--dport {container_port} " in line
        if dnat or per_container:
            rules.setdefault(table, []).append(line)
    if "DNAT" not in " ".join(rules.get("nat", [])):
        raise ValueError(f"no Docker DNAT rule for host port {host_port} in ip6tables-save output")
    return rules


def docker_shaped_fillers(template: dict[str, list[str]], host_port: int, container_port: int,
                          filler_ports: range) -> str:
    """ip6tables-restore --noflush input: Docker's rules for one port, repeated for each filler port.

    Each copy is inserted at the head of its chain, so all fillers come before
    Docker's rule for the real port. Fillers map host port P to container port P.
    """
    out: list[str] = []
    for table, lines in template.items():
        out.append(f"*{table}")
        for line in lines:
            chain, rest = _split_append(line)
            for port in filler_ports:
                body = rest.replace(f"--dport {host_port} ", f"--dport {port} ") if "DNAT" in rest \
                    else rest.replace(f"--dport {container_port} ", f"--dport {port} ")
                body = re.sub(rf"\]:{container_port}\b", f"]:{port}", body)
                out.append(f"-I {chain} 1 {body}")
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def _split_append(line: str) -> tuple[str, str]:
    _, chain, rest = line.split(" ", 2)
    return chain, rest


def nft_ruleset(table: str, public_iface: str, bridge: str, host_addr: IPv6Address,
                subnet: IPv6Network, ports: list[PortRule], flowtable: bool) -> str:
    """A complete `nft -f` input for table `ip6 <table>` (it replaces the table if it exists).

    DNAT: `dnat ip6 to <proto> dport map @<proto>_ports`, a map from host port to
    (container address . port), so one hash lookup whatever the number of ports.
    Forward: established and DNATed flows accepted, the rest from outside dropped
    (only published ports reachable, like the other systems), and, with
    `flowtable`, every accepted TCP/UDP flow offloaded to the software flowtable
    once established (needs a kernel with CONFIG_NF_FLOW_TABLE).
    """
    maps = []
    for proto in ("tcp", "udp"):
        elements = ", ".join(
            f"{p.host_port} : {p.container_addr} . {p.container_port}" for p in ports if p.proto == proto
        )
        body = f"\n\t\telements = {{ {elements} }}" if elements else ""
        maps.append(
            f"\tmap {proto}_ports {{\n\t\ttype inet_service : ipv6_addr . inet_service{body}\n\t}}\n"
        )
    offload_def = offload_rule = ""
    if flowtable:
        offload_def = (f"\tflowtable ft {{\n\t\thook ingress priority filter\n"
                       f"\t\tdevices = {{ {public_iface}, {bridge} }}\n\t}}\n")
        offload_rule = "\t\tmeta l4proto { tcp, udp } flow add @ft\n"
    return f"""table ip6 {table}
delete table ip6 {table}
table ip6 {table} {{
{''.join(maps)}{offload_def}
\tchain prerouting {{
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tip6 daddr {host_addr} dnat ip6 to tcp dport map @tcp_ports
\t\tip6 daddr {host_addr} dnat ip6 to udp dport map @udp_ports
\t}}

\tchain forward {{
\t\ttype filter hook forward priority filter; policy drop;
{offload_rule}\t\tct state established,related accept
\t\tct status dnat accept
\t\tiifname "{bridge}" accept
\t}}

\tchain postrouting {{
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tip6 saddr {subnet} oifname != "{bridge}" masquerade
\t}}
}}
"""


def nft_add_ports(table: str, ports: list[PortRule]) -> str:
    """`nft -f` input adding port mappings to the table's maps (to grow it to N ports)."""
    out = []
    for proto in ("tcp", "udp"):
        elements = [f"{p.host_port} : {p.container_addr} . {p.container_port}" for p in ports if p.proto == proto]
        if elements:
            out.append(f"add element ip6 {table} {proto}_ports {{ {', '.join(elements)} }}")
    return "\n".join(out) + "\n"
